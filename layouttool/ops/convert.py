"""``convert``: recompress layers, switch OCI <-> Docker media types, upgrade schema 1.

The work happens in three steps, so that layers can be converted in parallel while everything
else stays serial and deterministic:

1. **plan**: walk down from the selected ``index.json`` entries (nested indexes, manifests,
   configs) and decide, for every layer, whether it is kept, only re-typed (same bytes, other
   media type) or recompressed; every recompression is one job, shared by every manifest that
   uses the same blob;
2. **layers**: run the jobs (``--jobs`` threads). Each streams its blob once through
   :func:`layouttool.layers.store_layer`: verified read -> decompress -> diff_id hash (checked
   against the config) -> compress -> hashing write. A job's output depends only on its input
   and options, so a parallel run writes exactly the blobs a serial one does;
3. **rewrite** bottom-up: a document is re-serialised only when something it references
   changed, from its parsed JSON with only those fields patched (unknown fields, annotations,
   ``artifactType`` and ``subject`` survive); then ``index.json`` is updated once, last, through
   :meth:`Layout.update_index`, replacing exactly the entries that were converted.

Nothing is ever deleted: in place, the old blobs stay until ``gc``; with a destination layout
the source is only read and every blob the result needs is copied (``copy_file_range``).
"""

from __future__ import annotations

import time
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from layouttool import mediatypes as mt
from layouttool.codec import Compression, available_cpus, default_layer_jobs
from layouttool.digest import Digest
from layouttool.errors import (
    InternalError,
    InvalidInputError,
    LayoutToolError,
    NotFoundError,
    UnsupportedError,
)
from layouttool.graph import walk
from layouttool.layers import LayerResult, store_layer
from layouttool.lazy import LazyFormat, LazyOptions, parse_target
from layouttool.model import (
    Descriptor,
    ImageConfig,
    Index,
    Manifest,
    Platform,
    dump_json,
    make_manifest_doc,
)
from layouttool.ops.common import find_nested, read_checked, read_config
from layouttool.progress import NULL_PROGRESS, Progress
from layouttool.reader import Finding, Kind, parse_document
from layouttool.refs import parse_image, resolve
from layouttool.schema1 import Schema1Manifest, parse_schema1, synthesize_config
from layouttool.store import Layout

Format = Literal["oci", "docker"]

_LEVELS = {Compression.GZIP: (0, 9), Compression.ZSTD: (1, 19)}


# ---------------------------------------------------------------------------------- results
@dataclass(frozen=True, slots=True)
class BlobRef:
    """A blob as a descriptor names it: digest, size, media type."""

    digest: str
    size: int
    media_type: str

    @classmethod
    def of(cls, desc: Descriptor) -> BlobRef:
        """From a descriptor."""
        return cls(str(desc.digest), desc.size, desc.media_type)

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {"digest": self.digest, "size": self.size, "mediaType": self.media_type}


@dataclass(frozen=True, slots=True)
class LayerChange:
    """What happened to one layer of a manifest."""

    old: BlobRef
    new: BlobRef
    #: the layer's diff_id, when it was computed (recompressed layers) or known from the config
    diff_id: str | None
    recompressed: bool

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "old": self.old.to_json(),
            "new": self.new.to_json(),
            "diffID": self.diff_id,
            "recompressed": self.recompressed,
        }


@dataclass(frozen=True, slots=True)
class ImageChange:
    """One image manifest: before and after."""

    old: BlobRef
    new: BlobRef
    platform: str | None
    #: None for an upgraded schema 1 manifest (it had no config blob)
    old_config: BlobRef | None
    new_config: BlobRef
    layers: tuple[LayerChange, ...]
    schema1: bool = False

    @property
    def changed(self) -> bool:
        """True when the manifest got a new digest or media type."""
        return (self.old.digest, self.old.media_type) != (self.new.digest, self.new.media_type)

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "old": self.old.to_json(),
            "new": self.new.to_json(),
            "changed": self.changed,
            "platform": self.platform,
            "schema1": self.schema1,
            "config": {
                "old": self.old_config.to_json() if self.old_config else None,
                "new": self.new_config.to_json(),
            },
            "layers": [layer.to_json() for layer in self.layers],
        }


