"""Transformer encoder classifier (issue 19): FP32, full INT8 and tuned throughput at batch 1 and 64, naive against
bin-packed batching of variable-length requests, and caloquant's tuner against NNCF accuracy control, in one run.

    PYTHONPATH=src .venv/bin/python bench/transformer_quant.py --out runs/transformer_quant.json

The model is built and trained here (no downloads): token embedding + learned positions, 2
``nn.TransformerEncoderLayer`` (d=64, 4 heads), mean-pooled linear head, trained for a few seconds to tell whether
a sequence of 8-64 tokens contains both tokens of ``PATTERN``; exported with ``torch.onnx.export(opset_version=17,
dynamo=False)``, int64 tokens, dynamic batch and sequence axes. Prints markdown tables for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from caloquant.generate.packing import Packer

VOCAB, MIN_LEN, MAX_LEN, D, HEADS, PAD, PATTERN = 32, 8, 64, 64, 4, 0, (5, 9)
#: Padded lengths of the packing buckets (a request is padded up to the next edge).
BUCKETS = tuple(range(16, MAX_LEN + 1, 8))


class Encoder(nn.Module):
    """Token embedding + learned positions, 2 encoder layers (d=64, 4 heads), mean-pooled linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(VOCAB, D)
        self.pos = nn.Parameter(0.02 * torch.randn(1, MAX_LEN, D))
        self.enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(D, HEADS, 2 * D, dropout=0.0, batch_first=True),
                                         2, enable_nested_tensor=False)
        self.head = nn.Linear(D, 2)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.enc(self.emb(tokens) + self.pos[:, :tokens.shape[1]]).mean(1))


