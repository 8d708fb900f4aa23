"""``pull``: fetch an image from a registry into a layout, verified, and tag it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Unpack

from layouttool import mediatypes as mt
from layouttool.codec import CHUNK
from layouttool.digest import Digest
from layouttool.errors import IntegrityError, LayoutToolError, UnsupportedError
from layouttool.model import (
    Descriptor,
    Manifest,
    Platform,
    parse_index,
    parse_json,
    parse_manifest,
)
from layouttool.ops.layout import set_ref
from layouttool.ops.transfer import (
    Connection,
    Counts,
    TransferResult,
    follow_referrers,
    open_client,
    run_parallel,
)
from layouttool.progress import NULL_PROGRESS, Progress, Task
from layouttool.refs import normalize_docker_name, pick_platform
from layouttool.registry import Client, RemoteRef, TransientError
from layouttool.registry.referrers import list_referrers
from layouttool.store import Layout

#: indexes nested deeper than this are refused (a loop, or a hostile registry)
_MAX_DEPTH = 8


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


def media_type_of(content_type: str, doc: Any) -> str:
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
    jobs: int = 4,
    referrers: bool = False,
    progress: Progress = NULL_PROGRESS,
    **connection: Unpack[Connection],
) -> TransferResult:
    """Fetch ``source`` from its registry into the layout and tag it.

    Every blob and manifest is verified (digest and size) while it streams into the store; a
    mismatch is exit 5 and nothing is tagged. Blobs already in the layout (an interrupted
    earlier pull) are verified and not fetched again. A multi-platform index gives the image
    of ``platform`` (default: this host's), or with ``all_platforms`` the whole index (nested
    indexes included). A pull by digest alone is tagged ``REPO@DIGEST`` unless ``ref_name``.
    With ``referrers``, the referrers of every pulled manifest (recursively) come too, through
    the referrers API or the fallback tag, each as an index.json entry without a ref name.
    """
    start = time.monotonic()
    ref = RemoteRef.parse(source)
    with open_client(ref, progress, **connection) as client:
        return _pull(
            client,
            ref,
            layout_path,
            platform,
            all_platforms,
            ref_name,
            jobs,
            referrers,
            progress,
            start,
        )


def _collect(
    client: Client, repo: str, desc: Descriptor, data: bytes, what: str
) -> list[tuple[Descriptor, bytes]]:
    """``desc`` and, when it is an index, every document under it: children first."""
    out: list[tuple[Descriptor, bytes]] = []

    def collect(desc: Descriptor, data: bytes, depth: int) -> None:
        if depth > _MAX_DEPTH:
            raise UnsupportedError(f"{what}: indexes nested more than {_MAX_DEPTH} deep")
        if mt.is_index(desc.media_type):
            index = parse_index(data, f"index {desc.digest}", desc.media_type)
            for child in index.manifests:
                if not (
                    mt.is_index(child.media_type)
                    or mt.is_manifest(child.media_type)
                    or mt.is_schema1(child.media_type)
                ):
                    raise UnsupportedError(
                        f"{what}: index {desc.digest} lists {child.digest} of media type "
                        f"{child.media_type!r}, which pull cannot follow; pull one platform "
                        "(--platform) instead"
                    )
                collect(child, _fetch_document(client, repo, child), depth + 1)
        out.append((desc, data))

    collect(desc, data, 0)
    return out


def _documents(
    client: Client, ref: RemoteRef, platform: Platform | None, all_platforms: bool
) -> tuple[Descriptor, list[tuple[Descriptor, bytes]]]:
    """The root to tag, and every manifest and index to store (children first)."""
    raw, ctype, digest = client.get_manifest(ref.repository, ref.reference, expected=ref.digest)
    doc = parse_json(raw, f"manifest {ref}")
    root = Descriptor(media_type=media_type_of(ctype, doc), digest=digest, size=len(raw))
    if not all_platforms:
        # descend to this platform's image; only that manifest is stored and tagged
        for _ in range(_MAX_DEPTH):
            if not mt.is_index(root.media_type):
                return root, [(root, raw)]
            index = parse_index(raw, f"index {root.digest}", root.media_type)
            root = pick_platform(index, platform, str(ref))
            raw = _fetch_document(client, ref.repository, root)
        raise UnsupportedError(f"{ref}: indexes nested more than {_MAX_DEPTH} deep")
    return root, _collect(client, ref.repository, root, raw, str(ref))


def _referrers(
    client: Client,
    ref: RemoteRef,
    documents: list[tuple[Descriptor, bytes]],
    progress: Progress,
) -> tuple[list[Descriptor], list[tuple[Descriptor, bytes]]]:
    """The referrers of the pulled manifests, recursively, each once: their index.json
    entries (media type, digest, size, artifactType: nothing else a registry could plant), and
    their documents to store. A listed document whose ``subject`` is not the one it was listed
    for is skipped with a warning (a fallback tag anyone can write)."""
    repo = ref.repository
    entries: list[Descriptor] = []
    docs: list[tuple[Descriptor, bytes]] = []

    def take(subject: Digest, listed: Descriptor) -> list[Digest] | None:
        raw = _fetch_document(client, repo, listed)
        doc = parse_json(raw, f"referrer {listed.digest}")
        said = doc.get("subject") if isinstance(doc, dict) else None
        if not isinstance(said, dict) or said.get("digest") != str(subject):
            progress.note(
                f"warning: {listed.digest}, listed as a referrer of {subject}, names another "
                "subject: not pulled"
            )
            return None
        entry = Descriptor(
            listed.media_type, listed.digest, listed.size, artifact_type=listed.artifact_type
        )
        entries.append(entry)
        found = _collect(client, repo, entry, raw, f"{ref} referrer {listed.digest}")
        docs.extend(found)
        return [d.digest for d, _ in found]

    follow_referrers(
        [d.digest for d, _ in documents],
        lambda subject: list_referrers(client, repo, subject),
        take,
        progress,
        "pulled",
    )
    return entries, docs


def _add_untagged(layout: Layout, entries: list[Descriptor]) -> None:
    """Give each of ``entries`` an index.json entry without a ref name, unless its digest
    has one already (as ``attach`` lists artifacts: umoci's gc keeps only what is listed)."""

    def change(current: list[Descriptor], _doc: dict[str, Any]) -> list[Descriptor]:
        have = {d.digest for d in current}
        return [*current, *(e for e in entries if e.digest not in have)]

    if entries:
        layout.update_index(change)


def _pull(
    client: Client,
    ref: RemoteRef,
    layout_path: str | Path,
    platform: Platform | None,
    all_platforms: bool,
    ref_name: str | None,
    jobs: int,
    with_referrers: bool,
    progress: Progress,
    start: float,
) -> TransferResult:
    root, documents = _documents(client, ref, platform, all_platforms)
    referrers: list[Descriptor] = []
    if with_referrers:
        referrers, extra = _referrers(client, ref, documents, progress)
        documents = documents + extra
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
    counts = Counts()

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
        run_parallel(jobs, list(blobs.values()), fetch)
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
        _add_untagged(layout, referrers)
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
        referrers=tuple(str(d.digest) for d in referrers),
    )


__all__ = ["media_type_of", "pull_image"]
