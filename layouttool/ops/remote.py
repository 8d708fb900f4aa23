"""``push`` and ``pull``: move images between a layout and a registry, byte-exact.

Push sends only the named image: an index with every child, or one manifest, with their
configs and layers. Referrers (signatures, SBOMs whose ``subject`` is this image) are separate
images with their own index.json entries; they are pushed by naming them, as with skopeo and
crane. Following ``subject`` the other way would push the image a referrer points at, which the
user did not ask for either.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from layouttool import mediatypes as mt
from layouttool.codec import CHUNK, TeeReader
from layouttool.digest import Digest
from layouttool.errors import IntegrityError, LayoutToolError, UnsupportedError
from layouttool.graph import Node, walk
from layouttool.model import (
    Descriptor,
    Manifest,
    Platform,
    parse_index,
    parse_json,
    parse_manifest,
)
from layouttool.ops.common import Selected, select
from layouttool.ops.layout import set_ref
from layouttool.progress import NULL_PROGRESS, Progress, Task
from layouttool.refs import normalize_docker_name, pick_platform
from layouttool.registry import Client, RemoteRef, TransientError
from layouttool.store import Layout

_DOC_CAP = 16 << 20
#: indexes nested deeper than this are refused (a loop, or a hostile registry)
_MAX_DEPTH = 8


@dataclass(frozen=True, slots=True)
class TransferResult:
    """What ``push`` or ``pull`` moved."""

    action: str
    source: str
    destination: str
    digest: str
    media_type: str
    blobs_transferred: int
    blobs_skipped: int
    blobs_mounted: int
    manifests: int
    bytes_transferred: int
    seconds: float
    skipped_nondistributable: tuple[str, ...] = field(default_factory=tuple)

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "action": self.action,
            "source": self.source,
            "destination": self.destination,
            "digest": self.digest,
            "mediaType": self.media_type,
            "blobsTransferred": self.blobs_transferred,
            "blobsSkipped": self.blobs_skipped,
            "blobsMounted": self.blobs_mounted,
            "manifests": self.manifests,
            "bytesTransferred": self.bytes_transferred,
            "seconds": round(self.seconds, 3),
            "skippedNondistributable": list(self.skipped_nondistributable),
        }


class _Counts:
    """Counters shared by the transfer threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.sent = self.skipped = self.mounted = self.bytes = 0

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + n)


def _run_parallel(jobs: int, items: list[Any], fn: Callable[[Any], None]) -> None:
    """Run ``fn`` on every item with ``jobs`` threads; the first error wins, the rest stop."""
    if not items:
        return
    stop = threading.Event()

    def guarded(item: Any) -> None:
        if not stop.is_set():
            try:
                fn(item)
            except BaseException:
                stop.set()
                raise

    with ThreadPoolExecutor(max_workers=max(1, min(jobs, len(items)))) as pool:
        futures = [pool.submit(guarded, i) for i in items]
        errors = [f.exception() for f in futures]
    for e in errors:
        if e is not None:
            raise e


def _mount_source(entry: Descriptor, dest: RemoteRef) -> str | None:
    """The repository of the same registry this image came from, if we know it."""
    name = entry.annotations.get(mt.ANNOT_CONTAINERD_NAME)
    if not name:
        return None
    try:
        src = RemoteRef.parse(name)
    except LayoutToolError:
        return None
    if src.registry == dest.registry and src.repository != dest.repository:
        return src.repository
    return None


def open_client(
    ref: RemoteRef,
    *,
    insecure: bool = False,
    creds: tuple[str, str] | None = None,
    cert_dir: str | os.PathLike[str] | None = None,
    authfile: str | os.PathLike[str] | None = None,
    retries: int = 5,
    progress: Progress = NULL_PROGRESS,
) -> Client:
    """A client of ``ref``'s registry: TLS from ``cert_dir`` (or the registry's certs.d
    directory), credentials ``creds`` or looked up (``authfile`` first); what ``-v`` shows and
    the lookup's warnings go to ``progress``."""
    return Client(
        ref.registry,
        insecure=insecure,
        creds=creds,
        cert_dir=cert_dir,
        authfile=authfile,
        repository=ref.repository,
        notes=progress.note,
        retries=retries,
    )


