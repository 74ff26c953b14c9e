"""Corrections on top of the GFlash parameterisation, fitted to a full simulation (``caloquant calibrate``).

GFlash parameterisations are meant to be tuned to the full simulation of the detector at hand (Grindhammer &
Peters; Geant4's ``GFlashSamplingShowerTuning``). A ``GFlashTuning`` holds the few corrections that
``caloquant calibrate --to geant4`` fits: a visible-energy scale per sampling structure, a scale of the
sampling-fluctuation term, shifts of the mean ln T_max and ln alpha (each with a slope in ln E), a scale of
their shower-to-shower spread, and scales of the radial core and tail radii. The identity (the default) leaves
the parameterisation untouched, shower for shower. Tunings are JSON files; ``--tuning geant4`` names the one
shipped with the package.
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
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "fitted_to":
                continue
            values = value if isinstance(value, tuple) else (value,)
            if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
                raise InputError(f"GFlash tuning: {f.name} must be finite numbers, got {value!r}")
        positive = [*self.sampling_scale, self.stochastic_scale, self.profile_fluctuation_scale, self.core_scale,
                    self.tail_scale]
        if any(v <= 0 for v in positive):
            raise InputError("GFlash tuning: scales must be positive")

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
            raise DataFormatError(f"{where}: format {data.get('format')!r}, expected {TUNING_FORMAT!r}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known - {"format"})
        if unknown:
            raise DataFormatError(f"{where}: unknown field {unknown[0]!r}")
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

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the tuning as JSON (atomically)."""
        return write_text_atomic(path, json.dumps(self.to_dict(), indent=2) + "\n")

    def describe(self) -> str:
        """One line for file attributes and logs."""
        if self.is_identity:
            return "none"
        return json.dumps(self.to_dict(), separators=(",", ":"))


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
        text = path.read_text()
    except FileNotFoundError:
        names = ", ".join(["none", *SHIPPED])
        raise InputError(f"GFlash tuning {str(name_or_path)!r} is neither a file nor one of {names}") from None
    except OSError as error:
        raise InputError(f"cannot read GFlash tuning {path}: {error.strerror}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise DataFormatError(f"{path}: not JSON ({error.msg}, line {error.lineno})") from None
    return GFlashTuning.from_dict(data, str(path))
