"""The unpack record: what ``unpack`` left in a root filesystem, so ``repack`` can tell what
the user changed since.

Where: beside the root filesystem, never inside it (the image must not see it):
:func:`record_path` is ``<rootfs>.layouttool-unpack`` in the rootfs's parent directory. For a
bundle (``unpack --bundle DEST``) that is ``DEST/rootfs.layouttool-unpack``; for a plain
``unpack IMAGE DEST`` it is ``DEST.layouttool-unpack`` next to DEST.

What: one entry per path of the tree right after the last layer, depth first with names
sorted by their bytes (the order :mod:`~layouttool.rootfs.scan` walks in), each with what
``lstat`` said (type and mode, size, mtime, ctime, inode, link count, device), the owner the
*image* gave it (a rootless unpack cannot put it on disk, so it is taken from the layer
entry that wrote the path), the symlink target, the xattrs a layer may carry
(``user.*``, ``security.capability``; read only for the paths whose entry had some), and
where a regular file's bytes are in the image (layer number and offset in its uncompressed
tar), so a file that ``stat`` cannot clear can be compared with its original without
hashing every file at unpack time. ``ctime`` is the key: nothing can change a file's
content, mode, owner, xattrs or times without the kernel moving it, so a path whose inode
and ctime are as recorded is unchanged, and only the rest is looked at.

Format: the magic line ``LTUNPACK1``, one JSON header line (the image as named, its
manifest's descriptor, whether the unpack was rootless, the filesystem it was on), then the
entries packed with :mod:`struct`; everything after the magic line is zlib-compressed
(level 1: about 30 bytes per path). Written once, read once, in a single pass each way. The
file sits where anyone may edit it: reading checks that its paths are what a walk of a tree
gives (:func:`_decode`), and the image's layers come from the layout, never from it.
"""

from __future__ import annotations

import json
import os
import stat
import struct
import tarfile
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from layouttool import errors
from layouttool.rootfs.names import WHITEOUT_PREFIX, XATTR_PREFIX
from layouttool.rootfs.write import read_xattrs, sorted_names

__all__ = [
    "RECORD_SUFFIX",
    "Facts",
    "Record",
    "RecordEntry",
    "encode_record",
    "read_entries",
    "record_path",
    "snapshot",
]

RECORD_SUFFIX: Final = ".layouttool-unpack"
MAGIC: Final = b"LTUNPACK1\n"
VERSION: Final = 1
# path length, st_mode, uid, gid, size, mtime_ns, ctime_ns, ino, nlink, rdev, source layer,
# source offset, link target length, xattr blob length
_ENTRY = struct.Struct("<HIIIQqqQIQiQHI")
_XNAME = struct.Struct("<H")
_XVAL = struct.Struct("<I")
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
#: the most a record may claim to hold before a header is refused (a corrupt file)
_MAX_HEADER: Final = 16 << 20
#: the most xattr bytes an entry may claim (Linux lists at most 64 KiB of names, each
#: value at most 64 KiB)
_MAX_XATTRS: Final = 16 << 20
_WHITEOUT: Final = os.fsencode(WHITEOUT_PREFIX)


def record_path(rootfs: Path) -> Path:
    """Where the record of ``rootfs`` lives: beside it, as ``<rootfs>.layouttool-unpack``."""
    rootfs = Path(os.path.abspath(rootfs))  # noqa: PTH100 - no symlink resolution wanted
    if rootfs.parent == rootfs:
        raise errors.InvalidInputError(f"{rootfs}: a filesystem root has no place beside it")
    return rootfs.parent / (rootfs.name + RECORD_SUFFIX)


