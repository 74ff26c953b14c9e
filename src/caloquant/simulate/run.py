"""Simulate straight to a file: chunked, atomic, with a progress bar."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from caloquant._atomic import deferred_signals
from caloquant.data import LAYOUTS, ShowerWriter
from caloquant.errors import InputError, Interrupted
from caloquant.geometry import Window, parse_window
from caloquant.simulate import g4data, geant4
from caloquant.simulate.engine import (AngleRange, ShowerSimulator, Spectrum, check_count, check_seed, default_workers,
                                      parse_range)
from caloquant.simulate.tuning import GFlashTuning, load_tuning
from caloquant.ui import progress_bar, warn


def run_attrs(n: int, energy: str | float | tuple[float, float], *, spectrum: str = "uniform",
              angle: str | float | tuple[float, float] = 90.0, window: str | Window = "25x25x25", seed: int = 0,
              layout: str = "3dgan", first: int = 0, engine: str = "gflash",
              tuning: GFlashTuning | str | None = None) -> dict[str, Any]:
    """The checked request as the attributes of its output file (engine details are added by ``_engine``)."""
    check_count(n)
    check_seed(seed)
    if first < 0:
        raise InputError(f"first shower index must be >= 0, got {first}")
    if layout not in LAYOUTS:
        raise InputError(f"unknown format {layout!r}; choose one of {', '.join(LAYOUTS)}")
    spec = Spectrum(*parse_range(energy, "energy"), kind=spectrum)
    ang = AngleRange(*parse_range(angle, "angle"))
    tuned = {"gflash_tuning": load_tuning(tuning).describe()} if engine == "gflash" else {}
    return tuned | {
        "generator": _generator_name(engine),
        "engine": engine,
        "seed": seed,
        "energy_gev": f"{spec.low:g}:{spec.high:g}",
        "spectrum": spec.kind,
        "angle_deg": f"{ang.low:g}:{ang.high:g}",
        "particle": "e-",
        "n": n,
        "first_index": first,
        "layout": layout,
        "window": parse_window(window).name,
    }


def simulate_to_file(
    path: str | os.PathLike[str],
    n: int,
    energy: str | float | tuple[float, float],
    *,
    spectrum: str = "uniform",
    angle: str | float | tuple[float, float] = 90.0,
    window: str | Window = "25x25x25",
    seed: int = 0,
    layout: str = "3dgan",
    chunk_size: int = 256,
    progress: bool = False,
    overwrite: bool = False,
    engine: str = "gflash",
    workers: int = 0,
    first: int = 0,
    on_chunk: Callable[[int], None] | None = None,
    tuning: GFlashTuning | str | None = None,
) -> Path:
    """Simulate showers [first, first + n) into ``path``; the file appears only once complete (Ctrl-C/SIGTERM:
    not at all). ``on_chunk(k)`` is called with the number of showers written so far. ``tuning`` (GFlash
    engine only) is a GFlashTuning, a shipped tuning's name or a tuning file. ``workers`` processes simulate
    side by side (0: one per core; GFlash runs of a few chunks stay in this process); the file does not depend
    on it."""
    if workers < 0:
        raise InputError(f"--workers must be positive, got {workers}")
    if engine == "gflash":
        tuning = load_tuning(tuning)  # read the file once
    attrs = run_attrs(n, energy, spectrum=spectrum, angle=angle, window=window, seed=seed, layout=layout,
                      first=first, engine=engine, tuning=tuning)
    win = parse_window(window)
    spec = Spectrum(*parse_range(energy, "energy"), kind=spectrum)
    ang = AngleRange(*parse_range(angle, "angle"))
    sim, engine_attrs = _engine(engine, win, workers, tuning)
    attrs |= engine_attrs
    with deferred_signals() as stop, \
            ShowerWriter(path, win, layout=layout, attrs=attrs, chunk_rows=min(chunk_size, 64),
                         overwrite=overwrite) as w, \
            progress_bar(n, "simulate", enabled=progress) as advance:
        if isinstance(sim, ShowerSimulator):  # GFlash: chunks side by side in worker processes, same output
            chunks = sim.stream(n, spec, ang, seed=seed, chunk_size=chunk_size, on_chunk=advance, first=first,
                                workers=workers or default_workers(n, chunk_size))
        else:  # Geant4: its own worker processes
            chunks = sim.stream(n, spec, ang, seed=seed, chunk_size=chunk_size, on_chunk=advance, first=first)
        for chunk in chunks:
            if stop.is_set():
                break
            w.append(chunk)
            if on_chunk is not None:
                on_chunk(w.n)
        if stop.is_set():
            raise Interrupted(f"interrupted: nothing written ({path} appears only once complete)", stop.signum)
    return Path(path)


def _engine(engine: str, window: Window, workers: int, tuning: GFlashTuning | str | None = None
            ) -> tuple[ShowerSimulator | geant4.Geant4Simulator, dict[str, Any]]:
    """The simulator for ``engine`` and the attributes every file it writes records."""
    _generator_name(engine)  # checks the name
    if engine == "gflash":
        return ShowerSimulator(window, tuning=load_tuning(tuning)), {}
    if tuning is not None and str(tuning) != "none":
        raise InputError("--tuning applies to the gflash engine only")
    sim = geant4.Geant4Simulator(window, workers=workers)
    src = sim.source
    if src.approximate:
        warn(f"Geant4 runs on generated data approximations ({g4data.APPROXIMATION_NOTE}); for real data "
             f"{g4data.HOW_TO_USE_REAL_DATA}")
    return sim, {
        "geant4_physics": geant4.PHYSICS_LIST,
        "geant4_production_cut_mm": geant4.PRODUCTION_CUT_MM,
        "geant4_data": src.description,
        "geant4_data_approximate": src.approximate,
    }


def _generator_name(engine: str) -> str:
    """The ``generator`` attribute of files simulated by ``engine``; unknown engines are refused."""
    if engine == "gflash":
        return "caloquant GFlash reference MC"
    if engine == "geant4":
        return f"Geant4 11.4 full simulation ({geant4.PHYSICS_LIST}, geant4-pybind)"
    raise InputError(f"unknown engine {engine!r}; choose gflash or geant4")
