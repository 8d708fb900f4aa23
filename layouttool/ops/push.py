"""``push``: upload an image from a layout to a registry, byte-exact.

Push sends the named image: an index with every child, or one manifest, with their configs
and layers. With ``--referrers`` the documents whose ``subject`` is one of its manifests
(signatures, SBOMs, attestations; and theirs, recursively) follow, found by scanning the
layout (listed in index.json or not). Following ``subject`` the other way would push the image
a referrer points at, which the user did not ask for.
"""

from __future__ import annotations

import time
from typing import Unpack

from layouttool import mediatypes as mt
from layouttool.codec import TeeReader
from layouttool.digest import Digest
from layouttool.errors import IntegrityError, LayoutToolError
from layouttool.graph import Node, find_referrers, walk
from layouttool.model import Descriptor
from layouttool.ops.common import Selected, select
from layouttool.ops.transfer import (
    Connection,
    Counts,
    TransferResult,
    follow_referrers,
    open_client,
    run_parallel,
)
from layouttool.progress import NULL_PROGRESS, Progress
from layouttool.registry import Client, RemoteRef
from layouttool.registry.client import Pushed
from layouttool.registry.referrers import add_to_fallback, referrer_descriptor
from layouttool.store import Layout

_DOC_CAP = 16 << 20


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
    jobs: int = 4,
    mount_from: str | None = None,
    referrers: bool = False,
    progress: Progress = NULL_PROGRESS,
    **connection: Unpack[Connection],
) -> TransferResult:
    """Upload IMAGE (a whole index with all children, or one manifest) to ``destination``.

    Blobs the registry has are skipped (HEAD, size checked). Blobs are mounted from
    ``mount_from`` (a repository of the same registry), or else from the repository the
    image's ``io.containerd.image.name`` names on that registry, when the registry allows.
    Manifests go up children first, by digest, and the root last by tag, byte-exact: the
    pushed digest equals the layout's. With ``referrers``, every document of the layout whose
    ``subject`` is one of the image's manifests (recursively) follows, by digest, and is
    added to the subject's fallback tag on a registry without the referrers API.
    """
    start = time.monotonic()
    sel = select(image)
    dest = RemoteRef.parse(destination)
    if dest.digest is not None and dest.digest != sel.entry.digest:
        raise IntegrityError(f"{destination} names {dest.digest} but {image} is {sel.entry.digest}")
    source_repo = _mount_source(sel.entry, dest)
    if mount_from:
        source_repo = RemoteRef.parse(f"{dest.registry}/{mount_from}").repository
    with open_client(dest, progress, **connection) as client:
        return _push(image, sel, dest, client, jobs, source_repo, referrers, progress, start)


def _graph(
    layout: Layout, root: Descriptor, blobs: dict[Digest, Node], skipped_nd: list[str]
) -> list[Node]:
    """The documents of ``root``'s graph, parents first; its blobs go into ``blobs``."""
    docs: list[Node] = []
    for n in walk(layout, [root], follow_subject=False):
        if n.doc is not None or n.role in ("root", "manifest", "index"):
            docs.append(n)
        elif mt.is_nondistributable(n.desc.media_type) and n.desc.urls:
            skipped_nd.append(str(n.desc.digest))
        else:
            blobs.setdefault(n.desc.digest, n)
    return docs


def _content_type(n: Node) -> str:
    """What a document is, as the registry is told: its own type (a descriptor may lie, as
    go-containerregistry's Docker manifests listed as OCI ones do; a registry refuses a
    manifest whose Content-Type disagrees with its ``mediaType``)."""
    return n.document.media_type if n.document is not None else n.desc.media_type


def _referrers(
    layout: Layout,
    image_docs: list[Node],
    blobs: dict[Digest, Node],
    skipped_nd: list[str],
    progress: Progress,
) -> list[tuple[Digest, list[Node]]]:
    """Every document of the layout whose ``subject`` is one of the image's manifests, or one
    of theirs (a signature of an SBOM), each once, subjects first: ``(subject, its documents,
    parents first)``. Found by the graph's scan of every blob (listed in index.json or not)."""
    out: list[tuple[Digest, list[Node]]] = []

    def take(subject: Digest, d: Descriptor) -> list[Digest]:
        docs = _graph(layout, d, blobs, skipped_nd)
        out.append((subject, docs))
        return [n.desc.digest for n in docs]

    follow_referrers(
        [n.desc.digest for n in image_docs],
        lambda subject: find_referrers(layout, subject),
        take,
        progress,
        "pushed",
    )
    return out


def _push(
    image: str,
    sel: Selected,
    dest: RemoteRef,
    client: Client,
    jobs: int,
    mount_from: str | None,
    with_referrers: bool,
    progress: Progress,
    start: float,
) -> TransferResult:
    layout = sel.layout
    blobs: dict[Digest, Node] = {}
    skipped_nd: list[str] = []
    docs = _graph(layout, sel.entry, blobs, skipped_nd)
    referrers = _referrers(layout, docs, blobs, skipped_nd, progress) if with_referrers else []
    counts = Counts()
    repo = dest.repository

    def send(node: Node) -> None:
        d = node.desc
        in_schema1 = node.parent is not None and mt.is_schema1(node.parent.desc.media_type)
        # schema 1 lists no sizes: the stored file's is the one to send (and it is verified)
        size = layout.blob_path(d.digest).stat().st_size if in_schema1 else d.size
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
            return TeeReader(layout.open_blob(d.digest, size), advance=task.advance)

        client.upload_blob(repo, d.digest, size, opener, location=location)
        task.done()
        counts.add("sent")

    def put(n: Node, reference: str) -> tuple[bytes, Pushed]:
        raw = layout.read_blob(n.desc, cap=_DOC_CAP)
        got = client.put_manifest(repo, reference, raw, _content_type(n))
        if got.digest and got.digest.strip() != str(n.desc.digest):
            raise IntegrityError(
                f"{dest.registry} stored manifest {n.desc.digest} as {got.digest.strip()[:80]}: "
                "not byte-exact"
            )
        return raw, got

    run_parallel(jobs, list(blobs.values()), send)
    # children before parents: the walk yields parents first
    for n in reversed(docs):
        is_root = n.parent is None
        put(n, dest.reference if is_root and dest.digest is None else str(n.desc.digest))
    pushed = len(docs)
    for subject, rdocs in referrers:
        for n in reversed(rdocs):
            raw, got = put(n, str(n.desc.digest))
        pushed += len(rdocs)
        top = rdocs[0].desc
        # a registry with the referrers API answers OCI-Subject; without it, the tag schema
        if got.subject is None and client.referrers_api is not True:
            add_to_fallback(client, repo, subject, referrer_descriptor(
                raw, top.digest, _content_type(rdocs[0])))
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
        referrers=tuple(str(r[0].desc.digest) for _, r in referrers),
    )


__all__ = ["push_image"]
