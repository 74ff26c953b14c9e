"""Stage 5, quantize: accuracy-driven mixed INT8/FP32 tuning judged by physics (or any user evaluator).

``tune`` searches; ``apply_recipe`` replays a tuning result without searching; ``quantize_generator`` is the
whole ``caloquant quantize`` workflow for a caloquant generator or any ONNX/IR model with a caloquant spec.
"""

from __future__ import annotations

import os
from typing import Any

from caloquant.quantize.evaluators import Evaluator, PerItemEvaluator, PhysicsEvaluator
from caloquant.quantize.openvino_backend import Calibration
from caloquant.quantize.search import Criterion
from caloquant.quantize.tuner import Candidate, TuneResult, tune

#: Calibration set of the GAN workflow: showers, seed, batch (recorded in recipes so replays are identical).
GAN_CALIBRATION = {"kind": "gan", "n": 512, "seed": 7, "batch": 128}
#: Most calibration showers a recipe may ask for.
MAX_CALIBRATION = 100_000


def gan_calibration(spec: Any, data: dict[str, Any]) -> list[Any]:
    """Calibration batches of a generator from a recipe's ``calibration_data``."""
    from caloquant.errors import InputError
    from caloquant.quantize.evaluators import calibration_inputs

    if not isinstance(data, dict):
        raise InputError(f"recipe calibration_data must be an object like {GAN_CALIBRATION}, got {str(data)[:60]}")
    if data.get("kind") != "gan":
        raise InputError("this recipe was made with user calibration data; pass it as calibration=...")
    try:
        n, seed, batch = (int(data[k]) for k in ("n", "seed", "batch"))
    except (KeyError, TypeError, ValueError):
        raise InputError(f"recipe calibration_data needs integer n, seed and batch, got {str(data)[:80]}") from None
    if not (0 < n <= MAX_CALIBRATION and 0 < batch):
        raise InputError(f"recipe calibration_data: n must be 1-{MAX_CALIBRATION} and batch positive, got {data}")
    return calibration_inputs(spec, n, seed, batch)


def apply_recipe(model: str | os.PathLike[str], recipe: str | os.PathLike[str] | dict[str, Any],
                 calibration: list[Any] | None = None) -> Any:
    """The recipe's quantized openvino.Model, rebuilt from the FP32 model (name or path) after a sha256 check."""
    from caloquant.errors import ModelError
    from caloquant.quantize import recipe as rec
    from caloquant.quantize.source import resolve

    r = recipe if isinstance(recipe, dict) else rec.read_recipe(recipe)
    src = resolve(model)
    if src.sha256 != r["source_sha256"]:
        raise ModelError(f"{src.source}: sha256 {src.sha256[:12]}... does not match the recipe's "
                         f"{str(r['source_sha256'])[:12]}...")
    if calibration is None:
        if src.spec is None:
            raise ModelError(f"{src.source}: not a caloquant generator; pass the recipe's calibration data")
        calibration = gan_calibration(src.spec, r["calibration_data"])
    return rec.build(src.model, r, calibration, src.sha256)


__all__ = ["GAN_CALIBRATION", "Calibration", "Candidate", "Criterion", "Evaluator", "PerItemEvaluator",
           "PhysicsEvaluator", "TuneResult", "apply_recipe", "gan_calibration", "tune"]
