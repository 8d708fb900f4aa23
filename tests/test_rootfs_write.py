"""Making layer tars (layouttool.rootfs.write): a directory walked into a tar that apply turns
back into the same tree, tars passed through byte for byte while checked, tars rewritten."""

from __future__ import annotations

import io
import os
import socket
import stat
import tarfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from layerbuild import build_layer
from treeutil import diff, snapshot

from layouttool import errors
from layouttool.rootfs import ApplyOptions, apply_layer
from layouttool.rootfs.write import (
    CheckedTar,
    TarEntry,
    TarStream,
    link_hardlinks,
    retar,
    walk_tree,
)

ROOT = os.geteuid() == 0


def keep(_rel: str, st_: os.stat_result) -> tuple[int, int]:
    return st_.st_uid, st_.st_gid


def tar_of(src: Path, **kw: object) -> tuple[bytes, list[str]]:
    warns: list[str] = []
    opts = {"owner": keep, **kw}
    stream = TarStream(link_hardlinks(walk_tree(src, warn=warns.append, **opts)))  # type: ignore[arg-type]
    return read_all(stream), warns


def read_all(r: object, size: int = 100_000) -> bytes:
    out = bytearray()
    while chunk := r.read(size):  # type: ignore[attr-defined]
        out += chunk
    return bytes(out)


def members(data: bytes) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return tar.getmembers()


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    (src / "etc" / "sub").mkdir(parents=True)
    (src / "etc" / "passwd").write_text("root:x:0:0\n")
    (src / "etc" / "big").write_bytes(os.urandom(300_000))
    (src / "etc" / "empty").write_bytes(b"")
    os.link(src / "etc" / "passwd", src / "etc" / "sub" / "passwd.link")
    os.symlink("/etc/passwd", src / "abs-link")
    os.symlink("../passwd", src / "etc" / "sub" / "rel-link")
    os.symlink("nowhere", src / "dangling")
    os.mkfifo(src / "fifo")
    (src / "setuid").write_text("#!/bin/sh\n")
    os.chmod(src / "setuid", 0o4755)
    (src / "dir700").mkdir(mode=0o700)
    os.setxattr(src / "etc" / "passwd", "user.note", b"\x00\xffbinary")
    os.utime(src / "etc" / "passwd", ns=(1, 1_700_000_000_123_456_789))
    return src


def test_walked_tree_unpacks_to_the_same_tree(tree: Path, tmp_path: Path) -> None:
    data, warns = tar_of(tree)
    assert warns == []
    out = tmp_path / "out"
    out.mkdir()
    apply_layer(io.BytesIO(data), out, ApplyOptions(rootless=not ROOT))
    assert diff(snapshot(tree, mtimes=True, owners=ROOT), snapshot(out, mtimes=True,
                                                                  owners=ROOT)) == []
    assert os.getxattr(out / "etc" / "passwd", "user.note") == b"\x00\xffbinary"
    # whole seconds, as Docker writes them
    assert os.stat(out / "etc" / "passwd").st_mtime_ns == 1_700_000_000_000_000_000


def test_walk_order_names_and_hardlinks(tree: Path) -> None:
    data, _ = tar_of(tree)
    ms = members(data)
    names = [m.name for m in ms]
    assert names == sorted(names, key=lambda n: [os.fsencode(p) for p in n.split("/")])
    assert "." not in names and not any(n.startswith(("./", "/")) for n in names)
    link = next(m for m in ms if m.name == "etc/sub/passwd.link")
    assert link.islnk() and link.linkname == "etc/passwd"
    assert next(m for m in ms if m.name == "abs-link").linkname == "/etc/passwd"
    assert all(m.uname == "" and m.gname == "" for m in ms)
    assert data.endswith(bytes(1024)) and len(data) % 512 == 0


