"""The ``caloquant quantize`` workflow for generators: tune (or replay a recipe) and write OUTDIR with
model.xml/.bin, recipe.json, history.json and report.html."""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from caloquant._atomic import OutputLock, check_writable_dir, publish_dir, staging_dir, write_text_atomic
from caloquant._optional import require
from caloquant.errors import InputError, ModelError
from caloquant.evaluation import DEFAULT_EVALUATION, EvaluationSettings
from caloquant.export.files import model_meta, save_ir
from caloquant.models.card import TUNING_FIELD
from caloquant.models.registry import LoadedGenerator, centred
from caloquant.quantize import recipe as rec
from caloquant.quantize import userdata
from caloquant.quantize.evaluators import PhysicsEvaluator
from caloquant.quantize.recipe import GAN_CALIBRATION, Recipe, apply_recipe, gan_calibration
from caloquant.quantize.openvino_backend import Calibration
from caloquant.quantize.search import Criterion
from caloquant.quantize.source import ResolvedModel, resolve
from caloquant.quantize.tuner import AccuracyNotReachedError, TuneResult, check_options, tune
from caloquant.runtime.generator import open_generator
from caloquant.runtime.throughput import median_seconds


def torch_throughput(module: Any, example: np.ndarray, *, seconds: float = 2.0, min_runs: int = 3) -> float:
    """Items per second of the PyTorch FP32 module at the example's batch size (median over timed runs)."""
    torch = require("torch")
    x = torch.from_numpy(example)
    with torch.inference_mode():
        return len(example) / median_seconds(lambda: module(x), seconds=seconds, min_runs=min_runs)


#: Name of the model a failed tune writes for inspection (with recipe.rejected.json): never ``model.xml``,
#: and marked not accepted, so that ``generate --precision`` refuses it.
REJECTED = "model.rejected.xml"


def _save(model: Any, out: Path, src: ResolvedModel, *, accepted: bool = True) -> None:
    """Write the model (``model.xml``, or ``REJECTED`` when it failed the criterion) with its metadata."""
    save_ir(model, out / ("model.xml" if accepted else REJECTED), model_meta(
        src.spec, src.source, src.sha256, precision="int8-mixed" if accepted else "rejected", accepted=accepted,
        **{TUNING_FIELD: src.tuning}))


def _physics_figures(ev: PhysicsEvaluator, result: TuneResult) -> list[tuple[str, Any]]:
    figures = require("caloquant.plotting.figures")
    cands = [("FP32", result.outputs["fp32"]), ("tuned", result.outputs["tuned"]),
             ("full INT8", result.outputs["full-int8"])]
    return [("Profiles: reference MC vs FP32, tuned, full INT8", figures.profiles(ev.reference, cands)),
            ("3DGAN moments vs primary energy", figures.moments_vs_energy(ev.reference, cands, ev.bins)),
            ("Sampling fraction vs primary energy", figures.sampling_fraction_vs_energy(ev.reference, cands, ev.bins))]


@dataclass(frozen=True)
class QuantizeResult:
    """What a quantize run made: the recipe it wrote, and the tuning behind it (None when a recipe was replayed).

    ``history()`` is history.json; ``context`` holds the run's facts for the report (showers, cores, setup time).
    """

    recipe: Recipe
    tuning: TuneResult | None = None
    context: Mapping[str, Any] = field(default_factory=dict)
    pytorch_fp32_throughput: float | None = None  #: items/s of the PyTorch FP32 module (generators only)
    sampling_fraction_mre: Mapping[str, float | None] | None = None  #: per candidate (physics evaluator only)

    @property
    def speedup_vs_pytorch_fp32(self) -> float | None:
        """Throughput of the tuned model over PyTorch FP32's (None when not measured)."""
        if self.tuning is None or self.pytorch_fp32_throughput is None:
            return None
        return self.tuning.best.throughput / self.pytorch_fp32_throughput

    def history(self) -> dict[str, Any]:
        """The JSON document of history.json: the tuning summary, the PyTorch comparison and the context."""
        if self.tuning is None:
            raise InputError("a replayed recipe has no tuning history")
        doc = self.tuning.summary()
        if self.pytorch_fp32_throughput is not None:
            doc |= {"pytorch_fp32_throughput": self.pytorch_fp32_throughput,
                    "speedup_vs_pytorch_fp32": self.speedup_vs_pytorch_fp32}
        doc["context"] = dict(self.context)
        if self.sampling_fraction_mre is not None:
            doc["sampling_fraction_mre"] = dict(self.sampling_fraction_mre)
        return doc


#: Every file a quantize run may write into its folder: a rerun with ``overwrite`` replaces or removes them all.
OUTPUTS = ("model.xml", "model.bin", "model.spec.json", REJECTED, Path(REJECTED).with_suffix(".bin").name,
           Path(REJECTED).with_suffix(".spec.json").name, "recipe.json", "recipe.rejected.json", "history.json",
           "report.html")


