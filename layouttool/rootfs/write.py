"""Make layer tar streams: the mirror of :mod:`~layouttool.rootfs.apply`.

A layer is written as a sequence of :class:`TarEntry` values turned into tar bytes by
:class:`TarStream`, a forward-only reader that the caller pulls through the usual one-pass
pipeline (diff_id hash -> compress -> hashing blob write). Nothing is buffered beyond one
chunk: file contents are read while the stream is pulled.

Where entries come from:

* :func:`walk_tree`: a directory, walked in sorted order (bytes of the names) through directory
  file descriptors with ``O_NOFOLLOW``, so a symlink in the tree is stored as a symlink and
  never followed, whatever it points at;
* :func:`disk_entry`: one path of a directory (``repack`` picks the paths that changed);
* :func:`retar`: the members of another tar stream, renamed (``--prefix``) or re-owned;
* :class:`CheckedTar` does not make entries: it passes a tar stream through byte for byte
  while checking every member with the rules ``unpack`` enforces, so an appended tar keeps
  its exact bytes (its diff_id is the sha256 of the tar the user gave).

What is written, whatever the source: PAX format (GNU tar, Go and every unpacker read it),
names relative without ``./``, mtimes in whole seconds (sub-second times are dropped, as
Docker does) clamped to ``clamp`` when given (``SOURCE_DATE_EPOCH``), no user or group names
(owners are numeric), atime and ctime never written, xattrs as ``SCHILY.xattr.*`` records in
sorted order, files that share an inode as one regular file plus hardlinks to it, and the
end-of-archive marker of two zero blocks (as Go's archive/tar; no padding to 10 KiB). So the
same tree and options always give the same bytes. Sockets cannot be stored in a tar and are
skipped with a warning (GNU tar does the same).
"""

from __future__ import annotations

import errno
import os
import stat
import tarfile
import typing
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from layouttool import errors
from layouttool.rootfs.names import (
    WHITEOUT_META_PREFIX,
    WHITEOUT_OPAQUE,
    WHITEOUT_PREFIX,
    XATTR_PREFIX,
    join,
    split_name,
)
from layouttool.rootfs.tarread import (
    CHUNK_SIZE,
    Reader,
    iter_members,
    open_stream,
)
from layouttool.rootfs.ustar import ustar_header


class Source(Protocol):
    """What entries and sources are read from: ``read(n)``, ``b""`` at the end."""

    def read(self, n: int = -1, /) -> bytes: ...


__all__ = [
    "CheckedTar",
    "Source",
    "TarEntry",
    "TarStream",
    "disk_entry",
    "link_hardlinks",
    "opaque_entry",
    "read_xattrs",
    "retar",
    "sorted_names",
    "walk_below",
    "walk_tree",
    "whiteout_entry",
]

BLOCK = 512
#: files up to this size are copied into the stream's buffer with their header, so a tree of
#: small files comes out in few large chunks
_SMALL_FILE = 64 * 1024
_END_OF_ARCHIVE = bytes(2 * BLOCK)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
#: the xattrs a layer carries from disk: what ``unpack`` restores (and nothing host-specific
#: such as ``security.selinux`` labels or ACLs)
_KEPT_XATTR_PREFIXES = ("user.",)
_KEPT_XATTRS = frozenset({"security.capability"})
_TYPE_OF_MODE = {
    stat.S_IFREG: tarfile.REGTYPE,
    stat.S_IFDIR: tarfile.DIRTYPE,
    stat.S_IFLNK: tarfile.SYMTYPE,
    stat.S_IFCHR: tarfile.CHRTYPE,
    stat.S_IFBLK: tarfile.BLKTYPE,
    stat.S_IFIFO: tarfile.FIFOTYPE,
}

#: ``(path relative to the tree, lstat) -> (uid, gid)`` written for an entry
OwnerFn = Callable[[str, os.stat_result], tuple[int, int]]
#: opens an entry's content; the stream is closed by :class:`TarStream` after ``size`` bytes
Opener = Callable[[], Source]


