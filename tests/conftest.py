"""Shared fixtures: small reference-MC samples, random-init checkpoints, a private model cache."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from caloquant.data import ShowerSet
from caloquant.machine import ISA_CAP_VARS
from caloquant.simulate import simulate
from helpers import make_checkpoint


@pytest.fixture(autouse=True)
def _isa_caps_stay_as_they_were() -> Iterator[None]:
    """A BF16 trainer on an AMX CPU sets ONEDNN_MAX_CPU_ISA for its process (train.hardware.keep_bf16_off_amx);
    later tests must not see it as the user's cap (test_isa_caps would skip every cap) nor pass it on."""
    before = {v: os.environ.get(v) for v in ISA_CAP_VARS}
    yield
    for var, value in before.items():
        if value is None:
            os.environ.pop(var, None)
        else:
            os.environ[var] = value


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