def sequences(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n`` sequences padded to MAX_LEN, their lengths and balanced labels (1 = holds both PATTERN tokens)."""
    lengths = rng.integers(MIN_LEN, MAX_LEN + 1, n)
    tokens = rng.integers(1, VOCAB - 2, (n, MAX_LEN))
    tokens[np.isin(tokens, PATTERN)] = VOCAB - 1
    labels = (rng.random(n) < 0.5).astype(np.int64)
    # bit 0: first token present, bit 1: second; negatives hold one or none, so no single token gives the label
    which = np.where(labels == 1, 3, rng.integers(0, 3, n))
    at_a = (rng.random(n) * lengths).astype(int)
    at_b = (at_a + 1 + (rng.random(n) * (lengths - 1)).astype(int)) % lengths
    rows = np.arange(n)
    tokens[rows[which & 1 > 0], at_a[which & 1 > 0]] = PATTERN[0]
    tokens[rows[which & 2 > 0], at_b[which & 2 > 0]] = PATTERN[1]
    tokens[np.arange(MAX_LEN) >= lengths[:, None]] = PAD
    return tokens.astype(np.int64), lengths, labels


def train(steps: int, seed: int = 0) -> tuple[Encoder, float]:
    """The encoder trained with Adam on batches padded to random widths (so any padding is in distribution)."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    net = Encoder()
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    t0 = time.perf_counter()
    for _ in range(steps):
        tokens, lengths, labels = sequences(64, rng)
        width = int(rng.integers(lengths.max(), MAX_LEN + 1))
        loss = nn.functional.cross_entropy(net(torch.from_numpy(tokens[:, :width])), torch.from_numpy(labels))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval(), time.perf_counter() - t0


def export(net: Encoder, path: Path) -> Path:
    """ONNX export (opset 17, TorchScript exporter), int64 tokens with dynamic batch and sequence axes."""
    # The tracer bakes the example's sequence length into nn.MultiheadAttention's reshapes as constants: export at
    # two lengths, and replace the constants that differ by the input's length read at run time.
    import onnx
    from onnx import helper, numpy_helper

    tokens = sequences(2, np.random.default_rng(1))[0]
    graphs = []
    for seq in (37, 41):
        torch.onnx.export(net, (torch.from_numpy(tokens[:, :seq]),), str(path), input_names=["tokens"],
                          output_names=["logits"], dynamic_axes={"tokens": {0: "batch", 1: "seq"}}, opset_version=17,
                          dynamo=False)
        graphs.append(onnx.load(str(path)))
    model, other = graphs

    def value(node: Any) -> np.ndarray:
        return numpy_helper.to_array(node.attribute[0].t)

    nodes = [helper.make_node("Shape", ["tokens"], ["caloquant_seq_len"], start=1, end=2)]
    for n, m in zip(model.graph.node, other.graph.node):
        baked = n.op_type == "Constant" and not np.array_equal(value(n), value(m))
        if baked and value(n).tolist() != [37]:
            raise RuntimeError(f"export: constant {n.output[0]} depends on the sequence length as {value(n)}")
        nodes.append(helper.make_node("Identity", ["caloquant_seq_len"], [n.output[0]]) if baked else n)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def padded(tokens: np.ndarray, width: int) -> np.ndarray:
    """Rows of ``tokens`` (padded to MAX_LEN) cut to their first ``width`` columns."""
    return np.ascontiguousarray(tokens[:, :width])


def naive_batches(lengths: np.ndarray, batch: int) -> list[tuple[np.ndarray, int]]:
    """Requests in arrival order: batch 1 at their own length, or ``batch`` at a time padded to MAX_LEN."""
    if batch == 1:
        return [(np.array([i]), int(n)) for i, n in enumerate(lengths)]
    return [(np.arange(i, min(i + batch, len(lengths))), MAX_LEN) for i in range(0, len(lengths), batch)]


def packed_batches(lengths: np.ndarray, batch: int) -> list[tuple[np.ndarray, int]]:
    """Requests bin-packed into full batches per length bucket (padded to the bucket edge); partial ones last."""
    edges = np.asarray(BUCKETS)
    bucket = np.searchsorted(edges, lengths)
    packers = {int(k): Packer(batch) for k in np.unique(bucket)}
    out = [(np.array([s.request for s in b]), int(edges[k]))
           for i, k in enumerate(bucket) for b in packers[int(k)].add(i, 1)]
    rest = ((k, p.flush()) for k, p in packers.items())
    return out + [(np.array([s.request for s in b]), int(edges[k])) for k, b in rest if b]


def serve(model: Any, tokens: np.ndarray, labels: np.ndarray, plan: Sequence[tuple[np.ndarray, int]],
          seconds: float) -> tuple[float, float]:
    """Requests/s over the plan (median of passes repeated for ``seconds``) and the accuracy it serves."""
    from caloquant.quantize.openvino_backend import compile_model

    request = compile_model(model, {"PERFORMANCE_HINT": "LATENCY"}).create_infer_request()
    inputs = [padded(tokens[rows], width) for rows, width in plan]
    pred = np.empty(len(tokens), dtype=np.int64)
    for (rows, _), x in zip(plan, inputs):
        pred[rows] = np.asarray(request.infer({0: x})[0]).argmax(1)
    rates: list[float] = []
    start = time.perf_counter()
    while len(rates) < 2 or time.perf_counter() - start < seconds:
        t0 = time.perf_counter()
        for x in inputs:
            request.infer({0: x})
        rates.append(len(tokens) / (time.perf_counter() - t0))
    return float(np.median(rates)), float(np.mean(pred == labels))


def nncf_peer(path: Path, calib: list[np.ndarray], x_val: np.ndarray, y_val: np.ndarray, tolerance: float,
              batch: int) -> tuple[Any, int, float]:
    """NNCF ``quantize_with_accuracy_control`` on the same model, data, metric and tolerance: model, calls, s."""
    import nncf

    from caloquant.export.files import read_model

    calls = 0

    def validate(compiled: Callable[[np.ndarray], Any], data: Any) -> float:
        nonlocal calls
        calls += 1
        logits = np.concatenate([np.asarray(compiled(x)[0]) for x in data])
        return float(np.mean(logits.argmax(1) == y_val))

    t0 = time.perf_counter()
    model = nncf.quantize_with_accuracy_control(
        read_model(path), nncf.Dataset(calib), nncf.Dataset([x_val[i:i + batch] for i in range(0, len(x_val), batch)]),
        validate, max_drop=tolerance, drop_type=nncf.DropType.ABSOLUTE, subset_size=sum(map(len, calib)))
    return model, calls, time.perf_counter() - t0


def main() -> None:
    """Train, export, tune, run the NNCF peer, measure every model and print the tables."""
    from caloquant.quantize import Criterion, PerItemEvaluator, tune
    from caloquant.export.files import read_model
    from caloquant.quantize.openvino_backend import Quantizer, batch_runner, compile_model, int8_layers, throughput
    from caloquant.quantize.tuner import BASELINE_CALIBRATION

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=120, help="training steps (batch 64)")
    ap.add_argument("--items", type=int, default=1024, help="evaluation sequences (padded to MAX_LEN)")
    ap.add_argument("--requests", type=int, default=512, help="variable-length requests served")
    ap.add_argument("--tolerance", type=float, default=0.01, help="absolute accuracy drop allowed")
    ap.add_argument("--max-candidates", type=int, default=12)
    ap.add_argument("--seconds", type=float, default=2.0, help="timing per throughput figure")
    ap.add_argument("--workdir", type=Path, default=Path("runs/transformer_quant"))
    ap.add_argument("--out", type=Path, default=None, help="also write the figures as JSON")
    args = ap.parse_args()
    torch.set_num_threads(1)  # faster than 2 threads for this small model on the shared 2 cores

    net, train_s = train(args.steps)
    args.workdir.mkdir(parents=True, exist_ok=True)
    path = export(net, args.workdir / "encoder.onnx")
    x_val, _, y_val = sequences(args.items, np.random.default_rng(2))
    calib_x = sequences(256, np.random.default_rng(3))[0]
    calib = [calib_x[i:i + 64] for i in range(0, len(calib_x), 64)]
    req_tokens, req_lengths, req_labels = sequences(args.requests, np.random.default_rng(4))
    print(f"trained {args.steps} steps in {train_s:.1f} s")

    ev = PerItemEvaluator(x_val, lambda logits: (logits.argmax(1) == y_val).astype(float))
    criterion = Criterion(args.tolerance, relative=False, higher_is_better=True)
    t0 = time.perf_counter()
    ours = tune(path, calib, ev, criterion=criterion, batch=64, max_candidates=args.max_candidates,
                timing_seconds=0.5, log=print)
    ours_s = time.perf_counter() - t0
    peer, peer_calls, peer_s = nncf_peer(path, calib, x_val, y_val, args.tolerance, 64)
    q = Quantizer(read_model(path), calib)
    models = {"OpenVINO FP32": read_model(path), "full INT8 (minmax)": q.build(q.layers, BASELINE_CALIBRATION),
              "caloquant tuned": ours.model, "NNCF accuracy control": peer}
    plans = {"b1 own length": naive_batches(req_lengths, 1), "b64 padded to 64": naive_batches(req_lengths, 64),
             "b64 bin-packed": packed_batches(req_lengths, 64)}
    rows: dict[str, dict[str, Any]] = {}
    for name, model in models.items():
        row: dict[str, Any] = {"int8_layers": len(int8_layers(model) & set(q.layers)),
                               "accuracy": float(ev.metric(ev.outputs(batch_runner(compile_model(model), 64)))[0])}
        for b in (1, 64):
            row[f"static b{b}"] = throughput(model, padded(x_val[:b], MAX_LEN), seconds=args.seconds)
        for label, plan in plans.items():
            row[label], row[f"{label} accuracy"] = serve(model, req_tokens, req_labels, plan, args.seconds)
        rows[name] = row
    tuners = {"caloquant tune": {"candidates": len(ours.history), "seconds": ours_s, "model": "caloquant tuned"},
              "NNCF quantize_with_accuracy_control": {"candidates": peer_calls, "seconds": peer_s,
                                                      "model": "NNCF accuracy control"}}
    report = {"train_steps": args.steps, "train_seconds": train_s, "layers": len(q.layers), "skipped": q.skipped,
              "tolerance": args.tolerance, "requests": args.requests, "items": args.items,
              "padded_fraction": {k: padding(req_lengths, p) for k, p in plans.items()}, "rows": rows,
              "tuners": tuners, "accepted": ours.accepted, "stop_reason": ours.stop_reason}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(report, indent=2))
    print(markdown(report))


