"""Benchmark: 3DGAN training throughput (showers/s of full reference iterations) on this machine.

Times ``Trainer.train_step`` (D on real, D on fake, two G steps) on MC showers for each combination of
memory format and thread count, after one warm-up step, and prints a markdown table.

    .venv/bin/python bench/train_speed.py [--arch ecal25] [--batch 32] [--steps 3] [--threads 1,2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from caloquant.data import read_showers
from caloquant.simulate import simulate_to_file
from caloquant.train import TrainConfig, Trainer
from caloquant.train.data import preprocess


def measure(data: Path, arch: str, batch: int, steps: int, threads: int, channels_last: bool,
            pretrain: bool) -> float:
    """Showers per second of train_step, averaged over ``steps`` after a warm-up step."""
    torch.set_num_threads(threads)
    cfg = TrainConfig(arch=arch, batch_size=batch, channels_last=channels_last, threads=threads,
                      pretrain_steps=10**9 if pretrain else 0, device="cpu")
    with tempfile.TemporaryDirectory() as out:
        tr = Trainer(cfg, data, out, val=data, progress=False)
        b = preprocess(read_showers(data, 0, batch), tr.spec, cfg.ecal_cut)
        tr.train_step(b, 0)
        t0 = time.perf_counter()
        for s in range(steps):
            tr.train_step(b, s + 1)
        return batch * steps / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="ecal25")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", default="1,2")
    args = ap.parse_args()
    window = "25x25x25" if args.arch == "ecal25" else "51x51x25"
    angle = "90" if args.arch == "ecal25" else "60:120"
    with tempfile.TemporaryDirectory() as d:
        data = Path(d) / "mc.h5"
        simulate_to_file(data, max(args.batch, 64), "10:500", angle=angle, window=window, seed=1, progress=False)
        print(f"| {args.arch}, batch {args.batch} | threads | channels_last | showers/s |")
        print("|---|---|---|---|")
        for threads in (int(t) for t in args.threads.split(",")):
            for cl in (False, True):
                sps = measure(data, args.arch, args.batch, args.steps, threads, cl, pretrain=False)
                print(f"| adversarial iteration | {threads} | {cl} | {sps:.2f} |", flush=True)
            sps = measure(data, args.arch, args.batch, args.steps, threads, True, pretrain=True)
            print(f"| generator-only physics step | {threads} | True | {sps:.2f} |", flush=True)


if __name__ == "__main__":
    main()
