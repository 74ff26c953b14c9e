"""A short physics summary of a shower file or shard set, printed as a table in the terminal."""

from __future__ import annotations

import json
import os

import numpy as np
from rich.console import Console
from rich.table import Table

from caloquant.data.shards import open_showers


def print_summary(path: str | os.PathLike[str], max_showers: int = 20_000) -> None:
    """A short physics summary of a shower file or shard set: size, energies, visible fraction, barycentres."""
    with open_showers(path) as f:
        s = f.read(0, max_showers)
        n, layout, window, attrs = len(f), f.layout, f.window, f.attrs
    vis = s.ecal.sum(axis=(1, 2, 3), dtype=np.float64)
    layer = s.ecal.sum(axis=(1, 2), dtype=np.float64)
    z = (layer * np.arange(window.nz)).sum(1) / np.maximum(vis, 1e-30)
    t = Table(title=f"{path}", show_header=False)
    t.add_row("showers", f"{n:,} ({layout} layout, window {window})")
    if "generator" in attrs:
        t.add_row("generator", str(attrs["generator"]))
    if "geant4_data" in attrs:
        t.add_row("Geant4 data", str(attrs["geant4_data"]))
    if attrs.get("gflash_tuning", "none") != "none":
        t.add_row("GFlash tuning", _tuning_line(str(attrs["gflash_tuning"])))
    t.add_row("primary energy", f"{s.energy.min():.1f} - {s.energy.max():.1f} GeV (mean {s.energy.mean():.1f})")
    t.add_row("incidence angle", f"{np.rad2deg(s.theta.min()):.1f} - {np.rad2deg(s.theta.max()):.1f} deg")
    t.add_row("visible / primary", f"{np.mean(vis / s.energy):.5f} +- {np.std(vis / s.energy):.5f}")
    t.add_row("longitudinal barycentre", f"layer {z.mean():.2f} +- {z.std():.2f}")
    t.add_row("non-empty cells", f"{np.mean(s.ecal > 0) * 100:.2f} %")
    if n > len(s):
        t.add_row("(statistics from)", f"first {len(s):,} showers")
    Console().print(t)


def _tuning_line(recorded: str) -> str:
    """What a recorded GFlash tuning (JSON) was fitted to, or the text itself when it cannot be read."""
    try:
        fitted_to = json.loads(recorded).get("fitted_to", "")
    except (ValueError, AttributeError):
        return recorded[:200]
    return f"fitted to {fitted_to}" if fitted_to else "custom (see the file attribute gflash_tuning)"
