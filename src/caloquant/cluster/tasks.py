"""The two sharded jobs: reference-MC simulation and generation with a trained model (picklable task specs)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from caloquant.generate import generate_to_file, partial_path
from caloquant.generate import run as generate_run
from caloquant.quantize import open_deployed
from caloquant.simulate import run as simulate_run

#: Attributes of a generated shard that define the job (the rest vary per shard or per machine).
_GENERATE_JOB = ("generator", "model_source", "model_sha256", "precision", "precision_sha256", "engine", "batch",
                 "energy_gev", "spectrum", "angle_deg", "layout", "window")
_SIMULATE_JOB = ("generator", "engine", "gflash_tuning", "energy_gev", "spectrum", "angle_deg", "layout", "window")


@dataclass(frozen=True)
class SimulateJob:
    """``caloquant simulate`` cut into shards: showers [start, stop) of the run with ``seed``."""

    n: int
    energy: str
    spectrum: str = "uniform"
    angle: str = "90"
    window: str = "25x25x25"
    seed: int = 0
    layout: str = "3dgan"
    chunk: int = 256
    engine: str = "gflash"  # a geant4 shard runs one Geant4 process inside its Dask worker
    tuning: str = "none"  # GFlash tuning: a shipped name or a file (read on every worker)
    kind: str = "simulate"

    @property
    def starts_processes(self) -> bool:
        """A Geant4 shard starts a Geant4 process in its Dask worker (which must then not be daemonic)."""
        return self.engine == "geant4"

    def identity(self) -> dict[str, Any]:
        attrs = simulate_run.run_attrs(self.n, self.energy, spectrum=self.spectrum, angle=self.angle,
                                       window=self.window, seed=self.seed, layout=self.layout, engine=self.engine,
                                       tuning=self.tuning)
        return {k: attrs.get(k) for k in _SIMULATE_JOB}

    def write(self, path: Path, start: int, stop: int, on_chunk: Callable[[int], None]) -> None:
        simulate_run.simulate_to_file(path, stop - start, self.energy, spectrum=self.spectrum, angle=self.angle,
                         window=self.window, seed=self.seed, layout=self.layout, chunk_size=self.chunk,
                         overwrite=True, first=start, on_chunk=on_chunk, engine=self.engine, workers=1,
                         tuning=self.tuning)


@dataclass(frozen=True)
class GenerateJob:
    """``caloquant generate`` cut into shards; each worker opens the model once and reuses it for its shards."""

    n: int
    model: str
    energy: str
    spectrum: str = "uniform"
    angle: str = "90"
    precision: str = "fp32"
    engine: str = "openvino"
    streams: str = "auto"
    batch: str = "auto"
    seed: int = 0
    window: str | None = None
    layout: str = "3dgan"
    chunk: int = 256
    allow_extrapolation: bool = False
    fallback_fp32: bool = False
    kind: str = "generate"

    def _generator(self) -> Any:
        return _open(self.model, self.engine, self.precision, self.batch, self.streams, self.fallback_fp32)

    def identity(self) -> dict[str, Any]:
        attrs = generate_run.run_attrs(self._generator(), self.n, self.energy, spectrum=self.spectrum,
                                       angle=self.angle, seed=self.seed, window=self.window, layout=self.layout,
                                       allow_extrapolation=self.allow_extrapolation)
        return {k: attrs[k] for k in _GENERATE_JOB}

    def write(self, path: Path, start: int, stop: int, on_chunk: Callable[[int], None]) -> None:
        generate_to_file(path, self._generator(), stop - start, self.energy, spectrum=self.spectrum, angle=self.angle,
                         seed=self.seed, window=self.window, layout=self.layout, chunk_size=self.chunk,
                         resume=partial_path(path).exists(), overwrite=True,
                         allow_extrapolation=self.allow_extrapolation, on_chunk=on_chunk, first=start)


#: Per thread, the generator last opened (a worker thread keeps it across its shards; engines are not shared).
_OPENED = threading.local()


def _open(model: str, engine: str, precision: str, batch: str, streams: str, fallback_fp32: bool) -> Any:
    """The compiled generator of this thread for these options, opened on first use."""
    key = (model, engine, precision, batch, streams, fallback_fp32)
    if getattr(_OPENED, "key", None) != key:
        _OPENED.generator = open_deployed(model, engine=engine, precision=precision, batch=batch, streams=streams,
                                          fallback_fp32=fallback_fp32)
        _OPENED.key = key
    return _OPENED.generator
