"""Authentication challenges: Basic, and Bearer tokens fetched from the realm and cached per scope.

A token is asked for with ``GET realm?service=...&scope=...`` (Basic credentials when we have a
user name and password), or, with an identity token (an OAuth2 refresh token, from ``docker
login`` to an OAuth registry or a ``<token>`` user name), with ``POST realm`` and
``grant_type=refresh_token`` (distribution's OAuth2 token spec).

The realm is the registry's word, so it is checked before anything is sent there: it must be
HTTPS when the registry is, and it must not be a loopback or link-local address (a cloud's
metadata service) unless the registry itself is one, or is that same host.

Credentials and tokens are never put in a message.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import re
import threading
import time
import urllib.parse

from layouttool.registry.credentials import Credentials
from layouttool.registry.errors import AuthError, RegistryError, clean
from layouttool.registry.proxy import split_host_port
from layouttool.registry.transport import Target, Transport

#: the OAuth2 client_id sent with a refresh token (required by distribution's token spec)
CLIENT_ID = "layouttool"


def _local(host: str) -> bool:
    """Whether ``host`` (as written) is a loopback or link-local address, or localhost."""
    name, _ = split_host_port(host)
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        ip = ipaddress.ip_address(name)
    except ValueError:
        return False
    return ip.is_loopback or ip.is_link_local


def check_realm(registry_target: tuple[str, str], realm: Target, registry: str) -> None:
    """Refuse a token realm that would take a request where it must not go.

    ``registry_target`` is the registry's ``(scheme, host)``, ``realm`` the resolved realm.
    """
    scheme, host = registry_target
    if scheme == "https" and realm[0] != "https":
        raise AuthError(
            f"{registry}: token realm {clean(realm[1], 80)} is plain HTTP for an HTTPS "
            "registry; refused (a token or password would travel in clear)"
        )
    if split_host_port(realm[1])[0] == split_host_port(host)[0]:
        return  # the registry's own host
    if _local(realm[1]) and not _local(host):
        raise AuthError(
            f"{registry}: token realm {clean(realm[1], 80)} is a loopback or link-local "
            "address of this machine, named by a remote registry; refused"
        )


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
        self,
        transport: Transport,
        creds: Credentials | tuple[str, str] | None,
        *,
        insecure: bool = False,
    ) -> None:
        self.registry = transport.registry
        if isinstance(creds, tuple):
            creds = Credentials(creds[0], creds[1], source="--creds")
        self.credentials = creds
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

    @property
    def creds(self) -> tuple[str, str] | None:
        """The user name and password, when that is what we have."""
        return self.credentials.basic if self.credentials is not None else None

    def _basic_value(self) -> str:
        assert self.creds is not None
        return base64.b64encode(f"{self.creds[0]}:{self.creds[1]}".encode()).decode()

    def authenticate(self, challenge: str, scope: str, sent: dict[str, str]) -> None:
        """Answer a 401's ``WWW-Authenticate`` so that :meth:`header` has what to send."""
        scheme, params = parse_challenge(challenge)
        if scheme == "basic":
            if not self.creds and self.credentials is not None:
                raise AuthError(
                    f"{self.registry} asks for a user name and password; the credentials found "
                    f"({self.credentials.source or 'given'}) are an identity token"
                )
            if not self.creds:
                raise AuthError(
                    f"{self.registry} requires credentials: use --creds USER:PASS or log in "
                    "(layouttool login, docker login, podman login)"
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
        check_realm((self._transport.scheme, self._transport.host), target, self.registry)
        scopes = [s for s in scope.split() if s]
        headers = {"User-Agent": "layouttool"}
        token_kind = self.credentials is not None and self.credentials.identity_token
        if token_kind:
            assert self.credentials is not None
            # OAuth2: one space-separated scope parameter, in a form body
            form = {
                "grant_type": "refresh_token",
                "refresh_token": self.credentials.identity_token,
                "client_id": CLIENT_ID,
            }
            if "service" in params:
                form["service"] = params["service"]
            if scopes:
                form["scope"] = " ".join(scopes)
            body: bytes | None = urllib.parse.urlencode(form).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            method, path = "POST", target[2]
        else:
            query: list[tuple[str, str]] = []
            if "service" in params:
                query.append(("service", params["service"]))
            # several scopes are several parameters (a mount needs the source repository too)
            query.extend(("scope", s) for s in scopes)
            sep = "&" if "?" in target[2] else "?"
            method, path, body = "GET", target[2] + sep + urllib.parse.urlencode(query), None
            if self.creds:
                headers["Authorization"] = f"Basic {self._basic_value()}"
        resp = self._transport.retrying(
            method, (target[0], target[1], path), headers, body, "token request", replay=True
        )
        with resp:
            data = resp.read(1 << 20)
        with self._lock:
            self.token_fetches[scope] = self.token_fetches.get(scope, 0) + 1
        if resp.status != 200:
            hint = "" if self.credentials else " (no credentials given: --creds USER:PASS)"
            raise AuthError(
                f"{self.registry}: token server refused access to {scope or 'the registry'} "
                f"(HTTP {resp.status}){hint}"
            )
        try:
            doc = json.loads(data)
            token = doc.get("access_token") if token_kind else None
            token = token or doc.get("token") or doc.get("access_token")
            expires_in = doc.get("expires_in")
        except (ValueError, AttributeError):
            token, expires_in = None, None
        if not isinstance(token, str) or not token:
            raise AuthError(f"{self.registry}: token server sent no token")
        # the spec's default lifetime is 60 s; renew a little early
        life = expires_in if isinstance(expires_in, int) and expires_in > 0 else 60
        with self._lock:
            self._tokens[scope] = _Token(token, time.monotonic() + max(1, life - 5))


__all__ = ["CLIENT_ID", "Authenticator", "check_realm", "parse_challenge"]
