"""Generate showers with a trained generator at the energies (and angles) of a reference file, for validation.

Shower i gets the noise of (seed, i) and the conditions of reference shower i, so the candidate file pairs
with the reference one-to-one; then ``caloquant validate REF.h5 OUT.h5 --json M.json`` judges it.

    python bench/eval_generator.py runs/x/generator-best.pt ref.h5 -o gen.h5 [--device cuda] [--seed 910] \
        [--readout-threshold GEV] [--entry-jitter CELLS]

``--readout-threshold`` decodes through that readout threshold instead of the model's own (its spec's
``cell_threshold_gev``; 0 for generators trained without one), to compare generators on the same footing.
``--entry-jitter`` ends the generator with that entry-point shift instead of its own (``entry_jitter_cells``;
``models.layers.EntryShift``), e.g. to see what the shift does to a generator trained without it.
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from caloquant.data import ShowerSet, read_showers, write_showers
from caloquant.models import build_generator, load_generator, sample_showers


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="shipped name, generator .pt with its .json card, or a training checkpoint")
    ap.add_argument("reference", type=Path)
    ap.add_argument("-o", "--output", type=Path, required=True)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--seed", type=int, default=910)
    ap.add_argument("--readout-threshold", type=float, default=None, help="GeV (default: the model's own)")
    ap.add_argument("--entry-jitter", type=float, default=None, help="cells (default: the model's own)")
    args = ap.parse_args()
    gen = load_generator(args.model)
    spec = gen.spec if args.readout_threshold is None else replace(gen.spec, cell_threshold_gev=args.readout_threshold)
    module = gen.module
    if args.entry_jitter is not None:
        spec = replace(spec, entry_jitter_cells=args.entry_jitter)
        module = build_generator(spec)
        module.load_state_dict(gen.module.state_dict())
    ref = read_showers(args.reference)
    module = module.eval().to(args.device)
    ecal = sample_showers(module, spec, ref.energy, np.degrees(ref.theta), seed=args.seed, batch=1024,
                          device=args.device)
    write_showers(args.output, ShowerSet(ecal, ref.energy, ref.theta))
    print(f"{args.output}: {len(ecal)} showers from {gen.source} (sha256 {gen.sha256[:12]}), readout threshold "
          f"{spec.cell_threshold_gev:g} GeV, entry jitter {spec.entry_jitter_cells:g} cells")


if __name__ == "__main__":
    main()
