"""Fit a GFlashTuning so that GFlash showers match reference (Geant4) samples at fixed energies.

The fit minimises a chi2 over every energy: the visible fraction, resolution, longitudinal barycentre and
width, lateral rms and r90 (``summary``), each divided by its statistical error, plus the normalised per-layer
profile, whose pulls are divided by the square root of the number of layers so that the shape as a whole counts
as much as one quantity (GFlash's gamma-function profile cannot follow every layer of a full simulation, and a
plain chi2 would let 25 layers outvote the resolution). GFlash candidates are simulated with the same seeds at
every step (common random numbers), so the chi2 changes smoothly with the parameters; the final comparison uses
an independent GFlash sample, so the fit's own random numbers cannot flatter it. Ten parameters: the
visible-energy scale of each sampling structure, the stochastic-term scale, the shifts and ln E slopes of
<ln T_max> and <ln alpha>, the scale of their spread, and the core and tail radius scales, each bounded by its
physical range (``GFlashTuning`` ``RANGES``), so that every candidate and the result are valid tunings.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares

from caloquant.calibrate.summary import PROFILE_FLOOR, Summary, summarise
from caloquant.data.formats import ShowerSet
from caloquant.errors import InputError
from caloquant.geometry import CLIC_ECAL, Window
from caloquant.simulate.engine import ShowerSimulator, Spectrum
from caloquant.simulate.tuning import IDENTITY, RANGES, GFlashTuning

#: Scalar quantities in the chi2 (the peak layer is left to the profile, which holds the same information).
FIT_QUANTITIES = ("visible_fraction", "resolution", "barycentre", "long_width", "lateral_rms_mm", "r90_mm")
#: Fitted parameters: a visible-energy scale per sampling structure and eight shape corrections.
N_PARAMETERS = len(CLIC_ECAL.structures) + 8
#: Relative floor on every error (0.2 %): no quantity is asked to agree better than this.
ERROR_FLOOR = 0.002
#: Finite-difference step of the parameters (ln scales and ln shifts): large enough to see through the
#: discreteness of the spot counts and the rejection sampling of the fluctuations.
DIFF_STEP = 0.03
#: The tuning field of each fit parameter after the sampling scales, and whether it enters as a logarithm.
_SHAPE_FIELDS = (("stochastic_scale", True), ("ln_t_shift", False), ("ln_t_slope", False),
                 ("ln_alpha_shift", False), ("ln_alpha_slope", False), ("profile_fluctuation_scale", True),
                 ("core_scale", True), ("tail_scale", True))


def parameter_bounds(n_structures: int) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper bounds of the fit parameters: the physical ranges of GFlashTuning (``RANGES``), so that
    the fit never leaves them."""
    low, high = RANGES["sampling_scale"]
    bounds = [(math.log(low), math.log(high))] * n_structures
    for name, log in _SHAPE_FIELDS:
        low, high = RANGES[name]
        bounds.append((math.log(low), math.log(high)) if log else (low, high))
    lower, upper = np.array(bounds).T
    return lower, upper


@dataclass(frozen=True)
class CalibrationResult:
    """The fitted tuning, the reference summaries, and GFlash before and after on an independent sample."""

    tuning: GFlashTuning
    reference: list[Summary]
    before: list[Summary]
    after: list[Summary]
    chi2_before: float
    chi2_after: float
    evaluations: int
    #: What made the reference samples, for tables ("Geant4", or "reference" when not recorded).
    label: str = "reference"


def _tuning(x: np.ndarray, n_structures: int, fitted_to: str) -> GFlashTuning:
    """Parameters of the fit -> GFlashTuning (scales enter as logarithms; clipped to RANGES against rounding)."""
    def value(name: str, v: float, log: bool) -> float:
        low, high = RANGES[name]
        return min(max(math.exp(v) if log else v, low), high)

    s = n_structures
    shape = {name: value(name, float(x[s + k]), log) for k, (name, log) in enumerate(_SHAPE_FIELDS)}
    return GFlashTuning(sampling_scale=tuple(value("sampling_scale", float(v), True) for v in x[:s]),
                        fitted_to=fitted_to, **shape)


