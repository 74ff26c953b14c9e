"""Training: outputs, exact resume, data-parallel equivalence under torchrun, bad input."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from caloquant.cli import main
from caloquant.data import ShowerSet, write_showers
from caloquant.errors import DataFormatError, GeometryMismatchError, InputError, ModelError, TrainingDiverged
from caloquant.models import load_generator
from caloquant.train import TrainConfig, Trainer, train
from caloquant.train.data import BatchStream, TensorBatch, preprocess, split_blocks, to_tensors
from caloquant.train.loop import goal_score, selection_score

TINY = dict(batch_size=2, checkpoint_every=2, eval_showers=40, chunk_size=50, threads=1, seed=3, precision="fp32",
            bn_calibration=8)


def _cfg(**kw: object) -> TrainConfig:
    """TINY with overrides."""
    return TrainConfig(**{**TINY, **kw})  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def data_file(tmp_path_factory: pytest.TempPathFactory, mc_small: ShowerSet) -> Path:
    path = tmp_path_factory.mktemp("data") / "train.h5"
    write_showers(path, mc_small[:300])
    return path


def _params(module: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in module.parameters()])


def test_training_writes_outputs_and_selects_best(data_file: Path, tmp_path: Path) -> None:
    cfg = TrainConfig(max_steps=3, eval_every=2, pretrain_steps=1, **TINY)
    res = train(cfg, data_file, tmp_path / "run", progress=False)
    out = res.out_dir
    assert res.state.step == 3 and res.finished
    for name in ("checkpoint-last.pt", "checkpoint-best.pt", "losses.csv", "metrics.csv", "curves.png",
                 "generator-best.pt", "generator-best.json"):
        assert (out / name).exists(), name
    assert np.isfinite(res.state.best_metric) and res.state.best_step in (2, 3)
    gen = load_generator(out / "generator-best.pt")  # bare state_dict + card, weights_only
    assert gen.spec.arch == "ecal25"
    rows = (out / "metrics.csv").read_text().splitlines()
    assert len(rows) == 3  # header + steps 2 and 3


def test_resume_is_exact(data_file: Path, tmp_path: Path) -> None:
    straight = Trainer(TrainConfig(max_steps=4, pretrain_steps=1, **TINY), data_file, tmp_path / "a",
                       progress=False)
    straight.run()
    Trainer(TrainConfig(max_steps=2, pretrain_steps=1, **TINY), data_file, tmp_path / "b", progress=False).run()
    resumed = Trainer(TrainConfig(max_steps=4, pretrain_steps=1, **TINY), data_file, tmp_path / "b",
                      resume=True, progress=False)
    assert resumed.state.step == 2
    resumed.run()
    assert torch.equal(_params(straight.G), _params(resumed.G))
    assert torch.equal(_params(straight.D), _params(resumed.D))


def test_a_dead_generator_stops_the_run_and_keeps_the_last_checkpoint(data_file: Path, tmp_path: Path) -> None:
    """A generator whose every output cell is 0 (a diverged adversarial step) cannot recover through its output ReLU:
    the run stops at the next read-back, before evaluating it or overwriting the last checkpoint."""
    out = tmp_path / "run"
    Trainer(_cfg(max_steps=2, pretrain_steps=1), data_file, out, progress=False).run()
    tr = Trainer(_cfg(max_steps=8, pretrain_steps=1, log_every=3, eval_every=4), data_file, out, resume=True,
                 progress=False)
    name, last_conv = [(n, m) for n, m in tr.G.named_modules() if isinstance(m, torch.nn.Conv3d)][-1]
    with torch.no_grad():  # every output pre-activation 0: the ReLU passes no cell and no gradient
        last_conv.weight.zero_()
    with pytest.raises(TrainingDiverged, match="died by step 3.*stays at step 2"):
        tr.run()
    kept = torch.load(out / "checkpoint-last.pt", weights_only=False)
    assert kept["state"]["step"] == 2 and kept["generator"][f"{name}.weight"].abs().sum() > 0
    assert not (out / "metrics.csv").exists()  # never evaluated


def test_tilted_held_out_showers_add_the_tilt_to_the_evaluation(tmp_path: Path, mc_tilted: ShowerSet) -> None:
    """angle51's held-out evaluation measures whether showers tilt with their angle; an untrained generator's do
    not (its tilt error is degrees, where the MC against itself scores a fraction of one)."""
    train_file, val_file = tmp_path / "t.h5", tmp_path / "v.h5"
    write_showers(train_file, mc_tilted[:150])
    write_showers(val_file, mc_tilted[150:])
    tr = Trainer(_cfg(arch="angle51", max_steps=1, eval_showers=50), train_file, tmp_path / "run", val=val_file,
                 progress=False)
    metrics = tr.evaluate()
    assert metrics["tilt_error_deg"] > 3.0


def test_the_angle_term_pairs_tilts_from_the_first_step(tmp_path: Path, mc_tilted: ShowerSet) -> None:
    """angle51's angle term compares each fake's tilt (x against depth, where caloquant's showers tilt) with that
    of the real shower it pairs with, already in the generator-only phase: the real showers themselves score 0, the
    same showers paired with shuffled angles score tenths of a cell per layer."""
    train_file = tmp_path / "t.h5"
    write_showers(train_file, mc_tilted[:100])
    tr = Trainer(_cfg(arch="angle51", max_steps=1, pretrain_steps=10), train_file, tmp_path / "run", progress=False)
    b = to_tensors(preprocess(mc_tilted[100:164], tr.spec, 0.0), torch.device("cpu"))
    real = tr.real_summaries(b)
    assert np.corrcoef(real["tilt"].numpy(), b.theta.numpy())[0, 1] < -0.95  # x shifts back as theta grows
    weight, same = tr.generator_terms(b.images, b, real, pretraining=True)["ang"]
    assert weight == tr.cfg.loss_weights[2] and same.item() == pytest.approx(0.0, abs=1e-6)
    shuffled = b.images[torch.from_numpy(np.random.default_rng(0).permutation(len(b)))]
    assert tr.generator_terms(shuffled, b, real, pretraining=True)["ang"][1].item() > 0.1


def test_shards_are_disjoint_and_cover_the_epoch(data_file: Path) -> None:
    from caloquant.data.dataset import ShowerDataset
    from caloquant.models import DEFAULT_SPECS

    ds = ShowerDataset(data_file)
    blocks, hold = split_blocks(ds, 50, 0.0)
    seen = []
    for rank in range(2):
        stream = BatchStream(ds, blocks, DEFAULT_SPECS["ecal25"], batch_size=10, rank=rank, world_size=2, seed=0,
                             mix_blocks=2, ecal_cut=0.0)
        seen.append(np.concatenate([b.ecal for b in stream.epoch(0)]))
    assert not hold
    assert len(np.intersect1d(seen[0], seen[1])) == 0
    assert len(seen[0]) + len(seen[1]) == 300


_DDP_SCRIPT = """
import sys, torch
import numpy as np
torch.set_num_threads(1)
from caloquant.data import read_showers
from caloquant.models import DEFAULT_SPECS
from caloquant.train import TrainConfig, Trainer
from caloquant.train.data import preprocess
from caloquant.train.distributed import init_distributed, shutdown_distributed
data, out, per_rank = sys.argv[1], sys.argv[2], int(sys.argv[3])
cfg = TrainConfig(batch_size=per_rank, dropout=0.0, optimizer="sgd", lr=1e-4, channels_last=False, physics_weight=0.0,
                  scale_lr=False, chunk_size=50, precision="fp32", threads=1, seed=5, device="cpu")
ctx = init_distributed("cpu")
tr = Trainer(cfg, data, out, ctx=ctx, progress=False)
init = {"G": {k: v.clone() for k, v in tr.G.state_dict().items()},
        "D": {k: v.clone() for k, v in tr.D.state_dict().items()}}
full = preprocess(read_showers(data, 0, 3 * per_rank * ctx.world_size), DEFAULT_SPECS["ecal25"], 10.0)
for step in range(1):  # one reference iteration = 2 D + 2 G optimizer steps
    gb = per_rank * ctx.world_size
    sl = slice(step * gb + ctx.rank * per_rank, step * gb + (ctx.rank + 1) * per_rank)
    batch = type(full)(full.images[sl], full.energy[sl], full.theta[sl], full.ecal[sl])
    tr.train_step(batch, step)
if ctx.rank == 0:
    torch.save({"G": tr.G.state_dict(), "D": tr.D.state_dict(), "init": init}, out + "/params.pt")
shutdown_distributed()
"""


def test_two_gloo_ranks_equal_one_rank_with_double_batch(data_file: Path, tmp_path: Path) -> None:
    """Plain SGD, no dropout: RMSprop's first steps are ~lr * sign(grad), which turns rounding noise in
    near-zero gradients into lr-sized parameter differences; SGD keeps the comparison at rounding level.
    channels_last is off because PyTorch's channels-last CPU BatchNorm differs from the exact statistics by ~1e-4.
    One reference iteration (2 D + 2 G updates): over more iterations the adversarial game amplifies float
    rounding (measured: 0.3% of the parameter movement after two iterations, 1% after three)."""
    script = tmp_path / "ddp.py"
    script.write_text(textwrap.dedent(_DDP_SCRIPT))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    results = {}
    for world, per_rank in ((2, 3), (1, 6)):
        out = tmp_path / f"w{world}"
        out.mkdir()
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(world),
               "--master_port", str(29500 + world + os.getpid() % 1000), str(script), str(data_file), str(out),
               str(per_rank)]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        results[world] = torch.load(out / "params.pt", weights_only=True)
    init = results[1]["init"]
    for part in ("G", "D"):
        for name, ref in results[1][part].items():
            got = results[2][part][name]
            if ref.dtype.is_floating_point:
                moved = (ref - init[part][name]).abs().max().item()
                # the two runs agree to float rounding, far below how far the parameters moved (a wrong
                # gradient average differs by O(moved)); oneDNN's AVX2 kernels round differently from AVX-512's:
                # 0.3 % of the movement under ONEDNN_MAX_CPU_ISA=AVX2 on an AVX-512 EPYC, hence 1 %
                assert (got - ref).abs().max().item() <= 1e-2 * max(moved, 1e-6) + 1e-6, f"{part}.{name}"


def test_bad_input(data_file: Path, tmp_path: Path, mc_tilted: ShowerSet) -> None:
    cfg = TrainConfig(max_steps=1, pretrain_steps=1, **TINY)
    with pytest.raises(InputError, match="nothing to resume"):
        Trainer(cfg, data_file, tmp_path / "none", resume=True, progress=False)
    wrong = tmp_path / "tilted.h5"
    write_showers(wrong, mc_tilted)
    with pytest.raises(GeometryMismatchError, match="needs 25x25x25"):
        Trainer(cfg, wrong, tmp_path / "w", progress=False)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataFormatError, match="no .h5"):
        Trainer(cfg, empty, tmp_path / "e", progress=False)
    run = tmp_path / "run"
    train(cfg, data_file, run, progress=False)
    with pytest.raises(InputError, match="already holds a training run"):
        Trainer(cfg, data_file, run, progress=False)
    with pytest.raises(ModelError, match="holds a ecal25 model, not angle51"):
        Trainer(TrainConfig(arch="angle51", max_steps=1, **TINY), data_file, run, resume=True, progress=False)
    before = (run / "checkpoint-last.pt").read_bytes()
    (run / "checkpoint-last.pt").write_bytes(before[:4000])
    with pytest.raises(ModelError, match="not a readable PyTorch weights file"):
        Trainer(cfg, data_file, run, resume=True, progress=False)


def test_cli_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["train", str(empty), "-o", str(tmp_path / "out"), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no .h5" in err and not (tmp_path / "out").exists()


@pytest.mark.parametrize("option, value, text", [
    ("--lr", "nan", "lr must be in (0, 10]"), ("--lr", "inf", "lr must be in (0, 10]"),
    ("--checkpoint-every", "0", "checkpoint_every must be in [1,"), ("--eval-showers", "0", "eval_showers must be"),
    ("--seed", "-1", "seed must be in [0, 4.29497e+09]"), ("--seed", str(2**40), "seed must be in"),
    ("--max-minutes", "nan", "max_minutes must be"), ("--max-minutes", "-1", "max_minutes must be"),
    ("--run-minutes", "nan", "run_minutes must be"), ("--eval-every", "-1", "eval_every must be"),
    ("--threads", "-1", "threads must be"), ("--warmup-steps", "-1", "warmup_steps must be"),
    ("--pretrain-steps", "-1", "pretrain_steps must be"), ("--max-steps", "-1", "max_steps must be"),
    ("--batch", "0", "batch_size must be"), ("--loss-weights", "2,x,0.1", "comma-separated numbers"),
    ("--loss-weights", "2,0.1", "ecal25 needs 3 loss weights"), ("--loss-weights", "2,nan,1", "loss_weights must"),
])
def test_cli_out_of_range_options_are_one_line(data_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                option: str, value: str, text: str) -> None:
    """Hostile pass 2026-12-03: these were tracebacks or silently accepted."""
    assert main(["train", str(data_file), "-o", str(tmp_path / "out"), "-q", option, value]) == 2
    err = capsys.readouterr().err.strip()
    assert text in err and err.count("\n") == 0 and "Traceback" not in err, err
    assert not (tmp_path / "out").exists()


def test_cli_loss_weights_reach_the_training(data_file: Path, tmp_path: Path) -> None:
    """--loss-weights replaces the reference weights, and the run keeps them for --resume."""
    out = tmp_path / "w"
    assert main(["train", str(data_file), "-o", str(out), "-q", "--batch", "2", "--max-steps", "2",
                 "--eval-showers", "20", "--chunk", "50", "--threads", "1", "--loss-weights", "2, 0.1 ,1"]) == 0
    ckpt = torch.load(out / "checkpoint-last.pt", map_location="cpu", weights_only=False)
    assert ckpt["config"]["loss_weights"] == [2.0, 0.1, 1.0]


def test_resume_changes_only_the_loss_settings_given(data_file: Path, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    """On --resume, --lr/--dist-weight given on the command line replace the run's; options left at their
    defaults (here --critic, --physics-weight) keep the run's values."""
    out = tmp_path / "r"
    common = [str(data_file), "-o", str(out), "-q", "--batch", "2", "--eval-showers", "20", "--chunk", "50",
              "--threads", "1", "--critic", "light"]
    assert main(["train", *common, "--max-steps", "1", "--physics-weight", "0.5"]) == 0
    capsys.readouterr()
    assert main(["train", str(data_file), "-o", str(out), "-q", "--resume", "--max-steps", "2", "--lr", "5e-4",
                 "--dist-weight", "0.5"]) == 0
    assert "dist_weight 0.0 -> 0.5, lr 0.001 -> 0.0005" in capsys.readouterr().out
    stored = torch.load(out / "checkpoint-last.pt", map_location="cpu", weights_only=False)["config"]
    assert (stored["lr"], stored["dist_weight"], stored["physics_weight"], stored["critic"]) == (5e-4, 0.5, 0.5,
                                                                                                 "light")
    with pytest.raises(InputError, match="cannot change critic"):
        Trainer(_cfg(), data_file, out, resume=True, progress=False, retune=["critic"])


def test_a_resumed_run_may_raise_the_angle_gain_without_changing_the_generator(
        tmp_path: Path, mc_tilted: ShowerSet, capsys: pytest.CaptureFixture[str]) -> None:
    """angle_gain is retunable: the resumed generator is refitted to the new gain (``regain_angle_input``) and
    generates what the checkpoint's did; its checkpoints then carry the new gain in their spec."""
    train_file, out = tmp_path / "t.h5", tmp_path / "run"
    write_showers(train_file, mc_tilted[:100])
    train(_cfg(arch="angle51", max_steps=1, eval_every=0), train_file, out, progress=False)
    old = load_generator(out / "checkpoint-last.pt").module.eval()
    tr = Trainer(_cfg(arch="angle51", max_steps=1, eval_every=0, angle_gain=100.0), train_file, out, resume=True,
                 progress=False, retune=["angle_gain"])
    assert "angle_gain 0.0 -> 100.0" in capsys.readouterr().out
    z = torch.randn(3, 256)
    z[:, 1] = torch.tensor([1.1, 1.6, 2.0])
    with torch.no_grad():
        new_out, old_out = tr.G.eval()(z), old(z)
        assert (new_out - old_out).abs().max() < 1e-4 * old_out.abs().max(), (new_out - old_out).abs().max()
    assert tr.G.angle_gain == 100.0 and tr.checkpoint() is not None
    assert load_generator(out / "checkpoint-last.pt").spec.angle_gain == 100.0
    with pytest.raises(InputError, match="angle_gain is for a model with an angle input"):
        _cfg(angle_gain=1.0)


def test_a_resumed_run_may_scale_the_angle_models_noise_and_builds_its_latents_as_the_spec_does(
        tmp_path: Path, mc_tilted: ShowerSet, capsys: pytest.CaptureFixture[str]) -> None:
    """noise_energy is retunable (a warm start with the noise times E/E0): the trainer's latents on the device are
    the spec's (``ModelSpec.latent``, what generation and exports use) for the same noise, and its checkpoints
    carry E0 in their spec."""
    train_file, out = tmp_path / "t.h5", tmp_path / "run"
    write_showers(train_file, mc_tilted[:100])
    train(_cfg(arch="angle51", max_steps=1, eval_every=0), train_file, out, progress=False)
    tr = Trainer(_cfg(arch="angle51", max_steps=1, eval_every=0, noise_energy=300.0), train_file, out, resume=True,
                 progress=False, retune=["noise_energy"])
    assert "noise_energy 0.0 -> 300.0" in capsys.readouterr().out
    e, theta = np.array([10.0, 300.0, 480.0]), np.radians([60.0, 90.0, 115.0])
    noise = np.random.default_rng(1).standard_normal((3, 254)).astype(np.float32)
    b = TensorBatch(torch.zeros(3, 1), torch.from_numpy(e / 100).float(), torch.from_numpy(theta).float(),
                    torch.zeros(3))
    on_device = tr._latent(torch.from_numpy(noise), b).numpy()
    assert np.allclose(on_device, tr.spec.latent(e, np.degrees(theta), noise), rtol=1e-6, atol=1e-7)
    assert np.allclose(on_device[:, 2:], noise * (e / 300.0)[:, None], rtol=1e-6)
    assert tr.checkpoint() is not None
    assert load_generator(out / "checkpoint-last.pt").spec.noise_energy_gev == 300.0
    with pytest.raises(InputError, match="noise_energy is for a model with an angle input"):
        _cfg(noise_energy=100.0)


def test_goal_score_is_the_worst_metric_in_units_of_its_goal() -> None:
    at_goals = {"moments_metric": 0.04, "sampling_fraction_mre": 0.01, "fpd": 2.0, "cells_ratio": 1.1,
                "resolution_ratio": 1 / 1.1}
    assert goal_score(at_goals) == pytest.approx(1.0)
    assert goal_score({**at_goals, "resolution_ratio": 1.21}) == pytest.approx(2.0)  # ln 1.21 = 2 ln 1.1
    assert goal_score({**at_goals, "cells_ratio": 1 / 1.21}) == pytest.approx(2.0)  # too few counts as too many
    assert goal_score({**at_goals, "fpd": 6.0, "moments_metric": 0.02}) == pytest.approx(3.0)
    # a ratio the held-out sample cannot measure is left out; a missing or infinite metric, or no cells, is not
    assert goal_score({**at_goals, "cells_ratio": float("nan"), "fpd": 3.0}) == pytest.approx(1.5)
    # the tilt counts where the held-out showers measure it (angle51): a generator that ignores the angle loses
    assert goal_score({**at_goals, "tilt_error_deg": 14.4}) == pytest.approx(14.4)
    assert goal_score({**at_goals, "tilt_error_deg": float("nan")}) == pytest.approx(1.0)
    for broken in ({k: v for k, v in at_goals.items() if k != "fpd"}, {**at_goals, "moments_metric": np.inf},
                   {**at_goals, "cells_ratio": 0.0}):
        assert np.isnan(goal_score(broken))
        assert np.isnan(goal_score(broken, mean=True))


def test_mean_goal_score_trades_one_far_metric_against_the_rest() -> None:
    """goals-mean averages the goal distances: a checkpoint with one metric far off and the rest at half their
    goals beats one with every metric a little off, which the worst-metric score would pick."""
    at_goals = {"moments_metric": 0.04, "sampling_fraction_mre": 0.01, "fpd": 2.0, "cells_ratio": 1.1,
                "resolution_ratio": 1.1}
    assert goal_score(at_goals, mean=True) == pytest.approx(1.0)
    one_far = {"moments_metric": 0.02, "sampling_fraction_mre": 0.005, "fpd": 1.0, "cells_ratio": 1.1 ** 0.5,
               "resolution_ratio": 1.1 ** 5}  # parts 0.5, 0.5, 0.5, 0.5, 5
    all_off = {k: v * 2 if k.endswith(("metric", "mre")) or k == "fpd" else v ** 2 for k, v in at_goals.items()}
    assert goal_score(one_far, mean=True) == pytest.approx(7 / 5)
    assert goal_score(all_off, mean=True) == pytest.approx(2.0) and goal_score(all_off) == pytest.approx(2.0)
    assert goal_score(one_far) == pytest.approx(5.0)
    assert selection_score("goals-mean", one_far) < selection_score("goals-mean", all_off)
    assert selection_score("goals", one_far) > selection_score("goals", all_off)
    assert selection_score("fpd", one_far) == 1.0 and selection_score("moments", all_off) == 0.08


def test_resume_with_another_selection_rescores_the_best_checkpoint(data_file: Path, tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """--select given on --resume switches the score: the best checkpoint so far is rescored from its logged
    metrics by the new score, and a later evaluation replaces it only when it scores better."""
    out = tmp_path / "s"
    common = [str(data_file), "-o", str(out), "-q", "--eval-showers", "20", "--chunk", "50", "--threads", "1",
              "--eval-every", "1"]
    assert main(["train", *common, "--batch", "2", "--max-steps", "2", "--select", "fpd"]) == 0
    before = torch.load(out / "checkpoint-last.pt", map_location="cpu", weights_only=False)["state"]
    assert before["best_step"] in (1, 2)
    capsys.readouterr()
    assert main(["train", *common, "--resume", "--max-steps", "4", "--select", "goals-mean"]) == 0
    said = capsys.readouterr().out
    assert "select fpd -> goals-mean" in said and "best mean goal distance" in said
    ckpt = torch.load(out / "checkpoint-last.pt", map_location="cpu", weights_only=False)
    assert ckpt["config"]["select"] == "goals-mean"
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    logged = {int(r["step"]): {k: float(v) for k, v in r.items() if v != ""} for r in rows}
    assert all("tilt_error_deg" not in m for m in logged.values())  # the tilt column is empty: not tilted
    scores = {step: goal_score(m, mean=True) for step, m in logged.items() if step in (before["best_step"], 3, 4)}
    best_step = min(scores, key=lambda k: scores[k])
    assert ckpt["state"]["best_step"] == best_step
    assert ckpt["state"]["best_metric"] == pytest.approx(scores[best_step])
    best = torch.load(out / "checkpoint-best.pt", map_location="cpu", weights_only=False)
    assert best["state"]["step"] == best_step


def test_config_refuses_wrong_types_naming_the_field() -> None:
    for field, value in (("lr", "fast"), ("batch_size", 2.5), ("epochs", True), ("seed", None),
                         ("loss_weights", (1.0, "x", 0.1)), ("dropout", 1.0), ("device", 3)):
        with pytest.raises(InputError, match=field):
            _cfg(**{field: value})


def test_batch_larger_than_the_data_or_its_groups_is_refused(data_file: Path, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot fill one batch of 400"):
        Trainer(_cfg(batch_size=400, max_steps=1), data_file, tmp_path / "a", progress=False)
    with pytest.raises(InputError, match="is given twice"):
        Trainer(_cfg(max_steps=1), [data_file, data_file], tmp_path / "c", progress=False)
    with pytest.raises(InputError, match="is also a training file"):
        Trainer(_cfg(max_steps=1), data_file, tmp_path / "d", val=data_file, progress=False)
    # 300 rows fill a batch of 60, but no 50-row block group does: this looped over empty epochs before
    with pytest.raises(InputError, match="no training batch of 60 showers"):
        train(_cfg(batch_size=60, mix_blocks=1, max_steps=1), data_file, tmp_path / "b", progress=False)


@pytest.mark.slow
def test_cli_under_torchrun(data_file: Path, tmp_path: Path, mc_small: ShowerSet) -> None:
    """`torchrun -m caloquant.cli train` with two gloo ranks: one run directory, written by rank 0 only."""
    out, val = tmp_path / "ddp", tmp_path / "val.h5"
    write_showers(val, mc_small[300:])
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
           str(29700 + os.getpid() % 200), "-m", "caloquant.cli", "train", str(data_file), "--val", str(val),
           "-o", str(out), "--batch", "2", "--max-steps", "2", "--eval-every", "2", "--eval-showers", "20",
           "--device", "cpu", "--threads", "1", "--chunk", "50", "-q"]
    proc = subprocess.run(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("finished: step 2") == 1
    assert (out / "generator-best.pt").exists() and len((out / "metrics.csv").read_text().splitlines()) == 2


def test_resident_stream_yields_the_streamed_batches(data_file: Path) -> None:
    """Device-resident training rows give, batch for batch, what the HDF5 stream gives (so resume stays exact)."""
    from caloquant.data.dataset import ShowerDataset
    from caloquant.models import DEFAULT_SPECS
    from caloquant.train.data import ResidentStream

    ds = ShowerDataset(data_file)
    blocks, _ = split_blocks(ds, 40, 0.0)
    for rank in range(2):
        stream = BatchStream(ds, blocks, DEFAULT_SPECS["ecal25"], batch_size=7, rank=rank, world_size=2, seed=4,
                             mix_blocks=2, ecal_cut=10.0)
        resident = ResidentStream(stream, torch.device("cpu"))
        for epoch, skip in ((0, 0), (1, 3)):
            streamed, held = list(stream.epoch(epoch, skip)), list(resident.epoch(epoch, skip))
            assert len(streamed) == len(held) > 0
            for a, b in zip(streamed, held):
                for f in ("images", "energy", "theta", "ecal"):
                    assert np.array_equal(getattr(a, f), getattr(b, f).numpy()), f


def test_resident_and_streamed_training_are_identical(data_file: Path, tmp_path: Path) -> None:
    runs = []
    for resident in ("on", "off"):
        tr = Trainer(_cfg(max_steps=3, pretrain_steps=1, resident=resident),
                     data_file, tmp_path / resident, progress=False)
        assert (tr.resident is not None) == (resident == "on")
        tr.run()
        runs.append(_params(tr.G))
    assert torch.equal(runs[0], runs[1])


def test_losses_are_read_back_only_when_logged(data_file: Path, tmp_path: Path) -> None:
    """The step returns device tensors; the loop logs (and syncs) every log_every steps."""
    tr = Trainer(_cfg(max_steps=5, log_every=2), data_file, tmp_path / "r",
                 progress=False)
    batch = next(iter(tr.stream.epoch(0)))
    stats = tr.train_step(batch, 0)
    assert all(isinstance(v, torch.Tensor) for k, v in stats.items() if k != "lr")
    tr.run()
    steps = [int(line.split(",")[0]) for line in (tmp_path / "r" / "losses.csv").read_text().splitlines()[1:]]
    assert steps == [1, 2, 4]


def _bf16_fast() -> bool:
    from caloquant.machine import cpu_has_native_bf16

    return cpu_has_native_bf16()


NEEDS_NATIVE_BF16 = pytest.mark.skipif(not _bf16_fast(), reason="this CPU has no AVX512-BF16/AMX-BF16: bf16 "
                                       "convolutions are emulated (about 40x slower than fp32), too slow here")


def _first_step(data_file: Path, tmp_path: Path, **kw: object) -> dict[str, dict[str, float]]:
    values = {}
    for precision in ("fp32", "bf16"):
        tr = Trainer(_cfg(precision=precision, dropout=0.0, **kw), data_file, tmp_path / precision, progress=False)
        assert tr.precision == precision
        batch = next(iter(tr.stream.epoch(0)))
        values[precision] = {k: float(v) for k, v in tr.train_step(batch, 0).items()}
    return values


# bf16 autocast keeps 8 mantissa bits (relative rounding 2**-9 = 0.2%) in convolutions that accumulate in fp32;
# through the 4-5 layers of G (and D) that is of order 1% on the loss values of one step (the losses themselves
# are computed in fp32). 5% leaves room for the ReLU/LeakyReLU kinks; a broken bf16 path (an unscaled or
# truncated output, a wrong layout) is off by far more.
BF16_REL = 0.05


def test_bf16_generator_step_is_close_to_fp32(data_file: Path, tmp_path: Path) -> None:
    """The generator-only (pre-training) step, cheap enough to run in bf16 on every CPU."""
    values = _first_step(data_file, tmp_path, pretrain_steps=1, batch_size=2)
    for key, ref in values["fp32"].items():
        assert values["bf16"][key] == pytest.approx(ref, rel=BF16_REL, abs=1e-3), key


@NEEDS_NATIVE_BF16
def test_bf16_adversarial_step_is_close_to_fp32(data_file: Path, tmp_path: Path) -> None:
    values = _first_step(data_file, tmp_path, batch_size=8)
    for key, ref in values["fp32"].items():
        assert values["bf16"][key] == pytest.approx(ref, rel=BF16_REL, abs=1e-3), key


@NEEDS_NATIVE_BF16
def test_bf16_resume_is_exact(data_file: Path, tmp_path: Path) -> None:
    """bf16 kernels are deterministic on one machine, so resume is still bit for bit."""
    straight = Trainer(_cfg(max_steps=3, precision="bf16", pretrain_steps=1), data_file, tmp_path / "a",
                       progress=False)
    straight.run()
    Trainer(_cfg(max_steps=1, precision="bf16", pretrain_steps=1), data_file, tmp_path / "b", progress=False).run()
    resumed = Trainer(_cfg(max_steps=3, precision="bf16", pretrain_steps=1), data_file, tmp_path / "b",
                      resume=True, progress=False)
    resumed.run()
    assert resumed.precision == "bf16" and torch.equal(_params(straight.G), _params(resumed.G))


def test_ema_generator_is_evaluated_and_exported(data_file: Path, tmp_path: Path) -> None:
    cfg = _cfg(max_steps=2, eval_every=2, ema_decay=0.5, select="fpd")
    res = train(cfg, data_file, tmp_path / "ema", progress=False)
    ckpt = torch.load(tmp_path / "ema" / "checkpoint-last.pt", weights_only=True)
    g, ema = ckpt["generator"], ckpt["generator_ema"]
    assert any(not torch.equal(g[k], ema[k]) for k in g if g[k].is_floating_point())
    exported = torch.load(tmp_path / "ema" / "generator-best.pt", weights_only=True)
    assert all(torch.equal(exported[k], ema[k]) for k in ema)
    header, row = (tmp_path / "ema" / "metrics.csv").read_text().splitlines()[:2]
    fpd = dict(zip(header.split(","), row.split(",")))["fpd"]
    assert res.state.best_metric == pytest.approx(float(fpd))


def test_ema_batchnorm_statistics_are_recomputed_for_the_average(data_file: Path, tmp_path: Path) -> None:
    """The saved moving average carries BatchNorm statistics of its own weights, not the live generator's; the
    training itself (and so an exact resume) is unchanged by it."""
    calibrated = Trainer(_cfg(max_steps=2, ema_decay=0.5), data_file, tmp_path / "on",
                         progress=False)
    calibrated.run()
    plain = Trainer(_cfg(max_steps=2, ema_decay=0.5, bn_calibration=0), data_file, tmp_path / "off", progress=False)
    plain.run()
    assert torch.equal(_params(calibrated.G), _params(plain.G))
    on = torch.load(tmp_path / "on" / "checkpoint-last.pt", weights_only=True)["generator_ema"]
    off = torch.load(tmp_path / "off" / "checkpoint-last.pt", weights_only=True)
    stats = [k for k in on if k.endswith(("running_mean", "running_var"))]
    assert stats and all(torch.equal(off["generator_ema"][k], off["generator"][k]) for k in stats)
    assert all(not torch.equal(on[k], off["generator_ema"][k]) for k in stats)
    # bench/calibrate_bn.py brings the uncalibrated checkpoint to the calibrated one's state
    script = Path(__file__).parents[1] / "bench" / "calibrate_bn.py"
    subprocess.run([sys.executable, str(script), str(tmp_path / "off" / "checkpoint-last.pt"), "-o",
                    str(tmp_path / "cal.pt"), "--showers", "8"], check=True, capture_output=True)
    cal = torch.load(tmp_path / "cal.pt", weights_only=True)["generator_ema"]
    assert all(torch.allclose(cal[k], on[k]) for k in stats)


def test_init_generator_and_lr_scaling(data_file: Path, tmp_path: Path) -> None:
    first = train(_cfg(max_steps=1), data_file, tmp_path / "a", progress=False)
    src = first.out_dir / "generator-best.pt"
    cfg = _cfg(init_generator=str(src), reference_batch=1, warmup_steps=4)
    tr = Trainer(cfg, data_file, tmp_path / "b", progress=False)
    loaded = torch.load(src, weights_only=True)
    assert all(torch.equal(v, loaded[k]) for k, v in tr.G.state_dict().items())
    # global batch 2 at reference batch 1: lr doubles, reached linearly over the warm-up
    assert tr.lr_at(0) == pytest.approx(1e-3) and tr.lr_at(2) == pytest.approx(1.5e-3)
    assert tr.lr_at(10) == pytest.approx(2e-3)
    with pytest.raises(InputError, match="precision must be"):
        TrainConfig(precision="fp16")


@pytest.mark.slow
def test_compiled_batchnorm_after_leaky_relu_matches_eager() -> None:
    """torch 2.13's AVX-512 inductor kernels got this training-mode pattern of the 3DGAN discriminator wrong
    (max difference 16 on unit-variance input); compile_module caps CPU kernels at 256-bit vectors."""
    from caloquant.train.hardware import compile_module
    torch.manual_seed(0)
    module = torch.nn.Sequential(torch.nn.LeakyReLU(0.3), torch.nn.BatchNorm3d(8)).train()
    x = torch.randn(2, 8, 25, 25, 25).to(memory_format=torch.channels_last_3d)
    eager = module(x)
    compiled = compile_module(module, torch.device("cpu"))(x)
    assert torch.allclose(compiled, eager, atol=1e-4), float((compiled - eager).abs().max())


def test_compiled_step_is_close_to_eager(data_file: Path, tmp_path: Path) -> None:
    """torch.compile (inductor) reorders float arithmetic, so the first step's losses agree to ~1%, not bits."""
    values = {}
    for compiled in (False, True):
        tr = Trainer(_cfg(compile=compiled, dropout=0.0), data_file, tmp_path / str(compiled), progress=False)
        batch = next(iter(tr.stream.epoch(0)))
        values[compiled] = {k: float(v) for k, v in tr.train_step(batch, 0).items()}
    for key, ref in values[False].items():
        assert values[True][key] == pytest.approx(ref, rel=0.05, abs=1e-3), key


def test_broken_bf16_kernels_fall_back_to_fp32_or_are_refused(data_file: Path, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """Where BF16 computes the networks wrong (AMX BF16 with torch 2.13 did, 110 % off), precision auto trains in
    FP32 and says so, and an explicit bf16 is refused in one line, instead of wrecking the weights."""
    import caloquant.train.loop as loop
    from caloquant.errors import PrecisionError

    monkeypatch.setattr(loop, "resolve_precision", lambda precision, device: "bf16")
    monkeypatch.setattr(loop, "repair_bf16_convs", lambda module, *inputs: ([], []))  # this machine's own: below
    monkeypatch.setattr(loop, "bf16_deviation", lambda module, *inputs: 0.9)
    tr = Trainer(_cfg(precision="auto", max_steps=1), data_file, tmp_path / "auto", progress=False)
    assert tr.precision == "fp32" and "training in FP32" in capsys.readouterr().out
    with pytest.raises(PrecisionError, match="BF16 kernels on this machine compute the networks wrong"):
        Trainer(_cfg(precision="bf16", max_steps=1), data_file, tmp_path / "bf16", progress=False)
    monkeypatch.setattr(loop, "bf16_deviation", lambda module, *inputs: 0.004)  # BF16 rounding: kept
    assert Trainer(_cfg(precision="bf16", max_steps=1), data_file, tmp_path / "ok", progress=False).precision == "bf16"
    # a convolution still wrong when padded: not trained in BF16 even where the whole-network check passes
    monkeypatch.setattr(loop, "repair_bf16_convs", lambda module, *inputs: ([], ["block1.1"]))
    tr = Trainer(_cfg(precision="auto", max_steps=1), data_file, tmp_path / "still", progress=False)
    out = capsys.readouterr().out
    assert tr.precision == "fp32" and "wrong even padded: generator.block1.1" in out


@NEEDS_NATIVE_BF16
def test_bf16_trainer_repairs_what_this_machine_gets_wrong(data_file: Path, tmp_path: Path) -> None:
    """On this machine a BF16 trainer's generator agrees with FP32: on AMX with torch 2.13 its first convolution
    is computed padded (and said so), elsewhere nothing is swapped; the critic the same."""
    from caloquant.models.bf16 import BF16_TOLERANCE, bf16_deviation
    from caloquant.models.layers import ChannelPaddedConv3d

    tr = Trainer(_cfg(precision="bf16", max_steps=1), data_file, tmp_path, progress=False)
    assert tr.precision == "bf16"
    padded = [n for n, m in tr.G.named_modules() if isinstance(m, ChannelPaddedConv3d)]
    assert set(padded) <= {"block1.1"}
    z = torch.randn(4, tr.spec.latent_size, generator=torch.Generator().manual_seed(0))
    assert bf16_deviation(tr.G, z) < BF16_TOLERANCE
    assert not any(isinstance(m, ChannelPaddedConv3d) for m in tr.D.modules())


def test_auto_precision_is_bf16_only_where_it_is_native(monkeypatch: pytest.MonkeyPatch) -> None:
    """auto: bf16 on CPUs with AVX512-BF16 or AMX, fp32 where BF16 is emulated (about 40x slower), also under an
    ISA cap below BF16; an explicit choice always stands."""
    import caloquant.machine as machine
    import caloquant.train.hardware as hw

    cpu = torch.device("cpu")
    for var in machine.ISA_CAP_VARS:  # the flags decide first; caps are set below
        monkeypatch.delenv(var, raising=False)
    for flags, expected in (({"avx512_bf16"}, "bf16"), ({"avx512_bf16", "amx_bf16"}, "bf16"), ({"avx2"}, "fp32")):
        monkeypatch.setattr(machine, "cpu_info", lambda flags=flags: ("CPU", flags))
        assert hw.resolve_precision("auto", cpu) == expected, flags
        assert hw.resolve_precision("bf16", cpu) == "bf16" and hw.resolve_precision("fp32", cpu) == "fp32"
    monkeypatch.setattr(machine, "cpu_info", lambda: ("CPU", {"avx512_bf16", "amx_bf16"}))
    for cap, expected in (("AVX2", "fp32"), ("AVX512_CORE_VNNI", "fp32"), ("AVX512_CORE_BF16", "bf16")):
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", cap)  # a cap below BF16 makes it emulated
        assert hw.resolve_precision("auto", cpu) == expected, cap


class _WrongInBF16(torch.nn.Conv3d):
    """A convolution computed as oneDNN's AMX BF16 kernel for 8 input channels did (torch 2.13): about 100 % off
    under BF16 autocast, right in FP32."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = super().forward(x)
        return -y if torch.is_autocast_enabled(x.device.type) else y


def test_channel_padded_conv_computes_the_same_with_the_same_parameters() -> None:
    from caloquant.models.layers import ChannelPaddedConv3d

    torch.manual_seed(0)
    conv = torch.nn.Conv3d(8, 6, (3, 2, 4), padding=(1, 0, 2))
    twin = ChannelPaddedConv3d.replacing(conv)
    assert twin.weight is conv.weight and twin.bias is conv.bias and twin.padded_channels == 16
    assert list(twin.state_dict()) == list(conv.state_dict())
    x = torch.randn(2, 8, 5, 6, 7, requires_grad=True)
    y_ref, y = conv(x), twin(x)
    assert torch.allclose(y, y_ref, atol=1e-5)
    g_ref = torch.autograd.grad(y_ref.square().sum(), [x, conv.weight])
    g = torch.autograd.grad(y.square().sum(), [x, conv.weight])
    assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-4) for a, b in zip(g, g_ref, strict=True))
    with pytest.raises(ValueError, match="cannot pad"):
        ChannelPaddedConv3d.replacing(torch.nn.Conv3d(32, 4, 1), 16)


def test_a_convolution_wrong_in_bf16_is_computed_padded_and_right() -> None:
    """repair_bf16_convs finds the convolution that BF16 gets wrong, forward or backward, at the shape it runs,
    and swaps in its padded twin: the optimizer's parameters and the checkpoint's keys stay as they were."""
    import caloquant.models.bf16 as hw
    from caloquant.models.layers import ChannelPaddedConv3d

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv3d(1, 8, 3), torch.nn.ReLU(), _WrongInBF16(8, 4, 3), torch.nn.Flatten())
    params, keys = list(net.parameters()), list(net.state_dict())
    x = torch.rand(4, 1, 9, 9, 9)
    assert hw.bf16_deviation(net, x) > 1
    assert hw.repair_bf16_convs(net, x) == (["2"], [])
    assert isinstance(net[2], ChannelPaddedConv3d) and not isinstance(net[0], ChannelPaddedConv3d)
    assert all(a is b for a, b in zip(net.parameters(), params, strict=True)) and list(net.state_dict()) == keys
    assert hw.bf16_deviation(net, x) < hw.BF16_TOLERANCE
    assert hw.repair_bf16_convs(net, x) == ([], [])  # nothing left to repair


def test_a_convolution_wrong_even_padded_is_left_and_named(monkeypatch: pytest.MonkeyPatch) -> None:
    import caloquant.models.bf16 as hw

    net = torch.nn.Sequential(torch.nn.Conv3d(1, 8, 3), torch.nn.ReLU(), torch.nn.Conv3d(8, 4, 3))
    monkeypatch.setattr(hw, "_conv_bf16_deviation", lambda conv, shape: 1.0)
    assert hw.repair_bf16_convs(net, torch.rand(2, 1, 7, 7, 7)) == ([], ["0", "2"])
    assert all(type(m) is torch.nn.Conv3d for m in (net[0], net[2]))


@NEEDS_NATIVE_BF16
def test_the_generators_run_right_in_bf16_on_this_machine() -> None:
    """On every machine: after repair, both generators in BF16 agree with FP32 (on AMX CPUs with torch 2.13 their
    first 8-channel convolution is repaired; elsewhere nothing is)."""
    from caloquant.models.registry import build_generator
    from caloquant.models.spec import ModelSpec
    from caloquant.models.bf16 import BF16_TOLERANCE, bf16_deviation, repair_bf16_convs

    for arch in ("ecal25", "angle51"):
        torch.manual_seed(0)
        spec = ModelSpec(arch=arch)
        gen = build_generator(spec)
        z = torch.randn(2, spec.latent_size)
        fixed, wrong = repair_bf16_convs(gen, z)
        assert not wrong and bf16_deviation(gen, z) < BF16_TOLERANCE, (arch, fixed)
