"""What Geant4 settings buy in speed, and what they cost in physics, for 100 GeV showers (one core).

Usage: python bench/geant4_knobs.py [N] [E]; runs each configuration in its own process (geant4-pybind keeps
one run manager per process) and prints a markdown row: showers per CPU-second, visible fraction and
longitudinal barycentre (layers) of the same N primaries. Configurations: the engine's default, then one change
each (EM parameters before initialisation, a user limit killing charged tracks below an energy in the tungsten,
one silicon cell per layer instead of the readout replicas).
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time

CONFIGS = [
    {},
    {"pre": ["/process/em/lowestElectronEnergy 100 keV"]},
    {"pre": ["/process/eLoss/StepFunction 0.8 5 mm"]},
    {"pre": ["/process/msc/RangeFactor 0.2"]},
    {"pre": ["/process/em/applyCuts true"]},
    {"cut": 2.0},
    {"limit_mev": 0.3},
    {"limit_mev": 1.0},
    {"one_cell": True},
]


def child(cfg: dict, n: int, energy: float) -> None:
    """Run one configuration in this process and print one JSON line (then leave with os._exit)."""
    from caloquant.geometry import CLIC_ECAL, WINDOW_25, Window
    from caloquant.simulate import g4data, geant4
    from caloquant.simulate.engine import AngleRange, Spectrum

    os.environ.update(g4data.resolve().env)
    out = os.dup(1)
    log = os.open(os.devnull, os.O_WRONLY)
    os.dup2(log, 1), os.dup2(log, 2)
    import geant4_pybind as g4
    import numpy as np

    from caloquant.simulate import g4app

    cal, win = CLIC_ECAL, WINDOW_25
    if cfg.get("one_cell"):
        cal, win = dataclasses.replace(CLIC_ECAL, cell_mm=CLIC_ECAL.cell_mm * 25), Window(1, 1, 25)
    ui = g4.G4UImanager.GetUIpointer()
    rm = g4.G4RunManagerFactory.CreateRunManager(g4.G4RunManagerType.Serial)
    det = g4app.Detector(cal, win)
    rm.SetUserInitialization(det)
    phys = g4.G4VModularPhysicsList()
    phys.RegisterPhysics(getattr(g4, geant4.PHYSICS_LIST)())
    if cfg.get("limit_mev"):
        phys.RegisterPhysics(g4.G4StepLimiterPhysics())
    rm.SetUserInitialization(phys)
    gun, readout = g4app.Gun(), g4app.Readout(win)
    actions = g4app.Actions(gun, readout)
    rm.SetUserInitialization(actions)
    for command in cfg.get("pre", []):
        ui.ApplyCommand(command)
    rm.Initialize()
    ui.ApplyCommand(f"/run/setCut {cfg.get('cut', geant4.PRODUCTION_CUT_MM)} mm")
    keep = []
    if cfg.get("limit_mev"):
        limit = g4.G4UserLimits(1e9, 1e9, 1e9, cfg["limit_mev"] * g4.MeV, 0.0)
        keep.append(limit)
        for lv in det._keep:
            if isinstance(lv, g4.G4LogicalVolume) and lv.GetName() == "Plate":
                lv.SetUserLimits(limit)
    prim = geant4.primaries(CLIC_ECAL, Spectrum(energy, energy), AngleRange(90, 90), 1, 0, n + 1)
    gun.queue, readout.out = prim, np.zeros((n + 1, win.n_cells))
    rm.BeamOn(1)  # warm-up: physics tables
    gun.queue, readout.out = prim[1:], np.zeros((n, win.n_cells))
    t = time.process_time()
    rm.BeamOn(n)
    cpu = time.process_time() - t
    e = readout.out.reshape(n, *win.shape) / 1000.0
    vis = e.sum(axis=(1, 2, 3))
    layers = e.sum(axis=(1, 2))
    bary = (layers * np.arange(layers.shape[1])).sum(axis=1) / vis
    os.write(out, (json.dumps({"rate": n / cpu, "vis": float(vis.mean() / energy),
                               "vis_err": float(vis.std() / energy / np.sqrt(n)),
                               "bary": float(bary.mean())}) + "\n").encode())
    os._exit(0)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(json.loads(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]))
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 30
    energy = float(sys.argv[2]) if len(sys.argv) > 2 else 100.0
    print("| setting | showers/s per core | visible / primary | barycentre (layers) |\n|---|---|---|---|")
    for cfg in CONFIGS:
        proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(cfg), str(n), str(energy)],
                              capture_output=True, text=True)
        lines = proc.stdout.strip().splitlines()
        if proc.returncode != 0 or not lines:
            print(f"| {json.dumps(cfg)} | failed (exit {proc.returncode}) | | |", flush=True)
            continue
        r = json.loads(lines[-1])
        print(f"| {json.dumps(cfg) if cfg else 'default'} | {r['rate']:.2f} | {r['vis']:.4f} ± {r['vis_err']:.4f} | "
              f"{r['bary']:.2f} |", flush=True)
