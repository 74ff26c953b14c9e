"""GFlash tuning (``simulate --tuning``) and its fit to full-simulation samples (``caloquant calibrate``)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from caloquant._atomic import OutputLock
from caloquant.calibrate import calibrate, summarise
from caloquant.calibrate.fit import N_PARAMETERS, _tuning, fit_gflash, parameter_bounds
from caloquant.calibrate.summary import fixed_energy, profile_chi2
from caloquant.calibrate.workflow import results_table
from caloquant.cli import main
from caloquant.data import ShowerFile, write_showers
from caloquant.errors import DataFormatError, InputError
from caloquant.geometry import WINDOW_25
from caloquant.simulate import simulate, simulate_to_file
from caloquant.simulate.engine import ShowerSimulator, Spectrum
from caloquant.simulate.tuning import IDENTITY, RANGES, SHIPPED, GFlashTuning, load_tuning
from helpers import leftovers, run_cli


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
    for data, word in ((dict(t.to_dict(), core_scale=-1), "core_scale -1"), (dict(t.to_dict(), format="x"), "format"),
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


@pytest.mark.parametrize("field, value, message", [
    ("sampling_scale", [1e300, 1e300], "sampling_scale 1e+300 is outside its physical range [0.5, 2]"),
    ("sampling_scale", [100, 100], "sampling_scale 100 is outside"),  # 215 GeV visible for 100 GeV primaries
    ("sampling_scale", [0.0, 1.0], "sampling_scale 0 is outside"), ("sampling_scale", [1.0] * 17, "at most 16"),
    ("sampling_scale", [True, 1.0], "sampling_scale must be a number, got True"),
    ("sampling_scale", [[1.0], 1.0], "sampling_scale must be a number"), ("sampling_scale", 1.0, "must be a list"),
    ("ln_t_shift", 50, "ln_t_shift 50 is outside its physical range [-0.4, 0.4]"),  # all-zero showers
    ("stochastic_scale", 1e6, "stochastic_scale 1e+06 is outside"),  # all-zero showers
    ("ln_alpha_shift", -50, "ln_alpha_shift -50 is outside"),  # ran for 14 minutes, deaf to Ctrl-C
    ("ln_t_slope", 0.5, "ln_t_slope 0.5 is outside"), ("ln_alpha_slope", -1, "ln_alpha_slope -1 is outside"),
    ("profile_fluctuation_scale", 3, "profile_fluctuation_scale 3 is outside"),
    ("core_scale", 1e-300, "core_scale 1e-300 is outside"), ("tail_scale", -1, "tail_scale -1 is outside"),
    ("tail_scale", 10**400, "tail_scale must be a finite number"), ("core_scale", None, "core_scale must be a number"),
    ("core_scale", {"a": 1}, "core_scale must be a number"), ("ln_t_shift", "0.1", "ln_t_shift must be a number"),
    ("fitted_to", 3, "fitted_to must be a string"), ("fitted_to", "x" * 5000, "at most 4000 characters"),
])
def test_tuning_values_outside_their_physical_range_are_refused_at_load(tmp_path: Path, field: str, value: object,
                                                                        message: str) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(dict(IDENTITY.to_dict(), **{field: value})))
    with pytest.raises(DataFormatError) as error:
        load_tuning(bad)
    assert str(error.value).startswith(f"{bad}: ") and message in str(error.value) and field in str(error.value)
    assert "\n" not in str(error.value)
    if isinstance(value, (int, float)) and field not in ("sampling_scale", "fitted_to"):
        with pytest.raises(InputError, match=field):  # made in code, too
            GFlashTuning(**{field: value})


def test_tuning_files_that_are_not_json_text_are_one_line_errors(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.json"
    for content, message in ((bytes(range(256)), "not a text file"), (b"[" * 100_000, "nested too deeply"),
                             (b" " * (2 << 20), "over 1024 kB"), (b"NaN", "not a JSON object"),
                             (json.dumps(dict(IDENTITY.to_dict(), core_scale=float("nan"))).encode(), "core_scale"),
                             (b'{"format": "' + b"x" * 10_000 + b'"}', "format 'xxx")):
        bad.write_bytes(content)
        with pytest.raises(DataFormatError, match=message):
            load_tuning(bad)
    bad.write_text(json.dumps(dict(IDENTITY.to_dict(), ln_t_shift=50)))
    out = tmp_path / "s.h5"
    code, err = run_cli(capsys, "simulate", "-o", out, "--n", "2", "--energy", "100", "--tuning", bad, "-q")
    assert code == 2 and "ln_t_shift 50 is outside its physical range" in err and not out.exists()


def test_shipped_tuning_is_within_the_ranges_and_their_corners_simulate_sane_showers() -> None:
    shipped = load_tuning("geant4")
    for name, (low, high) in RANGES.items():
        value = getattr(shipped, name)
        assert all(low <= v <= high for v in (value if isinstance(value, tuple) else (value,))), name
    # The corners where the longitudinal profile is most extreme, at the engine's lowest and highest energy:
    # finite showers with less visible than primary energy (a few per cent of 1 GeV ones leak out entirely).
    for k, signs in enumerate(itertools.product((-1, 1), repeat=4)):
        t_shift, t_slope, a_shift, a_slope = (s * RANGES[f][1] for s, f in zip(signs, (
            "ln_t_shift", "ln_t_slope", "ln_alpha_shift", "ln_alpha_slope")))
        scale = RANGES["sampling_scale"][k % 2]
        tuning = GFlashTuning(sampling_scale=(scale, scale), stochastic_scale=RANGES["stochastic_scale"][1],
                              ln_t_shift=t_shift, ln_t_slope=t_slope, ln_alpha_shift=a_shift, ln_alpha_slope=a_slope,
                              profile_fluctuation_scale=RANGES["profile_fluctuation_scale"][k // 8],
                              core_scale=RANGES["core_scale"][k // 4 % 2], tail_scale=RANGES["tail_scale"][k % 2])
        for energy in (1.0, 1000.0):
            s = _gflash(8, energy, k, tuning)
            visible = s.ecal.sum(axis=(1, 2, 3), dtype=np.float64)
            assert np.all(np.isfinite(s.ecal)) and np.all(visible < energy), (tuning, energy)
            assert np.mean(visible > 0) >= 0.75, (tuning, energy)


def test_fit_parameters_are_bounded_by_the_tuning_ranges() -> None:
    lower, upper = parameter_bounds(2)
    assert len(lower) == N_PARAMETERS and np.all(lower < 0) and np.all(upper > 0)  # plain GFlash is inside
    for x in (lower, upper, lower - 1e-12, upper + 1e-12):  # rounding at a bound still gives a valid tuning
        t = _tuning(x, 2, "test")
        assert t.sampling_scale[0] in RANGES["sampling_scale"] and t.ln_t_slope in RANGES["ln_t_slope"]


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


#: Attributes that make GFlash showers stand in for Geant4-engine files (Geant4 is far too slow for a fast test).
G4_ATTRS = {"generator": "Geant4 11.4 full simulation (stand-in: GFlash showers)", "engine": "geant4",
            "geant4_data": "test data"}


def _reference(path: Path, n: int, energy: float, attrs: dict[str, str] | None = None, **kw: object) -> Path:
    """``n`` perpendicular GFlash showers at ``energy`` written with ``attrs`` (default: as Geant4 output)."""
    return write_showers(path, simulate(n, energy, seed=int(energy), **kw), attrs=G4_ATTRS if attrs is None else attrs)


def test_calibrate_cli_writes_a_tuning_that_simulate_uses(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                                          ) -> None:
    refs = []
    for e in (10, 30):
        refs += ["--reference", str(_reference(tmp_path / f"r{e}.h5", 80, e))]
    out, table = tmp_path / "t.json", tmp_path / "t.md"
    assert main(["calibrate", "-o", str(out), *refs, "--fit-showers", "60", "--check-showers", "60", "--steps", "2",
                 "--table", str(table), "-q"]) == 0
    tuning = load_tuning(out)
    assert tuning.fitted_to.startswith("Geant4 11.4") and tuning.fitted_to.endswith("80 showers at 10, 30 GeV")
    text = table.read_text()
    assert "| Geant4 |" in text and "GFlash tuned" in text
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


def test_references_without_a_generator_are_labelled_reference(tmp_path: Path) -> None:
    """A full simulation made elsewhere records no generator: accepted, and called what it is, "reference"."""
    refs = [_reference(tmp_path / f"r{e}.h5", 50, e, attrs={}) for e in (10, 30)]
    result = calibrate(tmp_path / "t.json", references=refs, n_fit=50, n_check=50, max_steps=1,
                       table=tmp_path / "t.md")
    assert result.label == "reference" and "Geant4" not in (tmp_path / "t.md").read_text()
    assert "| reference |" in results_table(result)
    assert load_tuning(tmp_path / "t.json").fitted_to.startswith("reference samples (generator not recorded)")


@pytest.mark.parametrize("make, message", [
    (lambda d: [simulate_to_file(d / "g.h5", 60, 10, seed=1), _reference(d / "r.h5", 60, 30)],
     "made by 'caloquant GFlash reference MC', not Geant4"),
    (lambda d: [_reference(d / "a.h5", 60, 10, {"generator": "caloquant generate (ecal25)"}),
                _reference(d / "b.h5", 60, 30)], "made by 'caloquant generate (ecal25)'"),
    (lambda d: [_reference(d / "a.h5", 60, 10, {"engine": "gflash"}), _reference(d / "b.h5", 60, 30)],
     "the gflash engine"),
    (lambda d: [_reference(d / "a.h5", 49, 10), _reference(d / "b.h5", 60, 30)], "49 showers"),
    (lambda d: [_reference(d / "a.h5", 60, 10), _reference(d / "b.h5", 60, 30, {})], "different simulations"),
    (lambda d: [_reference(d / "a.h5", 60, 10), _reference(d / "b.h5", 60, 30, dict(G4_ATTRS, geant4_data="x"))],
     "different simulations: geant4_data"),
    (lambda d: [_reference(d / "a.h5", 60, 10), _reference(d / "b.h5", 60, 10)], "both hold 10 GeV"),
    (lambda d: [_reference(d / "a.h5", 60, 10), _reference(d / "b.h5", 60, 10, angle=60)], "tilted"),
])
def test_calibrate_checks_what_the_references_are(tmp_path: Path, capsys: pytest.CaptureFixture[str], make,
                                                  message: str) -> None:
    refs = [t for p in make(tmp_path) for t in ("--reference", p)]
    code, err = run_cli(capsys, "calibrate", "-o", tmp_path / "t.json", *refs, "-q")
    assert code == 2 and message in err
    assert not (tmp_path / "t.json").exists() and leftovers(tmp_path) == []


def test_kept_references_are_checked_by_their_contents(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                                       ) -> None:
    """A kept file is reused only when it holds --n Geant4 showers at its energy; checked before any simulation."""
    keep = tmp_path / "g4"
    keep.mkdir()
    args = ["calibrate", "-o", tmp_path / "t.json", "--keep-references", keep, "--energies", "10,20", "--n", "60",
            "-q"]
    for make, message in ((lambda p: _reference(p, 60, 20), "holds 20 GeV showers, not 10 GeV"),
                          (lambda p: _reference(p, 50, 10), "holds 50 showers, --n asks for 60"),
                          (lambda p: _reference(p, 10, 10), "10 showers; a calibration reference needs at least 50"),
                          (lambda p: simulate_to_file(p, 60, 10, seed=1), "not Geant4"),
                          (lambda p: _reference(p, 60, 10, {}), "records no generator")):
        path = keep / "geant4_10GeV.h5"
        path.unlink(missing_ok=True)
        make(path)
        code, err = run_cli(capsys, *args)
        assert code == 2 and message in err and str(path) in err
        assert sorted(p.name for p in keep.iterdir()) == ["geant4_10GeV.h5"]  # nothing simulated
    assert not (tmp_path / "t.json").exists()


@pytest.mark.parametrize("args, message", [
    (["--energies", "nan,10"], "energy nan GeV is outside"), (["--energies", "10,inf"], "energy inf GeV"),
    (["--energies", "0.5,10"], "energy 0.5 GeV is outside 1-1000"), (["--energies", "10,10.0"], "given twice"),
    (["--energies", "10,x"], "comma-separated"), (["--n", "10"], "at least 50 reference showers"),
    (["--n", "0"], "--n must be positive"), (["--seed", "-1"], "--seed must be >= 0"),
    (["--workers", "-2"], "--workers must be positive"), (["--fit-showers", "10"], "--fit-showers 10"),
    (["--check-showers", "-1"], "--check-showers must be positive"), (["--steps", "0"], "--steps must be positive"),
    (["--to", "fluka"], "calibration targets are geant4"),
    (["--reference", "{d}/r.h5", "--energies", "10,20"], "--energies applies to simulated references"),
    (["--reference", "{d}/r.h5", "--keep-references", "{d}"], "does not apply with --reference"),
])
def test_calibrate_options_are_checked_before_any_work(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                       args: list[str], message: str) -> None:
    code, err = run_cli(capsys, "calibrate", "-o", tmp_path / "t.json", "-q", *[a.format(d=tmp_path) for a in args])
    assert code == 2 and message in err
    assert list(tmp_path.iterdir()) == []


def test_calibrate_refuses_an_output_another_run_is_writing(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                                            ) -> None:
    """Two runs on one -o: the second is refused at once (it used to run to the end and replace the first's)."""
    refs = [t for e in (10, 30) for t in ("--reference", _reference(tmp_path / f"r{e}.h5", 60, e))]
    for locked in ("t.json", "t.md"):
        with OutputLock(tmp_path / locked):
            code, err = run_cli(capsys, "calibrate", "-o", tmp_path / "t.json", "--table", tmp_path / "t.md", *refs,
                                "-q", "--overwrite")
        assert code == 2 and "another run is writing it" in err and str(tmp_path / locked) in err
        assert not (tmp_path / "t.json").exists() and not (tmp_path / "t.md").exists()
    with pytest.raises(InputError, match="the same file as the tuning"):
        calibrate(tmp_path / "t.json", references=[tmp_path / "r10.h5", tmp_path / "r30.h5"], table=tmp_path / "t.json")
