"""CLI for stage 3: ``caloquant train`` (single process, or data-parallel under torchrun)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import typer

from caloquant.errors import InputError

#: How the end-of-run line names each ``--select`` score.
SELECT_NAMES = {"moments": "moment metric", "fpd": "FPD", "goals": "goal distance",
                "goals-mean": "mean goal distance"}


def register(app: typer.Typer) -> None:
    app.command("train")(train_cmd)
    app.command("campaign")(campaign_cmd)
    app.command("cellmap")(cellmap_cmd)


def train_cmd(
    ctx: typer.Context,
    data: list[str] = typer.Argument(..., help="Training showers: HDF5 files, directories or glob patterns."),
    out: Path = typer.Option(..., "--out", "-o", help="Run directory: checkpoints, logs, curves, best generator."),
    arch: str = typer.Option("ecal25", "--arch", help="Architecture: ecal25 (25x25x25) or angle51 (51x51x25)."),
    val: Path | None = typer.Option(None, "--val", help="Held-out MC file for the physics metric "
                                    "(default: the last 10% of the data blocks)."),
    epochs: int = typer.Option(60, "--epochs", help="Epochs over the training data."),
    max_steps: int = typer.Option(0, "--max-steps", help="Stop after this many steps (0: no limit)."),
    max_minutes: float = typer.Option(0.0, "--max-minutes", help="Stop, with a checkpoint, after this wall time "
                                      "(train in resumable chunks)."),
    run_minutes: float = typer.Option(0.0, "--run-minutes", help="Stop this run, with a checkpoint, after this "
                                      "wall time (each piece of a campaign resumed with --resume)."),
    batch: int | None = typer.Option(None, "--batch", help="Batch size per rank (global batch = batch x world "
                                     "size); default 128, on --resume the run's."),
    lr: float = typer.Option(1e-3, "--lr", help="RMSprop learning rate for one rank."),
    no_scale_lr: bool = typer.Option(False, "--no-scale-lr", help="Do not scale the LR with the world size."),
    warmup: int = typer.Option(200, "--warmup-steps", help="Steps to ramp the LR from lr to lr x world size."),
    physics_weight: float = typer.Option(1.0, "--physics-weight", help="Weight of the batch moment-matching "
                                         "term (0 reproduces the reference recipe)."),
    pretrain_steps: int = typer.Option(0, "--pretrain-steps", help="Generator-only physics steps first."),
    critic: str = typer.Option("reference", "--critic", help="Adversary: reference (the 3DGAN discriminator) or "
                               "light (a critic at ~2% of its FLOPs, one joint real+fake update per step)."),
    dist_weight: float = typer.Option(0.0, "--dist-weight", help="Weight of the energy-conditioned "
                                      "sliced-distance term on physics features (0: off; see --dist-statistic)."),
    sf_weight: float = typer.Option(0.0, "--sf-weight", help="Weight of the energy-conditioned batch "
                                    "sampling-fraction term: relative error of the mean visible energy (0: off)."),
    count_weight: float = typer.Option(0.0, "--count-weight", help="Weight of the energy-conditioned batch "
                                       "cell-count term: relative error of the mean number of cells above each of "
                                       "five energy thresholds (0: off)."),
    res_weight: float = typer.Option(0.0, "--res-weight", help="Weight of the energy-conditioned batch "
                                     "resolution term: log ratio of the relative spreads of the visible energy "
                                     "(0: off)."),
    centroid_weight: float = typer.Option(0.0, "--centroid-weight", help="Weight of the energy-conditioned "
                                          "sliced-distance term on the per-layer x and y centroids (0: off)."),
    occupancy_weight: float = typer.Option(0.0, "--occupancy-weight", help="Weight of the energy-conditioned "
                                           "sliced-distance term on the number of read-out cells in each layer "
                                           "(0: off)."),
    profile_weight: float = typer.Option(0.0, "--profile-weight", help="Weight of the energy-conditioned term on "
                                         "the mean x, y, z energy profiles, every position alike (log ratio, fakes "
                                         "read out at the data's faintest cell; 0: off)."),
    shape_weight: float = typer.Option(0.0, "--shape-weight", help="Weight of the energy-conditioned "
                                       "sliced-distance term on the per-layer x and y widths and mean radius of "
                                       "read-out cells (0: off)."),
    depth_weight: float = typer.Option(0.0, "--depth-weight", help="Weight of the energy-conditioned "
                                       "sliced-distance term on the layer energies, mean depth and depth spread "
                                       "of read-out showers (0: off)."),
    lateral_weight: float = typer.Option(0.0, "--lateral-weight", help="Weight of the energy-conditioned "
                                         "sliced-distance term on the shower's x and y barycentres and widths, read "
                                         "out (0: off)."),
    spectrum_weight: float = typer.Option(0.0, "--spectrum-weight", help="Weight of the energy-conditioned term on "
                                          "the mean cell-energy spectrum in quarter-decade bins (log counts; 0: "
                                          "off)."),
    scale_weight: float = typer.Option(0.0, "--scale-weight", help="Weight of the term on the energy scale as a "
                                       "smooth function of energy and angle (each fake's visible energy against "
                                       "its real partner's, fluctuations left free; 0: off)."),
    dist_statistic: str = typer.Option("wasserstein", "--dist-statistic", help="1-D distance of the distribution "
                                       "terms (dist, centroid, occupancy, shape, depth, lateral): wasserstein (sorted "
                                       "values; "
                                       "with a few showers per energy group it favours narrow fakes) or energy (the "
                                       "unbiased energy distance)."),
    mean_statistic: str = typer.Option("absolute", "--mean-statistic", help="Gradient of the group-mean terms "
                                       "(physics, sf, count, profile): absolute (plain; it pulls the shower-to-shower "
                                       "spread in) or split (each half of a group signed by the other's error, which "
                                       "leaves the spread alone on average)."),
    readout_threshold: float = typer.Option(0.0, "--readout-threshold", help="GeV: generated cells below it read 0, "
                                            "in training (what the critic and losses see; gradients pass "
                                            "straight through) and in the exported model's decoding, as the MC's "
                                            "readout threshold (half a MIP: 9.69e-5 GeV) does (0: none)."),
    entry_jitter: float = typer.Option(0.0, "--entry-jitter", help="Cells: the generator's output ends with a "
                                       "rigid shift of each shower in x and y, uniform within +-this and drawn "
                                       "from its latent noise, as the MC places each entry point uniformly within "
                                       "a cell (0.5); used in training, generation and export alike (0: none)."),
    angle_gain: float = typer.Option(0.0, "--angle-gain", help="angle51: its first layer sees this x "
                                     "(theta - pi/2) instead of theta, so the angle's weights learn this-fold "
                                     "faster (100 learns the tilt; 0: theta as is, the Keras model)."),
    noise_energy: float = typer.Option(0.0, "--noise-energy", help="angle51: GeV E0; its noise is multiplied by "
                                       "E/E0, so that the showers' spread can grow with the energy as the MC's "
                                       "does (0: noise as drawn, the Keras model; 100: the 3DGAN's older input)."),
    r1: float = typer.Option(0.0, "--r1", help="R1 gradient penalty weight on real showers (light critic)."),
    dead_cell_grad: float = typer.Option(0.0, "--dead-cell-grad", help="Training only: the generator's output "
                                         "ReLU passes this fraction of the gradient to cells that are off, so "
                                         "losses can switch cells on (0: plain ReLU; the model is unchanged)."),
    loss_weights: str = typer.Option("", "--loss-weights", help="Weights of the adversarial, energy-regression "
                                     "[, angle] and ECAL-sum terms, comma-separated (default: the reference's, "
                                     "2,0.1,0.1 for ecal25 and 3,0.1,25,0.1 for angle51)."),
    gen_steps: int = typer.Option(2, "--gen-steps", help="Generator updates per iteration (reference: 2)."),
    checkpoint_every: int = typer.Option(100, "--checkpoint-every", help="Steps between checkpoints."),
    eval_every: int = typer.Option(0, "--eval-every", help="Steps between physics evaluations (0: each epoch)."),
    eval_showers: int = typer.Option(2000, "--eval-showers", help="Held-out showers used by the evaluation."),
    chunk: int = typer.Option(1000, "--chunk", help="Rows per read block (the unit of shuffling and sharding)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    precision: str = typer.Option("auto", "--precision", help="fp32, bf16 (autocast) or auto: bf16 on CUDA and on "
                                  "CPUs with native BF16 (AVX512-BF16, AMX), fp32 elsewhere."),
    resident: str = typer.Option("auto", "--resident", help="Hold the training rows on the device: on, off, or "
                                 "auto (when they take under half its free memory)."),
    compile_: bool = typer.Option(False, "--compile", help="torch.compile the generator and discriminator."),
    ema: float = typer.Option(0.0, "--ema", help="Decay of a moving average of the generator weights, which is "
                              "then evaluated and exported (0: off; e.g. 0.999)."),
    bn_calibration: int = typer.Option(1024, "--bn-calibration", help="With --ema: showers over which the "
                                       "average's BatchNorm statistics are recomputed before it is evaluated or "
                                       "saved (0: keep the trained generator's)."),
    init_generator: str = typer.Option("", "--init-generator", help="Start the generator from these weights "
                                       "(shipped name or .pt) and fine-tune; the discriminator starts fresh."),
    reference_batch: int = typer.Option(0, "--reference-batch", help="Global batch at which --lr applies; larger "
                                        "global batches scale the LR linearly (0: --batch)."),
    log_every: int = typer.Option(10, "--log-every", help="Steps between loss read-backs and log rows."),
    select: str = typer.Option("moments", "--select", help="Held-out metric that picks the best checkpoint: "
                               "moments (3DGAN moment metric), fpd (Frechet physics distance), goals (distance "
                               "to the faithful-generator goals, worst metric counting) or goals-mean (their "
                               "mean distance; docs/training.md)."),
    threads: int = typer.Option(0, "--threads", help="CPU threads per rank (0: PyTorch default)."),
    seed: int | None = typer.Option(None, "--seed", help="Seed of initialisation, data order, noise and label "
                                    "flips; default 0, on --resume the run's."),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --out exactly where it stopped; "
                                "--lr, --loss-weights, --dist-weight, --sf-weight, --physics-weight, --r1 or "
                                "--select given with it change that setting from here on (the rest stay the run's)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Train a 3DGAN on shower files; resumable, physics-selected best checkpoint, torchrun-ready."""
    from caloquant._atomic import check_outputs
    from caloquant.train import TrainConfig, train
    from caloquant.train.distributed import shutdown_distributed

    check_outputs({"--out": out}, sources={"DATA": data, "--val": val}, inputs={"--init-generator": init_generator},
                  folders=("--out",))
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a directory")
    stored = _stored_config(out) if resume else {}
    seed = stored.get("seed", 0) if seed is None else seed
    batch = stored.get("batch_size", 128) if batch is None else batch
    try:
        weights = tuple(float(w) for w in loss_weights.split(",")) if loss_weights.strip() else ()
    except ValueError:
        raise InputError(f"--loss-weights takes comma-separated numbers, got {loss_weights!r}") from None
    cfg = TrainConfig(
        loss_weights=weights, arch=arch, batch_size=batch, lr=lr, scale_lr=not no_scale_lr, warmup_steps=warmup,
        epochs=epochs,
        max_steps=max_steps, max_minutes=max_minutes, physics_weight=physics_weight, pretrain_steps=pretrain_steps,
        checkpoint_every=checkpoint_every, eval_every=eval_every, eval_showers=eval_showers, chunk_size=chunk,
        device=device, threads=threads, seed=seed, precision=precision, resident=resident, compile=compile_,
        ema_decay=ema, bn_calibration=bn_calibration, init_generator=init_generator, reference_batch=reference_batch,
        log_every=log_every,
        select=select, run_minutes=run_minutes, critic=critic, dist_weight=dist_weight, sf_weight=sf_weight,
        count_weight=count_weight, res_weight=res_weight, centroid_weight=centroid_weight,
        occupancy_weight=occupancy_weight, profile_weight=profile_weight, shape_weight=shape_weight,
        depth_weight=depth_weight, lateral_weight=lateral_weight, spectrum_weight=spectrum_weight,
        scale_weight=scale_weight, dist_statistic=dist_statistic,
        mean_statistic=mean_statistic, readout_threshold=readout_threshold, r1=r1,
        entry_jitter=entry_jitter, angle_gain=angle_gain, noise_energy=noise_energy,
        gen_steps=gen_steps, dead_cell_grad=dead_cell_grad,
    )
    from caloquant.train.loop import RETUNABLE

    given = [k for k in RETUNABLE if getattr(ctx.get_parameter_source(k), "name", "") == "COMMANDLINE"]
    retune = given if resume else []
    try:
        result = train(cfg, data, out, val=val, resume=resume, progress=not quiet, retune=retune)
    finally:
        shutdown_distributed()
    st = result.state
    if os.environ.get("RANK", "0") == "0":
        best = f"{st.best_metric:.4f} at step {st.best_step}" if st.best_step >= 0 else "not evaluated"
        status = "finished" if result.finished else "paused (resume with --resume)"
        typer.echo(f"{status}: step {st.step}, epoch {st.epoch}, {st.elapsed / 60:.1f} min; "
                   f"best {SELECT_NAMES[select if 'select' in retune else stored.get('select', select)]} {best}; "
                   f"outputs in {out}")


