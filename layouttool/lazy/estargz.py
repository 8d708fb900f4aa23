"""eStargz (containerd/stargz-snapshotter ``estargz``): write, and read the metadata back.

Layout of a blob, all one valid gzip stream (a series of members) of a valid tar:

* the tar starts with a landmark file: ``.no.prefetch.landmark`` (no prioritized files) or,
  after the prioritized files, ``.prefetch.landmark``; one byte, ``0x0f``;
* each regular file's payload chunk (at most ``chunk_size`` bytes) starts a new gzip member at
  its TOC ``offset``; headers and padding ride in the member of the payload before them;
* the last gzip member before the footer holds a tar entry ``stargz.index.json`` (the TOC, JSON
  indented with tabs) and the tar's end-of-archive blocks;
* a 51-byte footer: an empty gzip member whose extra field (``SG``, 22 bytes) is
  ``%016x`` of the TOC member's offset followed by ``STARGZ``.

The tar headers of the input are kept byte for byte (the stargz writer's "lossless" mode);
the input's own TOC and landmarks are dropped, so converting twice changes nothing; its
end-of-archive blocks and anything after them are dropped too (the TOC entry comes last).
The layer descriptor gets ``containerd.io/snapshot/stargz/toc.digest`` (sha256 of the TOC
JSON) and ``io.containers.estargz.uncompressed-size``.

Each TOC entry (``estargz.TOCEntry``): name, type, size, modtime (UTC, whole seconds; none for
the epoch), linkName, mode, uid, gid, userName/groupName (only when they change for that
id), devMajor/devMinor, xattrs (base64), and for regular files ``digest`` (sha256 of the
payload), ``offset``, ``chunkDigest`` and, for all but a file's last chunk, ``chunkSize``;
each further chunk is a ``chunk`` entry (name, ``offset``, ``chunkOffset``, ``chunkSize``,
``chunkDigest``).
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import struct
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final

from layouttool import mediatypes as mt
from layouttool.codec import DEFAULT_GZIP_LEVEL, Reader, Writer
from layouttool.errors import CorruptStreamError, InvalidInputError, NotFoundError
from layouttool.lazy import ESTARGZ_OWN_ENTRIES, LazyLayer, LazyOptions
from layouttool.lazy.frames import FrameWriter, gzip_members
from layouttool.lazy.tarscan import BLOCK, TarEntry, TarHeader, TarScanner
from layouttool.lazy.toc import dumps, entry_type, rfc3339_seconds, text, xattrs

TOC_NAME: Final = "stargz.index.json"
PREFETCH_LANDMARK: Final = ".prefetch.landmark"
NO_PREFETCH_LANDMARK: Final = ".no.prefetch.landmark"
#: the entries eStargz adds, dropped from an input and left out by unpack
OWN_ENTRIES: Final = ESTARGZ_OWN_ENTRIES
LANDMARK_CONTENT: Final = b"\x0f"
FOOTER_SIZE: Final = 51
#: the stargz snapshotter's and containers/storage's limit on a TOC
MAX_TOC: Final = 50 << 20


def clean_name(name: str) -> str:
    """estargz's ``cleanEntryName``: the path relative to the root, without ``./`` or ``/``."""
    return posixpath.normpath("/" + name).lstrip("/")


def ustar_header(name: str, size: int) -> bytes:
    """The header Go's tar writer makes for a bare ``Header{Name, Typeflag: reg, Size}``."""
    blk = bytearray(BLOCK)
    nb = name.encode()
    blk[0 : len(nb)] = nb
    for off, width, value in (
        (100, 8, 0),
        (108, 8, 0),
        (116, 8, 0),
        (124, 12, size),
        (136, 12, 0),
        (329, 8, 0),
        (337, 8, 0),
    ):
        blk[off : off + width] = f"{value:0{width - 1}o}".encode() + b"\0"
    blk[156:157] = b"0"
    blk[257:265] = b"ustar\x0000"
    blk[148:156] = b"        "
    blk[148:156] = f"{sum(blk):06o}".encode() + b"\0 "
    return bytes(blk)


