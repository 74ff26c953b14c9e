"""GFlash (Grindhammer-Peters) sampling-calorimeter parameterisation as pure, vectorised functions.

Formulas and constants: hep-ex/0001020 Appendix A as transcribed in Geant4 ``GFlashSamplingShowerTuning`` and
CMSSW ``EMECALShowerParametrization`` (see docs/physics.md). Energies in GeV unless a name says MeV; depths in
radiation lengths; radii in Moliere radii. Every function broadcasts over numpy arrays.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np
from numba import njit

from caloquant.geometry import SamplingStructure


@dataclass(frozen=True)
class Medium:
    """The numbers of a sampling structure that enter the parameterisation."""

    Z: float
    ec_mev: float
    inv_fs: float  # 1 / F_S
    one_minus_ehat: float  # 1 - e/mip

    @classmethod
    def of(cls, s: SamplingStructure) -> Medium:
        return cls(s.z_eff, s.critical_energy_mev, 1.0 / s.sampling_frequency, 1.0 - s.e_over_mip)


@dataclass(frozen=True)
class LongitudinalParams:
    """Means, widths and correlation of (ln T, ln alpha) for individual profiles (sampling calorimeter)."""

    mean_ln_t: np.ndarray
    sigma_ln_t: np.ndarray
    mean_ln_alpha: np.ndarray
    sigma_ln_alpha: np.ndarray
    rho: np.ndarray

    def take(self, index: np.ndarray) -> LongitudinalParams:
        """The rows ``index`` (to redraw a subset of showers)."""
        return LongitudinalParams(*(getattr(self, f.name)[index] for f in fields(self)))


def longitudinal_params(energy_gev: np.ndarray, m: Medium) -> LongitudinalParams:
    """<ln T>, sigma(ln T), <ln alpha>, sigma(ln alpha), rho for a sampling calorimeter (GP App. A.2)."""
    ln_y = np.log(np.asarray(energy_gev, dtype=np.float64) * 1000.0 / m.ec_mev)
    t_hom = ln_y - 0.812
    a_hom = 0.81 + (0.458 + 2.26 / m.Z) * ln_y
    t_sam = t_hom - 0.55 * m.inv_fs - 0.69 * m.one_minus_ehat
    a_sam = a_hom - 0.476 * m.inv_fs
    return LongitudinalParams(
        mean_ln_t=np.log(np.maximum(t_sam, 0.1)),
        sigma_ln_t=1.0 / (-2.5 + 1.25 * ln_y),
        mean_ln_alpha=np.log(np.maximum(a_sam, 1.05)),
        sigma_ln_alpha=1.0 / (-0.82 + 0.79 * ln_y),
        rho=0.784 - 0.023 * ln_y,
    )


def correlated_profile(p: LongitudinalParams, z1: np.ndarray, z2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Individual (T, alpha) from two standard normals with the (ln T, ln alpha) correlation rho."""
    a = np.sqrt((1.0 + p.rho) / 2.0)
    b = np.sqrt((1.0 - p.rho) / 2.0)
    t = np.exp(p.mean_ln_t + p.sigma_ln_t * (a * z1 + b * z2))
    alpha = np.exp(p.mean_ln_alpha + p.sigma_ln_alpha * (a * z1 - b * z2))
    return t, alpha


def spot_profile(t_max: np.ndarray, alpha: np.ndarray, m: Medium) -> tuple[np.ndarray, np.ndarray]:
    """(T_spot, alpha_spot) of the spot longitudinal profile, homogeneous x sampling factors."""
    t_s = t_max * (0.698 + 0.00212 * m.Z) * (0.813 + 0.0019 * m.Z)
    a_s = alpha * (0.639 + 0.00334 * m.Z) * (0.844 + 0.0026 * m.Z)
    return t_s, np.maximum(a_s, 1.05)


def number_of_spots(energy_gev: np.ndarray, stochastic_term: float) -> np.ndarray:
    """N_S = 10.3 / c * E^0.959 for a sampling calorimeter with sigma/E = c / sqrt(E)."""
    return 10.3 / stochastic_term * np.asarray(energy_gev, dtype=np.float64) ** 0.959


def tau_scale(t_max: np.ndarray, alpha: np.ndarray, mean_ln_alpha: np.ndarray) -> np.ndarray:
    """T' such that tau = t / T': <t>_i (abar - 1) / abar with abar = exp(<ln alpha>)."""
    abar = np.exp(mean_ln_alpha)
    beta = (alpha - 1.0) / t_max
    return alpha / beta * (abar - 1.0) / abar


@njit(cache=True)
def radial_params(
    energy_gev: float, tau: float, Z: float, inv_fs: float, one_minus_ehat: float
) -> tuple[float, float, float]:
    """Core radius R_C, tail radius R_T (Moliere units) and core weight p at depth tau, sampling-corrected.

    Scalar and compiled, because it runs once per energy spot. k4 uses the slope 0.0421 of CMSSW and the
    GP paper transcriptions (Geant4 has 0.0412).
    """
    ln_e = math.log(energy_gev)
    r_c = (0.0251 + 0.00319 * ln_e) + (0.1162 - 0.000381 * Z) * tau
    k1 = 0.659 - 0.00309 * Z
    k2, k3 = 0.645, -2.59
    k4 = 0.3585 + 0.0421 * ln_e
    r_t = k1 * (math.exp(k3 * (tau - k2)) + math.exp(k4 * (tau - k2)))
    p1 = 2.632 - 0.00094 * Z
    p2 = 0.401 + 0.00187 * Z
    p3 = 1.313 - 0.0686 * ln_e
    x = (p2 - tau) / p3
    p = p1 * math.exp(x - math.exp(x))
    e_tau = math.exp(-tau)
    r_c = r_c - 0.0203 * one_minus_ehat + 0.0397 * inv_fs * e_tau
    r_t = r_t - 0.14 * one_minus_ehat - 0.495 * inv_fs * e_tau
    p = p + one_minus_ehat * (0.348 - 0.642 * inv_fs * math.exp(-((tau - 1.0) ** 2)))
    return max(r_c, 1e-3), max(r_t, 1e-2), min(max(p, 0.0), 1.0)


def mean_depth(energy_gev: np.ndarray, m: Medium) -> np.ndarray:
    """Depth of the average longitudinal centre of gravity <t> = alpha/beta (X0), for centring windows."""
    p = longitudinal_params(energy_gev, m)
    t = np.exp(p.mean_ln_t)
    a = np.exp(p.mean_ln_alpha)
    return a * t / (a - 1.0)
