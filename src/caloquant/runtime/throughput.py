"""Throughput of a compiled generator: showers/s and ms/shower for one engine, precision, batch and stream count."""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from caloquant.choices import EngineName, Precision
from caloquant.models.registry import LoadedGenerator
from caloquant.runtime.generator import Generator, open_generator


@dataclass(frozen=True)
class Throughput:
    """One measurement: inference only (latent in, raw shower out), after warm-up batches."""

    engine: str
    precision: str
    batch: int
    streams: int
    showers: int
    seconds: float
    peak_rss_mib: float

    @property
    def showers_per_s(self) -> float:
        return self.showers / self.seconds

    @property
    def ms_per_shower(self) -> float:
        return 1000.0 * self.seconds / self.showers

    def to_dict(self) -> dict[str, Any]:
        """Fields plus the derived rates (for JSON tables)."""
        return {**asdict(self), "showers_per_s": self.showers_per_s, "ms_per_shower": self.ms_per_shower}


def median_seconds(run: Callable[[], object], *, seconds: float = 2.0, min_runs: int = 3) -> float:
    """Median wall time of ``run()`` over at least ``min_runs`` calls and ``seconds``, after one untimed call."""
    run()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_runs or time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, MiB (Linux ru_maxrss is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def measure_throughput(model: str | os.PathLike[str] | LoadedGenerator | Generator, *,
                       engine: EngineName | str = EngineName.OPENVINO, precision: Precision | str = Precision.FP32,
                       batch: int | str = "auto", streams: int | str = "auto",
                       seconds: float = 3.0, min_batches: int = 4, warmup: int = 2) -> Throughput:
    """Run full batches for at least ``seconds`` (and ``min_batches``) on all streams and time them."""
    gen = model if isinstance(model, Generator) else open_generator(
        model, engine=engine, precision=precision, batch=batch, streams=streams)
    e = gen.engine
    latent = gen.latent(np.full(e.batch, 100.0), None if gen.spec.arch == "ecal25" else np.full(e.batch, 90.0),
                        0, np.arange(e.batch))
    for _ in gen.run_batches(latent for _ in range(max(warmup, e.streams))):
        pass
    n_batches = 0
    t0 = time.perf_counter()
    while n_batches < min_batches or time.perf_counter() - t0 < seconds:
        k = max(2 * e.streams, min_batches)
        for _ in gen.run_batches(latent for _ in range(k)):
            pass
        n_batches += k
    dt = time.perf_counter() - t0
    return Throughput(e.name, e.precision, e.batch, e.streams, n_batches * e.batch, dt, peak_rss_mib())
