"""``caloquant calibrate --to geant4``: reference samples (read, or simulated with the Geant4 engine), the fit,
the tuning file and the before/after table."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from caloquant._atomic import check_writable, write_text_atomic
from caloquant.calibrate.fit import N_PARAMETERS, CalibrationResult, fit_gflash
from caloquant.calibrate.summary import comparison_table, fixed_energy
from caloquant.data.formats import ShowerSet
from caloquant.data.shards import open_showers
from caloquant.errors import InputError
from caloquant.simulate.run import simulate_to_file
from caloquant.ui import progress_bar

#: Beam energies (GeV) of the default reference samples.
DEFAULT_ENERGIES = (10.0, 50.0, 100.0, 200.0)
#: Targets ``--to`` accepts.
TARGETS = ("geant4",)


def read_reference(path: str | os.PathLike[str]) -> ShowerSet:
    """Every shower of a fixed-energy, perpendicular reference file (or set of shards)."""
    with open_showers(path) as f:
        showers = f.read(0, len(f))
    fixed_energy(showers, str(path))
    return showers


def simulate_references(energies: Sequence[float], n: int, seed: int, directory: str | os.PathLike[str],
                        workers: int = 0, progress: bool = False) -> list[Path]:
    """``n`` Geant4-engine showers per energy into ``directory``/geant4_<E>GeV.h5 (seed + E rounded)."""
    paths = []
    for e in energies:
        path = Path(directory) / f"geant4_{e:g}GeV.h5"
        if not path.exists():
            simulate_to_file(path, n, e, seed=seed + round(e), engine="geant4", workers=workers, progress=progress)
        paths.append(path)
    return paths


def describe_references(samples: Sequence[ShowerSet]) -> str:
    """What the tuning was fitted to: the generator and data of the first sample, the sizes and energies."""
    attrs = samples[0].attrs
    what = str(attrs.get("generator", "reference samples"))
    if attrs.get("geant4_data"):
        what += f" on {attrs['geant4_data']}"
    sizes = sorted({len(s) for s in samples})
    energies = ", ".join(f"{float(s.energy[0]):g}" for s in samples)
    return f"{what}; {'/'.join(map(str, sizes))} showers at {energies} GeV"


def calibrate(
    output: str | os.PathLike[str],
    *,
    target: str = "geant4",
    references: Sequence[str | os.PathLike[str]] = (),
    energies: Sequence[float] = DEFAULT_ENERGIES,
    n: int = 1000,
    seed: int = 7000,
    workers: int = 0,
    keep_references: str | os.PathLike[str] | None = None,
    n_fit: int = 300,
    n_check: int = 1000,
    max_steps: int = 15,
    table: str | os.PathLike[str] | None = None,
    overwrite: bool = False,
    progress: bool = False,
) -> CalibrationResult:
    """Fit a GFlash tuning to ``references`` (or to ``n`` new Geant4 showers per energy), write it to ``output``
    and, if asked, the before/after table to ``table``."""
    if target not in TARGETS:
        raise InputError(f"--to {target!r}: calibration targets are {', '.join(TARGETS)}")
    check_writable(output, overwrite=overwrite)
    if table is not None:
        check_writable(table, overwrite=overwrite)
    if not references:
        if n < 50:
            raise InputError(f"--n {n}: calibration needs at least 50 reference showers per energy")
        with tempfile.TemporaryDirectory(prefix="caloquant-calibrate-") as tmp:
            folder = keep_references or tmp
            Path(folder).mkdir(parents=True, exist_ok=True)
            paths = simulate_references(energies, n, seed, folder, workers, progress)
            samples = [read_reference(p) for p in paths]
    else:
        samples = [read_reference(p) for p in references]
    samples.sort(key=lambda s: float(s.energy[0]))
    expected = max_steps * (N_PARAMETERS + 1)  # one evaluation and one Jacobian per step
    with progress_bar(expected, "calibrate", unit="fits", enabled=progress) as advance:
        result = fit_gflash(samples, fitted_to=describe_references(samples), n_fit=n_fit, n_check=n_check,
                            max_steps=max_steps, on_evaluation=lambda k, cost: advance(1))
        advance(max(0, expected - result.evaluations))  # converged before the last allowed step
    result.tuning.save(output)
    if table is not None:
        write_text_atomic(table, results_table(result) + "\n")
    return result


def results_table(result: CalibrationResult) -> str:
    """Markdown: per energy the reference, GFlash before and after tuning (deviations from the reference)."""
    rows = []
    for ref, before, after in zip(result.reference, result.before, result.after):
        rows += [("Geant4", ref, None), ("GFlash", before, ref), ("GFlash tuned", after, ref)]
    return comparison_table(rows)
