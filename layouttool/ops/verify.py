"""``verify``: the report of what the reader finds in everything reachable from index.json.

Every descriptor is checked, not each digest once: a blob referenced twice with two different
sizes is read through each descriptor, and the one that lies is reported where it was found.
Documents are read (and verified) by the walk, through :mod:`layouttool.reader`; configs are
parsed and held to the image-config schema (an artifact's never is); every other blob is read
and hashed. With ``deep``, every layer of every image is also decompressed, in one pass that
also checks its digest, and its content compared with the config's ``diff_ids`` (on every
CPU).

Problems are what breaks integrity or a MUST; warnings are quirks that do not stop reading.
``strict`` makes the warnings count.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from layouttool import mediatypes as mt
from layouttool.digest import Digest
from layouttool.errors import IntegrityError, InvalidInputError, LayoutToolError, NotFoundError
from layouttool.graph import Node, walk
from layouttool.model import JSON_CAP, Manifest, parse_json
from layouttool.progress import NULL_PROGRESS, Progress
from layouttool.reader import (
    BLOB_MISSING,
    CORRUPT_LAYER,
    DIFF_ID_MISMATCH,
    DIFF_IDS_COUNT,
    INVALID_JSON,
    MANIFEST_MISSING,
    REFERENCE_MISSING,
    SIZE_MISMATCH,
    SUBJECT_MISSING,
    Finding,
    Kind,
    absent_finding,
    check_config,
    check_descriptor,
    check_document,
    check_reference,
    check_schema,
    finding,
    finding_of,
    lazy_finding,
)
from layouttool.store import Layout

#: findings about one descriptor (rather than a blob's content): repeated for every
#: descriptor that has them
_PER_DESCRIPTOR: Final = frozenset(
    {BLOB_MISSING, SIZE_MISMATCH, MANIFEST_MISSING, SUBJECT_MISSING, REFERENCE_MISSING}
)


#: what verify reports (a problem or a warning); the name of earlier versions
Problem = Finding


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """The outcome of ``verify``."""

    layout: str
    checked: int
    bytes_checked: int
    problems: tuple[Finding, ...]
    warnings: tuple[Finding, ...]
    strict: bool = False
    #: layers decompressed and checked against their diff_ids (``deep``)
    layers_checked: int = 0

    @property
    def failing(self) -> tuple[Finding, ...]:
        """What makes verify fail: the problems, and with ``strict`` the warnings too."""
        return self.problems + self.warnings if self.strict else self.problems

    @property
    def ok(self) -> bool:
        """True when nothing counts against the layout."""
        return not self.failing

    @property
    def exit_code(self) -> int:
        """5 when any content is missing or mismatched, else 4 when anything is invalid, else 0
        (with ``strict``, warnings count by what they would be as problems)."""
        failing = self.failing
        if not failing:
            return 0
        return 5 if any(f.exit_code in (3, 5) for f in failing) else 4

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "layout": self.layout,
            "ok": self.ok,
            "strict": self.strict,
            "checked": self.checked,
            "bytesChecked": self.bytes_checked,
            "layersChecked": self.layers_checked,
            "problems": [p.to_json() for p in self.problems],
            "warnings": [w.to_json() for w in self.warnings],
        }


@dataclass(slots=True)
class _LayerJob:
    """One layer to decompress (``deep``): the first place it was met, what to expect."""

    desc: Node
    diff_id: Digest


class _Verifier:
    def __init__(self, layout: Layout, progress: Progress, deep: bool) -> None:
        self.layout = layout
        self.progress = progress
        self.deep = deep
        self.findings: list[Finding] = []
        self.checked = 0
        self.nbytes = 0
        #: (digest, declared size) of each leaf checked -> the finding it gave (None: fine)
        self.leaves: dict[tuple[Digest, int | None], Finding | None] = {}
        #: image config digest -> its diff_ids (None when it could not be read)
        self.diff_ids: dict[Digest, tuple[Digest, ...] | None] = {}
        #: deep: layers to decompress, first descriptor of each (digest, size, diff_id)
        self.jobs: dict[tuple[Digest, int, Digest], _LayerJob] = {}
        self._task = progress.task("verify", None)

    def add(self, f: Finding) -> None:
        self.findings.append(f)

    # ---------------------------------------------------------------- the walk
    def run(self) -> None:
        index = self.layout.read_index()
        self.findings += check_schema(parse_json(index.raw, "index.json"), mt.MT_OCI_INDEX, None,
                                      "index.json")
        for node in walk(self.layout, on_finding=self.add, repeats=True):
            self.findings += check_descriptor(node.desc, node.where())
            doc = node.document
            if doc is not None:
                if node.repeat:
                    where = node.where()
                    self.findings += check_reference(node.desc, doc, where)
                    self.findings += [f._replace(where=where) for f in doc.findings
                                      if f.code in _PER_DESCRIPTOR and doc.raw is None]
                elif doc.raw is not None:
                    self.checked += 1
                    self.nbytes += len(doc.raw)
                    self.findings += check_document(doc)
                continue
            self._leaf(node)
        self._task.done()

    def _leaf(self, node: Node) -> None:
        desc = node.desc
        # schema 1 gives no layer sizes: take the size on disk, check the digest
        size = None if node.in_schema1 else desc.size
        key = (desc.digest, size)
        parent = node.parent.document if node.parent is not None else None
        manifest = parent.manifest if parent is not None and parent.ok else None
        image = parent is not None and parent.kind is Kind.IMAGE and manifest is not None
        lazy = node.role == "layer" and mt.lazy_format(desc.annotations) is not None
        job = (self._deep_job(node, manifest) if image and manifest is not None and not lazy
               else None)
        if key in self.leaves:
            f = self.leaves[key]
            if f is not None and f.code in _PER_DESCRIPTOR:
                self.add(f._replace(where=node.where()))
        else:
            if lazy:
                f = self._check_lazy(node, size, manifest if image else None)
            else:
                f = self._check_leaf(node, size, manifest, image, deep=job is not None)
            self.leaves[key] = f
            if f is not None:
                self.add(f)
        if job is not None and f is None:
            self.jobs.setdefault((desc.digest, desc.size, job.diff_id), job)
        if node.role == "config" and image and manifest is not None:
            self._diff_ids_count(node, manifest)

    def _deep_job(self, node: Node, manifest: Manifest) -> _LayerJob | None:
        """With ``deep``, the decompression a layer of an image gets: its diff_id is known
        (the config, met before its layers, was read and lists one per layer)."""
        if not self.deep or node.role != "layer" or not mt.is_layer(node.desc.media_type):
            return None
        ids = self.diff_ids.get(manifest.config.digest)
        if not ids or len(ids) != len(manifest.layers):
            return None
        # by identity: the same layer may be listed twice in one manifest
        i = next(i for i, d in enumerate(manifest.layers) if d is node.desc)
        return _LayerJob(node, ids[i])

    def _check_leaf(
        self, node: Node, size: int | None, manifest: Manifest | None, image: bool, *,
        deep: bool,
    ) -> Finding | None:
        """Read one blob (a config is parsed too); the finding of its read, if any. A layer
        the deep pass will decompress is only opened here (its size checked): the deep pass
        reads it once and checks its digest on the way."""
        desc = node.desc
        where = node.where()
        try:
            if node.role == "config" and manifest is not None and (
                image or desc.size <= JSON_CAP
            ):
                # an image config must be read whole (over the JSON cap: a problem); an
                # artifact's is read when it is small enough to be JSON
                raw = self.layout.read_blob(desc)
                self._count(len(raw))
                self._config(node, raw, image, where)
            elif deep:
                with self.layout.open_blob(desc.digest, size):
                    pass
            else:
                with self.layout.open_blob(desc.digest, size) as r:
                    while chunk := r.read(1 << 20):
                        self._task.advance(len(chunk))
                    self._count(r.size, advanced=True)
        except NotFoundError as exc:
            if desc.data is not None:
                return None  # its content is embedded (check_descriptor checked it)
            return absent_finding(desc, where, node.role, str(exc))
        except LayoutToolError as exc:
            return finding_of(exc, desc.digest, where)
        return None

    def _check_lazy(
        self, node: Node, size: int | None, manifest: Manifest | None
    ) -> Finding | None:
        """A lazy-pull layer: its TOC checked against its annotations and its tar, and (as
        --deep does for every layer) its content against the diff_id, in the one pass that
        also checks its digest. Each lie is a problem of its own; the first is returned."""
        import os

        from layouttool.codec import TeeReader
        from layouttool.lazy.check import check_layer

        desc = node.desc
        where = node.where()
        diff_id = None
        if manifest is not None:
            ids = self.diff_ids.get(manifest.config.digest)
            i = next(i for i, d in enumerate(manifest.layers) if d is desc)
            diff_id = ids[i] if ids is not None and i < len(ids) else None
        try:
            with self.layout.open_blob(desc.digest, size) as r:
                fd = r.fileno()
                found = check_layer(
                    desc.annotations,
                    r.size,
                    lambda off, n: os.pread(fd, n, off),
                    lambda: TeeReader(r, advance=self._task.advance),
                    diff_id,
                    what=f"lazy layer {desc.digest}",
                )
                r.finish()  # the digest is checked even if a finding stopped the pass early
                self._count(r.size, advanced=True)
        except NotFoundError as exc:
            return absent_finding(desc, where, node.role, str(exc))
        except LayoutToolError as exc:
            return finding_of(exc, desc.digest, where)
        out = [lazy_finding(f.code, desc.digest, where, f.message) for f in found]
        self.findings += out[1:]
        return out[0] if out else None

    def _count(self, n: int, *, advanced: bool = False) -> None:
        self.checked += 1
        self.nbytes += n
        if not advanced:
            self._task.advance(n)

    def _config(self, node: Node, raw: bytes, image: bool, where: str) -> None:
        desc = node.desc
        try:
            value = parse_json(raw, f"config {desc.digest}")
        except InvalidInputError as exc:
            if image:
                self.diff_ids[desc.digest] = None
                self.add(finding(INVALID_JSON, desc.digest, where, str(exc)))
            return  # an artifact's config may be anything
        self.findings += check_config(value, desc.media_type, desc, where, artifact=not image)
        if not image:
            return
        rootfs = value.get("rootfs") if isinstance(value, dict) else None
        ids = rootfs.get("diff_ids") if isinstance(rootfs, dict) else False
        self.diff_ids[desc.digest] = None  # unless it parses (the schema check says why)
        if isinstance(ids, list) or ids is None:
            try:
                self.diff_ids[desc.digest] = tuple(
                    Digest.parse(d, what=f"config {desc.digest} rootfs.diff_ids[{i}]")
                    for i, d in enumerate(ids or ())
                )
            except InvalidInputError:
                pass

    def _diff_ids_count(self, node: Node, manifest: Manifest) -> None:
        ids = self.diff_ids.get(node.desc.digest)
        if ids is not None and len(ids) != len(manifest.layers):
            self.add(finding(DIFF_IDS_COUNT, node.desc.digest, node.where(),
                             f"config {node.desc.digest} lists {len(ids)} diff_ids but the "
                             f"manifest has {len(manifest.layers)} layers"))

    # ---------------------------------------------------------------- deep
    def run_deep(self, jobs: int) -> int:
        # imported here: a quick verify must not pay for thread pools and codecs
        from concurrent.futures import ThreadPoolExecutor

        from layouttool.layers import diff_layer

        todo = list(self.jobs.values())

        def one(job: _LayerJob) -> Finding | None:
            node = job.desc
            desc = node.desc
            task = self.progress.task(f"layer {desc.digest.short}", desc.size)
            try:
                with self.layout.open_blob(desc.digest, desc.size) as r:
                    diff_layer(r, declared=mt.layer_compression(desc.media_type),
                               expected_diff_id=job.diff_id, what=f"layer {desc.digest}",
                               task=task)
            except IntegrityError as exc:
                f = finding_of(exc, desc.digest, node.where())
                if "diff_id" in str(exc):
                    f = finding(DIFF_ID_MISMATCH, desc.digest, node.where(), str(exc))
                return f
            except InvalidInputError as exc:
                return finding(CORRUPT_LAYER, desc.digest, node.where(), str(exc))
            except LayoutToolError as exc:
                return finding_of(exc, desc.digest, node.where())
            finally:
                task.done()
            return None

        workers = max(1, min(jobs, len(todo)))
        if workers == 1:
            results = [one(j) for j in todo]
        else:
            with ThreadPoolExecutor(max_workers=workers) as pool:
                results = list(pool.map(one, todo))
        self.findings += [f for f in results if f is not None]
        sizes = {j.desc.desc.digest: j.desc.desc.size for j in todo}
        self.checked += len(sizes)
        self.nbytes += sum(sizes.values())
        return len(todo)


def verify_layout(
    path: str | Path,
    *,
    strict: bool = False,
    deep: bool = False,
    jobs: int | None = None,
    progress: Progress | None = None,
) -> VerifyResult:
    """Walk every descriptor reachable from index.json and report what the reader finds.

    Problems: a blob that something needs is missing; a size or digest that lies (on any
    descriptor); a document that is not JSON or breaks a MUST (its shape, the image-spec
    schema); an image config whose diff_ids do not match its layers (in number; with ``deep``
    in content too). Warnings: a descriptor's media type that disagrees with its document, a
    ``subject`` or platform manifest that is absent, null where a field is optional, an image
    with no layers, an absent non-distributable layer. ``jobs`` layers are decompressed at
    once with ``deep`` (default: every CPU).
    """
    layout = Layout.open(path)
    v = _Verifier(layout, progress or NULL_PROGRESS, deep)
    v.run()
    layers = 0
    if deep:
        from layouttool.codec import available_cpus

        layers = v.run_deep(jobs or available_cpus())
    problems = tuple(f for f in v.findings if f.severity == "problem")
    warnings = tuple(dict.fromkeys(f for f in v.findings if f.severity == "warning"))
    return VerifyResult(str(path), v.checked, v.nbytes, problems, warnings, strict, layers)