def footer(toc_offset: int) -> bytes:
    """The 51-byte footer pointing at the TOC member."""
    sub = f"{toc_offset:016x}STARGZ".encode()
    extra = b"SG" + struct.pack("<H", len(sub)) + sub
    return (
        b"\x1f\x8b\x08\x04\x00\x00\x00\x00\x00\xff"
        + struct.pack("<H", len(extra))
        + extra
        + b"\x01\x00\x00\xff\xff"
        + bytes(8)
    )


def parse_footer(tail: bytes) -> int:
    """The TOC offset in a 51-byte footer (the last bytes of a blob)."""
    if len(tail) < FOOTER_SIZE:
        raise CorruptStreamError(f"eStargz footer: the blob is shorter than {FOOTER_SIZE} bytes")
    f = tail[-FOOTER_SIZE:]
    if f[:4] != b"\x1f\x8b\x08\x04" or f[10:12] != b"\x1a\x00" or f[12:16] != b"SG\x16\x00":
        raise CorruptStreamError(
            "eStargz footer: the last 51 bytes are not a gzip member with an SG extra field "
            "(truncated, or not eStargz)"
        )
    if f[32:38] != b"STARGZ":
        raise CorruptStreamError("eStargz footer: no STARGZ magic in the extra field")
    try:
        return int(f[16:32], 16)
    except ValueError:
        raise CorruptStreamError(f"eStargz footer: TOC offset {f[16:32]!r} is not hex") from None


class _Names:
    """``userName``/``groupName`` only when they change for an id (estargz nameIfChanged)."""

    def __init__(self) -> None:
        self._last: dict[int, bytes] = {}

    def __call__(self, ident: int, name: bytes) -> bytes:
        if not name or self._last.get(ident) == name:
            return b""
        self._last[ident] = name
        return name


@dataclass(slots=True)
class _Writer:
    fw: FrameWriter
    chunk_size: int
    what: str
    entries: list[tuple[dict[str, Any], int | None]]
    unames: _Names
    gnames: _Names

    def entry(self, h: TarHeader, lead: bytes, raw: bytes, payload: Iterator[bytes]) -> None:
        """Write one entry; ``payload`` yields its bytes, then the caller's padding follows."""
        what = self.what
        typ = entry_type(h, what)
        name = text(h.name, "name", what)
        doc: dict[str, Any] = {"name": name, "type": typ}
        if typ == "reg" and h.size:
            doc["size"] = h.size
        mod = rfc3339_seconds(h.mtime_ns, what)
        if mod:
            doc["modtime"] = mod
        if typ in ("symlink", "hardlink") and h.linkname:
            doc["linkName"] = text(h.linkname, "link target", what)
        if h.mode:
            doc["mode"] = h.mode
        if h.uid:
            doc["uid"] = h.uid
        if h.gid:
            doc["gid"] = h.gid
        un, gn = self.unames(h.uid, h.uname), self.gnames(h.gid, h.gname)
        if un:
            doc["userName"] = text(un, "user name", what)
        if gn:
            doc["groupName"] = text(gn, "group name", what)
        if typ in ("char", "block"):
            if h.devmajor:
                doc["devMajor"] = h.devmajor
            if h.devminor:
                doc["devMinor"] = h.devminor
        xa = xattrs(h, what)
        if xa:
            doc["xattrs"] = xa
        self.fw.write(lead + raw)
        if typ != "reg":
            self.entries.append((doc, None))
            return
        file_hash = hashlib.sha256()
        if h.size == 0:
            doc["digest"] = "sha256:" + file_hash.hexdigest()
            self.entries.append((doc, None))
            return
        cur, cur_mark, written = doc, self.fw.mark(), 0
        # a file of one chunk (most are) is hashed once: its chunk digest is its digest
        chunk_hash = file_hash if h.size <= self.chunk_size else hashlib.sha256()
        left = min(self.chunk_size, h.size)
        buf = b""
        for piece in _exact(payload, h.size, self.chunk_size):
            buf = piece
            file_hash.update(buf)
            if chunk_hash is not file_hash:
                chunk_hash.update(buf)
            self.fw.write(buf)
            left -= len(buf)
            written += len(buf)
            if left == 0:
                if written < h.size:
                    cur["chunkSize"] = self.chunk_size
                cur["chunkDigest"] = "sha256:" + chunk_hash.hexdigest()
                self.entries.append((cur, cur_mark))
                if written < h.size:
                    cur = {"name": name, "type": "chunk", "chunkOffset": written}
                    cur_mark = self.fw.mark()
                    chunk_hash = hashlib.sha256()
                    left = min(self.chunk_size, h.size - written)
        doc["digest"] = "sha256:" + file_hash.hexdigest()


