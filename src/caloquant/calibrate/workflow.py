"""``caloquant calibrate --to geant4``: reference samples (read, or simulated with the Geant4 engine), the fit,
the tuning file and the before/after table.

Every reference is checked by its contents, not its name: one fixed energy inside the engine's range, at least
``MIN_REFERENCE_SHOWERS`` perpendicular showers, and a ``generator`` attribute naming the target (Geant4) or
none at all (a full simulation from elsewhere, labelled "reference"); files made by caloquant's GFlash or
generative models are refused, and all references must come from one simulation. Kept references
(``keep_references``) are reused only when they hold the requested energy and number of showers. The outputs are
locked for the whole run (``OutputLock``) and written together at the end, each atomically.
"""

from __future__ import annotations

import contextlib
import math
import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from caloquant._atomic import OutputLock, atomic_path, check_writable, check_writable_dir
from caloquant.calibrate.fit import N_PARAMETERS, CalibrationResult, fit_gflash
from caloquant.calibrate.summary import comparison_table, fixed_energy
from caloquant.data.formats import ShowerSet
from caloquant.data.shards import open_showers
from caloquant.errors import InputError
from caloquant.simulate.engine import E_MAX_GEV, E_MIN_GEV, check_count
from caloquant.simulate.run import simulate_to_file
from caloquant.ui import progress_bar

#: Beam energies (GeV) of the default reference samples.
DEFAULT_ENERGIES = (10.0, 50.0, 100.0, 200.0)
#: Targets ``--to`` accepts, with the start of the ``generator`` attribute of their files (also the table label).
TARGETS = {"geant4": "Geant4"}
#: Fewest showers per reference energy (and per GFlash sample of the fit and the check).
MIN_REFERENCE_SHOWERS = 50
#: Label of references whose files record no generator (a full simulation made elsewhere).
UNKNOWN_LABEL = "reference"


@dataclass(frozen=True)
class Reference:
    """A checked reference sample: its file, showers, energy and what made it."""

    path: str
    showers: ShowerSet
    energy: float
    generator: str | None  # the file's ``generator`` attribute; None when it records none


def read_reference(path: str | os.PathLike[str]) -> ShowerSet:
    """Every shower of a fixed-energy, perpendicular reference file (or set of shards)."""
    with open_showers(path) as f:
        showers = f.read(0, len(f))
    fixed_energy(showers, str(path))
    return showers


def check_reference(path: str | os.PathLike[str], target: str = "geant4") -> Reference:
    """Read ``path`` and check that it can serve as a ``target`` reference: one fixed energy in the engine's
    range, at least MIN_REFERENCE_SHOWERS perpendicular showers, made by ``target`` (or by an unrecorded
    generator)."""
    showers = read_reference(path)
    energy = fixed_energy(showers, str(path))
    if len(showers) < MIN_REFERENCE_SHOWERS:
        raise InputError(f"{path}: {len(showers)} showers; a calibration reference needs at least "
                         f"{MIN_REFERENCE_SHOWERS} per energy")
    if not E_MIN_GEV <= energy <= E_MAX_GEV:
        raise InputError(f"{path}: showers of {energy:g} GeV, outside the {E_MIN_GEV:g}-{E_MAX_GEV:g} GeV the "
                         "GFlash engine simulates")
    attrs = showers.attrs
    generator = attrs.get("generator")
    engine = attrs.get("engine")
    expected = TARGETS[target]
    if generator is None and engine is None:
        return Reference(str(path), showers, energy, None)
    if not (isinstance(generator, str) and generator.startswith(expected) and engine in (None, target)):
        what = repr(generator) if generator is not None else f"the {engine} engine"
        raise InputError(f"{path}: made by {what[:80]}, not {expected}; calibrate --to {target} needs {expected} "
                         f"samples (caloquant simulate --engine {target} --energy E --angle 90)")
    return Reference(str(path), showers, energy, generator)


