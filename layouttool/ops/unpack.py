"""``unpack``: apply an image's layers in order to a root filesystem.

Each layer streams once (:func:`layouttool.layers.plain_layer`): verified blob -> decompress
(by magic bytes; the media type must agree) -> diff_id hash -> tar reader -> filesystem
(:mod:`layouttool.rootfs`). The whole decompressed stream is hashed, including bytes after the
tar end marker, and compared with ``rootfs.diff_ids[i]``.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from layouttool import mediatypes as mt
from layouttool.errors import (
    ConflictError,
    IntegrityError,
    LayoutToolError,
    UnsupportedError,
    from_oserror,
)
from layouttool.layers import plain_layer
from layouttool.lazy import ESTARGZ_OWN_ENTRIES
from layouttool.model import Platform, dump_json
from layouttool.ops.common import ResolvedImage, open_image
from layouttool.progress import NULL_PROGRESS, Progress
from layouttool.rootfs import ApplyOptions, apply_layer
from layouttool.rootfs.record import Facts, encode_record, record_path
from layouttool.store import write_atomically


@dataclass(frozen=True, slots=True)
class UnpackResult:
    """What ``unpack`` did."""

    image: str
    dest: str
    rootfs: str
    manifest_digest: str
    config_digest: str
    layers: tuple[dict[str, Any], ...]
    entries: int
    bytes_written: int
    seconds: float
    bundle: bool
    rootless: bool
    warnings: tuple[str, ...] = field(default_factory=tuple)
    #: the record of what was written, beside the rootfs (None if it could not be written)
    record: str | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "image": self.image,
            "dest": self.dest,
            "rootfs": self.rootfs,
            "manifestDigest": self.manifest_digest,
            "configDigest": self.config_digest,
            "layers": list(self.layers),
            "entries": self.entries,
            "bytesWritten": self.bytes_written,
            "seconds": round(self.seconds, 3),
            "bundle": self.bundle,
            "rootless": self.rootless,
            "warnings": list(self.warnings),
            "record": self.record,
        }


def _prepare_dest(dest: Path, force: bool) -> None:
    try:
        if dest.exists() or dest.is_symlink():
            if not dest.is_dir() or dest.is_symlink():
                raise ConflictError(f"{dest} exists and is not a directory")
            if any(dest.iterdir()) and not force:
                raise ConflictError(
                    f"{dest} is not empty; choose an empty or absent directory, or use --force "
                    "to unpack over it"
                )
        else:
            dest.mkdir(parents=True)
    except OSError as exc:
        raise from_oserror(exc, "prepare", dest) from exc


def unpack_image(
    image: str,
    dest: str | Path,
    *,
    platform: Platform | None = None,
    rootless: bool = False,
    bundle: bool = False,
    force: bool = False,
    max_size: int | None = None,
    progress: Progress = NULL_PROGRESS,
) -> UnpackResult:
    """Unpack IMAGE to ``dest`` (or, with ``bundle``, an OCI runtime bundle at ``dest``).

    ``rootless`` keeps the current user as owner and skips device nodes (it is implied when not
    running as root). ``max_size`` caps each layer's decompressed size. DEST must be absent or
    empty unless ``force``. On error DEST is left as far as it got.
    """
    start = time.monotonic()
    img = open_image(image, platform, purpose="unpack")
    for finding in img.warnings:
        progress.note(f"warning: {finding.line()}")
    layers = img.manifest.layers
    diff_ids = img.layer_diff_ids(image)
    for layer in layers:
        if not mt.is_layer(layer.media_type):
            raise UnsupportedError(
                f"layer {layer.digest} has media type {layer.media_type!r}: not a tar layer "
                "(an artifact?), so it cannot be unpacked"
            )
    dest_path = Path(dest)
    _prepare_dest(dest_path, force)
    root = dest_path / "rootfs" if bundle else dest_path
    if bundle:
        try:
            root.mkdir(exist_ok=True)
        except OSError as exc:
            raise from_oserror(exc, "create", root) from exc
    rootless = rootless or os.geteuid() != 0
    opts = ApplyOptions(rootless=rootless)
    facts = Facts()
    # an eStargz layer's own entries (TOC, landmark) are not part of the image's files
    estargz_opts = replace(opts, skip_names=ESTARGZ_OWN_ENTRIES)
    entries = 0
    written = 0
    warnings: list[str] = []
    done: list[dict[str, Any]] = []
    for i, layer in enumerate(layers):
        what = f"layer {i + 1}/{len(layers)} {layer.digest}"
        task = progress.task(f"layer {i + 1}/{len(layers)} {layer.digest.short}", layer.size)
        lazy = mt.lazy_format(layer.annotations)
        layer_opts = estargz_opts if lazy == "estargz" else opts
        try:
            # decompress + hash on another core while this one parses tar and writes files
            with plain_layer(img.layout, layer, diff_ids[i], what=what, max_size=max_size,
                             advance=task.advance) as stream:
                stats = apply_layer(stream, root, layer_opts,  # type: ignore[arg-type]
                                    on_entry=facts.hook(i))
        except IntegrityError as exc:
            raise IntegrityError(f"{exc}; {dest_path} is incomplete") from exc
        task.done()
        entries += stats.entries
        written += stats.bytes_written
        warnings.extend(f"{what}: {w}" for w in stats.warnings)
        for w in stats.warnings:
            progress.note(f"warning: {what}: {w}")
        done.append(
            {
                "digest": str(layer.digest),
                "diffID": str(diff_ids[i]),
                "mediaType": layer.media_type,
                "entries": stats.entries,
                "bytesWritten": stats.bytes_written,
            }
        )
    if bundle:
        from layouttool.runtime import runtime_config

        spec = runtime_config(img.config.doc, root, rootless=rootless)
        write_atomically(dest_path / "config.json", dump_json(spec))
    record = _write_record(root, img, facts, image, rootless, warnings, progress)
    return UnpackResult(
        image=image,
        dest=str(dest_path),
        rootfs=str(root),
        manifest_digest=str(img.manifest_desc.digest),
        config_digest=str(img.manifest.config.digest),
        layers=tuple(done),
        entries=entries,
        bytes_written=written,
        seconds=time.monotonic() - start,
        bundle=bundle,
        rootless=rootless,
        warnings=tuple(warnings),
        record=record,
    )


def _write_record(root: Path, img: ResolvedImage, facts: Facts, image: str, rootless: bool,
                  warnings: list[str], progress: Progress) -> str | None:
    """Write what the rootfs holds now beside it, for ``repack`` (see rootfs.record); a
    failure is a warning: the rootfs itself is complete."""
    header = {
        "image": image,
        "manifest": img.manifest_desc.to_json(),
        "rootless": rootless,
        "dev": root.stat().st_dev,
    }
    try:
        path = record_path(root)
        write_atomically(path, b"".join(encode_record(header, root, facts,
                                                      rootless=rootless)))
    except (OSError, LayoutToolError) as exc:
        msg = f"could not write the unpack record beside {root} ({exc}); repack will not work"
        warnings.append(msg)
        progress.note(f"warning: {msg}")
        return None
    return str(path)

