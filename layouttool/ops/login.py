"""``login`` and ``logout``: keep or forget a registry's credentials, as skopeo and podman do.

``login`` first checks the credentials against the registry (``GET /v2/``, answering its
challenge: Basic, or a token request with no scope, as ``docker login`` does), then keeps
them where skopeo would: through the credential helper the primary auth file names for the
registry, else in that file (``--authfile``, ``$REGISTRY_AUTH_FILE``, else
``$XDG_RUNTIME_DIR/containers/auth.json``), written 0600 through a temp file and a rename.
See :mod:`layouttool.registry.credentials`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from layouttool.errors import InvalidInputError
from layouttool.progress import NULL_PROGRESS, Progress
from layouttool.registry.client import Client
from layouttool.registry.credentials import erase_credentials, store_credentials
from layouttool.registry.reference import DOCKER_HUB


@dataclass(frozen=True, slots=True)
class LoginResult:
    """What ``login`` or ``logout`` did (never the password)."""

    action: str
    registry: str
    username: str | None
    #: where the credentials were kept, or removed from
    location: str

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "action": self.action,
            "registry": self.registry,
            "username": self.username,
            "location": self.location,
        }


def registry_key(value: str) -> tuple[str, str]:
    """``(key, host)`` from ``HOST[:PORT][/NAMESPACE...]`` or a URL: the auth file's key (as
    skopeo keeps it, Docker Hub's aliases as ``docker.io``) and the host to check against."""
    text = value.strip().removeprefix("https://").removeprefix("http://").rstrip("/")
    host, _, path = text.partition("/")
    host = host.lower()
    if not host or " " in text or "@" in text:
        raise InvalidInputError(f"invalid registry {value!r}: expected HOST[:PORT][/NAMESPACE]")
    if host in ("index.docker.io", "registry-1.docker.io"):
        host = DOCKER_HUB
    if path.endswith("v1") and host == DOCKER_HUB:
        path = ""  # https://index.docker.io/v1/ is Docker Hub itself
    return (f"{host}/{path}" if path else host), host


def login(
    registry: str,
    username: str,
    password: str,
    *,
    insecure: bool = False,
    cert_dir: str | os.PathLike[str] | None = None,
    authfile: str | os.PathLike[str] | None = None,
    retries: int = 5,
    progress: Progress = NULL_PROGRESS,
) -> LoginResult:
    """Check ``username``/``password`` against ``registry``, then keep them (see the module)."""
    if not username:
        raise InvalidInputError("login needs a user name (--username)")
    if not password:
        raise InvalidInputError("login needs a password (--password-stdin)")
    key, host = registry_key(registry)
    with Client(
        host,
        insecure=insecure,
        creds=(username, password),
        cert_dir=cert_dir,
        notes=progress.note,
        retries=retries,
    ) as client:
        client.ping()
    where = store_credentials(key, username, password, authfile=authfile)
    return LoginResult("login", key, username, where)


def logout(registry: str, *, authfile: str | os.PathLike[str] | None = None) -> LoginResult:
    """Forget ``registry``'s credentials where :func:`login` keeps them."""
    key, _ = registry_key(registry)
    where = erase_credentials(key, authfile=authfile)
    return LoginResult("logout", key, None, where)


__all__ = ["LoginResult", "login", "logout", "registry_key"]
