"""``push``, ``pull``, ``login``, ``logout``: a layout meets a registry."""

from __future__ import annotations

import sys
from typing import Any

import click

from layouttool.cli._common import (
    emit,
    human_size,
    json_option,
    platform_option,
    progress,
    summary,
)
from layouttool.cli._registry import connection, connection_options, transfer_options


def _referrer_count(referrers: tuple[str, ...]) -> str:
    return f"{len(referrers)} referrer(s), " if referrers else ""


@click.command("push")
@click.argument("image")
@click.argument("destination", metavar="REGISTRY/REPO[:TAG|@DIGEST]")
@click.option(
    "--mount-from",
    metavar="REPO",
    help="Mount blobs from this repository of the same registry instead of uploading them "
    "(default: the repository the image was imported from, when on the same registry).",
)
@click.option(
    "--referrers",
    is_flag=True,
    help="Also push every manifest of the layout whose subject is the image (signatures, "
    "SBOMs; theirs too, recursively).",
)
@transfer_options
@json_option
def push_cmd(
    image: str,
    destination: str,
    mount_from: str | None,
    referrers: bool,
    as_json: bool,
    **remote: Any,
) -> None:
    """Upload IMAGE (an image, or a multi-platform index with every child) to a registry.

    Blobs the registry already has are skipped; manifests go up children first, the root last,
    byte-exact (the registry's digest equals the layout's).

    \b
    Examples:
      layouttool push ./oci:app:1.0 registry.example.com/team/app:1.0
      layouttool push ./oci:app 127.0.0.1:5000/app:latest --insecure
      layouttool push ./oci:app reg.example:5000/app:1 --cert-dir ./certs
      layouttool push ./oci:app ghcr.io/me/app:1.0 --creds "me:$TOKEN"
      layouttool push ./oci:app reg.example/team/app:2 --mount-from team/base
      layouttool push ./oci:app:1.0 reg.example/team/app:1.0 --referrers
    """
    from layouttool.ops.push import push_image  # the registry client loads only to run

    with progress(debug_is_verbose=True) as prog:
        res = push_image(
            image,
            destination,
            mount_from=mount_from,
            referrers=referrers,
            progress=prog,
            **connection(remote),
        )
    emit(res, as_json, lambda: None)
    summary(
        f"pushed {res.destination} ({res.digest}): {res.blobs_transferred} blob(s) "
        f"uploaded, {res.blobs_skipped} already there, {res.blobs_mounted} mounted, "
        f"{_referrer_count(res.referrers)}{human_size(res.bytes_transferred)} in "
        f"{res.seconds:.1f}s"
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
@click.option(
    "--referrers",
    is_flag=True,
    help="Also pull the referrers of the image (signatures, SBOMs; theirs too), each as an "
    "index.json entry without a ref name.",
)
@platform_option
@transfer_options
@json_option
def pull_cmd(source: str, layout: str, as_json: bool, **options: Any) -> None:
    """Fetch an image from a registry into an OCI layout and tag it.

    Every blob is verified (digest and size) while it streams in; a mismatch is exit 5 and
    nothing is tagged. Blobs already in the layout are verified, not fetched again, so an
    interrupted pull resumes.

    \b
    Examples:
      layouttool pull docker.io/library/busybox:latest -o ./oci
      layouttool pull 127.0.0.1:5000/app:1.0 -o ./oci --insecure --ref app:1.0
      layouttool pull reg.example:5000/app:1 -o ./oci --cert-dir ./certs
      layouttool pull ghcr.io/me/app:1.0 -o ./oci --all-platforms
      layouttool pull reg.example/team/app:1.0 -o ./oci --referrers
    """
    from layouttool.ops.pull import pull_image

    with progress(debug_is_verbose=True) as prog:
        res = pull_image(source, layout, progress=prog, **connection(options))
    emit(res, as_json, lambda: None)
    summary(
        f"pulled {res.source} -> {res.destination} ({res.digest}): "
        f"{res.blobs_transferred} blob(s) fetched, {res.blobs_skipped} already there, "
        f"{_referrer_count(res.referrers)}{human_size(res.bytes_transferred)} in "
        f"{res.seconds:.1f}s"
    )


def _password(username: str | None, password_stdin: bool) -> tuple[str, str]:
    """The user name and password: from the options and stdin, or prompted on a terminal."""
    stdin = sys.stdin
    if password_stdin:
        if not username:
            raise click.UsageError("--password-stdin needs --username")
        return username, stdin.read().removesuffix("\n").removesuffix("\r")
    if not stdin.isatty():
        raise click.UsageError("give the password on stdin with --password-stdin")
    user = username or str(click.prompt("Username", err=True))
    return user, str(click.prompt("Password", hide_input=True, err=True))


@click.command("login")
@click.argument("registry", metavar="REGISTRY[/NAMESPACE]")
@click.option("-u", "--username", metavar="USER", help="User name (prompted on a terminal).")
@click.option(
    "--password-stdin", is_flag=True, help="Read the password from stdin (the whole input)."
)
@connection_options
@json_option
def login_cmd(
    registry: str, username: str | None, password_stdin: bool, as_json: bool, **conn: Any
) -> None:
    """Check credentials against a registry, then keep them for push and pull.

    Kept as skopeo login keeps them: through the credential helper the auth file names for the
    registry (credHelpers, credsStore), else in that file (--authfile, $REGISTRY_AUTH_FILE,
    else $XDG_RUNTIME_DIR/containers/auth.json), written 0600.

    \b
    Examples:
      layouttool login reg.example:5000 -u ci --password-stdin --cert-dir ./certs < pw.txt
      layouttool login reg.example -u me --authfile ~/.docker/config.json
      echo "$TOKEN" | layouttool login ghcr.io -u me --password-stdin
    """
    from layouttool.ops.login import login

    user, password = _password(username, password_stdin)
    with progress(debug_is_verbose=True) as prog:
        res = login(registry, user, password, progress=prog, **connection(conn))
    emit(res, as_json, lambda: None)
    summary(f"logged in to {res.registry} as {res.username}: kept in {res.location}")


@click.command("logout")
@click.argument("registry", metavar="REGISTRY[/NAMESPACE]")
@click.option(
    "--authfile",
    metavar="FILE",
    type=click.Path(dir_okay=False),
    help="The auth file to edit (default: $REGISTRY_AUTH_FILE, else "
    "$XDG_RUNTIME_DIR/containers/auth.json).",
)
@json_option
def logout_cmd(registry: str, authfile: str | None, as_json: bool) -> None:
    """Forget a registry's credentials where login keeps them (exit 3 when there were none).

    \b
    Examples:
      layouttool logout ghcr.io
      layouttool logout reg.example:5000 --authfile ./auth.json
    """
    from layouttool.ops.login import logout

    res = logout(registry, authfile=authfile)
    emit(res, as_json, lambda: None)
    summary(f"logged out of {res.registry}: removed from {res.location}")
