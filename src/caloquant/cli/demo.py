"""CLI: ``caloquant demo``, the whole chain in one command (what ``make demo`` runs)."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    app.command("demo")(demo_cmd)


def demo_cmd(
    out: Path = typer.Option(None, "--out", help="Run directory (default runs/<timestamp>)."),
    n_reference: int = typer.Option(5000, "--n-reference", help="Reference MC showers."),
    seed: int = typer.Option(2026, "--seed", help="Seed of every random stage."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Run the end-to-end demo: simulate, (generate, quantize, validate, bench as they exist) into one folder."""
    from caloquant.bench.demo import DemoConfig, run_demo

    cfg = DemoConfig(n_reference=n_reference, seed=seed, progress=not quiet)
    if out is not None:
        cfg.out_dir = out
    run_demo(cfg)
