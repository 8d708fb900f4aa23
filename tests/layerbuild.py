"""Build layer tars in memory from a list of entry dicts (for tests).

An entry is a dict with:

* ``type``: ``"file"`` (default), ``"dir"``, ``"symlink"``, ``"hardlink"``, ``"char"``,
  ``"block"``, ``"fifo"``, or a raw one-byte tar typeflag (``b"V"``) for odd entries
* ``name``: the path stored in the tar, verbatim (``"/etc/x"``, ``"../x"``, ``"a/"``)
* ``data``: file payload (``bytes`` or ``str``, UTF-8); default empty
* ``target`` (or ``linkname``): symlink / hardlink target, verbatim
* ``mode`` (default 0o644 for files, 0o755 for dirs, 0o777 for symlinks), ``uid``, ``gid``
  (default 0), ``uname``, ``gname``, ``mtime`` (default 1_600_000_000; int or float)
* ``xattrs``: ``{"user.foo": b"bar"}`` stored as PAX ``SCHILY.xattr.*`` records
* ``pax``: extra raw PAX records ``{"key": "value"}``
* ``devmajor``, ``devminor`` for devices

``build_layer(entries)`` returns the tar bytes (PAX format unless ``fmt`` says otherwise),
``NonSeekable(data)`` wraps bytes as a forward-only stream like the one ``unpack`` hands to
``rootfs.apply_layer``.
"""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterable, Mapping
from typing import Any

DEFAULT_MTIME = 1_600_000_000

_TYPES = {
    "file": tarfile.REGTYPE,
    "reg": tarfile.REGTYPE,
    "dir": tarfile.DIRTYPE,
    "symlink": tarfile.SYMTYPE,
    "hardlink": tarfile.LNKTYPE,
    "char": tarfile.CHRTYPE,
    "block": tarfile.BLKTYPE,
    "fifo": tarfile.FIFOTYPE,
}


def _as_bytes(value: bytes | str) -> bytes:
    return value.encode() if isinstance(value, str) else value


def make_tarinfo(entry: Mapping[str, Any]) -> tuple[tarfile.TarInfo, bytes | None]:
    """One entry dict -> (TarInfo, payload or None)."""
    kind = entry.get("type", "file")
    info = tarfile.TarInfo(entry["name"])
    info.type = kind if isinstance(kind, bytes) else _TYPES[kind]
    kind_name = kind if isinstance(kind, str) else ""
    default_mode = {"dir": 0o755, "symlink": 0o777}.get(kind_name, 0o644)
    info.mode = entry.get("mode", default_mode)
    info.uid = entry.get("uid", 0)
    info.gid = entry.get("gid", 0)
    info.uname = entry.get("uname", "")
    info.gname = entry.get("gname", "")
    info.mtime = entry.get("mtime", DEFAULT_MTIME)
    info.linkname = entry.get("target", entry.get("linkname", ""))
    info.devmajor = entry.get("devmajor", 0)
    info.devminor = entry.get("devminor", 0)
    pax: dict[str, str] = {}
    for key, value in entry.get("xattrs", {}).items():
        pax["SCHILY.xattr." + key] = _as_bytes(value).decode("utf-8", "surrogateescape")
    pax.update(entry.get("pax", {}))
    info.pax_headers = pax
    payload = None
    if info.type in (tarfile.REGTYPE, tarfile.AREGTYPE) or isinstance(kind, bytes):
        payload = _as_bytes(entry.get("data", b""))
        info.size = len(payload)
    return info, payload


def build_layer(entries: Iterable[Mapping[str, Any]], *, fmt: int = tarfile.PAX_FORMAT) -> bytes:
    """Return the bytes of an uncompressed tar holding ``entries`` in order."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for entry in entries:
            info, payload = make_tarinfo(entry)
            tar.addfile(info, io.BytesIO(payload) if payload is not None else None)
    return buf.getvalue()


class NonSeekable(io.RawIOBase):
    """A forward-only binary stream over bytes that counts what was read."""

    def __init__(self, data: bytes) -> None:
        self._inner = io.BytesIO(data)
        self.consumed = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def readinto(self, b: Any) -> int:
        n = self._inner.readinto(b)
        self.consumed += n
        return n

    def rest(self) -> bytes:
        """Drain what the reader left (the caller does this to finish hashing)."""
        data = self._inner.read()
        self.consumed += len(data)
        return data
