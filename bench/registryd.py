"""A docker-registry on loopback for the tests and the benchmarks, plain or over TLS.

TLS material is made by ``openssl``: a CA, then certificates it signs (EC P-256, quick to
make). :func:`start` writes the registry's config.yml (filesystem storage under ``root``,
optionally an htpasswd file, a server certificate, client certificates required) and waits
until it answers. Standard library only: the benchmark imports it outside pytest.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on (now)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True)


_EC = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")


@dataclass(frozen=True)
class Pair:
    """A certificate and its private key (PEM files)."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class CA:
    """A certificate authority made for a test: its certificate (``ca.crt``) and key."""

    cert: Path
    key: Path

    @classmethod
    def make(cls, directory: Path, name: str = "layouttool test CA") -> CA:
        """A new self-signed CA in ``directory``."""
        directory.mkdir(parents=True, exist_ok=True)
        cert, key = directory / "ca.crt", directory / "ca.key"
        _openssl("req", "-x509", *_EC, "-keyout", key, "-out", cert, "-days", "2",
                 "-subj", f"/CN={name}",
                 "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign")
        return cls(cert, key)

    def issue(self, directory: Path, stem: str, names: list[str], *, client: bool = False,
              days: int = 2) -> Pair:
        """A certificate for ``names`` (DNS names or IP addresses) signed by this CA.

        ``client`` makes a client certificate (extendedKeyUsage clientAuth); ``days`` below
        zero makes one that has already expired.
        """
        directory.mkdir(parents=True, exist_ok=True)
        key, csr, cert = (directory / f"{stem}.key", directory / f"{stem}.csr",
                          directory / f"{stem}.{'cert' if client else 'crt'}")
        sans = ",".join(
            f"IP:{n}" if n.replace(".", "").isdigit() or ":" in n else f"DNS:{n}" for n in names
        )
        usage = "clientAuth" if client else "serverAuth"
        _openssl("req", *_EC, "-keyout", key, "-out", csr, "-subj", f"/CN={names[0]}",
                 "-addext", f"subjectAltName={sans}", "-addext", f"extendedKeyUsage={usage}")
        _openssl("x509", "-req", "-in", csr, "-CA", self.cert, "-CAkey", self.key,
                 "-CAcreateserial", "-out", cert, "-days", str(days),
                 "-copy_extensions", "copyall")
        csr.unlink()
        return Pair(cert, key)


@dataclass
class RegistryD:
    """A running docker-registry: ``host`` is ``127.0.0.1:PORT``; stop it with :meth:`stop`."""

    proc: subprocess.Popen[bytes]
    root: Path
    host: str
    port: int
    tls: bool

    def stop(self) -> None:
        """Terminate the registry and wait for it."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.proc.stderr:
            self.proc.stderr.close()


def start(
    binary: str,
    root: Path,
    *,
    auth: str = "",
    htpasswd: Path | None = None,
    server: Pair | None = None,
    client_ca: Path | None = None,
    port: int | None = None,
    timeout: float = 15.0,
) -> RegistryD:
    """Start ``binary serve`` with storage under ``root``.

    ``server`` serves TLS with that pair; ``client_ca`` then requires client certificates
    signed by it. ``htpasswd`` (or a raw ``auth`` section) turns authentication on.
    """
    root.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    host = f"127.0.0.1:{port}"
    if htpasswd is not None:
        auth = f"auth:\n  htpasswd:\n    realm: test\n    path: {htpasswd}\n"
    tls = ""
    if server is not None:
        tls = f"  tls:\n    certificate: {server.cert}\n    key: {server.key}\n"
        if client_ca is not None:
            tls += f"    clientcas:\n      - {client_ca}\n"
    cfg = root / "config.yml"
    cfg.write_text(
        "version: 0.1\nlog:\n  level: error\n"
        f"storage:\n  filesystem:\n    rootdirectory: {root / 'data'}\n"
        "  delete:\n    enabled: true\n"
        f"http:\n  addr: {host}\n{tls}{auth}"
    )
    proc = subprocess.Popen([binary, "serve", str(cfg)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    reg = RegistryD(proc, root, host, port, server is not None)
    deadline = time.monotonic() + timeout
    while True:
        if _answers(host, server is not None):
            return reg
        if proc.poll() is not None or time.monotonic() > deadline:
            reg.stop()
            err = proc.stderr.read() if proc.stderr and not proc.stderr.closed else b""
            raise RuntimeError(f"docker-registry did not start: {err[-2000:]!r}")
        time.sleep(0.05)


def _answers(host: str, tls: bool) -> bool:
    """Whether something accepts connections on ``host`` (and, for plain HTTP, answers)."""
    if tls:
        # a TCP connection is enough: the handshake needs what the test has not given us
        try:
            name, _, port = host.rpartition(":")
            with socket.create_connection((name, int(port)), timeout=1):
                return True
        except OSError:
            return False
    try:
        urllib.request.urlopen(f"http://{host}/v2/", timeout=1).close()
    except urllib.error.HTTPError as exc:
        exc.close()
        return True  # 401: up, with auth
    except (OSError, ssl.SSLError):
        return False
    return True


def which_registry() -> str | None:
    """The docker-registry binary, if installed."""
    return shutil.which("docker-registry")


__all__ = ["CA", "Pair", "RegistryD", "free_port", "start", "which_registry"]
