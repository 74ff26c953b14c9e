"""One-line messages that name the problem (issue 24, item 9): quantize options and user metrics, native-library
reasons, and code inside a command that exits or raises KeyboardInterrupt."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from caloquant.cli import main
from caloquant.errors import ModelError, reason
from helpers import run_cli

OPENVINO_READ = ('Exception from src/inference/src/cpp/core.cpp:84:\n'
                 'Exception from src/inference/src/model_reader.cpp:148:\n'
                 'Unable to read the model: "m.py" Please check that model format: ".py" is supported.\n\n')
OPENVINO_INFER = ("Exception from src/inference/src/cpp/infer_request.cpp:224:\nCheck 'getShape().isCompatible(dims)' "
                  "failed at src/plugins/intel_cpu/src/memory_desc/cpu_memory_desc.h:99:\nParameterMismatch: Can not "
                  "clone with new dims.\n\n")


def test_reason_drops_the_source_locations_of_native_errors() -> None:
    assert reason(RuntimeError(OPENVINO_READ)) == ('Unable to read the model: "m.py" Please check that model format: '
                                                   '".py" is supported.')
    assert reason(RuntimeError(OPENVINO_INFER)) == "ParameterMismatch: Can not clone with new dims."
    assert reason(RuntimeError("Exception from src/a.cpp:1:")) == "Exception from src/a.cpp:1:"  # nothing else
    assert reason(ValueError()) == "ValueError"
    assert reason(ValueError("x" * 500), limit=50) == "x" * 47 + "..."


def test_unreadable_model_names_the_reason(tmp_path: Path) -> None:
    pytest.importorskip("openvino")
    from caloquant.export.files import read_model

    bad = tmp_path / "m.onnx"
    bad.write_text("not a model")
    with pytest.raises(ModelError) as info:
        read_model(bad)
    text = str(info.value)
    assert "cpp:" not in text.rpartition("(")[2] and len(text.rpartition("(")[2]) > 10


@pytest.fixture(scope="module")
def mlp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny MLP (8 -> 4) as ONNX, and data without 'y' next to it."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    folder = tmp_path_factory.mktemp("mlp")
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    torch.onnx.export(net.eval(), (torch.zeros(4, 8),), str(folder / "m.onnx"), input_names=["x"],
                      dynamic_axes={"x": {0: "n"}}, dynamo=False)
    np.savez(folder / "d.npz", x=np.random.default_rng(0).normal(size=(32, 8)).astype(np.float32))
    np.savez(folder / "wide.npz", x=np.zeros((32, 5), np.float32))
    (folder / "exit0.py").write_text("import sys\n\ndef f(out, y):\n    sys.exit(0)\n")
    (folder / "exit3.py").write_text("import sys\n\ndef f(out, y):\n    sys.exit(3)\n")
    (folder / "kbd.py").write_text("def f(out, y):\n    raise KeyboardInterrupt\n")
    (folder / "exit_at_import.py").write_text("import sys\nsys.exit(1)\n")
    return folder


@pytest.mark.parametrize(("args", "message"), [
    (["--metric", "mse"], "--metric mse without a 'y' array"),
    (["--metric", "mse", "--batch", "0"], "--batch must be >= 1 item, got 0"),
    (["--metric", "mse", "--batch", "-3"], "--batch must be >= 1 item, got -3"),
    (["--max-candidates", "1"], "--max-candidates must be >= 2"),
    (["--max-minutes", "0"], "--max-minutes must be a positive number"),
    (["--metric", "{d}/exit0.py:f", "--absolute"], "metric '{d}/exit0.py:f' called sys.exit(0)"),
    (["--metric", "{d}/exit3.py:f", "--absolute"], "called sys.exit(3)"),
    (["--metric", "{d}/kbd.py:f", "--absolute"], "raised KeyboardInterrupt"),
    (["--metric", "{d}/exit_at_import.py:f"], "importing {d}/exit_at_import.py called sys.exit(1)"),
    (["--metric", "mse", "--absolute", "--data", "{d}/wide.npz"], "do not fit the model (ParameterMismatch"),
])
def test_quantize_onnx_bad_options_and_metrics_are_one_line(mlp: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str], args: list[str],
                                                            message: str) -> None:
    """Refused before any tuning: exit 2, one line naming the problem, no output folder."""
    args = [a.format(d=mlp) for a in args]
    data = [] if "--data" in args else ["--data", str(mlp / "d.npz")]
    code, err = run_cli(capsys, "quantize", "--onnx", mlp / "m.onnx", *data, *args, "-o", tmp_path / "o", "-q")
    assert code == 2 and message.format(d=mlp) in err, err
    assert not (tmp_path / "o").exists()


def test_quantize_generator_bad_batch_is_refused_before_the_model_is_loaded(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run_cli(capsys, "quantize", "--model", tmp_path / "never-read.pt", "--batch", "0", "-o", tmp_path / "o")
    assert code == 2 and "--batch must be >= 1" in err


def test_mse_without_y_works_with_an_absolute_tolerance(mlp: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run_cli(capsys, "quantize", "--onnx", mlp / "m.onnx", "--data", mlp / "d.npz", "--metric", "mse",
                        "--absolute", "--tolerance", "0.01", "--max-candidates", "2", "-o", tmp_path / "o", "-q")
    assert code == 0, err
    assert (tmp_path / "o" / "recipe.json").exists()


@pytest.mark.parametrize(("raised", "code", "message"), [
    (SystemExit(0), 2, "stopped: code run by the command called sys.exit(0)"),
    (SystemExit(5), 5, "called sys.exit(5)"),
    (KeyboardInterrupt(), 130, "interrupted (KeyboardInterrupt raised inside the command)"),
])
def test_code_that_exits_inside_a_command_says_so(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
                                                  tmp_path: Path, raised: BaseException, code: int,
                                                  message: str) -> None:
    from caloquant.data import summary

    def stop(*args: object, **kwargs: object) -> None:
        raise raised

    monkeypatch.setattr(summary, "print_summary", stop)
    assert main(["info", str(tmp_path)]) == code
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1
