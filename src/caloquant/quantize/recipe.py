"""Recipes: everything needed to rebuild a tuned model without searching (layer precisions, calibration,
calibration data, source-model sha256, tool versions), and their replay with a hash check."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from caloquant import __version__
from caloquant._optional import require
from caloquant.errors import InputError, ModelError
from caloquant.export.files import PRECISION_HINTS, set_inference_precision
from caloquant.machine import isa_change_note, isa_identity
from caloquant.models.registry import LoadedGenerator
from caloquant.quantize.evaluators import calibration_inputs
from caloquant.quantize.openvino_backend import Calibration, Quantizer
from caloquant.quantize.source import ResolvedModel, resolve

FORMAT = "caloquant-quant-recipe-v1"
#: Calibration set of the GAN workflow: showers, seed, batch (recorded in recipes so replays are identical).
GAN_CALIBRATION = {"kind": "gan", "n": 512, "seed": 7, "batch": 128}
#: Most calibration showers a recipe may ask for.
MAX_CALIBRATION = 100_000


def tool_versions() -> dict[str, str]:
    """Versions of the tools that shape the quantized model."""
    return {"caloquant": __version__, "openvino": require("openvino").get_version(),
            "nncf": require("nncf").__version__, "numpy": np.__version__}


def make_recipe(*, layers: list[str], int8: list[str], calibration: Calibration, calibration_data: dict[str, Any],
                source_sha256: str, source: str, summary: dict[str, Any] | None = None,
                fallback: str = "fp32") -> dict[str, Any]:
    """The recipe of one configuration (``calibration_data`` says how to regenerate the calibration inputs).

    ``machine`` records the CPU and ISA it was tuned on: a replay elsewhere re-checks the physics (``replay_note``).

    ``precision`` maps every quantizable layer to int8 or to the fallback precision (fp32 or bf16), which also
    applies to the ops between layers; ``fallback`` repeats it for readers.
    """
    return {
        "format": FORMAT, "source": source, "source_sha256": source_sha256,
        "precision": {n: ("int8" if n in int8 else fallback) for n in layers}, "fallback": fallback,
        "calibration": calibration.to_dict(), "calibration_data": calibration_data,
        "tools": tool_versions(), "tuning": summary or {}, "machine": isa_identity(),
    }


def replay_note(recipe: dict[str, Any]) -> str | None:
    """What to say when a recipe is replayed on another ISA than it was tuned on (None on the same ISA)."""
    return isa_change_note(recipe.get("machine"))


def read_recipe(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load and check a recipe file (one-line InputError when it is not one)."""
    p = Path(path)
    try:
        recipe = json.loads(p.read_text())
    except FileNotFoundError:
        raise InputError(f"{p}: no such recipe file") from None
    except (OSError, ValueError) as e:
        raise InputError(f"{p}: not a readable recipe ({e})") from None
    if not isinstance(recipe, dict) or recipe.get("format") != FORMAT:
        raise InputError(f"{p}: not a caloquant quantization recipe (format {FORMAT})")
    for key, kind in (("source_sha256", str), ("precision", dict), ("calibration", dict),
                      ("calibration_data", dict)):
        if key not in recipe:
            raise InputError(f"{p}: recipe lacks {key!r}")
        if not isinstance(recipe[key], kind):
            raise InputError(f"{p}: recipe field {key!r} must be a JSON {'string' if kind is str else 'object'}")
    return recipe


def build(model: Any, recipe: dict[str, Any], calibration: list[np.ndarray], source_sha256: str) -> Any:
    """Rebuild the recipe's model from the FP32 ``model`` after checking the source hash.

    Layers the model cannot quantize (``Quantizer.skipped``) stay in floating point whatever the recipe says.
    """
    if source_sha256 != recipe["source_sha256"]:
        raise ModelError(f"model sha256 {source_sha256[:12]}... does not match the recipe's "
                         f"{str(recipe['source_sha256'])[:12]}...")
    q = Quantizer(model, calibration)
    missing = sorted((set(recipe["precision"]) ^ set(q.layers)) - set(q.skipped))
    if missing:
        raise ModelError(f"recipe layers do not match the model ({', '.join(missing[:3])} ...)")
    int8 = [n for n, p in recipe["precision"].items() if p == "int8" and n not in q.skipped]
    fallback = str(recipe.get("fallback", "fp32"))
    odd = sorted({p for p in recipe["precision"].values()} - {"int8", fallback})
    if fallback not in PRECISION_HINTS or odd:
        raise InputError(f"recipe precisions must be int8 or one fallback of {', '.join(PRECISION_HINTS)} "
                         f"(found {', '.join(odd) or fallback})")
    try:
        cal = Calibration(**recipe["calibration"])
    except TypeError as e:
        raise InputError(f"recipe calibration is malformed ({e})") from None
    return set_inference_precision(q.build(int8, cal), fallback)


def gan_calibration(spec: Any, data: dict[str, Any]) -> list[Any]:
    """Calibration batches of a generator from a recipe's ``calibration_data``."""
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


def apply_recipe(model: str | os.PathLike[str] | LoadedGenerator | ResolvedModel,
                 recipe: str | os.PathLike[str] | dict[str, Any], calibration: list[Any] | None = None) -> Any:
    """The recipe's quantized openvino.Model, rebuilt from the FP32 model (a name, path, loaded generator or a
    model resolved already) after a sha256 check."""
    r = recipe if isinstance(recipe, dict) else read_recipe(recipe)
    src = resolve(model)
    if src.sha256 != r["source_sha256"]:
        raise ModelError(f"{src.source}: sha256 {src.sha256[:12]}... does not match the recipe's "
                         f"{str(r['source_sha256'])[:12]}...")
    if calibration is None:
        if src.spec is None:
            raise ModelError(f"{src.source}: not a caloquant generator; pass the recipe's calibration data")
        calibration = gan_calibration(src.spec, r["calibration_data"])
    return build(src.model, r, calibration, src.sha256)
