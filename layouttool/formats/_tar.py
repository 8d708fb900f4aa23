"""The outer tar of a ``docker save`` or OCI archive: member index, names, links, caps.

A path that ``manifest.json`` (or an OCI ``index.json``) names is a path *inside the archive*.
It is hostile input (CVE-2014-9358): it may be absolute, climb out with ``..``, or name a member
that is a symlink (which skopeo and Docker write for shared layers) or a hardlink. This module
turns such a path into exactly one regular-file member or refuses it:

* names are normalised (``./`` prefixes, ``//``, ``.`` components, inner ``..``); a name that is
  absolute or climbs above the archive root is refused (:class:`UnsafeInputError`, exit 6);
* symlinks (relative to the link's directory) and hardlinks (relative to the archive root) are
  followed component by component, at most :data:`MAX_HOPS` times, so a cycle is an error and
  a target can never leave the archive; an absolute symlink target is refused;
* the result must be a regular, non-sparse file (:class:`InvalidInputError`, exit 4).

Nothing here reads member data: the index holds headers only (and byte offsets when the archive
is a seekable file, so each member can later be read on its own).
"""

from __future__ import annotations

import posixpath
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final, Literal

from layouttool.codec import Reader
from layouttool.errors import (
    CorruptStreamError,
    InvalidInputError,
    LayoutToolError,
    NotFoundError,
    UnsafeInputError,
)

#: symlink/hardlink hops allowed while resolving one path (Linux allows 40)
MAX_HOPS: Final = 40
#: members an archive may hold; a docker save has a few per layer, so this is generous
MAX_MEMBERS: Final = 200_000

Kind = Literal["file", "dir", "symlink", "hardlink", "other"]


@dataclass(frozen=True, slots=True)
class Member:
    """One member of the outer tar, by its normalised name."""

    name: str
    kind: Kind
    size: int
    #: where its data starts in the (uncompressed) archive; -1 when read as a stream
    offset: int
    linkname: str
    sparse: bool = False


def normalize(name: str) -> str | None:
    """The canonical relative form of an archive path, or None when it is absolute or escapes.

    ``./a//b/`` -> ``a/b``; ``a/../b`` -> ``b``; ``../x`` and ``/x`` -> None; ``.`` -> ``""``.
    """
    if name.startswith("/") or "\x00" in name:
        return None
    parts: list[str] = []
    for comp in name.split("/"):
        if comp in ("", "."):
            continue
        if comp == "..":
            if not parts:
                return None
            parts.pop()
            continue
        parts.append(comp)
    return "/".join(parts)


def clean_ref(path: object, what: str) -> str:
    """Validate a path that a manifest names; refuse absolute paths and escapes (exit 6)."""
    if not isinstance(path, str) or not path:
        raise InvalidInputError(f"{what}: expected a non-empty path string, found {path!r}")
    norm = normalize(path)
    if norm is None:
        raise UnsafeInputError(
            f"{what}: path {path!r} points outside the archive; refusing it "
            "(the tarball is corrupt or malicious)"
        )
    if not norm:
        raise InvalidInputError(f"{what}: path {path!r} names the archive root, not a file")
    return norm


def _kind(ti: tarfile.TarInfo) -> Kind:
    if ti.issym():
        return "symlink"
    if ti.islnk():
        return "hardlink"
    if ti.isdir():
        return "dir"
    if ti.isreg():
        return "file"
    return "other"


