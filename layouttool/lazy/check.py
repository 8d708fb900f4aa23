"""Check a lazy-pull layer against its annotations and its own tar: does the TOC tell the truth?

A runtime that pulls lazily trusts the TOC instead of the tar: a TOC whose offsets, digests or
metadata disagree with the layer gives a container other files than a plain pull would. So
:func:`check_layer` reads the blob once more (the footer, TOC and tar-split by range, then one
streaming pass over the whole blob) and reports each disagreement as a :class:`Finding`:

* ``lazy-annotation``: the annotations cannot be read, or disagree with the footer;
* ``lazy-toc-digest``: the TOC (or tar-split) does not hash to what names it;
* ``lazy-toc``: the TOC cannot be read (corrupt compression or JSON, missing footer);
* ``lazy-toc-entry``: an entry's metadata differs from the tar header, or the TOC and the tar
  list different files;
* ``lazy-toc-offset``: an offset does not start (or end) the compressed piece holding that
  file's bytes;
* ``lazy-toc-content``: a file or chunk digest does not match the bytes;
* ``lazy-tar-split``: the tar-split does not rebuild the tar;
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
from layouttool.lazy.tarscan import TarHeader, TarScanner
from layouttool.lazy.toc import rfc3339_nano, rfc3339_seconds, xattrs

_READ: Final = 1 << 20
_MAX_FINDINGS: Final = 50


@dataclass(frozen=True, slots=True)
class Finding:
    """One way a lazy layer's metadata disagrees with its bytes."""

    code: str
    message: str
    severity: str = "problem"


# ---------------------------------------------------------------------------------- frames
class _ZstdFrameReader:
    """Decompress a zstd stream frame by frame, recording where each frame starts.

    ``starts`` maps the compressed offset of every frame (and of the stream's end) to the
    uncompressed offset at that point; skippable frames are passed over.
    """

    def __init__(self, src: Reader) -> None:
        import zstandard

        self._src = src
        self._zstd = zstandard
        self._buf = b""
        self._pos = 0  # compressed offset of _buf[0]
        self.starts: dict[int, int] = {}
        self.uoffset = 0
        self._dec: Any = None
        self._skip = 0
        self._eof = False

    def _more(self) -> bool:
        data = self._src.read(_READ)
        if not data:
            self._eof = True
            return False
        self._buf += data
        return True

    def read(self, n: int = -1, /) -> bytes:
        while True:
            if self._dec is not None:
                if not self._buf and not self._more():
                    raise CorruptStreamError("zstd stream ends inside a frame")
                out: bytes = self._dec.decompress(self._buf)
                if self._dec.eof:
                    used = len(self._buf) - len(self._dec.unused_data)
                    self._pos += used
                    self._buf = self._buf[used:]
                    self._dec = None
                else:
                    self._pos += len(self._buf)
                    self._buf = b""
                if out:
                    self.uoffset += len(out)
                    return out
                continue
            if self._skip:
                take = min(self._skip, len(self._buf))
                self._buf = self._buf[take:]
                self._pos += take
                self._skip -= take
                if self._skip and not self._more():
                    raise CorruptStreamError("zstd stream ends inside a skippable frame")
                continue
            while len(self._buf) < 8 and self._more():
                pass
            if not self._buf:
                self.starts[self._pos] = self.uoffset
                return b""
            magic = int.from_bytes(self._buf[:4], "little")
            if magic & ~0xF == 0x184D2A50:
                if len(self._buf) < 8:
                    raise CorruptStreamError("truncated skippable frame header")
                self._skip = int.from_bytes(self._buf[4:8], "little")
                self._buf = self._buf[8:]
                self._pos += 8
                continue
            self.starts[self._pos] = self.uoffset
            self._dec = self._zstd.ZstdDecompressor().decompressobj()


class _GzipMemberReader:
    """Decompress a gzip stream member by member, recording where each member starts."""

    def __init__(self, src: Reader, stop: int) -> None:
        self._src = src
        self._stop = stop  # members from here on are not tar data (the TOC and the footer)
        self._buf = b""
        self._pos = 0
        self.starts: dict[int, int] = {}
        self.uoffset = 0
        self._dec: Any = None

    def _more(self) -> bool:
        data = self._src.read(_READ)
        if not data:
            return False
        self._buf += data
        return True

    def read(self, n: int = -1, /) -> bytes:
        while True:
            if self._dec is None:
                if not self._buf and not self._more():
                    self.starts[self._pos] = self.uoffset
                    return b""
                self.starts[self._pos] = self.uoffset
                self._dec = zlib.decompressobj(31)
            if not self._buf and not self._more():
                raise CorruptStreamError("gzip stream ends inside a member")
            try:
                out: bytes = self._dec.decompress(self._buf)
            except zlib.error as exc:
                raise CorruptStreamError(f"gzip: {exc}") from None
            if self._dec.eof:
                used = len(self._buf) - len(self._dec.unused_data)
                self._pos += used
                self._buf = self._buf[used:]
                self._dec = None
            else:
                self._pos += len(self._buf)
                self._buf = b""
            if out:
                self.uoffset += len(out)
                return out


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


