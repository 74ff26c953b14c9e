"""The ``geant4`` engine: full Geant4 simulation of the same showers, run in worker processes.

Each worker is a spawned process with its own serial Geant4 run manager (``g4app``); it ends with
``os._exit`` (geant4-pybind segfaults at interpreter exit), and a crash in it is reported as a one-line error
without taking the caller down. Shower i depends only on (seed, i): its primary energy, angle and entry point
come from the same per-shower numpy stream as the GFlash engine (so both engines shoot the same primaries for
the same seed), and the Geant4 engine is reseeded from (seed, i) at the start of its event.
"""

from __future__ import annotations

import importlib.util
import multiprocessing as mp
import os
import queue
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from caloquant._optional import require
from caloquant.data.formats import ShowerSet
from caloquant.errors import InputError, SimulationError
from caloquant.geometry import CLIC_ECAL, Calorimeter, Window
from caloquant.simulate import g4data
from caloquant.simulate.engine import AngleRange, ShowerSimulator, Spectrum
from caloquant.simulate.gflash import Medium, mean_depth

#: Geant4 settings recorded in every file the engine writes.
PHYSICS_LIST = "G4EmStandardPhysics_option1"
#: Production cut (mm), Geant4's default range cut for e-, e+ and photons in every material.
PRODUCTION_CUT_MM = 0.7
#: Start of the primary, in front of the first absorber (mm).
GUN_Z_MM = -1.0
#: Most showers one worker task simulates (smaller tasks balance the workers; results do not depend on it).
TASK_SIZE = 16
#: Seconds between checks that the workers are alive while waiting for results.
POLL_S = 1.0


def available() -> bool:
    """True when geant4-pybind is installed."""
    return importlib.util.find_spec("geant4_pybind") is not None


def check_available() -> None:
    """Raise a one-line InputError when geant4-pybind is missing."""
    if not available():
        raise InputError("--engine geant4 needs geant4-pybind: pip install 'caloquant[geant4]'")


def elements(cal: Calorimeter) -> list[int]:
    """Atomic numbers Geant4 loads data for: the calorimeter's materials and the vacuum (hydrogen)."""
    return sorted({1} | {int(m.Z) for s in cal.structures for m in (s.absorber, s.sensor)})


def primaries(cal: Calorimeter, spectrum: Spectrum, angles: AngleRange, seed: int, start: int, n: int
              ) -> list[tuple[list[int], float, float, float, float]]:
    """(engine seeds, energy GeV, theta rad, x mm, y mm at the gun) of showers start .. start + n - 1.

    Energy and angle use the first two uniforms of the shower's stream, as in the GFlash engine; the axis
    passes through the window centre, jittered uniformly within one cell, at the mean shower depth.
    """
    out = []
    front = Medium.of(cal.front)
    for i in range(start, start + n):
        ss = np.random.SeedSequence([seed, i])
        rng = np.random.Generator(np.random.PCG64(ss))
        u = rng.random(4)
        energy, theta = spectrum.sample(float(u[0])), angles.sample(float(u[1]))
        jx, jy = (u[2:] - 0.5) * cal.cell_mm
        centre_x0 = float(mean_depth(np.array([energy]), front)[0]) * np.sin(theta)
        centre_mm = float(np.interp(centre_x0, cal.layer_edges_x0, cal.layer_edges_mm))
        x = jx + (GUN_Z_MM - centre_mm) * np.cos(theta) / np.sin(theta)
        seeds = [int(s) % 2_147_483_646 + 1 for s in np.random.SeedSequence([seed, i, 1]).generate_state(4)]
        out.append((seeds, energy, theta, float(x), float(jy)))
    return out


def _enter_child(env: dict[str, str], log: str) -> None:
    """In a Geant4 child process: stdout and stderr to ``log`` (Geant4 prints a lot), the data variables set."""
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.environ.update(env)


def _worker(env: dict[str, str], log: str, cal: Calorimeter, window: Window, tasks: Any, results: Any) -> None:
    """Worker process: Geant4 output to ``log``, then simulate tasks until a None arrives; exits with os._exit."""
    code = 0
    try:
        _enter_child(env, log)
        app = require("caloquant.simulate.g4app").Application(cal, window)
        while (task := tasks.get()) is not None:
            start, prim = task
            results.put((start, app.showers(prim)))
    except BaseException as error:  # reported to the caller, which names the worker's log
        results.put((-1, f"{type(error).__name__}: {error}"))
        code = 1
    finally:
        results.close()
        results.join_thread()
        os._exit(code)