def check_same_simulation(refs: Sequence[Reference]) -> None:
    """All references from one simulation: one generator (or none recorded) and one Geant4 data set."""
    for key in ("generator", "geant4_data"):
        seen: dict[object, str] = {}
        for r in refs:
            seen.setdefault(r.showers.attrs.get(key), r.path)
        if len(seen) > 1:
            (a, pa), (b, pb) = list(seen.items())[:2]
            raise InputError(f"references from different simulations: {key} {str(a)[:60]!r} ({pa}) and "
                             f"{str(b)[:60]!r} ({pb})")


def check_energies(energies: Sequence[float], what: str = "--energies") -> list[float]:
    """Two or more distinct, finite beam energies within the engine's range."""
    values = [float(e) for e in energies]
    if len(values) < 2:
        raise InputError(f"{what}: calibration needs two or more energies, got {len(values)}")
    for e in values:
        if not (math.isfinite(e) and E_MIN_GEV <= e <= E_MAX_GEV):
            raise InputError(f"{what}: energy {e:g} GeV is outside {E_MIN_GEV:g}-{E_MAX_GEV:g} GeV")
    names = [f"{e:g}" for e in values]
    if len(set(names)) != len(names):
        twice = next(n for n in names if names.count(n) > 1)
        raise InputError(f"{what}: energy {twice} GeV is given twice")
    return values


def reference_path(directory: str | os.PathLike[str], energy: float) -> Path:
    """Where ``simulate_references`` keeps the sample at ``energy``."""
    return Path(directory) / f"geant4_{energy:g}GeV.h5"


def simulate_references(energies: Sequence[float], n: int, seed: int, directory: str | os.PathLike[str],
                        workers: int = 0, progress: bool = False) -> list[Path]:
    """``n`` Geant4-engine showers per energy into ``directory``/geant4_<E>GeV.h5 (seed + E rounded); a file
    already there is kept (``kept_reference`` checks that it holds what its name says)."""
    paths = []
    for e in energies:
        path = reference_path(directory, e)
        if not path.exists():
            simulate_to_file(path, n, e, seed=seed + round(e), engine="geant4", workers=workers, progress=progress)
        paths.append(path)
    return paths


def kept_reference(path: str | os.PathLike[str], energy: float, n: int) -> Reference:
    """A kept Geant4 reference, checked: ``n`` Geant4 showers at ``energy`` (whatever its name says)."""
    ref = check_reference(path, "geant4")
    advice = "remove it to simulate it afresh"
    if ref.generator is None:
        raise InputError(f"{path}: records no generator, not a Geant4-engine sample; {advice}")
    if abs(ref.energy - energy) > 1e-6 * energy:
        raise InputError(f"{path}: holds {ref.energy:g} GeV showers, not {energy:g} GeV; {advice}")
    if len(ref.showers) != n:
        raise InputError(f"{path}: holds {len(ref.showers)} showers, --n asks for {n}; {advice}, or pass "
                         f"--n {len(ref.showers)}")
    return ref


