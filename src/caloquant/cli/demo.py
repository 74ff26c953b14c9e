"""CLI: ``caloquant demo``, the whole chain in one command (what ``make demo`` runs)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import typer

from caloquant.evaluation import DEFAULT_EVALUATION


def register(app: typer.Typer) -> None:
    app.command("demo")(demo_cmd)


def demo_cmd(
    out: Path = typer.Option(None, "--out", help="Run directory (default runs/<timestamp>)."),
    model: str = typer.Option("ecal25", "--model", help="Shipped model name or checkpoint (.pt)."),
    n_reference: int = typer.Option(5000, "--n-reference", help="Reference MC showers."),
    n_validate: int = typer.Option(2000, "--n-validate", help="Generated showers per model for the validation."),
    tune_showers: int = typer.Option(DEFAULT_EVALUATION.n_showers, "--tune-showers", help="Showers per tuner "
                                                                                          "candidate evaluation."),
    tune_minutes: float = typer.Option(5.0, "--tune-minutes", help="Tuner time budget in minutes."),
    bench_seconds: float = typer.Option(2.0, "--bench-seconds", help="Timed seconds per bench configuration."),
    bench_showers: int = typer.Option(1024, "--bench-showers", help="Showers per bench row for the physics metric."),
    no_classifier: bool = typer.Option(False, "--no-classifier", help="Skip the classifier AUC in the validation."),
    seed: int = typer.Option(2026, "--seed", help="Seed of the reference MC and the validation showers."),
    tuning: str = typer.Option(None, "--tuning", help="GFlash tuning of every MC sample the model is compared "
                                                      "with: none or geant4 (default: the model card's, i.e. what "
                                                      "the model was trained on)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Run the end-to-end demo: simulate, tune, validate, bench, and write runs/<timestamp>/report.html."""
    from caloquant._atomic import check_outputs
    from caloquant.bench.compare import BenchSettings
    from caloquant.bench.demo import DemoConfig, run_demo

    check_outputs({"--out": out}, inputs={"--model": model}, folders=("--out",))

    cfg = DemoConfig(model=model, n_reference=n_reference, n_validate=n_validate,
                     tune=replace(DEFAULT_EVALUATION, n_showers=tune_showers), tune_minutes=tune_minutes,
                     classifier=not no_classifier, seed=seed, progress=not quiet,
                     bench=BenchSettings(seconds=bench_seconds, n_showers=bench_showers), tuning=tuning)
    if out is not None:
        cfg.out_dir = out
    run_demo(cfg)
