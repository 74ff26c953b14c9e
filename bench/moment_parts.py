"""Diagnostic: which 3DGAN moment a candidate gets wrong, energy bin by energy bin.

Prints, for each energy bin of the reference, the mean of each 3DGAN moment (mu_x, mu_y, mu_z, sigma2_x, sigma2_y,
sigma2_z, in cells from 0) in the reference and in each candidate, and each candidate's relative error per moment
over all energies; then the fraction of the visible energy beyond 3, 6, 10 and 20 cells from the window's centre in
x and in y (a halo inflates sigma2 long before it shows in the profiles). ``caloquant validate --json`` has the
per-moment terms of the metric (``per_moment``); this shows the means behind them.

    python bench/moment_parts.py REFERENCE.h5 CANDIDATE.h5 [CANDIDATE.h5 ...] [--bins 10,100,200,300,400,500]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from caloquant.validate import compute_features
from caloquant.validate.features import ShowerFeatures
from caloquant.validate.metrics import MOMENT_NAMES

HALO_CELLS = (3, 6, 10, 20)


def halo(f: ShowerFeatures, mask: np.ndarray) -> list[str]:
    """Mean fraction of the visible energy at least k cells from the window centre, in x and in y."""
    out = []
    for prof in (f.profile_x[mask], f.profile_y[mask]):
        p = prof / np.maximum(prof.sum(1, keepdims=True), 1e-12)
        d = np.abs(np.arange(prof.shape[1]) - (prof.shape[1] - 1) / 2)
        out.append(" ".join(f"{p[:, d >= k].sum(1).mean():.4f}" for k in HALO_CELLS))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("reference")
    ap.add_argument("candidates", nargs="+")
    ap.add_argument("--bins", default="10,100,200,300,400,500", help="energy bin edges in GeV")
    a = ap.parse_args()
    edges = [float(x) for x in a.bins.split(",")]
    edges[-1] += 1e-6
    ref = compute_features(a.reference)
    samples = [("reference", ref)] + [(Path(p).stem, compute_features(p)) for p in a.candidates]
    print("bin (GeV)  sample      " + " ".join(f"{n:>9}" for n in MOMENT_NAMES))
    for lo, hi in zip(edges[:-1], edges[1:]):
        for name, f in samples:
            m = (f.energy >= lo) & (f.energy < hi)
            means = f.moments[m].mean(0) if m.any() else np.full(6, np.nan)
            print(f"{lo:4.0f}-{hi:<4.0f}  {name[:10]:>10}  " + " ".join(f"{v:9.3f}" for v in means))
    print("\nrelative error over all energies")
    for name, f in samples[1:]:
        rel = np.abs(f.moments.mean(0) - ref.moments.mean(0)) / np.abs(ref.moments.mean(0))
        print(f"{name[:21]:>21} " + " ".join(f"{v:9.3f}" for v in rel))
    print(f"\nenergy fraction at least {', '.join(map(str, HALO_CELLS))} cells from the centre: x | y")
    for lo, hi in zip(edges[:-1], edges[1:]):
        for name, f in samples:
            x, y = halo(f, (f.energy >= lo) & (f.energy < hi))
            print(f"{lo:4.0f}-{hi:<4.0f}  {name[:10]:>10}  {x} | {y}")


if __name__ == "__main__":
    main()
