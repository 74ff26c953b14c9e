"""Shared fixtures: small reference-MC samples, made once per test session."""

from __future__ import annotations

import pytest

from caloquant.data import ShowerSet
from caloquant.simulate import simulate


@pytest.fixture(scope="session")
def mc_small() -> ShowerSet:
    """400 showers, 10-500 GeV uniform, perpendicular, 25x25x25."""
    return simulate(400, "10:500", seed=11)


@pytest.fixture(scope="session")
def mc_tilted() -> ShowerSet:
    """200 showers at 60-120 deg in the 51x51x25 window."""
    return simulate(200, "50:200", angle="60:120", window="51x51x25", seed=12)
