"""Compression detection and streaming codecs, hashing and counting readers.

Compression is detected by magic bytes, never by a file name or a media type alone. Every codec
streams in bounded memory, and every error a third-party codec raises is translated into
:class:`~layouttool.errors.CorruptStreamError` here, at the one module that calls them.

gzip goes through ISA-L (``isal``), which is 5-10x faster than zlib at the levels we use;
levels 4-9 fall back to zlib for users who want the smallest output. A gzip layer is compressed
pigz-style: in 1 MiB blocks, each primed with the previous block's last 32 KiB and ended with a
sync flush, so blocks are compressed on every core at once (one large layer no longer runs on
one core) and still form one ordinary gzip member. Output is deterministic: block boundaries
depend on the content's offsets only, never on the number of threads or on how the input was
fed; the gzip header carries no name and mtime 0; and zstd always runs in its multi-threaded
mode (whose output does not depend on the number of workers).
"""

from __future__ import annotations

import bz2
import collections
import lzma
import os
import struct
import threading
import zlib
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Final, Protocol

from isal import igzip, isal_zlib

from layouttool.digest import CANONICAL, Digest, Hasher, new_hasher
from layouttool.errors import CorruptStreamError, LayoutToolError, SizeLimitError
from layouttool.mediatypes import Compression  # re-exported: its home is beside the media types

#: chunk size for every copy loop
CHUNK: Final = 1 << 20

GZIP_MAGIC: Final = b"\x1f\x8b"
ZSTD_MAGIC: Final = b"\x28\xb5\x2f\xfd"
XZ_MAGIC: Final = b"\xfd7zXZ\x00"
BZIP2_MAGIC: Final = b"BZh"
#: zstd skippable frames (0x184D2A50-0x184D2A5F, little endian) also start a zstd stream
_ZSTD_SKIPPABLE_LOW: Final = 0x184D2A50

DEFAULT_GZIP_LEVEL: Final = 2
DEFAULT_ZSTD_LEVEL: Final = 2
#: zstd multi-threaded job size (bounds memory per worker; part of what fixes the output)
ZSTD_JOB_SIZE: Final = 2 << 20
#: zstd window (log2; 16 MiB) with long-distance matching, as ``zstd --long=24``: a layer
#: repeats content far apart (libraries, binaries, copies). Measured on two 400 MiB samples of
#: a Debian /usr (``make bench-codecs``; README, Performance): level 2 with it is 3-6 % smaller
#: than plain level 3, for the same CPU or up to a quarter less. Decoders accept windows up to
#: 128 MiB by default (libzstd, Go's klauspost/compress), so every reader of layers decodes it.
ZSTD_WINDOW_LOG: Final = 24
#: gzip block size: each block is deflated on its own (with the previous 32 KiB as dictionary);
#: part of what fixes the output, so changing it changes every gzip layer's digest
GZIP_BLOCK_SIZE: Final = 1 << 20
_DEFLATE_WINDOW: Final = 1 << 15
#: the gzip header we write: no name, mtime 0, no extra flags, OS 255 ("unknown", as ISA-L)
_GZIP_HEADER: Final = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"


class Reader(Protocol):
    """The subset of a binary file we read from."""

    def read(self, n: int = -1, /) -> bytes: ...


class Writer(Protocol):
    """The subset of a binary file we write to."""

    def write(self, data: bytes | bytearray | memoryview, /) -> int | None: ...


def sniff(head: bytes) -> Compression:
    """The compression of a stream that starts with ``head`` (give it at least 6 bytes)."""
    if head.startswith(GZIP_MAGIC):
        return Compression.GZIP
    if head.startswith(ZSTD_MAGIC):
        return Compression.ZSTD
    if len(head) >= 4 and int.from_bytes(head[:4], "little") & ~0xF == _ZSTD_SKIPPABLE_LOW:
        return Compression.ZSTD
    if head.startswith(XZ_MAGIC):
        return Compression.XZ
    if head.startswith(BZIP2_MAGIC) and len(head) >= 4 and head[3:4].isdigit():
        return Compression.BZIP2
    return Compression.NONE


