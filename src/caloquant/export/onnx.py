"""Generator -> ONNX -> OpenVINO IR, with the ModelSpec in the model files' metadata (``caloquant.export.files``)."""

from __future__ import annotations

import copy
import os
import tempfile
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from caloquant._atomic import atomic_path, check_writable
from caloquant._optional import require
from caloquant.export.files import check_ir_path, model_meta, save_ir, write_sidecar
from caloquant.models.card import TUNING_FIELD
from caloquant.models.registry import LoadedGenerator, centred, load_generator

INPUT_NAME = "latent"
OUTPUT_NAME = "shower"
OPSET = 17


def _as_loaded(model: LoadedGenerator | str | os.PathLike[str]) -> LoadedGenerator:
    return model if isinstance(model, LoadedGenerator) else load_generator(model)


def generator_meta(gen: LoadedGenerator, **extra: Any) -> dict[str, Any]:
    """The model-file metadata of a file made from ``gen``'s weights (with the GFlash tuning of its training MC)."""
    return model_meta(gen.spec, gen.source, gen.sha256, **{TUNING_FIELD: gen.tuning}, **extra)


def export_onnx(model: LoadedGenerator | str | os.PathLike[str], out: str | os.PathLike[str],
                padded: Sequence[str] = ()) -> Path:
    """Write the generator as ONNX with a dynamic batch axis; returns the path. Spec goes to ``<out>.spec.json``.

    ``padded`` names convolutions to export computed on zero-padded input channels (``models.bf16.pad_convs``):
    the same function through another kernel, for runtimes whose BF16 kernel for the plain one is wrong."""
    torch = require("torch")
    gen = _as_loaded(model)
    out = check_writable(out)
    module = centred(gen.module)  # decoding shifts (ModelSpec.to_physical), not the graph
    if padded:
        module = require("caloquant.models.bf16").pad_convs(copy.deepcopy(module), padded)
    module.eval()
    dummy = torch.zeros(2, gen.spec.latent_size)
    with atomic_path(out) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, (dummy,), str(tmp), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            opset_version=OPSET, dynamo=False, do_constant_folding=True,
        )
    write_sidecar(out, generator_meta(gen, **({"padded_convs": list(padded)} if padded else {})))
    return out


def onnx_to_openvino(onnx_path: str | os.PathLike[str], gen: LoadedGenerator, out_xml: str | os.PathLike[str]) -> Path:
    """Convert an ONNX export of ``gen`` to OpenVINO IR in FP32."""
    return save_ir(require("openvino").convert_model(str(onnx_path)), out_xml, generator_meta(gen))


def export_openvino(model: LoadedGenerator | str | os.PathLike[str], out_xml: str | os.PathLike[str]) -> Path:
    """Write the generator as OpenVINO IR (``.xml`` + ``.bin``) in FP32, via ONNX."""
    gen = _as_loaded(model)
    out = check_ir_path(out_xml)
    with tempfile.TemporaryDirectory() as d:
        return onnx_to_openvino(export_onnx(gen, Path(d) / "model.onnx"), gen, out)
