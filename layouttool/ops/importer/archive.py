"""The two ways through a tarball: a seekable file (random access to members) or a stream
(one pass). Both offer the planners the same things: the member index, small members' bytes,
and layer members spooled into temp blobs (hashed and maybe re-encoded on the way), plus a
member's raw bytes for a byte-for-byte copy.

A stream import cannot wait for ``manifest.json`` (it often comes last), so :class:`StreamArchive`
spools every layer-like member as it passes and keeps the small JSON-like ones in memory under
a cap; what no image uses is dropped at the end. A waiting temp blob holds no file descriptor
(it is sealed once written), so thousands of layers wait within the open-files limit.
"""

from __future__ import annotations

import contextlib
import io
import threading
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final, TypeAlias

from layouttool.codec import (
    CHUNK,
    Compression,
    HashingReader,
    PeekReader,
    Reader,
    available_cpus,
    sniff,
)
from layouttool.digest import Digest
from layouttool.errors import (
    IntegrityError,
    Interrupted,
    LayoutToolError,
    NotFoundError,
    SizeLimitError,
    UnsupportedError,
    from_oserror,
)
from layouttool.formats import _tar
from layouttool.formats._tar import Member, MemberIndex, RangeReader
from layouttool.formats.docker_archive import META_MEMBERS, blob_path_digest
from layouttool.layers import PendingLayer, spool_layer
from layouttool.lazy import LazyFormat, LazyOptions
from layouttool.model import JSON_CAP
from layouttool.progress import Progress
from layouttool.store import BlobWriter, Layout

#: total bytes of small (JSON-like) members a stream import keeps in memory
STREAM_MEMORY_CAP: Final = 64 << 20
_HEAD: Final = 512
#: members up to this size are kept in memory by a stream import whatever they hold
_TINY: Final = 64 << 10
#: a member's raw bytes (:meth:`Archive.raw_blob`): in memory, a temp blob, a layer as it came
RawBlob: TypeAlias = bytes | BlobWriter | PendingLayer


# ----------------------------------------------------------------------------- plumbing
class Counter:
    """A byte count that several threads add to."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.value = 0

    def add(self, n: int) -> None:
        with self._lock:
            self.value += n


class _Wrapper:
    """A reader over another one: subclasses define :meth:`read`; ``readinto`` is read's."""

    def read(self, n: int = -1, /) -> bytes:
        raise NotImplementedError

    def readinto(self, b: bytearray | memoryview) -> int:
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)


class CountingReader(_Wrapper):
    """Count the bytes read from the source (before any decompression)."""

    def __init__(self, raw: Reader, counter: Counter) -> None:
        self._raw = raw
        self._counter = counter

    def read(self, n: int = -1, /) -> bytes:
        data = self._raw.read(n)
        self._counter.add(len(data))
        return data


class _OuterGuard(_Wrapper):
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


class _TeeWriter(_Wrapper):
    """Pass reads through and copy the bytes into a second blob writer (a raw copy)."""

    def __init__(self, raw: Reader, sink: BlobWriter) -> None:
        self._raw = raw
        self._sink = sink

    def read(self, n: int = -1, /) -> bytes:
        data = self._raw.read(n)
        if data:
            self._sink.write(data)
        return data


@dataclass(slots=True)
class Spooled:
    """A member written to a temp blob (not yet committed), or why that failed."""

    pending: PendingLayer | None = None
    #: an untouched copy (stream imports of ``blobs/`` members that were re-encoded)
    raw: BlobWriter | None = None
    #: digest of the member's raw bytes (for ``blobs/<alg>/<hex>`` members)
    raw_digest: Digest | None = None
    error: LayoutToolError | None = None

    def abort(self) -> None:
        """Drop its temp blobs."""
        if self.pending is not None:
            self.pending.abort()
        if self.raw is not None:
            self.raw.abort()


@dataclass(frozen=True, slots=True)
class Options:
    """How layers are stored, and how the work is shown and shared."""

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
    opts: Options,
    *,
    raw_copy: bool,
    what: str,
    total: int | None = None,
    alongside: int = 1,
) -> Spooled:
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
    return Spooled(pending, raw_writer, hashed.digest() if hashed is not None else None)


