"""``to-docker-save``: write images of one or more layouts as one ``docker save`` tarball.

The archive is the combined form Docker 25 writes (an OCI layout plus ``manifest.json`` and
``repositories``; see :mod:`layouttool.formats.docker_save_writer`), so ``docker load`` since
1.10, ``podman load`` and skopeo's ``docker-archive:`` all read it.

Data flow. A tar header carries its member's size, and ``index.json``/``manifest.json`` (which
come first) name each layer by its digest in the archive, so a layer that must be re-encoded is
first spooled to an anonymous temp file in one pass (verified read -> decompress -> diff_id hash
-> compress -> hash -> spool), then copied. A layer kept as it is streams straight from the
layout's :class:`~layouttool.store.VerifiedReader` into the tar, its digest checked at EOF and its
diff_id checked on the way (the raw bytes are teed into the tar while a decompressor on the same
bytes hashes the content): ``docker load`` refuses a wrong diff_id, and we would rather fail
before the file exists. The config is always copied byte for byte, so its digest (Docker's image
ID) does not change.

A file OUTPUT is written to a temp file in the same directory, fsynced and renamed: an export
that fails leaves no partial file and an existing OUTPUT untouched.
"""

from __future__ import annotations

import contextlib
import enum
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, BinaryIO

from layouttool import mediatypes as mt
from layouttool.codec import (
    CHUNK,
    Compression,
    HashingReader,
    TeeReader,
    new_encoder,
    open_decompress,
    sniff,
)
from layouttool.digest import Digest, new_hasher
from layouttool.errors import (
    ConflictError,
    IntegrityError,
    InvalidInputError,
    LayoutToolError,
    UnsupportedError,
    from_oserror,
)
from layouttool.formats.docker_save_writer import (
    DockerName,
    SaveImage,
    TarWriter,
    parse_docker_name,
    write_archive,
)
from layouttool.model import Descriptor, Platform, dump_json
from layouttool.ops.common import ResolvedImage, resolve_image, select
from layouttool.progress import NULL_PROGRESS, Progress, Task
from layouttool.refs import parse_image
from layouttool.store import Layout, atomic_output


class ExportCompression(enum.Enum):
    """What happens to layer compression on the way into the archive.

    ``auto`` (default): zstd layers are decompressed, gzip and uncompressed layers are copied
    as they are; every ``docker load`` since 1.10 reads the result, and nothing is re-encoded
    that need not be. ``none``: every layer uncompressed (what ``docker save`` and skopeo
    write; the largest file, the best for compressing the whole tar). ``gzip``: uncompressed
    and zstd layers gzip-compressed, gzip layers kept. ``keep``: nothing rewritten, zstd
    included (only recent Docker releases and skopeo read zstd layers).
    """

    AUTO = "auto"
    NONE = "none"
    GZIP = "gzip"
    KEEP = "keep"

    def target(self, found: Compression) -> Compression:
        """The compression a layer found in ``found`` compression gets in the archive."""
        if self is ExportCompression.NONE:
            return Compression.NONE
        if self is ExportCompression.GZIP:
            return Compression.GZIP
        if self is ExportCompression.AUTO and found is Compression.ZSTD:
            return Compression.NONE
        return found


@dataclass(frozen=True, slots=True)
class ExportedLayer:
    """One layer as the archive holds it."""

    digest: Digest
    source_digest: Digest
    diff_id: Digest
    media_type: str
    size: int
    #: ``copied`` (bytes unchanged), ``decompressed`` or ``recompressed``
    action: str

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "digest": str(self.digest),
            "sourceDigest": str(self.source_digest),
            "diffID": str(self.diff_id),
            "mediaType": self.media_type,
            "size": self.size,
            "action": self.action,
        }


