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
    warn,
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

    Shows the ref name, the full image name (io.containerd.image.name), digest, what the entry
    is (image, index, artifact, schema1, unknown), platforms and total size (manifest + config
    + layers). Every entry is listed: one that cannot be read shows why in an ERROR column
    (an "error" field with --json) and ls still exits 0; only an unreadable index.json fails.
    What the reader finds odd is printed on stderr as warnings.

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
                e.kind or (e.media_type.rsplit(".", 2)[-2] if "." in e.media_type
                           else e.media_type),
                ",".join(e.platforms) or "-",
                human_size(e.size),
            ]
            for e in res.images
        ]
        header = ["REF", "NAME", "DIGEST", "TYPE", "PLATFORM", "SIZE"]
        if any(e.error for e in res.images):
            header.append("ERROR")
            for row, e in zip(rows, res.images, strict=True):
                row.append(" ".join((e.error or "").split()))
        return table(rows, header)

    warn(res.warnings)
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
        if res.kind == "artifact":
            lines += [
                f"Artifact:   {res.artifact_type}",
                f"Config:     {res.config_digest or '-'} ({res.config_media_type or 'none'})",
                f"Size:       {human_size(res.size)}",
            ]
            if res.subject is not None:
                lines.append(f"Subject:    {res.subject['digest']} ({res.subject['mediaType']})")
            for k, v in sorted(res.manifest_annotations.items()):
                lines.append(f"Annotation: {k}={v}")
        else:
            lines += [
                f"Config:     {res.config_digest}",
                f"Platform:   {res.platform or '-'}",
                f"Created:    {res.created or '-'}",
                f"Size:       {human_size(res.size)}",
            ]
            if res.entrypoint or res.cmd:
                lines.append(f"Command:    {(res.entrypoint or []) + (res.cmd or [])}")
            if res.subject is not None:
                lines.append(f"Subject:    {res.subject['digest']}")
        lines.append(f"Layers ({len(res.layers)}):")
        for layer in res.layers:
            lazy = f"  (lazy-pull: {layer['lazy']})" if layer.get("lazy") else ""
            lines.append(
                f"  {layer['digest']}  {human_size(layer['size']):>10}  {layer['mediaType']}{lazy}"
            )
        return "\n".join(lines)

    warn(res.warnings)
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
@click.option("--strict", is_flag=True,
              help="Count warnings as problems (exit non-zero when there is any).")
@click.option("--deep", is_flag=True,
              help="Also decompress every layer and check it against the config's diff_ids.")
@json_option
def verify_cmd(layout: str, strict: bool, deep: bool, as_json: bool) -> None:
    """Check every descriptor reachable from LAYOUT's index.json.

    Problems (exit 5 when content is missing or lies about its size or digest, else 4): a
    blob that something needs is absent; a size or digest that does not match, on any
    descriptor; a document that is not JSON or breaks a MUST of image-spec (its shape, the
    JSON schemas, artifactType with an empty config); an image config whose diff_ids do not
    match its layers. Warnings (exit 0, unless --strict): a descriptor whose media type
    disagrees with its document, an absent subject or platform manifest, null where a field is
    optional, an image with no layers, an absent non-distributable layer. Each line names
    where it was found (the path from index.json) and ends with a stable code; --json lists
    both. An artifact's config is never held to the image-config schema.

    \b
    Examples:
      layouttool verify ./oci
      layouttool verify ./oci --strict --deep
      layouttool verify ./oci --json | jq -r '.problems[] | .code + " " + .where'
    """
    # imported here: ls, inspect and tag share this module and need none of verify's checks
    from layouttool.ops.verify import verify_layout

    with progress() as prog:
        res = verify_layout(layout, strict=strict, deep=deep, progress=prog)

    def text() -> str:
        lines = [f"layouttool: problem: {f.where}: {f.message} [{f.code}]" for f in res.problems]
        lines += [f"layouttool: warning: {f.where}: {f.message} [{f.code}]" for f in res.warnings]
        counts = [f"{len(res.problems)} problem(s)"] if res.problems else []
        if res.warnings:
            counts.append(f"{len(res.warnings)} warning(s)")
        if res.ok:
            verdict = "OK" + (f", {counts[0]}" if counts else "")
        else:
            verdict = ", ".join(counts) + (" (--strict)" if not res.problems else "")
        deep_note = f", {res.layers_checked} layers decompressed" if deep else ""
        lines.append(f"{verdict}: {res.checked} blobs, {human_size(res.bytes_checked)} checked"
                     f"{deep_note}")
        return "\n".join(lines)

    emit(res, as_json, text)
    if not res.ok:
        sys.exit(res.exit_code)
