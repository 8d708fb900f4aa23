"""A streaming tar scanner that keeps every raw byte, with Go ``archive/tar`` reading rules.

The lazy-pull formats describe a layer by what Go's tar reader (vbatts/tar-split's fork of it,
which containers/storage and the stargz snapshotter use) makes of each header: their tables of
contents must agree with what those readers derive from the same bytes, or a partial pull is
refused. Python's :mod:`tarfile` differs in small ways (it strips a directory's trailing ``/``,
drops GNU atime/ctime) and hides the raw bytes, so this module parses headers itself:

* numeric fields: octal (spaces and NULs trimmed) or base-256; strings cut at the first NUL;
* USTAR prefix joined as ``prefix/name``; GNU atime/ctime when set; the STAR variant;
* PAX ``x`` records (``path``, ``linkpath``, ``size``, ``uid``, ``gid``, ``uname``, ``gname``,
  ``mtime``, ``atime``, ``ctime``, ``SCHILY.xattr.*``) and GNU ``L``/``K`` long names;
* the old ``\\0`` type flag becomes ``5`` for a name ending in ``/``, else ``0``.

Each :class:`TarEntry` carries its raw bytes (``lead``: the previous entry's padding; ``raw``:
its extension headers and header block) so a writer can reproduce the stream byte for byte,
and the scanner hands out the payload in pieces (bounded memory). What Go refuses we refuse
(:class:`~layouttool.errors.CorruptStreamError`): a bad checksum, a zero block followed by a
non-zero one, a stream cut inside a block.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from layouttool.codec import Reader
from layouttool.errors import CorruptStreamError

BLOCK: Final = 512
_ZERO_BLOCK: Final = bytes(BLOCK)
#: extension headers (PAX, GNU long names) larger than this are refused (Go and libarchive)
MAX_SPECIAL: Final = 1 << 20
_READ: Final = 1 << 20

#: type flags of entries a lazy-pull table of contents can describe
TYPE_NAMES: Final = {
    b"0": "reg",
    b"1": "hardlink",
    b"2": "symlink",
    b"3": "char",
    b"4": "block",
    b"5": "dir",
    b"6": "fifo",
}


@dataclass(slots=True)
class TarHeader:
    """One header as Go's tar reader sees it (times are nanoseconds since the epoch)."""

    typeflag: bytes
    name: bytes
    linkname: bytes
    mode: int
    uid: int
    gid: int
    size: int
    mtime_ns: int
    atime_ns: int | None
    ctime_ns: int | None
    uname: bytes
    gname: bytes
    devmajor: int
    devminor: int
    #: ``SCHILY.xattr.<key>`` records: key -> raw value (empty values too, as Go's PAXRecords)
    xattrs: dict[str, bytes] = field(default_factory=dict)
    #: every PAX record of the entry (GNU sparse ones included)
    pax: dict[str, bytes] = field(default_factory=dict)

    @property
    def has_payload(self) -> bool:
        """True when payload bytes follow the header (regular files only, as in Go)."""
        return self.typeflag not in (b"1", b"2", b"3", b"4", b"5", b"6") and self.size > 0


@dataclass(slots=True)
class TarEntry:
    """A header and where its bytes are."""

    header: TarHeader
    #: padding of the previous entry, read before this header
    lead: bytes
    #: the extension headers and the header block, exactly as in the stream
    raw: bytes
    #: offset of the first payload byte in the (uncompressed) stream
    data_offset: int


def _parse_octal(b: bytes) -> int:
    s = b.strip(b" \x00")
    if not s:
        return 0
    try:
        return int(s, 8)
    except ValueError:
        raise CorruptStreamError(f"tar: invalid octal number {b!r} in a header") from None


def _parse_numeric(b: bytes) -> int:
    """Octal, or base-256 (GNU; negative numbers inverted) when the first byte's top bit is set."""
    if b and b[0] & 0x80:
        inv = 0xFF if b[0] & 0x40 else 0
        x = int.from_bytes(bytes(c ^ inv for c in b), "big") & ((1 << (8 * len(b) - 1)) - 1)
        if x >> 63:
            raise CorruptStreamError(f"tar: base-256 number {b.hex()} overflows")
        return ~x if inv else x
    return _parse_octal(b)


