"""Cells hit and energy resolution per energy bin (caloquant.validate.fluctuations)."""

from __future__ import annotations

import numpy as np

from caloquant.data import ShowerSet
from caloquant.validate import compute_features
from caloquant.validate.fluctuations import cells_hit, fluctuation_ratios, fluctuation_table, spread_table


def test_cells_hit_and_ratios(mc_small: ShowerSet) -> None:
    ref = compute_features(mc_small)
    assert np.array_equal(cells_hit(ref), (mc_small.ecal > 0).sum(axis=(1, 2, 3)))
    same = fluctuation_ratios(ref, ref)
    assert same == {"cells_ratio": 1.0, "resolution_ratio": 1.0}
    rng = np.random.default_rng(0)
    # fewer cells (the lowest half of each shower's cells removed) and 10 % extra energy smearing
    ecal = mc_small.ecal.copy()
    for k in range(len(ecal)):
        nz = ecal[k][ecal[k] > 0]
        ecal[k][ecal[k] < np.median(nz)] = 0.0
        ecal[k] *= np.float32(1 + 0.1 * rng.standard_normal())
    cand = compute_features(ShowerSet(ecal, mc_small.energy, mc_small.theta))
    rows = fluctuation_table(ref, cand)
    assert len(rows) == 4 and all(0.4 < r["cells_ratio"] < 0.6 for r in rows)
    assert all(r["resolution_ratio"] > 1.2 for r in rows)
    scaled = compute_features(ShowerSet(mc_small.ecal * np.float32(0.97), mc_small.energy, mc_small.theta))
    low = fluctuation_table(ref, scaled)  # 3 % low everywhere: the scale shows it, the spread does not
    assert all(abs(r["scale_ratio"] - 0.97) < 1e-4 and abs(r["resolution_ratio"] - 1) < 1e-4 for r in low)
    worst = fluctuation_ratios(ref, cand)
    assert worst["cells_ratio"] == min(r["cells_ratio"] for r in rows)


def test_spread_table_sees_showers_averaged_together(mc_small: ShowerSet) -> None:
    """A sample against itself reads 1 everywhere; showers averaged in pairs of one energy bin (the same means,
    smaller shower-to-shower fluctuations) read well below 1 in every group; spread showers read above it."""
    ref = compute_features(mc_small)
    same = spread_table(ref, ref)
    assert len(same) == 4 and all(v == 1.0 for r in same for k, v in r.items() if k not in ("e_min", "e_max"))
    order = np.argsort(mc_small.energy)
    ecal = mc_small.ecal.copy()
    ecal[order] = 0.5 * (mc_small.ecal[order] + mc_small.ecal[np.roll(order, 1)])  # neighbours in energy
    rows = spread_table(ref, compute_features(ShowerSet(ecal, mc_small.energy, mc_small.theta)))
    for r in rows:
        assert all(r[g] < 0.85 for g in ("mean depth", "centroid", "radius")), r
    wide = mc_small.ecal.copy()
    shift = np.random.default_rng(1).integers(-2, 3, size=len(wide))
    for k, s in enumerate(shift):  # every shower moved sideways by up to 2 cells: the centroids spread more
        wide[k] = np.roll(wide[k], s, axis=0)
    moved = spread_table(ref, compute_features(ShowerSet(wide, mc_small.energy, mc_small.theta)))
    assert all(r["centroid"] > 1.2 for r in moved)
