"""Stacks of layers for tests of the merged filesystem (merge, export, flatten, diff): the
hand-made tricky cases and loaders of the peers' tables and the dive fixture."""

from __future__ import annotations

import json
import tarfile
from typing import Any

from fixtures_path import shared_fixture

Layer = list[dict[str, Any]] | bytes

D = {"type": "dir"}

TRICKY: dict[str, list[Layer]] = {
    # go-containerregistry #977: a hardlink whose target a later layer deletes
    "hardlink target deleted later": [
        [{"name": "bin/busybox", "data": "BB", "mode": 0o755},
         {"type": "hardlink", "name": "bin/sh", "target": "bin/busybox"},
         {"type": "hardlink", "name": "bin/ls", "target": "bin/busybox"}],
        [{"name": "bin/.wh.busybox"}],
    ],
    "hardlink target replaced later": [
        [{"name": "a", "data": "old"}, {"type": "hardlink", "name": "b", "target": "a"}],
        [{"name": "a", "data": "new"}],
    ],
    "hardlink to a lower file, target then deleted": [
        [{"name": "x/orig", "data": "content"}],
        [{"type": "hardlink", "name": "y/link", "target": "x/orig"}],
        [{"name": ".wh.x"}],
    ],
    "hardlink group spread over layers, all but one deleted": [
        [{"name": "f", "data": "123"}, {"type": "hardlink", "name": "g", "target": "f"}],
        [{"type": "hardlink", "name": "z/h", "target": "g"}, {"name": ".wh.f"}],
        [{"name": ".wh.g"}],
    ],
    "hardlink to a symlink and to a fifo": [
        [{"type": "symlink", "name": "s", "target": "/etc/passwd"},
         {"type": "hardlink", "name": "s2", "target": "s"},
         {"type": "fifo", "name": "p"}, {"type": "hardlink", "name": "p2", "target": "p"}],
        [{"name": ".wh.s"}, {"name": ".wh.p"}],
    ],
    "hardlink to itself": [[{"name": "a", "data": "x"},
                            {"type": "hardlink", "name": "a", "target": "a"}]],
    "hardlink into its own old tree": [
        [{"name": "d/f", "data": "x"}],
        [{"type": "hardlink", "name": "d", "target": "d/f"}],
    ],
    "hardlink to a directory": [[{**D, "name": "d"},
                                 {"type": "hardlink", "name": "l", "target": "d"}]],
    "hardlink through a symlinked directory": [
        [{**D, "name": "real"}, {"name": "real/f", "data": "through"},
         {"type": "symlink", "name": "alias", "target": "real"}],
        [{"type": "hardlink", "name": "l", "target": "alias/f"}, {"name": ".wh.real"}],
    ],
    "dir replaced by file and back": [
        [{**D, "name": "d", "mode": 0o700}, {"name": "d/a", "data": "a"}],
        [{"name": "d", "data": "now a file"}],
        [{**D, "name": "d", "mode": 0o755}, {"name": "d/b", "data": "b"}],
    ],
    "file replaced by dir in the same layer": [
        [{"name": "x", "data": "f"}, {**D, "name": "x"}, {"name": "x/y", "data": "y"}],
    ],
    "opaque dir keeps this layer's entries, wherever the marker is": [
        [{**D, "name": "o"}, {"name": "o/lower", "data": "l"}, {**D, "name": "o/sub"},
         {"name": "o/sub/deep", "data": "d"}],
        [{"name": "o/new", "data": "n"}, {"name": "o/.wh..wh..opq"},
         {"name": "o/sub/newer", "data": "n2"}],
    ],
    "whiteout of a dir this layer wrote into": [
        [{**D, "name": "w"}, {"name": "w/old", "data": "o"}],
        [{"name": "w/new", "data": "n"}, {"name": ".wh.w"}],
    ],
    "whiteout spares the same layer": [
        [{"name": "k", "data": "lower"}],
        [{"name": "k", "data": "upper"}, {"name": ".wh.k"}],
    ],
    "symlinked parent across layers": [
        [{**D, "name": "usr/lib"}, {"type": "symlink", "name": "lib", "target": "/usr/lib"}],
        [{"name": "lib/libc.so", "data": "elf"}, {"name": "lib/.wh.nothing"}],
    ],
    "dangling symlink parent gets its target made": [
        [{"type": "symlink", "name": "dang", "target": "nowhere/deeper"}],
        [{"name": "dang/file", "data": "x"}],
    ],
    "non-dir parent replaced": [
        [{"name": "nondir", "data": "f"}],
        [{"name": "nondir/foo/bar", "data": "b"}],
    ],
    "duplicates: later wins": [
        [{"name": "dup", "data": "one", "mode": 0o600}, {"name": "dup", "data": "two"},
         {**D, "name": "dd", "mode": 0o700, "uid": 5}, {**D, "name": "dd", "mode": 0o750}],
    ],
    "root entry sets the root": [[{**D, "name": "./", "mode": 0o700}, {"name": "x"}]],
    "root as a symlink is refused": [[{"type": "symlink", "name": ".", "target": "/tmp"}]],
    "owners, modes, special bits, devices, xattrs": [
        [{"name": "suid", "mode": 0o4755, "uid": 1000, "gid": 1000, "data": "s"},
         {"name": "sticky", **D, "mode": 0o1777},
         {"type": "char", "name": "dev/null", "devmajor": 1, "devminor": 3, "mode": 0o666},
         {"type": "block", "name": "dev/sda", "devmajor": 8, "devminor": 0},
         {"type": "fifo", "name": "run/fifo"},
         {"name": "xattr", "data": "x", "xattrs": {"user.k": b"v\xff\x00"}},
         {**D, "name": "xdir", "xattrs": {"user.a": b"1"}}],
        [{**D, "name": "xdir", "xattrs": {"user.b": b"2"}}],
    ],
    "PAX fractional times and long names": [
        [{"name": "t", "data": "x", "mtime": 1_600_000_000.123456789},
         {"name": "/".join(["long" * 30] * 4) + "/" + "n" * 200, "data": "deep"},
         {"type": "symlink", "name": "ls", "target": "t" * 300}],
    ],
    "non-UTF-8 names": [[{"name": "caf\udce9", "data": "latin-1 name"}]],
    "aufs metadata and unknown types are skipped": [
        [{"name": ".wh..wh.plnk/1.2"}, {"type": b"V", "name": "volume"}, {"name": "kept"}],
    ],
    "bare whiteout is invalid": [[{"name": "x"}], [{"name": "d/.wh."}]],
    "escaping name is unsafe": [[{"name": "../x"}]],
    "symlink loop is unsafe": [
        [{"type": "symlink", "name": "a", "target": "b"},
         {"type": "symlink", "name": "b", "target": "a"}],
        [{"name": "a/x"}],
    ],
    "empty file and empty layer": [[{"name": "empty"}], []],
}


