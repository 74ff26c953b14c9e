"""Benchmark: 3DGAN training throughput of the reference step, per device, precision and batch, with TFLOP/s.

Times ``Trainer.train_step`` (D on real, D on fake, two G steps) the way ``Trainer.run`` drives it (losses read
back every ``log_every`` steps) after warm-up steps, for each configuration, in one process, on MC showers.
The FLOPs of one step are counted from the models (``torch.utils.flop_counter``, forward and backward) and
the achieved rate is printed next to the device's data-sheet peak.

The ``before`` configuration reproduces the trainer as it was before the fast step: fp32 without TF32 or
cuDNN autotuning, batches read from HDF5 and copied per step, every loss read back each step; it runs at the
first batch size only, as the baseline of the speed-up column.

    python bench/train_speed.py --device cpu --configs before,fp32,bf16 --batch 32 --steps 3
    python bench/train_speed.py --device cpu --configs auto,light,light+dist --batch 32 --steps 5   # issue 23
    python bench/train_speed.py --device cuda --configs before,fp32,bf16 --batch 128,512,1024 \\
        --markdown docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from caloquant.bench.tables import write_block
from caloquant.machine import describe_markdown
from caloquant.simulate import simulate_to_file
from caloquant.train import TrainConfig, Trainer
from caloquant.train.hardware import count_flops, device_name, peak_tflops

BEGIN, END = "<!-- train_speed: begin -->", "<!-- train_speed: end -->"


@dataclass(frozen=True)
class Setting:
    """One benchmarked configuration of the trainer."""

    name: str
    precision: str
    resident: str
    log_every: int
    fast_backends: bool
    compile: bool = False
    critic: str = "reference"
    dist_weight: float = 0.0
    gen_steps: int = 2
    sf_weight: float = 0.0
    count_weight: float = 0.0
    res_weight: float = 0.0
    centroid_weight: float = 0.0
    profile_weight: float = 0.0
    occupancy_weight: float = 0.0
    shape_weight: float = 0.0
    depth_weight: float = 0.0
    lateral_weight: float = 0.0
    dist_statistic: str = "wasserstein"
    mean_statistic: str = "absolute"
    entry_jitter: float = 0.0

    def loss_terms(self) -> dict[str, Any]:
        """The ``TrainConfig`` settings that choose the critic and the generator's loss terms."""
        return {name: getattr(self, name) for name in (
            "critic", "dist_weight", "gen_steps", "sf_weight", "count_weight", "res_weight", "centroid_weight",
            "profile_weight", "occupancy_weight", "shape_weight", "depth_weight", "lateral_weight", "dist_statistic",
            "mean_statistic", "entry_jitter")}


#: the loss terms of the ecal25 campaign from run 9: light critic, distribution, energy-scale, cell-count,
#: resolution and per-layer centroid terms
_CAMPAIGN: dict[str, Any] = dict(critic="light", dist_weight=1.0, sf_weight=100.0, count_weight=20.0, res_weight=5.0,
                                 centroid_weight=5.0)
#: ... and from run 16: per-layer occupancy and the shape term
_CAMPAIGN16: dict[str, Any] = dict(_CAMPAIGN, occupancy_weight=5.0, shape_weight=5.0)
#: ... and from run 19: depth 20, sampling fraction 300, the energy distance (run 21: the split gradient)
_CAMPAIGN19: dict[str, Any] = dict(_CAMPAIGN16, depth_weight=20.0, sf_weight=300.0,
                                   dist_statistic="energy")

