"""``append``: one new layer per source (a directory, a tar file, or a tar on stdin).

Each layer's bytes pass once: tar out (:mod:`layouttool.rootfs.write`) -> diff_id hash ->
compress -> hashing blob write (:func:`layouttool.layers.spool_layer`, the pipeline import and
convert use). Sources:

* a **directory** is walked in sorted order; symlinks are stored, never followed; hardlinks,
  xattrs (``user.*``, ``security.capability``), FIFOs and devices are kept; owners are 0:0
  unless ``owner`` or ``keep_owner``; mtimes are clamped to ``SOURCE_DATE_EPOCH`` when it is
  set. The directory itself is not an entry (its contents land in the image's root, or under
  ``prefix``; missing parents are created 0755 by whoever unpacks);
* a **tar file** (plain, gzip, zstd, xz or bzip2, decompressed in-process) or ``-``: its bytes
  become the layer unchanged (so the layer's diff_id is the sha256 of that tar), after every
  member passed ``unpack``'s checks; with ``prefix`` or ``owner`` its members are rewritten.
  A tar keeps its own owners and mtimes otherwise.

The layer's compression defaults to that of the image's last layer (gzip for an empty image).
The config gets each layer's diff_id and a history entry; then :func:`layouttool.ops.edit.commit`
stores the config and manifest and moves the ref.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, BinaryIO

from layouttool import mediatypes as mt
from layouttool.codec import Compression, Reader, open_sniffed
from layouttool.errors import (
    InvalidInputError,
    LayoutToolError,
    NotFoundError,
    UnsupportedError,
    from_oserror,
)
from layouttool.layers import PendingLayer, spool_layer
from layouttool.lazy import LazyFormat, parse_target
from layouttool.model import Descriptor, Platform
from layouttool.mutate import add_layer, history_entry
from layouttool.ops.edit import (
    Base,
    ImageUpdate,
    check_tag,
    commit,
    open_base,
    source_date_epoch,
    timestamp,
)
from layouttool.progress import NULL_PROGRESS, Progress
from layouttool.rootfs.names import split_name
from layouttool.rootfs.write import CheckedTar, TarStream, link_hardlinks, retar, walk_tree

#: a source: a path (directory or tar file), ``"-"`` (with ``stdin``), or an open binary stream
SourceArg = str | os.PathLike[str] | BinaryIO


@dataclass(frozen=True, slots=True)
class AppendedLayer:
    """One layer ``append`` wrote."""

    source: str
    digest: str
    size: int
    media_type: str
    diff_id: str
    uncompressed_size: int
    entries: int

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "source": self.source,
            "digest": self.digest,
            "size": self.size,
            "mediaType": self.media_type,
            "diffID": self.diff_id,
            "uncompressedSize": self.uncompressed_size,
            "entries": self.entries,
        }


@dataclass(frozen=True, slots=True)
class AppendResult:
    """What ``append`` did."""

    image: str
    update: ImageUpdate
    layers: tuple[AppendedLayer, ...]
    seconds: float
    notes: tuple[str, ...] = field(default_factory=tuple)

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "image": self.image,
            **self.update.to_json(),
            "layers": [la.to_json() for la in self.layers],
            "seconds": round(self.seconds, 3),
            "notes": list(self.notes),
        }


def layer_target(
    base: Base, compression: Compression | str | None
) -> tuple[Compression, LazyFormat | None]:
    """:func:`layer_compression`, also taking ``zstd:chunked`` and ``estargz`` (lazy-pull
    layers, written with their default options)."""
    if isinstance(compression, str):
        comp, lazy = parse_target(compression)
        return layer_compression(base, comp), lazy
    return layer_compression(base, compression), None


def lazy_descriptor(desc: Descriptor, annotations: dict[str, str]) -> Descriptor:
    """A new layer's descriptor with the annotations a lazy-pull layer needs."""
    return desc.with_(annotations=dict(annotations)) if annotations else desc


def layer_compression(base: Base, compression: Compression | str | None) -> Compression:
    """The compression of a new layer: the one asked for, else the last layer's (gzip for an
    image without layers). Docker media types have no zstd layer: refused."""
    if isinstance(compression, str):
        compression = Compression.parse(compression)
    if compression is None:
        last = base.manifest.layers[-1].media_type if base.manifest.layers else None
        compression = (mt.layer_compression(last) if last else None) or Compression.GZIP
    if compression not in (Compression.NONE, Compression.GZIP, Compression.ZSTD):
        raise InvalidInputError(f"layers cannot be {compression.value}-compressed")
    if base.manifest.is_docker and compression is Compression.ZSTD:
        raise UnsupportedError(
            "a Docker-typed image has no zstd layer type (skopeo refuses it too): use "
            "--compression gzip or none, or 'layouttool convert --format oci' first"
        )
    return compression


def normalize_prefix(prefix: str | None) -> str:
    """``/opt/app/`` -> ``opt/app``; a prefix that leaves the root is refused (exit 6)."""
    if not prefix:
        return ""
    return "/".join(split_name(prefix, prefix, what="--prefix"))


