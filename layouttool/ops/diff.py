"""``diff``: what differs between two images' filesystems, and what each layer of one image
changes (``--layers``, the question dive answers).

Both read every layer once (:mod:`layouttool.ops.merged`), hashing file contents, and compare
the merged trees (:func:`layouttool.rootfs.treediff.compare`): a path is changed when its type,
mode, owner, xattrs, link target, device numbers or content digest differ, never because of
its size alone; mtimes, owner names and which paths are hardlinked together are not judged.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Any

from layouttool.errors import LayoutToolError
from layouttool.model import Platform
from layouttool.ops.common import ResolvedImage, resolve_image, select
from layouttool.ops.merged import MergedImage, merge_image
from layouttool.progress import NULL_PROGRESS, Progress
from layouttool.rootfs.layerchanges import Change
from layouttool.rootfs.nodes import Meta
from layouttool.rootfs.treediff import DiffItem, compare


def _attrs(meta: Meta) -> dict[str, Any]:
    return {
        "type": meta.kind,
        "size": meta.size,
        "mode": meta.mode,
        "uid": meta.uid,
        "gid": meta.gid,
        "linkTarget": meta.target or None,
        "digest": f"sha256:{meta.digest.hex()}" if meta.digest is not None else None,
    }


def _item(d: DiffItem) -> dict[str, Any]:
    if d.old is None:
        assert d.new is not None
        return {"path": d.path, **_attrs(d.new)}
    if d.new is None:
        return {"path": d.path, **_attrs(d.old)}
    return {"path": d.path, "changes": list(d.changes), "old": _attrs(d.old),
            "new": _attrs(d.new)}


@dataclass(frozen=True, slots=True)
class ImageDiffResult:
    """File-level differences from image ``old`` to image ``new``."""

    old: str
    new: str
    old_manifest: str
    new_manifest: str
    added: tuple[DiffItem, ...]
    removed: tuple[DiffItem, ...]
    changed: tuple[DiffItem, ...]
    seconds: float

    def to_json(self) -> dict[str, Any]:
        """JSON form: ``added``, ``removed``, ``changed`` (each item with a ``path``)."""
        return {
            "from": {"image": self.old, "manifestDigest": self.old_manifest},
            "to": {"image": self.new, "manifestDigest": self.new_manifest},
            "added": [_item(d) for d in self.added],
            "removed": [_item(d) for d in self.removed],
            "changed": [_item(d) for d in self.changed],
            "seconds": round(self.seconds, 3),
        }


def _open(image: str, platform: Platform | None, stack: contextlib.ExitStack) -> ResolvedImage:
    sel = select(image)
    # a shared lock keeps gc away from the blobs we read (a read-only layout has none)
    with contextlib.suppress(LayoutToolError, OSError):
        stack.enter_context(sel.layout.writing())
    return resolve_image(sel.layout, sel.entry, platform)


def diff_images(
    old: str,
    new: str,
    *,
    platform: Platform | None = None,
    progress: Progress = NULL_PROGRESS,
) -> ImageDiffResult:
    """Compare the filesystems of images ``old`` and ``new`` (any IMAGE form; they may be in
    different layouts). ``platform`` picks the image of a multi-platform index on both sides.
    """
    start = time.monotonic()
    with contextlib.ExitStack() as stack:
        a = merge_image(_open(old, platform, stack), hash_contents=True, progress=progress)
        b = merge_image(_open(new, platform, stack), hash_contents=True, progress=progress)
    d = compare(a.tree, b.tree)
    return ImageDiffResult(
        old=old,
        new=new,
        old_manifest=str(a.image.manifest_desc.digest),
        new_manifest=str(b.image.manifest_desc.digest),
        added=d.added,
        removed=d.removed,
        changed=d.changed,
        seconds=time.monotonic() - start,
    )


# -- diff --layers --------------------------------------------------------------------------------


def _change(c: Change, *, old: bool, new: bool) -> dict[str, Any]:
    out: dict[str, Any] = {"path": c.path}
    if new:
        out["type"] = c.kind
        out["size"] = c.size
    if old:
        out["oldType" if new else "type"] = c.old_kind
        out["oldSize" if new else "size"] = c.old_size
    return out


@dataclass(frozen=True, slots=True)
class LayerReport:
    """What one layer adds, removes and overwrites, and its share of wasted bytes."""

    index: int
    digest: str
    diff_id: str
    media_type: str
    size: int
    created_by: str | None
    entries: int
    file_bytes: int
    added: tuple[Change, ...]
    removed: tuple[Change, ...]
    overwritten: tuple[Change, ...]
    wasted_bytes: int
    hidden_bytes: int

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "index": self.index,
            "digest": self.digest,
            "diffID": self.diff_id,
            "mediaType": self.media_type,
            "size": self.size,
            "createdBy": self.created_by,
            "entries": self.entries,
            "fileBytes": self.file_bytes,
            "added": [_change(c, old=False, new=True) for c in self.added],
            "removed": [_change(c, old=True, new=False) for c in self.removed],
            "overwritten": [_change(c, old=True, new=True) for c in self.overwritten],
            "wastedBytes": self.wasted_bytes,
            "hiddenBytes": self.hidden_bytes,
        }


@dataclass(frozen=True, slots=True)
class LayersDiffResult:
    """Every layer's changes to the one below, and the bytes wasted on replaced files."""

    image: str
    manifest_digest: str
    layers: tuple[LayerReport, ...]
    file_bytes: int
    wasted_bytes: int
    #: (path, bytes, copies) of the content later layers hid, most bytes first
    wasted_files: tuple[tuple[str, int, int], ...]
    seconds: float

    @property
    def efficiency(self) -> float:
        """Share of the stored file bytes that the final filesystem shows (1.0: no waste)."""
        return 1.0 if not self.file_bytes else 1 - self.wasted_bytes / self.file_bytes

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "image": self.image,
            "manifestDigest": self.manifest_digest,
            "layers": [la.to_json() for la in self.layers],
            "fileBytes": self.file_bytes,
            "wastedBytes": self.wasted_bytes,
            "efficiency": round(self.efficiency, 6),
            "wastedFiles": [{"path": p, "bytes": b, "copies": c}
                            for p, b, c in self.wasted_files],
            "seconds": round(self.seconds, 3),
        }