def test_same_tree_same_bytes_whatever_the_creation_order(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    for root, names in ((a, ["z", "a", "m"]), (b, ["m", "z", "a"])):
        root.mkdir()
        for n in names:
            (root / n).write_text(n)
            os.utime(root / n, (5, 5))
    assert tar_of(a)[0] == tar_of(b)[0]


def test_prefix_owner_and_clamp(tree: Path) -> None:
    data, _ = tar_of(tree, prefix="opt/app", owner=lambda _r, _s: (7, 8), clamp=100)
    ms = members(data)
    assert all(m.name.startswith("opt/app/") for m in ms)
    assert all((m.uid, m.gid) == (7, 8) and m.mtime <= 100 for m in ms)
    link = next(m for m in ms if m.name == "opt/app/etc/sub/passwd.link")
    assert link.linkname == "opt/app/etc/passwd"


def test_symlinked_directory_is_stored_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("no")
    src = tmp_path / "src"
    src.mkdir()
    os.symlink(outside, src / "escape")
    names = [m.name for m in members(tar_of(src)[0])]
    assert names == ["escape"]


def test_socket_is_skipped_with_a_warning(tmp_path: Path) -> None:
    src = tmp_path / "s"
    src.mkdir()
    s = socket.socket(socket.AF_UNIX)
    try:
        s.bind(str(src / "sock"))
        data, warns = tar_of(src)
    finally:
        s.close()
    assert members(data) == [] and any("sock" in w for w in warns)


@pytest.mark.skipif(not ROOT, reason="mknod needs root")
def test_devices_are_kept(tmp_path: Path) -> None:
    src = tmp_path / "d"
    src.mkdir()
    os.mknod(src / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    m = members(tar_of(src)[0])[0]
    assert m.ischr() and (m.devmajor, m.devminor) == (1, 3)


def test_a_file_that_shrinks_while_read_is_a_conflict() -> None:
    e = TarEntry("f", tarfile.REGTYPE, size=10, content=lambda: io.BytesIO(b"short"))
    with pytest.raises(errors.ConflictError, match="shrank"):
        read_all(TarStream([e]))


# ------------------------------------------------------------------------ CheckedTar

GOOD = [
    {"type": "dir", "name": "etc/"},
    {"name": "etc/passwd", "data": "root\n"},
    {"type": "hardlink", "name": "etc/passwd2", "target": "etc/passwd"},
    {"type": "symlink", "name": "etc/abs", "target": "/etc/passwd"},
    {"name": "etc/.wh.old"},
    {"name": "var/.wh..wh..opq"},
    {"name": "big", "data": os.urandom((1 << 20) + 7)},
]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sizes=st.lists(st.integers(min_value=1, max_value=2 << 20), min_size=1, max_size=8),
       junk=st.binary(max_size=700))
def test_checked_tar_passes_bytes_through_unchanged(sizes: list[int], junk: bytes) -> None:
    data = build_layer(GOOD) + junk  # trailing bytes are part of the layer too
    ck = CheckedTar(io.BytesIO(data), warn=lambda _m: None)
    out = bytearray()
    i = 0
    while chunk := ck.read(sizes[i % len(sizes)]):
        assert len(chunk) <= sizes[i % len(sizes)]
        out += chunk
        i += 1
    assert bytes(out) == data and ck.entries == len(GOOD)


@pytest.mark.parametrize(
    ("entries", "error", "match"),
    [
        ([{"name": "../evil"}], errors.UnsafeInputError, "escapes"),
        ([{"name": "/../../evil"}], errors.UnsafeInputError, "escapes"),
        ([{"type": "symlink", "name": ".", "target": "/tmp"}], errors.UnsafeInputError, "root"),
        ([{"name": "a"}, {"name": "./a"}], errors.InvalidInputError, "twice"),
        ([{"name": "d/.wh."}], errors.InvalidInputError, "whiteout"),
        ([{"name": ".wh.d/x"}], errors.InvalidInputError, "directory"),
        ([{"name": "d/.wh..wh.plnk"}], errors.InvalidInputError, "AUFS"),
        ([{"type": "symlink", "name": "l", "target": ""}], errors.InvalidInputError, "empty"),
        ([{"type": "hardlink", "name": "h", "target": "missing"}], errors.InvalidInputError,
         "earlier"),
        ([{"type": "dir", "name": "d/"}, {"type": "hardlink", "name": "h", "target": "d"}],
         errors.InvalidInputError, "earlier"),
        ([{"type": "hardlink", "name": "h", "target": "../x"}], errors.UnsafeInputError,
         "escapes"),
        ([{"type": b"V", "name": "label"}], errors.InvalidInputError, "type"),
    ],
)
def test_checked_tar_refuses_what_unpack_refuses(entries: list[dict[str, object]],
                                                 error: type[Exception], match: str) -> None:
    ck = CheckedTar(io.BytesIO(build_layer(entries)), warn=lambda _m: None)
    with pytest.raises(error, match=match):
        read_all(ck)


def test_checked_tar_truncated_is_corrupt() -> None:
    data = build_layer([{"name": "f", "data": b"x" * 5000}])
    with pytest.raises(errors.CorruptStreamError):
        read_all(CheckedTar(io.BytesIO(data[:1500]), warn=lambda _m: None))


def test_checked_tar_bad_header_is_corrupt() -> None:
    data = bytearray(build_layer([{"name": "a", "data": b"x"}, {"name": "b"}]))
    data[1024 + 148:1024 + 156] = b"garbage!"  # checksum of the second header
    with pytest.raises(errors.CorruptStreamError):
        read_all(CheckedTar(io.BytesIO(bytes(data)), warn=lambda _m: None))


# ------------------------------------------------------------------------ retar

def test_retar_prefixes_names_and_hardlink_targets_and_sets_owners() -> None:
    src = build_layer([
        {"type": "dir", "name": "./"},
        {"name": "./bin/tool", "data": "t", "uid": 5, "mode": 0o755},
        {"type": "hardlink", "name": "bin/tool2", "target": "./bin/tool"},
        {"type": "symlink", "name": "bin/sh", "target": "/bin/busybox"},
    ])
    stream = TarStream(retar(io.BytesIO(src), prefix="opt/x", owner=(1, 2), warn=print))
    ms = members(read_all(stream))
    assert [m.name for m in ms] == ["opt/x", "opt/x/bin/tool", "opt/x/bin/tool2", "opt/x/bin/sh"]
    assert ms[2].linkname == "opt/x/bin/tool" and ms[3].linkname == "/bin/busybox"
    assert all((m.uid, m.gid) == (1, 2) for m in ms)
    assert ms[1].mode == 0o755


def test_retar_refuses_sparse_members() -> None:
    sparse = build_layer([{"name": "s", "data": b"abc",
                           "pax": {"GNU.sparse.map": "0,3", "GNU.sparse.realsize": "3",
                                   "GNU.sparse.size": "3"}}])
    with pytest.raises(errors.UnsupportedError, match="sparse"):
        read_all(TarStream(retar(io.BytesIO(sparse), owner=(0, 0), warn=print)))
