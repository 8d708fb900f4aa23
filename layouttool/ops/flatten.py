"""``flatten``: an image whose one layer holds its merged filesystem (``crane flatten``).

The layers are read once to merge their headers and once more for the contents that survive
(:mod:`layouttool.rootfs.merged_tar`); the new layer streams through diff_id hash -> compress ->
hashing blob write (:func:`layouttool.layers.store_layer`), so memory stays bounded. Then
:func:`layouttool.ops.edit.commit` stores the config and manifest (and any index above the
image) and moves the ref, in one ``index.json`` update, as ``append`` and ``config`` do.

Decisions:

* the new layer is compressed as the image's last layer is (gzip for an image without
  layers), like ``append``; ``--compression`` overrides it. A Docker-typed image stays
  Docker-typed (so it cannot get a zstd layer);
* the config keeps every field but ``rootfs.diff_ids`` (the one new layer) and ``history``
  (one entry saying what was flattened); ``created`` is that entry's time,
  ``SOURCE_DATE_EPOCH`` when set, else now (as ``append``);
* the manifest keeps its fields (annotations, ``subject``); the layer descriptors of the old
  layers, and their annotations, are gone;
* entries keep their owners, modes, xattrs and devices; times are whole seconds and owner
  names are dropped, as in every layer layouttool writes.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from layouttool import mediatypes as mt
from layouttool.codec import Compression
from layouttool.digest import Digest
from layouttool.layers import store_layer
from layouttool.model import Descriptor, Platform
from layouttool.mutate import history_entry
from layouttool.ops.append import layer_compression
from layouttool.ops.common import ResolvedImage
from layouttool.ops.edit import (
    ImageUpdate,
    check_tag,
    commit,
    open_base,
    source_date_epoch,
    timestamp,
)
from layouttool.ops.merged import merge_image
from layouttool.progress import NULL_PROGRESS, Progress
from layouttool.rootfs.merged_tar import MergedTar
from layouttool.rootfs.write import TarStream


@dataclass(frozen=True, slots=True)
class FlattenResult:
    """Where the flattened image went, and its one layer."""

    image: str
    update: ImageUpdate
    layer: Descriptor
    diff_id: Digest
    layers_before: int
    layers_reread: int
    entries: int
    content_bytes: int
    seconds: float

    def to_json(self) -> dict[str, Any]:
        """JSON form: the shared fields of the commands that change images, plus the layer."""
        return {
            "image": self.image,
            **self.update.to_json(),
            "layer": {**self.layer.to_json(), "diffID": str(self.diff_id)},
            "layersBefore": self.layers_before,
            "layersReread": self.layers_reread,
            "entries": self.entries,
            "contentBytes": self.content_bytes,
            "seconds": round(self.seconds, 3),
        }


def flattened_config(doc: Mapping[str, Any], diff_id: Digest, history: dict[str, Any]
                     ) -> dict[str, Any]:
    """``doc`` with one layer: ``rootfs.diff_ids`` is ``[diff_id]``, ``history`` is
    ``[history]``, ``created`` its time; every other field as it was."""
    out = dict(doc)
    rootfs = out.get("rootfs")
    rootfs = dict(rootfs) if isinstance(rootfs, dict) else {}
    rootfs.setdefault("type", "layers")
    rootfs["diff_ids"] = [str(diff_id)]
    out["rootfs"] = rootfs
    out["history"] = [history]
    out["created"] = history["created"]
    return out


def flatten_image(
    image: str,
    *,
    tag: str | None = None,
    platform: Platform | None = None,
    compression: Compression | str | None = None,
    progress: Progress = NULL_PROGRESS,
) -> FlattenResult:
    """Replace IMAGE's layers by one holding their merged filesystem (see the module
    docstring); ``tag`` names the result instead of moving IMAGE's ref. ``platform`` picks
    the image of a multi-platform index (the index is rewritten around it)."""
    start = time.monotonic()
    check_tag(tag)
    epoch = source_date_epoch()
    base = open_base(image, platform)
    comp = layer_compression(base, compression)
    layout = base.layout
    with layout.writing():
        img = ResolvedImage(layout, base.entry or base.manifest_desc, base.indexes,
                            base.manifest_desc, base.manifest, base.config)
        merged = merge_image(img, progress=progress)
        tar = MergedTar(merged.tree, merged.opener(progress))
        stream = TarStream(tar.entries())
        task = progress.task("flattened layer", None)
        try:
            res = store_layer(layout, stream, target=comp, uncompressed=True,
                              what="flattened layer", task=task)
        finally:
            stream.close()
        task.done()
        desc = res.blob.descriptor(mt.layer_media_type(comp, docker=base.manifest.is_docker))
        n = len(base.manifest.layers)
        history = history_entry(
            timestamp(epoch), "layouttool flatten",
            comment=f"{n} layer{'' if n == 1 else 's'} of {base.manifest_desc.digest} flattened",
        )
        config = flattened_config(base.config.doc, res.diff_id, history)
        update = commit(base, config, layers=(desc,), tag=tag)
    return FlattenResult(
        image=image,
        update=update,
        layer=desc,
        diff_id=res.diff_id,
        layers_before=n,
        layers_reread=len(tar.layers_read),
        entries=stream.entries,
        content_bytes=stream.content_bytes,
        seconds=time.monotonic() - start,
    )
