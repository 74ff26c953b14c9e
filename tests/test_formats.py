"""HDF5 layouts, streaming dataset, conversion, and bad-input handling (issue 2, items 4 and 6)."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from caloquant.data import ShowerDataset, ShowerFile, ShowerSet, ShowerWriter, convert, read_showers, write_showers
from caloquant.errors import DataFormatError, GeometryMismatchError
from caloquant.geometry import WINDOW_51
from helpers import write_h5


def test_round_trip_both_layouts(tmp_path: Path, mc_small: ShowerSet) -> None:
    for layout in ("3dgan", "calochallenge"):
        p = write_showers(tmp_path / f"{layout}.h5", mc_small, layout=layout)
        back = read_showers(p)
        np.testing.assert_allclose(back.ecal, mc_small.ecal, rtol=1e-6)
        np.testing.assert_allclose(back.energy, mc_small.energy, rtol=1e-6)
        np.testing.assert_allclose(back.theta, mc_small.theta, rtol=1e-6)


def test_calochallenge_units_and_order(tmp_path: Path, mc_small: ShowerSet) -> None:
    p = write_showers(tmp_path / "cc.h5", mc_small[:5], layout="calochallenge")
    with h5py.File(p) as f:
        assert f["incident_energies"].shape == (5, 1)
        assert f["showers"].shape == (5, 25 * 25 * 25)
        np.testing.assert_allclose(f["incident_energies"][:, 0], mc_small.energy[:5] * 1000, rtol=1e-6)
        layer_major = f["showers"][:].reshape(5, 25, 25, 25)  # (N, z, x, y)
        np.testing.assert_allclose(layer_major[:, 3], mc_small.ecal[:5, :, :, 3] * 1000, rtol=1e-5)


def test_reads_real_lcd_layout_with_target(tmp_path: Path) -> None:
    """Real fixed-angle 3DGAN files keep the energy in target[:, 1] and have no theta."""
    p = tmp_path / "EleEscan_1_1.h5"
    with h5py.File(p, "w") as f:
        f["ECAL"] = np.full((3, 25, 25, 25), 1e-3, dtype="f4")  # 15.6 GeV visible
        f["target"] = np.array([[11, 100, 0, 0], [11, 200, 0, 0], [11, 50, 0, 0]], dtype="f4")
    s = read_showers(p)
    assert list(s.energy) == [100, 200, 50]
    np.testing.assert_allclose(s.theta, np.pi / 2)


def test_convert_and_streaming_dataset(tmp_path: Path, mc_small: ShowerSet) -> None:
    write_showers(tmp_path / "a.h5", mc_small[:150])
    write_showers(tmp_path / "b.h5", mc_small[150:], layout="calochallenge")
    assert convert(tmp_path / "b.h5", tmp_path / "c.h5", layout="3dgan") == 250
    with ShowerFile(tmp_path / "c.h5") as f:
        assert f.layout == "3dgan"
    ds = ShowerDataset([tmp_path / "a.h5", tmp_path / "b.h5"])
    assert len(ds) == 400
    chunks = list(ds.iter_chunks(64))
    assert max(len(c) for c in chunks) == 64
    np.testing.assert_allclose(ShowerSet.concatenate(chunks).energy, mc_small.energy, rtol=1e-6)
    r0 = ShowerSet.concatenate(list(ds.iter_chunks(64, rank=0, world_size=2, shuffle_seed=1)))
    r1 = ShowerSet.concatenate(list(ds.iter_chunks(64, rank=1, world_size=2, shuffle_seed=1)))
    assert len(r0) + len(r1) == 400
    assert not set(r0.energy.tolist()) & set(r1.energy.tolist())  # disjoint shards


def test_writer_is_atomic(tmp_path: Path, mc_small: ShowerSet) -> None:
    target = tmp_path / "out.h5"
    with pytest.raises(RuntimeError), ShowerWriter(target, mc_small.window) as w:
        w.append(mc_small[:10])
        raise RuntimeError("crash mid-run")
    assert not target.exists()
    assert not list(tmp_path.iterdir())  # no temporary left behind


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p, "file not found"),
        (lambda p: (p.write_text("hello"), p)[1], "not a readable HDF5"),
        (lambda p: write_h5(p, foo=np.zeros(3)), "missing keys"),
        (lambda p: write_h5(p, ECAL=np.zeros((2, 25, 25)), energy=np.ones(2)), "expected \\(N, x, y, z\\)"),
        (lambda p: write_h5(p, ECAL=np.zeros((2, 10, 10, 10)), energy=np.ones(2)), "match no known window"),
        (lambda p: write_h5(p, ECAL=np.zeros((0, 25, 25, 25)), energy=np.ones(0)), "no showers"),
        (lambda p: write_h5(p, ECAL=np.full((2, 25, 25, 25), np.nan), energy=np.ones(2)), "NaN"),
        (lambda p: write_h5(p, ECAL=-np.ones((2, 25, 25, 25)), energy=np.ones(2)), "negative"),
        (lambda p: write_h5(p, ECAL=np.zeros((2, 25, 25, 25)), energy=-np.ones(2)), "negative energies"),
        (lambda p: write_h5(p, ECAL=np.zeros((2, 25, 25, 25)), energy=np.ones(3)), "rows"),
    ],
)
def test_bad_files_raise_one_clear_error(tmp_path: Path, make, message: str) -> None:  # type: ignore[no-untyped-def]
    p = make(tmp_path / "bad.h5")
    with pytest.raises(DataFormatError, match=message) as err:
        read_showers(p)
    assert str(p) in str(err.value) and "\n" not in str(err.value)


def test_writer_refuses_other_window(tmp_path: Path, mc_small: ShowerSet) -> None:
    with pytest.raises(GeometryMismatchError), ShowerWriter(tmp_path / "x.h5", WINDOW_51) as w:
        w.append(mc_small[:2])


def test_dataset_refuses_mixed_windows_and_empty_dirs(tmp_path: Path, mc_small: ShowerSet, mc_tilted: ShowerSet
                                                       ) -> None:
    write_showers(tmp_path / "a.h5", mc_small[:5])
    write_showers(tmp_path / "b.h5", mc_tilted[:5])
    with pytest.raises(GeometryMismatchError):
        ShowerDataset(tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataFormatError, match="no .h5"):
        ShowerDataset(tmp_path / "empty")