@dataclass(frozen=True, slots=True)
class ExportedImage:
    """One image of the archive."""

    image: str
    repo_tags: tuple[str, ...]
    config_digest: Digest
    #: digest of the manifest in the archive's OCI index
    manifest_digest: Digest
    source_manifest_digest: Digest
    platform: str | None
    layers: tuple[ExportedLayer, ...]

    @property
    def manifest_rewritten(self) -> bool:
        """True when a layer was re-encoded, so the archive's manifest is a new document."""
        return self.manifest_digest != self.source_manifest_digest

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "image": self.image,
            "repoTags": list(self.repo_tags),
            "configDigest": str(self.config_digest),
            "manifestDigest": str(self.manifest_digest),
            "sourceManifestDigest": str(self.source_manifest_digest),
            "manifestRewritten": self.manifest_rewritten,
            "platform": self.platform,
            "layers": [layer.to_json() for layer in self.layers],
        }


@dataclass(frozen=True, slots=True)
class ExportResult:
    """What ``to-docker-save`` wrote."""

    output: str
    images: tuple[ExportedImage, ...]
    blobs: int
    bytes_written: int
    seconds: float
    compression: str

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "output": self.output,
            "images": [i.to_json() for i in self.images],
            "blobs": self.blobs,
            "bytesWritten": self.bytes_written,
            "seconds": round(self.seconds, 3),
            "compression": self.compression,
        }


# --- blob sources ----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class _MemoryBlob:
    """A small blob already in memory (config, manifest), verified when it was read."""

    digest: Digest
    data: bytes

    @property
    def size(self) -> int:
        return len(self.data)

    def copy_to(self, sink: Callable[[bytes], None], task: Task) -> None:
        sink(self.data)
        task.advance(len(self.data))


@dataclass(frozen=True, slots=True)
class _LayoutLayer:
    """A layer copied byte for byte from a layout; digest and diff_id checked while copying."""

    layout: Layout
    desc: Descriptor
    compression: Compression
    diff_id: Digest

    @property
    def digest(self) -> Digest:
        return self.desc.digest

    @property
    def size(self) -> int:
        return self.desc.size

    def copy_to(self, sink: Callable[[bytes], None], task: Task) -> None:
        what = f"layer {self.desc.digest}"
        with self.layout.open_blob(self.desc.digest, self.desc.size) as src:
            if self.compression is Compression.NONE:
                # the diff_id of an uncompressed layer is its digest, checked at EOF
                tee = TeeReader(src, sink, task.advance)
                while tee.read(CHUNK):
                    pass
                return
            tee = TeeReader(src, sink, task.advance)
            dec = open_decompress(tee, self.compression, what=what)
            hashed = HashingReader(dec, self.diff_id.algorithm)
            hashed.drain()
            dec.close()
            # bytes after the end of the compressed stream belong to the blob too
            while tee.read(CHUNK):
                pass
        got = hashed.digest()
        if got != self.diff_id:
            raise IntegrityError(
                f"{what}: uncompressed content hashes to {got}, but the config's diff_id is "
                f"{self.diff_id}; the layout is corrupt (docker load would refuse it)"
            )


@dataclass(slots=True)
class _SpooledLayer:
    """A re-encoded layer waiting in an anonymous temp file."""

    digest: Digest
    size: int
    file: IO[bytes]

    def copy_to(self, sink: Callable[[bytes], None], task: Task) -> None:
        self.file.seek(0)
        left = self.size
        while left:
            data = self.file.read(min(CHUNK, left))
            if not data:
                raise IntegrityError(f"spooled layer {self.digest} shrank while being copied")
            sink(data)
            task.advance(len(data))
            left -= len(data)


# --- planning --------------------------------------------------------------------------------
@dataclass(slots=True)
class _Session:
    """State of one export: blobs by archive digest, spooled re-encodings by source digest."""

    policy: ExportCompression
    spool_dir: Path | None
    progress: Progress
    blobs: dict[Digest, _MemoryBlob | _LayoutLayer | _SpooledLayer] = field(default_factory=dict)
    encoded: dict[tuple[Digest, Compression], tuple[_SpooledLayer, Digest]] = field(
        default_factory=dict
    )
    stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)


def _sniff_blob(layout: Layout, desc: Descriptor) -> Compression:
    with layout.open_blob(desc.digest, desc.size) as r:
        head = r.read(8) if desc.size else b""
    return sniff(head)