def containerd_cases() -> list[dict[str, Any]]:
    path = shared_fixture("layer-tables", "containerd_TestBreakouts.json")
    cases: list[dict[str, Any]] = json.loads(path.read_text())["cases"]
    return cases


def containerd_ids() -> list[str]:
    try:
        return [c["name"] for c in containerd_cases()]
    except BaseException:  # collection must not die when the fixture is missing
        return ["fixture-missing"]


def dive_layers() -> list[bytes]:
    archive = shared_fixture("docker-save", "dive-test-docker-image.tar")
    with tarfile.open(archive) as outer:
        manifest = outer.extractfile("manifest.json")
        assert manifest is not None
        out = []
        for name in json.load(manifest)[0]["Layers"]:
            member = outer.extractfile(name)
            assert member is not None
            out.append(member.read())
    return out


def containerd_stack(case: dict[str, Any], outside: str) -> list[Layer]:
    """A containerd table case as layers (``${OUTSIDE}`` is a directory outside the root)."""

    def fix(v: Any) -> Any:
        if not isinstance(v, str):
            return v
        return v.replace("${OUTSIDE}", outside).replace("TNAME", "tname")

    return [[{k: fix(v) for k, v in e.items()} for e in layer] for layer in case["layers"]]


def moby_stack() -> list[Layer]:
    """The four layers of moby/go-archive's TestApplyLayerWhiteouts."""
    table = json.loads(shared_fixture(
        "layer-tables", "moby-go-archive_TestApplyLayerWhiteouts.json").read_text())
    return [[{**D, "name": n, "mode": 0o700} if n.endswith("/") else {"name": n, "mode": 0o600}
             for n in step["change"]] for step in table["steps"]]


def named_stacks() -> list[str]:
    """Every stack by name: the tricky ones, each containerd case, moby's, the dive fixture."""
    try:
        cases = [f"containerd:{n}" for n in containerd_ids()]
    except BaseException:  # collection must not die when the fixture is missing
        cases = []
    return [*sorted(TRICKY), *cases, "moby", "dive"]


def stack(name: str, outside: str = "/nonexistent-outside") -> list[Layer]:
    """The stack ``name`` (see :func:`named_stacks`)."""
    if name in TRICKY:
        return TRICKY[name]
    if name == "moby":
        return moby_stack()
    if name == "dive":
        return list(dive_layers())
    case = next(c for c in containerd_cases() if c["name"] == name.removeprefix("containerd:"))
    return containerd_stack(case, outside)