@dataclass(slots=True)
class TarEntry:
    """One member of a layer tar (``name`` relative, ``/``-separated, ``"."`` for the root).

    ``type`` is a tar typeflag (``tarfile.REGTYPE``...). ``content`` opens the payload of a
    regular file (exactly ``size`` bytes must come out of it). ``inode`` identifies files that
    share an inode (:func:`link_hardlinks` turns the later ones into hardlinks); ``None`` when
    the file has a single link.
    """

    name: str
    type: bytes
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    mtime: int = 0
    size: int = 0
    linkname: str = ""
    devmajor: int = 0
    devminor: int = 0
    xattrs: dict[str, bytes] = field(default_factory=dict)
    content: Opener | None = None
    inode: tuple[int, int] | None = None

    def header(self) -> bytes:
        """The entry's header blocks (PAX format), deterministic for equal fields."""
        name = "./" if self.name == "." else self.name
        size = self.size if self.type == tarfile.REGTYPE else 0
        if not self.xattrs:
            # the common case, without tarfile's cost: the very bytes tobuf gives
            fast = ustar_header(name, self.type, self.mode, self.uid, self.gid, size,
                                self.mtime, self.linkname, self.devmajor, self.devminor)
            if fast is not None:
                return fast
        info = tarfile.TarInfo(name)
        info.type = self.type
        info.mode = self.mode & 0o7777
        info.uid = self.uid
        info.gid = self.gid
        info.mtime = self.mtime
        info.size = size
        info.linkname = self.linkname
        info.devmajor = self.devmajor
        info.devminor = self.devminor
        info.uname = info.gname = ""
        info.pax_headers = {
            XATTR_PREFIX + k: v.decode("utf-8", "surrogateescape")
            for k, v in sorted(self.xattrs.items())
        }
        return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def whiteout_entry(parent: str, name: str, mtime: int) -> TarEntry:
    """The whiteout that deletes ``parent/name`` from the layers below."""
    return TarEntry(join(parent, WHITEOUT_PREFIX + name), tarfile.REGTYPE, 0o644, mtime=mtime)


def opaque_entry(directory: str, mtime: int) -> TarEntry:
    """The marker that hides every lower child of ``directory``."""
    return TarEntry(join(directory, WHITEOUT_OPAQUE), tarfile.REGTYPE, 0o644, mtime=mtime)


class TarStream:
    """A forward-only reader of the tar made of ``entries`` (pulled lazily, in order).

    ``read(n)`` returns at most ``n`` bytes and ``b""`` at the end. An entry's content must
    give exactly its ``size`` bytes: a file that shrank while being read raises
    :class:`~layouttool.errors.ConflictError` (the tree changed under us); one that grew is
    cut at ``size`` (what was stat'ed).
    """

    def __init__(self, entries: Iterable[TarEntry]) -> None:
        self._entries = iter(entries)
        self._chunks = self._generate(self._entries)
        self._buf = b""
        self._pos = 0
        #: entries and content bytes written so far
        self.entries = 0
        self.content_bytes = 0

    def read(self, n: int = -1, /) -> bytes:
        """Up to ``n`` bytes of the tar (everything left with ``n < 0``)."""
        if n < 0:
            parts = [self._buf[self._pos:], *self._chunks]
            self._buf, self._pos = b"", 0
            return b"".join(parts)
        while self._pos >= len(self._buf):
            nxt = next(self._chunks, None)
            if nxt is None:
                return b""
            self._buf, self._pos = nxt, 0
        out = self._buf[self._pos:self._pos + n]
        self._pos += len(out)
        return out

    def close(self) -> None:
        """Stop early: the entries' generators run their cleanup (directory descriptors)."""
        self._chunks.close()
        close = getattr(self._entries, "close", None)
        if close is not None:
            close()

    def _generate(self, entries: Iterator[TarEntry]) -> Generator[bytes, None, None]:
        buf = bytearray()
        for e in entries:
            buf += e.header()
            self.entries += 1
            if e.type == tarfile.REGTYPE and e.size:
                if e.content is None:
                    raise errors.InternalError(f"layer entry {e.name!r} has no content")
                src = e.content()
                try:
                    remaining = e.size
                    if e.size > _SMALL_FILE and buf:
                        yield bytes(buf)
                        buf.clear()
                    while remaining:
                        data = src.read(min(remaining, CHUNK_SIZE))
                        if not data:
                            raise errors.ConflictError(
                                f"{e.name}: the file shrank while it was read "
                                f"({e.size - remaining} of {e.size} bytes); is something "
                                "writing to the tree?"
                            )
                        remaining -= len(data)
                        if e.size > _SMALL_FILE:
                            yield data
                        else:
                            buf += data
                finally:
                    close = getattr(src, "close", None)
                    if close is not None:
                        close()
                self.content_bytes += e.size
                pad = -e.size % BLOCK
                if pad:
                    buf += bytes(pad)
            if len(buf) >= CHUNK_SIZE:
                yield bytes(buf)
                buf.clear()
        buf += _END_OF_ARCHIVE
        yield bytes(buf)


