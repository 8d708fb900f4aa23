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

Its users, each in a module of its own:

* ``export`` and ``flatten``: :class:`~layouttool.rootfs.merged_tar.MergedTar` gives the tree
  as the entries of one tar (the second pass over the layers);
* ``diff``: :func:`~layouttool.rootfs.treediff.compare` judges two trees;
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
from collections.abc import Iterator
from dataclasses import dataclass, field

from layouttool import errors
from layouttool.rootfs.layerchanges import ChangeTracker, LayerChanges
from layouttool.rootfs.names import (
    WHITEOUT_META_PREFIX,
    WHITEOUT_OPAQUE,
    WHITEOUT_PREFIX,
    join,
    split_name,
)
from layouttool.rootfs.nodes import (
    BLOCK,
    CHAR,
    DIR,
    FIFO,
    FILE,
    SYMLINK,
    Dir,
    Inode,
    Meta,
    Node,
    Pos,
    Runs,
)
from layouttool.rootfs.tarread import CHUNK_SIZE, Reader, corrupt, iter_members, open_stream

__all__ = ["Entry", "LayerStats", "MergedTree", "content_chunks"]

#: symlinks followed while resolving one path (as :class:`~layouttool.rootfs.ApplyOptions`)
MAX_SYMLINK_HOPS = 255
_MAX_WARNINGS = 100
_ZEROS = bytes(CHUNK_SIZE)


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


@dataclass(slots=True)
class LayerStats:
    """What :meth:`MergedTree.apply_layer` read.

    ``entries`` counts tar members (whiteouts and skipped ones included), ``file_bytes`` the
    file content the layer holds, ``whiteouts`` the whiteout and opaque markers, ``skipped``
    members not modelled (unknown types, AUFS metadata). ``changes`` only when tracking
    (:mod:`~layouttool.rootfs.layerchanges`).
    """

    entries: int = 0
    file_bytes: int = 0
    whiteouts: int = 0
    skipped: int = 0
    warnings: list[str] = field(default_factory=list)
    changes: LayerChanges | None = None


def _implicit_meta(mtime: float) -> Meta:
    """A parent directory no entry names: 0755 root:root, as unpack makes it (umoci,
    containerd); its mtime is the member's that implied it (unpack's is the clock's)."""
    return Meta(DIR, 0o755, 0, 0, int(mtime))


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


def content_chunks(src: Reader, size: int, runs: Runs | None, name: str) -> Iterator[bytes]:
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


class MergedTree:
    """The filesystem that applying layers in order gives, as metadata.

    Call :meth:`apply_layer` with each layer's uncompressed tar stream, lowest first. With
    ``track=True`` every layer's :class:`LayerStats` carries its
    :class:`~layouttool.rootfs.layerchanges.LayerChanges`, and :attr:`tracker` knows the
    content later layers hid.
    """

    def __init__(self, *, track: bool = False) -> None:
        self.root = Dir(Meta(DIR, 0o755, 0, 0, 0), (-1, -1))
        #: True once a layer carried an entry for the root itself (``./``)
        self.root_set = False
        #: number of layers applied
        self.layers = 0
        #: what each layer changed (``track=True``), else None
        self.tracker = ChangeTracker() if track else None
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
        if self.tracker is not None:
            self.tracker.start_layer()
        self._stats = stats = LayerStats()
        self._warnings = stats.warnings
        self._warn_count = 0
        self._upper.clear()
        self._upper_anc.clear()
        self._fresh.clear()
        self._opaqued.clear()
        self._skip = skip_names
        with open_stream(stream) as tar:
            for ordinal, m in enumerate(iter_members(tar, self._warn)):
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
                        for chunk in content_chunks(src, m.size, runs, m.name):
                            h.update(chunk)
                        digest = h.digest()
                self._apply(m, (self._layer, ordinal), digest)
        if self._warn_count > _MAX_WARNINGS:
            stats.warnings.append(
                f"... and {self._warn_count - _MAX_WARNINGS} more warnings not shown"
            )
        if self.tracker is not None:
            stats.changes = self.tracker.end_layer(self._node_at)
        return stats

    def entries(self) -> Iterator[Entry]:
        """Every path of the tree (the root excluded), sorted, with its attributes."""
        names: dict[Inode, list[str]] = {}
        for path, node in self.walk():
            if isinstance(node, Inode):
                names.setdefault(node, []).append(path)
        for path, node in self.walk():
            links: tuple[str, ...] = ()
            if isinstance(node, Inode) and len(names[node]) > 1:
                links = tuple(sorted(names[node]))
            yield Entry(path, node.meta, links)

    # -- walking ----------------------------------------------------------------------------

    def walk(self) -> Iterator[tuple[str, Node]]:
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
        if self.tracker is not None:
            self.tracker.bound(path, node)

    def _unbind(self, parent: Dir, name: str, path: str) -> None:
        node = parent.children.pop(name)
        if self.tracker is not None:
            self.tracker.unbound(path, node)

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
        if self.tracker is not None:
            self.tracker.dir_attrs(path, d)
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
