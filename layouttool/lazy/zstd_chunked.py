"""zstd:chunked (containers/storage ``pkg/chunked``): write, and read the metadata back.

Layout of a blob, all one valid zstd stream whose decompressed bytes are the original tar:

* frames of the tar: a frame holds the previous entry's padding and the next headers; each
  regular file's payload starts a new frame at its TOC ``offset``, each chunk ends one, and
  the file's ``endOffset`` is where its last chunk's frame ends; the end-of-archive blocks and
  anything after them close the last frame;
* a skippable frame (``50 2a 4d 18``, LE32 size) holding the zstd-compressed TOC JSON
  (``{"version":1,"entries":[...],"tarSplitDigest":"sha256:..."}``);
* a skippable frame holding the zstd-compressed tar-split stream (:mod:`.tarsplit`);
* a skippable frame holding the 64-byte footer: LE64 TOC offset, compressed length,
  uncompressed length, type (1), tar-split offset, compressed length, uncompressed length, then
  the magic ``GNUlInUx``. Older writers are read too: containers/storage before 1.47 (podman
  4.3: the ``io.containers.zstd-chunked.*`` keys before 1.44) wrote a 40-byte footer ending in
  ``GnUlInUx`` and no tar-split; 1.47 to 1.49 padded that footer to 56 bytes and named the
  tar-split's digest in a ``tarsplit-checksum`` annotation rather than in the TOC.

Offsets point at the payload of a skippable frame (past its 8-byte header). The layer
descriptor carries ``manifest-checksum`` (sha256 of the compressed TOC), ``manifest-position``
(``offset:length:uncompressed:1``) and ``tarsplit-position`` (``offset:length:uncompressed``).

Each TOC entry is what containers/storage derives from the tar header (``minimal.FileMetadata``):
type, name, linkName, mode, size, uid, gid, modtime/accesstime/changetime, devMajor/devMinor,
xattrs (base64), and for regular files the payload's sha256 ``digest`` (none when empty),
``offset`` and ``endOffset``; a file cut into several chunks also gets ``chunkSize``,
``chunkDigest`` and ``chunkType`` (``zeros`` for a hole), followed by one ``chunk`` entry
(name, ``chunkOffset``, ``offset``, ``chunkSize``, ``chunkDigest``, ``chunkType``) per further
chunk.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final

from layouttool import mediatypes as mt
from layouttool.codec import CHUNK, Reader, Writer
from layouttool.digest import Digest
from layouttool.errors import CorruptStreamError, InvalidInputError
from layouttool.lazy import DEFAULT_ZSTD_CHUNKED_LEVEL, LazyLayer, LazyOptions
from layouttool.lazy.chunker import Chunker, Event
from layouttool.lazy.frames import FrameWriter, zstd_frames
from layouttool.lazy.tarscan import TarScanner
from layouttool.lazy.tarsplit import MAX_SEGMENT, TarSplitPacker, crc64
from layouttool.lazy.toc import dumps, entry_type, rfc3339_nano, text, xattrs

SKIPPABLE_MAGIC: Final = b"\x50\x2a\x4d\x18"
FOOTER_MAGIC: Final = b"GNUlInUx"
#: podman 4.x (containers/storage < 1.44) footer: 40 bytes, this magic
OLD_FOOTER_MAGIC: Final = b"GnUlInUx"
FOOTER_SIZE: Final = 64
OLD_FOOTER_SIZE: Final = 40
#: containers/storage 1.47 to 1.49 (podman 4.6, 4.7) wrote the old 40 bytes padded with zeros
#: to 56 (fixed by "chunked: fix generating footer"); its readers go by the annotations
BROKEN_FOOTER_SIZE: Final = 56
MANIFEST_TYPE_CRFS: Final = 1
#: containers/storage refuses a TOC larger than this (maxTocSize); so do we
MAX_TOC: Final = 150 << 20


def skippable(payload: bytes) -> bytes:
    """A zstd skippable frame around ``payload``."""
    return SKIPPABLE_MAGIC + struct.pack("<I", len(payload)) + payload


@dataclass(slots=True)
class _Pending:
    """A TOC entry whose offsets are marks until the frames are written."""

    doc: dict[str, Any]
    marks: dict[str, int]


def _header_doc(e_name: str, h: Any, typ: str, what: str) -> dict[str, Any]:
    doc: dict[str, Any] = {"type": typ, "name": e_name}
    if h.linkname:
        doc["linkName"] = text(h.linkname, "link target", what)
    if h.mode:
        doc["mode"] = h.mode
    if h.size:
        doc["size"] = h.size
    if h.uid:
        doc["uid"] = h.uid
    if h.gid:
        doc["gid"] = h.gid
    doc["modtime"] = rfc3339_nano(h.mtime_ns, what)
    if h.atime_ns is not None:
        doc["accesstime"] = rfc3339_nano(h.atime_ns, what)
    if h.ctime_ns is not None:
        doc["changetime"] = rfc3339_nano(h.ctime_ns, what)
    if h.devmajor:
        doc["devMajor"] = h.devmajor
    if h.devminor:
        doc["devMinor"] = h.devminor
    xa = xattrs(h, what)
    if xa:
        doc["xattrs"] = xa
    return doc


def write(src: Reader, out: Writer, options: LazyOptions, *, what: str = "layer") -> LazyLayer:
    """Write the tar read from ``src`` as a zstd:chunked blob into ``out``, in one pass.

    The diff_id is the sha256 of the bytes the frames hold (:class:`FrameWriter` hashes what
    it compresses); it equals the input tar's, which the caller checks.
    """
    level = DEFAULT_ZSTD_CHUNKED_LEVEL if options.level is None else options.level
    if not 1 <= level <= 22:
        raise InvalidInputError(f"zstd level {level} out of range 1-22")
    fw = FrameWriter(out, zstd_frames(level))
    try:
        entries, packed = _write_frames(src, fw, level, what)
        fw.close()
    except BaseException:
        fw.abort()
        raise
    docs: list[dict[str, Any]] = []
    for p in entries:
        for k, m in p.marks.items():
            p.doc[k] = fw.offsets[m]
        docs.append(p.doc)
    toc = {"version": 1, "entries": docs, "tarSplitDigest": str(packed.digest)}
    import zstandard

    toc_json = dumps(toc)
    ctoc = zstandard.ZstdCompressor(level=level).compress(toc_json)
    pos = fw.size
    toc_off = pos + 8
    out.write(skippable(ctoc))
    ts_off = toc_off + len(ctoc) + 8
    out.write(skippable(packed.compressed))
    footer = struct.pack(
        "<QQQQQQQ",
        toc_off,
        len(ctoc),
        len(toc_json),
        MANIFEST_TYPE_CRFS,
        ts_off,
        len(packed.compressed),
        packed.uncompressed_size,
    )
    out.write(skippable(footer + FOOTER_MAGIC))
    toc_digest = "sha256:" + hashlib.sha256(ctoc).hexdigest()
    return LazyLayer(
        fw.diff_id(),
        fw.uncompressed_size,
        {
            mt.ANNOT_ZSTD_CHUNKED_TOC_DIGEST: toc_digest,
            mt.ANNOT_ZSTD_CHUNKED_TOC_POSITION: (
                f"{toc_off}:{len(ctoc)}:{len(toc_json)}:{MANIFEST_TYPE_CRFS}"
            ),
            mt.ANNOT_ZSTD_CHUNKED_TARSPLIT_POSITION: (
                f"{ts_off}:{len(packed.compressed)}:{packed.uncompressed_size}"
            ),
        },
    )


class _FileChunks:
    """One file's payload: cut into chunks, each chunk its own frame(s), digests taken."""

    def __init__(self, fw: FrameWriter) -> None:
        self.fw = fw
        self.file_hash = hashlib.sha256()
        self.start = fw.mark()
        #: (offset in the file, size, sha256 hex, chunk type, mark of its first frame)
        self.chunks: list[tuple[int, int, str, str, int]] = []
        self._hash = hashlib.sha256()
        self._from = 0
        self.chunk_mark = self.start
        self.pos = 0
        self._chunker = Chunker()

    def _handle(self, events: Iterator[Event]) -> None:
        for ev in events:
            if ev[0] == "data":
                self.fw.write(ev[1])
                self._hash.update(ev[1])
                self.pos += len(ev[1])
                continue
            end = self.fw.mark()
            kind = "zeros" if ev[1] == "zeros" else ""
            size = self.pos - self._from
            self.chunks.append((self._from, size, self._hash.hexdigest(), kind, self.chunk_mark))
            self._hash = hashlib.sha256()
            self._from, self.chunk_mark = self.pos, end

    def feed(self, piece: bytes) -> None:
        """The next payload bytes."""
        self.file_hash.update(piece)
        self._handle(self._chunker.feed(piece))

    def close(self) -> None:
        """The payload ended."""
        self._handle(self._chunker.close())