def _build(env: dict[str, str], log: str, root: str, zs: list[int]) -> None:
    """Data-building process: the Sandia coefficients come from Geant4 itself; exits with os._exit."""
    code = 0
    try:
        _enter_child(env, log)
        g4data.build(Path(root), zs, require("caloquant.simulate.g4app").sandia_coefficients)
    except BaseException:
        code = 1
    finally:
        os._exit(code)


def check_can_start_processes() -> None:
    """SimulationError (one line) in a daemonic process, which multiprocessing forbids to start the workers."""
    if mp.current_process().daemon:
        raise SimulationError("the Geant4 engine starts worker processes, which this daemonic process may not "
                              "(a Dask worker: start it with DASK_DISTRIBUTED__WORKER__DAEMON=False)")


def _log_tail(path: str, lines: int = 3) -> str:
    """The last non-empty lines of a worker log, joined on one line."""
    try:
        text = Path(path).read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return " | ".join(t.strip() for t in text if t.strip())[-400:] if text else ""


def prepare_data(source: g4data.DataSource, cal: Calorimeter, logdir: str) -> None:
    """Build the approximate tables into the cache at first use (in a separate process)."""
    zs = elements(cal)
    if not source.approximate or g4data.tables_complete(Path(source.path), zs):
        return
    log = os.path.join(logdir, "build.log")
    p = mp.get_context("spawn").Process(target=_build, args=(dict(source.env), log, source.path, zs))
    p.start()
    p.join()
    if p.exitcode != 0 or not g4data.tables_complete(Path(source.path), zs):
        raise SimulationError(f"could not build the Geant4 data approximations in {source.path} "
                              f"(exit {p.exitcode}): {_log_tail(log)}")


