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
from caloquant.simulate.engine import AngleRange, ShowerSimulator, Spectrum, check_count, parse_range
from caloquant.ui import progress_bar


def run_attrs(n: int, energy: str | float | tuple[float, float], *, spectrum: str = "uniform",
              angle: str | float | tuple[float, float] = 90.0, window: str | Window = "25x25x25", seed: int = 0,
              layout: str = "3dgan", first: int = 0) -> dict[str, Any]:
    """The checked request as the attributes of its output file."""
    check_count(n)
    if first < 0:
        raise InputError(f"first shower index must be >= 0, got {first}")
    if layout not in LAYOUTS:
        raise InputError(f"unknown format {layout!r}; choose one of {', '.join(LAYOUTS)}")
    spec = Spectrum(*parse_range(energy, "energy"), kind=spectrum)
    ang = AngleRange(*parse_range(angle, "angle"))
    return {
        "generator": "caloquant GFlash reference MC",
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
    first: int = 0,
    on_chunk: Callable[[int], None] | None = None,
) -> Path:
    """Simulate showers [first, first + n) into ``path``; the file appears only once complete (Ctrl-C/SIGTERM:
    not at all). ``on_chunk(k)`` is called with the number of showers written so far."""
    attrs = run_attrs(n, energy, spectrum=spectrum, angle=angle, window=window, seed=seed, layout=layout,
                      first=first)
    win = parse_window(window)
    spec = Spectrum(*parse_range(energy, "energy"), kind=spectrum)
    ang = AngleRange(*parse_range(angle, "angle"))
    sim = ShowerSimulator(win)
    with deferred_signals() as stop, \
            ShowerWriter(path, win, layout=layout, attrs=attrs, chunk_rows=min(chunk_size, 64),
                         overwrite=overwrite) as w, \
            progress_bar(n, "simulate", enabled=progress) as advance:
        for chunk in sim.stream(n, spec, ang, seed=seed, chunk_size=chunk_size, on_chunk=advance, first=first):
            if stop.is_set():
                break
            w.append(chunk)
            if on_chunk is not None:
                on_chunk(w.n)
        if stop.is_set():
            raise Interrupted(f"interrupted: nothing written ({path} appears only once complete)", stop.signum)
    return Path(path)
