"""The options of every command that talks to a registry (click only: importing this costs a
command nothing of the registry client, which its ops import when they run)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])

#: the transport prefix of a registry reference where a layout could be meant (skopeo's)
DOCKER_PREFIX = "docker://"


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


def connection_options(f: F) -> F:
    """How to reach a registry: ``--insecure``/``--tls-verify``, ``--cert-dir``, ``--authfile``."""
    f = click.option(
        "--authfile",
        metavar="FILE",
        type=click.Path(dir_okay=False),
        help="Auth file searched first (default: $REGISTRY_AUTH_FILE, else "
        "$XDG_RUNTIME_DIR/containers/auth.json; see README, Registries).",
    )(f)
    f = click.option(
        "--cert-dir",
        metavar="DIR",
        type=click.Path(file_okay=False),
        help="CA certificates (*.crt) and a client certificate (*.cert + *.key) for the "
        "registry (default: /etc/containers/certs.d/HOST:PORT, /etc/docker/certs.d/HOST:PORT).",
    )(f)
    f = click.option(
        "--tls-verify",
        type=bool,
        default=True,
        expose_value=False,
        callback=_tls_verify,
        help="--tls-verify=false is --insecure (skopeo's spelling).",
    )(f)
    return click.option(
        "--insecure",
        is_flag=True,
        help="Speak plain HTTP (loopback and test registries only).",
    )(f)


def request_options(f: F) -> F:
    """The connection options, plus ``--creds`` and ``--retries``."""
    f = connection_options(f)
    f = click.option(
        "--creds",
        metavar="USER:PASSWORD",
        callback=_creds,
        help="Credentials (default: from the auth files and credential helpers; see README, "
        "Registries).",
    )(f)
    return click.option(
        "--retries",
        type=click.IntRange(min=0),
        default=5,
        show_default=True,
        help="Retries of a request or blob after a connection error, 5xx or 429 (with backoff).",
    )(f)


def transfer_options(f: F) -> F:
    """The request options, plus ``-j/--jobs``."""
    f = request_options(f)
    return click.option(
        "-j",
        "--jobs",
        type=click.IntRange(min=1),
        default=lambda: min(8, (os.cpu_count() or 1) * 2),
        show_default="2 x cores, at most 8",
        help="Blobs transferred in parallel.",
    )(f)


def connection(options: dict[str, Any]) -> dict[str, Any]:
    """The options as ops keyword arguments (``--tls-verify=false`` is ``insecure``)."""
    meta = click.get_current_context().meta
    options["insecure"] = bool(options.get("insecure") or meta.get("layouttool.insecure"))
    return options


def only_for_registries(options: dict[str, Any], what: str) -> None:
    """Refuse connection options given for a local ``what`` (they would be ignored)."""
    ctx = click.get_current_context()
    given = [
        f"--{name.replace('_', '-')}"
        for name in options
        if ctx.get_parameter_source(name) is not click.core.ParameterSource.DEFAULT
    ]
    if ctx.meta.get("layouttool.insecure"):
        given.append("--tls-verify")
    if given:
        raise click.UsageError(
            f"{', '.join(sorted(given))}: only for a {DOCKER_PREFIX}REGISTRY/REPO reference, "
            f"not {what}"
        )


__all__ = [
    "DOCKER_PREFIX",
    "connection",
    "connection_options",
    "only_for_registries",
    "request_options",
    "transfer_options",
]
