"""The unpack record (layouttool.rootfs.record): what apply wrote, read back exactly; where each
file's bytes are in its layer; the image's owners kept for rootless unpacks; bad files refused."""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path

import pytest
from layerbuild import build_layer

from layouttool import errors
from layouttool.rootfs import ApplyOptions, apply_layer
from layouttool.rootfs.record import Facts, Record, encode_record, record_path, snapshot

LAYER = [
    {"type": "dir", "name": "etc/"},
    {"name": "etc/passwd", "data": "root:x:0:0\n", "uid": 1000, "gid": 50,
     "xattrs": {"user.k": b"v"}},
    {"type": "hardlink", "name": "etc/passwd.bak", "target": "etc/passwd"},
    {"type": "symlink", "name": "lnk", "target": "/etc/passwd"},
    {"name": "a/b/deep", "data": b"\x00" * 3000},  # missing parents made by unpack
]


def applied(tmp_path: Path, *, rootless: bool) -> tuple[Path, Facts, bytes]:
    root = tmp_path / "rootfs"
    root.mkdir()
    data = build_layer(LAYER)
    facts = Facts()
    apply_layer(io.BytesIO(data), root, ApplyOptions(rootless=rootless), on_entry=facts.hook(0))
    return root, facts, data


def write_record(root: Path, facts: Facts, *, rootless: bool) -> Path:
    path = record_path(root)
    path.write_bytes(b"".join(encode_record({"image": "x"}, root, facts, rootless=rootless)))
    return path


@pytest.mark.parametrize("rootless", [False, True])
def test_round_trip_and_facts(tmp_path: Path, rootless: bool) -> None:
    root, facts, data = applied(tmp_path, rootless=rootless)
    path = write_record(root, facts, rootless=rootless)
    assert path == tmp_path / "rootfs.layouttool-unpack"
    with Record(path) as rec:
        assert rec.header == {"version": 1, "image": "x"}
        entries = {e.path: e for e in rec}
    assert entries == {e.path: e for e in snapshot(root, facts, rootless=rootless)}
    assert [k for k in entries] == sorted(entries, key=lambda p: p.split(b"/"))
    assert set(entries) == {b"", b"a", b"a/b", b"a/b/deep", b"etc", b"etc/passwd",
                            b"etc/passwd.bak", b"lnk"}
    pw = entries[b"etc/passwd"]
    st = os.lstat(root / "etc" / "passwd")
    assert (pw.ino, pw.ctime_ns, pw.size, pw.nlink) == (st.st_ino, st.st_ctime_ns, 11, 2)
    # the image's owner, even when the disk could not take it
    assert (pw.uid, pw.gid) == (1000, 50)
    assert entries[b"etc/passwd.bak"].uid == 1000  # a hardlink is the inode it links to
    assert pw.xattrs == {"user.k": b"v"} and entries[b"lnk"].link == b"/etc/passwd"
    # where the bytes are: the layer tar at that offset holds exactly the file
    assert data[pw.src_offset:pw.src_offset + pw.size] == b"root:x:0:0\n"
    assert pw.src_layer == 0 and entries[b"etc"].src_layer == -1
    assert entries[b"a"].mode & 0o777 == 0o755 and stat.S_ISDIR(entries[b"a"].mode)
    if rootless:
        assert (entries[b"a"].uid, entries[b"a"].gid) == (0, 0)


def test_bad_records_are_refused(tmp_path: Path) -> None:
    root, facts, _ = applied(tmp_path, rootless=True)
    path = write_record(root, facts, rootless=True)
    good = path.read_bytes()
    path.write_bytes(good[:-20])
    with pytest.raises(errors.CorruptStreamError), Record(path) as rec:
        list(rec)
    path.write_bytes(b"not a record at all")
    with pytest.raises(errors.InvalidInputError, match="not a layouttool unpack record"):
        Record(path)
    path.unlink()
    with pytest.raises(errors.NotFoundError):
        Record(path)


def test_no_place_beside_the_filesystem_root() -> None:
    with pytest.raises(errors.InvalidInputError):
        record_path(Path("/"))
