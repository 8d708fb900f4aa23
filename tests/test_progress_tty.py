"""Progress on a terminal: shown when stderr is a TTY, never without one, never with ``-q``.

Each long command runs as a real process whose stderr is the slave side of a pseudo-terminal
(``os.openpty()``), so ``isatty()`` is true exactly as in a user's shell; stdout is a pipe. The
image has one 2 MiB layer of incompressible bytes (so gzip/zstd take a measurable moment and
the status line is redrawn) plus a small one.
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import re
import select
import struct
import subprocess
import sys
import tarfile
import termios
import time
from pathlib import Path

import pytest
from conftest import run_cli
from layerbuild import build_layer

from layouttool.cli import COMMANDS
from layouttool.ops.verify import verify_layout

SCRIPT = Path(sys.executable).parent / "layouttool"
#: a status line: "<label> 1.2 MiB/4.0 MiB 30% ETA 1s 5.1 MiB/s"
STATUS = re.compile(r"\d+(\.\d)? (B|KiB|MiB|GiB)/s")
ANSI_OR_CR = re.compile(r"\r|\x1b\[")
COLUMNS = 100
#: a -v detail line: "layer 3f5a0c1d2e4b: 4.0 MiB in 0.3s (13.2 MiB/s)"
DETAIL = re.compile(r"layer [0-9a-f]{12}: \d+(\.\d)? (B|KiB|MiB) in \d+\.\ds \(")


def screen(raw: str, width: int = COLUMNS) -> tuple[list[str], bool]:
    """What a terminal ``width`` columns wide shows after ``raw`` (CR, LF, erase-to-end-of-line
    and auto-wrap), and whether any line wrapped (a wrapped status line is never erased)."""
    lines: list[list[str]] = [[]]
    col = 0
    wrapped = False
    i = 0
    while i < len(raw):
        if raw.startswith("\x1b[K", i):
            del lines[-1][col:]
            i += 3
            continue
        c = raw[i]
        i += 1
        if c == "\r":
            col = 0
        elif c == "\n":
            lines.append([])
            col = 0
        else:
            if col >= width:
                lines.append([])
                col = 0
                wrapped = True
            line = lines[-1]
            line.extend(" " * (col + 1 - len(line)))
            line[col] = c
            col += 1
    return ["".join(ln).rstrip() for ln in lines], wrapped


def make_docker_save(path: Path) -> None:
    """A legacy docker save tarball: one big incompressible layer, one small one, one tag."""
    rnd = hashlib.shake_256(b"layouttool progress test").digest(2 << 20)
    layers = [
        build_layer([{"name": "big.bin", "data": rnd}, {"name": "etc/", "type": "dir"}]),
        build_layer([{"name": "etc/hostname", "data": "tty\n"}]),
    ]
    diff_ids = [f"sha256:{hashlib.sha256(x).hexdigest()}" for x in layers]
    config = json.dumps({
        "architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created_by": "test"}, {"created_by": "test"}],
    }).encode()
    config_name = f"{hashlib.sha256(config).hexdigest()}.json"
    members = {config_name: config}
    names = []
    for i, data in enumerate(layers):
        name = f"{i:064x}/layer.tar"
        members[name] = data
        names.append(name)
    members["manifest.json"] = json.dumps(
        [{"Config": config_name, "RepoTags": ["tty-test:1"], "Layers": names}]).encode()
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 1_600_000_000
            tf.addfile(info, io.BytesIO(data))


def run_in_pty(*args: str | Path, tty: bool = True, timeout: float = 120) -> tuple[int, str, str]:
    """Run ``layouttool ARGS`` with stderr on a pseudo-terminal (or a pipe when not ``tty``);
    return (exit code, stdout, everything written to stderr)."""
    env = dict(os.environ, TERM="xterm")
    env.pop("COLUMNS", None)
    argv = [str(SCRIPT), *map(str, args)]
    if not tty:
        proc = subprocess.run(argv, capture_output=True, env=env, timeout=timeout)
        return proc.returncode, proc.stdout.decode(), proc.stderr.decode()
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, COLUMNS, 0, 0))
    try:
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                             stderr=slave, env=env)
    finally:
        os.close(slave)
    chunks = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            ready, _, _ = select.select([master], [], [], 0.5)
            if ready:
                try:
                    data = os.read(master, 65536)
                except OSError:  # EIO: every slave fd closed (the child exited)
                    break
                if not data:
                    break
                chunks.append(data)
            elif p.poll() is not None:
                break
            if time.monotonic() > deadline:
                p.kill()
                raise AssertionError(f"{argv} did not finish in {timeout}s")
        assert p.stdout is not None
        out = p.stdout.read().decode()
        p.stdout.close()
        code = p.wait()
    finally:
        os.close(master)
    return code, out, b"".join(chunks).decode(errors="replace")


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A scratch dir with big.tar (docker save) and oci (a layout holding it, gzip layers)."""
    if "from-docker-save" not in COMMANDS:
        pytest.skip("'layouttool from-docker-save' does not exist yet")
    d = tmp_path_factory.mktemp("tty")
    make_docker_save(d / "big.tar")
    res = run_cli("-q", "from-docker-save", d / "big.tar", "-o", d / "oci")
    assert res.code == 0, res.stderr
    return d


