"""Benchmark: scale-out. Sharded generation on a Dask LocalCluster against the worker count, and data-parallel
training under torchrun (weak and strong scaling) against the process count, on CPU.

Generation: first ``generate_to_file`` in this process (all cores as streams, no Dask) as a reference; then for
each K, a LocalCluster of K single-threaded worker processes with one inference stream each and
OMP_NUM_THREADS=1 (one core per worker with ``--gen-engine torch``; OpenVINO sizes a stream's threads from the
machine's cores whatever the worker count, so its workers share all cores)
loads the model on every worker first, then ``run_sharded`` writes N showers as 4K shards; showers/s is N over
that wall time (model loading and cluster start excluded: they are paid once per job), peak RSS per worker.

Training: ``torchrun --standalone --nproc_per_node P -m caloquant.cli train`` on reference-MC showers with one
thread per rank (gloo). Weak scaling keeps the batch per rank; strong scaling keeps the global batch
(the largest P times the per-rank batch). showers/s is the mean of the trainer's own ``losses.csv`` rate over
the logged intervals after the first (warm-up); memory is the peak RSS of the largest rank.
Efficiency = rate(P) / (P x rate(1)) for both (the baseline of strong scaling is one rank on the global batch).

    python bench/scaling.py --workers 1,2 --procs 1,2 [--gen-n 512] [--train-batch 8] [--train-steps 8]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from caloquant.cluster import GenerateJob, run_sharded
from caloquant.machine import cpu_count, describe_markdown
from caloquant.simulate import simulate_to_file


def _peak_rss_mib() -> float:
    """Peak RSS of this process in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def generation(workers: list[int], n: int, engine: str, batch: int, work: Path) -> list[dict]:
    """showers/s of sharded generation per LocalCluster size."""
    from distributed import Client, LocalCluster

    from caloquant.generate import generate_to_file
    from caloquant.runtime import open_generator

    gen = open_generator("ecal25", engine=engine, batch=batch, streams=cpu_count())
    generate_to_file(work / "warm.h5", gen, 2 * batch, "10:500")
    t0 = time.perf_counter()
    generate_to_file(work / "single.h5", gen, n, "10:500", seed=1)
    single = n / (time.perf_counter() - t0)
    del gen
    print(json.dumps({"single_process_showers_per_s": single}), flush=True)
    os.environ["OMP_NUM_THREADS"] = "1"  # inherited by the workers: PyTorch runs one thread per worker
    rows = []
    for k in workers:
        job = GenerateJob(n, "ecal25", "10:500", engine=engine, batch=str(batch), streams="1", seed=1)
        with LocalCluster(n_workers=k, threads_per_worker=1, dashboard_address=None) as lc, Client(lc) as client:
            client.run(job.identity)  # opens (and caches) the model on every worker
            run_sharded(work / f"warm{k}", replace(job, n=k * batch), k, cluster=client)
            t0 = time.perf_counter()
            run_sharded(work / f"gen{k}", job, 4 * k, cluster=client)
            seconds = time.perf_counter() - t0
            rss = max(client.run(_peak_rss_mib).values())
        rows.append({"workers": k, "showers": n, "seconds": seconds, "showers_per_s": n / seconds,
                     "rss_mib_per_worker": rss, "single_process_showers_per_s": single})
        print(json.dumps(rows[-1]), flush=True)
    base = rows[0]["showers_per_s"] / rows[0]["workers"]
    for r in rows:
        r["efficiency"] = r["showers_per_s"] / (r["workers"] * base)
    return rows


