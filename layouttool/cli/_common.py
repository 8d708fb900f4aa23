"""Shared pieces of the commands: --json rendering, options, and the terminal progress display."""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import click

from layouttool.model import Platform

F = TypeVar("F", bound=Callable[..., Any])


class Result(Protocol):
    """Every ops result can render itself as JSON."""

    def to_json(self) -> dict[str, Any]: ...


def json_option(f: F) -> F:
    """``--json``: one JSON document on stdout instead of text."""
    return click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")(f)


def platform_option(f: F) -> F:
    """``--platform OS/ARCH[/VARIANT]``."""
    return click.option(
        "--platform",
        metavar="OS/ARCH[/VARIANT]",
        callback=lambda _c, _p, v: Platform.parse(v) if v else None,
        help="Pick this platform from a multi-platform index (default: this host's).",
    )(f)


def emit(result: Result, as_json: bool, text: Callable[[], str | None]) -> None:
    """Print ``result``: its JSON form, or the human text."""
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2, sort_keys=False))
        return
    out = text()
    if out:
        click.echo(out)


def human_size(n: int | None) -> str:
    """``1536`` -> ``1.5 KiB``."""
    if n is None:
        return "-"
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError  # pragma: no cover


def table(rows: list[list[str]], header: list[str]) -> str:
    """A plain left-aligned text table."""
    allrows = [header, *rows]
    widths = [max(len(r[i]) for r in allrows) for i in range(len(header))]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in allrows
    ]
    return "\n".join(lines)


def settings() -> dict[str, Any]:
    """The global flags (-q, -v, --debug) of the current invocation."""
    ctx = click.get_current_context()
    root = ctx.find_root()
    obj = root.obj if isinstance(root.obj, dict) else {}
    return obj


class _TermTask:
    def __init__(self, owner: TermProgress, label: str, total: int | None) -> None:
        self.owner = owner
        self.label = label
        self.total = total
        self.count = 0
        self.start = time.monotonic()

    def advance(self, n: int) -> None:
        self.count += n
        self.owner.redraw()

    def done(self) -> None:
        self.owner.finish(self)


class TermProgress:
    """One status line on stderr, redrawn at most 10 times a second (TTY only)."""

    def __init__(self, enabled: bool, verbose: bool = False) -> None:
        self.enabled = enabled
        self.verbose = verbose
        self._lock = threading.Lock()
        self._tasks: list[_TermTask] = []
        self._last = 0.0
        self._width = 0

    def task(self, label: str, total: int | None) -> _TermTask:
        """Start a unit of work."""
        t = _TermTask(self, label, total)
        with self._lock:
            self._tasks.append(t)
        self.redraw(force=True)
        return t

    def note(self, message: str) -> None:
        """Print a detail line (with -v)."""
        if self.verbose:
            self._clear()
            click.echo(message, err=True)

    def finish(self, task: _TermTask) -> None:
        """A task is done."""
        with self._lock:
            if task in self._tasks:
                self._tasks.remove(task)
        if self.verbose:
            self._clear()
            dt = max(time.monotonic() - task.start, 1e-6)
            click.echo(
                f"{task.label}: {human_size(task.count)} in {dt:.1f}s "
                f"({human_size(int(task.count / dt))}/s)",
                err=True,
            )
        self.redraw(force=True)

    def _clear(self) -> None:
        if self.enabled and self._width:
            sys.stderr.write("\r" + " " * self._width + "\r")
            sys.stderr.flush()
            self._width = 0

    def redraw(self, force: bool = False) -> None:
        """Redraw the status line if enough time has passed."""
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last < 0.1:
            return
        with self._lock:
            self._last = now
            parts = []
            for t in self._tasks[:3]:
                dt = max(now - t.start, 1e-6)
                rate = t.count / dt
                s = f"{t.label} {human_size(t.count)}"
                if t.total:
                    pct = min(100, 100 * t.count // max(t.total, 1))
                    eta = (t.total - t.count) / rate if rate > 0 else 0
                    s += f"/{human_size(t.total)} {pct}% ETA {eta:.0f}s"
                s += f" {human_size(int(rate))}/s"
                parts.append(s)
            line = " | ".join(parts)[:200]
            pad = max(self._width - len(line), 0)
            sys.stderr.write("\r" + line + " " * pad)
            sys.stderr.flush()
            self._width = len(line)

    def close(self) -> None:
        """Clear the status line."""
        self._clear()


def progress() -> TermProgress:
    """Progress for this invocation: on only when stderr is a TTY and -q was not given."""
    s = settings()
    enabled = not s.get("quiet") and sys.stderr.isatty()
    return TermProgress(enabled, verbose=bool(s.get("verbose")) and not s.get("quiet"))


def summary(message: str) -> None:
    """A final one-line summary on stderr (not with -q)."""
    if not settings().get("quiet"):
        click.echo(message, err=True)