# ----------------------------------------------------------------------------- archives
class Archive:
    """What both readers offer the import: the member index, small members, layer spools."""

    def __init__(self, what: str, compression: Compression, streamed: bool) -> None:
        self.what = what
        self.index = MemberIndex()
        self.compression = compression
        self.streamed = streamed
        self.read_counter = Counter()
        self.spooled: dict[str, Spooled] = {}

    def read_small(self, member: Member, what: str) -> bytes:
        """The whole content of a small member (JSON), capped at :data:`JSON_CAP`."""
        raise NotImplementedError

    def spool_members(self, layout: Layout, names: list[str], opts: Options) -> None:
        """Make sure every member in ``names`` is in :attr:`spooled`."""
        raise NotImplementedError

    def raw_blob(
        self, layout: Layout, member: Member, digest: Digest, what: str, opts: Options
    ) -> RawBlob:
        """The bytes of ``member`` as they are, for a byte-for-byte copy of the blob ``digest``:
        in memory, a sealed temp blob, or a layer spooled as it came. Content that does not
        hash to ``digest`` is an :class:`IntegrityError` here, before anything is committed."""
        raise NotImplementedError

    def abort(self) -> None:
        """Drop every temp blob."""
        for s in self.spooled.values():
            s.abort()


class FileArchive(Archive):
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
            yield CountingReader(
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

    def spool_members(self, layout: Layout, names: list[str], opts: Options) -> None:
        todo = [n for n in dict.fromkeys(names) if n not in self.spooled]
        stop = threading.Event()
        alongside = max(1, min(opts.jobs, len(todo)))

        def work(name: str) -> Spooled:
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
        futures: list[tuple[str, Future[Spooled]]] = []
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


    def raw_blob(
        self, layout: Layout, member: Member, digest: Digest, what: str, opts: Options
    ) -> RawBlob:
        task = opts.progress.task(f"blob {digest.short}", member.size)
        bw = layout.writer(expected=digest)
        try:
            with self.member_reader(member, what) as r:
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
        return bw


class _Stoppable(_Wrapper):
    """A reader that fails fast once ``stop`` is set (another worker failed, or Ctrl-C)."""

    def __init__(self, raw: Reader, stop: threading.Event) -> None:
        self._raw = raw
        self._stop = stop

    def read(self, n: int = -1, /) -> bytes:
        if self._stop.is_set():
            raise Interrupted("import stopped")
        return self._raw.read(n)


class StreamArchive(Archive):
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

    def spool_members(self, layout: Layout, names: list[str], opts: Options) -> None:
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

    def raw_blob(
        self, layout: Layout, member: Member, digest: Digest, what: str, opts: Options
    ) -> RawBlob:
        data = self.memory.get(member.name)
        if data is not None:
            if Digest.of_bytes(data, digest.algorithm) != digest:
                raise IntegrityError(f"{what}: content does not match its digest")
            return data
        sp = self.spooled.get(member.name)
        if sp is None:  # pragma: no cover - every file member is either in memory or spooled
            raise NotFoundError(f"{what}: not read from the archive")
        if sp.raw_digest is not None and sp.raw_digest != digest:
            raise IntegrityError(f"{what}: content hashes to {sp.raw_digest}, not its digest")
        if sp.raw is not None:
            raw, sp.raw = sp.raw, None  # now owned by the caller
            return raw
        if sp.pending is not None and sp.pending.compression is sp.pending.source_compression:
            return sp.pending  # stored as it came: the raw bytes
        if sp.error is not None:
            raise sp.error
        raise UnsupportedError(  # pragma: no cover
            f"{what}: the raw bytes of this blob were not kept"
        )

    def scan(self, src: Reader, layout: Layout, opts: Options) -> None:
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
                    spooled = Spooled(error=exc)
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


__all__ = [
    "STREAM_MEMORY_CAP",
    "Archive",
    "Counter",
    "CountingReader",
    "FileArchive",
    "Options",
    "RawBlob",
    "Spooled",
    "StreamArchive",
]
