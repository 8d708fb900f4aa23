"""The merged filesystem of an image's layers, kept as metadata in memory.

``unpack`` applies layers to a directory (:mod:`~layouttool.rootfs.apply`); this module applies
them to a tree of metadata with exactly the same rules, so that the tree after each layer is
what ``unpack`` (as root) leaves on disk after that layer: OCI whiteouts and opaque markers
with umoci's same-layer protection (``upperPaths``), symlinked parents followed inside the root,
non-directory parents replaced by directories, a directory over a directory merging
attributes, anything else replacing what was there, hardlinks sharing one inode. The same names
are refused (:mod:`~layouttool.rootfs.names`) and the same tar reader is used
(:mod:`~layouttool.rootfs.tarread`). What only a real filesystem refuses (a name longer than
255 bytes, say) is not modelled: such a tree still merges here. The rules are written a second
time, over a tree instead of directory descriptors (sharing them would put an abstraction in
unpack's hot path); ``tests/test_rootfs_merge.py`` holds the two to the same result on every
stack we have and on hypothesis's.

File contents are never held. A file remembers where its bytes are (its layer, and the offset
of its data in that layer's uncompressed stream) and, when asked (``hash_contents``), their
sha256; a metadata index of every path is what we keep, as every tool that flattens does.

Three users:

* ``export`` and ``flatten``: :class:`MergedTar` gives the tree as the entries of one tar
  (pass 2; see its docstring for their order and how hardlinks come out right), which
  :class:`~layouttool.rootfs.write.TarStream` writes like every layer we make;
* ``diff``: :func:`compare` judges two trees by type, mode, owner, xattrs, link target, device
  numbers and content digest (never by size alone; mtimes are ignored);
* ``diff --layers``: with ``track=True`` each layer reports what it added, removed and
  overwrote (:class:`LayerChanges`), and the bytes of file content that later layers made
  invisible (the question dive answers).
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import tarfile
import typing
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

from layouttool import errors
from layouttool.rootfs.names import (
    WHITEOUT_META_PREFIX,
    WHITEOUT_OPAQUE,
    WHITEOUT_PREFIX,
    XATTR_PREFIX,
    join,
    split_name,
)
from layouttool.rootfs.tarread import CHUNK_SIZE, Reader, corrupt, iter_members, open_stream
from layouttool.rootfs.write import Source, TarEntry, TarStream

__all__ = [
    "Change",
    "DiffItem",
    "Entry",
    "LayerChanges",
    "LayerStats",
    "MergedTar",
    "MergedTree",
    "TreeDiff",
    "WriteStats",
    "compare",
    "write_merged",
]

#: symlinks followed while resolving one path (as :class:`~layouttool.rootfs.ApplyOptions`)
MAX_SYMLINK_HOPS = 255
_MAX_WARNINGS = 100
_ZEROS = bytes(CHUNK_SIZE)
#: the entry kinds; also the ``type`` values of ``diff --json``
FILE, DIR, SYMLINK, CHAR, BLOCK, FIFO = "file", "dir", "symlink", "char", "block", "fifo"
_TAR_TYPE = {
    FILE: tarfile.REGTYPE,
    DIR: tarfile.DIRTYPE,
    SYMLINK: tarfile.SYMTYPE,
    CHAR: tarfile.CHRTYPE,
    BLOCK: tarfile.BLKTYPE,
    FIFO: tarfile.FIFOTYPE,
}

Pos = tuple[int, int]
#: the data runs of a sparse file: (offset in the file, length), in order
Runs = list[tuple[int, int]]


class Meta:
    """The attributes of one filesystem object, as its tar header gave them.

    ``mtime`` is tarfile's value (a float for PAX fractional times); ``pax_mtime`` keeps the
    PAX record verbatim so a written header carries the exact time. ``xattrs`` maps names
    without the ``SCHILY.xattr.`` prefix to tarfile's (surrogate-escaped) values.
    """

    __slots__ = (
        "devmajor", "devminor", "digest", "gid", "gname", "kind", "mode", "mtime", "pax_mtime",
        "size", "target", "uid", "uname", "xattrs",
    )

    def __init__(
        self, kind: str, mode: int, uid: int, gid: int, uname: str, gname: str,
        mtime: float, pax_mtime: str | None = None, size: int = 0, target: str = "",
        devmajor: int = 0, devminor: int = 0, xattrs: dict[str, str] | None = None,
        digest: bytes | None = None,
    ) -> None:
        self.kind = kind
        self.mode = mode
        self.uid = uid
        self.gid = gid
        self.uname = uname
        self.gname = gname
        self.mtime = mtime
        self.pax_mtime = pax_mtime
        self.size = size
        self.target = target
        self.devmajor = devmajor
        self.devminor = devminor
        self.xattrs = xattrs
        self.digest = digest

    @classmethod
    def of(cls, m: tarfile.TarInfo, kind: str, digest: bytes | None = None) -> Meta:
        """The attributes a member gives an object of ``kind``."""
        xattrs: dict[str, str] | None = None
        for key, value in m.pax_headers.items():
            if key.startswith(XATTR_PREFIX):
                if xattrs is None:
                    xattrs = {}
                xattrs[key[len(XATTR_PREFIX):]] = value
        device = kind in (CHAR, BLOCK)
        return cls(
            kind, m.mode & 0o7777, m.uid, m.gid, m.uname, m.gname, m.mtime,
            m.pax_headers.get("mtime"), m.size if kind == FILE else 0,
            m.linkname if kind == SYMLINK else "",
            m.devmajor if device else 0, m.devminor if device else 0, xattrs, digest,
        )

    def same_attrs(self, other: Meta) -> bool:
        """Equal in what ``diff`` judges (everything but times and owner names)."""
        return self.changes(other) == ()

    def changes(self, other: Meta) -> tuple[str, ...]:
        """What differs from ``other``: ``type``, ``content``, ``mode``, ``owner``,
        ``linkTarget``, ``xattrs``, ``device`` (times and owner names are not judged)."""
        if self.kind != other.kind:
            return ("type",)
        out: list[str] = []
        if self.kind == FILE and (self.size != other.size or self.digest != other.digest):
            out.append("content")
        if self.kind != SYMLINK and self.mode != other.mode:
            out.append("mode")
        if (self.uid, self.gid) != (other.uid, other.gid):
            out.append("owner")
        if self.target != other.target:
            out.append("linkTarget")
        if (self.xattrs or {}) != (other.xattrs or {}):
            out.append("xattrs")
        if (self.devmajor, self.devminor) != (other.devmajor, other.devminor):
            out.append("device")
        return tuple(out)


class Dir:
    """A directory: its children by name, its attributes, where it was made."""

    __slots__ = ("children", "meta", "pos")

    def __init__(self, meta: Meta, pos: Pos) -> None:
        self.children: dict[str, Dir | Inode] = {}
        self.meta = meta
        self.pos = pos


class Inode:
    """A non-directory object; hardlinks share one.

    ``pos`` is the member that made it, ``path`` the name it was made under, ``links`` the
    names it has (kept only when tracking). A file's bytes are in layer ``pos[0]`` at
    ``data``: the offset of the member's data in the uncompressed stream, and the data runs of
    a sparse member (None: one run of ``meta.size`` bytes).
    """

    __slots__ = ("data", "links", "meta", "path", "pos")

    def __init__(self, meta: Meta, pos: Pos, path: str,
                 data: tuple[int, Runs | None] | None = None) -> None:
        self.meta = meta
        self.pos = pos
        self.path = path
        self.data = data
        self.links = 0


Node = Dir | Inode


@dataclass(frozen=True, slots=True)
class Entry:
    """One path of a merged tree, as :meth:`MergedTree.entries` lists it."""

    path: str
    meta: Meta
    #: for a hardlinked non-directory: every path of the inode (sorted), else ()
    links: tuple[str, ...] = ()

    @property
    def kind(self) -> str:
        """``file``, ``dir``, ``symlink``, ``char``, ``block`` or ``fifo``."""
        return self.meta.kind


@dataclass(frozen=True, slots=True)
class Change:
    """One path a layer touched: its kind and size before (``old_*``) and after."""

    path: str
    old_kind: str | None
    kind: str | None
    old_size: int
    size: int


@dataclass(slots=True)
class LayerChanges:
    """What one layer did to the tree below it (``track=True`` only).

    ``added``: paths that did not exist below; ``removed``: paths that existed below and are
    gone (whiteouts, opaque markers, replaced directories); ``overwritten``: paths that
    existed below and now hold another object (a new file over a file, a file over a
    directory, ...) or a directory whose attributes changed. ``wasted_bytes``: bytes of file
    content this layer stored that are not in the final tree; ``hidden_bytes``: bytes of file
    content of lower layers (or this one) that this layer made invisible.
    """

    added: list[Change] = field(default_factory=list)
    removed: list[Change] = field(default_factory=list)
    overwritten: list[Change] = field(default_factory=list)
    wasted_bytes: int = 0
    hidden_bytes: int = 0


@dataclass(slots=True)
class LayerStats:
    """What :meth:`MergedTree.apply_layer` read.

    ``entries`` counts tar members (whiteouts and skipped ones included), ``file_bytes`` the
    file content the layer holds, ``whiteouts`` the whiteout and opaque markers, ``skipped``
    members not modelled (unknown types, AUFS metadata). ``changes`` only when tracking.
    """

    entries: int = 0
    file_bytes: int = 0
    whiteouts: int = 0
    skipped: int = 0
    warnings: list[str] = field(default_factory=list)
    changes: LayerChanges | None = None


@dataclass(frozen=True, slots=True)
class WastedFile:
    """A path whose content was stored and then made invisible, ``copies`` times."""

    path: str
    bytes: int
    copies: int


class _DirAttrs:
    """A directory's attributes before this layer changed them (change tracking)."""

    __slots__ = ("dir", "meta")

    def __init__(self, d: Dir, meta: Meta) -> None:
        self.dir = d
        self.meta = meta


