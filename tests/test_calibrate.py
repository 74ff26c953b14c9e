"""GFlash tuning (``simulate --tuning``) and its fit to full-simulation samples (``caloquant calibrate``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from caloquant.calibrate import summarise
from caloquant.calibrate.fit import fit_gflash
from caloquant.calibrate.summary import fixed_energy, profile_chi2
from caloquant.cli import main
from caloquant.data import ShowerFile
from caloquant.errors import DataFormatError, InputError
from caloquant.geometry import WINDOW_25
from caloquant.simulate import simulate, simulate_to_file
from caloquant.simulate.engine import ShowerSimulator, Spectrum
from caloquant.simulate.tuning import IDENTITY, SHIPPED, GFlashTuning, load_tuning


def _gflash(n: int, energy: float, seed: int, tuning: GFlashTuning = IDENTITY):
    return ShowerSimulator(WINDOW_25, tuning=tuning).simulate(n, Spectrum(energy, energy), seed=seed)


def test_identity_tuning_leaves_every_shower_unchanged() -> None:
    plain = simulate(40, "10:300", seed=4)
    tuned = simulate(40, "10:300", seed=4, tuning=GFlashTuning(sampling_scale=(1.0, 1.0)))
    assert np.array_equal(plain.ecal, tuned.ecal)


def test_tuning_moves_the_physics_it_names() -> None:
    base = summarise(_gflash(300, 50.0, 3), bootstrap=False).values
    scaled = summarise(_gflash(300, 50.0, 3, GFlashTuning(sampling_scale=(0.9, 0.9))), bootstrap=False).values
    deeper = summarise(_gflash(300, 50.0, 3, GFlashTuning(ln_t_shift=0.15)), bootstrap=False).values
    narrow = summarise(_gflash(300, 50.0, 3, GFlashTuning(core_scale=0.8, tail_scale=0.8)), bootstrap=False).values
    noisy = summarise(_gflash(300, 10.0, 3, GFlashTuning(stochastic_scale=2.0)), bootstrap=False).values
    leaky = summarise(_gflash(300, 50.0, 3, GFlashTuning(profile_fluctuation_scale=1.5)), bootstrap=False).values
    assert scaled["visible_fraction"] / base["visible_fraction"] == pytest.approx(0.9, abs=0.005)
    assert scaled["barycentre"] == pytest.approx(base["barycentre"], abs=0.01)
    assert deeper["barycentre"] > base["barycentre"] + 0.5
    assert narrow["lateral_rms_mm"] < 0.9 * base["lateral_rms_mm"] and narrow["r90_mm"] < base["r90_mm"]
    assert noisy["resolution"] > 1.3 * summarise(_gflash(300, 10.0, 3), bootstrap=False).values["resolution"]
    assert leaky["resolution"] > 1.2 * base["resolution"]  # wider profile fluctuations: more leakage spread


def test_tuning_files_round_trip_and_bad_ones_are_named(tmp_path: Path) -> None:
    t = GFlashTuning(sampling_scale=(0.9, 0.8), ln_t_shift=0.1, core_scale=0.9, fitted_to="test")
    assert load_tuning(t.save(tmp_path / "t.json")) == t
    assert load_tuning(None) is IDENTITY and load_tuning("none") is IDENTITY
    assert not load_tuning("geant4").is_identity and SHIPPED["geant4"].exists()
    bad = tmp_path / "bad.json"
    for data, word in ((dict(t.to_dict(), core_scale=-1), "positive"), (dict(t.to_dict(), format="x"), "format"),
                       (dict(t.to_dict(), typo=1), "typo"), (dict(t.to_dict(), ln_t_shift="a"), "ln_t_shift")):
        bad.write_text(json.dumps(data))
        with pytest.raises(DataFormatError, match=word):
            load_tuning(bad)
    bad.write_text("{")
    with pytest.raises(DataFormatError, match="not JSON"):
        load_tuning(bad)
    with pytest.raises(InputError, match="neither a file"):
        load_tuning(tmp_path / "missing.json")
    with pytest.raises(InputError, match="structures"):
        ShowerSimulator(WINDOW_25, tuning=GFlashTuning(sampling_scale=(1.0,)))


def test_summary_refuses_mixed_energies_and_compares_like_with_like() -> None:
    with pytest.raises(InputError, match="one fixed energy"):
        fixed_energy(simulate(10, "10:20", seed=1))
    with pytest.raises(InputError, match="tilted"):
        fixed_energy(simulate(10, 50, angle="60:70", seed=1))
    a = summarise(_gflash(400, 30.0, 5))
    b = summarise(_gflash(400, 30.0, 6))
    assert a.values["visible_fraction"] == pytest.approx(b.values["visible_fraction"], rel=0.01)
    assert profile_chi2(a, b) < 3.0  # independent samples of one engine agree within the noise
    assert a.errors["r90_mm"] > 0 and a.errors["peak_layer"] > 0


def test_fit_recovers_a_known_tuning() -> None:
    """Closed loop: GFlash with known corrections as the reference; the fit starts from plain GFlash."""
    truth = GFlashTuning(sampling_scale=(0.88, 0.9), ln_t_shift=0.08, core_scale=0.85, tail_scale=0.9)
    refs = [_gflash(400, e, 70 + k, truth) for k, e in enumerate((10.0, 40.0))]
    result = fit_gflash(refs, n_fit=150, n_check=200, max_steps=40)
    t = result.tuning
    assert result.chi2_after < 0.1 * result.chi2_before
    assert t.sampling_scale == pytest.approx(truth.sampling_scale, rel=0.03)
    assert t.ln_t_shift == pytest.approx(truth.ln_t_shift, abs=0.03)
    assert t.core_scale < 1.0 and t.tail_scale < 1.0  # both radii narrowed (core and tail trade off in r90)
    for ref, after in zip(result.reference, result.after):
        assert after.values["visible_fraction"] == pytest.approx(ref.values["visible_fraction"], rel=0.01)
        for q in ("barycentre", "long_width", "r90_mm", "lateral_rms_mm"):  # agree within 3 sigma
            sigma = np.hypot(after.errors[q], ref.errors[q])
            assert abs(after.values[q] - ref.values[q]) < 3 * sigma, q


def test_calibrate_cli_writes_a_tuning_that_simulate_uses(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                                          ) -> None:
    refs = []
    for e in (10, 30):
        refs += ["--reference", str(simulate_to_file(tmp_path / f"r{e}.h5", 80, e, seed=e))]
    out, table = tmp_path / "t.json", tmp_path / "t.md"
    assert main(["calibrate", "-o", str(out), *refs, "--fit-showers", "60", "--check-showers", "60", "--steps", "2",
                 "--table", str(table), "-q"]) == 0
    assert load_tuning(out).fitted_to.endswith("80 showers at 10, 30 GeV")
    assert "GFlash tuned" in table.read_text()
    assert main(["calibrate", "-o", str(out), *refs, "-q"]) == 2
    assert "already exists" in capsys.readouterr().err
    sim = tmp_path / "s.h5"
    assert main(["simulate", "-o", str(sim), "--n", "5", "--energy", "20", "--tuning", str(out), "-q"]) == 0
    with ShowerFile(sim) as f:
        assert json.loads(f.attrs["gflash_tuning"]) == load_tuning(out).to_dict()
    assert main(["info", str(sim)]) == 0
    assert "GFlash tuning" in capsys.readouterr().out
    assert main(["simulate", "-o", str(tmp_path / "g.h5"), "--n", "2", "--energy", "20", "--engine", "geant4",
                 "--tuning", "geant4", "-q"]) == 2
    assert "gflash engine only" in capsys.readouterr().err
    assert main(["calibrate", "-o", str(tmp_path / "x.json"), "--energies", "10", "-q"]) == 2
    assert "two or more" in capsys.readouterr().err