def _spool(
    session: _Session, layout: Layout, desc: Descriptor, found: Compression, out: Compression
) -> tuple[_SpooledLayer, Digest]:
    """Re-encode one layer into a temp file in one pass; return it and the diff_id."""
    key = (desc.digest, out)
    if key in session.encoded:
        return session.encoded[key]
    what = f"layer {desc.digest}"
    try:
        # anonymous (O_TMPFILE or unlinked at once): nothing is left behind after a crash
        spool = session.stack.enter_context(tempfile.TemporaryFile(dir=session.spool_dir))  # noqa: SIM115
    except OSError as exc:
        raise from_oserror(exc, "create temp file in", session.spool_dir) from exc
    verb = "decompress" if out is Compression.NONE else f"{out.value}"
    task = session.progress.task(f"{verb} {desc.digest.short}", desc.size)
    try:
        with layout.open_blob(desc.digest, desc.size) as src:
            counted = TeeReader(src, advance=task.advance)
            dec = open_decompress(counted, found, what=what)
            plain = HashingReader(dec)
            encoder = new_encoder(out)
            out_hash = new_hasher()
            size = 0
            try:
                while data := plain.read(CHUNK):
                    piece = encoder.compress(data)
                    if piece:
                        out_hash.update(piece)
                        spool.write(piece)
                        size += len(piece)
                tail = encoder.flush()
                out_hash.update(tail)
                spool.write(tail)
                size += len(tail)
                spool.flush()
            except OSError as exc:
                raise from_oserror(exc, "write temp file for", what) from exc
            dec.close()
            # drain the source so its digest is verified (and trailing bytes are seen)
            while counted.read(CHUNK):
                pass
    finally:
        task.done()
    result = (_SpooledLayer(Digest.from_hasher("sha256", out_hash), size, spool), plain.digest())
    session.encoded[key] = result
    return result


def _names_for(entry: Descriptor, by_digest: bool) -> tuple[DockerName, ...]:
    """The Docker name an index.json entry implies, if any (see module docs of the CLI)."""
    if by_digest:
        return ()
    full = entry.annotations.get(mt.ANNOT_CONTAINERD_NAME)
    if full:
        name = parse_docker_name(full, default_tag="latest")
        if name is not None:
            return (name,)
    ref = entry.annotations.get(mt.ANNOT_REF_NAME)
    if ref:
        # a ref.name without ":" is a tag by OCI convention ("latest", "1.0"), not a name
        name = parse_docker_name(ref)
        if name is not None:
            return (name,)
    return ()


def _layer_media_type(src: Descriptor, out: Compression, *, docker: bool) -> str:
    # the bytes are in the archive now, so a rewritten foreign layer is an ordinary one
    return mt.layer_media_type(out, docker=docker)


