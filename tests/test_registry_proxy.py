"""Proxies: HTTPS_PROXY / HTTP_PROXY / NO_PROXY (any case), CONNECT for HTTPS, the proxy resolving
the registry's name. The registry is ``registry.test``, a name only the test's CONNECT proxy
knows (it maps it to 127.0.0.1), so a request that reached the registry went through it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import sh
from registryutil import PKI, ConnectProxy, Registry, clean_env, make_image

from layouttool.errors import InvalidInputError
from layouttool.ops.verify import verify_layout
from layouttool.registry.proxy import parse_proxy_url, proxy_for


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    return PKI.make(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tls_registry(tmp_path_factory: pytest.TempPathFactory, pki: PKI) -> Iterator[Registry]:
    reg = Registry(tmp_path_factory.mktemp("tls-registry"), server=pki.server)
    yield reg
    reg.stop()


@pytest.fixture(scope="module")
def plain_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    reg = Registry(tmp_path_factory.mktemp("plain-registry"))
    yield reg
    reg.stop()


@pytest.fixture
def proxy() -> Iterator[ConnectProxy]:
    p = ConnectProxy({"registry.test": "127.0.0.1"})
    yield p
    p.stop()


@pytest.fixture(autouse=True)
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_env(monkeypatch, tmp_path / "home")


def _name(reg: Registry) -> str:
    return f"registry.test:{reg.port}"


@pytest.mark.parametrize("variable", ["HTTPS_PROXY", "https_proxy"])
def test_push_and_pull_through_connect_and_skopeo_too(
    variable, tls_registry, pki, proxy, tmp_path, cli, skopeo, monkeypatch
):
    certs = pki.cert_dir(tmp_path / "certs")
    monkeypatch.setenv(variable, proxy.url)
    # new blobs for each case (the registry would have the last case's: nothing to send)
    src = make_image(tmp_path / "src", [4000, 60000], seed=int(variable.isupper()))
    target = f"{_name(tls_registry)}/proxied/{variable.lower()}:1"
    r = cli("-v", "push", f"{src.root}:img", target, "--cert-dir", certs, "--json")
    assert r.code == 0, r.stderr
    assert f"through proxy {proxy.url}" in r.stderr
    # every connection was a CONNECT naming the registry by name: the proxy resolved it
    assert proxy.log and {(p.method, p.target) for p in proxy.log} == {
        ("CONNECT", _name(tls_registry))}
    assert all(p.status == 200 for p in proxy.log)
    assert sum(p.bytes_up for p in proxy.log) > 64000
    dest = tmp_path / "pulled"
    before = len(proxy.log)
    r = cli("pull", target, "-o", dest, "--cert-dir", certs)
    assert r.code == 0, r.stderr
    assert len(proxy.log) > before and verify_layout(dest).ok
    assert sum(p.bytes_down for p in proxy.log[before:]) > 64000
    # skopeo, with the same proxy variable and certificate directory, reads it through it too
    before = len(proxy.log)
    info = json.loads(sh(skopeo, "inspect", "--cert-dir", certs, f"docker://{target}").stdout)
    assert info["Digest"] == str(src.read_index().manifests[0].digest)
    assert [p.target for p in proxy.log[before:]][:1] == [_name(tls_registry)]
    # skopeo pushes through it; we pull what it pushed, through it
    other = make_image(tmp_path / "other", [3000], seed=int(variable.isupper()) + 10)
    skopeo_target = f"{_name(tls_registry)}/proxied/from-skopeo-{variable.lower()}:1"
    sh(skopeo, "copy", "-q", "--dest-cert-dir", certs, f"oci:{other.root}:img",
       f"docker://{skopeo_target}")
    before = len(proxy.log)
    r = cli("pull", skopeo_target, "-o", tmp_path / "from-skopeo", "--cert-dir", certs)
    assert r.code == 0, r.stderr
    assert len(proxy.log) > before and verify_layout(tmp_path / "from-skopeo").ok


def test_no_proxy_sends_it_direct(tls_registry, pki, proxy, tmp_path, cli, monkeypatch):
    certs = pki.cert_dir(tmp_path / "certs")
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    port = tls_registry.port
    for entry in ("registry.test", ".test", "*.test", "*", f"other.example, registry.test:{port}"):
        monkeypatch.setenv("no_proxy", entry)
        r = cli("pull", f"{_name(tls_registry)}/x:1", "-o", tmp_path / "p", "--cert-dir", certs,
                "--retries", "0")
        # direct: this machine cannot resolve registry.test, and says so in one line
        assert r.code == 1 and r.stderr.count("\n") == 1, r.stderr
        assert "registry.test" in r.stderr
        assert proxy.log == [], entry
    # a NO_PROXY entry for another port or domain does not apply
    monkeypatch.setenv("NO_PROXY", "registry.test:1,.example,10.0.0.0/8")
    r = cli("pull", f"{_name(tls_registry)}/x:1", "-o", tmp_path / "p", "--cert-dir", certs)
    assert r.code == 3, r.stderr  # reached the registry (through the proxy): no such image
    assert proxy.targets() == [_name(tls_registry)]


def test_proxy_credentials_and_refusal(tls_registry, pki, tmp_path, cli, monkeypatch):
    certs = pki.cert_dir(tmp_path / "certs")
    strict = ConnectProxy({"registry.test": "127.0.0.1"}, credentials=("pu", "proxy-pw"))
    try:
        src = make_image(tmp_path / "src", [1000])
        target = f"{_name(tls_registry)}/proxied/auth:1"
        monkeypatch.setenv("HTTPS_PROXY", strict.url_with("pu", "wrong-pw"))
        r = cli("push", f"{src.root}:img", target, "--cert-dir", certs, "-j", "1")
        assert r.code == 1 and r.stderr.count("\n") == 1, r.stderr
        assert f"proxy {strict.url} refused to connect to {_name(tls_registry)}: 407" in r.stderr
        assert "wrong-pw" not in r.stderr and "pu:" not in r.stderr
        assert len(strict.log) == 1  # a refusal is not retried (one thread: -j 1)
        monkeypatch.setenv("HTTPS_PROXY", strict.url_with("pu", "proxy-pw"))
        r = cli("push", f"{src.root}:img", target, "--cert-dir", certs)
        assert r.code == 0, r.stderr
        assert {p.status for p in strict.log[1:]} == {200}
    finally:
        strict.stop()


def test_http_proxy_carries_plain_http_in_absolute_form(plain_registry, proxy, tmp_path, cli,
                                                        monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", proxy.host)  # no scheme: http://
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:9")  # not for http:// requests
    src = make_image(tmp_path / "src", [3000])
    target = f"{_name(plain_registry)}/plain/app:1"
    assert cli("push", f"{src.root}:img", target, "--insecure").code == 0
    dest = tmp_path / "pulled"
    r = cli("pull", target, "-o", dest, "--insecure")
    assert r.code == 0, r.stderr
    assert verify_layout(dest).ok
    assert {p.method for p in proxy.log} >= {"HEAD", "POST", "PUT", "GET"}
    assert {p.target for p in proxy.log} == {_name(plain_registry)}


def test_the_proxy_cannot_resolve_the_name(tls_registry, pki, proxy, tmp_path, cli,
                                           monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", proxy.url)
    r = cli("pull", "nowhere.test:5000/x:1", "-o", tmp_path / "p", "--retries", "1")
    assert r.code == 1 and r.stderr.count("\n") == 1, r.stderr
    assert "502" in r.stderr and "nowhere.test:5000" in r.stderr
    assert [p.status for p in proxy.log] == [502, 502]  # a 502 is retried like any 5xx


# ------------------------------------------------------------------------------ the rules
ENV = {"HTTPS_PROXY": "http://proxy.example:3128", "HTTP_PROXY": "proxy.example:8080"}


@pytest.mark.parametrize(
    ("scheme", "host", "no_proxy", "proxied"),
    [
        ("https", "reg.example.com", "", True),
        ("http", "reg.example.com", "", True),
        ("https", "localhost:5000", "", False),
        ("https", "127.0.0.1:5000", "", False),
        ("https", "[::1]:5000", "", False),
        ("https", "reg.example.com", "*", False),
        ("https", "reg.example.com", "reg.example.com", False),
        ("https", "reg.example.com", "example.com", False),  # the domain and its subdomains
        ("https", "example.com", "example.com", False),
        ("https", "reg.example.com", ".example.com", False),
        ("https", "example.com", ".example.com", True),  # a leading dot: subdomains only
        ("https", "reg.example.com", "*.example.com", False),
        ("https", "notexample.com", "example.com", True),
        ("https", "reg.example.com:5000", "reg.example.com:5000", False),
        ("https", "reg.example.com:5000", "reg.example.com:443", True),
        ("https", "reg.example.com", "reg.example.com:443", False),  # the scheme's port
        ("https", "10.1.2.3:5000", "10.0.0.0/8", False),
        ("https", "10.1.2.3:5000", "192.168.0.0/16, 10.1.2.4", True),
        ("https", "10.1.2.3:5000", " 10.1.2.3 ", False),
        ("https", "[fd00::1]:5000", "fd00::/8", False),
        ("https", "reg.example.com", "10.0.0.0/8", True),  # a CIDR never matches a name
        ("https", "REG.Example.COM", "reg.EXAMPLE.com", False),
    ],
)
def test_proxy_for(scheme, host, no_proxy, proxied):
    got = proxy_for(scheme, host, {**ENV, "no_proxy": no_proxy})
    assert (got is not None) is proxied
    if got is not None:
        assert got.address == ("proxy.example:3128" if scheme == "https"
                               else "proxy.example:8080")


def test_proxy_variables_case_and_credentials():
    assert proxy_for("https", "r.example", {}) is None
    lower = proxy_for("https", "r.example", {"https_proxy": "http://p:1"})
    assert lower is not None and lower.address == "p:1"
    both = proxy_for("https", "r.example", {"HTTPS_PROXY": "http://up:1", "https_proxy": "lo:2"})
    assert both is not None and both.address == "up:1"
    cfg = parse_proxy_url("http://us%40er:p%3Ass@proxy:3128", "HTTPS_PROXY")
    assert cfg.display == "http://proxy:3128" and "p:ss" not in repr(cfg)
    assert cfg.headers() == {"Proxy-Authorization": "Basic dXNAZXI6cDpzcw=="}
    assert parse_proxy_url("proxy", "HTTP_PROXY").address == "proxy:80"
    for bad in ("https://proxy:3128", "socks5://proxy:1080"):
        with pytest.raises(InvalidInputError, match="proxies are not supported"):
            parse_proxy_url(bad, "HTTPS_PROXY")
