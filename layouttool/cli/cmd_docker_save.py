"""to-docker-save: write images as one docker save tarball."""

from __future__ import annotations

import sys

import click

from layouttool.cli._common import emit, human_size, json_option, platform_option, progress, summary
from layouttool.model import Platform
from layouttool.ops.docker_save import ExportCompression, export_docker_save


@click.command("to-docker-save")
@click.argument("images", nargs=-1, required=True, metavar="IMAGE...")
@click.option(
    "-o", "--output", required=True, metavar="OUTPUT", help="Tarball to write; '-' is stdout."
)
@platform_option
@click.option(
    "--compression",
    type=click.Choice([c.value for c in ExportCompression]),
    default=ExportCompression.AUTO.value,
    show_default=True,
    help="auto: decompress zstd layers, copy gzip and plain ones; none: decompress all; "
    "gzip: compress plain and zstd layers; keep: copy all (zstd needs a recent docker).",
)
@click.option(
    "--tag",
    "tags",
    multiple=True,
    metavar="NAME[:TAG]",
    help="Name the (single) image NAME:TAG in the tarball, replacing the layout's name. "
    "Repeatable.",
)
@json_option
def to_docker_save_cmd(
    images: tuple[str, ...],
    output: str,
    platform: Platform | None,
    compression: str,
    tags: tuple[str, ...],
    as_json: bool,
) -> None:
    """Write IMAGEs as one tarball for docker load, podman load and skopeo.

    The tarball is the form Docker 25 writes: an OCI layout plus manifest.json and
    repositories. An image is named by its layout's io.containerd.image.name, or by a ref
    such as 'app:1.0'; one whose ref is only a tag ('latest') or that is picked by digest is
    written untagged unless --tag names it. Configs are copied byte for byte, so image IDs do
    not change; a layer that is re-encoded gives a new manifest digest in the tarball. A file
    OUTPUT is replaced atomically.

    \b
    Examples:
      layouttool to-docker-save ./oci:app:1.0 -o app.tar && docker load -i app.tar
      layouttool to-docker-save ./oci:latest --tag app:1.0 -o - | docker load
      layouttool to-docker-save ./a:web:1 ./b:db:2 -o both.tar --compression none
      layouttool to-docker-save ./oci:multi --platform linux/arm64 -o arm.tar
    """
    to_stdout = output == "-"
    if to_stdout and as_json:
        raise click.UsageError("--json and '-o -' would both write to stdout; pick one")
    if to_stdout and sys.stdout.isatty():
        raise click.UsageError("refusing to write a tarball to a terminal; use -o FILE or a pipe")
    with progress() as prog:
        res = export_docker_save(
            list(images),
            sys.stdout.buffer if to_stdout else output,
            platform=platform,
            compression=compression,
            tags=list(tags),
            progress=prog,
        )
    names = ", ".join(t for i in res.images for t in i.repo_tags) or "untagged"
    line = (
        f"wrote {len(res.images)} image(s) ({names}) to {res.output}: "
        f"{human_size(res.bytes_written)} in {res.seconds:.1f}s"
    )
    if not to_stdout:
        emit(res, as_json, lambda: None)
    summary(line)
