"""Recipes: everything needed to rebuild a tuned model without searching (layer precisions, calibration,
calibration data, source-model sha256, tool versions), and their replay with a hash check."""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from caloquant import __version__
from caloquant._optional import require
from caloquant.choices import Choice, Fallback, Precision
from caloquant.errors import DataFormatError, InputError, ModelError
from caloquant.export.files import set_inference_precision
from caloquant.machine import isa_change_note, isa_identity
from caloquant.models.registry import LoadedGenerator
from caloquant.quantize.evaluators import calibration_inputs
from caloquant.quantize.openvino_backend import RANGES, SCALES, Calibration, Quantizer
from caloquant.quantize.source import ResolvedModel, resolve

FORMAT = "caloquant-quant-recipe-v1"
#: Calibration set of the GAN workflow: showers, seed, batch (recorded in recipes so replays are identical).
GAN_CALIBRATION: dict[str, Any] = {"kind": "gan", "n": 512, "seed": 7, "batch": 128}
#: Most calibration showers a recipe may ask for.
MAX_CALIBRATION = 100_000
W = TypeVar("W", bound=Choice)


@dataclass(frozen=True)
class Recipe:
    """Everything needed to rebuild a tuned model without searching; ``to_dict`` is its JSON file.

    ``precision`` maps every quantizable layer to int8 or to ``fallback`` (fp32 or bf16), which also applies to
    the ops between layers. ``calibration_data`` says how to regenerate the calibration inputs (``kind`` gan or
    npz); ``machine`` records the CPU and ISA it was tuned on (None in recipes older than that record), so a
    replay elsewhere re-checks the physics (``replay_note``); ``tuning`` is the tuner's verdict, for readers.
    """

    source: str
    source_sha256: str
    precision: Mapping[str, Precision]
    calibration: Calibration
    calibration_data: Mapping[str, Any]
    fallback: Fallback = Fallback.FP32
    tools: Mapping[str, str] = field(default_factory=dict)
    tuning: Mapping[str, Any] = field(default_factory=dict)
    machine: Mapping[str, Any] | None = None

    def __post_init__(self) -> None:
        for layer, word in self.precision.items():
            if word not in (Precision.INT8, self.fallback):
                raise DataFormatError(_expected(f"precision[{json.dumps(layer)}]", f"int8|{self.fallback}", word))

    @property
    def int8(self) -> list[str]:
        """The layers the recipe quantizes."""
        return [n for n, p in self.precision.items() if p == Precision.INT8]

    def to_dict(self) -> dict[str, Any]:
        """The recipe file's JSON document (``machine`` left out when unknown)."""
        doc = {"format": FORMAT, "source": self.source, "source_sha256": self.source_sha256,
               "precision": {n: str(p) for n, p in self.precision.items()}, "fallback": str(self.fallback),
               "calibration": self.calibration.to_dict(), "calibration_data": dict(self.calibration_data),
               "tools": dict(self.tools), "tuning": dict(self.tuning)}
        return doc if self.machine is None else doc | {"machine": dict(self.machine)}

    def to_json(self) -> str:
        """The recipe file's text."""
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, doc: Any, where: str = "recipe") -> Recipe:
        """Check a recipe's JSON document; a one-line DataFormatError names ``where`` and the failing path."""
        try:
            return cls._parse(doc)
        except DataFormatError as e:
            raise DataFormatError(f"{where}: {e}") from None

    @classmethod
    def _parse(cls, doc: Any) -> Recipe:
        if not isinstance(doc, dict) or doc.get("format") != FORMAT:
            raise DataFormatError(f"not a caloquant quantization recipe (format {FORMAT})")
        for key in ("source_sha256", "precision", "calibration", "calibration_data"):
            if key not in doc:
                raise DataFormatError(f"lacks {key!r}")
        fallback = _word(Fallback, doc.get("fallback", "fp32"), "fallback")
        precision = _object(doc["precision"], "precision")
        return cls(source=_string(doc.get("source", ""), "source"),
                   source_sha256=_string(doc["source_sha256"], "source_sha256"),
                   precision={str(n): _word(Precision, w, f"precision[{json.dumps(n)}]") for n, w in precision.items()},
                   calibration=_calibration(_object(doc["calibration"], "calibration")),
                   calibration_data=_object(doc["calibration_data"], "calibration_data"), fallback=fallback,
                   tools=_object(doc.get("tools", {}), "tools"), tuning=_object(doc.get("tuning", {}), "tuning"),
                   machine=None if doc.get("machine") is None else _object(doc["machine"], "machine"))


def _expected(path: str, expected: str, got: Any) -> str:
    """The one-line complaint about the value at ``path``."""
    return f"{path}: expected {expected}, got {repr(str(got) if isinstance(got, Choice) else got)[:60]}"


def _word(kind: type[W], value: Any, path: str) -> W:
    try:
        return kind(value)
    except ValueError:
        raise DataFormatError(_expected(path, "|".join(kind.words()), value)) from None


