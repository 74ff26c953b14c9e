"""Geant4 data for the ``geant4`` engine: the user's real data sets, or small generated approximations.

Real data are used whenever the user has them: ``G4LEDATA`` (and the other per-data-set variables) or
``GEANT4_DATA_DIR`` pointing at installed data sets, used as is. Without them, ``G4EmStandardPhysics_option1``
runs on tables generated here in Geant4's own file formats, built once into a cache folder (never downloaded):

* ``brem_SB/br<Z>``: the Seltzer-Berger table layout (``G4Physics2DVector``: k/T by ln(T/MeV), values
  beta^2/Z^2 k dsigma/dk in mb) filled from the Bethe-Heitler cross section with Thomas-Fermi screening
  (Butcher & Messel screening functions) and the Davies-Bethe-Maximon Coulomb correction. Geant4 uses these
  tables only below 1 GeV (above, ``G4eBremsstrahlungRelModel`` needs no data).
* ``epics2017/phot/pe-{cs,high,low}-<Z>.dat``: a single-shell photo-electric cross section from Geant4's own
  Sandia parameterisation (no shell structure, so no fluorescence).
* ``ENSDFSTATE.dat``: empty (no nuclide states are needed by electromagnetic physics).

Rayleigh scattering is not in option 1, with or without real data.
"""

from __future__ import annotations

import functools
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

#: Bumped whenever the generated tables change, so stale caches are rebuilt.
TABLES_VERSION = 1
#: Per-data-set variables the geant4-pybind import hook checks (any one set counts as "the user has data").
DATASET_VARIABLES = (
    "G4NEUTRONHPDATA", "G4LEDATA", "G4LEVELGAMMADATA", "G4RADIOACTIVEDATA", "G4PARTICLEXSDATA", "G4PIIDATA",
    "G4REALSURFACEDATA", "G4SAIDXSDATA", "G4ABLADATA", "G4INCLDATA", "G4ENSDFSTATEDATA", "G4CHANNELINGDATA",
)
APPROXIMATION_NOTE = (
    "bremsstrahlung below 1 GeV from Bethe-Heitler (no Seltzer-Berger tables), single-shell photo-electric "
    "effect from the Sandia parameterisation (no shell structure or fluorescence), no Rayleigh scattering"
)
HOW_TO_USE_REAL_DATA = "set GEANT4_DATA_DIR (or G4LEDATA and G4ENSDFSTATEDATA) to installed Geant4 data sets"

#: Reduced photon energy k/T grid of the Seltzer-Berger tables.
KAPPA_GRID = np.array([
    1e-12, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75,
    0.8, 0.85, 0.9, 0.925, 0.95, 0.97, 0.99, 0.995, 0.999, 0.9995, 0.9999, 0.99995, 0.99999, 1.0,
])
#: Kinetic energies of the table rows, 1 keV - 10 GeV (MeV).
T_GRID_MEV = np.logspace(-3, 4, 57)
ELECTRON_MASS_MEV = 0.51099895
ALPHA = 1.0 / 137.035999
#: alpha r_e^2 in mb.
ALPHA_RE2_MB = ALPHA * (2.8179403262e-13) ** 2 / 1e-27


@dataclass(frozen=True)
class DataSource:
    """Where the Geant4 data come from: ``real`` (the user's) or ``approximate`` (generated into ``path``)."""

    kind: str
    path: str
    env: Mapping[str, str]

    @property
    def approximate(self) -> bool:
        return self.kind == "approximate"

    @property
    def description(self) -> str:
        """One line for file attributes and ``caloquant info``."""
        if self.approximate:
            return f"generated approximations v{TABLES_VERSION} ({APPROXIMATION_NOTE})"
        return f"Geant4 data sets ({self.path})"


def default_cache_dir(env: Mapping[str, str]) -> Path:
    """$CALOQUANT_CACHE or $XDG_CACHE_HOME/caloquant or ~/.cache/caloquant, plus ``geant4-data``."""
    root = env.get("CALOQUANT_CACHE") or os.path.join(
        env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "caloquant")
    return Path(root) / "geant4-data"


def resolve(environ: Mapping[str, str] | None = None) -> DataSource:
    """The user's data if any variable names them, else the approximate tables' cache folder (not built)."""
    env = dict(os.environ if environ is None else environ)
    given = {k: env[k] for k in DATASET_VARIABLES if env.get(k)}
    if given:
        return DataSource("real", given.get("G4LEDATA", next(iter(given.values()))), {})
    if env.get("GEANT4_DATA_DIR"):
        return DataSource("real", env["GEANT4_DATA_DIR"], {})
    root = default_cache_dir(env) / f"v{TABLES_VERSION}"
    variables = {k: str(root / "empty") for k in DATASET_VARIABLES}
    variables.update(G4LEDATA=str(root / "G4EMLOW"), G4ENSDFSTATEDATA=str(root / "G4ENSDFSTATE"),
                     GEANT4_DATA_DIR=str(root))
    return DataSource("approximate", str(root), variables)


def tables_complete(root: Path, zs: Iterable[int]) -> bool:
    """True when ``root`` holds every generated file the elements ``zs`` need."""
    le = root / "G4EMLOW"
    need = [root / "G4ENSDFSTATE" / "ENSDFSTATE.dat"]
    for z in zs:
        need += [le / "brem_SB" / f"br{z}"] + [le / "epics2017" / "phot" / f"pe-{p}-{z}.dat"
                                               for p in ("cs", "high", "low")]
    return all(p.is_file() for p in need)


