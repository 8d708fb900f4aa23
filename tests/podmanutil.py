"""podman as an oracle: a private store under the test's tmp_path, the vfs driver, no daemon.

Every call gets ``--root``/``--runroot`` of its own test, so tests never share an image store
and nothing is left running after them (podman pull, push, load and inspect start no service).
podman refuses a runroot longer than 50 characters, which pytest's tmp_path always is, so the
runroot is a short directory of its own in the system temp dir, removed after the test.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from conftest import need_tool, sh


class Podman:
    """podman with a store of its own under ``root``."""

    def __init__(self, binary: str, root: Path, runroot: Path) -> None:
        self.binary = binary
        self.root = root
        self.runroot = runroot
        root.mkdir(parents=True, exist_ok=True)

    def __call__(self, *args: str | os.PathLike[str], check: bool = True) -> str:
        """Run ``podman ARGS``; returns its stdout (a failure shows podman's stderr)."""
        proc = sh(
            self.binary,
            "--root", self.root,
            "--runroot", self.runroot,
            "--storage-driver", "vfs",
            "--events-backend", "file",
            "--cgroup-manager", "cgroupfs",
            *args,
            check=check,
        )
        return proc.stdout.decode()

    def inspect(self, ref: str) -> dict[str, Any]:
        """``podman image inspect REF``, parsed."""
        [doc] = json.loads(self("image", "inspect", ref))
        return doc  # type: ignore[no-any-return]


@contextlib.contextmanager
def short_runroot(prefix: str) -> Iterator[Path]:
    """A runroot of its own in the system temp dir (podman and buildah refuse one longer than
    50 characters, which pytest's tmp_path always is), removed after."""
    runroot = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield runroot
    finally:
        shutil.rmtree(runroot, ignore_errors=True)


@contextlib.contextmanager
def podman_store(tmp_path: Path) -> Iterator[Podman]:
    """podman with a private store under ``tmp_path`` (the ``podman`` fixture of conftest);
    fails under CI=true, and skips elsewhere, when podman is not installed."""
    binary = need_tool("podman")
    with short_runroot("lt-podman-") as runroot:
        yield Podman(binary, tmp_path / "podman", runroot)
