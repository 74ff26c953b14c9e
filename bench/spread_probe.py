"""Diagnostic: which generator loss terms pull the shower-to-shower spreads in, at a training checkpoint.

For each term k of the generator's loss (``Trainer.generator_terms``) and each spread S of the generated showers,
the first-order change of S under one RMSprop step on that term alone, per unit learning rate:
dS_k = -<grad S, w_k grad L_k / (sqrt(v) + eps)>, v the checkpoint's RMSprop state. S is the mean over 8 energy
groups of a 256-shower batch of the log standard deviation of the per-layer centroids, the per-layer radii of
read-out cells, or the mean depth. A negative entry means the term narrows that spread. Mean and standard error
over ``--batches`` training batches (the same batches and noise for every ``--retune``, so variants pair up).

    python bench/spread_probe.py campaigns/ecal25/checkpoint-last.pt scratch/campaign-data/ecal25-train.h5 \\
        [--batches 14] [--retune mean_statistic=split] [--retune 'loss_weights=[2, 0.1, 0]']
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import tempfile
from pathlib import Path

import torch

from caloquant.machine import describe_markdown
from caloquant.models.registry import safe_load
from caloquant.train.config import TrainConfig
from caloquant.train.data import TensorBatch, to_tensors
from caloquant.train.losses import (energy_groups, faintest_cell, layer_centroids, layer_depth, layer_shapes,
                                    read_out_energy)
from caloquant.train.loop import Trainer

SPREADS = ("centroid", "radius", "depth")


def log_spread(x: torch.Tensor, energy: torch.Tensor, groups: int = 8) -> torch.Tensor:
    """Mean over energy groups of the mean log standard deviation of the columns of ``x``."""
    order, parts = energy_groups(energy, groups)
    x = x[order]
    return torch.stack([torch.log(x[i].std(0) + 1e-4).mean() for i in parts]).mean()


def spreads(tr: Trainer, b: TensorBatch, seed: int) -> dict[str, torch.Tensor]:
    """The three spread functionals of the generator's showers at batch ``b``'s conditions."""
    sp = tr.spec
    torch.manual_seed(seed)
    gen = tr._fake(torch.randn(len(b), sp.noise_size), b)
    ro = read_out_energy(gen, faintest_cell(b.images.float()), sp.xpower)
    nz = ro.shape[3]
    return {"centroid": log_spread(layer_centroids(gen, sp.xscale, sp.xpower), b.energy),
            "radius": log_spread(layer_shapes(ro, sp.xscale)[:, 2 * nz:], b.energy),
            "depth": log_spread(layer_depth(ro, sp.xscale)[:, nz:nz + 1], b.energy)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", type=Path, help="a full training checkpoint (checkpoint-last.pt)")
    ap.add_argument("train", nargs="+", help="the checkpoint's training file(s)")
    ap.add_argument("--batches", type=int, default=14)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--retune", action="append", default=[], metavar="KEY=VALUE",
                    help="a retunable setting to probe instead of the checkpoint's (value as JSON or a word)")
    args = ap.parse_args()
    changes = {}
    for item in args.retune:
        key, _, value = item.partition("=")
        try:
            changes[key] = json.loads(value)
        except json.JSONDecodeError:
            changes[key] = value
    ckpt = safe_load(args.checkpoint)
    cfg = TrainConfig.from_dict({**ckpt["config"], **changes, "threads": args.threads})
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(args.checkpoint, Path(tmp) / "checkpoint-last.pt")
        tr = Trainer(cfg, args.train, tmp, resume=True, progress=False, retune=list(changes))
        tr.G.train()
        params = [p for p in tr.G.parameters() if p.requires_grad]
        precond = [tr.opt_g.state[p]["square_avg"].sqrt() + 1e-7 for p in params]

        def grads(loss: torch.Tensor) -> list[torch.Tensor]:
            g = torch.autograd.grad(loss, params, allow_unused=True, retain_graph=True)
            return [torch.zeros_like(p) if x is None else x for p, x in zip(params, g)]

        batches = tr.stream.epoch(tr.state.epoch + 1)
        effects: dict[tuple[str, str], list[float]] = {}
        weights: dict[str, float] = {}
        for i in range(args.batches):
            group = [to_tensors(next(batches), tr.ctx.device) for _ in range(8)]
            big = TensorBatch(*(torch.cat([getattr(x, f) for x in group]) for f in ("images", "energy", "theta",
                                                                                     "ecal")))
            spread_grads = {k: grads(s) for k, s in spreads(tr, big, 1000 + i).items()}
            b = group[0]
            torch.manual_seed(2000 + i)
            gen = tr._fake(torch.randn(len(b), tr.spec.noise_size), b)
            for name, (weight, value) in tr.generator_terms(gen, b, tr.real_summaries(b)).items():
                weights[name] = weight
                step = [g / c for g, c in zip(grads(weight * value), precond)]
                for sname, gs in spread_grads.items():
                    effects.setdefault((name, sname), []).append(-float(sum((a * s).sum() for a, s in zip(gs, step))))
            print(f"batch {i + 1}/{args.batches}", flush=True)
    settings = ", ".join(f"{k} {v}" for k, v in changes.items()) or "the checkpoint's settings"
    print(f"\n{args.checkpoint} (step {tr.state.step}), {settings}; {args.batches} batches; "
          f"{describe_markdown()}\n")
    print("| term | weight | " + " | ".join(f"d log spread {s}" for s in SPREADS) + " |")
    print("|---|---|" + "---|" * len(SPREADS))
    for name in weights:
        cells = []
        for s in SPREADS:
            xs = effects[(name, s)]
            mean = sum(xs) / len(xs)
            err = math.sqrt(sum((x - mean) ** 2 for x in xs) / max(len(xs) - 1, 1) / len(xs))
            cells.append(f"{mean:+.2f} +- {err:.2f}")
        print(f"| {name} | {weights[name]:g} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