class PeekReader:
    """Wrap a reader so that its first bytes can be looked at without consuming them."""

    def __init__(self, raw: Reader) -> None:
        self._raw = raw
        self._buf = b""

    def peek(self, n: int) -> bytes:
        """Up to ``n`` bytes from the current position, left unread."""
        while len(self._buf) < n:
            more = self._raw.read(n - len(self._buf))
            if not more:
                break
            self._buf += more
        return self._buf[:n]

    def read(self, n: int = -1, /) -> bytes:
        """Read like :meth:`io.RawIOBase.read`.

        The read that returns the peeked bytes also reads on for the rest of ``n``: a short
        first read would shift every later chunk of a CHUNK-sized copy loop off its source's
        boundaries, and each chunk would then be joined from two pieces (a copy of every byte).
        """
        if self._buf:
            if n < 0 or n > len(self._buf):
                data = self._buf + self._raw.read(-1 if n < 0 else n - len(self._buf))
                self._buf = b""
                return data
            data, self._buf = self._buf[:n], self._buf[n:]
            return data
        return self._raw.read(n)

    def readinto(self, b: bytearray | memoryview) -> int:
        """Fill ``b`` (at most one underlying read)."""
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)


class HashingReader:
    """Pass reads through, hashing and counting every byte handed out."""

    def __init__(self, raw: Reader, algorithm: str = CANONICAL) -> None:
        self._raw = raw
        self.algorithm = algorithm
        self._hasher: Hasher = new_hasher(algorithm)
        self.count = 0

    def read(self, n: int = -1, /) -> bytes:
        """Read and hash."""
        data = self._raw.read(n)
        if data:
            self._hasher.update(data)
            self.count += len(data)
        return data

    def readinto(self, b: bytearray | memoryview) -> int:
        """Read into ``b`` and hash."""
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)

    def drain(self) -> int:
        """Read (and hash) everything left; return how many bytes that was."""
        n = 0
        while chunk := self.read(CHUNK):
            n += len(chunk)
        return n

    def digest(self) -> Digest:
        """The digest of what was read so far."""
        return Digest.from_hasher(self.algorithm, self._hasher)


class TeeReader:
    """Pass reads through, handing every byte to ``sink`` and every count to ``advance``.

    The one-pass pipelines use it to copy the bytes they read into a blob writer, and to report
    progress, without a second read.
    """

    def __init__(
        self,
        raw: Reader,
        sink: Callable[[bytes], object] | None = None,
        advance: Callable[[int], None] | None = None,
    ) -> None:
        self._raw = raw
        self._sink = sink
        self._advance = advance

    def read(self, n: int = -1, /) -> bytes:
        """Read, then hand the bytes on."""
        data = self._raw.read(n)
        if data:
            if self._sink is not None:
                self._sink(data)
            if self._advance is not None:
                self._advance(len(data))
        return data

    def readinto(self, b: bytearray | memoryview) -> int:
        """Read into ``b``."""
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)

    def close(self) -> None:
        """Close the underlying reader when it can be closed."""
        close = getattr(self._raw, "close", None)
        if callable(close):
            close()


class LimitReader:
    """Stop with :class:`SizeLimitError` once more than ``limit`` bytes have been read."""

    def __init__(self, raw: Reader, limit: int, what: str) -> None:
        self._raw = raw
        self._left = limit
        self._limit = limit
        self._what = what

    def read(self, n: int = -1, /) -> bytes:
        """Read, counting against the limit."""
        ask = self._left + 1 if n < 0 else min(n, self._left + 1)
        data = self._raw.read(ask)
        self._left -= len(data)
        if self._left < 0:
            raise SizeLimitError(f"{self._what} is larger than the limit of {self._limit} bytes")
        return data


