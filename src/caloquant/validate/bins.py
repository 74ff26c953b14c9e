"""Primary-energy bins for binned metrics: the 3DGAN bins (all, 50 ... 500 GeV +- 5), bins around given energies,
or reference quantiles. Automatic bins come from the reference (its energies, or its quantiles), so none is empty
in it; ``requested`` tells the verdict whether a user asked for the bins (an empty requested bin vetoes a verdict,
an empty automatic one is only reported). Angle bins (``AngleBins``) split a tilted reference by incidence angle
for the tilt comparison."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from caloquant.errors import InputError

#: Analysis energies of the 3DGAN validation (GeV) and the half-width of each bin.
GAN3D_CENTRES = (50.0, 100.0, 200.0, 250.0, 300.0, 400.0, 500.0)
GAN3D_TOLERANCE = 5.0
#: A reference with more distinct energies than this is treated as a continuous spectrum.
MAX_DISCRETE_ENERGIES = 32
DEFAULT_QUANTILE_BINS = 6


@dataclass(frozen=True)
class EnergyBins:
    """Closed-open energy intervals [low, high) in GeV; ``include_all`` adds a first bin with every shower."""

    intervals: tuple[tuple[float, float], ...]
    include_all: bool = True
    kind: str = "custom"
    requested: bool = True

    @classmethod
    def gan3d(cls, centres: Sequence[float] = GAN3D_CENTRES, tolerance: float = GAN3D_TOLERANCE) -> EnergyBins:
        """The 3DGAN analysis bins: all showers, then E-tol < E_p < E+tol for each centre (finite, positive and
        distinct energies in GeV)."""
        if not (np.isfinite(tolerance) and tolerance > 0):
            raise InputError(f"energy-bin tolerance must be positive, got {tolerance}")
        values = [float(c) for c in centres]
        if not values:
            raise InputError("no energy bins given: list at least one energy in GeV")
        for c in values:
            if not (np.isfinite(c) and c > 0):
                raise InputError(f"energy bin {c:g} GeV: bin energies must be finite and positive")
        if len(set(values)) != len(values):
            twice = sorted({c for c in values if values.count(c) > 1})
            raise InputError(f"energy bin {twice[0]:g} GeV is given twice")
        return cls(tuple((c - tolerance, c + tolerance) for c in values), True, "3dgan")

    @classmethod
    def energies(cls, reference_energy: np.ndarray) -> EnergyBins:
        """Automatic bins of a discrete spectrum: one 3DGAN-style bin around each energy present in the reference
        (+- 5 GeV, or half the smallest gap between its energies when that is narrower)."""
        distinct = np.unique(np.round(np.asarray(reference_energy, dtype=np.float64), 3))
        tolerance = GAN3D_TOLERANCE
        if distinct.size > 1:
            tolerance = min(tolerance, float(np.diff(distinct).min()) / 2.0)
        bins = cls.gan3d(tuple(float(c) for c in distinct), tolerance)
        return replace(bins, requested=False)

    @classmethod
    def quantiles(cls, energy: np.ndarray, n: int = DEFAULT_QUANTILE_BINS) -> EnergyBins:
        """``n`` bins holding equal shares of the reference spectrum (plus the all-showers bin)."""
        if n < 1:
            raise InputError(f"number of quantile energy bins must be >= 1, got {n}")
        e = np.asarray(energy, dtype=np.float64)
        if e.size == 0 or not np.all(np.isfinite(e)):
            raise InputError("quantile energy bins need finite reference energies")
        if n > e.size:
            raise InputError(f"{n} quantile energy bins for {e.size} reference showers: use at most one per shower")
        edges = np.quantile(e, np.linspace(0.0, 1.0, n + 1))
        edges[-1] = np.nextafter(edges[-1], np.inf)
        pairs = tuple((float(a), float(b)) for a, b in zip(edges[:-1], edges[1:]) if b > a)
        return cls(pairs, True, "quantile")

    @classmethod
    def auto(cls, reference_energy: np.ndarray) -> EnergyBins:
        """Bins at the energies present in a discrete reference spectrum, quantile bins (none empty) for a
        continuous one; either way not requested (an empty bin is reported, it does not veto a verdict)."""
        distinct = np.unique(np.round(np.asarray(reference_energy, dtype=np.float64), 3))
        if distinct.size > MAX_DISCRETE_ENERGIES:
            return replace(cls.quantiles(reference_energy), requested=False)
        return cls.energies(reference_energy)

    @property
    def labels(self) -> list[str]:
        head = ["all"] if self.include_all else []
        if self.kind == "3dgan":
            return head + [f"{(a + b) / 2:g} GeV" for a, b in self.intervals]
        for digits in range(4):  # the fewest decimals that keep every label distinct (narrow quantile bins)
            labels = [f"{a:.{digits}f}-{b:.{digits}f} GeV" for a, b in self.intervals]
            if len(set(labels)) == len(labels):
                break
        return head + labels

    @property
    def centres(self) -> np.ndarray:
        """Bin centres in GeV (NaN for the all-showers bin)."""
        c = [(a + b) / 2 for a, b in self.intervals]
        return np.array(([np.nan] if self.include_all else []) + c, dtype=np.float64)

    def masks(self, energy: np.ndarray) -> np.ndarray:
        """Boolean membership (n_bins, N) of every shower in every bin (3DGAN bins exclude their edges)."""
        e = np.asarray(energy, dtype=np.float64)
        rows = [np.ones(e.shape, dtype=bool)] if self.include_all else []
        for a, b in self.intervals:
            rows.append((e > a) & (e < b) if self.kind == "3dgan" else (e >= a) & (e < b))
        return np.array(rows, dtype=bool).reshape(len(rows), e.size)

    def __len__(self) -> int:
        return len(self.intervals) + int(self.include_all)


#: A tilted reference with at most this many distinct angles gets one angle bin per angle, else quantile bins.
MAX_DISCRETE_ANGLES = 12
DEFAULT_ANGLE_BINS = 6


@dataclass(frozen=True)
class AngleBins:
    """Closed-open intervals [low, high) of the incidence angle in degrees, taken from a reference's angles: one
    bin around each angle of a discrete set (+- 0.5 degrees, or half the smallest gap), else equal-count bins."""

    intervals: tuple[tuple[float, float], ...]
    #: One bin per angle of a discrete set (labelled by the angle).
    discrete: bool = False

    @classmethod
    def of(cls, theta_rad: np.ndarray, n: int = DEFAULT_ANGLE_BINS) -> AngleBins:
        """The angle bins of a reference whose incidence angles (radians) are ``theta_rad``."""
        deg = np.degrees(np.asarray(theta_rad, dtype=np.float64))
        if deg.size == 0 or not np.all(np.isfinite(deg)):
            raise InputError("angle bins need finite reference angles")
        distinct = np.unique(np.round(deg, 2))
        if distinct.size <= MAX_DISCRETE_ANGLES:
            half = 0.5 if distinct.size == 1 else min(0.5, float(np.diff(distinct).min()) / 2.0)
            return cls(tuple((float(a - half), float(a + half)) for a in distinct), discrete=True)
        edges = np.quantile(deg, np.linspace(0.0, 1.0, min(n, deg.size) + 1))
        edges[-1] = np.nextafter(edges[-1], np.inf)
        return cls(tuple((float(a), float(b)) for a, b in zip(edges[:-1], edges[1:]) if b > a))

    @property
    def labels(self) -> list[str]:
        for digits in range(3):  # the fewest decimals that keep every label distinct
            labels = ([f"{(a + b) / 2:.{digits}f} deg" for a, b in self.intervals] if self.discrete else
                      [f"{a:.{digits}f}-{b:.{digits}f} deg" for a, b in self.intervals])
            if len(set(labels)) == len(labels):
                break
        return labels

    def masks(self, theta_rad: np.ndarray) -> np.ndarray:
        """Boolean membership (n_bins, N) of every shower (angle in radians) in every bin."""
        deg = np.degrees(np.asarray(theta_rad, dtype=np.float64))
        return np.array([(deg >= a) & (deg < b) for a, b in self.intervals], dtype=bool).reshape(len(self), deg.size)

    def __len__(self) -> int:
        return len(self.intervals)


BinsSpec = EnergyBins | Sequence[float] | int | str | None


def resolve_bins(bins: BinsSpec, reference_energy: np.ndarray) -> EnergyBins:
    """Turn a user bin choice into EnergyBins.

    None or "auto": automatic (the reference's energies when it has at most MAX_DISCRETE_ENERGIES distinct ones,
    else its quantiles); "3dgan": the 3DGAN bins; "quantile" or an int n: n reference-quantile bins; a sequence of
    energies: 3DGAN-style bins of +-5 GeV around them.
    """
    if bins is None or (isinstance(bins, str) and bins == "auto"):
        return EnergyBins.auto(reference_energy)
    if isinstance(bins, EnergyBins):
        return bins
    if isinstance(bins, str):
        if bins == "3dgan":
            return EnergyBins.gan3d()
        if bins == "quantile":
            return EnergyBins.quantiles(reference_energy)
        raise InputError(f"unknown energy bins {bins!r}; use auto, 3dgan, quantile, a count or a list of energies")
    if isinstance(bins, (int, np.integer)):
        return EnergyBins.quantiles(reference_energy, int(bins))
    return EnergyBins.gan3d(tuple(float(b) for b in bins))