def _plan_image(
    session: _Session, image: str, resolved: ResolvedImage, names: tuple[DockerName, ...]
) -> tuple[SaveImage, ExportedImage]:
    layout, m, config = resolved.layout, resolved.manifest, resolved.config
    if len(m.layers) != len(config.diff_ids):
        raise InvalidInputError(
            f"{image}: manifest {resolved.manifest_desc.digest} has {len(m.layers)} layers but "
            f"config {m.config.digest} lists {len(config.diff_ids)} diff_ids"
        )
    session.blobs.setdefault(config.digest, _MemoryBlob(config.digest, config.raw))
    new_layers: list[dict[str, Any]] = []
    exported: list[ExportedLayer] = []
    changed = False
    for desc, diff_id in zip(m.layers, config.diff_ids, strict=True):
        if not layout.has_blob(desc.digest):
            hint = " (a foreign layer: its blob was never stored)" if desc.urls else ""
            raise UnsupportedError(
                f"{image}: layer {desc.digest} is not in the layout{hint}; docker load needs "
                "every layer inside the archive"
            )
        found = _sniff_blob(layout, desc)
        if found not in (Compression.NONE, Compression.GZIP, Compression.ZSTD):
            raise UnsupportedError(f"{image}: layer {desc.digest} is {found.value}-compressed")
        declared = mt.layer_compression(desc.media_type)
        if declared is not None and declared is not found:
            raise InvalidInputError(
                f"{image}: layer {desc.digest} has media type {desc.media_type} but its "
                f"content is {found.value}"
            )
        out = session.policy.target(found)
        if out is found:
            if found is Compression.NONE and desc.digest != diff_id:
                raise IntegrityError(
                    f"{image}: uncompressed layer {desc.digest} does not match its diff_id "
                    f"{diff_id} in config {config.digest}"
                )
            session.blobs.setdefault(desc.digest, _LayoutLayer(layout, desc, found, diff_id))
            new_layers.append(desc.to_json())
            exported.append(
                ExportedLayer(
                    desc.digest, desc.digest, diff_id, desc.media_type, desc.size, "copied"
                )
            )
            continue
        spooled, got = _spool(session, layout, desc, found, out)
        if got != diff_id:
            raise IntegrityError(
                f"{image}: layer {desc.digest} decompresses to {got}, but config "
                f"{config.digest} says its diff_id is {diff_id}"
            )
        session.blobs.setdefault(spooled.digest, spooled)
        media_type = _layer_media_type(desc, out, docker=m.is_docker)
        annotations = {
            k: v
            for k, v in desc.annotations.items()
            if not k.startswith(mt.BLOB_SPECIFIC_ANNOTATION_PREFIXES)
        }
        new = Descriptor(media_type, spooled.digest, spooled.size, annotations=annotations)
        new_layers.append(new.to_json())
        changed = True
        action = "decompressed" if out is Compression.NONE else "recompressed"
        exported.append(
            ExportedLayer(spooled.digest, desc.digest, diff_id, media_type, spooled.size, action)
        )
    if changed:
        # keep every other field (annotations, subject, unknown ones) and their order
        doc = dict(m.doc)
        doc["layers"] = new_layers
        raw = dump_json(doc)
    else:
        raw = m.raw
    manifest_digest = Digest.of_bytes(raw)
    session.blobs.setdefault(manifest_digest, _MemoryBlob(manifest_digest, raw))
    manifest_desc = Descriptor(m.media_type, manifest_digest, len(raw))
    save = SaveImage(
        config=config.digest,
        layers=tuple(e.digest for e in exported),
        diff_ids=config.diff_ids,
        repo_tags=names,
        manifest=manifest_desc,
    )
    info = ExportedImage(
        image=image,
        repo_tags=tuple(n.familiar for n in names),
        config_digest=config.digest,
        manifest_digest=manifest_digest,
        source_manifest_digest=resolved.manifest_desc.digest,
        platform=str(config.platform) if config.platform else None,
        layers=tuple(exported),
    )
    return save, info


def _merge(saves: list[SaveImage]) -> list[SaveImage]:
    """One manifest.json item per archive manifest (names merged); a name names one image."""
    owner: dict[str, Digest] = {}
    merged: dict[Digest, SaveImage] = {}
    for s in saves:
        for n in s.repo_tags:
            if owner.setdefault(n.full, s.manifest.digest) != s.manifest.digest:
                raise ConflictError(
                    f"the name {n.familiar} would name two different images in the archive "
                    f"(manifests {owner[n.full]} and {s.manifest.digest}); give one of them "
                    "another name"
                )
        if s.manifest.digest in merged:
            prev = merged[s.manifest.digest]
            tags = prev.repo_tags + tuple(n for n in s.repo_tags if n not in prev.repo_tags)
            merged[s.manifest.digest] = SaveImage(
                prev.config, prev.layers, prev.diff_ids, tags, prev.manifest
            )
        else:
            merged[s.manifest.digest] = s
    return list(merged.values())


# --- output ----------------------------------------------------------------------------------
def _spool_dir_for(output: Path | None, layouts: Sequence[Layout]) -> Path | None:
    """Where re-encoded layers wait: beside a file OUTPUT, else in a source layout's tmp."""
    if output is not None and (output.is_file() or not output.exists()):
        return output.parent
    for layout in layouts:
        try:
            return layout.tmp_dir()
        except LayoutToolError:
            continue  # a read-only layout: fall back to the system temp dir
    return None