def _time_eq(a: object, b: str | None) -> bool:
    """containers/storage's ensureTimePointersMatch: the zero time and the epoch are absent."""
    zero = ("0001-01-01T00:00:00Z", "1970-01-01T00:00:00Z", None, "")
    if a in zero and b in zero:
        return True
    return a == b


def _zc_meta(e: Mapping[str, Any], h: TarHeader, typ: str, rep: _Report) -> list[str]:
    bad = []
    want = {
        "type": typ,
        "linkName": h.linkname.decode("utf-8", "replace"),
        "mode": h.mode,
        "size": h.size,
        "uid": h.uid,
        "gid": h.gid,
        "devMajor": h.devmajor,
        "devMinor": h.devminor,
    }
    empty = {"linkName": "", "mode": 0, "size": 0, "uid": 0, "gid": 0, "devMajor": 0, "devMinor": 0}
    for k, v in want.items():
        if e.get(k, empty.get(k)) != v:
            bad.append(f"{k} {e.get(k)!r} (tar: {v!r})")
    for k, ns in (("modtime", h.mtime_ns), ("accesstime", h.atime_ns), ("changetime", h.ctime_ns)):
        t = rfc3339_nano(ns, rep.what) if ns is not None else None
        if not _time_eq(e.get(k), t):
            bad.append(f"{k} {e.get(k)!r} (tar: {t!r})")
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
        if e.get(k, 0) != v:
            bad.append(f"{k} {e.get(k)!r} (tar: {v!r})")
    if typ in ("symlink", "hardlink") and e.get("linkName", "") != h.linkname.decode(
        "utf-8", "replace"
    ):
        bad.append(f"linkName {e.get('linkName')!r}")
    mod = rfc3339_seconds(h.mtime_ns, rep.what)
    if e.get("modtime", "") != mod:
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
        if not isinstance(e, dict) or not isinstance(e.get("name", ""), str):
            rep.add("lazy-toc", "a TOC entry is not an object with a name")
            continue
        if e.get("type") == "chunk":
            if last is None:
                rep.add("lazy-toc-entry", f"chunk entry {e.get('name')!r} without a file before it")
            else:
                last.append(e)
            continue
        name = es.clean_name(str(e.get("name", "")))
        if name in out and unique:
            rep.add("lazy-toc-entry", f"the TOC names {name!r} twice")
        last = [e]
        out.setdefault(name, []).append(last)
    return out


def _stream_check(
    reader: Any,
    fmt: str,
    groups: dict[str, list[list[dict[str, Any]]]],
    rep: _Report,
) -> tuple[Digest, int, list[tuple[str, list[dict[str, Any]], int, int]]]:
    """Walk the tar in the decompressed stream; check metadata and digests; return the
    diff_id, the uncompressed size and, per regular file, (name, TOC group, payload start,
    size) for the offset checks that need every frame boundary."""
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
        name = es.clean_name(h.name.decode("utf-8", "surrogateescape"))
        if fmt == "estargz" and name == es.TOC_NAME:
            continue
        queue = groups.get(name)
        if not queue:
            rep.add("lazy-toc-entry", f"{_name(h)!r} is in the tar but not in the TOC")
            continue
        group = queue.pop(0)
        typ = {
            b"0": "reg",
            b"1": "hardlink",
            b"2": "symlink",
            b"3": "char",
            b"4": "block",
            b"5": "dir",
            b"6": "fifo",
        }.get(h.typeflag, "?")
        meta = _zc_meta if fmt == "zstd:chunked" else _es_meta
        bad = meta(group[0], h, typ, rep)
        if bad:
            rep.add("lazy-toc-entry", f"{_name(h)!r}: the TOC says " + ", ".join(bad))
        if typ != "reg" or not h.size:
            continue
        start = ent.data_offset
        ranges = []
        for c in group:
            off = int(c.get("chunkOffset", 0) or 0)
            size = int(c.get("chunkSize", 0) or 0) or (h.size - off)
            ranges.append((off, off + size, c.get("chunkDigest"), hashlib.sha256()))
        whole = hashlib.sha256()
        pos = 0
        while piece := scan.read(_READ):
            whole.update(piece)
            for a, b, _, hh in ranges:
                lo, hi = max(a, pos), min(b, pos + len(piece))
                if lo < hi:
                    hh.update(piece[lo - pos : hi - pos])
            pos += len(piece)
        digest = "sha256:" + whole.hexdigest()
        if group[0].get("digest") != digest:
            rep.add("lazy-toc-content", f"{_name(h)!r}: the TOC digest is not its content's")
        if len(group) > 1 or group[0].get("chunkDigest"):
            for a, _, want, hh in ranges:
                if want is not None and want != "sha256:" + hh.hexdigest():
                    rep.add("lazy-toc-content", f"{_name(h)!r}: chunk at {a}: wrong chunkDigest")
        payloads.append((name, group, start, h.size))
    missing = {n for n, q in groups.items() if q}
    if fmt == "estargz":
        missing -= {""}
    for name in sorted(missing)[:5]:
        rep.add("lazy-toc-entry", f"the TOC lists {name!r}, which the tar does not hold")
    total = scan.offset + len(scan.trailer)
    while rest := scan.read_rest():
        total += len(rest)
    while reader.read(_READ):  # frames after the tar's end (none are expected)
        pass
    return Digest.from_hasher("sha256", diff), scan.offset, payloads


