"""CLI for stage 7: ``validate`` (physics metrics of candidate samples against a reference, JSON + HTML)."""

from __future__ import annotations

from pathlib import Path

import typer

from caloquant.errors import InputError


#: Most bootstrap replicates (the replicate indices are held in memory: n-boot x showers).
MAX_N_BOOT = 100_000


def register(app: typer.Typer) -> None:
    app.command("validate")(validate_cmd)


def _parse_bins(text: str) -> str | int | list[float]:
    from caloquant.validate.bins import EnergyBins

    text = text.strip().lower()
    if text in ("auto", "3dgan", "quantile"):
        return text
    try:
        if "," in text:
            energies = [float(v) for v in text.split(",") if v.strip()]
        else:
            return int(text)
    except ValueError:
        raise InputError(f"--bins {text!r}: use auto, 3dgan, quantile, a number of quantile bins, "
                         "or comma-separated energies in GeV") from None
    try:
        EnergyBins.gan3d(energies)
    except InputError as e:
        raise InputError(f"--bins {text!r}: {e}") from None
    return energies


def validate_cmd(
    reference: Path = typer.Argument(..., help="Reference shower file (either layout)."),
    candidates: list[Path] = typer.Argument(..., help="One or more candidate shower files."),
    json_out: Path = typer.Option(None, "--json", help="Write the metrics as JSON (atomically)."),
    report: Path = typer.Option(None, "--report", help="Write a self-contained HTML report with plots."),
    no_classifier: bool = typer.Option(False, "--no-classifier", help="Skip the classifier AUC (the slow metric)."),
    max_showers: int = typer.Option(None, "--max-showers", help="Use at most N showers of each file."),
    threshold: float = typer.Option(0.0, "--threshold", help="GeV: cells above it count as hit in both samples "
                                    "(occupancy, cell spectrum); set the reference's readout threshold (GFlash and "
                                    "Geant4 MC here: 9.69e-5) so a candidate's cells too faint for the readout do "
                                    "not count (0: every non-zero cell)."),
    bins: str = typer.Option("auto", "--bins", help="Energy bins: auto, 3dgan, quantile, N (quantile bins) or "
                             "E1,E2,... (GeV, +-5 GeV)."),
    n_boot: int = typer.Option(100, "--n-boot", help="Bootstrap replicates for the errors."),
    fpd_batches: int = typer.Option(20, "--fpd-batches", help="FPD draws per sample size (JetNet: 20)."),
    seed: int = typer.Option(0, "--seed", help="Seed of bootstrap, halves and classifier."),
    legacy: bool = typer.Option(False, "--legacy", help="Report the doubled 3DGAN moment metric of the original code."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress messages."),
) -> None:
    """Compare candidate shower files to a reference: 3DGAN metrics, separation power, FPD/KPD, classifier AUC."""
    from rich.console import Console
    from rich.table import Table

    from caloquant._atomic import check_outputs, check_writable, write_text_atomic
    from caloquant.ui import console
    from caloquant.validate import MetricOptions, validate

    from caloquant.simulate.engine import check_seed

    if not 2 <= n_boot <= MAX_N_BOOT:
        raise InputError(f"--n-boot must be between 2 and {MAX_N_BOOT:,}, got {n_boot}")
    check_seed(seed)
    if not 0 <= threshold < 1:
        raise InputError(f"--threshold must be in [0, 1) GeV, got {threshold}")
    if fpd_batches < 1:
        raise InputError(f"--fpd-batches must be >= 1, got {fpd_batches}")
    check_outputs({"--json": json_out, "--report": report}, sources={"REFERENCE": reference, "CANDIDATE": candidates})
    for out in (json_out, report):
        if out is not None:
            check_writable(out)
    names = [str(p) for p in candidates]
    if len(set(names)) != len(names):
        raise InputError("the same candidate file is given twice")
    result = validate(
        reference, candidates, bins=_parse_bins(bins), max_showers=max_showers, names=names, threshold=threshold,
        options=MetricOptions(n_boot=n_boot, seed=seed, classifier=not no_classifier, legacy=legacy,
                              fpd_batches=fpd_batches),
        log=None if quiet else (lambda msg: console.print(f"[dim]validate: {msg}[/dim]")),
    )
    out_console = Console()
    for name, cand in result.candidates.items():
        table = Table(title=f"{name} vs {reference} ({len(cand.features):,} / {len(result.reference):,} showers)")
        for col in ("metric", "value +- error", "noise floor", "verdict"):
            table.add_column(col, justify="left" if col == "metric" else "right")
        for metric, m in cand.metrics.items():
            verdict = {"pass": "[green]pass[/green]", "fail": "[bold red]FAIL[/bold red]"}.get(
                m.verdict, f"[yellow]{m.verdict}[/yellow]")
            table.add_row(metric, f"{m.value:.4g} +- {m.error:.2g}", f"{m.noise_floor:.3g}", verdict)
        out_console.print(table)
        empty = sorted({b for m in cand.metrics.values() for b in m.empty_bins})
        if empty:
            out_console.print(f"not enough data: energy bins {', '.join(empty)} hold too few showers to be scored; "
                              "the metrics that need them have no verdict")
        unscored = sorted({b for m in cand.metrics.values() for b in m.unscored_bins})
        if unscored:
            out_console.print(f"not scored: automatic energy bins {', '.join(unscored)} hold too few showers; "
                              "the binned metrics average the other bins")
    if json_out is not None:
        write_text_atomic(json_out, result.to_json())
    if report is not None:
        from caloquant.plotting import write_report

        write_report(result, report)