def _cstr(b: bytes) -> bytes:
    i = b.find(b"\x00")
    return b if i < 0 else b[:i]


_HIGH: Final = bytes(range(128, 256))


def _checksum_ok(blk: bytes) -> bool:
    """Go accepts the unsigned and the (historical) signed byte sum."""
    try:
        value = _parse_octal(blk[148:156])
    except CorruptStreamError:
        return False
    b = blk[:148] + b"        " + blk[156:]
    unsigned = sum(b)
    high = len(b) - len(b.translate(None, _HIGH))
    return value in (unsigned, unsigned - 256 * high)


def parse_pax_time(v: bytes) -> int:
    """A PAX time (``secs[.frac]``) in nanoseconds, with Go's rules (9 digits, sign)."""
    ss, _, sn = v.partition(b".")
    try:
        secs = int(ss, 10)
    except ValueError:
        raise CorruptStreamError(f"tar: invalid PAX time {v!r}") from None
    if not sn:
        return secs * 1_000_000_000
    if not sn.isdigit():
        raise CorruptStreamError(f"tar: invalid PAX time {v!r}")
    ns = int((sn + b"000000000")[:9])
    return secs * 1_000_000_000 + (-ns if ss.startswith(b"-") else ns)


def _parse_pax(buf: bytes) -> dict[str, bytes]:
    recs: dict[str, bytes] = {}
    sparse: list[bytes] = []
    while buf:
        sp = buf.find(b" ")
        if sp <= 0:
            raise CorruptStreamError("tar: invalid PAX record")
        try:
            n = int(buf[:sp], 10)
        except ValueError:
            raise CorruptStreamError("tar: invalid PAX record length") from None
        if n <= sp or n > len(buf) or buf[n - 1 : n] != b"\n":
            raise CorruptStreamError("tar: invalid PAX record")
        rec = buf[sp + 1 : n - 1]
        buf = buf[n:]
        k, eq, v = rec.partition(b"=")
        if not eq or not k:
            raise CorruptStreamError("tar: invalid PAX record")
        key = k.decode("utf-8", "surrogateescape")
        if key in ("path", "linkpath", "uname", "gname") and b"\x00" in v:
            raise CorruptStreamError(f"tar: PAX record {key} holds a NUL byte")
        if key in ("GNU.sparse.offset", "GNU.sparse.numbytes"):
            sparse.append(v)
        else:
            recs[key] = v
    if sparse:
        recs["GNU.sparse.map"] = b",".join(sparse)
    return recs


def _parse_block(blk: bytes) -> TarHeader:
    """The header block ``blk`` (checksum already verified)."""
    magic, version = blk[257:263], blk[263:265]
    if magic == b"ustar\x00" and blk[508:512] == b"tar\x00":
        fmt = "star"
    elif magic == b"ustar\x00":
        fmt = "ustar"
    elif magic == b"ustar " and version == b" \x00":
        fmt = "gnu"
    else:
        fmt = "v7"
    h = TarHeader(
        typeflag=blk[156:157],
        name=_cstr(blk[0:100]),
        linkname=_cstr(blk[157:257]),
        size=_parse_numeric(blk[124:136]),
        mode=_parse_numeric(blk[100:108]),
        uid=_parse_numeric(blk[108:116]),
        gid=_parse_numeric(blk[116:124]),
        mtime_ns=_parse_numeric(blk[136:148]) * 1_000_000_000,
        atime_ns=None,
        ctime_ns=None,
        uname=b"",
        gname=b"",
        devmajor=0,
        devminor=0,
    )
    if fmt == "v7":
        return h
    h.uname = _cstr(blk[265:297])
    h.gname = _cstr(blk[297:329])
    h.devmajor = _parse_numeric(blk[329:337])
    h.devminor = _parse_numeric(blk[337:345])
    prefix = b""
    if fmt == "ustar":
        prefix = _cstr(blk[345:500])
    elif fmt == "star":
        prefix = _cstr(blk[345:476])
        h.atime_ns = _parse_numeric(blk[476:488]) * 1_000_000_000
        h.ctime_ns = _parse_numeric(blk[488:500]) * 1_000_000_000
    else:  # gnu: atime and ctime when set; pre-Go-1.8 files put a prefix there instead
        try:
            if blk[345] != 0:
                h.atime_ns = _parse_numeric(blk[345:357]) * 1_000_000_000
            if blk[357] != 0:
                h.ctime_ns = _parse_numeric(blk[357:369]) * 1_000_000_000
        except CorruptStreamError:
            h.atime_ns = h.ctime_ns = None
            s = _cstr(blk[345:500])
            if s.isascii():
                prefix = s
    if prefix:
        h.name = prefix + b"/" + h.name
    return h


