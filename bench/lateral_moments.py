"""The shower's lateral moments of a reference and candidates: how its barycentre and width vary, and go together.

    python bench/lateral_moments.py REF.h5 CAND.h5 [CAND2.h5 ...] [--min-energy 133]

The reference MC places each shower's entry point uniformly within a cell (a rigid sub-cell shift of the whole
shower), so its x barycentre wanders and its binned width grows with the distance of the barycentre from the
window's central cell. Prints, for every sample, the 16/50/84 % quantiles of mu_x and sigma2_x (validation's
3DGAN moments, cells and cells^2) per reference energy quartile, and above ``--min-energy`` the standard deviation
of mu_x, the mean sigma2_x by |mu_x - centre| and their correlation. A generator that shifts no shower but spreads
some reads a narrow barycentre, a wide width and a weak correlation (docs/training.md, seventeenth ablation).
A third table gives, by the same offset bins, the fraction of the x profile's energy in the central column and in
its two neighbours: how much energy moves to the neighbour as the entry point moves within its cell (the MC's
central fraction falls from 0.75 to 0.49; docs/training.md, eighteenth ablation).
"""

from __future__ import annotations

import argparse

import numpy as np

from caloquant.data import read_showers
from caloquant.validate.features import ShowerFeatures, as_features

#: |mu_x - centre| bins (cells) of the width-by-offset table.
OFFSET_EDGES = (0.0, 0.1, 0.2, 0.35, np.inf)


def quantile_rows(name: str, f: ShowerFeatures, edges: np.ndarray) -> list[str]:
    """Markdown rows: 16/50/84 % of mu_x and sigma2_x per energy bin."""
    rows = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        m = f.moments[(f.energy >= lo) & (f.energy <= hi)]
        qx, qs = (np.percentile(m[:, j], [16, 50, 84]) for j in (0, 3))
        rows.append(f"| {name} | {lo:.0f}-{hi:.0f} | {qx[0]:.3f} / {qx[1]:.3f} / {qx[2]:.3f} | "
                    f"{qs[0]:.3f} / {qs[1]:.3f} / {qs[2]:.3f} |")
    return rows


def offset_row(name: str, f: ShowerFeatures, min_energy: float) -> str:
    """Markdown row: spread of mu_x, mean sigma2_x per |mu_x - centre| bin, and their correlation."""
    m = f.moments[f.energy > min_energy]
    offset = np.abs(m[:, 0] - (f.window.nx - 1) / 2)
    means = [m[(offset >= a) & (offset < b), 3] for a, b in zip(OFFSET_EDGES[:-1], OFFSET_EDGES[1:])]
    cells = " | ".join(f"{v.mean():.3f}" if len(v) else "-" for v in means)
    return f"| {name} | {m[:, 0].std():.3f} | {cells} | {np.corrcoef(offset, m[:, 3])[0, 1]:.2f} |"


def column_row(name: str, path: str, min_energy: float) -> str:
    """Markdown row: central-column and neighbour fractions of the x profile per |mu_x - centre| bin."""
    showers = read_showers(path)
    keep = showers.energy > min_energy
    profile = showers.ecal[keep].sum((2, 3), dtype=np.float64)
    centre = (profile.shape[1] - 1) // 2
    total = profile.sum(1)
    offset = np.abs((profile * np.arange(profile.shape[1])).sum(1) / total - centre)
    central = profile[:, centre] / total
    sides = (profile[:, centre - 1] + profile[:, centre + 1]) / total
    cells = []
    for a, b in zip(OFFSET_EDGES[:-1], OFFSET_EDGES[1:]):
        m = (offset >= a) & (offset < b)
        cells.append(f"{central[m].mean():.3f} / {sides[m].mean():.3f}" if m.any() else "-")
    return f"| {name} | {' | '.join(cells)} |"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("reference")
    ap.add_argument("candidates", nargs="+")
    ap.add_argument("--min-energy", type=float, default=133.0, help="GeV; the offset table's lower energy cut")
    args = ap.parse_args()
    samples = {p: as_features(p) for p in [args.reference, *args.candidates]}
    ref = samples[args.reference]
    edges = np.quantile(ref.energy, np.linspace(0, 1, 5))
    print("| sample | E (GeV) | mu_x 16 / 50 / 84 % (cells) | sigma2_x 16 / 50 / 84 % (cells^2) |\n|---|---|---|---|")
    for name, f in samples.items():
        print("\n".join(quantile_rows(name, f, edges)))
    bins = " | ".join(f"{a:g}-{b:g}" if np.isfinite(b) else f">{a:g}"
                      for a, b in zip(OFFSET_EDGES[:-1], OFFSET_EDGES[1:]))
    print(f"\nabove {args.min_energy:g} GeV, mean sigma2_x by |mu_x - centre| (cells):\n")
    print(f"| sample | std mu_x | {bins} | corr(offset, sigma2_x) |\n|---|---|---|---|---|---|---|---|")
    for name, f in samples.items():
        print(offset_row(name, f, args.min_energy))
    print(f"\nabove {args.min_energy:g} GeV, x-profile energy fraction in the central column / its two neighbours by "
          "|mu_x - centre|:\n")
    print(f"| sample | {bins} |\n|---|---|---|---|---|")
    for name in samples:
        print(column_row(name, name, args.min_energy))


if __name__ == "__main__":
    main()
