"""Benchmark results: medians, ratios, targets, and their rendering as a table and JSON."""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.measure import Measured

MiB = 1 << 20


@dataclass(frozen=True)
class Target:
    """What a case must achieve (from issue #8)."""

    min_ratio: float | None = None  # peer time / our time, against the first peer
    max_size_ratio: float | None = None  # our output size / the first peer's
    max_s: float | None = None  # our median wall time
    max_rss_mib: float = 128.0  # our peak RSS, every command
    #: our time / the time of the side named ``floor`` (a peer or floor of the case)
    max_over_floor: float | None = None
    floor: str | None = None

    def describe(self) -> str:
        """A short human form, e.g. ``>=2.5x, size<=+3%, RSS<128M``."""
        parts = []
        if self.min_ratio is not None:
            parts.append(f">={self.min_ratio:g}x")
        if self.max_size_ratio is not None:
            parts.append(f"size<=+{(self.max_size_ratio - 1) * 100:.0f}%")
        if self.max_s is not None:
            parts.append(f"<{self.max_s * 1000:.0f}ms")
        if self.max_over_floor is not None:
            parts.append(f"<={self.max_over_floor:g}x {self.floor}")
        parts.append(f"RSS<{self.max_rss_mib:.0f}M")
        return ", ".join(parts)


