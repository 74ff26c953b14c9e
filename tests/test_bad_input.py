"""Systematic bad input: every malformed shower file over every command that reads one, and property tests
of the HDF5 reader and the energy/angle parsers (one typed error, never anything else)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from caloquant.data import ShowerFile, read_showers, write_showers
from caloquant.errors import CaloquantError
from caloquant.simulate import simulate
from caloquant.simulate.engine import AngleRange, Spectrum, parse_range
from helpers import leftovers, run_cli, write_h5

SHAPE = (25, 25, 25)


def _h5(**datasets: object) -> Callable[[Path], object]:
    return lambda path: write_h5(path, **datasets)


def _ecal_group(path: Path) -> None:
    with h5py.File(path, "w") as f:
        f["energy"] = np.ones(2)
        f.create_group("ECAL")


def _good(n: int = 4) -> dict[str, np.ndarray]:
    return {"ECAL": np.full((n, *SHAPE), 1e-4, "f4"), "energy": np.full(n, 50.0, "f4")}


def _with(**changes: object) -> dict[str, object]:
    return {**_good(), **changes}


BAD_FILES: dict[str, tuple[Callable[[Path], object], str]] = {
    "missing": (lambda p: None, "file not found"),
    "empty file": (lambda p: p.write_bytes(b""), "not a readable HDF5 file"),
    "text file": (lambda p: p.write_text("ECAL,energy\n1,2\n"), "not a readable HDF5 file"),
    "truncated": (lambda p: (_h5(**_good(40))(p), p.write_bytes(p.read_bytes()[:3000])), "not a readable HDF5"),
    "directory": (lambda p: p.mkdir(), "contains no .h5"),  # a directory is read as one of shards
    "wrong keys": (_h5(images=np.zeros((2, 3))), "missing keys"),
    "no energy": (_h5(ECAL=np.zeros((2, *SHAPE), "f4")), "without an 'energy'"),
    "ECAL 3-d": (_h5(**_with(ECAL=np.zeros((4, 25, 25), "f4"))), "expected (N, x, y, z)"),
    "unknown window": (_h5(**_with(ECAL=np.zeros((4, 9, 9, 9), "f4"))), "match no known window"),
    "no showers": (_h5(ECAL=np.zeros((0, *SHAPE), "f4"), energy=np.zeros(0, "f4")), "no showers"),
    "row mismatch": (_h5(**_with(energy=np.full(3, 50.0))), "has 3 rows but there are 4"),
    "theta mismatch": (_h5(**_with(theta=np.zeros(2))), "'theta' has 2 rows"),
    "string energies": (_h5(**_with(energy=np.array([b"a"] * 4))), "expected numbers"),
    "group for ECAL": (_ecal_group, "is a group"),
    "NaN cells": (_h5(**_with(ECAL=np.full((4, *SHAPE), np.nan, "f4"))), "NaN or infinite"),
    "inf energy": (_h5(**_with(energy=np.array([50, np.inf, 50, 50]))), "NaN or infinite"),
    "negative cells": (_h5(**_with(ECAL=np.full((4, *SHAPE), -1.0, "f4"))), "negative values"),
    "zero energy": (_h5(**_with(energy=np.array([50, 0, 50, 50.0]))), "zero or negative energies"),
    "absurd energy": (_h5(**_with(energy=np.array([50, 1e30, 50, 50.0]))), "above"),
    "MeV cells in GeV file": (_h5(**_with(ECAL=np.full((4, *SHAPE), 1.0, "f4"))), "wrong units"),
}


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ref") / "ref.h5"
    write_showers(path, simulate(60, "10:100", seed=4))
    return path


@pytest.mark.parametrize("case", list(BAD_FILES))
@pytest.mark.parametrize("command", ["info", "convert", "validate"])
def test_bad_shower_file(tmp_path, capsys, reference, case, command) -> None:
    make, message = BAD_FILES[case]
    bad = tmp_path / "bad.h5"
    make(bad)
    args = {"info": ["info", bad], "convert": ["convert", bad, "-o", tmp_path / "c.h5", "--format", "calochallenge"],
            "validate": ["validate", reference, bad, "-q", "--no-classifier"]}[command]
    code, err = run_cli(capsys, *args)
    assert code == 2 and message in err and str(bad) in err
    assert not (tmp_path / "c.h5").exists() and leftovers(tmp_path) == []


@pytest.mark.parametrize("args, message", [
    (["--n", "-3"], "--n must be positive"), (["--chunk", "0"], "--chunk must be positive"),
    (["--energy", "nan"], "energy range"), (["--energy", "inf"], "energy range"), (["--energy", "1:2:3"], "MIN:MAX"),
    (["--energy", "500:10"], "reversed"), (["--angle", "abc"], "not a number"), (["--window", "x"], "window"),
    (["-o", "{d}"], "is a directory"), (["-o", "{d}/no/x.h5"], "does not exist"),
    (["--workers", "-2"], "--workers must be positive"),
])
def test_bad_simulate_options(tmp_path, capsys, args, message) -> None:
    opts = {"--n": "5", "--energy": "50", "-o": str(tmp_path / "x.h5"), "--chunk": "8"}
    opts.update({k: v.format(d=tmp_path) for k, v in zip(args[::2], args[1::2])})
    code, err = run_cli(capsys, "simulate", "-q", *[t for kv in opts.items() for t in kv])
    assert code == 2 and message in err and leftovers(tmp_path) == []


# -- property tests ------------------------------------------------------------------------------------------


@given(st.text(max_size=30))
def test_parse_range_raises_only_input_errors(text: str) -> None:
    try:
        low, high = parse_range(text, "energy")
    except CaloquantError:
        return
    assert isinstance(low, float) and isinstance(high, float)


@given(st.one_of(st.floats(), st.integers(-10**30, 10**30)), st.one_of(st.floats(), st.integers(-10**30, 10**30)),
       st.sampled_from(["uniform", "log", "flat"]))
def test_spectrum_and_angles_accept_only_sane_ranges(low: float, high: float, kind: str) -> None:
    for make in (lambda: Spectrum(float(low), float(high), kind), lambda: AngleRange(float(low), float(high))):
        try:
            r = make()
        except CaloquantError:
            continue
        assert np.isfinite(r.low) and np.isfinite(r.high) and r.low <= r.high


_cells = hnp.arrays(st.sampled_from([np.float32, np.float64]),
                    st.tuples(st.integers(0, 3), st.just(25), st.just(25), st.sampled_from([25, 24])),
                    elements=st.floats(-1.0, 0.0009765625, width=16) | st.sampled_from([np.nan, np.inf, 0.0]))
_energies = hnp.arrays(np.float64, st.integers(0, 4),
                       elements=st.floats(-10, 2e5) | st.sampled_from([np.nan, -np.inf, 0.0, 100.0]))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(_cells, _energies, st.booleans())
def test_hdf5_reader_reads_or_raises_one_typed_error(tmp_path, ecal, energy, with_theta) -> None:
    path = tmp_path / "p.h5"
    with h5py.File(path, "w") as f:
        f["ECAL"] = ecal
        f["energy"] = energy
        if with_theta:
            f["theta"] = np.full(len(energy), 1.0)
    try:
        with ShowerFile(path) as sf:
            showers = sf.read()
    except CaloquantError as e:
        assert str(path) in str(e) and "\n" not in str(e)
        return
    assert len(showers) == len(read_showers(path)) > 0
    assert np.all(np.isfinite(showers.ecal)) and np.all(showers.energy > 0)


# -- quantize --onnx --data DATA.npz ---------------------------------------------------------------------------

_X = np.linspace(0, 1, 32, dtype=np.float32).reshape(8, 4)


def _npz(**arrays: object) -> Callable[[Path], object]:
    return lambda path: np.savez(path, **arrays)


def _raw(data: bytes) -> Callable[[Path], object]:
    return lambda path: path.write_bytes(data)


def _npy(path: Path) -> None:
    with open(path, "wb") as f:  # np.save would add .npy to the name
        np.save(f, _X)


def _bad_crc(path: Path) -> None:
    np.savez(path, x=np.linspace(0, 1, 4000).reshape(1000, 4))
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


BAD_DATA: dict[str, tuple[Callable[[Path], object], str]] = {
    "plain .npy": (_npy, "a single .npy array, not an .npz archive"),
    "empty file": (_raw(b""), "not a readable .npz file"),
    "text file": (_raw(b"x,y\n1,2\n"), "not a readable .npz file"),
    "damaged member": (_bad_crc, "not a readable .npz file"),
    "pickled object x": (_npz(x=np.array([{}, {}], dtype=object)), "not a readable .npz file"),
    "string x": (_npz(x=np.array(["a", "b", "c"])), "'x' holds <U1 values (strings)"),
    "complex x": (_npz(x=_X.astype(np.complex64)), "'x' holds complex64 values (complex numbers)"),
    "record x": (_npz(x=np.zeros(8, dtype=[("a", "f4")])), "(records or raw bytes)"),
    "date x": (_npz(x=np.array(["2020-01-01"] * 8, dtype="datetime64[D]")), "(dates)"),
    "all-NaN x": (_npz(x=np.full((8, 4), np.nan)), "'x' holds 32 NaN or infinite values (first in item 0"),
    "one inf x": (_npz(x=np.where(np.arange(32).reshape(8, 4) == 13, np.inf, _X)), "first in item 3"),
    "x beyond float32": (_npz(x=np.full((8, 4), 1e300)), "as float32 model inputs"),
    "scalar x": (_npz(x=np.float32(1)), "at least 2 items"),
    "no x": (_npz(y=np.zeros(8)), "no 'x' array"),
    "scalar y": (_npz(x=_X, y=np.int64(3)), "'y' must hold one entry per item of 'x' (8)"),
    "short y": (_npz(x=_X, y=np.zeros(3)), "got shape (3,)"),
    "string y": (_npz(x=_X, y=np.array(["cat"] * 8)), "'y' holds <U3 values"),
    "NaN y": (_npz(x=_X, y=np.full(8, np.nan)), "'y' holds 8 NaN"),
    "scalar calib": (_npz(x=np.arange(8.0), calib=np.float64(1)), "'calib' must hold items"),
    "calib of other shape": (_npz(x=_X, calib=np.zeros((4, 5), "f4")), "got shape (4, 5)"),
    "integer calib, float x": (_npz(x=_X, calib=np.zeros((4, 4), "i8")), "give them one type"),
    "NaN calib": (_npz(x=_X, calib=np.full((4, 4), np.nan, "f4")), "'calib' holds 16 NaN"),
    "complex calib": (_npz(x=_X, calib=np.zeros((4, 4), "c8")), "'calib' holds complex64"),
}


@pytest.mark.parametrize("case", list(BAD_DATA))
def test_bad_quantize_data_is_one_input_error(tmp_path: Path, case: str) -> None:
    from caloquant.errors import InputError
    from caloquant.quantize.userdata import load_data

    make, message = BAD_DATA[case]
    path = tmp_path / "data.npz"
    make(path)
    with pytest.raises(InputError) as error:
        load_data(path)
    text = str(error.value)
    assert message in text and text.startswith(f"{path}: ") and "\n" not in text


def test_good_quantize_data_is_converted_for_the_model(tmp_path: Path) -> None:
    from caloquant.quantize.userdata import load_data

    np.savez(tmp_path / "d.npz", x=_X.astype(np.float64), y=np.arange(8), calib=_X[:3].astype(np.float16))
    np.savez(tmp_path / "t.npz", x=np.arange(16).reshape(8, 2), y=np.ones(8, bool))
    data, tokens = load_data(tmp_path / "d.npz"), load_data(tmp_path / "t.npz")
    assert data.x.dtype == data.calib.dtype == np.float32 and data.calib_key == "calib" and len(data.calib) == 3
    assert tokens.x.dtype == np.int64 and tokens.calib_key == "x" and np.array_equal(tokens.calib, tokens.x)
