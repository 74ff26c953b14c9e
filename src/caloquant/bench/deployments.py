"""The model files behind the benchmark rows: PyTorch weights, FP32 IR, full INT8 and NNCF peer IRs (the tuned row
is the shipped recipe's INT8 IR, ``caloquant.quantize.shipped_int8``). Every builder takes the model resolved
once by its command."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from caloquant._optional import require
from caloquant.errors import ModelError
from caloquant.evaluation import DEFAULT_EVALUATION, EvaluationSettings
from caloquant.export.files import model_meta, save_ir
from caloquant.models.card import TUNING_FIELD
from caloquant.models.registry import LoadedGenerator
from caloquant.quantize.evaluators import PhysicsEvaluator
from caloquant.quantize.openvino_backend import quantizable_layers
from caloquant.quantize.recipe import GAN_CALIBRATION, apply_recipe, gan_calibration, make_recipe
from caloquant.quantize.source import ResolvedModel
from caloquant.quantize.tuner import BASELINE_CALIBRATION


def files_mib(*paths: Path) -> float:
    """Total size of files on disk, MiB."""
    return sum(p.stat().st_size for p in paths) / 2**20


def ir_mib(xml: Path) -> float:
    """Size of an OpenVINO IR (.xml + .bin), MiB."""
    return files_mib(xml, xml.with_suffix(".bin"))


def save_weights(gen: LoadedGenerator, out: Path) -> Path:
    """The generator's state_dict alone (what PyTorch inference needs), whatever checkpoint it came from."""
    require("torch").save(gen.module.state_dict(), out)
    return out


def _save(ov_model: Any, src: ResolvedModel, out_xml: Path, precision: str) -> Path:
    return save_ir(ov_model, out_xml, model_meta(src.spec, src.source, src.sha256, precision=precision,
                                                 **{TUNING_FIELD: src.tuning}))


def build_full_int8(src: ResolvedModel, out_xml: Path) -> Path:
    """Every quantizable layer INT8 with plain min/max ranges (the tuner's TFLite-style baseline), saved as IR."""
    layers = quantizable_layers(src.model)
    recipe = make_recipe(layers=layers, int8=layers, calibration=BASELINE_CALIBRATION,
                         calibration_data=GAN_CALIBRATION, source_sha256=src.sha256, source=src.source)
    return _save(apply_recipe(src, recipe), src, out_xml, "int8-full")


def build_nncf_accuracy_control(src: ResolvedModel, out_xml: Path, *, tolerance: float = 0.05,
                                evaluation: EvaluationSettings = DEFAULT_EVALUATION) -> Path:
    """NNCF ``quantize_with_accuracy_control`` on the tuner's calibration data, evaluator and relative tolerance.

    The evaluator (showers, reference MC with the model's GFlash tuning, seed) is the one ``caloquant quantize``
    tunes with by default, so the peer and our tuner see the same data; NNCF maximises, hence the negated moment metric.
    """
    nncf, spec = require("nncf"), src.spec
    if spec is None:
        raise ModelError(f"{src.source}: not a caloquant generator")
    ev = PhysicsEvaluator(spec, evaluation, tuning=src.tuning)
    batches = ev.batches()

    def validate(compiled: Any, data: Any) -> tuple[float, None]:
        outs = np.concatenate([np.array(compiled(x)[0]) for x in data])
        return -float(ev.metric(ev.outputs(lambda _: outs))[0]), None

    calibration = gan_calibration(spec, GAN_CALIBRATION)
    q = nncf.quantize_with_accuracy_control(src.model, nncf.Dataset(calibration), nncf.Dataset(batches), validate,
                                            max_drop=tolerance, drop_type=nncf.DropType.RELATIVE,
                                            subset_size=len(calibration))
    return _save(q, src, out_xml, "int8-nncf-accuracy-control")
