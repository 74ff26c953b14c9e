"""Peer comparison: NNCF ``quantize_with_accuracy_control`` vs ``caloquant.quantize.tune`` on the same generator,
calibration data, evaluation showers, metric (3DGAN moments vs reference MC) and tolerance, in one run.

    .venv/bin/python bench/nncf_peer.py --model ecal25 --showers 1024 --out bench/nncf_peer.json

Prints a markdown table for docs/benchmarks.md (Quantization section) and writes the figures as JSON.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def main() -> None:
    """Run both tuners and print the comparison."""
    import nncf

    from caloquant.evaluation import DEFAULT_EVALUATION, EvaluationSettings
    from caloquant.quantize import GAN_CALIBRATION, Criterion, PhysicsEvaluator, gan_calibration, tune
    from caloquant.quantize.openvino_backend import batch_runner, compile_model, throughput
    from caloquant.quantize.source import resolve
    from caloquant.quantize.workflow import torch_throughput

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="ecal25")
    ap.add_argument("--showers", type=int, default=DEFAULT_EVALUATION.n_showers)
    ap.add_argument("--reference", type=int, default=DEFAULT_EVALUATION.n_reference)
    ap.add_argument("--tolerance", type=float, default=0.05)
    ap.add_argument("--batch", type=int, default=DEFAULT_EVALUATION.batch)
    ap.add_argument("--out", type=Path, default=Path("bench/nncf_peer.json"))
    args = ap.parse_args()

    src = resolve(args.model)
    ev = PhysicsEvaluator(src.spec, EvaluationSettings(args.showers, args.reference, DEFAULT_EVALUATION.seed,
                                                       args.batch), tuning=src.tuning)
    calib = gan_calibration(src.spec, GAN_CALIBRATION)
    example = ev.inputs[:args.batch]

    t0 = time.perf_counter()
    ours = tune(src.model, calib, ev, criterion=Criterion(args.tolerance), batch=args.batch, log=print)
    ours_s = time.perf_counter() - t0

    calls = 0
    batches = ev.batches()

    def validate(compiled: object, data: object) -> tuple[float, None]:
        nonlocal calls
        calls += 1
        outs = np.concatenate([np.array(compiled(x)[0]) for x in data])  # type: ignore[operator]
        return -float(ev.metric(ev.outputs(lambda _: outs))[0]), None

    t0 = time.perf_counter()
    peer = nncf.quantize_with_accuracy_control(
        src.model, nncf.Dataset(calib), nncf.Dataset(batches), validate, max_drop=args.tolerance,
        drop_type=nncf.DropType.RELATIVE, subset_size=len(calib))
    peer_s = time.perf_counter() - t0
    peer_metric = float(ev.metric(ev.outputs(batch_runner(compile_model(peer), args.batch)))[0])

    rows = {
        "openvino_fp32": {"throughput": ours.fp32.throughput, "metric": ours.fp32.metric},
        "pytorch_fp32": {"throughput": torch_throughput(src.generator.module, example)},
        "full_int8_minmax": {"throughput": ours.full_int8.throughput, "metric": ours.full_int8.metric},
        "caloquant": {"throughput": throughput(ours.model, example), "metric": ours.best.metric,
                      "upper95": ours.best.upper95, "candidates": len(ours.history), "seconds": ours_s,
                      "int8_layers": len(ours.best.int8)},
        "nncf_accuracy_control": {"throughput": throughput(peer, example), "metric": peer_metric,
                                  "candidates": calls, "seconds": peer_s},
        "noise_floor": ours.noise_floor, "allowed": ours.allowed, "showers": args.showers, "batch": args.batch,
    }
    args.out.write_text(json.dumps(rows, indent=2))
    print("| tuner | candidates | wall s | items/s | x OV FP32 | x PyTorch FP32 | moment metric |")
    print("|---|---|---|---|---|---|---|")
    for key in ("caloquant", "nncf_accuracy_control"):
        r = rows[key]
        print(f"| {key} | {r['candidates']} | {r['seconds']:.0f} | {r['throughput']:.1f} | "
              f"{r['throughput'] / rows['openvino_fp32']['throughput']:.2f} | "
              f"{r['throughput'] / rows['pytorch_fp32']['throughput']:.2f} | {r['metric']:.4g} |")


if __name__ == "__main__":
    main()
