"""What the user sees: tables on stdout, progress and messages on stderr (rich)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TaskID, TextColumn, TimeElapsedColumn

# Piped output (files, CI logs, the README) gets a fixed, wide-enough width instead of 80.
out = Console(highlight=False, width=None if sys.stdout.isatty() else 132)
err = Console(stderr=True, highlight=False, width=None if sys.stderr.isatty() else 132)

Report = Callable[[str, int, int], None]  # (phase, done, total)


@contextmanager
def progress(description: str) -> Iterator[Report]:
    """A `report(phase, done, total)` callback drawing one bar per phase on stderr."""
    with Progress(
        TextColumn(f"{description} [bold]{{task.description}}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
    ) as bars:
        tasks: dict[str, TaskID] = {}

        def report(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = bars.add_task(phase, total=total)
            bars.update(tasks[phase], completed=done, total=total)

        yield report


def mb(n: float | None) -> str:
    return "-" if n is None else f"{n / 2**20:,.1f}"