def _stored_config(out: Path) -> dict[str, Any]:
    """The training config recorded in ``out``'s last checkpoint (empty when there is none)."""
    from caloquant.models.registry import safe_load

    ckpt = out / "checkpoint-last.pt"
    obj = safe_load(ckpt) if ckpt.exists() else {}
    return obj.get("config", {}) if isinstance(obj, dict) else {}


def campaign_cmd(
    folder: Path = typer.Argument(..., help="Campaign folder (campaign.json, checkpoint, histories), e.g. "
                                  "campaigns/ecal25."),
    run_minutes: float = typer.Option(..., "--run-minutes", help="Wall time of this run; it then stops cleanly "
                                      "with a checkpoint (commit the folder afterwards)."),
    cache: Path = typer.Option(Path("scratch/campaign-data"), "--cache", help="Where the campaign's MC data are "
                               "kept (simulated there first when missing)."),
    threads: int = typer.Option(0, "--threads", help="CPU threads (0: PyTorch default)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    precision: str = typer.Option("auto", "--precision", help="fp32, bf16 or auto (bf16 on CUDA and on CPUs "
                                  "with native BF16)."),
    eval_every: int | None = typer.Option(None, "--eval-every", help="Steps between held-out evaluations (default: "
                                          "campaign.json's; raise it where steps are fast, as on a GPU)."),
    checkpoint_every: int | None = typer.Option(None, "--checkpoint-every", help="Steps between checkpoints "
                                                "(default: campaign.json's)."),
    resident: str | None = typer.Option(None, "--resident", help="Hold the training showers on the device: auto, "
                                        "on or off (default: campaign.json's)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars."),
) -> None:
    """Run the next piece of a training campaign: start or resume it, train for --run-minutes, stop cleanly."""
    from caloquant.train.campaign import run_campaign

    overrides: dict[str, Any] = {"threads": threads, "device": device, "precision": precision}
    if eval_every is not None:
        overrides["eval_every"] = eval_every
    if checkpoint_every is not None:
        overrides["checkpoint_every"] = checkpoint_every
    if resident is not None:
        overrides["resident"] = resident
    result = run_campaign(folder, cache=cache, run_minutes=run_minutes, progress=not quiet, overrides=overrides)
    st = result.state
    typer.echo(f"campaign {folder}: step {st.step} ({st.elapsed / 60:.1f} min of training in all runs); best "
               f"held-out metric {st.best_metric:.4f} at step {st.best_step}; commit {folder} to keep it")


def cellmap_cmd(
    model: str = typer.Argument(..., help="Trained generator: a training checkpoint, a .pt with its .json card, or "
                                "a shipped name."),
    data: Path = typer.Option(..., "--data", help="MC showers to match (HDF5), independent of any sample the "
                              "mapped model will be judged against, e.g. the training file."),
    out: Path = typer.Option(..., "--out", "-o", help="Mapped generator to write (.pt; its card OUT.json goes next "
                             "to it); every command loads it like a shipped model."),
    n: int = typer.Option(4000, "--n", help="Generated showers to fit on (energies drawn from the MC's)."),
    mc_showers: int = typer.Option(20_000, "--mc-showers", help="MC showers to read from --data, the first ones "
                                   "(0: all)."),
    bands: int = typer.Option(6, "--bands", help="Visible-energy bands, each fitted on its own (interpolated)."),
    readout_threshold: float | None = typer.Option(None, "--readout-threshold", help="GeV: the MC's readout "
                                                   "threshold (default: the model's own)."),
    seed: int = typer.Option(77, "--seed", help="Seed of the generated fitting showers."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUT and its card if they exist."),
) -> None:
    """Fit a cell-energy map (read-out cells per shower and their spectrum as the MC's, each shower's visible
    energy kept) to a trained generator and write the generator with it."""
    from caloquant._atomic import check_outputs, check_writable
    from caloquant.data import read_showers
    from caloquant.models import load_generator
    from caloquant.train.cellmap import fit_generator_map, write_mapped_generator

    if n < 1 or mc_showers < 0:
        raise InputError("--n must be positive and --mc-showers 0 or more")
    if out.suffix != ".pt":
        raise InputError(f"{out}: give the mapped generator a .pt name (its card goes to {out.stem}.json)")
    check_outputs({"-o": [out, out.with_suffix(".json")]}, inputs={"MODEL": model}, sources={"--data": data})
    check_writable(out, overwrite=overwrite)
    check_writable(out.with_suffix(".json"), overwrite=overwrite)
    gen = load_generator(model)
    reference = read_showers(data, 0, mc_showers or None)
    fit = fit_generator_map(gen, reference, threshold=readout_threshold, n=n, seed=seed, bands=bands)
    write_mapped_generator(gen, fit, out, fitted_on=f"{data} ({len(reference)} showers)")
    typer.echo(f"{out}: read-out cells per shower on the fitting sample {fit.cells_generated:.0f} -> "
               f"{fit.cells_mapped:.0f} (MC {fit.cells_reference:.0f}); readout threshold "
               f"{fit.spec.cell_threshold_gev:g} GeV, {bands} bands")