def _residuals(ref: Summary, cand: Summary, cand_err: Summary) -> np.ndarray:
    """Deviations of ``cand`` from ``ref`` in units of the combined error (``cand_err`` gives GFlash's errors)."""
    out = []
    for q in FIT_QUANTITIES:
        sigma = math.hypot(ref.errors[q], cand_err.errors[q], ERROR_FLOOR * ref.values[q])
        out.append((cand.values[q] - ref.values[q]) / sigma)
    keep = np.maximum(ref.profile, cand.profile) > PROFILE_FLOOR
    sigma = np.sqrt(ref.profile_error**2 + cand_err.profile_error**2 + (ERROR_FLOOR * ref.profile) ** 2)
    prof = np.where(keep, (cand.profile - ref.profile) / np.maximum(sigma, 1e-30), 0.0)
    return np.concatenate([out, prof / math.sqrt(max(int(keep.sum()), 1))])


def gflash_summaries(tuning: GFlashTuning, energies: list[float], n: int, seed: int, window: Window,
                     bootstrap: bool = False) -> list[Summary]:
    """Summaries of ``n`` GFlash showers at each energy (seed + k at the k-th energy)."""
    sim = ShowerSimulator(window, CLIC_ECAL, tuning=tuning)
    return [summarise(sim.simulate(n, Spectrum(e, e), seed=seed + k), where=f"GFlash {e:g} GeV", bootstrap=bootstrap)
            for k, e in enumerate(energies)]


def fit_gflash(
    references: list[ShowerSet],
    *,
    fitted_to: str = "reference",
    label: str = "reference",
    n_fit: int = 400,
    n_check: int = 1000,
    seed: int = 1,
    max_steps: int = 15,
    on_evaluation: Callable[[int, float], None] | None = None,
) -> CalibrationResult:
    """Fit a GFlashTuning to fixed-energy, perpendicular reference samples (at least two energies); ``label``
    names what made them in tables. The parameters stay within the physical ranges of GFlashTuning."""
    if len(references) < 2:
        raise InputError(f"calibration needs reference samples at two or more energies, got {len(references)}")
    if n_fit < 50 or n_check < 50:
        raise InputError("calibration needs at least 50 GFlash showers per energy for the fit and the check")
    window = references[0].window
    if any(r.window != window for r in references):
        raise InputError("reference samples use different readout windows")
    ref = [summarise(r, where=f"reference {k}") for k, r in enumerate(references)]
    energies = [s.energy for s in ref]
    if len(set(energies)) != len(energies):
        raise InputError("two reference samples have the same energy")
    n_struct = len(CLIC_ECAL.structures)
    start = gflash_summaries(IDENTITY, energies, n_fit, seed, window, bootstrap=True)
    evaluations = 0

    def chi(x: np.ndarray) -> np.ndarray:
        nonlocal evaluations
        cand = gflash_summaries(_tuning(x, n_struct, fitted_to), energies, n_fit, seed, window)
        r = np.concatenate([_residuals(a, b, e) for a, b, e in zip(ref, cand, start)])
        evaluations += 1
        if on_evaluation is not None:
            on_evaluation(evaluations, float(r @ r))
        return r

    last: dict[bytes, np.ndarray] = {}

    def cached(x: np.ndarray) -> np.ndarray:
        key = x.tobytes()
        if key not in last:
            last.clear()
            last[key] = chi(x)
        return last[key]

    lower, upper = parameter_bounds(n_struct)

    def jacobian(x: np.ndarray) -> np.ndarray:
        """Forward differences with an absolute step (scipy's relative steps vanish at x = 0); backward ones
        where a forward step would leave the bounds."""
        r0 = cached(x)
        cols = []
        for i in range(len(x)):
            xi = x.copy()
            step = DIFF_STEP if x[i] + DIFF_STEP <= upper[i] else -DIFF_STEP
            xi[i] += step
            cols.append((chi(xi) - r0) / step)
        return np.stack(cols, axis=1)

    x0 = np.zeros(N_PARAMETERS)
    fit = least_squares(cached, x0, jac=jacobian, bounds=(lower, upper), max_nfev=max_steps, method="trf",
                        x_scale="jac")
    tuning = _tuning(fit.x, n_struct, fitted_to)
    before = gflash_summaries(IDENTITY, energies, n_check, seed + 1000, window, bootstrap=True)
    after = gflash_summaries(tuning, energies, n_check, seed + 1000, window, bootstrap=True)

    def total(cands: list[Summary]) -> float:
        r = np.concatenate([_residuals(a, b, b) for a, b in zip(ref, cands)])
        return float(r @ r)

    return CalibrationResult(tuning, ref, before, after, total(before), total(after), evaluations, label)
