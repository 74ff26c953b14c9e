"""Physics acceptance of the reference Monte Carlo (issue 2, item 5)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from caloquant.data import ShowerSet
from caloquant.geometry import CLIC_ECAL, CLIC_THICK, CLIC_THIN
from caloquant.geometry import parse_window
from caloquant.simulate import simulate
from caloquant.simulate.engine import AngleRange, ShowerSimulator, Spectrum
from caloquant.simulate.tuning import load_tuning
from caloquant.simulate.calibration import calibrated_energy, fit_resolution, fit_weights
from helpers import SRC

ENERGIES = (10.0, 20.0, 50.0, 100.0, 200.0, 400.0)


@pytest.fixture(scope="module")
def scan() -> dict[float, ShowerSet]:
    return {e: simulate(500, e, seed=100 + i) for i, e in enumerate(ENERGIES)}


@pytest.fixture(scope="module")
def weights(scan: dict[float, ShowerSet]) -> np.ndarray:
    return fit_weights(ShowerSet.concatenate(list(scan.values())))


def test_calibration_weights_near_inverse_sampling_fractions(weights: np.ndarray) -> None:
    assert weights[0] == pytest.approx(1 / CLIC_THIN.sampling_fraction, rel=0.1)
    assert weights[1] == pytest.approx(1 / CLIC_THICK.sampling_fraction, rel=0.15)


def test_calibrated_response_is_linear_within_2_percent(scan: dict[float, ShowerSet], weights: np.ndarray) -> None:
    for e, s in scan.items():
        assert np.mean(calibrated_energy(s, weights)) / e == pytest.approx(1.0, abs=0.02), e


def test_resolution_has_stochastic_and_constant_terms(scan: dict[float, ShowerSet], weights: np.ndarray) -> None:
    rel = []
    for s in scan.values():
        r = calibrated_energy(s, weights)
        rel.append(np.std(r) / np.mean(r))
    rel_arr = np.array(rel)
    a, b = fit_resolution(np.array(ENERGIES), rel_arr, rel_arr / np.sqrt(2 * 500))
    assert 0.10 <= a <= 0.25
    assert b < 0.03
    assert np.all(np.diff(rel_arr) < 0)  # resolution improves with energy


def test_raw_visible_fraction_is_nonlinear(scan: dict[float, ShowerSet]) -> None:
    """Deeper showers put more energy in the thick, less sampled rear layers and leak: vis/E falls with E."""
    frac = [np.mean(s.ecal.sum(axis=(1, 2, 3)) / e) for e, s in scan.items()]
    assert np.all(np.diff(frac) < 0)
    assert frac[0] / frac[-1] > 1.08


def test_longitudinal_barycentre_grows_with_log_energy(scan: dict[float, ShowerSet]) -> None:
    depth = CLIC_ECAL.layer_edges_x0
    centres = 0.5 * (depth[1:] + depth[:-1])
    bary = []
    for s in scan.values():
        layers = s.ecal.sum(axis=(1, 2), dtype=np.float64)
        bary.append(np.mean((layers * centres).sum(1) / layers.sum(1)))
    slope, _ = np.polyfit(np.log(ENERGIES), bary, 1)
    resid = np.array(bary) - np.polyval(np.polyfit(np.log(ENERGIES), bary, 1), np.log(ENERGIES))
    assert 0.5 < slope < 1.5  # X0 per e-fold of energy (GFlash: d<T>/dlnE ~ 1)
    assert np.max(np.abs(resid)) < 0.3


def test_ninety_percent_within_two_moliere_radii(scan: dict[float, ShowerSet]) -> None:
    s = scan[100.0]
    xy = s.ecal.sum(axis=3, dtype=np.float64)
    c = (np.arange(25) - 12) * CLIC_ECAL.cell_mm
    r = np.hypot(c[:, None], c[None, :])
    rm = CLIC_THIN.moliere_radius_mm
    inside = (xy * (r <= 2 * rm)).sum(axis=(1, 2)) / xy.sum(axis=(1, 2))
    assert np.mean(inside) > 0.90
    assert np.mean((xy * (r <= 0.5 * rm)).sum(axis=(1, 2)) / xy.sum(axis=(1, 2))) < 0.90  # not a pencil


def test_tilt_moves_x_barycentre_layer_by_layer() -> None:
    def x_per_layer(theta: float) -> np.ndarray:
        s = simulate(150, 100, angle=theta, window="51x51x25", seed=7)
        xz = s.ecal.sum(axis=2, dtype=np.float64)  # (N, x, z)
        return ((xz * np.arange(51)[None, :, None]).sum(1) / np.maximum(xz.sum(1), 1e-12)).mean(0)

    perp, forward, backward = x_per_layer(90), x_per_layer(70), x_per_layer(110)
    assert np.ptp(perp[2:20]) < 0.3
    assert np.all(np.diff(forward[2:20]) > 0)  # theta < 90 deg: shower drifts to +x with depth
    assert np.all(np.diff(backward[2:20]) < 0)
    dz = np.diff(CLIC_ECAL.layer_edges_mm)[3:19].mean()
    slope = np.mean(np.diff(forward[3:19])) * CLIC_ECAL.cell_mm / dz
    assert slope == pytest.approx(1 / np.tan(np.deg2rad(70)), rel=0.1)


def test_visible_over_primary_equals_documented_sampling_fraction(scan: dict[float, ShowerSet]) -> None:
    """At 10 GeV the shower sits in the thin front section: vis/E ~ its sampling fraction (small leakage)."""
    s = scan[10.0]
    assert np.mean(s.ecal.sum(axis=(1, 2, 3)) / s.energy) == pytest.approx(CLIC_THIN.sampling_fraction, rel=0.1)


def test_reproducible_and_independent_of_chunk_size() -> None:
    a = simulate(60, "10:500", angle="70:110", window="51x51x25", seed=3, chunk_size=7)
    b = simulate(60, "10:500", angle="70:110", window="51x51x25", seed=3, chunk_size=64)
    c = simulate(60, "10:500", angle="70:110", window="51x51x25", seed=4, chunk_size=64)
    assert np.array_equal(a.ecal, b.ecal) and np.array_equal(a.energy, b.energy)
    assert not np.array_equal(a.ecal, c.ecal)


def test_worker_processes_give_the_same_showers_in_order() -> None:
    """GFlash chunks simulated side by side in processes come back in order, bit for bit the serial stream."""
    sim = ShowerSimulator(parse_window("25x25x25"), tuning=load_tuning("geant4"))
    spec, ang = Spectrum(10.0, 500.0), AngleRange(90.0, 90.0)
    serial = ShowerSet.concatenate(list(sim.stream(70, spec, ang, seed=8, chunk_size=16, first=5)))
    seen: list[int] = []
    chunks = list(sim.stream(70, spec, ang, seed=8, chunk_size=16, first=5, workers=2, on_chunk=seen.append))
    assert [len(c) for c in chunks] == seen == [16, 16, 16, 16, 6]
    together = ShowerSet.concatenate(chunks)
    assert np.array_equal(serial.ecal, together.ecal) and np.array_equal(serial.energy, together.energy)


def test_workers_from_a_script_on_stdin_run_serially(tmp_path: Path) -> None:
    """``python - < script`` cannot be re-imported by a spawned worker: the stream stays in the caller and
    finishes with the serial showers instead of a broken process pool."""
    script = (
        "import numpy as np\n"
        "from caloquant.geometry import parse_window\n"
        "from caloquant.simulate.engine import AngleRange, ShowerSimulator, Spectrum\n"
        "sim = ShowerSimulator(parse_window('25x25x25'))\n"
        "args = (40, Spectrum(10.0, 100.0), AngleRange(90.0, 90.0))\n"
        "a = [c.ecal for c in sim.stream(*args, seed=2, chunk_size=8, workers=2)]\n"
        "b = [c.ecal for c in sim.stream(*args, seed=2, chunk_size=8)]\n"
        "print(len(a), all(np.array_equal(x, y) for x, y in zip(a, b)))\n"
    )
    out = subprocess.run([sys.executable, "-"], input=script, capture_output=True, text=True, timeout=300,
                         cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(SRC)})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["5", "True"]


def test_spectra_and_threshold() -> None:
    u = simulate(2000, "10:500", spectrum="uniform", seed=1, chunk_size=1000)
    g = simulate(2000, "10:500", spectrum="log", seed=1, chunk_size=1000)
    assert u.energy.min() >= 10 and u.energy.max() <= 500
    assert np.median(u.energy) == pytest.approx(255, rel=0.1)
    assert np.median(g.energy) == pytest.approx(np.sqrt(10 * 500), rel=0.15)
    nonzero = u.ecal[u.ecal > 0]
    assert nonzero.min() >= 0.5 * 1.664 * 2.329 * 0.05 / 1000 * 0.999  # half a MIP in 0.5 mm Si
