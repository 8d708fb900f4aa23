"""Layout management: init, ls, inspect, tag, untag."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from layouttool import mediatypes as mt
from layouttool.digest import Digest
from layouttool.errors import InvalidInputError, NotFoundError
from layouttool.model import Descriptor, Index, Manifest, Platform
from layouttool.ops.common import (
    read_index_blob,
    read_manifest,
    resolve_image,
    select,
)
from layouttool.refs import parse_image, resolve, validate_ref_name
from layouttool.store import Layout


@dataclass(frozen=True, slots=True)
class InitResult:
    """What ``init`` created."""

    layout: str

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {"layout": self.layout}


def init_layout(path: str | Path) -> InitResult:
    """Create an empty OCI layout.

    >>> import tempfile, pathlib
    >>> d = pathlib.Path(tempfile.mkdtemp()) / "out"
    >>> init_layout(d).layout == str(d)
    True
    """
    Layout.init(path)
    return InitResult(str(path))


@dataclass(frozen=True, slots=True)
class ListEntry:
    """One index.json entry as ``ls`` shows it."""

    ref: str | None
    name: str | None
    digest: str
    media_type: str
    platforms: tuple[str, ...]
    size: int | None

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "ref": self.ref,
            "name": self.name,
            "digest": self.digest,
            "mediaType": self.media_type,
            "platforms": list(self.platforms),
            "size": self.size,
        }


@dataclass(frozen=True, slots=True)
class ListResult:
    """Every entry of a layout's index.json."""

    layout: str
    images: tuple[ListEntry, ...]

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {"layout": self.layout, "images": [e.to_json() for e in self.images]}


def _manifest_size(m: Manifest, desc: Descriptor) -> int:
    return desc.size + m.config.size + sum(layer.size for layer in m.layers)


def _summarise(layout: Layout, desc: Descriptor) -> tuple[tuple[str, ...], int | None]:
    """Platforms and total size of an entry (reads manifests and configs, never layers)."""
    try:
        if mt.is_manifest(desc.media_type):
            m = read_manifest(layout, desc)
            plat: tuple[str, ...] = ()
            if mt.is_image_config(m.config.media_type):
                from layouttool.ops.common import read_config

                p = read_config(layout, m.config).platform
                plat = (str(p),) if p else ()
            return plat, _manifest_size(m, desc)
        if mt.is_index(desc.media_type):
            idx = read_index_blob(layout, desc)
            plats = []
            seen: dict[Digest, int] = {desc.digest: desc.size}
            for child in idx.manifests:
                if child.platform is not None and child.platform.os != "unknown":
                    plats.append(str(child.platform))
                if mt.is_manifest(child.media_type):
                    m = read_manifest(layout, child)
                    for d in (child, m.config, *m.layers):
                        seen[d.digest] = d.size
            return tuple(plats), sum(seen.values())
    except NotFoundError:
        return (), None
    return (), desc.size


def list_images(path: str | Path) -> ListResult:
    """Every index.json entry: ref name, full name, digest, media type, platforms, size."""
    layout = Layout.open(path)
    entries = []
    for d in layout.read_index().manifests:
        plats, size = _summarise(layout, d)
        entries.append(
            ListEntry(
                ref=d.annotations.get(mt.ANNOT_REF_NAME),
                name=d.annotations.get(mt.ANNOT_CONTAINERD_NAME),
                digest=str(d.digest),
                media_type=d.media_type,
                platforms=plats,
                size=size,
            )
        )
    return ListResult(str(path), tuple(entries))


RawKind = Literal["manifest", "config", "index"]


@dataclass(frozen=True, slots=True)
class InspectResult:
    """What ``inspect`` reports about one image."""

    image: str
    entry_digest: str
    entry_media_type: str
    manifest_digest: str
    manifest_media_type: str
    config_digest: str
    platform: str | None
    created: str | None
    layers: tuple[dict[str, Any], ...]
    size: int
    labels: dict[str, str] = field(default_factory=dict)
    entrypoint: list[str] | None = None
    cmd: list[str] | None = None
    env: list[str] = field(default_factory=list)
    platforms: tuple[str, ...] = ()
    annotations: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "image": self.image,
            "digest": self.entry_digest,
            "mediaType": self.entry_media_type,
            "manifestDigest": self.manifest_digest,
            "manifestMediaType": self.manifest_media_type,
            "configDigest": self.config_digest,
            "platform": self.platform,
            "platforms": list(self.platforms),
            "created": self.created,
            "size": self.size,
            "layers": list(self.layers),
            "labels": self.labels,
            "entrypoint": self.entrypoint,
            "cmd": self.cmd,
            "env": self.env,
            "annotations": self.annotations,
        }


