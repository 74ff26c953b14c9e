"""Training campaigns: a training resumed run after run from a folder kept in the repository (issue 23)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from caloquant.cli import main
from caloquant.errors import DataFormatError, InputError
from caloquant.train.campaign import load_campaign, run_campaign

CONFIG = {"batch_size": 4, "chunk_size": 40, "eval_showers": 40, "eval_every": 1, "threads": 1, "seed": 2,
          "precision": "fp32", "critic": "light", "dist_weight": 1.0, "ema_decay": 0.5, "resident": "off",
          "bn_calibration": 8}


def _campaign(folder: Path, **config: object) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    doc = {"config": {**CONFIG, **config},
           "train": [{"file": "train.h5", "n": 120, "energy": "10:500", "seed": 71, "tuning": "geant4"}],
           "val": {"file": "val.h5", "n": 60, "energy": "10:500", "seed": 72, "tuning": "geant4"}}
    (folder / "campaign.json").write_text(json.dumps(doc))
    return folder


def test_campaign_runs_resume_and_keep_their_history(tmp_path: Path) -> None:
    folder, cache = _campaign(tmp_path / "c"), tmp_path / "cache"
    first = run_campaign(folder, cache=cache, run_minutes=5, overrides={"max_steps": 2}, progress=False)
    assert first.state.step == 2 and (cache / "train.h5").exists() and (cache / "val.h5").exists()
    second = run_campaign(folder, cache=cache, run_minutes=5, overrides={"max_steps": 3}, progress=False)
    assert second.state.step == 3
    runs = list(csv.DictReader((folder / "runs.csv").open()))
    assert [(r["start_step"], r["end_step"], r["critic"]) for r in runs] == [("0", "2", "light"), ("2", "3", "light")]
    metrics = list(csv.DictReader((folder / "metrics.csv").open()))
    assert [int(r["showers"]) for r in metrics] == [4, 8, 12]
    for name in ("checkpoint-last.pt", "checkpoint-best.pt", "curves.png", "learning-curve.png"):
        assert (folder / name).exists(), name
    size = sum(p.stat().st_size for p in folder.iterdir())
    assert size < 20e6


def test_campaign_retunes_loss_settings_between_runs_and_refuses_other_changes(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import torch
    folder, cache = _campaign(tmp_path / "c"), tmp_path / "cache"
    run_campaign(folder, cache=cache, run_minutes=5, overrides={"max_steps": 1}, progress=False)
    _campaign(folder, dist_weight=2.0, loss_weights=[2.0, 0.1, 1.0])  # the curriculum's next step
    capsys.readouterr()
    run_campaign(folder, cache=cache, run_minutes=5, overrides={"max_steps": 2}, progress=False)
    assert "dist_weight 1.0 -> 2.0" in capsys.readouterr().out
    stored = torch.load(folder / "checkpoint-last.pt", map_location="cpu", weights_only=False)["config"]
    assert stored["dist_weight"] == 2.0 and stored["loss_weights"] == [2.0, 0.1, 1.0]
    before = (folder / "checkpoint-last.pt").read_bytes()
    _campaign(folder, dist_weight=2.0, loss_weights=[2.0, 0.1, 1.0], critic="reference")
    assert main(["campaign", str(folder), "--run-minutes", "1", "--cache", str(cache), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert "critic is 'reference', but the campaign's checkpoint was trained with 'light'" in err
    assert err.count("\n") == 0 and (folder / "checkpoint-last.pt").read_bytes() == before


def test_campaign_cli_and_bad_campaigns(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(InputError, match="not a training campaign"):
        load_campaign(tmp_path)
    bad = _campaign(tmp_path / "bad", critic="huge")
    with pytest.raises(InputError, match="critic"):
        load_campaign(bad)
    (bad / "campaign.json").write_text('{"config": {}, "train": [{"file": "../x.h5", "n": 1, "energy": "10", '
                                       '"seed": 1}], "val": {"file": "v.h5", "n": 1, "energy": "10", "seed": 1}}')
    with pytest.raises(DataFormatError, match="plain .h5 file name"):
        load_campaign(bad)
    folder, cache = _campaign(tmp_path / "ok"), tmp_path / "cache"
    cache.mkdir()
    from caloquant.simulate import simulate_to_file
    simulate_to_file(cache / "train.h5", 50, "10:500", seed=71)  # not what the campaign's command makes
    assert main(["campaign", str(folder), "--run-minutes", "1", "--cache", str(cache), "-q"]) == 2
    assert "not what the campaign's command makes (50 showers)" in capsys.readouterr().err
    simulate_to_file(cache / "train.h5", 120, "10:500", seed=71, overwrite=True)  # right count, default tuning
    assert main(["campaign", str(folder), "--run-minutes", "1", "--cache", str(cache), "-q"]) == 2
    assert "(gflash_tuning" in capsys.readouterr().err
    assert main(["campaign", str(folder), "--run-minutes", "1", "--cache", str(folder / "data"), "-q"]) == 2
    assert "lies inside the campaign folder" in capsys.readouterr().err and not (folder / "data").exists()
    assert main(["campaign", str(folder), "--run-minutes", "1", "--cache", str(cache / "train.h5"), "-q"]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    assert main(["campaign", str(folder), "--run-minutes", "0", "--cache", str(cache), "-q"]) == 2


@pytest.mark.parametrize("config, text", [
    ({"lr": "fast"}, "lr must be a number"), ({"checkpoint_every": 0}, "checkpoint_every must be in"),
    ({"learning_rate": 0.1}, "unknown training setting(s) 'learning_rate'"),
    ({"loss_weights": "2,0.1,1"}, "loss_weights must be finite non-negative numbers, got '2,0.1,1'"),
])
def test_bad_settings_are_refused_before_any_data_is_made(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                          config: dict[str, object], text: str) -> None:
    """Hostile pass 2026-12-03: these were tracebacks, or (an unknown key) silently ignored."""
    folder = _campaign(tmp_path / "c", **config)
    assert main(["campaign", str(folder), "--run-minutes", "1", "--cache", str(tmp_path / "cache"), "-q"]) == 2
    err = capsys.readouterr().err.strip()
    assert text in err and err.count("\n") == 0, err
    assert not (tmp_path / "cache").exists()
    assert main(["campaign", str(_campaign(tmp_path / "d")), "--run-minutes", "nan", "-q"]) == 2
    assert "run minutes must be positive" in capsys.readouterr().err


def test_campaign_cli_takes_per_run_settings(tmp_path: Path) -> None:
    """--eval-every, --checkpoint-every and --resident set how this run goes; the checkpoint records them."""
    import torch
    folder, cache = _campaign(tmp_path / "c"), tmp_path / "cache"
    assert main(["campaign", str(folder), "--run-minutes", "0.05", "--cache", str(cache), "--eval-every", "3",
                 "--checkpoint-every", "5", "--resident", "on", "-q"]) == 0
    stored = torch.load(folder / "checkpoint-last.pt", map_location="cpu", weights_only=False)["config"]
    assert (stored["eval_every"], stored["checkpoint_every"], stored["resident"]) == (3, 5, "on")
    steps = [int(r["step"]) for r in csv.DictReader((folder / "metrics.csv").open())]
    assert steps and all(s % 3 == 0 for s in steps[:-1])  # the last one: the evaluation at the stop


REPO_CAMPAIGNS = sorted((Path(__file__).resolve().parents[1] / "campaigns").glob("*/campaign.json"))


@pytest.mark.parametrize("path", REPO_CAMPAIGNS, ids=lambda p: p.parent.name)
def test_committed_campaigns_load_and_fit_the_size_limit(path: Path) -> None:
    """Every campaign in the repository reads (settings known and in range), and its committed state stays under
    the 20 MB a campaign may hold (issue 23)."""
    campaign = load_campaign(path.parent)
    assert campaign.train and campaign.val
    exported = {"generator-best.pt", "generator-best.json"}  # written by each run, ignored by git (.gitignore)
    assert sum(f.stat().st_size for f in path.parent.iterdir() if f.is_file() and f.name not in exported) < 20e6