def export_docker_save(
    images: Sequence[str],
    output: str | os.PathLike[str] | BinaryIO,
    *,
    platform: Platform | None = None,
    compression: ExportCompression | str = ExportCompression.AUTO,
    tags: Sequence[str] | None = None,
    progress: Progress | None = None,
) -> ExportResult:
    """Write the images ``images`` name (``LAYOUT[:REF]``, ``LAYOUT@sha256:...``) as one
    ``docker save`` tarball at ``output`` (a path, or a binary stream such as stdout).

    Names: each image is written under the Docker name its index.json entry gives
    (``io.containerd.image.name``, else an ``org.opencontainers.image.ref.name`` of the form
    ``name:tag``); an entry whose ref is only a tag, or that was picked by digest, is written
    untagged. ``tags`` (``NAME[:TAG]``, only with a single image) replaces those names.
    ``platform`` picks one image from a multi-platform index (default: this host's).
    """
    start = time.monotonic()
    prog = progress or NULL_PROGRESS
    policy = compression if isinstance(compression, ExportCompression) else _policy(compression)
    if not images:
        raise InvalidInputError("name at least one IMAGE to export")
    forced: tuple[DockerName, ...] | None = None
    if tags:
        if len(images) != 1:
            raise InvalidInputError(
                "--tag names one image; with several IMAGEs, tag them in their layouts first "
                "('layouttool tag')"
            )
        forced = tuple(_parse_tag(t) for t in tags)
    out_path = Path(output) if isinstance(output, str | os.PathLike) else None
    stream = output if not isinstance(output, str | os.PathLike) else None
    with contextlib.ExitStack() as locks:
        selected = []
        for image in images:
            ref = parse_image(image)
            sel = select(ref)
            # a shared lock keeps gc away from the blobs we read (a read-only layout has none)
            with contextlib.suppress(LayoutToolError, OSError):
                locks.enter_context(sel.layout.writing())
            selected.append((image, ref, sel))
        session = _Session(
            policy, _spool_dir_for(out_path, [s.layout for _, _, s in selected]), prog
        )
        with session.stack:
            saves: list[SaveImage] = []
            infos: list[ExportedImage] = []
            for image, ref, sel in selected:
                resolved = resolve_image(sel.layout, sel.entry, platform, purpose="export")
                for w in resolved.warnings:
                    prog.note(f"warning: {w.line()}")
                names = (
                    forced if forced is not None else _names_for(sel.entry, ref.digest is not None)
                )
                save, info = _plan_image(session, image, resolved, names)
                saves.append(save)
                infos.append(info)
            saves = _merge(saves)
            blobs = list(session.blobs.values())

            def task_for(src: Any) -> Task:
                return prog.task(f"blob {src.digest.short}", src.size)

            if stream is not None:
                tar = TarWriter(stream)
                write_archive(tar, saves, blobs, task_for=task_for)
                stream.flush()
            else:
                assert out_path is not None
                with atomic_output(out_path) as fh:
                    tar = TarWriter(fh)
                    write_archive(tar, saves, blobs, task_for=task_for)
    return ExportResult(
        output=str(out_path) if out_path is not None else "-",
        images=tuple(infos),
        blobs=len(blobs),
        bytes_written=tar.bytes_written,
        seconds=time.monotonic() - start,
        compression=policy.value,
    )


def _policy(value: str) -> ExportCompression:
    try:
        return ExportCompression(value.lower())
    except ValueError:
        choices = ", ".join(c.value for c in ExportCompression)
        raise InvalidInputError(f"unknown compression {value!r} (choose {choices})") from None


def _parse_tag(value: str) -> DockerName:
    if "@" in value:
        raise InvalidInputError(f"--tag {value!r}: a tag cannot hold a digest (use NAME:TAG)")
    name = parse_docker_name(value, default_tag="latest")
    if name is None:
        raise InvalidInputError(
            f"--tag {value!r} is not a valid Docker name: use lowercase NAME[:TAG], "
            "e.g. app:1.0 or registry.example.com/team/app:1.0"
        )
    return name


__all__ = [
    "ExportCompression",
    "ExportResult",
    "ExportedImage",
    "ExportedLayer",
    "export_docker_save",
]