def inspect_image(image: str, platform: Platform | None = None) -> InspectResult:
    """Describe one image: manifest, config, layers with their diff_ids."""
    sel = select(image)
    img = resolve_image(sel.layout, sel.entry, platform)
    cfg = img.config.doc
    c = cfg.get("config") if isinstance(cfg.get("config"), dict) else {}
    assert isinstance(c, dict)
    layers = []
    for i, layer in enumerate(img.manifest.layers):
        diff = img.config.diff_ids[i] if i < len(img.config.diff_ids) else None
        layers.append(
            {
                "digest": str(layer.digest),
                "size": layer.size,
                "mediaType": layer.media_type,
                "diffID": str(diff) if diff else None,
                # a lazy-pull layer (its descriptor names a TOC): "zstd:chunked" or "estargz"
                "lazy": mt.lazy_format(layer.annotations),
            }
        )
    plats: tuple[str, ...] = ()
    if img.indexes:
        plats = tuple(str(d.platform) for d in img.indexes[0].manifests if d.platform)
    p = img.config.platform
    return InspectResult(
        image=str(sel.ref),
        entry_digest=str(sel.entry.digest),
        entry_media_type=sel.entry.media_type,
        manifest_digest=str(img.manifest_desc.digest),
        manifest_media_type=img.manifest.media_type,
        config_digest=str(img.manifest.config.digest),
        platform=str(p) if p else None,
        created=cfg.get("created") if isinstance(cfg.get("created"), str) else None,
        layers=tuple(layers),
        size=_manifest_size(img.manifest, img.manifest_desc),
        labels=dict(c.get("Labels") or {}),
        entrypoint=c.get("Entrypoint"),
        cmd=c.get("Cmd"),
        env=list(c.get("Env") or []),
        platforms=plats,
        annotations=dict(sel.entry.annotations),
    )


def raw_document(image: str, kind: RawKind, platform: Platform | None = None) -> bytes:
    """The raw bytes of the image's manifest, config, or index (index.json when none)."""
    if kind == "index":
        ref = parse_image(image)
        if ref.ref is None and ref.digest is None:
            return Layout.open(ref.layout).read_index().raw
    sel = select(image)
    if kind == "index":
        if mt.is_index(sel.entry.media_type):
            return sel.layout.read_blob(sel.entry)
        return sel.layout.read_index().raw
    img = resolve_image(sel.layout, sel.entry, platform)
    return img.manifest.raw if kind == "manifest" else img.config.raw


@dataclass(frozen=True, slots=True)
class TagResult:
    """What ``tag`` or ``untag`` changed."""

    layout: str
    ref: str
    digest: str
    action: Literal["tagged", "moved", "untagged"]

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "layout": self.layout,
            "ref": self.ref,
            "digest": self.digest,
            "action": self.action,
        }


def ref_descriptor(desc: Descriptor, ref: str, full_name: str | None = None) -> Descriptor:
    """``desc`` carrying ``ref`` as its ref.name (and ``full_name`` as the containerd name)."""
    validate_ref_name(ref)
    annotations = {
        k: v
        for k, v in desc.annotations.items()
        if k not in (mt.ANNOT_REF_NAME, mt.ANNOT_CONTAINERD_NAME)
    }
    annotations[mt.ANNOT_REF_NAME] = ref
    if full_name:
        annotations[mt.ANNOT_CONTAINERD_NAME] = full_name
    return desc.with_(annotations=annotations)


def place_ref(entries: list[Descriptor], new: Descriptor) -> tuple[list[Descriptor], str]:
    """The index.json entries with ``new`` (which carries a ref.name) placed; pure.

    Other entries with the same ref.name are replaced, and so is an untagged entry of the same
    digest (as skopeo does). Returns the new list and the action (``tagged`` or ``moved``).
    """
    ref = new.annotations.get(mt.ANNOT_REF_NAME)
    action = "tagged"
    out: list[Descriptor] = []
    placed = False
    for d in entries:
        same_ref = d.annotations.get(mt.ANNOT_REF_NAME) == ref
        untagged_twin = d.digest == new.digest and mt.ANNOT_REF_NAME not in d.annotations
        if same_ref or untagged_twin:
            if same_ref and d.digest != new.digest:
                action = "moved"
            if not placed:
                out.append(new)
                placed = True
            continue
        out.append(d)
    if not placed:
        out.append(new)
    return out, action


def set_ref(layout: Layout, desc: Descriptor, ref: str, full_name: str | None = None) -> str:
    """Point ``ref`` at ``desc`` in index.json, moving it if it exists; return the action.

    Other entries with the same ref.name are replaced, and so is an untagged entry of the same
    digest (as skopeo does). Must be called with the layout's write lock held.
    """
    new = ref_descriptor(desc, ref, full_name)
    action = "tagged"

    def change(entries: list[Descriptor], _doc: dict[str, Any]) -> list[Descriptor]:
        nonlocal action
        out, action = place_ref(entries, new)
        return out

    layout.update_index(change)
    return action


def tag_image(image: str, new_ref: str) -> TagResult:
    """Give the image IMAGE names another ref in the same layout."""
    sel = select(image)
    with sel.layout.writing():
        action = set_ref(sel.layout, sel.entry, new_ref)
    return TagResult(str(sel.layout.root), new_ref, str(sel.entry.digest), action)  # type: ignore[arg-type]


def untag_image(image: str) -> TagResult:
    """Remove a ref from index.json (the blobs stay until gc)."""
    ref = parse_image(image) if isinstance(image, str) else image
    if not ref.ref:
        raise InvalidInputError(f"untag needs LAYOUT:REF, got {image!r}")
    layout = Layout.open(ref.layout)
    removed: list[Descriptor] = []

    def change(entries: list[Descriptor], _doc: dict[str, Any]) -> list[Descriptor]:
        hit = resolve(Index(b"", {}, mt.MT_OCI_INDEX, tuple(entries), None, {}), ref.ref, None,
                      ref.layout)
        removed.append(hit)
        return [d for d in entries if d != hit]

    with layout.writing():
        layout.update_index(change)
    hit = removed[-1]
    return TagResult(str(layout.root), hit.ref_name or ref.ref, str(hit.digest), "untagged")
