"""The tuner on a zoo of tiny models built here: a transformer encoder (int64 tokens), convolutions in 1-D/3-D,
an MLP with an integer MatMul; each tuned end to end and replayed from its recipe; cached statistics against
NNCF's own calibration, and the fallback when the cached path fails; the ``--onnx --data --metric`` CLI."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import json

import numpy as np
import pytest
import torch
from torch import nn

from caloquant.cli import main
from caloquant.export.files import read_model
from caloquant.models.registry import sha256_file
from caloquant.quantize import AccuracyNotReachedError, Criterion, PerItemEvaluator, TuneResult, tune
from caloquant.quantize import recipe as rec
from caloquant.quantize.openvino_backend import (
    INTEGER,
    Calibration,
    Quantizer,
    compile_model,
    nncf_internals_known,
    quantizable_layers,
)
from caloquant.quantize.userdata import load_data, metric_evaluator

pytest.importorskip("nncf")

VOCAB, SEQ, D = 24, 12, 32


class Encoder(nn.Module):
    """Token embedding + learned positions, a GELU and a ReLU encoder layer, mean-pooled linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(VOCAB, D)
        self.pos = nn.Parameter(0.1 * torch.randn(1, SEQ, D))
        self.layers = nn.ModuleList(nn.TransformerEncoderLayer(D, 4, 2 * D, dropout=0.0, activation=act,
                                                               batch_first=True) for act in ("gelu", "relu"))
        self.head = nn.Linear(D, 3)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        h = self.emb(tokens) + self.pos[:, :tokens.shape[1]]
        for layer in self.layers:
            h = layer(h)
        return self.head(h.mean(1))


class ConvMix(nn.Module):
    """A 3-D convolution whose output is read as a sequence by a 1-D convolution, then a linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.c3 = nn.Conv3d(1, 4, 3, padding=1)
        self.c1 = nn.Conv1d(24, 8, 3, padding=1)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.c3(x)).reshape(-1, 24, 36)
        return self.head(torch.relu(self.c1(h)).mean(2))


class Mlp(nn.Module):
    """Linear-GELU-Linear-ReLU-Linear, plus an integer MatMul (count of positive inputs) the tuner must skip."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(16, 32), nn.GELU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = (x > 0).long()
        return self.net(x) + 1e-3 * (c.unsqueeze(1) @ c.unsqueeze(2)).squeeze(2).float()


def _inputs(kind: str, n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "encoder":
        return rng.integers(0, VOCAB, (n, SEQ)).astype(np.int64)
    return rng.normal(0, 1, (n, 1, 6, 6, 6) if kind == "convmix" else (n, 16)).astype(np.float32)


ZOO: dict[str, Callable[[], nn.Module]] = {"encoder": Encoder, "convmix": ConvMix, "mlp": Mlp}


def _export(kind: str, folder: Path) -> tuple[Path, nn.Module]:
    torch.manual_seed(0)
    net = ZOO[kind]().eval()
    path = folder / f"{kind}.onnx"
    example = torch.from_numpy(_inputs(kind, 2, 0))
    torch.onnx.export(net, (example,), str(path), input_names=["x"], dynamic_axes={"x": {0: "n"}},
                      opset_version=17, dynamo=False)
    return path, net


@pytest.fixture(scope="module")
def zoo(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, nn.Module]]:
    folder = tmp_path_factory.mktemp("zoo")
    return {kind: _export(kind, folder) for kind in ZOO}


def _agreement(net: nn.Module, x: np.ndarray) -> PerItemEvaluator:
    """Accuracy against the PyTorch FP32 predictions (the labels of a distillation check)."""
    with torch.inference_mode():
        labels = net(torch.from_numpy(x)).argmax(1).numpy()
    return PerItemEvaluator(x, lambda logits: (logits.argmax(axis=1) == labels).astype(float))


def _tune(path: Path, calib: list[np.ndarray], ev: PerItemEvaluator, tolerance: float) -> TuneResult:
    """Tune with a small budget (no calibration variants: the search runs); an unreachable criterion must give a
    clean error with the closest candidate."""
    try:
        return tune(path, calib, ev, criterion=Criterion(tolerance, relative=False, higher_is_better=True),
                    batch=32, max_candidates=4, timing_seconds=0.05, n_boot=100, variants=(), bf16=False)
    except AccuracyNotReachedError as e:
        assert "closest: candidate" in str(e)
        return e.result


