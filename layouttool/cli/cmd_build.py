"""The commands that make and change images: ``new``, ``append``, ``config``, ``repack``."""

from __future__ import annotations

import sys
from typing import Any

import click

from layouttool.cli._common import (
    LAYER_COMPRESSIONS,
    emit,
    human_size,
    json_option,
    platform_option,
    progress,
    summary,
)
from layouttool.model import Platform

_TAG_HELP = "Point NEW at the result and leave REF as it was (default: move REF)."
_COMPRESSION_HELP = "Compression of the new layer (default: that of the image's last layer)."


def tag_option(f: Any) -> Any:
    """``--tag NEW``."""
    return click.option("--tag", metavar="NEW", help=_TAG_HELP)(f)


def _owner(_ctx: click.Context, _param: click.Parameter, value: str | None
           ) -> tuple[int, int] | None:
    if value is None:
        return None
    uid, sep, gid = value.partition(":")
    if not (sep and uid.isdigit() and gid.isdigit()):
        raise click.BadParameter(f"{value!r}: expected numeric UID:GID such as 0:0")
    return int(uid), int(gid)


def _where(update: Any) -> str:
    name = update.ref or "<untagged>"
    return f"{name}\t{update.digest}\t{update.action}"


def _notes(notes: tuple[str, ...]) -> None:
    for note in notes:
        summary(f"layouttool: note: {note}")


@click.command("new")
@click.argument("image", metavar="LAYOUT:TAG")
@platform_option
@json_option
def new_cmd(image: str, platform: Platform | None, as_json: bool) -> None:
    """Make an empty image (no layers, a valid config) named LAYOUT:TAG.

    The layout is created when it does not exist; an existing TAG is moved. The platform
    defaults to this host's. With SOURCE_DATE_EPOCH set the digests are reproducible. An
    image with no layers is what 'umoci new' makes; 'verify' reports it until a layer is
    appended (the image-spec schema asks for one).

    \b
    Examples:
      layouttool new ./oci:base
      layouttool new ./oci:app --platform linux/arm64/v8
      SOURCE_DATE_EPOCH=0 layouttool new ./oci:scratch --json
    """
    from layouttool.ops.new import new_image

    res = new_image(image, platform=platform)
    emit(res, as_json, lambda: _where(res.update))
    summary(f"new {res.platform} image {res.update.manifest_digest} in {res.update.layout}")


@click.command("append")
@click.argument("image")
@click.argument("sources", nargs=-1, required=True, metavar="SOURCE...")
@tag_option
@click.option("--compression", type=click.Choice(LAYER_COMPRESSIONS),
              help=_COMPRESSION_HELP)
@click.option("--prefix", metavar="PATH",
              help="Put each source's contents under PATH in the image (e.g. /opt/app).")
@click.option("--owner", metavar="UID:GID", callback=_owner,
              help="Owner of every entry (default: 0:0 for directories; a tar's own).")
@click.option("--keep-owner", is_flag=True,
              help="Keep a directory's owners as they are on disk.")
@platform_option
@json_option
def append_cmd(
    image: str,
    sources: tuple[str, ...],
    tag: str | None,
    compression: str | None,
    prefix: str | None,
    owner: tuple[int, int] | None,
    keep_owner: bool,
    platform: Platform | None,
    as_json: bool,
) -> None:
    """Append one layer per SOURCE to IMAGE and move its ref to the result.

    A SOURCE is a directory, a tar file (plain, gzip, zstd, xz) or '-' for a tar on stdin.
    Directories are walked in sorted order: symlinks, hardlinks, xattrs and devices are
    kept, owners become 0:0 (--owner, --keep-owner), mtimes are clamped to SOURCE_DATE_EPOCH
    when it is set. A tar goes in byte for byte after every member passed unpack's checks
    (no '..', no duplicates; exit 6 or 4), unless --prefix or --owner rewrite it. The old
    image stays in the layout until gc.

    \b
    Examples:
      layouttool append ./oci:app ./build/rootfs
      layouttool append ./oci:app app.tar.gz --tag app:2
      tar -C ./site -c . | layouttool append ./oci:web - --prefix /srv/www
      layouttool append ./oci:app ./bin --prefix /usr/local/bin --owner 1000:1000 --json
    """
    from layouttool.ops.append import append_layers

    if owner is not None and keep_owner:
        raise click.UsageError("--owner and --keep-owner exclude each other")
    with progress() as prog:
        res = append_layers(
            image, sources, tag=tag, compression=compression, prefix=prefix, owner=owner,
            keep_owner=keep_owner, platform=platform, stdin=sys.stdin.buffer,
            progress=prog,
        )
    emit(res, as_json, lambda: _where(res.update))
    _notes(res.notes)
    summary(
        f"appended {len(res.layers)} layer(s) "
        f"({human_size(sum(la.size for la in res.layers))}) in {res.seconds:.1f}s"
    )


@click.command("config")
@click.argument("image")
@tag_option
@click.option("--entrypoint", metavar="JSON|STRING",
              help='JSON array used as is, or a string run by /bin/sh -c; "[]" unsets.')
