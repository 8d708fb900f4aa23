"""What to write, per form of save: the planners read ``manifest.json`` (a docker save),
``repositories`` and the V1 chains (Docker <= 1.9), or ``index.json`` (an OCI archive), have
the layers spooled, check each diff_id against its config, and fill a :class:`Plan`: the temp
blobs to commit, the small blobs to store, the manifests to write and their tags. Nothing is
committed here (:mod:`.commit` does that), so a failure leaves the layout as it was.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Final

from layouttool import mediatypes as mt
from layouttool.codec import Compression
from layouttool.digest import Digest
from layouttool.errors import IntegrityError, InvalidInputError, NotFoundError
from layouttool.formats._tar import Member
from layouttool.formats.docker_archive import (
    ArchiveImage,
    Tag,
    blob_path_digest,
    check_config_name,
    parse_manifest_json,
)
from layouttool.formats.docker_v1 import read_v1_save
from layouttool.formats.oci_archive import OciPlan, blob_member, plan_oci_archive
from layouttool.layers import PendingLayer
from layouttool.model import (
    Descriptor,
    Manifest,
    Platform,
    dump_json,
    parse_config,
    parse_index,
    parse_json,
)
from layouttool.ops.importer.archive import Archive, Options
from layouttool.refs import normalize_docker_name
from layouttool.store import BlobWriter, Layout
from layouttool.v1config import make_config


@dataclass(frozen=True, slots=True)
class LayerSlot:
    """One layer of a planned manifest: a spooled member, or a foreign descriptor kept as is."""

    media_type: str
    diff_id: Digest
    member: str | None = None
    foreign: Descriptor | None = None
    recompressed: bool = False
    #: annotations of the stored blob (a lazy-pull layer's TOC digest and position)
    annotations: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class ImagePlan:
    """A manifest to write once its layers are committed."""

    media_type: str
    config: Descriptor
    layers: tuple[LayerSlot, ...]
    platform: Platform | None
    tags: tuple[Tag, ...]


@dataclass(slots=True)
class Plan:
    """Everything to write once every check has passed, in order."""

    #: ``docker-save``, ``docker-save-v1`` or ``oci-archive``
    source_format: str
    #: what the user should know (a default filled in, an entry skipped)
    notes: list[str] = field(default_factory=list)
    layers: dict[str, PendingLayer] = field(default_factory=dict)
    raws: dict[Digest, BlobWriter] = field(default_factory=dict)
    small: dict[Digest, bytes] = field(default_factory=dict)
    images: list[ImagePlan] = field(default_factory=list)
    #: index.json entries of an OCI archive, as they are, with their manifests
    entries: list[tuple[Descriptor, Manifest | None]] = field(default_factory=list)

    def abort(self) -> None:
        """Drop every temp blob the plan owns (on failure)."""
        for pending in self.layers.values():
            pending.abort()
        for w in self.raws.values():
            w.abort()


def select_images(
    entries: list[tuple[ArchiveImage, Digest]], wanted: list[str], what: str
) -> list[tuple[ArchiveImage, tuple[Tag, ...]]]:
    """The images ``wanted`` names (a tag, a name, 12+ hex digits of an ID) with the tags
    selected, or every image with all its tags."""
    if not wanted:
        return [(img, img.tags) for img, _ in entries]
    out: list[tuple[ArchiveImage, tuple[Tag, ...]]] = []
    for want in wanted:
        hit = False
        for img, cfg_digest in entries:
            tags = img.matches(want, cfg_digest)
            if tags is None:
                continue
            hit = True
            for i, (prev, prev_tags) in enumerate(out):
                if prev is img:
                    out[i] = (img, tuple(dict.fromkeys(prev_tags + tags)))
                    break
            else:
                out.append((img, tags))
        if not hit:
            have = sorted({t.ref for img, _ in entries for t in img.tags}) or ["(untagged)"]
            raise NotFoundError(
                f"{what}: no image named {want!r} in the tarball (it holds: {', '.join(have)})"
            )
    return out


def plan_docker(
    archive: Archive, layout: Layout, opts: Options, wanted: list[str], plan: Plan
) -> None:
    """Plan the images of a save with ``manifest.json`` (Docker 1.10 and later, podman,
    skopeo, crane, BuildKit): the configs kept byte for byte, each layer's diff_id checked."""
    what = archive.what
    index = archive.index
    manifest_member = index.resolve("manifest.json", f"{what}: manifest.json")
    entries = parse_manifest_json(
        archive.read_small(manifest_member, f"{what}: manifest.json"), what
    )
    configs: dict[int, tuple[bytes, Digest]] = {}
    parsed: list[tuple[ArchiveImage, Digest]] = []
    for img in entries:
        w = f"{what}: image {img.position} ({', '.join(t.ref for t in img.tags) or 'untagged'})"
        cfg_member = index.resolve(img.config_path, f"{w} config")
        raw = archive.read_small(cfg_member, f"{w} config {img.config_path!r}")
        digest = check_config_name(img.config_path, raw, w)
        configs[img.position] = (raw, digest)
        parsed.append((img, digest))
    selected = select_images(parsed, wanted, what)

    # resolve every path (hostile input is refused here, before any layer is read)
    jobs: list[tuple[ArchiveImage, tuple[Tag, ...], bytes, Digest, list[tuple[str, Any]]]] = []
    for img, tags in selected:
        raw, cfg_digest = configs[img.position]
        w = f"{what}: image {', '.join(t.ref for t in tags) or cfg_digest.short}"
        cfg = parse_config(raw, f"{w} config {cfg_digest}")
        if len(cfg.diff_ids) != len(img.layer_paths):
            raise IntegrityError(
                f"{w}: manifest.json lists {len(img.layer_paths)} layers but config "
                f"{cfg_digest} has {len(cfg.diff_ids)} diff_ids"
            )
        layers: list[tuple[str, Any]] = []
        for i, lpath in enumerate(img.layer_paths):
            foreign = img.foreign_layer(cfg.diff_ids[i])
            if foreign is not None:
                layers.append(("foreign", foreign))
                continue
            member = index.resolve(lpath, f"{w} layer {i}")
            layers.append(("member", member.name))
        jobs.append((img, tags, raw, cfg_digest, layers))

    names = [v for *_, layers in jobs for kind, v in layers if kind == "member"]
    archive.spool_members(layout, names, opts)

    for img, tags, raw, cfg_digest, layers in jobs:
        cfg = parse_config(raw, f"config {cfg_digest}")
        w = f"{what}: image {', '.join(t.ref for t in tags) or cfg_digest.short}"
        slots: list[LayerSlot] = []
        for i, (kind, value) in enumerate(layers):
            diff_id = cfg.diff_ids[i]
            if kind == "foreign":
                fd: Descriptor = value
                comp = mt.layer_compression(fd.media_type) or Compression.GZIP
                media_type = mt.layer_media_type(comp, docker=opts.docker, nondistributable=True)
                slots.append(
                    LayerSlot(media_type, diff_id, foreign=fd.with_(media_type=media_type))
                )
                continue
            sp = archive.spooled[value]
            lw = f"{w} layer {i} ({img.layer_paths[i]!r})"
            if sp.error is not None:
                raise sp.error
            assert sp.pending is not None
            claimed = blob_path_digest(value)
            if claimed is not None and sp.raw_digest is not None and sp.raw_digest != claimed:
                raise IntegrityError(
                    f"{lw}: member content hashes to {sp.raw_digest}, not the digest its "
                    "name claims; the tarball is corrupt"
                )
            if sp.pending.source_diff_id != diff_id:
                raise IntegrityError(
                    f"{lw}: uncompressed content hashes to {sp.pending.source_diff_id}, but "
                    f"the config's diff_id is {diff_id}"
                )
            plan.layers[value] = sp.pending
            slots.append(_spooled_slot(sp.pending, value, opts))
        if any(sl.diff_id != d for sl, d in zip(slots, cfg.diff_ids, strict=True)):
            # eStargz layers: the tar gained a TOC and a landmark, so the config is rewritten
            doc = dict(cfg.doc)
            ids = [str(sl.diff_id) for sl in slots]
            doc["rootfs"] = {**dict(doc.get("rootfs") or {}), "diff_ids": ids}
            raw = dump_json(doc)
            cfg_digest = Digest.of_bytes(raw)
        plan.small[cfg_digest] = raw
        plan.images.append(
            ImagePlan(
                media_type=mt.manifest_type(docker=opts.docker),
                config=Descriptor(
                    media_type=mt.config_type(docker=opts.docker),
                    digest=cfg_digest,
                    size=len(raw),
                ),
                layers=tuple(slots),
                platform=cfg.platform,
                tags=tags,
            )
        )


