"""Shared pieces of the commands: --json rendering, options, and the terminal progress display."""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol, TextIO, TypeVar

import click

from layouttool.model import Platform

if TYPE_CHECKING:
    from layouttool.reader import Finding

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
    """One unit of work on the status line (see :class:`TermProgress`)."""

    __slots__ = ("count", "label", "owner", "start", "total")

    def __init__(self, owner: TermProgress, label: str, total: int | None) -> None:
        self.owner = owner
        self.label = label
        self.total = total
        self.count = 0
        self.start = time.monotonic()

    def advance(self, n: int) -> None:
        """``n`` more bytes are done (any thread)."""
        with self.owner._lock:
            self.count += n
        self.owner.redraw()

    def done(self) -> None:
        """The unit is finished."""
        self.owner.finish(self)


#: at most this many tasks on the status line; the rest are counted ("+3 more")
_SHOWN = 2
#: seconds between redraws (the first draw is immediate)
_INTERVAL = 0.1
#: erase from the cursor to the end of the line (ANSI EL), after a carriage return
_ERASE = "\r\x1b[K"


def _columns(stream: TextIO) -> int:
    """Width of the terminal ``stream`` is on: its window size, else $COLUMNS, else 80."""
    try:
        cols = os.get_terminal_size(stream.fileno()).columns
    except (OSError, ValueError, AttributeError):
        cols = 0
    if cols <= 0:
        try:
            cols = int(os.environ.get("COLUMNS", "0"))
        except ValueError:
            cols = 0
    return cols if cols > 0 else 80


class TermProgress:
    """Progress on a terminal: one status line on stderr with each running task's bytes,
    percentage, rate and ETA, redrawn in place at most 10 times a second.

    ``enabled`` turns the status line on (the CLI does so only when stderr is a TTY and ``-q``
    was not given). Independently of it, ``verbose`` prints one detail line per finished task
    (``layer 3f5a…: 4.0 MiB in 0.3s (13.2 MiB/s)``) and every note, and ``warnings`` prints notes
    that start with ``warning`` (on by default; off with ``-q``). Detail lines first erase the
    status line, so the two never mix. Thread-safe: operations advance tasks from worker threads.
    """

    def __init__(
        self,
        enabled: bool,
        verbose: bool = False,
        *,
        warnings: bool = True,
        stream: TextIO | None = None,
    ) -> None:
        self.enabled = enabled
        self.verbose = verbose
        self.warnings = warnings
        self._stream = stream if stream is not None else sys.stderr
        self._lock = threading.RLock()
        self._tasks: list[_TermTask] = []
        self._finished = 0
        self._last = 0.0
        self._drawn = False
        self._closed = False

    def task(self, label: str, total: int | None) -> _TermTask:
        """Start a unit of work (the very first one is drawn at once)."""
        t = _TermTask(self, label, total)
        with self._lock:
            self._tasks.append(t)
            first = self._last == 0.0
        self.redraw(force=first)
        return t

    def note(self, message: str) -> None:
        """A detail line (shown with -v), or a warning (shown unless -q, as
        ``layouttool: warning: ...``)."""
        is_warning = message.startswith("warning")
        if self.verbose or (self.warnings and is_warning):
            self._line(f"layouttool: {message}" if is_warning else message)

    def finish(self, task: _TermTask) -> None:
        """A task is done: with -v print its detail line; erase the status when idle."""
        with self._lock:
            if task in self._tasks:
                self._tasks.remove(task)
                self._finished += 1
            idle = not self._tasks
        if self.verbose:
            dt = max(time.monotonic() - task.start, 1e-6)
            self._line(
                f"{task.label}: {human_size(task.count)} in {dt:.1f}s "
                f"({human_size(int(task.count / dt))}/s)"
            )
        if idle:
            with self._lock:
                self._erase()
        else:
            self.redraw()

    def _line(self, message: str) -> None:
        with self._lock:
            self._erase()
            self._write(message + "\n")
        self.redraw(force=True)

    def _write(self, text: str) -> None:
        try:
            self._stream.write(text)
            self._stream.flush()
        except (OSError, ValueError):
            # the terminal went away (closed, hung up): progress is not worth failing over
            self.enabled = False

    def _erase(self) -> None:
        # caller holds the lock
        if self._drawn:
            self._write(_ERASE)
            self._drawn = False

    def status(self, now: float | None = None) -> str:
        """The status line as it would be drawn now (not cut to the terminal's width)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            tasks = list(self._tasks)
        parts = []
        for t in tasks[:_SHOWN]:
            dt = max(now - t.start, 1e-6)
            rate = t.count / dt
            s = f"{t.label} {human_size(t.count)}"
            if t.total:
                pct = min(100, 100 * t.count // t.total)
                s += f"/{human_size(t.total)} {pct}%"
            s += f" {human_size(int(rate))}/s"
            if t.total and rate > 0 and dt >= 0.5 and t.count < t.total:
                s += f" ETA {_duration((t.total - t.count) / rate)}"
            parts.append(s)
        line = " | ".join(parts)
        if len(tasks) > _SHOWN:
            line += f" | +{len(tasks) - _SHOWN} more"
        return line

    def redraw(self, force: bool = False) -> None:
        """Redraw the status line if it is on and enough time has passed (or ``force``)."""
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last < _INTERVAL:
            return
        with self._lock:
            if self._closed:  # checked under the lock: close() may run in another thread
                return
            self._last = now
            line = self.status(now)
            if not line:
                self._erase()
                return
            # one column short of the width: a full line would wrap (and never be erased) on
            # terminals that wrap eagerly
            width = _columns(self._stream) - 1
            if len(line) > width:
                line = line[: max(width - 1, 0)] + "…"
            self._write(_ERASE + line)
            self._drawn = True

    def __enter__(self) -> TermProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Erase the status line; later reports (a straggling thread) draw nothing."""
        with self._lock:
            self._erase()
            self._closed = True