def screening(delta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Thomas-Fermi screening functions (phi1, phi2) in the Butcher & Messel fit."""
    d = np.asarray(delta, dtype=np.float64)
    far = 21.12 - 4.184 * np.log(d + 0.952)
    phi1 = np.where(d <= 1.0, 20.867 - 3.242 * d + 0.625 * d * d, far)
    phi2 = np.where(d <= 1.0, 20.029 - 1.930 * d - 0.086 * d * d, far)
    return phi1, phi2


def coulomb_correction(z: float) -> float:
    """Davies-Bethe-Maximon Coulomb correction f_c(Z)."""
    a2 = (ALPHA * z) ** 2
    return a2 * (1.0 / (1.0 + a2) + 0.20206 - 0.0369 * a2 + 0.0083 * a2**2 - 0.002 * a2**3)


def scaled_brems_dcs(z: int, kappa: np.ndarray, t_mev: float) -> np.ndarray:
    """beta^2/Z^2 k dsigma/dk (mb) from screened Bethe-Heitler with Coulomb correction, at k = kappa T."""
    e_tot = t_mev + ELECTRON_MASS_MEV
    eps = np.clip(kappa * t_mev / e_tot, 0.0, 1.0 - 1e-12)
    delta = 136.0 * ELECTRON_MASS_MEV * eps / (z ** (1.0 / 3.0) * e_tot * (1.0 - eps))
    phi1, phi2 = screening(delta)
    c = math.log(z) / 3.0 + coulomb_correction(z)
    shape = (1.0 + (1.0 - eps) ** 2) * (phi1 / 4.0 - c) - (2.0 / 3.0) * (1.0 - eps) * (phi2 / 4.0 - c)
    beta2 = t_mev * (t_mev + 2.0 * ELECTRON_MASS_MEV) / e_tot**2
    return np.maximum(beta2 * 4.0 * ALPHA_RE2_MB * (1.0 + 1.0 / z) * shape, 0.0)


def brems_table(z: int) -> str:
    """The ``brem_SB/br<Z>`` file text (G4Physics2DVector::Retrieve layout)."""
    rows = [scaled_brems_dcs(z, KAPPA_GRID, t) for t in T_GRID_MEV]
    lines = [f"2 {KAPPA_GRID.size} {T_GRID_MEV.size}",
             " ".join(f"{x:.8g}" for x in KAPPA_GRID),
             " ".join(f"{y:.10g}" for y in np.log(T_GRID_MEV))]
    lines += [" ".join(f"{v:.6g}" for v in row) for row in rows]
    return "\n".join(lines) + "\n"


def sandia_edges(coefficients: Callable[[float], tuple[float, ...]], lo: float = 1e-5, hi: float = 1e5
                 ) -> list[float]:
    """Energies (MeV) where the Sandia coefficients change, located by bisection on a log scan."""
    grid = np.geomspace(lo, hi, 3000)
    values = [coefficients(float(e)) for e in grid]
    edges = []
    for a, b, va, vb in zip(grid[:-1], grid[1:], values[:-1], values[1:]):
        if va == vb:
            continue
        for _ in range(60):
            m = math.sqrt(a * b)
            if coefficients(m) == va:
                a = m
            else:
                b = m
        edges.append(float(b))
    return edges


def photo_tables(z: int, coefficients: Callable[[float], tuple[float, ...]], e_min_mev: float = 1e-5
                 ) -> dict[str, str]:
    """``pe-{cs,high,low}-<Z>.dat`` texts for one shell from Sandia coefficients a_i (barn MeV^i) at E (MeV).

    Above the start of the last Sandia interval the model's fit form x(a1 + a2 x + a3 x^2 + a4 x^3), x = 1/E,
    is the Sandia form exactly; below, the table holds sigma E^3 on 24 points per interval.
    """
    edges = [e for e in sandia_edges(coefficients) if e > e_min_mev]
    top = edges[-1] if edges else 1.0
    bounds = [e_min_mev, *edges]
    nodes: list[float] = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        nodes += list(np.geomspace(a, b * (1.0 - 1e-7), 24))
    nodes.append(top)
    values = []
    for e in nodes:
        c = coefficients(e)
        values.append((c[0] / e + c[1] / e**2 + c[2] / e**3 + c[3] / e**4) * e**3)
    cs = [f"{nodes[0]:.10g} {nodes[-1]:.10g} {len(nodes)}", str(len(nodes))]
    cs += [f"{e:.10g} {v:.8g}" for e, v in zip(nodes, values)]
    fit = coefficients(top * 2.0)
    param = f"1 1 {top:.10g}\n{e_min_mev:.6g} " + " ".join(f"{a:.8g}" for a in fit[:4]) + " 0 0\n"
    return {f"pe-cs-{z}.dat": "\n".join(cs) + "\n", f"pe-high-{z}.dat": param, f"pe-low-{z}.dat": param}


def build(root: Path, zs: Iterable[int], coefficients: Callable[[int, float], tuple[float, ...]]) -> None:
    """Write the approximate tables for elements ``zs`` into ``root`` (atomically: a sibling, then a rename)."""
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=root.name + ".", dir=root.parent))
    try:
        (tmp / "G4ENSDFSTATE").mkdir()
        (tmp / "G4ENSDFSTATE" / "ENSDFSTATE.dat").write_text("")
        (tmp / "empty").mkdir()
        brem = tmp / "G4EMLOW" / "brem_SB"
        phot = tmp / "G4EMLOW" / "epics2017" / "phot"
        brem.mkdir(parents=True)
        phot.mkdir(parents=True)
        for z in sorted(set(zs)):
            (brem / f"br{z}").write_text(brems_table(z))
            for name, text in photo_tables(z, functools.partial(coefficients, z)).items():
                (phot / name).write_text(text)
        (tmp / "README").write_text(f"caloquant generated Geant4 tables v{TABLES_VERSION}: {APPROXIMATION_NOTE}\n")
        if root.exists():
            shutil.rmtree(root)
        os.replace(tmp, root)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