@click.option("--cmd", metavar="JSON|STRING",
              help='JSON array used as is, or a string run by /bin/sh -c; "[]" unsets.')
@click.option("--env", multiple=True, metavar="K=V",
              help="Set an environment variable ($VAR expands); repeatable.")
@click.option("--unset-env", multiple=True, metavar="K",
              help="Remove an environment variable; repeatable.")
@click.option("--label", "labels", multiple=True, metavar="K=V",
              help="Set a label; repeatable.")
@click.option("--unset-label", "unset_labels", multiple=True, metavar="K",
              help="Remove a label; repeatable.")
@click.option("--workdir", metavar="DIR", help="Working directory (relative: to the current).")
@click.option("--user", metavar="USER[:GROUP]", help="User the process runs as.")
@click.option("--expose", multiple=True, metavar="PORT[/PROTO]",
              help="Expose a port (tcp unless /udp or /sctp); repeatable.")
@click.option("--volume", "volumes", multiple=True, metavar="PATH",
              help="Declare a volume (an absolute path); repeatable.")
@click.option("--stop-signal", metavar="SIGNAL", help="Signal that stops the container.")
@click.option("--author", help="Author of the image.")
@click.option("--created", metavar="RFC3339",
              help="Creation time (default: SOURCE_DATE_EPOCH, else now).")
@click.option("--os", "os_", metavar="OS", help="Operating system (config and index entry).")
@click.option("--arch", metavar="ARCH", help="CPU architecture (config and index entry).")
@click.option("--variant", metavar="VARIANT", help='CPU variant ("" removes it).')
@click.option("--history-comment", metavar="TEXT", help="Comment of the new history entry.")
@platform_option
@json_option
def config_cmd(image: str, tag: str | None, platform: Platform | None, as_json: bool,
               os_: str | None, **opts: Any) -> None:
    """Change IMAGE's configuration and move its ref to the result.

    The options mean what the Dockerfile instructions (and 'umoci config') mean. A new
    --entrypoint clears an inherited Cmd unless --cmd is given too (a note says so). Fields
    the options do not name, and fields layouttool does not know, are kept as they are; a
    Docker-typed image stays Docker-typed. One history entry records the edit.

    \b
    Examples:
      layouttool config ./oci:app --entrypoint '["/app/server"]' --cmd '["--port", "80"]'
      layouttool config ./oci:app --env 'PATH=/app/bin:$PATH' --label team=web
      layouttool config ./oci:app --cmd 'exec python3 /app/main.py' --tag app:2
      layouttool config ./oci:multi --platform linux/arm64 --user 1000 --json
    """
    from layouttool.mutate import ConfigEdit
    from layouttool.ops.config import configure_image

    edit = ConfigEdit(os=os_, **{k: v for k, v in opts.items() if v not in (None, ())})
    res = configure_image(image, edit, tag=tag, platform=platform)
    emit(res, as_json, lambda: _where(res.update))
    _notes(res.notes)
    summary(f"changed {', '.join(res.changed) or 'nothing but the history'}")


@click.command("repack")
@click.argument("image")
@click.argument("bundle", type=click.Path(file_okay=False))
@tag_option
@click.option("--compression", type=click.Choice(LAYER_COMPRESSIONS),
              help=_COMPRESSION_HELP)
@click.option("--history-comment", metavar="TEXT", help="Comment of the new history entry.")
@json_option
def repack_cmd(image: str, bundle: str, tag: str | None, compression: str | None,
               history_comment: str | None, as_json: bool) -> None:
    """Write what changed in an unpacked rootfs as one new layer of IMAGE.

    BUNDLE is the DEST that 'layouttool unpack' was given (with or without --bundle and
    --rootless); unpack left a record beside the rootfs. The layer holds exactly the
    difference: new and changed files, one whiteout per deleted path (nothing beneath a
    deleted directory), type changes, mode/owner/xattr/mtime changes, new hardlinks, and an
    opaque directory where that is smaller. Only files whose stat cannot tell are hashed.
    The new image is the unpacked image plus that layer; IMAGE's ref (or --tag) moves to
    it. No change: nothing is written, and it says so. A typical session:
    'layouttool unpack ./oci:app ./rootfs', edit ./rootfs, then repack.

    \b
    Examples:
      layouttool repack ./oci:app ./rootfs
      layouttool repack ./oci:app ./bundle --tag app:edited --history-comment "motd"
      layouttool repack ./oci:app ./bundle --compression zstd --json
    """
    from layouttool.ops.repack import repack_image

    with progress() as prog:
        res = repack_image(image, bundle, tag=tag, compression=compression,
                           history_comment=history_comment, progress=prog)
    emit(res, as_json, lambda: _where(res.update) if res.update is not None else None)
    _notes(res.notes)
    if res.layer is not None:
        summary(
            f"repacked {res.added} added, {res.modified} modified, {res.deleted} deleted "
            f"({res.hashed} hashed) into a layer of {human_size(res.layer['size'])} "
            f"in {res.seconds:.1f}s"
        )
