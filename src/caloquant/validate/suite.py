"""The full validation: every metric of one or more candidates, with bootstrap errors, noise floors, verdicts,
and the paired comparison of two candidates generated from identical inputs."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np

from caloquant.errors import InputError
from caloquant.validate.bins import BinsSpec, EnergyBins, resolve_bins
from caloquant.validate.classifier import classifier_auc
from caloquant.validate.distances import fpd_of_rows, kpd_of_rows
from caloquant.validate.features import ShowerFeatures, as_features, check_compatible, normalised_vectors
from caloquant.validate.metrics import (
    MIN_SHOWERS_PER_SAMPLE,
    MOMENT_NAMES,
    Comparison,
    MetricResult,
    Sample,
    Weights,
    bin_average,
    bootstrap_weights,
    check_n_boot,
    tilt_difference,
    tilt_slope,
)

#: Metrics that are functions of shower weights, hence bootstrappable and usable in paired mode.
BOOTSTRAP_METRICS = ("3dgan_moments", "3dgan_profiles", "sampling_fraction_mre", "separation_power_mean",
                     "chi2_ndf_mean", "cell_spectrum_separation")
METRICS = (*BOOTSTRAP_METRICS, "fpd", "kpd", "classifier_auc")
#: The tilt comparison, added to the metrics when the reference is tilted (docs/validation.md).
TILT_METRIC = "tilt_error_deg"
#: Histogram metrics cost one bincount per replicate; they use at most this many bootstrap replicates.
MAX_HIST_BOOT = 50


def _weighted_metric(c: Comparison, name: str, w_ref: Weights, w_cand: Weights, legacy: bool = False) -> np.ndarray:
    """Values (B,) of a bootstrappable metric for B weightings of the showers (None: unit weights, B = 1)."""
    if name == "3dgan_moments":
        return bin_average(c.binned("moments", w_ref, w_cand)) * (2.0 if legacy else 1.0)
    if name == "3dgan_profiles":
        return bin_average(c.binned("profiles", w_ref, w_cand))
    if name == "sampling_fraction_mre":
        return bin_average(c.binned("sampling_fraction", w_ref, w_cand))
    if name == "separation_power_mean":
        return c.separation(w_ref, w_cand)[0].mean(axis=-1)
    if name == "chi2_ndf_mean":
        return np.nanmean(c.separation(w_ref, w_cand)[1], axis=-1)
    if name == "cell_spectrum_separation":
        return c.cell_separation(w_ref, w_cand)
    raise InputError(f"unknown bootstrap metric {name!r}; choose one of {', '.join(BOOTSTRAP_METRICS)}")


_PER_BIN = {"3dgan_moments": "moments", "3dgan_profiles": "profiles", "sampling_fraction_mre": "sampling_fraction"}


@dataclass
class MetricOptions:
    """Knobs of the full validation (defaults are the documented ones)."""

    n_boot: int = 100
    seed: int = 0
    classifier: bool = True
    classifier_seeds: tuple[int, ...] = (0, 1, 2)
    fpd_batches: int = 20
    kpd_batch_size: int = 5_000
    legacy: bool = False


def compare(reference: ShowerFeatures, candidate: ShowerFeatures, bins: EnergyBins,
            options: MetricOptions) -> dict[str, MetricResult]:
    """Every metric of ``candidate`` against ``reference`` with errors but without noise floor or verdict."""
    check_n_boot(options.n_boot)
    c = Comparison(reference, candidate, bins)
    rng = np.random.default_rng(options.seed)
    w_ref = bootstrap_weights(len(reference), options.n_boot, rng, spill=reference.spilled)
    w_cand = bootstrap_weights(len(candidate), options.n_boot, rng, spill=candidate.spilled)
    labels = bins.labels
    out: dict[str, MetricResult] = {}
    sp, chi, names = c.separation()
    nb = min(options.n_boot, MAX_HIST_BOOT)
    sp_boot, chi_boot, _ = c.separation(w_ref[:nb], w_cand[:nb])
    hist_metrics = {"separation_power_mean": (sp.mean(axis=-1), sp_boot.mean(axis=-1)),
                    "chi2_ndf_mean": (np.nanmean(chi, axis=-1), np.nanmean(chi_boot, axis=-1))}
    for name in BOOTSTRAP_METRICS:
        if name in hist_metrics:
            value, boot = float(hist_metrics[name][0][0]), hist_metrics[name][1]
        else:
            value = float(_weighted_metric(c, name, None, None, options.legacy)[0])
            boot = _weighted_metric(c, name, w_ref[:nb] if name not in _PER_BIN else w_ref,
                                    w_cand[:nb] if name not in _PER_BIN else w_cand, options.legacy)
        res = MetricResult(name, value, float(np.nanstd(boot, ddof=1)))
        scale = 2.0 if options.legacy and name == "3dgan_moments" else 1.0
        if name in _PER_BIN:
            per_bin = c.binned(_PER_BIN[name])[0] * scale
            res.per_bin = {lab: float(v) for lab, v in zip(labels, per_bin)}
            thin = [lab for lab, ok in zip(labels, c.valid_bins()) if not ok]
            if bins.requested:
                res.empty_bins = thin
            else:
                res.unscored_bins = thin
        if name == "3dgan_moments":
            res.details["per_moment"] = dict(zip(MOMENT_NAMES, map(float, c.moment_errors() * scale)))
        if name == "separation_power_mean":
            res.details["per_feature"] = dict(zip(names, map(float, sp[0])))
        if name == "chi2_ndf_mean":
            res.details["per_feature"] = dict(zip(names, map(float, chi[0])))
        out[name] = res
    if c.angle_bins is not None:
        out[TILT_METRIC] = _tilt_result(c, w_ref, w_cand)
    real, gen = normalised_vectors(reference, candidate)
    v, e = fpd_of_rows(real, gen, num_batches=options.fpd_batches, seed=options.seed + 42)
    out["fpd"] = MetricResult("fpd", v, e)
    v, e = kpd_of_rows(real, gen, batch_size=options.kpd_batch_size, seed=options.seed + 42)
    out["kpd"] = MetricResult("kpd", v, e)
    del real, gen
    if options.classifier:  # trains on the whole samples: memory grows with them (docs/validation.md)
        r = classifier_auc(reference.classifier_vector(), candidate.classifier_vector(),
                           seeds=options.classifier_seeds)
        out["classifier_auc"] = MetricResult("classifier_auc", r.auc, r.error,
                                             details={"per_seed": list(r.per_seed), "jsd": r.jsd})
    return out


def _tilt_result(c: Comparison, w_ref: Weights, w_cand: Weights) -> MetricResult:
    """The tilt metric: mean over angle bins of |<theta_est>_cand - <theta_est>_ref| in degrees, bootstrapped, with
    each sample's mean reconstructed angle per bin and its slope against the true angle."""
    assert c.angle_bins is not None
    labels = c.angle_bins.labels
    ref_means, cand_means = c.tilt_means(c.ref), c.tilt_means(c.cand)
    per_bin = tilt_difference(ref_means, cand_means)[0]
    res = MetricResult(TILT_METRIC, float(bin_average(per_bin)),
                       float(np.nanstd(bin_average(c.tilt(w_ref, w_cand)), ddof=1)))
    res.per_bin = {lab: float(v) for lab, v in zip(labels, per_bin)}

    def rounded(v: float, digits: int) -> float | None:
        return round(float(v), digits) if np.isfinite(v) else None

    res.details["tilt"] = {
        "angle_bins": labels,
        "reference_mean_deg": [rounded(v, 3) for v in ref_means[0][0]],
        "candidate_mean_deg": [rounded(v, 3) for v in cand_means[0][0]],
        "slope_reference": rounded(tilt_slope(c.ref), 4),
        "slope_candidate": rounded(tilt_slope(c.cand), 4),
    }
    return res