def link_hardlinks(entries: Iterable[TarEntry]) -> Iterator[TarEntry]:
    """The entries, with every later file of an inode already written as a hardlink to it."""
    first: dict[tuple[int, int], str] = {}
    for e in entries:
        if e.inode is not None and e.type != tarfile.DIRTYPE:
            seen = first.get(e.inode)
            if seen is not None:
                yield TarEntry(e.name, tarfile.LNKTYPE, e.mode, e.uid, e.gid, e.mtime,
                               linkname=seen)
                continue
            first[e.inode] = e.name
        yield e


# ------------------------------------------------------------------------------ from disk

def _xattr_kept(name: str) -> bool:
    return name.startswith(_KEPT_XATTR_PREFIXES) or name in _KEPT_XATTRS


def read_xattrs(path: str) -> dict[str, bytes]:
    """The xattrs a layer keeps (``user.*``, ``security.capability``) of ``path``, never
    following a symlink in its last component. ``/proc/self/fd/<dirfd>/<name>`` reaches an
    entry through a directory descriptor without opening it (a FIFO would block)."""
    try:
        names = os.listxattr(path, follow_symlinks=False)
    except OSError as exc:
        if exc.errno in (errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM, errno.EACCES):
            return {}
        raise
    out: dict[str, bytes] = {}
    for n in names:
        if _xattr_kept(n):
            try:
                out[n] = os.getxattr(path, n, follow_symlinks=False)
            except OSError as exc:
                if exc.errno not in (errno.ENODATA, errno.ENOTSUP, errno.EPERM, errno.EACCES):
                    raise
    return out


def _clamped(mtime_ns: int, clamp: int | None) -> int:
    sec = mtime_ns // 1_000_000_000
    return sec if clamp is None else min(sec, clamp)


def disk_entry(
    dir_fd: int,
    name: str,
    st: os.stat_result,
    rel: str,
    *,
    tar_name: str,
    owner: tuple[int, int],
    clamp: int | None,
    warn: Callable[[str], None],
) -> TarEntry | None:
    """The entry for ``name`` in the directory ``dir_fd`` (lstat'ed as ``st``).

    ``rel`` names it in messages (and in an ``OSError``'s ``filename``), ``tar_name`` in the
    layer. Returns None for a socket (with a warning). A name starting with ``.wh.`` is
    refused (:class:`~layouttool.errors.InvalidInputError`): every unpacker would read it as
    a whiteout, deleting instead of adding (umoci refuses it too). A regular file's content
    is opened when the stream gets to it, with ``O_NOFOLLOW``; its type is checked again then.
    """
    if name.startswith(WHITEOUT_PREFIX):
        raise errors.InvalidInputError(
            f"{rel}: a name starting with {WHITEOUT_PREFIX!r} cannot be stored in a layer: "
            "unpackers would read it as a whiteout and delete instead of add; rename it"
        )
    try:
        return _disk_entry(dir_fd, name, st, rel, tar_name, owner, clamp, warn)
    except OSError as exc:
        exc.filename = rel
        raise