def push_image(
    image: str,
    destination: str,
    *,
    insecure: bool = False,
    creds: tuple[str, str] | None = None,
    cert_dir: str | os.PathLike[str] | None = None,
    authfile: str | os.PathLike[str] | None = None,
    jobs: int = 4,
    mount_from: str | None = None,
    retries: int = 5,
    progress: Progress = NULL_PROGRESS,
) -> TransferResult:
    """Upload IMAGE (a whole index with all children, or one manifest) to ``destination``.

    Blobs the registry has are skipped (HEAD, size checked). Blobs are mounted from
    ``mount_from`` (a repository of the same registry), or else from the repository the
    image's ``io.containerd.image.name`` names on that registry, when the registry allows.
    Manifests go up children first, by digest, and the root last by tag, byte-exact: the
    pushed digest equals the layout's.
    """
    start = time.monotonic()
    sel = select(image)
    dest = RemoteRef.parse(destination)
    if dest.digest is not None and dest.digest != sel.entry.digest:
        raise IntegrityError(f"{destination} names {dest.digest} but {image} is {sel.entry.digest}")
    source_repo = _mount_source(sel.entry, dest)
    if mount_from:
        source_repo = RemoteRef.parse(f"{dest.registry}/{mount_from}").repository
    with open_client(
        dest,
        insecure=insecure,
        creds=creds,
        cert_dir=cert_dir,
        authfile=authfile,
        retries=retries,
        progress=progress,
    ) as client:
        return _push(image, sel, dest, client, jobs, source_repo, progress, start)


def _push(
    image: str,
    sel: Selected,
    dest: RemoteRef,
    client: Client,
    jobs: int,
    mount_from: str | None,
    progress: Progress,
    start: float,
) -> TransferResult:
    nodes = list(walk(sel.layout, [sel.entry], follow_subject=False))
    blobs: dict[Digest, Node] = {}
    docs: list[Node] = []
    skipped_nd: list[str] = []
    for n in nodes:
        if n.doc is not None or n.role in ("root", "manifest", "index"):
            docs.append(n)
        elif mt.is_nondistributable(n.desc.media_type) and n.desc.urls:
            skipped_nd.append(str(n.desc.digest))
        else:
            blobs.setdefault(n.desc.digest, n)
    counts = _Counts()
    repo = dest.repository

    def send(node: Node) -> None:
        d = node.desc
        in_schema1 = node.parent is not None and mt.is_schema1(node.parent.desc.media_type)
        # schema 1 lists no sizes: the stored file's is the one to send (and it is verified)
        size = sel.layout.blob_path(d.digest).stat().st_size if in_schema1 else d.size
        there = client.blob_size(repo, d.digest, push=True)
        if there is not None and there in (-1, size):
            counts.add("skipped")
            return
        if there is not None:
            progress.note(
                f"{dest.registry} has blob {d.digest} as {there} bytes, not {size}: "
                "uploading it again"
            )
        location = None
        if mount_from:
            mounted, location = client.mount_blob(repo, d.digest, mount_from)
            if mounted:
                counts.add("mounted")
                return
        task = progress.task(f"push {d.digest.short}", size)

        def opener() -> TeeReader:
            # a fresh verified reader per attempt: a retried upload reads the blob again
            return TeeReader(sel.layout.open_blob(d.digest, size), advance=task.advance)

        client.upload_blob(repo, d.digest, size, opener, location=location)
        task.done()
        counts.add("sent")

    _run_parallel(jobs, list(blobs.values()), send)
    # children before parents: the walk yields parents first
    pushed = 0
    for n in reversed(docs):
        raw = sel.layout.read_blob(n.desc, cap=_DOC_CAP)
        is_root = n.parent is None
        reference = dest.reference if is_root and dest.digest is None else str(n.desc.digest)
        got = client.put_manifest(repo, reference, raw, n.desc.media_type)
        if got and got.strip() != str(n.desc.digest):
            raise IntegrityError(
                f"{dest.registry} stored manifest {n.desc.digest} as {got.strip()[:80]}: "
                "not byte-exact"
            )
        pushed += 1
    return TransferResult(
        action="push",
        source=image,
        destination=str(dest),
        digest=str(sel.entry.digest),
        media_type=sel.entry.media_type,
        blobs_transferred=counts.sent,
        blobs_skipped=counts.skipped,
        blobs_mounted=counts.mounted,
        manifests=pushed,
        bytes_transferred=client.uploaded_bytes,
        seconds=time.monotonic() - start,
        skipped_nondistributable=tuple(skipped_nd),
    )


