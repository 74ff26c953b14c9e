"""Per energy bin: cells hit per shower and visible-energy resolution of a candidate against a reference sample.

    python bench/fluctuations.py REF.h5 CAND.h5 [--bins 4] [--threshold GEV]

Prints a markdown table (reference quartiles of the primary energy) with both samples' values and the ratios
candidate / reference; issue 23's goal is every ratio within 10 % of 1. The last column is the ratio of the mean
visible fractions (the energy scale; the sampling-fraction goal asks for 1 %). A second table gives the candidate /
reference shower-to-shower spreads of the mean depth and of the per-layer centroids, radii, widths and energies
(``caloquant.validate.fluctuations.spread_table``); a generator that learned the mean shower reads below 1 there.
Cells count as hit above the reference MC's readout threshold (half a MIP, 9.69e-5 GeV), which the MC applies and a
generator without one does not: a generated cell below it would not be read out. `--threshold 0` counts every
non-zero cell (the figures before 2026-12-04).
"""

from __future__ import annotations

import argparse

from caloquant.geometry import WINDOW_25
from caloquant.simulate.engine import ShowerSimulator
from caloquant.validate import compute_features
from caloquant.validate.fluctuations import SPREAD_GROUPS, fluctuation_table, spread_table

#: The reference MC's readout threshold (GeV); the same in both windows and in the Geant4 engine.
READOUT_THRESHOLD_GEV = ShowerSimulator(WINDOW_25).cell_threshold


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("reference")
    ap.add_argument("candidate")
    ap.add_argument("--bins", type=int, default=4)
    ap.add_argument("--threshold", type=float, default=READOUT_THRESHOLD_GEV,
                    help="GeV: cells above it count as hit (default: the MC's readout threshold)")
    args = ap.parse_args()
    # just below the threshold: the MC keeps cells at it, and compute_features counts cells above its threshold
    thr = args.threshold * (1 - 1e-6)
    ref, cand = compute_features(args.reference, threshold=thr), compute_features(args.candidate, threshold=thr)
    rows = fluctuation_table(ref, cand, args.bins)
    print(f"cells hit: above {args.threshold:.3g} GeV")
    print("| E bin (GeV) | cells hit MC | cells hit cand. | ratio | resolution MC | resolution cand. | ratio | "
          "energy scale cand. / MC |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['e_min']:.0f}-{r['e_max']:.0f} | {r['cells_ref']:.0f} | {r['cells_cand']:.0f} | "
              f"{r['cells_ratio']:.2f} | {r['resolution_ref']:.4f} | {r['resolution_cand']:.4f} | "
              f"{r['resolution_ratio']:.2f} | {r['scale_ratio']:.4f} |")

    print("\nshower-to-shower spread, cand. / MC (half the 16-84 % range; per-layer groups: median over the layers "
          "holding 1 % of the energy)")
    groups = ["mean depth", *SPREAD_GROUPS]
    print("| E bin (GeV) | " + " | ".join(groups) + " |")
    print("|---|" + "---|" * len(groups))
    for r in spread_table(ref, cand, args.bins):
        print(f"| {r['e_min']:.0f}-{r['e_max']:.0f} | " + " | ".join(f"{r[g]:.2f}" for g in groups) + " |")


if __name__ == "__main__":
    main()
