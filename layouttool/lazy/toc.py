"""Pieces both tables of contents share: entry types, names, times, xattrs, JSON.

Both formats take each field from Go's view of the tar header (:mod:`.tarscan`) and write it
with Go's ``encoding/json`` conventions: struct fields in declaration order, ``omitempty``
fields left out when zero, ``[]byte`` values base64, times RFC 3339.
"""

from __future__ import annotations

import base64
import datetime as _dt
import json
import re
from typing import Any, Final

from layouttool.errors import UnsupportedError
from layouttool.lazy.tarscan import TYPE_NAMES, TarHeader

_EPOCH: Final = _dt.datetime(1970, 1, 1, tzinfo=_dt.UTC)


def entry_type(h: TarHeader, what: str) -> str:
    """The TOC type of a header (``reg``, ``dir``, ...); other tar types cannot be described."""
    t = TYPE_NAMES.get(h.typeflag)
    if t is None:
        kind = {b"g": "a global PAX header", b"S": "a GNU sparse file", b"7": "a contiguous file"}
        raise UnsupportedError(
            f"{what}: entry {h.name.decode('utf-8', 'replace')!r} is "
            f"{kind.get(h.typeflag, f'of tar type {h.typeflag!r}')}, which a lazy-pull "
            "table of contents cannot describe"
        )
    if "GNU.sparse.map" in h.pax or "GNU.sparse.major" in h.pax:
        raise UnsupportedError(
            f"{what}: entry {h.name.decode('utf-8', 'replace')!r} is a GNU sparse file, which "
            "a lazy-pull table of contents cannot describe"
        )
    return t


def text(b: bytes, field: str, what: str) -> str:
    """A name as the TOC spells it: it must be UTF-8 (Go's JSON would replace other bytes)."""
    try:
        return b.decode("utf-8")
    except UnicodeDecodeError:
        raise UnsupportedError(
            f"{what}: the {field} {b!r} is not UTF-8; a lazy-pull table of contents (JSON) "
            "cannot name it"
        ) from None


def _datetime(ns: int, what: str) -> tuple[_dt.datetime, int]:
    secs, frac = divmod(ns, 1_000_000_000)
    try:
        t = _EPOCH + _dt.timedelta(seconds=secs)
    except OverflowError:
        raise UnsupportedError(f"{what}: a time of {secs} s is outside years 1-9999") from None
    return t, frac


def rfc3339_nano(ns: int, what: str) -> str:
    """Go's ``time.RFC3339Nano`` of a UTC instant: fraction without trailing zeros."""
    t, frac = _datetime(ns, what)
    out = t.strftime("%Y-%m-%dT%H:%M:%S")
    if t.year < 1000:
        out = f"{t.year:04d}" + out[out.index("-") :]
    if frac:
        out += "." + f"{frac:09d}".rstrip("0")
    return out + "Z"


#: Go's zero ``time.Time`` (0001-01-01T00:00:00Z), in nanoseconds since the epoch
GO_ZERO_TIME_NS: Final = -62_135_596_800 * 1_000_000_000
_RFC3339: Final = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)[Tt](\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?(?:[Zz]|([+-])(\d\d):(\d\d))"
)


def parse_rfc3339_ns(value: str) -> int | None:
    """An RFC 3339 time (any UTC offset, up to nanoseconds) in nanoseconds since the epoch;
    None when it is not one (Go's writers use the local zone: ``+02:00`` is as good as ``Z``)."""
    m = _RFC3339.fullmatch(value)
    if m is None:
        return None
    y, mo, d, hh, mi, ss, frac, sign, oh, om = m.groups()
    try:
        t = _dt.datetime(int(y), int(mo), int(d), int(hh), int(mi), int(ss), tzinfo=_dt.UTC)
    except ValueError:
        return None
    secs = (t - _EPOCH) // _dt.timedelta(seconds=1)
    if sign:
        secs -= (1 if sign == "+" else -1) * (int(oh) * 3600 + int(om) * 60)
    return secs * 1_000_000_000 + int((frac or "").ljust(9, "0"))


def rfc3339_seconds(ns: int, what: str) -> str:
    """eStargz's ``modtime``: empty for the epoch second, else UTC rounded to the second."""
    if ns // 1_000_000_000 == 0:
        return ""
    secs, frac = divmod(ns, 1_000_000_000)
    if frac >= 500_000_000:
        secs += 1
    return rfc3339_nano(secs * 1_000_000_000, what)


def b64(data: bytes) -> str:
    """Go's ``[]byte`` in JSON."""
    return base64.b64encode(data).decode("ascii")


def xattrs(h: TarHeader, what: str) -> dict[str, str]:
    """``SCHILY.xattr.*`` records as a TOC holds them: key -> base64 of the value, keys sorted
    (Go's JSON of a map), empty values kept (both writers read Go's ``hdr.PAXRecords``)."""
    return {
        text(k.encode("utf-8", "surrogateescape"), "xattr name", what): b64(h.xattrs[k])
        for k in sorted(h.xattrs)
    }


def dumps(doc: Any, *, indent: str | None = None) -> bytes:
    """JSON as Go's encoder writes it: UTF-8, compact (or indented), ``<>&`` escaped."""
    if indent is None:
        s = json.dumps(doc, ensure_ascii=False, separators=(",", ":"))
    else:
        s = json.dumps(doc, ensure_ascii=False, indent=indent)
    s = s.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return s.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029").encode("utf-8")


__all__ = [
    "GO_ZERO_TIME_NS",
    "b64",
    "dumps",
    "entry_type",
    "parse_rfc3339_ns",
    "rfc3339_nano",
    "rfc3339_seconds",
    "text",
    "xattrs",
]
