"""The exception tree of layouttool.

Every error the library raises on purpose is a :class:`LayoutToolError`. Each class carries
the process exit code the CLI uses for it, so the mapping from failure to exit code lives here
and nowhere else (the CLI prints ``layouttool: error: <message>`` and exits with
``exc.exit_code``).

=====  ==========================================================================
code   meaning
=====  ==========================================================================
0      success
1      other error (:class:`LayoutToolError`)
2      usage error (click)
3      not found: layout, blob, ref (:class:`NotFoundError`)
4      invalid input: JSON, schema, media type, corrupt archive (:class:`InvalidInputError`)
5      integrity: digest, size or diff_id mismatch (:class:`IntegrityError`)
6      unsafe input refused: path escape, link cycle (:class:`UnsafeInputError`)
7      conflict: layout locked, would clobber (:class:`ConflictError`)
70     internal bug (:class:`InternalError`; any unexpected exception)
74     operating-system I/O error: ENOSPC, EACCES, EFBIG (:class:`IOFailure`)
130    interrupted by SIGINT/SIGTERM (:class:`Interrupted`)
=====  ==========================================================================
"""

from __future__ import annotations

import errno
from typing import ClassVar


class LayoutToolError(Exception):
    """Base class of every error layouttool raises on purpose."""

    exit_code: ClassVar[int] = 1
    #: short machine-readable name of the class of failure, used in ``--json`` output
    kind: ClassVar[str] = "error"


class NotFoundError(LayoutToolError):
    """A layout, blob, ref, image or file that was asked for does not exist."""

    exit_code = 3
    kind = "not-found"


class InvalidInputError(LayoutToolError):
    """Input is malformed: bad JSON, wrong shape, unknown media type, corrupt archive."""

    exit_code = 4
    kind = "invalid-input"


class CorruptStreamError(InvalidInputError):
    """A compressed stream or a tar stream is truncated or corrupt."""

    kind = "corrupt-stream"


class UnsupportedError(InvalidInputError):
    """The input is well formed but asks for something we do not (or cannot) do."""

    kind = "unsupported"


class IntegrityError(LayoutToolError):
    """Content does not match what describes it: digest, size or diff_id mismatch."""

    exit_code = 5
    kind = "integrity"


class SizeMismatchError(IntegrityError):
    """A blob's size is not the size its descriptor declares."""

    kind = "size-mismatch"


class DigestMismatchError(IntegrityError):
    """A blob's content does not hash to its digest."""

    kind = "digest-mismatch"


class UnsafeInputError(LayoutToolError):
    """Input was refused because acting on it could escape a target or loop forever."""

    exit_code = 6
    kind = "unsafe-input"


class ConflictError(LayoutToolError):
    """The operation would clobber something, or the layout is busy."""

    exit_code = 7
    kind = "conflict"


class SizeLimitError(LayoutToolError):
    """A size limit (``--max-size`` or a JSON cap) was exceeded."""

    exit_code = 4
    kind = "size-limit"


class InternalError(LayoutToolError):
    """A bug in layouttool."""

    exit_code = 70
    kind = "internal"


class IOFailure(LayoutToolError):
    """The operating system refused a read or write (disk full, permission denied, ...)."""

    exit_code = 74
    kind = "io"


class Interrupted(LayoutToolError):
    """The process was asked to stop (SIGINT or SIGTERM)."""

    exit_code = 130
    kind = "interrupted"


def from_oserror(exc: OSError, action: str, path: object | None = None) -> LayoutToolError:
    """Translate an :class:`OSError` into our tree, naming what we were doing and where.

    ``ENOENT`` becomes :class:`NotFoundError`; everything else is an I/O failure (exit 74).
    """
    where = path if path is not None else exc.filename
    reason = exc.strerror or str(exc)
    msg = f"{action} {where}: {reason}" if where is not None else f"{action}: {reason}"
    if exc.errno == errno.ENOENT:
        return NotFoundError(msg)
    return IOFailure(msg)
