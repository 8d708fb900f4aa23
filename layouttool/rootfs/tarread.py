"""Read one layer tar stream forward, once, refusing what would make ``tarfile`` misbehave.

Tar parsing is ``tarfile``'s (GNU and PAX long names, GNU and PAX sparse files), with our own
member loop so that a corrupt header in the middle of the stream is an error instead of a
silent end of archive, skipping data can never spin at EOF, and ``TarFile.members`` does not
grow with the layer.
"""

from __future__ import annotations

import tarfile
import typing
from collections.abc import Callable, Iterator
from decimal import Decimal, InvalidOperation
from typing import Protocol

from layouttool import errors

__all__ = [
    "CHUNK_SIZE",
    "GuardedTarInfo",
    "Reader",
    "TarInput",
    "ViewReader",
    "corrupt",
    "iter_members",
    "open_stream",
    "time_ns",
]

#: copy buffer size for file payloads
CHUNK_SIZE = 1 << 20
#: longest GNU long-name or PAX header we accept; tarfile reads them into memory whole
MAX_META_SIZE = 32 << 20

_META_TYPES = frozenset(
    {tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK, tarfile.XHDTYPE, tarfile.XGLTYPE,
     tarfile.SOLARIS_XHDTYPE}
)

# tarfile's header-error classes exist since 3.2 but typeshed does not declare them
InvalidHeaderError: type[tarfile.HeaderError] = tarfile.InvalidHeaderError  # type: ignore[attr-defined]
EOFHeaderError: type[tarfile.HeaderError] = tarfile.EOFHeaderError  # type: ignore[attr-defined]
EmptyHeaderError: type[tarfile.HeaderError] = tarfile.EmptyHeaderError  # type: ignore[attr-defined]


class Reader(Protocol):
    """The part of ``TarFile.fileobj`` the member readers use."""

    def read(self, size: int) -> bytes: ...
    def tell(self) -> int: ...


class ViewReader(Reader, Protocol):
    """A :class:`Reader` that also hands payload out as views (:class:`TarInput`)."""

    def read_view(self, size: int) -> memoryview: ...


class TarInput:
    """A layer's tar stream as ``tarfile`` reads a file: forward only, without copies.

    tarfile's own stream reader (mode ``'r|'``) kept a read-ahead buffer and, on every read,
    joined it with the next piece and sliced both the part it returned and the rest: each
    512-byte header copied the whole rest of the buffer, and each payload byte was copied twice
    (8 % of an unpack's CPU in memmove on the real Debian image, plus the interpreter's loop).
    Here the source's chunks are kept as they come; :meth:`read` copies only what it returns
    (headers, PAX records), and :meth:`read_view` hands payload out as views of the chunks, for
    ``os.pwrite`` to take without a copy. :meth:`seek` only moves forward (tarfile seeks to
    where it already is); anything else is a corrupt stream.
    """

    def __init__(self, raw: typing.BinaryIO, chunk: int = CHUNK_SIZE) -> None:
        self._raw = raw
        self._chunk = chunk
        self._view = memoryview(b"")
        self._pos = 0
        self._eof = False

    def read_view(self, size: int) -> memoryview:
        """Up to ``size`` bytes (fewer at the end of a source chunk), as a view; empty at EOF."""
        if not self._view:
            if self._eof or size <= 0:
                return memoryview(b"")
            data = self._raw.read(self._chunk)
            if not data:
                self._eof = True
                return memoryview(b"")
            self._view = memoryview(data)
        out = self._view[:size]
        self._view = self._view[len(out) :]
        self._pos += len(out)
        return out

    def read(self, size: int = -1) -> bytes:
        """Exactly ``size`` bytes (all that is left when ``size`` < 0), fewer only at EOF."""
        left = size if size >= 0 else 1 << 62
        parts = []
        while left > 0 and (view := self.read_view(min(left, self._chunk))):
            parts.append(view)
            left -= len(view)
        return b"".join(parts)

    def tell(self) -> int:
        """Bytes consumed so far."""
        return self._pos

    def seek(self, pos: int, whence: int = 0) -> int:
        """Move forward to ``pos`` (skipping data); a backwards seek is a corrupt stream."""
        if whence != 0 or pos < self._pos:
            raise corrupt(f"seek to offset {pos} from {self._pos}: the stream only goes forward")
        while self._pos < pos and self.read_view(pos - self._pos):
            pass
        return self._pos


