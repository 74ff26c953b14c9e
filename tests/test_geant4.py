"""The Geant4 engine: a few 10 GeV showers through real Geant4 (physics sanity, determinism, crash isolation)
and the generated data tables. Skipped only where the geant4-pybind wheel is not installed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from caloquant.cli import main
from caloquant.data import ShowerSet
from caloquant.errors import SimulationError
from caloquant.geometry import CLIC_ECAL, WINDOW_25
from caloquant.simulate import g4data, geant4
from caloquant.simulate.engine import AngleRange, ShowerSimulator, Spectrum

needs_geant4 = pytest.mark.skipif(not geant4.available(),
                                  reason="geant4-pybind is not installed (no wheel for this platform?)")
SPEC = Spectrum(10.0, 10.0)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> g4data.DataSource:
    """The approximate data source in a fresh cache folder (never the user's data)."""
    return g4data.resolve({"CALOQUANT_CACHE": str(tmp_path_factory.mktemp("g4cache"))})


def run(source: g4data.DataSource, n: int, workers: int, chunk: int = 256) -> ShowerSet:
    sim = geant4.Geant4Simulator(WINDOW_25, workers=workers, source=source)
    return ShowerSet.concatenate(list(sim.stream(n, SPEC, seed=7, chunk_size=chunk)))


@pytest.fixture(scope="module")
def showers(cache: g4data.DataSource) -> ShowerSet:
    """Four 10 GeV showers on two workers."""
    return run(cache, 4, workers=2, chunk=3)


@needs_geant4
def test_geant4_sampling_fraction_and_peak(showers: ShowerSet) -> None:
    visible = showers.ecal.sum(axis=(1, 2, 3)) / showers.energy
    # W/Si with 0.5 mm Si: about 2 % of the energy is visible; the 10 GeV maximum sits near 6-7 X0 (layer ~8)
    assert np.all((0.012 < visible) & (visible < 0.03))
    peak = int(np.argmax(showers.ecal.sum(axis=(0, 1, 2))))
    assert 4 <= peak <= 12
    assert showers.ecal.shape == (4, 25, 25, 25) and np.all(showers.ecal >= 0)
    # the core is in the central cells
    assert showers.ecal[:, 10:15, 10:15].sum() > 0.8 * showers.ecal.sum()


@needs_geant4
def test_geant4_shower_depends_only_on_seed_and_index(cache: g4data.DataSource, showers: ShowerSet) -> None:
    again = run(cache, 2, workers=1)
    np.testing.assert_array_equal(again.ecal, showers.ecal[:2])
    assert not np.array_equal(showers.ecal[0], showers.ecal[1])


@needs_geant4
def test_geant4_shard_from_an_offset_equals_the_slice_of_a_full_run(cache: g4data.DataSource,
                                                                     showers: ShowerSet) -> None:
    """A --cluster shard simulates showers [first, first + n): the same showers as rows first.. of one run."""
    sim = geant4.Geant4Simulator(WINDOW_25, workers=1, source=cache)
    part = ShowerSet.concatenate(list(sim.stream(2, SPEC, seed=7, first=2)))
    np.testing.assert_array_equal(part.ecal, showers.ecal[2:4])
    np.testing.assert_array_equal(part.energy, showers.energy[2:4])


@needs_geant4
def test_geant4_worker_crash_is_one_error(tmp_path: Path) -> None:
    missing = str(tmp_path / "no-data")
    broken = g4data.DataSource("real", missing, {k: missing for k in (*g4data.DATASET_VARIABLES, "GEANT4_DATA_DIR")})
    with pytest.raises(SimulationError, match="Geant4 worker"):
        run(broken, 1, workers=1)


def test_geant4_primaries_match_gflash() -> None:
    prim = geant4.primaries(CLIC_ECAL, Spectrum(10.0, 500.0), AngleRange(60.0, 120.0), 3, 5, 4)
    gf = ShowerSimulator(WINDOW_25).simulate(4, Spectrum(10.0, 500.0), AngleRange(60.0, 120.0), seed=3, start_index=5)
    np.testing.assert_allclose([p[1] for p in prim], gf.energy)
    np.testing.assert_allclose([p[2] for p in prim], gf.theta)
    assert all(min(p[0]) > 0 for p in prim) and len({tuple(p[0]) for p in prim}) == 4


def test_bethe_heitler_high_energy_limit() -> None:
    # complete screening, k -> 0: 4 alpha r_e^2 (1 + 1/Z) [4/3 (ln(184 Z^-1/3) - f_c) + 1/9] = 11.3 mb for W
    value = g4data.scaled_brems_dcs(74, np.array([1e-12]), 1e4)[0]
    assert 11.0 < value < 11.5
    assert np.all(g4data.scaled_brems_dcs(74, g4data.KAPPA_GRID, 10.0) >= 0)


def test_data_tables_in_geant4_layouts(tmp_path: Path) -> None:
    def sandia(z: int, e: float) -> tuple[float, ...]:
        return (1.0, 0.0, 0.0, 0.0) if e < 0.07 else (2.0, 1.0, 0.0, 0.0)

    g4data.build(tmp_path / "v", [74], sandia)
    assert g4data.tables_complete(tmp_path / "v", [74]) and not g4data.tables_complete(tmp_path / "v", [14])
    head, kappa, lnt, *rows = (tmp_path / "v/G4EMLOW/brem_SB/br74").read_text().splitlines()
    assert head.split() == ["2", "32", "57"] and len(rows) == 57 and all(len(r.split()) == 32 for r in rows)
    high = (tmp_path / "v/G4EMLOW/epics2017/phot/pe-high-74.dat").read_text().split()
    assert high[:2] == ["1", "1"] and abs(float(high[2]) - 0.07) < 1e-6 and len(high) == 10
    cs = (tmp_path / "v/G4EMLOW/epics2017/phot/pe-cs-74.dat").read_text().split()
    assert int(cs[2]) == int(cs[3]) == (len(cs) - 4) // 2


def test_user_data_used_as_is(tmp_path: Path) -> None:
    assert g4data.resolve({"G4LEDATA": "/data/G4EMLOW8.8"}).kind == "real"
    assert g4data.resolve({"GEANT4_DATA_DIR": "/data"}).env == {}
    approx = g4data.resolve({"CALOQUANT_CACHE": str(tmp_path)})
    assert approx.approximate and approx.env["G4LEDATA"].startswith(str(tmp_path))


def test_unknown_engine_is_one_line_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["simulate", "-o", str(tmp_path / "a.h5"), "--n", "2", "--energy", "10", "--engine", "fluka"]) == 2
    assert "unknown engine" in capsys.readouterr().err


@needs_geant4
def test_core_rate_counts_worker_cpu_seconds() -> None:
    """Showers per CPU-second of one worker, its set-up excluded: 10 GeV showers take well under a second."""
    rate = geant4.core_rate(WINDOW_25, SPEC, 2)
    assert np.isfinite(rate) and 1.0 < rate < 1e4


def test_core_rate_refuses_a_cpu_time_that_is_not_positive(monkeypatch: pytest.MonkeyPatch) -> None:
    """A zero or negative CPU time (a clock that did not move) is an error, never a rate of 1e9 showers/s."""
    for seconds in (0.0, -0.5, float("nan")):
        monkeypatch.setattr(geant4, "shower_cpu_seconds", lambda *a, s=seconds, **k: s)
        with pytest.raises(SimulationError, match="no usable rate"):
            geant4.core_rate(WINDOW_25, SPEC, 2)
