"""Reference-MC throughput on one core: showers/s at 10, 100 and 500 GeV for both windows.

Run: taskset -c 0 .venv/bin/python bench/mc_speed.py [--n 2000]
Simulation only (no file I/O); the first call compiles the numba kernel and is not timed.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from caloquant.geometry import parse_window  # noqa: E402
from caloquant.simulate import AngleRange, ShowerSimulator, Spectrum  # noqa: E402


def measure(window: str, energy: float, n: int, angle: tuple[float, float]) -> float:
    sim = ShowerSimulator(parse_window(window))
    spec, ang = Spectrum(energy, energy), AngleRange(*angle)
    sim.simulate(8, spec, ang)  # warm-up
    t0 = time.perf_counter()
    for _ in sim.stream(n, spec, ang, seed=1, chunk_size=256):
        pass
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=2000)
    args = ap.parse_args()
    print(f"# {platform.processor() or platform.machine()}, numpy {np.__version__}, "
          f"affinity {sorted(os.sched_getaffinity(0))}")
    print("| window | angle (deg) | 10 GeV | 100 GeV | 500 GeV |")
    print("|---|---|---|---|---|")
    for window, angle in (("25x25x25", (90.0, 90.0)), ("51x51x25", (60.0, 120.0))):
        rates = [measure(window, e, args.n if e < 500 else args.n // 4, angle) for e in (10.0, 100.0, 500.0)]
        print(f"| {window} | {angle[0]:g}-{angle[1]:g} | " + " | ".join(f"{r:,.0f}" for r in rates) + " |")


if __name__ == "__main__":
    main()
