"""What the tuner judges candidates with: the ``Evaluator`` protocol, a per-item evaluator for plain metrics
(accuracy, error) and the default physics evaluator (3DGAN moment metric against reference Monte Carlo).

An evaluator runs a model on fixed inputs and scores its outputs for any bootstrap weighting of the items, so
the tuner can compute paired-bootstrap bounds of the degradation between two candidates run on identical inputs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

import numpy as np

from caloquant.data.formats import ShowerSet
from caloquant.evaluation import DEFAULT_EVALUATION, EvaluationSettings
from caloquant.models.spec import ModelSpec, shower_noise
from caloquant.quantize.openvino_backend import as_input
from caloquant.runtime.precision_check import CHECK_SEED, check_angles, check_inputs, compare
from caloquant.simulate import GFlashTuning, load_tuning, simulate
from caloquant.validate import Comparison, compute_features, resolve_bins
from caloquant.validate.metrics import bin_average, bootstrap_counts

Infer = Callable[[np.ndarray], np.ndarray]


@runtime_checkable
class Evaluator(Protocol):
    """Runs a model on fixed inputs and scores the outputs under bootstrap weights of the items."""

    name: str
    higher_is_better: bool

    def outputs(self, infer: Infer) -> Any:
        """Everything the metric needs from one model (e.g. predictions or shower features)."""

    def n_items(self, outputs: Any) -> int:
        """Number of items (showers, images) the outputs hold."""

    def metric(self, outputs: Any, weights: np.ndarray | None = None) -> np.ndarray:
        """Metric for each row of item weights (B, n_items) -> (B,); None means unit weights -> (1,)."""

    def details(self, outputs: Any) -> dict[str, float]:
        """Further figures reported next to the metric (may be empty)."""


@runtime_checkable
class Vetoing(Protocol):
    """An evaluator that can also refuse a candidate outright, whatever its metric: the tuner runs every candidate
    through ``veto_outputs`` and asks ``veto`` with the FP32 baseline's outputs; a reason (not None) fails it."""

    def veto_outputs(self, infer: Infer) -> Any:
        """What ``veto`` compares, from one model."""

    def veto(self, outputs: Any, baseline: Any) -> str | None:
        """Why a candidate with ``outputs`` must not be accepted (None: no objection)."""