def _outputs(model: object, x: np.ndarray) -> np.ndarray:
    return np.asarray(compile_model(model)(x)[0])


@pytest.mark.parametrize("kind", list(ZOO))
def test_zoo_tunes_end_to_end_and_recipe_replays_identically(zoo, kind: str) -> None:
    path, net = zoo[kind]
    x, calib = _inputs(kind, 256, 1), [_inputs(kind, 32, 2)]
    result = _tune(path, calib, _agreement(net, x), 0.05)
    assert result.fp32.metric > 0.99 and {c.kind for c in result.history[:2]} == {"fp32", "full-int8"}
    assert len(result.history) <= 4
    # an INT8 mix, or FP32 itself where no passing mix measured faster on this CPU (tiny models often are)
    passing = [c for c in result.history[1:] if c.passed]
    assert len(result.best.int8) >= 1 or all(c.throughput <= result.best.throughput for c in passing)
    assert result.accepted == (result.best.upper95 <= 0.05)
    names = [r.name for r in result.layers]
    assert set(names) | set(result.skipped) == set(quantizable_layers(read_model(path)))
    r = rec.make_recipe(layers=names, int8=result.best.int8, calibration=Calibration(**result.best.calibration),
                        calibration_data={"kind": "user"}, source_sha256=sha256_file(path), source=str(path))
    replayed = rec.build(read_model(path), r, calib, sha256_file(path))
    assert np.array_equal(_outputs(replayed, x[:64]), _outputs(result.model, x[:64]))


def test_integer_matmul_is_skipped_with_reason(zoo) -> None:
    path, _ = zoo["mlp"]
    q = Quantizer(read_model(path), [_inputs("mlp", 16, 2)])
    assert list(q.skipped.values()) == [INTEGER] and len(q.layers) == 3


def test_cached_statistics_match_a_fresh_calibration_and_fall_back_to_it(zoo, monkeypatch) -> None:
    path, _ = zoo["encoder"]
    q = Quantizer(read_model(path), [_inputs("encoder", 32, 2)])
    attention = [n for n in q.layers if "self_attn" in n]
    assert len(attention) == 8 and not q.skipped  # projections and both activation-activation MatMuls
    x = _inputs("encoder", 16, 3)
    cal = Calibration("percentile", True, True)
    n = attention[1]  # Q.K^T alone: the single-layer build issue 19 crashed on
    fresh = _outputs(q._fresh(q._view("tensor"), [m for m in q.layers if m != n] + q.unlisted, cal), x)
    assert np.array_equal(_outputs(q.build([n], cal), x), fresh) and q.fresh == 0

    def broken(*_: object) -> None:
        raise KeyError("/enc/layers.0/self_attn/Gather_4")

    monkeypatch.setattr(Quantizer, "_cached", broken)
    assert np.array_equal(_outputs(q.build([n], cal), x), fresh) and q.fresh == 1

    import nncf  # a release whose internals are unknown never reaches them: fresh calibration straight away

    assert nncf_internals_known()
    monkeypatch.setattr(nncf, "__version__", "3.5.0")
    monkeypatch.setattr(Quantizer, "_cached", lambda *_: pytest.fail("NNCF internals used on an unknown release"))
    assert not nncf_internals_known()
    assert np.array_equal(_outputs(q.build([n], cal), x), fresh) and q.fresh == 2


