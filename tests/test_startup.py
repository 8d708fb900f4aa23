"""Start-up: the modules each quick command imports (issue 19).

Scripts call ``ls``, ``inspect``, ``tag`` and ``verify`` in loops, and on a small layout such a
command is almost nothing but imports: every module it loads is paid at every call. click is
fixed by the design and costs what it costs (``import click`` alone is ~4x a bare interpreter
start); on top of it, a quick command may import only what is listed here.

A new import on their path fails this test. Import it inside the function that needs it
(``python -X importtime -m layouttool ls LAYOUT`` shows who pulls in what), or, when every one of
these commands really needs it, add it below with what it costs (``bench/run.py`` has the
start-up rows).
"""

from __future__ import annotations

import os
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

import layouttool

SAMPLE = Path(__file__).resolve().parents[1] / "testdata" / "sample-docker-save.tar"
REF = "layouttool-sample:1.0"

#: runs one command in-process, then writes the names in sys.modules to the fd in argv[1]
DRIVER = r"""
import os, sys
fd = int(sys.argv[1])
from layouttool.cli import main
try:
    main(sys.argv[2:])
except SystemExit as exc:
    code = exc.code
else:
    code = 0
os.write(fd, ("%s\n" % code + "\n".join(sorted(sys.modules))).encode())
"""

#: the standard-library modules every quick command may import beyond click's own (each with
#: everything it imports in turn, whatever the Python version); why each one is needed
STDLIB_COMMON = {
    "json": "index.json and every document",
    "dataclasses": "the model and the results",
    "pathlib": "paths in the store (it also pulls urllib.parse, ~15M instructions)",
    "fcntl": "the layout locks",
    "signal": "SIGTERM -> clean exit 130",
    "locale": "click's gettext calls, at the first help text click builds",
    "_sha256": "digests of documents (CPython's sha2; OpenSSL's hashlib is for layers)",
    "_sha512": "sha512 documents",
}

#: layouttool's modules that every quick command may import
LAYOUTTOOL_COMMON = {
    "layouttool",
    "layouttool._version",
    "layouttool.errors",
    "layouttool.cli",
    "layouttool.cli._common",
    "layouttool.cli.cmd_layout",
    "layouttool.digest",
    "layouttool.mediatypes",
    "layouttool.model",
    "layouttool.refs",
    "layouttool.store",
    "layouttool.ops",
    "layouttool.ops.common",
    "layouttool.ops.layout",
    # the one reader every command reads documents through (issue 16): ~2.8M instructions,
    # under 1 ms (its Document is a plain slotted class, its Finding a NamedTuple)
    "layouttool.reader",
}

#: what only some commands may import on top of the common sets
LAYOUTTOOL_EXTRA: dict[str, set[str]] = {
    "verify": {
        "layouttool.graph",
        "layouttool.ops.verify",
        # the Progress protocol verify reports through (--deep's per-layer tasks); tiny
        "layouttool.progress",
        "layouttool.schema",
        "layouttool.schemas",
    },
}
STDLIB_EXTRA: dict[str, dict[str, str]] = {
    "verify": {"base64": "schema formats", "hashlib": "layers are hashed (OpenSSL's sha256)"},
}

#: what none of them may ever import: codecs, tar, threads pools, processes, the network, and
#: modules that drag in dozens more (each line here was seen creeping in, or would cost >3 ms)
FORBIDDEN = {
    "zstandard", "isal", "zlib", "bz2", "lzma", "tarfile", "concurrent.futures", "subprocess",
    "tempfile", "shutil", "zipfile", "importlib.resources", "importlib.metadata", "ssl",
    "http.client", "urllib.request", "email", "random", "secrets", "difflib", "asyncio",
    "layouttool.codec", "layouttool.layers", "layouttool.rootfs", "layouttool.ops.importer",
    "layouttool.ops.convert", "layouttool.ops.docker_save", "layouttool.ops.unpack",
    "layouttool.ops.gc", "layouttool.ops.remote", "layouttool.registry", "layouttool.formats",
}

COMMANDS = {
    "ls": ["ls", "{oci}"],
    "ls --json": ["ls", "{oci}", "--json"],
    "inspect": ["inspect", "{oci}:" + REF],
    "inspect --json": ["inspect", "{oci}:" + REF, "--json"],
    "tag": ["tag", "{oci}:" + REF, "again"],
    "untag": ["untag", "{oci}:again"],
    "verify": ["verify", "{oci}"],
    "init": ["init", "{tmp}/fresh"],
}


def _modules(argv: list[str]) -> tuple[int, set[str]]:
    """Run the CLI with ``argv`` in a fresh interpreter: (exit code, every module it loaded)."""
    r, w = os.pipe()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-c", DRIVER, str(w), *argv],
            pass_fds=(w,), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
    finally:
        os.close(w)
    with os.fdopen(r, "rb") as fh:
        out = fh.read().decode()
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err.decode()
    code, *mods = out.split("\n")
    return int(code), set(mods)


@cache
def _closure(roots: frozenset[str]) -> frozenset[str]:
    """The modules loaded by importing ``click`` and ``roots`` in a fresh interpreter."""
    code = "import sys, click\n" + "".join(f"import {m}\n" for m in sorted(roots))
    code += "print('\\n'.join(sys.modules))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=True)
    return frozenset(proc.stdout.split())


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("startup")
    layouttool.import_docker_save(SAMPLE, tmp / "oci")
    return tmp


@pytest.mark.parametrize("name", list(COMMANDS))
def test_quick_commands_import_only_what_they_need(name: str, sample: Path) -> None:
    argv = [a.format(oci=sample / "oci", tmp=sample) for a in COMMANDS[name]]
    code, loaded = _modules(argv)
    assert code == 0, f"{name} failed: the module list would mean nothing"
    cmd = name.split()[0]
    ours = {m for m in loaded if m == "layouttool" or m.startswith("layouttool.")}
    allowed_ours = LAYOUTTOOL_COMMON | LAYOUTTOOL_EXTRA.get(cmd, set())
    assert sorted(ours - allowed_ours) == [], (
        f"`layouttool {name}` imports layouttool modules that are not on its list"
    )
    roots = frozenset(STDLIB_COMMON) | frozenset(STDLIB_EXTRA.get(cmd, {}))
    others = loaded - ours - _closure(roots)
    assert sorted(others) == [], (
        f"`layouttool {name}` imports modules beyond click and {sorted(roots)}"
    )
    assert sorted(loaded & FORBIDDEN) == []


def test_the_check_sees_a_lazy_import(sample: Path) -> None:
    """The driver sees modules imported while the command runs, not only at start-up:
    ``convert`` loads its codecs inside the command."""
    code, loaded = _modules(["convert", f"{sample / 'oci'}:{REF}", "--compression", "zstd",
                             "-o", str(sample / "converted")])
    assert code == 0
    assert {"layouttool.codec", "zstandard", "layouttool.ops.convert"} <= loaded


def test_forbidden_modules_stay_out_of_the_common_closure() -> None:
    """The allowed standard-library roots do not themselves pull in a forbidden module (which
    would make the allow-list meaningless)."""
    for cmd in ("ls", "verify"):
        roots = frozenset(STDLIB_COMMON) | frozenset(STDLIB_EXTRA.get(cmd, {}))
        assert sorted(_closure(roots) & FORBIDDEN) == []
