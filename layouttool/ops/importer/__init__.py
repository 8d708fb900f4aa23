"""``from-docker-save``: import every image of a ``docker save`` tarball (or an OCI archive).

Two ways through the input, same result:

* **a seekable, uncompressed file**: read the member index (headers only), then
  ``manifest.json`` and the configs, then only the referenced layer members, several at once
  (each worker has its own file handle and reads its member's byte range; isal, zstandard and
  hashlib release the GIL);
* **a stream** (stdin, or a compressed tarball): one pass. Layers arrive before
  ``manifest.json``, so every layer-like member is spooled straight into a temp blob while it is
  hashed and (re)compressed; small JSON-like members stay in memory under a cap. At the end only
  the members ``manifest.json`` references are committed; the others are dropped.

Nothing reaches ``index.json`` before every layer's diff_id has been checked against its config.
Blobs are committed leaves first (layers, configs, manifests) and ``index.json`` is changed once,
at the end. If anything fails, no blob is committed and a layout this call created is removed,
so the target is as it was.

The modules, in the order the work flows: :mod:`.archive` (the input, file or stream: member
index, small members, layers spooled into temp blobs), :mod:`.plan` (per form of save: what to
write, every check made), :mod:`.commit` (the writes, leaves first, index.json last) and
:mod:`.result` (what is reported). This module holds the use case and its options.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, Final

from layouttool import mediatypes as mt
from layouttool.codec import (
    Compression,
    PeekReader,
    Reader,
    default_layer_jobs,
    open_decompress,
    sniff,
)
from layouttool.errors import InvalidInputError, UnsupportedError, from_oserror
from layouttool.formats.docker_archive import detect_form
from layouttool.lazy import LazyFormat, LazyOptions, parse_target
from layouttool.ops.importer.archive import (
    Archive,
    Counter,
    CountingReader,
    FileArchive,
    Options,
    StreamArchive,
)
from layouttool.ops.importer.commit import write_plan
from layouttool.ops.importer.plan import Plan, plan_docker, plan_oci, plan_v1
from layouttool.ops.importer.result import ImportedImage, ImportedLayer, ImportResult
from layouttool.progress import NULL_PROGRESS, Progress
from layouttool.store import Layout


def _open_source(
    source: str | Path | BinaryIO, counter: Counter
) -> tuple[str, Path | None, Reader | None, Callable[[], None]]:
    """(display name, path when seekable+uncompressed, stream otherwise, closer)."""
    if isinstance(source, str | Path) and str(source) != "-":
        path = Path(source)
        try:
            fh = open(path, "rb")  # noqa: SIM115 - closed by the returned closer
        except OSError as exc:
            raise from_oserror(exc, "open", path) from exc
        try:
            st = os.fstat(fh.fileno())
            head = fh.read(8)
            fh.seek(0)
        except OSError as exc:
            fh.close()
            raise from_oserror(exc, "read", path) from exc
        if stat.S_ISREG(st.st_mode) and sniff(head) is Compression.NONE:
            fh.close()
            return str(path), path, None, lambda: None
        return str(path), None, CountingReader(fh, counter), fh.close
    stream: BinaryIO = sys.stdin.buffer if isinstance(source, str | Path) else source
    return "-", None, CountingReader(stream, counter), lambda: None


def _layout_existed(path: Path) -> bool:
    try:
        return path.is_dir() and any(path.iterdir())
    except OSError:
        return True


def _cleanup_created(path: Path, was_absent: bool) -> None:
    """Remove a layout this import created, after a failure."""
    if was_absent:
        shutil.rmtree(path, ignore_errors=True)
        return
    # it was an empty directory: empty it again
    for child in path.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            with contextlib.suppress(OSError):
                child.unlink()


def _options(
    compression: str | Compression,
    level: int | None,
    fmt: str,
    jobs: int | None,
    max_size: int | None,
    progress: Progress | None,
    chunk_size: int | None,
    prioritize: tuple[str, ...],
) -> Options:
    """The options checked, each bad one refused before anything is read or written."""
    lazy: LazyFormat | None = None
    if isinstance(compression, Compression):
        target = compression
    else:
        target, lazy = parse_target(compression)
    if lazy is LazyFormat.ZSTD_CHUNKED and fmt == "docker":
        raise UnsupportedError(
            "--format docker cannot be combined with --compression zstd:chunked: Docker media "
            "types have no zstd layer type; use --format oci, or --compression estargz"
        )
    if target not in (Compression.NONE, Compression.GZIP, Compression.ZSTD):
        raise UnsupportedError(f"layers cannot be stored as {target.value}: use gzip, zstd or none")
    if fmt not in ("oci", "docker"):
        raise InvalidInputError(f"unknown format {fmt!r}: use 'oci' or 'docker'")
    docker = fmt == "docker"
    mt.layer_media_type(target, docker=docker)  # refuses docker + zstd up front
    if level is not None:
        from layouttool.codec import new_encoder

        new_encoder(target, level)  # refuses an out-of-range level up front
    lazy_options = LazyOptions.from_flags(lazy, level, chunk_size, prioritize)
    if max_size is not None and max_size < 0:
        raise InvalidInputError(f"--max-size must not be negative, got {max_size}")
    return Options(
        target=target,
        level=level,
        docker=docker,
        jobs=max(1, jobs if jobs is not None else default_layer_jobs(target)),
        max_size=max_size,
        progress=progress or NULL_PROGRESS,
        lazy=lazy,
        lazy_options=lazy_options,
    )


def import_docker_save(
    source: str | Path | BinaryIO,
    layout: str | Path,
    *,
    compression: str | Compression = Compression.GZIP,
    level: int | None = None,
    fmt: str = "oci",
    images: list[str] | tuple[str, ...] | None = None,
    jobs: int | None = None,
    max_size: int | None = None,
    progress: Progress | None = None,
    chunk_size: int | None = None,
    prioritize: tuple[str, ...] | list[str] = (),
) -> ImportResult:
    """Import every image (or the ``images`` named) of a docker save tarball into ``layout``.

    ``source`` is a path, ``"-"`` for standard input, or a binary stream. The tarball may be
    gzip/zstd/xz/bzip2-compressed as a whole. ``layout`` is created when absent. Layers are
    stored with ``compression`` (``gzip``, ``zstd`` or ``none``; a layer already in that
    compression is stored as it is; ``zstd:chunked`` or ``estargz`` write lazy-pull layers,
    with eStargz's ``chunk_size`` and ``prioritize``, and an eStargz image gets a new config)
    and the manifests use OCI (``fmt="oci"``) or Docker
    (``fmt="docker"``) media types. An OCI archive is imported as it is (its blobs are copied
    byte for byte; ``compression`` and ``fmt`` do not apply). ``max_size`` caps each layer's
    uncompressed size. Raises a :class:`~layouttool.errors.LayoutToolError`; on failure the
    layout is left as it was.
    """
    start = time.monotonic()
    opts = _options(
        compression, level, fmt, jobs, max_size, progress, chunk_size, tuple(prioritize)
    )
    counter = Counter()
    name, path, stream, closer = _open_source(source, counter)
    out_path = Path(layout)
    was_absent = not out_path.exists()
    created = was_absent or not _layout_existed(out_path)
    archive: Archive | None = None
    lay: Layout | None = None
    ok = False
    try:
        if path is not None:
            archive = FileArchive(path, name)
            detect_form(archive.index, name)  # refuse the unsupported before creating anything
        lay = Layout.open(out_path, create=True)
        with lay.writing():
            # a broken index.json is refused before any blob is written, not after
            lay.read_index()
            if archive is None:
                assert stream is not None
                peek = PeekReader(stream)
                kind = sniff(peek.peek(8))
                archive = StreamArchive(name, kind)
                archive.scan(open_decompress(peek, kind, what=name), lay, opts)
            plan = _plan(archive, lay, opts, list(images or ()))
            try:
                images_out, written = write_plan(lay, plan)
            except BaseException:
                plan.abort()
                raise
        ok = True
    finally:
        closer()
        if archive is not None:
            archive.abort()
        if not ok and created and lay is not None:
            _cleanup_created(out_path, was_absent)
    return ImportResult(
        source=name,
        layout=str(out_path),
        source_format=plan.source_format,
        source_compression=archive.compression.value,
        streamed=archive.streamed,
        images=images_out,
        bytes_read=counter.value + archive.read_counter.value,
        bytes_written=written,
        seconds=time.monotonic() - start,
        notes=tuple(plan.notes),
    )


#: the planner of each form of input
_PLANNERS: Final = {"docker-save": plan_docker, "docker-save-v1": plan_v1, "oci-archive": plan_oci}


def _plan(archive: Archive, layout: Layout, opts: Options, wanted: list[str]) -> Plan:
    """Everything the import will write, every check made; its temp blobs dropped on failure."""
    form = detect_form(archive.index, archive.what)
    plan = Plan(form)
    try:
        _PLANNERS[form](archive, layout, opts, wanted, plan)
    except BaseException:
        plan.abort()
        raise
    return plan


__all__ = ["ImportResult", "ImportedImage", "ImportedLayer", "import_docker_save"]
