"""A small client of the OCI distribution API (registries: distribution, Docker Hub, GHCR, zot...).

Only what push and pull need: manifests and blobs, HEAD/GET/PUT, monolithic and chunked
uploads, cross-repository mounts, anonymous/basic/bearer auth with credentials from the usual
files, retries with backoff on connection errors, 5xx and 429. Every response error becomes one
line naming the registry's own error code and message. Credentials and tokens are never put in
a message.

Plain ``http.client``: one persistent connection per thread and origin, no third-party
dependency.

Rules this client keeps (distribution-spec, and what registries do in practice):

* ``Location`` headers (upload sessions, redirects) may be relative or absolute, and may name
  another host: they are resolved against the URL of the request that returned them.
* ``Authorization`` goes only to the registry's own origin (scheme, host and port). A redirect
  of a blob GET to a CDN or object store, or an upload location elsewhere, gets none.
* Only replayable requests are retried as they are: GET, HEAD, PUT of a manifest, DELETE, and
  POST without a body. A PATCH chunk or the PUT that closes an upload is never resent alone (the
  registry may have taken it); the whole upload is started again instead, after a HEAD shows
  the blob is still missing. A 429 (or 401 before re-authenticating) means the request was not
  processed, so it is resent whatever its method.
* ``Docker-Content-Digest`` is checked wherever a registry sends it.
"""

from __future__ import annotations

import base64
import contextlib
import email.utils
import http.client
import json
import os
import random
import re
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final, NoReturn

from layouttool import mediatypes as mt
from layouttool.codec import Reader
from layouttool.digest import Digest
from layouttool.errors import (
    IntegrityError,
    InvalidInputError,
    LayoutToolError,
    NotFoundError,
)

DOCKER_HUB: Final = "docker.io"
DOCKER_HUB_API: Final = "registry-1.docker.io"
#: uploads larger than this go in PATCH chunks of this size (read at call time: tests lower it)
UPLOAD_CHUNK = 16 << 20
#: first wait before a retry, in seconds; doubled for each further try, with jitter
RETRY_BACKOFF = 0.5
#: the longest single wait, whatever ``Retry-After`` asks for
RETRY_MAX_WAIT = 30.0
#: manifests and indexes larger than this are refused (distribution's own limit is 4 MiB)
MANIFEST_CAP: Final = 16 << 20
MANIFEST_ACCEPT: Final = ", ".join(
    [
        mt.MT_OCI_INDEX,
        mt.MT_OCI_MANIFEST,
        mt.MT_DOCKER_LIST,
        mt.MT_DOCKER_MANIFEST,
        f"{mt.MT_DOCKER_SCHEMA1_SIGNED};q=0.5",
        f"{mt.MT_DOCKER_SCHEMA1};q=0.5",
    ]
)
_REPO_RE = re.compile(
    r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
)
_TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_REDIRECTS: Final = (301, 302, 303, 307, 308)
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


