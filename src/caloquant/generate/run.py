"""Generate straight to a file: batches across streams, chunked resumable writes, progress bar, clean Ctrl-C."""

from __future__ import annotations

import contextlib
import math
import os
import time
from collections import deque
from collections.abc import Callable, Iterator
from collections.abc import Generator as GeneratorType
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from caloquant._atomic import OutputLock, check_writable, deferred_signals
from caloquant.data.formats import ShowerSet
from caloquant.errors import GeometryMismatchError, InputError, Interrupted
from caloquant.generate.resume import PartialShowerFile
from caloquant.geometry import Window, parse_window
from caloquant.runtime.generator import Generator
from caloquant.simulate.engine import AngleRange, Spectrum, check_count, check_seed, parse_range
from caloquant.ui import progress_bar

#: Showers per written chunk when not given (rounded up to a whole number of batches).
CHUNK_SHOWERS = 256


def conditions(spectrum: Spectrum, angles: AngleRange, seed: int, start: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Energies (GeV) and angles (deg) of showers [start, start + n), drawn per index exactly as ``simulate``
    draws them, so ``generate`` and ``simulate`` with one seed give paired conditions."""
    u = np.array([np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, i]))).random(2)
                  for i in range(start, start + n)]).reshape(n, 2)
    energy = np.array([spectrum.sample(x) for x in u[:, 0]])
    return energy, angles.low + u[:, 1] * (angles.high - angles.low)


def _batches_in_order(generator: Generator, energies: Spectrum, angles: AngleRange, seed: int, start: int,
                      n: int) -> GeneratorType[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray], None, None]:
    """(raw output, energies, angles, latents) of showers [start, n) batch by batch, in order, across all streams."""
    b = generator.engine.batch
    conds: deque[tuple[np.ndarray, np.ndarray, np.ndarray]] = deque()

    def latents() -> Iterator[np.ndarray]:
        for first in range(start, n, b):
            e, a = conditions(energies, angles, seed, first, min(b, n - first))
            z = generator.latent(e, a, seed, np.arange(first, first + len(e)))
            conds.append((e, a, z))
            yield z

    for raw in generator.run_batches(latents()):
        yield (raw, *conds.popleft())


@dataclass(frozen=True)
class GenerateResult:
    """What a run wrote: the file, how many showers, from where it resumed, and the measured rate."""

    path: Path
    n: int
    resumed_from: int
    seconds: float

    @property
    def showers_per_s(self) -> float:
        return (self.n - self.resumed_from) / self.seconds if self.seconds > 0 else float("nan")


def run_attrs(generator: Generator, n: int, energy: str | float | tuple[float, float], *, spectrum: str = "uniform",
              angle: str | float | tuple[float, float] = 90.0, seed: int = 0, window: str | Window | None = None,
              layout: str = "3dgan", allow_extrapolation: bool = False, first: int = 0) -> dict[str, Any]:
    """The checked request as the attributes of its output file (the identity a resumed run must match)."""
    check_count(n)
    check_seed(seed)
    if first < 0:
        raise InputError(f"first shower index must be >= 0, got {first}")
    spec = generator.spec
    if window is not None and parse_window(window) != spec.window:
        raise GeometryMismatchError(f"model {generator.source} generates the {spec.window} window, "
                                    f"not {parse_window(window)}")
    energies = Spectrum(*parse_range(energy, "energy"), kind=spectrum)
    angles = AngleRange(*parse_range(angle, "angle"))
    generator.check_conditions(np.array([energies.low, energies.high]), np.array([angles.low, angles.high]),
                               allow_extrapolation=allow_extrapolation)
    eng = generator.engine
    return {
        "generator": f"caloquant generate ({spec.arch})", "model_source": generator.source,
        "model_sha256": generator.model_sha256, "precision": eng.precision,
        "precision_sha256": generator.precision_sha256, "engine": eng.name, "batch": eng.batch, "seed": seed,
        "n": n, "energy_gev": f"{energies.low:g}:{energies.high:g}", "spectrum": energies.kind,
        "angle_deg": f"{angles.low:g}:{angles.high:g}", "layout": layout, "window": spec.window.name,
        "particle": "e-", "precision_check": generator.check.describe() if generator.check else "fp32 (reference)",
        "first_index": first,
    }


def generate_to_file(
    path: str | os.PathLike[str],
    generator: Generator,
    n: int,
    energy: str | float | tuple[float, float],
    *,
    spectrum: str = "uniform",
    angle: str | float | tuple[float, float] = 90.0,
    seed: int = 0,
    window: str | Window | None = None,
    layout: str = "3dgan",
    chunk_size: int = CHUNK_SHOWERS,
    resume: bool = False,
    overwrite: bool = False,
    allow_extrapolation: bool = False,
    progress: bool = False,
    on_chunk: Callable[[int], None] | None = None,
    first: int = 0,
) -> GenerateResult:
    """Generate ``n`` showers into ``path`` chunk by chunk; ``resume`` continues ``path.partial`` exactly.

    Memory is bounded by one chunk plus the batches in flight, whatever ``n`` is. ``on_chunk(k)`` is called
    after each committed chunk with the number of showers on disk. ``path`` is locked against other runs.
    The file holds showers with indices [first, first + n) of the run defined by ``seed`` (a shard).
    """
    check_writable(path, overwrite=overwrite)
    if chunk_size <= 0:
        raise InputError(f"--chunk must be positive, got {chunk_size}")
    attrs = run_attrs(generator, n, energy, spectrum=spectrum, angle=angle, seed=seed, window=window, layout=layout,
                      allow_extrapolation=allow_extrapolation, first=first)
    spec, eng = generator.spec, generator.engine
    energies = Spectrum(*parse_range(energy, "energy"), kind=spectrum)
    angles = AngleRange(*parse_range(angle, "angle"))
    chunk = eng.batch * math.ceil(chunk_size / eng.batch)  # whole batches: a resumed run batches alike
    with OutputLock(path):
        out = PartialShowerFile(path, spec.window, layout=layout, attrs=attrs, chunk_rows=min(chunk, 64),
                                resume=resume)
        return _fill(out, generator, energies, angles, seed, n, chunk, progress, on_chunk, first)


def _fill(out: PartialShowerFile, generator: Generator, energies: Spectrum, angles: AngleRange, seed: int, n: int,
          chunk: int, progress: bool, on_chunk: Callable[[int], None] | None, first: int) -> GenerateResult:
    """Generate showers [first + out.n, first + n) into ``out`` chunk by chunk and close it under its final name."""
    spec = generator.spec
    start = out.n
    t0 = time.perf_counter()
    try:
        with deferred_signals() as stop, progress_bar(n - start, "generate", enabled=progress) as advance, \
                contextlib.closing(_batches_in_order(generator, energies, angles, seed, first + start,
                                                first + n)) as batches:
            done: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
            for raw, e, a, z in batches:
                if stop.is_set():  # the partial chunk is discarded; committed showers stay resumable
                    break
                done.append((raw, e, a, z))
                rows = sum(len(d[0]) for d in done)
                if rows == chunk or out.n + rows == n:
                    # batches keep running on the engine's streams while this chunk is written
                    raws, es, angs, zs = zip(*done)
                    cells = spec.to_physical(np.concatenate(raws), np.concatenate(zs))
                    out.append(ShowerSet(cells, np.concatenate(es), np.radians(np.concatenate(angs))))
                    out.commit()
                    done = []
                    advance(rows)
                    if on_chunk is not None:
                        on_chunk(out.n)
        if stop.is_set():
            raise Interrupted(f"interrupted: {out.n} of {n} showers kept in {out.path}; rerun with --resume "
                              "to continue", stop.signum)
    except OSError as e:
        out.abort()
        raise OSError(e.errno, f"write failed ({e.strerror or e}); {out.committed} showers kept in {out.path}: free "
                      "disk space and rerun with --resume", str(out.final)) from None
    except BaseException:
        out.abort()
        raise
    final = out.close()
    return GenerateResult(final, n, start, time.perf_counter() - t0)
