"""Sink: a ``docker save`` tarball in the combined form Docker 25 writes.

One tar holds an OCI image layout (``oci-layout``, ``index.json``, ``blobs/sha256/...``) *and*
the ``manifest.json`` + ``repositories`` files that every ``docker load`` since 1.10 reads, so
the same file loads with old and new Docker, ``podman load`` and skopeo's ``docker-archive:``.
``manifest.json`` points at the very blobs the OCI side uses (``blobs/sha256/<hex>``), so each
layer is stored once.

This module knows the archive's shape and the Docker naming rules; it never decides policy
(which images, which compression, which names): :mod:`layouttool.ops.docker_save` does.

The tar is deterministic: members in a fixed order (``oci-layout``, ``index.json``,
``manifest.json``, ``repositories``, the two blob directories, then blobs sorted by digest),
mtime 0, uid/gid 0, no user or group names, mode 0644 for files and 0755 for directories, and a
PAX header only when a field does not fit in ustar (a blob of 8 GiB or more).
"""

from __future__ import annotations

import re
import tarfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Protocol

from layouttool import mediatypes as mt
from layouttool.codec import Writer
from layouttool.digest import Digest
from layouttool.errors import InternalError, InvalidInputError
from layouttool.model import Descriptor, dump_json
from layouttool.progress import Task

BLOCK: Final = 512
OCI_LAYOUT_BYTES: Final = dump_json({"imageLayoutVersion": "1.0.0"})

