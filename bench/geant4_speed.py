"""Geant4 engine speed: showers per CPU-second of one worker (= per core) at fixed energies.

Usage: python bench/geant4_speed.py [E:N ...] (default 10:40 100:10); prints a markdown row per energy.
"""

from __future__ import annotations

import sys

from caloquant.geometry import WINDOW_25
from caloquant.simulate.engine import Spectrum
from caloquant.simulate.geant4 import core_rate

if __name__ == "__main__":
    for arg in sys.argv[1:] or ["10:40", "100:10"]:
        energy, n = float(arg.split(":")[0]), int(arg.split(":")[1])
        print(f"| {energy:g} GeV | {n} | {core_rate(WINDOW_25, Spectrum(energy, energy), n):.2f} |", flush=True)
