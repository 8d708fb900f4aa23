"""Compression detection and streaming codecs, hashing and counting readers.

Compression is detected by magic bytes, never by a file name or a media type alone. Every codec
streams in bounded memory, and every error a third-party codec raises is translated into
:class:`~layouttool.errors.CorruptStreamError` here, at the one module that calls them.

gzip goes through ISA-L (``isal``), which is 5-10x faster than zlib at the levels we use;
levels 4-9 fall back to zlib for users who want the smallest output. Output is deterministic:
the gzip header carries no name and mtime 0, and zstd always runs in its multi-threaded mode
(whose output does not depend on the number of workers).
"""

from __future__ import annotations

import bz2
import enum
import lzma
import zlib
from collections.abc import Callable
from typing import Any, Final, Protocol

from isal import igzip, isal_zlib

from layouttool.digest import CANONICAL, Digest, Hasher, new_hasher
from layouttool.errors import CorruptStreamError, LayoutToolError, SizeLimitError

#: chunk size for every copy loop
CHUNK: Final = 1 << 20

GZIP_MAGIC: Final = b"\x1f\x8b"
ZSTD_MAGIC: Final = b"\x28\xb5\x2f\xfd"
XZ_MAGIC: Final = b"\xfd7zXZ\x00"
BZIP2_MAGIC: Final = b"BZh"
#: zstd skippable frames (0x184D2A50-0x184D2A5F, little endian) also start a zstd stream
_ZSTD_SKIPPABLE_LOW: Final = 0x184D2A50

DEFAULT_GZIP_LEVEL: Final = 2
DEFAULT_ZSTD_LEVEL: Final = 3


class Compression(enum.Enum):
    """A compression format. Layers use NONE, GZIP and ZSTD; whole archives may also be XZ/BZIP2."""

    NONE = "none"
    GZIP = "gzip"
    ZSTD = "zstd"
    XZ = "xz"
    BZIP2 = "bzip2"

    @classmethod
    def parse(cls, value: str) -> Compression:
        """``"gzip"`` -> GZIP; also accepts ``"uncompressed"`` for NONE."""
        v = value.lower()
        if v in ("uncompressed", "tar"):
            v = "none"
        try:
            return cls(v)
        except ValueError:
            raise CorruptStreamError(f"unknown compression {value!r}") from None


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
        """Read like :meth:`io.RawIOBase.read`."""
        if self._buf:
            if n < 0:
                data = self._buf + self._raw.read()
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


def open_decompress(src: Reader, compression: Compression, *, what: str = "stream") -> _Guarded:
    """A reader of the decompressed bytes of ``src``. Closing it never closes ``src``.

    gzip and zstd streams may hold several members/frames; all of them are read.
    """
    inner: Any
    if compression is Compression.NONE:
        inner = src
    elif compression is Compression.GZIP:
        inner = igzip.IGzipFile(fileobj=src, mode="rb")  # type: ignore[no-untyped-call]
    elif compression is Compression.ZSTD:
        import zstandard

        inner = zstandard.ZstdDecompressor().stream_reader(
            src,  # type: ignore[arg-type]
            read_size=CHUNK,
            read_across_frames=True,
            closefd=False,
        )
    elif compression is Compression.XZ:
        inner = lzma.LZMAFile(src)  # type: ignore[arg-type]  # noqa: SIM115
    else:
        inner = bz2.BZ2File(src)  # type: ignore[call-overload]
    return _Guarded(inner, compression, what)


class Encoder(Protocol):
    """A streaming compressor: feed bytes, then flush once."""

    def compress(self, data: bytes | bytearray | memoryview, /) -> bytes: ...

    def flush(self) -> bytes: ...


class _Identity:
    def compress(self, data: bytes | bytearray | memoryview, /) -> bytes:
        return bytes(data)

    def flush(self) -> bytes:
        return b""


class _ZstdEncoder:
    def __init__(self, level: int, threads: int) -> None:
        import zstandard

        # threads >= 1 selects zstd's multi-threaded mode, whose output is the same whatever
        # the number of workers: the digest of a layer does not depend on the machine.
        params = zstandard.ZstdCompressionParameters.from_level(
            level, threads=max(1, threads), write_checksum=0
        )
        self._obj = zstandard.ZstdCompressor(compression_params=params).compressobj()

    def compress(self, data: bytes | bytearray | memoryview, /) -> bytes:
        return self._obj.compress(data)

    def flush(self) -> bytes:
        return self._obj.flush()


def new_encoder(compression: Compression, level: int | None = None, threads: int = 1) -> Encoder:
    """A streaming compressor for a layer ``compression`` (NONE, GZIP or ZSTD).

    gzip levels 0-3 use ISA-L; 4-9 use zlib. zstd levels are zstd's (1-19).
    """
    if compression is Compression.NONE:
        return _Identity()
    if compression is Compression.GZIP:
        lvl = DEFAULT_GZIP_LEVEL if level is None else level
        if not 0 <= lvl <= 9:
            raise CorruptStreamError(f"gzip level {lvl} out of range 0-9")
        if lvl <= isal_zlib.ISAL_BEST_COMPRESSION:
            enc: Encoder = isal_zlib.compressobj(lvl, isal_zlib.DEFLATED, 31)
        else:
            # zlib's header says OS=3; that only matters for reproducibility across levels
            enc = zlib.compressobj(lvl, zlib.DEFLATED, 31)
        return enc
    if compression is Compression.ZSTD:
        lvl = DEFAULT_ZSTD_LEVEL if level is None else level
        if not 1 <= lvl <= 22:
            raise CorruptStreamError(f"zstd level {lvl} out of range 1-22")
        return _ZstdEncoder(lvl, threads)
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
    "PeekReader",
    "Reader",
    "Writer",
    "new_encoder",
    "open_decompress",
    "open_sniffed",
    "pump",
    "sniff",
]
