"""Check a lazy-pull layer against its annotations and its own tar: does the TOC tell the truth?

A runtime that pulls lazily trusts the TOC instead of the tar: a TOC whose offsets, digests or
metadata disagree with the layer gives a container other files than a plain pull would. So
:func:`check_layer` reads the blob once more (the footer, TOC and tar-split by range, then one
streaming pass over the whole blob, in bounded memory whatever the input claims) and reports
each disagreement as a :class:`Finding`:

* ``lazy-annotation``: the annotations cannot be read, or disagree with the footer;
* ``lazy-toc-digest``: the TOC (or tar-split) does not hash to what names it;
* ``lazy-toc``: the TOC cannot be read (corrupt compression or JSON, a field of the wrong
  type, missing footer);
* ``lazy-toc-entry``: an entry's metadata differs from the tar header, or the TOC and the tar
  list different files;
* ``lazy-toc-offset``: an offset does not start (or end) the compressed piece holding that
  file's bytes;
* ``lazy-toc-content``: a file or chunk digest does not match the bytes;
* ``lazy-tar-split``: the tar-split does not rebuild the tar (its segments are not the tar's
  bytes, or a file entry's name, size or CRC-64 is not the tar's);
* ``lazy-diff-id``: the layer does not decompress to the config's diff_id;
* ``lazy-size``: eStargz's uncompressed-size annotation is wrong.

Every finding here is a problem (the layer lies), never a warning. The function is pure: it
gets a way to read byte ranges and a stream of the blob, and returns findings.
"""

from __future__ import annotations

import hashlib
import json
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Final

from layouttool import mediatypes as mt
from layouttool.codec import Reader
from layouttool.digest import Digest
from layouttool.errors import CorruptStreamError, LayoutToolError
from layouttool.lazy import estargz as es
from layouttool.lazy import zstd_chunked as zc
from layouttool.lazy.tarscan import TYPE_NAMES, TarHeader, TarScanner
from layouttool.lazy.tarsplit import FILE, SEGMENT, Item, crc64, iter_items, read_lines
from layouttool.lazy.toc import (
    GO_ZERO_TIME_NS,
    parse_rfc3339_ns,
    rfc3339_nano,
    rfc3339_seconds,
    xattrs,
)

_READ: Final = 1 << 20
_MAX_FINDINGS: Final = 50


@dataclass(frozen=True, slots=True)
class Finding:
    """One way a lazy layer's metadata disagrees with its bytes."""

    code: str
    message: str
    severity: str = "problem"


# ---------------------------------------------------------------------------------- frames
#: compressed bytes handed to a zstd decoder at once: what one call returns stays bounded (a
#: 4-byte RLE block expands to 128 KiB, so 1 KiB of input to at most 32 MiB)
_ZSTD_PIECE: Final = 1 << 10


class _FrameReader:
    """Decompress a stream piece by piece (zstd frames or gzip members), recording where each
    piece starts: ``starts`` maps the compressed offset of every piece (and of the stream's
    end) to the uncompressed offset there. Memory stays bounded whatever the input."""

    def __init__(self, src: Reader) -> None:
        self._src = src
        self._buf = b""
        self._i = 0  # next unread byte of _buf
        self._base = 0  # compressed offset of _buf[0]
        self.starts: dict[int, int] = {}
        self.uoffset = 0

    def _avail(self, n: int) -> int:
        """Unread bytes in the buffer, at least ``n`` unless the stream ends first."""
        while len(self._buf) - self._i < n:
            data = self._src.read(_READ)
            if not data:
                break
            self._base += self._i
            self._buf = self._buf[self._i :] + data
            self._i = 0
        return len(self._buf) - self._i

    def _mark(self) -> None:
        self.starts[self._base + self._i] = self.uoffset

    def _out(self, data: bytes) -> bytes:
        self.uoffset += len(data)
        return data


