"""Test helpers for push/pull: a real docker-registry, a token server, a flaky proxy, a fake.

Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import json
import os
import secrets
import select
import shutil
import socket
import socketserver
import subprocess
import sys
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

from conftest import REPO, need_tool

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import registryd
from bench.registryd import free_port
from layouttool import mediatypes as mt
from layouttool.digest import Digest
from layouttool.model import make_manifest_doc
from layouttool.ops.layout import set_ref
from layouttool.store import Layout


class Registry:
    """A docker-registry process with filesystem storage in a temp dir (plain HTTP, or TLS with
    ``server``; ``client_ca`` then requires client certificates it signed)."""

    def __init__(self, tmp: Path, htpasswd: Path | None = None, *, auth: str = "",
                 server: registryd.Pair | None = None, client_ca: Path | None = None) -> None:
        binary = need_tool("docker-registry")
        self.root = tmp / f"registry-{secrets.token_hex(3)}"
        self._d = registryd.start(binary, self.root, auth=auth, htpasswd=htpasswd,
                                  server=server, client_ca=client_ca)
        self.port = self._d.port
        self.host = self._d.host

    def stop(self) -> None:
        self._d.stop()

    def blob_file(self, digest: Digest) -> Path:
        e = digest.encoded
        return (self.root / "data" / "docker/registry/v2/blobs" / digest.algorithm / e[:2] / e
                / "data")


# ------------------------------------------------------------------------------ TLS
@dataclass(frozen=True)
class PKI:
    """A test CA, a server certificate for ``registry.test`` and 127.0.0.1 (not localhost), a
    client certificate, and an unrelated CA."""

    ca: registryd.CA
    server: registryd.Pair
    client: registryd.Pair
    other_ca: registryd.CA

    @classmethod
    def make(cls, directory: Path) -> PKI:
        need_tool("openssl")
        ca = registryd.CA.make(directory / "ca")
        return cls(
            ca,
            ca.issue(directory / "server", "server", ["registry.test", "127.0.0.1"]),
            ca.issue(directory / "client", "client", ["layouttool test client"], client=True),
            registryd.CA.make(directory / "other", "some other CA"),
        )

    def cert_dir(self, directory: Path, *, client: bool = False, ca: bool = True) -> Path:
        """A certificate directory: ``ca.crt`` and, with ``client``, ``client.cert/.key``."""
        directory.mkdir(parents=True, exist_ok=True)
        if ca:
            shutil.copy(self.ca.cert, directory / "ca.crt")
        if client:
            shutil.copy(self.client.cert, directory / "client.cert")
            shutil.copy(self.client.key, directory / "client.key")
        return directory


def htpasswd_file(directory: Path, users: dict[str, str]) -> Path:
    """An htpasswd file with bcrypt hashes made by Apache's ``htpasswd`` (cost 4: quick)."""
    tool = need_tool("htpasswd")
    path = directory / "htpasswd"
    for i, (user, password) in enumerate(users.items()):
        flags = "-cBbC" if i == 0 else "-BbC"
        subprocess.run([tool, flags, "4", str(path), user, password], check=True,
                       capture_output=True)
    return path


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
                 service: str = "test-registry", issuer: str = "test-issuer",
                 refresh_tokens: dict[str, str] | None = None) -> None:
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
        #: OAuth2 refresh token -> user (``POST`` with ``grant_type=refresh_token``)
        self.refresh_tokens = dict(refresh_tokens or {})
        #: every POST: (form fields, the Authorization header or None)
        self.posts: list[tuple[dict[str, str], str | None]] = []
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

            def do_POST(self) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                form = dict(urllib.parse.parse_qsl(self.rfile.read(n).decode()))
                status, body = server._handle_post(form, self.headers.get("Authorization"))
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

    def _handle_post(self, form: dict[str, str], authorization: str | None) -> tuple[int, bytes]:
        """distribution's OAuth2 token endpoint, refresh-token grant only."""
        with self._lock:
            self.posts.append((form, authorization))
        user = self.refresh_tokens.get(form.get("refresh_token", ""))
        if form.get("grant_type") != "refresh_token" or not form.get("client_id") or not user:
            return 401, b'{"details":"bad grant"}'
        scopes = form.get("scope", "").split()
        status, body = self._issue(user, scopes, form.get("service", ""))
        doc = json.loads(body)
        return status, json.dumps({"access_token": doc["token"], "expires_in": 300,
                                   "refresh_token": form["refresh_token"]}).encode()

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
        return self._issue(user, scopes, q.get("service", [""])[0])

    def _issue(self, user: str | None, scopes: list[str], service: str) -> tuple[int, bytes]:
        access = []
        for scope in scopes:
            typ, name, actions = scope.split(":")
            wanted = actions.split(",")
            allowed = wanted if user else [a for a in wanted
                                           if a == "pull" and name.startswith("public/")]
            access.append({"type": typ, "name": name, "actions": allowed})
        now = int(time.time())
        claims = {"iss": self.issuer, "sub": user or "", "aud": service,
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
                 delay: Callable[[str, str], float] | None = None,
                 extra_headers: Callable[[str, str, bytes], dict[str, str]] | None = None,
                 ) -> None:
        self.upstream = upstream
        self.rules = rules or []
        self.delay = delay
        #: (method, path, request body) -> headers added to the registry's response
        self.extra_headers = extra_headers
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
            if self.extra_headers is not None:
                for k, v in self.extra_headers(h.command, h.path, body).items():
                    h.send_header(k, v)
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


