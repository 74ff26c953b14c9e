"""Training campaigns: one training that runs for days in pieces of a few hours, on whatever machine each piece gets.

A campaign is a folder kept in the repository (``campaigns/<name>/``) holding:

* ``campaign.json``: the fixed part: the training settings (``TrainConfig`` fields) and how to make the
  training and validation data (reference-MC commands with seeds), so that any machine rebuilds identical files;
* ``checkpoint-last.pt``: the state that must survive (generator, critic, optimisers, EMA, data position,
  progress), replaced by every run; ``checkpoint-best.pt``: the best generator so far (generator only);
* ``runs.csv``, ``metrics.csv``, ``losses.csv``: per-run machine and throughput, and the held-out metric
  history against showers seen, appended by every run; ``learning-curve.png``: the held-out metrics across
  runs; ``curves.png``: the training losses (drawn by the trainer).

``run_campaign`` simulates any missing data file into a cache folder, then starts the training (first run) or
resumes it, for at most ``run_minutes``; it stops cleanly (checkpoint written) on time, on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from caloquant.data.formats import ShowerFile
from caloquant.errors import DataFormatError, InputError
from caloquant.plotting.training import plot_learning_curve
from caloquant.simulate import simulate_to_file
from caloquant.simulate.run import run_attrs
from caloquant.train.config import TrainConfig
from caloquant.models.registry import safe_load
from caloquant.train.loop import RETUNABLE, RUNTIME, TrainResult, train

CAMPAIGN_FILE = "campaign.json"
#: The learning curve across runs (not ``curves.png``, which the trainer redraws with its losses during a run).
LEARNING_CURVE = "learning-curve.png"
#: Keys of a data entry in campaign.json: the arguments of ``caloquant simulate`` that make the file.
DATA_KEYS = {"file", "n", "energy", "seed", "tuning", "angle", "window"}


@dataclass(frozen=True)
class DataSpec:
    """One reference-MC file of a campaign and the simulate arguments that make it, bit for bit."""

    file: str
    n: int
    energy: str
    seed: int
    tuning: str = "none"
    angle: str = "90"
    window: str = "25x25x25"

    def command(self, cache: Path) -> str:
        """The equivalent ``caloquant simulate`` command line (recorded in the campaign's README)."""
        return (f"caloquant simulate -o {cache / self.file} --n {self.n} --energy {self.energy} --seed {self.seed} "
                f"--tuning {self.tuning} --angle {self.angle} --window {self.window}")


@dataclass(frozen=True)
class Campaign:
    """The fixed part of a campaign (campaign.json)."""

    folder: Path
    config: dict[str, Any]
    train: tuple[DataSpec, ...]
    val: DataSpec


def _data(entry: Any, where: str) -> DataSpec:
    if not isinstance(entry, dict) or not {"file", "n", "energy", "seed"} <= set(entry) or set(entry) - DATA_KEYS:
        raise DataFormatError(f"{where}: a data entry needs file, n, energy, seed (and optionally "
                              f"tuning, angle, window), got {entry!r}")
    kw: dict[str, Any] = {k: (str(v) if k in ("file", "energy", "tuning", "angle", "window") else v)
                          for k, v in entry.items()}
    spec = DataSpec(**kw)
    if Path(spec.file).name != spec.file or not spec.file.endswith(".h5"):
        raise DataFormatError(f"{where}: data file {spec.file!r} must be a plain .h5 file name")
    if not isinstance(spec.n, int) or spec.n <= 0 or not isinstance(spec.seed, int) or spec.seed < 0:
        raise DataFormatError(f"{where}: n must be a positive and seed a non-negative integer in {entry!r}")
    return spec


def load_campaign(folder: str | os.PathLike[str]) -> Campaign:
    """Read and check ``folder/campaign.json`` (one-line errors)."""
    root = Path(folder)
    path = root / CAMPAIGN_FILE
    if not path.is_file():
        raise InputError(f"{root}: not a training campaign (no {CAMPAIGN_FILE})")
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise DataFormatError(f"{path}: not readable JSON ({type(e).__name__})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("config"), dict) or not doc.get("train"):
        raise DataFormatError(f"{path}: needs 'config' (training settings), 'train' and 'val' (data)")
    unknown = sorted(set(doc["config"]) - {f.name for f in fields(TrainConfig)})
    if unknown:  # a misspelt setting would otherwise be dropped silently
        raise DataFormatError(f"{path}: unknown training setting(s) {', '.join(map(repr, unknown))} in 'config'")
    TrainConfig.from_dict(doc["config"])  # unknown values are refused now, not hours later
    train_specs = tuple(_data(e, str(path)) for e in doc["train"])
    return Campaign(root, doc["config"], train_specs, _data(doc.get("val"), str(path)))


def ensure_data(campaign: Campaign, cache: Path, progress: bool = True) -> tuple[list[Path], Path]:
    """The campaign's training and validation files in ``cache``, simulated first where missing; a present file
    must be what the campaign's command writes (same count, seed, energies, angles, window, engine and tuning):
    a file from another command is refused, not trained on."""
    if cache.resolve() == campaign.folder.resolve() or campaign.folder.resolve() in cache.resolve().parents:
        raise InputError(f"cache {cache} lies inside the campaign folder {campaign.folder}, which is committed; "
                         "keep the simulated data outside it (default scratch/campaign-data)")
    if cache.exists() and not cache.is_dir():
        raise InputError(f"cache {cache} is a file, not a folder")
    cache.mkdir(parents=True, exist_ok=True)
    paths = []
    for spec in (*campaign.train, campaign.val):
        p = cache / spec.file
        if p.exists():
            want = run_attrs(spec.n, spec.energy, angle=spec.angle, window=spec.window, seed=spec.seed,
                             tuning=spec.tuning)
            with ShowerFile(p) as f:
                have, rows = f.attrs, len(f)
            differ = [k for k, v in want.items() if str(have.get(k)) != str(v)]
            if rows != spec.n or differ:
                what = f"{rows} showers" if rows != spec.n else ", ".join(
                    f"{k} {have.get(k)!s:.40}" for k in differ)
                raise DataFormatError(f"{p}: not what the campaign's command makes ({what}); remove it to have it "
                                      "simulated again")
        else:
            simulate_to_file(p, spec.n, spec.energy, seed=spec.seed, tuning=spec.tuning, angle=spec.angle,
                             window=spec.window, progress=progress)
        paths.append(p)
    return paths[:-1], paths[-1]


def run_campaign(folder: str | os.PathLike[str], *, cache: str | os.PathLike[str], run_minutes: float,
                 overrides: dict[str, Any] | None = None, progress: bool = True) -> TrainResult:
    """Run the next piece of a campaign: start it, or resume it from its checkpoint, for ``run_minutes``.

    ``overrides`` may set the per-run settings (threads, device, precision, ...). On a resume, the loss settings
    and checkpoint selection of campaign.json (``RETUNABLE``: loss weights, distribution, sampling-fraction,
    cell-count, resolution, centroid, occupancy, profile and physics weights, readout threshold, R1, learning rate,
    angle gain, select) replace the checkpoint's from this run on, so a campaign can follow a curriculum; any other
    change is refused.
    """
    if not run_minutes > 0:
        raise InputError(f"run minutes must be positive, got {run_minutes}")
    campaign = load_campaign(folder)
    cfg = TrainConfig.from_dict({**campaign.config, **(overrides or {}), "run_minutes": run_minutes})
    resume = (campaign.folder / "checkpoint-last.pt").exists()
    if resume:
        _check_unchanged(campaign, cfg)
    data, val = ensure_data(campaign, Path(cache), progress=progress)
    try:
        return train(cfg, [str(p) for p in data], campaign.folder, val=val, resume=resume, progress=progress,
                     retune=RETUNABLE)
    finally:  # also after Ctrl-C/SIGTERM, which end the run with a checkpoint
        if (campaign.folder / "metrics.csv").exists():
            try:
                plot_campaign(campaign.folder)
            except Exception as e:  # noqa: BLE001 - a plot must not hide how the run ended
                print(f"caloquant: warning: could not draw the learning curve ({e})")


def _check_unchanged(campaign: Campaign, cfg: TrainConfig) -> None:
    """Refuse, in one line, a campaign.json whose settings differ from its checkpoint's in anything but the loss
    settings a campaign may retune between runs (``RETUNABLE``) and the per-run ones (``RUNTIME``)."""
    ckpt = safe_load(campaign.folder / "checkpoint-last.pt")
    stored = TrainConfig.from_dict(ckpt["config"]).to_dict() if isinstance(ckpt, dict) and "config" in ckpt else {}
    now = cfg.to_dict()
    fixed = [k for k in now if k not in (*RUNTIME, *RETUNABLE, "extra") and k in stored and now[k] != stored[k]]
    if fixed:
        k = fixed[0]
        raise InputError(f"{campaign.folder / CAMPAIGN_FILE}: {k} is {now[k]!r}, but the campaign's checkpoint was "
                         f"trained with {stored[k]!r}; between runs a campaign may change only "
                         f"{', '.join(RETUNABLE)} (start a new campaign folder for the rest)")


def plot_campaign(folder: str | os.PathLike[str], out: str | os.PathLike[str] | None = None) -> Path:
    """Draw the learning curve (held-out metrics against showers seen, run boundaries marked)."""
    return plot_learning_curve(Path(folder), Path(out) if out else Path(folder) / LEARNING_CURVE)
