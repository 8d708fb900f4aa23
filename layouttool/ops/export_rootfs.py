"""``export``: an image's merged root filesystem as one tar stream (``docker export`` of an
image, ``crane export``).

Two passes: every layer is read once for its headers (:mod:`layouttool.rootfs.merge`), then
the layers that hold surviving file contents are read again while the tar is written
(:mod:`layouttool.rootfs.merged_tar`). Memory is bounded whatever the layers' sizes: contents
stream through in 1 MiB pieces, and only the metadata of the paths is held.
"""

from __future__ import annotations

import contextlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from layouttool.errors import LayoutToolError
from layouttool.model import Platform
from layouttool.ops.common import resolve_image, select
from layouttool.ops.merged import merge_image
from layouttool.progress import NULL_PROGRESS, Progress
from layouttool.rootfs.merged_tar import write_merged
from layouttool.store import atomic_output


@dataclass(frozen=True, slots=True)
class RootfsExportResult:
    """What ``export`` wrote."""

    image: str
    output: str
    manifest_digest: str
    layers: int
    #: layers read a second time for their contents
    layers_reread: int
    entries: int
    content_bytes: int
    bytes_written: int
    seconds: float
    warnings: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "image": self.image,
            "output": self.output,
            "manifestDigest": self.manifest_digest,
            "layers": self.layers,
            "layersReread": self.layers_reread,
            "entries": self.entries,
            "contentBytes": self.content_bytes,
            "bytesWritten": self.bytes_written,
            "seconds": round(self.seconds, 3),
            "warnings": list(self.warnings),
        }


def export_rootfs(
    image: str,
    output: str | os.PathLike[str] | BinaryIO,
    *,
    platform: Platform | None = None,
    progress: Progress = NULL_PROGRESS,
) -> RootfsExportResult:
    """Write IMAGE's merged root filesystem as one uncompressed tar to ``output`` (a path,
    replaced atomically, or a binary stream such as stdout).

    Entry names are relative POSIX paths (``etc/passwd``, ``usr/``); whiteouts are applied,
    never written; hardlinks come after their target, and a hardlink whose target a later
    layer deleted carries the content. Owners, modes, xattrs, devices and times are the
    layers'.
    """
    start = time.monotonic()
    sel = select(image)
    with contextlib.ExitStack() as stack:
        # a shared lock keeps gc away from the blobs we read (a read-only layout has none)
        with contextlib.suppress(LayoutToolError, OSError):
            stack.enter_context(sel.layout.writing())
        img = resolve_image(sel.layout, sel.entry, platform)
        merged = merge_image(img, progress=progress)
        if isinstance(output, str | os.PathLike):
            out_name = str(output)
            fh = stack.enter_context(atomic_output(Path(output)))
        else:
            out_name = "-"
            fh = output
        stats = write_merged(merged.tree, merged.opener(progress), fh.write)
        fh.flush()
    return RootfsExportResult(
        image=image,
        output=out_name,
        manifest_digest=str(img.manifest_desc.digest),
        layers=len(img.manifest.layers),
        layers_reread=len(stats.layers_read),
        entries=stats.entries,
        content_bytes=stats.content_bytes,
        bytes_written=stats.tar_bytes,
        seconds=time.monotonic() - start,
        warnings=tuple(merged.warnings()),
    )