def _write_frames(
    src: Reader, fw: FrameWriter, level: int, what: str
) -> tuple[list[_Pending], Any]:
    scan = TarScanner(src, what=what)
    ts = TarSplitPacker(level)
    crc = crc64()
    entries: list[_Pending] = []
    while (e := scan.next()) is not None:
        h = e.header
        typ = entry_type(h, what)
        name = text(h.name, "name", what)
        seg = e.lead + e.raw
        fw.write(seg)
        ts.segment(seg)
        doc = _header_doc(name, h, typ, what)
        main = _Pending(doc, {})
        entries.append(main)
        if not h.has_payload:
            ts.file(h.name, h.size, crc.calc(b"") if h.size else None, what)
            continue
        fc = _FileChunks(fw)
        value = crc.calc(b"")
        while piece := scan.read(CHUNK):
            value = crc.calc(piece, value)
            fc.feed(piece)
        fc.close()
        if fc.pos != h.size:  # pragma: no cover - the scanner hands out exactly size bytes
            raise CorruptStreamError(f"{what}: {name}: read {fc.pos} of {h.size} bytes")
        doc["digest"] = "sha256:" + fc.file_hash.hexdigest()
        doc["offset"] = doc["endOffset"] = 0  # placeholders: Go's field order
        main.marks = {"offset": fc.start, "endOffset": fc.chunk_mark}
        ts.file(h.name, h.size, value, what)
        if len(fc.chunks) > 1:
            _, size0, dig0, kind0, _ = fc.chunks[0]
            doc["chunkSize"] = size0
            doc["chunkDigest"] = "sha256:" + dig0
            if kind0:
                doc["chunkType"] = kind0
            for off, size, dig, kind, mark in fc.chunks[1:]:
                c: dict[str, Any] = {"type": "chunk", "name": name, "offset": 0}
                c["chunkSize"] = size
                c["chunkOffset"] = off
                c["chunkDigest"] = "sha256:" + dig
                if kind:
                    c["chunkType"] = kind
                entries.append(_Pending(c, {"offset": mark}))
    tail = scan.trailer
    fw.write(tail)
    ts.segment(tail)
    while rest := scan.read_rest(MAX_SEGMENT):
        fw.write(rest)
        ts.segment(rest)
    fw.end_frame()
    return entries, ts.finish()