def quantize_generator(model: str | os.PathLike[str] | LoadedGenerator | ResolvedModel,
                       outdir: str | os.PathLike[str], *,
                       recipe: str | os.PathLike[str] | None = None, criterion: Criterion | None = None,
                       max_candidates: int = 12, max_minutes: float = 10.0, batch: int = 128,
                       evaluation: EvaluationSettings = DEFAULT_EVALUATION, overwrite: bool = False,
                       log: Any = print) -> QuantizeResult:
    """Tune (or replay ``recipe``) a generator, judged by the physics evaluator with ``evaluation``, and write OUTDIR.

    OUTDIR is locked for the run; one that holds an earlier run's outputs is refused unless ``overwrite``. The
    outputs are written into a hidden staging folder next to OUTDIR and moved in only when the run ends, so an
    error, a signal or SIGKILL leaves OUTDIR as it was (or absent). A failed tune publishes its model as
    ``REJECTED``, never model.xml.
    """
    evaluation.check()
    if recipe is None:
        check_options(batch, max_candidates, max_minutes)
    return _into(outdir, overwrite, lambda out: _quantize(
        model, out, recipe=recipe, criterion=criterion, max_candidates=max_candidates, max_minutes=max_minutes,
        batch=batch, evaluation=evaluation, log=log))


def _into(outdir: str | os.PathLike[str], overwrite: bool,
          work: Callable[[Path], QuantizeResult]) -> QuantizeResult:
    """Run ``work`` on a staging folder of the locked, checked OUTDIR and publish what it wrote when it ends.

    An OUTDIR holding an earlier run's outputs is refused unless ``overwrite``; a failed criterion still
    publishes (the closest candidate, as REJECTED, for inspection); any other failure publishes nothing.
    """
    out = check_writable_dir(outdir)
    with OutputLock(out):
        earlier = [name for name in OUTPUTS if (out / name).exists()]
        if earlier and not overwrite:
            raise InputError(f"{out}: holds the output of an earlier quantize ({earlier[0]}); pass --overwrite to "
                             "replace it")
        stage = staging_dir(out)
        try:
            result = work(stage)
        except AccuracyNotReachedError:
            publish_dir(stage, out, OUTPUTS)
            raise
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)
            raise
        publish_dir(stage, out, OUTPUTS)
        return result


def _quantize(model: str | os.PathLike[str] | LoadedGenerator | ResolvedModel, out: Path, *,
              recipe: str | os.PathLike[str] | None, criterion: Criterion | None, max_candidates: int,
              max_minutes: float, batch: int, evaluation: EvaluationSettings, log: Any) -> QuantizeResult:
    """``quantize_generator`` into the staging folder ``out``."""
    r = None if recipe is None else rec.read_recipe(recipe)  # a bad recipe fails before the model is loaded
    src = resolve(model)
    if src.spec is None:
        raise ModelError(f"{src.source}: no caloquant generator metadata; tune other models with --onnx MODEL "
                         "--data DATA.npz --metric accuracy|mse|PATH.py:FUNC")
    if r is not None:
        built = apply_recipe(src, r)
        _save(built, out, src)
        write_text_atomic(out / "recipe.json", r.to_json())
        note = rec.replay_note(r)
        if note is not None and src.generator is not None:  # FP32 PyTorch reference at hand: judge it here
            log(note)
            check = open_generator(src.generator, precision=str(out / "model.xml"), streams=1).check
            log(f"physics re-checked: {check.describe() if check else 'fp32'}: pass")
        return QuantizeResult(r)
    t0 = time.perf_counter()
    ev = PhysicsEvaluator(src.spec, evaluation, tuning=src.tuning)
    setup_s = time.perf_counter() - t0
    failure: AccuracyNotReachedError | None = None
    try:
        result = tune(src.model, gan_calibration(src.spec, GAN_CALIBRATION), ev, criterion=criterion, batch=batch,
                      max_candidates=max_candidates, max_minutes=max_minutes, bf16_wrong=src.bf16_wrong, log=log)
    except AccuracyNotReachedError as e:
        failure, result = e, e.result
    context: dict[str, Any] = {"evaluation showers": evaluation.n_showers,
                               "reference-MC showers": evaluation.n_reference,
                               "reference-MC GFlash tuning": src.tuning,
                               "evaluator setup (MC + features) s": round(setup_s, 1),
                               "CPU cores": os.cpu_count()}
    pt = None
    if src.generator is not None:
        pt = torch_throughput(centred(src.generator.module), ev.inputs[:batch])
        context["PyTorch FP32 items/s"] = round(pt, 1)
        context["speed-up vs PyTorch FP32"] = f"{result.best.throughput / pt:.2f}x"
    mre = {c.kind + str(c.index): c.details.get("sampling_fraction_mre") for c in result.history}
    return _write(out, src, result, context, GAN_CALIBRATION, failure, _physics_figures(ev, result),
                  pytorch_fp32_throughput=pt, sampling_fraction_mre=mre)


