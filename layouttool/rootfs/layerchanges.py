"""What each layer does to the merged tree below it (``diff --layers``, the question dive
answers): the paths it adds, removes and overwrites, and the bytes of file content stored in
a layer that the final tree does not show.

A :class:`ChangeTracker` is told by :class:`~layouttool.rootfs.merge.MergedTree` (built with
``track=True``) about every path bound or unbound and every directory whose attributes a
layer sets; at the end of the layer it compares what each touched path held when the layer
began with what it holds now. A file's content is wasted when its inode loses its last name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from layouttool.rootfs.nodes import DIR, FILE, Dir, Inode, Meta, Node

__all__ = ["Change", "ChangeTracker", "LayerChanges", "WastedFile"]


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
    """What one layer did to the tree below it.

    ``added``: paths that did not exist below; ``removed``: paths that existed below and are
    gone (whiteouts, opaque markers, replaced directories); ``overwritten``: paths that
    existed below and now hold another object (a new file over a file, a file over a
    directory, ...) or a directory whose attributes changed. ``hidden_bytes``: bytes of file
    content of lower layers (or this one) that this layer made invisible.
    """

    added: list[Change] = field(default_factory=list)
    removed: list[Change] = field(default_factory=list)
    overwritten: list[Change] = field(default_factory=list)
    hidden_bytes: int = 0


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



class ChangeTracker:
    """The bookkeeping behind :class:`LayerChanges` and :class:`WastedFile` (see the module
    docstring), one layer at a time."""

    def __init__(self) -> None:
        #: each path this layer touched -> what it held when the layer began
        self._before: dict[str, _Before] = {}
        #: path a file's content was stored under -> (bytes, copies) made invisible
        self._wasted: dict[str, tuple[int, int]] = {}
        #: per layer: bytes of file content it stored that the final tree does not show
        self._layer_waste: list[int] = []
        #: bytes of file content this layer made invisible
        self._hidden = 0

    def start_layer(self) -> None:
        """A new layer begins."""
        self._layer_waste.append(0)
        self._before.clear()
        self._hidden = 0

    def bound(self, path: str, node: Node) -> None:
        """``node`` was put at ``path``."""
        self._before.setdefault(path, None)
        if isinstance(node, Inode):
            node.links += 1

    def unbound(self, path: str, node: Node) -> None:
        """``node`` (and, for a directory, all it held) was taken from ``path``."""
        stack: list[tuple[str, Node]] = [(path, node)]
        while stack:
            p, n = stack.pop()
            self._before.setdefault(p, n)
            if isinstance(n, Dir):
                stack.extend((f"{p}/{c}", child) for c, child in n.children.items())
                continue
            n.links -= 1
            if n.links == 0 and n.meta.kind == FILE:
                # its last name is gone, so its stored content is wasted
                size = n.meta.size
                self._layer_waste[n.pos[0]] += size
                b, c = self._wasted.get(n.path, (0, 0))
                self._wasted[n.path] = (b + size, c + 1)
                self._hidden += size

    def dir_attrs(self, path: str, d: Dir) -> None:
        """The layer is about to set the attributes of the directory ``d`` at ``path``."""
        if path and path not in self._before:
            self._before[path] = _DirAttrs(d, d.meta)

    def end_layer(self, node_at: Callable[[str], Node | None]) -> LayerChanges:
        """What the layer did; ``node_at`` gives what a path holds now."""
        ch = LayerChanges(hidden_bytes=self._hidden)
        for path in sorted(self._before):
            old = self._before[path]
            cur = node_at(path)
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
        return ch

    def wasted_files(self) -> list[WastedFile]:
        """Paths whose stored content is not in the final tree, most bytes first."""
        out = [WastedFile(p, b, c) for p, (b, c) in self._wasted.items() if b or c]
        out.sort(key=lambda w: (-w.bytes, w.path))
        return out

    def layer_wasted_bytes(self, layer: int) -> int:
        """Bytes of file content ``layer`` stored that the final tree does not show."""
        return self._layer_waste[layer]
