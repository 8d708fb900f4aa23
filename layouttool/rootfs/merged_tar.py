"""The merged tree of an image's layers written as one tar (``export``, ``flatten``): the
second pass over the layers.

:class:`MergedTar` turns a :class:`~layouttool.rootfs.merge.MergedTree` into the entries of
one layer, which :class:`~layouttool.rootfs.write.TarStream` writes like every layer we make;
each surviving file's bytes are read from its layer at the offset the first pass found (no
header is parsed twice), and layers that hold no surviving content are not read again.
"""

from __future__ import annotations

import posixpath
import tarfile
import typing
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass

from layouttool import errors
from layouttool.rootfs.merge import MergedTree, content_chunks
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
)
from layouttool.rootfs.tarread import CHUNK_SIZE, Reader
from layouttool.rootfs.write import Source, TarEntry, TarStream

__all__ = ["MergedTar", "WriteStats", "write_merged"]

_TAR_TYPE = {
    FILE: tarfile.REGTYPE,
    DIR: tarfile.DIRTYPE,
    SYMLINK: tarfile.SYMTYPE,
    CHAR: tarfile.CHRTYPE,
    BLOCK: tarfile.BLKTYPE,
    FIFO: tarfile.FIFOTYPE,
}


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
    for path, node in tree.walk():
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
                chunks = _Chunks(content_chunks(src, meta.size, runs, e.path))

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