class _ZstdFrameReader(_FrameReader):
    """zstd frames; skippable frames are passed over."""

    def __init__(self, src: Reader) -> None:
        import zstandard

        super().__init__(src)
        self._zstd = zstandard
        self._dec: Any = None
        self._skip = 0

    def read(self, n: int = -1, /) -> bytes:
        while True:
            if self._dec is not None:
                if not self._avail(1):
                    raise CorruptStreamError("zstd stream ends inside a frame")
                piece = self._buf[self._i : self._i + _ZSTD_PIECE]
                try:
                    out: bytes = self._dec.decompress(piece)
                except self._zstd.ZstdError as exc:
                    raise CorruptStreamError(f"zstd: {exc}") from None
                self._i += len(piece)
                if self._dec.eof:
                    self._i -= len(self._dec.unused_data)
                    self._dec = None
                if out:
                    return self._out(out)
                continue
            if self._skip:
                have = self._avail(1)
                if not have:
                    raise CorruptStreamError("zstd stream ends inside a skippable frame")
                take = min(self._skip, have)
                self._i += take
                self._skip -= take
                continue
            have = self._avail(8)
            if not have:
                self._mark()
                return b""
            head = self._buf[self._i : self._i + 8]
            if int.from_bytes(head[:4], "little") & ~0xF == 0x184D2A50:
                if have < 8:
                    raise CorruptStreamError("truncated skippable frame header")
                self._skip = int.from_bytes(head[4:], "little")
                self._i += 8
                continue
            self._mark()
            self._dec = self._zstd.ZstdDecompressor().decompressobj()


class _GzipMemberReader(_FrameReader):
    """gzip members."""

    def __init__(self, src: Reader) -> None:
        super().__init__(src)
        self._dec: Any = None

    def read(self, n: int = -1, /) -> bytes:
        while True:
            have = self._avail(1)
            if self._dec is None:
                self._mark()
                if not have:
                    return b""
                self._dec = zlib.decompressobj(31)
            elif not have:
                raise CorruptStreamError("gzip stream ends inside a member")
            piece = self._buf[self._i : self._i + _READ]
            try:
                out: bytes = self._dec.decompress(piece, _READ)  # at most _READ bytes out
            except zlib.error as exc:
                raise CorruptStreamError(f"gzip: {exc}") from None
            self._i += len(piece) - len(self._dec.unconsumed_tail) - len(self._dec.unused_data)
            if self._dec.eof:
                self._dec = None
            if out:
                return self._out(out)


# ---------------------------------------------------------------------------------- checks
class _Report:
    def __init__(self, what: str) -> None:
        self.what = what
        self.findings: list[Finding] = []

    def add(self, code: str, message: str) -> None:
        if len(self.findings) < _MAX_FINDINGS:
            self.findings.append(Finding(code, f"{self.what}: {message}"))
        elif len(self.findings) == _MAX_FINDINGS:
            self.findings.append(Finding(code, f"{self.what}: more findings left out"))


def _name(h: TarHeader) -> str:
    return h.name.decode("utf-8", "replace")


#: TOC entry fields that hold a non-negative integer, or a string (both formats; absent or
#: null is the zero value, as Go's JSON reads it)
_INT_FIELDS: Final = (
    "mode", "size", "uid", "gid", "devMajor", "devMinor",
    "offset", "endOffset", "innerOffset", "chunkOffset", "chunkSize",
)  # fmt: skip
_STR_FIELDS: Final = (
    "type", "name", "linkName", "modtime", "accesstime", "changetime", "userName",
    "groupName", "digest", "chunkDigest", "chunkType",
)  # fmt: skip


def _entry_problem(e: object) -> str | None:
    """Why a TOC entry cannot be read (a field of the wrong JSON type), or None."""
    if not isinstance(e, dict):
        return "an entry is not an object"
    for k in _INT_FIELDS:
        v = e.get(k)
        if v is not None and (type(v) is not int or v < 0):
            return f"{k} {v!r} is not a non-negative integer"
    for k in _STR_FIELDS:
        v = e.get(k)
        if v is not None and not isinstance(v, str):
            return f"{k} {v!r} is not a string"
    xa = e.get("xattrs")
    if xa is not None and not (
        isinstance(xa, dict) and all(isinstance(v, str) for v in xa.values())
    ):
        return "xattrs is not an object of strings"
    return None