def _disk_entry(dir_fd: int, name: str, st: os.stat_result, rel: str, tar_name: str,
                owner: tuple[int, int], clamp: int | None, warn: Callable[[str], None]
                ) -> TarEntry | None:
    kind = _TYPE_OF_MODE.get(stat.S_IFMT(st.st_mode))
    if kind is None:
        warn(f"{rel}: sockets cannot be stored in a layer; skipped")
        return None
    e = TarEntry(tar_name, kind, stat.S_IMODE(st.st_mode), owner[0], owner[1],
                 _clamped(st.st_mtime_ns, clamp))
    if kind == tarfile.SYMTYPE:
        e.linkname = os.readlink(name, dir_fd=dir_fd)
        return e
    if kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
        e.devmajor, e.devminor = os.major(st.st_rdev), os.minor(st.st_rdev)
    if st.st_nlink > 1 and kind != tarfile.DIRTYPE:
        e.inode = (st.st_dev, st.st_ino)
    e.xattrs = read_xattrs(f"/proc/self/fd/{dir_fd}/{name}")
    if kind == tarfile.REGTYPE:
        e.size = st.st_size
        e.content = _opener(dir_fd, name, st, rel)
    return e


def _opener(dir_fd: int, name: str, st: os.stat_result, rel: str) -> Opener:
    def open_() -> Source:
        try:
            fd = os.open(name, _FILE_FLAGS, dir_fd=dir_fd)
        except OSError as exc:
            exc.filename = rel
            raise
        fst = os.fstat(fd)
        if (fst.st_ino, fst.st_dev) != (st.st_ino, st.st_dev):
            os.close(fd)
            raise errors.ConflictError(f"{rel}: replaced while the layer was written")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb", buffering=0)

    return open_


def sorted_names(dir_fd: int) -> list[str]:
    """The names in the directory ``dir_fd``, sorted by their bytes (the order every walk of
    this package uses: tar order, record order)."""
    lfd = os.open(".", _DIR_FLAGS, dir_fd=dir_fd)
    try:
        names = os.listdir(lfd)  # noqa: PTH208 - an fd, no path
    finally:
        os.close(lfd)
    if all(n.isascii() for n in names):
        names.sort()  # the same order, without encoding every name
    else:
        names.sort(key=os.fsencode)
    return names


def walk_tree(
    root: str | os.PathLike[str],
    *,
    prefix: str = "",
    owner: OwnerFn,
    clamp: int | None = None,
    warn: Callable[[str], None],
) -> Iterator[TarEntry]:
    """Every entry below ``root`` (not ``root`` itself), depth first, names sorted by bytes.

    Entries are named ``prefix/<path>``. ``root`` itself is what the user named, so it may
    be reached through a symlink; below it symlinks are stored, never followed, and
    directories are descended through descriptors opened with ``O_NOFOLLOW``. Pass the
    result through :func:`link_hardlinks`. ``OSError`` propagates with the path below
    ``root`` as its ``filename`` (the caller names the source).
    """
    top = os.open(root, _DIR_FLAGS & ~os.O_NOFOLLOW)
    try:
        yield from walk_below(top, "", prefix=prefix, owner=owner, clamp=clamp, warn=warn)
    finally:
        os.close(top)


def walk_below(
    dir_fd: int,
    rel: str,
    *,
    prefix: str = "",
    owner: OwnerFn,
    clamp: int | None = None,
    warn: Callable[[str], None],
) -> Iterator[TarEntry]:
    """Like :func:`walk_tree`, below the open directory ``dir_fd`` whose path is ``rel``
    (entries are named ``prefix/rel/<path>``, and ``owner`` gets ``rel/<path>``)."""
    for name in sorted_names(dir_fd):
        path = join(rel, name)
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            continue  # removed since listed
        except OSError as exc:
            exc.filename = path
            raise
        e = disk_entry(dir_fd, name, st, path, tar_name=join(prefix, path),
                       owner=owner(path, st), clamp=clamp, warn=warn)
        if e is None:
            continue
        yield e
        if e.type == tarfile.DIRTYPE:
            try:
                sub = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
            except OSError as exc:
                exc.filename = path
                raise
            try:
                yield from walk_below(sub, path, prefix=prefix, owner=owner, clamp=clamp,
                                      warn=warn)
            finally:
                os.close(sub)


