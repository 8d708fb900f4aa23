"""``repack``: one new layer holding exactly what changed in an unpacked root filesystem.

``unpack`` leaves a record beside the rootfs (:mod:`layouttool.rootfs.record`); ``repack``
compares the tree with it (:mod:`layouttool.rootfs.scan`: stat first, inode and ctime clear
most paths with no further call), hashes only the regular files stat cannot clear, against
their original bytes read from the image's layers (the record says where they are), and
writes the difference as one layer through the same one-pass pipeline as ``append``: tar out
-> diff_id hash -> compress -> hashing blob write. Nothing changed: no layer, no new image,
and the result says so.

The new image is the *unpacked* image (the record names its manifest) plus the layer, as
``umoci repack`` does: repacking again after more edits gives the unpacked image plus one
layer with all of them, never a stack of partial layers. IMAGE's ref (or ``--tag``) is
pointed at the result; when IMAGE is a multi-platform index holding the unpacked image, the
index is rewritten around the new one.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from layouttool import mediatypes as mt
from layouttool.codec import CHUNK, Compression, Reader
from layouttool.digest import Digest
from layouttool.errors import (
    InvalidInputError,
    LayoutToolError,
    NotFoundError,
    from_oserror,
)
from layouttool.layers import plain_layer, spool_layer
from layouttool.model import Descriptor, Index
from layouttool.mutate import add_layer, history_entry
from layouttool.ops.append import layer_target, lazy_descriptor
from layouttool.ops.common import read_config, read_index_blob, read_manifest, select
from layouttool.ops.edit import (
    Base,
    ImageUpdate,
    check_tag,
    commit,
    source_date_epoch,
    timestamp,
)
from layouttool.progress import NULL_PROGRESS, Progress
from layouttool.rootfs.record import Record, RecordEntry, record_path
from layouttool.rootfs.scan import hash_file, layer_entries, scan
from layouttool.rootfs.write import TarStream, link_hardlinks
from layouttool.store import Layout


@dataclass(frozen=True, slots=True)
class RepackResult:
    """What ``repack`` found and wrote."""

    image: str
    bundle: str
    rootfs: str
    record: str
    update: ImageUpdate | None
    layer: dict[str, Any] | None
    added: int
    modified: int
    deleted: int
    opaque: int
    hashed: int
    seconds: float
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def changed(self) -> bool:
        """False when the tree was as unpack left it (nothing was written)."""
        return self.update is not None

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        upd = self.update.to_json() if self.update is not None else {
            "layout": None, "ref": None, "action": None, "digest": None, "mediaType": None,
            "manifestDigest": None, "configDigest": None, "previousDigest": None,
        }
        return {
            "image": self.image,
            "bundle": self.bundle,
            "rootfs": self.rootfs,
            "record": self.record,
            "changed": self.changed,
            **upd,
            "layer": self.layer,
            "changes": {"added": self.added, "modified": self.modified,
                        "deleted": self.deleted, "opaque": self.opaque, "hashed": self.hashed},
            "seconds": round(self.seconds, 3),
            "notes": list(self.notes),
        }


def locate(bundle: Path) -> tuple[Path, Path]:
    """The rootfs and the record of what ``unpack`` was given as DEST (a plain rootfs, whose
    record is its sibling, or a bundle, whose rootfs is ``rootfs/``)."""
    if not bundle.is_dir():
        raise NotFoundError(f"{bundle} is not a directory that 'layouttool unpack' made")
    plain = record_path(bundle)
    if plain.is_file():
        return bundle, plain
    inner = bundle / "rootfs"
    nested = record_path(inner)
    if inner.is_dir() and nested.is_file():
        return inner, nested
    raise NotFoundError(
        f"{bundle}: no unpack record ({plain} or {nested}); repack needs a DEST that "
        "'layouttool unpack' wrote"
    )


def _chain(layout: Layout, entry: Descriptor, target: Digest) -> tuple[Index, ...] | None:
    """The indexes from ``entry`` down to the manifest ``target``; None if it is not there."""
    if entry.digest == target:
        return ()
    if not mt.is_index(entry.media_type):
        return None

    def down(desc: Descriptor, depth: int) -> tuple[Index, ...] | None:
        if depth > 8:
            return None
        idx = read_index_blob(layout, desc)
        for kid in idx.manifests:
            if kid.digest == target:
                return (idx,)
            if mt.is_index(kid.media_type):
                below = down(kid, depth + 1)
                if below is not None:
                    return (idx, *below)
        return None

    return down(entry, 0)


def _base(image: str, header: dict[str, Any], notes: list[str]) -> Base:
    sel = select(image)
    try:
        man_desc = Descriptor.from_json(header.get("manifest"), "unpack record manifest")
    except InvalidInputError as exc:
        raise InvalidInputError(f"unpack record: {exc}") from exc
    if not sel.layout.has_blob(man_desc.digest):
        raise NotFoundError(
            f"{sel.layout.root}: the unpacked image's manifest {man_desc.digest} is not in this "
            "layout (was the bundle unpacked from another one?)"
        )
    manifest = read_manifest(sel.layout, man_desc)
    config = read_config(sel.layout, manifest.config)
    chain = _chain(sel.layout, sel.entry, man_desc.digest)
    if chain is None:
        notes.append(
            f"{image} pointed at {sel.entry.digest}, not at the unpacked image "
            f"{man_desc.digest}; the new image is built on the unpacked one"
        )
        chain = ()
    return Base(sel.layout, sel.ref, sel.entry, chain, man_desc, manifest, config)


def _hash_ranges(src: Reader, ranges: list[tuple[int, int]]) -> dict[tuple[int, int], bytes]:
    """sha256 of each (offset, size) byte range of ``src`` (ranges sorted, not overlapping),
    reading it once; a range the stream ends in has no hash."""
    out: dict[tuple[int, int], bytes] = {}
    pos = 0
    for off, size in ranges:
        while pos < off:
            data = src.read(min(CHUNK, off - pos))
            if not data:
                return out
            pos += len(data)
        h = hashlib.sha256()
        left = size
        while left:
            data = src.read(min(CHUNK, left))
            if not data:
                return out
            h.update(data)
            left -= len(data)
            pos += len(data)
        out[(off, size)] = h.digest()
    return out


def _judge(layout: Layout, layers: tuple[Descriptor, ...],
           uncertain: list[tuple[str, RecordEntry]], rootfs: Path, progress: Progress
           ) -> set[str]:
    """The uncertain files whose content differs from their original in the image (the
    unpacked image's ``layers``, read from the layout: the record only says where)."""
    changed: set[str] = set()
    wanted: dict[int, list[tuple[str, int, int]]] = defaultdict(list)
    for rel, r in uncertain:
        if 0 <= r.src_layer < len(layers):
            wanted[r.src_layer].append((rel, r.src_offset, r.size))
        else:
            changed.add(rel)  # bytes we cannot find again: written, to be safe
    for li, files in sorted(wanted.items()):
        desc = layers[li]
        task = progress.task(f"compare with layer {li + 1} {desc.digest.short}", desc.size)
        # the blob's digest covers what is read (plain_layer drains and checks it)
        with plain_layer(layout, desc, None, what=f"layer {li + 1} {desc.digest}",
                         advance=task.advance) as plain:
            got = _hash_ranges(plain, sorted({(off, size) for _, off, size in files}))
        task.done()
        for rel, off, size in files:
            if got.get((off, size)) != hash_file(rootfs, rel):
                changed.add(rel)
    return changed


def repack_image(
    image: str,
    bundle: str | os.PathLike[str],
    *,
    tag: str | None = None,
    compression: Compression | str | None = None,
    history_comment: str | None = None,
    progress: Progress = NULL_PROGRESS,
) -> RepackResult:
    """Write what changed in the rootfs that ``unpack`` made at ``bundle`` as one layer on
    the unpacked image, and point IMAGE's ref (or ``tag``) at the result.

    ``compression`` defaults to that of the image's last layer. Mtimes are clamped to
    ``SOURCE_DATE_EPOCH`` when it is set. No change: nothing is written
    (``result.changed`` is False).
    """
    start = time.monotonic()
    check_tag(tag)
    bpath = Path(bundle)
    rootfs, rec_path = locate(bpath)
    record = Record(rec_path)
    header = record.header
    notes: list[str] = []
    with record:
        base = _base(image, header, notes)
        comp, lazy = layer_target(base, compression)
        rootless = bool(header.get("rootless"))
        try:
            same_fs = rootfs.stat().st_dev == header.get("dev")
            plan = scan(rootfs, iter(record), rootless=rootless, same_fs=same_fs)
        except OSError as exc:
            raise from_oserror(exc, "repack: scan", rootfs) from exc
    if not same_fs:
        notes.append(f"{rootfs} is not on the filesystem it was unpacked to: every file "
                     "was compared by content")
    changed = _judge(base.layout, base.manifest.layers, plan.uncertain, rootfs, progress)
    actions = plan.finish(changed)

    def result(update: ImageUpdate | None, layer: dict[str, Any] | None) -> RepackResult:
        return RepackResult(
            image=image, bundle=str(bpath), rootfs=str(rootfs), record=str(rec_path),
            update=update, layer=layer, added=plan.added, modified=plan.modified,
            deleted=plan.deleted, opaque=len(plan.opaque), hashed=len(plan.uncertain),
            seconds=time.monotonic() - start, notes=tuple(notes),
        )

    if not actions:
        notes.append("no changes since unpack: no layer written, no new image")
        return result(None, None)
    epoch = source_date_epoch()
    created = timestamp(epoch)
    warns: list[str] = []

    def owner_of(rel: str, st: os.stat_result) -> tuple[int, int]:
        # rootless: the disk cannot hold the image's owners; the record kept them, and what
        # the user added belongs to root (the user is root in the container)
        return plan.owners.get(rel, (0, 0)) if rootless else (st.st_uid, st.st_gid)

    layer_type = mt.layer_media_type(comp, docker=base.manifest.is_docker)
    stream = TarStream(link_hardlinks(layer_entries(
        rootfs, actions, owner=owner_of, clamp=epoch, warn=warns.append)))
    with base.layout.writing():
        task = progress.task("repack layer", None)
        try:
            with spool_layer(base.layout, stream, target=comp, declared=Compression.NONE,
                             what="repack layer", task=task, lazy=lazy) as pending:
                res = pending.commit()
        except LayoutToolError:
            raise
        except OSError as exc:
            raise from_oserror(exc, f"repack {rootfs}: read") from exc
        finally:
            stream.close()
        task.done()
        desc = lazy_descriptor(res.blob.descriptor(layer_type), res.annotations)
        config = add_layer(base.config.doc, res.diff_id,
                           history_entry(created, "layouttool repack", comment=history_comment))
        update = commit(base, config, add_layers=(desc,), tag=tag)
    layer = {"digest": str(desc.digest), "size": desc.size, "mediaType": layer_type,
             "diffID": str(res.diff_id), "uncompressedSize": res.uncompressed_size,
             "entries": stream.entries}
    notes.extend(warns)
    return result(update, layer)
