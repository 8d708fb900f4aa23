"""``from-docker-save``: import every image of a ``docker save`` tarball (or an OCI archive).

Two ways through the input, same result:

* **a seekable, uncompressed file**: read the member index (headers only), then
  ``manifest.json`` and the configs, then only the referenced layer members, several at once
  (each worker has its own file handle and reads its member's byte range; isal, zstandard and
  hashlib release the GIL);
* **a stream** (stdin, or a compressed tarball): one pass. Layers arrive before
  ``manifest.json``, so every layer-like member is spooled straight into a temp blob while it is
  hashed and (re)compressed; small JSON-like members stay in memory under a cap. At the end only
  the members ``manifest.json`` references are committed; the others are dropped.

Nothing reaches ``index.json`` before every layer's diff_id has been checked against its config.
Blobs are committed leaves first (layers, configs, manifests) and ``index.json`` is changed once,
at the end. If anything fails, no blob is committed and a layout this call created is removed,
so the target is as it was.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Final

from layouttool import mediatypes as mt
from layouttool.codec import (
    CHUNK,
    Compression,
    HashingReader,
    PeekReader,
    Reader,
    available_cpus,
    default_layer_jobs,
    open_decompress,
    sniff,
)
from layouttool.digest import Digest
from layouttool.errors import (
    IntegrityError,
    Interrupted,
    InvalidInputError,
    LayoutToolError,
    NotFoundError,
    SizeLimitError,
    UnsupportedError,
    from_oserror,
)
from layouttool.formats import _tar
from layouttool.formats._tar import Member, MemberIndex, RangeReader
from layouttool.formats.docker_archive import (
    META_MEMBERS,
    ArchiveImage,
    Form,
    Tag,
    blob_path_digest,
    check_config_name,
    detect_form,
    parse_manifest_json,
)
from layouttool.formats.docker_v1 import read_v1_save
from layouttool.formats.oci_archive import OciPlan, blob_member, plan_oci_archive
from layouttool.layers import PendingLayer, spool_layer
from layouttool.lazy import LazyFormat, LazyOptions, parse_target
from layouttool.model import (
    JSON_CAP,
    Descriptor,
    Manifest,
    Platform,
    dump_json,
    make_manifest_doc,
    parse_config,
    parse_index,
    parse_json,
)
from layouttool.ops.layout import place_ref, ref_descriptor
from layouttool.progress import NULL_PROGRESS, Progress
from layouttool.refs import normalize_docker_name
from layouttool.store import BlobInfo, BlobWriter, Layout
from layouttool.v1config import make_config

#: total bytes of small (JSON-like) members a stream import keeps in memory
STREAM_MEMORY_CAP: Final = 64 << 20
_HEAD: Final = 512
#: members up to this size are kept in memory by a stream import whatever they hold
_TINY: Final = 64 << 10


# ----------------------------------------------------------------------------- results
@dataclass(frozen=True, slots=True)
class ImportedLayer:
    """One layer of an imported image."""

    digest: str
    size: int
    diff_id: str | None
    media_type: str
    #: True when the bytes were re-encoded, False when stored as they came
    recompressed: bool
    #: a non-distributable layer whose blob is not in the layout (its descriptor is kept)
    foreign: bool = False

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "digest": self.digest,
            "size": self.size,
            "diffID": self.diff_id,
            "mediaType": self.media_type,
            "recompressed": self.recompressed,
            "foreign": self.foreign,
        }


@dataclass(frozen=True, slots=True)
class ImportedImage:
    """One index.json entry the import added or moved."""

    ref: str | None
    name: str | None
    digest: str
    media_type: str
    config_digest: str | None
    layers: tuple[ImportedLayer, ...]
    #: ``tagged`` (new ref), ``moved`` (ref pointed elsewhere before), ``added`` (untagged),
    #: ``unchanged`` (the same entry was already there)
    action: str = "tagged"

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "ref": self.ref,
            "name": self.name,
            "digest": self.digest,
            "mediaType": self.media_type,
            "configDigest": self.config_digest,
            "action": self.action,
            "layers": [layer.to_json() for layer in self.layers],
        }


@dataclass(frozen=True, slots=True)
class ImportResult:
    """What ``from-docker-save`` did."""

    source: str
    layout: str
    #: ``docker-save`` (any form with manifest.json), ``docker-save-v1`` (Docker <= 1.9) or
    #: ``oci-archive``
    source_format: str
    #: compression of the whole tarball (``none``, ``gzip``, ``zstd``, ``xz``, ``bzip2``)
    source_compression: str
    streamed: bool
    images: tuple[ImportedImage, ...]
    bytes_read: int
    bytes_written: int
    seconds: float
    notes: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "source": self.source,
            "layout": self.layout,
            "sourceFormat": self.source_format,
            "sourceCompression": self.source_compression,
            "streamed": self.streamed,
            "images": [i.to_json() for i in self.images],
            "bytesRead": self.bytes_read,
            "bytesWritten": self.bytes_written,
            "seconds": round(self.seconds, 3),
            "notes": list(self.notes),
        }


# ----------------------------------------------------------------------------- plumbing
class _Counter:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.value = 0

    def add(self, n: int) -> None:
        with self._lock:
            self.value += n


class _CountingReader:
    """Count the bytes read from the source (before any decompression)."""

    def __init__(self, raw: Reader, counter: _Counter) -> None:
        self._raw = raw
        self._counter = counter

    def read(self, n: int = -1, /) -> bytes:
        data = self._raw.read(n)
        self._counter.add(len(data))
        return data

    def readinto(self, b: bytearray | memoryview) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)


class _OuterGuard:
    """A member's data reader; remembers when a failure came from the outer stream.

    A member that is not a valid layer is only an error if manifest.json references it, but a
    truncated or corrupt *tarball* is always fatal: this wrapper tells the two apart.
    """

    def __init__(self, raw: Reader) -> None:
        self._raw = raw
        self.failed = False

    def read(self, n: int = -1, /) -> bytes:
        try:
            return self._raw.read(n)
        except BaseException:
            self.failed = True
            raise

    def readinto(self, b: bytearray | memoryview) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)


class _TeeWriter:
    """Pass reads through and copy the bytes into a second blob writer (a raw copy)."""

    def __init__(self, raw: Reader, sink: BlobWriter) -> None:
        self._raw = raw
        self._sink = sink

    def read(self, n: int = -1, /) -> bytes:
        data = self._raw.read(n)
        if data:
            self._sink.write(data)
        return data

    def readinto(self, b: bytearray | memoryview) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)


@dataclass(slots=True)
class _Spooled:
    """A member written to a temp blob (not yet committed), or why that failed."""

    pending: PendingLayer | None = None
    #: an untouched copy (stream imports of ``blobs/`` members that were re-encoded)
    raw: BlobWriter | None = None
    #: digest of the member's raw bytes (for ``blobs/<alg>/<hex>`` members)
    raw_digest: Digest | None = None
    error: LayoutToolError | None = None

    def abort(self) -> None:
        if self.pending is not None:
            self.pending.abort()
        if self.raw is not None:
            self.raw.abort()


@dataclass(frozen=True, slots=True)
class _Options:
    target: Compression
    level: int | None
    docker: bool
    jobs: int
    max_size: int | None
    progress: Progress
    #: write lazy-pull layers (zstd:chunked, eStargz)
    lazy: LazyFormat | None = None
    lazy_options: LazyOptions | None = None


def _read_all(src: Reader, cap: int, what: str) -> bytes:
    buf = bytearray()
    while chunk := src.read(CHUNK):
        buf += chunk
        if len(buf) > cap:
            raise SizeLimitError(f"{what} is larger than the cap of {cap} bytes")
    return bytes(buf)


def _label(member: str) -> str:
    d = blob_path_digest(member)
    if d is not None:
        return f"layer {d.short}"
    head = member.split("/", 1)[0]
    return f"layer {head[:12]}" if len(head) >= 12 else f"layer {member}"


def _spool(
    layout: Layout,
    src: Reader,
    name: str,
    opts: _Options,
    *,
    raw_copy: bool,
    what: str,
    total: int | None = None,
    alongside: int = 1,
) -> _Spooled:
    """Spool one member as a layer; for ``blobs/`` members also hash (and maybe copy) it raw.

    ``alongside`` is how many layers are spooled at once (this one included): the encoder
    gets that share of the CPUs (zstd's workers, gzip's blocks in flight)."""
    claimed = blob_path_digest(name)
    hashed = HashingReader(src) if claimed is not None else None
    source: Reader = hashed if hashed is not None else src
    raw_writer: BlobWriter | None = None
    task = opts.progress.task(_label(name), total)
    try:
        if raw_copy and claimed is not None:
            peek = PeekReader(source)
            if opts.lazy is not None or sniff(peek.peek(8)) is not opts.target:
                raw_writer = layout.writer(expected=claimed)
                source = _TeeWriter(peek, raw_writer)
            else:
                source = peek
        pending = spool_layer(
            layout,
            source,
            target=opts.target,
            level=opts.level,
            threads=max(1, available_cpus() // max(alongside, 1)),
            max_size=opts.max_size,
            what=what,
            task=task,
            lazy=opts.lazy,
            lazy_options=opts.lazy_options,
        )
        if raw_writer is not None:
            # the member has been read to its end: close the copy now, so that a stream with
            # thousands of such members holds no descriptor per member until manifest.json
            raw_writer.seal()
    except BaseException:
        if raw_writer is not None:
            raw_writer.abort()
        raise
    finally:
        task.done()
    return _Spooled(pending, raw_writer, hashed.digest() if hashed is not None else None)


# ----------------------------------------------------------------------------- archives
class _Archive:
    """What both readers offer the import: the member index, small members, layer spools."""

    def __init__(self, what: str, compression: Compression, streamed: bool) -> None:
        self.what = what
        self.index = MemberIndex()
        self.compression = compression
        self.streamed = streamed
        self.read_counter = _Counter()
        self.spooled: dict[str, _Spooled] = {}

    def read_small(self, member: Member, what: str) -> bytes:
        """The whole content of a small member (JSON), capped at :data:`JSON_CAP`."""
        raise NotImplementedError

    def spool_members(self, layout: Layout, names: list[str], opts: _Options) -> None:
        """Make sure every member in ``names`` is in :attr:`spooled`."""
        raise NotImplementedError

    def abort(self) -> None:
        """Drop every temp blob."""
        for s in self.spooled.values():
            s.abort()


class _FileArchive(_Archive):
    """A seekable uncompressed tar file: random access to members."""

    def __init__(self, path: Path, what: str) -> None:
        super().__init__(what, Compression.NONE, streamed=False)
        self.path = path
        with self._open() as fh:
            self.index = _tar.scan_seekable(fh, what)

    def _open(self) -> BinaryIO:
        try:
            return open(self.path, "rb")
        except OSError as exc:
            raise from_oserror(exc, "open", self.path) from exc

    @contextlib.contextmanager
    def member_reader(self, member: Member, what: str) -> Iterator[Reader]:
        with self._open() as fh:
            yield _CountingReader(
                RangeReader(fh, member.offset, member.size, what), self.read_counter
            )

    def read_small(self, member: Member, what: str) -> bytes:
        if member.size > JSON_CAP:
            raise SizeLimitError(
                f"{what}: member {member.name!r} is {member.size} bytes, over the JSON cap of "
                f"{JSON_CAP}"
            )
        with self.member_reader(member, what) as r:
            return _read_all(r, JSON_CAP, what)

    def spool_members(self, layout: Layout, names: list[str], opts: _Options) -> None:
        todo = [n for n in dict.fromkeys(names) if n not in self.spooled]
        stop = threading.Event()
        alongside = max(1, min(opts.jobs, len(todo)))

        def work(name: str) -> _Spooled:
            member = self.index.members[name]
            w = f"{self.what}: layer {name!r}"
            with self.member_reader(member, w) as r:
                src = _Stoppable(r, stop)
                return _spool(layout, src, name, opts, raw_copy=False, what=w, total=member.size,
                              alongside=alongside)

        if opts.jobs <= 1 or len(todo) <= 1:
            for name in todo:
                self.spooled[name] = work(name)
            return
        futures: list[tuple[str, Future[_Spooled]]] = []
        ex = ThreadPoolExecutor(max_workers=opts.jobs)
        try:
            # submit inside the try: a Ctrl-C between two submits must still stop (and
            # collect) the workers already started
            for n in todo:
                futures.append((n, ex.submit(work, n)))
            # the first failure in manifest order is the one reported
            for name, fut in futures:
                self.spooled[name] = fut.result()
        except BaseException:
            # Ctrl-C lands here in the main thread: stop the workers at their next read
            # instead of letting them finish their layers
            stop.set()
            for _, f in futures:
                f.cancel()
            raise
        finally:
            ex.shutdown(wait=True)
            # every worker has ended: keep what finished so that abort() drops its temp file
            for name, fut in futures:
                if name in self.spooled or not fut.done() or fut.cancelled():
                    continue
                if fut.exception() is None:
                    self.spooled[name] = fut.result()


class _Stoppable:
    """A reader that fails fast once ``stop`` is set (another worker failed, or Ctrl-C)."""

    def __init__(self, raw: Reader, stop: threading.Event) -> None:
        self._raw = raw
        self._stop = stop

    def read(self, n: int = -1, /) -> bytes:
        if self._stop.is_set():
            raise Interrupted("import stopped")
        return self._raw.read(n)

    def readinto(self, b: bytearray | memoryview) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)


class _StreamArchive(_Archive):
    """A tar read once from a stream: small members in memory, the rest spooled on the way."""

    def __init__(self, what: str, compression: Compression) -> None:
        super().__init__(what, compression, streamed=True)
        self.memory: dict[str, bytes] = {}

    def read_small(self, member: Member, what: str) -> bytes:
        data = self.memory.get(member.name)
        if data is not None:
            return data
        raise SizeLimitError(
            f"{what}: member {member.name!r} ({member.size} bytes) was not kept in memory: "
            f"it is over the JSON cap of {JSON_CAP} bytes or does not look like JSON"
        )

    def spool_members(self, layout: Layout, names: list[str], opts: _Options) -> None:
        for name in dict.fromkeys(names):
            if name in self.spooled:
                continue
            data = self.memory.get(name)
            if data is None:  # pragma: no cover - scan spools every non-memory file member
                raise NotFoundError(f"{self.what}: member {name!r} was not read")
            w = f"{self.what}: layer {name!r}"
            self.spooled[name] = _spool(
                layout, io.BytesIO(data), name, opts, raw_copy=False, what=w, total=len(data)
            )

    def scan(self, src: Reader, layout: Layout, opts: _Options) -> None:
        """The one pass over the tar stream."""
        mem_total = 0
        for ti, tf in _tar.iter_stream(src, self.what):
            member = self.index.add_tarinfo(ti, seekable=False)
            if member is None or member.kind != "file" or member.sparse:
                continue
            fobj = tf.extractfile(ti)
            if fobj is None:  # pragma: no cover - regular files always have a reader
                continue
            guard = _OuterGuard(fobj)
            peek = PeekReader(guard)
            w = f"{self.what}: member {member.name!r}"
            try:
                head = peek.peek(_HEAD)
                kind = sniff(head[:8])
                json_like = (
                    kind is Compression.NONE and member.size <= JSON_CAP and b"\0" not in head
                )
                # tiny members are kept too (while room is left), so a small config that does
                # not look like JSON is still reported for what it is, not as "not kept"
                tiny = member.size <= _TINY and mem_total + member.size <= STREAM_MEMORY_CAP
                if member.name in META_MEMBERS or json_like or tiny:
                    if member.size > JSON_CAP:
                        raise SizeLimitError(
                            f"{w} is {member.size} bytes, over the JSON cap of {JSON_CAP}"
                        )
                    mem_total += member.size
                    if mem_total > STREAM_MEMORY_CAP:
                        raise SizeLimitError(
                            f"{self.what}: small members total more than "
                            f"{STREAM_MEMORY_CAP} bytes; not a docker save tarball"
                        )
                    self.memory[member.name] = _read_all(peek, JSON_CAP, w)
                    old = self.spooled.pop(member.name, None)
                    if old is not None:
                        old.abort()
                    continue
                try:
                    spooled = _spool(
                        layout, peek, member.name, opts, raw_copy=True, what=w, total=member.size
                    )
                except LayoutToolError as exc:
                    if guard.failed:
                        raise
                    # not (yet) fatal: only an error if manifest.json uses this member
                    spooled = _Spooled(error=exc)
                    while peek.read(CHUNK):
                        pass
                old = self.spooled.pop(member.name, None)
                if old is not None:
                    old.abort()
                self.memory.pop(member.name, None)
                self.spooled[member.name] = spooled
            except LayoutToolError:
                raise
            except Exception as exc:
                if guard.failed:
                    raise _tar.translate_tar_error(exc, self.what) from exc
                raise


# ----------------------------------------------------------------------------- import
@dataclass(frozen=True, slots=True)
class _LayerSlot:
    """One layer of a planned manifest: a spooled member, or a foreign descriptor kept as is."""

    media_type: str
    diff_id: Digest
    member: str | None = None
    foreign: Descriptor | None = None
    recompressed: bool = False
    #: annotations of the stored blob (a lazy-pull layer's TOC digest and position)
    annotations: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True, slots=True)
class _ImagePlan:
    """A manifest to write once its layers are committed."""

    media_type: str
    config: Descriptor
    layers: tuple[_LayerSlot, ...]
    platform: Platform | None
    tags: tuple[Tag, ...]


@dataclass(slots=True)
class _Commit:
    """Everything to write once every check has passed, in order."""

    layers: dict[str, PendingLayer] = field(default_factory=dict)
    raws: dict[Digest, BlobWriter] = field(default_factory=dict)
    small: dict[Digest, bytes] = field(default_factory=dict)
    images: list[_ImagePlan] = field(default_factory=list)
    #: index.json entries of an OCI archive, as they are, with their manifests
    entries: list[tuple[Descriptor, Manifest | None]] = field(default_factory=list)

    def abort(self) -> None:
        """Drop every temp blob the plan owns (on failure)."""
        for pending in self.layers.values():
            pending.abort()
        for w in self.raws.values():
            w.abort()


def _open_source(
    source: str | Path | BinaryIO, counter: _Counter
) -> tuple[str, Path | None, Reader | None, Callable[[], None]]:
    """(display name, path when seekable+uncompressed, stream otherwise, closer)."""
    if isinstance(source, str | Path) and str(source) != "-":
        path = Path(source)
        try:
            fh = open(path, "rb")  # noqa: SIM115 - closed by the returned closer
        except OSError as exc:
            raise from_oserror(exc, "open", path) from exc
        try:
            st = os.fstat(fh.fileno())
            head = fh.read(8)
            fh.seek(0)
        except OSError as exc:
            fh.close()
            raise from_oserror(exc, "read", path) from exc
        import stat

        if stat.S_ISREG(st.st_mode) and sniff(head) is Compression.NONE:
            fh.close()
            return str(path), path, None, lambda: None
        return str(path), None, _CountingReader(fh, counter), fh.close
    stream: BinaryIO = sys.stdin.buffer if isinstance(source, str | Path) else source
    return "-", None, _CountingReader(stream, counter), lambda: None


def _layout_existed(path: Path) -> bool:
    try:
        return path.is_dir() and any(path.iterdir())
    except OSError:
        return True


def _cleanup_created(path: Path, was_absent: bool) -> None:
    """Remove a layout this import created, after a failure."""
    if was_absent:
        shutil.rmtree(path, ignore_errors=True)
        return
    # it was an empty directory: empty it again
    for child in path.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                child.unlink()


def import_docker_save(
    source: str | Path | BinaryIO,
    layout: str | Path,
    *,
    compression: str | Compression = Compression.GZIP,
    level: int | None = None,
    fmt: str = "oci",
    images: list[str] | tuple[str, ...] | None = None,
    jobs: int | None = None,
    max_size: int | None = None,
    progress: Progress | None = None,
    chunk_size: int | None = None,
    prioritize: tuple[str, ...] | list[str] = (),
) -> ImportResult:
    """Import every image (or the ``images`` named) of a docker save tarball into ``layout``.

    ``source`` is a path, ``"-"`` for standard input, or a binary stream. The tarball may be
    gzip/zstd/xz/bzip2-compressed as a whole. ``layout`` is created when absent. Layers are
    stored with ``compression`` (``gzip``, ``zstd`` or ``none``; a layer already in that
    compression is stored as it is; ``zstd:chunked`` or ``estargz`` write lazy-pull layers,
    with eStargz's ``chunk_size`` and ``prioritize``, and an eStargz image gets a new config)
    and the manifests use OCI (``fmt="oci"``) or Docker
    (``fmt="docker"``) media types. An OCI archive is imported as it is (its blobs are copied
    byte for byte; ``compression`` and ``fmt`` do not apply). ``max_size`` caps each layer's
    uncompressed size. Raises a :class:`~layouttool.errors.LayoutToolError`; on failure the
    layout is left as it was.
    """
    start = time.monotonic()
    lazy: LazyFormat | None = None
    if isinstance(compression, Compression):
        target = compression
    else:
        target, lazy = parse_target(compression)
    if lazy is LazyFormat.ZSTD_CHUNKED and fmt == "docker":
        raise UnsupportedError(
            "--format docker cannot be combined with --compression zstd:chunked: Docker media "
            "types have no zstd layer type; use --format oci, or --compression estargz"
        )
    if target not in (Compression.NONE, Compression.GZIP, Compression.ZSTD):
        raise UnsupportedError(f"layers cannot be stored as {target.value}: use gzip, zstd or none")
    if fmt not in ("oci", "docker"):
        raise InvalidInputError(f"unknown format {fmt!r}: use 'oci' or 'docker'")
    docker = fmt == "docker"
    mt.layer_media_type(target, docker=docker)  # refuses docker + zstd up front
    if level is not None:
        from layouttool.codec import new_encoder

        new_encoder(target, level)  # refuses an out-of-range level up front
    lazy_options = LazyOptions.from_flags(lazy, level, chunk_size, prioritize)
    if max_size is not None and max_size < 0:
        raise InvalidInputError(f"--max-size must not be negative, got {max_size}")
    opts = _Options(
        target=target,
        level=level,
        docker=docker,
        jobs=max(1, jobs if jobs is not None else default_layer_jobs(target)),
        max_size=max_size,
        progress=progress or NULL_PROGRESS,
        lazy=lazy,
        lazy_options=lazy_options,
    )
    counter = _Counter()
    name, path, stream, closer = _open_source(source, counter)
    out_path = Path(layout)
    was_absent = not out_path.exists()
    created = was_absent or not _layout_existed(out_path)
    archive: _Archive | None = None
    lay: Layout | None = None
    ok = False
    try:
        if path is not None:
            archive = _FileArchive(path, name)
            detect_form(archive.index, name)  # refuse the unsupported before creating anything
        lay = Layout.open(out_path, create=True)
        with lay.writing():
            # a broken index.json is refused before any blob is written, not after
            lay.read_index()
            if archive is None:
                assert stream is not None
                peek = PeekReader(stream)
                kind = sniff(peek.peek(8))
                archive = _StreamArchive(name, kind)
                archive.scan(open_decompress(peek, kind, what=name), lay, opts)
            result = _import(archive, lay, opts, list(images or ()))
        ok = True
    finally:
        closer()
        if archive is not None:
            archive.abort()
        if not ok and created and lay is not None:
            _cleanup_created(out_path, was_absent)
    read = counter.value + archive.read_counter.value
    images_out, written, notes = result
    return ImportResult(
        source=name,
        layout=str(out_path),
        source_format=notes[0],
        source_compression=archive.compression.value,
        streamed=archive.streamed,
        images=images_out,
        bytes_read=read,
        bytes_written=written,
        seconds=time.monotonic() - start,
        notes=tuple(notes[1:]),
    )


def _import(
    archive: _Archive, layout: Layout, opts: _Options, wanted: list[str]
) -> tuple[tuple[ImportedImage, ...], int, list[str]]:
    form: Form = detect_form(archive.index, archive.what)
    plan = _Commit()
    notes: list[str] = [form]
    try:
        if form == "docker-save":
            _plan_docker(archive, layout, opts, wanted, plan)
        elif form == "docker-save-v1":
            notes += _plan_v1(archive, layout, opts, wanted, plan)
        else:
            _plan_oci(archive, layout, opts, wanted, plan)
            if opts.target is not Compression.GZIP or opts.docker:
                notes.append(
                    "an OCI archive is imported as it is: --compression and --format do not "
                    "apply (use 'layouttool convert' afterwards)"
                )
        return (*_apply(layout, plan), notes)
    except BaseException:
        plan.abort()
        raise


def _select_images(
    entries: list[tuple[ArchiveImage, Digest]], wanted: list[str], what: str
) -> list[tuple[ArchiveImage, tuple[Tag, ...]]]:
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


def _plan_docker(
    archive: _Archive, layout: Layout, opts: _Options, wanted: list[str], plan: _Commit
) -> None:
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
    selected = _select_images(parsed, wanted, what)

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
        slots: list[_LayerSlot] = []
        for i, (kind, value) in enumerate(layers):
            diff_id = cfg.diff_ids[i]
            if kind == "foreign":
                fd: Descriptor = value
                comp = mt.layer_compression(fd.media_type) or Compression.GZIP
                media_type = mt.layer_media_type(comp, docker=opts.docker, nondistributable=True)
                slots.append(
                    _LayerSlot(media_type, diff_id, foreign=fd.with_(media_type=media_type))
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
            _ImagePlan(
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


def _plan_v1(
    archive: _Archive, layout: Layout, opts: _Options, wanted: list[str], plan: _Commit
) -> list[str]:
    """Plan the images of a pre-1.10 save: one per tag target or untagged head, its config
    made from the chain as Docker 1.10's migration made it (see :mod:`layouttool.v1config`)."""
    what = archive.what
    index = archive.index

    def read(path: str, w: str) -> bytes:
        return archive.read_small(index.resolve(path, w), w)

    chains, notes = read_v1_save(index, read, what)
    # an --image value matches a tag, or (12+ hex digits) the top layer's V1 ID that
    # `docker images` showed before 1.10
    entries = [
        (
            ArchiveImage(i, f"{c.top.id}/json", tuple(la.layer_path for la in c.layers), c.tags),
            Digest("sha256", c.top.id),
        )
        for i, c in enumerate(chains)
    ]
    selected = _select_images(entries, wanted, what)

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
        slots: list[_LayerSlot] = []
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
            notes.append(
                f"{w}: the V1 JSON names no {' or '.join(d.split('=')[0] for d in cfg.defaults)}; "
                f"wrote {', '.join(cfg.defaults)} (an OCI config requires them), so the image "
                "ID differs from the one Docker gave"
            )
        digest = Digest.of_bytes(cfg.raw)
        plan.small[digest] = cfg.raw
        plan.images.append(
            _ImagePlan(
                media_type=mt.manifest_type(docker=opts.docker),
                config=Descriptor(
                    media_type=mt.config_type(docker=opts.docker), digest=digest, size=len(cfg.raw)
                ),
                layers=tuple(slots),
                platform=parse_config(cfg.raw, f"{w} config {digest}").platform,
                tags=tags,
            )
        )
    return notes


def _spooled_slot(pending: PendingLayer, member: str, opts: _Options) -> _LayerSlot:
    """The manifest slot of a layer spooled from ``member``."""
    return _LayerSlot(
        mt.layer_media_type(pending.compression, docker=opts.docker),
        pending.diff_id,
        member=member,
        recompressed=pending.compression is not pending.source_compression
        or pending.lazy is not None,
        annotations=tuple(pending.annotations.items()),
    )


def _plan_oci(
    archive: _Archive, layout: Layout, opts: _Options, wanted: list[str], plan: _Commit
) -> None:
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
    archive: _Archive,
    layout: Layout,
    member: Member,
    digest: Digest,
    what: str,
    opts: _Options,
    plan: _Commit,
) -> None:
    """Plan a byte-for-byte copy of one blob member (its digest is checked on commit)."""
    if digest in plan.raws or digest in plan.small:
        return
    if isinstance(archive, _FileArchive):
        task = opts.progress.task(f"blob {digest.short}", member.size)
        bw = layout.writer(expected=digest)
        try:
            with archive.member_reader(member, what) as r:
                # hash here too: a mismatch must be found before the first commit, not by it
                hashed = HashingReader(r, digest.algorithm)
                while chunk := hashed.read(CHUNK):
                    bw.write(chunk)
                    task.advance(len(chunk))
            if hashed.digest() != digest:
                raise IntegrityError(f"{what}: content hashes to {hashed.digest()}, not its digest")
            # closed until the commit: an archive of thousands of blobs must not hold one
            # descriptor per blob (the open-files limit is often 1024)
            bw.seal()
        except BaseException:
            bw.abort()
            raise
        finally:
            task.done()
        plan.raws[digest] = bw
        return
    assert isinstance(archive, _StreamArchive)
    if member.name in archive.memory:
        data = archive.memory[member.name]
        if Digest.of_bytes(data, digest.algorithm) != digest:
            raise IntegrityError(f"{what}: content does not match its digest")
        plan.small[digest] = data
        return
    sp = archive.spooled.get(member.name)
    if sp is None:  # pragma: no cover - every file member is either in memory or spooled
        raise NotFoundError(f"{what}: not read from the archive")
    if sp.raw_digest is not None and sp.raw_digest != digest:
        raise IntegrityError(f"{what}: content hashes to {sp.raw_digest}, not its digest")
    if sp.raw is not None:
        plan.raws[digest] = sp.raw
        sp.raw = None  # now owned by the plan
        return
    if sp.pending is not None and sp.pending.compression is sp.pending.source_compression:
        plan.layers[member.name] = sp.pending  # stored as it came: the raw bytes
        return
    if sp.error is not None:
        raise sp.error
    raise UnsupportedError(f"{what}: the raw bytes of this blob were not kept")  # pragma: no cover


