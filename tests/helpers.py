"""Plain helpers that several test modules import (fixtures live in conftest.py)."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from caloquant.cli import main

#: The package sources, for CLI subprocesses that must import this checkout.
SRC = Path(__file__).resolve().parents[1] / "src"

#: FP32 results that differ only in summation order (another batch size, engine or ISA picks other kernel
#: blockings). Each output is a chain of ~6 layers of dot products of length n <= 64 * 27 = 1728 with unit
#: roundoff u = 2^-24 = 6e-8: the typical error sqrt(n) * u = 2.5e-6 per layer, ~6e-6 through the chain, times
#: 1/0.85 = 1.18 from the inverse transform; rtol 1e-4 keeps a >10x margin (AMX was seen at ~2e-5, issue 12).
#: atol 1e-6 GeV covers cells whose value is a cancellation near zero (1 keV, far below any threshold).
REORDERED = {"rtol": 1e-4, "atol": 1e-6}

#: A real tuner recipe (the one shipped with the first ecal25 weights, 4/5 layers INT8 + BF16), for tests of the
#: recipe format and of replays; its source_sha256 names those weights, not today's.
RECIPE_FIXTURE = Path(__file__).parent / "data" / "ecal25-2026-11-25.recipe.json"


def make_checkpoint(path: Path, arch: str = "ecal25", seed: int = 1) -> Path:
    """A random-init generator checkpoint (the shipped weights are not needed to test the runtime)."""
    import torch

    from caloquant.models import DEFAULT_SPECS, build_generator
    from caloquant.models.registry import CHECKPOINT_FORMAT

    torch.manual_seed(seed)
    g = build_generator(DEFAULT_SPECS[arch])
    torch.save({"format": CHECKPOINT_FORMAT, "spec": DEFAULT_SPECS[arch].to_dict(), "generator": g.state_dict()},
               path)
    return path


def run_cli(capsys: pytest.CaptureFixture[str], *args: object) -> tuple[int, str]:
    """Exit code and stderr of one CLI call; asserts the error (if any) is a single line without traceback."""
    code = main([str(a) for a in args])
    err = capsys.readouterr().err.strip()
    if code != 0:
        assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    return code, err


def leftovers(folder: Path) -> list[str]:
    """Hidden temporary files or locks left in ``folder``."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def write_h5(path: Path, **datasets: object) -> Path:
    """An HDF5 file holding exactly ``datasets`` (for files the package itself would not write)."""
    with h5py.File(path, "w") as f:
        for k, v in datasets.items():
            f[k] = v
    return path


def read_h5(*paths: Path, keys: tuple[str, ...] = ("ECAL", "energy", "theta")) -> dict[str, np.ndarray]:
    """The ``keys`` datasets of one or more shower files, concatenated in order."""
    out: dict[str, list[np.ndarray]] = {k: [] for k in keys}
    for p in paths:
        with h5py.File(p, "r") as f:
            for k in keys:
                out[k].append(f[k][()])
    return {k: np.concatenate(v) for k, v in out.items()}

