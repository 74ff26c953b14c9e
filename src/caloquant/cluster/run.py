"""Run a sharded job on Dask: plan or reload the manifest, redo missing or invalid shards, record each one.

The coordinator holds ``OUTDIR/manifest.json`` locked for the whole job. Each shard is one Dask task that
writes ``OUTDIR/shard-K.h5`` (atomically, on a filesystem the workers share), records its sha256 next to it
(``.shard-K.h5.sha256``) and returns it; the manifest is rewritten atomically after every finished shard, so an
interrupted job reruns only the rest. A shard finished but not yet in the manifest when the job stopped is
kept on rerun only if its bytes still have the sha256 its worker recorded and its attributes are this shard's.
Dask reschedules the tasks of a worker that dies (up to ``distributed.scheduler.allowed-failures`` times)
and reruns a task that raised up to ``RETRIES`` times; an error that persists fails the job, whose finished
shards stay recorded.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from caloquant._atomic import OutputLock, check_writable_dir, sha256_file, write_text_atomic
from caloquant._optional import require
from caloquant.data.shards import MANIFEST, Manifest, Shard, plan, shard_problem
from caloquant.errors import InputError
from caloquant.generate.resume import partial_path
from caloquant.machine import cpu_count
from caloquant.ui import progress_bar

#: Reruns Dask makes of a shard task that raised (a full or flaky shared disk) before the job fails.
RETRIES = 2
#: Most showers per shard when the shard count is left to ``default_shards``.
SHARD_SHOWERS = 50_000
#: Dask event topic on which workers report showers written per shard.
PROGRESS_TOPIC = "caloquant-shard-progress"


class ShardTask(Protocol):
    """A job that can write any index range of itself to a file (picklable: it travels to the workers)."""

    @property
    def kind(self) -> str:
        """What the job makes ("simulate" or "generate")."""

    @property
    def n(self) -> int:
        """Showers in the whole job."""

    @property
    def seed(self) -> int:
        """The seed of the whole run."""

    def identity(self) -> dict[str, Any]:
        """The request as shard-file attributes that every shard must carry (besides seed, n, first_index)."""

    def write(self, path: Path, start: int, stop: int, on_chunk: Callable[[int], None]) -> None:
        """Write showers [start, stop) to ``path``; ``on_chunk(k)`` after each chunk with k showers on disk."""


@dataclass(frozen=True)
class ShardedResult:
    """A finished sharded job: its manifest, the shards (re)done by this run and those kept from before."""

    manifest: Path
    done: int
    kept: int
    n: int


def default_shards(n: int, workers: int | None) -> int:
    """Four shards per local worker (load balance, cheap reruns), at most ``SHARD_SHOWERS`` showers each."""
    return max(1, min(n, max(4 * (workers or cpu_count()), -(-n // SHARD_SHOWERS))))


def check_cluster(cluster: str, workers: int | None) -> None:
    """Refuse a worker count that cannot apply: only a local cluster is sized here."""
    if workers is not None and workers < 1:
        raise InputError(f"--workers must be >= 1, got {workers}")
    if workers is not None and cluster != "local":
        raise InputError("--workers sizes a local cluster only; size a remote one where its workers start")
    if cluster != "local" and "://" not in cluster and ":" not in cluster:
        raise InputError(f"--cluster {cluster!r}: use local or a scheduler address such as tcp://host:8786")


#: Seconds a scheduler address has to accept a TCP connection before the job is refused.
REACH_TIMEOUT_S = 5.0


def _check_reachable(cluster: str) -> None:
    """Refuse at once a tcp:// (or host:port) scheduler address that accepts no connection (the Dask client
    would retry for its whole timeout first)."""
    address = cluster.split("://", 1)[1] if cluster.startswith("tcp://") else cluster
    if "://" in address:
        return  # another protocol (tls, ucx, inproc): the client reports it
    host, _, port = address.rpartition(":")
    try:
        number = int(port)
    except ValueError:
        raise InputError(f"--cluster {cluster!r}: the scheduler address needs a port, as in tcp://host:8786") from None
    try:
        socket.create_connection((host.strip("[]"), number), timeout=REACH_TIMEOUT_S).close()
    except OSError as e:
        raise InputError(f"--cluster {cluster}: cannot reach the Dask scheduler ({e.strerror or e})") from None


@contextlib.contextmanager
def connect(cluster: str, workers: int | None = None, *, daemon: bool = True) -> Iterator[Any]:
    """A Dask client: on a new LocalCluster of ``workers`` single-threaded processes, or on a scheduler address.

    ``daemon=False`` starts the local worker processes non-daemonic, so that a task may start processes of its own
    (the Geant4 engine's workers); it changes nothing on a remote cluster, whose workers are started elsewhere.
    """
    distributed = require("distributed")
    Client, LocalCluster = distributed.Client, distributed.LocalCluster
    check_cluster(cluster, workers)
    if cluster == "local":
        # the nannies read the setting whenever they (re)start a worker: it holds for the cluster's lifetime
        with require("dask").config.set({"distributed.worker.daemon": daemon}), \
                LocalCluster(n_workers=workers or cpu_count(), threads_per_worker=1, processes=True,
                             dashboard_address=None, silence_logs=logging.ERROR) as lc, Client(lc) as client:
            yield client
        return
    _check_reachable(cluster)
    try:
        client = Client(cluster, timeout="20s")
    except (OSError, TimeoutError, ValueError) as e:
        raise InputError(f"--cluster {cluster}: cannot reach the Dask scheduler ({e})") from None
    with client:
        yield client


def record_path(shard: Path) -> Path:
    """Where the worker that wrote ``shard`` records its sha256 until the manifest does."""
    return shard.with_name(f".{shard.name}.sha256")


def _recorded(path: Path, shard: Shard) -> str | None:
    """The sha256 of the finished shard: the manifest's, else the one its worker recorded next to it."""
    if shard.sha256 is not None:
        return shard.sha256
    try:
        return record_path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError):
        return None