def _merge_pax(h: TarHeader, recs: dict[str, bytes]) -> None:
    for k, v in recs.items():
        if k.startswith("SCHILY.xattr."):
            # as Go's PAXRecords (which the TOC writers read), an empty value is kept
            h.xattrs[k[len("SCHILY.xattr.") :]] = v
            continue
        if not v:
            continue  # an empty value keeps the header's own
        try:
            if k == "path":
                h.name = v
            elif k == "linkpath":
                h.linkname = v
            elif k == "uname":
                h.uname = v
            elif k == "gname":
                h.gname = v
            elif k == "uid":
                h.uid = int(v, 10)
            elif k == "gid":
                h.gid = int(v, 10)
            elif k == "size":
                h.size = int(v, 10)
            elif k == "mtime":
                h.mtime_ns = parse_pax_time(v)
            elif k == "atime":
                h.atime_ns = parse_pax_time(v)
            elif k == "ctime":
                h.ctime_ns = parse_pax_time(v)
        except ValueError:
            raise CorruptStreamError(f"tar: invalid PAX record {k}={v!r}") from None
    h.pax = recs


def _padding(n: int) -> int:
    return -n & (BLOCK - 1)


class TarScanner:
    """Walk a tar stream once, keeping its raw bytes.

    ``next()`` returns the next :class:`TarEntry` (or None at the end); ``read()`` hands out the
    current entry's payload; after ``next()`` returned None, :attr:`trailer` holds the last
    payload's padding and the end-of-archive blocks, and :meth:`read_rest` hands out whatever
    follows them. :attr:`offset` is the number of stream bytes consumed.
    """

    def __init__(self, src: Reader, *, what: str = "layer tar") -> None:
        self._src = src
        self._buf = b""
        self._pos = 0
        self.offset = 0
        self._left = 0  # payload bytes of the current entry not yet read
        self._pad = 0  # padding after the current entry's payload
        self.trailer = b""
        #: the padding read before the last header (or, at the end, after the last payload)
        self.last_lead = b""
        self._done = False
        self._what = what

    # ------------------------------------------------------------------ raw reading
    def _fill(self, need: int) -> bool:
        """Make at least ``need`` bytes available in the buffer; False at EOF before that."""
        have = len(self._buf) - self._pos
        if have >= need:
            return True
        parts = [self._buf[self._pos :]]
        while have < need:
            more = self._src.read(max(_READ, need - have))
            if not more:
                self._buf, self._pos = b"".join(parts), 0
                return False
            parts.append(more)
            have += len(more)
        self._buf, self._pos = b"".join(parts), 0
        return True

    def _take(self, n: int) -> bytes:
        if not self._fill(n):
            got = len(self._buf) - self._pos
            raise CorruptStreamError(
                f"{self._what}: truncated (stream ends {n - got} bytes into a {n}-byte read "
                f"at offset {self.offset + got})"
            )
        data = self._buf[self._pos : self._pos + n]
        self._pos += n
        self.offset += n
        return data

    def _take_upto(self, n: int) -> bytes:
        """Up to ``n`` bytes (fewer only at EOF)."""
        self._fill(min(n, _READ))
        data = self._buf[self._pos : self._pos + n]
        self._pos += len(data)
        self.offset += len(data)
        return data

    def read(self, n: int = _READ) -> bytes:
        """Up to ``n`` bytes of the current entry's payload (b"" when it is all read)."""
        if self._left <= 0:
            return b""
        want = min(n, self._left)
        if len(self._buf) - self._pos == 0 and not self._fill(1):
            raise CorruptStreamError(f"{self._what}: truncated inside a file's content")
        data = self._buf[self._pos : self._pos + want]
        self._pos += len(data)
        self.offset += len(data)
        self._left -= len(data)
        return data

    # ------------------------------------------------------------------ entries
    def _skip_payload(self) -> None:
        while self._left > 0:
            self.read(min(self._left, _READ))

    def next(self) -> TarEntry | None:
        """The next entry; the rest of the current payload is skipped first."""
        if self._done:
            return None
        self._skip_payload()
        lead = self._take(self._pad) if self._pad else b""
        self.last_lead = lead
        self._pad = 0
        raw: list[bytes] = []
        recs: dict[str, bytes] | None = None
        long_name: bytes | None = None
        long_link: bytes | None = None
        while True:
            start = self.offset
            if not self._fill(BLOCK):
                rest = self._take_upto(BLOCK)
                if rest:
                    raise CorruptStreamError(
                        f"{self._what}: truncated (a partial {len(rest)}-byte header block at "
                        f"offset {start})"
                    )
                if raw:
                    raise CorruptStreamError(f"{self._what}: ends after an extension header")
                self._finish(lead)
                return None
            blk = self._take(BLOCK)
            if blk == _ZERO_BLOCK:
                if raw:
                    raise CorruptStreamError(f"{self._what}: ends after an extension header")
                self._end(lead + blk)
                return None
            if not _checksum_ok(blk):
                raise CorruptStreamError(
                    f"{self._what}: invalid tar header at offset {start} (bad checksum)"
                )
            h = _parse_block(blk)
            raw.append(blk)
            if h.size < 0:
                raise CorruptStreamError(f"{self._what}: negative size at offset {start}")
            tf = h.typeflag
            if tf in (b"x", b"g", b"L", b"K"):
                if h.size > MAX_SPECIAL:
                    raise CorruptStreamError(
                        f"{self._what}: extension header of {h.size} bytes at offset {start} "
                        f"is larger than {MAX_SPECIAL}"
                    )
                body = self._take(h.size)
                pad = self._take(_padding(h.size))
                raw.append(body)
                raw.append(pad)
                if tf in (b"x", b"g"):
                    recs = _parse_pax(body)
                    if tf == b"g":
                        # Go hands a global header back as an entry of its own
                        _merge_pax(h, recs)
                        return TarEntry(h, lead, b"".join(raw), self.offset)
                elif tf == b"L":
                    long_name = _cstr(body)
                else:
                    long_link = _cstr(body)
                continue
            if recs:
                _merge_pax(h, recs)
            if long_name:
                h.name = long_name
            if long_link:
                h.linkname = long_link
            if tf == b"\x00":
                h.typeflag = b"5" if h.name.endswith(b"/") else b"0"
            if h.size < 0:
                raise CorruptStreamError(f"{self._what}: negative size at offset {start}")
            n = h.size if h.has_payload else 0
            self._left = n
            self._pad = _padding(n)
            return TarEntry(h, lead, b"".join(raw), self.offset)

    def _end(self, first: bytes) -> None:
        """A zero block was read: the second must be zero too (or the stream ends)."""
        second = self._take_upto(BLOCK)
        if second and len(second) < BLOCK:
            raise CorruptStreamError(f"{self._what}: truncated end-of-archive block")
        if second and second != _ZERO_BLOCK:
            raise CorruptStreamError(
                f"{self._what}: a zero block followed by a non-zero block at offset "
                f"{self.offset - BLOCK} (a corrupt or concatenated tar)"
            )
        self._finish(first + second)

    def _finish(self, head: bytes) -> None:
        self._done = True
        self.trailer = head

    def read_rest(self, n: int = _READ) -> bytes:
        """After the end: up to ``n`` of the bytes that follow the end-of-archive blocks."""
        if not self._done:
            raise RuntimeError("read_rest() before the end of the archive")
        return self._take_upto(n)


__all__ = ["BLOCK", "TYPE_NAMES", "TarEntry", "TarHeader", "TarScanner", "parse_pax_time"]