def _duration(seconds: float) -> str:
    """``75`` -> ``1m15s``."""
    s = int(seconds + 0.5)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def progress(*, debug_is_verbose: bool = False) -> TermProgress:
    """Progress for this invocation: the status line only when stderr is a TTY (not a dumb one)
    and -q was not given; -v detail lines and warnings whatever stderr is (``debug_is_verbose``:
    --debug shows the detail lines too)."""
    s = settings()
    quiet = bool(s.get("quiet"))
    term = os.environ.get("TERM", "") != "dumb"
    enabled = not quiet and term and sys.stderr.isatty()
    verbose = bool(s.get("verbose") or (debug_is_verbose and s.get("debug")))
    return TermProgress(enabled, verbose=verbose and not quiet, warnings=not quiet)


def warn(findings: Iterable[Finding]) -> None:
    """Print each warning the reader found on stderr, once, one line each (not with -q):
    ``layouttool: warning: <digest>: <message> [<code>]``."""
    if settings().get("quiet"):
        return
    for f in dict.fromkeys(findings):
        click.echo(f"layouttool: warning: {f.line()}", err=True)


def summary(message: str) -> None:
    """A final one-line summary on stderr (not with -q)."""
    if not settings().get("quiet"):
        click.echo(message, err=True)


#: the --compression choices of commands that write layers
LAYER_COMPRESSIONS = ["gzip", "zstd", "none", "zstd:chunked", "estargz"]


def lazy_options(f: F) -> F:
    """``--chunk-size`` and ``--estargz-prioritize`` (eStargz's options)."""
    f = click.option(
        "--estargz-prioritize",
        "prioritize",
        metavar="PATH",
        multiple=True,
        help="estargz: put this file first, before a .prefetch.landmark (repeatable; default: "
        "a .no.prefetch.landmark leads, as nerdctl writes). Spools the layer to a temp file.",
    )(f)
    return click.option(
        "--chunk-size",
        type=click.IntRange(min=1),
        metavar="BYTES",
        help="estargz: largest piece of a file in one gzip member (default 4 MiB).",
    )(f)
