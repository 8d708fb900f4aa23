"""TLS to a registry: the system's CAs plus a per-registry certificate directory.

The layout docker, podman and skopeo use: a directory named after the registry exactly as
written (``HOST[:PORT]``) holding ``*.crt`` files (CAs, added to the system's roots, not instead
of them) and ``*.cert``/``*.key`` pairs (a client certificate and its key, paired by name).
``--cert-dir DIR`` names the directory; without it the first existing one of
``~/.config/containers/certs.d/HOST[:PORT]``, ``/etc/containers/certs.d/HOST[:PORT]`` and
``/etc/docker/certs.d/HOST[:PORT]`` is used (containers/image's order).
``$LAYOUTTOOL_CERTS_D`` (a ``:``-separated list of base directories) replaces that list, so
tests need not write to /etc.

A TLS failure is never a reason to try plain HTTP: it is an error that says what failed.
"""

from __future__ import annotations

import os
import ssl
from dataclasses import dataclass
from pathlib import Path

from layouttool.errors import InvalidInputError

#: the environment variable that replaces the certs.d base directories (tests, packagers)
CERTS_D_ENV = "LAYOUTTOOL_CERTS_D"


def certs_d_bases() -> list[Path]:
    """The directories whose ``HOST[:PORT]`` subdirectory holds a registry's certificates."""
    env = os.environ.get(CERTS_D_ENV)
    if env is not None:
        return [Path(p) for p in env.split(os.pathsep) if p]
    return [
        Path.home() / ".config" / "containers" / "certs.d",
        Path("/etc/containers/certs.d"),
        Path("/etc/docker/certs.d"),
    ]


@dataclass(frozen=True, slots=True)
class TLSFiles:
    """What one certificate directory holds for a registry."""

    #: the directory used, or None when none exists
    directory: Path | None
    #: CA certificates (``*.crt``), sorted by name
    cas: tuple[Path, ...] = ()
    #: the client certificate and key (``NAME.cert`` + ``NAME.key``), the first by name
    client: tuple[Path, Path] | None = None
    #: further client pairs found (only one can be presented; the first by name is)
    ignored_pairs: tuple[Path, ...] = ()

    def describe(self) -> str:
        """One line for ``-v``: which directory, which files."""
        if self.directory is None:
            return "TLS: system CAs only (no certificate directory)"
        parts = [f"{len(self.cas)} CA file(s)"]
        if self.client is not None:
            parts.append(f"client certificate {self.client[0].name}")
        if self.ignored_pairs:
            names = ", ".join(p.name for p in self.ignored_pairs)
            parts.append(f"ignored further pair(s) {names}")
        return f"TLS: certificates from {self.directory}: " + ", ".join(parts)


def find_cert_dir(registry: str, cert_dir: str | os.PathLike[str] | None = None) -> Path | None:
    """The certificate directory of ``registry`` (``HOST[:PORT]`` as written), or None."""
    if cert_dir is not None:
        return Path(cert_dir)
    for base in certs_d_bases():
        d = base / registry
        try:
            if d.is_dir():
                return d
        except OSError:  # permission: go on, as containers/image does
            continue
    return None


def load_tls_files(registry: str, cert_dir: str | os.PathLike[str] | None = None) -> TLSFiles:
    """The CA files and client pair for ``registry``.

    A ``--cert-dir`` that does not exist is an error (the user named it); a ``NAME.cert``
    without ``NAME.key`` (or the reverse) is an error, as with skopeo.
    """
    directory = find_cert_dir(registry, cert_dir)
    if directory is None:
        return TLSFiles(None)
    try:
        names = sorted(e.name for e in os.scandir(directory) if not e.name.startswith("."))
    except FileNotFoundError:
        if cert_dir is not None:
            raise InvalidInputError(f"--cert-dir {directory}: no such directory") from None
        return TLSFiles(None)
    except OSError as exc:
        raise InvalidInputError(f"certificate directory {directory}: {exc.strerror}") from exc
    cas = tuple(directory / n for n in names if n.endswith(".crt"))
    pairs: list[tuple[Path, Path]] = []
    present = set(names)
    for n in names:
        if n.endswith(".cert"):
            key = n[: -len(".cert")] + ".key"
            if key not in present:
                raise InvalidInputError(
                    f"{directory}: client certificate {n} has no key {key} (CA certificates "
                    "end in .crt)"
                )
            pairs.append((directory / n, directory / key))
        elif n.endswith(".key") and n[: -len(".key")] + ".cert" not in present:
            raise InvalidInputError(
                f"{directory}: key {n} has no client certificate {n[: -len('.key')]}.cert"
            )
    return TLSFiles(
        directory,
        cas,
        pairs[0] if pairs else None,
        tuple(p[0] for p in pairs[1:]),
    )


