"""Binned comparison metrics (3DGAN moments and profiles, sampling fraction, separation power, chi2).

Every metric here is a function of weighted sums over showers, so one code path serves the plain value
(unit weights), the bootstrap (multinomial count weights, one row per replicate) and the paired bootstrap.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from caloquant.errors import InputError
from caloquant.validate.bins import BinsSpec, EnergyBins, resolve_bins
from caloquant.validate.features import ShowerFeatures, Source, as_features, check_compatible

#: A bin needs at least this many showers in both samples to be scored; emptier bins are reported, not scored.
MIN_SHOWERS_PER_BIN = 2
#: Fewest showers a sample needs before any verdict is given ("not enough data" below).
MIN_SHOWERS_PER_SAMPLE = 50
#: Histogram bins between the 0.1 % and 99.9 % reference quantiles (plus one underflow and one overflow bin).
SEPARATION_BINS = 30
SEPARATION_QUANTILES = (0.001, 0.999)
AUC_MARGIN = 0.02

Sample = ShowerFeatures | Source


@dataclass
class MetricResult:
    """One metric of a candidate against the reference, with its uncertainty and noise floor.

    ``noise_floor`` is the same metric between two independent halves of the reference (``noise_error`` its
    uncertainty); ``passed`` applies the rule in ``docs/validation.md``.
    """

    name: str
    value: float
    error: float
    noise_floor: float = float("nan")
    noise_error: float = 0.0
    passed: bool | None = None
    per_bin: dict[str, float] = field(default_factory=dict)
    empty_bins: list[str] = field(default_factory=list)
    unscored_bins: list[str] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)

    def judge(self) -> MetricResult:
        """Set ``passed``: value within noise floor + 2 sigma (AUC: distance from 0.5, plus a small margin).

        A per-bin metric with a requested energy bin too thin to score gets no verdict (``None``: not enough
        data); thin automatic bins (``unscored_bins``) are left out of the average and do not stop the verdict.
        """
        if self.empty_bins:
            self.passed = None
            return self
        tol = 2.0 * float(np.hypot(self.error, self.noise_error))
        floor = self.noise_floor if np.isfinite(self.noise_floor) else 0.0
        if self.name == "classifier_auc":
            self.passed = bool(self.value - 0.5 <= max(floor - 0.5, 0.0) + tol + AUC_MARGIN)
        elif self.name == "chi2_ndf_mean":
            self.passed = bool(self.value <= max(floor, 1.0) + tol)
        else:
            self.passed = bool(np.isfinite(self.value) and self.value <= max(floor, 0.0) + tol)
        return self

    @property
    def verdict(self) -> str:
        """'pass', 'fail', 'not enough data' (judged, but a bin was too thin) or 'not judged'."""
        if self.passed is None:
            return "not enough data" if self.empty_bins else "not judged"
        return "pass" if self.passed else "fail"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form: value, error, noise_floor, pass (+ noise_error, per-bin values, empty requested bins,
        thin automatic bins left unscored)."""
        out: dict[str, Any] = {"value": _num(self.value), "error": _num(self.error),
                               "noise_floor": _num(self.noise_floor), "noise_error": _num(self.noise_error),
                               "pass": self.passed, "verdict": self.verdict}
        if self.per_bin:
            out["per_bin"] = {k: _num(v) for k, v in self.per_bin.items()}
        if self.empty_bins:
            out["empty_bins"] = list(self.empty_bins)
        if self.unscored_bins:
            out["unscored_bins"] = list(self.unscored_bins)
        return out


