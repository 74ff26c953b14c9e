"""CLI for stage 6: ``generate`` (multi-stream shower generation with OpenVINO, PyTorch or ONNX Runtime)."""

from __future__ import annotations

from pathlib import Path

import typer

from caloquant.cli import _sharded
from caloquant.choices import EngineName
from caloquant.errors import InputError


def register(app: typer.Typer) -> None:
    app.command("generate")(generate_cmd)


def generate_cmd(
    output: Path = typer.Option(..., "-o", "--output", help="Output HDF5 file (OUT.partial until complete); with "
                                "--cluster a directory of shards."),
    model: str = typer.Option(..., "--model", help="Shipped model name (e.g. ecal25) or checkpoint .pt path."),
    n: int = typer.Option(..., "--n", help="Number of showers."),
    energy: str = typer.Option(..., "--energy", help="Primary electron energy in GeV: E or EMIN:EMAX."),
    spectrum: str = typer.Option("uniform", "--spectrum", help="Energy spectrum over a range: uniform or log."),
    angle: str = typer.Option("90", "--angle", help="Incidence angle in degrees: DEG or DMIN:DMAX (angle51)."),
    precision: str = typer.Option(
        "fp32", "--precision", help="fp32, bf16 (OpenVINO hint), int8 (shipped tuner recipe) or a tuned "
        "model.xml / QDQ .onnx path."),
    engine: str = typer.Option(str(EngineName.OPENVINO), "--engine", help=", ".join(EngineName.words()) + "."),
    streams: str = typer.Option("auto", "--streams", help="Parallel inference streams: auto or K."),
    batch: str = typer.Option("auto", "--batch", help="Showers per inference batch: auto or B."),
    seed: int = typer.Option(0, "--seed", help="Seed; shower i depends only on (seed, i), not on streams."),
    window: str = typer.Option(None, "--window", help="Expected window (checked against the model)."),
    fmt: str = typer.Option("3dgan", "--format", help="File layout: 3dgan or calochallenge."),
    chunk: int = typer.Option(256, "--chunk", help="Showers per written chunk (memory bound, resume step)."),
    resume: bool = typer.Option(False, "--resume", help="Continue an interrupted run from OUT.partial."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUTPUT if it exists (else refuse)."),
    allow_extrapolation: bool = typer.Option(
        False, "--allow-extrapolation", help="Generate outside the model's trained energy/angle range."),
    fallback_fp32: bool = typer.Option(
        False, "--fallback-fp32", help="If the reduced precision fails its FP32 physics check on this CPU, log "
        "it and generate in fp32 instead of stopping."),
    cluster: str = _sharded.CLUSTER,
    workers: int = _sharded.WORKERS,
    shards: int = _sharded.SHARDS,
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or summary."),
) -> None:
    """Generate showers with a trained generator and write them to HDF5, as `simulate` does with the MC."""
    from caloquant._atomic import check_outputs
    from caloquant.generate import generate_to_file
    from caloquant.runtime.generator import resolve_batch
    from caloquant.simulate.engine import check_seed
    from caloquant.quantize import open_deployed

    engine = EngineName.parse(engine, "engine")
    check_seed(seed)
    resolve_batch(batch, engine)
    check_outputs({"-o": output}, inputs={"--model": model, "--precision": precision},
                  folders=("-o",) if cluster is not None else ())
    if cluster is not None:
        from caloquant.cluster import GenerateJob
        from caloquant.machine import cpu_count

        if resume:
            raise InputError("--resume is for a single output file; a --cluster run always continues where it "
                             "stopped: rerun it as it was")
        if chunk <= 0:
            raise InputError(f"--chunk must be positive, got {chunk}")
        if streams == "auto" and cluster == "local":  # local workers share this machine's cores
            streams = str(max(1, cpu_count() // (workers or cpu_count())))
        job = GenerateJob(n, model, energy, spectrum=spectrum, angle=angle, precision=precision, engine=engine,
                          streams=streams, batch=batch, seed=seed, window=window, layout=fmt, chunk=chunk,
                          allow_extrapolation=allow_extrapolation, fallback_fp32=fallback_fp32)
        _sharded.run(output, job, cluster, workers, shards, overwrite=overwrite, quiet=quiet)
        return
    _sharded.check_unsharded(workers, shards)

    gen = open_deployed(model, engine=engine, precision=precision, batch=batch, streams=streams,
                         fallback_fp32=fallback_fp32)
    result = generate_to_file(
        output, gen, n, energy, spectrum=spectrum, angle=angle, seed=seed, window=window, layout=fmt,
        chunk_size=chunk, resume=resume, overwrite=overwrite, allow_extrapolation=allow_extrapolation,
        progress=not quiet,
    )
    if not quiet:
        e = gen.engine
        resumed = f", resumed at shower {result.resumed_from}" if result.resumed_from else ""
        typer.echo(f"wrote {result.n} showers to {result.path} ({e.name} {e.precision}, batch {e.batch}, "
                   f"{e.streams} streams, {result.showers_per_s:,.0f} showers/s{resumed})", err=True)

