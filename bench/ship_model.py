"""Ship a trained generator: copy its weights into the package with a model card judged on independent MC.

Evaluates ``RUN/generator-best.pt`` against a fresh reference-MC sample (a seed never used in training),
with every validation metric, its error and the MC noise floor; writes ``src/caloquant/weights/NAME.pt``
and ``NAME.json`` (spec, sha256, training facts, physics figures) and the model-card plots under docs/img/.

    .venv/bin/python bench/ship_model.py --run runs/train-ecal25 --name ecal25 [--n 10000]
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import shutil
from pathlib import Path

import numpy as np

from caloquant.data import ShowerSet
from caloquant.machine import describe_machine
from caloquant.models import load_generator, sample_showers, sha256_file
from caloquant.models.registry import safe_load
from caloquant.simulate import simulate
from caloquant.validate import MetricOptions, validate

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--name", default="ecal25")
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--energy", default="10:500")
    ap.add_argument("--seed", type=int, default=909)
    ap.add_argument("--weights-dir", type=Path, default=ROOT / "src" / "caloquant" / "weights")
    ap.add_argument("--img-dir", type=Path, default=ROOT / "docs" / "img")
    ap.add_argument("--hardware", default="", help="Where the training ran (default: this machine's CPU).")
    args = ap.parse_args()

    gen = load_generator(args.run / "generator-best.pt")
    card_in = json.loads((args.run / "generator-best.json").read_text())
    ref = simulate(args.n, args.energy, seed=args.seed)
    fake = ShowerSet(sample_showers(gen.module, gen.spec, ref.energy, np.degrees(ref.theta), seed=args.seed + 1),
                     ref.energy, ref.theta)
    result = validate(ref, fake, options=MetricOptions(classifier=False), names=[args.name])
    metrics = result.to_dict()["metrics"]
    state = safe_load(args.run / "checkpoint-last.pt")["state"]
    rows = list(csv.DictReader((args.run / "losses.csv").open()))
    gb = int(rows[-1]["showers"]) // max(int(rows[-1]["step"]), 1)  # global batch
    evals = list(csv.DictReader((args.run / "metrics.csv").open()))
    machine = describe_machine()
    training = {
        "steps": int(state["step"]),
        "showers_seen": int(state["step"]) * gb,
        "wall_minutes": round(float(state["elapsed"]) / 60, 1),
        "best_step": card_in["step"],
        "best_heldout_moment_metric": card_in["best_metric"],
        "evaluations": len(evals),
        "hardware": args.hardware or f"{machine.get('cpu', platform.processor())}, "
                                     f"{card_in['config'].get('threads') or 'default'} thread(s)",
        "config": card_in["config"],
    }
    weights = args.weights_dir
    weights.mkdir(parents=True, exist_ok=True)
    dst = weights / f"{args.name}.pt"
    shutil.copyfile(args.run / "generator-best.pt", dst)
    card = {"name": args.name, "spec": gen.spec.to_dict(), "sha256": sha256_file(dst), "training": training,
            "validation": {"reference": f"reference MC, {args.n} showers, {args.energy} GeV, seed {args.seed}",
                           "metrics": metrics}}
    (weights / f"{args.name}.json").write_text(json.dumps(card, indent=2) + "\n")

    from caloquant.plotting import figures

    img = args.img_dir
    img.mkdir(parents=True, exist_ok=True)
    cand = [(args.name, result.candidates[args.name].features)]
    for stem, fig in (("profiles", figures.profiles(result.reference, cand)),
                      ("moments", figures.moments_vs_energy(result.reference, cand, result.bins)),
                      ("sampling_fraction", figures.sampling_fraction_vs_energy(result.reference, cand, result.bins)),
                      ("images", figures.average_images(result.reference, cand)),
                      ("features", figures.feature_histograms(
                          result.reference, cand,
                          [result.candidates[args.name].metrics["separation_power_mean"].details.get(
                              "per_feature", {})]))):
        (img / f"{args.name}_{stem}.png").write_bytes(figures.png_bytes(fig))
    print(json.dumps({"sha256": card["sha256"], "training": {k: v for k, v in training.items() if k != "config"}},
                     indent=2))
    print("| metric | value | error | MC noise floor | pass |")
    print("|---|---|---|---|---|")
    for name, m in metrics.items():
        print(f"| {name} | {m['value']:.4g} | {m['error']:.2g} | {m['noise_floor']:.2g} | {m['pass']} |")


if __name__ == "__main__":
    main()
