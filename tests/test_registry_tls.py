"""TLS as users run it: docker-registry over HTTPS with a private CA (made by openssl), htpasswd
(bcrypt) auth, and once with client certificates required; skopeo given the same certificate
directory reads what we push, and we pull what it pushed."""

from __future__ import annotations

import json
import shutil
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import sh
from registryutil import PKI, Registry, clean_env, htpasswd_file, make_image

from layouttool.errors import InvalidInputError
from layouttool.ops.verify import verify_layout
from layouttool.registry import Client
from layouttool.registry.errors import TLSError
from layouttool.registry.tls import TLSFiles, load_tls_files, make_context

PASSWORD = "tls-s3cret"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    return PKI.make(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tls_registry(tmp_path_factory: pytest.TempPathFactory, pki: PKI) -> Iterator[Registry]:
    tmp = tmp_path_factory.mktemp("tls-registry")
    reg = Registry(tmp, htpasswd_file(tmp, {"alice": PASSWORD}), server=pki.server)
    yield reg
    reg.stop()


@pytest.fixture(scope="module")
def mtls_registry(tmp_path_factory: pytest.TempPathFactory, pki: PKI) -> Iterator[Registry]:
    reg = Registry(tmp_path_factory.mktemp("mtls-registry"), server=pki.server,
                   client_ca=pki.ca.cert)
    yield reg
    reg.stop()


@pytest.fixture(autouse=True)
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_env(monkeypatch, tmp_path / "home")


def _one_error(stderr: str) -> str:
    assert stderr.startswith("layouttool: error: ") and stderr.count("\n") == 1, stderr
    assert "Traceback" not in stderr
    return stderr


CREDS = ("--creds", f"alice:{PASSWORD}")


def test_push_with_cert_dir_skopeo_reads_it_and_we_pull_what_skopeo_pushed(
    tls_registry, pki, tmp_path, cli, skopeo
):
    certs = pki.cert_dir(tmp_path / "certs")
    src = make_image(tmp_path / "src", [3000, 70000])
    entry = src.read_index().manifests[0]
    target = f"{tls_registry.host}/tls/app:1"
    r = cli("push", f"{src.root}:img", target, "--cert-dir", certs, *CREDS, "--json")
    assert r.code == 0, r.stderr
    assert json.loads(r.stdout)["digest"] == str(entry.digest)
    # skopeo, with the same directory and credentials, sees the same manifest over TLS
    info = json.loads(sh(skopeo, "inspect", "--cert-dir", certs, "--creds", f"alice:{PASSWORD}",
                         f"docker://{target}").stdout)
    assert info["Digest"] == str(entry.digest)
    # skopeo pushes another image; we pull it
    other = make_image(tmp_path / "other", [5000], seed=7)
    sh(skopeo, "copy", "-q", "--dest-cert-dir", certs, "--dest-creds", f"alice:{PASSWORD}",
       f"oci:{other.root}:img", f"docker://{tls_registry.host}/tls/from-skopeo:2")
    # (skopeo compresses the layers, so the digest is the registry's, not the layout's)
    want = json.loads(sh(skopeo, "inspect", "--cert-dir", certs, "--creds", f"alice:{PASSWORD}",
                         f"docker://{tls_registry.host}/tls/from-skopeo:2").stdout)["Digest"]
    dest = tmp_path / "pulled"
    r = cli("pull", f"{tls_registry.host}/tls/from-skopeo:2", "-o", dest, "--cert-dir", certs,
            *CREDS, "--json")
    assert r.code == 0, r.stderr
    assert json.loads(r.stdout)["digest"] == want
    assert verify_layout(dest).ok


def test_certs_d_directory_is_found_and_verbose_names_it(tls_registry, pki, tmp_path, cli,
                                                          monkeypatch):
    base = tmp_path / "certs.d"
    pki.cert_dir(base / tls_registry.host)
    monkeypatch.setenv("LAYOUTTOOL_CERTS_D", f"{tmp_path / 'empty'}:{base}")
    src = make_image(tmp_path / "src", [1000])
    r = cli("-v", "push", f"{src.root}:img", f"{tls_registry.host}/tls/certsd:1", *CREDS)
    assert r.code == 0, r.stderr
    assert f"TLS: certificates from {base / tls_registry.host}: 1 CA file(s)" in r.stderr
    assert "credentials from --creds" in r.stderr and PASSWORD not in r.stderr
    # --debug says it too; without -v/--debug it is not said
    r = cli("--debug", "pull", f"{tls_registry.host}/tls/certsd:1", "-o", tmp_path / "p", *CREDS)
    assert r.code == 0 and str(base / tls_registry.host) in r.stderr, r.stderr
    r = cli("pull", f"{tls_registry.host}/tls/certsd:1", "-o", tmp_path / "q", *CREDS)
    assert r.code == 0 and "TLS:" not in r.stderr, r.stderr


def test_unknown_ca_is_one_line_never_retried_never_plain_http(tls_registry, pki, tmp_path,
                                                                 cli):
    src = make_image(tmp_path / "src", [1000])
    wrong = tmp_path / "wrong"
    wrong.mkdir()
    shutil.copy(pki.other_ca.cert, wrong / "ca.crt")
    for certs in (None, wrong):
        extra = ["--cert-dir", str(certs)] if certs else []
        r = cli("push", f"{src.root}:img", f"{tls_registry.host}/tls/x:1", *extra, *CREDS,
                "--retries", "0")
        err = _one_error(r.stderr)
        assert r.code == 1
        assert "TLS certificate rejected: unknown certificate authority" in err
        assert PASSWORD not in err
    dest = tmp_path / "never"
    r = cli("pull", f"{tls_registry.host}/tls/x:1", "-o", dest, *CREDS)
    assert "unknown certificate authority" in _one_error(r.stderr)
    assert not dest.exists()  # nothing partial
    # a TLS failure is not worth a retry: no backoff wait, one connection attempt
    waits: list[float] = []
    with Client(tls_registry.host, retries=5, sleep=waits.append) as client:
        with pytest.raises(TLSError):
            client.ping()
        assert waits == [] and client.requests == 1


def test_name_mismatch_and_expired_certificate(tls_registry, pki, tmp_path, cli):
    # the certificate names registry.test and 127.0.0.1, not localhost
    port = tls_registry.port
    certs = pki.cert_dir(tmp_path / "certs")
    r = cli("pull", f"localhost:{port}/tls/x:1", "-o", tmp_path / "p", "--cert-dir", certs)
    assert r.code == 1
    assert "TLS certificate rejected: name mismatch" in _one_error(r.stderr)
    expired = pki.ca.issue(tmp_path / "expired", "expired", ["127.0.0.1"], days=-1)
    reg = Registry(tmp_path, server=expired)
    try:
        r = cli("pull", f"{reg.host}/x:1", "-o", tmp_path / "p", "--cert-dir", certs)
        assert r.code == 1
        assert "TLS certificate rejected: certificate expired" in _one_error(r.stderr)
    finally:
        reg.stop()


def test_tls_to_a_plain_http_registry_says_so(tmp_path, cli):
    reg = Registry(tmp_path)
    try:
        r = cli("pull", f"{reg.host}/x:1", "-o", tmp_path / "p")
        assert r.code == 1
        err = _one_error(r.stderr)
        assert "TLS handshake failed: the server does not speak TLS" in err
        assert "--insecure" in err
        # --insecure (and --tls-verify=false) still speak plain HTTP to it
        r = cli("pull", f"{reg.host}/x:1", "-o", tmp_path / "p", "--tls-verify=false")
        assert r.code == 3 and ("MANIFEST_UNKNOWN" in r.stderr or "NAME_UNKNOWN" in r.stderr)
    finally:
        reg.stop()


def test_client_certificate_required(mtls_registry, pki, tmp_path, cli, skopeo):
    src = make_image(tmp_path / "src", [2000, 3000])
    target = f"{mtls_registry.host}/mtls/app:1"
    no_client = pki.cert_dir(tmp_path / "ca-only")
    r = cli("push", f"{src.root}:img", target, "--cert-dir", no_client)
    assert r.code == 1
    assert "requires a client certificate" in _one_error(r.stderr)
    with_client = pki.cert_dir(tmp_path / "with-client", client=True)
    r = cli("-v", "push", f"{src.root}:img", target, "--cert-dir", with_client)
    assert r.code == 0, r.stderr
    assert "client certificate client.cert" in r.stderr
    info = json.loads(sh(skopeo, "inspect", "--cert-dir", with_client, f"docker://{target}").stdout)
    assert info["Digest"] == str(src.read_index().manifests[0].digest)
    dest = tmp_path / "pulled"
    assert cli("pull", target, "-o", dest, "--cert-dir", with_client).code == 0
    assert verify_layout(dest).ok


def test_certificate_directory_mistakes(pki, tmp_path):
    d = tmp_path / "certs"
    d.mkdir()
    shutil.copy(pki.client.cert, d / "client.cert")
    with pytest.raises(InvalidInputError, match=r"client certificate client.cert has no key"):
        load_tls_files("reg:5000", d)
    (d / "client.cert").unlink()
    shutil.copy(pki.client.key, d / "lonely.key")
    with pytest.raises(InvalidInputError, match=r"key lonely.key has no client certificate"):
        load_tls_files("reg:5000", d)
    (d / "lonely.key").unlink()
    (d / "ca.crt").write_text("not a certificate\n")
    with pytest.raises(InvalidInputError, match=r"ca.crt: not a PEM certificate"):
        make_context(load_tls_files("reg:5000", d))
    with pytest.raises(InvalidInputError, match="no such directory"):
        load_tls_files("reg:5000", tmp_path / "absent")


def test_cas_are_added_to_the_system_roots(pki, tmp_path):
    system = ssl.create_default_context().cert_store_stats()["x509_ca"]
    files = load_tls_files("reg:5000", pki.cert_dir(tmp_path / "c"))
    assert files.cas and files.client is None
    assert make_context(files).cert_store_stats()["x509_ca"] == system + 1
    assert make_context(TLSFiles(None)).cert_store_stats()["x509_ca"] == system


def test_certs_d_order_and_exact_host_port(pki, tmp_path, monkeypatch):
    first, second = tmp_path / "containers", tmp_path / "docker"
    pki.cert_dir(second / "reg.example:5000")
    pki.cert_dir(second / "reg.example")
    monkeypatch.setenv("LAYOUTTOOL_CERTS_D", f"{first}:{second}")
    assert load_tls_files("reg.example:5000").directory == second / "reg.example:5000"
    pki.cert_dir(first / "reg.example:5000")
    assert load_tls_files("reg.example:5000").directory == first / "reg.example:5000"
    # HOST:PORT exactly as written: another port is another directory
    assert load_tls_files("reg.example:5001").directory is None
    assert load_tls_files("reg.example").directory == second / "reg.example"


def test_registryd_tls_answers_only_with_the_ca(tls_registry, pki):
    """The fixture's registry really is TLS with our CA (the tests above rely on it)."""
    import urllib.error
    import urllib.request

    ctx = ssl.create_default_context(cafile=str(pki.ca.cert))
    with pytest.raises(OSError):
        urllib.request.urlopen(f"https://{tls_registry.host}/v2/", timeout=5)
    with pytest.raises(urllib.error.HTTPError) as exc:  # 401: htpasswd auth is on
        urllib.request.urlopen(f"https://{tls_registry.host}/v2/", timeout=5, context=ctx)
    assert exc.value.code == 401
    exc.value.close()