_Before = Dir | Inode | _DirAttrs | None


def _kind_size(node: _Before) -> tuple[str | None, int]:
    if node is None:
        return None, 0
    meta = node.meta
    return meta.kind, meta.size


def _implicit_meta(mtime: float) -> Meta:
    """A parent directory no entry names: 0755 root:root, as unpack makes it (umoci,
    containerd); its mtime is the member's that implied it (unpack's is the clock's)."""
    return Meta(DIR, 0o755, 0, 0, "", "", int(mtime))


def _read_exact(src: Reader, n: int, name: str) -> bytes:
    data = src.read(n)
    if len(data) != n:
        raise corrupt(f"{name!r}: unexpected end of data")
    return data


def _sparse_runs(tar: tarfile.TarFile, m: tarfile.TarInfo) -> Runs | None:
    """The data runs of a sparse member, checked (in order, inside the file, stored)."""
    sparse = typing.cast("list[tuple[int, int]] | None", m.sparse)
    if sparse is None:
        return None
    stored = tar.offset - m.offset_data
    total = 0
    end = 0
    runs = []
    for off, length in sparse:
        if off < 0 or length < 0 or off + length > m.size:
            raise corrupt(f"{m.name!r}: sparse map entry ({off}, {length}) out of range")
        if not length:
            continue  # GNU pads its map with (0, 0) entries; empty runs write nothing
        if off < end:
            # unpack writes runs where they say; a map that goes back is not one we expand
            raise corrupt(f"{m.name!r}: sparse map entries overlap or go backwards")
        end = off + length
        total += length
        runs.append((off, length))
    if total > stored:
        raise corrupt(f"{m.name!r}: sparse map needs more data than the entry holds")
    return runs


