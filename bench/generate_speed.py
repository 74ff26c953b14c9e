"""Benchmark: generator throughput (showers/s, ms/shower, peak RSS) per engine, precision, batch and streams.

Each configuration runs in a fresh subprocess so that its peak RSS is its own. The shipped weights are used
when installed, else a random-init generator of the same architecture (speed does not depend on the weights).
Inference only (latent in, raw shower out); ``--end-to-end N`` also times ``caloquant generate`` into a file.

    .venv/bin/python bench/generate_speed.py [--arch ecal25] [--seconds 3] [--configs openvino:fp32 ...]
        [--batches 1 16 128] [--streams 1 2 auto] [--ab-rounds 5] [--end-to-end 2000] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CONFIGS = ("openvino:fp32", "openvino:bf16", "torch:fp32", "onnxruntime:fp32")


def _model(arch: str, workdir: Path) -> str:
    from caloquant.models import DEFAULT_SPECS, available_models, build_generator
    from caloquant.models.registry import CHECKPOINT_FORMAT

    if arch in available_models():
        return arch
    import torch

    path = workdir / f"random_{arch}.pt"
    if not path.exists():
        torch.manual_seed(0)
        g = build_generator(DEFAULT_SPECS[arch])
        torch.save({"format": CHECKPOINT_FORMAT, "spec": DEFAULT_SPECS[arch].to_dict(), "generator": g.state_dict()},
                   path)
    return str(path)


def _one(model: str, engine: str, precision: str, batch: str, streams: str, seconds: float) -> dict:
    """Measure one configuration in a child process; returns its Throughput as a dict."""
    code = ("import json, sys; from caloquant.runtime import measure_throughput; "
            "print(json.dumps(measure_throughput(sys.argv[1], engine=sys.argv[2], precision=sys.argv[3], "
            "batch=sys.argv[4], streams=sys.argv[5], seconds=float(sys.argv[6])).to_dict()))")
    out = subprocess.run([sys.executable, "-c", code, model, engine, precision, batch, streams, str(seconds)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _ab(model: str, engine: str, precision: str, batch: str, rounds: int, seconds: float) -> list[float]:
    """Ratios streams=auto / streams=1, alternating the two compiled models round by round (same load)."""
    from caloquant.runtime import measure_throughput, open_generator

    one = open_generator(model, engine=engine, precision=precision, batch=batch, streams=1)
    auto = open_generator(model, engine=engine, precision=precision, batch=batch, streams="auto")
    ratios = []
    for _ in range(rounds):
        a = measure_throughput(one, seconds=seconds).showers_per_s
        b = measure_throughput(auto, seconds=seconds).showers_per_s
        ratios.append(b / a)
        print(f"  round: streams=1 {a:,.1f}, streams=auto ({auto.engine.streams}) {b:,.1f} showers/s, "
              f"ratio {b / a:.2f}", flush=True)
    return ratios


def _end_to_end(model: str, n: int, workdir: Path) -> list[dict]:
    rows = []
    for streams in ("1", "auto"):
        out = workdir / f"e2e_{streams}.h5"
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "caloquant.cli", "generate", "--model", model, "--n", str(n),
                        "--energy", "10:500", "--streams", streams, "-q", "-o", str(out)], check=True)
        rows.append({"streams": streams, "showers": n, "seconds": time.perf_counter() - t0})
        out.unlink()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="ecal25", choices=["ecal25", "angle51"])
    ap.add_argument("--configs", nargs="+", default=list(CONFIGS), help="ENGINE:PRECISION pairs")
    ap.add_argument("--batches", nargs="+", default=["1", "16", "128"])
    ap.add_argument("--streams", nargs="+", default=["1", "2", "auto"])
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--end-to-end", type=int, default=0, help="also time `caloquant generate` of N showers")
    ap.add_argument("--ab-rounds", type=int, default=0,
                    help="also compare streams=auto with 1 on the first config, alternating, R rounds")
    ap.add_argument("--ab-batch", default="auto")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="caloquant_bench_"))
    model = _model(args.arch, workdir)
    print(f"model {model}; {args.seconds:g} s per configuration (inference only)")
    print("| engine | precision | batch | streams (actual) | showers/s | ms/shower | peak RSS (MiB) |")
    print("|---|---|---|---|---|---|---|")
    rows = []
    for config in args.configs:
        engine, precision = config.split(":")
        for batch in args.batches:
            for streams in args.streams:
                r = _one(model, engine, precision, batch, streams, args.seconds)
                r["streams_requested"] = streams
                rows.append(r)
                print(f"| {engine} | {precision} | {batch} | {streams} ({r['streams']}) | {r['showers_per_s']:,.1f} "
                      f"| {r['ms_per_shower']:.2f} | {r['peak_rss_mib']:,.0f} |", flush=True)
    ratios = []
    if args.ab_rounds:
        engine, precision = args.configs[0].split(":")
        print(f"interleaved streams=auto vs 1 ({engine} {precision}, batch {args.ab_batch}):")
        ratios = _ab(model, engine, precision, args.ab_batch, args.ab_rounds, args.seconds)
        print(f"  median ratio {sorted(ratios)[len(ratios) // 2]:.2f} (min {min(ratios):.2f}, max {max(ratios):.2f})")
    e2e = _end_to_end(model, args.end_to_end, workdir) if args.end_to_end else []
    for r in e2e:
        print(f"caloquant generate --n {r['showers']} --streams {r['streams']}: {r['seconds']:.1f} s "
              f"({r['showers'] / r['seconds']:,.1f} showers/s incl. start-up, noise, transform, gzip HDF5)")
    if args.json:
        summary = {"model": model, "rows": rows, "ab_ratios": ratios, "end_to_end": e2e}
        args.json.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