def make_context(files: TLSFiles) -> ssl.SSLContext:
    """A verifying client context: the system's CAs, plus ``files``' CAs and client pair."""
    ctx = ssl.create_default_context()
    for ca in files.cas:
        try:
            ctx.load_verify_locations(cafile=str(ca))
        except (OSError, ssl.SSLError) as exc:
            raise InvalidInputError(f"CA certificate {ca}: not a PEM certificate ({exc})") from exc
    if files.client is not None:
        cert, key = files.client
        try:
            ctx.load_cert_chain(str(cert), str(key))
        except (OSError, ssl.SSLError) as exc:
            raise InvalidInputError(
                f"client certificate {cert} with key {key.name}: cannot be loaded "
                f"({getattr(exc, 'reason', None) or exc})"
            ) from exc
    return ctx


#: OpenSSL verify codes -> what failed, in words a user can act on
_VERIFY: dict[int, str] = {
    2: "unknown certificate authority (the issuer's certificate is not available)",
    9: "certificate not yet valid",
    10: "certificate expired",
    18: "unknown certificate authority (self-signed certificate)",
    19: "unknown certificate authority (self-signed CA in the chain)",
    20: "unknown certificate authority",
    21: "unknown certificate authority (cannot verify the first certificate)",
    62: "name mismatch",
    64: "name mismatch",
}


def describe_tls_error(host: str, exc: ssl.SSLError, files: TLSFiles, *, own: bool = True) -> str:
    """One line saying what failed in the handshake with ``host``, and what to do.

    ``own``: ``host`` is the registry itself (the line then need not name it again).
    """
    of = "" if own else f" of {host}"
    with_ = "" if own else f" with {host}"
    where = (
        f"add its CA as a .crt file to {files.directory}"
        if files.directory is not None
        else f"add its CA to --cert-dir DIR or /etc/containers/certs.d/{host}/ca.crt"
    )
    if isinstance(exc, ssl.SSLCertVerificationError):
        code = exc.verify_code
        what = _VERIFY.get(code, exc.verify_message or "verification failed")
        detail = exc.verify_message or ""
        if code in (62, 64):
            hint = "the certificate does not name this host; use the name it was issued for"
        elif code in (9, 10):
            hint = "renew the registry's certificate (or check this machine's clock)"
        else:
            hint = where
        extra = f" ({detail.rstrip('.')})" if detail and detail not in what else ""
        return f"TLS certificate{of} rejected: {what}{extra}; {hint}"
    reason = (exc.reason or "").upper()
    if reason in ("WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "HTTP_REQUEST"):
        return (
            f"TLS handshake{with_} failed: the server does not speak TLS (a plain-HTTP registry? "
            "--insecure is for test registries only)"
        )
    if "CERTIFICATE_REQUIRED" in reason or "BAD_CERTIFICATE" in reason or (
        "HANDSHAKE_FAILURE" in reason and files.client is None
    ):
        hint = (
            f"put NAME.cert and NAME.key in {files.directory}"
            if files.directory is not None and files.client is None
            else (
                "check that the registry trusts its issuer"
                if files.client is not None
                else f"put NAME.cert and NAME.key in --cert-dir DIR or "
                f"/etc/containers/certs.d/{host}/"
            )
        )
        state = (
            f"it refused our client certificate {files.client[0].name}"
            if files.client is not None
            else "it requires a client certificate"
        )
        return f"TLS handshake{with_} failed: {state}; {hint}"
    return f"TLS handshake{with_} failed: {exc.reason or exc}"


__all__ = [
    "CERTS_D_ENV",
    "TLSFiles",
    "certs_d_bases",
    "describe_tls_error",
    "find_cert_dir",
    "load_tls_files",
    "make_context",
]
