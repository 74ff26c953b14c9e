"""CLI: ``caloquant bench``, every deployment of a generator and the reference MC in one table."""

from __future__ import annotations

from pathlib import Path

import typer

from caloquant.evaluation import DEFAULT_EVALUATION


def register(app: typer.Typer) -> None:
    app.command("bench")(bench_cmd)


def bench_cmd(
    model: str = typer.Option("ecal25", "--model", help="Shipped model name or checkpoint (.pt)."),
    tuned: Path = typer.Option(None, "--tuned", help="Tuned IR (caloquant quantize OUTDIR/model.xml); default: the "
                                                     "recipe shipped with the model."),
    full_int8: Path = typer.Option(None, "--full-int8", help="Full-INT8 IR of the same weights; default: built "
                                                             "here (all layers, min/max ranges)."),
    nncf: Path = typer.Option(None, "--nncf", help="NNCF accuracy-control IR of the same weights; default: built "
                                                   "here with the tuner's data, metric and 5% tolerance."),
    json_out: Path = typer.Option(None, "--json", help="Write the table as JSON (atomically)."),
    markdown: list[Path] = typer.Option(None, "--markdown", help="Regenerate the marked block of this Markdown "
                                                                 "file (repeatable: docs/benchmarks.md, README.md)."),
    rows: str = typer.Option("all", "--rows", help="Rows to measure: all, or a comma-separated subset of "
                                                   "pytorch-fp32, openvino-fp32, openvino-bf16, full-int8, tuned, "
                                                   "nncf-ac, mc, geant4."),
    seconds: float = typer.Option(3.0, "--seconds", help="Timed seconds per configuration."),
    showers: int = typer.Option(DEFAULT_EVALUATION.n_showers, "--showers", help="Generated showers per row for the "
                                                                                "physics metric."),
    reference: int = typer.Option(DEFAULT_EVALUATION.n_reference, "--reference", help="Reference-MC showers the "
                                                                                      "metric compares against."),
    tuning: str = typer.Option(None, "--tuning", help="GFlash tuning of the reference MC: none or geant4 "
                                                      "(default: the model card's, i.e. what the model was trained "
                                                      "on)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress messages."),
) -> None:
    """Speed, memory, size and physics of PyTorch FP32, OpenVINO FP32/BF16, INT8 variants and the MC, side by side."""
    from rich.console import Console

    from caloquant._atomic import check_outputs, check_writable, write_text_atomic
    from caloquant.bench.compare import ROWS, BenchSettings, run_bench
    from caloquant.bench.tables import check_block_file, rich_table, update_markdown
    from caloquant.ui import console

    check_outputs({"--json": json_out, "--markdown": markdown},
                  inputs={"--model": model, "--tuned": tuned, "--full-int8": full_int8, "--nncf": nncf})
    for out in (json_out, *(markdown or [])):
        if out is not None:
            check_writable(out)
    for md in markdown or []:
        check_block_file(md)  # a binary file or broken markers: refused now, not after the whole benchmark
    chosen = tuple(ROWS) if rows == "all" else tuple(r.strip() for r in rows.split(",") if r.strip())
    settings = BenchSettings(seconds=seconds, n_showers=showers, n_reference=reference, rows=chosen)
    given = {k: v for k, v in (("full-int8", full_int8), ("tuned", tuned), ("nncf-ac", nncf)) if v is not None}
    result = run_bench(model, given=given, settings=settings, tuning=tuning,
                       say=(lambda _: None) if quiet else (lambda msg: console.print(f"[bold]bench[/]: {msg}")))
    Console(width=max(160, Console().width)).print(rich_table(result))
    if json_out is not None:
        write_text_atomic(json_out, result.to_json())
    for md in markdown or []:
        update_markdown(md, result)