@dataclass(frozen=True, slots=True)
class EntryChange:
    """One ``index.json`` entry: before and after."""

    name: str | None
    old: BlobRef
    new: BlobRef

    @property
    def changed(self) -> bool:
        """True when the entry now points elsewhere."""
        return (self.old.digest, self.old.media_type) != (self.new.digest, self.new.media_type)

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "ref": self.name,
            "old": self.old.to_json(),
            "new": self.new.to_json(),
            "changed": self.changed,
        }


@dataclass(frozen=True, slots=True)
class ConvertResult:
    """The outcome of :func:`convert_image`."""

    source: str
    destination: str
    in_place: bool
    compression: str | None
    format: str | None
    entries: tuple[EntryChange, ...]
    images: tuple[ImageChange, ...]
    notes: tuple[str, ...]
    #: blobs stored by this run (recompressed layers, new documents, copies)
    blobs_written: int
    #: bytes read from blobs that were recompressed or copied
    bytes_in: int
    #: bytes of the blobs stored
    bytes_out: int
    seconds: float
    #: what the reader found odd in the source (printed by the CLI, not part of --json)
    warnings: tuple[Finding, ...] = ()

    @property
    def layers_recompressed(self) -> int:
        """How many distinct layers were recompressed."""
        return len({lc.old.digest for im in self.images for lc in im.layers if lc.recompressed})

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "source": self.source,
            "destination": self.destination,
            "inPlace": self.in_place,
            "compression": self.compression,
            "format": self.format,
            "entries": [e.to_json() for e in self.entries],
            "images": [i.to_json() for i in self.images],
            "layersRecompressed": self.layers_recompressed,
            "notes": list(self.notes),
            "blobsWritten": self.blobs_written,
            "bytesIn": self.bytes_in,
            "bytesOut": self.bytes_out,
            "seconds": round(self.seconds, 3),
        }


# ---------------------------------------------------------------------------------- plans
@dataclass(eq=False)
class _Job:
    """One layer blob to recompress (shared by every manifest that uses it)."""

    digest: Digest
    size: int | None  # None: schema 1 gives no sizes; the size on disk is used
    declared: Compression | None
    target: Compression | None  # None: keep the blob's own compression (schema 1 only)
    expected: list[Digest] = field(default_factory=list)
    lazy: LazyFormat | None = None
    what: str = "layer"
    result: LayerResult | None = None


@dataclass(eq=False)
class _LayerPlan:
    desc: Descriptor
    action: Literal["keep", "retype", "recompress"]
    media_type: str
    diff_id: Digest | None
    job: _Job | None = None


@dataclass(eq=False)
class _Keep:
    desc: Descriptor


@dataclass(eq=False)
class _ImagePlan:
    desc: Descriptor
    manifest: Manifest
    config: ImageConfig
    media_type: str
    config_media_type: str
    layers: list[_LayerPlan]


@dataclass(eq=False)
class _Schema1Plan:
    desc: Descriptor
    s1: Schema1Manifest
    docker: bool
    jobs: list[_Job]


@dataclass(eq=False)
class _IndexPlan:
    desc: Descriptor
    index: Index
    media_type: str
    children: list[_Keep | _ImagePlan | _Schema1Plan | _IndexPlan]


_Plan = _Keep | _ImagePlan | _Schema1Plan | _IndexPlan


def _with_media_type(doc: dict[str, Any], media_type: str) -> dict[str, Any]:
    """``doc`` with ``mediaType`` set, in place if present, else right after schemaVersion."""
    if "mediaType" in doc:
        return {**doc, "mediaType": media_type}
    out: dict[str, Any] = {}
    for k, v in doc.items():
        out[k] = v
        if k == "schemaVersion":
            out["mediaType"] = media_type
    out.setdefault("mediaType", media_type)
    return out