class MemberIndex:
    """Every member of an archive by normalised name (the last one wins, as in extraction)."""

    def __init__(self) -> None:
        self.members: dict[str, Member] = {}
        #: names that were absolute or escaped: never indexed, reported if referenced
        self.unsafe_names: list[str] = []

    def add_tarinfo(self, ti: tarfile.TarInfo, *, seekable: bool) -> Member | None:
        """Index one header; returns the member, or None when its name is unsafe."""
        if len(self.members) >= MAX_MEMBERS:
            raise InvalidInputError(
                f"archive has more than {MAX_MEMBERS} members; not a docker save tarball"
            )
        norm = normalize(ti.name)
        if norm is None or not norm:
            self.unsafe_names.append(ti.name)
            return None
        member = Member(
            name=norm,
            kind=_kind(ti),
            size=ti.size if ti.isreg() else 0,
            offset=ti.offset_data if seekable else -1,
            linkname=ti.linkname,
            sparse=ti.issparse(),
        )
        self.members[norm] = member
        return member

    def get(self, name: str) -> Member | None:
        """The member stored under the normalised ``name``, if any."""
        return self.members.get(name)

    def __contains__(self, name: str) -> bool:
        return name in self.members

    def resolve(self, path: str, what: str) -> Member:
        """Follow links from the archive path ``path`` to one regular-file member.

        ``path`` must already be normalised (see :func:`clean_ref`). Raises
        :class:`UnsafeInputError` for an escape or a cycle, :class:`NotFoundError` when
        nothing is there, :class:`InvalidInputError` for a directory, device or sparse file.
        """
        hops = 0
        pending = path.split("/") if path else []
        done: list[str] = []
        while True:
            while pending:
                comp = pending.pop(0)
                cand = "/".join([*done, comp])
                m = self.members.get(cand)
                if m is not None and m.kind == "symlink":
                    hops += 1
                    if hops > MAX_HOPS:
                        raise UnsafeInputError(
                            f"{what}: {path!r}: too many levels of links (a link cycle?)"
                        )
                    if m.linkname.startswith("/"):
                        raise UnsafeInputError(
                            f"{what}: {path!r}: member {cand!r} is a symlink to the absolute "
                            f"path {m.linkname!r}, outside the archive; refusing it"
                        )
                    joined = posixpath.join("/".join(done), m.linkname)
                    target = normalize(joined)
                    if target is None:
                        raise UnsafeInputError(
                            f"{what}: {path!r}: member {cand!r} is a symlink to "
                            f"{m.linkname!r}, which points outside the archive; refusing it"
                        )
                    pending = (target.split("/") if target else []) + pending
                    done = []
                    continue
                done.append(comp)
            name = "/".join(done)
            m = self.members.get(name)
            if m is None:
                if any(normalize(u.lstrip("/")) == name for u in self.unsafe_names):
                    raise UnsafeInputError(
                        f"{what}: member {path!r} is stored under an absolute or escaping "
                        "name; refusing it"
                    )
                raise NotFoundError(f"{what}: {path!r} is not in the archive")
            if m.kind == "hardlink":
                hops += 1
                if hops > MAX_HOPS:
                    raise UnsafeInputError(
                        f"{what}: {path!r}: too many levels of links (a link cycle?)"
                    )
                target = normalize(m.linkname)
                if target is None or not target:
                    raise UnsafeInputError(
                        f"{what}: {path!r}: member {name!r} is a hardlink to "
                        f"{m.linkname!r}, outside the archive; refusing it"
                    )
                pending = target.split("/")
                done = []
                continue
            if m.kind != "file":
                raise InvalidInputError(
                    f"{what}: {path!r} resolves to {name!r}, which is a {m.kind}, "
                    "not a regular file"
                )
            if m.sparse:
                raise InvalidInputError(f"{what}: {path!r} is a sparse tar member; not supported")
            return m


class _Header(tarfile.TarInfo):
    """A TarInfo that leaves on its TarFile the error of the header read that ended it.

    :mod:`tarfile` takes a header cut short or corrupt after the first member for the end of
    the archive and stops without a word, so a truncated save read as a smaller one (a
    V1 save of the first layers, say). Go's archive/tar, which Docker reads saves with,
    calls both an error; only a clean end (an end-of-archive block, even cut short, or nothing
    at all at a header's place) ends an archive here too.
    """

    @classmethod
    def frombuf(cls, buf: bytes | bytearray, encoding: str, errors: str) -> _Header:
        if 0 < len(buf) < tarfile.BLOCKSIZE and not buf.strip(b"\0"):
            # the end-of-archive block, cut short: every member was whole, so it is the end
            raise tarfile.EOFHeaderError("end of file header")  # type: ignore[attr-defined]
        return super().frombuf(buf, encoding, errors)

    @classmethod
    def fromtarfile(cls, tf: tarfile.TarFile) -> _Header:
        try:
            return super().fromtarfile(tf)
        except tarfile.HeaderError as exc:
            tf.layouttool_end = exc  # type: ignore[attr-defined]
            raise


