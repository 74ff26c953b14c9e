"""`caloquant bench`: one table of every deployment, its JSON shape and the Markdown block it regenerates."""

from __future__ import annotations

import hashlib
import json
import math

import pytest

from caloquant.bench.compare import BenchSettings, run_bench
from caloquant.bench.tables import BEGIN, END, NOT_MEASURED, markdown_table, replace_block, update_markdown
from caloquant.cli import main
from caloquant.errors import InputError

ISSUE_KEYS = ("name", "ms_per_shower_b1", "ms_per_shower_b128", "showers_per_s_multistream", "peak_rss_mb",
              "model_mb", "metric", "metric_error")


def test_replace_block_keeps_text_around_the_markers() -> None:
    text = f"intro\n{BEGIN}\nold table\n{END}\noutro\n"
    new = replace_block(text, f"{BEGIN}\nnew\n{END}")
    assert new == f"intro\n{BEGIN}\nnew\n{END}\noutro\n"
    assert replace_block("only text\n", f"{BEGIN}\nx\n{END}").startswith("only text\n\n" + BEGIN)
    with pytest.raises(InputError, match="markers"):
        replace_block(f"{END}\n{BEGIN}\n", f"{BEGIN}\nx\n{END}")


@pytest.fixture(scope="module")
def bench_run(gan_checkpoint, tmp_path_factory):
    """One bench run on a cold model cache, with every ONNX export of the weights recorded (IRs are made from one)."""
    torch = pytest.importorskip("torch")
    settings = BenchSettings(seconds=0.2, n_showers=64, n_reference=200, n_boot=20,
                             rows=("pytorch-fp32", "openvino-fp32", "full-int8", "tuned", "mc"))
    cache, exports, export = tmp_path_factory.mktemp("cache"), [], torch.onnx.export

    def spy(module, *args, **kwargs):
        exports.append(hashlib.sha256(b"".join(t.numpy().tobytes() for t in module.state_dict().values())).digest())
        return export(module, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CALOQUANT_CACHE_DIR", str(cache))
        mp.setattr(torch.onnx, "export", spy)
        return run_bench(gan_checkpoint, settings=settings), exports, cache


@pytest.fixture(scope="module")
def bench_result(bench_run):
    return bench_run[0]


def test_bench_exports_each_weight_set_once(bench_run) -> None:
    _, exports, cache = bench_run
    # one ONNX export; the FP32 IR, INT8 rows and workers all start from it
    assert len(exports) == len(set(exports)) == 1
    assert len(list((cache / "export").iterdir())) == 2  # its ONNX and IR cache entries, nothing exported twice


def test_bench_measures_every_row_in_one_run(bench_result) -> None:
    doc = json.loads(bench_result.to_json())
    assert doc["machine"]["cores"] >= 1 and "versions" in doc["machine"]
    rows = {r["name"]: r for r in doc["rows"]}
    assert list(rows) == ["PyTorch FP32", "OpenVINO FP32", "full INT8 (TFLite-style)", "tuned mixed precision",
                          "reference MC"]
    for name in ("PyTorch FP32", "OpenVINO FP32", "full INT8 (TFLite-style)", "reference MC"):
        row = rows[name]
        assert set(ISSUE_KEYS) <= set(row) and row["missing"] is None, name
        for key in ISSUE_KEYS[1:]:
            if name == "reference MC" and key == "model_mb":
                continue
            assert row[key] is not None and math.isfinite(row[key]) and row[key] >= 0, (name, key)
        assert row["ms_per_shower_b1"] > 0 and row["peak_rss_mb"] > 10
    assert rows["PyTorch FP32"]["speedup_vs_pytorch_fp32"] == pytest.approx(1.0)
    assert rows["reference MC"]["speedup_vs_mc"] == pytest.approx(1.0)
    # INT8 stores weights in a quarter of the bytes; the IR keeps some FP32 constants (biases, scales)
    assert rows["full INT8 (TFLite-style)"]["model_mb"] < 0.5 * rows["OpenVINO FP32"]["model_mb"]
    # OpenVINO FP32 computes what PyTorch computes: the same metric within float rounding
    assert rows["OpenVINO FP32"]["metric"] == pytest.approx(rows["PyTorch FP32"]["metric"], rel=1e-3)
    # a random checkpoint has no shipped recipe: the row stays, says why, and has no figures
    tuned = rows["tuned mixed precision"]
    assert "recipe.json is not shipped" in tuned["missing"] and tuned["metric"] is None
    # an independent MC sample is the floor: far below an untrained generator
    assert rows["reference MC"]["metric"] < 0.25 * rows["PyTorch FP32"]["metric"]


def test_markdown_block_regenerated_in_place(bench_result, tmp_path) -> None:
    doc = tmp_path / "benchmarks.md"
    doc.write_text(f"# Benchmarks\n\nhand-written\n\n{BEGIN}\nstale\n{END}\n\n## Later section\n")
    update_markdown(doc, bench_result)
    text = doc.read_text()
    assert "stale" not in text and "hand-written" in text and text.endswith("## Later section\n")
    assert text.count(BEGIN) == 1 and markdown_table(bench_result) in text
    assert f"| tuned mixed precision | {NOT_MEASURED} |" in text


def test_bench_cli_bad_rows_one_line(gan_checkpoint, tmp_path, capsys) -> None:
    assert main(["bench", "--model", str(gan_checkpoint), "--rows", "pytorch-fp32,tflite", "-q"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "tflite" in err[0]
    assert main(["bench", "--model", str(gan_checkpoint), "--tuned", str(tmp_path / "none.xml"), "-q"]) == 2
    assert "no such model file" in capsys.readouterr().err
    assert main(["bench", "--model", "no-such-model", "-q"]) == 2


def test_bench_cli_writes_json_and_every_markdown(gan_checkpoint, tmp_path) -> None:
    mds = [tmp_path / "a.md", tmp_path / "b.md"]
    mds[1].write_text(f"keep\n{BEGIN}\nold\n{END}\n")
    rc = main(["bench", "--model", str(gan_checkpoint), "--rows", "mc", "--seconds", "0.1", "--showers", "16",
               "--reference", "16", "--json", str(tmp_path / "b.json"), "--markdown", str(mds[0]),
               "--markdown", str(mds[1]), "-q"])
    assert rc == 0
    doc = json.loads((tmp_path / "b.json").read_text())
    assert [r["name"] for r in doc["rows"]] == ["reference MC"] and doc["rows"][0]["showers_per_s_multistream"] > 0
    assert "| reference MC |" in mds[0].read_text()
    assert mds[1].read_text().startswith("keep\n" + BEGIN) and "old" not in mds[1].read_text()


def test_geant4_row_times_the_spectrum_by_the_midpoint_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    """Geant4's CPU time per shower grows with energy: the row averages times (not rates) over the spectrum."""
    from caloquant.bench import compare
    from caloquant.models import DEFAULT_SPECS

    seen = []

    def rate(window, spectrum, n, seed=1):
        seen.append(spectrum.low)
        return 100.0 / spectrum.low  # 1 / (0.01 s per GeV)

    monkeypatch.setattr(compare.geant4, "core_rate", rate)
    spec = DEFAULT_SPECS["ecal25"]  # 10-500 GeV uniform
    assert seen == [] and compare.geant4_core_rate(spec) == pytest.approx(100.0 / 255.0)
    assert seen == pytest.approx([10 + 490 / 6, 255.0, 500 - 490 / 6])
    row = compare.Row("geant4", compare.ROWS["geant4"], "geant4", "fp64")
    compare._geant4_row(row, spec, cores=4)
    assert row.showers_per_s_multistream == pytest.approx(4 * 100.0 / 255.0)
    assert row.ms_per_shower_b1 == pytest.approx(2550.0) and row.metric is None


@pytest.mark.parametrize("bad", [2.0e9, 0.0, -1.0, float("inf"), float("nan")])
def test_geant4_row_refuses_an_implausible_timing(monkeypatch: pytest.MonkeyPatch, bad: float) -> None:
    """A rate no full simulation can reach (a timing error) leaves the row unmeasured with the reason, so neither
    the Geant4 row nor the 'vs Geant4' column shows it."""
    from caloquant.bench import compare
    from caloquant.models import DEFAULT_SPECS

    monkeypatch.setattr(compare.geant4, "core_rate", lambda window, spectrum, n, seed=1: bad)
    row = compare.Row("geant4", compare.ROWS["geant4"], "geant4", "fp64")
    compare._geant4_row(row, DEFAULT_SPECS["ecal25"], cores=4)
    assert row.missing and "implausible Geant4 timing" in row.missing
    assert row.showers_per_s_multistream is None and row.ms_per_shower_b1 is None


def test_speedup_vs_geant4_column(bench_result) -> None:
    """Every measured row is compared with the Geant4 row when the table has one."""
    from dataclasses import replace

    from caloquant.bench.compare import Row, add_speedups

    g4 = Row("geant4", "Geant4 (full simulation)", "geant4", "fp64", showers_per_s_multistream=2.0)
    result = replace(bench_result, rows=[replace(r) for r in bench_result.rows] + [g4])
    add_speedups(result)
    mc = result.row("mc")
    assert mc is not None and mc.speedup_vs_geant4 == pytest.approx(mc.showers_per_s_multistream / 2.0)
    assert g4.speedup_vs_geant4 == pytest.approx(1.0) and g4.speedup_vs_mc is not None
    assert markdown_table(result).splitlines()[0].endswith("| vs Geant4 |")