# ------------------------------------------------------------------------------ from a tar

def _check_whiteout_parts(parts: list[str], member: str) -> None:
    for comp in parts[:-1]:
        if comp.startswith(WHITEOUT_PREFIX):
            raise errors.InvalidInputError(
                f"layer tar: {member!r}: whiteout name {comp!r} used as a directory"
            )
    base = parts[-1] if parts else ""
    if base.startswith(WHITEOUT_META_PREFIX) and base != WHITEOUT_OPAQUE:
        raise errors.InvalidInputError(f"layer tar: {member!r}: AUFS metadata {base!r}")
    if base.startswith(WHITEOUT_PREFIX) and base[len(WHITEOUT_PREFIX):] in ("", ".", ".."):
        raise errors.InvalidInputError(f"layer tar: {member!r}: invalid whiteout name {base!r}")


_KNOWN_TYPES = frozenset(
    {tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE,
     tarfile.LNKTYPE, tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE, tarfile.GNUTYPE_SPARSE}
)


class _MemberRules:
    """The checks a member of an appended tar must pass (the same as ``unpack``'s)."""

    def __init__(self) -> None:
        self.names: set[str] = set()
        self.linkable: set[str] = set()
        self.entries = 0

    def check(self, m: tarfile.TarInfo) -> list[str]:
        """Check one member; return its name's components (``[]``: the root)."""
        self.entries += 1
        if m.type not in _KNOWN_TYPES:
            raise errors.InvalidInputError(
                f"layer tar: {m.name!r}: entry type {m.type!r} cannot be unpacked"
            )
        parts = split_name(m.name, m.name)
        _check_whiteout_parts(parts, m.name)
        if not parts and not m.isdir():
            raise errors.UnsafeInputError(
                f"layer tar: {m.name!r}: a non-directory entry for the root directory"
            )
        key = "/".join(parts)
        if key in self.names:
            raise errors.InvalidInputError(
                f"layer tar: {m.name!r} appears twice (a layer must not hold duplicate paths)"
            )
        self.names.add(key)
        if m.issym() and not m.linkname:
            raise errors.InvalidInputError(f"layer tar: {m.name!r}: symlink with an empty target")
        if m.islnk():
            target = "/".join(split_name(m.linkname, m.name, what="hardlink target"))
            if target not in self.linkable:
                raise errors.InvalidInputError(
                    f"layer tar: {m.name!r}: hardlink target {m.linkname!r} is not an earlier "
                    "file of the same tar"
                )
        if not m.isdir():
            self.linkable.add(key)
        return parts


class _Tee:
    """``src``'s bytes, each also appended to ``sink`` as it is read."""

    def __init__(self, src: Source, sink: bytearray) -> None:
        self._src = src
        self._sink = sink

    def read(self, n: int = -1, /) -> bytes:
        data = self._src.read(n)
        self._sink += data
        return data


