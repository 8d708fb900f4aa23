"""The bearer token flow end to end: docker-registry with ``auth: token``, our token server.

Tokens are RS256 JWTs whose ``kid`` is the libtrust fingerprint of the certificate in the
registry's ``rootcertbundle``; anonymous users may pull ``public/*``; alice may do anything.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import sh
from registryutil import (
    Registry,
    TokenServer,
    clean_env,
    layout_files,
    make_image,
    token_keypair,
)

from layouttool.ops.verify import verify_layout
from layouttool.registry import AuthError, Client

PASSWORD = "s3cret-Pa55"
REFRESH = "refresh-T0ken-of-alice"


@pytest.fixture(scope="module")
def keypair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return token_keypair(tmp_path_factory.mktemp("token-issuer"))


@pytest.fixture
def token_registry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, keypair: tuple[Path, Path]
) -> Iterator[tuple[Registry, TokenServer]]:
    clean_env(monkeypatch, tmp_path)
    tokens = TokenServer(keypair, {"alice": PASSWORD}, refresh_tokens={REFRESH: "alice"})
    reg = Registry(tmp_path, auth=tokens.registry_auth())
    yield reg, tokens
    reg.stop()
    tokens.stop()


def _no_secrets(tokens: TokenServer, *texts: str) -> None:
    joined = "\n".join(texts)
    assert PASSWORD not in joined
    assert not any(t in joined or t.split(".")[2] in joined for t in tokens.issued)


def test_push_needs_credentials_and_gets_a_push_token(token_registry, tmp_path, cli, skopeo):
    reg, tokens = token_registry
    src = make_image(tmp_path / "src", [3000, 5000, 7000])
    entry = src.read_index().manifests[0]
    r = cli("push", f"{src.root}:img", f"{reg.host}/private/app:1", "--insecure")
    assert r.code == 1 and r.stderr.count("\n") == 1, r.stderr
    assert "no credentials" in r.stderr and "Traceback" not in r.stderr
    r = cli("push", f"{src.root}:img", f"{reg.host}/private/app:1", "--insecure",
            "--creds", "alice:wrong")
    assert r.code == 1 and "token server refused" in r.stderr and "wrong" not in r.stderr
    tokens.log.clear()
    r = cli("push", f"{src.root}:img", f"{reg.host}/private/app:1", "--insecure", "-j", "8",
            "--creds", f"alice:{PASSWORD}", "--json")
    assert r.code == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["digest"] == str(entry.digest) and out["blobsTransferred"] == 4
    # eight threads, four blobs, a manifest: one token request for the push scope, with alice's
    # credentials, granting pull and push
    push_scope = "repository:private/app:pull,push"
    requests = [e for e in tokens.log if push_scope in e[1]]
    assert len(requests) == 1, tokens.log
    user, _, access, status = requests[0]
    assert (user, status) == ("alice", 200)
    assert access == [{"type": "repository", "name": "private/app", "actions": ["pull", "push"]}]
    _no_secrets(tokens, r.stdout, r.stderr)
    # skopeo, logged in, reads the same manifest
    info = json.loads(sh(skopeo, "inspect", "--tls-verify=false", "--creds",
                         f"alice:{PASSWORD}", f"docker://{reg.host}/private/app:1").stdout)
    assert info["Digest"] == str(entry.digest)


def test_anonymous_pull_allowed_or_refused_by_scope(token_registry, tmp_path, cli):
    reg, tokens = token_registry
    src = make_image(tmp_path / "src", [4000, 100])
    for repo in ("public/app", "private/app"):
        r = cli("push", f"{src.root}:img", f"{reg.host}/{repo}:1", "--insecure",
                "--creds", f"alice:{PASSWORD}")
        assert r.code == 0, r.stderr
    tokens.log.clear()
    pub = tmp_path / "pub"
    r = cli("pull", f"{reg.host}/public/app:1", "-o", pub, "--insecure", "--json")
    assert r.code == 0, r.stderr
    assert verify_layout(pub).ok
    assert layout_files(pub)["index.json"] and {
        k for k in layout_files(pub) if k.startswith("blobs/")
    } == {k for k in layout_files(src.root) if k.startswith("blobs/")}
    # anonymous: no Authorization sent to the token server, and only pull granted
    assert all(user is None for user, *_ in tokens.log)
    assert len(tokens.log) == 1  # one scope, one token, reused for manifest and blobs
    priv = tmp_path / "priv"
    r = cli("pull", f"{reg.host}/private/app:1", "-o", priv, "--insecure")
    assert r.code == 1, r.stderr
    assert r.stderr.startswith("layouttool: error:") and r.stderr.count("\n") == 1
    assert "UNAUTHORIZED" in r.stderr and "no credentials" in r.stderr
    assert not priv.exists()  # nothing was created
    _no_secrets(tokens, r.stdout, r.stderr)


def test_token_cache_is_per_scope_and_thread_safe(token_registry, tmp_path):
    reg, tokens = token_registry
    src = make_image(tmp_path / "src", [100])
    digest = src.read_index().manifests[0].digest
    from concurrent.futures import ThreadPoolExecutor

    with Client(reg.host, insecure=True, creds=("alice", PASSWORD)) as client:
        with ThreadPoolExecutor(8) as pool:
            sizes = list(pool.map(lambda _: client.blob_size("a/x", digest), range(16)))
        assert sizes == [None] * 16
        assert client.blob_size("b/y", digest) is None
        assert client.blob_size("a/x", digest, push=True) is None
        assert client.token_fetches == {
            "repository:a/x:pull": 1,
            "repository:b/y:pull": 1,
            "repository:a/x:pull,push": 1,
        }
    assert len(tokens.log) == 3


def test_mount_under_token_auth_asks_for_both_repositories(token_registry, tmp_path, cli):
    reg, tokens = token_registry
    src = make_image(tmp_path / "src", [20000, 30000])
    creds = ("--creds", f"alice:{PASSWORD}")
    assert cli("push", f"{src.root}:img", f"{reg.host}/team/base:1", "--insecure", *creds).code == 0
    tokens.log.clear()
    r = cli("push", f"{src.root}:img", f"{reg.host}/team/app:1", "--insecure", *creds,
            "--mount-from", "team/base", "--json")
    assert r.code == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["blobsMounted"] == 3 and out["blobsTransferred"] == 0
    assert out["bytesTransferred"] == 0
    mount_scopes = [e[1] for e in tokens.log
                    if "repository:team/base:pull" in e[1] and len(e[1]) == 2]
    assert mount_scopes == [["repository:team/app:pull,push", "repository:team/base:pull"]]


def test_wrong_password_for_anonymous_allowed_repo_is_still_refused(token_registry, tmp_path,
                                                                    cli):
    reg, _tokens = token_registry
    r = cli("pull", f"{reg.host}/public/none:1", "-o", tmp_path / "x", "--insecure",
            "--creds", "alice:not-the-password")
    assert r.code == 1 and "token server refused" in r.stderr
    assert "not-the-password" not in r.stderr + r.stdout


def test_credentials_from_auth_file_reach_the_token_server(token_registry, tmp_path, cli,
                                                           monkeypatch):
    import base64

    reg, tokens = token_registry
    src = make_image(tmp_path / "src", [100])
    auth = tmp_path / "auth.json"
    auth.write_text(json.dumps(
        {"auths": {reg.host: {"auth": base64.b64encode(f"alice:{PASSWORD}".encode()).decode()}}}
    ))
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(auth))
    r = cli("push", f"{src.root}:img", f"{reg.host}/private/f:1", "--insecure")
    assert r.code == 0, r.stderr
    assert {user for user, *_ in tokens.log} == {"alice"}


def test_unusable_challenge_is_one_line(tmp_path):
    from registryutil import FakeRegistry

    fake = FakeRegistry()
    try:
        fake.routes[("GET", "/v2/x/manifests/1")] = (
            401, {"WWW-Authenticate": 'Bearer realm="ftp://nowhere/token"'}, b"")
        with (Client(fake.host, insecure=True, creds=("u", "p")) as client,
              pytest.raises(AuthError, match="not an http")):
            client.get_manifest("x", "1")
    finally:
        fake.stop()


@pytest.mark.parametrize("form", ["identitytoken", "<token> user"])
def test_identity_token_is_an_oauth2_refresh_token(token_registry, tmp_path, cli, monkeypatch,
                                                    form):
    import base64

    reg, tokens = token_registry
    entry = ({"identitytoken": REFRESH} if form == "identitytoken"
             else {"auth": base64.b64encode(f"<token>:{REFRESH}".encode()).decode()})
    config = tmp_path / "docker"
    config.mkdir()
    (config / "config.json").write_text(json.dumps({"auths": {reg.host: entry}}))
    monkeypatch.setenv("DOCKER_CONFIG", str(config))
    src = make_image(tmp_path / "src", [700])
    r = cli("push", f"{src.root}:img", f"{reg.host}/private/oauth:1", "--insecure", "--json")
    assert r.code == 0, r.stderr
    # POST realm, grant_type=refresh_token, our client_id, the scope in one field; no Basic
    assert tokens.posts, tokens.log
    for fields, authorization in tokens.posts:
        assert authorization is None
        assert fields["grant_type"] == "refresh_token" and fields["refresh_token"] == REFRESH
        assert fields["client_id"] == "layouttool" and fields["service"] == tokens.service
    assert {f["scope"] for f, _ in tokens.posts} == {"repository:private/oauth:pull,push"}
    assert REFRESH not in r.stdout + r.stderr
    _no_secrets(tokens, r.stdout, r.stderr)
    # a refresh token the server does not know is refused in one line
    (config / "config.json").write_text(json.dumps({"auths": {reg.host: {
        "identitytoken": "stale"}}}))
    r = cli("push", f"{src.root}:img", f"{reg.host}/private/oauth:2", "--insecure")
    assert r.code == 1 and "token server refused" in r.stderr and "stale" not in r.stderr


@pytest.mark.parametrize(
    ("registry", "realm", "refused"),
    [
        ("reg.example", "http://auth.example/token", "plain HTTP for an HTTPS registry"),
        ("reg.example", "http://reg.example:8080/token", "plain HTTP for an HTTPS registry"),
        ("reg.example", "http://reg.example/token", None),  # our own origin: made HTTPS
        ("reg.example", "https://127.0.0.1:8080/token", "loopback or link-local"),
        ("reg.example", "https://localhost/token", "loopback or link-local"),
        ("reg.example", "https://169.254.169.254/latest", "loopback or link-local"),
        ("reg.example", "https://[fe80::1]/token", "loopback or link-local"),
        ("reg.example", "https://[::1]/token", "loopback or link-local"),
        ("reg.example", "https://auth.example/token", None),
        ("reg.example", "https://reg.example:8443/token", None),  # its own host
        ("127.0.0.1:5000", "https://127.0.0.1:6000/token", None),  # a local registry
        ("localhost:5000", "https://169.254.1.1/token", None),
    ],
)
def test_token_realm_rules(registry, realm, refused):
    from layouttool.registry.auth import check_realm
    from layouttool.registry.transport import Transport

    t = Transport(registry, registry)
    target = t.resolve(realm)
    if refused is None:
        check_realm((t.scheme, t.host), target, registry)
    else:
        with pytest.raises(AuthError, match=refused):
            check_realm((t.scheme, t.host), target, registry)


def test_hostile_realm_gets_nothing(tmp_path, monkeypatch):
    """A remote registry (reg.test, reached through a proxy) whose challenge names a realm on
    this machine's loopback: refused, and not one request reaches that address."""
    from registryutil import ConnectProxy, FakeRegistry

    clean_env(monkeypatch, tmp_path)
    fake, victim = FakeRegistry(), FakeRegistry()
    proxy = ConnectProxy({"reg.test": "127.0.0.1"})
    try:
        port = fake.host.rsplit(":", 1)[1]
        fake.routes[("GET", "/v2/x/manifests/1")] = (
            401, {"WWW-Authenticate": f'Bearer realm="http://{victim.host}/token"'}, b"")
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        with (Client(f"reg.test:{port}", insecure=True, creds=("u", "p")) as client,
              pytest.raises(AuthError, match="loopback or link-local")):
            client.get_manifest("x", "1")
        assert [p.target for p in proxy.log] == [f"reg.test:{port}"]
        assert victim.log == []
    finally:
        proxy.stop()
        fake.stop()
        victim.stop()