def _train(data: Path, out: Path, procs: int, batch: int, steps: int) -> dict:
    """One torchrun training run: mean logged showers/s after warm-up and peak RSS of the largest rank."""
    train = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}",
             "-m", "caloquant.cli", "train", str(data), "-o", str(out), "--max-steps", str(steps), "--batch",
             str(batch), "--threads", "1", "--log-every", "2", "--checkpoint-every", "100000", "--chunk", "100",
             "--eval-showers", "100", "--device", "cpu", "--precision", "fp32", "-q"]
    probe = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
             "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(r.returncode)")
    res = subprocess.run([sys.executable, "-c", probe, *train], capture_output=True, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    if res.returncode != 0:
        raise SystemExit(f"training with {procs} processes failed:\n{res.stderr[-3000:]}")
    with open(out / "losses.csv") as f:
        rates = [float(r["showers_per_s"]) for r in csv.DictReader(f) if int(r["step"]) > 2]
    return {"showers_per_s": sum(rates) / len(rates), "rss_mib_per_rank": int(res.stdout.split()[-1]) / 1024}


def training(procs: list[int], batch: int, steps: int, work: Path) -> list[dict]:
    """Weak (batch per rank fixed) and strong (global batch fixed) scaling of DDP training on CPU."""
    data = simulate_to_file(work / "train.h5", 2000, "10:500", seed=3)
    rows = []
    for mode in ("weak", "strong"):
        for p in procs:
            per_rank = batch if mode == "weak" else batch * max(procs) // p
            r = {"mode": mode, "processes": p, "batch_per_rank": per_rank, "global_batch": per_rank * p,
                 **_train(data, work / f"{mode}{p}", p, per_rank, steps)}
            rows.append(r)
            print(json.dumps(r), flush=True)
        base = next(r for r in rows if r["mode"] == mode and r["processes"] == procs[0])
        for r in rows:
            if r["mode"] == mode:
                r["efficiency"] = r["showers_per_s"] / (r["processes"] / base["processes"] * base["showers_per_s"])
    return rows


def markdown(gen: list[dict], train: list[dict]) -> str:
    """Tables for docs/benchmarks.md."""
    lines = [describe_markdown(), ""]
    if gen:
        lines += ["| Dask workers | showers | wall s | showers/s | efficiency | peak RSS per worker (MiB) |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {r['workers']} | {r['showers']} | {r['seconds']:.1f} | {r['showers_per_s']:.1f} | "
                  f"{r['efficiency'] * 100:.0f} % | {r['rss_mib_per_worker']:.0f} |" for r in gen]
        lines.append("\nOne process without Dask (streams = cores), same job: "
                     f"{gen[0]['single_process_showers_per_s']:.1f} showers/s.\n")
    if train:
        lines += ["| scaling | processes | batch per rank | global batch | showers/s | efficiency | "
                  "peak RSS per rank (MiB) |", "|---|---|---|---|---|---|---|"]
        lines += [f"| {r['mode']} | {r['processes']} | {r['batch_per_rank']} | {r['global_batch']} | "
                  f"{r['showers_per_s']:.2f} | {r['efficiency'] * 100:.0f} % | {r['rss_mib_per_rank']:.0f} |"
                  for r in train]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", default="1,2", help="Dask worker counts (empty: skip generation)")
    ap.add_argument("--gen-n", type=int, default=512)
    ap.add_argument("--gen-engine", default="openvino")
    ap.add_argument("--gen-batch", type=int, default=16)
    ap.add_argument("--procs", default="1,2", help="torchrun process counts (empty: skip training)")
    ap.add_argument("--train-batch", type=int, default=8, help="batch per rank of weak scaling")
    ap.add_argument("--train-steps", type=int, default=8)
    ap.add_argument("--json", type=Path, help="also write the rows as JSON")
    a = ap.parse_args()
    ints = lambda s: [int(x) for x in s.split(",") if x]  # noqa: E731
    with tempfile.TemporaryDirectory(prefix="cq-scaling-") as tmp:
        gen = generation(ints(a.workers), a.gen_n, a.gen_engine, a.gen_batch, Path(tmp)) if a.workers else []
        train = training(ints(a.procs), a.train_batch, a.train_steps, Path(tmp)) if a.procs else []
    if a.json:
        a.json.write_text(json.dumps({"generation": gen, "training": train}, indent=1))
    print(markdown(gen, train))


if __name__ == "__main__":
    main()
