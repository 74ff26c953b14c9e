"""Effective sampling-medium quantities of the CLIC-like ECAL (physics.md 3.4 and 3.6)."""

from __future__ import annotations

import pytest

from caloquant.errors import InputError
from caloquant.geometry import (
    CLIC_ECAL,
    CLIC_THICK,
    CLIC_THIN,
    SILICON,
    TUNGSTEN,
    SamplingStructure,
    parse_window,
)


def test_critical_energies_match_pdg() -> None:
    assert TUNGSTEN.critical_energy_mev == pytest.approx(8.00, abs=0.02)
    assert SILICON.critical_energy_mev == pytest.approx(36.7, abs=0.1)
    assert TUNGSTEN.x0_mm == pytest.approx(3.50, abs=0.01)


def test_calochallenge_structure_reproduces_reference_table() -> None:
    """The DS2/3 structure (1.4 mm W + 0.3 mm Si) has published DERIVED values in physics.md 3.6."""
    s = SamplingStructure(TUNGSTEN, 1.4, SILICON, 0.3)
    assert s.mass_fractions[0] == pytest.approx(0.9748, abs=1e-4)
    assert s.z_eff == pytest.approx(72.49, abs=0.01)
    assert s.a_eff == pytest.approx(179.9, abs=0.1)
    assert s.density_eff == pytest.approx(16.31, abs=0.01)
    assert s.x0_eff_gcm2 == pytest.approx(6.880, abs=0.002)
    assert s.x0_eff_mm == pytest.approx(4.219, abs=0.002)
    assert s.critical_energy_mev == pytest.approx(8.23, abs=0.01)
    assert s.moliere_radius_mm == pytest.approx(10.87, abs=0.02)
    assert s.sampling_frequency == pytest.approx(2.48, abs=0.01)
    assert s.e_over_mip == pytest.approx(0.704, abs=0.001)


def test_clic_stack() -> None:
    assert CLIC_ECAL.n_layers == 25
    assert list(CLIC_ECAL.layer_structure[:17]) == [0] * 17
    assert list(CLIC_ECAL.layer_structure[17:]) == [1] * 8
    assert CLIC_ECAL.depth_x0 == pytest.approx(23, abs=0.5)  # the CLIC twiki quotes 23 X0
    # thicker absorber: lower visible fraction, lower sampling frequency, larger stochastic term
    assert CLIC_THICK.sampling_fraction < CLIC_THIN.sampling_fraction
    assert CLIC_THICK.sampling_frequency < CLIC_THIN.sampling_frequency
    assert CLIC_THICK.stochastic_term > CLIC_THIN.stochastic_term
    assert 0.015 < CLIC_THIN.sampling_fraction < 0.03  # ~2 % like the 3DGAN data


def test_parse_window() -> None:
    assert parse_window("51x51x25").shape == (51, 51, 25)
    with pytest.raises(InputError, match="unknown window"):
        parse_window("10x10x10")