def _fetch_document(client: Client, repo: str, desc: Descriptor) -> bytes:
    data, _, _ = client.get_manifest(repo, str(desc.digest), expected=desc.digest)
    if len(data) != desc.size:
        raise IntegrityError(
            f"{client.registry}: manifest {desc.digest} is {len(data)} bytes, its descriptor "
            f"says {desc.size}"
        )
    return data


def _blob_descriptors(raw: bytes, media_type: str, what: str) -> list[Descriptor]:
    if mt.is_manifest(media_type):
        m: Manifest = parse_manifest(raw, what, media_type)
        return [m.config, *m.layers]
    if mt.is_schema1(media_type):
        doc = parse_json(raw, what)
        layers = doc.get("fsLayers") if isinstance(doc, dict) else None
        out = []
        for i, layer in enumerate(layers if isinstance(layers, list) else []):
            blob_sum = layer.get("blobSum") if isinstance(layer, dict) else None
            d = Digest.parse(blob_sum, what=f"{what} fsLayers[{i}]")
            # schema 1 gives no sizes (0 here: the size is not checked, the digest is)
            out.append(Descriptor(media_type=mt.MT_DOCKER_LAYER_GZIP, digest=d, size=0))
        return out
    raise UnsupportedError(f"{what}: cannot pull media type {media_type!r}")


def _media_type(content_type: str, doc: Any) -> str:
    """The media type of a fetched manifest: Content-Type, else the document's, else by shape."""
    if content_type and content_type not in ("application/json", "text/plain"):
        return content_type
    if isinstance(doc, dict):
        declared = doc.get("mediaType")
        if isinstance(declared, str):
            return declared
        if doc.get("schemaVersion") == 1:
            return mt.MT_DOCKER_SCHEMA1_SIGNED if "signatures" in doc else mt.MT_DOCKER_SCHEMA1
        if "manifests" in doc:
            return mt.MT_OCI_INDEX
    return mt.MT_OCI_MANIFEST


def pull_image(
    source: str,
    layout_path: str | Path,
    *,
    platform: Platform | None = None,
    all_platforms: bool = False,
    ref_name: str | None = None,
    insecure: bool = False,
    creds: tuple[str, str] | None = None,
    cert_dir: str | os.PathLike[str] | None = None,
    authfile: str | os.PathLike[str] | None = None,
    jobs: int = 4,
    retries: int = 5,
    progress: Progress = NULL_PROGRESS,
) -> TransferResult:
    """Fetch ``source`` from its registry into the layout and tag it.

    Every blob and manifest is verified (digest and size) while it streams into the store; a
    mismatch is exit 5 and nothing is tagged. Blobs already in the layout (an interrupted
    earlier pull) are verified and not fetched again. A multi-platform index gives the image
    of ``platform`` (default: this host's), or with ``all_platforms`` the whole index (nested
    indexes included). A pull by digest alone is tagged ``REPO@DIGEST`` unless ``ref_name``.
    """
    start = time.monotonic()
    ref = RemoteRef.parse(source)
    with open_client(
        ref,
        insecure=insecure,
        creds=creds,
        cert_dir=cert_dir,
        authfile=authfile,
        retries=retries,
        progress=progress,
    ) as client:
        return _pull(
            client,
            ref,
            layout_path,
            platform,
            all_platforms,
            ref_name,
            jobs,
            progress,
            start,
        )


def _documents(
    client: Client, ref: RemoteRef, platform: Platform | None, all_platforms: bool
) -> tuple[Descriptor, list[tuple[Descriptor, bytes]]]:
    """The root to tag, and every manifest and index to store (children first)."""
    raw, ctype, digest = client.get_manifest(ref.repository, ref.reference, expected=ref.digest)
    doc = parse_json(raw, f"manifest {ref}")
    root = Descriptor(media_type=_media_type(ctype, doc), digest=digest, size=len(raw))
    if not all_platforms:
        # descend to this platform's image; only that manifest is stored and tagged
        for _ in range(_MAX_DEPTH):
            if not mt.is_index(root.media_type):
                return root, [(root, raw)]
            index = parse_index(raw, f"index {root.digest}", root.media_type)
            root = pick_platform(index, platform, str(ref))
            raw = _fetch_document(client, ref.repository, root)
        raise UnsupportedError(f"{ref}: indexes nested more than {_MAX_DEPTH} deep")
    out: list[tuple[Descriptor, bytes]] = []

    def collect(desc: Descriptor, data: bytes, depth: int) -> None:
        if depth > _MAX_DEPTH:
            raise UnsupportedError(f"{ref}: indexes nested more than {_MAX_DEPTH} deep")
        if mt.is_index(desc.media_type):
            index = parse_index(data, f"index {desc.digest}", desc.media_type)
            for child in index.manifests:
                if not (
                    mt.is_index(child.media_type)
                    or mt.is_manifest(child.media_type)
                    or mt.is_schema1(child.media_type)
                ):
                    raise UnsupportedError(
                        f"{ref}: index {desc.digest} lists {child.digest} of media type "
                        f"{child.media_type!r}, which pull cannot follow; pull one platform "
                        "(--platform) instead"
                    )
                collect(child, _fetch_document(client, ref.repository, child), depth + 1)
        out.append((desc, data))

    collect(root, raw, 0)
    return root, out


