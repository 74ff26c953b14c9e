"""GFlash engine against the Geant4 engine at fixed energies: one markdown row per (energy, engine).

Usage: python bench/geant4_vs_gflash.py E:N [E:N ...] (N showers per energy for both engines, seed 1).
"""

from __future__ import annotations

import sys

import numpy as np

from caloquant.data import ShowerSet
from caloquant.geometry import CLIC_ECAL, WINDOW_25
from caloquant.simulate.engine import ShowerSimulator, Spectrum
from caloquant.simulate.geant4 import Geant4Simulator


def features(s: ShowerSet) -> str:
    """Visible fraction, resolution, longitudinal peak/barycentre/width (layers), r90 (mm) of the mean shower."""
    vis = s.ecal.sum(axis=(1, 2, 3), dtype=np.float64)
    frac = vis / s.energy
    layer = s.ecal.sum(axis=(1, 2), dtype=np.float64)
    z = np.arange(layer.shape[1])
    bary = (layer * z).sum(1) / vis
    width = np.sqrt((layer * (z - bary[:, None]) ** 2).sum(1) / vis)
    xy = s.ecal.sum(axis=(0, 3), dtype=np.float64)
    c = (np.arange(xy.shape[0]) - (xy.shape[0] - 1) / 2) * CLIC_ECAL.cell_mm
    r = np.hypot(c[:, None], c[None, :]).ravel()
    order = np.argsort(r)
    cum = np.cumsum(xy.ravel()[order]) / xy.sum()
    r90 = r[order][np.searchsorted(cum, 0.9)]
    return (f"{frac.mean():.4f} | {frac.std() / frac.mean() * 100:.1f} % | {int(np.argmax(layer.mean(0)))} | "
            f"{bary.mean():.2f} | {width.mean():.2f} | {r90:.1f}")


if __name__ == "__main__":
    g4 = Geant4Simulator(WINDOW_25, workers=0)
    gf = ShowerSimulator(WINDOW_25)
    for arg in sys.argv[1:]:
        energy, n = float(arg.split(":")[0]), int(arg.split(":")[1])
        spec = Spectrum(energy, energy)
        a = gf.simulate(n, spec, seed=1)
        b = ShowerSet.concatenate(list(g4.stream(n, spec, seed=1)))
        print(f"| {energy:g} | {n} | GFlash | {features(a)} |", flush=True)
        print(f"| {energy:g} | {n} | Geant4 | {features(b)} |", flush=True)
