"""Primary-energy bins for binned metrics: the 3DGAN bins (all, 50 ... 500 GeV +- 5) or reference quantiles."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

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

    @classmethod
    def gan3d(cls, centres: Sequence[float] = GAN3D_CENTRES, tolerance: float = GAN3D_TOLERANCE) -> EnergyBins:
        """The 3DGAN analysis bins: all showers, then E-tol < E_p < E+tol for each centre."""
        if tolerance <= 0:
            raise InputError(f"energy-bin tolerance must be positive, got {tolerance}")
        return cls(tuple((float(c) - tolerance, float(c) + tolerance) for c in centres), True, "3dgan")

    @classmethod
    def quantiles(cls, energy: np.ndarray, n: int = DEFAULT_QUANTILE_BINS) -> EnergyBins:
        """``n`` bins holding equal shares of the reference spectrum (plus the all-showers bin)."""
        if n < 1:
            raise InputError(f"number of quantile energy bins must be >= 1, got {n}")
        edges = np.quantile(np.asarray(energy, dtype=np.float64), np.linspace(0.0, 1.0, n + 1))
        edges[-1] = np.nextafter(edges[-1], np.inf)
        pairs = tuple((float(a), float(b)) for a, b in zip(edges[:-1], edges[1:]) if b > a)
        return cls(pairs, True, "quantile")

    @classmethod
    def auto(cls, reference_energy: np.ndarray) -> EnergyBins:
        """3DGAN bins for a discrete reference spectrum, quantile bins for a continuous one."""
        distinct = np.unique(np.round(np.asarray(reference_energy, dtype=np.float64), 3))
        if distinct.size > MAX_DISCRETE_ENERGIES:
            return cls.quantiles(reference_energy)
        return cls.gan3d()

    @property
    def labels(self) -> list[str]:
        head = ["all"] if self.include_all else []
        if self.kind == "3dgan":
            return head + [f"{(a + b) / 2:g} GeV" for a, b in self.intervals]
        return head + [f"{a:.0f}-{b:.0f} GeV" for a, b in self.intervals]

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


BinsSpec = EnergyBins | Sequence[float] | int | str | None


def resolve_bins(bins: BinsSpec, reference_energy: np.ndarray) -> EnergyBins:
    """Turn a user bin choice into EnergyBins.

    None or "auto": automatic; "3dgan": the 3DGAN bins; "quantile" or an int n: n reference-quantile bins;
    a sequence of energies: 3DGAN-style bins of +-5 GeV around them.
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
