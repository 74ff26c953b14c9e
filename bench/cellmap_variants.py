"""Designs of the cell map (issue 23, twenty-first ablation): fit one variant on a generator and write the mapped
comparison sample, to be judged with ``caloquant validate``.

    python bench/cellmap_variants.py CKPT NAME BANDS RINGS DEPTHS [--mc FILE] [--mc-showers N]
    caloquant validate scratch/ecal25/ref10k.h5 runs/val/cm-NAME.h5 --json runs/val/cm-NAME.json

RINGS and DEPTHS are comma lists of inner edges (cells from the axis; layer indices) or ``-`` for none. The first
call caches the generator's showers decoded without a readout threshold (4,000 at energies uniform over 10-500 GeV,
seed 77, to fit on; the comparison sample's 10,000 with seed 910, as bench/eval_generator.py draws them) under
scratch/; delete scratch/cm_*.npy when CKPT changes. The MC fitted on is the campaign's training file (default
20,000 showers), independent of the comparison sample.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import replace

import numpy as np

from caloquant.data import ShowerSet, read_showers, write_showers
from caloquant.models import load_generator, sample_showers
from caloquant.models.cellmap import fit_cell_map

THR = 9.68864e-05


def edges(text: str, kind: type) -> tuple:
    return () if text == "-" else tuple(kind(v) for v in text.split(","))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint")
    ap.add_argument("name")
    ap.add_argument("bands", type=int)
    ap.add_argument("rings")
    ap.add_argument("depths")
    ap.add_argument("--reference", default="scratch/ecal25/ref10k.h5")
    ap.add_argument("--mc", default="scratch/campaign-data/ecal25-train.h5")
    ap.add_argument("--mc-showers", type=int, default=20_000)
    args = ap.parse_args()
    ref = read_showers(args.reference)
    if not os.path.exists("scratch/cm_eval.npy"):
        gen = load_generator(args.checkpoint)
        plain = replace(gen.spec, cell_threshold_gev=0.0, cell_map=None)
        e_fit = np.random.default_rng(77).uniform(10, 500, 4000)
        np.save("scratch/cm_fit.npy", sample_showers(gen.module, plain, e_fit, None, seed=77, batch=500))
        np.save("scratch/cm_eval.npy", sample_showers(gen.module, plain, ref.energy, np.degrees(ref.theta),
                                                      seed=910, batch=500))
    mc = read_showers(args.mc, 0, args.mc_showers)
    cmap = fit_cell_map(np.load("scratch/cm_fit.npy"), mc.ecal, THR, bands=args.bands,
                        rings=edges(args.rings, float), depths=edges(args.depths, int))
    raw = np.load("scratch/cm_eval.npy", mmap_mode="r")
    mapped = np.concatenate([cmap.apply(np.asarray(raw[s:s + 500]), THR) for s in range(0, len(raw), 500)])
    print(f"cells per shower: mapped {(mapped > 0).sum() / len(mapped):.0f}, MC {(ref.ecal > 0).sum() / len(ref):.0f}")
    write_showers(f"runs/val/cm-{args.name}.h5", ShowerSet(mapped, ref.energy, ref.theta))


if __name__ == "__main__":
    main()
