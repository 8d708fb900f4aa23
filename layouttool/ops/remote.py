"""``push`` and ``pull``: move images between a layout and a registry, byte-exact."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from layouttool import mediatypes as mt
from layouttool.digest import Digest
from layouttool.errors import IntegrityError, LayoutToolError, UnsupportedError
from layouttool.graph import Node, walk
from layouttool.model import Descriptor, Index, Manifest, Platform, parse_json
from layouttool.ops.common import select
from layouttool.ops.layout import set_ref
from layouttool.progress import NULL_PROGRESS, Progress
from layouttool.refs import normalize_docker_name, pick_platform
from layouttool.registry import Client, RemoteRef
from layouttool.store import Layout

_DOC_CAP = 16 << 20


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


def push_image(
    image: str,
    destination: str,
    *,
    insecure: bool = False,
    creds: tuple[str, str] | None = None,
    jobs: int = 4,
    progress: Progress = NULL_PROGRESS,
) -> TransferResult:
    """Upload IMAGE (a whole index with all children, or one manifest) to ``destination``.

    Blobs the registry has are skipped (HEAD); blobs of an image that came from another
    repository of the same registry are mounted when the registry allows. Manifests go up
    children first, by digest, and the root last by tag, byte-exact: the pushed digest equals
    the layout's.
    """
    start = time.monotonic()
    sel = select(image)
    dest = RemoteRef.parse(destination)
    if dest.digest is not None and dest.digest != sel.entry.digest:
        raise IntegrityError(f"{destination} names {dest.digest} but {image} is {sel.entry.digest}")
    with Client(dest.registry, insecure=insecure, creds=creds) as client:
        return _push(image, sel, dest, client, jobs, progress, start)


def _push(
    image: str,
    sel: Any,
    dest: RemoteRef,
    client: Client,
    jobs: int,
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
    mount_from = _mount_source(sel.entry, dest)
    counts = {"sent": 0, "skipped": 0, "mounted": 0}

    def send(node: Node) -> None:
        d = node.desc
        if client.blob_size(dest.repository, d.digest, push=True) is not None:
            counts["skipped"] += 1
            return
        if mount_from and client.mount_blob(dest.repository, d.digest, mount_from):
            counts["mounted"] += 1
            return
        task = progress.task(f"push {d.digest.short}", d.size)
        in_schema1 = node.parent is not None and mt.is_schema1(node.parent.desc.media_type)
        size = sel.layout.blob_path(d.digest).stat().st_size if in_schema1 else d.size

        def opener() -> _Progressing:
            return _Progressing(sel.layout, d.digest, size, task)

        client.upload_blob(dest.repository, d.digest, size, opener)
        task.done()
        counts["sent"] += 1

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        for fut in [pool.submit(send, n) for n in blobs.values()]:
            fut.result()
    # children before parents: the walk yields parents first
    pushed = 0
    for n in reversed(docs):
        raw = sel.layout.read_blob(n.desc, cap=_DOC_CAP)
        is_root = n.parent is None
        reference = dest.reference if is_root and dest.digest is None else str(n.desc.digest)
        got = client.put_manifest(dest.repository, reference, raw, n.desc.media_type)
        if got and got != str(n.desc.digest):
            raise IntegrityError(
                f"{dest.registry} stored manifest {n.desc.digest} as {got}: not byte-exact"
            )
        pushed += 1
    return TransferResult(
        action="push",
        source=image,
        destination=str(dest),
        digest=str(sel.entry.digest),
        media_type=sel.entry.media_type,
        blobs_transferred=counts["sent"],
        blobs_skipped=counts["skipped"],
        blobs_mounted=counts["mounted"],
        manifests=pushed,
        bytes_transferred=client.uploaded_bytes,
        seconds=time.monotonic() - start,
        skipped_nondistributable=tuple(skipped_nd),
    )


class _Progressing:
    """A verified blob reader that reports progress (re-opened for each retry)."""

    def __init__(self, layout: Layout, digest: Digest, size: int | None, task: Any) -> None:
        self._r = layout.open_blob(digest, size)
        self._task = task

    def read(self, n: int = -1, /) -> bytes:
        data = self._r.read(n)
        if data:
            self._task.advance(len(data))
        return data

    def close(self) -> None:
        self._r.close()


def _fetch_document(client: Client, repo: str, desc: Descriptor) -> bytes:
    data, _ = client.get_manifest(repo, str(desc.digest))
    got = Digest.of_bytes(data, desc.digest.algorithm)
    if got != desc.digest or len(data) != desc.size:
        raise IntegrityError(
            f"{client.registry}: manifest {desc.digest} arrived as {got} ({len(data)} bytes)"
        )
    return data


def _blob_descriptors(raw: bytes, media_type: str, what: str) -> list[Descriptor]:
    from layouttool.model import parse_manifest

    if mt.is_manifest(media_type):
        m: Manifest = parse_manifest(raw, what, media_type)
        return [m.config, *m.layers]
    if mt.is_schema1(media_type):
        doc = parse_json(raw, what)
        out = []
        for i, layer in enumerate(doc.get("fsLayers") or []):
            d = Digest.parse(layer.get("blobSum"), what=f"{what} fsLayers[{i}]")
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
    jobs: int = 4,
    progress: Progress = NULL_PROGRESS,
) -> TransferResult:
    """Fetch ``source`` from its registry into the layout and tag it.

    Every blob and manifest is verified (digest and size) while it streams into the store; a
    mismatch is exit 5 and nothing is tagged. Blobs already in the layout (an interrupted
    earlier pull) are verified and not fetched again. A multi-platform index gives the image
    of ``platform`` (default: this host's), or with ``all_platforms`` the whole index.
    """

    start = time.monotonic()
    ref = RemoteRef.parse(source)
    with Client(ref.registry, insecure=insecure, creds=creds) as client:
        return _pull(
            client,
            ref,
            source,
            layout_path,
            platform,
            all_platforms,
            ref_name,
            jobs,
            progress,
            start,
        )


def _pull(
    client: Client,
    ref: RemoteRef,
    source: str,
    layout_path: str | Path,
    platform: Platform | None,
    all_platforms: bool,
    ref_name: str | None,
    jobs: int,
    progress: Progress,
    start: float,
) -> TransferResult:
    from layouttool.model import parse_index

    raw, ctype = client.get_manifest(ref.repository, ref.reference)
    digest = Digest.of_bytes(raw)
    if ref.digest is not None and digest != ref.digest:
        raise IntegrityError(f"{source}: the registry sent a manifest that hashes to {digest}")
    doc = parse_json(raw, f"manifest {source}")
    media_type = _media_type(ctype, doc)
    root = Descriptor(media_type=media_type, digest=digest, size=len(raw))
    documents: list[tuple[Descriptor, bytes]] = []
    if mt.is_index(media_type):
        index: Index = parse_index(raw, f"index {source}", media_type)
        if all_platforms:
            documents.append((root, raw))
            children = [d for d in index.manifests if mt.is_manifest(d.media_type)]
        else:
            children = [pick_platform(index, platform, str(source))]
            root = children[0]
        fetched = [(c, _fetch_document(client, ref.repository, c)) for c in children]
        documents = fetched + documents
    else:
        documents.append((root, raw))
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
    counts = {"sent": 0, "skipped": 0, "bytes": 0}

    def fetch(desc: Descriptor) -> None:
        size = desc.size or None
        if layout.has_blob(desc.digest):
            try:
                with layout.open_blob(desc.digest, size) as r:
                    r.finish()
                counts["skipped"] += 1
                return
            except LayoutToolError:
                pass  # a damaged copy: fetch it again (the new one replaces it)
        task = progress.task(f"pull {desc.digest.short}", size)
        resp = client.open_blob(ref.repository, desc.digest)
        with layout.writer(expected=desc.digest) as w:
            while data := resp.read(1 << 20):
                w.write(data)
                task.advance(len(data))
            if size is not None and w.size != size:
                raise IntegrityError(
                    f"{ref.registry}: blob {desc.digest} is {w.size} bytes, expected {size}"
                )
            w.commit()
        task.done()
        counts["sent"] += 1
        counts["bytes"] += w.size

    with layout.writing():
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            for fut in [pool.submit(fetch, b) for b in blobs.values()]:
                fut.result()
        for desc, data in documents:
            layout.put_bytes(data, expected=desc.digest)
        name = ref_name or f"{ref.repository.removeprefix('library/')}:{ref.tag or 'latest'}"
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
        blobs_transferred=counts["sent"],
        blobs_skipped=counts["skipped"],
        blobs_mounted=0,
        manifests=len(documents),
        bytes_transferred=counts["bytes"],
        seconds=time.monotonic() - start,
        skipped_nondistributable=tuple(skipped_nd),
    )
