"""What differs between two merged trees (``diff``): paths added, removed and changed,
judged by type, mode, owner, xattrs, link target, device numbers and content digest
(:meth:`~layouttool.rootfs.nodes.Meta.changes`), never by size alone; mtimes, owner names and
which paths are hardlinked together are not judged."""

from __future__ import annotations

from dataclasses import dataclass

from layouttool.rootfs.merge import MergedTree
from layouttool.rootfs.nodes import Meta

__all__ = ["DiffItem", "TreeDiff", "compare"]


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
