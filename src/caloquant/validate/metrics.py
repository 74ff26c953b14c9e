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
from caloquant.validate.bins import AngleBins, BinsSpec, EnergyBins, resolve_bins
from caloquant.validate.features import CELL_BINS, ShowerFeatures, Source, as_features, check_compatible
from caloquant.validate.store import DiskArray

#: A bin needs at least this many showers in both samples to be scored; emptier bins are reported, not scored.
MIN_SHOWERS_PER_BIN = 2
#: Fewest showers a sample needs before any verdict is given ("not enough data" below).
MIN_SHOWERS_PER_SAMPLE = 50
#: Histogram bins between the 0.1 % and 99.9 % reference quantiles (plus one underflow and one overflow bin).
SEPARATION_BINS = 30
#: The 3DGAN moments in ``ShowerFeatures.moments`` column order.
MOMENT_NAMES = ("mu_x", "mu_y", "mu_z", "sigma2_x", "sigma2_y", "sigma2_z")
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
        thin automatic bins left unscored, and the per-feature values of the histogram metrics)."""
        out: dict[str, Any] = {"value": _num(self.value), "error": _num(self.error),
                               "noise_floor": _num(self.noise_floor), "noise_error": _num(self.noise_error),
                               "pass": self.passed, "verdict": self.verdict}
        if self.per_bin:
            out["per_bin"] = {k: _num(v) for k, v in self.per_bin.items()}
        if self.empty_bins:
            out["empty_bins"] = list(self.empty_bins)
        if self.unscored_bins:
            out["unscored_bins"] = list(self.unscored_bins)
        for key in ("per_feature", "per_moment"):
            if key in self.details:
                out[key] = {k: _num(v) for k, v in self.details[key].items()}
        if "tilt" in self.details:
            out["tilt"] = self.details["tilt"]
        return out


def _num(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def bootstrap_counts(n: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot, n) multinomial resampling counts: row b says how often each shower is drawn in replicate b."""
    idx = rng.integers(0, n, size=(n_boot, n)) + (np.arange(n_boot) * n)[:, None]
    return np.bincount(idx.ravel(), minlength=n_boot * n).reshape(n_boot, n).astype(np.float64)


class BootstrapCounts:
    """``bootstrap_counts`` kept in a temporary file, for samples too large to hold (n_boot, n) in memory.

    The same counts from the same generator state (drawn a replicate at a time; numpy's integer stream does
    not depend on how a draw is split), leaving the generator in the same state. ``w[:k]`` is the first k
    replicates, ``w[:, a:b]`` the float64 counts (B, b - a) of showers a .. b.
    """

    def __init__(self, n: int, n_boot: int, rng: np.random.Generator | None = None, *,
                 disk: DiskArray | None = None, replicates: int | None = None) -> None:
        if disk is None:
            assert rng is not None
            disk = DiskArray((n_boot, n), np.uint16 if n <= np.iinfo(np.uint16).max else np.uint32)
            for b in range(n_boot):
                disk.write_rows(b, np.bincount(rng.integers(0, n, size=n), minlength=n)[None])
        self._disk = disk
        self.shape = (disk.shape[0] if replicates is None else replicates, disk.shape[1])

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: slice | tuple[slice, slice]) -> Any:
        rows, cols = key if isinstance(key, tuple) else (key, slice(None))
        first, last, step = rows.indices(self.shape[0])
        if first != 0 or step != 1:
            raise IndexError("BootstrapCounts selects the first replicates only (w[:k])")
        if cols == slice(None):
            return BootstrapCounts(0, 0, disk=self._disk, replicates=last)
        start, stop, step = cols.indices(self.shape[1])
        if step != 1:
            raise IndexError("BootstrapCounts selects a range of showers (w[:, a:b])")
        counts = np.empty((last, max(stop - start, 0)), dtype=np.float64)
        for b in range(last):
            counts[b] = self._disk.read_segment(b, start, stop)
        return counts


def bootstrap_weights(n: int, n_boot: int, rng: np.random.Generator, *, spill: bool = False
                      ) -> np.ndarray | BootstrapCounts:
    """``bootstrap_counts`` in memory, or the same counts in a temporary file (``spill``, for a spilled sample)."""
    return BootstrapCounts(n, n_boot, rng) if spill else bootstrap_counts(n, n_boot, rng)


Weights = np.ndarray | BootstrapCounts | None


def _block_weights(w: Weights, start: int, stop: int) -> np.ndarray:
    """The weights (B, stop - start) of showers start .. stop (unit weights, B = 1, for None)."""
    return np.ones((1, stop - start)) if w is None else np.asarray(w[:, start:stop])


def _replicates(w: Weights) -> int:
    return 1 if w is None else int(w.shape[0])


