"""Geant4 engine speed: showers/s per core at fixed energies, one worker, CPU seconds of that worker.

Usage: python bench/geant4_speed.py [N10] [N100]; prints a markdown row per energy.
"""

from __future__ import annotations

import resource
import sys
import time

from caloquant.geometry import WINDOW_25
from caloquant.simulate.engine import Spectrum
from caloquant.simulate.geant4 import Geant4Simulator


def measure(energy: float, n: int) -> tuple[float, float]:
    """(showers per worker CPU second, showers per wall second) for ``n`` showers after a 1-shower warm-up run."""
    sim = Geant4Simulator(WINDOW_25, workers=1)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    for _ in sim.stream(1, Spectrum(energy, energy), seed=1):
        pass
    warm_cpu = resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime - before.ru_utime
    warm_wall = time.perf_counter() - t
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    for _ in sim.stream(n + 1, Spectrum(energy, energy), seed=2):
        pass
    cpu = resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime - before.ru_utime - warm_cpu
    wall = time.perf_counter() - t - warm_wall
    return n / cpu, n / wall


if __name__ == "__main__":
    counts = [int(a) for a in sys.argv[1:3]] or [40, 10]
    for energy, n in zip((10.0, 100.0), counts):
        per_cpu, per_wall = measure(energy, n)
        print(f"| {energy:g} GeV | {n} | {per_cpu:.2f} | {per_wall:.2f} |", flush=True)