#: what an OCI config must name and a V1 JSON may lack (Docker <= 1.9 ran on linux/amd64)
_V1_PLATFORM_DEFAULTS: Final = {"os": "linux", "architecture": "amd64"}


def plan_v1(
    archive: Archive, layout: Layout, opts: Options, wanted: list[str], plan: Plan
) -> None:
    """Plan the images of a pre-1.10 save: one per tag target or untagged head, its config
    made from the chain as Docker 1.10's migration made it (see :mod:`layouttool.v1config`)."""
    what = archive.what
    index = archive.index

    def read(path: str, w: str) -> bytes:
        return archive.read_small(index.resolve(path, w), w)

    chains, notes = read_v1_save(index, read, what)
    plan.notes += notes
    # an --image value matches a tag, or (12+ hex digits) the top layer's V1 ID that
    # `docker images` showed before 1.10
    entries = [
        (
            ArchiveImage(i, f"{c.top.id}/json", tuple(la.layer_path for la in c.layers), c.tags),
            Digest("sha256", c.top.id),
        )
        for i, c in enumerate(chains)
    ]
    selected = select_images(entries, wanted, what)

    def label(img: ArchiveImage, tags: tuple[Tag, ...]) -> str:
        return f"{what}: image {', '.join(t.ref for t in tags) or chains[img.position].top.id}"

    # every path is resolved (hostile links refused) before the first layer is read
    members: dict[str, str] = {}
    for img, tags in selected:
        for i, lpath in enumerate(img.layer_paths):
            if lpath not in members:
                members[lpath] = index.resolve(lpath, f"{label(img, tags)}: layer {i}").name
    archive.spool_members(layout, list(members.values()), opts)

    for img, tags in selected:
        chain = chains[img.position]
        w = label(img, tags)
        slots: list[LayerSlot] = []
        for layer in chain.layers:
            name = members[layer.layer_path]
            sp = archive.spooled[name]
            if sp.error is not None:
                raise sp.error
            assert sp.pending is not None
            plan.layers[name] = sp.pending
            slots.append(_spooled_slot(sp.pending, name, opts))
        cfg = make_config(
            chain.top.raw,
            [slot.diff_id for slot in slots],
            [layer.history for layer in chain.layers],
            f"{what}: {chain.top.id}/json",
            platform_default=_V1_PLATFORM_DEFAULTS.get,
        )
        if cfg.defaults:
            plan.notes.append(
                f"{w}: the V1 JSON names no {' or '.join(d.split('=')[0] for d in cfg.defaults)}; "
                f"wrote {', '.join(cfg.defaults)} (an OCI config requires them), so the image "
                "ID differs from the one Docker gave"
            )
        digest = Digest.of_bytes(cfg.raw)
        plan.small[digest] = cfg.raw
        plan.images.append(
            ImagePlan(
                media_type=mt.manifest_type(docker=opts.docker),
                config=Descriptor(
                    media_type=mt.config_type(docker=opts.docker), digest=digest, size=len(cfg.raw)
                ),
                layers=tuple(slots),
                platform=parse_config(cfg.raw, f"{w} config {digest}").platform,
                tags=tags,
            )
        )