SETTINGS = {
    "before": Setting("before", "fp32", "off", 1, fast_backends=False),
    "fp32": Setting("fp32", "fp32", "auto", 10, fast_backends=True),
    "bf16": Setting("bf16", "bf16", "auto", 10, fast_backends=True),
    "auto": Setting("auto", "auto", "auto", 10, fast_backends=True),
    "bf16-compile": Setting("bf16-compile", "bf16", "auto", 10, fast_backends=True, compile=True),
    # issue 23: the light critic with its fast schedule, without and with the distribution term
    "light": Setting("light", "auto", "auto", 10, fast_backends=True, critic="light"),
    "light+dist": Setting("light+dist", "auto", "auto", 10, fast_backends=True, critic="light", dist_weight=1.0),
    "light-fp32": Setting("light-fp32", "fp32", "auto", 10, fast_backends=True, critic="light", dist_weight=1.0),
    # the campaign's step: light critic, distribution term, one generator update per iteration
    "light+dist-1g": Setting("light+dist-1g", "auto", "auto", 10, fast_backends=True, critic="light",
                             dist_weight=1.0, gen_steps=1),
    "campaign": Setting("campaign", "auto", "auto", 10, fast_backends=True, **_CAMPAIGN),
    "campaign+prof": Setting("campaign+prof", "auto", "auto", 10, fast_backends=True, **_CAMPAIGN,
                             profile_weight=1.0),
    "campaign16": Setting("campaign16", "auto", "auto", 10, fast_backends=True, **_CAMPAIGN16),
    "campaign16+depth": Setting("campaign16+depth", "auto", "auto", 10, fast_backends=True, **_CAMPAIGN16,
                                depth_weight=5.0),
    "campaign19": Setting("campaign19", "auto", "auto", 10, fast_backends=True, **_CAMPAIGN19),
    "campaign21": Setting("campaign21", "auto", "auto", 10, fast_backends=True, **_CAMPAIGN19,
                          mean_statistic="split"),
}
# from run 26: the entry-point shift as the generator's last stage; and the same step in BF16 whatever auto picks
SETTINGS["campaign26"] = replace(SETTINGS["campaign21"], name="campaign26", entry_jitter=0.35)
SETTINGS["campaign26-bf16"] = replace(SETTINGS["campaign26"], name="campaign26-bf16", precision="bf16")


@contextlib.contextmanager
def backends(fast: bool) -> Iterator[None]:
    """Switch TF32 and cuDNN autotuning off for the ``before`` setting (the trainer turns them on)."""
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark)
    if not fast:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
         torch.backends.cudnn.benchmark) = saved


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def flops_per_shower(data: Path, val: Path, arch: str, device: str, setting: Setting = SETTINGS["fp32"]) -> float:
    """FLOPs of one training iteration of ``setting`` per shower, counted on a small batch."""
    cfg = TrainConfig(arch=arch, batch_size=4, device=device, precision="fp32", resident="off", chunk_size=64,
                      **setting.loss_terms())
    with tempfile.TemporaryDirectory() as out:
        tr = Trainer(cfg, data, out, val=val, progress=False)
        batch = next(iter(tr.stream.epoch(0)))
        with count_flops() as total:
            tr.train_step(batch, 0)
        return total() / cfg.batch_size


