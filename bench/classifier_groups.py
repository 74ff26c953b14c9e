"""Which features give a candidate away: the classifier AUC of each group of high-level features on its own.

    python bench/classifier_groups.py REF.h5 CAND.h5 [--n 10000] [--hottest 200] [--shuffled]

The same two-sample test as ``caloquant validate`` (gradient-boosted trees, isotonic calibration, AUC on a
held-out fifth, three seeds; 0.5 = indistinguishable), run on one feature group at a time, every group with the
primary energy as a condition. Prints a markdown table; issue 23 asks for 0.80 or less on all features together.

``--shuffled`` adds a column with each feature's values permuted among the showers of the same energy bin (20
equal-count bins), separately per feature and per sample: the energy-conditioned marginals stay, the correlations
between features go. An AUC that stays high there comes from the marginals alone.
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


def shuffled_within_energy(x: np.ndarray, energy: np.ndarray, rng: np.random.Generator, bins: int = 20
                           ) -> np.ndarray:
    """``x`` (N, F) with every column permuted among the showers of each equal-count energy bin."""
    out = x.copy()
    edges = np.quantile(energy, np.linspace(0.0, 1.0, bins + 1))
    which = np.clip(np.searchsorted(edges, energy, side="right") - 1, 0, bins - 1)
    for b in range(bins):
        rows = np.flatnonzero(which == b)
        for j in range(x.shape[1]):
            out[rows, j] = x[rng.permutation(rows), j]
    return out


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
    ap.add_argument("--shuffled", action="store_true",
                    help="Also the AUC with each feature shuffled within energy bins (marginals only).")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    sides = []
    for path in (args.reference, args.candidate):
        f = compute_features(path, max_showers=args.n)
        sides.append((np.log10(f.energy)[:, None], groups(f, hottest_cells(path, args.n, args.hottest))))
    print("| features | columns | classifier AUC |" + (" marginals only (shuffled within energy bins) |"
                                                       if args.shuffled else ""))
    print("|---|---|---|" + ("---|" if args.shuffled else ""))
    for name in sides[0][1]:
        ref, cand = (np.concatenate([le, g[name]], axis=1) for le, g in sides)
        r = classifier_auc(ref, cand)
        row = f"| {name} | {ref.shape[1] - 1} | {r.auc:.3f} +- {r.error:.3f} |"
        if args.shuffled:
            ref_s, cand_s = (np.concatenate([le, shuffled_within_energy(g[name], 10 ** le[:, 0], rng)], axis=1)
                             for le, g in sides)
            m = classifier_auc(ref_s, cand_s)
            row += f" {m.auc:.3f} +- {m.error:.3f} |"
        print(row, flush=True)


if __name__ == "__main__":
    main()
