"""Shared fixtures: small reference-MC samples, made once per test session."""

from __future__ import annotations

from pathlib import Path

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


@pytest.fixture(scope="session")
def gan_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised 25x25x25 generator saved as a caloquant checkpoint (seed 1)."""
    import torch

    from caloquant.models import DEFAULT_SPECS, build_generator
    from caloquant.models.registry import CHECKPOINT_FORMAT

    torch.manual_seed(1)
    g = build_generator(DEFAULT_SPECS["ecal25"])
    path = tmp_path_factory.mktemp("gan") / "g.pt"
    torch.save({"format": CHECKPOINT_FORMAT, "spec": DEFAULT_SPECS["ecal25"].to_dict(), "generator": g.state_dict()},
               path)
    return path