class CheckedTar:
    """The bytes of the tar stream ``src``, unchanged, checked member by member as they pass.

    Pulling drives the check: each ``read`` advances the tar reader just far enough, so the
    bytes pass once and memory stays at one chunk. The checks are ``unpack``'s: names that
    escape (``..``) and a non-directory root are :class:`~layouttool.errors.UnsafeInputError`;
    duplicate names, malformed whiteouts, AUFS metadata, empty symlink targets, hardlinks to
    anything but an earlier file of the same tar and entry types no unpacker reproduces are
    :class:`~layouttool.errors.InvalidInputError`; unreadable headers or truncated data
    :class:`~layouttool.errors.CorruptStreamError`. Bytes after the end-of-archive marker are
    kept (they are part of the layer and of its diff_id).
    """

    def __init__(self, src: Source, *, warn: Callable[[str], None]) -> None:
        self._buf = bytearray()
        self._pos = 0
        self._src = _Tee(src, self._buf)
        self._tar = open_stream(typing.cast(typing.BinaryIO, self._src))
        self._members = iter_members(self._tar, warn)
        self._fobj = typing.cast(Reader, self._tar.fileobj)
        self._rules = _MemberRules()
        self._state = "members"
        self._current: tarfile.TarInfo | None = None

    @property
    def entries(self) -> int:
        """Members checked so far."""
        return self._rules.entries

    def _step(self) -> None:
        if self._state == "members":
            if self._current is None:
                # the previous member's data was read to its end below, so this reads
                # nothing but the next header
                m = next(self._members, None)
                if m is None:
                    self._state = "rest"
                    return
                self._rules.check(m)
                self._current = m
                return
            left = self._tar.offset - self._fobj.tell()
            if left <= 0 or not self._fobj.read(min(left, CHUNK_SIZE)):
                # done, or the stream ended: the member loop judges a missing padding
                self._current = None
            return
        if self._state == "rest" and not self._src.read(CHUNK_SIZE):
            self._state = "end"
            self._tar.close()

    def read(self, n: int = -1, /) -> bytes:
        """Up to ``n`` bytes of the source, each member checked before its bytes come out."""
        want = n if n >= 0 else 1 << 62
        while len(self._buf) - self._pos < want and self._state != "end":
            self._step()
        out = bytes(self._buf[self._pos:self._pos + want])
        self._pos += len(out)
        if self._pos >= CHUNK_SIZE:
            del self._buf[:self._pos]
            self._pos = 0
        return out


class _Slice:
    """The next ``size`` bytes of ``src``."""

    def __init__(self, src: Source, size: int) -> None:
        self._src = src
        self._left = size

    def read(self, n: int = -1, /) -> bytes:
        n = self._left if n < 0 else min(n, self._left)
        data = self._src.read(n) if n else b""
        self._left -= len(data)
        return data


def retar(
    src: Source,
    *,
    prefix: str = "",
    owner: tuple[int, int] | None = None,
    warn: Callable[[str], None],
) -> Iterator[TarEntry]:
    """The members of the tar stream ``src`` as entries named ``prefix/<name>`` (checked as
    :class:`CheckedTar` does), owned by ``owner`` when given. Symlink targets are kept as they
    are; hardlink targets get the prefix too. Sparse members are refused (re-create the tar
    without ``--sparse``)."""
    rules = _MemberRules()
    with open_stream(typing.cast(typing.BinaryIO, src)) as tar:
        fobj = typing.cast(Source, tar.fileobj)
        for m in iter_members(tar, warn):
            parts = rules.check(m)
            if m.sparse is not None or m.type == tarfile.GNUTYPE_SPARSE:
                raise errors.UnsupportedError(
                    f"layer tar: {m.name!r} is a sparse file, which --prefix and --owner "
                    "cannot rewrite; re-create the tar without --sparse"
                )
            name = join(prefix, "/".join(parts)) if parts else (prefix or ".")
            uid, gid = owner if owner is not None else (m.uid, m.gid)
            e = TarEntry(name, m.type if m.type not in (tarfile.AREGTYPE, tarfile.CONTTYPE)
                         else tarfile.REGTYPE, m.mode, uid, gid, int(m.mtime))
            e.xattrs = {
                k[len(XATTR_PREFIX):]: v.encode("utf-8", "surrogateescape")
                for k, v in m.pax_headers.items() if k.startswith(XATTR_PREFIX)
            }
            if m.islnk():
                e.linkname = join(prefix, "/".join(split_name(m.linkname, m.name)))
            elif m.issym():
                e.linkname = m.linkname
            elif m.ischr() or m.isblk():
                e.devmajor, e.devminor = m.devmajor, m.devminor
            elif m.isreg():
                e.size = m.size
                e.content = _slice_opener(fobj, m.size)
            yield e


def _slice_opener(src: Source, size: int) -> Opener:
    return lambda: _Slice(src, size)
