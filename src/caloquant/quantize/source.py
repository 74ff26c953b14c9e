"""Resolve what the user names as a model (shipped name, checkpoint, ONNX, IR) into an OpenVINO model."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from caloquant.models.spec import ModelSpec


@dataclass
class Source:
    """An FP32 OpenVINO model with its identity; ``spec``/``module`` only for caloquant generators."""

    model: Any
    sha256: str
    source: str
    spec: ModelSpec | None = None
    module: Any = None


def resolve(model: str | os.PathLike[str]) -> Source:
    """ONNX/.xml paths are read as they are; anything else is loaded as a caloquant generator and exported."""
    from caloquant.errors import ModelError
    from caloquant.export.onnx import export_openvino, read_spec
    from caloquant.models.registry import load_generator, sha256_file
    from caloquant.quantize.openvino_backend import read_model

    p = Path(model)
    if p.suffix in (".onnx", ".xml"):
        ov_model = read_model(p)
        try:
            spec: ModelSpec | None = read_spec(p)[0]
        except ModelError:
            spec = None
        return Source(ov_model, sha256_file(p), str(p), spec)
    gen = load_generator(model)
    with tempfile.TemporaryDirectory() as d:
        xml = export_openvino(gen, Path(d) / "fp32.xml")
        ov_model = read_model(xml)
    return Source(ov_model, gen.sha256, gen.source, gen.spec, gen.module)
