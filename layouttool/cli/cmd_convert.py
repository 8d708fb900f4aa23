"""Transform command: convert."""

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
    warn,
)
from layouttool.model import Platform
from layouttool.ops.convert import Format, convert_image


@click.command("convert")
@click.argument("image")
@click.option(
    "-o",
    "--output",
    "dest",
    metavar="DEST_LAYOUT",
    type=click.Path(file_okay=False),
    help="Write the result into this layout (created if absent); the source is only read. "
    "Default: convert in place (old blobs stay until 'layouttool gc').",
)
@click.option(
    "--compression",
    type=click.Choice(LAYER_COMPRESSIONS),
    help="Recompress every layer that is not already in this compression. zstd:chunked "
    "(podman, CRI-O) and estargz (containerd's stargz snapshotter) are lazy-pull layers that "
    "every plain zstd / gzip reader also reads.",
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
    help="Switch manifests, indexes, configs and layers to OCI or Docker media types "
    "(default: keep each document's).",
)
@click.option(
    "--platform",
    metavar="OS/ARCH[/VARIANT]",
    callback=lambda _c, _p, v: Platform.parse(v) if v else None,
    help="Convert only this platform of multi-platform indexes (the others are kept).",
)
@click.option(
    "-j",
    "--jobs",
    type=click.IntRange(min=1),
    help="Layers converted at once (default: one per CPU; at most 2 when writing zstd).",
)
@json_option
def convert_cmd(
    image: str,
    dest: str | None,
    compression: str | None,
    level: int | None,
    fmt: Format | None,
    platform: Platform | None,
    jobs: int | None,
    chunk_size: int | None,
    prioritize: tuple[str, ...],
    as_json: bool,
) -> None:
    """Recompress layers and switch between OCI and Docker media types.

    IMAGE is LAYOUT[:REF] or LAYOUT@sha256:<hex>; with no REF every image in the layout is
    converted. Each layer streams once (decompress, diff_id checked against the config,
    compress); uncompressed content, diff_ids and the config digest never change, and the
    same input and options give the same digests every time. Manifests and indexes up to
    index.json get new digests; ref names and annotations are kept. Docker v2 schema 1
    manifests are upgraded (to OCI, or Docker with --format docker). Docker has no zstd
    layer type: converting a zstd image to Docker needs --compression gzip or none.
    An estargz layer's tar gains its TOC and landmark: its diff_id and the config change.

    \b
    Examples:
      layouttool convert ./oci:app:1.0 --compression zstd
      layouttool convert ./oci --format docker --compression gzip -o ./docker-oci
      layouttool convert ./oci:multi --platform linux/arm64 --compression none
      layouttool convert ./oci --compression zstd --json | jq .bytesOut
      layouttool convert ./oci:app --compression zstd:chunked -o ./lazy
      layouttool convert ./oci:app --compression estargz --estargz-prioritize /bin/sh
    """
    with progress() as prog:
        res = convert_image(
            image,
            dest,
            compression=compression,
            level=level,
            format=fmt,
            platform=platform,
            jobs=jobs,
            progress=prog,
            chunk_size=chunk_size,
            prioritize=prioritize,
        )

    def text() -> str:
        lines = []
        for e in res.entries:
            state = "converted" if e.changed else "unchanged"
            lines.append(
                f"{e.name or '<none>'}: {e.old.digest[:19]} -> {e.new.digest[:19]} ({state})"
            )
        return "\n".join(lines)

    warn(res.warnings)
    emit(res, as_json, text)
    summary(
        f"{sum(e.changed for e in res.entries)} of {len(res.entries)} image(s) converted, "
        f"{res.layers_recompressed} layer(s) recompressed, {human_size(res.bytes_in)} read, "
        f"{human_size(res.bytes_out)} written in {res.seconds:.1f}s"
    )