# ------------------------------------------------------------------------------ CONNECT proxy
@dataclass
class Passage:
    """One request a :class:`ConnectProxy` carried (or refused)."""

    method: str
    #: ``host:port`` as the client named it (the proxy resolves the name)
    target: str
    #: the Proxy-Authorization header the client sent, if any
    proxy_authorization: str | None
    status: int = 0
    bytes_up: int = 0
    bytes_down: int = 0


class ConnectProxy:
    """An HTTP proxy written for the tests: ``CONNECT host:port`` tunnels (HTTPS) and
    absolute-form requests (plain HTTP), resolving names through ``names`` only (a name it does
    not know is a 502, so a request that got through proves the proxy resolved it). With
    ``credentials`` it wants ``Proxy-Authorization: Basic`` (else 407). ``log`` records every
    request, and what went up and down."""

    def __init__(self, names: dict[str, str] | None = None,
                 credentials: tuple[str, str] | None = None) -> None:
        self.names = dict(names or {})
        self.auth = ("Basic " + base64.b64encode(":".join(credentials).encode()).decode()
                     if credentials else None)
        self.log: list[Passage] = []
        self._lock = threading.Lock()
        self._socks: set[socket.socket] = set()
        proxy = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                proxy._handle(self.request)

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        self.url = f"http://{self.host}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url_with(self, user: str, password: str) -> str:
        """The proxy URL with credentials in it."""
        return f"http://{user}:{password}@{self.host}"

    def _head(self, sock: socket.socket) -> tuple[bytes, bytes] | None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            if not chunk:
                return None
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        return head, rest

    def _resolve(self, target: str) -> tuple[str, int] | None:
        host, _, port = target.rpartition(":")
        ip = self.names.get(host)
        return (ip, int(port)) if ip and port.isdigit() else None

    def _handle(self, client: socket.socket) -> None:
        with self._lock:
            self._socks.add(client)
        try:
            got = self._head(client)
            if got is None:
                return
            head, rest = got
            lines = head.decode("latin-1").split("\r\n")
            method, target, _version = lines[0].split(" ", 2)
            headers = dict(ln.split(": ", 1) for ln in lines[1:] if ": " in ln)
            auth = next((v for k, v in headers.items() if k.lower() == "proxy-authorization"),
                        None)
            absolute = None
            if method != "CONNECT":
                u = urllib.parse.urlsplit(target)
                absolute = u
                target = u.netloc if u.port else f"{u.netloc}:80"
            seen = Passage(method, target, auth)
            with self._lock:
                self.log.append(seen)
            if self.auth is not None and auth != self.auth:
                seen.status = 407
                client.sendall(b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                               b"Proxy-Authenticate: Basic realm=\"test\"\r\n"
                               b"Content-Length: 0\r\nConnection: close\r\n\r\n")
                return
            where = self._resolve(target)
            if where is None:
                seen.status = 502
                client.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n"
                               b"Connection: close\r\n\r\n")
                return
            upstream = socket.create_connection(where, timeout=30)
            with self._lock:
                self._socks.add(upstream)
            seen.status = 200
            if absolute is not None:
                path = absolute.path + (f"?{absolute.query}" if absolute.query else "")
                kept = [ln for ln in lines[1:] if not ln.lower().startswith(
                    ("proxy-authorization:", "proxy-connection:", "connection:"))]
                first = f"{method} {path or '/'} HTTP/1.1"
                req = "\r\n".join([first, *kept, "Connection: close", "", ""]).encode()
                upstream.sendall(req + rest)
                seen.bytes_up += len(req) + len(rest)
            else:
                client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                if rest:
                    upstream.sendall(rest)
                    seen.bytes_up += len(rest)
            self._pipe(client, upstream, seen)
        except OSError:
            pass
        finally:
            with self._lock:
                for sk in list(self._socks):
                    if sk is client:
                        self._socks.discard(sk)
            client.close()

    def _pipe(self, client: socket.socket, upstream: socket.socket, seen: Passage) -> None:
        try:
            socks = [client, upstream]
            while True:
                ready, _, _ = select.select(socks, [], [], 30)
                if not ready:
                    return
                for sk in ready:
                    data = sk.recv(1 << 16)
                    if not data:
                        return
                    if sk is client:
                        upstream.sendall(data)
                        seen.bytes_up += len(data)
                    else:
                        client.sendall(data)
                        seen.bytes_down += len(data)
        finally:
            with self._lock:
                self._socks.discard(upstream)
            upstream.close()

    def targets(self) -> list[str]:
        """The ``host:port`` of every request carried, in order."""
        return [p.target for p in self.log]

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        with self._lock:
            socks, self._socks = self._socks, set()
        for sk in socks:
            with contextlib.suppress(OSError):
                sk.shutdown(socket.SHUT_RDWR)
            sk.close()


