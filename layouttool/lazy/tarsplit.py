"""tar-split metadata (vbatts/tar-split ``tar/storage``): how to rebuild a tar byte for byte.

A tar-split stream is one JSON object per line, in tar order:

* ``{"type":2,"payload":<base64>,"position":N}``: raw bytes of the tar (a header with its
  extension headers and the previous entry's padding; at the end the end-of-archive blocks
  and whatever follows them, in pieces of at most 1 MiB);
* ``{"type":1,"name":<name>,"size":S,"payload":<base64 CRC-64>,"position":N}``: the payload
  of the entry just described (``name_raw`` holds a name that is not UTF-8; ``size`` and the
  checksum are left out for an empty one). The checksum is CRC-64 with the ISO polynomial as
  Go's ``hash/crc64`` computes it (big-endian bytes).

containers/storage stores it zstd-compressed in a skippable frame of a zstd:chunked layer, so
that the exact layer (same diff_id) can be rebuilt from the files of a partial pull.
"""

from __future__ import annotations

import io
import json
import posixpath
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from layouttool.digest import Digest, new_hasher
from layouttool.errors import CorruptStreamError, UnsupportedError
from layouttool.lazy.toc import b64

if TYPE_CHECKING:
    from layouttool.codec import Reader

SEGMENT: Final = 2
FILE: Final = 1
#: trailing bytes are recorded in segments of at most this size (as tar-split does)
MAX_SEGMENT: Final = 1 << 20


def crc64() -> Any:
    """A CRC-64/GO-ISO calculator (``calc(data, value)``), as tar-split's ``crc64.ISO``."""
    import anycrc  # type: ignore[import-untyped]  # ships no type information

    return anycrc.Model("CRC64-GO-ISO")


def clean(name: str) -> str:
    """Go's ``filepath.Clean`` (tar-split refuses two entries whose cleaned names are equal)."""
    out = posixpath.normpath(name) if name else "."
    return out[1:] if out.startswith("//") else out


@dataclass(frozen=True, slots=True)
class PackedTarSplit:
    """A finished tar-split stream."""

    compressed: bytes
    #: sha256 of the compressed bytes (what a zstd:chunked TOC names)
    digest: Digest
    uncompressed_size: int


#: tar-split lines are compressed in batches of about this many bytes
_HOLD: Final = 64 << 10


class TarSplitPacker:
    """Write tar-split entries into a zstd stream held in memory (it grows with the entries)."""

    def __init__(self, level: int) -> None:
        import zstandard

        self._buf = io.BytesIO()
        self._z = zstandard.ZstdCompressor(level=level).compressobj()
        self._pos = 0
        self._size = 0
        self._seen: set[str] = set()
        #: lines not yet handed to the compressor: one call per line cost more than the JSON
        self._lines: list[bytes] = []
        self._held = 0

    def _line(self, doc: dict[str, Any]) -> None:
        doc["position"] = self._pos
        self._pos += 1
        line = json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
        self._size += len(line)
        self._lines.append(line)
        self._held += len(line)
        if self._held >= _HOLD:
            self._compress()

    def _compress(self) -> None:
        self._buf.write(self._z.compress(b"".join(self._lines)))
        self._lines, self._held = [], 0

    def segment(self, data: bytes) -> None:
        """Raw tar bytes (nothing is recorded for none)."""
        if data:
            self._line({"type": SEGMENT, "payload": b64(data)})

    def file(self, name: bytes, size: int, crc: int | None, what: str) -> None:
        """The payload of the entry named ``name`` (``crc`` None when ``size`` is 0)."""
        doc: dict[str, Any] = {"type": FILE}
        try:
            text = name.decode("utf-8")
            doc["name"] = text
        except UnicodeDecodeError:
            text = name.decode("utf-8", "surrogateescape")
            doc["name_raw"] = b64(name)
        key = clean(text)
        if key in self._seen:
            raise UnsupportedError(
                f"{what}: the layer holds {text!r} twice; tar-split (and so zstd:chunked) "
                "cannot describe a layer with duplicate paths"
            )
        self._seen.add(key)
        if size:
            doc["size"] = size
        doc["payload"] = b64(crc.to_bytes(8, "big")) if crc is not None else None
        self._line(doc)

    def finish(self) -> PackedTarSplit:
        """End the stream."""
        self._compress()
        self._buf.write(self._z.flush())
        data = self._buf.getvalue()
        h = new_hasher()
        h.update(data)
        return PackedTarSplit(data, Digest.from_hasher("sha256", h), self._size)


@dataclass(frozen=True, slots=True)
class Item:
    """One tar-split entry read back."""

    type: int
    payload: bytes | None
    name: bytes | None = None
    size: int = 0


#: a tar-split line longer than this is refused (a 1 MiB segment is a 1.4 MB line of base64)
MAX_LINE: Final = 4 << 20


def read_lines(r: Reader, what: str) -> Iterator[bytes]:
    """The lines of a decompressed tar-split stream, in bounded memory."""
    rest = b""
    while data := r.read(1 << 20):
        lines = (rest + data).split(b"\n")
        rest = lines.pop()
        if len(rest) > MAX_LINE:
            raise CorruptStreamError(f"{what}: a tar-split line is longer than {MAX_LINE} bytes")
        yield from lines
    if rest:
        yield rest


def iter_items(lines: Iterator[bytes], what: str) -> Iterator[Item]:
    """Parse tar-split lines (bytes, newline-terminated)."""
    import base64
    import binascii

    for n, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            doc = json.loads(line)
            t = doc["type"]
            raw = doc.get("payload")
            payload = base64.b64decode(raw, validate=True) if raw is not None else None
            if t == SEGMENT:
                if payload is None:
                    raise ValueError("a segment without payload")
                yield Item(SEGMENT, payload)
            elif t == FILE:
                if doc.get("name_raw"):
                    name = base64.b64decode(doc["name_raw"], validate=True)
                else:
                    name = str(doc.get("name", "")).encode("utf-8", "surrogateescape")
                size = int(doc.get("size") or 0)
                if size < 0:
                    raise ValueError("negative size")
                yield Item(FILE, payload, name, size)
            else:
                raise ValueError(f"unknown entry type {t!r}")
        except (ValueError, KeyError, TypeError, binascii.Error) as exc:
            raise CorruptStreamError(f"{what}: tar-split entry {n}: {exc}") from None


__all__ = [
    "FILE",
    "MAX_SEGMENT",
    "SEGMENT",
    "Item",
    "PackedTarSplit",
    "TarSplitPacker",
    "clean",
    "crc64",
    "iter_items",
    "read_lines",
]