def _exact(payload: Iterator[bytes], size: int, chunk: int) -> Iterator[bytes]:
    """Re-cut payload pieces so that none crosses a chunk boundary."""
    pos = 0
    for piece in payload:
        mv = memoryview(piece)
        while mv:
            room = chunk - pos % chunk
            take = mv[:room]
            yield bytes(take)
            pos += len(take)
            mv = mv[len(take) :]
    if pos != size:  # pragma: no cover - the scanner hands out exactly size bytes
        raise CorruptStreamError(f"payload of {pos} bytes, expected {size}")


def _payload(scan: TarScanner) -> Iterator[bytes]:
    while piece := scan.read():
        yield piece


def _own(e: TarEntry) -> bool:
    """An entry eStargz writes itself (a TOC or landmark of an earlier conversion)."""
    return clean_name(e.header.name.decode("utf-8", "surrogateescape")) in OWN_ENTRIES


def _landmark(w: _Writer, name: str) -> None:
    h = TarHeader(b"0", name.encode(), b"", 0, 0, 0, 1, 0, None, None, b"", b"", 0, 0)
    w.entry(h, b"", ustar_header(name, 1), iter([LANDMARK_CONTENT]))
    w.fw.write(bytes(BLOCK - 1))


#: estargz.TOCEntry's JSON field order
_ORDER: Final = {
    k: i
    for i, k in enumerate(
        (
            "name",
            "type",
            "size",
            "modtime",
            "linkName",
            "mode",
            "uid",
            "gid",
            "userName",
            "groupName",
            "offset",
            "innerOffset",
            "devMajor",
            "devMinor",
            "xattrs",
            "digest",
            "chunkOffset",
            "chunkSize",
            "chunkDigest",
        )
    )
}


def toc_member(toc_json: bytes) -> bytes:
    """The uncompressed content of the TOC member: the TOC tar entry and the end blocks."""
    pad = -len(toc_json) % BLOCK
    return ustar_header(TOC_NAME, len(toc_json)) + toc_json + bytes(pad) + bytes(2 * BLOCK)


def write(
    src: Reader,
    out: Writer,
    options: LazyOptions,
    *,
    what: str = "layer",
    spool_dir: str | None = None,
) -> LazyLayer:
    """Write the tar read from ``src`` as an eStargz blob into ``out``.

    Without prioritized files this is one pass over ``src``. With them, the tar is first
    spooled to a temp file in ``spool_dir``: they move to the front, as estargz does. The
    diff_id is the sha256 of the bytes the gzip members hold, hashed as they are compressed.
    """
    level = DEFAULT_GZIP_LEVEL if options.level is None else options.level
    if not 0 <= level <= 9:
        raise InvalidInputError(f"gzip level {level} out of range 0-9")
    fw = FrameWriter(out, gzip_members(level))
    w = _Writer(fw, options.chunk_size, what, [], _Names(), _Names())
    try:
        if options.prioritize:
            _write_prioritized(src, w, options.prioritize, spool_dir)
        else:
            _landmark(w, NO_PREFETCH_LANDMARK)
            scan = TarScanner(src, what=what)
            dropped = False  # the previous entry was dropped: so is its padding (this lead)
            while (e := scan.next()) is not None:
                lead = b"" if dropped else e.lead
                dropped = _own(e)
                if dropped:
                    fw.write(lead)
                else:
                    w.entry(e.header, lead, e.raw, _payload(scan))
            # the last payload's padding; the input's end blocks (and what follows) are dropped
            fw.write(b"" if dropped else scan.last_lead)
            while scan.read_rest():
                pass
        toc_mark = fw.mark()
        fw.close()
    except BaseException:
        fw.abort()
        raise
    docs = []
    for doc, mark in w.entries:
        if mark is not None:
            doc["offset"] = fw.offsets[mark]
        docs.append(dict(sorted(doc.items(), key=lambda kv: _ORDER[kv[0]])))
    toc_json = dumps({"version": 1, "entries": docs}, indent="\t")
    fw.frame_now(toc_member(toc_json))
    out.write(footer(fw.offsets[toc_mark]))
    return LazyLayer(
        fw.diff_id(),
        fw.uncompressed_size,
        {
            mt.ANNOT_ESTARGZ_TOC_DIGEST: "sha256:" + hashlib.sha256(toc_json).hexdigest(),
            mt.ANNOT_ESTARGZ_UNCOMPRESSED_SIZE: str(fw.uncompressed_size),
        },
    )


