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
    "corrupt",
    "iter_members",
    "open_stream",
    "time_ns",
]

#: copy buffer size for file payloads
CHUNK_SIZE = 1 << 20
#: read-ahead of tarfile's stream reader: big enough to cut calls into the caller's (hashing,
#: decompressing) stream, small enough that the copy tarfile makes of its buffer on every
#: 512-byte header read stays cheap for layers of many small files
TAR_BUFSIZE = 64 * 1024
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
    """The part of ``TarFile.fileobj`` (tarfile's ``_Stream``) the member loop uses."""

    def read(self, size: int) -> bytes: ...
    def tell(self) -> int: ...


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
        return tarfile.open(
            fileobj=stream, mode="r|", bufsize=TAR_BUFSIZE, tarinfo=GuardedTarInfo
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
    data raises :class:`~layouttool.errors.CorruptStreamError`; a bad header raises
    ``tarfile.HeaderError`` (the caller names the member it follows).
    """
    # tarfile.open('r|') already read the first header through TarFile.next(), which
    # raises on a bad header at offset 0; every later header is read by us.
    first = tar.next()
    if first is None:
        return
    yield first
    prev = first
    fobj = typing.cast(Reader, tar.fileobj)
    while True:
        # Skip what the previous member left unread, refusing to spin at EOF (tarfile's
        # own stream seek would loop over empty reads for a huge bogus size).
        remaining = tar.offset - fobj.tell()
        if remaining < 0:
            raise corrupt(f"{prev.name!r}: header offsets go backwards")
        while remaining:
            got = len(fobj.read(min(remaining, CHUNK_SIZE)))
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
        except tarfile.HeaderError as exc:
            raise corrupt(f"bad header after {prev.name!r}", exc) from exc
        prev = member
        yield member
