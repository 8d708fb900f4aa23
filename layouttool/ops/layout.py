"""Layout management: init, ls, inspect, tag, untag."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from layouttool import mediatypes as mt
from layouttool.digest import Digest
from layouttool.errors import InvalidInputError, LayoutToolError, NotFoundError
from layouttool.model import ArtifactManifest, Descriptor, Index, Manifest, Platform
from layouttool.ops.common import read_config, resolve_manifest, select
from layouttool.reader import Finding, Kind, read_document
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
    #: what the entry is (image, index, artifact, schema1, unknown); None when unreadable
    kind: str | None = None
    #: why the entry cannot be read (None when it can)
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "ref": self.ref,
            "name": self.name,
            "digest": self.digest,
            "mediaType": self.media_type,
            "kind": self.kind,
            "platforms": list(self.platforms),
            "size": self.size,
            "error": self.error,
        }


@dataclass(frozen=True, slots=True)
class ListResult:
    """Every entry of a layout's index.json."""

    layout: str
    images: tuple[ListEntry, ...]
    #: what the reader found odd (printed by the CLI on stderr)
    warnings: tuple[Finding, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "layout": self.layout,
            "images": [e.to_json() for e in self.images],
            "warnings": [w.to_json() for w in self.warnings],
        }


def _manifest_size(m: Manifest, desc: Descriptor) -> int:
    return desc.size + m.config.size + sum(layer.size for layer in m.layers)


class _Summary:
    """What ls shows of one entry (a plain class: a dataclass costs ~1 ms of start-up)."""

    __slots__ = ("error", "kind", "platforms", "size")

    def __init__(self) -> None:
        self.kind: str | None = None
        self.platforms: tuple[str, ...] = ()
        self.size: int | None = None
        self.error: str | None = None


def _summarise(layout: Layout, desc: Descriptor, warnings: list[Finding]) -> _Summary:
    """Kind, platforms and total size of an entry (reads manifests and configs, never layers);
    what stops it is the entry's error, never an exception."""
    out = _Summary()
    where = desc.ref_name or str(desc.digest)
    doc = read_document(layout, desc, where)
    warnings += doc.warnings
    if not doc.ok:
        out.error = (doc.problems or doc.findings)[0].message
        return out
    out.kind = doc.kind.value
    try:
        if doc.manifest is not None:
            m = doc.manifest
            if doc.kind is Kind.IMAGE:
                p = read_config(layout, m.config).platform
                out.platforms = (str(p),) if p else ()
            out.size = _manifest_size(m, desc)
        elif doc.index is not None:
            plats = []
            seen: dict[Digest, int] | None = {desc.digest: desc.size}
            for child in doc.index.manifests:
                if child.platform is not None and child.platform.os != "unknown":
                    plats.append(str(child.platform))
                if seen is None or mt.is_index(child.media_type):
                    continue
                sub = read_document(layout, child, f"{where} > manifest {child.digest}",
                                    "manifest")
                warnings += sub.warnings
                if sub.raw is None and not sub.problems:
                    seen = None  # a platform that is not here: the size is unknown
                    continue
                sub.raise_unless_ok()
                if sub.manifest is not None:
                    for d in (child, sub.manifest.config, *sub.manifest.layers):
                        seen[d.digest] = d.size
            out.platforms = tuple(plats)
            out.size = sum(seen.values()) if seen is not None else None
        else:
            out.size = desc.size
    except LayoutToolError as exc:
        out.error = str(exc)
    return out


def list_images(path: str | Path) -> ListResult:
    """Every index.json entry: ref name, full name, digest, media type, kind, platforms, size,
    and the error of an entry that cannot be read (ls lists it anyway)."""
    layout = Layout.open(path)
    entries = []
    warnings: list[Finding] = []
    for d in layout.read_index().manifests:
        s = _summarise(layout, d, warnings)
        entries.append(
            ListEntry(
                ref=d.annotations.get(mt.ANNOT_REF_NAME),
                name=d.annotations.get(mt.ANNOT_CONTAINERD_NAME),
                digest=str(d.digest),
                media_type=d.media_type,
                platforms=s.platforms,
                size=s.size,
                kind=s.kind,
                error=s.error,
            )
        )
    return ListResult(str(path), tuple(entries), tuple(dict.fromkeys(warnings)))


RawKind = Literal["manifest", "config", "index"]


@dataclass(frozen=True, slots=True)
class InspectResult:
    """What ``inspect`` reports about one image or artifact."""

    image: str
    entry_digest: str
    entry_media_type: str
    manifest_digest: str
    manifest_media_type: str
    config_digest: str | None
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
    #: image or artifact
    kind: str = "image"
    #: an artifact's type: its artifactType, else its config's media type; None for an image
    artifact_type: str | None = None
    config_media_type: str | None = None
    subject: dict[str, Any] | None = None
    #: the manifest's own annotations (``annotations`` are the index.json entry's)
    manifest_annotations: dict[str, str] = field(default_factory=dict)
    #: what the reader found odd on the way (printed by the CLI on stderr)
    warnings: tuple[Finding, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "image": self.image,
            "kind": self.kind,
            "digest": self.entry_digest,
            "mediaType": self.entry_media_type,
            "manifestDigest": self.manifest_digest,
            "manifestMediaType": self.manifest_media_type,
            "artifactType": self.artifact_type,
            "configDigest": self.config_digest,
            "configMediaType": self.config_media_type,
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
            "manifestAnnotations": self.manifest_annotations,
            "subject": self.subject,
        }


