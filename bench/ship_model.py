"""Ship a trained generator: copy its weights into the package with a model card judged on independent MC.

Evaluates ``RUN/generator-best.pt`` (or, with ``--checkpoint``, the EMA generator of a chosen training checkpoint)
against a fresh reference-MC sample (a seed never used in training), simulated with the GFlash tuning of the
training data, with every validation metric, its error and the MC noise floor; writes
``src/caloquant/weights/NAME.pt`` and ``NAME.json`` (spec, sha256, the GFlash tuning of the training MC, training
facts with the campaign's runs, physics figures) and the model-card plots under docs/img/. The tuning is read from
the training files' attributes (``--data``, as given to ``caloquant train``), or given (``--tuning``), or taken
from the run's exported card when it records one; sources that are given must agree.

    .venv/bin/python bench/ship_model.py --run runs/train-ecal25 --name ecal25 --data runs/data/train_0.h5 \
        [--n 10000] [--checkpoint CKPT.pt --why "chosen against 10k independent MC"] [--readout-threshold GEV] \
        [--cell-map TRAIN.h5 [--cell-map-showers 20000]] [--classifier]

An angle model (``angle51``) is judged on MC over its spec's angle range in its window, so the card holds its tilt.

``--readout-threshold`` ships the model decoding through the MC's readout threshold (cells below it read 0 in
every engine; the card's spec records it), as the MC does; the card's figures are measured so. ``--cell-map MC.h5``
also fits the generator's cell map (``caloquant cellmap``; models.cellmap) on those MC showers, independent of the
comparison sample, and ships the model decoding through it.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from caloquant._atomic import atomic_path, write_text_atomic
from caloquant.data import ShowerSet, read_showers
from caloquant.errors import CaloquantError
from caloquant.machine import describe_machine
from caloquant.models import load_generator, sample_showers, sha256_file
from caloquant.models.card import TUNING_FIELD, card_tuning, training_tuning, tuning_name
from caloquant.models.registry import safe_load
from caloquant.simulate import load_tuning, simulate
from caloquant.train.cellmap import fit_generator_map
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
    ap.add_argument("--data", nargs="+", default=[], help="The training showers (files, directories, manifests or "
                                                         "globs, as given to caloquant train): their GFlash tuning "
                                                         "is recorded in the card.")
    ap.add_argument("--tuning", help="GFlash tuning of the training MC (none, geant4), when --data is not at hand.")
    ap.add_argument("--checkpoint", type=Path, help="Ship the generator (the EMA one when kept) of this training "
                                                    "checkpoint of the run instead of RUN/generator-best.pt.")
    ap.add_argument("--why", default="", help="How --checkpoint was chosen (recorded in the card).")
    ap.add_argument("--readout-threshold", type=float, help="GeV: the shipped model decodes through this readout "
                    "threshold (its card's spec; the MC's: 9.68864e-05), judged so too (default: the generator's own)")
    ap.add_argument("--cell-map", type=Path, help="MC showers (HDF5) to fit the cell map on; needs a readout "
                    "threshold (the model's or --readout-threshold)")
    ap.add_argument("--cell-map-showers", type=int, default=20_000, help="MC showers read from --cell-map")
    ap.add_argument("--classifier", action="store_true", help="also train the high-level classifier (its AUC in "
                                                              "the card; minutes at 10,000 showers)")
    args = ap.parse_args()

    try:
        source, card_in, where = shipped_source(args.run, args.checkpoint, args.why)
        tuning = training_data_tuning(args.data, args.tuning, card_in, where)
    except CaloquantError as e:
        raise SystemExit(f"error: {e}") from None
    gen = load_generator(source)
    spec = gen.spec if args.readout_threshold is None else replace(gen.spec, cell_threshold_gev=args.readout_threshold)
    fit = None
    if args.cell_map is not None:
        try:
            fit = fit_generator_map(replace(gen, spec=spec), read_showers(args.cell_map, 0, args.cell_map_showers))
        except CaloquantError as e:
            raise SystemExit(f"error: {e}") from None
        spec = fit.spec
        print(f"cell map fitted on {args.cell_map}: read-out cells per shower {fit.cells_generated:.0f} -> "
              f"{fit.cells_mapped:.0f} (MC {fit.cells_reference:.0f})")
    lo_deg, hi_deg = spec.angle_range_deg  # an angle model is judged over its angles, in its window
    ref = simulate(args.n, args.energy, angle=(lo_deg, hi_deg) if lo_deg != hi_deg else lo_deg,
                   window=spec.window, seed=args.seed, tuning=load_tuning(tuning))
    fake = ShowerSet(sample_showers(gen.module, spec, ref.energy, np.degrees(ref.theta), seed=args.seed + 1),
                     ref.energy, ref.theta)
    result = validate(ref, fake, options=MetricOptions(classifier=args.classifier), names=[args.name])
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
        "selected_by": card_in["selected_by"],  # which held-out metric best_heldout_metric is, or how it was chosen
        "best_heldout_metric": card_in["best_metric"],
        "heldout_at_best_step": next(({k: float(v) for k, v in r.items() if k not in ("step", "epoch", "showers",
                                                                                       "seconds") and v}
                                      for r in evals if int(r["step"]) == card_in["step"]), {}),
        "evaluations": len(evals),
        "hardware": args.hardware or f"{machine.get('cpu', platform.processor())}, "
                                     f"{card_in['config'].get('threads') or 'default'} thread(s)",
        "config": card_in["config"],
    }
    if (args.run / "runs.csv").exists():  # a campaign resumed on several machines: where each piece ran
        training["runs"] = [{k: r[k] for k in ("run", "cpu", "isa", "threads", "device", "precision", "start_step",
                                               "end_step", "minutes", "showers_per_s")}
                            for r in csv.DictReader((args.run / "runs.csv").open())]
    weights = args.weights_dir
    weights.mkdir(parents=True, exist_ok=True)
    dst = weights / f"{args.name}.pt"
    with atomic_path(dst) as tmp:
        torch.save(gen.module.state_dict(), tmp)
    card = {"name": args.name, "spec": spec.to_dict(), "sha256": sha256_file(dst), TUNING_FIELD: tuning,
            "training": training,
            "validation": {"reference": f"reference MC (GFlash tuning {tuning}), {args.n} showers, {args.energy} "
                                        f"GeV, seed {args.seed}", "metrics": metrics}}
    if fit is not None:
        card["cell_map_fit"] = {"mc": f"{args.cell_map} (first {args.cell_map_showers} showers)",
                                "generated_showers": fit.showers, "cells_per_shower": {
            "generated": round(fit.cells_generated, 1), "mapped": round(fit.cells_mapped, 1),
            "mc": round(fit.cells_reference, 1)}}
    write_text_atomic(weights / f"{args.name}.json", json.dumps(card, indent=2) + "\n")

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
    print(json.dumps({"sha256": card["sha256"], TUNING_FIELD: tuning,
                      "training": {k: v for k, v in training.items() if k != "config"}}, indent=2))
    print("| metric | value | error | MC noise floor | pass |")
    print("|---|---|---|---|---|")
    for name, m in metrics.items():
        print(f"| {name} | {m['value']:.4g} | {m['error']:.2g} | {m['noise_floor']:.2g} | {m['pass']} |")


def shipped_source(run: Path, checkpoint: Path | None, why: str) -> tuple[Path, dict[str, Any], str]:
    """What to ship from ``run``: its exported best generator with its card, or the generator of ``checkpoint``
    (a training checkpoint, chosen by ``why``) with a card made from the checkpoint; returns (weights, card,
    where the card was read)."""
    if checkpoint is None:
        where = run / "generator-best.json"
        try:
            card = json.loads(where.read_text())
        except (OSError, ValueError) as e:
            raise CaloquantError(f"{where}: cannot read the run's exported card ({e})") from None
        card["selected_by"] = card["config"].get("select", "moments")
        return run / "generator-best.pt", card, str(where)
    try:
        ckpt = safe_load(checkpoint)
    except OSError as e:
        raise CaloquantError(f"{checkpoint}: cannot read ({e})") from None
    if not isinstance(ckpt, dict) or "state" not in ckpt or "config" not in ckpt:
        raise CaloquantError(f"{checkpoint}: not a training checkpoint")
    if not why:
        raise CaloquantError("--checkpoint needs --why: say how this checkpoint was chosen (it goes in the card)")
    card = {key: ckpt[key] for key in ("spec", "config", TUNING_FIELD) if key in ckpt}
    card.update(step=int(ckpt["state"]["step"]), best_metric=None, selected_by=why)
    return checkpoint, card, str(checkpoint)


def training_data_tuning(data: list[str], given: str | None, card_in: dict[str, Any], where: str) -> str:
    """The GFlash tuning of the training MC: from the training files (``data``), ``given`` (``--tuning``) and the
    run's exported card (when it records one), which must agree; at least one of them must say it."""
    said: dict[str, str] = {}
    if data:
        said["--data"] = training_tuning(data)
    if given is not None:
        said["--tuning"] = tuning_name(given, "--tuning")
    if TUNING_FIELD in card_in or "tuning" in card_in:  # card_tuning refuses the second
        said[where] = card_tuning(card_in, where)
    if not said:
        raise CaloquantError("say which GFlash tuning the training MC was simulated with: --data TRAIN.h5 ... (read "
                             "from the files) or --tuning none|geant4")
    if len(set(said.values())) > 1:
        raise CaloquantError("the GFlash tuning of the training MC disagrees: "
                             + ", ".join(f"{k} says {v}" for k, v in said.items()))
    return next(iter(said.values()))


if __name__ == "__main__":
    main()
