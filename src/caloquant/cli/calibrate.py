"""CLI for ``calibrate``: tune the GFlash engine to the Geant4 engine (or to given full-simulation samples)."""

from __future__ import annotations

from pathlib import Path

import typer

from caloquant.errors import InputError


def register(app: typer.Typer) -> None:
    app.command("calibrate")(calibrate_cmd)


def _energies(text: str | None) -> list[float] | None:
    """'10,50,100' -> [10.0, 50.0, 100.0] (finite, distinct, in the engine's range); None stays None."""
    from caloquant.calibrate.workflow import check_energies

    if text is None:
        return None
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise InputError(f"--energies {text!r} is not a comma-separated list of energies in GeV") from None
    return check_energies(values, f"--energies {text!r}")


def calibrate_cmd(
    output: Path = typer.Option(..., "-o", "--output", help="Tuning file to write (JSON); use it with "
                                "caloquant simulate --tuning FILE."),
    to: str = typer.Option("geant4", "--to", help="What to tune to: geant4."),
    reference: list[Path] = typer.Option([], "--reference", help="Fixed-energy, perpendicular full-simulation "
                                         "file, at least 50 showers (repeat per energy); its generator attribute "
                                         "must name Geant4, or be absent; default: simulate them with the Geant4 "
                                         "engine."),
    energies: str | None = typer.Option(None, "--energies", help="Beam energies (GeV) of the simulated "
                                        "reference samples [default: 10,50,100,200]."),
    n: int = typer.Option(1000, "--n", help="Geant4 showers per energy when simulating the references."),
    seed: int = typer.Option(7000, "--seed", help="Seed of the Geant4 references (seed + E per energy)."),
    workers: int | None = typer.Option(None, "--workers", help="Geant4 worker processes (default: one per core)."),
    keep_references: Path | None = typer.Option(None, "--keep-references", help="Folder to keep the simulated "
                                                "Geant4 references in (reused when present and holding --n showers "
                                                "at their energy)."),
    fit_showers: int = typer.Option(300, "--fit-showers", help="GFlash showers per energy at each fit step."),
    check_showers: int = typer.Option(1000, "--check-showers", help="GFlash showers per energy for the "
                                      "before/after table (an independent sample)."),
    steps: int = typer.Option(15, "--steps", help="Most least-squares steps."),
    table: Path | None = typer.Option(None, "--table", help="Also write the before/after table (markdown)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing outputs (else refuse)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars or table."),
) -> None:
    """Fit the GFlash parameters (visible fraction, fluctuations, longitudinal and radial shape) to Geant4."""
    from caloquant._atomic import check_outputs
    from caloquant.calibrate.workflow import calibrate, results_table

    if steps <= 0:
        raise InputError(f"--steps must be positive, got {steps}")
    cached = sorted(keep_references.glob("*.h5")) if keep_references is not None and keep_references.is_dir() else []
    check_outputs({"-o": output, "--table": table}, sources={"--reference": reference},
                  inputs={"--keep-references": cached})
    result = calibrate(output, target=to, references=reference, energies=_energies(energies), n=n, seed=seed,
                       workers=workers or 0, keep_references=keep_references, n_fit=fit_showers,
                       n_check=check_showers, max_steps=steps, table=table, overwrite=overwrite, progress=not quiet)
    if not quiet:
        typer.echo(results_table(result))
        typer.echo(f"chi2 {result.chi2_before:.0f} -> {result.chi2_after:.0f} after {result.evaluations} GFlash "
                   f"evaluations; wrote {output}")