def _forget(path: Path, *, partial: bool) -> None:
    """Remove a shard and its recorded sha256, and its partial file if ``partial`` (else a resume may use it)."""
    for p in (path, record_path(path), *([partial_path(path)] if partial else [])):
        p.unlink(missing_ok=True)


#: The command-line option behind each job attribute of a manifest (others are shown by their attribute name).
_OPTION = {"energy_gev": "--energy", "spectrum": "--spectrum", "angle_deg": "--angle", "layout": "--format",
           "window": "--window", "engine": "--engine", "gflash_tuning": "--tuning", "precision": "--precision",
           "batch": "--batch", "model_source": "--model"}


def job_differences(stored: Manifest, wanted: Manifest) -> str:
    """What differs between a stored job and the one asked for now, field by field ("seed 1 there, 2 now")."""
    def shown(v: Any) -> str:
        low, colon, high = str(v).partition(":")
        return "unset" if v is None else low if colon and low == high else str(v)

    pairs = [("kind", stored.kind, wanted.kind), ("--n", stored.n, wanted.n), ("--seed", stored.seed, wanted.seed),
             ("--shards", len(stored.shards), len(wanted.shards))]
    pairs += [(_OPTION.get(k, k), stored.job.get(k), wanted.job.get(k))
              for k in sorted(set(stored.job) | set(wanted.job))]
    diffs = [f"{name} {shown(a)} there, {shown(b)} now" for name, a, b in pairs if shown(a) != shown(b)]
    return "; ".join(diffs) or "the shards are cut differently"


def _load_or_plan(outdir: Path, wanted: Manifest, overwrite: bool) -> tuple[Manifest, list[Shard]]:
    """The job's manifest (the stored one when it is the same job) and the shards still to write."""
    path = outdir / MANIFEST
    stored = Manifest.load(path) if path.exists() else None
    if stored is not None and not stored.same_job(wanted):
        if not overwrite:
            raise InputError(f"{outdir} holds a different {stored.kind} job ({job_differences(stored, wanted)}); "
                             "use another directory or --overwrite")
        for s in stored.shards:
            _forget(outdir / s.file, partial=True)
        stored = None
    m = stored or wanted
    todo = []
    for s in m.shards:
        p = outdir / s.file
        digest = _recorded(p, s)
        if shard_problem(p, s, m.job, digest) is None:
            s.sha256 = digest
            continue
        s.sha256 = None
        _forget(p, partial=False)
        todo.append(s)
    return m, todo


def _daemonic() -> bool:
    """Run on a worker: whether its process is daemonic (and so may not start processes)."""
    return bool(multiprocessing.current_process().daemon)


def starts_processes(task: ShardTask) -> bool:
    """Whether the shards of ``task`` start processes of their own (the Geant4 engine)."""
    return bool(getattr(task, "starts_processes", False))


def check_workers(client: Any, task: ShardTask) -> None:
    """Refuse, before any shard is submitted, a job whose tasks start processes on daemonic Dask workers."""
    if not starts_processes(task):
        return
    daemonic = sorted(w for w, d in client.run(_daemonic).items() if d)
    if daemonic:
        raise InputError(f"--engine geant4 starts processes inside each Dask worker, and {len(daemonic)} worker(s) "
                         f"(e.g. {daemonic[0]}) are daemonic processes, which may not: start the workers with "
                         "DASK_DISTRIBUTED__WORKER__DAEMON=False, or use --cluster local")


def _drop_records(out: Path, m: Manifest) -> None:
    """Remove the workers' sha256 records of the shards that the saved manifest now records."""
    for s in m.shards:
        if s.sha256 is not None:
            record_path(out / s.file).unlink(missing_ok=True)


