"""Hostile layers: nothing outside the rootfs may change, whatever the layers hold.

Every case runs with a canary directory *outside* the rootfs (a sibling in tmp_path). Its tree
(modes, owners, times, inodes, link counts, contents, xattrs) is snapshotted before and after,
and no inode in the rootfs may be a canary inode. Each layer must either apply (confined) or be
refused with UnsafeInputError / InvalidInputError: never another exception, never a hang.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import struct
import tarfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fixtures_path import shared_fixture
from layerbuild import NonSeekable, build_layer

from layouttool import errors
from layouttool.rootfs import ApplyOptions, apply_layer

CASE_TIMEOUT = 20
ALLOWED = (errors.UnsafeInputError, errors.InvalidInputError)

Layer = list[dict[str, Any]] | bytes


# -- harness --------------------------------------------------------------------------------


@pytest.fixture
def alarm() -> Iterator[None]:
    def on_alarm(signum: int, frame: object) -> None:
        raise TimeoutError(f"case took more than {CASE_TIMEOUT}s (a hang?)")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.alarm(CASE_TIMEOUT)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


@dataclass
class World:
    """tmp_path/rootfs (the target) and tmp_path/outside (the canary)."""

    base: Path
    root: Path
    outside: Path
    before: dict[str, Any] = field(default_factory=dict)

    def sub(self, text: str) -> str:
        return text.replace("${OUTSIDE}", str(self.outside))


def snapshot(top: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for name in [".", *dirnames, *filenames]:
            p = Path(dirpath, name)
            st = p.lstat()
            rec: dict[str, Any] = {
                "mode": st.st_mode, "uid": st.st_uid, "gid": st.st_gid, "size": st.st_size,
                "mtime": st.st_mtime_ns, "ino": st.st_ino, "nlink": st.st_nlink,
            }
            if stat.S_ISREG(st.st_mode):
                rec["data"] = p.read_bytes()
            elif stat.S_ISLNK(st.st_mode):
                rec["target"] = os.readlink(p)
            if not stat.S_ISLNK(st.st_mode):
                rec["xattrs"] = {k: os.getxattr(p, k) for k in os.listxattr(p)}
            out[os.path.relpath(p, top)] = rec
    return out


@pytest.fixture
def world(tmp_path: Path) -> World:
    root = tmp_path / "rootfs"
    root.mkdir()
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("host secret\n")
    os.chmod(outside / "secret", 0o600)
    (outside / "perm400").write_text("400\n")
    os.chmod(outside / "perm400", 0o400)
    (outside / "also-exists-outside-root").write_text("640\n")
    os.chmod(outside / "also-exists-outside-root", 0o640)
    (outside / "d").mkdir()
    (outside / "d/f").write_text("f\n")
    (outside / "emptydir").mkdir()
    os.symlink("secret", outside / "link-to-secret")
    os.utime(outside / "secret", (1_000_000, 1_000_000))
    w = World(tmp_path, root, outside)
    w.before = snapshot(outside)
    return w


def assert_confined(w: World) -> None:
    assert snapshot(w.outside) == w.before, "THE CANARY OUTSIDE THE ROOTFS CHANGED"
    assert sorted(os.listdir(w.base)) == ["outside", "rootfs"]
    canary_inodes = {(rec["ino"]) for rec in w.before.values()}
    dev = w.outside.lstat().st_dev
    # fd-based walk: the rootfs may hold paths longer than PATH_MAX
    for dirpath, dirnames, filenames, dirfd in os.fwalk(w.root):
        for name in [*dirnames, *filenames]:
            st = os.stat(name, dir_fd=dirfd, follow_symlinks=False)
            assert not (st.st_dev == dev and st.st_ino in canary_inodes), (
                f"{dirpath}/{name} shares an inode with a canary file"
            )


def apply_all(w: World, layers: list[Layer], **opts: Any) -> list[BaseException | None]:
    """Apply every layer in order (also after a refusal); return each layer's outcome."""
    outcomes: list[BaseException | None] = []
    for layer in layers:
        if isinstance(layer, bytes):
            data = layer
        else:
            data = build_layer([
                {k: (w.sub(v) if isinstance(v, str) else v) for k, v in e.items()} for e in layer
            ])
        try:
            apply_layer(NonSeekable(data), w.root, ApplyOptions(**opts))
        except ALLOWED as exc:
            outcomes.append(exc)
        else:
            outcomes.append(None)
    return outcomes