# ------------------------------------------------------------------------------ credential helper
HELPER = """#!{python}
# A Docker credential helper for the tests: credentials in the JSON file $FAKE_HELPER_STORE
# ({{server: [username, secret]}}); every call is appended to $FAKE_HELPER_STORE.log.
# $FAKE_HELPER_MODE: "" (normal), "fail" (exit 1 printing the secret), "garbage".
import json, os, sys
store = os.environ["FAKE_HELPER_STORE"]
action, data = sys.argv[1], sys.stdin.read()
with open(store + ".log", "a") as log:
    log.write(json.dumps([os.path.basename(sys.argv[0]), action, data]) + "\\n")
try:
    with open(store) as f:
        creds = json.load(f)
except FileNotFoundError:
    creds = {{}}
mode = os.environ.get("FAKE_HELPER_MODE", "")
if mode == "fail":
    print("internal error; the secret was", list(creds.values())[0][1] if creds else "-")
    sys.exit(1)
if mode == "garbage":
    print("this is not JSON", list(creds.values())[0][1] if creds else "-")
    sys.exit(0)
if action == "get":
    if data not in creds:
        print("credentials not found in native keychain")
        sys.exit(1)
    user, secret = creds[data]
    print(json.dumps({{"ServerURL": data, "Username": user, "Secret": secret}}))
elif action == "store":
    doc = json.loads(data)
    creds[doc["ServerURL"]] = [doc["Username"], doc["Secret"]]
    with open(store, "w") as f:
        json.dump(creds, f)
elif action == "erase":
    if data not in creds:
        print("credentials not found in native keychain")
        sys.exit(1)
    del creds[data]
    with open(store, "w") as f:
        json.dump(creds, f)
"""


@dataclass
class CredHelper:
    """``docker-credential-NAME`` scripts in ``bin`` (put it on PATH), sharing one store."""

    bin: Path
    store: Path

    @classmethod
    def install(cls, directory: Path, *names: str) -> CredHelper:
        bin_dir = directory / "bin"
        bin_dir.mkdir(parents=True, exist_ok=True)
        for name in names:
            script = bin_dir / f"docker-credential-{name}"
            script.write_text(HELPER.format(python=sys.executable))
            script.chmod(0o755)
        return cls(bin_dir, directory / "helper-store.json")

    def set(self, server: str, user: str, secret: str) -> None:
        creds = json.loads(self.store.read_text()) if self.store.exists() else {}
        creds[server] = [user, secret]
        self.store.write_text(json.dumps(creds))

    def held(self) -> dict[str, list[str]]:
        return json.loads(self.store.read_text()) if self.store.exists() else {}

    def calls(self) -> list[list[str]]:
        """``[program, action, stdin]`` of every call so far."""
        log = Path(f"{self.store}.log")
        return [json.loads(ln) for ln in log.read_text().splitlines()] if log.exists() else []

    def env(self, monkeypatch: Any, mode: str = "") -> None:
        monkeypatch.setenv("PATH", f"{self.bin}{os.pathsep}{os.environ['PATH']}")
        monkeypatch.setenv("FAKE_HELPER_STORE", str(self.store))
        monkeypatch.setenv("FAKE_HELPER_MODE", mode)


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
    """No credentials, certificates or proxies from the machine's or the developer's own files:
    HOME, the runtime and config directories under ``home``, an empty certs.d, no proxy."""
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(home / "run"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("LAYOUTTOOL_CERTS_D", str(home / "certs.d"))
    for var in ("REGISTRY_AUTH_FILE", "DOCKER_CONFIG", "HTTPS_PROXY", "https_proxy",
                "HTTP_PROXY", "http_proxy", "NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)


__all__ = [
    "PKI",
    "ConnectProxy",
    "CredHelper",
    "FakeRegistry",
    "Passage",
    "Proxy",
    "Registry",
    "Rule",
    "TokenServer",
    "clean_env",
    "free_port",
    "htpasswd_file",
    "layout_files",
    "make_image",
    "token_keypair",
]