def cases(work: Path, n: str) -> dict[str, list[str | Path]]:
    """Each long command, writing to fresh outputs tagged ``n``."""
    return {
        "from-docker-save": ["from-docker-save", work / "big.tar", "-o", work / f"imp-{n}"],
        "convert": ["convert", f"{work / 'oci'}:tty-test:1", "--compression", "zstd", "-o",
                    work / f"conv-{n}"],
        "unpack": ["unpack", f"{work / 'oci'}:tty-test:1", work / f"root-{n}"],
        "to-docker-save": ["to-docker-save", f"{work / 'oci'}:tty-test:1", "--compression",
                           "gzip", "-o", work / f"out-{n}.tar"],
        "verify": ["verify", work / "oci"],
        "gc": ["gc", work / "oci", "--dry-run"],
    }


COMMAND_NAMES = ["from-docker-save", "convert", "unpack", "to-docker-save", "verify", "gc"]


def _need(name: str) -> None:
    if name not in COMMANDS:
        pytest.skip(f"'layouttool {name}' does not exist yet (not in layouttool --help)")


@pytest.mark.parametrize("name", COMMAND_NAMES)
def test_progress_on_a_tty(work: Path, name: str) -> None:
    _need(name)
    code, _, err = run_in_pty(*cases(work, "tty")[name])
    assert code == 0, err
    assert "\r" in err, f"no status line redrawn on the terminal:\n{err!r}"
    assert STATUS.search(err), f"no rate in the status line:\n{err!r}"
    if name not in ("verify", "gc"):  # these know no byte total up front for every task
        assert re.search(r"\d+%", err), f"no percentage:\n{err!r}"
    shown, _ = screen(err)
    # every status draw fits the terminal (a wrapped status line is never erased)
    for seg in err.split("\r\x1b[K"):
        if seg and "\n" not in seg:
            assert len(seg) < COLUMNS, f"status line wider than the terminal: {seg!r}"
    visible = [ln for ln in shown if ln]
    # the status line is erased at the end; what stays is the summary, from column 0
    assert not any(STATUS.search(ln) for ln in visible), f"status left on screen: {shown}"
    assert all(ln == ln.lstrip() for ln in visible), f"a line does not start at column 0: {shown}"
    if name != "verify":  # verify's verdict goes to stdout
        assert visible, err


@pytest.mark.parametrize("name", COMMAND_NAMES)
def test_no_progress_without_a_tty(work: Path, name: str) -> None:
    _need(name)
    code, _, err = run_in_pty(*cases(work, "pipe")[name], tty=False)
    assert code == 0, err
    assert not ANSI_OR_CR.search(err), f"terminal control on a pipe: {err!r}"
    assert not STATUS.search(err.replace("layouttool: note:", "")) or name == "verify"
    assert "ETA" not in err and not re.search(r"\d+%", err)


@pytest.mark.parametrize("name", COMMAND_NAMES)
def test_quiet_on_a_tty_prints_nothing(work: Path, name: str) -> None:
    _need(name)
    code, _, err = run_in_pty("-q", *cases(work, "quiet")[name])
    assert code == 0, err
    assert err == "", f"-q still wrote to the terminal: {err!r}"


def test_json_stdout_is_clean_while_progress_draws(work: Path) -> None:
    _need("convert")
    code, out, err = run_in_pty("convert", f"{work / 'oci'}:tty-test:1", "--compression",
                                "none", "-o", work / "conv-json", "--json")
    assert code == 0, err
    assert json.loads(out)["layersRecompressed"] == 2  # stdout: exactly one JSON document
    assert "\r" in err
    assert verify_layout(work / "conv-json").ok


def test_verbose_shows_one_detail_line_per_layer(work: Path) -> None:
    _need("convert")
    code, _, err = run_in_pty("-v", "convert", f"{work / 'oci'}:tty-test:1", "--compression",
                                "zstd", "-o", work / "conv-v")
    assert code == 0, err
    shown, _ = screen(err)
    detail = [ln for ln in shown if DETAIL.match(ln)]
    assert len(detail) >= 2, shown  # both layers recompressed
    # the same detail without a terminal (it is not progress, it is what -v asked for)
    code, _, err = run_in_pty("-v", "convert", f"{work / 'oci'}:tty-test:1", "--compression",
                                "zstd", "-o", work / "conv-v2", tty=False)
    assert code == 0
    assert len([ln for ln in err.splitlines() if DETAIL.match(ln)]) >= 2
    assert "\r" not in err
