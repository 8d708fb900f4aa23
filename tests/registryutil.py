"""Test helpers for push/pull: a real docker-registry, a token server, a flaky proxy, a fake.

Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import secrets
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from conftest import need_tool

from layouttool import mediatypes as mt
from layouttool.digest import Digest
from layouttool.model import make_manifest_doc
from layouttool.ops.layout import set_ref
from layouttool.store import Layout


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (now)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Registry:
    """A docker-registry process with filesystem storage in a temp dir."""

    def __init__(self, tmp: Path, htpasswd: Path | None = None, *, auth: str = "") -> None:
        binary = need_tool("docker-registry")
        self.root = tmp / f"registry-data-{secrets.token_hex(3)}"
        self.port = free_port()
        self.host = f"127.0.0.1:{self.port}"
        if htpasswd is not None:
            auth = f"auth:\n  htpasswd:\n    realm: test\n    path: {htpasswd}\n"
        cfg = tmp / f"registry-{self.port}.yml"
        cfg.write_text(
            "version: 0.1\nlog:\n  level: error\n"
            f"storage:\n  filesystem:\n    rootdirectory: {self.root}\n"
            "  delete:\n    enabled: true\n"
            f"http:\n  addr: {self.host}\n{auth}"
        )
        self.proc = subprocess.Popen([binary, "serve", str(cfg)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        deadline = time.monotonic() + 15
        while True:
            try:
                urllib.request.urlopen(f"http://{self.host}/v2/", timeout=1).close()
                break
            except urllib.error.HTTPError as exc:
                exc.close()
                break  # 401: up, with auth
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    err = self.proc.stderr.read() if self.proc.stderr else b""
                    raise RuntimeError(f"registry did not start: {err!r}") from None
                time.sleep(0.05)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        if self.proc.stderr:
            self.proc.stderr.close()

    def blob_file(self, digest: Digest) -> Path:
        e = digest.encoded
        return self.root / "docker/registry/v2/blobs" / digest.algorithm / e[:2] / e / "data"


# ------------------------------------------------------------------------------ images
def make_image(path: Path, layer_sizes: list[int], ref: str = "img", seed: int = 0,
               full_name: str | None = None) -> Layout:
    """An OCI image of uncompressed layers of random bytes (``verify`` accepts it)."""
    layout = Layout.open(path) if (path / "oci-layout").exists() else Layout.init(path)
    layers = []
    for i, n in enumerate(layer_sizes):
        data = hashlib.shake_256(f"{seed}-{i}".encode()).digest(n)
        layers.append(layout.put_bytes(data).descriptor(mt.MT_OCI_LAYER))
    config = layout.put_json(
        {"architecture": "amd64", "os": "linux",
         "rootfs": {"type": "layers", "diff_ids": [str(d.digest) for d in layers]}},
        mt.MT_OCI_CONFIG,
    )
    doc = make_manifest_doc(media_type=mt.MT_OCI_MANIFEST, config=config, layers=layers)
    with layout.writing():
        set_ref(layout, layout.put_json(doc, mt.MT_OCI_MANIFEST), ref, full_name)
    return layout


def layout_files(root: Path) -> dict[str, bytes]:
    """index.json, oci-layout and every blob of a layout, by relative path."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if p.is_file() and (rel.startswith("blobs/") or rel in ("index.json", "oci-layout")):
            out[rel] = p.read_bytes()
    return out


# ------------------------------------------------------------------------------ token auth
def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def libtrust_key_id(der_spki: bytes) -> str:
    """The key id distribution looks a token's ``kid`` up by: libtrust's fingerprint.

    SHA-256 of the DER SubjectPublicKeyInfo, first 240 bits, base32 without padding, in
    twelve groups of four joined by ':'.
    """
    s = base64.b32encode(hashlib.sha256(der_spki).digest()[:30]).decode().rstrip("=")
    return ":".join(s[i : i + 4] for i in range(0, len(s), 4))


def token_keypair(tmp: Path) -> tuple[Path, Path]:
    """A private key and a self-signed certificate for a token issuer (slow: make it once)."""
    openssl = need_tool("openssl")
    key, cert = tmp / "token.key", tmp / "token.crt"
    subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key,
         "-out", cert, "-days", "2", "-subj", "/CN=layouttool test token issuer"],
        check=True, capture_output=True,
    )
    return key, cert


