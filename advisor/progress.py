"""How long work reports its progress without printing: domain code calls a Progress, and the CLI
passes one that draws (advisor.report.progress); the default draws nothing."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


class Task:
    """One run of `total` steps."""

    def describe(self, text: str) -> None:
        """What the current step is (for a live bar)."""

    def advance(self, summary: str = "") -> None:
        """One step done; `summary` says what it gave (for a log, one line a step)."""


class Progress:
    """Silent: what library calls get unless a caller wants to see progress."""

    @contextlib.contextmanager
    def task(self, description: str, total: int) -> Iterator[Task]:
        yield Task()


SILENT = Progress()