def _write_shard(task: ShardTask, path: str, index: int, start: int, stop: int, topic: str) -> str:
    """Dask task: write one shard, reporting progress as events, and return its sha256."""
    worker = require("distributed").get_worker()
    task.write(Path(path), start, stop, lambda k: worker.log_event(topic, (index, k)))
    digest = sha256_file(path)
    write_text_atomic(record_path(Path(path)), digest + "\n")
    return digest


class _Progress:
    """Showers on disk per shard, from worker events and finished shards; advances the bar by the growth."""

    def __init__(self, advance: Callable[[int], None]) -> None:
        self.advance = advance
        self.done: dict[int, int] = {}
        self.lock = threading.Lock()

    def report(self, index: int, k: int) -> None:
        with self.lock:
            grow = k - self.done.get(index, 0)
            if grow > 0:
                self.done[index] = k
                self.advance(grow)

    def event(self, event: Any) -> None:
        """Handler of the worker events: (timestamp, (shard index, showers written))."""
        index, k = event[1]
        self.report(int(index), int(k))


def run_sharded(outdir: str | os.PathLike[str], task: ShardTask, shards: int, *, cluster: str | Any = "local",
                workers: int | None = None, overwrite: bool = False, progress: bool = False,
                on_shard: Callable[[Shard], None] | None = None) -> ShardedResult:
    """Write ``task`` as ``shards`` shard files plus a manifest into ``outdir`` on a Dask cluster.

    ``cluster`` is ``local``, a scheduler address, or a ``distributed.Client`` to use as it is. Shards that
    are already finished and intact are kept; ``on_shard`` is called in the coordinator after each new one.
    """
    out = check_writable_dir(outdir)
    if isinstance(cluster, str):
        check_cluster(cluster, workers)
    wanted = plan(task.kind, task.n, task.seed, task.identity(), shards)
    created = not out.exists()
    out.mkdir(exist_ok=True)
    try:
        return _run_locked(out, task, wanted, cluster, workers, overwrite, progress, on_shard)
    except BaseException:
        if created:  # a new folder that got nothing (cluster unreachable, refused): leave no trace of the run
            with contextlib.suppress(OSError):
                out.rmdir()
        raise


def _run_locked(out: Path, task: ShardTask, wanted: Manifest, cluster: str | Any, workers: int | None,
                overwrite: bool, progress: bool, on_shard: Callable[[Shard], None] | None) -> ShardedResult:
    """``run_sharded`` once the output folder exists: plan or load, then run the shards still to write."""
    manifest_file = out / MANIFEST
    with OutputLock(manifest_file):
        m, todo = _load_or_plan(out, wanted, overwrite)
        # a new job's manifest is written once the cluster is reached: a job that never started leaves none
        # (an overwritten job's manifest goes with its shards), so the next run is free to choose other options
        deferred = m is wanted and bool(todo)
        if deferred:
            manifest_file.unlink(missing_ok=True)
        else:
            m.save(manifest_file)
            _drop_records(out, m)
        if todo:
            with progress_bar(task.n, task.kind, enabled=progress) as advance:
                bar = _Progress(advance)
                for s in m.shards:
                    if s.sha256 is not None:
                        bar.report(s.index, s.n)
                client_cm = (connect(cluster, workers, daemon=not starts_processes(task)) if isinstance(cluster, str)
                             else contextlib.nullcontext(cluster))
                with client_cm as client:
                    check_workers(client, task)
                    if deferred:
                        m.save(manifest_file)
                        _drop_records(out, m)
                    _run(client, task, out, m, todo, bar, on_shard)
        return ShardedResult(manifest_file, len(todo), len(m.shards) - len(todo), m.n)


def _run(client: Any, task: ShardTask, out: Path, m: Manifest, todo: list[Shard], bar: _Progress,
         on_shard: Callable[[Shard], None] | None) -> None:
    """Submit the shards still to write, record each finished one in the manifest as it completes."""
    as_completed = require("distributed").as_completed
    topic = f"{PROGRESS_TOPIC}-{uuid.uuid4().hex}"
    client.subscribe_topic(topic, bar.event)
    futures = {client.submit(_write_shard, task, str(out / s.file), s.index, s.start, s.stop, topic,
                             key=f"{task.kind}-shard-{s.index}-{uuid.uuid4().hex}", retries=RETRIES, pure=False): s
               for s in todo}
    try:
        for fut in as_completed(futures):
            s = futures[fut]
            s.sha256 = fut.result()
            m.save(out / MANIFEST)
            record_path(out / s.file).unlink(missing_ok=True)
            bar.report(s.index, s.n)
            if on_shard is not None:
                on_shard(s)
    finally:
        client.unsubscribe_topic(topic)
        client.cancel(list(futures))