class _Source:
    """One source opened as a plain tar stream (a context manager)."""

    def __init__(self, arg: SourceArg, *, stdin: BinaryIO | None) -> None:
        self.arg = arg
        self.stdin = stdin
        self._stack = contextlib.ExitStack()
        self.label = "-" if arg == "-" or not isinstance(arg, str | os.PathLike) else (
            os.path.basename(os.fspath(arg).rstrip("/")) or os.fspath(arg))  # noqa: PTH119
        self.is_dir = False

    def open(self, *, prefix: str, owner: tuple[int, int] | None, keep_owner: bool,
             clamp: int | None, warn: list[str]) -> TarStream | CheckedTar:
        """The tar stream of this source."""
        arg = self.arg
        if arg == "-":
            if self.stdin is None:
                raise InvalidInputError("append: '-' needs a tar on stdin")
            raw: Reader = self.stdin
        elif isinstance(arg, str | os.PathLike):
            path = Path(arg)
            try:
                if path.is_dir():
                    self.is_dir = True
                    self.label += "/"
                    fixed = owner or (0, 0)

                    def owner_of(_rel: str, st: os.stat_result) -> tuple[int, int]:
                        return (st.st_uid, st.st_gid) if keep_owner else fixed

                    return self._closing(TarStream(link_hardlinks(walk_tree(
                        path, prefix=prefix, owner=owner_of, clamp=clamp, warn=warn.append))))
                raw = self._stack.enter_context(path.open("rb"))
            except FileNotFoundError:
                raise NotFoundError(f"append: source {path} does not exist") from None
            except OSError as exc:
                raise from_oserror(exc, "append: open source", path) from exc
        else:
            raw = arg
        _, plain = open_sniffed(raw, what=f"append source {self.label}")
        self._stack.callback(plain.close)
        if prefix or owner is not None:
            return self._closing(
                TarStream(retar(plain, prefix=prefix, owner=owner, warn=warn.append)))
        return CheckedTar(plain, warn=warn.append)

    def _closing(self, stream: TarStream) -> TarStream:
        self._stack.callback(stream.close)
        return stream

    def close(self) -> None:
        """Close what was opened."""
        self._stack.close()


def append_layers(
    image: str,
    sources: Sequence[SourceArg],
    *,
    tag: str | None = None,
    compression: Compression | str | None = None,
    prefix: str | None = None,
    owner: tuple[int, int] | None = None,
    keep_owner: bool = False,
    platform: Platform | None = None,
    stdin: BinaryIO | None = None,
    progress: Progress = NULL_PROGRESS,
) -> AppendResult:
    """Append one layer per source to IMAGE and point its ref (or ``tag``) at the result.

    ``sources``: directories, tar files, ``"-"`` (read from ``stdin``) or open binary
    streams. ``owner`` sets every entry's owner; ``keep_owner`` keeps a directory's owners as
    they are on disk (default 0:0). Errors leave ``index.json`` as it was: a source that does
    not exist is NotFoundError (exit 3), a tar member that escapes UnsafeInputError (exit 6),
    a malformed one InvalidInputError (exit 4).
    """
    start = time.monotonic()
    if not sources:
        raise InvalidInputError("append: give at least one SOURCE")
    if owner is not None and keep_owner:
        raise InvalidInputError("append: --owner and --keep-owner exclude each other")
    if sum(1 for s in sources if s == "-") > 1:
        raise InvalidInputError("append: '-' (stdin) can be given once")
    check_tag(tag)
    pre = normalize_prefix(prefix)
    base = open_base(image, platform)
    comp, lazy = layer_target(base, compression)
    layer_type = mt.layer_media_type(comp, docker=base.manifest.is_docker)
    epoch = source_date_epoch()
    created = timestamp(epoch)
    notes: list[str] = []
    config = dict(base.config.doc)
    done: list[AppendedLayer] = []
    descs: list[Descriptor] = []
    with base.layout.writing(), contextlib.ExitStack() as pending:
        spooled: list[PendingLayer] = []
        for arg in sources:
            src = _Source(arg, stdin=stdin)
            pending.callback(src.close)
            warns: list[str] = []
            what = f"append {src.label}"
            task = progress.task(what, None)
            try:
                stream = src.open(prefix=pre, owner=owner, keep_owner=keep_owner,
                                  clamp=epoch, warn=warns)
                layer = pending.enter_context(spool_layer(
                    base.layout, stream, target=comp, declared=Compression.NONE, what=what,
                    task=task, lazy=lazy))
            except LayoutToolError:
                raise
            except OSError as exc:
                raise from_oserror(exc, f"append {src.label}: read") from exc
            task.done()
            spooled.append(layer)
            notes.extend(f"{src.label}: {w}" for w in warns)
            by = f"layouttool append {src.label}" + (f" --prefix /{pre}" if pre else "")
            config = add_layer(config, layer.diff_id, history_entry(created, by))
            done.append(AppendedLayer(
                source=src.label, digest="", size=layer.size, media_type=layer_type,
                diff_id=str(layer.diff_id), uncompressed_size=layer.uncompressed_size,
                entries=stream.entries,
            ))
        for i, layer in enumerate(spooled):
            info = layer.commit().blob
            descs.append(lazy_descriptor(info.descriptor(layer_type), layer.annotations))
            done[i] = replace(done[i], digest=str(info.digest))
        update = commit(base, config, add_layers=tuple(descs), tag=tag)
    return AppendResult(image, update, tuple(done), time.monotonic() - start, tuple(notes))