def resolve_in_root(root: Path, path: str, *, follow_final: bool = True) -> Path:
    """Independent oracle: resolve like a chroot would (absolute links and .. stay inside)."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    cur: list[str] = []
    hops = 0
    while parts:
        comp = parts.pop(0)
        if comp == "..":
            if cur:
                cur.pop()
            continue
        cand = root.joinpath(*cur, comp)
        if cand.is_symlink() and (parts or follow_final):
            hops += 1
            assert hops < 100
            target = os.readlink(cand)
            if target.startswith("/"):
                cur = []
            parts = [p for p in target.split("/") if p not in ("", ".")] + parts
            continue
        cur.append(comp)
    return root.joinpath(*cur)


# -- raw tar surgery for malformed headers ---------------------------------------------------


def _checksum(block: bytearray) -> bytearray:
    block[148:156] = b" " * 8
    block[148:156] = b"%06o\x00 " % sum(block)
    return block


def raw_header(name: str, *, typeflag: bytes = tarfile.REGTYPE, size: int = 0,
               size_field: bytes | None = None) -> bytes:
    info = tarfile.TarInfo(name)
    info.type = typeflag
    info.size = size
    block = bytearray(info.tobuf(format=tarfile.GNU_FORMAT)[-512:])
    if size_field is not None:
        block[124:136] = size_field
    return bytes(_checksum(block))


def pad(data: bytes) -> bytes:
    return data + bytes(-len(data) % 512)


def member(name: str, data: bytes = b"", typeflag: bytes = tarfile.REGTYPE) -> bytes:
    return raw_header(name, typeflag=typeflag, size=len(data)) + pad(data)


END = bytes(1024)


def malformed_layers() -> dict[str, bytes]:
    ok = member("ok", b"fine")
    pax_zero = b"0 path=evil\n"
    long_chain = b"".join(member("././@LongLink", b"a" * 100, tarfile.GNUTYPE_LONGNAME)
                          for _ in range(3000))
    return {
        "negative-size": ok + raw_header("neg", size_field=b"\xff" * 12) + END,
        "negative-size-first": raw_header("neg", size_field=b"\xff" * 12) + END,
        "pax-negative-size": ok + member("pax", b"12 size=-50\n", tarfile.XHDTYPE)
        + member("victim", b"") + END,
        "zero-length-pax-record": ok + member("pax", pad(pax_zero), tarfile.XHDTYPE)
        + member("after", b"x") + END,
        "huge-size-truncated": ok + raw_header("big", size_field=b"77777777777\x00"),
        "huge-whiteout-truncated": ok + raw_header(".wh.ok", size_field=b"77777777777\x00"),
        "huge-pax-header": ok + raw_header("pax", typeflag=tarfile.XHDTYPE,
                                           size_field=b"77777777777\x00") + bytes(4096),
        "huge-longname": raw_header("l", typeflag=tarfile.GNUTYPE_LONGNAME,
                                    size_field=b"\x80" + b"\x00" * 3 + b"\xff" * 8),
        "longname-recursion": ok + long_chain + member("x", b"") + END,
        "truncated-in-header": ok + raw_header("cut", size=10)[:300],
        "truncated-in-data": ok + raw_header("cut", size=5000) + b"x" * 100,
        "garbage-after-first": ok + b"\x01" * 512 + END,
        "bad-sparse-map": _bad_sparse(),
        "all-ff": b"\xff" * 4096,
        "not-a-tar": b"hello world, this is not a tar" * 40,
    }


def _bad_sparse() -> bytes:
    # old GNU sparse header whose map points far beyond the real size
    info = tarfile.TarInfo("sparse")
    info.type = tarfile.GNUTYPE_SPARSE
    info.size = 512
    block = bytearray(info.tobuf(format=tarfile.GNU_FORMAT)[-512:])
    block[386:398] = b"%011o\x00" % (1 << 30)  # offset
    block[398:410] = b"%011o\x00" % 1024  # numbytes > stored data
    block[483:495] = b"%011o\x00" % 4096  # realsize
    return bytes(_checksum(block)) + bytes(512) + END


# -- the hostile table ----------------------------------------------------------------------


@dataclass
class Case:
    layers: list[Layer]
    #: per layer: "ok" (must apply), "refuse" (must raise UnsafeInputError/InvalidInputError),
    #: "either"; one string applies to every layer
    expect: str | list[str] = "either"
    check: Callable[[World], None] | None = None
    opts: dict[str, Any] = field(default_factory=dict)


def _file_is(rel: str, data: str) -> Callable[[World], None]:
    def check(w: World) -> None:
        assert resolve_in_root(w.root, w.sub(rel)).read_text() == data

    return check


def _refused_with(kind: type[BaseException]) -> str:
    return kind.__name__


DEEP = "/".join(f"{i:03d}" + "x" * 96 for i in range(50))  # > PATH_MAX (4096) in total


CASES: dict[str, Case] = {
    # PEERS 1, CVE-2021-29136: the root itself becomes a symlink
    "root-dot-symlink": Case([[{"type": "symlink", "name": ".", "target": "${OUTSIDE}"}],
                              [{"name": "secret", "data": "pwned"}]], ["refuse", "ok"],
                             _file_is("secret", "pwned")),
    "root-dotslash-symlink": Case([[{"type": "symlink", "name": "./", "target": "/"}],
                                   [{"name": "x"}]], ["refuse", "ok"]),
    "root-slash-file": Case([[{"name": "/", "data": "x"}]], "refuse"),
    "root-empty-name-hardlink": Case([[{"name": "t"}, {"type": "hardlink", "name": "",
                                                       "target": "t"}]], "refuse"),
    # PEERS 2, CVE-2014-6407: relative links out
    "symlink-up-and-write": Case([[{"type": "symlink", "name": "a", "target": "../../.."},
                                   {"name": "a/secret", "data": "pwned"}]], "ok",
                                 _file_is("secret", "pwned")),
    "symlink-to-sibling-canary": Case([[{"type": "symlink", "name": "a", "target": "../outside"},
                                        {"name": "a/secret", "data": "pwned"}]], "ok",
                                      _file_is("outside/secret", "pwned")),
    "hardlink-absolute-outside": Case([[{"type": "hardlink", "name": "h",
                                         "target": "${OUTSIDE}/secret"}]], "refuse"),
    "hardlink-relative-outside": Case([[{"type": "hardlink", "name": "h",
                                         "target": "../outside/secret"}]], "refuse"),
    "hardlink-via-symlink-dir": Case([[{"type": "symlink", "name": "l", "target": "${OUTSIDE}"},
                                       {"type": "hardlink", "name": "h", "target": "l/secret"}]],
                                     "refuse"),
    "hardlink-via-dotdot-symlink": Case([[{"type": "symlink", "name": "l", "target": ".."},
                                          {"type": "hardlink", "name": "h",
                                           "target": "l/outside/secret"}]], "refuse"),
    # PEERS 3, CVE-2014-9356: absolute symlinks resolve against the rootfs
    "absolute-symlink-parent": Case([[{"type": "symlink", "name": "lib",
                                       "target": "${OUTSIDE}"},
                                      {"name": "lib/secret", "data": "pwned"}]], "ok",
                                    _file_is("${OUTSIDE}/secret", "pwned")),
    # PEERS 13/14, CVE-2021-32760: chmod/chown/utime through a symlink
    "file-over-symlink-chmod": Case([[{"type": "symlink", "name": "l",
                                       "target": "${OUTSIDE}/secret"}],
                                     [{"name": "l", "mode": 0o777, "uid": 1, "mtime": 5}]], "ok"),
    "dir-over-symlink-chmod": Case([[{"type": "symlink", "name": "d", "target": "${OUTSIDE}"}],
                                    [{"type": "dir", "name": "d", "mode": 0o777, "uid": 7}]],
                                   "ok"),
    "symlink-metadata-not-followed": Case([[{"type": "symlink", "name": "l",
                                             "target": "${OUTSIDE}/secret", "mode": 0o777,
                                             "uid": 9, "gid": 9, "mtime": 3}]], "ok"),
    "hardlink-to-symlink-with-mode": Case([[{"type": "symlink", "name": "l",
                                             "target": "${OUTSIDE}/perm400"},
                                            {"type": "hardlink", "name": "h", "target": "l",
                                             "mode": 0o777}]], "ok"),
    "xattr-through-symlink": Case([[{"type": "symlink", "name": "l",
                                     "target": "${OUTSIDE}/secret",
                                     "xattrs": {"user.pwned": b"1"}}]], "ok"),
    "device-through-symlink-parent": Case([[{"type": "symlink", "name": "dev",
                                             "target": "${OUTSIDE}"},
                                            {"type": "char", "name": "dev/null", "devmajor": 1,
                                             "devminor": 3},
                                            {"type": "fifo", "name": "dev/fifo"}]], "ok"),
    # PEERS 15, CVE-2018-15664: a directory swapped for a symlink between entries
    "dir-swapped-for-symlink": Case([[{"type": "dir", "name": "d"}, {"name": "d/a"},
                                      {"type": "symlink", "name": "d", "target": "${OUTSIDE}"},
                                      {"name": "d/secret", "data": "pwned"}]], "ok",
                                    _file_is("${OUTSIDE}/secret", "pwned")),
    "dir-swapped-for-dotdot-symlink": Case([[{"name": "x/y/z"}, {"type": "symlink", "name": "x/y",
                                                                 "target": "../../.."},
                                             {"name": "x/y/outside/secret", "data": "p"}]], "ok",
                                           _file_is("outside/secret", "p")),
    "file-swapped-for-symlink": Case([[{"name": "f"}, {"type": "symlink", "name": "f",
                                                       "target": "${OUTSIDE}/secret"},
                                       {"name": "f", "data": "pwned"}]], "ok"),
    # PEERS 20, CVE-2007-4559: .. and absolute names
    "dotdot-name": Case([[{"name": "../outside/secret", "data": "pwned"}]], "refuse"),
    "slash-dotdot-name": Case([[{"name": "/../outside/secret", "data": "pwned"}]], "refuse"),
    "inner-dotdot-name": Case([[{"name": "a/../../outside/secret", "data": "pwned"}]], "refuse"),
    "dotdot-dir": Case([[{"type": "dir", "name": "..", "mode": 0o777}]], "refuse"),
    "dotdot-symlink-name": Case([[{"type": "symlink", "name": "..", "target": "/"}]], "refuse"),
    "absolute-name-is-inside": Case([[{"name": "${OUTSIDE}/secret", "data": "inside"}]], "ok",
                                    _file_is("${OUTSIDE}/secret", "inside")),
    "lexical-dotdot-inside": Case([[{"name": "a/b/../../c", "data": "c"}]], "ok",
                                  _file_is("c", "c")),
    # PEERS 21: long (> PATH_MAX) paths and symlink chains
    "deep-path-then-dotdot-symlink": Case([[{"type": "dir", "name": DEEP},
                                            {"type": "symlink", "name": DEEP + "/up",
                                             "target": "../" * 80 + "outside"},
                                            {"name": DEEP + "/up/secret", "data": "deep"}]],
                                          "ok", _file_is("outside/secret", "deep")),
    "symlink-chain-300": Case([[*({"type": "symlink", "name": f"s{i}", "target": f"s{i + 1}"}
                                  for i in range(300)),
                                {"type": "dir", "name": "s300"},
                                {"name": "s0/x"}]], "refuse"),
    "symlink-chain-50-ok": Case([[*({"type": "symlink", "name": f"s{i}", "target": f"/s{i + 1}"}
                                    for i in range(50)),
                                  {"type": "dir", "name": "s50"}, {"name": "s0/x", "data": "x"}]],
                                "ok", _file_is("s50/x", "x")),
    "symlink-loop": Case([[{"type": "symlink", "name": "a", "target": "b"},
                           {"type": "symlink", "name": "b", "target": "a"},
                           {"name": "a/x"}]], "refuse"),
    "symlink-self-growing": Case([[{"type": "symlink", "name": "l", "target": "l/l/l"},
                                   {"name": "l/x"}]], "refuse"),
    "long-symlink-targets": Case([[{"type": "symlink", "name": "l",
                                    "target": "/" + "./" * 2000 + "${OUTSIDE}"},
                                   {"name": "l/secret", "data": "p"}]], "either"),
    # PEERS 23, CVE-2025-45582: the two-step version across layers
    "two-step-symlink": Case([[{"type": "symlink", "name": "x", "target": "../../outside"}],
                              [{"name": "x/secret", "data": "pwned"}]], "ok",
                             _file_is("outside/secret", "pwned")),
    "two-step-root-symlink-abs": Case([[{"type": "symlink", "name": "x", "target": "/"}],
                                       [{"name": "x/${OUTSIDE}/secret", "data": "p"}]], "ok"),
    # PEERS 25: whiteouts
    "whiteout-through-symlink": Case([[{"type": "symlink", "name": "l", "target": "${OUTSIDE}"}],
                                      [{"name": "l/.wh.secret"}, {"name": "l/.wh.d"}]], "ok"),
    "whiteout-through-dotdot-symlink": Case([[{"type": "symlink", "name": "l", "target": ".."}],
                                             [{"name": "l/outside/.wh.secret"}]], "ok"),
    "opaque-through-symlink": Case([[{"type": "symlink", "name": "l", "target": "../outside"}],
                                    [{"name": "l/.wh..wh..opq"}]], "ok"),
    "opaque-through-root-symlink": Case([[{"name": "keep-me"},
                                          {"type": "symlink", "name": "l", "target": "/"}],
                                         [{"name": "l/.wh..wh..opq"}]], "ok"),
    "whiteout-dotdot": Case([[{"name": ".wh.."}]], "refuse"),
    "whiteout-dotdotdot": Case([[{"name": "a/.wh..."}]], "refuse"),
    "whiteout-bare": Case([[{"name": ".wh."}]], "refuse"),
    "whiteout-escaping-name": Case([[{"name": "../.wh.outside"}]], "refuse"),
    "whiteout-lexical-dotdot": Case([[{"name": "t"}], [{"name": "a/../.wh.t"}]], "ok"),
    "whiteout-as-hardlink": Case([[{"name": "t"}],
                                  [{"type": "hardlink", "name": ".wh.t",
                                    "target": "${OUTSIDE}/secret"}]], "ok"),
    "whiteout-as-symlink": Case([[{"type": "symlink", "name": ".wh.x", "target": "${OUTSIDE}"},
                                 {"name": ".wh.x/secret"}]], "refuse"),
    "whiteout-dir-component": Case([[{"name": ".wh.etc/passwd"}]], "refuse"),
    "whiteout-of-symlink-to-dir": Case([[{"type": "symlink", "name": "l",
                                          "target": "${OUTSIDE}"}], [{"name": ".wh.l"}]], "ok"),
    # PEERS 24: overlay xattrs
    "trusted-overlay-xattr": Case([[{"type": "dir", "name": "d",
                                     "xattrs": {"trusted.overlay.opaque": b"y",
                                                "trusted.overlay.redirect": b"/etc"}}]], "ok"),
    # devices named outside
    "device-absolute-name": Case([[{"type": "char", "name": "${OUTSIDE}/null", "devmajor": 1,
                                    "devminor": 3}]], "ok"),
    "devices-rootless": Case([[{"type": "block", "name": "${OUTSIDE}/sda", "devmajor": 8,
                                "devminor": 0}]], "ok", opts={"rootless": True}),
    # replacing a lower hardlink partner must not write through it
    "replace-hardlinked-file": Case([[{"name": "a", "data": "orig"},
                                      {"type": "hardlink", "name": "b", "target": "a"}],
                                     [{"name": "b", "data": "new"}]], "ok",
                                    _file_is("a", "orig")),
    "hardlink-into-removed-tree": Case([[{"name": "d/t"}],
                                        [{"type": "hardlink", "name": "d", "target": "d/t"}]],
                                       ["ok", "refuse"]),
    "nul-in-pax-path": Case([[{"name": "x", "pax": {"path": "a\x00../../outside/secret"}}]],
                            "either"),
}

for _name, _data in malformed_layers().items():
    CASES[f"malformed-{_name}"] = Case([_data], "either")


@pytest.mark.parametrize("name", sorted(CASES))
def test_hostile_case(name: str, world: World, alarm: None) -> None:
    case = CASES[name]
    outcomes = apply_all(world, case.layers, **case.opts)
    expects = case.expect if isinstance(case.expect, list) else [case.expect] * len(outcomes)
    for i, (outcome, expect) in enumerate(zip(outcomes, expects, strict=True)):
        if expect == "ok":
            assert outcome is None, f"layer {i} was refused: {outcome!r}"
        elif expect == "refuse":
            assert outcome is not None, f"layer {i} should have been refused"
    assert_confined(world)
    if case.check is not None:
        case.check(world)


@pytest.mark.parametrize("name", sorted(n for n in CASES if n.startswith("malformed-")))
def test_malformed_tar_is_a_corrupt_stream(name: str, world: World, alarm: None) -> None:
    data = CASES[name].layers[0]
    assert isinstance(data, bytes)
    with pytest.raises(errors.CorruptStreamError, match="layer tar"):
        apply_layer(NonSeekable(data), world.root)
    assert_confined(world)


def test_symlink_chain_is_refused_as_unsafe(world: World, alarm: None) -> None:
    outcomes = apply_all(world, CASES["symlink-loop"].layers)
    assert isinstance(outcomes[0], errors.UnsafeInputError)
    assert "symlinks" in str(outcomes[0])


def test_escape_names_the_member(world: World) -> None:
    outcomes = apply_all(world, [[{"name": "../outside/secret"}]])
    assert isinstance(outcomes[0], errors.UnsafeInputError)
    assert "'../outside/secret'" in str(outcomes[0])
    assert outcomes[0].exit_code == 6


def test_breakout_file_not_written_to_host_tmp(world: World) -> None:
    tname = f"layouttool-breakout-{uuid.uuid4().hex}"
    apply_all(world, [[{"type": "symlink", "name": "foo", "target": "/"},
                       {"name": f"foo/tmp/{tname}", "data": "x"}]])
    assert not Path("/tmp", tname).exists()
    assert (world.root / "tmp" / tname).read_text() == "x"


# -- containerd TestBreakouts ---------------------------------------------------------------

CONTAINERD = "containerd_TestBreakouts.json"
# Cases containerd accepts that we refuse by design (see rootfs module docstring).
CONTAINERD_REFUSED = {
    "HardlinkDirectRelative": errors.UnsafeInputError,  # hardlink target ../../.. escapes
    "SymlinkParentDirectory": errors.UnsafeInputError,  # entry named ".."
    "SymlinkEmptyFilename": errors.UnsafeInputError,  # non-directory root entry
    "WhiteoutDirectoryName": errors.InvalidInputError,  # ".wh.etc/" used as a directory
}


def _containerd_cases() -> list[str]:
    path = shared_fixture("layer-tables", CONTAINERD)
    return [c["name"] for c in json.loads(path.read_text())["cases"]]


def _containerd_ids() -> list[str]:
    try:
        return _containerd_cases()
    except BaseException:  # collection must not die when the fixture is missing
        return ["fixture-missing"]


@pytest.mark.parametrize("name", _containerd_ids())
def test_containerd_breakouts(name: str, world: World, alarm: None) -> None:
    table = json.loads(shared_fixture("layer-tables", CONTAINERD).read_text())
    case = next(c for c in table["cases"] if c["name"] == name)
    tname = f"lt-{uuid.uuid4().hex}"

    def fix(v: Any) -> Any:
        return world.sub(v).replace("TNAME", tname) if isinstance(v, str) else v

    layers: list[Layer] = [[{k: fix(v) for k, v in e.items()} for e in layer]
                           for layer in case["layers"]]
    outcomes = apply_all(world, layers)
    assert_confined(world)
    expect = case["expect"]
    failures = [o for o in outcomes if o is not None]
    if "error" in expect:
        assert failures and all(isinstance(o, errors.InvalidInputError) for o in failures)
        return
    if name in CONTAINERD_REFUSED:
        assert failures and isinstance(failures[0], CONTAINERD_REFUSED[name])
        return
    assert not failures, failures
    for check in expect["checks"]:
        kind = check["check"]
        if kind == "file_value":
            assert resolve_in_root(world.root, fix(check["path"])).read_text() == check["data"]
        elif kind in ("same_file", "not_same_file"):
            a = resolve_in_root(world.root, fix(check["a"])).stat().st_ino
            b = resolve_in_root(world.root, fix(check["b"])).stat().st_ino
            assert (a == b) == (kind == "same_file")
        elif kind == "same_symlink":
            a = resolve_in_root(world.root, fix(check["a"]), follow_final=False)
            b = resolve_in_root(world.root, fix(check["b"]), follow_final=False)
            assert a.is_symlink() and b.is_symlink() and os.readlink(a) == os.readlink(b)
        elif kind == "not_exists":
            assert not os.path.lexists(resolve_in_root(world.root, fix(check["path"]),
                                                       follow_final=False))
        elif kind == "host_not_written":
            host = Path(fix(check["path"]))
            assert not host.exists() or host.read_text() != check["forbidden_data"]
        elif kind == "host_mode":
            assert stat.S_IMODE(Path(fix(check["path"])).stat().st_mode) == check["mode"]
        else:  # pragma: no cover - a new check kind in the table
            pytest.fail(f"unknown check {kind}")


# -- moby/go-archive TestApplyLayerWhiteouts -------------------------------------------------


def _listing(root: Path) -> list[str]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        out += [os.path.normpath(os.path.join(rel, d)) + "/" for d in dirnames]
        out += [os.path.normpath(os.path.join(rel, f)) for f in filenames]
    return sorted(out)


def test_moby_apply_layer_whiteouts(world: World) -> None:
    table = json.loads(shared_fixture("layer-tables",
                                      "moby-go-archive_TestApplyLayerWhiteouts.json").read_text())
    for step in table["steps"]:
        entries = [{"type": "dir", "name": n, "mode": 0o700} if n.endswith("/")
                   else {"name": n, "mode": 0o600} for n in step["change"]]
        assert apply_all(world, [entries]) == [None]
        assert _listing(world.root) == step["expected"], step["change"]
    assert_confined(world)


# -- umoci whiteout and scoping table --------------------------------------------------------


def _umoci_table() -> dict[str, Any]:
    return json.loads(shared_fixture("layer-tables", "umoci_whiteout_and_scoping.json")
                      .read_text())


def test_umoci_whiteout_cases(tmp_path: Path) -> None:
    table = _umoci_table()
    assert len(table["whiteout_cases"]) == 10
    for i, case in enumerate(table["whiteout_cases"]):
        root = tmp_path / f"case{i}"
        root.mkdir()
        lower = []
        for desc in case.get("lower", []):
            path = desc.split(" (")[0]
            if path.endswith("/"):
                lower += [{"type": "dir", "name": path, "mtime": 1000},
                          {"name": path + "sub/file"}, {"name": path + "file2"}]
            else:
                lower.append({"name": path})
        if lower:
            apply_layer(NonSeekable(build_layer(lower)), root)
        parent = Path(root, case["whiteout_entry"]).parent
        before = parent.stat() if parent.exists() else None
        layer = NonSeekable(build_layer([{"name": case["whiteout_entry"]}]))
        if case["expect"].startswith("error"):
            with pytest.raises(errors.InvalidInputError):
                apply_layer(layer, root)
            continue
        apply_layer(layer, root)
        target = case["lower"][0].split(" (")[0].rstrip("/")
        assert not os.path.lexists(root / target), case["name"]
        assert before is not None
        after = parent.stat()
        assert (after.st_mtime_ns, after.st_mode) == (before.st_mtime_ns, before.st_mode)
        assert not [p for p in _listing(root) if ".wh." in p]


@pytest.mark.parametrize("target", ["/", "/../", "/../../../../../../../../../../../../../../../",
                                    "/./.././../", ".."])
def test_umoci_symlink_scoping(world: World, target: str) -> None:
    names = {c["name"] for c in _umoci_table()["path_scoping_cases"]}
    assert "SymlinkScoping" in names
    assert apply_all(world, [[{"type": "symlink", "name": "link", "target": target}],
                             [{"name": "link/file", "data": "scoped"}]]) == [None, None]
    assert (world.root / "file").read_text() == "scoped"
    assert_confined(world)


@pytest.mark.parametrize("entry", ["/../file", "../file"])
def test_umoci_garbage_prefix_refused_not_clamped(world: World, entry: str) -> None:
    # umoci clamps these into the rootfs; we refuse them (module docstring)
    names = {c["entry"] for c in _umoci_table()["path_scoping_cases"] if "entry" in c}
    assert entry in names
    outcomes = apply_all(world, [[{"name": entry, "data": "x"}]])
    assert isinstance(outcomes[0], errors.UnsafeInputError)
    assert not (world.base / "file").exists()
    assert_confined(world)


def test_struct_sanity_of_raw_headers() -> None:
    # the raw-header helper must produce headers tarfile itself accepts
    import io

    data = member("hello", b"world") + END
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        names = tar.getnames()
    assert names == ["hello"]
    assert struct.calcsize("512s") == 512
