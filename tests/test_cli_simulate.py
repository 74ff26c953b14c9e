"""CLI contract of simulate / convert / info, and one-line errors with exit code 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from caloquant.cli import main
from caloquant.data import read_showers


def test_simulate_cli_contract(tmp_path: Path) -> None:
    out = tmp_path / "s.h5"
    rc = main(["simulate", "-o", str(out), "--n", "20", "--energy", "20:200", "--spectrum", "log", "--angle",
               "60:120", "--window", "51x51x25", "--seed", "5", "--format", "calochallenge", "-q"])
    assert rc == 0
    s = read_showers(out)
    assert s.ecal.shape == (20, 51, 51, 25)
    assert 20 <= s.energy.min() and s.energy.max() <= 200
    assert np.rad2deg(s.theta).min() >= 60 and np.rad2deg(s.theta).max() <= 120


def test_simulate_same_seed_same_file_content(tmp_path: Path) -> None:
    args = ["--n", "10", "--energy", "100", "--seed", "9", "-q"]
    assert main(["simulate", "-o", str(tmp_path / "a.h5"), *args]) == 0
    assert main(["simulate", "-o", str(tmp_path / "b.h5"), *args, "--chunk", "3"]) == 0
    assert np.array_equal(read_showers(tmp_path / "a.h5").ecal, read_showers(tmp_path / "b.h5").ecal)


def test_convert_and_info(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "-o", str(tmp_path / "a.h5"), "--n", "5", "--energy", "50", "-q"]) == 0
    assert main(["convert", str(tmp_path / "a.h5"), "-o", str(tmp_path / "b.h5"), "--format", "calochallenge"]) == 0
    assert main(["info", str(tmp_path / "b.h5")]) == 0
    assert "calochallenge" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["simulate", "-o", "{d}/x.h5", "--n", "5", "--energy", "5000"], "outside"),
        (["simulate", "-o", "{d}/x.h5", "--n", "5", "--energy", "abc"], "not a number"),
        (["simulate", "-o", "{d}/x.h5", "--n", "0", "--energy", "10"], "--n must be positive"),
        (["simulate", "-o", "{d}/x.h5", "--n", "5", "--energy", "10", "--window", "9x9x9"], "unknown window"),
        (["simulate", "-o", "{d}/x.h5", "--n", "5", "--energy", "10", "--format", "root"], "unknown format"),
        (["simulate", "-o", "{d}/nodir/x.h5", "--n", "5", "--energy", "10"], "does not exist"),
        (["info", "{d}/missing.h5"], "file not found"),
        (["convert", "{d}/missing.h5", "-o", "{d}/y.h5", "--format", "3dgan"], "file not found"),
    ],
)
def test_bad_input_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str],
                                   message: str) -> None:
    rc = main([a.format(d=tmp_path) for a in args])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "x.h5").exists()


def test_console_script_exit_code(tmp_path: Path) -> None:
    exe = Path(sys.executable).with_name("caloquant")
    if not exe.exists():
        pytest.skip("console script not installed in this environment")
    r = subprocess.run([str(exe), "info", str(tmp_path / "none.h5")], capture_output=True, text=True,
                       env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert r.returncode == 2 and r.stderr.count("\n") == 1