@dataclass
class Side:
    """One tool's runs in a case: ours, a peer, or the floor."""

    role: str  # "ours", "peer" or "floor"
    tool: str
    missing: str | None = None  # why it was not run ("not available", "skopeo not installed")
    runs: list[Measured] = field(default_factory=list)
    out_bytes: list[int] = field(default_factory=list)
    out_entries: list[int] = field(default_factory=list)

    @property
    def failed(self) -> Measured | None:
        """The first failed run, if any."""
        return next((r for r in self.runs if not r.ok), None)

    @property
    def ok(self) -> bool:
        """Ran at least once, and every run succeeded."""
        return self.missing is None and bool(self.runs) and self.failed is None

    @property
    def median_s(self) -> float | None:
        """Median wall time of the successful runs."""
        ok = [r.wall_s for r in self.runs if r.ok]
        return statistics.median(ok) if ok else None

    @property
    def rss_mib(self) -> float | None:
        """Highest peak RSS over the runs."""
        return max(r.maxrss_kib for r in self.runs) / 1024 if self.runs else None

    @property
    def size(self) -> int | None:
        """Output size of the last run (runs are deterministic, so any run would do)."""
        return self.out_bytes[-1] if self.out_bytes else None

    def status(self) -> str | None:
        """Why there is no time: missing, failed, or None when there is one."""
        if self.missing:
            return self.missing
        bad = self.failed
        if bad is not None:
            return "timed out" if bad.timed_out else f"FAILED (exit {bad.exit})"
        if not self.runs:
            return "not run"
        return None

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict with raw runs and summaries."""
        return {
            "role": self.role,
            "tool": self.tool,
            "missing": self.missing,
            "status": self.status() or "ok",
            "median_s": self.median_s,
            "peak_rss_mib": self.rss_mib,
            "out_bytes": self.size,
            "out_entries": self.out_entries[-1] if self.out_entries else None,
            "runs": [
                r.to_json() | {"out_bytes": b, "out_entries": e}
                for r, b, e in zip(self.runs, _pad(self.out_bytes, len(self.runs)),
                                   _pad(self.out_entries, len(self.runs)), strict=True)
            ],
        }


def _pad(values: list[int], n: int) -> list[int | None]:
    out: list[int | None] = list(values[:n])
    return out + [None] * (n - len(out))


@dataclass
class Case:
    """One benchmark row: our command beside its peers on the same input."""

    name: str
    group: str
    input_bytes: int | None
    ours: Side
    peers: list[Side]
    target: Target | None = None
    notes: list[str] = field(default_factory=list)
    #: a row of the goals table (:func:`format_goals`): the issue's cases
    headline: bool = False

    def ratio(self, peer: Side) -> float | None:
        """``peer time / our time`` (above 1: we are faster)."""
        o, p = self.ours.median_s, peer.median_s
        if o is None or p is None or not self.ours.ok or not peer.ok or o <= 0:
            return None
        return p / o

    def over_floor(self) -> float | None:
        """Our time / the time of the target's ``floor`` side (None when either is missing)."""
        name = self.target.floor if self.target else None
        floor = next((p for p in self.peers if p.tool == name), None)
        if floor is None:
            return None
        r = self.ratio(floor)
        return None if r is None or r <= 0 else 1 / r

    def mb_s(self) -> float | None:
        """Our throughput in MB/s (10^6 bytes) of the case's input bytes."""
        o = self.ours.median_s
        if self.input_bytes is None or o is None or not self.ours.ok:
            return None
        return self.input_bytes / o / 1e6

    def verdict(self) -> str:
        """``ok``, ``MISS: ...``, or ``-`` when there is nothing to judge."""
        t = self.target
        if t is None or not self.ours.ok:
            return "-"
        misses: list[str] = []
        rss = self.ours.rss_mib
        if rss is not None and rss >= t.max_rss_mib:
            misses.append(f"RSS {rss:.0f}M")
        peer = self.peers[0] if self.peers else None
        if t.min_ratio is not None and peer is not None:
            r = self.ratio(peer)
            if r is not None and r < t.min_ratio:
                misses.append(f"{r:.2f}x<{t.min_ratio:g}x")
        if t.max_size_ratio is not None and peer is not None:
            os_, ps = self.ours.size, peer.size
            if os_ and ps and peer.ok and os_ > ps * t.max_size_ratio:
                misses.append(f"size +{(os_ / ps - 1) * 100:.1f}%")
        if t.max_s is not None:
            m = self.ours.median_s
            if m is not None and m > t.max_s:
                misses.append(f"{m * 1000:.0f}ms")
        if t.max_over_floor is not None:
            over = self.over_floor()
            if over is not None and over > t.max_over_floor:
                misses.append(f"{over:.2f}x {t.floor}")
        return "ok" if not misses else "MISS " + ", ".join(misses)

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict."""
        return {
            "name": self.name,
            "group": self.group,
            "input_bytes": self.input_bytes,
            "target": self.target.describe() if self.target else None,
            "verdict": self.verdict(),
            "ours_mb_s": self.mb_s(),
            "ratios": {p.tool: self.ratio(p) for p in self.peers},
            "notes": self.notes,
            "sides": [self.ours.to_json()] + [p.to_json() for p in self.peers],
        }


HEADER = [
    "case",
    "peer",
    "ours s",
    "peer s",
    "ratio",
    "ours MB/s",
    "ours RSS MiB",
    "peer RSS MiB",
    "ours size",
    "peer size",
    "target",
]


def _secs(side: Side) -> str:
    status = side.status()
    if status is not None:
        return status
    m = side.median_s
    return f"{m:.3f}" if m is not None and m < 1 else f"{m:.2f}"


def _mib(v: float | None) -> str:
    return "-" if v is None else f"{v:.0f}" if v >= 10 else f"{v:.1f}"


def _size(v: int | None) -> str:
    if v is None:
        return "-"
    return f"{v / MiB:.1f}M" if v >= MiB else f"{v / 1024:.0f}K"


def table_rows(cases: list[Case]) -> list[list[str]]:
    """One row per (case, peer); a case with no peer gets one row."""
    rows = []
    for c in cases:
        mbs = c.mb_s()
        verdict = c.verdict()
        target = f"{c.target.describe()}: {verdict}" if c.target and verdict != "-" else (
            c.target.describe() if c.target else "-")
        for i, p in enumerate(c.peers or [None]):
            ratio = c.ratio(p) if p is not None else None
            rows.append([
                c.name,
                "-" if p is None else p.tool,
                _secs(c.ours),
                "-" if p is None else _secs(p),
                "-" if ratio is None else f"{ratio:.2f}x",
                "-" if mbs is None else f"{mbs:.0f}",
                _mib(c.ours.rss_mib) if c.ours.runs else "-",
                "-" if p is None or not p.runs else _mib(p.rss_mib),
                _size(c.ours.size),
                "-" if p is None else _size(p.size),
                target if i == 0 else "",
            ])
    return rows


def _align(header: list[str], body: list[list[str]]) -> str:
    """An aligned plain-text table."""
    rows = [header, *body]
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = []
    for n, r in enumerate(rows):
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())
        if n == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def format_text(cases: list[Case]) -> str:
    """The results as an aligned plain-text table."""
    return _align(HEADER, table_rows(cases))


GOALS_HEADER = ["case", "vs", "ours s", "theirs s", "ratio", "goal", "ours RSS MiB", "verdict"]


def goal_rows(cases: list[Case]) -> list[list[str]]:
    """The headline cases: one row per peer and floor they are judged against."""
    rows = []
    for c in cases:
        if not c.headline:
            continue
        t = c.target
        for p in c.peers:
            ratio = c.ratio(p)
            if t is not None and p.tool == t.floor:
                goal = f"ours <= {t.max_over_floor:g}x theirs"
                shown = "-" if ratio is None else f"{1 / ratio:.2f}x theirs"
            elif t is not None and t.min_ratio is not None and p is c.peers[0]:
                goal = f">= {t.min_ratio:g}x"
                shown = "-" if ratio is None else f"{ratio:.2f}x"
            else:
                goal = "-"
                shown = "-" if ratio is None else f"{ratio:.2f}x"
            rows.append([c.name, p.tool, _secs(c.ours), _secs(p), shown, goal,
                         _mib(c.ours.rss_mib) if c.ours.runs else "-",
                         c.verdict() if p is c.peers[0] else ""])
    return rows


def format_goals(cases: list[Case]) -> str:
    """The goals table (the issue's cases), or "" when none ran."""
    rows = goal_rows(cases)
    return _align(GOALS_HEADER, rows) if rows else ""


def _load(machine: dict[str, Any]) -> str:
    load = machine.get("loadavg_before") or machine.get("loadavg")
    return f"{load[0]:.1f}" if load else "unknown"


def format_markdown(cases: list[Case], machine: dict[str, Any], tools: dict[str, str],
                    config: dict[str, Any]) -> str:
    """The results as a Markdown table with the date, machine and tool versions above it."""
    out = [
        f"Measured {machine.get('date')} on {machine.get('nproc')} x {machine.get('cpu')}, "
        f"{machine.get('mem_mib')} MiB RAM, Linux {machine.get('kernel')}, "
        f"Python {machine.get('python')}, load average {_load(machine)}; "
        + ", ".join(f"{k} {v}" for k, v in tools.items())
        + f". Image: seed {config.get('seed')}, {config.get('size_mb')} MiB, "
        f"{config.get('runs')} runs each (median), ratio = peer time / our time.",
        "",
        "| " + " | ".join(HEADER) + " |",
        "|" + "|".join("---" for _ in HEADER) + "|",
    ]
    for r in table_rows(cases):
        out.append("| " + " | ".join(cell.replace("|", "/") for cell in r) + " |")
    notes = [f"- {c.name}: {n}" for c in cases for n in c.notes]
    if notes:
        out += ["", *notes]
    goals = goal_rows(cases)
    if goals:
        out += ["", "Goals (the issue's cases, from the same run):", "",
                "| " + " | ".join(GOALS_HEADER) + " |",
                "|" + "|".join("---" for _ in GOALS_HEADER) + "|"]
        out += ["| " + " | ".join(cell.replace("|", "/") for cell in r) + " |" for r in goals]
    return "\n".join(out) + "\n"


def write_results(
    path: Path,
    cases: list[Case],
    *,
    machine: dict[str, Any],
    tools: dict[str, str],
    config: dict[str, Any],
    inputs: dict[str, Any],
) -> dict[str, Any]:
    """Write ``results.json`` (everything, raw runs included) and return the document."""
    doc = {
        "schema": 1,
        "machine": machine,
        "tools": tools,
        "config": config,
        "inputs": inputs,
        "cases": [c.to_json() for c in cases],
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n")
    tmp.rename(path)
    return doc
