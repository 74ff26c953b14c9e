"""Diagnostic: how fast an angle51 generator learns to tilt its showers with the angle, from a training checkpoint.

Takes ``--steps`` generator-only RMSprop steps (fresh optimiser, ``--lr``) from the checkpoint on the angle term
alone or on every generator term (``Trainer.generator_terms``), with the first layer at ``--gain``
(``angle_gain``, refitted as a resumed run refits it) and the angle term's weight times ``--angle-factor``; every
5 steps it prints the slope of the fakes' tilt (``train.losses.shower_tilt``, cells per layer) against theta on
one fixed held-out batch, beside the MC's. Nothing is written.

    python bench/tilt_probe.py campaigns/angle51/checkpoint-last.pt scratch/campaign-data/angle51-train.h5 \\
        [--terms alone|all] [--gain 100] [--angle-factor 10] [--steps 20] [--lr 3e-4] [--threads 2]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from caloquant.machine import describe_markdown
from caloquant.models.registry import safe_load
from caloquant.train.config import TrainConfig
from caloquant.train.data import to_tensors
from caloquant.train.loop import Trainer, weighted_sum
from caloquant.train.losses import shower_tilt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", type=Path, help="a full angle51 training checkpoint (checkpoint-last.pt)")
    ap.add_argument("train", nargs="+", help="the checkpoint's training file(s)")
    ap.add_argument("--terms", choices=("alone", "all"), default="all")
    ap.add_argument("--gain", type=float, default=0.0, help="angle_gain of the first layer (0: theta as is)")
    ap.add_argument("--angle-factor", type=float, default=1.0, help="multiplies the angle term's weight")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    ckpt = safe_load(args.checkpoint)
    cfg = TrainConfig.from_dict({**ckpt["config"], "threads": args.threads, "angle_gain": args.gain})
    if cfg.arch != "angle51":
        ap.error(f"{args.checkpoint} holds a {cfg.arch} model; the tilt is the angle model's")
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(args.checkpoint, Path(tmp) / "checkpoint-last.pt")
        tr = Trainer(cfg, args.train, tmp, resume=True, progress=False, retune=["angle_gain"])
        tr.G.train()
        batches = tr.stream.epoch(tr.state.epoch + 1)
        held = to_tensors(next(batches), tr.ctx.device)
        theta = held.theta.numpy()
        mc_slope = np.polyfit(theta, shower_tilt(held.images, tr.spec.xpower).numpy(), 1)[0]
        noise = torch.randn(len(held), tr.spec.noise_size, generator=torch.Generator().manual_seed(7))
        opt = torch.optim.RMSprop(tr.G.parameters(), lr=args.lr, alpha=0.9, eps=1e-7)

        def slope() -> float:
            with torch.no_grad():
                tilt = shower_tilt(tr._fake(noise, held), tr.spec.xpower).numpy()
            return float(np.polyfit(theta, tilt, 1)[0])

        print(f"{args.checkpoint} (step {tr.state.step}), gain {args.gain:g}, angle term x{args.angle_factor:g} "
              f"({args.terms}), lr {args.lr:g}; {describe_markdown()}")
        print(f"step 0: tilt slope {slope():+.3f} cells per layer per radian (MC {mc_slope:+.3f})", flush=True)
        for k in range(1, args.steps + 1):
            b = to_tensors(next(batches), tr.ctx.device)
            gen = tr._fake(torch.randn(len(b), tr.spec.noise_size), b)
            terms = tr.generator_terms(gen, b, tr.real_summaries(b), pretraining=True)
            weight, value = terms["ang"]
            terms = {"ang": (weight * args.angle_factor, value)} | ({} if args.terms == "alone" else
                                                                    {k: v for k, v in terms.items() if k != "ang"})
            opt.zero_grad()
            weighted_sum(terms).backward()
            opt.step()
            if k % 5 == 0:
                print(f"step {k}: tilt slope {slope():+.3f}", flush=True)


if __name__ == "__main__":
    main()
