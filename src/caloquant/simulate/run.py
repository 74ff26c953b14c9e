"""Simulate straight to a file: chunked, atomic, with a progress bar."""

from __future__ import annotations

import os
from pathlib import Path

from caloquant._atomic import deferred_signals
from caloquant.data import ShowerWriter
from caloquant.errors import Interrupted
from caloquant.geometry import Window, parse_window
from caloquant.simulate.engine import AngleRange, ShowerSimulator, Spectrum, check_count, parse_range
from caloquant.ui import progress_bar


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
) -> Path:
    """Simulate ``n`` showers into ``path``; the file appears only once complete (Ctrl-C/SIGTERM: not at all)."""
    check_count(n)
    win = parse_window(window)
    spec = Spectrum(*parse_range(energy, "energy"), kind=spectrum)
    ang = AngleRange(*parse_range(angle, "angle"))
    sim = ShowerSimulator(win)
    attrs = {
        "generator": "caloquant GFlash reference MC",
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
