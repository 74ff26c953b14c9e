"""Benchmark: training options on equal short budgets, judged by `caloquant validate` against independent MC.

Each variant is one `caloquant train` run from the same start (by default the shipped generator), all running
at the same time with one thread each for the same wall time, so they share the machine's load equally.
Each best generator is then sampled at the reference's energies and compared with `caloquant validate --json`;
the table (metrics, showers seen, showers/s) is printed and written to OUT/ablation.md.

    python bench/ablation.py scratch/ecal25/train.h5 scratch/ecal25/val.h5 scratch/ecal25/ref10k.h5 runs/ablation \\
        --minutes 25 --variant "reference=--critic reference" --variant "light=--critic light" \\
        --variant "light+dist=--critic light --dist-weight 1" \\
        --variant "dist-only=--pretrain-steps 1000000 --dist-weight 1"

With ``--from-checkpoint CKPT`` every variant resumes a copy of that full training checkpoint (a campaign's
``checkpoint-last.pt``, critic and optimisers included) and its options retune the loss settings (``--lr``,
``--loss-weights``, ``--dist-weight``, ``--physics-weight``, ``--r1``); ``--common`` is then ignored, the train
files must be the checkpoint's, and the last generator (not the best) is validated. ``--no-validate`` skips the
10,000-shower validation and keeps the in-training held-out figures (last evaluation) of every run.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import json
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from caloquant.machine import describe_markdown

COMMON = ("--init-generator ecal25 --resident off --batch 32 --lr 3e-4 --ema 0.99 --select fpd --eval-every 50 "
          "--eval-showers 1000")
METRICS = ("3dgan_moments", "sampling_fraction_mre", "separation_power_mean", "fpd", "classifier_auc")
#: The in-training held-out figures (metrics.csv, last evaluation) shown next to the validation.
HELD_OUT = ("moments_metric", "fpd", "cells_ratio", "resolution_ratio")


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "caloquant.cli", *args]


def last_row(path: Path) -> dict[str, str]:
    rows = list(csv.DictReader(path.open())) if path.exists() else []
    return rows[-1] if rows else {}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("train")
    ap.add_argument("val")
    ap.add_argument("reference", help="independent MC showers to validate against")
    ap.add_argument("out", type=Path)
    ap.add_argument("--minutes", type=float, default=20.0)
    ap.add_argument("--variant", action="append", required=True, help="NAME=extra caloquant train options")
    ap.add_argument("--common", default=COMMON, help="options every variant gets")
    ap.add_argument("--validate-only", action="store_true", help="only (re)validate existing runs")
    ap.add_argument("--no-validate", action="store_true", help="skip the validation against the reference")
    ap.add_argument("--from-checkpoint", type=Path, help="resume every variant from a copy of this checkpoint")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    variants = dict(v.split("=", 1) for v in args.variant)
    if not args.validate_only:
        procs, logs = {}, []
        for name, extra in variants.items():
            common = shlex.split(args.common)
            if args.from_checkpoint:
                (args.out / name).mkdir(parents=True, exist_ok=True)
                shutil.copyfile(args.from_checkpoint, args.out / name / "checkpoint-last.pt")
                common = ["--resume"]
            cmd = cli("train", args.train, "--val", args.val, "-o", str(args.out / name), "--threads", "1", "-q",
                      "--run-minutes", str(args.minutes), *common, *shlex.split(extra))
            print("$", shlex.join(cmd), flush=True)
            logs.append((args.out / f"{name}.log").open("w"))
            procs[name] = subprocess.Popen(cmd, stdout=logs[-1], stderr=subprocess.STDOUT)
        for name, p in procs.items():
            if p.wait() != 0:
                print(f"{name}: training failed (see {args.out / name}.log)", flush=True)
        for f in logs:
            f.close()
    rows = []
    for name, extra in variants.items():
        run = args.out / name
        gen = run / ("checkpoint-last.pt" if args.from_checkpoint else "generator-best.pt")
        result = run / "validate.json"
        if not gen.exists():
            continue
        if args.no_validate:
            rows.append((name, extra, last_row(run / "runs.csv"), {}, last_row(run / "metrics.csv")))
            continue
        sample = run / "generated.h5"
        sample.unlink(missing_ok=True)
        subprocess.run([sys.executable, str(Path(__file__).with_name("eval_generator.py")), str(gen), args.reference,
                        "-o", str(sample), "--device", "cpu"], check=True)
        t = time.perf_counter()
        subprocess.run(cli("validate", args.reference, str(sample), "--json", str(result), "-q"), check=False)
        print(f"{name}: validated in {time.perf_counter() - t:.0f} s", flush=True)
        metrics = json.loads(result.read_text())["metrics"] if result.exists() else {}
        runs = last_row(run / "runs.csv")
        rows.append((name, extra, runs, metrics, last_row(run / "metrics.csv")))
    start = f"resumed from `{args.from_checkpoint}`" if args.from_checkpoint else f"common options `{args.common}`"
    lines = [f"Equal budgets of {args.minutes:g} min wall time, all variants at once with 1 thread each; "
             f"{datetime.date.today()}; {start}. Validation columns against `{args.reference}` "
             f"({'skipped' if args.no_validate else 'caloquant validate'}); held-out columns: the run's last "
             "in-training evaluation.", "",
             "| variant | options | showers seen | showers/s | " + " | ".join(METRICS) + " | held-out "
             + " | held-out ".join(HELD_OUT) + " |",
             "|---|---|---|---|" + "---|" * (len(METRICS) + len(HELD_OUT))]
    for name, extra, runs, metrics, held in rows:
        vals = []
        for m in METRICS:
            v = metrics.get(m, {}).get("value")
            vals.append("-" if v is None else f"{v:.3g}")
        vals += [f"{float(held[m]):.3g}" if held.get(m) else "-" for m in HELD_OUT]
        lines.append(f"| {name} | `{extra}` | {runs.get('showers', '-')} | {runs.get('showers_per_s', '-')} | "
                     + " | ".join(vals) + " |")
    lines += ["", describe_markdown()]
    text = "\n".join(lines) + "\n"
    (args.out / "ablation.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
