"""The Geant4 application run inside a worker process: geometry from ``geometry.py``, EM physics, C++ scoring.

Imported only in worker processes, after the data variables are set (geant4-pybind's import hook otherwise
asks interactively to download data sets). Scoring uses a ``G4MultiFunctionalDetector`` with
``G4PSEnergyDeposit3D`` on replicated silicon cells, so no Python runs per step: Python is called once per
event (primary generation, reading the hits map).
"""

from __future__ import annotations

import numpy as np

import geant4_pybind as g4

from caloquant.geometry import Calorimeter, Material, Window
from caloquant.simulate.geant4 import GUN_Z_MM, PHYSICS_LIST, PRODUCTION_CUT_MM

#: Transverse size of the absorber plates (mm): wide enough that no shower leaks sideways out of the tungsten.
PLATE_MM = 1000.0
#: One primary: the engine seeds of its event, energy (GeV), theta (rad), x and y (mm) at GUN_Z_MM.
Primary = tuple[list[int], float, float, float, float]


def sandia_coefficients(z: int, energy_mev: float) -> tuple[float, ...]:
    """Geant4's Sandia photo-absorption coefficients per atom of element ``z`` at ``energy_mev`` (barn MeV^i)."""
    table = _sandia()
    out = g4.G4doubleVector([0.0, 0.0, 0.0, 0.0])
    table.GetSandiaCofPerAtom(int(z), energy_mev * g4.MeV, out)
    return tuple(float(out[i]) / (g4.barn * g4.MeV ** (i + 1)) for i in range(4))


_SANDIA: list[object] = []


def _sandia() -> g4.G4SandiaTable:
    """One Sandia table, made once (its per-atom coefficients do not depend on the material)."""
    if not _SANDIA:
        _SANDIA.append(g4.G4NistManager.Instance().FindOrBuildMaterial("G4_Si").GetSandiaTable())
    return _SANDIA[0]


def _material(m: Material) -> g4.G4Material:
    """A pure-element Geant4 material with the density of ``geometry.py``."""
    element = g4.G4NistManager.Instance().FindOrBuildElement(int(m.Z))
    mat = g4.G4Material(f"caloquant_{m.name}", m.density * g4.g / g4.cm3, 1)
    mat.AddElement(element, 1)
    return mat


class Detector(g4.G4VUserDetectorConstruction):
    """The sampling stack of ``cal`` with silicon replicated into the readout window's cells."""

    def __init__(self, cal: Calorimeter, window: Window) -> None:
        super().__init__()
        self.cal, self.window = cal, window
        self.cell_logicals: list[g4.G4LogicalVolume] = []
        self._keep: list[object] = []

    def Construct(self) -> g4.G4VPhysicalVolume:
        """World, plates and replicated sensors; Python keeps every object alive (Geant4 holds raw pointers)."""
        cal, win, keep = self.cal, self.window, self._keep.append
        vacuum = g4.G4NistManager.Instance().FindOrBuildMaterial("G4_Galactic")
        depth = float(cal.layer_edges_mm[-1])
        world_s = g4.G4Box("World", PLATE_MM, PLATE_MM, depth + 100.0)
        world_l = g4.G4LogicalVolume(world_s, vacuum, "World")
        world_p = g4.G4PVPlacement(None, g4.G4ThreeVector(), world_l, "World", None, False, 0)
        keep(world_s), keep(world_l)
        materials: dict[str, g4.G4Material] = {}
        half_x, half_y = win.nx * cal.cell_mm / 2.0, win.ny * cal.cell_mm / 2.0
        logicals = []
        for s in cal.structures:
            for m in (s.absorber, s.sensor):
                if m.name not in materials:
                    materials[m.name] = _material(m)
            plate = g4.G4LogicalVolume(g4.G4Box("Plate", PLATE_MM / 2, PLATE_MM / 2, s.absorber_mm / 2),
                                       materials[s.absorber.name], "Plate")
            sensor = g4.G4LogicalVolume(g4.G4Box("Sensor", half_x, half_y, s.sensor_mm / 2),
                                        materials[s.sensor.name], "Sensor")
            row = g4.G4LogicalVolume(g4.G4Box("Row", cal.cell_mm / 2, half_y, s.sensor_mm / 2),
                                     materials[s.sensor.name], "Row")
            cell = g4.G4LogicalVolume(g4.G4Box("Cell", cal.cell_mm / 2, cal.cell_mm / 2, s.sensor_mm / 2),
                                      materials[s.sensor.name], "Cell")
            keep(g4.G4PVReplica("Row", row, sensor, g4.kXAxis, win.nx, cal.cell_mm))
            keep(g4.G4PVReplica("Cell", cell, row, g4.kYAxis, win.ny, cal.cell_mm))
            keep(plate), keep(sensor), keep(row), keep(cell)
            self.cell_logicals.append(cell)
            logicals.append((s, plate, sensor))
        for layer, idx in enumerate(cal.layer_structure):
            s, plate, sensor = logicals[idx]
            z0 = float(cal.layer_edges_mm[layer])
            keep(g4.G4PVPlacement(None, g4.G4ThreeVector(0, 0, (z0 + s.absorber_mm / 2) * g4.mm), plate,
                                  "Plate", world_l, False, layer))
            keep(g4.G4PVPlacement(None, g4.G4ThreeVector(0, 0, (z0 + s.absorber_mm + s.sensor_mm / 2) * g4.mm),
                                  sensor, "Sensor", world_l, False, layer))
        keep(materials)
        return world_p

    def ConstructSDandField(self) -> None:
        """Energy deposit per (x cell, y cell, layer), scored in C++."""
        win = self.window
        mfd = g4.G4MultiFunctionalDetector("ecal")
        g4.G4SDManager.GetSDMpointer().AddNewDetector(mfd)
        # touchable depths: 0 = cell (y replica), 1 = row (x replica), 2 = sensor placement (layer)
        scorer = g4.G4PSEnergyDeposit3D("edep", win.nx, win.ny, win.nz, 1, 0, 2)
        mfd.RegisterPrimitive(scorer)
        for lv in self.cell_logicals:
            self.SetSensitiveDetector(lv, mfd)
        self._keep += [mfd, scorer]