class PerItemEvaluator:
    """Mean of a per-item score, e.g. accuracy = mean of (prediction == label)."""

    def __init__(self, inputs: np.ndarray, score: Callable[[np.ndarray], np.ndarray], *, name: str = "accuracy",
                 higher_is_better: bool = True) -> None:
        self.inputs = as_input(inputs)
        self.score = score
        self.name = name
        self.higher_is_better = higher_is_better

    def outputs(self, infer: Infer) -> np.ndarray:
        return np.asarray(self.score(infer(self.inputs)), dtype=np.float64)

    def n_items(self, outputs: np.ndarray) -> int:
        return len(outputs)

    def metric(self, outputs: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
        w = np.ones((1, len(outputs))) if weights is None else np.asarray(weights, dtype=np.float64)
        return np.asarray((w @ outputs) / w.sum(axis=1))

    def details(self, outputs: np.ndarray) -> dict[str, float]:
        return {}


class PhysicsEvaluator:
    """3DGAN moment metric of generated showers against a reference-MC sample (lower is better).

    Showers are generated from fixed conditions and per-shower noise, so two candidates see identical inputs;
    energies (and, for an angle model, incidence angles) are uniform over the model's trained ranges, and so are
    the reference MC's, whose tilt error the details report for an angle model;
    the reference sample gets its own bootstrap weights, drawn identically for every candidate. ``tuning`` is the
    GFlash tuning the reference is simulated with: that of the MC the generator learned (``ResolvedModel.tuning``,
    from its model card), a shipped tuning's name or a tuning file.
    """

    name = "3dgan_moments"
    higher_is_better = False

    def __init__(self, spec: ModelSpec, settings: EvaluationSettings = DEFAULT_EVALUATION, *,
                 tuning: str | GFlashTuning = "none") -> None:
        self.spec, self.settings = spec, settings.check()
        self.tuning = load_tuning(tuning)
        seed = settings.seed
        lo, hi = spec.energy_range
        self.energies = np.random.default_rng([seed, 7]).uniform(lo, hi, settings.n_showers)
        self.tilted = spec.angle_range_deg[0] != spec.angle_range_deg[1]
        self.angles = np.random.default_rng([seed, 9]).uniform(*spec.angle_range_deg, settings.n_showers)
        self.inputs = latents(spec, self.energies, seed, self.angles)
        mc = simulate(settings.n_reference, (lo, hi), angle=spec.angle_range_deg if self.tilted else 90.0,
                      window=spec.window, seed=seed + 1000, tuning=self.tuning)
        self.reference = compute_features(mc)
        self.bins = resolve_bins(None, self.reference.energy)
        # the runtime physics guard's batch
        self.check_energies, self.check_angles = check_inputs(spec.energy_range), check_angles(spec.angle_range_deg)
        self.check_latents = latents(spec, self.check_energies, CHECK_SEED, self.check_angles)

    def batches(self) -> list[np.ndarray]:
        """The evaluation inputs in batches of the settings' batch size."""
        b = self.settings.batch
        return [self.inputs[i:i + b] for i in range(0, len(self.inputs), b)]

    def outputs(self, infer: Infer) -> Any:
        raw = infer(self.inputs)
        return compute_features(ShowerSet(self.spec.to_physical(raw, self.inputs), self.energies,
                                          np.radians(self.angles)))

    def n_items(self, outputs: Any) -> int:
        return len(outputs)

    def _comparison(self, outputs: Any) -> Any:
        return Comparison(self.reference, outputs, self.bins)

    def _reference_weights(self, n_boot: int) -> np.ndarray:
        return bootstrap_counts(len(self.reference), n_boot, np.random.default_rng([self.settings.seed, n_boot, 11]))

    def metric(self, outputs: Any, weights: np.ndarray | None = None) -> np.ndarray:
        w_ref = None if weights is None else self._reference_weights(len(weights))
        return bin_average(self._comparison(outputs).binned("moments", w_ref, weights))

    def details(self, outputs: Any) -> dict[str, float]:
        c = self._comparison(outputs)
        out = {"sampling_fraction_mre": float(bin_average(c.binned("sampling_fraction"))[0])}
        if self.tilted:
            out["tilt_error_deg"] = float(bin_average(c.tilt())[0])
        return out

    def veto_outputs(self, infer: Infer) -> ShowerSet:
        """The runtime physics guard's fixed check batch (``runtime.precision_check``), generated by one model."""
        raw = infer(self.check_latents)
        return ShowerSet(self.spec.to_physical(raw, self.check_latents), self.check_energies,
                         np.radians(self.check_angles))

    def veto(self, outputs: ShowerSet, baseline: ShowerSet) -> str | None:
        """The runtime guard's verdict on a candidate against FP32: a model that ``generate --precision`` would
        refuse to run is never accepted, however well its metric against the MC passes (the guard's batch is
        log-spaced in energy, so it weighs the low energies that a uniform evaluation sample hardly sees)."""
        check = compare("candidate", outputs, baseline)
        return None if check.passed else f"the runtime physics guard would refuse it: {check.figures()}"


def latents(spec: ModelSpec, energies: np.ndarray, seed: int, angles_deg: np.ndarray | None = None) -> np.ndarray:
    """Generator inputs for the given energies and angles (default 90 degrees) with per-shower noise of ``seed``."""
    idx = np.arange(len(energies))
    return spec.latent(energies, angles_deg, shower_noise(seed, idx, spec.noise_size))


def calibration_inputs(spec: ModelSpec, n: int, seed: int, batch: int) -> list[np.ndarray]:
    """Calibration batches: energies and angles uniform over the trained ranges, noise independent of the
    evaluation set."""
    lo, hi = spec.energy_range
    z = latents(spec, np.random.default_rng([seed, 3]).uniform(lo, hi, n), seed + 500,
                np.random.default_rng([seed, 4]).uniform(*spec.angle_range_deg, n))
    return [z[i:i + batch] for i in range(0, n, batch)]
