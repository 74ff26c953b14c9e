"""Terminal presentation shared by the CLI stages: progress bars with a rate column and file summaries."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator

import numpy as np
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

console = Console(stderr=True)


class RateColumn(ProgressColumn):
    """Items per second, e.g. '1,234 showers/s'."""

    def __init__(self, unit: str) -> None:
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        return Text(f"{speed:,.0f} {self.unit}/s" if speed else f"- {self.unit}/s", style="cyan")


def warn(message: str) -> None:
    """A one-line warning on stderr."""
    print(f"caloquant: warning: {message}", file=sys.stderr)


@contextlib.contextmanager
def progress_bar(total: int, description: str, *, unit: str = "showers", enabled: bool = True
                 ) -> Iterator[Callable[[int], None]]:
    """Yield an ``advance(k)`` callback drawing a bar with a rate column; silent when disabled or not a TTY."""
    show = enabled and (sys.stderr.isatty() or os.environ.get("CALOQUANT_PROGRESS") == "1")
    if not show:
        yield lambda k: None
        return
    with Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), RateColumn(unit),
        TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False,
    ) as prog:
        task = prog.add_task(description, total=total)
        yield lambda k: prog.advance(task, k)


def print_summary(path: str | os.PathLike[str], max_showers: int = 20_000) -> None:
    """A short physics summary of a shower file or shard set: size, energies, visible fraction, barycentres."""
    from caloquant.data import open_showers

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
    t.add_row("primary energy", f"{s.energy.min():.1f} - {s.energy.max():.1f} GeV (mean {s.energy.mean():.1f})")
    t.add_row("incidence angle", f"{np.rad2deg(s.theta.min()):.1f} - {np.rad2deg(s.theta.max()):.1f} deg")
    t.add_row("visible / primary", f"{np.mean(vis / s.energy):.5f} +- {np.std(vis / s.energy):.5f}")
    t.add_row("longitudinal barycentre", f"layer {z.mean():.2f} +- {z.std():.2f}")
    t.add_row("non-empty cells", f"{np.mean(s.ecal > 0) * 100:.2f} %")
    if n > len(s):
        t.add_row("(statistics from)", f"first {len(s):,} showers")
    Console().print(t)