def _content(src: Reader, size: int, runs: Runs | None, name: str) -> Iterator[bytes]:
    """A file's content in chunks of at most CHUNK_SIZE, read from ``src`` positioned at the
    member's data (as unpack reads it); the holes of a sparse file come out as zeros."""
    if runs is None:
        runs = [(0, size)]
    pos = 0
    for off, length in runs:
        while pos < off:
            n = min(off - pos, CHUNK_SIZE)
            yield _ZEROS[:n]
            pos += n
        remaining = length
        while remaining:
            n = min(remaining, CHUNK_SIZE)
            yield _read_exact(src, n, name)
            remaining -= n
        pos = off + length
    while pos < size:
        n = min(size - pos, CHUNK_SIZE)
        yield _ZEROS[:n]
        pos += n


def _members(tar: tarfile.TarFile, warn: Callable[[str], None]) -> Iterator[tarfile.TarInfo]:
    """:func:`~layouttool.rootfs.tarread.iter_members` with unpack's error translation."""
    members = iter_members(tar, warn)
    last = "<none>"
    while True:
        try:
            m = next(members, None)
        except errors.LayoutToolError:
            raise
        except (tarfile.TarError, EOFError, ValueError, OverflowError, RecursionError) as exc:
            raise corrupt(f"bad header after {last!r}", exc) from exc
        except OSError as exc:
            raise errors.from_oserror(exc, "layer tar: read") from exc
        if m is None:
            return
        if m.size < 0:
            raise corrupt(f"{m.name!r}: negative size")
        last = m.name
        yield m


