"""Commands over an image's merged filesystem: export, flatten, diff."""

from __future__ import annotations

import sys

import click

from layouttool.cli._common import (
    emit,
    human_size,
    json_option,
    platform_option,
    progress,
    summary,
)
from layouttool.model import Platform


@click.command("export")
@click.argument("image")
@click.option(
    "-o", "--output", metavar="FILE",
    help="Write the tar to FILE (replaced atomically); '-' or none: stdout, not a terminal.",
)
@platform_option
@json_option
def export_cmd(image: str, output: str | None, platform: Platform | None, as_json: bool) -> None:
    """Write IMAGE's merged root filesystem as one tar, like 'docker export' of a container
    made from it.

    Whiteouts are applied (nothing a later layer deleted is written), names are relative
    ('etc/passwd'), hardlinks follow their target, and owners, modes, xattrs, devices and
    times are kept. Memory stays bounded whatever the image's size. --json (with -o FILE)
    reports what was written.

    \b
    Examples:
      layouttool export ./oci:app:1.0 -o rootfs.tar
      layouttool export ./oci:app:1.0 | tar -tvf -
      layouttool export ./oci:app | docker import - app-flat
      layouttool export ./oci:multi --platform linux/arm64 -o arm64.tar
    """
    from layouttool.ops.export_rootfs import export_rootfs

    to_stdout = output in (None, "-")
    if to_stdout and as_json:
        raise click.UsageError("--json needs -o FILE: the tar goes to stdout")
    if to_stdout and sys.stdout.isatty():
        raise click.UsageError("refusing to write a tar to a terminal; use -o FILE or a pipe")
    with progress() as prog:
        res = export_rootfs(image, sys.stdout.buffer if to_stdout else str(output),
                            platform=platform, progress=prog)
    if not to_stdout:
        emit(res, as_json, lambda: None)
    summary(
        f"exported {image} ({res.layers} layers, {res.entries} entries, "
        f"{human_size(res.content_bytes)} of file content) to {res.output} in "
        f"{res.seconds:.1f}s"
    )
