"""Stage 5, validate: physics features of showers and metrics comparing a candidate sample to a reference.

Computation only (numpy, scipy, scikit-learn); plots live in ``caloquant.plotting``.
"""

from __future__ import annotations

from caloquant.validate.bins import EnergyBins, resolve_bins
from caloquant.validate.features import ShowerFeatures, as_features, compute_features
from caloquant.validate.metrics import (
    Comparison,
    MetricResult,
    chi2_ndf,
    moments_metric,
    profiles_metric,
    sampling_fraction_mre,
    separation_power,
)

__all__ = [
    "Comparison",
    "EnergyBins",
    "MetricResult",
    "ShowerFeatures",
    "as_features",
    "chi2_ndf",
    "compute_features",
    "moments_metric",
    "profiles_metric",
    "resolve_bins",
    "sampling_fraction_mre",
    "separation_power",
]