class MergedTree:
    """The filesystem that applying layers in order gives, as metadata.

    Call :meth:`apply_layer` with each layer's uncompressed tar stream, lowest first. With
    ``track=True`` every layer's :class:`LayerStats` carries its :class:`LayerChanges`, and
    :meth:`wasted_files` lists the content later layers hid.
    """

    def __init__(self, *, track: bool = False) -> None:
        self.root = Dir(Meta(DIR, 0o755, 0, 0, "", "", 0), (-1, -1))
        #: True once a layer carried an entry for the root itself (``./``)
        self.root_set = False
        #: number of layers applied
        self.layers = 0
        self.track = track
        self._layer = -1
        self._member = "<none>"
        self._warnings: list[str] = []
        self._warn_count = 0
        self._stats = LayerStats()
        # per layer, as in apply: umoci's upperPaths and its ancestors, the directories this
        # layer made (nothing lower in them), the directories an opaque marker purged
        self._upper: set[str] = set()
        self._upper_anc: set[str] = set()
        self._fresh: set[str] = set()
        self._opaqued: set[str] = set()
        #: tracking: each path this layer touched -> what it held when the layer began
        self._before: dict[str, _Before] = {}
        #: tracking: path a file's content was stored under -> (bytes, copies) made invisible
        self._wasted: dict[str, tuple[int, int]] = {}
        self._layer_waste: list[int] = []
        #: tracking: bytes of file content this layer made invisible
        self._hidden = 0
        #: the member being applied: its position, and its mtime (for implied directories)
        self._pos: Pos = (-1, -1)
        self._mtime: float = 0
        #: where the current regular member's data is (offset, sparse runs)
        self._data: tuple[int, Runs | None] | None = None
        #: names at the root this layer's entries may not have (see apply_layer)
        self._skip: frozenset[str] = frozenset()

    # -- public -----------------------------------------------------------------------------

    def apply_layer(
        self,
        stream: typing.BinaryIO,
        *,
        hash_contents: bool = False,
        skip_names: frozenset[str] = frozenset(),
    ) -> LayerStats:
        """Apply the next layer, read once from ``stream`` (an uncompressed tar, forward only).

        ``hash_contents`` reads every file's content to record its sha256 (for ``diff``);
        without it the content is skipped. ``skip_names``: entries at the root with these
        names are left out, as :class:`~layouttool.rootfs.ApplyOptions` says (an eStargz
        layer's TOC and landmarks). The stream is left somewhere after the end marker:
        the caller drains and hashes the rest. Raises what unpack raises for the same layer:
        :class:`~layouttool.errors.CorruptStreamError`, :class:`~layouttool.errors.
        UnsafeInputError`, :class:`~layouttool.errors.InvalidInputError`.
        """
        self._layer = self.layers
        self.layers += 1
        self._layer_waste.append(0)
        self._stats = stats = LayerStats()
        self._warnings = stats.warnings
        self._warn_count = 0
        self._upper.clear()
        self._upper_anc.clear()
        self._fresh.clear()
        self._opaqued.clear()
        self._before.clear()
        self._skip = skip_names
        with open_stream(stream) as tar:
            for ordinal, m in enumerate(_members(tar, self._warn)):
                self._member = m.name
                stats.entries += 1
                digest = None
                if m.isreg():
                    stats.file_bytes += m.size
                    runs = _sparse_runs(tar, m)
                    self._data = (m.offset_data, runs)
                    if hash_contents:
                        h = hashlib.sha256()
                        src = typing.cast(Reader, tar.fileobj)
                        for chunk in _content(src, m.size, runs, m.name):
                            h.update(chunk)
                        digest = h.digest()
                self._apply(m, (self._layer, ordinal), digest)
        if self._warn_count > _MAX_WARNINGS:
            stats.warnings.append(
                f"... and {self._warn_count - _MAX_WARNINGS} more warnings not shown"
            )
        if self.track:
            stats.changes = self._layer_changes()
        return stats

    def entries(self) -> Iterator[Entry]:
        """Every path of the tree (the root excluded), sorted, with its attributes."""
        names: dict[Inode, list[str]] = {}
        for path, node in self._walk():
            if isinstance(node, Inode):
                names.setdefault(node, []).append(path)
        for path, node in self._walk():
            links: tuple[str, ...] = ()
            if isinstance(node, Inode) and len(names[node]) > 1:
                links = tuple(sorted(names[node]))
            yield Entry(path, node.meta, links)

    def wasted_files(self) -> list[WastedFile]:
        """Tracking: paths whose stored content is not in the final tree, most bytes first."""
        out = [WastedFile(p, b, c) for p, (b, c) in self._wasted.items() if b or c]
        out.sort(key=lambda w: (-w.bytes, w.path))
        return out

    def layer_wasted_bytes(self, layer: int) -> int:
        """Tracking: bytes of file content ``layer`` stored that the final tree does not show."""
        return self._layer_waste[layer]

    # -- walking ----------------------------------------------------------------------------

    def _walk(self) -> Iterator[tuple[str, Node]]:
        """Every (path, node) below the root, depth first, children sorted by name."""
        stack: list[tuple[str, Node]] = [
            (name, self.root.children[name]) for name in sorted(self.root.children, reverse=True)
        ]
        while stack:
            path, node = stack.pop()
            yield path, node
            if isinstance(node, Dir):
                stack.extend(
                    (f"{path}/{name}", node.children[name])
                    for name in sorted(node.children, reverse=True)
                )

    def _node_at(self, path: str) -> Node | None:
        node: Node = self.root
        if not path:
            return node
        for comp in path.split("/"):
            if not isinstance(node, Dir):
                return None
            child = node.children.get(comp)
            if child is None:
                return None
            node = child
        return node

    # -- bookkeeping ------------------------------------------------------------------------

    def _warn(self, msg: str) -> None:
        self._warn_count += 1
        if self._warn_count <= _MAX_WARNINGS:
            self._warnings.append(msg)

    def _mark_upper(self, canon: str) -> None:
        self._upper.add(canon)
        parent = posixpath.dirname(canon)
        while parent not in self._upper_anc:
            self._upper_anc.add(parent)
            if not parent:
                break
            parent = posixpath.dirname(parent)

    def _bind(self, parent: Dir, name: str, path: str, node: Node) -> None:
        parent.children[name] = node
        if self.track:
            self._before.setdefault(path, None)
            if isinstance(node, Inode):
                node.links += 1

    def _unbind(self, parent: Dir, name: str, path: str) -> None:
        node = parent.children.pop(name)
        if not self.track:
            return
        stack: list[tuple[str, Node]] = [(path, node)]
        while stack:
            p, n = stack.pop()
            self._before.setdefault(p, n)
            if isinstance(n, Dir):
                stack.extend((f"{p}/{c}", child) for c, child in n.children.items())
                continue
            n.links -= 1
            if n.links == 0 and n.meta.kind == FILE:
                self._hide(n)

    def _hide(self, inode: Inode) -> None:
        """Tracking: a file's last name is gone, so its stored content is wasted."""
        size = inode.meta.size
        self._layer_waste[inode.pos[0]] += size
        b, c = self._wasted.get(inode.path, (0, 0))
        self._wasted[inode.path] = (b + size, c + 1)
        self._hidden += size

    def _layer_changes(self) -> LayerChanges:
        ch = LayerChanges(hidden_bytes=self._hidden)
        for path in sorted(self._before):
            old = self._before[path]
            cur = self._node_at(path)
            if isinstance(old, _DirAttrs):
                if cur is old.dir:
                    if old.meta.same_attrs(cur.meta):
                        continue
                    ch.overwritten.append(Change(path, DIR, DIR, 0, 0))
                    continue
                old = old.dir
            if cur is old:
                continue
            ok, osize = _kind_size(old)
            nk, nsize = _kind_size(cur)
            change = Change(path, ok, nk, osize, nsize)
            if old is None:
                ch.added.append(change)
            elif cur is None:
                ch.removed.append(change)
            else:
                ch.overwritten.append(change)
        self._hidden = 0
        return ch

    # -- path resolution (apply's _walk, on the tree) ----------------------------------------

    def _dir_at(self, canon: list[str]) -> Dir:
        d = self.root
        for comp in canon:
            child = d.children.get(comp)
            if not isinstance(child, Dir):  # pragma: no cover - canon holds directories only
                raise errors.InternalError(f"merged tree: {'/'.join(canon)!r} is not a directory")
            d = child
        return d

    def _mkdir_implicit(self, parent: Dir, canon: list[str], comp: str, mtime: float) -> Dir:
        path = join("/".join(canon), comp)
        d = Dir(_implicit_meta(mtime), self._pos)
        self._bind(parent, comp, path, d)
        self._fresh.add(path)
        return d

    def _resolve(self, comps: list[str], *, create: bool) -> tuple[Dir, str] | None:
        """Resolve ``comps`` from the root one at a time (see apply's ``_walk``)."""
        canon: list[str] = []
        cur = self.root
        pending = list(reversed(comps))
        virtual: list[str] = []
        hops = 0
        while pending:
            comp = pending.pop()
            if comp in ("", "."):
                continue
            if comp == "..":
                if virtual:
                    virtual.pop()
                elif canon:
                    canon.pop()
                    cur = self._dir_at(canon)
                continue
            if virtual:
                virtual.append(comp)
                continue
            child = cur.children.get(comp)
            if child is None:
                virtual.append(comp)
                continue
            if isinstance(child, Dir):
                canon.append(comp)
                cur = child
                continue
            if child.meta.kind == SYMLINK:
                hops += 1
                if hops > MAX_SYMLINK_HOPS:
                    raise errors.UnsafeInputError(
                        f"layer tar: {self._member!r}: more than {MAX_SYMLINK_HOPS} symlinks "
                        "while resolving the path (a loop?)"
                    )
                target = child.meta.target
                if not target:
                    raise errors.InvalidInputError(
                        f"layer tar: {self._member!r}: path goes through the empty symlink "
                        f"{join('/'.join(canon), comp)!r}"
                    )
                if target.startswith("/"):
                    cur, canon = self.root, []
                pending.extend(reversed(target.split("/")))
                continue
            if not create:
                return None
            # a file where a directory must be: the later entry wins (umoci #546)
            self._unbind(cur, comp, join("/".join(canon), comp))
            cur = self._mkdir_implicit(cur, canon, comp, self._mtime)
            canon.append(comp)
        if virtual:
            if not create:
                return None
            for comp in virtual:
                cur = self._mkdir_implicit(cur, canon, comp, self._mtime)
                canon.append(comp)
        return cur, "/".join(canon)

    def _entry_parent(self, parts: list[str]) -> tuple[Dir, str, str]:
        found = self._resolve(parts[:-1], create=True)
        assert found is not None  # create=True never gives None
        return found[0], found[1], parts[-1]

    def _clear_slot(self, parent: Dir, pcanon: str, name: str, *, keep_dir: bool) -> bool:
        """Make room for a new entry; True when an existing directory is kept (dir over dir)."""
        node = parent.children.get(name)
        if node is None:
            return False
        if keep_dir and isinstance(node, Dir):
            return True
        self._unbind(parent, name, join(pcanon, name))
        return False

    # -- one member -------------------------------------------------------------------------

    def _apply(self, m: tarfile.TarInfo, pos: Pos, digest: bytes | None) -> None:
        self._pos = pos
        self._mtime = m.mtime
        parts = split_name(m.name, m.name)
        for comp in parts[:-1]:
            if comp.startswith(WHITEOUT_PREFIX):
                raise errors.InvalidInputError(
                    f"layer tar: {m.name!r}: whiteout name {comp!r} used as a directory"
                )
        if len(parts) == 1 and parts[0] in self._skip:
            self._stats.skipped += 1
            return
        if parts and parts[-1].startswith(WHITEOUT_PREFIX):
            # whatever its tar type, a whiteout is only a path (smolvm #401)
            self._whiteout(parts)
            return
        if not parts:
            if not m.isdir():
                raise errors.UnsafeInputError(
                    f"layer tar: {m.name!r}: refusing to replace the root directory with a "
                    "non-directory"
                )
            self._set_dir_meta(self.root, "", m)
            self.root_set = True
            return
        if m.isreg():
            self._leaf(parts, Meta.of(m, FILE, digest), self._data)
        elif m.isdir():
            self._directory(m, parts)
        elif m.issym():
            if not m.linkname:
                raise errors.InvalidInputError(
                    f"layer tar: {m.name!r}: symlink with an empty target"
                )
            self._leaf(parts, Meta.of(m, SYMLINK))
        elif m.islnk():
            self._hardlink(m, parts)
        elif m.ischr() or m.isblk() or m.isfifo():
            kind = CHAR if m.ischr() else BLOCK if m.isblk() else FIFO
            if kind != FIFO:
                try:
                    os.makedev(m.devmajor, m.devminor)
                except (ValueError, OverflowError) as exc:
                    raise errors.InvalidInputError(
                        f"layer tar: {m.name!r}: bad device number {m.devmajor}:{m.devminor}"
                    ) from exc
            self._leaf(parts, Meta.of(m, kind))
        else:
            self._stats.skipped += 1
            self._warn(f"layer tar: {m.name!r}: unknown entry type {m.type!r} skipped")

    def _leaf(self, parts: list[str], meta: Meta,
              data: tuple[int, Runs | None] | None = None) -> None:
        parent, pcanon, name = self._entry_parent(parts)
        path = join(pcanon, name)
        self._clear_slot(parent, pcanon, name, keep_dir=False)
        self._bind(parent, name, path, Inode(meta, self._pos, path, data))
        self._mark_upper(path)

    def _directory(self, m: tarfile.TarInfo, parts: list[str]) -> None:
        parent, pcanon, name = self._entry_parent(parts)
        path = join(pcanon, name)
        if self._clear_slot(parent, pcanon, name, keep_dir=True):
            node = parent.children[name]
            assert isinstance(node, Dir)
            self._set_dir_meta(node, path, m)
        else:
            self._bind(parent, name, path, Dir(Meta.of(m, DIR), self._pos))
            self._fresh.add(path)
        self._mark_upper(path)

    def _set_dir_meta(self, d: Dir, path: str, m: tarfile.TarInfo) -> None:
        """Dir over dir: the new attributes; xattrs are added to the old ones, as setxattr
        on an existing directory adds them."""
        if self.track and path and path not in self._before:
            self._before[path] = _DirAttrs(d, d.meta)
        meta = Meta.of(m, DIR)
        if d.meta.xattrs:
            meta.xattrs = {**d.meta.xattrs, **(meta.xattrs or {})}
        d.meta = meta

    def _hardlink(self, m: tarfile.TarInfo, parts: list[str]) -> None:
        tparts = split_name(m.linkname, m.name, what="hardlink target")
        if not tparts:
            raise errors.InvalidInputError(f"layer tar: {m.name!r}: hardlink to the root")
        parent, pcanon, name = self._entry_parent(parts)
        dest = join(pcanon, name)
        missing = errors.InvalidInputError(
            f"layer tar: {m.name!r}: hardlink target {m.linkname!r} does not exist"
        )
        found = self._resolve(tparts[:-1], create=False)
        if found is None:
            raise missing
        tdir, tcanon = found
        tname = tparts[-1]
        target = tdir.children.get(tname)
        if target is None:
            raise missing
        if isinstance(target, Dir):
            raise errors.InvalidInputError(
                f"layer tar: {m.name!r}: hardlink target {m.linkname!r} is a directory"
            )
        tpath = join(tcanon, tname)
        if tpath == dest:
            self._mark_upper(dest)  # a link to itself: nothing to do
            return
        self._clear_slot(parent, pcanon, name, keep_dir=False)
        if tpath.startswith(dest + "/"):
            # replacing the destination removed the target (a link into its own old tree)
            raise missing
        self._bind(parent, name, dest, target)
        self._mark_upper(dest)

    # -- whiteouts --------------------------------------------------------------------------

    def _whiteout(self, parts: list[str]) -> None:
        self._stats.whiteouts += 1
        base = parts[-1]
        if base == WHITEOUT_OPAQUE:
            found = self._resolve(parts[:-1], create=False)
            if found is not None:
                self._purge_lower(found[0], found[1])
            return
        if base.startswith(WHITEOUT_META_PREFIX):
            self._stats.skipped += 1
            self._warn(f"layer tar: {self._member!r}: AUFS metadata skipped")
            return
        target = base[len(WHITEOUT_PREFIX):]
        if target in ("", ".", ".."):
            raise errors.InvalidInputError(
                f"layer tar: {self._member!r}: invalid whiteout name {base!r}"
            )
        found = self._resolve(parts[:-1], create=False)
        if found is None:
            return  # nothing below to hide
        pdir, pcanon = found
        path = join(pcanon, target)
        if path in self._upper:
            return  # written by this layer: only a later layer may hide it
        node = pdir.children.get(target)
        if node is None:
            return
        if isinstance(node, Dir) and path in self._upper_anc:
            # this layer already wrote into it: hide only the lower part
            self._purge_lower(node, path)
            return
        self._unbind(pdir, target, path)

    def _purge_lower(self, d: Dir, canon: str) -> None:
        """Remove what lower layers left in a directory, keeping this layer's entries."""
        stack = [(d, canon)]
        while stack:
            d, canon = stack.pop()
            if canon in self._fresh or canon in self._opaqued:
                continue
            self._opaqued.add(canon)
            for child in list(d.children):
                path = join(canon, child)
                node = d.children[child]
                if path in self._upper_anc and isinstance(node, Dir):
                    stack.append((node, path))
                    continue
                if path in self._upper:
                    continue
                self._unbind(d, child, path)


