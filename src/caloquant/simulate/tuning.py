"""Corrections on top of the GFlash parameterisation, fitted to a full simulation (``caloquant calibrate``).

GFlash parameterisations are meant to be tuned to the full simulation of the detector at hand (Grindhammer &
Peters; Geant4's ``GFlashSamplingShowerTuning``). A ``GFlashTuning`` holds the few corrections that
``caloquant calibrate --to geant4`` fits: a visible-energy scale per sampling structure, a scale of the
sampling-fluctuation term, shifts of the mean ln T_max and ln alpha (each with a slope in ln E), a scale of
their shower-to-shower spread, and scales of the radial core and tail radii. The identity (the default) leaves
the parameterisation untouched, shower for shower. Tunings are JSON files; ``--tuning geant4`` names the one
shipped with the package.

Every field has a physical range (``RANGES``), checked whenever a tuning is made or loaded: the visible-energy,
fluctuation, spread and radius scales within [0.5, 2] (a tuned GFlash within a factor two of plain GFlash, whose
sampling fraction, resolution and Moliere radius are off by up to 20 %), the shifts of <ln T_max> and
<ln alpha> within +-0.4 (T_max and alpha within a factor 1.5) and their ln E slopes within +-0.07 (at most
+-0.32 more at 1 GeV, the lowest energy of the engine, where <alpha> then stays above 1.3). At every corner of
these ranges the engine gives finite showers with less visible than primary energy (0.2-2.7 times plain GFlash's)
at 1 and 1000 GeV, in about the time of plain GFlash; where the spread is widest and alpha lowest, up to 2 % of
1 GeV showers leave nothing above threshold (profiles that leak out of the back). Far outside the ranges the
engine gives all-empty or unphysical showers, fails (<alpha> <= 1), or its redraw of alpha <= 1 never ends.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from caloquant._atomic import write_text_atomic
from caloquant.errors import DataFormatError, InputError

#: Format tag of tuning files (bumped when the meaning of a field changes).
TUNING_FORMAT = "caloquant-gflash-tuning/1"
#: Energy (GeV) at which the ln E slopes of the longitudinal shifts vanish.
PIVOT_GEV = 100.0
#: Tunings shipped with the package, by name.
SHIPPED = {"geant4": Path(__file__).with_name("tunings") / "geant4.json"}
#: Physical range [low, high] of every numeric field (each sampling scale for ``sampling_scale``).
RANGES: dict[str, tuple[float, float]] = {
    "sampling_scale": (0.5, 2.0),
    "stochastic_scale": (0.5, 2.0),
    "ln_t_shift": (-0.4, 0.4),
    "ln_t_slope": (-0.07, 0.07),
    "ln_alpha_shift": (-0.4, 0.4),
    "ln_alpha_slope": (-0.07, 0.07),
    "profile_fluctuation_scale": (0.5, 2.0),
    "core_scale": (0.5, 2.0),
    "tail_scale": (0.5, 2.0),
}
#: Most sampling scales a tuning may hold (a calorimeter has a few sampling structures).
MAX_STRUCTURES = 16
#: Longest ``fitted_to`` text (it is stored in the attributes of every file simulated with the tuning).
MAX_FITTED_TO = 4000
#: Largest tuning file read (a tuning is well under 2 kB).
MAX_FILE_BYTES = 1 << 20


@dataclass(frozen=True)
class GFlashTuning:
    """Corrections applied by ``ShowerSimulator``; the defaults are the identity (plain GFlash)."""

    #: Visible-energy scale per sampling structure (thin, thick, ...); empty means 1 for every structure.
    sampling_scale: tuple[float, ...] = ()
    #: Scale of the per-layer sampling-fluctuation (stochastic) term.
    stochastic_scale: float = 1.0
    #: <ln T_max> += ln_t_shift + ln_t_slope * ln(E / PIVOT_GEV): moves the longitudinal peak.
    ln_t_shift: float = 0.0
    ln_t_slope: float = 0.0
    #: <ln alpha> += ln_alpha_shift + ln_alpha_slope * ln(E / PIVOT_GEV): changes the longitudinal width.
    ln_alpha_shift: float = 0.0
    ln_alpha_slope: float = 0.0
    #: Scale of sigma(ln T_max) and sigma(ln alpha): the shower-to-shower fluctuation of the longitudinal profile
    #: (and so of the rear leakage, which dominates the resolution at high energy).
    profile_fluctuation_scale: float = 1.0
    #: Scales of the radial core radius R_C and tail radius R_T.
    core_scale: float = 1.0
    tail_scale: float = 1.0
    #: What the tuning was fitted to (free text, recorded in the files simulated with it).
    fitted_to: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.fitted_to, str) or len(self.fitted_to) > MAX_FITTED_TO:
            raise InputError(f"GFlash tuning: fitted_to must be a string of at most {MAX_FITTED_TO} characters, "
                             f"got {_short(self.fitted_to)}")
        if not isinstance(self.sampling_scale, tuple) or len(self.sampling_scale) > MAX_STRUCTURES:
            raise InputError(f"GFlash tuning: sampling_scale must be a list of at most {MAX_STRUCTURES} numbers, "
                             f"got {_short(self.sampling_scale)}")
        for name, (low, high) in RANGES.items():
            value = getattr(self, name)
            checked = []
            for v in value if name == "sampling_scale" else (value,):
                x = _number(name, v)
                if not low <= x <= high:
                    raise InputError(f"GFlash tuning: {name} {x:g} is outside its physical range "
                                     f"[{low:g}, {high:g}]")
                checked.append(x)
            object.__setattr__(self, name, tuple(checked) if name == "sampling_scale" else checked[0])

    @property
    def is_identity(self) -> bool:
        """True when the tuning changes nothing."""
        return self.parameters() == IDENTITY.parameters() and all(s == 1.0 for s in self.sampling_scale)

    def structure_scale(self, n_structures: int) -> np.ndarray:
        """The visible-energy scale of each of ``n_structures`` structures."""
        if not self.sampling_scale:
            return np.ones(n_structures)
        if len(self.sampling_scale) != n_structures:
            raise InputError(f"GFlash tuning has {len(self.sampling_scale)} sampling scales, the calorimeter "
                             f"{n_structures} structures")
        return np.asarray(self.sampling_scale, dtype=np.float64)

    def ln_shifts(self, energy_gev: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The shifts of <ln T_max> and <ln alpha> at ``energy_gev``."""
        x = np.log(np.asarray(energy_gev, dtype=np.float64) / PIVOT_GEV)
        return self.ln_t_shift + self.ln_t_slope * x, self.ln_alpha_shift + self.ln_alpha_slope * x

    def parameters(self) -> dict[str, float]:
        """The scalar corrections by name (what the fit varies besides the sampling scales)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("sampling_scale", "fitted_to")}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, with the format tag."""
        return {"format": TUNING_FORMAT, **asdict(self), "sampling_scale": list(self.sampling_scale)}

    @classmethod
    def from_dict(cls, data: Any, where: str = "tuning") -> GFlashTuning:
        """Checked construction from JSON data; a wrong field is named in a one-line DataFormatError."""
        if not isinstance(data, dict):
            raise DataFormatError(f"{where}: not a JSON object")
        if data.get("format") != TUNING_FORMAT:
            raise DataFormatError(f"{where}: format {_short(data.get('format'))}, expected {TUNING_FORMAT!r}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known - {"format"})
        if unknown:
            raise DataFormatError(f"{where}: unknown field {_short(unknown[0])}")
        kw = {k: v for k, v in data.items() if k in known}
        if "sampling_scale" in kw:
            if not isinstance(kw["sampling_scale"], list):
                raise DataFormatError(f"{where}: sampling_scale must be a list of numbers")
            kw["sampling_scale"] = tuple(kw["sampling_scale"])
        if not isinstance(kw.get("fitted_to", ""), str):
            raise DataFormatError(f"{where}: fitted_to must be a string")
        try:
            return cls(**kw)
        except InputError as error:
            raise DataFormatError(f"{where}: {error}") from None

    def to_json(self) -> str:
        """The text of a tuning file."""
        return json.dumps(self.to_dict(), indent=2) + "\n"

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the tuning as JSON (atomically)."""
        return write_text_atomic(path, self.to_json())

    def describe(self) -> str:
        """One line for file attributes and logs."""
        if self.is_identity:
            return "none"
        return json.dumps(self.to_dict(), separators=(",", ":"))


def _short(value: Any) -> str:
    """``repr(value)``, cut to fit a one-line message."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _number(name: str, value: Any) -> float:
    """A finite real number (not a bool), as float; anything else is an InputError naming the field."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise InputError(f"GFlash tuning: {name} must be a number, got {_short(value)}")
    try:
        x = float(value)
    except OverflowError:  # an integer beyond the float range
        x = math.inf
    if not math.isfinite(x):
        raise InputError(f"GFlash tuning: {name} must be a finite number, got {_short(value)}")
    return x


IDENTITY = GFlashTuning()


def load_tuning(name_or_path: GFlashTuning | str | os.PathLike[str] | None) -> GFlashTuning:
    """The identity (None or ``none``), a shipped tuning by name (``geant4``), a tuning JSON file, or a
    GFlashTuning as given."""
    if isinstance(name_or_path, GFlashTuning):
        return name_or_path
    if name_or_path is None or str(name_or_path) == "none":
        return IDENTITY
    path = SHIPPED.get(str(name_or_path), Path(name_or_path))
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_FILE_BYTES + 1)
    except FileNotFoundError:
        names = ", ".join(["none", *SHIPPED])
        raise InputError(f"GFlash tuning {str(name_or_path)!r} is neither a file nor one of {names}") from None
    except OSError as error:
        raise InputError(f"cannot read GFlash tuning {path}: {error.strerror}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise DataFormatError(f"{path}: over {MAX_FILE_BYTES // 1024} kB, not a GFlash tuning file")
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise DataFormatError(f"{path}: not a text file (a GFlash tuning is JSON)") from None
    except json.JSONDecodeError as error:
        raise DataFormatError(f"{path}: not JSON ({error.msg}, line {error.lineno})") from None
    except RecursionError:
        raise DataFormatError(f"{path}: not a GFlash tuning (JSON nested too deeply)") from None
    return GFlashTuning.from_dict(data, str(path))