def _clean(text: str, limit: int = 300) -> str:
    """Registry-supplied text made safe for one terminal line (no escapes, no newlines)."""
    text = " ".join(_CONTROL.sub(" ", text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(frozen=True, slots=True)
class RemoteRef:
    """``REGISTRY/REPO[:TAG|@DIGEST]``."""

    registry: str
    repository: str
    tag: str | None = None
    digest: Digest | None = None

    @property
    def reference(self) -> str:
        """The tag or digest to address the manifest by."""
        if self.digest is not None:
            return str(self.digest)
        return self.tag or "latest"

    def __str__(self) -> str:
        s = f"{self.registry}/{self.repository}"
        if self.digest is not None:
            return f"{s}@{self.digest}"
        return f"{s}:{self.tag or 'latest'}"

    @classmethod
    def parse(cls, value: str) -> RemoteRef:
        """Parse a registry reference; a first component without ``.``/``:`` is Docker Hub."""
        rest, digest = value, None
        if "@" in value:
            rest, _, d = value.partition("@")
            digest = Digest.parse(d, what="reference digest")
        tag = None
        slash = rest.rfind("/")
        colon = rest.rfind(":")
        if colon > slash:
            rest, tag = rest[:colon], rest[colon + 1 :]
            if not _TAG_RE.fullmatch(tag):
                raise InvalidInputError(f"invalid tag {tag!r} in {value!r}")
        first, sep, path = rest.partition("/")
        if sep and ("." in first or ":" in first or first == "localhost"):
            registry, repo = first, path
        else:
            registry, repo = DOCKER_HUB, rest
        if registry in (DOCKER_HUB, "index.docker.io") and "/" not in repo:
            repo = f"library/{repo}"
        if registry == "index.docker.io":
            registry = DOCKER_HUB
        # distribution refuses names over 255 characters (NAME_INVALID); say so before a request
        if not _REPO_RE.fullmatch(repo) or len(repo) > 255:
            raise InvalidInputError(
                f"invalid repository {repo[:80]!r} in {value[:120]!r}: lowercase letters, digits "
                "and separators, at most 255 characters, e.g. "
                "'registry.example:5000/team/app:1.0'"
            )
        return cls(registry, repo, tag, digest)


# --------------------------------------------------------------------------------- credentials
def _auth_files() -> list[Path]:
    """Where credentials are looked up, first match wins (the order podman and skopeo use)."""
    files = []
    if env := os.environ.get("REGISTRY_AUTH_FILE"):
        files.append(Path(env))
    if runtime := os.environ.get("XDG_RUNTIME_DIR"):
        files.append(Path(runtime) / "containers" / "auth.json")
    home = Path.home()
    files.append(home / ".config" / "containers" / "auth.json")
    docker_config = os.environ.get("DOCKER_CONFIG")
    files.append(
        Path(docker_config) / "config.json" if docker_config else home / ".docker" / "config.json"
    )
    return files


def find_credentials(registry: str) -> tuple[str, str] | None:
    """``(user, password)`` for ``registry`` from the containers and Docker auth files."""
    keys = {registry, f"https://{registry}", f"http://{registry}"}
    if registry == DOCKER_HUB:
        keys |= {"https://index.docker.io/v1/", "index.docker.io", DOCKER_HUB_API}
    for f in _auth_files():
        try:
            doc = json.loads(f.read_bytes()[: 1 << 20])
        except (OSError, ValueError):
            continue
        auths = doc.get("auths") if isinstance(doc, dict) else None
        if not isinstance(auths, dict):
            continue
        for k, v in auths.items():
            if k.rstrip("/") in keys or k in keys:
                token = v.get("auth") if isinstance(v, dict) else None
                if isinstance(token, str):
                    try:
                        user, _, pw = base64.b64decode(token).decode().partition(":")
                    except (ValueError, UnicodeDecodeError):
                        continue
                    return user, pw
    return None


def parse_challenge(header: str) -> tuple[str, dict[str, str]]:
    """``Bearer realm="...",service="..."`` -> ``("bearer", {...})``."""
    scheme, _, rest = header.strip().partition(" ")
    params = dict(re.findall(r'(\w+)="([^"]*)"', rest))
    for k, v in re.findall(r"(\w+)=([^\",\s]+)", rest):
        params.setdefault(k, v)
    return scheme.lower(), params


def retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


# ------------------------------------------------------------------------------------- client
#: (scheme, host[:port], path?query): where a request goes
Target = tuple[str, str, str]


class Response:
    """A response whose body has not been read yet (stream it with :meth:`read`).

    Use it as a context manager (or call :meth:`close`): a body left unread makes the
    persistent connection unusable, so closing early drops that connection.
    """

    def __init__(
        self, client: Client, method: str, target: Target, resp: http.client.HTTPResponse
    ) -> None:
        self.status = resp.status
        self.headers = resp.headers
        self.target = target
        self._client = client
        self._resp = resp
        length = resp.headers.get("Content-Length", "")
        self._length = int(length) if length.isdigit() and method != "HEAD" else None
        self._got = 0

    def read(self, n: int = -1, /) -> bytes:
        """Read the body (a connection lost mid-body is a :class:`TransientError`)."""
        try:
            data = self._resp.read(n) if n >= 0 else self._resp.read()
        except (OSError, http.client.HTTPException) as exc:
            self._lost(str(exc))
        self._got += len(data)
        # http.client reports a body cut short of its Content-Length as a plain end of file
        if (
            (not data or n < 0)
            and n != 0
            and self._length is not None
            and self._got < self._length
        ):
            self._lost(f"closed after {self._got} of {self._length} bytes")
        return data

    def _lost(self, why: str) -> NoReturn:
        self._client._drop_conn(self.target[0], self.target[1])
        raise TransientError(
            f"{self._client.registry}: connection lost while reading a response: "
            f"{_clean(why, 120)}"
        )

    def header(self, name: str) -> str | None:
        """A response header."""
        return self.headers.get(name)

    def close(self) -> None:
        """Release the connection (dropping it when the body was not read to the end)."""
        if not self._resp.isclosed():
            self._resp.close()
            self._client._drop_conn(self.target[0], self.target[1])

    def __enter__(self) -> Response:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


Body = bytes | Callable[[], Iterator[bytes]] | None


class _Token:
    __slots__ = ("expires", "value")

    def __init__(self, value: str, expires: float) -> None:
        self.value = value
        self.expires = expires


class Client:
    """A client of one registry (thread-safe: one connection per thread and origin).

    ``retries`` bounds the retries of one request (and of one blob upload); ``backoff`` is
    the first wait in seconds (doubled each time, jittered, at most ``max_wait``); ``sleep``
    is how to wait (injectable so tests need not).
    """

    def __init__(
        self,
        registry: str,
        *,
        insecure: bool = False,
        creds: tuple[str, str] | None = None,
        retries: int = 5,
        timeout: float = 120.0,
        backoff: float | None = None,
        max_wait: float | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.registry = registry
        self.host = DOCKER_HUB_API if registry == DOCKER_HUB else registry
        self.insecure = insecure
        self.scheme = "http" if insecure else "https"
        self.creds = creds if creds is not None else find_credentials(registry)
        self.retries = max(0, retries)
        self.timeout = timeout
        self.backoff = RETRY_BACKOFF if backoff is None else backoff
        self.max_wait = RETRY_MAX_WAIT if max_wait is None else max_wait
        self._sleep = sleep
        self._local = threading.local()
        self._tokens: dict[str, _Token] = {}
        self._scope_locks: dict[str, threading.Lock] = {}
        self._basic = False
        self._lock = threading.Lock()
        self._all: set[http.client.HTTPConnection] = set()
        self._uploaded = 0
        self._requests = 0
        #: token requests made, per scope (the cache is per scope; tests look at this)
        self.token_fetches: dict[str, int] = {}

    @property
    def uploaded_bytes(self) -> int:
        """Bytes of blobs whose upload the registry accepted."""
        return self._uploaded

    @property
    def requests(self) -> int:
        """HTTP requests sent (retries included)."""
        return self._requests

    # ---------------------------------------------------------------- transport
    def _conn(self, scheme: str, host: str) -> http.client.HTTPConnection:
        conns: dict[tuple[str, str], http.client.HTTPConnection] | None = getattr(
            self._local, "conns", None
        )
        if conns is None:
            conns = self._local.conns = {}
        c = conns.get((scheme, host))
        if c is None:
            if scheme == "https":
                ctx = ssl.create_default_context()
                c = http.client.HTTPSConnection(host, timeout=self.timeout, context=ctx)
            else:
                c = http.client.HTTPConnection(host, timeout=self.timeout)
            conns[(scheme, host)] = c
            with self._lock:
                self._all.add(c)
        return c

    def _drop_conn(self, scheme: str, host: str) -> None:
        conns = getattr(self._local, "conns", {})
        c = conns.pop((scheme, host), None)
        if c is not None:
            c.close()
            with self._lock:
                self._all.discard(c)

    def close(self) -> None:
        """Close every connection any thread opened."""
        with self._lock:
            conns, self._all = self._all, set()
        for c in conns:
            c.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(
        self, method: str, target: Target, headers: dict[str, str], body: Body
    ) -> Response:
        scheme, host, path = target
        c = self._conn(scheme, host)
        with self._lock:
            self._requests += 1
        try:
            if callable(body):
                c.putrequest(method, path, skip_accept_encoding=True)
                for k, v in headers.items():
                    c.putheader(k, v)
                c.endheaders()
                for piece in body():
                    c.send(piece)
            else:
                c.request(method, path, body=body, headers=headers)
            resp = c.getresponse()
        except (OSError, http.client.HTTPException):
            self._drop_conn(scheme, host)
            raise
        return Response(self, method, target, resp)

    def resolve(self, location: str, base: Target | None = None) -> Target:
        """Where a ``Location`` header points, resolved against the request that sent it."""
        scheme, host, path = base or (self.scheme, self.host, "/v2/")
        u = urllib.parse.urlsplit(urllib.parse.urljoin(f"{scheme}://{host}{path}", location))
        if u.scheme not in ("http", "https") or not u.netloc:
            raise RegistryError(f"{self.registry}: unusable Location {_clean(location, 120)!r}")
        new_scheme = u.scheme
        if u.netloc == self.host and self.scheme == "https":
            new_scheme = "https"  # never downgrade our own origin (the token would go in clear)
        return new_scheme, u.netloc, (u.path or "/") + (f"?{u.query}" if u.query else "")

    def wait(self, attempt: int, hint: float | None = None) -> None:
        """Sleep before retry number ``attempt`` (``hint``: what ``Retry-After`` asked for)."""
        if hint is not None:
            delay = hint
        else:
            delay = self.backoff * (2 ** (attempt - 1)) * random.uniform(0.5, 1.0)
        delay = min(delay, self.max_wait)
        if delay > 0:
            self._sleep(delay)

    # ---------------------------------------------------------------- auth
    def _own(self, target: Target) -> bool:
        return target[1] == self.host and target[0] == self.scheme

    def _auth_header(self, scope: str) -> dict[str, str]:
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

    def _authenticate(self, challenge: str, scope: str, sent: dict[str, str]) -> None:
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
                f"{self.registry}: unsupported authentication challenge {_clean(scheme, 40)!r}"
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
            target = self.resolve(realm)
        except RegistryError:
            raise AuthError(
                f"{self.registry}: token realm {_clean(realm, 120)!r} is not an http(s) URL"
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
        resp = self._retrying(
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

    # ---------------------------------------------------------------- requests
    def _retrying(
        self,
        method: str,
        target: Target,
        headers: dict[str, str],
        body: Body,
        what: str,
        *,
        replay: bool,
    ) -> Response:
        """Send once, retrying what may be retried; return the last response (any status)."""
        attempt = 0
        while True:
            attempt += 1
            try:
                resp = self._send(method, target, headers, body)
            except (OSError, http.client.HTTPException) as exc:
                reason = _clean(str(exc) or type(exc).__name__, 120)
                if not replay:
                    raise TransientError(f"{self.registry}: {method} {what}: {reason}") from exc
                if attempt > self.retries:
                    raise RegistryError(
                        f"{self.registry}: {method} {what}: {reason} (gave up after {attempt} "
                        "tries)"
                    ) from exc
                self.wait(attempt)
                continue
            if resp.status == 429 or resp.status >= 500:
                if not replay and resp.status != 429:
                    return resp
                if attempt > self.retries:
                    return resp
                hint = retry_after(resp.header("Retry-After"))
                with resp:
                    resp.read(64 << 10)
                self.wait(attempt, hint)
                continue
            return resp

    def request(
        self,
        method: str,
        target: str | Target,
        *,
        scope: str,
        headers: dict[str, str] | None = None,
        body: Body = None,
        ok: tuple[int, ...] = (200,),
        allow: tuple[int, ...] = (),
        what: str = "",
        replay: bool | None = None,
    ) -> Response:
        """Send a request, authenticating, retrying and following redirects as needed.

        ``target`` is a path on the registry or a target from :meth:`resolve`. Statuses in
        ``ok`` and ``allow`` are returned; others raise :class:`RegistryError` (or a subclass)
        with the registry's error message. ``replay`` says whether the request may be resent
        after a connection error or 5xx (default: true for GET, HEAD, PUT, DELETE and a POST
        without a body).
        """
        if isinstance(target, str):
            target = (self.scheme, self.host, target)
        what = what or target[2].split("?")[0]
        if replay is None:
            replay = method in ("GET", "HEAD", "PUT", "DELETE") or (
                method == "POST" and not body
            )
        authed = False
        redirects = 0
        while True:
            h = {"User-Agent": "layouttool", **(headers or {})}
            if self._own(target):
                h.update(self._auth_header(scope))
            resp = self._retrying(method, target, h, body, what, replay=replay)
            challenge = resp.header("WWW-Authenticate") or ""
            if (
                resp.status == 401
                and not authed
                and self._own(target)
                and parse_challenge(challenge)[0] in ("basic", "bearer")
            ):
                with resp:
                    resp.read(64 << 10)
                self._authenticate(challenge, scope, h)
                authed = True
                continue
            if resp.status in _REDIRECTS and method in ("GET", "HEAD"):
                loc = resp.header("Location")
                with resp:
                    resp.read(64 << 10)
                if not loc or redirects >= 5:
                    raise RegistryError(f"{self.registry}: too many redirects for {what}")
                redirects += 1
                target = self.resolve(loc, target)
                continue
            if resp.status in ok or resp.status in allow:
                return resp
            with resp:
                raise self._error(resp, method, what, replay)

    def _error(self, resp: Response, method: str, what: str, replay: bool) -> RegistryError:
        body = resp.read(64 << 10) if method != "HEAD" else b""
        detail = ""
        try:
            errs = json.loads(body).get("errors") or []
            detail = "; ".join(
                _clean(f"{e.get('code', '?')}: {e.get('message', '')}".strip(), 200)
                for e in errs[:3]
                if isinstance(e, dict)
            )
        except (ValueError, AttributeError, TypeError):
            if not body.lstrip().startswith(b"<"):  # an HTML error page says nothing useful
                detail = _clean(body[:200].decode(errors="replace"), 200)
        msg = f"{self.registry}: {method} {what}: HTTP {resp.status}" + (
            f" ({detail})" if detail else ""
        )
        if resp.status in (401, 403):
            if self.creds is None:
                return AuthError(msg + "; no credentials were given (--creds, docker login)")
            return AuthError(msg + "; check the credentials and their rights on the repository")
        if resp.status == 404:
            return NotFoundRegistryError(msg)
        if resp.status >= 500 and not replay:
            return TransientError(msg)
        if resp.status >= 500 or resp.status == 429:
            return RegistryError(msg + f" (gave up after {self.retries + 1} tries)")
        return RegistryError(msg)

    # ---------------------------------------------------------------- API
    @staticmethod
    def scope(repo: str, push: bool = False) -> str:
        """The token scope for ``repo``."""
        return f"repository:{repo}:{'pull,push' if push else 'pull'}"

    def ping(self) -> None:
        """Check that the endpoint speaks the distribution API (``GET /v2/``)."""
        with self.request("GET", "/v2/", scope="", ok=(200,), what="/v2/") as r:
            r.read()

    def blob_size(self, repo: str, digest: Digest, *, push: bool = False) -> int | None:
        """The size of a blob the registry has (-1 when it does not say), or None."""
        with self.request(
            "HEAD",
            f"/v2/{repo}/blobs/{digest}",
            scope=self.scope(repo, push),
            allow=(404,),
            what=f"blob {digest}",
        ) as resp:
            resp.read()
        if resp.status == 404:
            return None
        length = resp.header("Content-Length")
        return int(length) if length and length.isdigit() else -1

    def open_blob(self, repo: str, digest: Digest) -> Response:
        """A response streaming a blob's bytes (verify them: the caller's writer does)."""
        return self.request(
            "GET", f"/v2/{repo}/blobs/{digest}", scope=self.scope(repo), what=f"blob {digest}"
        )

    def get_manifest(
        self, repo: str, reference: str, *, expected: Digest | None = None
    ) -> tuple[bytes, str, Digest]:
        """The raw manifest, its media type (Content-Type) and its digest.

        The digest is computed from the bytes and checked against ``expected`` and against
        the registry's ``Docker-Content-Digest``; a mismatch is an :class:`IntegrityError`.
        """
        what = f"manifest {repo}:{reference}" if expected is None else f"manifest {expected}"
        with self.request(
            "GET",
            f"/v2/{repo}/manifests/{reference}",
            scope=self.scope(repo),
            headers={"Accept": MANIFEST_ACCEPT},
            what=what,
        ) as resp:
            data = resp.read(MANIFEST_CAP + 1)
        if len(data) > MANIFEST_CAP:
            raise InvalidInputError(
                f"{self.registry}: {what} is over {MANIFEST_CAP >> 20} MiB; refused"
            )
        ctype = (resp.header("Content-Type") or "").split(";")[0].strip()
        claimed: Digest | None = None
        header = resp.header("Docker-Content-Digest")
        # a signed schema 1 manifest's registry digest covers the JWS payload, not the bytes
        if header and ctype != mt.MT_DOCKER_SCHEMA1_SIGNED:
            with contextlib.suppress(LayoutToolError):
                claimed = Digest.parse(header.strip(), what="Docker-Content-Digest")
        alg = expected.algorithm if expected is not None else "sha256"
        if claimed is not None and expected is None:
            alg = claimed.algorithm
        digest = Digest.of_bytes(data, alg)
        if expected is not None and digest != expected:
            raise IntegrityError(
                f"{self.registry}: asked for manifest {expected}, got content hashing to "
                f"{digest}; nothing was stored"
            )
        if claimed is not None and claimed.algorithm == alg and claimed != digest:
            raise IntegrityError(
                f"{self.registry}: {what}: Docker-Content-Digest says {claimed} but the content "
                f"hashes to {digest}; nothing was stored"
            )
        return data, ctype, digest

    def put_manifest(self, repo: str, reference: str, data: bytes, media_type: str) -> str | None:
        """Upload a manifest; returns the digest the registry reports."""
        with self.request(
            "PUT",
            f"/v2/{repo}/manifests/{reference}",
            scope=self.scope(repo, True),
            headers={"Content-Type": media_type},
            body=data,
            ok=(201, 200, 202, 204),
            what=f"manifest {repo}:{reference}",
        ) as resp:
            resp.read()
        return resp.header("Docker-Content-Digest")

    def mount_blob(self, repo: str, digest: Digest, source_repo: str) -> tuple[bool, Target | None]:
        """Ask the registry to mount a blob from another repository.

        Returns ``(True, None)`` when it did; otherwise ``(False, location)``, the upload
        session the registry opened instead (per the spec), for :meth:`upload_blob` to use.
        """
        q = urllib.parse.urlencode({"mount": str(digest), "from": source_repo})
        with self.request(
            "POST",
            f"/v2/{repo}/blobs/uploads/?{q}",
            scope=f"{self.scope(repo, True)} repository:{source_repo}:pull",
            ok=(201, 202),
            what=f"mount {digest} from {source_repo}",
        ) as resp:
            resp.read()
        if resp.status == 201:
            return True, None
        loc = resp.header("Location")
        return False, self.resolve(loc, resp.target) if loc else None

    def upload_blob(
        self,
        repo: str,
        digest: Digest,
        size: int,
        opener: Callable[[], Reader],
        *,
        location: Target | None = None,
    ) -> None:
        """Upload a blob: one PUT when small, PATCH chunks of :data:`UPLOAD_CHUNK` when large.

        ``opener`` returns a fresh reader of the blob (a verified reader of the store), so a
        failed upload can start again from the first byte. ``location`` is an upload session
        already opened (by a mount the registry declined). A transient failure restarts the
        whole upload (at most ``retries`` times) unless a HEAD shows the registry has the blob.
        """
        attempt = 0
        while True:
            attempt += 1
            try:
                self._upload_once(repo, digest, size, opener, location)
                return
            except TransientError:
                location = None
                if attempt > self.retries:
                    raise
                self.wait(attempt)
                # the closing PUT may have gone through before the connection broke
                if self.blob_size(repo, digest, push=True) == size:
                    with self._lock:
                        self._uploaded += size
                    return

    def _upload_once(
        self,
        repo: str,
        digest: Digest,
        size: int,
        opener: Callable[[], Reader],
        location: Target | None,
    ) -> None:
        scope = self.scope(repo, True)
        what = f"upload {digest}"
        if location is None:
            with self.request(
                "POST", f"/v2/{repo}/blobs/uploads/", scope=scope, ok=(202,), what=what
            ) as resp:
                resp.read()
            loc = resp.header("Location")
            if not loc:
                raise RegistryError(f"{self.registry}: upload of {digest} got no Location")
            location = self.resolve(loc, resp.target)
        chunk = UPLOAD_CHUNK
        with contextlib.closing(_Closing(opener())) as r:
            if size <= chunk:
                data = r.read(size + 1)
                if len(data) != size:
                    raise IntegrityError(f"blob {digest}: read {len(data)} bytes, expected {size}")
                headers = {"Content-Type": "application/octet-stream"}
                final_body = data
            else:
                offset = 0
                while offset < size:
                    data = r.read(min(chunk, size - offset))
                    if not data:
                        raise IntegrityError(f"blob {digest}: ended at {offset} of {size} bytes")
                    end = offset + len(data) - 1
                    with self.request(
                        "PATCH",
                        location,
                        scope=scope,
                        headers={
                            "Content-Type": "application/octet-stream",
                            "Content-Range": f"{offset}-{end}",
                            "Content-Length": str(len(data)),
                        },
                        body=data,
                        ok=(202,),
                        what=what,
                    ) as resp:
                        resp.read()
                    got = resp.header("Range")
                    if got and got.strip() != f"0-{end}":
                        raise TransientError(
                            f"{self.registry}: {what}: the registry has {_clean(got, 40)} "
                            f"after the chunk ending at {end}"
                        )
                    offset += len(data)
                    nxt = resp.header("Location")
                    if nxt:
                        location = self.resolve(nxt, resp.target)
                headers = {"Content-Length": "0"}
                final_body = b""
        scheme, host, path = location
        sep = "&" if "?" in path else "?"
        final = (scheme, host, f"{path}{sep}digest={urllib.parse.quote(str(digest))}")
        with self.request(
            "PUT",
            final,
            scope=scope,
            headers=headers,
            body=final_body,
            ok=(201, 204),
            what=what,
            replay=False,
        ) as resp:
            resp.read()
        got_digest = resp.header("Docker-Content-Digest")
        if got_digest and got_digest.strip() != str(digest):
            raise IntegrityError(
                f"{self.registry}: uploaded blob {digest} but the registry stored "
                f"{_clean(got_digest, 100)}"
            )
        with self._lock:
            self._uploaded += size


class _Closing:
    """Adapt a reader that may or may not have ``close``."""

    def __init__(self, r: Reader) -> None:
        self.r = r

    def read(self, n: int = -1, /) -> bytes:
        return self.r.read(n)

    def close(self) -> None:
        close = getattr(self.r, "close", None)
        if callable(close):
            close()


__all__ = [
    "AuthError",
    "Client",
    "NotFoundRegistryError",
    "RegistryError",
    "RemoteRef",
    "TransientError",
    "find_credentials",
    "parse_challenge",
    "retry_after",
]