@dataclass(frozen=True, slots=True)
class RecordEntry:
    """One path as unpack left it (``path`` relative, ``b""`` for the root; ``key`` its
    components, the sort key of the walk)."""

    key: tuple[bytes, ...]
    path: bytes
    mode: int
    uid: int
    gid: int
    size: int
    mtime_ns: int
    ctime_ns: int
    ino: int
    nlink: int
    rdev: int
    #: layer number and offset of a regular file's bytes in its uncompressed tar (-1: unknown)
    src_layer: int = -1
    src_offset: int = 0
    link: bytes = b""
    xattrs: dict[str, bytes] = field(default_factory=dict)


class Facts:
    """What the layers said about each path, collected while they are applied (the
    ``on_entry`` hook of :func:`~layouttool.rootfs.apply.apply_layer`)."""

    def __init__(self) -> None:
        #: canonical path -> (uid, gid, source layer, source offset, has xattrs)
        self.by_path: dict[str, tuple[int, int, int, int, bool]] = {}

    def hook(self, layer: int) -> Callable[[str, tarfile.TarInfo | None, str | None], None]:
        """The hook to pass to ``apply_layer`` for layer number ``layer``."""
        facts = self.by_path

        def on_entry(path: str, m: tarfile.TarInfo | None, link_src: str | None) -> None:
            if m is None:
                # a parent unpack made: no layer said anything about it (what a layer said
                # about the path before, a whiteout or this directory removed)
                facts.pop(path, None)
                return
            if link_src is not None:
                # a hardlink is the inode it links to: that file's owner, bytes and xattrs
                facts[path] = facts.get(link_src, (0, 0, -1, 0, True))
                return
            src = m.offset_data if m.isreg() and m.sparse is None else -1
            has_x = any(k.startswith(XATTR_PREFIX) for k in m.pax_headers)
            facts[path] = (m.uid, m.gid, layer if src >= 0 else -1, max(src, 0), has_x)

        return on_entry


def snapshot(rootfs: Path, facts: Facts, *, rootless: bool) -> Iterator[RecordEntry]:
    """The record entries of ``rootfs`` now (the root first, then depth first, sorted)."""
    return read_entries(b"".join(_snapshot_bytes(rootfs, facts, rootless)), str(rootfs))


def _snapshot_bytes(rootfs: Path, facts: Facts, rootless: bool) -> Iterator[bytes]:
    """The packed entries of ``rootfs`` now, in pieces of about 1 MiB (one pass, no
    per-entry objects: this runs at the end of every unpack)."""
    buf = bytearray()
    top = os.open(rootfs, _DIR_FLAGS)
    try:
        _pack(buf, top, ".", b"", os.fstat(top), facts.by_path.get(""), rootless)
        stack: list[tuple[int, str, bytes, list[str], int]] = []
        fd, rel, brel, names, i = top, "", b"", sorted_names(top), 0
        while True:
            if i == len(names):
                if fd != top:
                    os.close(fd)
                if not stack:
                    break
                fd, rel, brel, names, i = stack.pop()
                continue
            name = names[i]
            i += 1
            path = f"{rel}/{name}" if rel else name
            bname = os.fsencode(name)
            bpath = brel + b"/" + bname if brel else bname
            st = os.stat(name, dir_fd=fd, follow_symlinks=False)
            _pack(buf, fd, name, bpath, st, facts.by_path.get(path), rootless)
            if len(buf) >= 1 << 20:
                yield bytes(buf)
                buf.clear()
            if stat.S_ISDIR(st.st_mode):
                sub = os.open(name, _DIR_FLAGS, dir_fd=fd)
                stack.append((fd, rel, brel, names, i))
                fd, rel, brel, names, i = sub, path, bpath, sorted_names(sub), 0
    except BaseException:
        for entry in stack:
            if entry[0] != top:
                os.close(entry[0])
        if fd != top:
            os.close(fd)
        raise
    finally:
        os.close(top)
    yield bytes(buf)