def _spooled_slot(pending: PendingLayer, member: str, opts: Options) -> LayerSlot:
    """The manifest slot of a layer spooled from ``member``."""
    return LayerSlot(
        mt.layer_media_type(pending.compression, docker=opts.docker),
        pending.diff_id,
        member=member,
        recompressed=pending.compression is not pending.source_compression
        or pending.lazy is not None,
        annotations=tuple(pending.annotations.items()),
    )


def plan_oci(
    archive: Archive, layout: Layout, opts: Options, wanted: list[str], plan: Plan
) -> None:
    """Plan an OCI archive's import as it is: its index.json entries and every blob they
    reach, copied byte for byte (``opts`` only shows the progress)."""
    if opts.target is not Compression.GZIP or opts.docker:
        plan.notes.append(
            "an OCI archive is imported as it is: --compression and --format do not apply "
            "(use 'layouttool convert' afterwards)"
        )
    what = archive.what
    index = archive.index
    oci_layout = archive.read_small(
        index.resolve("oci-layout", f"{what}: oci-layout"), f"{what}: oci-layout"
    )
    doc = parse_json(oci_layout, f"{what}: oci-layout")
    if not isinstance(doc, dict) or doc.get("imageLayoutVersion") != "1.0.0":
        raise InvalidInputError(f"{what}: oci-layout must say imageLayoutVersion '1.0.0'")
    index_raw = archive.read_small(
        index.resolve("index.json", f"{what}: index.json"), f"{what}: index.json"
    )

    def read_doc(desc: Descriptor) -> bytes | None:
        w = f"{what}: {desc.media_type} {desc.digest}"
        try:
            member = index.resolve(blob_member(desc.digest), w)
        except NotFoundError:
            return None
        if member.size != desc.size:
            raise IntegrityError(f"{w}: the archive holds {member.size} bytes, not {desc.size}")
        raw = archive.read_small(member, w)
        if Digest.of_bytes(raw, desc.digest.algorithm) != desc.digest:
            raise IntegrityError(f"{w}: content does not match its digest")
        return raw

    def select(d: Descriptor) -> bool:
        if not wanted:
            return True
        names = {
            d.annotations.get(mt.ANNOT_REF_NAME),
            d.annotations.get(mt.ANNOT_CONTAINERD_NAME),
            str(d.digest),
        }
        for want in wanted:
            if want in names:
                return True
            with contextlib.suppress(Exception):
                if normalize_docker_name(want) in names:
                    return True
        return False

    oplan: OciPlan = plan_oci_archive(index_raw, read_doc, what, select)
    if not oplan.entries:
        have = sorted(
            {
                d.ref_name
                for d in parse_index(index_raw, f"{what}: index.json").manifests
                if d.ref_name
            }
        )
        raise NotFoundError(
            f"{what}: no entry of the OCI archive matches {', '.join(wanted)} "
            f"(refs: {', '.join(have) or 'none'})"
        )
    first_manifest: dict[Digest, Manifest] = {}
    for entry, _mdesc, man in oplan.images:
        first_manifest.setdefault(entry.digest, man)
    plan.entries = [(d, first_manifest.get(d.digest)) for d in oplan.entries]
    for digest, raw in oplan.documents.items():
        plan.small[digest] = raw
    for digest, desc in oplan.leaves.items():
        w = f"{what}: blob {digest} ({desc.media_type})"
        try:
            member = index.resolve(blob_member(digest), w)
        except NotFoundError:
            if mt.is_nondistributable(desc.media_type):
                continue
            raise NotFoundError(f"{w} is referenced but not in the archive") from None
        if member.size != desc.size:
            raise IntegrityError(f"{w}: the archive holds {member.size} bytes, not {desc.size}")
        _copy_raw(archive, layout, member, digest, w, opts, plan)


def _copy_raw(
    archive: Archive,
    layout: Layout,
    member: Member,
    digest: Digest,
    what: str,
    opts: Options,
    plan: Plan,
) -> None:
    """Plan a byte-for-byte copy of one blob member (its digest is checked on commit)."""
    if digest in plan.raws or digest in plan.small:
        return
    blob = archive.raw_blob(layout, member, digest, what, opts)
    if isinstance(blob, bytes):
        plan.small[digest] = blob
    elif isinstance(blob, BlobWriter):
        plan.raws[digest] = blob
    else:
        plan.layers[member.name] = blob


__all__ = ["ImagePlan", "LayerSlot", "Plan", "plan_docker", "plan_oci", "plan_v1", "select_images"]
