"""The ``unpack`` command."""

from __future__ import annotations

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
from layouttool.ops.unpack import unpack_image


@click.command("unpack")
@click.argument("image")
@click.argument("dest", type=click.Path(file_okay=False))
@click.option("--rootless", is_flag=True, help="Keep the current user as owner; skip devices.")
@click.option(
    "--bundle", is_flag=True, help="Write an OCI runtime bundle (DEST/rootfs + config.json)."
)
@click.option("--force", is_flag=True, help="Unpack into a DEST that is not empty.")
@click.option(
    "--max-size",
    type=click.IntRange(min=1),
    metavar="BYTES",
    help="Stop if a layer decompresses to more than BYTES.",
)
@platform_option
@json_option
def unpack_cmd(
    image: str,
    dest: str,
    rootless: bool,
    bundle: bool,
    force: bool,
    max_size: int | None,
    platform: Platform | None,
    as_json: bool,
) -> None:
    """Unpack IMAGE's layers, in order, into the root filesystem DEST.

    Whiteouts, opaque directories, hardlinks, symlinks, modes, owners, xattrs and devices are
    reproduced; no entry can create, change or remove anything outside DEST (entries that try
    are refused with exit 6). Every layer's diff_id is checked (exit 5 on mismatch). Not as
    root, --rootless is implied.

    \b
    Examples:
      layouttool unpack ./oci:app:1.0 ./rootfs
      layouttool unpack ./oci:app --rootless ./rootfs
      layouttool unpack ./oci:app ./bundle --bundle && runc run -b ./bundle app
      layouttool unpack ./oci:multi ./rootfs --platform linux/arm64
    """
    with progress() as prog:
        res = unpack_image(
            image,
            dest,
            platform=platform,
            rootless=rootless,
            bundle=bundle,
            force=force,
            max_size=max_size,
            progress=prog,
        )
    emit(res, as_json, lambda: None)
    summary(
        f"unpacked {len(res.layers)} layers ({res.entries} entries, "
        f"{human_size(res.bytes_written)}) to {res.rootfs} in {res.seconds:.1f}s"
    )