def measure(data: Path, val: Path, arch: str, device: str, setting: Setting, batch: int, warmup: int, steps: int,
            threads: int) -> dict[str, float]:
    """Showers/s and seconds per step of ``setting`` at ``batch``, after ``warmup`` steps."""
    cfg = TrainConfig(arch=arch, batch_size=batch, device=device, precision=setting.precision,
                      resident=setting.resident, compile=setting.compile, log_every=setting.log_every,
                      threads=threads, chunk_size=max(batch, 256), **setting.loss_terms())
    with tempfile.TemporaryDirectory() as out, backends(setting.fast_backends):
        tr = Trainer(cfg, data, out, val=val, progress=False)
        source = tr.resident if tr.resident is not None else tr.stream

        def batches() -> Iterator[object]:
            epoch = 0
            while True:
                yield from source.epoch(epoch)
                epoch += 1

        it = batches()
        dev = tr.ctx.device
        t_start = time.perf_counter()
        for s in range(warmup):
            [float(v) for v in tr.train_step(next(it), s).values()]
        sync(dev)
        warm_s = time.perf_counter() - t_start
        t0, cpu0 = time.perf_counter(), time.process_time()
        for s in range(steps):
            stats = tr.train_step(next(it), warmup + s)
            if (s + 1) % setting.log_every == 0:
                [float(v) for v in stats.values()]
        sync(dev)
        dt, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    peak_mem = torch.cuda.max_memory_allocated(dev) / 2**30 if dev.type == "cuda" else float("nan")
    return {"showers_per_s": batch * steps / dt, "ms_per_step": 1e3 * dt / steps, "warmup_s": warm_s,
            "cpu_ms_per_shower": 1e3 * cpu / (batch * steps),
            "precision": tr.precision, "resident": tr.resident is not None, "peak_gib": peak_mem}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="ecal25")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--batch", default="128", help="comma-separated batch sizes")
    ap.add_argument("--configs", default="before,fp32,bf16", help=f"comma-separated, of {', '.join(SETTINGS)}")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--showers", type=int, default=0, help="MC showers to train on (default: 4 batches of the "
                    "largest size, at least 1024)")
    ap.add_argument("--markdown", type=Path, help="write the table between the train_speed markers of this file")
    ap.add_argument("--json", type=Path, help="write the measurements as JSON")
    args = ap.parse_args()
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    batches = [int(b) for b in args.batch.split(",")]
    window = "25x25x25" if args.arch == "ecal25" else "51x51x25"
    angle = "90" if args.arch == "ecal25" else "60:120"
    rows = []
    with tempfile.TemporaryDirectory() as d:
        data = Path(d) / "mc.h5"
        n = args.showers or max(1024, 4 * max(batches))
        simulate_to_file(data, n, "10:500", angle=angle, window=window, seed=1, progress=False)
        val = Path(d) / "val.h5"  # held-out file the trainer requires (never evaluated here)
        simulate_to_file(val, 64, "10:500", angle=angle, window=window, seed=2, progress=False)
        configs = args.configs.split(",")
        flops = {key: flops_per_shower(data, val, args.arch, str(device), SETTINGS[key]) for key in configs}
        ref_flops = flops_per_shower(data, val, args.arch, str(device))
        name = device_name(device)
        print(f"{name}: {ref_flops / 1e9:.1f} GFLOP per shower per reference step", flush=True)
        header = ("| setting | critic | precision | batch | GFLOP/shower | showers/s | ms/step | CPU ms/shower "
                  "| GFLOP/s | peak TFLOP/s | speed-up vs first |")
        rule = "|---|---|---|---|---|---|---|---|---|---|---|"
        print(header + "\n" + rule, flush=True)
        for b in batches:
            base: float | None = None
            for key in configs:
                if key == "before" and b != batches[0]:
                    continue  # the baseline runs once, at the first batch size
                setting = SETTINGS[key]
                load = os.getloadavg()[0]
                try:
                    m = measure(data, val, args.arch, str(device), setting, b, args.warmup, args.steps, args.threads)
                except Exception as e:  # noqa: BLE001 - one failing setting (e.g. compile) must not lose the others
                    print(f"| {key} | - | - | {b} | failed: {type(e).__name__}: {str(e)[:100]} |", flush=True)
                    continue
                base = base or m["showers_per_s"]
                gflops = m["showers_per_s"] * flops[key] / 1e9
                peak = peak_tflops(device, m["precision"])
                row = (f"| {key} | {setting.critic} | {m['precision']} | {b} | {flops[key] / 1e9:.2f} | "
                       f"{m['showers_per_s']:,.{0 if m['showers_per_s'] >= 100 else 2}f} | "
                       f"{m['ms_per_step']:.1f} | {m['cpu_ms_per_shower']:.0f} | {gflops:.3g} | "
                       f"{f'{peak:.0f}' if peak else '-'} | {m['showers_per_s'] / base:.1f}x |")
                print(row + f" (load {load:.1f} -> {os.getloadavg()[0]:.1f})", flush=True)
                rows.append({"setting": key, "batch": b, **m, "gflops": gflops, "row": row, "load": load})
    if args.json:
        args.json.write_text(json.dumps({"device": name, "gflop_per_shower": {k: v / 1e9 for k, v in flops.items()},
                                         "rows": rows}, indent=2))
    if args.markdown:
        when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
        cmd = "python " + " ".join(["bench/train_speed.py", *sys.argv[1:]])
        table = "\n".join([header, rule, *(r["row"] for r in rows)])
        loads = ", ".join(f"{r['load']:.1f}" for r in rows)
        block = (f"{BEGIN}\n### {args.arch} training step on {name}\n\n`{cmd}` ({when}; {args.warmup} warm-up and "
                 f"{args.steps} timed steps per row; GFLOP per shower of each step counted from the models, forward "
                 f"and backward; CPU ms/shower is the process's CPU time, which load from other processes changes "
                 f"little; load average before each row: {loads}). Host: {describe_markdown()}\n\n{table}\n{END}")
        write_block(args.markdown, block, BEGIN, END)


if __name__ == "__main__":
    main()