def _write(out: Path, src: ResolvedModel, result: TuneResult, context: dict[str, Any],
           calibration_data: Mapping[str, Any], failure: AccuracyNotReachedError | None,
           figures: list[tuple[str, Any]], *, pytorch_fp32_throughput: float | None = None,
           sampling_fraction_mre: Mapping[str, float | None] | None = None) -> QuantizeResult:
    """Write the tuned model, its recipe (``recipe.rejected.json`` on failure), history and report; re-raise."""
    r = rec.make_recipe(layers=[lr.name for lr in result.layers], int8=result.best.int8,
                        calibration=Calibration(**result.best.calibration), calibration_data=calibration_data,
                        source_sha256=src.sha256, source=src.source, tuning=result.verdict(),
                        fallback=result.best.fallback)
    made = QuantizeResult(r, result, context, pytorch_fp32_throughput, sampling_fraction_mre)
    history = made.history()
    _save(result.model, out, src, accepted=failure is None)
    write_text_atomic(out / ("recipe.json" if failure is None else "recipe.rejected.json"), r.to_json())
    write_text_atomic(out / "history.json", json.dumps(history, indent=2, default=float))
    require("caloquant.plotting.tuning").write_tuning_report(history, out / "report.html", figures)
    if failure is not None:
        raise failure
    return made


def quantize_onnx(model: str | os.PathLike[str], data: str | os.PathLike[str], outdir: str | os.PathLike[str], *,
                  metric: str = "accuracy", higher_is_better: bool | None = None,
                  recipe: str | os.PathLike[str] | None = None, tolerance: float = 0.05, relative: bool = True,
                  max_candidates: int = 12, max_minutes: float = 10.0, batch: int = 128, overwrite: bool = False,
                  log: Any = print) -> QuantizeResult:
    """Tune (or replay ``recipe``) any ONNX/IR model on DATA.npz judged by ``metric``, writing OUTDIR (as
    ``quantize_generator`` does: locked, staged, published at the end)."""
    if recipe is None:
        check_options(batch, max_candidates, max_minutes)
    return _into(outdir, overwrite, lambda out: _quantize_onnx(
        model, data, out, metric=metric, higher_is_better=higher_is_better, recipe=recipe, tolerance=tolerance,
        relative=relative, max_candidates=max_candidates, max_minutes=max_minutes, batch=batch, log=log))


def _quantize_onnx(model: str | os.PathLike[str], data: str | os.PathLike[str], out: Path, *, metric: str,
                   higher_is_better: bool | None, recipe: str | os.PathLike[str] | None,
                   tolerance: float, relative: bool, max_candidates: int, max_minutes: float, batch: int,
                   log: Any) -> QuantizeResult:
    """``quantize_onnx`` into the staging folder ``out``."""
    if Path(model).suffix not in (".onnx", ".xml"):
        raise ModelError(f"{model}: --onnx takes an ONNX (.onnx) or OpenVINO IR (.xml) model")
    src = resolve(model)
    user = userdata.load_data(data)
    if recipe is not None:
        r = rec.read_recipe(recipe)
        given = r.calibration_data
        if given.get("kind") != "npz" or given.get("sha256") != user.sha256 or given.get("batch") is None:
            raise InputError(f"{user.path} is not the data file this recipe was tuned with (sha256 "
                             f"{str(given.get('sha256'))[:12]}...)")
        built = rec.build(src.model, r, userdata.calibration_batches(user, int(given["batch"])), src.sha256)
        out.mkdir(parents=True, exist_ok=True)
        _save(built, out, src)
        write_text_atomic(out / "recipe.json", r.to_json())
        return QuantizeResult(r)
    # data that do not fit the model is the more basic error, so the metric's own rule is checked after it
    ev = userdata.metric_evaluator(src.model, user, metric, higher_is_better, batch)
    if metric == "mse" and user.y is None and relative:
        raise InputError(f"--metric mse without a 'y' array in {user.path} scores the distance to the FP32 model's own "
                         "outputs, which is 0 for FP32, so a tolerance relative to it cannot apply: give --absolute "
                         "--tolerance T (the mean squared difference allowed), or 'y' targets")
    failure: AccuracyNotReachedError | None = None
    try:
        result = tune(src.model, userdata.calibration_batches(user, batch), ev,
                      criterion=Criterion(tolerance, relative, ev.higher_is_better), batch=batch,
                      max_candidates=max_candidates, max_minutes=max_minutes, log=log)
    except AccuracyNotReachedError as e:
        failure, result = e, e.result
    context = {"evaluation items": len(user.x), f"calibration items ('{user.calib_key}')": len(user.calib),
               "data": user.path, "CPU cores": os.cpu_count()}
    calibration_data = {"kind": "npz", "path": user.path, "sha256": user.sha256, "key": user.calib_key,
                        "batch": batch}
    return _write(out, src, result, context, calibration_data, failure, [])
