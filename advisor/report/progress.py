"""Progress on the terminal: a live bar with elapsed and remaining time on a terminal, and one line
per finished step (with time left) when the output is a log."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator

from rich.console import Console
from rich.progress import (BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn, TimeElapsedColumn,
                           TimeRemainingColumn)

from advisor.progress import Progress, Task


class _BarTask(Task):
    def __init__(self, bar: RichProgress, task_id) -> None:
        self.bar, self.task_id = bar, task_id

    def describe(self, text: str) -> None:
        self.bar.update(self.task_id, description=text)

    def advance(self, summary: str = "") -> None:
        self.bar.advance(self.task_id)


class _LineTask(Task):
    def __init__(self, console: Console, total: int) -> None:
        self.console, self.total, self.done, self.started = console, total, 0, time.monotonic()

    def advance(self, summary: str = "") -> None:
        self.done += 1
        elapsed = time.monotonic() - self.started
        left = ""
        if 0 < self.done < self.total:
            left = f", about {elapsed / self.done * (self.total - self.done) / 60:.1f} min left"
        self.console.print(f"{summary} ({self.done}/{self.total} done{left})", soft_wrap=True, highlight=False,
                           markup=False)


class ConsoleProgress(Progress):
    def __init__(self, console: Console) -> None:
        self.console = console

    @contextlib.contextmanager
    def task(self, description: str, total: int) -> Iterator[Task]:
        if not self.console.is_terminal:
            yield _LineTask(self.console, total)
            return
        columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("elapsed"),
                   TimeElapsedColumn(), TextColumn("left"), TimeRemainingColumn()]
        with RichProgress(*columns, console=self.console, transient=False) as bar:
            yield _BarTask(bar, bar.add_task(description, total=total))


class ConsoleHandler(logging.Handler):
    """advisor's log records as plain lines on the console (warnings in red)."""

    def __init__(self, console: Console) -> None:
        super().__init__(logging.INFO)
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        style = "red" if record.levelno >= logging.WARNING else None
        self.console.print(text, style=style, soft_wrap=True, highlight=False, markup=False)