class PrefetchReader:
    """Read ``raw`` in a background thread, up to ``depth`` chunks ahead (bounded memory).

    Decompression and hashing release the GIL, so a consumer that parses and writes (unpack's
    tar reader) overlaps with them on another core. An exception in the producer is re-raised
    by :meth:`read`; :meth:`close` stops the producer.
    """

    def __init__(self, raw: Reader, *, chunk: int = CHUNK, depth: int = 4) -> None:
        import queue
        import threading

        self._raw = raw
        self._chunk = chunk
        self._q: queue.Queue[bytes | BaseException] = queue.Queue(maxsize=depth)
        self._buf = memoryview(b"")
        self._eof = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._produce, name="prefetch", daemon=True)
        self._thread.start()

    def _put(self, item: bytes | BaseException) -> bool:
        import queue

        while not self._stop.is_set():
            try:
                self._q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self) -> None:
        try:
            while not self._stop.is_set():
                data = self._raw.read(self._chunk)
                if not self._put(data) or not data:
                    return
        except BaseException as exc:  # handed to the consumer, re-raised there
            self._put(exc)

    def _take(self) -> bytes:
        """The producer's next chunk (empty at EOF); its exception, re-raised here."""
        item = self._q.get()
        if isinstance(item, BaseException):
            self._eof = True
            raise item
        if not item:
            self._eof = True
        return item

    def read(self, n: int = -1, /) -> bytes:
        """Read up to ``n`` bytes (all that is left when ``n`` < 0)."""
        if n < 0:
            parts = []
            while chunk := self.read(self._chunk):
                parts.append(chunk)
            return b"".join(parts)
        while not self._buf and not self._eof:
            item = self._take()
            if len(item) <= n:  # the usual case: a whole chunk, handed on without a copy
                return item
            self._buf = memoryview(item)
        out = bytes(self._buf[:n])
        self._buf = self._buf[n:]
        return out

    def readinto(self, b: bytearray | memoryview) -> int:
        """Fill ``b`` from what was read ahead (one copy; ISA-L's gzip reader calls this)."""
        while not self._buf and not self._eof:
            self._buf = memoryview(self._take())
        k = min(len(b), len(self._buf))
        b[:k] = self._buf[:k]
        self._buf = self._buf[k:]
        return k

    def close(self) -> None:
        """Stop the producer thread and wait for it."""
        self._stop.set()
        self._thread.join()

    def __enter__(self) -> PrefetchReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Guarded:
    """A decompressing reader whose third-party errors become CorruptStreamError."""

    def __init__(self, inner: Any, kind: Compression, what: str) -> None:
        self._inner = inner
        self._kind = kind
        self._what = what

    def _fail(self, exc: BaseException) -> CorruptStreamError:
        detail = str(exc) or type(exc).__name__
        if isinstance(exc, EOFError):
            detail = "unexpected end of stream (truncated?)"
        return CorruptStreamError(f"{self._what}: decompress {self._kind.value}: {detail}")

    def read(self, n: int = -1, /) -> bytes:
        """Read decompressed bytes."""
        try:
            data: bytes = self._inner.read(n)
        except LayoutToolError:
            raise
        except (OSError, EOFError, ValueError, zlib.error, lzma.LZMAError) as exc:
            raise self._fail(exc) from exc
        except Exception as exc:  # zstandard.ZstdError and isal's error types
            # isal raises igzip_lib.IsalError (module "igzip_lib", not "isal...")
            if type(exc).__module__.startswith(("zstandard", "isal", "igzip_lib")):
                raise self._fail(exc) from exc
            raise
        return data

    def readinto(self, b: bytearray | memoryview) -> int:
        """Read decompressed bytes into ``b``."""
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)

    def close(self) -> None:
        """Release the decompressor (never the underlying stream)."""
        try:
            self._inner.close()
        except Exception:
            pass


class _ReadInto:
    """Give a read()-only source the readinto() that ISA-L's gzip reader calls."""

    def __init__(self, raw: Reader) -> None:
        self._raw = raw

    def read(self, n: int = -1, /) -> bytes:
        return self._raw.read(n)

    def readinto(self, b: bytearray | memoryview) -> int:
        data = self._raw.read(len(b))
        b[: len(data)] = data
        return len(data)


_ZSTD_MAGIC_INT: Final = int.from_bytes(ZSTD_MAGIC, "little")


