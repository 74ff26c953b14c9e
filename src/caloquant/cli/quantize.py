"""CLI for stage 5: ``quantize`` (physics-judged mixed INT8/FP32 tuning of a generator, metric-judged tuning of
any ONNX/IR model on DATA.npz, or replay of a recipe)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import typer

from caloquant.errors import InputError
from caloquant.evaluation import DEFAULT_EVALUATION


def register(app: typer.Typer) -> None:
    app.command("quantize")(quantize_cmd)


def quantize_cmd(
    model: str = typer.Option(None, "--model", help="Shipped model name, checkpoint (.pt), or ONNX/IR exported by "
                                                    "caloquant."),
    onnx: Path = typer.Option(None, "--onnx", help="Any ONNX/IR model, judged by --metric on --data instead of "
                                                   "physics."),
    data: Path = typer.Option(None, "--data", help="With --onnx: .npz with 'x' (evaluation inputs), optional 'y' "
                                                   "(labels/targets) and 'calib' (calibration inputs)."),
    metric: str = typer.Option(None, "--metric", help="With --onnx: accuracy, mse, or PATH.py:FUNC "
                                                            "(FUNC(outputs, y) -> one score per item)."),
    higher: bool = typer.Option(None, "--higher-is-better/--lower-is-better", help="With --onnx: metric direction "
                                "(default: accuracy and PATH.py:FUNC higher, mse lower)."),
    output: Path = typer.Option(..., "-o", "--output", help="Output folder: model.xml/.bin, recipe.json, "
                                                           "history.json, report.html."),
    recipe: Path = typer.Option(None, "--recipe", help="Replay this recipe without searching."),
    tolerance: float = typer.Option(0.05, "--tolerance", help="Tolerated degradation of the metric (3DGAN moments "
                                                              "for generators)."),
    relative: bool = typer.Option(True, "--relative/--absolute", help="Tolerance relative to the FP32 value "
                                                                      "(default) or absolute."),
    max_candidates: int = typer.Option(12, "--max-candidates", help="Evaluated candidates at most (baselines "
                                                                    "included)."),
    max_minutes: float = typer.Option(10.0, "--max-minutes", help="Tuning time budget in minutes."),
    batch: int = typer.Option(128, "--batch", help="Batch size of the throughput objective."),
    showers: int = typer.Option(DEFAULT_EVALUATION.n_showers, "--showers", help="Generated showers per candidate "
                                                                                "evaluation."),
    reference: int = typer.Option(DEFAULT_EVALUATION.n_reference, "--reference", help="Reference-MC showers the "
                                                                                      "metric compares against."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the outputs of an earlier quantize in the "
                                                              "folder (else refuse)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No per-candidate log."),
) -> None:
    """Tune a model to the fastest INT8/FP32 mix whose metric passes (95% paired-bootstrap bound)."""
    from caloquant._atomic import check_outputs
    from caloquant.quantize.search import Criterion
    from caloquant.quantize.workflow import quantize_generator, quantize_onnx

    log = (lambda _: None) if quiet else print
    if model is not None and onnx is None:
        given = [name for name, value in (("--data", data), ("--metric", metric), ("--higher-is-better", higher))
                 if value is not None]
        if given:
            raise InputError(f"{', '.join(given)}: for --onnx only; a --model is judged by physics "
                             "(--tolerance, --showers, --reference)")
    metric = "accuracy" if metric is None else metric
    check_outputs({"-o": output}, inputs={"--model": model, "--onnx": onnx, "--data": data, "--recipe": recipe,
                                          "--metric": metric.rpartition(":")[0] if ":" in metric else None},
                  folders=("-o",))
    if (model is None) == (onnx is None):
        raise InputError("give either --model (a caloquant generator) or --onnx MODEL --data DATA.npz")
    if onnx is not None:
        if data is None:
            raise InputError("--onnx needs --data DATA.npz")
        made = quantize_onnx(onnx, data, output, metric=metric, higher_is_better=higher, recipe=recipe,
                                tolerance=tolerance, relative=relative, max_candidates=max_candidates,
                                max_minutes=max_minutes, batch=batch, overwrite=overwrite, log=log)
    else:
        evaluation = replace(DEFAULT_EVALUATION, n_showers=showers, n_reference=reference).check()
        made = quantize_generator(model, output, recipe=recipe, criterion=Criterion(tolerance, relative, False),
                                  max_candidates=max_candidates, max_minutes=max_minutes, batch=batch,
                                  evaluation=evaluation, overwrite=overwrite, log=log)
    t = made.tuning
    if t is None:
        typer.echo(f"replayed {recipe} into {output}/model.xml")
        return
    best = t.best
    vs_torch = made.speedup_vs_pytorch_fp32
    extra = f", {vs_torch:.2f}x PyTorch FP32" if vs_torch is not None else ""
    typer.echo(f"accepted candidate {best.index}: {len(best.int8)}/{len(t.layers)} layers INT8, "
               f"{t.metric_name} degradation {best.degradation:.4g} (95% UB {best.upper95:.4g}, allowed "
               f"{t.allowed:.4g}, noise floor {t.noise_floor:.4g}); "
               f"{t.speedup_vs_fp32:.2f}x OpenVINO FP32{extra}; {len(t.history)} candidates "
               f"in {t.minutes:.1f} min -> {output}")
