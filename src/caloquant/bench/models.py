"""The model files behind the benchmark rows: PyTorch weights, FP32 IR, full INT8, tuned and NNCF peer IRs."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from caloquant.errors import ModelError
from caloquant.models.registry import LoadedGenerator


def files_mib(*paths: Path) -> float:
    """Total size of files on disk, MiB."""
    return sum(p.stat().st_size for p in paths) / 2**20


def ir_mib(xml: Path) -> float:
    """Size of an OpenVINO IR (.xml + .bin), MiB."""
    return files_mib(xml, xml.with_suffix(".bin"))


def save_weights(gen: LoadedGenerator, out: Path) -> Path:
    """The generator's state_dict alone (what PyTorch inference needs), whatever checkpoint it came from."""
    import torch

    torch.save(gen.module.state_dict(), out)
    return out


def build_full_int8(model: str | os.PathLike[str], gen: LoadedGenerator, out_xml: Path) -> Path:
    """Every quantizable layer INT8 with plain min/max ranges (the tuner's TFLite-style baseline), saved as IR."""
    from caloquant.quantize import GAN_CALIBRATION, apply_recipe
    from caloquant.quantize.openvino_backend import quantizable_layers
    from caloquant.quantize.recipe import make_recipe
    from caloquant.quantize.source import resolve
    from caloquant.quantize.tuner import BASELINE_CALIBRATION

    src = resolve(model)
    layers = quantizable_layers(src.model)
    recipe = make_recipe(layers=layers, int8=layers, calibration=BASELINE_CALIBRATION,
                         calibration_data=GAN_CALIBRATION, source_sha256=src.sha256, source=src.source)
    return _save_ir(apply_recipe(model, recipe), gen, out_xml, "int8-full")


def build_shipped_tuned(model: str | os.PathLike[str], gen: LoadedGenerator, out_xml: Path) -> Path:
    """The tuned model of the recipe shipped next to the weights (``<name>.recipe.json``), saved as IR."""
    from caloquant.quantize import apply_recipe

    recipe = Path(gen.source).with_suffix(".recipe.json")
    if not recipe.exists():
        raise ModelError(f"no tuned model: {recipe.name} is not shipped; run `caloquant quantize --model {model} "
                         "-o DIR` and pass --tuned DIR/model.xml")
    return _save_ir(apply_recipe(model, recipe), gen, out_xml, "int8-mixed")


def _save_ir(ov_model: Any, gen: LoadedGenerator, out_xml: Path, precision: str) -> Path:
    from caloquant.quantize.openvino_backend import save_model

    meta = json.dumps({"spec": gen.spec.to_dict(), "source": gen.source, "source_sha256": gen.sha256,
                       "precision": precision})
    return save_model(ov_model, out_xml, {"caloquant/meta": meta})


def build_nncf_accuracy_control(model: str | os.PathLike[str], gen: LoadedGenerator, out_xml: Path, *,
                                tolerance: float = 0.05, n_showers: int = 1024, n_reference: int = 3000,
                                seed: int = 1, batch: int = 128) -> Path:
    """NNCF ``quantize_with_accuracy_control`` on the tuner's calibration data, evaluator and relative tolerance.

    The evaluator (showers, reference MC, seed) is the one ``caloquant quantize`` tunes with by default, so the
    peer and our tuner see the same data; NNCF maximises, hence the negated moment metric.
    """
    import nncf
    import numpy as np

    from caloquant.quantize import GAN_CALIBRATION, PhysicsEvaluator, gan_calibration
    from caloquant.quantize.source import resolve

    src = resolve(model)
    ev = PhysicsEvaluator(gen.spec, n_showers=n_showers, n_reference=n_reference, seed=seed, batch=batch)
    batches = [ev.inputs[i:i + batch] for i in range(0, len(ev.inputs), batch)]

    def validate(compiled: Any, data: Any) -> tuple[float, None]:
        outs = np.concatenate([np.array(compiled(x)[0]) for x in data])
        return -float(ev.metric(ev.outputs(lambda _: outs))[0]), None

    calibration = gan_calibration(gen.spec, GAN_CALIBRATION)
    q = nncf.quantize_with_accuracy_control(src.model, nncf.Dataset(calibration), nncf.Dataset(batches), validate,
                                            max_drop=tolerance, drop_type=nncf.DropType.RELATIVE,
                                            subset_size=len(calibration))
    return _save_ir(q, gen, out_xml, "int8-nncf-accuracy-control")