# ---------------------------------------------------------------------------------- reading
@dataclass(frozen=True, slots=True)
class Position:
    """Where a skippable frame's payload is: offset, compressed and uncompressed length."""

    offset: int
    length: int
    uncompressed: int


@dataclass(frozen=True, slots=True)
class Locator:
    """What the annotations (or the footer) say about a zstd:chunked blob."""

    toc_digest: Digest
    toc: Position
    tar_split: Position | None
    #: True for the keys podman 4.x wrote (``io.containers.zstd-chunked.*``)
    old_keys: bool


def _ints(value: str, n: int, key: str) -> list[int]:
    parts = value.split(":")
    try:
        nums = [int(p, 10) for p in parts]
    except ValueError:
        nums = []
    if len(nums) != n or any(x < 0 for x in nums):
        raise InvalidInputError(f"annotation {key}={value!r}: expected {n} numbers a:b:...")
    return nums


def locate(annotations: dict[str, str] | Any) -> Locator:
    """Read the zstd:chunked annotations (current keys first, then podman 4.x's)."""
    old = False
    digest = annotations.get(mt.ANNOT_ZSTD_CHUNKED_TOC_DIGEST)
    posv = annotations.get(mt.ANNOT_ZSTD_CHUNKED_TOC_POSITION)
    if digest is None:
        digest = annotations.get(mt.ANNOT_ZSTD_CHUNKED_TOC_DIGEST_OLD)
        posv = annotations.get(mt.ANNOT_ZSTD_CHUNKED_TOC_POSITION_OLD)
        old = True
    if digest is None:
        raise InvalidInputError("no zstd:chunked manifest-checksum annotation")
    toc_digest = Digest.parse(digest, what="zstd:chunked manifest-checksum annotation")
    if posv is None:
        raise InvalidInputError("no zstd:chunked manifest-position annotation")
    o, ln, u, t = _ints(posv, 4, "manifest-position")
    if t != MANIFEST_TYPE_CRFS:
        raise InvalidInputError(f"zstd:chunked manifest type {t} (only 1 is defined)")
    ts = None
    tsv = annotations.get(mt.ANNOT_ZSTD_CHUNKED_TARSPLIT_POSITION)
    if tsv is not None:
        a, b, c = _ints(tsv, 3, "tarsplit-position")
        ts = Position(a, b, c)
    return Locator(toc_digest, Position(o, ln, u), ts, old)


