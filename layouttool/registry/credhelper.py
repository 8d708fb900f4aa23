"""The Docker credential-helper protocol: ``docker-credential-NAME get|store|erase``.

``get`` reads the server (bare ``HOST[:PORT]``; Docker Hub is ``https://index.docker.io/v1/``)
on stdin and prints ``{"ServerURL", "Username", "Secret"}``; a helper that has nothing prints
``credentials not found in native keychain`` and exits non-zero. ``store`` reads that JSON
document on stdin; ``erase`` reads the server. A ``Username`` of ``<token>`` means the secret is
an identity token (an OAuth2 refresh token), as in Docker.

Nothing a helper prints is ever put in a message: a helper that fails may well print the
secret it was about to return.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from dataclasses import dataclass, field

#: what helpers print when they hold nothing for the server (docker-credential-helpers)
NOT_FOUND = "credentials not found in native keychain"
#: the user name that says the secret is an identity token
TOKEN_USERNAME = "<token>"
#: the longest a helper may take (a keychain may prompt the user)
TIMEOUT = 60.0


class HelperFailed(Exception):
    """A helper is missing, failed or printed something unusable (the message names only it)."""


@dataclass(frozen=True, slots=True)
class HelperCredentials:
    """What a helper's ``get`` returned."""

    username: str
    secret: str = field(repr=False)


def program(name: str) -> str:
    """The executable name of helper ``name``."""
    return f"docker-credential-{name}"


def _run(name: str, action: str, stdin: str, env: dict[str, str] | None) -> tuple[int, str]:
    exe = program(name)
    path = shutil.which(exe, path=(env or os.environ).get("PATH"))
    if path is None:
        raise HelperFailed(f"credential helper {exe} is not on PATH")
    try:
        proc = subprocess.run(
            [path, action],
            input=stdin.encode(),
            capture_output=True,
            timeout=TIMEOUT,
            env=env,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise HelperFailed(f"credential helper {exe} {action} took over {TIMEOUT:.0f} s") from None
    except OSError as exc:
        raise HelperFailed(
            f"credential helper {exe} could not be run ({exc.strerror or exc})"
        ) from None
    return proc.returncode, proc.stdout.decode(errors="replace")


def get(name: str, server: str, env: dict[str, str] | None = None) -> HelperCredentials | None:
    """``get``: the helper's credentials for ``server``, or None when it has none."""
    code, out = _run(name, "get", server, env)
    if code != 0:
        if out.strip() == NOT_FOUND:
            return None
        raise HelperFailed(f"credential helper {program(name)} get failed (exit {code})")
    try:
        doc = json.loads(out)
    except ValueError:
        doc = None
    user = doc.get("Username") if isinstance(doc, dict) else None
    secret = doc.get("Secret") if isinstance(doc, dict) else None
    if not isinstance(user, str) or not isinstance(secret, str):
        raise HelperFailed(
            f"credential helper {program(name)} printed something that is not credentials JSON"
        )
    if not user and not secret:
        return None
    return HelperCredentials(user, secret)


def store(
    name: str, server: str, username: str, secret: str, env: dict[str, str] | None = None
) -> None:
    """``store``: keep ``username``/``secret`` for ``server`` in the helper."""
    doc = json.dumps({"ServerURL": server, "Username": username, "Secret": secret})
    code, _ = _run(name, "store", doc, env)
    if code != 0:
        raise HelperFailed(f"credential helper {program(name)} store failed (exit {code})")


def erase(name: str, server: str, env: dict[str, str] | None = None) -> bool:
    """``erase``: forget ``server``; False when the helper held nothing for it."""
    code, out = _run(name, "erase", server, env)
    if code != 0:
        if out.strip() == NOT_FOUND:
            return False
        raise HelperFailed(f"credential helper {program(name)} erase failed (exit {code})")
    return True


__all__ = [
    "NOT_FOUND",
    "TOKEN_USERNAME",
    "HelperCredentials",
    "HelperFailed",
    "erase",
    "get",
    "program",
    "store",
]
