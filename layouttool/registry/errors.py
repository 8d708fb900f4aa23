"""The errors of the registry client, and how registry-supplied text enters a message."""

from __future__ import annotations

import re

from layouttool.errors import LayoutToolError, NotFoundError

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]+")


class RegistryError(LayoutToolError):
    """The registry answered with an error (or not at all)."""

    exit_code = 1
    kind = "registry"


class TransientError(RegistryError):
    """A failure worth trying again later: no connection, a 5xx or a 429."""


class AuthError(RegistryError):
    """The registry refused our credentials, or wants some (401/403)."""

    kind = "auth"


class NotFoundRegistryError(NotFoundError, RegistryError):
    """The registry says the manifest, blob or repository does not exist (404)."""

    exit_code = 3
    kind = "not-found"


class TLSError(RegistryError):
    """The TLS handshake with a registry (or a host it sent us to) failed: never retried."""

    kind = "tls"


class ProxyError(RegistryError):
    """The proxy refused to carry a request (or its configuration is unusable)."""

    kind = "proxy"


def clean(text: str, limit: int = 300) -> str:
    """Registry-supplied text made safe for one terminal line (no escapes, no newlines)."""
    text = " ".join(_CONTROL.sub(" ", text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


__all__ = [
    "AuthError",
    "NotFoundRegistryError",
    "ProxyError",
    "RegistryError",
    "TLSError",
    "TransientError",
    "clean",
]
