"""Post-hoc test: shift every shower of a sample rigidly by a random sub-cell offset, as the MC jitters its entry point.

    python bench/entry_jitter.py GEN.h5 OUT.h5 [--amplitude 0.35] [--threshold 9.68864e-05] [--seed 5]

Each shower moves by an offset drawn uniformly in +-amplitude cells along x and along y, its cell energies shared
bilinearly between neighbouring cells, and is read out again at ``--threshold`` GeV (the MC's half-MIP threshold).
The reference MC places every entry point uniformly within a cell, which is most of its barycentre's and per-layer
centroids' shower-to-shower spread; validating OUT against the MC tells how much of a generator's separation that
missing degree of freedom carries (docs/training.md, seventeenth ablation). A diagnostic, not a fix: the
generator was not trained with the shift.
"""

from __future__ import annotations

import argparse

import numpy as np

from caloquant.data import write_showers
from caloquant.data.shards import read_showers


def shift(cells: np.ndarray, offsets: np.ndarray, axis: int) -> np.ndarray:
    """Cells (N, X, Y, Z) moved by ``offsets`` (N,) cells along ``axis`` (1 or 2), shared bilinearly (the window
    wraps round at its edges, whose cells hold a negligible share of the energy)."""
    out = np.empty_like(cells)
    for i, d in enumerate(offsets):
        whole = int(np.floor(d))
        frac = d - whole
        base = np.roll(cells[i], whole, axis=axis - 1)
        out[i] = (1 - frac) * base + frac * np.roll(base, 1, axis=axis - 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("generated")
    ap.add_argument("out")
    ap.add_argument("--amplitude", type=float, default=0.35, help="cells; offsets uniform in +-amplitude")
    ap.add_argument("--threshold", type=float, default=9.68864e-05, help="GeV; readout threshold after the shift")
    ap.add_argument("--seed", type=int, default=5)
    args = ap.parse_args()
    showers = read_showers(args.generated)
    rng = np.random.default_rng(args.seed)
    cells = showers.ecal.astype(np.float64)
    for axis in (1, 2):
        cells = shift(cells, rng.uniform(-args.amplitude, args.amplitude, len(showers)), axis)
    cells[cells < args.threshold] = 0
    showers.ecal = cells.astype(np.float32)
    write_showers(args.out, showers)


if __name__ == "__main__":
    main()
