"""CLI for stages 1-2: ``simulate`` (reference Monte Carlo), ``convert`` (layouts) and ``info`` (file summary)."""

from __future__ import annotations

from pathlib import Path

import typer

from caloquant.cli import _sharded
from caloquant.errors import InputError


def register(app: typer.Typer) -> None:
    app.command("simulate")(simulate_cmd)
    app.command("convert")(convert_cmd)
    app.command("merge")(merge_cmd)
    app.command("info")(info_cmd)


def simulate_cmd(
    output: Path = typer.Option(..., "-o", "--output", help="Output HDF5 file (written atomically); with --cluster "
                                "a directory of shards."),
    n: int = typer.Option(..., "--n", help="Number of showers."),
    energy: str = typer.Option(..., "--energy", help="Primary electron energy in GeV: E or EMIN:EMAX (1-1000)."),
    spectrum: str = typer.Option("uniform", "--spectrum", help="Energy spectrum over a range: uniform or log."),
    angle: str = typer.Option(
        "90", "--angle", help="Incidence angle theta in degrees (90 = perpendicular): DEG or DMIN:DMAX."
    ),
    window: str = typer.Option("25x25x25", "--window", help="Readout window: 25x25x25 or 51x51x25."),
    seed: int = typer.Option(0, "--seed", help="Random seed; shower i depends only on (seed, i)."),
    fmt: str = typer.Option("3dgan", "--format", help="File layout: 3dgan or calochallenge."),
    chunk: int = typer.Option(256, "--chunk", help="Showers simulated and written per chunk (memory bound)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUTPUT if it exists (else refuse)."),
    cluster: str = _sharded.CLUSTER,
    workers: int | None = typer.Option(None, "--workers", help="Worker processes: of --cluster local, or on this "
                                       "machine (default: one per core; the file does not depend on it)."),
    shards: int = _sharded.SHARDS,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or summary."),
    engine: str = typer.Option(
        "gflash", "--engine", help="gflash (parameterised, fast) or geant4 (full simulation, needs "
        "caloquant\\[geant4])."
    ),
    tuning: str = typer.Option("none", "--tuning", help="GFlash tuning: none, geant4 (shipped, fitted to the Geant4 "
                               "engine) or a file written by caloquant calibrate."),
) -> None:
    """Simulate electron showers (GFlash-style reference MC or Geant4) and write them to HDF5."""
    from caloquant._atomic import check_outputs
    from caloquant.data.summary import print_summary
    from caloquant.simulate.run import simulate_to_file

    if chunk <= 0:
        raise InputError(f"--chunk must be positive, got {chunk}")
    check_outputs({"-o": output}, inputs={"--tuning": tuning}, folders=("-o",) if cluster is not None else ())
    if cluster is not None:
        from caloquant.cluster import SimulateJob

        job = SimulateJob(n, energy, spectrum=spectrum, angle=angle, window=window, seed=seed, layout=fmt, chunk=chunk,
                          engine=engine, tuning=tuning)
        _sharded.run(output, job, cluster, workers, shards, overwrite=overwrite, quiet=quiet)
        return
    _sharded.check_unsharded(None, shards)
    path = simulate_to_file(
        output, n, energy, spectrum=spectrum, angle=angle, window=window, seed=seed, layout=fmt,
        chunk_size=chunk, progress=not quiet, overwrite=overwrite, engine=engine, workers=workers or 0,
        tuning=tuning,
    )
    if not quiet:
        print_summary(path)


def convert_cmd(
    source: Path = typer.Argument(..., help="Input shower file (3DGAN or CaloChallenge layout)."),
    output: Path = typer.Option(..., "-o", "--output", help="Output HDF5 file."),
    fmt: str = typer.Option(..., "--format", help="Output layout: 3dgan or calochallenge."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUTPUT if it exists (else refuse)."),
) -> None:
    """Convert a shower file between the 3DGAN and CaloChallenge layouts, chunk by chunk."""
    from caloquant._atomic import check_outputs
    from caloquant.data import convert

    check_outputs({"-o": output}, sources={"SOURCE": source})
    n = convert(source, output, layout=fmt, overwrite=overwrite)
    typer.echo(f"wrote {n} showers to {output} ({fmt})")


def merge_cmd(
    source: Path = typer.Argument(..., help="Shard manifest or directory of shards of a --cluster run."),
    output: Path = typer.Option(..., "-o", "--output", help="Output HDF5 file (written atomically)."),
    fmt: str = typer.Option("3dgan", "--format", help="Output layout: 3dgan or calochallenge."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUTPUT if it exists (else refuse)."),
) -> None:
    """Merge the shards of a finished --cluster run into one HDF5 file, in shower index order."""
    from caloquant._atomic import check_outputs
    from caloquant.data import convert

    check_outputs({"-o": output}, sources={"SOURCE": source})
    n = convert(source, output, layout=fmt, overwrite=overwrite)
    typer.echo(f"wrote {n} showers to {output} ({fmt})")


def info_cmd(path: Path = typer.Argument(..., help="Shower file, shard manifest or directory of shards.")) -> None:
    """Print the layout, window, energy range and physics summary of a shower file or a set of shards."""
    from caloquant.data.summary import print_summary

    print_summary(path)
