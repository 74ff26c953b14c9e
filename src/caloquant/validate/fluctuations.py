"""Shower-to-shower fluctuation checks: cells hit per shower and visible-energy resolution, per energy bin.

A generator that learned the mean shower passes moment metrics yet fires too few cells and has the wrong
energy resolution; these two ratios (candidate / reference, per energy bin) show it directly.
"""

from __future__ import annotations

import numpy as np

from caloquant.validate.features import ShowerFeatures


def cells_hit(features: ShowerFeatures) -> np.ndarray:
    """Number of non-empty cells per shower."""
    w = features.window
    return np.rint((1.0 - features.layer_sparsity).sum(axis=1) * (w.nx * w.ny))


def _quantile_bins(energy: np.ndarray, n_bins: int) -> np.ndarray:
    """Bin edges at energy quantiles of the reference; distinct edges only (one bin for a fixed energy)."""
    edges = np.unique(np.quantile(energy, np.linspace(0.0, 1.0, n_bins + 1)))
    if len(edges) < 2:
        return np.array([energy.min() - 0.5, energy.max() + 0.5])
    edges[0], edges[-1] = -np.inf, np.inf
    return edges


def fluctuation_table(reference: ShowerFeatures, candidate: ShowerFeatures, n_bins: int = 4
                      ) -> list[dict[str, float]]:
    """Per energy bin (reference quantiles): mean cells hit and relative resolution (std/mean of the visible
    fraction) of each sample, and their ratios candidate / reference. Bins with under 10 showers on either side
    are left out."""
    edges = _quantile_bins(reference.energy, n_bins)
    rows = []
    c_ref, c_cand = cells_hit(reference), cells_hit(candidate)
    sf_ref, sf_cand = reference.sampling_fraction, candidate.sampling_fraction
    for lo, hi in zip(edges[:-1], edges[1:]):
        mr = (reference.energy >= lo) & (reference.energy < hi)
        mc = (candidate.energy >= lo) & (candidate.energy < hi)
        if mr.sum() < 10 or mc.sum() < 10:
            continue
        res_ref = float(sf_ref[mr].std() / max(sf_ref[mr].mean(), 1e-12))
        res_cand = float(sf_cand[mc].std() / max(sf_cand[mc].mean(), 1e-12))
        rows.append({"e_min": float(reference.energy[mr].min()), "e_max": float(reference.energy[mr].max()),
                     "cells_ref": float(c_ref[mr].mean()), "cells_cand": float(c_cand[mc].mean()),
                     "cells_ratio": float(c_cand[mc].mean() / max(c_ref[mr].mean(), 1e-12)),
                     "resolution_ref": res_ref, "resolution_cand": res_cand,
                     "resolution_ratio": res_cand / max(res_ref, 1e-12),
                     "scale_ratio": float(sf_cand[mc].mean() / max(sf_ref[mr].mean(), 1e-12))})
    return rows


def fluctuation_ratios(reference: ShowerFeatures, candidate: ShowerFeatures, n_bins: int = 4) -> dict[str, float]:
    """The worst bin's cells-hit and resolution ratios (the ratio farthest from 1; NaN without a usable bin)."""
    rows = fluctuation_table(reference, candidate, n_bins)
    out = {}
    for key in ("cells_ratio", "resolution_ratio"):
        values = [r[key] for r in rows]
        out[key] = max(values, key=lambda v: abs(np.log(max(v, 1e-12)))) if values else float("nan")
    return out


#: Per-layer features whose shower-to-shower spread ``spread_table`` compares, by group.
SPREAD_GROUPS = {"centroid": ("layer_ec_x", "layer_ec_y"), "radius": ("layer_ec_r",),
                 "width": ("layer_width_x", "layer_width_y"), "layer energy": ("layer_energy",)}
#: Layers count in ``spread_table`` where the reference's mean layer energy is at least this fraction of its mean
#: visible energy: in fainter layers a centroid or width rests on a few cells and its spread says little.
SPREAD_MIN_LAYER_FRACTION = 0.01


def _half_range(x: np.ndarray) -> np.ndarray:
    """Half the 16-84 % range along axis 0 (the standard deviation of a Gaussian, robust to tails)."""
    q16, q84 = np.quantile(x, [0.16, 0.84], axis=0)
    return np.asarray(0.5 * (q84 - q16))


def spread_table(reference: ShowerFeatures, candidate: ShowerFeatures, n_bins: int = 4) -> list[dict[str, float]]:
    """Per energy bin (reference quantiles): candidate / reference shower-to-shower spread (half the 16-84 % range)
    of the mean depth, and the median over layers (those holding ``SPREAD_MIN_LAYER_FRACTION`` of the reference's
    energy) of that ratio for each group of per-layer features of ``SPREAD_GROUPS`` (layer energies in log10).
    A generator that learned the mean shower reads well below 1 here while its means and moments match."""
    edges = _quantile_bins(reference.energy, n_bins)
    rows = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        mr = (reference.energy >= lo) & (reference.energy < hi)
        mc = (candidate.energy >= lo) & (candidate.energy < hi)
        if mr.sum() < 10 or mc.sum() < 10:
            continue
        layer_e = reference.profile_z[mr]
        keep = layer_e.mean(0) >= SPREAD_MIN_LAYER_FRACTION * reference.visible[mr].mean()
        row = {"e_min": float(reference.energy[mr].min()), "e_max": float(reference.energy[mr].max()),
               "mean depth": float(_half_range(candidate.moments[mc, 2]) / max(_half_range(reference.moments[mr, 2]),
                                                                                 1e-12))}
        for group, names in SPREAD_GROUPS.items():
            ratios = []
            for name in names:
                r, c = getattr(reference, name)[mr][:, keep], getattr(candidate, name)[mc][:, keep]
                if name == "layer_energy":
                    r, c = np.log10(r + 1e-5), np.log10(c + 1e-5)
                ratios.append(_half_range(c) / np.maximum(_half_range(r), 1e-12))
            row[group] = float(np.median(np.concatenate(ratios))) if keep.any() else float("nan")
        rows.append(row)
    return rows
