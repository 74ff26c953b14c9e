"""Simulate straight to a file: chunked, atomic, with a progress bar."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from caloquant._atomic import deferred_signals
from caloquant.data import ShowerWriter
from caloquant.errors import InputError, Interrupted
from caloquant.geometry import Window, parse_window
from caloquant.simulate.engine import AngleRange, ShowerSimulator, Spectrum, check_count, parse_range
from caloquant.simulate import g4data
from caloquant.ui import progress_bar, warn

if TYPE_CHECKING:
    from caloquant.simulate.geant4 import Geant4Simulator


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
) -> Path:
    """Simulate ``n`` showers into ``path``; the file appears only once complete (Ctrl-C/SIGTERM: not at all)."""
    check_count(n)
    win = parse_window(window)
    spec = Spectrum(*parse_range(energy, "energy"), kind=spectrum)
    ang = AngleRange(*parse_range(angle, "angle"))
    sim, attrs = _engine(engine, win, workers)
    attrs |= {
        "seed": seed,
        "energy_gev": f"{spec.low:g}:{spec.high:g}",
        "spectrum": spec.kind,
        "angle_deg": f"{ang.low:g}:{ang.high:g}",
        "particle": "e-",
    }
    with deferred_signals() as stop, \
            ShowerWriter(path, win, layout=layout, attrs=attrs, chunk_rows=min(chunk_size, 64),
                         overwrite=overwrite) as w, \
            progress_bar(n, "simulate", enabled=progress) as advance:
        for chunk in sim.stream(n, spec, ang, seed=seed, chunk_size=chunk_size, on_chunk=advance):
            if stop.is_set():
                break
            w.append(chunk)
        if stop.is_set():
            raise Interrupted(f"interrupted: nothing written ({path} appears only once complete)", stop.signum)
    return Path(path)


def _engine(engine: str, window: Window, workers: int) -> tuple[ShowerSimulator | Geant4Simulator, dict[str, Any]]:
    """The simulator for ``engine`` and the attributes every file it writes records."""
    if engine == "gflash":
        return ShowerSimulator(window), {"generator": "caloquant GFlash reference MC", "engine": "gflash"}
    if engine != "geant4":
        raise InputError(f"unknown engine {engine!r}; choose gflash or geant4")
    from caloquant.simulate import geant4

    sim = geant4.Geant4Simulator(window, workers=workers)
    src = sim.source
    if src.approximate:
        warn(f"Geant4 runs on generated data approximations ({g4data.APPROXIMATION_NOTE}); for real data "
             f"{g4data.HOW_TO_USE_REAL_DATA}")
    return sim, {
        "generator": f"Geant4 11.4 full simulation ({geant4.PHYSICS_LIST}, geant4-pybind)",
        "engine": "geant4",
        "geant4_physics": geant4.PHYSICS_LIST,
        "geant4_production_cut_mm": geant4.PRODUCTION_CUT_MM,
        "geant4_data": src.description,
        "geant4_data_approximate": src.approximate,
    }
