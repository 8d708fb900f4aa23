"""Authentication challenges: Basic, and Bearer tokens fetched from the realm and cached per scope.

Credentials and tokens are never put in a message.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import time
import urllib.parse

from layouttool.registry.errors import AuthError, RegistryError, clean
from layouttool.registry.transport import Transport


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``Bearer realm="...",service="..."`` -> ``("bearer", {...})``."""
    scheme, _, rest = header.strip().partition(" ")
    params = dict(re.findall(r'(\w+)="([^"]*)"', rest))
    for k, v in re.findall(r"(\w+)=([^\",\s]+)", rest):
        params.setdefault(k, v)
    return scheme.lower(), params


class _Token:
    __slots__ = ("expires", "value")

    def __init__(self, value: str, expires: float) -> None:
        self.value = value
        self.expires = expires


class Authenticator:
    """The ``Authorization`` to send to one registry, per token scope (thread-safe).

    It answers the registry's challenges: Basic with ``creds``, or Bearer by asking the
    challenge's realm for a token for the scope (one request per scope at a time; the other
    threads wait and reuse its token).
    """

    def __init__(
        self, transport: Transport, creds: tuple[str, str] | None, *, insecure: bool = False
    ) -> None:
        self.registry = transport.registry
        self.creds = creds
        self.insecure = insecure
        self._transport = transport
        self._tokens: dict[str, _Token] = {}
        self._scope_locks: dict[str, threading.Lock] = {}
        self._basic = False
        self._lock = threading.Lock()
        #: token requests made, per scope (the cache is per scope; tests look at this)
        self.token_fetches: dict[str, int] = {}

    def header(self, scope: str) -> dict[str, str]:
        """The ``Authorization`` header for a request in ``scope`` (empty when none yet)."""
        with self._lock:
            tok = self._tokens.get(scope)
            basic = self._basic
        if tok is not None and tok.expires > time.monotonic():
            return {"Authorization": f"Bearer {tok.value}"}
        if basic and self.creds:
            return {"Authorization": f"Basic {self._basic_value()}"}
        return {}

    def _basic_value(self) -> str:
        assert self.creds is not None
        return base64.b64encode(f"{self.creds[0]}:{self.creds[1]}".encode()).decode()

    def authenticate(self, challenge: str, scope: str, sent: dict[str, str]) -> None:
        """Answer a 401's ``WWW-Authenticate`` so that :meth:`header` has what to send."""
        scheme, params = parse_challenge(challenge)
        if scheme == "basic":
            if not self.creds:
                raise AuthError(
                    f"{self.registry} requires credentials: use --creds USER:PASS or log in "
                    "(docker login / podman login)"
                )
            if sent.get("Authorization", "").startswith("Basic "):
                raise AuthError(f"{self.registry}: the registry refused the credentials given")
            with self._lock:
                self._basic = True
            return
        if scheme != "bearer" or "realm" not in params:
            raise AuthError(
                f"{self.registry}: unsupported authentication challenge {clean(scheme, 40)!r}"
            )
        with self._lock:
            lock = self._scope_locks.setdefault(scope, threading.Lock())
        # One token request per scope at a time: the other threads wait and reuse its token.
        with lock:
            with self._lock:
                cached = self._tokens.get(scope)
            if (
                cached is not None
                and cached.expires > time.monotonic()
                and sent.get("Authorization") != f"Bearer {cached.value}"
            ):
                return  # another thread fetched a fresh one while this one waited
            self._fetch_token(params, scope)

    def _fetch_token(self, params: dict[str, str], scope: str) -> None:
        realm = params["realm"]
        try:
            target = self._transport.resolve(realm)
        except RegistryError:
            raise AuthError(
                f"{self.registry}: token realm {clean(realm, 120)!r} is not an http(s) URL"
            ) from None
        query: list[tuple[str, str]] = []
        if "service" in params:
            query.append(("service", params["service"]))
        # several scopes are several parameters (a mount needs the source repository too)
        query.extend(("scope", s) for s in scope.split() if s)
        path = target[2] + ("&" if "?" in target[2] else "?") + urllib.parse.urlencode(query)
        headers = {"User-Agent": "layouttool"}
        if self.creds:
            if target[0] == "http" and not self.insecure:
                raise AuthError(
                    f"{self.registry}: token realm {target[1]} is plain HTTP; refusing to send "
                    "credentials there (use --insecure only for a test registry)"
                )
            headers["Authorization"] = f"Basic {self._basic_value()}"
        resp = self._transport.retrying(
            "GET", (target[0], target[1], path), headers, None, "token request", replay=True
        )
        with resp:
            body = resp.read(1 << 20)
        with self._lock:
            self.token_fetches[scope] = self.token_fetches.get(scope, 0) + 1
        if resp.status != 200:
            hint = "" if self.creds else " (no credentials given: --creds USER:PASS)"
            raise AuthError(
                f"{self.registry}: token server refused access to {scope or 'the registry'} "
                f"(HTTP {resp.status}){hint}"
            )
        try:
            doc = json.loads(body)
            token = doc.get("token") or doc.get("access_token")
            expires_in = doc.get("expires_in")
        except (ValueError, AttributeError):
            token, expires_in = None, None
        if not isinstance(token, str) or not token:
            raise AuthError(f"{self.registry}: token server sent no token")
        # the spec's default lifetime is 60 s; renew a little early
        life = expires_in if isinstance(expires_in, int) and expires_in > 0 else 60
        with self._lock:
            self._tokens[scope] = _Token(token, time.monotonic() + max(1, life - 5))


__all__ = ["Authenticator", "parse_challenge"]
