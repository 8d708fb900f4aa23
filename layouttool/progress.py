"""The progress protocol operations report through (the CLI decides how to show it).

Operations call ``progress.task(label, total)`` for each unit of work (a layer, a blob), then
``advance(n)`` as bytes go by and ``done()`` at the end. Tasks may run in several threads at
once; implementations must be thread-safe and cheap.
"""

from __future__ import annotations

from typing import Protocol


class Task(Protocol):
    """One unit of work in progress."""

    def advance(self, n: int) -> None:
        """``n`` more bytes are done."""

    def done(self) -> None:
        """The unit is finished."""


class Progress(Protocol):
    """Receives progress from a long operation."""

    def task(self, label: str, total: int | None) -> Task:
        """A new unit of work begins; ``total`` bytes when known."""
        ...

    def note(self, message: str) -> None:
        """A detail worth showing with ``-v``, or a warning."""


class _NullTask:
    def advance(self, n: int) -> None:
        pass

    def done(self) -> None:
        pass


class NullProgress:
    """Progress that shows nothing (the default of every operation)."""

    def task(self, label: str, total: int | None) -> Task:
        """A task that ignores everything."""
        return _NullTask()

    def note(self, message: str) -> None:
        """Ignore."""


NULL_PROGRESS: Progress = NullProgress()