def _created_by(merged: MergedImage) -> list[str | None]:
    """Each layer's ``created_by``: the config's history entries that made a layer, in order
    (None for all when they do not line up with the layers)."""
    hist = merged.image.config.doc.get("history")
    n = len(merged.layers)
    if not isinstance(hist, list):
        return [None] * n
    made = [h for h in hist if isinstance(h, dict) and not h.get("empty_layer")]
    if len(made) != n:
        return [None] * n
    return [h.get("created_by") if isinstance(h.get("created_by"), str) else None for h in made]


def diff_layers(
    image: str,
    *,
    platform: Platform | None = None,
    progress: Progress = NULL_PROGRESS,
) -> LayersDiffResult:
    """What each layer of IMAGE adds, removes and overwrites, and the bytes of file content
    that later layers replace or delete (stored in the image, never seen in a container)."""
    start = time.monotonic()
    with contextlib.ExitStack() as stack:
        merged = merge_image(_open(image, platform, stack), hash_contents=False, track=True,
                             progress=progress)
    tracker = merged.tree.tracker
    assert tracker is not None  # track=True
    created = _created_by(merged)
    reports = []
    for i, (desc, stats) in enumerate(zip(merged.layers, merged.stats, strict=True)):
        ch = stats.changes
        assert ch is not None  # track=True
        reports.append(LayerReport(
            index=i + 1,
            digest=str(desc.digest),
            diff_id=str(merged.image.config.diff_ids[i]),
            media_type=desc.media_type,
            size=desc.size,
            created_by=created[i],
            entries=stats.entries,
            file_bytes=stats.file_bytes,
            added=tuple(ch.added),
            removed=tuple(ch.removed),
            overwritten=tuple(ch.overwritten),
            wasted_bytes=tracker.layer_wasted_bytes(i),
            hidden_bytes=ch.hidden_bytes,
        ))
    wasted = tracker.wasted_files()
    return LayersDiffResult(
        image=image,
        manifest_digest=str(merged.image.manifest_desc.digest),
        layers=tuple(reports),
        file_bytes=sum(r.file_bytes for r in reports),
        wasted_bytes=sum(w.bytes for w in wasted),
        wasted_files=tuple((w.path, w.bytes, w.copies) for w in wasted),
        seconds=time.monotonic() - start,
    )
