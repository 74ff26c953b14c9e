"""Resolve what the user names as a model (shipped name, checkpoint, loaded generator, ONNX, IR) into an FP32
OpenVINO model, once per command: the result is passed on, never resolved again. It carries the GFlash tuning of
the generator's training MC (its card's, ``caloquant.models.card``), which every comparison with MC simulates with."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from caloquant._atomic import sha256_file
from caloquant.errors import ModelError
from caloquant.export.cache import bf16_padding, exported
from caloquant.export.files import read_model, read_spec
from caloquant.models.card import card_tuning
from caloquant.models.registry import LoadedGenerator, load_generator
from caloquant.models.spec import ModelSpec
from caloquant.quantize.openvino_backend import quantizable_layers


@dataclass
class ResolvedModel:
    """An FP32 OpenVINO model, its file and identity; ``spec`` and ``generator`` only for caloquant generators;
    ``tuning``: the GFlash tuning of the MC the generator learned (``none`` or a shipped name, from its card or its
    model file's metadata), which the tuner's evaluation data, bench and the demo simulate with."""

    model: Any
    path: Path
    sha256: str
    source: str
    name: str  #: what the user called it (a shipped name, a path)
    spec: ModelSpec | None = None
    generator: LoadedGenerator | None = None
    tuning: str = "none"
    bf16_wrong: tuple[str, ...] = ()  #: layers this CPU computes wrong in BF16 (``export.cache.bf16_padding``)


def resolve(model: str | os.PathLike[str] | LoadedGenerator | ResolvedModel) -> ResolvedModel:
    """ONNX/.xml paths are read as they are; a generator (loaded, or a name or checkpoint to load) is exported to
    IR through the model cache, and the layers this CPU computes wrong in BF16 are named (``bf16_wrong``). A
    ``ResolvedModel`` is returned as it is."""
    if isinstance(model, ResolvedModel):
        return model
    if isinstance(model, LoadedGenerator):
        gen, name = model, model.source
    else:
        p = Path(model)
        if p.suffix in (".onnx", ".xml"):
            spec: ModelSpec | None
            try:
                spec, meta = read_spec(p)
            except ModelError:
                spec, meta = None, {}
            return ResolvedModel(read_model(p), p, sha256_file(p), str(p), str(p), spec,
                                 tuning=card_tuning(meta, str(p)))
        gen, name = load_generator(model), str(model)
    xml = exported(gen, ".xml")
    ov_model = read_model(xml)
    wrong = tuple(ir_layer(quantizable_layers(ov_model), m) for m in bf16_padding(gen))
    return ResolvedModel(ov_model, xml, gen.sha256, gen.source, name, gen.spec, gen, gen.tuning, wrong)


def ir_layer(layers: list[str], module: str) -> str:
    """The IR layer (of ``layers``) that exports the PyTorch module named ``module`` (``block1.1`` ->
    ``/block1/block1.1/Conv/WithoutBiases``: the ONNX exporter names nodes by the module path)."""
    parts = module.split(".")
    prefix = "/" + "/".join(".".join(parts[:i + 1]) for i in range(len(parts))) + "/"
    found = [n for n in layers if n.startswith(prefix)]
    if len(found) != 1:
        raise ModelError(f"module {module} exports to {len(found)} layers of the IR, not one")
    return found[0]