@dataclass
class Geant4Simulator:
    """Geant4 shower generator for one calorimeter and window, spread over ``workers`` processes."""

    window: Window
    calorimeter: Calorimeter = CLIC_ECAL
    workers: int = 0
    threshold_gev: float | None = None
    source: g4data.DataSource = field(default_factory=g4data.resolve)

    def __post_init__(self) -> None:
        check_available()
        if self.workers < 0:
            raise InputError(f"--workers must be positive, got {self.workers}")
        self.workers = self.workers or os.cpu_count() or 1
        self.cell_threshold = ShowerSimulator(self.window, self.calorimeter, self.threshold_gev).cell_threshold

    def stream(
        self,
        n: int,
        spectrum: Spectrum,
        angles: AngleRange = AngleRange(90.0, 90.0),
        *,
        seed: int = 0,
        chunk_size: int = 256,
        on_chunk: Callable[[int], None] | None = None,
        first: int = 0,
    ) -> Iterator[ShowerSet]:
        """Yield showers [first, first + n) in order, in chunks of ``chunk_size``; identical for every chunk size and
        worker count."""
        if n <= 0:
            raise InputError(f"number of showers must be positive, got {n}")
        check_can_start_processes()
        cal = self.calorimeter
        task = max(1, min(TASK_SIZE, chunk_size, -(-n // self.workers)))
        starts = list(range(0, n, task))
        ctx = mp.get_context("spawn")
        with tempfile.TemporaryDirectory(prefix="caloquant-g4-") as logdir:
            prepare_data(self.source, cal, logdir)
            tasks, results = ctx.Queue(), ctx.Queue()
            procs = []
            for w in range(min(self.workers, len(starts))):
                log = os.path.join(logdir, f"worker{w}.log")
                procs.append((ctx.Process(target=_worker, args=(dict(self.source.env), log, cal, self.window,
                                                                tasks, results), daemon=True), log))
            for p, _ in procs:
                p.start()
            try:
                for s in starts:
                    tasks.put((s, primaries(cal, spectrum, angles, seed, first + s, min(task, n - s))))
                for _ in procs:
                    tasks.put(None)
                yield from self._collect(procs, results, n, chunk_size, on_chunk, spectrum, angles, seed, first)
            finally:
                for p, _ in procs:
                    p.join(timeout=5)
                    if p.is_alive():
                        p.kill()
                        p.join()

    def _collect(self, procs: list[tuple[Any, str]], results: Any, n: int, chunk_size: int,
                 on_chunk: Callable[[int], None] | None, spectrum: Spectrum, angles: AngleRange, seed: int,
                 offset: int) -> Iterator[ShowerSet]:
        """Gather worker results in shower order and yield chunks; a dead worker raises SimulationError."""
        done: dict[int, np.ndarray] = {}
        ready = 0
        pending: list[np.ndarray] = []
        while ready < n:
            try:
                start, ecal = results.get(timeout=POLL_S)
            except queue.Empty:
                for p, log in procs:
                    if p.exitcode not in (None, 0):
                        raise SimulationError(f"a Geant4 worker died (exit {p.exitcode}): {_log_tail(log)}"
                                              ) from None
                if all(p.exitcode == 0 for p, _ in procs):
                    raise SimulationError("the Geant4 workers stopped before all showers were simulated") from None
                continue
            if start < 0:
                raise SimulationError(f"a Geant4 worker failed: {ecal}")
            done[start] = ecal
            while ready in done:
                pending.append(done.pop(ready))
                ready += len(pending[-1])
                while sum(len(e) for e in pending) >= chunk_size or (ready >= n and pending):
                    yield self._chunk(pending, ready, chunk_size, spectrum, angles, seed, offset, on_chunk)

    def _chunk(self, pending: list[np.ndarray], ready: int, chunk_size: int, spectrum: Spectrum,
               angles: AngleRange, seed: int, offset: int, on_chunk: Callable[[int], None] | None) -> ShowerSet:
        """Take up to ``chunk_size`` showers off ``pending`` as a ShowerSet with their primaries (shower indices
        start at ``offset``)."""
        stacked = np.concatenate(pending)
        k = min(chunk_size, len(stacked))
        begin = offset + ready - len(stacked)
        pending.clear()
        if k < len(stacked):
            pending.append(stacked[k:])
        ecal = stacked[:k]
        ecal[ecal < self.cell_threshold] = 0.0
        prim = primaries(self.calorimeter, spectrum, angles, seed, begin, k)
        if on_chunk is not None:
            on_chunk(k)
        return ShowerSet(ecal, np.array([p[1] for p in prim]), np.array([p[2] for p in prim]))


def _timer(env: dict[str, str], log: str, cal: Calorimeter, window: Window, warmup: list[Any], measured: list[Any],
           results: Any) -> None:
    """Timing process: set-up and one warm-up shower (which builds the physics tables), then the CPU seconds of the
    measured showers alone, taken in this process; exits with os._exit."""
    code = 0
    try:
        _enter_child(env, log)
        app = require("caloquant.simulate.g4app").Application(cal, window)
        app.showers(warmup)
        begin = time.process_time()
        app.showers(measured)
        results.put(time.process_time() - begin)
    except BaseException as error:  # reported to the caller, which names the worker's log
        results.put(f"{type(error).__name__}: {error}")
        code = 1
    finally:
        results.close()
        results.join_thread()
        os._exit(code)


def shower_cpu_seconds(window: Window, spectrum: Spectrum, n: int, seed: int = 1,
                       source: g4data.DataSource | None = None, calorimeter: Calorimeter = CLIC_ECAL) -> float:
    """CPU seconds one Geant4 worker spends on showers 0 .. n - 1 of ``spectrum``, measured inside the worker
    around those showers only: its start-up, set-up and physics tables (built by a warm-up shower, index n, run
    first) are not counted."""
    if n <= 0:
        raise InputError(f"number of showers must be positive, got {n}")
    sim = Geant4Simulator(window, calorimeter, workers=1, source=source or g4data.resolve())
    check_can_start_processes()
    angles = AngleRange(90.0, 90.0)
    ctx = mp.get_context("spawn")
    with tempfile.TemporaryDirectory(prefix="caloquant-g4-") as logdir:
        prepare_data(sim.source, calorimeter, logdir)
        log = os.path.join(logdir, "timer.log")
        results = ctx.Queue()
        p = ctx.Process(target=_timer, daemon=True,
                        args=(dict(sim.source.env), log, calorimeter, window,
                              primaries(calorimeter, spectrum, angles, seed, n, 1),
                              primaries(calorimeter, spectrum, angles, seed, 0, n), results))
        p.start()
        try:
            while True:
                try:
                    out = results.get(timeout=POLL_S)
                    break
                except queue.Empty:
                    if p.exitcode is not None:
                        raise SimulationError(f"the Geant4 timing worker died (exit {p.exitcode}): "
                                              f"{_log_tail(log)}") from None
        finally:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
                p.join()
    if isinstance(out, str):
        raise SimulationError(f"the Geant4 timing worker failed: {out}")
    return float(out)


def core_rate(window: Window, spectrum: Spectrum, n: int, seed: int = 1) -> float:
    """Showers per CPU-second of one Geant4 worker over ``n`` showers of ``spectrum`` (the CPU time of the showers
    alone, measured in the worker: its set-up and physics tables excluded). A CPU time that is not positive
    raises SimulationError instead of giving a meaningless rate."""
    seconds = shower_cpu_seconds(window, spectrum, n, seed)
    if not np.isfinite(seconds) or seconds <= 0:
        raise SimulationError(f"the Geant4 worker measured {seconds:g} CPU seconds for {n} showers: no usable rate")
    return n / seconds