def _apply(layout: Layout, plan: _Commit) -> tuple[tuple[ImportedImage, ...], int]:
    """Commit every blob (leaves first), write the manifests, and change index.json once."""
    # every in-memory document is checked before the first commit, so a bad one cannot leave
    # the blobs before it behind
    for digest, data in plan.small.items():
        if Digest.of_bytes(data, digest.algorithm) != digest:
            raise IntegrityError(f"blob {digest}: content does not match its digest")
    written: dict[Digest, int] = {}
    layer_info: dict[str, BlobInfo] = {}
    for name, pending in plan.layers.items():
        res = pending.commit()
        layer_info[name] = res.blob
        written[res.blob.digest] = res.blob.size
    for digest, w in plan.raws.items():
        written[digest] = w.commit().size
    for digest, data in plan.small.items():
        written[digest] = layout.put_bytes(data, expected=digest).size

    # (index.json entry without refs, tags, layers for the result, config digest)
    new_entries: list[tuple[Descriptor, tuple[Tag, ...], tuple[ImportedLayer, ...], str | None]]
    new_entries = []
    for img in plan.images:
        descs: list[Descriptor] = []
        out_layers: list[ImportedLayer] = []
        for slot in img.layers:
            if slot.foreign is not None:
                d = slot.foreign
            else:
                assert slot.member is not None
                info = layer_info[slot.member]
                d = Descriptor(
                    media_type=slot.media_type,
                    digest=info.digest,
                    size=info.size,
                    annotations=dict(slot.annotations),
                )
            descs.append(d)
            out_layers.append(
                ImportedLayer(
                    str(d.digest),
                    d.size,
                    str(slot.diff_id),
                    d.media_type,
                    slot.recompressed,
                    foreign=slot.foreign is not None,
                )
            )
        raw = dump_json(
            make_manifest_doc(media_type=img.media_type, config=img.config, layers=descs)
        )
        info = layout.put_bytes(raw)
        written[info.digest] = info.size
        mdesc = Descriptor(
            media_type=img.media_type, digest=info.digest, size=info.size, platform=img.platform
        )
        new_entries.append((mdesc, img.tags, tuple(out_layers), str(img.config.digest)))
    for entry, man in plan.entries:
        layers_out: tuple[ImportedLayer, ...] = ()
        cfg_digest = None
        if man is not None:
            cfg_digest = str(man.config.digest)
            layers_out = tuple(
                ImportedLayer(
                    str(d.digest),
                    d.size,
                    None,
                    d.media_type,
                    False,
                    foreign=mt.is_nondistributable(d.media_type),
                )
                for d in man.layers
            )
        new_entries.append((entry, (), layers_out, cfg_digest))

    actions: list[tuple[Descriptor, str]] = []

    def change(entries: list[Descriptor], _doc: dict[str, Any]) -> list[Descriptor]:
        actions.clear()
        for mdesc, tags, _layers, _cfg in new_entries:
            wanted = [ref_descriptor(mdesc, t.ref, t.name) for t in tags]
            if not wanted and mdesc.ref_name:
                wanted = [mdesc]
            for new in wanted:
                if new in entries:
                    actions.append((new, "unchanged"))
                    continue
                entries, action = place_ref(entries, new)
                actions.append((new, action))
            if wanted:
                continue
            if any(e.digest == mdesc.digest for e in entries):
                actions.append((mdesc, "unchanged"))
            else:
                entries = [*entries, mdesc]
                actions.append((mdesc, "added"))
        return entries

    layout.update_index(change)
    results: list[ImportedImage] = []
    it = iter(actions)
    for mdesc, tags, layers_out, cfg in new_entries:
        for _ in range(max(len(tags), 1)):
            desc, action = next(it)
            results.append(
                ImportedImage(
                    ref=desc.ref_name,
                    name=desc.annotations.get(mt.ANNOT_CONTAINERD_NAME),
                    digest=str(mdesc.digest),
                    media_type=mdesc.media_type,
                    config_digest=cfg,
                    layers=layers_out,
                    action=action,
                )
            )
    return tuple(results), sum(written.values())
