"""The GFlash tuning of a generator's training MC (model-card field ``gflash_tuning``): read and checked once, and
used by everything that compares the generator with MC (tuner evaluation data, demo, bench, ship_model)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest

from caloquant.bench.compare import BenchResult, BenchSettings, run_bench
from caloquant.bench.demo import DemoConfig, run_demo
from caloquant.bench.tables import markdown_block, mc_tuning, rich_table
from caloquant.errors import CaloquantError, ModelError
from caloquant.evaluation import EvaluationSettings
from caloquant.machine import describe_machine
from caloquant.models import model_card
from caloquant.models.card import TUNING_FIELD, card_tuning, recorded_tuning, training_tuning, tuning_name
from caloquant.simulate import GFlashTuning, load_tuning, simulate_to_file
from helpers import run_cli

ROOT = Path(__file__).resolve().parents[1]
SMALL = EvaluationSettings(n_showers=16, n_reference=16, seed=1, batch=16)


class Stop(Exception):
    """Raised by a spy once it has seen what the test checks, so nothing more runs."""


def _one_line(error: BaseException) -> str:
    text = str(error)
    assert len(text.splitlines()) == 1, text
    return text


# -- the card field ----------------------------------------------------------------------------------------------


def test_absent_field_means_plain_gflash() -> None:
    assert card_tuning({"spec": {}}, "card.json") == "none"


def test_shipped_tuning_is_read() -> None:
    assert card_tuning({TUNING_FIELD: "geant4"}, "card.json") == "geant4"
    assert card_tuning({TUNING_FIELD: "none"}, "card.json") == "none"
    assert card_tuning(model_card("ecal25"), "ecal25") == "geant4"  # the shipped ecal25 learned GFlash tuned to Geant4


@pytest.mark.parametrize("value", ["geant5", "", "/tmp/tuning.json", 3, None, {"core_scale": 1.1}, ["geant4"]])
def test_unknown_tuning_is_refused_in_one_line(value: object) -> None:
    with pytest.raises(ModelError) as info:
        card_tuning({TUNING_FIELD: value}, "card.json")
    text = _one_line(info.value)
    assert text.startswith("card.json: gflash_tuning: unknown GFlash tuning") and "known: none, geant4" in text


def test_the_example_field_name_is_refused_not_ignored() -> None:
    """A card saying ``"tuning": "geant4"`` must not silently read as plain GFlash."""
    with pytest.raises(ModelError, match="'gflash_tuning', not 'tuning'"):
        card_tuning({"tuning": "geant4"}, "card.json")


def test_override_names_are_checked() -> None:
    assert tuning_name("geant4", "--tuning") == "geant4"
    with pytest.raises(ModelError, match="^--tuning: unknown GFlash tuning 'plain'"):
        tuning_name("plain", "--tuning")


# -- the tuning of training files --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tuned_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two-shower files simulated plain, with the shipped geant4 tuning, and with a tuning caloquant does not ship."""
    d = tmp_path_factory.mktemp("tuned")
    custom = GFlashTuning(core_scale=1.1, fitted_to="a test sample").save(d / "custom.json")
    return {name: simulate_to_file(d / f"{name}.h5", 2, 50.0, seed=3, tuning=tuning)
            for name, tuning in (("none", "none"), ("geant4", "geant4"), ("custom", custom))}


def test_training_files_name_their_tuning(tuned_files: dict[str, Path]) -> None:
    assert training_tuning(tuned_files["none"]) == "none"
    assert training_tuning([tuned_files["geant4"], tuned_files["geant4"]]) == "geant4"
    assert recorded_tuning({}, "old.h5") == "none"  # files from before tunings existed: plain GFlash


def test_training_files_must_agree_and_name_a_shipped_tuning(tuned_files: dict[str, Path]) -> None:
    with pytest.raises(ModelError) as info:
        training_tuning([tuned_files["none"], tuned_files["geant4"]])
    assert "different GFlash tunings" in _one_line(info.value)
    with pytest.raises(ModelError) as info:
        training_tuning(tuned_files["custom"])
    assert "does not ship (fitted to a test sample)" in _one_line(info.value)
    with pytest.raises(ModelError, match="geant4 showers, not GFlash"):
        recorded_tuning({"engine": "geant4"}, "g4.h5")
    with pytest.raises(ModelError, match="unreadable gflash_tuning"):
        recorded_tuning({"gflash_tuning": "{not json"}, "bad.h5")


