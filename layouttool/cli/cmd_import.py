"""``from-docker-save``: import a docker save tarball (or an OCI archive) into a layout."""

from __future__ import annotations

import click

from layouttool.cli._common import (
    LAYER_COMPRESSIONS,
    emit,
    human_size,
    json_option,
    lazy_options,
    progress,
    summary,
)
from layouttool.ops.importer import import_docker_save


@click.command("from-docker-save")
@click.argument("source", metavar="SOURCE")
@click.option(
    "-o",
    "--output",
    "layout",
    required=True,
    type=click.Path(file_okay=False),
    metavar="LAYOUT",
    help="OCI layout to import into (created when absent).",
)
@click.option(
    "--compression",
    type=click.Choice(LAYER_COMPRESSIONS),
    default="gzip",
    show_default=True,
    help="Compression of the stored layers (zstd:chunked and estargz: lazy-pull layers).",
)
@click.option(
    "--level",
    type=int,
    help="Compression level (gzip and estargz 0-9, default 2; zstd 1-22, default 2, 16 MiB "
    "window; zstd:chunked 1-22, default 3).",
)
@lazy_options
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["oci", "docker"]),
    default="oci",
    show_default=True,
    help="Media types of the manifests and layers written.",
)
@click.option(
    "--image",
    "images",
    multiple=True,
    metavar="NAME",
    help="Import only this image (a RepoTag, or an image ID); repeatable.",
)
@click.option(
    "-j",
    "--jobs",
    type=click.IntRange(min=1),
    help="Layers processed at once (default: one per CPU; at most 2 when writing zstd).",
)
@click.option(
    "--max-size",
    type=click.IntRange(min=0),
    metavar="BYTES",
    help="Refuse any layer whose uncompressed size exceeds BYTES.",
)
@json_option
def from_docker_save_cmd(
    source: str,
    layout: str,
    compression: str,
    level: int | None,
    fmt: str,
    images: tuple[str, ...],
    jobs: int | None,
    max_size: int | None,
    chunk_size: int | None,
    prioritize: tuple[str, ...],
    as_json: bool,
) -> None:
    """Import every image and tag of a docker save tarball SOURCE into LAYOUT.

    SOURCE is a file or '-' for standard input (read in one pass), from docker/podman save,
    skopeo, kaniko, crane or BuildKit; the whole tarball may be gzip, zstd, xz or bzip2
    compressed. Each RepoTag becomes one index.json entry (ref name as written, full name in
    io.containerd.image.name); a ref that exists is moved. An OCI archive is imported as it
    is. On any error the layout is left as it was.

    \b
    Examples:
      layouttool from-docker-save app.tar -o ./oci
      docker save app:1.0 db:2 | layouttool from-docker-save - -o ./oci
      layouttool from-docker-save images.tar.zst -o ./oci --image app:1.0 --compression zstd
      layouttool from-docker-save app.tar -o ./oci --format docker --json
      layouttool from-docker-save app.tar -o ./oci --compression zstd:chunked
    """
    with progress() as prog:
        res = import_docker_save(
            source,
            layout,
            compression=compression,
            level=level,
            fmt=fmt,
            images=images,
            jobs=jobs,
            max_size=max_size,
            progress=prog,
            chunk_size=chunk_size,
            prioritize=prioritize,
        )

    def text() -> str:
        return "\n".join(f"{i.ref or '<untagged>'}\t{i.digest}\t{i.action}" for i in res.images)

    emit(res, as_json, text)
    for note in res.notes:
        summary(f"layouttool: note: {note}")
    summary(
        f"imported {len(res.images)} image ref(s) from {res.source} into {res.layout}: "
        f"{human_size(res.bytes_read)} read, {human_size(res.bytes_written)} written "
        f"in {res.seconds:.1f}s"
    )
