"""Regression tests of the hostile pass of 2026-12-03 (docs/reliability.md): out-of-range values that gave a
traceback, or were found only after minutes of work, are one-line errors (exit 2) before any work, and a refused
run leaves nothing behind. Every case here is refused before a model is loaded or a shower simulated."""

from __future__ import annotations

import socket
from pathlib import Path

import numpy as np
import pytest

from caloquant.errors import InputError
from caloquant.simulate.engine import check_seed
from caloquant.validate.bins import EnergyBins
from helpers import run_cli

HUGE = "99999999999999999999999"


@pytest.mark.parametrize("seed", ["-1", HUGE])
@pytest.mark.parametrize("command", ["simulate", "generate"])
def test_seed_out_of_range_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str,
                                       seed: str) -> None:
    out = tmp_path / "out.h5"
    model = ["--model", "ecal25"] if command == "generate" else []
    code, err = run_cli(capsys, command, *model, "-o", out, "--n", "20", "--energy", "50", "--seed", seed, "-q")
    assert code == 2 and "--seed must be between 0 and" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no output, no OUT.partial, no lock


def test_check_seed_bounds() -> None:
    assert check_seed(0) == 0 and check_seed(2**63 - 1) == 2**63 - 1
    for bad in (-1, 2**63, True, 1.5):
        with pytest.raises(InputError):
            check_seed(bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(("args", "message"), [
    (["--seed", "-1"], "--seed must be between 0 and"),
    (["--n-boot", HUGE], "--n-boot must be between 2 and 100,000"),
])
def test_validate_options(tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str) -> None:
    code, err = run_cli(capsys, "validate", tmp_path / "ref.h5", tmp_path / "cand.h5", *args)
    assert code == 2 and message in err


def test_more_quantile_bins_than_showers() -> None:
    energy = np.linspace(10.0, 100.0, 60)
    assert len(EnergyBins.quantiles(energy, 60)) >= 1
    with pytest.raises(InputError, match="61 quantile energy bins for 60 reference showers"):
        EnergyBins.quantiles(energy, 61)
    with pytest.raises(InputError, match="quantile energy bins"):
        EnergyBins.quantiles(energy, 10**20)  # was numpy's 'Maximum allowed size exceeded'


@pytest.mark.parametrize(("args", "message"), [
    (["--batch", HUGE], "exceeds the 65,536 items"),
    (["--reference", HUGE], "must be at most 1,000,000"),
    (["--metric", "accuracy"], "--metric: for --onnx only"),
    (["--data", "x.npz"], "--data: for --onnx only"),
    (["--lower-is-better"], "--higher-is-better: for --onnx only"),
])
def test_quantize_model_options(tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str],
                                message: str) -> None:
    code, err = run_cli(capsys, "quantize", "--model", "ecal25", "-o", tmp_path / "q", *args)
    assert code == 2 and message in err
    assert not (tmp_path / "q").exists()


def test_generate_huge_batch(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run_cli(capsys, "generate", "--model", "ecal25", "-o", tmp_path / "g.h5", "--n", "20",
                        "--energy", "50", "--batch", HUGE)
    assert code == 2 and "exceeds the 65,536 showers" in err
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("seconds", ["nan", "inf"])
def test_bench_seconds_not_finite(capsys: pytest.CaptureFixture[str], seconds: str) -> None:
    code, err = run_cli(capsys, "bench", "--seconds", seconds)
    assert code == 2 and "--seconds must be a positive finite number" in err


@pytest.mark.parametrize(("content", "message"), [
    (b"\xcc\x00binary", "cannot read it as text"),
    (b"x\n<!-- caloquant bench: end -->\n<!-- caloquant bench: begin -->\n", "incomplete or out of order"),
])
def test_bench_markdown_checked_before_work(tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes,
                                            message: str) -> None:
    md = tmp_path / "table.md"
    md.write_bytes(content)
    code, err = run_cli(capsys, "bench", "--markdown", md)
    assert code == 2 and message in err and str(md) in err
    assert md.read_bytes() == content


@pytest.mark.parametrize(("args", "message"), [
    (["--tune-minutes", "nan"], "positive time budget"),
    (["--seed", "-1"], "--seed must be between 0 and"),
])
def test_demo_refuses_before_simulating(tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str],
                                        message: str) -> None:
    out = tmp_path / "demo"
    code, err = run_cli(capsys, "demo", "--out", out, *args)
    assert code == 2 and message in err
    assert not out.exists()  # was: reference.h5 simulated, then refused, and the next demo blocked by it


def test_unreachable_scheduler_leaves_no_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("distributed")
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "shards"
    code, err = run_cli(capsys, "simulate", "-o", out, "--n", "20", "--energy", "50",
                        "--cluster", f"tcp://127.0.0.1:{port}", "-q")
    assert code == 2 and "cannot reach the Dask scheduler" in err
    assert list(tmp_path.iterdir()) == []  # was: an empty shards/ folder


def test_bench_row_does_not_swallow_a_signal(monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGTERM during a measurement stops the bench (exit 143); it was recorded as the row's 'not measured'
    reason ('terminated') and the table written with exit 0."""
    from caloquant.bench import compare
    from caloquant.errors import Interrupted

    def stopped(*_: object) -> dict[str, object]:
        raise Interrupted("terminated", 15)

    monkeypatch.setattr(compare, "geant4_core_rate", stopped)
    row = compare.Row("geant4", "Geant4", "geant4", "-")
    with pytest.raises(Interrupted):
        compare._geant4_row(row, None, 1)  # type: ignore[arg-type]
    assert row.missing is None