class _ZstdFrames:
    """Pass reads through while following the frame layout (headers and block sizes only).

    zstandard's ``stream_reader`` reports a stream cut inside a frame as a clean EOF (it
    returns what it decoded and no error), so a truncated layer would pass for a shorter one.
    Following the frame boundaries of the compressed bytes costs a few operations per block
    and tells whether the stream ended between frames.
    """

    def __init__(self, src: Reader) -> None:
        self._src = src
        self.frames = 0
        self._state = "magic"
        self._need = 4  # header bytes to collect in the current state
        self._hdr = b""
        self._skip = 0  # payload bytes to pass over
        self._checksum = False
        self._last = False

    def read(self, n: int = -1, /) -> bytes:
        """Read from the source, following the frames of what passes."""
        data = self._src.read(n)
        self._feed(data)
        return data

    def _collect(self, state: str, n: int) -> None:
        self._state, self._need, self._hdr = state, n, b""

    def _skip_then(self, state: str, n: int) -> None:
        self._state, self._skip, self._hdr = state, n, b""
        if n == 0:
            self._skipped()

    def _header(self, h: bytes) -> None:
        v = int.from_bytes(h, "little")
        if self._state == "magic":
            if v == _ZSTD_MAGIC_INT:
                self._collect("fhd", 1)
            elif v & ~0xF == _ZSTD_SKIPPABLE_LOW:
                self._collect("skipsize", 4)
            else:
                raise ValueError(f"bytes {h.hex()} do not start a zstd frame")
        elif self._state == "fhd":
            fcs_flag, single, dict_flag = v >> 6, (v >> 5) & 1, v & 3
            self._checksum = bool((v >> 2) & 1)
            rest = (0 if single else 1) + (0, 1, 2, 4)[dict_flag]
            rest += (1 if single else 0, 2, 4, 8)[fcs_flag]
            self._collect("fhrest" if rest else "block", rest or 3)
        elif self._state == "fhrest":
            self._collect("block", 3)
        elif self._state == "block":
            self._last = bool(v & 1)
            btype, bsize = (v >> 1) & 3, v >> 3
            if btype == 3:
                raise ValueError("reserved zstd block type")
            self._skip_then("blockdata", 1 if btype == 1 else bsize)
        else:  # skipsize
            self._skip_then("skipdata", v)

    def _skipped(self) -> None:
        if self._state == "blockdata" and not self._last:
            self._collect("block", 3)
        elif self._state == "blockdata" and self._checksum:
            self._skip_then("checksum", 4)
        else:  # the last block, a checksum or a skippable frame's payload: the frame is done
            self.frames += 1
            self._collect("magic", 4)

    def _feed(self, data: bytes) -> None:
        i, n = 0, len(data)
        while i < n:
            if self._skip:
                take = min(self._skip, n - i)
                self._skip -= take
                i += take
                if not self._skip:
                    self._skipped()
                continue
            take = min(self._need - len(self._hdr), n - i)
            self._hdr += data[i : i + take]
            i += take
            if len(self._hdr) == self._need:
                self._header(self._hdr)

    @property
    def complete(self) -> bool:
        """True when the bytes so far end exactly after a frame."""
        return self.frames > 0 and self._state == "magic" and not self._hdr


class _ZstdReader:
    """zstd decompression across all frames, refusing a stream that ends inside a frame."""

    def __init__(self, src: Reader) -> None:
        import zstandard

        self._frames = _ZstdFrames(src)
        self._inner = zstandard.ZstdDecompressor().stream_reader(
            self._frames,  # type: ignore[arg-type]
            read_size=CHUNK,
            read_across_frames=True,
            closefd=False,
        )

    def read(self, n: int = -1, /) -> bytes:
        """Decompressed bytes; at the end, check that the last frame was complete."""
        data: bytes = self._inner.read(n)
        if not data and n != 0 and not self._frames.complete:
            # _Guarded turns EOFError into "unexpected end of stream (truncated?)"
            raise EOFError
        return data

    def close(self) -> None:
        """Release the decompressor (never the source)."""
        self._inner.close()  # type: ignore[no-untyped-call]  # zstandard's stub lacks types


def open_decompress(src: Reader, compression: Compression, *, what: str = "stream") -> _Guarded:
    """A reader of the decompressed bytes of ``src``. Closing it never closes ``src``.

    gzip and zstd streams may hold several members/frames; all of them are read.
    """
    inner: Any
    if compression is Compression.NONE:
        inner = src
    elif compression is Compression.GZIP:
        # ISA-L reads its source with readinto(), which our Reader protocol does not promise
        fileobj = src if hasattr(src, "readinto") else _ReadInto(src)
        inner = igzip.IGzipFile(fileobj=fileobj, mode="rb")  # type: ignore[no-untyped-call]
    elif compression is Compression.ZSTD:
        inner = _ZstdReader(src)
    elif compression is Compression.XZ:
        inner = lzma.LZMAFile(src)  # type: ignore[arg-type]  # noqa: SIM115
    else:
        inner = bz2.BZ2File(src)  # type: ignore[call-overload]
    return _Guarded(inner, compression, what)