# --- Docker names (docker-image-spec, distribution/reference grammar) ------------------------
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_RE: Final = re.compile(rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*(?::[0-9]+)?")
_PATH_COMPONENT_RE: Final = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_TAG_RE: Final = re.compile(r"[\w][\w.-]{0,127}")
_NAME_MAX: Final = 255
DEFAULT_DOMAIN: Final = "docker.io"


@dataclass(frozen=True, slots=True)
class DockerName:
    """A tagged Docker image name, split the way ``docker load`` understands it."""

    domain: str
    path: str
    tag: str

    @property
    def full(self) -> str:
        """``docker.io/library/busybox:latest`` (what containerd's image name annotation holds)."""
        return f"{self.domain}/{self.path}:{self.tag}"

    @property
    def familiar_repo(self) -> str:
        """``busybox``, ``user/app``, ``ghcr.io/o/app``: the key of ``repositories``."""
        if self.domain != DEFAULT_DOMAIN:
            return f"{self.domain}/{self.path}"
        if self.path.startswith("library/") and self.path.count("/") == 1:
            return self.path[len("library/") :]
        if _looks_like_domain(self.path.split("/", 1)[0]):
            # "docker.io/a.b/c": dropping the domain would make "a.b" read as a registry
            return f"{self.domain}/{self.path}"
        return self.path

    @property
    def familiar(self) -> str:
        """``busybox:latest``: the form Docker writes in ``RepoTags``."""
        return f"{self.familiar_repo}:{self.tag}"

    def __str__(self) -> str:
        return self.familiar


def _looks_like_domain(component: str) -> bool:
    """Docker's rule for the first component of a name: a registry, not a path."""
    return (
        "." in component
        or ":" in component
        or component == "localhost"
        or component != component.lower()
    )


def parse_docker_name(value: str, *, default_tag: str | None = None) -> DockerName | None:
    """Parse ``[DOMAIN/]PATH[:TAG][@DIGEST]`` by Docker's grammar; None when it is not one.

    A name without a tag gets ``default_tag``, or is refused (None) when that is None. A name
    that carries only a digest is refused too: ``docker load`` needs a tag. A digest after a
    tag is dropped. Upper-case repository paths, empty components and over-long names are
    refused, exactly as ``docker load`` would refuse them (it aborts the whole load).
    """
    name, _, _dig = value.partition("@")
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        repo, tag = name[:colon], name[colon + 1 :]
        if not _TAG_RE.fullmatch(tag):
            return None
    elif default_tag is not None:
        repo, tag = name, default_tag
    else:
        return None
    first, sep, rest = repo.partition("/")
    if sep and _looks_like_domain(first):
        domain, path = first, rest
        if not _DOMAIN_RE.fullmatch(domain):
            return None
    else:
        domain, path = DEFAULT_DOMAIN, repo
    if domain == "index.docker.io":
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in path:
        path = f"library/{path}"
    if not path or not all(_PATH_COMPONENT_RE.fullmatch(c) for c in path.split("/")):
        return None
    if len(f"{domain}/{path}") > _NAME_MAX:
        return None
    return DockerName(domain, path, tag)


# --- the tar stream --------------------------------------------------------------------------
class TarWriter:
    """Write a deterministic tar stream member by member; count every byte written."""

    def __init__(self, out: Writer) -> None:
        self._out = out
        self.bytes_written = 0
        self._left = 0
        self._open: str | None = None

    def _emit(self, data: bytes | bytearray | memoryview) -> None:
        view = memoryview(data)
        while view:
            n = self._out.write(view)
            if n is None:  # a raw file in non-blocking mode; ours never are
                n = len(view)
            view = view[n:]
        self.bytes_written += len(data)

    def _header(self, name: str, size: int, *, directory: bool) -> None:
        if self._open is not None:
            raise InternalError(f"tar member {self._open} is still open")
        info = tarfile.TarInfo(name)
        info.size = 0 if directory else size
        info.mtime = 0
        info.mode = 0o755 if directory else 0o644
        info.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        # PAX_FORMAT writes a pax extended header only for fields ustar cannot hold
        self._emit(info.tobuf(tarfile.PAX_FORMAT, "utf-8", "strict"))

    def add_dir(self, name: str) -> None:
        """A directory member (``name`` ends with ``/``)."""
        self._header(name, 0, directory=True)

    def add_bytes(self, name: str, data: bytes) -> None:
        """A small regular file held in memory."""
        self.begin_file(name, len(data))
        self.write(data)
        self.end_file()

    def begin_file(self, name: str, size: int) -> None:
        """Start a regular file of exactly ``size`` bytes; feed it with :meth:`write`."""
        self._header(name, size, directory=False)
        self._open = name
        self._left = size

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Data of the open member; more than announced is a bug (the header is out already)."""
        if self._open is None or len(data) > self._left:
            raise InternalError(f"tar member {self._open}: more data than its header announced")
        self._left -= len(data)
        self._emit(data)

    def end_file(self) -> None:
        """Close the open member (it must have received exactly its size), pad to 512."""
        if self._open is None:
            raise InternalError("no tar member is open")
        if self._left:
            raise InternalError(f"tar member {self._open}: {self._left} bytes short")
        pad = -self.bytes_written % BLOCK
        self._open = None
        if pad:
            self._emit(bytes(pad))

    def close(self) -> None:
        """The end-of-archive marker: two zero blocks (as Go's archive/tar and Docker write)."""
        if self._open is not None:
            raise InternalError(f"tar member {self._open} is still open")
        self._emit(bytes(2 * BLOCK))


# --- archive contents ------------------------------------------------------------------------
def blob_member(digest: Digest) -> str:
    """``blobs/sha256/<hex>``: where a blob lives in the archive (both sides use it)."""
    return f"blobs/{digest.algorithm}/{digest.encoded}"


@dataclass(frozen=True, slots=True)
class SaveImage:
    """One image of the archive: its config, layers (in order), names and OCI manifest."""

    config: Digest
    layers: tuple[Digest, ...]
    diff_ids: tuple[Digest, ...]
    repo_tags: tuple[DockerName, ...]
    manifest: Descriptor


class BlobSource(Protocol):
    """A blob to store in the archive: its digest and size, and a way to stream its bytes."""

    @property
    def digest(self) -> Digest: ...

    @property
    def size(self) -> int: ...

    def copy_to(self, sink: Callable[[bytes], None], task: Task) -> None:
        """Write exactly ``size`` bytes into ``sink``, verifying whatever can be verified."""


def manifest_json(images: Sequence[SaveImage]) -> bytes:
    """``manifest.json``: ``[{Config, RepoTags, Layers}]``, paths inside the archive.

    ``RepoTags`` is null for an untagged image, as Docker writes it. ``LayerSources`` is left
    out: every layer is in the archive, and readers have taken it for a foreign-layer signal.
    """
    items: list[dict[str, Any]] = []
    for img in images:
        items.append(
            {
                "Config": blob_member(img.config),
                "RepoTags": [n.familiar for n in img.repo_tags] or None,
                "Layers": [blob_member(d) for d in img.layers],
            }
        )
    return dump_json(items) + b"\n"


def repositories_json(images: Iterable[SaveImage]) -> bytes | None:
    """``repositories``: ``{repo: {tag: <top layer diff_id hex>}}`` (Docker 25's content).

    None when no image has both a name and a layer (Docker then writes no file at all).
    """
    repos: dict[str, dict[str, str]] = {}
    for img in images:
        if not img.diff_ids:
            continue
        for name in img.repo_tags:
            repos.setdefault(name.familiar_repo, {})[name.tag] = img.diff_ids[-1].encoded
    return dump_json(repos) + b"\n" if repos else None


def index_json(images: Sequence[SaveImage]) -> bytes:
    """The archive's ``index.json``: one entry per name, or one bare entry when untagged.

    Each named entry carries ``io.containerd.image.name`` (the full name) and
    ``org.opencontainers.image.ref.name`` (the tag), as Docker 25 writes them.
    """
    entries: list[dict[str, Any]] = []
    for img in images:
        base = Descriptor(img.manifest.media_type, img.manifest.digest, img.manifest.size)
        if not img.repo_tags:
            entries.append(base.to_json())
        for name in img.repo_tags:
            annotations = {mt.ANNOT_CONTAINERD_NAME: name.full, mt.ANNOT_REF_NAME: name.tag}
            entries.append(base.with_(annotations=annotations).to_json())
    return dump_json({"schemaVersion": 2, "mediaType": mt.MT_OCI_INDEX, "manifests": entries})


def write_archive(
    tar: TarWriter,
    images: Sequence[SaveImage],
    blobs: Iterable[BlobSource],
    *,
    task_for: Callable[[BlobSource], Task],
) -> None:
    """Write the whole archive: the small files first, then every blob sorted by digest.

    ``blobs`` must hold every config, layer and manifest the images name (each digest once).
    """
    by_digest: dict[Digest, BlobSource] = {}
    for b in blobs:
        by_digest.setdefault(b.digest, b)
    for img in images:
        for d in (img.config, img.manifest.digest, *img.layers):
            if d not in by_digest:
                raise InternalError(f"archive blob {d} has no source")
    if len(images) == 0:
        raise InvalidInputError("nothing to write: no image")
    tar.add_bytes("oci-layout", OCI_LAYOUT_BYTES)
    tar.add_bytes("index.json", index_json(images))
    tar.add_bytes("manifest.json", manifest_json(images))
    repos = repositories_json(images)
    if repos is not None:
        tar.add_bytes("repositories", repos)
    algorithms = sorted({d.algorithm for d in by_digest})
    tar.add_dir("blobs/")
    for alg in algorithms:
        tar.add_dir(f"blobs/{alg}/")
        for digest in sorted(d for d in by_digest if d.algorithm == alg):
            src = by_digest[digest]
            tar.begin_file(blob_member(digest), src.size)
            task = task_for(src)
            try:
                src.copy_to(tar.write, task)
            finally:
                task.done()
            tar.end_file()
    tar.close()


__all__ = [
    "BlobSource",
    "DockerName",
    "SaveImage",
    "TarWriter",
    "blob_member",
    "index_json",
    "manifest_json",
    "parse_docker_name",
    "repositories_json",
    "write_archive",
]
