"""Recipes: everything needed to rebuild a tuned model without searching (layer precisions, calibration,
calibration data, source-model sha256, tool versions), and their replay with a hash check."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from caloquant.bench.machine import isa_identity
from caloquant.errors import InputError, ModelError
from caloquant.quantize.openvino_backend import FALLBACKS, Calibration, Quantizer, set_fallback

FORMAT = "caloquant-quant-recipe-v1"


def tool_versions() -> dict[str, str]:
    """Versions of the tools that shape the quantized model."""
    import nncf
    import openvino as ov

    from caloquant import __version__

    return {"caloquant": __version__, "openvino": ov.get_version(), "nncf": nncf.__version__,
            "numpy": np.__version__}


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


def _isa_words(machine: dict[str, Any]) -> str:
    caps = ", caps " + ", ".join(f"{k}={v}" for k, v in machine.get("caps", {}).items()) if machine.get("caps") else ""
    return f"{machine.get('cpu', '?')} ({', '.join(machine.get('isa', [])) or 'no AVX2'}{caps})"


def replay_note(recipe: dict[str, Any]) -> str | None:
    """What to say when a recipe is replayed on another ISA than it was tuned on (None on the same ISA)."""
    tuned, here = recipe.get("machine"), isa_identity()
    if tuned is None:
        return (f"the recipe does not record the ISA it was tuned on; re-checking its physics against FP32 on "
                f"{_isa_words(here)}")
    if (tuned.get("isa"), tuned.get("caps", {})) == (here["isa"], here["caps"]):
        return None
    return f"recipe tuned on {_isa_words(tuned)}, replayed on {_isa_words(here)}: re-checking its physics against FP32"


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
    if fallback not in FALLBACKS or odd:
        raise InputError(f"recipe precisions must be int8 or one fallback of {', '.join(FALLBACKS)} "
                         f"(found {', '.join(odd) or fallback})")
    try:
        cal = Calibration(**recipe["calibration"])
    except TypeError as e:
        raise InputError(f"recipe calibration is malformed ({e})") from None
    return set_fallback(q.build(int8, cal), fallback)