class Gun(g4.G4VUserPrimaryGeneratorAction):
    """One electron per event: reseeds the engine, then shoots the next queued primary."""

    def __init__(self) -> None:
        super().__init__()
        self.gun = g4.G4ParticleGun(1)
        self.gun.SetParticleDefinition(g4.G4Electron.Electron())
        self.queue: list[Primary] = []

    def GeneratePrimaries(self, event: g4.G4Event) -> None:
        """Reseed from the shower's seeds, then shoot its electron."""
        seeds, energy_gev, theta, x_mm, y_mm = self.queue[event.GetEventID()]
        g4.HepRandom.setTheSeeds([*seeds, 0])
        self.gun.SetParticleEnergy(energy_gev * g4.GeV)
        self.gun.SetParticleMomentumDirection(g4.G4ThreeVector(np.cos(theta), 0.0, np.sin(theta)))
        self.gun.SetParticlePosition(g4.G4ThreeVector(x_mm * g4.mm, y_mm * g4.mm, GUN_Z_MM * g4.mm))
        self.gun.GeneratePrimaryVertex(event)


class Readout(g4.G4UserEventAction):
    """Copies the event's energy map (MeV, flat cell index) into a numpy array at the end of each event."""

    def __init__(self, window: Window) -> None:
        super().__init__()
        self.window = window
        self.hc_id = -1
        self.out = np.zeros((0, window.n_cells))

    def EndOfEventAction(self, event: g4.G4Event) -> None:
        """Copy the hits map into this event's row."""
        if self.hc_id < 0:
            self.hc_id = g4.G4SDManager.GetSDMpointer().GetCollectionID("ecal/edep")
        cells = self.out[event.GetEventID()]
        for index, value in event.GetHCofThisEvent().GetHC(self.hc_id):
            cells[index] = value


class Actions(g4.G4VUserActionInitialization):
    """Registers the gun and the readout."""

    def __init__(self, gun: Gun, readout: Readout) -> None:
        super().__init__()
        self.gun, self.readout = gun, readout

    def Build(self) -> None:
        """Register the actions."""
        self.SetUserAction(self.gun)
        self.SetUserAction(self.readout)


class Application:
    """A serial Geant4 run manager set up for one calorimeter and window; ``shower`` runs one event."""

    def __init__(self, cal: Calorimeter, window: Window, production_cut_mm: float = PRODUCTION_CUT_MM) -> None:
        ui = g4.G4UImanager.GetUIpointer()
        for cmd in ("/control/verbose 0", "/run/verbose 0", "/event/verbose 0", "/tracking/verbose 0",
                    "/process/em/verbose 0", "/process/had/verbose 0"):
            ui.ApplyCommand(cmd)
        self.run_manager = g4.G4RunManagerFactory.CreateRunManager(g4.G4RunManagerType.Serial)
        self.detector = Detector(cal, window)
        self.run_manager.SetUserInitialization(self.detector)
        physics = g4.G4VModularPhysicsList()
        physics.RegisterPhysics(getattr(g4, PHYSICS_LIST)())
        self.physics = physics
        self.run_manager.SetUserInitialization(physics)
        self.gun, self.readout = Gun(), Readout(window)
        self.actions = Actions(self.gun, self.readout)
        self.run_manager.SetUserInitialization(self.actions)
        self.run_manager.Initialize()
        ui.ApplyCommand(f"/run/setCut {production_cut_mm} mm")
        self.shape = window.shape

    def showers(self, primaries: list[Primary]) -> np.ndarray:
        """Visible energy (GeV) per cell, (n, nx, ny, nz), of one electron shower per primary, in one run."""
        self.gun.queue = primaries
        self.readout.out = np.zeros((len(primaries), int(np.prod(self.shape))))
        self.run_manager.BeamOn(len(primaries))
        return (self.readout.out / 1000.0).reshape(len(primaries), *self.shape).astype(np.float32)
