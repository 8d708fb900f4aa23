"""``push`` and ``pull``: a layout meets a registry."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

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
from layouttool.ops.remote import pull_image, push_image

F = TypeVar("F", bound=Callable[..., Any])


def _creds(_ctx: click.Context, _p: click.Parameter, value: str | None) -> tuple[str, str] | None:
    if value is None:
        return None
    user, sep, password = value.partition(":")
    if not sep or not user:
        raise click.BadParameter("expected USER:PASSWORD")
    return user, password


def _tls_verify(ctx: click.Context, _p: click.Parameter, value: bool) -> None:
    if not value:
        ctx.meta["layouttool.insecure"] = True


def _remote_options(f: F) -> F:
    f = click.option(
        "--creds",
        metavar="USER:PASSWORD",
        callback=_creds,
        help="Credentials (default: from REGISTRY_AUTH_FILE, auth.json or ~/.docker/config.json).",
    )(f)
    f = click.option(
        "--tls-verify",
        type=bool,
        default=True,
        expose_value=False,
        callback=_tls_verify,
        help="--tls-verify=false is --insecure (skopeo's spelling).",
    )(f)
    f = click.option(
        "--insecure",
        is_flag=True,
        help="Speak plain HTTP (loopback and test registries only).",
    )(f)
    f = click.option(
        "--retries",
        type=click.IntRange(min=0),
        default=5,
        show_default=True,
        help="Retries of a request or blob after a connection error, 5xx or 429 (with backoff).",
    )(f)
    return click.option(
        "-j",
        "--jobs",
        type=click.IntRange(min=1),
        default=lambda: min(8, (os.cpu_count() or 1) * 2),
        show_default="2 x cores, at most 8",
        help="Blobs transferred in parallel.",
    )(f)


@click.command("push")
@click.argument("image")
@click.argument("destination", metavar="REGISTRY/REPO[:TAG|@DIGEST]")
@click.option(
    "--mount-from",
    metavar="REPO",
    help="Mount blobs from this repository of the same registry instead of uploading them "
    "(default: the repository the image was imported from, when on the same registry).",
)
@_remote_options
@json_option
def push_cmd(
    image: str,
    destination: str,
    mount_from: str | None,
    creds: tuple[str, str] | None,
    insecure: bool,
    retries: int,
    jobs: int,
    as_json: bool,
) -> None:
    """Upload IMAGE (an image, or a multi-platform index with every child) to a registry.

    Blobs the registry already has are skipped; manifests go up children first, the root last,
    byte-exact (the registry's digest equals the layout's).

    \b
    Examples:
      layouttool push ./oci:app:1.0 registry.example.com/team/app:1.0
      layouttool push ./oci:app 127.0.0.1:5000/app:latest --insecure
      layouttool push ./oci:app ghcr.io/me/app:1.0 --creds "me:$TOKEN"
      layouttool push ./oci:app reg.example/team/app:2 --mount-from team/base
    """
    insecure = insecure or bool(click.get_current_context().meta.get("layouttool.insecure"))
    with progress() as prog:
        res = push_image(
            image,
            destination,
            insecure=insecure,
            creds=creds,
            jobs=jobs,
            mount_from=mount_from,
            retries=retries,
            progress=prog,
        )
    emit(res, as_json, lambda: None)
    summary(
        f"pushed {res.destination} ({res.digest}): {res.blobs_transferred} blob(s) "
        f"uploaded, {res.blobs_skipped} already there, {res.blobs_mounted} mounted, "
        f"{human_size(res.bytes_transferred)} in {res.seconds:.1f}s"
    )


@click.command("pull")
@click.argument("source", metavar="REGISTRY/REPO[:TAG|@DIGEST]")
@click.option(
    "-o",
    "--output",
    "layout",
    required=True,
    type=click.Path(file_okay=False),
    help="The OCI layout to pull into (created if absent).",
)
@click.option(
    "--ref",
    "ref_name",
    metavar="REF",
    help="Ref name in index.json (default: REPO:TAG without the registry).",
)
@click.option("--all-platforms", is_flag=True, help="Pull a multi-platform index whole.")
@platform_option
@_remote_options
@json_option
def pull_cmd(
    source: str,
    layout: str,
    ref_name: str | None,
    all_platforms: bool,
    platform: Platform | None,
    creds: tuple[str, str] | None,
    insecure: bool,
    retries: int,
    jobs: int,
    as_json: bool,
) -> None:
    """Fetch an image from a registry into an OCI layout and tag it.

    Every blob is verified (digest and size) while it streams in; a mismatch is exit 5 and
    nothing is tagged. Blobs already in the layout are verified, not fetched again, so an
    interrupted pull resumes.

    \b
    Examples:
      layouttool pull docker.io/library/busybox:latest -o ./oci
      layouttool pull 127.0.0.1:5000/app:1.0 -o ./oci --insecure --ref app:1.0
      layouttool pull ghcr.io/me/app:1.0 -o ./oci --all-platforms
    """
    insecure = insecure or bool(click.get_current_context().meta.get("layouttool.insecure"))
    with progress() as prog:
        res = pull_image(
            source,
            layout,
            platform=platform,
            all_platforms=all_platforms,
            ref_name=ref_name,
            insecure=insecure,
            creds=creds,
            jobs=jobs,
            retries=retries,
            progress=prog,
        )
    emit(res, as_json, lambda: None)
    summary(
        f"pulled {res.source} -> {res.destination} ({res.digest}): "
        f"{res.blobs_transferred} blob(s) fetched, {res.blobs_skipped} already there, "
        f"{human_size(res.bytes_transferred)} in {res.seconds:.1f}s"
    )
