"""Stage 5, quantize: accuracy-driven mixed INT8/FP32 tuning judged by physics (or any user evaluator).

``tune`` searches (raising ``AccuracyNotReachedError``, which carries the ``TuneResult``, when no candidate
passes); ``apply_recipe`` replays a tuning result without searching; ``shipped_int8`` builds (once, cached) the INT8
model of the recipe shipped with a generator; ``caloquant.quantize.workflow`` is the whole ``caloquant quantize``
workflow for a caloquant generator or any ONNX/IR model with a caloquant spec.
"""

from __future__ import annotations

from caloquant.choices import Fallback
from caloquant.evaluation import EvaluationSettings
from caloquant.quantize.evaluators import Evaluator, PerItemEvaluator, PhysicsEvaluator
from caloquant.quantize.openvino_backend import Calibration
from caloquant.quantize.recipe import (
    GAN_CALIBRATION,
    MAX_CALIBRATION,
    Recipe,
    apply_recipe,
    gan_calibration,
    read_recipe,
)
from caloquant.quantize.search import Criterion
from caloquant.quantize.shipped import open_deployed, shipped_int8
from caloquant.quantize.source import ResolvedModel, resolve
from caloquant.quantize.tuner import AccuracyNotReachedError, Candidate, TuneResult, tune

__all__ = ["GAN_CALIBRATION", "MAX_CALIBRATION", "AccuracyNotReachedError", "Calibration", "Candidate", "Criterion",
           "EvaluationSettings", "Evaluator", "Fallback", "PerItemEvaluator", "PhysicsEvaluator", "Recipe",
           "ResolvedModel", "TuneResult", "apply_recipe", "gan_calibration", "open_deployed", "read_recipe", "resolve",
           "shipped_int8", "tune"]
