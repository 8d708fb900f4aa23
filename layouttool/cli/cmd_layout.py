"""Layout commands: init, ls, inspect, tag, untag, verify."""

from __future__ import annotations

import sys

import click

from layouttool.cli._common import (
    emit,
    human_size,
    json_option,
    platform_option,
    progress,
    table,
)
from layouttool.model import Platform
from layouttool.ops import layout as ops


@click.command("init")
@click.argument("layout", type=click.Path(file_okay=False))
@json_option
def init_cmd(layout: str, as_json: bool) -> None:
    """Create an empty OCI image layout.

    \b
    Examples:
      layouttool init ./oci
    """
    res = ops.init_layout(layout)
    emit(res, as_json, lambda: f"created empty OCI layout {res.layout}")


@click.command("ls")
@click.argument("layout", type=click.Path(file_okay=False))
@json_option
def ls_cmd(layout: str, as_json: bool) -> None:
    """List every image in LAYOUT's index.json.

    Shows the ref name, the full image name (io.containerd.image.name), digest, media type,
    platforms and total size (manifest + config + layers).

    \b
    Examples:
      layouttool ls ./oci
      layouttool ls ./oci --json | jq -r '.images[].ref'
    """
    res = ops.list_images(layout)

    def text() -> str:
        rows = [
            [
                e.ref or "<none>",
                e.name or "-",
                e.digest[:19],
                e.media_type.rsplit(".", 2)[-2] if "." in e.media_type else e.media_type,
                ",".join(e.platforms) or "-",
                human_size(e.size),
            ]
            for e in res.images
        ]
        return table(rows, ["REF", "NAME", "DIGEST", "TYPE", "PLATFORM", "SIZE"])

    emit(res, as_json, text)


@click.command("inspect")
@click.argument("image")
@click.option(
    "--raw",
    type=click.Choice(["manifest", "config", "index"]),
    help="Print the raw bytes of the manifest, the config, or the index.",
)
@platform_option
@json_option
def inspect_cmd(image: str, raw: str | None, platform: Platform | None, as_json: bool) -> None:
    """Show an image's manifest, config and layers.

    \b
    Examples:
      layouttool inspect ./oci:busybox:latest
      layouttool inspect ./oci@sha256:3f57... --json
      layouttool inspect ./oci:app --raw config | jq .config.Env
      layouttool inspect ./oci:multi --platform linux/arm64/v8
    """
    if raw:
        data = ops.raw_document(image, raw, platform)  # type: ignore[arg-type]
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    res = ops.inspect_image(image, platform)

    def text() -> str:
        lines = [
            f"Image:      {res.image}",
            f"Digest:     {res.entry_digest}",
            f"MediaType:  {res.entry_media_type}",
        ]
        if res.platforms:
            lines.append(f"Platforms:  {', '.join(res.platforms)}")
        if res.manifest_digest != res.entry_digest:
            lines.append(f"Manifest:   {res.manifest_digest}")
        lines += [
            f"Config:     {res.config_digest}",
            f"Platform:   {res.platform or '-'}",
            f"Created:    {res.created or '-'}",
            f"Size:       {human_size(res.size)}",
        ]
        if res.entrypoint or res.cmd:
            lines.append(f"Command:    {(res.entrypoint or []) + (res.cmd or [])}")
        lines.append(f"Layers ({len(res.layers)}):")
        for layer in res.layers:
            lazy = f"  (lazy-pull: {layer['lazy']})" if layer.get("lazy") else ""
            lines.append(
                f"  {layer['digest']}  {human_size(layer['size']):>10}  {layer['mediaType']}{lazy}"
            )
        return "\n".join(lines)

    emit(res, as_json, text)


@click.command("tag")
@click.argument("image")
@click.argument("new_ref")
@json_option
def tag_cmd(image: str, new_ref: str, as_json: bool) -> None:
    """Give IMAGE another ref NEW_REF in the same layout (moves NEW_REF if it exists).

    \b
    Examples:
      layouttool tag ./oci:app:1.0 app:latest
      layouttool tag ./oci@sha256:3f57... release
    """
    res = ops.tag_image(image, new_ref)
    emit(res, as_json, lambda: f"{res.action} {res.ref} -> {res.digest}")


@click.command("untag")
@click.argument("image", metavar="LAYOUT:REF")
@json_option
def untag_cmd(image: str, as_json: bool) -> None:
    """Remove a ref from index.json (its blobs stay until 'layouttool gc').

    \b
    Examples:
      layouttool untag ./oci:app:old && layouttool gc ./oci
    """
    res = ops.untag_image(image)
    emit(res, as_json, lambda: f"untagged {res.ref} ({res.digest})")


@click.command("verify")
@click.argument("layout", type=click.Path(file_okay=False))
@json_option
def verify_cmd(layout: str, as_json: bool) -> None:
    """Check everything reachable from LAYOUT's index.json.

    Every blob must exist with the size and digest its descriptor gives; manifests, indexes and
    configs must be valid JSON of the right shape that agrees with its descriptor's media type
    and passes the image-spec schemas; each image config has one diff_id per layer. All
    problems are reported. Exit 0 when clean, 5 when content is missing or corrupt, 4 when
    documents are invalid.

    \b
    Examples:
      layouttool verify ./oci
      layouttool verify ./oci --json | jq .problems
    """
    # imported here: ls, inspect and tag share this module and need none of verify's checks
    from layouttool.ops.verify import verify_layout

    with progress() as prog:
        task = prog.task("verify", None)
        res = verify_layout(layout, progress=task.advance)
        task.done()

    def text() -> str:
        lines = [f"layouttool: problem: {p.where}: {p.message}" for p in res.problems]
        lines += [f"layouttool: warning: {w}" for w in res.warnings]
        verdict = "OK" if res.ok else f"{len(res.problems)} problem(s)"
        lines.append(f"{verdict}: {res.checked} blobs, {human_size(res.bytes_checked)} checked")
        return "\n".join(lines)

    emit(res, as_json, text)
    if not res.ok:
        sys.exit(res.exit_code)
