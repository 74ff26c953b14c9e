"""CLI contract of ``caloquant validate``: table, JSON schema, HTML report, one-line errors with exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pytest

from caloquant.cli import main
from caloquant.data import ShowerSet, write_showers
from caloquant.simulate import simulate

REQUIRED = {"3dgan_moments", "3dgan_profiles", "sampling_fraction_mre", "fpd", "kpd", "separation_power_mean",
            "classifier_auc"}


@pytest.fixture(scope="session")
def files(tmp_path_factory: pytest.TempPathFactory, mc_tilted: ShowerSet) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("validate_cli")
    out = {"ref": d / "ref.h5", "cand": d / "cand.h5", "cc": d / "cand_cc.h5", "tilted": d / "tilted.h5",
           "nan": d / "nan.h5"}
    write_showers(out["ref"], simulate(300, "20:200", seed=31))
    cand = simulate(300, "20:200", seed=32)
    write_showers(out["cand"], cand)
    write_showers(out["cc"], cand, layout="calochallenge")
    write_showers(out["tilted"], mc_tilted[:20])
    write_showers(out["nan"], cand[:20])
    with h5py.File(out["nan"], "a") as h5:
        ecal = h5["ECAL"][:]
        ecal[3, 1, 1, 1] = np.nan
        h5["ECAL"][:] = ecal
    return out


def test_validate_one_candidate_json_and_report(files: dict[str, Path], tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    js, html = tmp_path / "v.json", tmp_path / "v.html"
    rc = main(["validate", str(files["ref"]), str(files["cand"]), "--json", str(js), "--report", str(html),
               "--n-boot", "20", "--fpd-batches", "3", "-q"])
    assert rc == 0
    assert "3dgan_moments" in capsys.readouterr().out
    doc = json.loads(js.read_text())
    assert REQUIRED <= set(doc["metrics"])
    for m in doc["metrics"].values():
        assert {"value", "error", "noise_floor", "pass"} <= set(m) and isinstance(m["pass"], bool)
    text = html.read_text()
    assert text.count("data:image/png;base64,") == 6 and "<table>" in text


def test_tilted_samples_get_the_tilt_metric_and_figure(files: dict[str, Path], mc_tilted: ShowerSet,
                                                       tmp_path: Path) -> None:
    full, cand = tmp_path / "tilted.h5", tmp_path / "tilted-cand.h5"
    write_showers(full, mc_tilted)
    write_showers(cand, simulate(200, "50:200", angle="60:120", window="51x51x25", seed=14))
    js, html = tmp_path / "t.json", tmp_path / "t.html"
    rc = main(["validate", str(full), str(cand), "--json", str(js), "--report", str(html), "--no-classifier",
               "--n-boot", "10", "--fpd-batches", "2", "-q"])
    assert rc == 0
    tilt = json.loads(js.read_text())["metrics"]["tilt_error_deg"]
    assert tilt["pass"] and len(tilt["per_bin"]) == len(tilt["tilt"]["angle_bins"]) == 6
    text = html.read_text()
    assert "Tilt: reconstructed vs true incidence angle" in text and text.count("data:image/png;base64,") == 7


def test_validate_several_candidates_both_layouts(files: dict[str, Path], tmp_path: Path) -> None:
    js = tmp_path / "v.json"
    rc = main(["validate", str(files["ref"]), str(files["cand"]), str(files["cc"]), "--json", str(js),
               "--no-classifier", "--max-showers", "200", "--n-boot", "10", "--bins", "3dgan", "--fpd-batches", "3",
               "-q"])
    assert rc == 0
    doc = json.loads(js.read_text())
    cands = doc["candidates"]
    assert set(cands) == {str(files["cand"]), str(files["cc"])}
    a, b = (cands[str(files[k])]["metrics"] for k in ("cand", "cc"))
    assert "classifier_auc" not in a
    assert a["3dgan_moments"]["value"] == pytest.approx(b["3dgan_moments"]["value"], rel=1e-5)
    assert cands[str(files["cand"])]["n_showers"] == 200
    assert "100 GeV" not in a["3dgan_moments"]["empty_bins"]
    assert "300 GeV" in a["3dgan_moments"]["empty_bins"]


def test_threshold_ignores_cells_too_faint_for_the_readout(files: dict[str, Path], tmp_path: Path) -> None:
    """A copy of the reference with every empty cell lit far below the MC's readout threshold: counted as hits
    by default, ignored with --threshold, where the copy scores the same cell spectrum as the reference."""
    from caloquant.data import read_showers
    ref = read_showers(files["ref"])
    fluff = tmp_path / "fluff.h5"
    write_showers(fluff, ShowerSet(np.where(ref.ecal > 0, ref.ecal, np.float32(1e-6)), ref.energy, ref.theta))

    def spectrum(*extra: str) -> float:
        js = tmp_path / "v.json"
        assert main(["validate", str(files["ref"]), str(fluff), "--json", str(js), "--no-classifier", "--n-boot",
                     "5", "--fpd-batches", "2", "-q", *extra]) == 0
        return float(json.loads(js.read_text())["metrics"]["cell_spectrum_separation"]["value"])

    assert spectrum() > 0.5 and spectrum("--threshold", "9.69e-5") == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize(("args", "message"), [
    (["{ref}", "{cand}", "--threshold", "-1"], "--threshold must be in [0, 1) GeV"),
    (["{ref}", "{tilted}"], "window"),
    (["{ref}", "{nan}"], "NaN"),
    (["{ref}", "{d}/missing.h5"], "not found"),
    (["{ref}", "{cand}", "--bins", "abc"], "--bins"),
    (["{ref}", "{cand}", "--bins", "nan,100"], "--bins 'nan,100': energy bin nan GeV"),
    (["{ref}", "{cand}", "--bins", "100,100"], "given twice"),
    (["{ref}", "{cand}", "--bins", "-5,100"], "finite and positive"),
    (["{ref}", "{cand}", "--max-showers", "0"], "must be positive"),
    (["{ref}", "{cand}", "--json", "{d}/nodir/x.json"], "does not exist"),
])
def test_bad_input_one_line_exit_2(files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                   args: list[str], message: str) -> None:
    subs = {k: str(v) for k, v in files.items()} | {"d": str(tmp_path)}
    rc = main(["validate", *(a.format(**subs) for a in args), "--no-classifier", "--n-boot", "5", "--fpd-batches", "2",
               "-q"])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_fixed_energy_gets_a_verdict(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """100 GeV against 100 GeV with the automatic bins: every metric passes or fails (no "not enough data" from
    3DGAN bins that the sample cannot fill)."""
    from caloquant.validate import suite

    for name in ("fpd", "kpd", "fpd_of_rows", "kpd_of_rows"):  # the binned verdicts are under test
        if hasattr(suite, name):
            monkeypatch.setattr(suite, name, lambda *a, **k: (0.0, 0.0))
    ref, cand, js = tmp_path / "ref.h5", tmp_path / "cand.h5", tmp_path / "v.json"
    write_showers(ref, simulate(60, 100.0, seed=71))
    write_showers(cand, simulate(60, 100.0, seed=72))
    assert main(["validate", str(ref), str(cand), "--json", str(js), "--no-classifier", "--n-boot", "10", "-q"]) == 0
    doc = json.loads(js.read_text())
    assert doc["energy_bins"] == ["all", "100 GeV"]
    assert all(m["verdict"] in ("pass", "fail") for m in doc["metrics"].values())