def _string(value: Any, path: str) -> str:
    if not isinstance(value, str):
        raise DataFormatError(_expected(path, "a string", value))
    return value


def _object(value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise DataFormatError(_expected(path, "an object", value))
    return value


def _calibration(doc: dict[str, Any]) -> Calibration:
    unknown = sorted(set(doc) - {f.name for f in fields(Calibration)})
    if unknown:
        raise DataFormatError(f"calibration.{unknown[0]}: unknown field (expected range, per_channel, bias_correction, "
                              "scale)")
    if "range" in doc and doc["range"] not in RANGES:
        raise DataFormatError(_expected("calibration.range", "|".join(RANGES), doc["range"]))
    if "scale" in doc and doc["scale"] not in SCALES:
        raise DataFormatError(_expected("calibration.scale", "|".join(SCALES), doc["scale"]))
    for key in ("per_channel", "bias_correction"):
        if key in doc and not isinstance(doc[key], bool):
            raise DataFormatError(_expected(f"calibration.{key}", "true|false", doc[key]))
    return Calibration(**doc)


def tool_versions() -> dict[str, str]:
    """Versions of the tools that shape the quantized model."""
    return {"caloquant": __version__, "openvino": require("openvino").get_version(),
            "nncf": require("nncf").__version__, "numpy": np.__version__}


def make_recipe(*, layers: list[str], int8: list[str], calibration: Calibration, calibration_data: Mapping[str, Any],
                source_sha256: str, source: str, tuning: Mapping[str, Any] | None = None,
                fallback: Fallback = Fallback.FP32) -> Recipe:
    """The recipe of one configuration, tuned on this machine with these tools: ``int8`` layers in INT8, the other
    ``layers`` in ``fallback``."""
    return Recipe(source=source, source_sha256=source_sha256,
                  precision={n: (Precision.INT8 if n in int8 else Precision(fallback)) for n in layers},
                  calibration=calibration, calibration_data=dict(calibration_data), fallback=Fallback(fallback),
                  tools=tool_versions(), tuning=dict(tuning or {}), machine=isa_identity())


def replay_note(recipe: Recipe) -> str | None:
    """What to say when a recipe is replayed on another ISA than it was tuned on (None on the same ISA)."""
    return isa_change_note(None if recipe.machine is None else dict(recipe.machine))


def read_recipe(path: str | os.PathLike[str]) -> Recipe:
    """Load and check a recipe file (one-line DataFormatError naming the file and the failing field)."""
    p = Path(path)
    try:
        doc = json.loads(p.read_text())
    except FileNotFoundError:
        raise DataFormatError(f"{p}: no such recipe file") from None
    except (OSError, ValueError) as e:
        raise DataFormatError(f"{p}: not a readable recipe ({e})") from None
    return Recipe.from_dict(doc, str(p))


def build(model: Any, recipe: Recipe, calibration: list[np.ndarray], source_sha256: str) -> Any:
    """Rebuild the recipe's model from the FP32 ``model`` after checking the source hash.

    Layers the model cannot quantize (``Quantizer.skipped``) stay in floating point whatever the recipe says.
    """
    if source_sha256 != recipe.source_sha256:
        raise ModelError(f"model sha256 {source_sha256[:12]}... does not match the recipe's "
                         f"{recipe.source_sha256[:12]}...")
    q = Quantizer(model, calibration)
    missing = sorted((set(recipe.precision) ^ set(q.layers)) - set(q.skipped))
    if missing:
        raise ModelError(f"recipe layers do not match the model ({', '.join(missing[:3])} ...)")
    int8 = [n for n in recipe.int8 if n not in q.skipped]
    return set_inference_precision(q.build(int8, recipe.calibration), recipe.fallback)


def gan_calibration(spec: Any, data: Mapping[str, Any]) -> list[Any]:
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
                 recipe: str | os.PathLike[str] | Recipe | dict[str, Any], calibration: list[Any] | None = None) -> Any:
    """The recipe's quantized openvino.Model, rebuilt from the FP32 model (a name, path, loaded generator or a
    model resolved already) after a sha256 check; ``recipe`` is a file, a Recipe or a recipe's JSON document."""
    r = recipe if isinstance(recipe, Recipe) else (
        Recipe.from_dict(recipe) if isinstance(recipe, dict) else read_recipe(recipe))
    src = resolve(model)
    if src.sha256 != r.source_sha256:
        raise ModelError(f"{src.source}: sha256 {src.sha256[:12]}... does not match the recipe's "
                         f"{r.source_sha256[:12]}...")
    if calibration is None:
        if src.spec is None:
            raise ModelError(f"{src.source}: not a caloquant generator; pass the recipe's calibration data")
        calibration = gan_calibration(src.spec, r.calibration_data)
    return build(src.model, r, calibration, src.sha256)
