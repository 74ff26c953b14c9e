"""What a calorimeter physicist compares between two simulations at one beam energy, with statistical errors.

Visible fraction (sampling fraction: visible / primary energy), resolution (its std / mean), longitudinal peak
(vertex of a parabola through the maximum of the mean profile and its neighbours, in layers from 0),
barycentre and width (energy-weighted mean and rms layer per shower, averaged), r90 (radius around the window
centre holding 90 % of the mean transverse profile, interpolated between cell-centre radii, mm), lateral rms
(per-shower rms of x and y, averaged, mm) and the per-layer profile normalised to the visible energy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from caloquant.data.formats import ShowerSet
from caloquant.errors import InputError
from caloquant.geometry import CLIC_ECAL
from caloquant.validate.features import ShowerFeatures, compute_features

#: The compared quantities: (name, column title, unit).
QUANTITIES = (
    ("visible_fraction", "visible / primary", ""),
    ("resolution", "resolution", "%"),
    ("peak_layer", "peak layer", ""),
    ("barycentre", "barycentre", "layers"),
    ("long_width", "long. width", "layers"),
    ("r90_mm", "r90", "mm"),
    ("lateral_rms_mm", "lateral rms", "mm"),
)
#: Layers below this fraction of the visible energy (in both samples) are left out of profile comparisons.
PROFILE_FLOOR = 1e-3
#: Bootstrap resamples for the errors of peak and r90 (the quantities of the mean shower).
N_BOOT = 40


@dataclass(frozen=True)
class Summary:
    """The quantities of one sample at one fixed energy, their errors and the normalised layer profile."""

    energy: float
    n: int
    values: dict[str, float]
    errors: dict[str, float]
    profile: np.ndarray
    profile_error: np.ndarray


def fixed_energy(showers: ShowerSet, where: str = "sample") -> float:
    """The one primary energy of ``showers``; several energies or tilted showers are refused."""
    e = np.asarray(showers.energy, dtype=np.float64)
    if len(e) == 0:
        raise InputError(f"{where}: no showers")
    if np.ptp(e) > 1e-6 * e.max():
        raise InputError(f"{where}: energies {e.min():g}-{e.max():g} GeV; calibration needs one fixed energy per "
                         "sample (caloquant simulate --energy E)")
    if np.any(np.abs(np.asarray(showers.theta) - np.pi / 2) > 1e-3):
        raise InputError(f"{where}: tilted showers; calibration uses perpendicular showers (--angle 90)")
    return float(e[0])


def _peak(profile: np.ndarray) -> float:
    """Vertex of the parabola through the maximum of ``profile`` and its two neighbours (layers from 0)."""
    k = int(np.clip(np.argmax(profile), 1, len(profile) - 2))
    a, b, c = profile[k - 1], profile[k], profile[k + 1]
    denom = a - 2 * b + c
    return float(k + (0.5 * (a - c) / denom if denom < 0 else 0.0))


def _r90(image_xy: np.ndarray, cell_mm: float) -> float:
    """Radius (mm) holding 90 % of the transverse profile ``image_xy``, linear between cell-centre radii."""
    nx, ny = image_xy.shape
    cx = (np.arange(nx) - (nx - 1) / 2) * cell_mm
    cy = (np.arange(ny) - (ny - 1) / 2) * cell_mm
    r = np.hypot(cx[:, None], cy[None, :]).ravel()
    radii, inverse = np.unique(np.round(r, 6), return_inverse=True)
    energy = np.bincount(inverse, weights=image_xy.ravel(), minlength=len(radii))
    cum = np.cumsum(energy) / max(energy.sum(), 1e-30)
    return float(np.interp(0.9, cum, radii))


def _mean_quantities(f: ShowerFeatures, xy: np.ndarray, index: np.ndarray, cell_mm: float) -> tuple[float, float]:
    """(peak layer, r90) of the mean shower of the showers ``index`` (for the bootstrap); ``xy`` holds the
    per-shower transverse images."""
    return _peak(f.profile_z[index].mean(axis=0)), _r90(xy[index].sum(axis=0), cell_mm)


def summarise(showers: ShowerSet, *, where: str = "sample", bootstrap: bool = True, seed: int = 0) -> Summary:
    """The quantities of a fixed-energy, perpendicular sample (errors of peak and r90 by bootstrap, else 0)."""
    energy = fixed_energy(showers, where)
    f = compute_features(showers)
    n = len(f)
    if n < 2:
        raise InputError(f"{where}: {n} shower; at least 2 are needed for errors")
    cell = CLIC_ECAL.cell_mm
    sf = f.sampling_fraction
    m = f.moments
    width = np.sqrt(m[:, 5])
    lateral = np.sqrt(0.5 * (m[:, 3] + m[:, 4])) * cell
    xy = showers.ecal.sum(axis=3, dtype=np.float64)
    peak, r90 = _mean_quantities(f, xy, np.arange(n), cell)
    values = {"visible_fraction": float(sf.mean()), "resolution": float(sf.std(ddof=1) / sf.mean() * 100),
              "peak_layer": peak, "barycentre": float(m[:, 2].mean()), "long_width": float(width.mean()),
              "r90_mm": r90, "lateral_rms_mm": float(lateral.mean())}
    root_n = np.sqrt(n)
    errors = {"visible_fraction": float(sf.std(ddof=1) / root_n),
              "resolution": values["resolution"] / np.sqrt(2 * (n - 1)),
              "barycentre": float(m[:, 2].std(ddof=1) / root_n), "long_width": float(width.std(ddof=1) / root_n),
              "lateral_rms_mm": float(lateral.std(ddof=1) / root_n), "peak_layer": 0.0, "r90_mm": 0.0}
    if bootstrap:
        rng = np.random.default_rng(seed)
        boot = np.array([_mean_quantities(f, xy, rng.integers(0, n, n), cell) for _ in range(N_BOOT)])
        errors["peak_layer"], errors["r90_mm"] = (float(s) for s in boot.std(axis=0, ddof=1))
    shape = f.profile_z / np.maximum(f.visible, 1e-30)[:, None]
    return Summary(energy, n, values, errors, shape.mean(axis=0), shape.std(axis=0, ddof=1) / root_n)


def profile_chi2(a: Summary, b: Summary) -> float:
    """chi2 / ndf of two normalised layer profiles (layers above PROFILE_FLOOR in either)."""
    keep = np.maximum(a.profile, b.profile) > PROFILE_FLOOR
    var = a.profile_error[keep] ** 2 + b.profile_error[keep] ** 2
    return float(np.sum((a.profile[keep] - b.profile[keep]) ** 2 / np.maximum(var, 1e-30)) / max(keep.sum(), 1))


def _cell(s: Summary, q: str) -> str:
    """A value with its error, in the unit of the quantity."""
    digits = {"visible_fraction": 5, "resolution": 2}.get(q, 2)
    return f"{s.values[q]:.{digits}f} ± {s.errors[q]:.{digits}f}"


def comparison_table(rows: list[tuple[str, Summary, Summary | None]]) -> str:
    """A markdown table, one row per (label, sample, reference): values, and the deviation from the reference."""
    head = ["E (GeV)", "engine", "showers"] + [f"{t} ({u})" if u else t for _, t, u in QUANTITIES]
    head += ["profile χ²/ndf"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, s, ref in rows:
        cells = [f"{s.energy:g}", label, str(s.n)]
        for q, _, _ in QUANTITIES:
            text = _cell(s, q)
            if ref is not None:
                text += f" ({(s.values[q] / ref.values[q] - 1) * 100:+.1f} %)"
            cells.append(text)
        cells.append(f"{profile_chi2(s, ref):.2f}" if ref is not None else "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