def tilt_difference(ref: tuple[np.ndarray, np.ndarray], cand: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """|candidate - reference| of per-angle-bin mean reconstructed angles, each given as ``tilt_means``'s (means,
    counts); NaN where either sample holds too few showers."""
    (mr, cr), (mc, cc) = ref, cand
    per_bin = np.abs(mc - mr)
    per_bin[(cr < MIN_SHOWERS_PER_BIN) | (cc < MIN_SHOWERS_PER_BIN)] = np.nan
    return per_bin


class Comparison:
    """Reference vs candidate features in energy bins, evaluated for any set of shower weights.

    Every sum runs over blocks of showers (``ShowerFeatures.blocks``), so a spilled sample is never in memory
    whole; weights are arrays (B, N), ``BootstrapCounts``, or None (unit weights, B = 1).
    """

    def __init__(self, reference: ShowerFeatures, candidate: ShowerFeatures, bins: BinsSpec = None) -> None:
        check_compatible(reference, candidate)
        self.ref, self.cand = reference, candidate
        self.bins: EnergyBins = resolve_bins(bins, reference.energy)
        #: Incidence-angle bins of a tilted reference (None: perpendicular showers, no tilt comparison).
        self.angle_bins: AngleBins | None = AngleBins.of(reference.theta) if reference.tilted else None
        self._sep: tuple[np.ndarray, np.ndarray, int, list[str], list[int] | None, list[int] | None] | None = None

    def _bin_means(self, f: ShowerFeatures, values: Callable[[ShowerFeatures], np.ndarray], w: Weights,
                   masks: Callable[[ShowerFeatures], np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Per-bin weighted means (B, n_bins, k) and weighted counts (B, n_bins) of ``values`` of ``f``, in the
        energy bins or in the bins whose membership ``masks`` gives."""
        bin_masks = masks or (lambda block: self.bins.masks(block.energy))
        sums: np.ndarray | None = None
        counts: np.ndarray | None = None
        for start, stop, block in f.blocks():
            mask = bin_masks(block).astype(np.float64)
            wb = _block_weights(w, start, stop)
            v = values(block)
            s = np.stack([(wb * m) @ v for m in mask], axis=1)
            c = wb @ mask.T
            sums, counts = (s, c) if sums is None or counts is None else (sums + s, counts + c)
        assert sums is not None and counts is not None
        with np.errstate(invalid="ignore", divide="ignore"):
            return sums / counts[..., None], counts

    def binned(self, kind: str, w_ref: Weights = None, w_cand: Weights = None) -> np.ndarray:
        """Per-bin score (B, n_bins) of a mean-based metric: 'moments', 'profiles' or 'sampling_fraction'."""
        values, score = _MEAN_METRICS[kind]
        mr, cr = self._bin_means(self.ref, values, w_ref)
        mc, cc = self._bin_means(self.cand, values, w_cand)
        per_bin = score(mr, mc, self.ref.window.shape)
        per_bin[(cr < MIN_SHOWERS_PER_BIN) | (cc < MIN_SHOWERS_PER_BIN)] = np.nan
        return per_bin

    def moment_errors(self) -> np.ndarray:
        """Relative error of each 3DGAN moment (``MOMENT_NAMES``) averaged over the scored energy bins, shape (6,):
        the terms whose mean is the moment metric, to say which moment fails (a wide halo shows in sigma2_x/y)."""
        mr, cr = self._bin_means(self.ref, lambda f: f.moments, None)
        mc, cc = self._bin_means(self.cand, lambda f: f.moments, None)
        rel = _rel(mr[0], mc[0])  # (n_bins, 6)
        rel[(cr[0] < MIN_SHOWERS_PER_BIN) | (cc[0] < MIN_SHOWERS_PER_BIN)] = np.nan
        return np.asarray(bin_average(rel.T))

    def tilt_means(self, f: ShowerFeatures, w: Weights = None) -> tuple[np.ndarray, np.ndarray]:
        """Mean reconstructed incidence angle (B, n_angle_bins) in degrees of ``f``'s showers in each angle bin
        of the reference, and the weighted counts (B, n_angle_bins)."""
        if self.angle_bins is None:
            raise InputError("the tilt comparison needs a tilted reference (showers at angles other than 90 deg)")
        angle_bins = self.angle_bins
        means, counts = self._bin_means(f, lambda block: np.degrees(block.theta_estimate)[:, None], w,
                                        lambda block: angle_bins.masks(block.theta))
        return means[..., 0], counts

    def tilt(self, w_ref: Weights = None, w_cand: Weights = None) -> np.ndarray:
        """Per-angle-bin |<theta_est>_cand - <theta_est>_ref| (B, n_angle_bins) in degrees: whether the candidate's
        showers tilt with the angle as the reference's do (bins too thin in either sample are NaN)."""
        return tilt_difference(self.tilt_means(self.ref, w_ref), self.tilt_means(self.cand, w_cand))

    def valid_bins(self) -> np.ndarray:
        """Which energy bins hold enough showers in both samples to be scored."""
        return ((self.bins.masks(self.ref.energy).sum(axis=1) >= MIN_SHOWERS_PER_BIN)
                & (self.bins.masks(self.cand.energy).sum(axis=1) >= MIN_SHOWERS_PER_BIN))

    def _separation_setup(self) -> tuple[np.ndarray, np.ndarray, int, list[str], list[int] | None, list[int] | None]:
        """Lower edges and spans of the reference binning, bins per feature, names, and the columns of each
        sample's ``high_level()`` that both have (None: all)."""
        if self._sep is None:
            names, names_c = self.ref.high_level_names(), self.cand.high_level_names()
            keep_r: list[int] | None = None
            keep_c: list[int] | None = None
            if names_c != names:
                keep_r = [names.index(n) for n in names if n in names_c]
                keep_c = [names_c.index(names[k]) for k in keep_r]
                names = [names[k] for k in keep_r]
            lo, hi = self.ref.high_level_quantiles(SEPARATION_QUANTILES)
            if keep_r is not None:
                lo, hi = lo[keep_r], hi[keep_r]
            span = np.where(hi > lo, hi - lo, np.maximum(np.abs(lo), 1.0) * 1e-6)
            self._sep = (lo, span, SEPARATION_BINS + 2, names, keep_r, keep_c)
        return self._sep

    def _histogram(self, f: ShowerFeatures, columns: list[int] | None, w: Weights) -> np.ndarray:
        """Weighted counts (B, F, bins) of the high-level features of ``f`` in the reference binning."""
        lo, span, nb, names, _, _ = self._separation_setup()
        n_feat = len(names)
        out = np.zeros((_replicates(w), n_feat * nb))
        for start, stop, block in f.blocks():
            x = block.high_level()[0]
            if columns is not None:
                x = x[:, columns]
            with np.errstate(invalid="ignore"):
                k = np.floor((x - lo) / span * SEPARATION_BINS).astype(np.int64) + 1
            np.clip(k, 0, nb - 1, out=k)
            idx = (k + np.arange(n_feat) * nb).ravel()
            if w is None:
                out[0] += np.bincount(idx, minlength=n_feat * nb)
                continue
            for b, row in enumerate(_block_weights(w, start, stop)):
                out[b] += np.bincount(idx, weights=np.repeat(row, n_feat), minlength=n_feat * nb)
        return out.reshape(len(out), n_feat, nb)

    def histograms(self, w_ref: Weights = None, w_cand: Weights = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """Weighted counts (B, F, bins) of every high-level feature in reference binning, and the names."""
        _, _, _, names, keep_r, keep_c = self._separation_setup()
        return self._histogram(self.ref, keep_r, w_ref), self._histogram(self.cand, keep_c, w_cand), names

    def separation(self, w_ref: Weights = None, w_cand: Weights = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
        """Separation power and chi2/ndf per feature, each (B, F), and the feature names."""
        hr, hc, names = self.histograms(w_ref, w_cand)
        return separation_power(hr, hc), chi2_ndf(hr, hc), names

    def cell_separation(self, w_ref: Weights = None, w_cand: Weights = None) -> np.ndarray:
        """Separation power (B,) of the cell-energy spectra."""
        def spectrum(f: ShowerFeatures, w: Weights) -> np.ndarray:
            out = np.zeros((_replicates(w), CELL_BINS))
            for start, stop, block in f.blocks():
                out += _block_weights(w, start, stop) @ block.cell_hist
            return out

        return separation_power(spectrum(self.ref, w_ref), spectrum(self.cand, w_cand))


def tilt_slope(f: ShowerFeatures) -> float:
    """Least-squares slope of the reconstructed against the true incidence angle over ``f``'s showers: near 1
    for showers that tilt with their angle (less, since the fit pulls to 90 deg), 0 for showers that ignore it."""
    n = sx = sy = sxx = sxy = 0.0
    for _, _, block in f.blocks():  # a spilled sample a block at a time
        x, y = np.degrees(block.theta), np.degrees(block.theta_estimate)
        n, sx, sy = n + x.size, sx + float(x.sum()), sy + float(y.sum())
        sxx, sxy = sxx + float(x @ x), sxy + float(x @ y)
    var = sxx - sx * sx / max(n, 1.0)
    return (sxy - sx * sy / n) / var if n > 1 and var > 1e-9 * max(sxx, 1.0) else float("nan")


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


def tilt_metric(reference: Sample, candidate: Sample) -> float:
    """Mean over the reference's angle bins of |<theta_est>_cand - <theta_est>_ref| in degrees (``Comparison.tilt``):
    whether the candidate's showers tilt with their angle as the reference's do. NaN for a perpendicular reference."""
    c = Comparison(*_features_pair(reference, candidate))
    return float(bin_average(c.tilt())[0]) if c.angle_bins is not None else float("nan")


def check_n_boot(n_boot: int) -> None:
    if n_boot < 2:
        raise InputError(f"number of bootstrap replicates must be >= 2, got {n_boot}")