def describe_references(samples: Sequence[ShowerSet]) -> str:
    """What the tuning was fitted to: the generator and data of the samples, their sizes and energies."""
    attrs = samples[0].attrs
    what = str(attrs.get("generator", "reference samples (generator not recorded)"))
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
    energies: Sequence[float] | None = None,
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
    """Fit a GFlash tuning to ``references`` (or to ``n`` new Geant4 showers at each of ``energies``, default
    DEFAULT_ENERGIES), write it to ``output`` and, if asked, the before/after table to ``table``.

    Every option is checked before anything is simulated; the outputs are locked for the whole run and appear
    only when the fit is done."""
    if target not in TARGETS:
        raise InputError(f"--to {target!r}: calibration targets are {', '.join(TARGETS)}")
    if references:
        if energies is not None:
            raise InputError("--energies applies to simulated references; the energies of --reference files are "
                             "read from them")
        if keep_references is not None:
            raise InputError("--keep-references keeps simulated references; it does not apply with --reference")
    else:
        energies = check_energies(DEFAULT_ENERGIES if energies is None else energies)
        check_count(n)
        if n < MIN_REFERENCE_SHOWERS:
            raise InputError(f"--n {n}: calibration needs at least {MIN_REFERENCE_SHOWERS} reference showers per "
                             "energy")
        if seed < 0:
            raise InputError(f"--seed must be >= 0, got {seed}")
        if workers < 0:
            raise InputError(f"--workers must be positive, got {workers}")
    for value, option in ((n_fit, "--fit-showers"), (n_check, "--check-showers")):
        check_count(value, option)
        if value < MIN_REFERENCE_SHOWERS:
            raise InputError(f"{option} {value}: calibration needs at least {MIN_REFERENCE_SHOWERS} GFlash showers "
                             "per energy")
    if max_steps <= 0:
        raise InputError(f"--steps must be positive, got {max_steps}")
    if table is not None and os.path.abspath(table) == os.path.abspath(output):
        raise InputError(f"--table {table}: the same file as the tuning (-o)")
    outputs = [output] if table is None else [output, table]
    for path in outputs:
        check_writable(path)  # a folder to hold the lock
    with contextlib.ExitStack() as locks:
        for path in outputs:
            locks.enter_context(OutputLock(path))
            check_writable(path, overwrite=overwrite)  # now that no other run can write it
        if references:
            refs = [check_reference(p, target) for p in references]
        else:
            assert energies is not None
            refs = _simulated_references(energies, n, seed, workers, keep_references, progress)
        check_same_simulation(refs)
        refs.sort(key=lambda r: r.energy)
        for a, b in zip(refs, refs[1:]):
            if a.energy == b.energy:
                raise InputError(f"{a.path} and {b.path}: both hold {a.energy:g} GeV showers; give one reference "
                                 "per energy")
        samples = [r.showers for r in refs]
        label = TARGETS[target] if refs[0].generator is not None else UNKNOWN_LABEL
        expected = max_steps * (N_PARAMETERS + 1)  # one evaluation and one Jacobian per step
        with progress_bar(expected, "calibrate", unit="fits", enabled=progress) as advance:
            result = fit_gflash(samples, fitted_to=describe_references(samples), label=label, n_fit=n_fit,
                                n_check=n_check, max_steps=max_steps, on_evaluation=lambda k, cost: advance(1))
            advance(max(0, expected - result.evaluations))  # converged before the last allowed step
        with contextlib.ExitStack() as writes:  # both files appear together, or neither
            tmp = writes.enter_context(atomic_path(output))
            tmp.write_text(result.tuning.to_json(), encoding="utf-8")
            if table is not None:
                writes.enter_context(atomic_path(table)).write_text(results_table(result) + "\n", encoding="utf-8")
    return result


def _simulated_references(energies: Sequence[float], n: int, seed: int, workers: int,
                          keep: str | os.PathLike[str] | None, progress: bool) -> list[Reference]:
    """Geant4-engine references at ``energies``, simulated into ``keep`` (kept files reused) or a temporary
    folder."""
    with tempfile.TemporaryDirectory(prefix="caloquant-calibrate-") as tmp:
        folder = Path(tmp)
        if keep is not None:
            folder = check_writable_dir(keep)
            folder.mkdir(exist_ok=True)
            for e in energies:  # check kept files before simulating anything
                if reference_path(folder, e).exists():
                    kept_reference(reference_path(folder, e), e, n)
        paths = simulate_references(energies, n, seed, folder, workers, progress)
        return [kept_reference(p, e, n) for p, e in zip(paths, energies)]


def results_table(result: CalibrationResult) -> str:
    """Markdown: per energy the reference (labelled by what made it), GFlash before and after tuning (deviations
    from the reference)."""
    rows = []
    for ref, before, after in zip(result.reference, result.before, result.after):
        rows += [(result.label, ref, None), ("GFlash", before, ref), ("GFlash tuned", after, ref)]
    return comparison_table(rows)