def _num(e: Mapping[str, Any], k: str) -> int:
    return int(e.get(k) or 0)


def _time_eq(a: str | None, ns: int | None) -> bool:
    """A TOC time against the tar's, as instants (a writer may use any UTC offset);
    containers/storage's ensureTimePointersMatch: the zero time and the epoch are absent."""
    t = parse_rfc3339_ns(a) if a else None
    if t in (None, 0, GO_ZERO_TIME_NS) and ns in (None, 0):
        return True
    return t == ns


def _zc_meta(e: Mapping[str, Any], h: TarHeader, typ: str, rep: _Report) -> list[str]:
    bad = []
    if e.get("type") != typ:
        bad.append(f"type {e.get('type')!r} (tar: {typ!r})")
    if (e.get("linkName") or "") != h.linkname.decode("utf-8", "replace"):
        bad.append(f"linkName {e.get('linkName')!r}")
    want = {
        "mode": h.mode,
        "size": h.size,
        "uid": h.uid,
        "gid": h.gid,
        "devMajor": h.devmajor,
        "devMinor": h.devminor,
    }
    for k, v in want.items():
        if _num(e, k) != v:
            bad.append(f"{k} {e.get(k)!r} (tar: {v!r})")
    for k, ns in (("modtime", h.mtime_ns), ("accesstime", h.atime_ns), ("changetime", h.ctime_ns)):
        if not _time_eq(e.get(k), ns):
            tar = rfc3339_nano(ns, rep.what) if ns is not None else None
            bad.append(f"{k} {e.get(k)!r} (tar: {tar!r})")
    if (e.get("xattrs") or {}) != xattrs(h, rep.what):
        bad.append("xattrs")
    return bad


def _es_meta(e: Mapping[str, Any], h: TarHeader, typ: str, rep: _Report) -> list[str]:
    bad = []
    if e.get("type") != typ:
        bad.append(f"type {e.get('type')!r} (tar: {typ!r})")
    checks = {"mode": h.mode, "uid": h.uid, "gid": h.gid}
    if typ == "reg":
        checks["size"] = h.size
    if typ in ("char", "block"):
        checks["devMajor"] = h.devmajor
        checks["devMinor"] = h.devminor
    for k, v in checks.items():
        if _num(e, k) != v:
            bad.append(f"{k} {e.get(k)!r} (tar: {v!r})")
    if typ in ("symlink", "hardlink") and (e.get("linkName") or "") != h.linkname.decode(
        "utf-8", "replace"
    ):
        bad.append(f"linkName {e.get('linkName')!r}")
    mod = rfc3339_seconds(h.mtime_ns, rep.what)
    got = e.get("modtime") or ""
    if got != mod and (not got or parse_rfc3339_ns(got) != parse_rfc3339_ns(mod or "-")):
        bad.append(f"modtime {e.get('modtime')!r} (tar: {mod!r})")
    if (e.get("xattrs") or {}) != xattrs(h, rep.what):
        bad.append("xattrs")
    return bad


def _group(
    entries: list[Any], rep: _Report, *, unique: bool
) -> dict[str, list[list[dict[str, Any]]]]:
    """TOC entries by name, in order: each a main entry followed by its chunk entries.

    ``unique``: a name twice is a finding (containers/storage refuses it in zstd:chunked; an
    eStargz TOC of a tar that holds a path twice names it twice, and the later one wins)."""
    out: dict[str, list[list[dict[str, Any]]]] = {}
    last: list[dict[str, Any]] | None = None
    for e in entries:
        why = _entry_problem(e)
        if why is not None:
            rep.add("lazy-toc", f"TOC entry {e.get('name') if isinstance(e, dict) else e!r}: {why}")
            last = []  # its chunk entries go with it
            continue
        if e.get("type") == "chunk":
            if last is None:
                rep.add("lazy-toc-entry", f"chunk entry {e.get('name')!r} without a file before it")
            else:
                last.append(e)
            continue
        name = es.clean_name(e.get("name") or "")
        if name in out and unique:
            rep.add("lazy-toc-entry", f"the TOC names {name!r} twice")
        last = [e]
        out.setdefault(name, []).append(last)
    return out


