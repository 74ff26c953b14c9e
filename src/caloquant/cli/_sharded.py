"""Options shared by ``simulate`` and ``generate`` for sharded runs on a Dask cluster."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from caloquant.errors import InputError

if TYPE_CHECKING:
    from caloquant.cluster.run import ShardTask

CLUSTER = typer.Option(None, "--cluster", help="Run as shards on Dask: local (a LocalCluster here) or a scheduler "
                       "address (tcp://host:8786); -o is then a directory of shards plus manifest.json.")
WORKERS = typer.Option(None, "--workers", help="Worker processes of --cluster local (default: one per core).")
SHARDS = typer.Option(None, "--shards", help="Shards of a --cluster run (default: 4 per local worker, at most "
                      "50,000 showers each); a rerun redoes only missing or invalid shards.")


def check_unsharded(workers: int | None, shards: int | None) -> None:
    """Refuse the sharding options on a single-file run."""
    if workers is not None or shards is not None:
        raise InputError("--workers and --shards need --cluster (local or a scheduler address)")


def run(output: Path, job: ShardTask, cluster: str, workers: int | None, shards: int | None, *, overwrite: bool,
        quiet: bool) -> None:
    """Run ``job`` sharded into ``output`` and print a one-line summary."""
    from caloquant.cluster import run_sharded
    from caloquant.cluster.run import check_cluster, default_shards

    check_cluster(cluster, workers)
    count = default_shards(job.n, workers) if shards is None else shards
    result = run_sharded(output, job, count, cluster=cluster, workers=workers, overwrite=overwrite, progress=not quiet)
    if not quiet:
        kept = f", {result.kept} kept from an earlier run" if result.kept else ""
        typer.echo(f"wrote {result.n} showers as {result.done + result.kept} shards ({result.done} new{kept}); "
                   f"manifest {result.manifest}", err=True)
