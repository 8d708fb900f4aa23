"""The fast tar header (rootfs.ustar) gives tarfile's bytes, or defers to tarfile."""

from __future__ import annotations

import tarfile

from hypothesis import given, settings
from hypothesis import strategies as st

from layouttool.rootfs.ustar import ustar_header

TYPES = [tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.CHRTYPE,
         tarfile.BLKTYPE, tarfile.FIFOTYPE]


def slow(name: str, type: bytes, mode: int, uid: int, gid: int, size: int, mtime: int,
         linkname: str, devmajor: int, devminor: int) -> bytes:
    info = tarfile.TarInfo(name)
    info.type = type
    info.mode = mode
    info.uid, info.gid, info.size, info.mtime = uid, gid, size, mtime
    info.linkname = linkname
    info.devmajor, info.devminor = devmajor, devminor
    info.uname = info.gname = ""
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


names = st.one_of(st.text(min_size=1, max_size=130),
                  st.text(alphabet="abc/._-", min_size=1, max_size=105))
ints = st.one_of(st.integers(0, 8 ** 7 + 2), st.integers(0, 8 ** 11 + 2), st.sampled_from(
    [0, 1, 8 ** 7 - 1, 8 ** 7, 8 ** 11 - 1, 8 ** 11]))


def check(name: str, type: bytes, mode: int, uid: int, gid: int, size: int, mtime: int,
          linkname: str, devmajor: int, devminor: int) -> None:
    """The fast header is tarfile's, or None where tarfile needs more than one block."""
    fast = ustar_header(name, type, mode, uid, gid, size, mtime, linkname, devmajor, devminor)
    try:
        want = slow(name, type, mode, uid, gid, size, mtime, linkname, devmajor, devminor)
    except ValueError:
        assert fast is None  # tarfile refuses it (a device number out of range)
        return
    if fast is not None:
        assert fast == want
    else:
        # deferred only when tarfile needs more than one plain block (PAX records)
        assert len(want) > 512 or type in (tarfile.CHRTYPE, tarfile.BLKTYPE)


#: the edges of every field: a 100-byte name fits, 101 does not (nor 100 plus a directory's
#: "/"), non-ASCII needs PAX; 7 octal digits for ids and device numbers, 11 for size and mtime
EDGE_NAMES = ["a", "d/", "x" * 99, "x" * 100, "x" * 101, "\u00e9t\u00e9", "a/b/c.txt"]
EDGE_LINKS = ["", "t", "y" * 100, "y" * 101, "\u00fc"]
EDGE_IDS = [0, 1, 8 ** 7 - 1, 8 ** 7]
EDGE_BIG = [0, 8 ** 11 - 1, 8 ** 11]


def test_same_bytes_as_tarfile_or_none_at_every_edge() -> None:
    """Every field at each of its edges (the others plain), for every type, name and link:
    about 1,300 headers, deterministic."""
    for type_ in TYPES:
        for name in EDGE_NAMES:
            for link in EDGE_LINKS:
                check(name, type_, 0o644, 0, 0, 0, 0, link, 0, 0)
            for v in EDGE_IDS:
                check(name, type_, 0o7755, v, 0, 0, 0, "", 0, 0)
                check(name, type_, 0o644, 0, v, 0, 0, "", 0, 0)
                check(name, type_, 0o644, 0, 0, 0, 0, "", v, 0)
                check(name, type_, 0o644, 0, 0, 0, 0, "", 0, v)
            for v in EDGE_BIG:
                check(name, type_, 0o600, 0, 0, v, 0, "", 0, 0)
                check(name, type_, 0o600, 0, 0, 0, v, "", 0, 0)


@settings(max_examples=300, deadline=None)
@given(name=names, type=st.sampled_from(TYPES), mode=st.integers(0, 0o177777), uid=ints,
       gid=ints, size=ints, mtime=ints, linkname=st.one_of(st.just(""), names),
       devmajor=st.integers(0, 8 ** 7 + 1), devminor=st.integers(0, 8 ** 7 + 1))
def test_same_bytes_as_tarfile_or_none(name: str, type: bytes, mode: int, uid: int, gid: int,
                                       size: int, mtime: int, linkname: str, devmajor: int,
                                       devminor: int) -> None:
    check(name, type, mode, uid, gid, size, mtime, linkname, devmajor, devminor)


def test_the_common_case_takes_the_fast_path() -> None:
    fast = ustar_header("usr/share/doc/x/README", tarfile.REGTYPE, 0o644, 0, 0, 1234,
                        1_600_000_000, "", 0, 0)
    assert fast is not None and len(fast) == 512
    assert fast == slow("usr/share/doc/x/README", tarfile.REGTYPE, 0o644, 0, 0, 1234,
                        1_600_000_000, "", 0, 0)
    assert ustar_header("d", tarfile.DIRTYPE, 0o755, 0, 0, 0, 0, "", 0, 0) == slow(
        "d", tarfile.DIRTYPE, 0o755, 0, 0, 0, 0, "", 0, 0)
    assert ustar_header("\u00e9", tarfile.REGTYPE, 0o644, 0, 0, 0, 0, "", 0, 0) is None
