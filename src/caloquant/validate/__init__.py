"""Stage 7, validate: physics features of showers and metrics comparing a candidate sample to a reference.

Computation only (numpy, scipy, scikit-learn); plots live in ``caloquant.plotting``.
"""

from __future__ import annotations

from caloquant.validate.bins import AngleBins, EnergyBins, resolve_bins
from caloquant.validate.classifier import ClassifierResult, classifier_auc
from caloquant.validate.distances import fpd, frechet_at_size, frechet_distance, kpd, mmd2_unbiased
from caloquant.validate.features import ShowerFeatures, as_features, compute_features
from caloquant.validate.metrics import (
    Comparison,
    MetricResult,
    chi2_ndf,
    moments_metric,
    profiles_metric,
    sampling_fraction_mre,
    separation_power,
    tilt_metric,
)
from caloquant.validate.suite import (
    METRICS,
    TILT_METRIC,
    CandidateResult,
    MetricOptions,
    PairedResult,
    ValidationResult,
    compare,
    paired_difference,
    validate,
)

__all__ = [
    "METRICS",
    "TILT_METRIC",
    "AngleBins",
    "CandidateResult",
    "ClassifierResult",
    "Comparison",
    "EnergyBins",
    "MetricOptions",
    "MetricResult",
    "PairedResult",
    "ShowerFeatures",
    "ValidationResult",
    "as_features",
    "chi2_ndf",
    "classifier_auc",
    "compare",
    "compute_features",
    "fpd",
    "frechet_at_size",
    "frechet_distance",
    "kpd",
    "mmd2_unbiased",
    "moments_metric",
    "paired_difference",
    "profiles_metric",
    "resolve_bins",
    "sampling_fraction_mre",
    "separation_power",
    "tilt_metric",
    "validate",
]
