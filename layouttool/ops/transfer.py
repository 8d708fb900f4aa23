"""What push and pull share: their result, the client they open, parallel transfers."""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypedDict, Unpack

from layouttool import mediatypes as mt
from layouttool.digest import Digest
from layouttool.errors import UnsupportedError
from layouttool.model import Descriptor
from layouttool.progress import NULL_PROGRESS, Progress
from layouttool.registry import Client, RemoteRef


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
    #: digests of the referrers moved with the image (``--referrers``)
    referrers: tuple[str, ...] = field(default_factory=tuple)

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
            "referrers": list(self.referrers),
        }


class Counts:
    """Counters shared by the transfer threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.sent = self.skipped = self.mounted = self.bytes = 0

    def add(self, name: str, n: int = 1) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + n)


def run_parallel(jobs: int, items: list[Any], fn: Callable[[Any], None]) -> None:
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


class Connection(TypedDict, total=False):
    """How an operation reaches a registry (keyword arguments of every registry operation).

    ``insecure``: plain HTTP (test registries); ``creds``: ``(user, password)``, else looked up
    (``authfile`` searched first, see :mod:`layouttool.registry.credentials`); ``cert_dir``: the
    CA files and client certificate (default: the registry's certs.d directory); ``retries``:
    of a request or blob after a connection error, 5xx or 429 (default 5).
    """

    insecure: bool
    creds: tuple[str, str] | None
    cert_dir: str | os.PathLike[str] | None
    authfile: str | os.PathLike[str] | None
    retries: int


def open_client(
    ref: RemoteRef, progress: Progress = NULL_PROGRESS, **connection: Unpack[Connection]
) -> Client:
    """A client of ``ref``'s registry, reached as ``connection`` says; what ``-v`` shows and
    the credential lookup's warnings go to ``progress``."""
    return Client(
        ref.registry, repository=ref.repository, notes=progress.note, **connection
    )


#: the most referrers one push or pull carries (more: name them)
MAX_REFERRERS = 1000


def follow_referrers(
    subjects: Iterable[Digest],
    find: Callable[[Digest], Iterable[Descriptor]],
    take: Callable[[Digest, Descriptor], Iterable[Digest] | None],
    progress: Progress,
    verb: str,
) -> int:
    """Visit the referrers of ``subjects``, and theirs, breadth first, each digest once.

    ``find(subject)`` lists a subject's referrers; ``take(subject, referrer)`` moves one (a
    manifest or index) and returns the digests of the documents it brought (its children may
    have referrers too), or None when it refused it. Anything else is a warning (nothing is
    ``verb``). Returns how many were taken; more than :data:`MAX_REFERRERS` is an error.
    """
    seen = set(subjects)
    queue = deque(seen)
    taken = 0
    while queue:
        subject = queue.popleft()
        for d in find(subject):
            if d.digest in seen:
                continue
            seen.add(d.digest)
            if not (mt.is_manifest(d.media_type) or mt.is_index(d.media_type)):
                progress.note(
                    f"warning: referrer {d.digest} of {subject} is not a manifest or index "
                    f"({d.media_type or 'no media type'}): not {verb}"
                )
                continue
            if taken >= MAX_REFERRERS:
                raise UnsupportedError(
                    f"more than {MAX_REFERRERS} referrers of {subject} and its kin: refused; "
                    f"name them one by one"
                )
            brought = take(subject, d)
            if brought is None:
                continue
            taken += 1
            queue.append(d.digest)
            for digest in brought:
                if digest not in seen:
                    seen.add(digest)
                    queue.append(digest)
    return taken


__all__ = [
    "MAX_REFERRERS",
    "Connection",
    "Counts",
    "TransferResult",
    "follow_referrers",
    "open_client",
    "run_parallel",
]