# -- writing the merged tree as one tar ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WriteStats:
    """What :func:`write_merged` wrote: tar entries, file content bytes, total tar bytes, and
    the layers it read a second time for their content."""

    entries: int
    content_bytes: int
    tar_bytes: int
    layers_read: tuple[int, ...]


def _tar_entry(name: str, meta: Meta, *, link: str | None = None,
               content: Callable[[], Source] | None = None) -> TarEntry:
    """The tar entry of ``meta`` under ``name`` (a hardlink to ``link`` when given). Times
    are whole seconds and owners numeric, as every layer :mod:`~layouttool.rootfs.write`
    makes."""
    xattrs = {} if link is not None or not meta.xattrs else {
        k: v.encode("utf-8", "surrogateescape") for k, v in meta.xattrs.items()}
    return TarEntry(
        name,
        tarfile.LNKTYPE if link is not None else _TAR_TYPE[meta.kind],
        meta.mode,
        meta.uid,
        meta.gid,
        int(meta.mtime),
        meta.size if link is None and meta.kind == FILE else 0,
        link if link is not None else meta.target,
        meta.devmajor,
        meta.devminor,
        xattrs,
        content,
    )


class _Chunks:
    """A :class:`~layouttool.rootfs.write.Source` over an iterator of byte chunks."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = chunks
        self._buf = b""

    def read(self, n: int = -1, /) -> bytes:
        if not self._buf:
            self._buf = next(self._chunks, b"")
        if n < 0 or n >= len(self._buf):
            out, self._buf = self._buf, b""
            return out
        out, self._buf = self._buf[:n], self._buf[n:]
        return out


@dataclass(slots=True)
class _Event:
    """Something to write when pass 2 reaches member ``pos``: a directory, or an inode under
    ``primary`` with its other names ``others`` as hardlinks to it."""

    pos: Pos
    path: str
    node: Node
    others: tuple[str, ...] = ()

    @property
    def needs_content(self) -> bool:
        m = self.node.meta
        return m.kind == FILE and m.size > 0


def _plan(tree: MergedTree) -> tuple[dict[int, list[_Event]], dict[str, Dir]]:
    """The write events of every layer, in member order, and every directory by path."""
    dirs: dict[str, Dir] = {}
    names: dict[Inode, list[str]] = {}
    events: list[_Event] = []
    for path, node in tree._walk():
        if isinstance(node, Dir):
            dirs[path] = node
            events.append(_Event(node.pos, path, node))
        else:
            names.setdefault(node, []).append(path)
    for inode, paths in names.items():
        # the name the content was stored under when it survives, else the first by name:
        # a link whose target a later layer deleted or replaced still gets the content
        primary = inode.path if inode.path in paths else min(paths)
        others = tuple(sorted(p for p in paths if p != primary))
        events.append(_Event(inode.pos, primary, inode, others))
    events.sort(key=lambda e: (e.pos, e.path))
    by_layer: dict[int, list[_Event]] = {}
    for e in events:
        by_layer.setdefault(e.pos[0], []).append(e)
    return by_layer, dirs


class MergedTar:
    """The tree as the tar entries of one layer (pass 2), for
    :class:`~layouttool.rootfs.write.TarStream`.

    The entries come in layer order: each object at the position of the member that made it
    (directories no entry named: at the member that implied them), every directory before
    anything inside it, the root (``./``) first when a layer gave it attributes. A file's bytes
    are read from the layer that holds them, at the offset the first read found:
    ``open_layer(i)`` must give layer ``i``'s uncompressed tar stream again, exactly as
    :meth:`MergedTree.apply_layer` read it (its context manager drains and verifies what is
    left); layers that hold no surviving content are not read at all. A hardlinked inode is
    written once, under the name its content was stored under when that survives, else under
    its first surviving name, immediately followed by its other names as hardlinks to it: a
    link whose target a later layer deleted or replaced carries the content
    (go-containerregistry #977). Names are relative POSIX paths; whiteouts never appear.
    Bounded memory: contents stream through in CHUNK_SIZE pieces.
    """

    def __init__(
        self,
        tree: MergedTree,
        open_layer: Callable[[int], AbstractContextManager[typing.BinaryIO]],
    ) -> None:
        self._tree = tree
        self._open_layer = open_layer
        #: the layers read a second time (filled while the entries are pulled)
        self.layers_read: list[int] = []

    def entries(self) -> Iterator[TarEntry]:
        """The entries, lazily: pull each one's content before the next entry."""
        by_layer, dirs = _plan(self._tree)
        done: set[str] = set()

        def ensure_dir(path: str) -> Iterator[TarEntry]:
            todo = []
            while path and path not in done:
                todo.append(path)
                path = posixpath.dirname(path)
            for p in reversed(todo):
                done.add(p)
                yield _tar_entry(p, dirs[p].meta)

        def emit(e: _Event, src: _Cursor | None) -> Iterator[TarEntry]:
            if isinstance(e.node, Dir):
                yield from ensure_dir(e.path)
                return
            meta = e.node.meta
            yield from ensure_dir(posixpath.dirname(e.path))
            opener: Callable[[], Source] | None = None
            if e.needs_content:
                assert src is not None and e.node.data is not None
                offset, runs = e.node.data
                src.skip_to(offset, e.path)
                chunks = _Chunks(_content(src, meta.size, runs, e.path))

                def opener() -> Source:
                    return chunks

            yield _tar_entry(e.path, meta, content=opener)
            for other in e.others:
                yield from ensure_dir(posixpath.dirname(other))
                yield _tar_entry(other, meta, link=e.path)

        if self._tree.root_set:
            yield _tar_entry(".", self._tree.root.meta)
        for layer in range(self._tree.layers):
            events = by_layer.get(layer, [])
            if not any(e.needs_content for e in events):
                for e in events:
                    yield from emit(e, None)
                continue
            self.layers_read.append(layer)
            with self._open_layer(layer) as stream:
                cursor = _Cursor(stream, layer)
                for e in events:
                    yield from emit(e, cursor)


def write_merged(
    tree: MergedTree,
    open_layer: Callable[[int], AbstractContextManager[typing.BinaryIO]],
    write: Callable[[bytes], object],
) -> WriteStats:
    """Write ``tree`` as one uncompressed tar to ``write`` (see :class:`MergedTar`)."""
    merged = MergedTar(tree, open_layer)
    stream = TarStream(merged.entries())
    size = 0
    try:
        while data := stream.read(CHUNK_SIZE):
            write(data)
            size += len(data)
    finally:
        stream.close()
    return WriteStats(stream.entries, stream.content_bytes, size, tuple(merged.layers_read))


class _Cursor:
    """A forward-only reader of a layer's uncompressed stream that knows its position (pass 2
    reads a file's bytes at the offset pass 1 found, without parsing the headers again)."""

    def __init__(self, src: Reader, layer: int) -> None:
        self._src = src
        self._layer = layer
        self.pos = 0

    def read(self, n: int) -> bytes:
        """Exactly ``n`` bytes, fewer only at the end (the source may return short reads)."""
        data = self._src.read(n)
        if 0 < len(data) < n:
            parts = [data]
            got = len(data)
            while got < n and (more := self._src.read(n - got)):
                parts.append(more)
                got += len(more)
            data = b"".join(parts)
        self.pos += len(data)
        return data

    def skip_to(self, offset: int, name: str) -> None:
        while self.pos < offset:
            if not self.read(min(offset - self.pos, CHUNK_SIZE)):
                raise errors.IntegrityError(
                    f"layer {self._layer + 1} ended before the data of {name!r} that the first "
                    "read found (did the blob change?)"
                )
        if self.pos != offset:  # pragma: no cover - offsets only grow
            raise errors.InternalError(f"merged tree: {name!r}: data offsets go backwards")

    def tell(self) -> int:
        return self.pos


# -- comparing two trees --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DiffItem:
    """One path in a :class:`TreeDiff`: ``old`` and/or ``new`` attributes, and for a changed
    path what changed (``type``, ``content``, ``mode``, ``owner``, ``linkTarget``, ``xattrs``,
    ``device``)."""

    path: str
    old: Meta | None
    new: Meta | None
    changes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class TreeDiff:
    """Paths only in the second tree, only in the first, and in both but different."""

    added: tuple[DiffItem, ...]
    removed: tuple[DiffItem, ...]
    changed: tuple[DiffItem, ...]


def compare(a: MergedTree, b: MergedTree) -> TreeDiff:
    """File-level differences from ``a`` to ``b``: judged by type, mode, owner, xattrs, link
    target, device numbers and content digest (both trees must have been read with
    ``hash_contents``); mtimes, owner names and hardlink grouping are not judged."""
    added: list[DiffItem] = []
    removed: list[DiffItem] = []
    changed: list[DiffItem] = []
    old = {e.path: e.meta for e in a.entries()}
    for e in b.entries():
        before = old.pop(e.path, None)
        if before is None:
            added.append(DiffItem(e.path, None, e.meta))
            continue
        what = before.changes(e.meta)
        if what:
            changed.append(DiffItem(e.path, before, e.meta, what))
    removed = [DiffItem(p, m, None) for p, m in sorted(old.items())]
    if a.root_set or b.root_set:
        what = a.root.meta.changes(b.root.meta)
        if what:
            changed.insert(0, DiffItem(".", a.root.meta, b.root.meta, what))
    return TreeDiff(tuple(added), tuple(removed), tuple(changed))