@pytest.fixture(scope="module")
def ship() -> Any:
    """bench/ship_model.py as a module."""
    spec = importlib.util.spec_from_file_location("ship_model", ROOT / "bench" / "ship_model.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_ship_model_records_the_training_data_tuning(ship: Any, tuned_files: dict[str, Path]) -> None:
    pick = ship.training_data_tuning
    assert pick([str(tuned_files["geant4"])], None, {}, "run.json") == "geant4"
    assert pick([], "geant4", {}, "run.json") == "geant4"
    assert pick([], None, {TUNING_FIELD: "none"}, "run.json") == "none"
    with pytest.raises(CaloquantError, match="--data TRAIN.h5"):
        pick([], None, {}, "run.json")  # never silently 'none'
    with pytest.raises(CaloquantError, match="--data says geant4, --tuning says none"):
        pick([str(tuned_files["geant4"])], "none", {}, "run.json")


def test_ship_model_ships_a_chosen_checkpoint_only_with_a_reason(ship: Any, gan_checkpoint: Path,
                                                                 tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    with pytest.raises(CaloquantError, match="not a training checkpoint"):
        ship.shipped_source(tmp_path, gan_checkpoint, "why")  # a bare generator file has no training state
    ckpt = torch.load(gan_checkpoint, weights_only=True)
    ckpt.update(state={"step": 1234}, config={"select": "goals"}, **{TUNING_FIELD: "geant4"})
    torch.save(ckpt, tmp_path / "c.pt")
    with pytest.raises(CaloquantError, match="--checkpoint needs --why"):
        ship.shipped_source(tmp_path, tmp_path / "c.pt", "")
    source, card, where = ship.shipped_source(tmp_path, tmp_path / "c.pt", "best against 10k MC")
    assert source == tmp_path / "c.pt" and where == str(source)
    assert card["step"] == 1234 and card["selected_by"] == "best against 10k MC" and card["best_metric"] is None
    assert ship.training_data_tuning([], None, card, where) == "geant4"
    with pytest.raises(CaloquantError, match="cannot read the run's exported card"):
        ship.shipped_source(tmp_path, None, "")


# -- loading and using it ----------------------------------------------------------------------------------------


def _shipped_style(gan_checkpoint: Path, folder: Path, tuning: object) -> Path:
    """``gan_checkpoint`` as a bare state_dict with a card recording ``tuning`` (the shipped-weights format)."""
    torch = pytest.importorskip("torch")
    from caloquant._atomic import sha256_file

    ckpt = torch.load(gan_checkpoint, weights_only=True)
    pt = folder / "g.pt"
    torch.save(ckpt["generator"], pt)
    pt.with_suffix(".json").write_text(json.dumps({"spec": ckpt["spec"], "sha256": sha256_file(pt),
                                                   TUNING_FIELD: tuning}))
    return pt


@pytest.fixture
def geant4_model(gan_checkpoint: Path, tmp_path: Path) -> Path:
    return _shipped_style(gan_checkpoint, tmp_path, "geant4")


def test_loaded_and_exported_models_carry_the_tuning(geant4_model: Path, model_cache: Path, tmp_path: Path) -> None:
    pytest.importorskip("openvino")
    from caloquant.export import export_openvino
    from caloquant.models import load_generator
    from caloquant.quantize.source import resolve

    gen = load_generator(geant4_model)
    assert gen.tuning == "geant4" and resolve(gen).tuning == "geant4"
    xml = export_openvino(gen, tmp_path / "model.xml")
    assert json.loads(xml.with_suffix(".spec.json").read_text())[TUNING_FIELD] == "geant4"
    assert resolve(xml).tuning == "geant4"  # an IR alone: from its metadata


def test_a_bad_card_is_refused_when_loading(gan_checkpoint: Path, tmp_path: Path) -> None:
    from caloquant.models import load_generator

    with pytest.raises(ModelError) as info:
        load_generator(_shipped_style(gan_checkpoint, tmp_path, "geant-4"))
    assert "g.json: gflash_tuning: unknown GFlash tuning 'geant-4'" in _one_line(info.value)


def test_tuner_evaluation_data_uses_the_card_tuning(geant4_model: Path, model_cache: Path, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("nncf")
    from caloquant.quantize import evaluators
    from caloquant.quantize.workflow import quantize_generator

    seen = []

    def spy(*args: object, **kwargs: object) -> None:
        seen.append(kwargs["tuning"])
        raise Stop

    monkeypatch.setattr(evaluators, "simulate", spy)
    with pytest.raises(Stop):
        quantize_generator(geant4_model, tmp_path / "q", evaluation=SMALL, log=lambda _: None)
    assert seen == [load_tuning("geant4")]


def test_physics_evaluator_reference_is_simulated_with_the_tuning() -> None:
    from caloquant.models import DEFAULT_SPECS
    from caloquant.quantize import PhysicsEvaluator

    spec = DEFAULT_SPECS["ecal25"]
    plain = PhysicsEvaluator(spec, SMALL)
    tuned = PhysicsEvaluator(spec, SMALL, tuning="geant4")
    assert plain.tuning.is_identity and tuned.tuning == load_tuning("geant4")
    # the geant4 tuning lowers the visible fraction by ~12 %: the same showers, less energy seen
    assert tuned.reference.energy.tolist() == plain.reference.energy.tolist()
    assert tuned.reference.profile_z.sum() < 0.95 * plain.reference.profile_z.sum()


def test_demo_reference_uses_the_card_tuning_or_the_override(geant4_model: Path, model_cache: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("openvino")
    from caloquant.bench import demo

    seen = []

    def spy(*args: object, tuning: object = None, **kwargs: object) -> None:
        seen.append(tuning)
        raise Stop

    monkeypatch.setattr(demo, "simulate_to_file", spy)
    for override, expected in ((None, "geant4"), ("none", "none")):
        with pytest.raises(Stop):
            run_demo(DemoConfig(out_dir=tmp_path / str(override), model=str(geant4_model), progress=False,
                                tuning=override))
        assert seen.pop() == expected
    with pytest.raises(ModelError) as info:
        run_demo(DemoConfig(out_dir=tmp_path / "bad", model=str(geant4_model), tuning="geant"))
    assert _one_line(info.value).startswith("--tuning: unknown GFlash tuning 'geant'")


def test_bench_reference_uses_the_card_tuning(geant4_model: Path, model_cache: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("openvino")
    from caloquant.bench import compare

    seen = []

    def spy(spec: object, settings: object, *, tuning: str) -> None:
        seen.append(tuning)
        raise Stop

    monkeypatch.setattr(compare, "PhysicsEvaluator", spy)
    for override, expected in ((None, "geant4"), ("none", "none")):
        with pytest.raises(Stop):
            run_bench(geant4_model, settings=BenchSettings(rows=("mc",)), tuning=override)
        assert seen.pop() == expected
    with pytest.raises(ModelError, match="^--tuning: unknown GFlash tuning"):
        run_bench(geant4_model, settings=BenchSettings(rows=("mc",)), tuning="Geant4")


def test_bench_table_says_which_tuning_the_mc_used() -> None:
    settings = {"seconds": 1.0, "large_batch": 128, "n_showers": 64, "seed": 2, "n_reference": 200, "n_boot": 20}
    machine = describe_machine()
    old = BenchResult("ecal25", machine, settings, "2026-12-01 00:00 UTC")
    tuned = BenchResult("ecal25", machine, settings | {"mc_tuning": "geant4"}, "2026-12-01 00:00 UTC")
    assert mc_tuning(old) == "plain GFlash, no tuning"  # tables written before the field
    assert "(here: GFlash tuning `geant4`)" in markdown_block(tuned)
    assert "reference MC: GFlash tuning geant4" in str(rich_table(tuned).title)


@pytest.mark.parametrize("command", ["bench", "demo"])
def test_cli_tuning_override_is_checked_first(command: str, gan_checkpoint: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    out = ["--out", tmp_path / "run"] if command == "demo" else []
    code, err = run_cli(capsys, command, "--model", gan_checkpoint, *out, "--tuning", "geant", "-q")
    assert code != 0 and "--tuning: unknown GFlash tuning 'geant' (known: none, geant4)" in err