class _TarSplitMatch:
    """The tar-split's entries, matched against the tar as it streams by: its segments must be
    the tar's bytes outside file contents, and its file entries the tar's files (name, size,
    CRC-64 of the content). That is what rebuilding the layer from it needs (containers/storage
    does, and checks the result against the diff_id). The first difference is the finding."""

    def __init__(self, items: Iterator[Item], rep: _Report) -> None:
        self._items = items
        self._rep = rep
        self.ok = True
        self._seg = memoryview(b"")
        self._file: Item | None = None
        self._crc = crc64()
        self._value = 0

    def _bad(self, message: str) -> None:
        if self.ok:
            self.ok = False
            self._rep.add("lazy-tar-split", f"the tar-split {message}")

    def _next(self) -> Item | None:
        try:
            return next(self._items, None)
        except CorruptStreamError as exc:
            self._bad(f"cannot be read: {exc}")
            return None

    def raw(self, data: bytes, where: str) -> None:
        """Bytes of the tar outside file contents (headers, padding, the end)."""
        mv = memoryview(data)
        while self.ok and mv:
            if not self._seg:
                item = self._next()
                if item is None or item.type != SEGMENT or item.payload is None:
                    self._bad(f"has no segment for the tar's bytes {where}")
                    return
                self._seg = memoryview(item.payload)
            n = min(len(mv), len(self._seg))
            if mv[:n] != self._seg[:n]:
                self._bad(f"differs from the tar's bytes {where}")
                return
            mv, self._seg = mv[n:], self._seg[n:]

    def file(self, h: TarHeader) -> None:
        """The entry ``h`` begins: the next tar-split entry must be its file entry."""
        if not self.ok:
            return
        item = None if self._seg else self._next()
        if item is None or item.type != FILE:
            self._bad(f"has no file entry where the tar has {_name(h)!r}")
        elif item.name != h.name or item.size != h.size:
            self._bad(
                f"names {item.name!r} ({item.size} bytes) where the tar has {h.name!r} "
                f"({h.size} bytes)"
            )
        else:
            self._file = item
            self._value = self._crc.calc(b"")

    def content(self, piece: bytes) -> None:
        if self._file is not None:
            self._value = self._crc.calc(piece, self._value)

    def end_file(self) -> None:
        item, self._file = self._file, None
        crc = self._value.to_bytes(8, "big")
        if self.ok and item is not None and item.size and item.payload != crc:
            self._bad(f"has another CRC-64 for {item.name!r} than its content's")

    def finish(self) -> None:
        if self.ok and (self._seg or self._next() is not None):
            self._bad("goes on after the tar's end")


