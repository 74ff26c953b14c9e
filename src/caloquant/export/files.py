"""Model files: the one home of their format, for every stage that writes or reads an ONNX or OpenVINO IR model.

A model file carries its caloquant metadata (the ModelSpec, the source weights and their sha256, plus whatever
the writer adds: precision, acceptance, recipe) twice: in a JSON sidecar ``<name>.spec.json`` and, for an IR, in
its runtime info. IRs are written atomically (``.xml`` and ``.bin``), without FP16 weight compression.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from caloquant._atomic import atomic_path, check_writable, write_text_atomic
from caloquant._optional import require
from caloquant.choices import Fallback
from caloquant.errors import ModelError, reason
from caloquant.models.spec import ModelSpec

#: Runtime-info key of the metadata of an IR.
META_KEY = ["caloquant", "meta"]
#: Runtime-info key of a quantized IR: the OpenVINO inference precision (f32 or bf16) of its non-INT8 ops,
#: i.e. the precision the tuner judged it in; every consumer compiles it that way.
PRECISION_KEY = ["caloquant", "inference_precision"]
#: Metadata field of a generator file whose graph stops before the entry-point shift ("decode": decoding shifts,
#: ``ModelSpec.to_physical``); files of a shifting spec without it hold the older in-graph shift and are refused.
ENTRY_SHIFT = "entry_shift"
#: OpenVINO CPU inference-precision hint per precision word. Always set explicitly: the CPU plugin defaults to
#: bf16 wherever the CPU has it (and OpenVINO 2026 on some CPUs without native BF16), about 1 % off per cell.
PRECISION_HINTS: dict[str, str] = {Fallback.FP32: "f32", Fallback.BF16: "bf16"}


def sidecar(path: str | os.PathLike[str]) -> Path:
    """The JSON metadata file next to a model file."""
    return Path(path).with_suffix(".spec.json")


def model_meta(spec: ModelSpec | None, source: str, source_sha256: str, **extra: Any) -> dict[str, Any]:
    """The metadata of a model file: its spec (None for models that are not caloquant generators), the source
    weights and their sha256, and ``extra`` fields (precision, accepted, recipe...). A generator with an entry-point
    shift is marked as exported without it (``ENTRY_SHIFT``: decoding shifts)."""
    shift = {ENTRY_SHIFT: "decode"} if spec is not None and spec.entry_jitter_cells > 0 else {}
    return {"spec": spec.to_dict() if spec is not None else None, "source": source, "source_sha256": source_sha256,
            **shift, **extra}


def write_sidecar(path: str | os.PathLike[str], meta: dict[str, Any]) -> Path:
    """Write the metadata sidecar of a model file atomically."""
    return write_text_atomic(sidecar(path), json.dumps(meta, indent=2))


def check_ir_path(out_xml: str | os.PathLike[str]) -> Path:
    """A writable ``.xml`` path for an IR (one-line error otherwise)."""
    out = check_writable(out_xml)
    if out.suffix != ".xml":
        raise ModelError(f"{out}: OpenVINO IR path must end in .xml")
    return out


def save_ir(model: Any, out_xml: str | os.PathLike[str], meta: dict[str, Any]) -> Path:
    """Save an ov.Model as IR (``.xml`` + ``.bin``) atomically, with ``meta`` in its runtime info and sidecar."""
    ov = require("openvino")
    out = check_ir_path(out_xml)
    model.set_rt_info(json.dumps(meta), META_KEY)
    with atomic_path(out) as tmp:
        ov.save_model(model, str(tmp.with_suffix(".xml")), compress_to_fp16=False)
        tmp.with_suffix(".bin").replace(out.with_suffix(".bin"))
        tmp.with_suffix(".xml").replace(tmp)
    write_sidecar(out, meta)
    return out


def read_model(model: Any) -> Any:
    """An ov.Model from an ov.Model, an ONNX file or an OpenVINO IR .xml (one-line ModelError otherwise)."""
    ov = require("openvino")
    if isinstance(model, ov.Model):
        return model
    p = Path(model)
    if not p.exists():
        raise ModelError(f"{p}: no such model file")
    try:
        return ov.Core().read_model(str(p))
    except Exception as e:  # noqa: BLE001 - OpenVINO raises RuntimeError subclasses with multi-line text
        raise ModelError(f"{p}: not a readable ONNX/OpenVINO model ({reason(e)})") from None


def read_meta(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The metadata of a model file, from its sidecar or else the IR runtime info (one-line ModelError)."""
    p = Path(path)
    side = sidecar(p)
    if side.exists():
        try:
            meta = json.loads(side.read_text())
        except (OSError, ValueError) as e:
            raise ModelError(f"{side}: not a readable caloquant model spec ({type(e).__name__}: "
                             f"{str(e).splitlines()[0][:80]})") from None
        if not isinstance(meta, dict):
            raise ModelError(f"{side}: not a caloquant model spec (not a JSON object)")
        return meta
    if p.suffix == ".xml" and p.exists():
        m = read_model(p)
        if m.has_rt_info(META_KEY):
            return dict(json.loads(m.get_rt_info(META_KEY).astype(str)))
    raise ModelError(f"{p}: no caloquant model metadata found (expected {side.name} next to it)")


def read_spec(path: str | os.PathLike[str]) -> tuple[ModelSpec, dict[str, Any]]:
    """ModelSpec and metadata of a model file (ONNX or IR)."""
    meta = read_meta(path)
    if not isinstance(meta.get("spec"), dict):
        raise ModelError(f"{path}: not a readable caloquant model spec (its metadata has no 'spec')")
    spec = ModelSpec.from_dict(meta["spec"])
    if spec.entry_jitter_cells > 0 and meta.get(ENTRY_SHIFT) != "decode":
        raise ModelError(f"{path}: exported by an older caloquant with the entry-point shift inside the graph; "
                         "export or quantize its weights again")
    return spec, meta


def inference_hint(model: Any) -> str:
    """The OpenVINO inference-precision hint an ov.Model was judged in (f32 unless it records bf16)."""
    return model.get_rt_info(PRECISION_KEY).astype(str) if model.has_rt_info(PRECISION_KEY) else "f32"


def set_inference_precision(model: Any, word: Fallback | str) -> Any:
    """Record in an ov.Model's runtime info the precision (fp32 or bf16) its non-INT8 computation was judged in."""
    model.set_rt_info(PRECISION_HINTS[Fallback.parse(word, "fallback precision")], PRECISION_KEY)
    return model
