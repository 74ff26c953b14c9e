"""Generator -> ONNX -> OpenVINO IR. The ModelSpec is stored as ONNX metadata / IR runtime info and a JSON sidecar."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

import torch

from caloquant._atomic import atomic_path, check_writable, write_text_atomic
from caloquant.errors import ModelError
from caloquant.models.registry import LoadedGenerator, load_generator
from caloquant.models.spec import ModelSpec

INPUT_NAME = "latent"
OUTPUT_NAME = "shower"
OPSET = 17
#: Runtime-info key of a quantized IR: the OpenVINO inference precision (f32 or bf16) of its non-INT8 ops,
#: i.e. the precision the tuner judged it in; every consumer compiles it that way.
PRECISION_KEY = ["caloquant", "inference_precision"]


def inference_hint(model: Any) -> str:
    """The OpenVINO inference-precision hint an ov.Model was judged in (f32 unless it records bf16)."""
    return model.get_rt_info(PRECISION_KEY).astype(str) if model.has_rt_info(PRECISION_KEY) else "f32"


def _as_loaded(model: LoadedGenerator | str | os.PathLike[str]) -> LoadedGenerator:
    return model if isinstance(model, LoadedGenerator) else load_generator(model)


def _sidecar(path: Path) -> Path:
    return path.with_suffix(".spec.json")


def export_onnx(model: LoadedGenerator | str | os.PathLike[str], out: str | os.PathLike[str]) -> Path:
    """Write the generator as ONNX with a dynamic batch axis; returns the path. Spec goes to ``<out>.spec.json``."""
    gen = _as_loaded(model)
    out = check_writable(out)
    module = gen.module.eval()
    dummy = torch.zeros(2, gen.spec.latent_size)
    with atomic_path(out) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, (dummy,), str(tmp), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            opset_version=OPSET, dynamo=False, do_constant_folding=True,
        )
    write_text_atomic(_sidecar(out), json.dumps(_meta(gen), indent=2))
    return out


def _meta(gen: LoadedGenerator) -> dict[str, Any]:
    return {"spec": gen.spec.to_dict(), "source": gen.source, "source_sha256": gen.sha256}


def export_openvino(model: LoadedGenerator | str | os.PathLike[str], out_xml: str | os.PathLike[str]) -> Path:
    """Write the generator as OpenVINO IR (``.xml`` + ``.bin``) in FP32, via ONNX."""
    import tempfile

    import openvino as ov

    gen = _as_loaded(model)
    out_xml = check_writable(out_xml)
    if out_xml.suffix != ".xml":
        raise ModelError(f"{out_xml}: OpenVINO IR path must end in .xml")
    with tempfile.TemporaryDirectory() as d:
        onnx_path = export_onnx(gen, Path(d) / "model.onnx")
        ov_model = ov.convert_model(str(onnx_path))
    ov_model.set_rt_info(json.dumps(_meta(gen)), ["caloquant", "meta"])
    with atomic_path(out_xml) as tmp:
        ov.save_model(ov_model, str(tmp.with_suffix(".xml")), compress_to_fp16=False)
        tmp.with_suffix(".bin").replace(out_xml.with_suffix(".bin"))
        tmp.with_suffix(".xml").replace(tmp)
    write_text_atomic(_sidecar(out_xml), json.dumps(_meta(gen), indent=2))
    return out_xml


def read_spec(path: str | os.PathLike[str]) -> tuple[ModelSpec, dict[str, Any]]:
    """ModelSpec and metadata of an exported model (ONNX or IR), from its sidecar or the IR runtime info."""
    p = Path(path)
    side = _sidecar(p)
    if side.exists():
        try:
            meta = json.loads(side.read_text())
            return ModelSpec.from_dict(meta["spec"]), meta
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ModelError(f"{side}: not a readable caloquant model spec ({type(e).__name__}: "
                             f"{str(e).splitlines()[0][:80]})") from None
    if p.suffix == ".xml" and p.exists():
        import openvino as ov

        m = ov.Core().read_model(str(p))
        if m.has_rt_info(["caloquant", "meta"]):
            meta = json.loads(m.get_rt_info(["caloquant", "meta"]).astype(str))
            return ModelSpec.from_dict(meta["spec"]), meta
    raise ModelError(f"{p}: no caloquant model metadata found (expected {side.name} next to it)")