class GuardedTarInfo(tarfile.TarInfo):
    """TarInfo that refuses headers tarfile would otherwise act on dangerously.

    ``frombuf`` is tarfile's documented per-header hook; refusing here turns a negative size (a
    backwards seek, CVE-2025-8194) or a multi-gigabyte PAX/long-name header (read whole into
    memory) into a header error before tarfile acts on it.
    """

    @classmethod
    def frombuf(cls, buf: bytes | bytearray, encoding: str, errors: str) -> GuardedTarInfo:
        obj = super().frombuf(buf, encoding, errors)
        if obj.size < 0:
            raise InvalidHeaderError("negative size field")
        if obj.type in _META_TYPES and obj.size > MAX_META_SIZE:
            raise InvalidHeaderError(f"extended header of {obj.size} bytes is too large")
        return obj


def corrupt(what: str, exc: BaseException | None = None) -> errors.CorruptStreamError:
    """The error for unreadable tar data: ``layer tar: <what>[: <exc>]``."""
    detail = f": {exc}" if exc is not None and str(exc) else ""
    return errors.CorruptStreamError(f"layer tar: {what}{detail}")


def time_ns(member: tarfile.TarInfo) -> int:
    """The member's mtime in ns, exact for PAX fractional times (float would round them)."""
    raw = member.pax_headers.get("mtime")
    if raw is not None:
        try:
            return int(Decimal(raw) * 1_000_000_000)
        except (InvalidOperation, ValueError, OverflowError):
            pass
    return int(member.mtime * 1_000_000_000)


def open_stream(stream: typing.BinaryIO) -> tarfile.TarFile:
    """Open a non-seekable tar stream (mode ``'r|'``) with :class:`GuardedTarInfo` headers.

    Raises :class:`~layouttool.errors.CorruptStreamError` when the first header is unreadable.
    """
    try:
        # tarfile's file mode over a forward-only reader: its stream mode copies (see TarInput)
        return tarfile.TarFile(
            fileobj=TarInput(stream), mode="r", tarinfo=GuardedTarInfo  # type: ignore[arg-type]
        )
    except (tarfile.TarError, EOFError, ValueError, RecursionError) as exc:
        raise corrupt("cannot read the first header", exc) from exc


def iter_members(
    tar: tarfile.TarFile, warn: Callable[[str], None]
) -> Iterator[tarfile.TarInfo]:
    """Yield the members of a tar opened by :func:`open_stream`, one header at a time.

    The caller may read the current member's data from ``tar.fileobj`` before asking for the
    next one; what it leaves unread is skipped. A stream that ends without its end-of-archive
    marker (but with the last member's data complete) ends the loop with a ``warn``; truncated
    data and a header tarfile cannot read raise :class:`~layouttool.errors.CorruptStreamError`
    (naming the member it follows).
    """
    # tarfile.open('r|') already read the first header through TarFile.next(), which
    # raises on a bad header at offset 0; every later header is read by us.
    first = tar.next()
    if first is None:
        return
    yield first
    prev = first
    fobj = typing.cast(ViewReader, tar.fileobj)
    while True:
        # Skip what the previous member left unread, refusing to spin at EOF (tarfile's
        # own stream seek would loop over empty reads for a huge bogus size).
        remaining = tar.offset - fobj.tell()
        if remaining < 0:
            raise corrupt(f"{prev.name!r}: header offsets go backwards")
        while remaining:
            got = len(fobj.read_view(remaining))
            if not got:
                if fobj.tell() >= prev.offset_data + prev.size:
                    # The last member's data is complete and only its block padding and
                    # the end marker are missing: umoci 0.4.7's `insert` writes such
                    # layers and Go's archive/tar reads them. The diff_id check still
                    # covers every byte.
                    warn("layer tar: last member not padded, no end-of-archive marker")
                    return
                raise corrupt(f"{prev.name!r}: unexpected end of data")
            remaining -= got
        try:
            member = tar.tarinfo.fromtarfile(tar)
        except EOFHeaderError:
            return
        except EmptyHeaderError:
            # The stream ended on a block boundary without the end-of-archive marker.
            # Go's archive/tar (and so umoci) accepts this; the diff_id check still
            # catches a truncated layer.
            warn("layer tar: no end-of-archive marker")
            return
        except (tarfile.TarError, EOFError, ValueError, OverflowError, RecursionError) as exc:
            # a HeaderError, or what a malformed PAX or GNU record makes tarfile raise
            raise corrupt(f"bad header after {prev.name!r}", exc) from exc
        prev = member
        yield member