@dataclass(slots=True)
class _Spooled:
    header: TarHeader
    raw_off: int
    raw_len: int
    size: int
    pad_len: int = 0


def _write_prioritized(
    src: Reader, w: _Writer, prioritize: tuple[str, ...], spool_dir: str | None
) -> None:
    with tempfile.TemporaryFile(dir=spool_dir, prefix="estargz-") as spool:
        scan = TarScanner(src, what=w.what)
        order: dict[str, _Spooled] = {}
        last: _Spooled | None = None
        pos = 0

        def put(data: bytes) -> None:
            nonlocal pos
            spool.write(data)
            pos += len(data)

        while (e := scan.next()) is not None:
            if last is not None:
                last.pad_len = len(e.lead)
            put(e.lead)
            if _own(e):
                last = None
                while scan.read():
                    pass
                continue
            sp = _Spooled(e.header, pos, len(e.raw), e.header.size if e.header.has_payload else 0)
            put(e.raw)
            while piece := scan.read():
                put(piece)
            key = clean_name(e.header.name.decode("utf-8", "surrogateescape"))
            order.pop(key, None)  # a later entry of the same name replaces it, at its place
            order[key] = sp
            last = sp
        if last is not None:
            last.pad_len = len(scan.last_lead)
        put(scan.last_lead)
        while scan.read_rest():
            pass
        spool.flush()

        picked: dict[str, _Spooled] = {}

        def move(name: str, depth: int = 0) -> None:
            name = clean_name(name)
            if depth > 255:
                raise InvalidInputError(f"{w.what}: --estargz-prioritize: link loop at {name!r}")
            if name == "":
                if "" in order and "" not in picked:
                    picked[""] = order[""]
                return
            if name not in order and name not in picked:
                raise NotFoundError(f"{w.what}: --estargz-prioritize: {name!r} is not in the layer")
            move(posixpath.dirname(name), depth + 1)
            sp = order.get(name)
            if sp is not None and sp.header.typeflag == b"1":
                move(sp.header.linkname.decode("utf-8", "surrogateescape"), depth + 1)
            if name not in picked and sp is not None:
                picked[name] = sp

        for p in prioritize:
            move(p)
        fd = spool.fileno()
        for sp in picked.values():
            _emit(w, fd, sp)
        _landmark(w, PREFETCH_LANDMARK)
        for key, sp in order.items():
            if key not in picked:
                _emit(w, fd, sp)


def _emit(w: _Writer, fd: int, sp: _Spooled) -> None:
    raw = os.pread(fd, sp.raw_len, sp.raw_off)

    def payload() -> Iterator[bytes]:
        off, left = sp.raw_off + sp.raw_len, sp.size
        while left > 0:
            piece = os.pread(fd, min(left, 1 << 20), off)
            if not piece:
                raise CorruptStreamError(f"{w.what}: spool file shrank")
            off += len(piece)
            left -= len(piece)
            yield piece

    w.entry(sp.header, b"", raw, payload())
    w.fw.write(os.pread(fd, sp.pad_len, sp.raw_off + sp.raw_len + sp.size) if sp.pad_len else b"")
