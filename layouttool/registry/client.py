"""The OCI distribution API of one registry: manifests and blobs, uploads, mounts.

Only what push and pull need: HEAD/GET/PUT of manifests and blobs, monolithic and chunked
uploads, cross-repository mounts. Every response error becomes one line naming the registry's
own error code and message.

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

import contextlib
import json
import os
import re
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from layouttool import mediatypes as mt
from layouttool.codec import Reader
from layouttool.digest import Digest
from layouttool.errors import IntegrityError, InvalidInputError, LayoutToolError
from layouttool.model import Descriptor, parse_index
from layouttool.registry.auth import Authenticator, parse_challenge
from layouttool.registry.credentials import Credentials, lookup
from layouttool.registry.errors import (
    AuthError,
    NotFoundRegistryError,
    RegistryError,
    TransientError,
    clean,
)
from layouttool.registry.reference import api_host
from layouttool.registry.tls import TLSFiles, load_tls_files
from layouttool.registry.transport import Body, Response, Target, Transport

#: uploads larger than this go in PATCH chunks of this size (read at call time: tests lower it)
UPLOAD_CHUNK = 16 << 20
#: manifests and indexes larger than this are refused (distribution's own limit)
MANIFEST_CAP: Final = 4 << 20
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
_REDIRECTS: Final = (301, 302, 303, 307, 308)
#: the most pages of a referrers list followed (a registry that links to itself forever)
_MAX_PAGES: Final = 100


@dataclass(frozen=True, slots=True)
class Pushed:
    """What the registry said about a manifest it stored."""

    #: ``Docker-Content-Digest``
    digest: str | None
    #: ``OCI-Subject``: the registry indexed the manifest's subject (it has the referrers API)
    subject: str | None


def _next_link(header: str | None) -> str | None:
    """The ``rel="next"`` URL of a ``Link`` header (RFC 8288), if any."""
    for part in (header or "").split(","):
        url, _, params = part.partition(";")
        if re.search(r'\brel="?next"?', params) and url.strip().startswith("<"):
            return url.strip()[1:].split(">", 1)[0]
    return None


class Client:
    """A client of one registry (thread-safe: one connection per thread and origin).

    ``cert_dir`` is the directory of CA files and client certificate (default: the registry's
    certs.d directory, see :mod:`~layouttool.registry.tls`). Without ``creds`` they are looked
    up (:func:`~layouttool.registry.credentials.lookup`, with ``authfile`` and ``repository``);
    ``notes`` receives what ``-v`` shows (TLS directory, proxy, where the credentials came
    from; never a secret) and the warnings of the lookup. ``retries`` bounds the retries of
    one request (and of one blob upload); ``backoff`` is
    the first wait in seconds (doubled each time, jittered, at most ``max_wait``); ``sleep``
    is how to wait (injectable so tests need not).
    """

    def __init__(
        self,
        registry: str,
        *,
        insecure: bool = False,
        creds: Credentials | tuple[str, str] | None = None,
        cert_dir: str | os.PathLike[str] | None = None,
        authfile: str | os.PathLike[str] | None = None,
        repository: str | None = None,
        notes: Callable[[str], None] | None = None,
        retries: int = 5,
        timeout: float = 120.0,
        backoff: float | None = None,
        max_wait: float | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        note = notes or (lambda _message: None)
        self.registry = registry
        self.host = api_host(registry)
        self.insecure = insecure
        tls = TLSFiles(None) if insecure else load_tls_files(registry, cert_dir)
        self.transport = Transport(
            registry,
            self.host,
            insecure=insecure,
            tls=tls,
            retries=retries,
            timeout=timeout,
            backoff=backoff,
            max_wait=max_wait,
            sleep=sleep,
        )
        self.scheme = self.transport.scheme
        note(f"{registry}: " + ("plain HTTP (--insecure)" if insecure else tls.describe()))
        if (proxy := self.transport.proxy(self.scheme, self.host)) is not None:
            note(f"{registry}: through proxy {proxy.display}")
        if creds is None:
            found = lookup(registry, repository, authfile=authfile)
            for warning in found.warnings:
                note(warning)
            creds = found.credentials
        elif isinstance(creds, tuple):
            creds = Credentials(creds[0], creds[1], source="--creds")
        note(
            f"{registry}: credentials from {creds.source or 'the caller'}"
            if creds is not None
            else f"{registry}: no credentials found (anonymous)"
        )
        self.auth = Authenticator(self.transport, creds, insecure=insecure)
        self._lock = threading.Lock()
        self._uploaded = 0
        #: whether the registry has the referrers API (None: not known yet)
        self.referrers_api: bool | None = None

    @property
    def creds(self) -> tuple[str, str] | None:
        """The user name and password in use (None: anonymous, or an identity token)."""
        return self.auth.creds

    @property
    def credentials(self) -> Credentials | None:
        """The credentials in use (None: anonymous)."""
        return self.auth.credentials

    @property
    def retries(self) -> int:
        """Retries of one request, and of one blob transfer."""
        return self.transport.retries

    @property
    def token_fetches(self) -> dict[str, int]:
        """Token requests made, per scope."""
        return self.auth.token_fetches

    @property
    def uploaded_bytes(self) -> int:
        """Bytes of blobs whose upload the registry accepted."""
        return self._uploaded

    @property
    def requests(self) -> int:
        """HTTP requests sent (retries included)."""
        return self.transport.requests

    def wait(self, attempt: int, hint: float | None = None) -> None:
        """Sleep before retry number ``attempt``."""
        self.transport.wait(attempt, hint)

    def resolve(self, location: str, base: Target | None = None) -> Target:
        """Where a ``Location`` header points, resolved against the request that sent it."""
        return self.transport.resolve(location, base)

    def close(self) -> None:
        """Close every connection any thread opened."""
        self.transport.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _own(self, target: Target) -> bool:
        return target[1] == self.host and target[0] == self.scheme

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
                h.update(self.auth.header(scope))
            resp = self.transport.retrying(method, target, h, body, what, replay=replay)
            challenge = resp.header("WWW-Authenticate") or ""
            if (
                resp.status == 401
                and not authed
                and self._own(target)
                and parse_challenge(challenge)[0] in ("basic", "bearer")
            ):
                with resp:
                    resp.read(64 << 10)
                self.auth.authenticate(challenge, scope, h)
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
                clean(f"{e.get('code', '?')}: {e.get('message', '')}".strip(), 200)
                for e in errs[:3]
                if isinstance(e, dict)
            )
        except (ValueError, AttributeError, TypeError):
            if not body.lstrip().startswith(b"<"):  # an HTML error page says nothing useful
                detail = clean(body[:200].decode(errors="replace"), 200)
        msg = f"{self.registry}: {method} {what}: HTTP {resp.status}" + (
            f" ({detail})" if detail else ""
        )
        if resp.status in (401, 403):
            if self.credentials is None:
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

    def put_manifest(self, repo: str, reference: str, data: bytes, media_type: str) -> Pushed:
        """Upload a manifest; returns what the registry says it stored."""
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
        subject = resp.header("OCI-Subject")
        if subject is not None:
            self.referrers_api = True  # only a registry with the referrers API says this
        return Pushed(resp.header("Docker-Content-Digest"), subject)

    def referrers(
        self, repo: str, digest: Digest, artifact_type: str | None = None
    ) -> list[Descriptor] | None:
        """The referrers of ``digest`` through the referrers API (every page), filtered by
        ``artifact_type``; None when the registry answers 404: it has no such API (then
        :attr:`referrers_api` remembers it, and the caller reads the fallback tag)."""
        if self.referrers_api is False:
            return None
        path = f"/v2/{repo}/referrers/{digest}"
        if artifact_type:
            path += "?" + urllib.parse.urlencode({"artifactType": artifact_type})
        target: str | Target = path
        found: list[Descriptor] = []
        for page in range(_MAX_PAGES):
            with self.request(
                "GET",
                target,
                scope=self.scope(repo),
                headers={"Accept": mt.MT_OCI_INDEX},
                allow=(404,),
                what=f"referrers of {digest}",
            ) as resp:
                data = resp.read(MANIFEST_CAP + 1)
            if resp.status == 404:
                if page == 0:
                    self.referrers_api = False
                    return None
                raise RegistryError(f"{self.registry}: referrers of {digest}: a next page is gone")
            self.referrers_api = True
            if len(data) > MANIFEST_CAP:
                raise InvalidInputError(
                    f"{self.registry}: referrers of {digest}: over {MANIFEST_CAP >> 20} MiB; "
                    "refused"
                )
            index = parse_index(data, f"{self.registry}: referrers of {digest}", mt.MT_OCI_INDEX)
            found.extend(
                d for d in index.manifests if not artifact_type or d.artifact_type == artifact_type
            )
            nxt = _next_link(resp.header("Link"))
            if nxt is None:
                return found
            target = self.resolve(nxt, resp.target)
        raise RegistryError(
            f"{self.registry}: referrers of {digest}: more than {_MAX_PAGES} pages; refused"
        )

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
                            f"{self.registry}: {what}: the registry has {clean(got, 40)} "
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
                f"{clean(got_digest, 100)}"
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


__all__ = ["MANIFEST_ACCEPT", "MANIFEST_CAP", "UPLOAD_CHUNK", "Body", "Client", "Pushed"]