def _stream_check(
    reader: Reader,
    fmt: str,
    groups: dict[str, list[list[dict[str, Any]]]],
    rep: _Report,
    tar_split: _TarSplitMatch | None = None,
) -> tuple[Digest, list[tuple[str, list[dict[str, Any]], int, int]]]:
    """Walk the tar in the decompressed stream; check metadata, digests and the tar-split;
    return the diff_id and, per regular file, (name, TOC group, payload start, size) for the
    offset checks that need every frame boundary."""
    diff = hashlib.sha256()

    class _Hashing:
        def read(self, n: int = -1, /) -> bytes:
            data: bytes = reader.read(n)
            diff.update(data)
            return data

    scan = TarScanner(_Hashing(), what=rep.what)
    payloads: list[tuple[str, list[dict[str, Any]], int, int]] = []
    while (ent := scan.next()) is not None:
        h = ent.header
        if tar_split is not None:
            tar_split.raw(ent.lead + ent.raw, f"before {_name(h)!r}")
            tar_split.file(h)
        name = es.clean_name(h.name.decode("utf-8", "surrogateescape"))
        queue = groups.get(name)
        if fmt == "estargz" and name == es.TOC_NAME:
            queue = None
        elif not queue:
            rep.add("lazy-toc-entry", f"{_name(h)!r} is in the tar but not in the TOC")
        group = queue.pop(0) if queue else None
        typ = TYPE_NAMES.get(h.typeflag, "?")
        if group is not None:
            meta = _zc_meta if fmt == "zstd:chunked" else _es_meta
            bad = meta(group[0], h, typ, rep)
            if bad:
                rep.add("lazy-toc-entry", f"{_name(h)!r}: the TOC says " + ", ".join(bad))
        ranges = []
        for c in group or ():
            off = _num(c, "chunkOffset")
            size = _num(c, "chunkSize") or (h.size - off)
            ranges.append((off, off + size, c.get("chunkDigest"), hashlib.sha256()))
        whole = hashlib.sha256()
        pos = 0
        while piece := scan.read(_READ):
            whole.update(piece)
            if tar_split is not None:
                tar_split.content(piece)
            for a, b, _, hh in ranges:
                lo, hi = max(a, pos), min(b, pos + len(piece))
                if lo < hi:
                    hh.update(piece[lo - pos : hi - pos])
            pos += len(piece)
        if tar_split is not None:
            tar_split.end_file()
        if group is None or typ != "reg" or not h.size:
            continue
        if group[0].get("digest") != "sha256:" + whole.hexdigest():
            rep.add("lazy-toc-content", f"{_name(h)!r}: the TOC digest is not its content's")
        if len(group) > 1 or group[0].get("chunkDigest"):
            for a, _, want, hh in ranges:
                if want is not None and want != "sha256:" + hh.hexdigest():
                    rep.add("lazy-toc-content", f"{_name(h)!r}: chunk at {a}: wrong chunkDigest")
        payloads.append((name, group, ent.data_offset, h.size))
    missing = {n for n, q in groups.items() if q}
    if fmt == "estargz":
        missing -= {""}
    for name in sorted(missing)[:5]:
        rep.add("lazy-toc-entry", f"the TOC lists {name!r}, which the tar does not hold")
    if tar_split is not None:
        tar_split.raw(scan.trailer, "at its end")
    while rest := scan.read_rest():
        if tar_split is not None:
            tar_split.raw(rest, "after its end")
    if tar_split is not None:
        tar_split.finish()
    while reader.read(_READ):  # frames after the tar's end (none are expected)
        pass
    return Digest.from_hasher("sha256", diff), payloads


def _offsets(
    starts: dict[int, int],
    payloads: list[tuple[str, list[dict[str, Any]], int, int]],
    fmt: str,
    rep: _Report,
) -> None:
    for name, group, start, size in payloads:
        for c in group:
            coff = _num(c, "offset")
            want = start + _num(c, "chunkOffset")
            if starts.get(coff, -1) + _num(c, "innerOffset") != want:
                rep.add(
                    "lazy-toc-offset",
                    f"{name!r}: offset {c.get('offset')!r} does not start the piece holding its "
                    f"bytes at {want}",
                )
                break
        if fmt == "zstd:chunked":
            end = group[0].get("endOffset")
            if starts.get(_num(group[0], "endOffset")) != start + size:
                rep.add("lazy-toc-offset", f"{name!r}: endOffset {end!r} does not end its bytes")