def padding(lengths: np.ndarray, plan: Sequence[tuple[np.ndarray, int]]) -> float:
    """Fraction of the tokens a plan computes that are padding."""
    return 1.0 - float(lengths.sum()) / sum(len(rows) * width for rows, width in plan)


def markdown(report: dict[str, Any]) -> str:
    """The two tables of docs/benchmarks.md: throughput per model and serving plan, and the tuner comparison."""
    rows, pad = report["rows"], report["padded_fraction"]
    fp32 = rows["OpenVINO FP32"]
    lines = ["| model | INT8 layers | accuracy | static b1 | static b64 | var. b1 own length | var. b64 padded to 64 "
             "| var. b64 bin-packed | packed / padded | b64 packed x FP32 |", "|---" * 10 + "|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['int8_layers']}/{report['layers']} | {r['accuracy']:.4f} | "
                     f"{r['static b1']:.0f} | {r['static b64']:.0f} | {r['b1 own length']:.0f} | "
                     f"{r['b64 padded to 64']:.0f} | {r['b64 bin-packed']:.0f} | "
                     f"{r['b64 bin-packed'] / r['b64 padded to 64']:.2f}x | "
                     f"{r['b64 bin-packed'] / fp32['b64 bin-packed']:.2f}x |")
    lines += ["", "Padding computed: " + ", ".join(f"{k} {100 * v:.0f} %" for k, v in pad.items()) + ".",
              "Served accuracy (variable-length requests): " + "; ".join(
                  f"{n} " + "/".join(f"{r[f'{k} accuracy']:.3f}" for k in pad) for n, r in rows.items()) + ".", "",
              "| tuner | candidates | wall s | result INT8 layers | accuracy | static b64 seq/s | x FP32 |",
              "|---|---|---|---|---|---|---|"]
    for name, t in report["tuners"].items():
        r = rows[t["model"]]
        lines.append(f"| {name} | {t['candidates']} | {t['seconds']:.0f} | {r['int8_layers']}/{report['layers']} | "
                     f"{r['accuracy']:.4f} | {r['static b64']:.0f} | {r['static b64'] / fp32['static b64']:.2f}x |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