@dataclass(frozen=True, slots=True)
class Footer:
    """The footer at a zstd:chunked blob's end."""

    toc: Position
    tar_split: Position | None
    size: int


def parse_footer(tail: bytes) -> Footer:
    """Parse the footer from the last bytes of a blob (give at least 72 bytes if there are)."""
    if len(tail) >= FOOTER_SIZE + 8 and tail[-8:] == FOOTER_MAGIC:
        f = tail[-FOOTER_SIZE:]
        o, ln, u, t, tso, tsl, tsu = struct.unpack("<QQQQQQQ", f[:56])
        if t != MANIFEST_TYPE_CRFS:
            raise CorruptStreamError(f"zstd:chunked footer: manifest type {t}")
        hdr = tail[-FOOTER_SIZE - 8 : -FOOTER_SIZE]
        if hdr != skippable(b"\0" * FOOTER_SIZE)[:8]:
            raise CorruptStreamError("zstd:chunked footer: not inside a 64-byte skippable frame")
        return Footer(Position(o, ln, u), Position(tso, tsl, tsu) if tso else None, FOOTER_SIZE)
    for size in (OLD_FOOTER_SIZE, BROKEN_FOOTER_SIZE):
        f = tail[-size:]
        if len(tail) >= size + 8 and f[32:40] == OLD_FOOTER_MAGIC and not any(f[40:]):
            o, ln, u, t = struct.unpack("<QQQQ", f[:32])
            if t != MANIFEST_TYPE_CRFS:
                raise CorruptStreamError(f"zstd:chunked footer: manifest type {t}")
            return Footer(Position(o, ln, u), None, size)
    raise CorruptStreamError(
        "zstd:chunked footer: the blob does not end with the GNUlInUx (or GnUlInUx) magic "
        "(truncated, or not zstd:chunked)"
    )


def decompress_toc(data: bytes, expected_size: int, what: str) -> dict[str, Any]:
    """The TOC JSON of a compressed TOC payload."""
    import json

    import zstandard

    if expected_size > MAX_TOC or len(data) > MAX_TOC:
        raise InvalidInputError(f"{what}: TOC of {expected_size} bytes is over {MAX_TOC}")
    try:
        # read one byte more than announced, never more: a small frame may expand to gigabytes
        with zstandard.ZstdDecompressor().stream_reader(
            data, read_across_frames=True, closefd=False
        ) as r:
            raw = r.read(expected_size + 1)
    except zstandard.ZstdError as exc:
        raise CorruptStreamError(f"{what}: TOC does not decompress: {exc}") from None
    if len(raw) != expected_size:
        more = "more than" if len(raw) > expected_size else f"{len(raw)} bytes, not"
        raise CorruptStreamError(
            f"{what}: TOC decompresses to {more} the {expected_size} announced"
        )
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CorruptStreamError(f"{what}: TOC is not JSON: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("entries"), list):
        raise CorruptStreamError(f"{what}: TOC has no entries list")
    return doc


__all__ = [
    "FOOTER_MAGIC",
    "FOOTER_SIZE",
    "OLD_FOOTER_MAGIC",
    "Footer",
    "Locator",
    "Position",
    "decompress_toc",
    "locate",
    "parse_footer",
    "skippable",
    "write",
]
