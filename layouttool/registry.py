"""A small client of the OCI distribution API (registries: distribution, Docker Hub, GHCR, zot...).

Only what push and pull need: manifests and blobs, HEAD/GET/PUT, monolithic and chunked
uploads, cross-repository mounts, anonymous/basic/bearer auth with credentials from the usual
files, retries with backoff on connection errors, 5xx and 429. Every response error becomes one
line naming the registry's own error code and message. Credentials are never printed.

Plain ``http.client``: one persistent connection per thread and registry, no third-party
dependency.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import re
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from layouttool import mediatypes as mt
from layouttool.codec import CHUNK, Reader
from layouttool.digest import Digest
from layouttool.errors import (
    IntegrityError,
    InvalidInputError,
    LayoutToolError,
    NotFoundError,
)

DOCKER_HUB: Final = "docker.io"
DOCKER_HUB_API: Final = "registry-1.docker.io"
#: uploads larger than this go in PATCH chunks of this size
UPLOAD_CHUNK: Final = 16 << 20
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


class RegistryError(LayoutToolError):
    """The registry answered with an error (or not at all)."""

    exit_code = 1
    kind = "registry"


class AuthError(RegistryError):
    """The registry refused our credentials (401/403)."""

    kind = "auth"


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
        if not _REPO_RE.fullmatch(repo):
            raise InvalidInputError(
                f"invalid repository {repo!r} in {value!r}: lowercase letters, digits and "
                "separators, e.g. 'registry.example:5000/team/app:1.0'"
            )
        return cls(registry, repo, tag, digest)


# --------------------------------------------------------------------------------- credentials
def _auth_files() -> list[Path]:
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


# ------------------------------------------------------------------------------------- client
@dataclass
class Response:
    """A response whose body has not been read yet (stream it with :meth:`read`)."""

    status: int
    headers: http.client.HTTPMessage
    _resp: http.client.HTTPResponse

    def read(self, n: int = -1, /) -> bytes:
        """Read the body."""
        try:
            return self._resp.read(n) if n >= 0 else self._resp.read()
        except (OSError, http.client.HTTPException) as exc:
            raise RegistryError(f"reading response: {exc}") from exc

    def header(self, name: str) -> str | None:
        """A response header."""
        return self.headers.get(name)


Body = bytes | Callable[[], Iterator[bytes]] | None


class Client:
    """A client of one registry (thread-safe: one connection per thread)."""

    def __init__(
        self,
        registry: str,
        *,
        insecure: bool = False,
        creds: tuple[str, str] | None = None,
        retries: int = 5,
        timeout: float = 120.0,
    ) -> None:
        self.registry = registry
        self.host = DOCKER_HUB_API if registry == DOCKER_HUB else registry
        self.insecure = insecure
        self.creds = creds if creds is not None else find_credentials(registry)
        self.retries = retries
        self.timeout = timeout
        self._local = threading.local()
        self._tokens: dict[str, str] = {}
        self._basic = False
        self._lock = threading.Lock()
        self._all: list[http.client.HTTPConnection] = []
        self.uploaded_bytes = 0
        self.requests = 0

    # ---------------------------------------------------------------- transport
    def _conn(self, host: str, scheme: str) -> http.client.HTTPConnection:
        key = (host, scheme)
        conns = getattr(self._local, "conns", None)
        if conns is None:
            conns = self._local.conns = {}
        c = conns.get(key)
        if c is None:
            if scheme == "https":
                ctx = ssl.create_default_context()
                c = http.client.HTTPSConnection(host, timeout=self.timeout, context=ctx)
            else:
                c = http.client.HTTPConnection(host, timeout=self.timeout)
            conns[key] = c
            with self._lock:
                self._all.append(c)
        return c

    def close(self) -> None:
        """Close every connection any thread opened."""
        with self._lock:
            conns, self._all = self._all, []
        for c in conns:
            c.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _drop_conn(self, host: str, scheme: str) -> None:
        conns = getattr(self._local, "conns", {})
        c = conns.pop((host, scheme), None)
        if c is not None:
            c.close()

    def _auth_header(self, scope: str) -> dict[str, str]:
        with self._lock:
            tok = self._tokens.get(scope)
            basic = self._basic
        if tok:
            return {"Authorization": f"Bearer {tok}"}
        if basic and self.creds:
            raw = base64.b64encode(f"{self.creds[0]}:{self.creds[1]}".encode()).decode()
            return {"Authorization": f"Basic {raw}"}
        return {}

    def _authenticate(self, challenge: str, scope: str) -> None:
        scheme, params = parse_challenge(challenge)
        if scheme == "basic":
            if not self.creds:
                raise AuthError(
                    f"{self.registry} requires credentials: use --creds USER:PASS or log in "
                    "(docker login / podman login)"
                )
            with self._lock:
                self._basic = True
            return
        if scheme != "bearer" or "realm" not in params:
            raise AuthError(f"{self.registry}: unsupported authentication challenge {scheme!r}")
        query = {"scope": scope}
        if "service" in params:
            query["service"] = params["service"]
        url = urllib.parse.urlsplit(params["realm"])
        path = f"{url.path or '/'}?{urllib.parse.urlencode(query)}"
        headers = {}
        if self.creds:
            raw = base64.b64encode(f"{self.creds[0]}:{self.creds[1]}".encode()).decode()
            headers["Authorization"] = f"Basic {raw}"
        resp = self._send("GET", url.netloc, url.scheme or "https", path, headers, None)
        body = resp.read(1 << 20)
        if resp.status != 200:
            raise AuthError(f"{self.registry}: token request refused ({resp.status})")
        try:
            doc = json.loads(body)
            token = doc.get("token") or doc.get("access_token")
        except ValueError:
            token = None
        if not isinstance(token, str):
            raise AuthError(f"{self.registry}: token server sent no token")
        with self._lock:
            self._tokens[scope] = token

    def _send(
        self, method: str, host: str, scheme: str, path: str, headers: dict[str, str], body: Body
    ) -> Response:
        c = self._conn(host, scheme)
        self.requests += 1
        try:
            if callable(body):
                c.putrequest(method, path)
                for k, v in headers.items():
                    c.putheader(k, v)
                c.endheaders()
                for piece in body():
                    c.send(piece)
            else:
                c.request(method, path, body=body, headers=headers)
            resp = c.getresponse()
        except (OSError, http.client.HTTPException):
            self._drop_conn(host, scheme)
            raise
        return Response(resp.status, resp.headers, resp)

    def request(
        self,
        method: str,
        path: str,
        *,
        scope: str,
        headers: dict[str, str] | None = None,
        body: Body = None,
        ok: tuple[int, ...] = (200,),
        allow: tuple[int, ...] = (),
        what: str = "",
    ) -> Response:
        """Send a request, authenticating, retrying and following redirects as needed.

        Statuses in ``ok`` and ``allow`` are returned; others raise :class:`RegistryError`
        with the registry's error message.
        """
        scheme = "http" if self.insecure else "https"
        host = self.host
        delay = 0.5
        authed = False
        redirects = 0
        attempt = 0
        while True:
            attempt += 1
            h = {"User-Agent": "layouttool", **(headers or {})}
            if host == self.host:
                h.update(self._auth_header(scope))
            try:
                resp = self._send(method, host, scheme, path, h, body)
            except (OSError, http.client.HTTPException) as exc:
                if attempt > self.retries:
                    raise RegistryError(
                        f"{self.registry}: {method} {what or path}: {exc} (after {attempt} tries)"
                    ) from exc
                time.sleep(delay)
                delay *= 2
                continue
            if resp.status == 401 and not authed and host == self.host:
                challenge = resp.header("WWW-Authenticate") or ""
                resp.read()
                self._authenticate(challenge, scope)
                authed = True
                continue
            if resp.status in (301, 302, 303, 307, 308) and method in ("GET", "HEAD"):
                loc = resp.header("Location")
                resp.read()
                if not loc or redirects > 5:
                    raise RegistryError(f"{self.registry}: too many redirects for {what or path}")
                redirects += 1
                u = urllib.parse.urlsplit(urllib.parse.urljoin(f"{scheme}://{host}{path}", loc))
                scheme, host = u.scheme, u.netloc
                path = u.path + (f"?{u.query}" if u.query else "")
                continue
            if (resp.status >= 500 or resp.status == 429) and attempt <= self.retries:
                resp.read()
                retry_after = resp.header("Retry-After")
                wait = float(retry_after) if retry_after and retry_after.isdigit() else delay
                time.sleep(min(wait, 30))
                delay *= 2
                continue
            if resp.status in ok or resp.status in allow:
                return resp
            raise self._error(resp, method, what or path)

    def _error(self, resp: Response, method: str, what: str) -> RegistryError:
        body = resp.read(64 << 10) if method != "HEAD" else b""
        detail = ""
        try:
            errs = json.loads(body).get("errors") or []
            detail = "; ".join(
                f"{e.get('code', '?')}: {e.get('message', '')}".strip() for e in errs[:3]
            )
        except (ValueError, AttributeError):
            detail = body[:200].decode(errors="replace").strip()
        msg = f"{self.registry}: {method} {what}: HTTP {resp.status}" + (
            f" ({detail})" if detail else ""
        )
        if resp.status in (401, 403):
            return AuthError(msg + "; check the credentials (--creds, docker login)")
        if resp.status == 404:
            return NotFoundRegistryError(msg)
        return RegistryError(msg)

    # ---------------------------------------------------------------- API
    @staticmethod
    def scope(repo: str, push: bool = False) -> str:
        """The token scope for ``repo``."""
        return f"repository:{repo}:{'pull,push' if push else 'pull'}"

    def ping(self) -> None:
        """Check that the endpoint speaks the distribution API (``GET /v2/``)."""
        self.request("GET", "/v2/", scope="", ok=(200,), what="/v2/").read()

    def blob_size(self, repo: str, digest: Digest, *, push: bool = False) -> int | None:
        """The size of a blob the registry has, or None."""
        resp = self.request(
            "HEAD",
            f"/v2/{repo}/blobs/{digest}",
            scope=self.scope(repo, push),
            allow=(404,),
            what=f"blob {digest}",
        )
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

    def get_manifest(self, repo: str, reference: str) -> tuple[bytes, str]:
        """The raw manifest and its media type (Content-Type)."""
        resp = self.request(
            "GET",
            f"/v2/{repo}/manifests/{reference}",
            scope=self.scope(repo),
            headers={"Accept": MANIFEST_ACCEPT},
            what=f"manifest {repo}:{reference}",
        )
        data = resp.read(16 << 20 + 1)
        if len(data) > 16 << 20:
            raise InvalidInputError(f"{self.registry}: manifest {reference} is over 16 MiB")
        ctype = (resp.header("Content-Type") or "").split(";")[0].strip()
        return data, ctype

    def put_manifest(self, repo: str, reference: str, data: bytes, media_type: str) -> str | None:
        """Upload a manifest; returns the digest the registry reports."""
        resp = self.request(
            "PUT",
            f"/v2/{repo}/manifests/{reference}",
            scope=self.scope(repo, True),
            headers={"Content-Type": media_type},
            body=data,
            ok=(201, 200, 202),
            what=f"manifest {repo}:{reference}",
        )
        resp.read()
        return resp.header("Docker-Content-Digest")

    def mount_blob(self, repo: str, digest: Digest, source_repo: str) -> bool:
        """Ask the registry to mount a blob from another repository; True when it did."""
        q = urllib.parse.urlencode({"mount": str(digest), "from": source_repo})
        resp = self.request(
            "POST",
            f"/v2/{repo}/blobs/uploads/?{q}",
            scope=self.scope(repo, True) + f" repository:{source_repo}:pull",
            ok=(201, 202),
            what=f"mount {digest}",
        )
        resp.read()
        if resp.status == 201:
            return True
        # 202: the registry started an ordinary upload instead; abandon it
        loc = resp.header("Location")
        if loc:
            with contextlib.suppress(LayoutToolError):
                self.request(
                    "DELETE",
                    self._path(loc),
                    scope=self.scope(repo, True),
                    ok=(204, 200, 202),
                    allow=(404, 405),
                ).read()
        return False

    def _path(self, location: str) -> str:
        u = urllib.parse.urlsplit(location)
        if u.netloc and u.netloc != self.host:
            raise RegistryError(f"{self.registry}: upload location on another host: {location}")
        return u.path + (f"?{u.query}" if u.query else "")

    def upload_blob(
        self, repo: str, digest: Digest, size: int, opener: Callable[[], Reader]
    ) -> None:
        """Upload a blob: one PUT when small, PATCH chunks of :data:`UPLOAD_CHUNK` when large.

        ``opener`` returns a fresh reader of the blob (a verified reader of the store), so a
        retried request can read it again.
        """
        scope = self.scope(repo, True)
        resp = self.request(
            "POST", f"/v2/{repo}/blobs/uploads/", scope=scope, ok=(202,), what=f"upload {digest}"
        )
        resp.read()
        loc = resp.header("Location")
        if not loc:
            raise RegistryError(f"{self.registry}: upload of {digest} got no Location")
        path = self._path(loc)
        sep = "&" if "?" in path else "?"
        if size <= UPLOAD_CHUNK:
            with contextlib.closing(_Closing(opener())) as r:
                data = r.read(size + 1)
            if len(data) != size:
                raise IntegrityError(f"blob {digest}: read {len(data)} bytes, expected {size}")
            put = self.request(
                "PUT",
                f"{path}{sep}digest={urllib.parse.quote(str(digest))}",
                scope=scope,
                headers={"Content-Type": "application/octet-stream"},
                body=data,
                ok=(201, 204),
                what=f"upload {digest}",
            )
            put.read()
            self.uploaded_bytes += size
            return
        with contextlib.closing(_Closing(opener())) as r:
            offset = 0
            while offset < size:
                data = r.read(min(UPLOAD_CHUNK, size - offset))
                if not data:
                    raise IntegrityError(f"blob {digest}: ended at {offset} of {size} bytes")
                resp = self.request(
                    "PATCH",
                    path,
                    scope=scope,
                    headers={
                        "Content-Type": "application/octet-stream",
                        "Content-Range": f"{offset}-{offset + len(data) - 1}",
                        "Content-Length": str(len(data)),
                    },
                    body=data,
                    ok=(202,),
                    what=f"upload {digest}",
                )
                resp.read()
                offset += len(data)
                self.uploaded_bytes += len(data)
                path = self._path(resp.header("Location") or loc)
                sep = "&" if "?" in path else "?"
        put = self.request(
            "PUT",
            f"{path}{sep}digest={urllib.parse.quote(str(digest))}",
            scope=scope,
            headers={"Content-Length": "0"},
            body=b"",
            ok=(201, 204),
            what=f"upload {digest}",
        )
        put.read()


class NotFoundRegistryError(NotFoundError, RegistryError):
    """The registry says the manifest, blob or repository does not exist (404)."""

    exit_code = 3
    kind = "not-found"


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


def stream_chunks(r: Reader) -> Iterator[bytes]:
    """Yield ``r``'s bytes in :data:`CHUNK` pieces."""
    while data := r.read(CHUNK):
        yield data


__all__ = [
    "AuthError",
    "Client",
    "NotFoundRegistryError",
    "RegistryError",
    "RemoteRef",
    "find_credentials",
    "parse_challenge",
]
