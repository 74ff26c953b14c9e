"""Which features give a candidate away: the classifier AUC of each group of high-level features on its own.

    python bench/classifier_groups.py REF.h5 CAND.h5 [--n 10000] [--hottest 200]

The same two-sample test as ``caloquant validate`` (gradient-boosted trees, isotonic calibration, AUC on a
held-out fifth, three seeds; 0.5 = indistinguishable), run on one feature group at a time, every group with the
primary energy as a condition. Prints a markdown table; issue 23 asks for 0.80 or less on all features together.
"""

from __future__ import annotations

import argparse

import numpy as np

from caloquant.data import read_showers
from caloquant.validate import classifier_auc, compute_features
from caloquant.validate.features import ShowerFeatures


def groups(f: ShowerFeatures, hottest: np.ndarray) -> dict[str, np.ndarray]:
    """Feature groups of one sample (log10 of the primary energy is prepended to each by the caller)."""
    vis = f.visible
    return {
        "visible energy / E_p": (vis / f.energy)[:, None],
        "cells hit per layer": 1.0 - f.layer_sparsity,
        "layer energy fractions": f.profile_z / np.maximum(vis, 1e-12)[:, None],
        "lateral centroids (x, y, r)": np.concatenate([f.layer_ec_x, f.layer_ec_y, f.layer_ec_r], axis=1) / 100,
        "lateral widths (x, y, r)": np.concatenate([f.layer_width_x, f.layer_width_y, f.layer_width_r], axis=1) / 100,
        "cell-energy spectrum (histogram)": f.cell_hist / np.maximum(f.cell_hist.sum(1, keepdims=True), 1),
        "hottest cells / E_p": hottest,
        "all high-level features": f.classifier_vector(),
    }


def hottest_cells(path: str, n: int, k: int) -> np.ndarray:
    """The k hottest cells of each of the first n showers, descending, over the primary energy."""
    s = read_showers(path, 0, n)
    flat = s.ecal.reshape(len(s.ecal), -1)
    top = -np.sort(-np.partition(flat, flat.shape[1] - k, axis=1)[:, -k:], axis=1)
    return top / s.energy[:, None]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("reference")
    ap.add_argument("candidate")
    ap.add_argument("--n", type=int, default=10_000, help="Showers per sample (the first N of each file).")
    ap.add_argument("--hottest", type=int, default=200, help="How many of the hottest cells form their group.")
    args = ap.parse_args()
    sides = []
    for path in (args.reference, args.candidate):
        f = compute_features(path, max_showers=args.n)
        sides.append((np.log10(f.energy)[:, None], groups(f, hottest_cells(path, args.n, args.hottest))))
    print("| features | columns | classifier AUC |")
    print("|---|---|---|")
    for name in sides[0][1]:
        ref, cand = (np.concatenate([le, g[name]], axis=1) for le, g in sides)
        r = classifier_auc(ref, cand)
        print(f"| {name} | {ref.shape[1] - 1} | {r.auc:.3f} +- {r.error:.3f} |", flush=True)


if __name__ == "__main__":
    main()
