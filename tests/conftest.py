"""Shared fixtures: small reference-MC samples, random-init checkpoints, a private model cache."""

from __future__ import annotations

from pathlib import Path

import pytest

from caloquant.data import ShowerSet
from caloquant.simulate import simulate
from helpers import make_checkpoint


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
    """A randomly initialised 25x25x25 generator saved as a caloquant checkpoint (seed 1), shared by the session."""
    pytest.importorskip("torch")
    return make_checkpoint(tmp_path_factory.mktemp("gan") / "g.pt")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same random-init checkpoint, a file private to the test module; torch runs single-threaded."""
    torch = pytest.importorskip("torch")
    torch.set_num_threads(1)
    return make_checkpoint(tmp_path_factory.mktemp("rt") / "g.pt")


@pytest.fixture
def model_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Exported and INT8 models go to a cache shared by the session, not ~/.cache/caloquant."""
    path = tmp_path_factory.getbasetemp() / "cache"
    monkeypatch.setenv("CALOQUANT_CACHE_DIR", str(path))
    return path