def _npz(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


def test_cli_tunes_an_onnx_model_on_npz_data_and_replays_its_recipe(zoo, tmp_path, capsys) -> None:
    path, net = zoo["mlp"]
    x = _inputs("mlp", 128, 1)
    with torch.inference_mode():
        y = net(torch.from_numpy(x)).argmax(1).numpy()
    data = _npz(tmp_path / "d.npz", x=x, y=y, calib=_inputs("mlp", 32, 2))
    out, replay = tmp_path / "out", tmp_path / "replay"
    common = ["quantize", "--onnx", str(path), "--data", str(data)]
    assert main([*common, "--metric", "accuracy", "--tolerance", "0.5", "--absolute", "--max-candidates", "2",
                 "--batch", "32", "-q", "-o", str(out)]) == 0, capsys.readouterr().err
    assert "accepted candidate" in capsys.readouterr().out
    history = json.loads((out / "history.json").read_text())
    assert history["metric"] == "accuracy" and history["higher_is_better"] and len(history["skipped"]) == 1
    assert json.loads((out / "recipe.json").read_text())["calibration_data"]["key"] == "calib"
    assert main([*common, "--recipe", str(out / "recipe.json"), "-o", str(replay)]) == 0
    assert (replay / "model.bin").read_bytes() == (out / "model.bin").read_bytes()
    other = _npz(tmp_path / "other.npz", x=x)
    assert main(["quantize", "--onnx", str(path), "--data", str(other), "--recipe", str(out / "recipe.json"),
                 "-o", str(tmp_path / "r2")]) == 2
    assert "not the data file this recipe was tuned with" in capsys.readouterr().err


def test_user_metric_function_scores_each_item(zoo, tmp_path) -> None:
    path, _ = zoo["mlp"]
    (tmp_path / "m.py").write_text("import numpy as np\n\ndef first(out, y):\n    return out[:, 0] - y\n")
    user = load_data(_npz(tmp_path / "d.npz", x=_inputs("mlp", 8, 1), y=np.arange(8.0)))
    ev = metric_evaluator(read_model(path), user, f"{tmp_path / 'm.py'}:first", False, 4)
    out = np.asarray(compile_model(read_model(path))(user.x)[0])
    assert ev.name == "first" and not ev.higher_is_better
    assert np.allclose(ev.outputs(lambda a: out), out[:, 0] - np.arange(8.0))


def test_cli_onnx_bad_model_data_or_metric_is_one_line(zoo, tmp_path, capsys) -> None:
    path, _ = zoo["mlp"]
    x = _inputs("mlp", 8, 1)
    good = _npz(tmp_path / "good.npz", x=x, y=np.zeros(8))
    (tmp_path / "m.py").write_text("def scalar(out, y):\n    return 1.0\n")
    (tmp_path / "junk.npz").write_text("not a zip")
    (tmp_path / "junk.onnx").write_text("not a model")
    cases = (
        ([str(tmp_path / "none.onnx"), good, "accuracy"], "no such model file"),
        ([str(tmp_path / "junk.onnx"), good, "accuracy"], "not a readable ONNX/OpenVINO model"),
        ([str(tmp_path / "junk.npz"), good, "accuracy"], "--onnx takes an ONNX"),
        ([str(path), tmp_path / "none.npz", "accuracy"], "no such data file"),
        ([str(path), tmp_path / "junk.npz", "accuracy"], "not a readable .npz"),
        ([str(path), _npz(tmp_path / "noy.npz", x=x), "accuracy"], "needs a 'y' array"),
        ([str(path), _npz(tmp_path / "nox.npz", y=x), "accuracy"], "no 'x' array"),
        ([str(path), _npz(tmp_path / "shape.npz", x=x[:, :5]), "mse"], "do not fit the model"),
        ([str(path), good, "f1"], "unknown metric 'f1'"),
        ([str(path), good, f"{tmp_path / 'm.py'}:nope"], "has no function 'nope'"),
        ([str(path), good, f"{tmp_path / 'm.py'}:scalar"], "one finite score per item"),
    )
    for (model, data, metric), text in cases:
        assert main(["quantize", "--onnx", model, "--data", str(data), "--metric", metric,
                     "-o", str(tmp_path / "o")]) == 2
        err = capsys.readouterr().err.strip()
        assert text in err and len(err.splitlines()) == 1 and "Traceback" not in err, (text, err)
        assert not (tmp_path / "o").exists()


def test_recipe_over_every_layer_leaves_skipped_ones_in_floating_point(zoo) -> None:
    path, _ = zoo["mlp"]
    sha, calib = sha256_file(path), [_inputs("mlp", 16, 2)]
    every = quantizable_layers(read_model(path))
    r = rec.make_recipe(layers=every, int8=every, calibration=Calibration(), calibration_data={"kind": "user"},
                        source_sha256=sha, source=str(path))
    q = Quantizer(read_model(path), calib)
    x = _inputs("mlp", 8, 3)
    assert np.array_equal(_outputs(rec.build(read_model(path), r, calib, sha), x),
                          _outputs(q.build(q.layers, Calibration()), x))