class TokenServer:
    """A bearer token server (RS256 JWTs signed with ``openssl``) for distribution's ``token``
    auth. Anonymous users may pull ``public/*``; ``users`` may pull and push everything."""

    def __init__(self, keypair: tuple[Path, Path], users: dict[str, str],
                 service: str = "test-registry", issuer: str = "test-issuer") -> None:
        openssl = need_tool("openssl")
        self.openssl = openssl
        self.key, self.cert = keypair
        pub = subprocess.run([openssl, "x509", "-in", self.cert, "-pubkey", "-noout"],
                             check=True, capture_output=True).stdout
        der = subprocess.run([openssl, "pkey", "-pubin", "-outform", "DER"], input=pub,
                             check=True, capture_output=True).stdout
        self.kid = libtrust_key_id(der)
        self.users = users
        self.service = service
        self.issuer = issuer
        #: every token request: (user or None, [scopes], granted access, status)
        self.log: list[tuple[str | None, list[str], list[dict[str, Any]], int]] = []
        #: every token issued (to check none leaks into output)
        self.issued: list[str] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a: object) -> None:
                pass

            def do_GET(self) -> None:
                status, body = server._handle(self.path, self.headers.get("Authorization"))
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.realm = f"http://127.0.0.1:{self.httpd.server_address[1]}/token"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def registry_auth(self) -> str:
        """The ``auth:`` section of the registry's config.yml."""
        return (f"auth:\n  token:\n    realm: {self.realm}\n    service: {self.service}\n"
                f"    issuer: {self.issuer}\n    rootcertbundle: {self.cert}\n")

    def _handle(self, path: str, authorization: str | None) -> tuple[int, bytes]:
        q = urllib.parse.parse_qs(urllib.parse.urlsplit(path).query)
        scopes = q.get("scope", [])
        user = None
        if authorization:
            kind, _, value = authorization.partition(" ")
            u, _, p = base64.b64decode(value).decode().partition(":")
            if kind != "Basic" or self.users.get(u) != p:
                with self._lock:
                    self.log.append((u, scopes, [], 401))
                return 401, b'{"details":"bad credentials"}'
            user = u
        access = []
        for scope in scopes:
            typ, name, actions = scope.split(":")
            wanted = actions.split(",")
            allowed = wanted if user else [a for a in wanted
                                           if a == "pull" and name.startswith("public/")]
            access.append({"type": typ, "name": name, "actions": allowed})
        now = int(time.time())
        claims = {"iss": self.issuer, "sub": user or "", "aud": q.get("service", [""])[0],
                  "exp": now + 300, "nbf": now - 10, "iat": now, "jti": secrets.token_hex(8),
                  "access": access}
        header = {"typ": "JWT", "alg": "RS256", "kid": self.kid}
        signing_input = ".".join(_b64url(json.dumps(x).encode()) for x in (header, claims))
        sig = subprocess.run([self.openssl, "dgst", "-sha256", "-sign", self.key],
                             input=signing_input.encode(), check=True, capture_output=True).stdout
        token = f"{signing_input}.{_b64url(sig)}"
        with self._lock:
            self.log.append((user, scopes, access, 200))
            self.issued.append(token)
        return 200, json.dumps({"token": token, "expires_in": 300}).encode()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


# ------------------------------------------------------------------------------ proxy
@dataclass
class Seen:
    """One request the proxy saw."""

    method: str
    path: str
    headers: dict[str, str]
    start: float
    end: float = 0.0
    status: int = 0
    action: str = "forward"


@dataclass
class Rule:
    """Fail the first ``times`` requests of ``method`` whose path contains ``part``.

    ``action``: an HTTP status ("503", "429"...), "drop" (close without answering) or "cut"
    (forward, then send half the body and close)."""

    method: str
    part: str
    times: int
    action: str
    headers: dict[str, str] = field(default_factory=dict)