def _pull(
    client: Client,
    ref: RemoteRef,
    layout_path: str | Path,
    platform: Platform | None,
    all_platforms: bool,
    ref_name: str | None,
    jobs: int,
    progress: Progress,
    start: float,
) -> TransferResult:
    root, documents = _documents(client, ref, platform, all_platforms)
    blobs: dict[Digest, Descriptor] = {}
    skipped_nd: list[str] = []
    for desc, data in documents:
        if mt.is_index(desc.media_type):
            continue
        for b in _blob_descriptors(data, desc.media_type, f"manifest {desc.digest}"):
            if mt.is_nondistributable(b.media_type) and b.urls:
                skipped_nd.append(str(b.digest))
                continue
            blobs.setdefault(b.digest, b)
    layout = Layout.open(layout_path, create=True)
    counts = _Counts()

    def download(desc: Descriptor, size: int | None, task: Task) -> int:
        with (
            client.open_blob(ref.repository, desc.digest) as resp,
            layout.writer(expected=desc.digest) as w,
        ):
            while data := resp.read(CHUNK):
                w.write(data)
                task.advance(len(data))
                if size is not None and w.size > size:
                    break  # a registry that never stops sending must not fill the disk
            if size is not None and w.size != size:
                got = f"over {size}" if w.size > size else str(w.size)
                raise IntegrityError(
                    f"{ref.registry}: blob {desc.digest} is {got} bytes, expected {size}; "
                    "nothing was tagged"
                )
            try:
                w.commit()
            except IntegrityError as exc:
                raise IntegrityError(
                    f"{ref.registry}: blob {desc.digest} arrived corrupt ({exc}); nothing was "
                    "tagged"
                ) from exc
            return w.size

    def fetch(desc: Descriptor) -> None:
        size = desc.size or None
        if layout.has_blob(desc.digest):
            try:
                with layout.open_blob(desc.digest, size) as r:
                    r.finish()
                counts.add("skipped")
                return
            except LayoutToolError:
                pass  # a damaged copy: fetch it again (the new one replaces it)
        task = progress.task(f"pull {desc.digest.short}", size)
        attempt = 0
        while True:
            attempt += 1
            try:
                n = download(desc, size, task)
                break
            except TransientError:
                # the connection broke mid-blob: start this blob again (bounded)
                if attempt > client.retries:
                    raise
                client.wait(attempt)
        task.done()
        counts.add("sent")
        counts.add("bytes", n)

    with layout.writing():
        _run_parallel(jobs, list(blobs.values()), fetch)
        for desc, data in documents:
            layout.put_bytes(data, expected=desc.digest)
        repo_name = ref.repository.removeprefix("library/")
        if ref_name:
            name = ref_name
        elif ref.tag is None and ref.digest is not None:
            name = f"{repo_name}@{ref.digest}"
        else:
            name = f"{repo_name}:{ref.tag or 'latest'}"
        full = None
        if ref.tag:
            full = normalize_docker_name(f"{ref.registry}/{ref.repository}:{ref.tag}")
        set_ref(layout, root, name, full)
    return TransferResult(
        action="pull",
        source=str(ref),
        destination=f"{layout_path}:{name}",
        digest=str(root.digest),
        media_type=root.media_type,
        blobs_transferred=counts.sent,
        blobs_skipped=counts.skipped,
        blobs_mounted=0,
        manifests=len(documents),
        bytes_transferred=counts.bytes,
        seconds=time.monotonic() - start,
        skipped_nondistributable=tuple(skipped_nd),
    )
