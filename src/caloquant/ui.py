"""Terminal presentation shared by the stages: progress bars with a rate column and one-line warnings."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator

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
