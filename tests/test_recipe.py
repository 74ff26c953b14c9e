"""Recipe files: a real one (the recipe shipped with the first ecal25 weights, kept in tests/data) reads and writes
back unchanged; a bad one is a one-line DataFormatError naming the file and the failing field."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from caloquant.choices import Fallback, Precision
from caloquant.cli import main
from caloquant.errors import DataFormatError
from caloquant.quantize.openvino_backend import Calibration
from caloquant.quantize.recipe import Recipe, read_recipe
from helpers import RECIPE_FIXTURE

SHIPPED = RECIPE_FIXTURE  # tuned before machines were recorded


def _shipped() -> dict[str, Any]:
    return json.loads(SHIPPED.read_text())


def test_a_real_recipe_reads_typed_and_writes_back_unchanged() -> None:
    r = read_recipe(SHIPPED)
    assert r.fallback is Fallback.BF16 and r.calibration == Calibration("percentile", True, True)
    assert r.precision["/block3/block3.3/Conv"] is Precision.BF16 and len(r.int8) == 4
    assert r.machine is None and r.to_json() == json.dumps(_shipped(), indent=2)


def test_per_sample_scale_travels_with_the_recipe() -> None:
    doc = _shipped()
    doc["calibration"]["scale"] = "sample"
    r = Recipe.from_dict(doc)
    assert r.calibration == Calibration("percentile", True, True, "sample") and r.calibration.label.endswith("/sample")
    assert Recipe.from_dict(r.to_dict()) == r and r.to_dict()["calibration"]["scale"] == "sample"


def test_older_recipe_without_fallback_tools_or_machine_reads_as_fp32() -> None:
    doc = {k: v for k, v in _shipped().items() if k not in ("fallback", "tools", "tuning", "machine")}
    doc["precision"] = dict.fromkeys(doc["precision"], "int8")
    r = Recipe.from_dict(doc)
    assert r.fallback is Fallback.FP32 and r.machine is None and "machine" not in r.to_dict()


@pytest.mark.parametrize(("change", "message"), [
    (lambda d: d["precision"].update({"/dense/Gemm/WithoutBiases": "x"}),
     "r.json: precision[\"/dense/Gemm/WithoutBiases\"]: expected fp32|bf16|int8, got 'x'"),
    (lambda d: d["precision"].update({"/dense/Gemm/WithoutBiases": "fp32"}),
     "r.json: precision[\"/dense/Gemm/WithoutBiases\"]: expected int8|bf16, got 'fp32'"),
    (lambda d: d.update(fallback="fp16"), "r.json: fallback: expected fp32|bf16, got 'fp16'"),
    (lambda d: d.update(precision=["int8"]), "r.json: precision: expected an object, got ['int8']"),
    (lambda d: d.update(source_sha256=7), "r.json: source_sha256: expected a string, got 7"),
    (lambda d: d.pop("calibration"), "r.json: lacks 'calibration'"),
    (lambda d: d["calibration"].update(range="max"),
     "r.json: calibration.range: expected minmax|mean_minmax|percentile|mse, got 'max'"),
    (lambda d: d["calibration"].update(per_channel="yes"),
     "r.json: calibration.per_channel: expected true|false, got 'yes'"),
    (lambda d: d["calibration"].update(step=2), "r.json: calibration.step: unknown field"),
    (lambda d: d["calibration"].update(scale="channel"),
     "r.json: calibration.scale: expected tensor|sample, got 'channel'"),
    (lambda d: d.update(calibration_data=None), "r.json: calibration_data: expected an object, got None"),
    (lambda d: d.update(format="v0"), "r.json: not a caloquant quantization recipe"),
])
def test_bad_recipe_names_the_failing_field(tmp_path: Path, change: Any, message: str) -> None:
    doc = _shipped()
    change(doc)
    path = tmp_path / "r.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(DataFormatError) as e:
        read_recipe(path)
    assert str(e.value).replace(str(tmp_path) + "/", "").startswith(message)
    assert len(str(e.value).splitlines()) == 1


def test_cli_bad_recipe_is_one_line_before_loading_the_model(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    doc = _shipped()
    doc["precision"]["/block3/block3.3/Conv"] = "int4"
    (tmp_path / "r.json").write_text(json.dumps(doc))
    assert main(["quantize", "--model", "no-such-model", "--recipe", str(tmp_path / "r.json"),
                 "-o", str(tmp_path / "q")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.endswith("r.json: precision[\"/block3/block3.3/Conv\"]: expected fp32|bf16|int8, got 'int4'")
    assert len(err.splitlines()) == 1 and not (tmp_path / "q").exists()