def _pack(buf: bytearray, dir_fd: int, name: str, bpath: bytes, st: os.stat_result,
          known: tuple[int, int, int, int, bool] | None, rootless: bool) -> None:
    mode = st.st_mode
    if known is not None:
        uid, gid, layer, offset, has_x = known
    else:
        # made by unpack itself (a missing parent, the root) or there before (--force)
        uid, gid = (0, 0) if rootless else (st.st_uid, st.st_gid)
        layer, offset, has_x = -1, 0, True
    link = b""
    xblob = b""
    if stat.S_ISLNK(mode):
        link = os.fsencode(os.readlink(name, dir_fd=dir_fd))
    elif has_x:
        xblob = _xattr_blob(read_xattrs(f"/proc/self/fd/{dir_fd}/{name}"))
    if not stat.S_ISREG(mode):
        layer, offset = -1, 0
    buf += _ENTRY.pack(len(bpath), mode, uid, gid, st.st_size, st.st_mtime_ns, st.st_ctime_ns,
                       st.st_ino, st.st_nlink, st.st_rdev, layer, offset, len(link),
                       len(xblob))
    buf += bpath
    buf += link
    buf += xblob


def _xattr_blob(xattrs: dict[str, bytes]) -> bytes:
    return b"".join(
        _XNAME.pack(len(kb)) + kb + _XVAL.pack(len(v)) + v
        for kb, v in sorted((k.encode("utf-8", "surrogateescape"), v) for k, v in xattrs.items())
    )


def encode_record(header: dict[str, Any], rootfs: Path, facts: Facts, *, rootless: bool
                  ) -> Iterator[bytes]:
    """The record file of ``rootfs`` now, in pieces: magic, then the compressed header and
    entries (see the module docstring)."""
    yield MAGIC
    z = zlib.compressobj(1)
    head = json.dumps({"version": VERSION, **header}, separators=(",", ":")).encode()
    yield z.compress(head + b"\n")
    for piece in _snapshot_bytes(rootfs, facts, rootless):
        yield z.compress(piece)
    yield z.flush()


class _Inflater:
    """Exact-size reads of the decompressed body of a record file."""

    def __init__(self, f: Any, what: str) -> None:
        self._f = f
        self._z = zlib.decompressobj()
        self._buf = bytearray()
        self._what = what

    def _fill(self, n: int) -> bool:
        while len(self._buf) < n:
            raw = self._f.read(1 << 20)
            if not raw:
                self._buf += self._z.flush()
                return len(self._buf) >= n
            try:
                self._buf += self._z.decompress(raw)
            except zlib.error as exc:
                raise errors.CorruptStreamError(f"{self._what}: corrupt: {exc}") from exc
        return True

    def read(self, n: int) -> bytes | None:
        """Exactly ``n`` bytes; None at a clean end; an error in the middle of an entry."""
        if not self._fill(n):
            if self._buf:
                raise errors.CorruptStreamError(f"{self._what}: truncated")
            return None
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out

    def line(self) -> bytes:
        """Up to the first newline (the header)."""
        while b"\n" not in self._buf:
            if len(self._buf) > _MAX_HEADER or not self._fill(len(self._buf) + 1):
                raise errors.CorruptStreamError(f"{self._what}: no header")
        i = self._buf.index(b"\n")
        out = bytes(self._buf[:i])
        del self._buf[:i + 1]
        return out


