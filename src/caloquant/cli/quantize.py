"""CLI for stage 5: ``quantize`` (physics-judged mixed INT8/FP32 tuning, or replay of a recipe)."""

from __future__ import annotations

from pathlib import Path

import typer

from caloquant.errors import InputError


def register(app: typer.Typer) -> None:
    app.command("quantize")(quantize_cmd)


def quantize_cmd(
    model: str = typer.Option(..., "--model", help="Shipped model name, checkpoint (.pt), or ONNX/IR exported by "
                                                   "caloquant."),
    output: Path = typer.Option(..., "-o", "--output", help="Output folder: model.xml/.bin, recipe.json, "
                                                           "history.json, report.html."),
    recipe: Path = typer.Option(None, "--recipe", help="Replay this recipe without searching."),
    tolerance: float = typer.Option(0.05, "--tolerance", help="Tolerated degradation of the 3DGAN moment metric."),
    relative: bool = typer.Option(True, "--relative/--absolute", help="Tolerance relative to the FP32 value "
                                                                      "(default) or absolute."),
    max_candidates: int = typer.Option(12, "--max-candidates", help="Evaluated candidates at most (baselines "
                                                                    "included)."),
    max_minutes: float = typer.Option(10.0, "--max-minutes", help="Tuning time budget in minutes."),
    batch: int = typer.Option(128, "--batch", help="Batch size of the throughput objective."),
    showers: int = typer.Option(2048, "--showers", help="Generated showers per candidate evaluation."),
    reference: int = typer.Option(3000, "--reference", help="Reference-MC showers the metric compares against."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace the outputs of an earlier quantize in the "
                                                              "folder (else refuse)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No per-candidate log."),
) -> None:
    """Tune a generator to the fastest INT8/FP32 mix whose physics passes (95% paired-bootstrap bound)."""
    from caloquant.quantize.search import Criterion
    from caloquant.quantize.workflow import quantize_generator

    if showers < 16 or reference < 16:
        raise InputError("--showers and --reference must be at least 16")
    summary = quantize_generator(model, output, recipe=recipe, criterion=Criterion(tolerance, relative, False),
                                 max_candidates=max_candidates, max_minutes=max_minutes, batch=batch,
                                 n_showers=showers, n_reference=reference, overwrite=overwrite,
                                 log=(lambda _: None) if quiet else print)
    if recipe is not None:
        typer.echo(f"replayed {recipe} into {output}/model.xml")
        return
    best = summary["candidates"][summary["best"]]
    extra = (f", {summary['speedup_vs_pytorch_fp32']:.2f}x PyTorch FP32"
             if "speedup_vs_pytorch_fp32" in summary else "")
    typer.echo(f"accepted candidate {best['index']}: {len(best['int8'])}/{len(summary['layers'])} layers INT8, "
               f"{summary['metric']} degradation {best['degradation']:.4g} (95% UB {best['upper95']:.4g}, allowed "
               f"{summary['allowed']:.4g}, noise floor {summary['noise_floor']:.4g}); "
               f"{summary['speedup_vs_fp32']:.2f}x OpenVINO FP32{extra}; {len(summary['candidates'])} candidates "
               f"in {summary['minutes']:.1f} min -> {output}")