#: a piece of an encoder's output: bytes, or a view of the input (stored blocks)
Part = bytes | memoryview


class Encoder(Protocol):
    """A streaming compressor: feed bytes, then flush once."""

    def compress(self, data: bytes | bytearray | memoryview, /) -> bytes: ...

    def compress_parts(self, data: bytes, /) -> list[Part]:
        """Like :meth:`compress`, as the pieces it would join (a writer takes them as they
        are: one copy less of every output byte)."""
        ...

    def flush(self) -> bytes: ...


class _Identity:
    def compress(self, data: bytes | bytearray | memoryview, /) -> bytes:
        return bytes(data)

    def compress_parts(self, data: bytes, /) -> list[Part]:
        return [data]

    def flush(self) -> bytes:
        return b""


class _ZstdEncoder:
    def __init__(self, level: int, threads: int) -> None:
        import zstandard

        # threads >= 1 selects zstd's multi-threaded mode, whose output is the same whatever
        # the number of workers (long-distance matching runs serially ahead of the workers):
        # the digest of a layer does not depend on the machine. A fixed 2 MiB job size bounds
        # memory (zstd's default job of several windows took ~40 MiB per worker, so a
        # parallel import passed 200 MiB) for ~1.5 % larger output. The window is never
        # made smaller than the level's own (levels 20-22 use 32-128 MiB).
        base = zstandard.ZstdCompressionParameters.from_level(level)
        params = zstandard.ZstdCompressionParameters.from_level(
            level,
            threads=max(1, threads),
            write_checksum=0,
            job_size=ZSTD_JOB_SIZE,
            enable_ldm=1,
            window_log=max(base.window_log, ZSTD_WINDOW_LOG),
        )
        self._obj = zstandard.ZstdCompressor(compression_params=params).compressobj()

    def compress(self, data: bytes | bytearray | memoryview, /) -> bytes:
        return self._obj.compress(data)

    def compress_parts(self, data: bytes, /) -> list[Part]:
        return [self._obj.compress(data)]

    def flush(self) -> bytes:
        return self._obj.flush()


_pool_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None


def available_cpus() -> int:
    """CPUs this process may run on (a container's CPU set, not the host's count): what the
    operations share among the layers they encode at once."""
    return _cpus()


def _cpus() -> int:
    """CPUs this process may run on (a container's CPU set, not the host's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


#: layers encoded at once by default when writing zstd. Each zstd encoder holds a 16 MiB window,
#: and zstd's own workers already spread one layer over every CPU (its output does not depend
#: on how many), so more layers at once only add memory and split the CPUs: with 2 layers at
#: once, each encoder got half of them, and the last large layer of an image then ran alone on
#: one worker (a third of the real Debian image's import, at 1.0-1.4 CPUs busy of 2). One
#: layer at a time with every CPU: the same or less time, peak RSS 85 MiB instead of 115.
ZSTD_PARALLEL_LAYERS: Final = 1


def default_layer_jobs(target: Compression | None) -> int:
    """How many layers to process at once when the user did not say: one per CPU, but at
    most :data:`ZSTD_PARALLEL_LAYERS` when writing zstd (memory, see there)."""
    cpus = _cpus()
    return min(cpus, ZSTD_PARALLEL_LAYERS) if target is Compression.ZSTD else cpus


def _block_pool() -> ThreadPoolExecutor:
    """One pool for every gzip encoder of the process, a thread per CPU: layers compressed in
    parallel share it, so the process never runs more deflate threads than it has CPUs."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(_cpus(), thread_name_prefix="layouttool-gzip")
        return _pool