class Proxy:
    """An HTTP proxy in front of a registry that logs every request and fails some on purpose.

    The Host header is passed through, so the registry's absolute Location URLs point back at
    the proxy. ``delay(method, path)`` may return seconds to sleep before forwarding (to make
    parallel transfers overlap visibly)."""

    def __init__(self, upstream: str, rules: list[Rule] | None = None,
                 delay: Callable[[str, str], float] | None = None) -> None:
        self.upstream = upstream
        self.rules = rules or []
        self.delay = delay
        self.log: list[Seen] = []
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: object) -> None:
                pass

            def _any(self) -> None:
                proxy._serve(self)

            do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _any

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.host = f"127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def _rule(self, method: str, path: str) -> Rule | None:
        with self._lock:
            for r in self.rules:
                if r.times > 0 and r.method == method and r.part in path:
                    r.times -= 1
                    return r
        return None

    def _serve(self, h: BaseHTTPRequestHandler) -> None:
        seen = Seen(h.command, h.path, dict(h.headers.items()), time.monotonic())
        with self._lock:
            self.log.append(seen)
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        rule = self._rule(h.command, h.path)
        if self.delay is not None and (d := self.delay(h.command, h.path)):
            time.sleep(d)
        if rule is not None and rule.action == "drop":
            seen.action, seen.end = "drop", time.monotonic()
            h.close_connection = True
            return
        if rule is not None and rule.action.isdigit():
            seen.action, seen.status = rule.action, int(rule.action)
            payload = json.dumps({"errors": [{"code": "UNAVAILABLE", "message": "flaky"}]}).encode()
            h.send_response(int(rule.action))
            for k, v in rule.headers.items():
                h.send_header(k, v)
            h.send_header("Content-Type", "application/json")
            h.send_header("Content-Length", str(len(payload)))
            h.end_headers()
            if h.command != "HEAD":
                h.wfile.write(payload)
            seen.end = time.monotonic()
            return
        conn = http.client.HTTPConnection(self.upstream, timeout=60)
        try:
            conn.putrequest(h.command, h.path, skip_host=True, skip_accept_encoding=True)
            for k, v in h.headers.items():
                if k.lower() not in ("connection", "keep-alive", "content-length"):
                    conn.putheader(k, v)
            if body or h.command in ("PUT", "POST", "PATCH"):
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders(body or None)
            resp = conn.getresponse()
            data = resp.read()
            h.send_response(resp.status)
            for k, v in resp.getheaders():
                if k.lower() in ("connection", "transfer-encoding", "keep-alive"):
                    continue
                if k.lower() == "content-length" and h.command != "HEAD":
                    continue
                h.send_header(k, v)
            if h.command != "HEAD":
                h.send_header("Content-Length", str(len(data)))
            h.end_headers()
            seen.status = resp.status
            if h.command != "HEAD":
                if rule is not None and rule.action == "cut":
                    seen.action = "cut"
                    h.wfile.write(data[: len(data) // 2])
                    h.wfile.flush()
                    h.close_connection = True
                else:
                    h.wfile.write(data)
        finally:
            conn.close()
            seen.end = time.monotonic()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def count(self, method: str, part: str = "") -> int:
        return sum(1 for s in self.log if s.method == method and part in s.path)

    def max_overlap(self, pred: Callable[[Seen], bool]) -> int:
        """The most requests matching ``pred`` that were in flight at one moment."""
        events = []
        for s in self.log:
            if pred(s):
                events += [(s.start, 1), (s.end, -1)]
        best = cur = 0
        for _, d in sorted(events, key=lambda e: (e[0], e[1])):
            cur += d
            best = max(best, cur)
        return best


# ------------------------------------------------------------------------------ fake
Route = tuple[int, dict[str, str], bytes]


class FakeRegistry:
    """A canned registry: ``routes[(method, path)] = (status, headers, body)``; else 404."""

    def __init__(self) -> None:
        self.routes: dict[tuple[str, str], Route] = {}
        #: (method, path, headers) of every request
        self.log: list[tuple[str, str, dict[str, str]]] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a: object) -> None:
                pass

            def _any(self) -> None:
                fake.log.append((self.command, self.path, dict(self.headers.items())))
                n = int(self.headers.get("Content-Length") or 0)
                if n:
                    self.rfile.read(n)
                status, headers, body = fake.routes.get(
                    (self.command, self.path.split("?")[0]),
                    (404, {"Content-Type": "application/json"},
                     b'{"errors":[{"code":"NOT_FOUND","message":"no route"}]}'),
                )
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(body)

            do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = _any

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.host = f"127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def blob(self, repo: str, data: bytes) -> str:
        """Serve ``data`` as a blob of ``repo``; returns its digest."""
        d = "sha256:" + hashlib.sha256(data).hexdigest()
        self.routes[("GET", f"/v2/{repo}/blobs/{d}")] = (
            200, {"Content-Type": "application/octet-stream"}, data)
        return d

    def manifest(self, repo: str, reference: str, data: bytes, media_type: str,
                 digest_header: str | None = None) -> None:
        """Serve ``data`` as manifest ``repo:reference``."""
        headers = {"Content-Type": media_type}
        if digest_header:
            headers["Docker-Content-Digest"] = digest_header
        self.routes[("GET", f"/v2/{repo}/manifests/{reference}")] = (200, headers, data)

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def clean_env(monkeypatch: Any, home: Path) -> None:
    """No credentials from the developer's own files."""
    monkeypatch.setenv("HOME", str(home))
    for var in ("REGISTRY_AUTH_FILE", "XDG_RUNTIME_DIR", "DOCKER_CONFIG"):
        monkeypatch.delenv(var, raising=False)


__all__ = ["FakeRegistry", "Proxy", "Registry", "Rule", "TokenServer", "clean_env", "free_port",
           "layout_files", "make_image", "token_keypair"]
