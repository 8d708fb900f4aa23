"""The nodes of a merged tree (:mod:`~layouttool.rootfs.merge`): a filesystem object's
attributes as its tar header gave them (:class:`Meta`), directories and the inodes that
hardlinks share. No file content: a file knows where its bytes are in its layer.
"""

from __future__ import annotations

import tarfile

from layouttool.rootfs.names import XATTR_PREFIX

__all__ = [
    "BLOCK", "CHAR", "DIR", "FIFO", "FILE", "SYMLINK", "Dir", "Inode", "Meta", "Node", "Pos",
    "Runs",
]

#: the entry kinds; also the ``type`` values of ``diff --json``
FILE, DIR, SYMLINK, CHAR, BLOCK, FIFO = "file", "dir", "symlink", "char", "block", "fifo"

Pos = tuple[int, int]
#: the data runs of a sparse file: (offset in the file, length), in order
Runs = list[tuple[int, int]]


class Meta:
    """The attributes of one filesystem object, as its tar header gave them.

    ``mtime`` is tarfile's value (a float for PAX fractional times; what is written is whole
    seconds). Owner names are not kept: nothing judges or writes them. ``xattrs`` maps names
    without the ``SCHILY.xattr.`` prefix to tarfile's (surrogate-escaped) values.
    """

    __slots__ = (
        "devmajor", "devminor", "digest", "gid", "kind", "mode", "mtime", "size", "target",
        "uid", "xattrs",
    )

    def __init__(
        self, kind: str, mode: int, uid: int, gid: int, mtime: float, size: int = 0,
        target: str = "", devmajor: int = 0, devminor: int = 0,
        xattrs: dict[str, str] | None = None, digest: bytes | None = None,
    ) -> None:
        self.kind = kind
        self.mode = mode
        self.uid = uid
        self.gid = gid
        self.mtime = mtime
        self.size = size
        self.target = target
        self.devmajor = devmajor
        self.devminor = devminor
        self.xattrs = xattrs
        self.digest = digest

    @classmethod
    def of(cls, m: tarfile.TarInfo, kind: str, digest: bytes | None = None) -> Meta:
        """The attributes a member gives an object of ``kind``."""
        xattrs: dict[str, str] | None = None
        for key, value in m.pax_headers.items():
            if key.startswith(XATTR_PREFIX):
                if xattrs is None:
                    xattrs = {}
                xattrs[key[len(XATTR_PREFIX):]] = value
        device = kind in (CHAR, BLOCK)
        return cls(
            kind, m.mode & 0o7777, m.uid, m.gid, m.mtime, m.size if kind == FILE else 0,
            m.linkname if kind == SYMLINK else "",
            m.devmajor if device else 0, m.devminor if device else 0, xattrs, digest,
        )

    def same_attrs(self, other: Meta) -> bool:
        """Equal in what ``diff`` judges (everything but times and owner names)."""
        return self.changes(other) == ()

    def changes(self, other: Meta) -> tuple[str, ...]:
        """What differs from ``other``: ``type``, ``content``, ``mode``, ``owner``,
        ``linkTarget``, ``xattrs``, ``device`` (times and owner names are not judged)."""
        if self.kind != other.kind:
            return ("type",)
        out: list[str] = []
        if self.kind == FILE and (self.size != other.size or self.digest != other.digest):
            out.append("content")
        if self.kind != SYMLINK and self.mode != other.mode:
            out.append("mode")
        if (self.uid, self.gid) != (other.uid, other.gid):
            out.append("owner")
        if self.target != other.target:
            out.append("linkTarget")
        if (self.xattrs or {}) != (other.xattrs or {}):
            out.append("xattrs")
        if (self.devmajor, self.devminor) != (other.devmajor, other.devminor):
            out.append("device")
        return tuple(out)


class Dir:
    """A directory: its children by name, its attributes, where it was made."""

    __slots__ = ("children", "meta", "pos")

    def __init__(self, meta: Meta, pos: Pos) -> None:
        self.children: dict[str, Dir | Inode] = {}
        self.meta = meta
        self.pos = pos


class Inode:
    """A non-directory object; hardlinks share one.

    ``pos`` is the member that made it, ``path`` the name it was made under, ``links`` the
    names it has (kept only when tracking). A file's bytes are in layer ``pos[0]`` at
    ``data``: the offset of the member's data in the uncompressed stream, and the data runs of
    a sparse member (None: one run of ``meta.size`` bytes).
    """

    __slots__ = ("data", "links", "meta", "path", "pos")

    def __init__(self, meta: Meta, pos: Pos, path: str,
                 data: tuple[int, Runs | None] | None = None) -> None:
        self.meta = meta
        self.pos = pos
        self.path = path
        self.data = data
        self.links = 0


Node = Dir | Inode
