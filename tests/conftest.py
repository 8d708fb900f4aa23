"""Shared test helpers: running the CLI in-process, peer tools, shared fixtures."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from click.testing import CliRunner
from fixtures_path import shared_fixture  # noqa: F401  (re-exported for tests)

from layouttool.cli import main

if TYPE_CHECKING:
    from podmanutil import Podman

REPO = Path(__file__).resolve().parents[1]
IN_CI = os.environ.get("CI") == "true"


@dataclass
class CliResult:
    """What one in-process CLI run produced."""

    code: int
    stdout: str
    stderr: str
    stdout_bytes: bytes


def run_cli(*args: str | os.PathLike[str], stdin: bytes | None = None) -> CliResult:
    """Run ``layouttool ARGS`` in-process through the real ``main`` (error mapping included)."""
    runner = CliRunner()
    argv = [str(a) for a in args]
    with runner.isolation(input=stdin) as (out, err, _):
        try:
            main(argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        else:  # pragma: no cover - main always exits
            code = 0
        o, e = out.getvalue(), err.getvalue()
    return CliResult(code, o.decode(errors="replace"), e.decode(errors="replace"), o)


@pytest.fixture
def cli():
    """The in-process CLI runner: ``cli("ls", path)`` -> CliResult."""
    return run_cli


def need_tool(name: str) -> str:
    """Path of a peer tool; fails under CI=true when it is missing, else skips visibly."""
    path = shutil.which(name)
    if path is None:
        msg = f"{name} is not installed (apt-get install -y {name})"
        if IN_CI:
            pytest.fail(msg)
        pytest.skip(msg)
    return path


@pytest.fixture
def skopeo() -> str:
    """The skopeo binary (an interoperability oracle)."""
    return need_tool("skopeo")


@pytest.fixture
def umoci() -> str:
    """The umoci binary (an interoperability oracle)."""
    return need_tool("umoci")


@pytest.fixture
def podman(tmp_path: Path) -> Iterator[Podman]:
    """podman (root, vfs driver) with an image store of its own under this test's tmp_path."""
    from podmanutil import podman_store

    with podman_store(tmp_path) as p:
        yield p


def sh(*args: str | os.PathLike[str], check: bool = True, **kw) -> subprocess.CompletedProcess:
    """Run a peer tool, capturing output; on failure show its stderr."""
    proc = subprocess.run([str(a) for a in args], capture_output=True, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"{' '.join(map(str, args))} exited {proc.returncode}:\n"
            f"{proc.stderr.decode(errors='replace')}"
        )
    return proc