def inspect_image(image: str, platform: Platform | None = None) -> InspectResult:
    """Describe one image (manifest, config, layers with their diff_ids) or one artifact
    (artifactType, config type, layers, subject, annotations)."""
    sel = select(image)
    res = resolve_manifest(sel.layout, sel.entry, platform)
    m = res.manifest
    content = res.document.content
    assert content is not None  # an image or an artifact was read
    cfg: dict[str, Any] = {}
    diff_ids: tuple[Digest, ...] = ()
    plat = None
    if res.kind is Kind.IMAGE and m is not None:
        config = read_config(sel.layout, m.config)
        cfg, diff_ids, plat = dict(config.doc), config.diff_ids, config.platform
    c = cfg.get("config") if isinstance(cfg.get("config"), dict) else {}
    assert isinstance(c, dict)
    # an OCI artifact manifest (image-spec v1.1 release candidates) has blobs and no config
    parts = m.layers if m is not None else content.blobs if isinstance(
        content, ArtifactManifest) else ()
    layers = []
    for i, layer in enumerate(parts):
        diff = diff_ids[i] if i < len(diff_ids) else None
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
    if res.indexes:
        plats = tuple(str(d.platform) for d in res.indexes[0].manifests if d.platform)
    return InspectResult(
        image=str(sel.ref),
        entry_digest=str(sel.entry.digest),
        entry_media_type=sel.entry.media_type,
        manifest_digest=str(res.manifest_desc.digest),
        manifest_media_type=res.document.media_type,
        config_digest=str(m.config.digest) if m is not None else None,
        platform=str(plat) if plat else None,
        created=cfg.get("created") if isinstance(cfg.get("created"), str) else None,
        layers=tuple(layers),
        size=res.manifest_desc.size + sum(d.size for d in parts) + (
            m.config.size if m is not None else 0),
        labels=dict(c.get("Labels") or {}),
        entrypoint=c.get("Entrypoint"),
        cmd=c.get("Cmd"),
        env=list(c.get("Env") or []),
        platforms=plats,
        annotations=dict(sel.entry.annotations),
        kind=res.kind.value,
        artifact_type=res.document.artifact_type,
        config_media_type=m.config.media_type if m is not None else None,
        subject=content.subject.to_json() if content.subject is not None else None,
        manifest_annotations=dict(content.annotations),
        warnings=res.warnings,
    )


def raw_document(image: str, kind: RawKind, platform: Platform | None = None) -> bytes:
    """The raw bytes of the image's (or artifact's) manifest, config, or index (index.json
    when none)."""
    if kind == "index":
        ref = parse_image(image)
        if ref.ref is None and ref.digest is None:
            return Layout.open(ref.layout).read_index().raw
    sel = select(image)
    if kind == "index":
        if mt.is_index(sel.entry.media_type):
            return sel.layout.read_blob(sel.entry)
        return sel.layout.read_index().raw
    res = resolve_manifest(sel.layout, sel.entry, platform)
    if kind == "manifest":
        assert res.document.raw is not None
        return res.document.raw
    if res.manifest is None:
        raise NotFoundError(f"{res.manifest_desc.digest} is {res.document.describe()}, which "
                            "has no config")
    return sel.layout.read_blob(res.manifest.config)


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


def place_refs(
    entries: list[Descriptor], news: list[Descriptor]
) -> tuple[list[Descriptor], list[str]]:
    """Place each of ``news`` in turn, in time linear in the entries (an import of thousands
    of tags into a layout of thousands: 25 s for 4,000, one by one); pure.

    A new entry with a ref.name goes as :func:`place_ref` places it (``tagged`` or
    ``moved``), or is ``unchanged`` when listed exactly so already. One without is ``added``
    at the end unless an entry of its digest is listed (``unchanged``).
    """
    slots: list[Descriptor | None] = list(entries)
    by_ref: dict[str, list[int]] = {}
    untagged: dict[Digest, list[int]] = {}
    listed: dict[Digest, int] = {}
    for i, d in enumerate(entries):
        r = d.annotations.get(mt.ANNOT_REF_NAME)
        if r is None:
            untagged.setdefault(d.digest, []).append(i)
        else:
            by_ref.setdefault(r, []).append(i)
        listed[d.digest] = listed.get(d.digest, 0) + 1

    def put(at: int, d: Descriptor) -> None:
        if at == len(slots):
            slots.append(None)
        slots[at] = d
        listed[d.digest] = listed.get(d.digest, 0) + 1

    actions: list[str] = []
    for new in news:
        ref = new.annotations.get(mt.ANNOT_REF_NAME)
        if ref is None:
            if listed.get(new.digest):
                actions.append("unchanged")
            else:
                untagged.setdefault(new.digest, []).append(len(slots))
                put(len(slots), new)
                actions.append("added")
            continue
        same_ref = by_ref.get(ref, [])
        if any(slots[i] == new for i in same_ref):
            actions.append("unchanged")
            continue
        gone = same_ref + untagged.pop(new.digest, [])
        moved = any(slots[i].digest != new.digest for i in same_ref)  # type: ignore[union-attr]
        actions.append("moved" if moved else "tagged")
        for i in gone:
            listed[slots[i].digest] -= 1  # type: ignore[union-attr]
            slots[i] = None
        at = min(gone, default=len(slots))
        put(at, new)
        by_ref[ref] = [at]
    return [d for d in slots if d is not None], actions


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
