"""Recompute the BatchNorm statistics of a training checkpoint's exported generator (precise BN) into a copy.

Trainers since 2026-12-06 do this themselves before an EMA generator is evaluated or saved (``--bn-calibration``,
docs/training.md); this brings a checkpoint written before that (or with ``--bn-calibration 0``) to the same state,
so that it can be judged and shipped as a newer one would be:

    .venv/bin/python bench/calibrate_bn.py campaigns/ecal25/checkpoint-last.pt -o scratch/calibrated.pt
    bash bench/eval_candidate.sh NAME scratch/calibrated.pt

The generator that is exported (``generator_ema`` when the checkpoint has one, else ``generator``) gets the plain
average of the training-mode batch statistics of ``--showers`` showers at energies (and angles) uniform over its
spec's ranges, in batches of the checkpoint's training batch; every other entry is copied unchanged.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from caloquant._atomic import atomic_path
from caloquant.models import build_generator, calibrate_batchnorm
from caloquant.models.registry import CHECKPOINT_FORMAT, load_state, safe_load
from caloquant.models.spec import ModelSpec
from caloquant.train.loop import BN_CALIBRATION_SEED


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("-o", "--output", type=Path, required=True)
    ap.add_argument("--showers", type=int, default=1024)
    ap.add_argument("--seed", type=int, default=None, help="default: as the trainer draws them")
    args = ap.parse_args()
    ckpt = safe_load(args.checkpoint)
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise SystemExit(f"{args.checkpoint}: not a caloquant training checkpoint")
    key = "generator_ema" if ckpt.get("generator_ema") else "generator"
    spec = ModelSpec.from_dict(ckpt["spec"])
    gen = build_generator(spec)
    load_state(gen, ckpt[key], str(args.checkpoint))
    seed = ckpt["config"]["seed"] + BN_CALIBRATION_SEED if args.seed is None else args.seed
    calibrate_batchnorm(gen, spec, args.showers, seed=seed, batch=ckpt["config"]["batch_size"])
    ckpt[key] = gen.state_dict()
    with atomic_path(args.output) as tmp:
        torch.save(ckpt, tmp)
    print(f"{args.output}: {key} of {args.checkpoint} (step {ckpt['state']['step']}) with BatchNorm statistics "
          f"of {args.showers} showers")


if __name__ == "__main__":
    main()