#: the header errors that tarfile would take for the end of the archive
_BAD_END: Final = (tarfile.TruncatedHeaderError, tarfile.InvalidHeaderError)  # type: ignore[attr-defined]


def _check_end(tf: tarfile.TarFile, what: str) -> None:
    """After the last member: refuse an archive that ended inside or on a corrupt header."""
    exc = getattr(tf, "layouttool_end", None)
    if isinstance(exc, _BAD_END):
        raise CorruptStreamError(
            f"{what}: not a valid tar archive ({exc} at byte {tf.offset}); truncated or corrupt?"
        )


def translate_tar_error(exc: BaseException, what: str) -> LayoutToolError:
    """A :mod:`tarfile` failure (truncated, corrupt header) as a CorruptStreamError."""
    detail = str(exc) or type(exc).__name__
    return CorruptStreamError(f"{what}: not a valid tar archive ({detail}); truncated or corrupt?")


def scan_seekable(fh: Reader, what: str) -> MemberIndex:
    """Read every header of a seekable uncompressed tar (data is skipped, never read)."""
    index = MemberIndex()
    try:
        with tarfile.open(fileobj=fh, mode="r:", tarinfo=_Header) as tf:  # type: ignore[call-overload]
            while True:
                ti = tf.next()
                if ti is None:
                    _check_end(tf, what)
                    break
                index.add_tarinfo(ti, seekable=True)
                # keep the TarFile's own member list from growing with the archive
                tf.members = []
    except LayoutToolError:
        raise
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise translate_tar_error(exc, what) from exc
    return index


def iter_stream(src: Reader, what: str) -> Iterator[tuple[tarfile.TarInfo, tarfile.TarFile]]:
    """Walk a tar stream once, yielding each header with the TarFile to extract its data.

    The data of a member must be read (or skipped) before the next one is asked for.
    """
    try:
        tf = tarfile.open(fileobj=src, mode="r|", tarinfo=_Header)  # type: ignore[call-overload]  # noqa: SIM115
    except (tarfile.TarError, EOFError) as exc:
        raise translate_tar_error(exc, what) from exc
    with tf:
        count = 0
        while True:
            try:
                ti = tf.next()
            except LayoutToolError:
                raise
            except (tarfile.TarError, EOFError) as exc:
                raise translate_tar_error(exc, what) from exc
            if ti is None:
                _check_end(tf, what)
                return
            count += 1
            if count > MAX_MEMBERS:
                raise InvalidInputError(
                    f"{what}: more than {MAX_MEMBERS} members; not a docker save tarball"
                )
            tf.members = []
            yield ti, tf


class RangeReader:
    """Read ``size`` bytes of an open file from ``offset`` (one member of a seekable tar)."""

    def __init__(self, fh: Reader, offset: int, size: int, what: str) -> None:
        self._fh = fh
        self._left = size
        self._what = what
        fh.seek(offset)  # type: ignore[attr-defined]

    def read(self, n: int = -1, /) -> bytes:
        """Read up to ``n`` bytes of the member."""
        if self._left <= 0:
            return b""
        want = self._left if n < 0 else min(n, self._left)
        data = self._fh.read(want)
        if not data:
            raise CorruptStreamError(f"{self._what}: archive ends inside this member (truncated)")
        self._left -= len(data)
        return data

    def readinto(self, b: bytearray | memoryview) -> int:
        """Read into ``b``."""
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)