# ---------------------------------------------------------------------------------- formats
def check_layer(
    annotations: Mapping[str, str],
    size: int,
    pread: Callable[[int, int], bytes],
    stream: Callable[[], Reader],
    diff_id: Digest | None,
    *,
    what: str = "layer",
) -> list[Finding]:
    """Findings for the lazy layer described by ``annotations`` (empty: it tells the truth).

    ``pread(offset, length)`` reads a range of the blob of ``size`` bytes; ``stream()`` opens
    it for one sequential pass; ``diff_id`` is the config's for this layer.
    """
    fmt = mt.lazy_format(annotations)
    rep = _Report(what)
    try:
        if fmt == "zstd:chunked":
            _check_zstd_chunked(annotations, size, pread, stream, diff_id, rep)
        elif fmt == "estargz":
            _check_estargz(annotations, size, pread, stream, diff_id, rep)
    except LayoutToolError as exc:
        rep.add("lazy-toc", str(exc))
    return rep.findings


class _RangeReader:
    """A byte range of the blob, read sequentially through ``pread``."""

    def __init__(self, pread: Callable[[int, int], bytes], offset: int, length: int) -> None:
        self._pread = pread
        self._pos = offset
        self._end = offset + length

    def read(self, n: int = -1, /) -> bytes:
        n = min(_READ if n < 0 else n, self._end - self._pos)
        data = self._pread(self._pos, n) if n > 0 else b""
        self._pos += len(data)
        return data


def _check_zstd_chunked(
    annotations: Mapping[str, str],
    size: int,
    pread: Callable[[int, int], bytes],
    stream: Callable[[], Reader],
    diff_id: Digest | None,
    rep: _Report,
) -> None:
    try:
        loc = zc.locate(annotations)
    except LayoutToolError as exc:
        rep.add("lazy-annotation", str(exc))
        return
    # containers/storage goes by the annotations; the footer only has to agree with them
    try:
        foot: zc.Footer | None = zc.parse_footer(pread(max(0, size - 72), min(size, 72)))
    except CorruptStreamError as exc:
        rep.add("lazy-toc", str(exc))
        foot = None
    if foot is not None and foot.toc != loc.toc:
        rep.add(
            "lazy-annotation", f"manifest-position {loc.toc} disagrees with the footer's {foot.toc}"
        )
    foot_ts = foot.tar_split if foot is not None else None
    if loc.tar_split is not None and foot_ts is not None and foot_ts != loc.tar_split:
        rep.add("lazy-annotation", "tarsplit-position disagrees with the footer")
    ts_pos = loc.tar_split or foot_ts
    for label, pos in (("manifest", loc.toc), ("tarsplit", ts_pos)):
        if pos is not None and pos.offset + pos.length > size:
            rep.add("lazy-annotation", f"{label}-position points past the end of the blob")
            return
    ctoc = pread(loc.toc.offset, loc.toc.length) if loc.toc.length <= zc.MAX_TOC else b""
    if Digest.of_bytes(ctoc) != loc.toc_digest:
        rep.add(
            "lazy-toc-digest",
            f"the TOC hashes to {Digest.of_bytes(ctoc)}, the annotation says {loc.toc_digest}",
        )
        return
    toc = zc.decompress_toc(ctoc, loc.toc.uncompressed, rep.what)
    groups = _group(toc["entries"], rep, unique=True)
    ts_digest = toc.get("tarSplitDigest") or annotations.get(
        mt.ANNOT_ZSTD_CHUNKED_TARSPLIT_DIGEST_OLD
    )
    tar_split = None
    if ts_digest:
        if ts_pos is None:
            rep.add("lazy-annotation", "the TOC names a tar-split, but no position locates it")
        else:
            tar_split = _tar_split(pread, ts_pos, str(ts_digest), rep)
    reader = _ZstdFrameReader(stream())
    got, payloads = _stream_check(reader, "zstd:chunked", groups, rep, tar_split)
    _offsets(reader.starts, payloads, "zstd:chunked", rep)
    if diff_id is not None and got != diff_id:
        rep.add("lazy-diff-id", f"decompresses to {got}, but the config's diff_id is {diff_id}")