@dataclass
class CandidateResult:
    """One candidate's features and judged metrics."""

    features: ShowerFeatures
    metrics: dict[str, MetricResult]

    def to_dict(self) -> dict[str, Any]:
        return {"n_showers": len(self.features), "metrics": {k: m.to_dict() for k, m in self.metrics.items()}}


@dataclass
class ValidationResult:
    """Reference features, the energy bins, the noise floor and one CandidateResult per candidate."""

    reference: ShowerFeatures
    bins: EnergyBins
    noise: dict[str, MetricResult]
    candidates: dict[str, CandidateResult] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON document: one candidate -> top-level "metrics"; several -> "candidates": {name: {"metrics"}}."""
        doc: dict[str, Any] = {"reference": self.reference.source, "n_reference": len(self.reference),
                               "energy_bins": self.bins.labels}
        if len(self.candidates) == 1:
            (name, cand), = self.candidates.items()
            doc["candidate"] = name
            doc.update(cand.to_dict())
        else:
            doc["candidates"] = {k: c.to_dict() for k, c in self.candidates.items()}
        return doc

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False)


def validate(
    reference: Sample,
    candidates: Sample | Sequence[Sample],
    *,
    bins: BinsSpec = None,
    options: MetricOptions | None = None,
    max_showers: int | None = None,
    names: Sequence[str] | None = None,
    log: Callable[[str], None] | None = None,
    threshold: float = 0.0,
) -> ValidationResult:
    """Compare each candidate to the reference: all metrics, errors, the reference noise floor and verdicts.

    Samples are ShowerSets, ShowerFeatures or file paths (either layout); ``max_showers`` caps each sample;
    ``log`` gets a line per step. Cells above ``threshold`` (GeV) count as hit in both samples (occupancy, the
    cell spectrum and the features built on them): set it to the reference's readout threshold so that a
    candidate's cells too faint for the readout do not count.
    """
    opts = options or MetricOptions()
    say = log or (lambda msg: None)
    cand_list = list(candidates) if isinstance(candidates, (list, tuple)) else [cast(Sample, candidates)]
    if not cand_list:
        raise InputError("no candidate sample given")
    say("reference features")
    ref = as_features(reference, max_showers=max_showers, threshold=threshold)
    feats = []
    for i, cand in enumerate(cand_list):
        say(f"candidate {i + 1} features")
        f = as_features(cand, max_showers=max_showers, threshold=threshold)
        check_compatible(ref, f)
        feats.append(f)
    for f in (ref, *feats):
        if len(f) < MIN_SHOWERS_PER_SAMPLE:
            raise InputError(f"{f.source}: not enough data: {len(f)} showers, validation needs at least "
                             f"{MIN_SHOWERS_PER_SAMPLE}")
    energy_bins = resolve_bins(bins, ref.energy)
    say("noise floor (reference half vs half)")
    noise = compare(*ref.halves(opts.seed), energy_bins, opts)
    result = ValidationResult(ref, energy_bins, noise)
    labels = list(names) if names is not None else [f.source if f.source != "sample" else f"candidate_{i}"
                                                    for i, f in enumerate(feats)]
    for label, f in zip(labels, feats):
        say(f"metrics of {label}")
        metrics = compare(ref, f, energy_bins, opts)
        for name, m in metrics.items():
            m.noise_floor, m.noise_error = noise[name].value, noise[name].error
            m.judge()
        result.candidates[label] = CandidateResult(f, metrics)
    return result


@dataclass(frozen=True)
class PairedResult:
    """metric(ref, b) - metric(ref, a) with its paired-bootstrap error and one-sided 95 % upper bound."""

    metric: str
    value: float
    error: float
    upper95: float
    value_a: float
    value_b: float


def paired_difference(
    reference: Sample,
    candidate_a: Sample,
    candidate_b: Sample,
    *,
    metric: str = "3dgan_moments",
    bins: BinsSpec = None,
    n_boot: int = 200,
    seed: int = 0,
    legacy: bool = False,
) -> PairedResult:
    """Difference of a metric between two candidates generated from identical inputs (e.g. FP32 vs INT8).

    Paired bootstrap: each replicate draws the same shower indices in both candidates (and one reference
    draw shared by both), so the common noise cancels. upper95 = value + (95th percentile - median) of the
    replicate differences.
    """
    check_n_boot(n_boot)
    ref, a, b = as_features(reference), as_features(candidate_a), as_features(candidate_b)
    check_compatible(ref, a)
    check_compatible(ref, b)
    if len(a) != len(b) or not np.allclose(a.energy, b.energy) or not np.allclose(a.theta, b.theta):
        raise InputError("paired comparison needs two candidates generated from identical inputs "
                         "(same number of showers, energies and angles, in the same order)")
    energy_bins = resolve_bins(bins, ref.energy)
    ca, cb = Comparison(ref, a, energy_bins), Comparison(ref, b, energy_bins)
    va = float(_weighted_metric(ca, metric, None, None, legacy)[0])
    vb = float(_weighted_metric(cb, metric, None, None, legacy)[0])
    rng = np.random.default_rng(seed)
    w_ref = bootstrap_weights(len(ref), n_boot, rng, spill=ref.spilled)
    w_cand = bootstrap_weights(len(a), n_boot, rng, spill=a.spilled or b.spilled)
    diffs = _weighted_metric(cb, metric, w_ref, w_cand, legacy) - _weighted_metric(ca, metric, w_ref, w_cand, legacy)
    diffs = diffs[np.isfinite(diffs)]
    value = vb - va
    return PairedResult(metric, value, float(np.std(diffs, ddof=1)),
                        float(value + np.quantile(diffs, 0.95) - np.median(diffs)), va, vb)
