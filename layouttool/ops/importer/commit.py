"""The writes of an import, once every check has passed: the planned blobs committed leaves
first (layers, raw copies, configs), then the manifests, then ``index.json`` changed once."""

from __future__ import annotations

from typing import Any

from layouttool import mediatypes as mt
from layouttool.digest import Digest
from layouttool.errors import IntegrityError
from layouttool.formats.docker_archive import Tag
from layouttool.model import Descriptor, dump_json, make_manifest_doc
from layouttool.ops.importer.plan import Plan
from layouttool.ops.importer.result import ImportedImage, ImportedLayer
from layouttool.ops.layout import place_refs, ref_descriptor
from layouttool.store import BlobInfo, Layout


def write_plan(layout: Layout, plan: Plan) -> tuple[tuple[ImportedImage, ...], int]:
    """Commit every blob (leaves first), write the manifests, and change index.json once:
    the images added (one per tag) and the bytes written."""
    # every in-memory document is checked before the first commit, so a bad one cannot leave
    # the blobs before it behind
    for digest, data in plan.small.items():
        if Digest.of_bytes(data, digest.algorithm) != digest:
            raise IntegrityError(f"blob {digest}: content does not match its digest")
    written: dict[Digest, int] = {}
    layer_info: dict[str, BlobInfo] = {}
    for name, pending in plan.layers.items():
        res = pending.commit()
        layer_info[name] = res.blob
        written[res.blob.digest] = res.blob.size
    for digest, w in plan.raws.items():
        written[digest] = w.commit().size
    for digest, data in plan.small.items():
        written[digest] = layout.put_bytes(data, expected=digest).size

    # (index.json entry without refs, tags, layers for the result, config digest)
    new_entries: list[tuple[Descriptor, tuple[Tag, ...], tuple[ImportedLayer, ...], str | None]]
    new_entries = []
    for img in plan.images:
        descs: list[Descriptor] = []
        out_layers: list[ImportedLayer] = []
        for slot in img.layers:
            if slot.foreign is not None:
                d = slot.foreign
            else:
                assert slot.member is not None
                info = layer_info[slot.member]
                d = Descriptor(
                    media_type=slot.media_type,
                    digest=info.digest,
                    size=info.size,
                    annotations=dict(slot.annotations),
                )
            descs.append(d)
            out_layers.append(
                ImportedLayer(
                    str(d.digest),
                    d.size,
                    str(slot.diff_id),
                    d.media_type,
                    slot.recompressed,
                    foreign=slot.foreign is not None,
                )
            )
        raw = dump_json(
            make_manifest_doc(media_type=img.media_type, config=img.config, layers=descs)
        )
        info = layout.put_bytes(raw)
        written[info.digest] = info.size
        mdesc = Descriptor(
            media_type=img.media_type, digest=info.digest, size=info.size, platform=img.platform
        )
        new_entries.append((mdesc, img.tags, tuple(out_layers), str(img.config.digest)))
    for entry, man in plan.entries:
        layers_out: tuple[ImportedLayer, ...] = ()
        cfg_digest = None
        if man is not None:
            cfg_digest = str(man.config.digest)
            layers_out = tuple(
                ImportedLayer(
                    str(d.digest),
                    d.size,
                    None,
                    d.media_type,
                    False,
                    foreign=mt.is_nondistributable(d.media_type),
                )
                for d in man.layers
            )
        new_entries.append((entry, (), layers_out, cfg_digest))

    actions: list[tuple[Descriptor, str]] = []

    def change(entries: list[Descriptor], _doc: dict[str, Any]) -> list[Descriptor]:
        # one entry per tag, else the manifest itself (tagged by its own ref.name, or not)
        news = [
            d
            for mdesc, tags, _layers, _cfg in new_entries
            for d in ([ref_descriptor(mdesc, t.ref, t.name) for t in tags] or [mdesc])
        ]
        out, how = place_refs(entries, news)
        actions[:] = list(zip(news, how, strict=True))
        return out

    layout.update_index(change)
    results: list[ImportedImage] = []
    it = iter(actions)
    for mdesc, tags, layers_out, cfg in new_entries:
        for _ in range(max(len(tags), 1)):
            desc, action = next(it)
            results.append(
                ImportedImage(
                    ref=desc.ref_name,
                    name=desc.annotations.get(mt.ANNOT_CONTAINERD_NAME),
                    digest=str(mdesc.digest),
                    media_type=mdesc.media_type,
                    config_digest=cfg,
                    layers=layers_out,
                    action=action,
                )
            )
    return tuple(results), sum(written.values())


__all__ = ["write_plan"]