def _tar_split(
    pread: Callable[[int, int], bytes], pos: zc.Position, digest: str, rep: _Report
) -> _TarSplitMatch | None:
    """The tar-split at ``pos``, once its digest is checked (None: it is not the one named)."""
    h = hashlib.sha256()
    r = _RangeReader(pread, pos.offset, pos.length)
    while data := r.read():
        h.update(data)
    if "sha256:" + h.hexdigest() != digest:
        rep.add("lazy-toc-digest", "the tar-split does not hash to the TOC's tarSplitDigest")
        return None
    import zstandard

    def lines() -> Iterator[bytes]:
        src = _RangeReader(pread, pos.offset, pos.length)
        try:
            with zstandard.ZstdDecompressor().stream_reader(
                src,  # type: ignore[arg-type]  # any object with read() will do
                read_across_frames=True,
                closefd=False,
            ) as z:
                n = 0
                for line in read_lines(z, "tar-split"):
                    n += len(line) + 1
                    yield line
        except zstandard.ZstdError as exc:
            raise CorruptStreamError(f"it does not decompress: {exc}") from None
        if n not in (pos.uncompressed, pos.uncompressed + 1):  # the last newline is optional
            raise CorruptStreamError(f"it is {n} bytes, its position says {pos.uncompressed}")

    return _TarSplitMatch(iter_items(lines(), "tar-split"), rep)


def _check_estargz(
    annotations: Mapping[str, str],
    size: int,
    pread: Callable[[int, int], bytes],
    stream: Callable[[], Reader],
    diff_id: Digest | None,
    rep: _Report,
) -> None:
    toc_off = es.parse_footer(pread(max(0, size - es.FOOTER_SIZE), min(size, es.FOOTER_SIZE)))
    if not 0 < toc_off < size - es.FOOTER_SIZE or size - toc_off > es.MAX_TOC:
        rep.add("lazy-toc", f"footer: TOC offset {toc_off} is outside the blob")
        return
    member = pread(toc_off, size - es.FOOTER_SIZE - toc_off)
    try:
        tar = zlib.decompressobj(31).decompress(member, es.MAX_TOC + 4096)
    except zlib.error as exc:
        rep.add("lazy-toc", f"the TOC member does not decompress: {exc}")
        return
    import io

    scan = TarScanner(io.BytesIO(tar), what=rep.what)
    ent = scan.next()
    if ent is None or ent.header.name != es.TOC_NAME.encode():
        rep.add("lazy-toc", f"the member at {toc_off} does not start with {es.TOC_NAME}")
        return
    toc_json = b"".join(iter(lambda: scan.read(_READ), b""))
    want = annotations.get(mt.ANNOT_ESTARGZ_TOC_DIGEST, "")
    if "sha256:" + hashlib.sha256(toc_json).hexdigest() != want:
        rep.add("lazy-toc-digest", f"{es.TOC_NAME} does not hash to the toc.digest annotation")
        return
    try:
        doc = json.loads(toc_json)
        entries = doc["entries"]
        if not isinstance(entries, list):
            raise TypeError("entries is not a list")
    except (ValueError, KeyError, TypeError) as exc:
        rep.add("lazy-toc", f"{es.TOC_NAME} is not a TOC: {exc}")
        return
    groups = _group(entries, rep, unique=False)
    reader = _GzipMemberReader(stream())
    got, payloads = _stream_check(reader, "estargz", groups, rep)
    _offsets(reader.starts, payloads, "estargz", rep)
    declared = annotations.get(mt.ANNOT_ESTARGZ_UNCOMPRESSED_SIZE)
    if declared is not None and declared != str(reader.uoffset):
        rep.add(
            "lazy-size", f"uncompressed-size says {declared}, the layer is {reader.uoffset} bytes"
        )
    if diff_id is not None and got != diff_id:
        rep.add("lazy-diff-id", f"decompresses to {got}, but the config's diff_id is {diff_id}")


def iter_findings(findings: list[Finding]) -> Iterator[str]:
    """``code: message`` lines."""
    for f in findings:
        yield f"{f.code}: {f.message}"


__all__ = ["Finding", "check_layer", "iter_findings"]