def _offsets(
    starts: dict[int, int],
    payloads: list[tuple[str, list[dict[str, Any]], int, int]],
    fmt: str,
    rep: _Report,
) -> None:
    for name, group, start, size in payloads:
        e = group[0]
        for c in group:
            coff = c.get("offset")
            inner = int(c.get("innerOffset", 0) or 0)
            want = start + int(c.get("chunkOffset", 0) or 0)
            if not isinstance(coff, int) or starts.get(coff, -1) + inner != want:
                rep.add(
                    "lazy-toc-offset",
                    f"{name!r}: offset {coff!r} does not start the piece holding its bytes "
                    f"at {want}",
                )
                break
        if fmt == "zstd:chunked":
            end = e.get("endOffset")
            if not isinstance(end, int) or starts.get(end) != start + size:
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
    foot = zc.parse_footer(pread(max(0, size - 72), min(size, 72)))
    if foot.toc != loc.toc:
        rep.add(
            "lazy-annotation", f"manifest-position {loc.toc} disagrees with the footer's {foot.toc}"
        )
    if loc.tar_split is not None and foot.tar_split is not None and loc.tar_split != foot.tar_split:
        rep.add("lazy-annotation", "tarsplit-position disagrees with the footer")
    if loc.toc.offset + loc.toc.length > size:
        rep.add("lazy-annotation", "manifest-position points past the end of the blob")
        return
    ctoc = pread(loc.toc.offset, loc.toc.length)
    if Digest.of_bytes(ctoc) != loc.toc_digest:
        rep.add(
            "lazy-toc-digest",
            f"the TOC hashes to {Digest.of_bytes(ctoc)}, the annotation says {loc.toc_digest}",
        )
        return
    toc = zc.decompress_toc(ctoc, loc.toc.uncompressed, rep.what)
    groups = _group(toc["entries"], rep, unique=True)
    ts_digest = toc.get("tarSplitDigest")
    if ts_digest:
        pos = loc.tar_split or foot.tar_split
        if pos is None:
            rep.add("lazy-annotation", "the TOC names a tar-split, but no position locates it")
        else:
            _check_tar_split(pread(pos.offset, pos.length), str(ts_digest), pos.uncompressed, rep)
    src = stream()
    reader = _ZstdFrameReader(src)
    got, _, payloads = _stream_check(reader, "zstd:chunked", groups, rep)
    _offsets(reader.starts, payloads, "zstd:chunked", rep)
    if diff_id is not None and got != diff_id:
        rep.add("lazy-diff-id", f"decompresses to {got}, but the config's diff_id is {diff_id}")


def _check_tar_split(data: bytes, digest: str, usize: int, rep: _Report) -> None:
    if "sha256:" + hashlib.sha256(data).hexdigest() != digest:
        rep.add("lazy-toc-digest", "the tar-split does not hash to the TOC's tarSplitDigest")
        return
    import zstandard

    try:
        raw = zstandard.ZstdDecompressor().decompressobj().decompress(data)
    except zstandard.ZstdError as exc:
        rep.add("lazy-tar-split", f"tar-split does not decompress: {exc}")
        return
    if len(raw) != usize:
        rep.add("lazy-tar-split", f"tar-split is {len(raw)} bytes, the position says {usize}")


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
    reader = _GzipMemberReader(stream(), toc_off)
    got, usize, payloads = _stream_check(reader, "estargz", groups, rep)
    _offsets(reader.starts, payloads, "estargz", rep)
    declared = annotations.get(mt.ANNOT_ESTARGZ_UNCOMPRESSED_SIZE)
    if declared is not None and declared != str(reader.uoffset):
        rep.add(
            "lazy-size", f"uncompressed-size says {declared}, the layer is {reader.uoffset} bytes"
        )
    if diff_id is not None and got != diff_id:
        rep.add("lazy-diff-id", f"decompresses to {got}, but the config's diff_id is {diff_id}")
    del usize


def iter_findings(findings: list[Finding]) -> Iterator[str]:
    """``code: message`` lines."""
    for f in findings:
        yield f"{f.code}: {f.message}"


__all__ = ["Finding", "check_layer", "iter_findings"]
