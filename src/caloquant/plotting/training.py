"""Training curves (losses and the physics metric) from a run directory's CSV logs."""

from __future__ import annotations

import csv
import math
from pathlib import Path

from caloquant._atomic import atomic_path
from caloquant._optional import require


def _number(v: str | None) -> float:
    try:
        return float(v) if v not in ("", None) else float("nan")
    except ValueError:  # a text column (date, CPU name) of runs.csv
        return float("nan")


def _read(path: Path) -> dict[str, list[float]]:
    cols: dict[str, list[float]] = {}
    if not path.exists():
        return cols
    for row in csv.DictReader(path.open()):
        for k, v in row.items():
            cols.setdefault(k, []).append(_number(v))
    return cols


def plot_training(run_dir: str | Path) -> Path:
    """Write ``curves.png`` (losses vs step; moment and profile metrics and sampling-fraction error vs step)."""
    require("matplotlib").use("Agg")
    plt = require("matplotlib.pyplot")
    run = Path(run_dir)
    losses, metrics = _read(run / "losses.csv"), _read(run / "metrics.csv")
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    for key in ("d_real", "d_fake", "g_adv", "g_phys"):
        if key in losses:
            ax1.plot(losses["step"], losses[key], label=key)
    ax1.set_xlabel("step")
    ax1.set_ylabel("loss")
    ax1.set_yscale("log")
    if ax1.lines:  # an empty legend warns (a run stopped before its first logged step)
        ax1.legend()
    if metrics:
        ax2.plot(metrics["step"], metrics["moments_metric"], "o-", label="3DGAN moment metric")
        ax2.plot(metrics["step"], metrics["sampling_fraction_mre"], "s-", label="sampling-fraction MRE")
        if "profiles_metric" in metrics:  # logs older than the column hold NaN there
            ax2.plot(metrics["step"], metrics["profiles_metric"], "^-", label="3DGAN profile metric")
        ax2.axhline(0.06, color="grey", ls="--", lw=1, label="goal 0.06")
        ax2.set_yscale("log")
        ax2.legend()
    ax2.set_xlabel("step")
    ax2.set_ylabel("held-out metric")
    fig.tight_layout()
    out = run / "curves.png"
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    return out


def plot_learning_curve(run_dir: Path, out: Path) -> Path:
    """Held-out metrics against showers seen, across all runs of a (resumed) training; dotted lines mark where
    each run (runs.csv) ended."""
    require("matplotlib").use("Agg")
    plt = require("matplotlib.pyplot")
    metrics, runs = _read(run_dir / "metrics.csv"), _read(run_dir / "runs.csv")
    panels: tuple[tuple[str, str, float | None], ...] = (
              ("moments_metric", "3DGAN moment metric", 0.04), ("profiles_metric", "3DGAN profile metric", None),
              ("fpd", "FPD (held-out size)", None), ("cells_ratio", "cells hit, generated / MC (worst bin)", 1.0),
              ("resolution_ratio", "resolution, generated / MC (worst bin)", 1.0))
    if any(math.isfinite(v) for v in metrics.get("tilt_error_deg", [])):  # tilted showers (angle51)
        panels += (("tilt_error_deg", "tilt error (degrees)", 1.0),)
    fig, axes = plt.subplots(2, 3, figsize=(15, 7))
    for ax, (key, label, goal) in zip(axes.flat, panels):
        if key in metrics and "showers" in metrics:
            ax.plot(metrics["showers"], metrics[key], "o-", ms=3)
        if goal is not None:
            ax.axhline(goal, color="grey", ls="--", lw=1)
        for end in runs.get("showers", []):
            ax.axvline(end, color="black", ls=":", lw=0.8)
        ax.set_xlabel("showers seen")
        ax.set_ylabel(label)
        if key in ("moments_metric", "fpd"):
            ax.set_yscale("log")
    for ax in axes.flat[len(panels):]:
        ax.set_visible(False)
    fig.suptitle(f"{run_dir.name}: {len(runs.get('run', []))} runs")
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
    return out
