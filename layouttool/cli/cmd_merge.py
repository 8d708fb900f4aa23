"""Commands over an image's merged filesystem: export, flatten, diff."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

import click

from layouttool.cli._common import (
    emit,
    human_size,
    json_option,
    platform_option,
    progress,
    summary,
    table,
)
from layouttool.model import Platform

if TYPE_CHECKING:
    from layouttool.ops.diff import ImageDiffResult, LayersDiffResult
    from layouttool.rootfs.nodes import Meta


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


def _size_change(old: int, new: int) -> str:
    return f"{human_size(old)} -> {human_size(new)}" if old != new else human_size(new)


@click.command("diff")
@click.argument("images", nargs=-1, required=True, metavar="IMAGE_A [IMAGE_B]")
@click.option("--layers", is_flag=True,
              help="With one IMAGE: what each layer adds, removes and overwrites, and the "
                   "bytes wasted on files later layers replace.")
@platform_option
@json_option
def diff_cmd(images: tuple[str, ...], layers: bool, platform: Platform | None,
             as_json: bool) -> None:
    """Show the file-level differences between the filesystems of IMAGE_A and IMAGE_B.

    A path is added, removed, or changed when its type, mode, owner, xattrs, link target,
    device numbers or content (sha256) differ; mtimes are not compared. The images may be in
    different layouts. With --layers and one IMAGE: each layer's additions, removals and
    overwrites, and the bytes stored in layers but hidden by later ones (as dive shows).

    \b
    Examples:
      layouttool diff ./oci:app:1.0 ./oci:app:1.1
      layouttool diff ./old:app ./new:app --json | jq -r '.changed[].path'
      layouttool diff ./oci:app:1.0 --layers
    """
    from layouttool.ops.diff import diff_images, diff_layers

    if layers != (len(images) == 1) or len(images) > 2:
        raise click.UsageError("give IMAGE_A IMAGE_B, or one IMAGE with --layers")
    if layers:
        with progress() as prog:
            lres = diff_layers(images[0], platform=platform, progress=prog)
        emit(lres, as_json, lambda: _render_layers(lres))
        summary(f"{len(lres.layers)} layers, {human_size(lres.file_bytes)} of files, "
                f"{human_size(lres.wasted_bytes)} wasted "
                f"(efficiency {100 * lres.efficiency:.1f}%)")
        return
    with progress() as prog:
        res = diff_images(images[0], images[1], platform=platform, progress=prog)
    emit(res, as_json, lambda: _render_diff(res))
    summary(f"{len(res.added)} added, {len(res.removed)} removed, {len(res.changed)} changed")


def _what(meta: Meta) -> str:
    if meta.kind == "file":
        return f"file, {human_size(meta.size)}"
    if meta.kind == "symlink":
        return f"symlink -> {meta.target}"
    return meta.kind


def _render_diff(res: ImageDiffResult) -> str:
    lines = [f"+ {d.path}  ({_what(d.new)})" for d in res.added if d.new is not None]
    lines += [f"- {d.path}  ({_what(d.old)})" for d in res.removed if d.old is not None]
    for d in res.changed:
        assert d.old is not None and d.new is not None
        detail = (f"{_what(d.old)} -> {_what(d.new)}" if "type" in d.changes
                  else _size_change(d.old.size, d.new.size) if d.new.kind == "file"
                  else _what(d.new))
        lines.append(f"~ {d.path}  {', '.join(d.changes)}  ({detail})")
    return "\n".join(lines)


#: paths listed per layer and per kind in the text of --layers (--json lists all)
_SHOWN = 10


def _render_layers(res: LayersDiffResult) -> str:
    rows = [[str(la.index), la.digest.split(":")[-1][:12], human_size(la.size),
             human_size(la.file_bytes), str(len(la.added)), str(len(la.removed)),
             str(len(la.overwritten)), human_size(la.wasted_bytes),
             (la.created_by or "")[:60]] for la in res.layers]
    out = [table(rows, ["layer", "digest", "size", "files", "added", "removed",
                        "overwritten", "wasted", "created by"])]
    for la in res.layers:
        for what, items in (("removes", la.removed), ("overwrites", la.overwritten)):
            if items:
                out.append(f"layer {la.index} {what}: " + ", ".join(
                    c.path for c in items[:_SHOWN]) + (
                    f" and {len(items) - _SHOWN} more" if len(items) > _SHOWN else ""))
    if res.wasted_files:
        out.append("wasted (stored in a layer, hidden by a later one), largest first:")
        out += [f"  {human_size(b):>10}  {c} cop{'y' if c == 1 else 'ies'}  {p}"
                for p, b, c in res.wasted_files[:_SHOWN]]
    return "\n".join(out)


@click.command("flatten")
@click.argument("image")
@click.option("--tag", metavar="NEW",
              help="Point NEW at the result and leave REF as it was (default: move REF).")
@click.option("--compression", type=click.Choice(["gzip", "zstd", "none"]),
              help="Compression of the new layer (default: that of the image's last layer).")
@platform_option
@json_option
def flatten_cmd(image: str, tag: str | None, compression: str | None,
                platform: Platform | None, as_json: bool) -> None:
    """Replace IMAGE's layers by one holding their merged filesystem, and move its ref.

    Whiteouts are applied (nothing a later layer deleted is kept), hardlinks come out right
    even when a later layer deleted or replaced their target, owners, modes, xattrs and
    devices are kept. The history becomes one entry. The config and manifest keep every
    other field; a Docker-typed image stays Docker-typed. With SOURCE_DATE_EPOCH set the
    digests are reproducible. The old image stays in the layout until gc.

    \b
    Examples:
      layouttool flatten ./oci:app:1.0
      layouttool flatten ./oci:app:1.0 --tag app:1.0-flat --compression zstd
      SOURCE_DATE_EPOCH=0 layouttool flatten ./oci:app --json
      layouttool flatten ./oci:multi --platform linux/arm64
    """
    from layouttool.ops.flatten import flatten_image

    with progress() as prog:
        res = flatten_image(image, tag=tag, compression=compression, platform=platform,
                            progress=prog)
    update = res.update
    emit(res, as_json, lambda: f"{update.ref or '<untagged>'}\t{update.digest}\t{update.action}")
    summary(f"flattened {res.layers_before} layer(s) into one of {human_size(res.layer.size)} "
            f"({res.entries} entries) in {res.seconds:.1f}s")
