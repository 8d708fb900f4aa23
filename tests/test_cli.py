"""The CLI contract: one ``layouttool: error:`` line and the documented exit code per error
class, never a traceback; --version, --help with examples, typo hints, --json, --raw."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_cli
from test_store import assert_verifies, config_desc_of, make_image, make_layout

from layouttool import mediatypes as mt
from layouttool._version import __version__
from layouttool.cli import COMMANDS
from layouttool.errors import LayoutToolError
from layouttool.ops import layout as ops_layout
from layouttool.store import Layout


def only_error(r: object, code: int, line: str) -> None:
    """``r`` failed with ``code`` and printed exactly ``line`` on stderr, nothing else."""
    assert r.code == code, (r.code, r.stderr)  # type: ignore[attr-defined]
    assert r.stderr == line + "\n"  # type: ignore[attr-defined]
    assert "Traceback" not in r.stderr  # type: ignore[attr-defined]
    assert r.stdout == ""  # type: ignore[attr-defined]


def run_proc(*args: str | os.PathLike[str]) -> subprocess.CompletedProcess[str]:
    """Run the real console entry point in a fresh process."""
    return subprocess.run(
        [sys.executable, "-m", "layouttool", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=60,
    )


# ----------------------------------------------------------------------------- error classes
def test_usage_errors_exit_2(tmp_path: Path) -> None:
    only_error(
        run_cli("ls"),
        2,
        "layouttool: error: Missing argument 'LAYOUT'. (see 'layouttool ls --help')",
    )
    only_error(
        run_cli("ls", "--bogus", tmp_path),
        2,
        "layouttool: error: No such option '--bogus'. (see 'layouttool ls --help')",
    )
    only_error(
        run_cli("inspect", f"{tmp_path}:x", "--raw", "layers"),
        2,
        "layouttool: error: Invalid value for '--raw': 'layers' is not one of 'manifest', "
        "'config', 'index'. (see 'layouttool inspect --help')",
    )


def test_typo_suggests_the_closest_command() -> None:
    only_error(
        run_cli("lss", "x"),
        2,
        "layouttool: error: no such command 'lss'. Did you mean 'ls'? (see 'layouttool --help')",
    )
    only_error(
        run_cli("verfy", "x"),
        2,
        "layouttool: error: no such command 'verfy'. Did you mean 'verify'? "
        "(see 'layouttool --help')",
    )


def test_not_found_exit_3(tmp_path: Path) -> None:
    only_error(
        run_cli("ls", tmp_path / "nope"),
        3,
        f"layouttool: error: layout {tmp_path / 'nope'} does not exist",
    )
    layout = make_layout(tmp_path, "a", "b")
    only_error(
        run_cli("inspect", f"{layout.root}:c"),
        3,
        f"layouttool: error: {layout.root}: no image named 'c' (refs: a, b)",
    )


def test_invalid_input_exit_4(tmp_path: Path) -> None:
    layout = make_layout(tmp_path, "a")
    (layout.root / "index.json").write_text("{")
    only_error(
        run_cli("ls", layout.root),
        4,
        f"layouttool: error: {layout.root}/index.json: not valid JSON: Expecting property name "
        "enclosed in double quotes: line 1 column 2 (char 1)",
    )
    only_error(
        run_cli("inspect", f"{layout.root}@sha256:abc"),
        4,
        "layouttool: error: invalid image digest 'sha256:abc': sha256 needs exactly 64 "
        "lowercase hex digits",
    )


def test_integrity_exit_5(tmp_path: Path) -> None:
    layout = make_layout(tmp_path)
    d = make_image(layout, "a")
    cfg = config_desc_of(layout, d)
    layout.blob_path(cfg.digest).write_bytes(b"{}" + b" " * (cfg.size - 2))
    from layouttool.digest import Digest

    got = Digest.of_bytes(layout.blob_path(cfg.digest).read_bytes())
    only_error(
        run_cli("inspect", f"{layout.root}:a"),
        5,
        f"layouttool: error: blob {cfg.digest} is corrupt: its content hashes to {got}",
    )


def test_unsafe_exit_6(tmp_path: Path) -> None:
    layout = make_layout(tmp_path)
    d = make_image(layout, "a")
    path = layout.blob_path(d.digest)
    moved = tmp_path / "elsewhere"
    path.rename(moved)
    path.symlink_to(moved)
    only_error(
        run_cli("inspect", f"{layout.root}:a"),
        6,
        f"layouttool: error: blob {d.digest} is a symlink (or under one); refusing to follow "
        f"it ({path})",
    )


def test_conflict_exit_7(tmp_path: Path) -> None:
    layout = make_layout(tmp_path, "a")
    only_error(
        run_cli("init", layout.root),
        7,
        f"layouttool: error: {layout.root} is already an OCI layout",
    )


def test_os_error_exit_74(tmp_path: Path) -> None:
    layout = make_layout(tmp_path, "a")
    (layout.root / "index.json").unlink()
    (layout.root / "index.json").mkdir()
    only_error(
        run_cli("ls", layout.root),
        74,
        f"layouttool: error: read {layout.root}/index.json: Is a directory",
    )


def test_other_error_exit_1(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fail(_path: object) -> None:
        raise LayoutToolError("something went wrong\nover two lines")

    monkeypatch.setattr(ops_layout, "list_images", fail)
    only_error(run_cli("ls", tmp_path), 1, "layouttool: error: something went wrong over two lines")


def test_bug_exit_70_and_debug_traceback(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def bug(_path: object) -> None:
        raise RuntimeError("boom")

    monkeypatch.setattr(ops_layout, "list_images", bug)
    only_error(
        run_cli("ls", tmp_path),
        70,
        "layouttool: error: internal error: RuntimeError: boom (a bug; rerun with --debug for "
        "a traceback and report it)",
    )
    with pytest.raises(RuntimeError, match="boom"):
        run_cli("--debug", "ls", tmp_path)


def test_interrupt_exit_130(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(_path: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(ops_layout, "list_images", interrupted)
    only_error(run_cli("ls", tmp_path), 130, "layouttool: error: interrupted")


def test_real_process_errors_have_no_traceback(tmp_path: Path) -> None:
    layout = make_layout(tmp_path, "a")
    (layout.root / "oci-layout").write_text("[]")
    p = run_proc("inspect", f"{layout.root}:a")
    assert p.returncode == 4
    assert p.stderr == (
        f"layouttool: error: {layout.root}/oci-layout: imageLayoutVersion must be '1.0.0'\n"
    )
    p = run_proc("ls", tmp_path / "absent")
    assert (p.returncode, p.stdout) == (3, "")
    assert "Traceback" not in p.stderr


# ----------------------------------------------------------------------------- help, version
def test_version() -> None:
    r = run_cli("--version")
    assert r.code == 0
    assert r.stdout == f"layouttool, version {__version__}\n"


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_help_has_examples(command: str) -> None:
    r = run_cli(command, "--help")
    assert r.code == 0, r.stderr
    assert r.stdout.startswith(f"Usage: layouttool {command} ")
    lines = r.stdout.splitlines()
    assert "Examples:" in [line.strip() for line in lines], r.stdout
    i = [line.strip() for line in lines].index("Examples:")
    assert lines[i + 1].strip().startswith(f"layouttool {command}"), r.stdout


def test_top_level_help_lists_sections() -> None:
    r = run_cli("--help")
    assert r.code == 0
    for name in COMMANDS:
        assert f"  {name} " in r.stdout
    assert "Layouts:" in r.stdout
    assert "Examples:" in r.stdout


# ----------------------------------------------------------------------------- --json
def test_json_outputs(tmp_path: Path) -> None:
    root = tmp_path / "oci"
    init = json.loads(run_cli("init", root, "--json").stdout)
    assert init == {"layout": str(root)}
    layout = Layout.open(root)
    d = make_image(layout, "app:1.0", annotations={mt.ANNOT_CONTAINERD_NAME: "docker.io/x/app:1.0"})

    ls = json.loads(run_cli("ls", root, "--json").stdout)
    assert set(ls) == {"layout", "images", "warnings"} and ls["warnings"] == []
    (img,) = ls["images"]
    assert img == {
        "ref": "app:1.0",
        "name": "docker.io/x/app:1.0",
        "digest": str(d.digest),
        "mediaType": mt.MT_OCI_MANIFEST,
        "platforms": ["linux/amd64"],
        "size": img["size"],
        "kind": "image",
        "error": None,
    }
    assert img["size"] > d.size

    ins = json.loads(run_cli("inspect", f"{root}:app:1.0", "--json").stdout)
    assert {
        "image", "digest", "mediaType", "manifestDigest", "manifestMediaType", "configDigest",
        "platform", "platforms", "created", "size", "layers", "labels", "entrypoint", "cmd",
        "env", "annotations",
    } <= set(ins)
    assert ins["digest"] == ins["manifestDigest"] == str(d.digest)
    assert ins["cmd"] == ["/bin/sh"] and ins["env"] == ["PATH=/bin"]
    assert set(ins["layers"][0]) == {"digest", "size", "mediaType", "diffID", "lazy"}
    assert ins["layers"][0]["lazy"] is None

    tag = json.loads(run_cli("tag", f"{root}:app:1.0", "latest", "--json").stdout)
    assert tag == {"layout": str(root), "ref": "latest", "digest": str(d.digest),
                   "action": "tagged"}
    untag = json.loads(run_cli("untag", f"{root}:latest", "--json").stdout)
    assert untag == {"layout": str(root), "ref": "latest", "digest": str(d.digest),
                     "action": "untagged"}

    ver = json.loads(run_cli("verify", root, "--json").stdout)
    assert ver["ok"] is True and ver["checked"] == 3
    assert_verifies(root)


def test_ls_text(tmp_path: Path) -> None:
    layout = make_layout(tmp_path, "a", "b")
    r = run_cli("ls", layout.root)
    assert r.code == 0
    lines = r.stdout.splitlines()
    assert lines[0].split() == ["REF", "NAME", "DIGEST", "TYPE", "PLATFORM", "SIZE"]
    assert [line.split()[0] for line in lines[1:]] == ["a", "b"]


# ----------------------------------------------------------------------------- --raw
def test_inspect_raw_prints_exact_bytes(tmp_path: Path) -> None:
    layout = make_layout(tmp_path)
    d = make_image(layout, "a")
    cfg = config_desc_of(layout, d)
    r = run_cli("inspect", f"{layout.root}:a", "--raw", "manifest")
    assert r.code == 0
    assert r.stdout_bytes == layout.blob_path(d.digest).read_bytes()
    r = run_cli("inspect", f"{layout.root}:a", "--raw", "config")
    assert r.stdout_bytes == layout.blob_path(cfg.digest).read_bytes()
    r = run_cli("inspect", str(layout.root), "--raw", "index")
    assert r.stdout_bytes == (layout.root / "index.json").read_bytes()


# ----------------------------------------------------------------------------- tag / untag
def test_tag_untag_round_trip(tmp_path: Path) -> None:
    layout = make_layout(tmp_path, "a", "b")
    r = run_cli("tag", f"{layout.root}:a", "release")
    assert r.code == 0 and r.stdout.startswith("tagged release -> sha256:")
    r = run_cli("tag", f"{layout.root}:b", "release")
    assert r.code == 0 and r.stdout.startswith("moved release -> sha256:")
    refs = [d.ref_name for d in layout.read_index().manifests]
    assert sorted(refs) == ["a", "b", "release"]  # type: ignore[type-var]
    only_error(
        run_cli("tag", f"{layout.root}:a", "bad ref"),
        4,
        "layouttool: error: invalid ref name 'bad ref': use letters, digits and separators "
        "such as '.', '_', '-', ':', '/' (e.g. 'app:1.0' or 'docker.io/library/app:1.0')",
    )
    assert run_cli("untag", f"{layout.root}:release").code == 0
    only_error(
        run_cli("untag", f"{layout.root}:release"),
        3,
        f"layouttool: error: {layout.root}: no image named 'release' (refs: a, b)",
    )
    only_error(
        run_cli("untag", str(layout.root)),
        4,
        f"layouttool: error: untag needs LAYOUT:REF, got {str(layout.root)!r}",
    )
    assert_verifies(layout)


_BAD_INDEXES = {
    "not-json": b"{",
    "null": b"null",
    "array": b"[]",
    "manifests-string": b'{"schemaVersion":2,"manifests":"x"}',
    "negative-size": b'{"schemaVersion":2,"manifests":[{"mediaType":"%s","digest":"sha256:%s",'
    b'"size":-1}]}',
    "traversal-digest": b'{"schemaVersion":2,"manifests":[{"mediaType":"%s",'
    b'"digest":"sha256:../../../etc/passwd","size":1}]}',
    "uppercase-digest": b'{"schemaVersion":2,"manifests":[{"mediaType":"%s","digest":"sha256:'
    + b"A" * 64
    + b'","size":1}]}',
    "schema-1": b'{"schemaVersion":1,"manifests":[]}',
    "binary": bytes(range(256)),
    "empty": b"",
    "deep": b"[" * 50_000 + b"]" * 50_000,
}


@pytest.mark.parametrize("kind", sorted(_BAD_INDEXES))
@pytest.mark.parametrize("command", ["ls", "inspect", "verify", "tag", "untag"])
def test_bad_index_json_is_one_clean_line(tmp_path: Path, kind: str, command: str) -> None:
    """A hostile index.json: exit 4, one error line, no traceback, nothing changed."""
    layout = make_layout(tmp_path, "a")
    data = _BAD_INDEXES[kind]
    if b"%s" in data:
        data = data.replace(b"%s", mt.MT_OCI_MANIFEST.encode(), 1).replace(b"%s", b"1" * 64)
    (layout.root / "index.json").write_bytes(data)
    table: dict[str, tuple[str | Path, ...]] = {
        "ls": ("ls", layout.root),
        "inspect": ("inspect", f"{layout.root}:a"),
        "verify": ("verify", layout.root),
        "tag": ("tag", f"{layout.root}:a", "b"),
        "untag": ("untag", f"{layout.root}:a"),
    }
    r = run_cli(*table[command])
    assert r.code == 4, (r.code, r.stderr)
    assert r.stderr.startswith("layouttool: error: ")
    assert r.stderr.count("\n") == 1
    assert "Traceback" not in r.stderr
    assert (layout.root / "index.json").read_bytes() == data