def _patch(
    obj: Any,
    new: Descriptor,
    *,
    drop_blob_annotations: bool = False,
    add: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The descriptor JSON ``obj`` pointing at ``new``; every other field kept as it was
    (``add``: annotations of the new blob, set after the old blob's are dropped)."""
    out = dict(obj)
    out["mediaType"] = new.media_type
    out["digest"] = str(new.digest)
    out["size"] = new.size
    if drop_blob_annotations and isinstance(out.get("annotations"), dict):
        kept = {
            k: v
            for k, v in out["annotations"].items()
            if not k.startswith(mt.BLOB_SPECIFIC_ANNOTATION_PREFIXES)
        }
        if kept:
            out["annotations"] = kept
        else:
            del out["annotations"]
    if add:
        out["annotations"] = {**dict(out.get("annotations") or {}), **add}
    return out


def _drop_annotation(obj: dict[str, Any], key: str) -> dict[str, Any]:
    """The descriptor JSON ``obj`` without the annotation ``key`` (and without an emptied
    ``annotations``)."""
    annotations = obj.get("annotations")
    if not isinstance(annotations, dict) or key not in annotations:
        return obj
    kept = {k: v for k, v in annotations.items() if k != key}
    out = {k: v for k, v in obj.items() if k != "annotations"}
    if kept:
        out["annotations"] = kept
    return out


class _Converter:
    def __init__(
        self,
        src: Layout,
        dst: Layout,
        *,
        compression: Compression | None,
        level: int | None,
        fmt: Format | None,
        platform: Platform | None,
        jobs: int,
        progress: Progress,
        lazy: LazyFormat | None = None,
        lazy_options: LazyOptions | None = None,
    ) -> None:
        self.lazy = lazy
        self.lazy_options = lazy_options
        self.src = src
        self.dst = dst
        self.in_place = src is dst
        self.compression = compression
        self.level = level
        self.fmt = fmt
        self.platform = platform
        self.jobs = jobs
        self.progress = progress
        self._plans: dict[Digest, _Plan] = {}
        self._jobs: dict[tuple[Digest, Compression | None, LazyFormat | None], _Job] = {}
        self._built: dict[Digest, Descriptor] = {}
        self._copied: set[Digest] = set()
        self.images: list[ImageChange] = []
        self.notes: list[str] = []
        self.warnings: list[Finding] = []
        #: True when the IMAGE argument named one entry (an artifact is then refused)
        self.named = False
        self.matched = 0
        self.blobs_written = 0
        self.bytes_in = 0
        self.bytes_out = 0
        self._threads = 1

    def note(self, msg: str) -> None:
        self.notes.append(msg)
        self.progress.note(msg)

    # ------------------------------------------------------------------ 1. plan
    def _docker(self, current_is_docker: bool) -> bool:
        return current_is_docker if self.fmt is None else self.fmt == "docker"

    def _platform_ok(self, plat: Platform | None) -> bool:
        return self.platform is None or (plat is not None and plat.matches(self.platform))

    def plan(self, desc: Descriptor, *, top: bool) -> _Plan:
        known = self._plans.get(desc.digest)
        if known is not None:
            return known
        p = self._plan(desc, top=top)
        self._plans[desc.digest] = p
        return p

    def _plan(self, desc: Descriptor, *, top: bool) -> _Plan:
        what = f"{desc.media_type.rsplit('.', 1)[-1]} {desc.digest}"
        doc = read_checked(self.src, desc, what)
        self.warnings.extend(doc.warnings)
        if doc.kind is Kind.INDEX and doc.index is not None:
            idx = doc.index
            docker = self._docker(doc.media_type == mt.MT_DOCKER_LIST)
            if docker and (idx.subject is not None or "artifactType" in idx.doc):
                raise UnsupportedError(
                    f"index {desc.digest} has a subject or artifactType, which a Docker "
                    "manifest list cannot express; convert it with --format oci"
                )
            kids: list[_Plan] = []
            for child in idx.manifests:
                if (
                    self.platform is not None
                    and not mt.is_index(child.media_type)
                    and not self._platform_ok(child.platform)
                ):
                    kids.append(_Keep(child))
                else:
                    kids.append(self.plan(child, top=False))
            return _IndexPlan(desc, idx, mt.index_type(docker=docker), kids)
        if doc.kind is Kind.IMAGE and doc.manifest is not None:
            m = doc.manifest
            cfg = read_config(self.src, m.config)
            if top and not self._platform_ok(cfg.platform):
                return _Keep(desc)
            return self._plan_image(desc, m, cfg)
        if doc.kind is Kind.SCHEMA1 and doc.raw is not None:
            s1 = parse_schema1(doc.raw, f"manifest {desc.digest}", doc.media_type)
            if top and not self._platform_ok(s1.platform):
                return _Keep(desc)
            self.matched += 1
            docker = self.fmt == "docker"
            if docker and self.compression is Compression.ZSTD:
                raise UnsupportedError("Docker media types have no zstd layer type")
            jobs = [
                self._job(e.blob, None, None, self.compression, None, f"schema 1 layer {e.blob}")
                for e in s1.layers
            ]
            return _Schema1Plan(desc, s1, docker, jobs)
        if top and self.named:
            # the IMAGE argument names it: say what it is rather than copy it unchanged
            raise UnsupportedError(
                f"{desc.digest} is {doc.describe()}, not a container image: nothing to convert"
            )
        self.note(f"{what}: {doc.describe()}; copied unchanged")
        return _Keep(desc)

    def _job(
        self,
        digest: Digest,
        size: int | None,
        declared: Compression | None,
        target: Compression | None,
        expected: Digest | None,
        what: str,
    ) -> _Job:
        key = (digest, target, self.lazy)
        job = self._jobs.get(key)
        if job is None:
            job = self._jobs[key] = _Job(digest, size, declared, target, what=what, lazy=self.lazy)
        if expected is not None and expected not in job.expected:
            job.expected.append(expected)
        return job

    def _plan_image(self, desc: Descriptor, m: Manifest, cfg: ImageConfig) -> _ImagePlan:
        self.matched += 1
        docker = self._docker(m.is_docker)
        if docker and (m.subject is not None or m.artifact_type is not None):
            raise UnsupportedError(
                f"manifest {desc.digest} has a subject or artifactType, which Docker schema 2 "
                "cannot express; convert it with --format oci"
            )
        layers: list[_LayerPlan] = []
        for i, layer in enumerate(m.layers):
            declared = mt.layer_compression(layer.media_type)
            if declared is None:
                # not a tar layer we know: keep it exactly as it is
                layers.append(_LayerPlan(layer, "keep", layer.media_type, None))
                continue
            diff_id = cfg.diff_ids[i] if len(cfg.diff_ids) == len(m.layers) else None
            where = f"manifest {desc.digest} layer {i} ({layer.digest})"
            if mt.is_nondistributable(layer.media_type):
                # its bytes live at its urls: recompressing would make them disagree, so only
                # the media type family changes (and the blob may be absent)
                try:
                    new_mt = mt.layer_media_type(declared, docker=docker, nondistributable=True)
                except UnsupportedError as exc:
                    raise UnsupportedError(f"{where}: non-distributable layer: {exc}") from exc
                action: Literal["keep", "retype"] = (
                    "keep" if new_mt == layer.media_type else "retype"
                )
                layers.append(_LayerPlan(layer, action, new_mt, diff_id))
                continue
            target = self.compression or declared
            if docker and target is Compression.ZSTD:
                raise UnsupportedError(
                    f"{where} is zstd-compressed and Docker media types have no zstd layer "
                    "type; add --compression gzip (or none) to convert it to Docker"
                )
            new_mt = mt.layer_media_type(target, docker=docker)
            lazy_now = mt.lazy_format(layer.annotations)
            if target is declared and (self.lazy is None or lazy_now == self.lazy.value):
                action = "keep" if new_mt == layer.media_type else "retype"
                layers.append(_LayerPlan(layer, action, new_mt, diff_id))
                continue
            if diff_id is None:
                raise InvalidInputError(
                    f"config {m.config.digest} lists {len(cfg.diff_ids)} diff_ids for the "
                    f"{len(m.layers)} layers of manifest {desc.digest}; cannot check the layers"
                )
            job = self._job(layer.digest, layer.size, declared, target, diff_id, where)
            layers.append(_LayerPlan(layer, "recompress", new_mt, diff_id, job))
        config_mt = (
            mt.config_type(docker=docker)
            if mt.is_image_config(m.config.media_type)
            else m.config.media_type
        )
        return _ImagePlan(desc, m, cfg, mt.manifest_type(docker=docker), config_mt, layers)

    # ------------------------------------------------------------------ 2. layers
    def run_jobs(self) -> None:
        jobs = list(self._jobs.values())
        if not jobs:
            return
        workers = max(1, min(self.jobs, len(jobs)))
        # each layer's encoder gets its share of the CPUs: zstd's workers, gzip's blocks in
        # flight (cores left idle by too few layers go to them); the output is the same for
        # any share, so this changes speed and memory, not digests
        self._threads = max(1, available_cpus() // workers)
        pool = ThreadPoolExecutor(max_workers=workers)
        try:
            futures: list[Future[LayerResult]] = [pool.submit(self._run_job, j) for j in jobs]
            wait(futures, return_when=FIRST_EXCEPTION)
            for f in futures:
                f.cancel()
            # report the first failure in job order, so the message does not depend on timing
            for job, f in zip(jobs, futures, strict=True):
                if not f.cancelled():
                    job.result = f.result()
        finally:
            # on an error or Ctrl-C, jobs not yet started never start; running ones finish
            # (a thread cannot be killed) and their temp files are removed by their writers
            pool.shutdown(wait=True, cancel_futures=True)
        for job in jobs:
            res = job.result
            if res is None:  # pragma: no cover - a failure was raised above
                raise LayoutToolError(f"layer {job.digest} was not converted")
            for other in job.expected[1:]:
                if other != job.expected[0]:
                    raise InvalidInputError(
                        f"layer {job.digest}: configs disagree about its diff_id "
                        f"({job.expected[0]} vs {other})"
                    )
            self.blobs_written += 1
            self.bytes_out += res.blob.size
            self.bytes_in += job.size if job.size is not None else 0

    def _run_job(self, job: _Job) -> LayerResult:
        task = self.progress.task(f"layer {job.digest.short}", job.size)
        try:
            with self.src.open_blob(job.digest, job.size) as reader:
                res = store_layer(
                    self.dst,
                    reader,
                    target=job.target,
                    level=self.level,
                    threads=self._threads,
                    expected_diff_id=job.expected[0] if job.expected else None,
                    declared=job.declared,
                    what=job.what,
                    task=task,
                    lazy=job.lazy,
                    lazy_options=self.lazy_options,
                )
                if job.size is None:
                    job.size = reader.size
                return res
        finally:
            task.done()

    # ------------------------------------------------------------------ 3. rewrite
    def _copy(self, desc: Descriptor, size: int | None = -1) -> None:
        """Make ``desc``'s blob present in the destination (no-op in place)."""
        if self.in_place or desc.digest in self._copied:
            return
        self._copied.add(desc.digest)
        if self.dst.has_blob(desc.digest):
            return
        if mt.is_nondistributable(desc.media_type) and not self.src.has_blob(desc.digest):
            return  # allowed to be absent; never fetched from its urls
        info = self.dst.copy_blob(self.src, desc.digest, desc.size if size == -1 else size)
        self.blobs_written += 1
        self.bytes_in += info.size
        self.bytes_out += info.size

    def _copy_tree(self, desc: Descriptor) -> None:
        if self.in_place:
            return
        for node in walk(self.src, [desc], on_finding=self._on_copy_finding):
            if node.document is not None and node.document.raw is None:
                continue  # absent, and allowed to be (a subject, a platform manifest)
            self._copy(node.desc, None if node.in_schema1 else -1)

    def _on_copy_finding(self, f: Finding) -> None:
        if f.severity == "problem":
            raise f.error()
        self.warnings.append(f)

    def _put(self, doc: dict[str, Any], media_type: str, what: str) -> Descriptor:
        raw = dump_json(doc)
        if mt.is_document(media_type):
            # check what we write with the reader every command uses
            desc = Descriptor(media_type, Digest.of_bytes(raw), len(raw))
            checked = parse_document(raw, desc, what)
            if checked.findings:
                raise InternalError(f"{what}: we wrote a document the reader objects to: "
                                    f"{checked.findings[0].message}")
        info = self.dst.put_bytes(raw)
        self.blobs_written += 1
        self.bytes_out += info.size
        return info.descriptor(media_type)

    def build(self, plan: _Plan) -> Descriptor:
        done = self._built.get(plan.desc.digest)
        if done is not None:
            return done
        if isinstance(plan, _Keep):
            self._copy_tree(plan.desc)
            new = plan.desc
        elif isinstance(plan, _ImagePlan):
            new = self._build_image(plan)
        elif isinstance(plan, _Schema1Plan):
            new = self._build_schema1(plan)
        else:
            new = self._build_index(plan)
        self._built[plan.desc.digest] = new
        return new

    def _build_image(self, plan: _ImagePlan) -> Descriptor:
        m = plan.manifest
        doc = dict(m.doc)
        changed = False
        layers_json = list(doc.get("layers") or [])
        changes: list[LayerChange] = []
        new_diff_ids = list(plan.config.diff_ids)
        for i, lp in enumerate(plan.layers):
            if lp.action == "recompress":
                assert lp.job is not None and lp.job.result is not None
                res = lp.job.result
                new = res.blob.descriptor(lp.media_type)
                layers_json[i] = _patch(
                    layers_json[i], new, drop_blob_annotations=True, add=res.annotations
                )
                if lp.diff_id is not None and res.diff_id != lp.diff_id:
                    # eStargz adds its landmark and TOC to the tar: a new diff_id
                    new_diff_ids[i] = res.diff_id
                changed = True
            else:
                new = lp.desc.with_(media_type=lp.media_type)
                self._copy(lp.desc)
                if lp.action == "retype":
                    layers_json[i] = _patch(layers_json[i], new)
                    changed = True
            changes.append(
                LayerChange(
                    BlobRef.of(lp.desc),
                    BlobRef.of(new),
                    str(new_diff_ids[i]) if lp.diff_id else None,
                    lp.action == "recompress",
                )
            )
        new_config = m.config.with_(media_type=plan.config_media_type)
        if tuple(new_diff_ids) != plan.config.diff_ids:
            cfg = dict(plan.config.doc)
            ids = [str(d) for d in new_diff_ids]
            cfg["rootfs"] = {**dict(cfg.get("rootfs") or {}), "diff_ids": ids}
            new_config = self._put(cfg, plan.config_media_type, f"config for {m.config.digest}")
            doc["config"] = _patch(doc["config"], new_config)
            changed = True
        else:
            self._copy(m.config)
            if plan.config_media_type != m.config.media_type:
                doc["config"] = _patch(doc["config"], new_config)
                changed = True
        if m.subject is not None:
            self._copy_subject(m.subject)
        if changed:
            doc["layers"] = layers_json
        if changed or plan.media_type != m.media_type:
            doc = _with_media_type(doc, plan.media_type)
            new_desc = self._put(doc, plan.media_type, f"new manifest for {plan.desc.digest}")
        else:
            self._copy(plan.desc)
            # a descriptor that disagreed with its document now says what the document is
            new_desc = plan.desc.with_(media_type=m.media_type)
        self.images.append(
            ImageChange(
                BlobRef.of(plan.desc),
                BlobRef.of(new_desc),
                str(plan.config.platform) if plan.config.platform else None,
                BlobRef.of(m.config),
                BlobRef.of(new_config),
                tuple(changes),
            )
        )
        return new_desc

    def _copy_subject(self, subject: Descriptor) -> None:
        if self.in_place:
            return
        if not self.src.has_blob(subject.digest):
            self.note(f"subject {subject.digest} is not in the source layout; not copied")
            return
        self._copy_tree(subject)

    def _build_schema1(self, plan: _Schema1Plan) -> Descriptor:
        layers: list[Descriptor] = []
        changes: list[LayerChange] = []
        diff_ids: list[Digest] = []
        for job in plan.jobs:
            res = job.result
            assert res is not None
            new_mt = mt.layer_media_type(res.compression, docker=plan.docker)
            new = res.blob.descriptor(new_mt)
            if res.annotations:
                new = new.with_(annotations=dict(res.annotations))
            layers.append(new)
            diff_ids.append(res.diff_id)
            old = BlobRef(str(job.digest), job.size or 0, mt.MT_DOCKER_LAYER_GZIP)
            changes.append(LayerChange(old, BlobRef.of(new), str(res.diff_id), res.recompressed))
        # raw bytes, not a dict: they are Docker's, so the digest is the image ID it gave
        info = self.dst.put_bytes(synthesize_config(plan.s1, diff_ids))
        self.blobs_written += 1
        self.bytes_out += info.size
        config = info.descriptor(mt.config_type(docker=plan.docker))
        doc = make_manifest_doc(
            media_type=mt.manifest_type(docker=plan.docker), config=config, layers=layers
        )
        new_desc = self._put(doc, mt.manifest_type(docker=plan.docker), "upgraded manifest")
        plat = plan.s1.platform
        self.images.append(
            ImageChange(
                BlobRef.of(plan.desc),
                BlobRef.of(new_desc),
                str(plat) if plat else None,
                None,
                BlobRef.of(config),
                tuple(changes),
                schema1=True,
            )
        )
        return new_desc

    def _leaves_zstd(self) -> bool:
        """True when layers are recompressed to something other than zstd."""
        out = self.lazy.compression if self.lazy is not None else self.compression
        return out is not None and out is not Compression.ZSTD

    def _build_index(self, plan: _IndexPlan) -> Descriptor:
        doc = dict(plan.index.doc)
        children = list(doc.get("manifests") or [])
        changed = False
        for i, kid in enumerate(plan.children):
            new = self.build(kid)
            if (new.digest, new.media_type) != (kid.desc.digest, kid.desc.media_type):
                children[i] = _patch(children[i], new)
                if self._leaves_zstd():
                    children[i] = _drop_annotation(children[i], mt.ANNOT_INSTANCE_ZSTD)
                changed = True
        if plan.index.subject is not None:
            self._copy_subject(plan.index.subject)
        if changed:
            doc["manifests"] = children
        if changed or plan.media_type != plan.index.media_type:
            doc = _with_media_type(doc, plan.media_type)
            return self._put(doc, plan.media_type, f"new index for {plan.desc.digest}")
        self._copy(plan.desc)
        return plan.desc.with_(media_type=plan.index.media_type)


# ---------------------------------------------------------------------------------- API
def _check_options(
    compression: Compression | None,
    level: int | None,
    fmt: str | None,
    lazy: LazyFormat | None = None,
) -> None:
    if fmt == "docker" and lazy is LazyFormat.ZSTD_CHUNKED:
        raise UnsupportedError(
            "--format docker cannot be combined with --compression zstd:chunked: Docker media "
            "types have no zstd layer type; use --format oci, or --compression estargz"
        )
    if fmt is not None and fmt not in ("oci", "docker"):
        raise InvalidInputError(f"unknown format {fmt!r}: use 'oci' or 'docker'")
    if compression is not None and compression not in (
        Compression.NONE,
        Compression.GZIP,
        Compression.ZSTD,
    ):
        raise InvalidInputError(f"layers cannot be {compression.value}-compressed")
    if fmt == "docker" and compression is Compression.ZSTD:
        raise UnsupportedError(
            "--format docker cannot be combined with --compression zstd: Docker media types "
            "have no zstd layer type (skopeo refuses it too); use --format oci, or "
            "--compression gzip or none"
        )
    if level is not None:
        if compression is None or compression is Compression.NONE:
            raise InvalidInputError("--level needs --compression gzip or zstd")
        lo, hi = _LEVELS[compression]
        if not lo <= level <= hi:
            raise InvalidInputError(
                f"--level {level} is out of range for {compression.value} ({lo}-{hi})"
            )


def _same_dir(a: Path, b: Path) -> bool:
    try:
        return a.samefile(b)
    except OSError:
        return False


def convert_image(
    image: str,
    dest: str | Path | None = None,
    *,
    compression: Compression | str | None = None,
    level: int | None = None,
    format: Format | None = None,
    platform: Platform | None = None,
    jobs: int | None = None,
    progress: Progress | None = None,
    chunk_size: int | None = None,
    prioritize: tuple[str, ...] | list[str] = (),
) -> ConvertResult:
    """Convert IMAGE (``LAYOUT[:REF]`` or ``LAYOUT@digest``; no REF: every image).

    ``compression`` recompresses every layer that is not already in that compression;
    ``"zstd:chunked"`` and ``"estargz"`` write lazy-pull layers (``chunk_size`` and
    ``prioritize`` are eStargz's options; an eStargz layer has a new diff_id, so the config is
    rewritten too);
    ``format`` switches manifests, indexes, configs and layers to OCI or Docker media types
    (None keeps each document's family); schema 1 manifests are always upgraded. ``dest`` writes
    the result into another layout (created when absent) and leaves the source untouched;
    otherwise new blobs are added in place and ``index.json`` is updated last. ``platform``
    limits conversion to the matching children of indexes; ``jobs`` is the number of layers
    converted at once (default: the number of CPUs; the output is the same for any value).

    Errors: a diff_id or digest mismatch raises IntegrityError (exit 5), a corrupt stream
    InvalidInputError (exit 4), a combination Docker cannot express UnsupportedError (exit 4);
    in each case ``index.json`` is left as it was.
    """
    started = time.monotonic()
    lazy: LazyFormat | None = None
    comp: Compression | None
    if isinstance(compression, str):
        comp, lazy = parse_target(compression)
    else:
        comp = compression
    _check_options(comp, level, format, lazy)
    lazy_options = LazyOptions.from_flags(lazy, level, chunk_size, prioritize)
    prog = progress or NULL_PROGRESS
    ref = parse_image(image)
    src = Layout.open(ref.layout)
    in_place = dest is None or _same_dir(Path(dest), ref.layout)
    dst = src if in_place or dest is None else Layout.open(dest, create=True)
    with dst.writing():
        index = src.read_index()
        if ref.ref is None and ref.digest is None:
            entries = list(index.manifests)
        elif ref.digest is not None:
            entries = [d for d in index.manifests if d.digest == ref.digest]
            if not entries:
                # one platform of a multi-platform image, say: in place there is no entry to
                # replace, so it goes to another layout as an entry of its own
                nested = find_nested(src, index, ref)
                if in_place:
                    raise UnsupportedError(
                        f"{ref.digest} is inside an index, not an entry of index.json: convert "
                        "that index (with --platform to pick one image), or write this one to "
                        "another layout with -o"
                    )
                entries = [nested]
        else:
            entries = [resolve(index, ref.ref, None, ref.layout)]
        conv = _Converter(
            src,
            dst,
            compression=comp,
            level=level,
            fmt=format,
            platform=platform,
            jobs=jobs if jobs and jobs > 0 else default_layer_jobs(comp),
            progress=prog,
            lazy=lazy,
            lazy_options=lazy_options,
        )
        conv.named = ref.ref is not None or ref.digest is not None
        plans = [conv.plan(e, top=True) for e in entries]
        if platform is not None and conv.matched == 0:
            raise NotFoundError(f"{ref.layout}: no image for platform {platform}")
        conv.run_jobs()
        new_entries = [conv.build(p) for p in plans]
        changes = [
            EntryChange(
                e.ref_name or e.annotations.get(mt.ANNOT_CONTAINERD_NAME),
                BlobRef.of(e),
                BlobRef.of(n),
            )
            for e, n in zip(entries, new_entries, strict=True)
        ]
        old_json = [e.to_json() for e in entries]
        new_json = [_patch(e.to_json(), n) for e, n in zip(entries, new_entries, strict=True)]
        if in_place:
            if any(c.changed for c in changes):
                src.update_index(lambda cur, _doc: _replace_entries(cur, old_json, new_json))
        else:
            dst.update_index(lambda cur, _doc: _add_entries(cur, new_json))
    for c in changes:
        if not c.changed and in_place:
            prog.note(f"{c.name or c.old.digest}: already in the requested form")
    return ConvertResult(
        source=str(ref),
        destination=str(dst.root),
        in_place=in_place,
        compression=lazy.value if lazy else comp.value if comp else None,
        format=format,
        entries=tuple(changes),
        images=tuple(conv.images),
        notes=tuple(conv.notes),
        blobs_written=conv.blobs_written,
        bytes_in=conv.bytes_in,
        bytes_out=conv.bytes_out,
        seconds=time.monotonic() - started,
        warnings=tuple(conv.warnings),
    )


def _replace_entries(
    current: list[Descriptor], old: list[dict[str, Any]], new: list[dict[str, Any]]
) -> list[Descriptor]:
    """Swap each converted entry for its new form; entries added or changed by someone else
    since we read index.json are left alone (an entry removed meanwhile stays removed)."""
    pending = list(zip(old, new, strict=True))
    out: list[Descriptor] = []
    for d in current:
        dj = d.to_json()
        for i, (o, n) in enumerate(pending):
            if o == dj:
                out.append(Descriptor.from_json(n, "converted index.json entry"))
                del pending[i]
                break
        else:
            out.append(d)
    return out


def _add_entries(current: list[Descriptor], new: list[dict[str, Any]]) -> list[Descriptor]:
    """Add the converted entries to a destination index.json: an entry with the same ref name
    is replaced (the tag moves); an unnamed entry replaces an unnamed one of the same digest."""
    out = list(current)
    for nj in new:
        nd = Descriptor.from_json(nj, "converted index.json entry")
        for i, d in enumerate(out):
            same = (
                d.ref_name == nd.ref_name
                if nd.ref_name is not None
                else (d.ref_name is None and d.digest == nd.digest)
            )
            if same:
                out[i] = nd
                break
        else:
            out.append(nd)
    return out


__all__ = [
    "BlobRef",
    "ConvertResult",
    "EntryChange",
    "ImageChange",
    "LayerChange",
    "convert_image",
]