def _num(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def bootstrap_counts(n: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot, n) multinomial resampling counts: row b says how often each shower is drawn in replicate b."""
    idx = rng.integers(0, n, size=(n_boot, n)) + (np.arange(n_boot) * n)[:, None]
    return np.bincount(idx.ravel(), minlength=n_boot * n).reshape(n_boot, n).astype(np.float64)


class Comparison:
    """Reference vs candidate features in energy bins, evaluated for any set of shower weights."""

    def __init__(self, reference: ShowerFeatures, candidate: ShowerFeatures, bins: BinsSpec = None) -> None:
        check_compatible(reference, candidate)
        self.ref, self.cand = reference, candidate
        self.bins: EnergyBins = resolve_bins(bins, reference.energy)
        self.mask_ref = self.bins.masks(reference.energy).astype(np.float64)
        self.mask_cand = self.bins.masks(candidate.energy).astype(np.float64)
        self._sep: tuple[np.ndarray, np.ndarray, int, list[str]] | None = None

    def _bin_means(self, values: np.ndarray, mask: np.ndarray, w: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Per-bin weighted means (B, n_bins, k) and weighted counts (B, n_bins)."""
        w = np.ones((1, values.shape[0])) if w is None else w
        sums = np.stack([(w * m) @ values for m in mask], axis=1)
        counts = w @ mask.T
        with np.errstate(invalid="ignore", divide="ignore"):
            return sums / counts[..., None], counts

    def binned(self, kind: str, w_ref: np.ndarray | None = None, w_cand: np.ndarray | None = None
               ) -> np.ndarray:
        """Per-bin score (B, n_bins) of a mean-based metric: 'moments', 'profiles' or 'sampling_fraction'."""
        values, score = _MEAN_METRICS[kind]
        mr, cr = self._bin_means(values(self.ref), self.mask_ref, w_ref)
        mc, cc = self._bin_means(values(self.cand), self.mask_cand, w_cand)
        per_bin = score(mr, mc, self.ref.window.shape)
        per_bin[(cr < MIN_SHOWERS_PER_BIN) | (cc < MIN_SHOWERS_PER_BIN)] = np.nan
        return per_bin

    def valid_bins(self) -> np.ndarray:
        """Which energy bins hold enough showers in both samples to be scored."""
        return (self.mask_ref.sum(axis=1) >= MIN_SHOWERS_PER_BIN) & (self.mask_cand.sum(axis=1) >= MIN_SHOWERS_PER_BIN)

    def _separation_setup(self) -> tuple[np.ndarray, np.ndarray, int, list[str]]:
        if self._sep is None:
            xr, names = self.ref.high_level()
            xc, names_c = self.cand.high_level()
            if names_c != names:
                keep = [names.index(n) for n in names if n in names_c]
                xr, xc = xr[:, keep], xc[:, [names_c.index(names[k]) for k in keep]]
                names = [names[k] for k in keep]
            lo, hi = np.quantile(xr, SEPARATION_QUANTILES, axis=0)
            span = np.where(hi > lo, hi - lo, np.maximum(np.abs(lo), 1.0) * 1e-6)
            nb = SEPARATION_BINS + 2

            def digitize(x: np.ndarray) -> np.ndarray:
                with np.errstate(invalid="ignore"):
                    k = np.floor((x - lo) / span * SEPARATION_BINS).astype(np.int64) + 1
                np.clip(k, 0, nb - 1, out=k)
                return (k + np.arange(x.shape[1]) * nb).ravel()

            self._sep = (digitize(xr), digitize(xc), nb, names)
        return self._sep

    def histograms(self, w_ref: np.ndarray | None = None, w_cand: np.ndarray | None = None
                   ) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """Weighted counts (B, F, bins) of every high-level feature in reference binning, and the names."""
        ir, ic, nb, names = self._separation_setup()
        f = len(names)

        def hist(idx: np.ndarray, w: np.ndarray | None) -> np.ndarray:
            if w is None:
                return np.bincount(idx, minlength=f * nb).reshape(1, f, nb).astype(np.float64)
            return np.stack([np.bincount(idx, weights=np.repeat(row, f), minlength=f * nb) for row in w]
                            ).reshape(len(w), f, nb)

        return hist(ir, w_ref), hist(ic, w_cand), names

    def separation(self, w_ref: np.ndarray | None = None, w_cand: np.ndarray | None = None
                   ) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """Separation power and chi2/ndf per feature, each (B, F), and the feature names."""
        hr, hc, names = self.histograms(w_ref, w_cand)
        return separation_power(hr, hc), chi2_ndf(hr, hc), names

    def cell_separation(self, w_ref: np.ndarray | None = None, w_cand: np.ndarray | None = None) -> np.ndarray:
        """Separation power (B,) of the cell-energy spectra."""
        hr = (np.ones((1, len(self.ref))) if w_ref is None else w_ref) @ self.ref.cell_hist
        hc = (np.ones((1, len(self.cand))) if w_cand is None else w_cand) @ self.cand.cell_hist
        return separation_power(hr, hc)


def separation_power(h1: np.ndarray, h2: np.ndarray) -> np.ndarray:
    """CaloChallenge separation power over the last axis: 0.5 sum (p-q)^2/(p+q), with p, q normalised to 1."""
    p = np.asarray(h1, dtype=np.float64)
    q = np.asarray(h2, dtype=np.float64)
    p = p / np.maximum(p.sum(axis=-1, keepdims=True), 1e-300)
    q = q / np.maximum(q.sum(axis=-1, keepdims=True), 1e-300)
    return 0.5 * ((p - q) ** 2 / (p + q + 1e-16)).sum(axis=-1)


def chi2_ndf(h1: np.ndarray, h2: np.ndarray) -> np.ndarray:
    """Two-sample chi2/ndf of counts over the last axis: sum (N2 n1 - N1 n2)^2 / (N1 N2 (n1 + n2)), ndf = bins-1."""
    n1, n2 = np.asarray(h1, dtype=np.float64), np.asarray(h2, dtype=np.float64)
    t1, t2 = n1.sum(axis=-1, keepdims=True), n2.sum(axis=-1, keepdims=True)
    s = n1 + n2
    with np.errstate(invalid="ignore", divide="ignore"):
        terms = np.where(s > 0, (t2 * n1 - t1 * n2) ** 2 / (t1 * t2 * s), 0.0)
        ndf = (s > 0).sum(axis=-1) - 1
        return np.where(ndf > 0, terms.sum(axis=-1) / ndf, np.nan)


def _rel(ref: np.ndarray, cand: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(ref != 0, np.abs((ref - cand) / ref), np.nan)


def _score_moments(mr: np.ndarray, mc: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    return _rel(mr, mc).mean(axis=-1)


def _score_profiles(mr: np.ndarray, mc: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    rel = _rel(mr, mc)
    nx, ny, _ = shape
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        axes = [np.nanmean(rel[..., s], axis=-1) for s in (slice(0, nx), slice(nx, nx + ny), slice(nx + ny, None))]
    return np.mean(axes, axis=0)


def _score_sf(mr: np.ndarray, mc: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    return _rel(mr, mc)[..., 0]


_MEAN_METRICS: dict[str, tuple[Callable[[ShowerFeatures], np.ndarray], Callable[..., np.ndarray]]] = {
    "moments": (lambda f: f.moments, _score_moments),
    "profiles": (lambda f: np.concatenate([f.profile_x, f.profile_y, f.profile_z], axis=1), _score_profiles),
    "sampling_fraction": (lambda f: f.sampling_fraction[:, None], _score_sf),
}


def bin_average(per_bin: np.ndarray) -> np.ndarray:
    """Mean over the scored (finite) energy bins, NaN when none is."""
    finite = np.isfinite(per_bin)
    n = finite.sum(axis=-1)
    with np.errstate(invalid="ignore"):
        return np.where(n > 0, np.where(finite, per_bin, 0.0).sum(axis=-1) / np.maximum(n, 1), np.nan)


def _features_pair(reference: Sample, candidate: Sample) -> tuple[ShowerFeatures, ShowerFeatures]:
    ref, cand = as_features(reference), as_features(candidate)
    check_compatible(ref, cand)
    return ref, cand


def moments_metric(reference: Sample, candidate: Sample, *, bins: BinsSpec = None, legacy: bool = False) -> float:
    """3DGAN moment metric: mean over bins, moments (1st, 2nd) and axes of |<M>_ref - <M>_cand| / |<M>_ref|.

    ``legacy=True`` doubles it, reproducing the duplicated accumulation of the original 3DGAN ``validate()``.
    """
    c = Comparison(*_features_pair(reference, candidate), bins)
    return float(bin_average(c.binned("moments"))[0]) * (2.0 if legacy else 1.0)


def profiles_metric(reference: Sample, candidate: Sample, *, bins: BinsSpec = None, legacy: bool = False) -> float:
    """3DGAN profile term: mean relative error of the mean x, y, z energy profiles (cells with reference energy).

    ``legacy`` is accepted for a uniform signature and changes nothing (the profile term was not doubled).
    """
    c = Comparison(*_features_pair(reference, candidate), bins)
    return float(bin_average(c.binned("profiles"))[0])


def sampling_fraction_mre(reference: Sample, candidate: Sample, *, bins: BinsSpec = None,
                          legacy: bool = False) -> float:
    """3DGAN ``SelectEpoch.mre``: |mean SF_ref - mean SF_cand| / mean SF_ref averaged over energy bins.

    ``legacy`` is accepted for a uniform signature and changes nothing.
    """
    c = Comparison(*_features_pair(reference, candidate), bins)
    return float(bin_average(c.binned("sampling_fraction"))[0])


def check_n_boot(n_boot: int) -> None:
    if n_boot < 2:
        raise InputError(f"number of bootstrap replicates must be >= 2, got {n_boot}")
