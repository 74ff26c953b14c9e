"""Energy calibration of the sampling calorimeter: one weight per sampling structure (thin, thick layers).

E_rec = sum_s w_s * (visible energy in the layers of structure s), with the weights fitted by least squares
on the relative residual (E_rec - E) / E, as one calibrates a test-beam ECAL. The raw visible sum stays
non-linear (deeper showers reach the less sampled rear and leak); the calibration is applied on top.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import curve_fit

from caloquant.data import ShowerSet
from caloquant.geometry import CLIC_ECAL, Calorimeter


def structure_sums(showers: ShowerSet, calorimeter: Calorimeter = CLIC_ECAL) -> np.ndarray:
    """Visible energy per sampling structure, shape (N, n_structures), GeV."""
    layers = showers.ecal.sum(axis=(1, 2), dtype=np.float64)
    idx = calorimeter.layer_structure
    return np.stack([layers[:, idx == s].sum(axis=1) for s in range(len(calorimeter.structures))], axis=1)


def fit_weights(showers: ShowerSet, calorimeter: Calorimeter = CLIC_ECAL) -> np.ndarray:
    """Per-structure weights minimising sum ((E_rec - E)/E)^2."""
    a = structure_sums(showers, calorimeter) / showers.energy[:, None]
    w, *_ = np.linalg.lstsq(a, np.ones(len(showers)), rcond=None)
    return w


def calibrated_energy(showers: ShowerSet, weights: np.ndarray, calorimeter: Calorimeter = CLIC_ECAL) -> np.ndarray:
    """Reconstructed energy per shower, GeV."""
    return structure_sums(showers, calorimeter) @ weights


def fit_resolution(energies: np.ndarray, rel_sigma: np.ndarray, rel_sigma_err: np.ndarray | None = None
                   ) -> tuple[float, float]:
    """Fit sigma/E = a/sqrt(E) (+) b (quadrature); returns (a, b)."""
    def model(e: np.ndarray, a: float, b: float) -> np.ndarray:
        return np.sqrt(a**2 / e + b**2)

    p, _ = curve_fit(model, energies, rel_sigma, p0=[0.15, 0.01], sigma=rel_sigma_err, bounds=(0, [1.0, 0.5]))
    return float(p[0]), float(abs(p[1]))