class Record:
    """An open record file: ``header`` at once, the entries as they are iterated (once).
    Close it (or use it as a context manager); exhausting the entries closes it too."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._f = path.open("rb")
        except FileNotFoundError:
            raise errors.NotFoundError(f"{path}: no unpack record") from None
        except OSError as exc:
            raise errors.from_oserror(exc, "read unpack record", path) from exc
        try:
            if self._f.read(len(MAGIC)) != MAGIC:
                raise errors.InvalidInputError(f"{path}: not a layouttool unpack record")
            self._inf = _Inflater(self._f, str(path))
            try:
                header = json.loads(self._inf.line())
            except ValueError as exc:
                raise errors.InvalidInputError(f"{path}: bad header: {exc}") from exc
            if not isinstance(header, dict) or header.get("version") != VERSION:
                raise errors.InvalidInputError(f"{path}: unknown record version")
        except BaseException:
            self._f.close()
            raise
        self.header: dict[str, Any] = header

    def close(self) -> None:
        """Close the file."""
        self._f.close()

    def __enter__(self) -> Record:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __iter__(self) -> Iterator[RecordEntry]:
        try:
            yield from _decode(self._inf.read, str(self.path))
        finally:
            self.close()


def _decode(read: Callable[[int], bytes | None], what: str) -> Iterator[RecordEntry]:
    """The entries, each checked to be what a walk of a tree gives (the file sits beside
    the rootfs, where anyone may edit it, and its paths become whiteouts): the root first,
    then names that are names (no empty, ``.``, ``..`` or ``.wh.`` component), in strictly
    increasing order, each inside a directory listed before it."""
    #: the directories on the way to the last entry: their keys, root first
    dirs: list[tuple[bytes, ...]] = []
    prev: tuple[bytes, ...] | None = None
    while (head := read(_ENTRY.size)) is not None:
        (plen, mode, uid, gid, size, mtime, ctime, ino, nlink, rdev, layer, offset, llen,
         xlen) = _ENTRY.unpack(head)
        if xlen > _MAX_XATTRS:
            raise errors.InvalidInputError(f"{what}: an entry claims {xlen} bytes of xattrs")
        rest = read(plen + llen + xlen) if plen + llen + xlen else b""
        if rest is None:
            raise errors.CorruptStreamError(f"{what}: truncated")
        path = rest[:plen]
        key = _check_key(path, prev, dirs, what)
        if stat.S_ISDIR(mode):
            dirs.append(key)
        prev = key
        yield RecordEntry(key, path, mode, uid, gid, size, mtime, ctime, ino, nlink, rdev,
                          layer, offset, rest[plen:plen + llen],
                          _xattrs(rest[plen + llen:], path, what))


def _check_key(path: bytes, prev: tuple[bytes, ...] | None, dirs: list[tuple[bytes, ...]],
               what: str) -> tuple[bytes, ...]:
    """``path``'s key, if it may follow ``prev`` (see :func:`_decode`)."""
    if prev is None:
        if path:
            raise errors.InvalidInputError(f"{what}: it does not start with the root")
        return ()
    key = tuple(path.split(b"/"))
    for comp in key:
        if comp in (b"", b".", b"..") or comp.startswith(_WHITEOUT) or b"\0" in comp:
            raise errors.InvalidInputError(f"{what}: bad path {path!r}")
    if key <= prev:
        raise errors.InvalidInputError(f"{what}: {path!r} is out of order")
    while dirs and dirs[-1] != key[:len(dirs[-1])]:
        dirs.pop()
    if not dirs or len(dirs[-1]) != len(key) - 1:
        raise errors.InvalidInputError(f"{what}: {path!r} is not inside a directory")
    return key


def read_entries(data: bytes, what: str) -> Iterator[RecordEntry]:
    """The entries packed in ``data`` (uncompressed)."""
    pos = 0

    def read(n: int) -> bytes | None:
        nonlocal pos
        if pos >= len(data):
            return None
        if pos + n > len(data):
            raise errors.CorruptStreamError(f"{what}: truncated")
        out = data[pos:pos + n]
        pos += n
        return out

    return _decode(read, what)


def _xattrs(blob: bytes, path: bytes, what: str) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    i = 0
    try:
        while i < len(blob):
            (n,) = _XNAME.unpack_from(blob, i)
            name = blob[i + 2:i + 2 + n].decode("utf-8", "surrogateescape")
            i += 2 + n
            (v,) = _XVAL.unpack_from(blob, i)
            if i + 4 + v > len(blob):
                raise struct.error("value past the end")
            out[name] = blob[i + 4:i + 4 + v]
            i += 4 + v
    except struct.error as exc:
        raise errors.InvalidInputError(f"{what}: {path!r}: bad xattrs ({exc})") from exc
    return out