#: a block is stored rather than deflated when none of these samples of it (evenly spread, so
#: a compressible run of 64 KiB or more is always sampled) shrinks by 3 % under ISA-L's level 1
#: (whose dynamic Huffman codes estimate even a 512-byte sample within a few %: 6-bit data
#: 0.80, hex 0.54, random 1.01): random or already compressed data, on which ISA-L spends as
#: long as on text to win nothing (level 2 gives 1.0004x the input). On the real Debian image
#: 225 of 597 blocks (its 200 MiB of random bytes, compressed files) are stored: 13 % less CPU
#: for the import, output 0.015 % larger. Not seen: repeats of incompressible content within
#: 32 KiB (each sample alone does not compress). Part of the format we write, like the block
#: size.
_STORE_SAMPLES: Final = 16
_STORE_SAMPLE_SIZE: Final = 512
_STORE_MIN_BLOCK: Final = 64 << 10
_STORED_MAX: Final = 0xFFFF


def _incompressible(data: bytes) -> bool:
    """True when no sample of ``data`` compresses (see :data:`_STORE_SAMPLES`)."""
    n = len(data)
    if n < _STORE_MIN_BLOCK:
        return False
    for k in range(_STORE_SAMPLES):
        off = n * k // _STORE_SAMPLES
        sample = data[off : off + _STORE_SAMPLE_SIZE]
        if len(isal_zlib.compress(sample, 1, -15)) < len(sample) * 0.97:
            return False
    return True


def _stored_blocks(data: bytes) -> list[Part]:
    """``data`` as stored (uncompressed) deflate blocks, starting and ending byte-aligned: the
    block headers and views of ``data`` between them."""
    view = memoryview(data)
    out: list[Part] = []
    for i in range(0, len(data), _STORED_MAX):
        piece = view[i : i + _STORED_MAX]
        n = len(piece)
        # BFINAL=0, BTYPE=00, padded to the byte; then LEN and its ones' complement
        out.append(b"\x00" + struct.pack("<HH", n, n ^ 0xFFFF))
        out.append(piece)
    return out


def _deflate_block(level: int, data: bytes, zdict: bytes) -> tuple[list[Part], int]:
    """Raw deflate of one block, ended by a sync flush (so blocks concatenate), and its CRC.

    ISA-L (levels 0-3) and zlib (4-9) both release the GIL while they work. A block that does
    not compress is stored as it is (:func:`_incompressible`); it ends byte-aligned, as a sync
    flush does, and the next block's dictionary is its last 32 KiB either way.
    """
    if _incompressible(data):
        return _stored_blocks(data), isal_zlib.crc32(data)
    lib: Any = isal_zlib if level <= isal_zlib.ISAL_BEST_COMPRESSION else zlib
    if zdict:
        c = lib.compressobj(level, lib.DEFLATED, -15, 9, lib.Z_DEFAULT_STRATEGY, zdict)
    else:
        c = lib.compressobj(level, lib.DEFLATED, -15)
    return [c.compress(data), c.flush(lib.Z_SYNC_FLUSH)], isal_zlib.crc32(data)


