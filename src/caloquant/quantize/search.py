"""The search itself, free of any framework: acceptance rule, additive cost model and fallback-set choice.

A configuration is the set of layers kept in INT8; every other quantizable layer runs in floating point.
The cost model is first order: reverting layer i from full INT8 removes ``sensitivity_i`` of the metric
degradation and costs ``gain_i`` seconds per batch. The search picks the INT8 set with the largest predicted
gain whose predicted degradation, plus a safety margin learnt from measured candidates, stays within tolerance.
"""

from __future__ import annotations

import itertools
from collections.abc import Collection, Sequence
from dataclasses import dataclass

import numpy as np

from caloquant.errors import InputError

#: Up to this many layers the best set is found by enumerating every subset; above, greedily.
EXHAUSTIVE_LAYERS = 16


@dataclass(frozen=True)
class Criterion:
    """Accuracy criterion: tolerated degradation, relative to the FP32 value or absolute, and metric direction."""

    tolerance: float = 0.05
    relative: bool = True
    higher_is_better: bool = False

    def __post_init__(self) -> None:
        if not np.isfinite(self.tolerance) or self.tolerance < 0:
            raise InputError(f"tolerance must be a finite number >= 0, got {self.tolerance}")

    def allowed(self, baseline: float) -> float:
        """Largest tolerated degradation for this FP32 baseline value."""
        if not self.relative:
            return self.tolerance
        if not np.isfinite(baseline) or abs(baseline) < 1e-12:
            raise InputError(f"a relative tolerance needs a non-zero FP32 metric (got {baseline:g}); use --absolute")
        return self.tolerance * abs(baseline)

    def degradation(self, baseline: float, value: float) -> float:
        """How much worse ``value`` is than ``baseline`` (positive = worse)."""
        return baseline - value if self.higher_is_better else value - baseline

    def passes(self, upper95: float, baseline: float) -> bool:
        """Statistical acceptance: the 95 % upper bound of the degradation is within tolerance."""
        return bool(np.isfinite(upper95) and upper95 <= self.allowed(baseline))

    def describe(self) -> str:
        """Human-readable form, e.g. 'degradation <= 5% of FP32 (lower is better)'."""
        kind = f"{100 * self.tolerance:g}% of FP32" if self.relative else f"{self.tolerance:g} absolute"
        return f"degradation <= {kind} ({'higher' if self.higher_is_better else 'lower'} is better)"


@dataclass(frozen=True)
class LayerCost:
    """Measured cost model of one quantizable layer."""

    name: str
    gain: float          # seconds per batch saved when the layer runs in INT8 instead of FP32
    sensitivity: float   # metric degradation removed by reverting this layer from full INT8


def paired_bound(base: np.ndarray, cand: np.ndarray, value: float) -> tuple[float, float]:
    """Bootstrap error and one-sided 95 % upper bound of a paired degradation (replicates base/cand, shape (B,))."""
    diffs = np.asarray(cand, dtype=float) - np.asarray(base, dtype=float)
    diffs = diffs[np.isfinite(diffs)]
    if diffs.size < 2:
        return float("nan"), float("nan")
    return float(np.std(diffs, ddof=1)), float(value + np.quantile(diffs, 0.95) - np.median(diffs))


def predicted_gain(int8: Collection[str], layers: Sequence[LayerCost]) -> float:
    """Seconds per batch saved by running ``int8`` in INT8."""
    return float(sum(c.gain for c in layers if c.name in int8))


def predicted_degradation(int8: Collection[str], layers: Sequence[LayerCost], full_degradation: float) -> float:
    """First-order degradation of a configuration: full-INT8 degradation minus what the reverted layers remove."""
    return float(full_degradation - sum(c.sensitivity for c in layers if c.name not in int8))


def _subsets(layers: Sequence[LayerCost]) -> list[frozenset[str]]:
    names = [c.name for c in layers]
    if len(names) <= EXHAUSTIVE_LAYERS:
        return [frozenset(s) for k in range(len(names) + 1) for s in itertools.combinations(names, k)]
    # Greedy chain: revert layers in order of sensitivity removed per second of gain lost (best ratio first),
    # giving one candidate set per prefix length.
    order = sorted(layers, key=lambda c: -c.sensitivity / max(c.gain, 1e-9))
    sets, current = [], set(names)
    sets.append(frozenset(current))
    for c in order:
        current.discard(c.name)
        sets.append(frozenset(current))
    return sets


def choose(layers: Sequence[LayerCost], full_degradation: float, allowed: float, *, margin: float = 0.0,
           exclude: Collection[frozenset[str]] = ()) -> frozenset[str] | None:
    """INT8 set with the largest predicted gain whose predicted degradation + margin is within ``allowed``.

    Sets in ``exclude`` (already measured) are skipped; ties go to the lower predicted degradation.
    Returns None when no unmeasured set is predicted to pass.
    """
    best: tuple[float, float] | None = None
    chosen: frozenset[str] | None = None
    for s in _subsets(layers):
        if s in exclude:
            continue
        deg = predicted_degradation(s, layers, full_degradation)
        if deg + margin > allowed:
            continue
        key = (predicted_gain(s, layers), -deg)
        if best is None or key > best:
            best, chosen = key, s
    return chosen


def greedy_revert(layers: Sequence[LayerCost], *, exclude: Collection[frozenset[str]] = ()) -> frozenset[str] | None:
    """Next untried INT8 set of the chain that reverts layers most sensitive first (full INT8 minus 1, 2, ...).

    The fallback when the cost model predicts no set to pass (its margin is learnt from noisy measurements):
    measured sensitivities still rank the layers. Never returns the empty set (that is FP32).
    """
    current = {c.name for c in layers}
    for c in sorted(layers, key=lambda c: -c.sensitivity):
        current.discard(c.name)
        s = frozenset(current)
        if s and s not in exclude:
            return s
    return None


def pareto_front(speed: Sequence[float], degradation: Sequence[float]) -> list[int]:
    """Indices of points not dominated (faster and less degraded), sorted by speed."""
    pts = [(s, d, i) for i, (s, d) in enumerate(zip(speed, degradation)) if np.isfinite(s) and np.isfinite(d)]
    front = [i for s, d, i in pts
             if not any((s2 >= s and d2 <= d) and (s2 > s or d2 < d) for s2, d2, _ in pts)]
    return sorted(front, key=lambda i: speed[i])
