"""Names inside a layer: where a tar member lands under the root, and the whiteout names.

Shared by every module that reads or writes layer entries (apply, write, scan, the merged
view), so that they agree on what a name means.
"""

from __future__ import annotations

import posixpath

from layouttool import errors

__all__ = [
    "WHITEOUT_META_PREFIX",
    "WHITEOUT_OPAQUE",
    "WHITEOUT_PREFIX",
    "XATTR_PREFIX",
    "join",
    "split_name",
]

#: a member ``dir/.wh.NAME`` deletes ``dir/NAME`` from the layers below (image-spec layer.md)
WHITEOUT_PREFIX = ".wh."
#: a member ``dir/.wh..wh..opq`` hides every lower child of ``dir``
WHITEOUT_OPAQUE = ".wh..wh..opq"
#: ``.wh..wh.*`` names other than the opaque marker are AUFS metadata
WHITEOUT_META_PREFIX = ".wh..wh."
#: PAX record prefix of extended attributes (GNU tar, Go's archive/tar)
XATTR_PREFIX = "SCHILY.xattr."


def join(parent: str, name: str) -> str:
    """``parent/name`` for canonical relative paths, where ``""`` is the root."""
    return f"{parent}/{name}" if parent else name


def split_name(name: str, member: str, *, what: str = "name") -> list[str]:
    """Normalise a tar path to components under root; ``[]`` is the root itself.

    A leading ``/`` is stripped and the name normalised lexically (``a/../b`` is ``b``); a name
    that still starts with ``..`` raises :class:`~layouttool.errors.UnsafeInputError`, a NUL
    byte :class:`~layouttool.errors.InvalidInputError`. ``member`` and ``what`` only shape the
    message.
    """
    if "\x00" in name:
        raise errors.InvalidInputError(f"layer tar: {member!r}: NUL byte in {what}")
    rel = name.lstrip("/")
    norm = posixpath.normpath(rel) if rel else "."
    if norm == ".." or norm.startswith("../"):
        raise errors.UnsafeInputError(
            f"layer tar: {member!r}: {what} {name!r} escapes the root; refusing the layer"
        )
    return [] if norm == "." else norm.split("/")