class _BlockGzipEncoder:
    """A gzip member compressed in :data:`GZIP_BLOCK_SIZE` blocks on the shared thread pool.

    Input is cut into fixed blocks whatever the sizes of the ``compress`` calls; each block is
    deflated with the previous block's last 32 KiB as its dictionary (pigz's scheme: the output
    is within 0.01 % of one continuous stream here) and ended with a sync flush, so the blocks
    join into one deflate stream; the CRC-32 is combined in order. At most ``depth`` blocks are
    in flight (bounded memory: about 2 x depth MiB); results are returned in order.
    """

    def __init__(self, level: int, threads: int) -> None:
        self._level = level
        self._pool = _block_pool()
        # this encoder's share of the CPUs, twice over: the blocks of all the layers encoded
        # at once (each given CPUs / jobs) keep the pool busy, and memory stays about
        # 2 x CPUs MiB of blocks in flight whatever the number of jobs
        self._depth = 2 * threads
        self._pending: collections.deque[tuple[Future[tuple[list[Part], int]], int]] = (
            collections.deque()
        )
        self._buf = bytearray()
        self._tail = b""  # the last 32 KiB of the previous block: the next one's dictionary
        self._crc = 0
        self._size = 0
        self._started = False

    def _submit(self, block: bytes) -> None:
        fut = self._pool.submit(_deflate_block, self._level, block, self._tail)
        self._tail = block[-_DEFLATE_WINDOW:]
        self._pending.append((fut, len(block)))

    def _collect(self, out: list[Part]) -> None:
        fut, n = self._pending.popleft()
        parts, crc = fut.result()
        self._crc = isal_zlib.crc32_combine(self._crc, crc, n)
        self._size += n
        out.extend(parts)

    def _drain(self, out: list[Part], *, everything: bool) -> None:
        while self._pending and (
            everything or len(self._pending) > self._depth or self._pending[0][0].done()
        ):
            self._collect(out)

    def compress(self, data: bytes | bytearray | memoryview, /) -> bytes:
        return b"".join(self.compress_parts(data))

    def compress_parts(self, data: bytes | bytearray | memoryview, /) -> list[Part]:
        out: list[Part] = []
        if not self._started:
            self._started = True
            out.append(_GZIP_HEADER)
        if not self._buf and len(data) == GZIP_BLOCK_SIZE:
            self._submit(bytes(data))  # the usual case: a whole block, no buffering
        else:
            self._buf += data
            while len(self._buf) >= GZIP_BLOCK_SIZE:
                self._submit(bytes(self._buf[:GZIP_BLOCK_SIZE]))
                del self._buf[:GZIP_BLOCK_SIZE]
                # one large call must not queue all of its blocks at once (memory)
                self._drain(out, everything=False)
        self._drain(out, everything=False)
        return out

    def flush(self) -> bytes:
        out: list[Part] = [] if self._started else [_GZIP_HEADER]
        self._started = True
        if self._buf:
            self._submit(bytes(self._buf))
            self._buf.clear()
        self._drain(out, everything=True)
        out.append(b"\x03\x00")  # an empty final block: ends the deflate stream
        out.append(struct.pack("<II", self._crc, self._size & 0xFFFFFFFF))
        return b"".join(out)


def new_encoder(
    compression: Compression, level: int | None = None, threads: int | None = None
) -> Encoder:
    """A streaming compressor for a layer ``compression`` (NONE, GZIP or ZSTD).

    gzip levels 0-3 use ISA-L; 4-9 use zlib; zstd levels are zstd's (1-22). ``threads`` is this
    encoder's share of the CPUs (default: all of them): zstd's workers, and how many gzip
    blocks it keeps in flight on the shared pool. The output does not depend on it.
    """
    share = _cpus() if threads is None else max(1, threads)
    if compression is Compression.NONE:
        return _Identity()
    if compression is Compression.GZIP:
        lvl = DEFAULT_GZIP_LEVEL if level is None else level
        if not 0 <= lvl <= 9:
            raise CorruptStreamError(f"gzip level {lvl} out of range 0-9")
        return _BlockGzipEncoder(lvl, share)
    if compression is Compression.ZSTD:
        lvl = DEFAULT_ZSTD_LEVEL if level is None else level
        if not 1 <= lvl <= 22:
            raise CorruptStreamError(f"zstd level {lvl} out of range 1-22")
        return _ZstdEncoder(lvl, share)
    raise CorruptStreamError(f"cannot write {compression.value} layers")


def pump(
    src: Reader,
    sink: Callable[[memoryview], object],
    *,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Copy ``src`` into ``sink`` in :data:`CHUNK` pieces; return the number of bytes."""
    total = 0
    while True:
        data = src.read(CHUNK)
        if not data:
            return total
        sink(memoryview(data))
        total += len(data)
        if progress is not None:
            progress(len(data))


def open_sniffed(src: Reader, *, what: str = "stream") -> tuple[Compression, _Guarded]:
    """Detect the compression of ``src`` by its magic bytes and return a decompressing reader."""
    peek = PeekReader(src)
    kind = sniff(peek.peek(8))
    return kind, open_decompress(peek, kind, what=what)


__all__ = [
    "CHUNK",
    "Compression",
    "Encoder",
    "HashingReader",
    "LimitReader",
    "Part",
    "PeekReader",
    "PrefetchReader",
    "Reader",
    "TeeReader",
    "Writer",
    "new_encoder",
    "open_decompress",
    "open_sniffed",
    "pump",
    "sniff",
]
