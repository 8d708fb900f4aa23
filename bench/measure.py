"""Run one command and measure it: wall time, its own peak RSS, exit status, stderr tail.

``resource.getrusage(RUSAGE_CHILDREN)`` reports the maximum over *all* children waited for so
far, so a small command run after a big one would inherit the big one's peak. Each command is
started with ``posix_spawnp`` and reaped with ``os.wait4``, whose rusage covers that child alone
(and its own waited-for children, e.g. ``tar`` under ``sh``), from a small helper process
(``spawn.py``) so that the benchmark's own memory does not leak into the child's figure.
"""

from __future__ import annotations

import datetime
import os
import platform
import re
import stat
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Measured:
    """One run of one command."""

    argv: list[str]
    wall_s: float
    maxrss_kib: int
    user_s: float
    sys_s: float
    exit: int
    timed_out: bool
    stderr_tail: str

    @property
    def ok(self) -> bool:
        """The command exited 0 in time."""
        return self.exit == 0 and not self.timed_out

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict."""
        return asdict(self)


def _tail(path: Path, lines: int = 3, limit: int = 400) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 4096))
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.strip().splitlines()[-lines:])[-limit:]


SPAWN = Path(__file__).resolve().with_name("spawn.py")


def measure(argv: list[str], log_base: Path, *, timeout: float = 1800.0) -> Measured:
    """Run ``argv`` (stdin /dev/null, stdout/stderr to ``log_base``.out/.err) and measure it.

    The command is started by the small ``spawn.py`` helper, which times it and reads its own
    peak RSS with ``os.wait4`` (see there why not from this process).
    """
    # appended, not with_suffix(): the run number after the last dot must stay in the name
    out, err = Path(f"{log_base}.out"), Path(f"{log_base}.err")
    helper = [sys.executable, "-S", "-I", str(SPAWN), str(timeout), str(out), str(err), "--"]
    proc = subprocess.run([*helper, *argv], capture_output=True, text=True,
                          timeout=timeout + 60)
    fields = proc.stdout.split()
    if proc.returncode != 0 or len(fields) != 6:
        # the helper itself failed (e.g. the command is not executable): report as exit 127
        return Measured(argv, 0.0, 0, 0.0, 0.0, 127, False,
                        (proc.stderr.strip().splitlines() or ["spawn failed"])[-1])
    wall, rss, user, system, code, timed_out = fields
    return Measured(
        argv=argv,
        wall_s=float(wall),
        maxrss_kib=int(rss),  # KiB on Linux
        user_s=float(user),
        sys_s=float(system),
        exit=int(code),
        timed_out=timed_out != "0",
        stderr_tail=_tail(err),
    )


def tree_stats(root: Path) -> tuple[int, int]:
    """``(bytes, entries)`` under ``root``: apparent sizes of regular files (hardlinked inodes
    counted once) and the number of entries of any type (symlinks not followed). A file
    (an output tarball) is ``(its size, 1)``."""
    total = 0
    entries = 0
    seen: set[tuple[int, int]] = set()
    if not root.exists():
        return 0, 0
    if root.is_file():
        return root.stat().st_size, 1
    stack = [str(root)]
    while stack:
        top = stack.pop()
        with os.scandir(top) as it:
            for de in it:
                entries += 1
                st = de.stat(follow_symlinks=False)
                if stat.S_ISDIR(st.st_mode):
                    stack.append(de.path)
                elif stat.S_ISREG(st.st_mode):
                    key = (st.st_dev, st.st_ino)
                    if st.st_nlink > 1:
                        if key in seen:
                            continue
                        seen.add(key)
                    total += st.st_size
    return total, entries


def warm(paths: list[Path]) -> None:
    """Read files once so that the first timed run does not pay for a cold page cache."""
    buf = bytearray(1 << 20)
    for p in paths:
        files = [p] if p.is_file() else [q for q in p.rglob("*") if q.is_file()]
        for f in files:
            with open(f, "rb", buffering=0) as fh:
                while fh.readinto(buf):
                    pass


def _first_line(argv: list[str]) -> str:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    text = (proc.stdout or proc.stderr).strip()
    return text.splitlines()[0] if text else "unknown"


def tool_version(argv: list[str]) -> str:
    """The version a tool prints for its version flag (``skopeo version 1.9.3`` -> ``1.9.3``)."""
    return re.sub(r"^\S+,? version ", "", _first_line(argv))


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _mem_total_mib() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    except OSError:
        pass
    return 0


def fs_type(path: Path) -> str:
    """The filesystem type holding ``path`` (longest mount point prefix in /proc/mounts)."""
    best, kind = "", "unknown"
    target = str(path.resolve())
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return kind
    for line in mounts:
        parts = line.split()
        if len(parts) < 3:
            continue
        mnt = parts[1]
        inside = target == mnt or target.startswith(mnt.rstrip("/") + "/")
        if inside and len(mnt) >= len(best):
            best, kind = mnt, parts[2]
    return kind


def machine_info() -> dict[str, Any]:
    """The machine the numbers were taken on."""
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "nproc": os.cpu_count(),
        "cpu": _cpu_model(),
        "mem_mib": _mem_total_mib(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "euid": os.geteuid(),
        # the machine may be shared: a high load average makes every wall time longer
        "loadavg": list(os.getloadavg()),
    }
