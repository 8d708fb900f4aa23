"""Credentials as users keep them: auth files, Docker credential helpers (a small script on PATH),
``login``/``logout``; against docker-registry over TLS with htpasswd (bcrypt) auth, and skopeo
given the same auth file."""

from __future__ import annotations

import base64
import json
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import sh
from registryutil import PKI, CredHelper, Registry, clean_env, htpasswd_file, make_image
from test_json_output import schema_errors

from layouttool.ops.verify import verify_layout
from layouttool.registry.credentials import (
    Credentials,
    auth_files,
    find_credentials,
    lookup,
    primary_auth_file,
)

PASSWORD = "helper-s3cret"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    return PKI.make(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory, pki: PKI) -> Iterator[Registry]:
    tmp = tmp_path_factory.mktemp("auth-registry")
    reg = Registry(tmp, htpasswd_file(tmp, {"alice": PASSWORD, "bob": "bobs-pw"}),
                   server=pki.server)
    yield reg
    reg.stop()


@pytest.fixture(scope="module")
def open_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    reg = Registry(tmp_path_factory.mktemp("open-registry"))
    yield reg
    reg.stop()


@pytest.fixture
def home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, registry: Registry, pki: PKI) -> Path:
    """A clean home whose certs.d trusts the test CA for the registry."""
    h = tmp_path / "home"
    clean_env(monkeypatch, h)
    pki.cert_dir(h / "certs.d" / registry.host)
    return h


@pytest.fixture
def helper(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CredHelper:
    h = CredHelper.install(tmp_path, "fake", "other")
    h.env(monkeypatch)
    return h


def _docker_config(home: Path, doc: dict) -> Path:
    path = home / ".docker" / "config.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    return path


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


# ------------------------------------------------------------------------------ helpers
def test_cred_helper_for_the_host_gives_the_credentials(registry, home, helper, tmp_path, cli):
    helper.set(registry.host, "alice", PASSWORD)
    # credHelpers[host] first: the credsStore helper ("other") is not asked
    _docker_config(home, {"credHelpers": {registry.host: "fake"}, "credsStore": "other",
                          "auths": {registry.host: {"auth": _b64("bob:wrong")}}})
    src = make_image(tmp_path / "src", [2000])
    r = cli("-v", "push", f"{src.root}:img", f"{registry.host}/creds/helper:1")
    assert r.code == 0, r.stderr
    # the protocol: "get", the bare host:port on stdin
    assert helper.calls() == [["docker-credential-fake", "get", registry.host]]
    assert "credentials from credential helper docker-credential-fake" in r.stderr
    assert PASSWORD not in r.stderr + r.stdout


def test_creds_store_then_auths(registry, home, helper, tmp_path, cli):
    src = make_image(tmp_path / "src", [2100])
    target = f"{registry.host}/creds/store:1"
    # credsStore when no credHelpers entry names the host
    helper.set(registry.host, "alice", PASSWORD)
    _docker_config(home, {"credHelpers": {"elsewhere.example": "other"}, "credsStore": "fake"})
    assert cli("push", f"{src.root}:img", target).code == 0
    assert [c[:2] for c in helper.calls()] == [["docker-credential-fake", "get"]]
    # the helper has nothing ("credentials not found"): the file's auths are next, no warning
    helper.store.unlink()
    _docker_config(home, {"credsStore": "fake",
                          "auths": {f"https://{registry.host}": {"username": "alice",
                                                                  "password": PASSWORD}}})
    r = cli("pull", target, "-o", tmp_path / "p")
    assert r.code == 0 and "warning" not in r.stderr, r.stderr


def test_helper_with_nothing_means_anonymous(registry, home, helper, tmp_path, cli):
    _docker_config(home, {"credsStore": "fake"})
    r = cli("pull", f"{registry.host}/creds/x:1", "-o", tmp_path / "p")
    assert r.code == 1 and r.stderr.count("\n") == 1, r.stderr
    assert "requires credentials" in r.stderr
    assert helper.calls() == [["docker-credential-fake", "get", registry.host]]


@pytest.mark.parametrize(
    ("mode", "helper_name", "says"),
    [
        ("", "missing", "docker-credential-missing is not on PATH"),
        ("fail", "fake", "docker-credential-fake get failed (exit 1)"),
        ("garbage", "fake", "docker-credential-fake printed something that is not credentials "
         "JSON"),
    ],
)
def test_broken_helper_is_one_warning_and_a_public_pull_still_works(
    mode, helper_name, says, open_registry, home, helper, tmp_path, cli, monkeypatch
):
    src = make_image(tmp_path / "src", [1500], seed=3)
    target = f"{open_registry.host}/public/app:1"
    assert cli("push", f"{src.root}:img", target, "--insecure").code == 0
    helper.set(open_registry.host, "alice", PASSWORD)  # what a broken helper might print
    helper.env(monkeypatch, mode)
    config = _docker_config(home, {"credHelpers": {open_registry.host: helper_name}})
    r = cli("pull", target, "-o", tmp_path / "p", "--insecure")
    assert r.code == 0, r.stderr
    # every warning on stderr reads "layouttool: warning: ..." (like errors)
    warnings = [ln for ln in r.stderr.splitlines() if "warning" in ln]
    assert warnings == [f"layouttool: warning: credential helper {says} (credHelpers in "
                        f"{config}); going on without its credentials"]
    assert PASSWORD not in r.stderr + r.stdout
    assert verify_layout(tmp_path / "p").ok


def test_docker_hub_is_asked_by_its_url(helper, tmp_path, monkeypatch):
    clean_env(monkeypatch, tmp_path / "h")
    helper.set("https://index.docker.io/v1/", "<token>", "refresh-me")
    _docker_config(tmp_path / "h", {"credsStore": "fake"})
    found = lookup("docker.io").credentials
    assert found == Credentials(identity_token="refresh-me",
                                source="credential helper docker-credential-fake")
    assert "refresh-me" not in repr(found)
    assert helper.calls()[-1] == ["docker-credential-fake", "get", "https://index.docker.io/v1/"]


# ------------------------------------------------------------------------------ files
def test_file_order_and_forms(tmp_path, monkeypatch):
    home = tmp_path / "h"
    clean_env(monkeypatch, home)
    run = home / "run" / "containers" / "auth.json"
    config = home / ".config" / "containers" / "auth.json"
    docker = home / ".docker" / "config.json"
    legacy = home / ".dockercfg"
    assert [f.path for f in auth_files()] == [run, config, docker, legacy]
    assert primary_auth_file() == run
    for path, user in ((legacy, "legacy"), (docker, "docker"), (config, "config"), (run, "run")):
        path.parent.mkdir(parents=True, exist_ok=True)
        doc = {"reg.example": {"auth": _b64(f"{user}:pw")}}
        path.write_text(json.dumps(doc if path == legacy else {"auths": doc}))
        assert find_credentials("reg.example") == (user, "pw")
    # REGISTRY_AUTH_FILE replaces the first two, as in skopeo
    named = tmp_path / "named.json"
    named.write_text(json.dumps({"auths": {"other.example": {"auth": _b64("n:pw")}}}))
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(named))
    assert [f.path for f in auth_files()] == [named, docker, legacy]
    assert find_credentials("reg.example") == ("docker", "pw")
    # per-repository keys, most specific first; a key for another namespace is not the host's
    named.write_text(json.dumps({"auths": {
        "quay.example/team": {"auth": _b64("team:pw")},
        "quay.example/team/app": {"auth": _b64("app:pw")},
        "quay.example/other": {"auth": _b64("other:pw")},
    }}))
    assert lookup("quay.example", "team/app").credentials.username == "app"
    assert lookup("quay.example", "team/tool").credentials.username == "team"
    assert lookup("quay.example", "solo").credentials is None
    # an identity token, a "<token>" user, Docker Hub's legacy key, an empty Docker Desktop entry
    named.write_text(json.dumps({"auths": {
        "https://index.docker.io/v1/": {"auth": _b64("<token>:refresh-1")},
        "a.example": {"auth": _b64("u:ignored"), "identitytoken": "refresh-2"},
        "b.example": {},
    }}))
    assert lookup("docker.io").credentials.identity_token == "refresh-1"
    got = lookup("a.example").credentials
    assert (got.username, got.identity_token, got.basic) == ("u", "refresh-2", None)
    assert lookup("b.example").credentials is None


def test_unreadable_auth_file_is_a_warning(tmp_path, monkeypatch):
    clean_env(monkeypatch, tmp_path / "h")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(bad))
    got = lookup("reg.example")
    assert got.credentials is None
    assert got.warnings == (f"warning: auth file {bad} is not valid JSON; skipped",)


# ------------------------------------------------------------------------------ login/logout
def test_login_writes_0600_skopeo_reads_it_then_logout(registry, home, tmp_path, cli, skopeo):
    r = cli("login", registry.host, "-u", "alice", "--password-stdin", "--json",
            stdin=f"{PASSWORD}\n".encode())
    assert r.code == 0, r.stderr
    path = home / "run" / "containers" / "auth.json"  # $XDG_RUNTIME_DIR, as skopeo login
    doc = json.loads(r.stdout)
    assert doc == {"action": "login", "registry": registry.host, "username": "alice",
                   "location": str(path)}
    assert schema_errors("login", doc) == []
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert json.loads(path.read_text()) == {
        "auths": {registry.host: {"auth": _b64(f"alice:{PASSWORD}")}}}
    assert PASSWORD not in r.stdout + r.stderr
    assert not [p for p in path.parent.iterdir() if p.name != "auth.json"]  # no temp file left
    # push with what login kept; skopeo, in the same environment, finds the same file itself
    src = make_image(tmp_path / "src", [2500])
    target = f"{registry.host}/creds/login:1"
    assert cli("push", f"{src.root}:img", target).code == 0
    certs = home / "certs.d" / registry.host
    info = json.loads(sh(skopeo, "inspect", "--cert-dir", certs, f"docker://{target}").stdout)
    assert info["Digest"] == str(src.read_index().manifests[0].digest)
    r = cli("logout", registry.host, "--json")
    assert r.code == 0, r.stderr
    assert schema_errors("logout", json.loads(r.stdout)) == []
    assert json.loads(path.read_text()) == {"auths": {}}
    r = cli("logout", registry.host)
    assert r.code == 3 and f"not logged in to {registry.host}" in r.stderr


def test_login_refused_keeps_nothing(registry, home, cli):
    r = cli("login", registry.host, "-u", "alice", "--password-stdin", stdin=b"wrong\n")
    assert r.code == 1 and r.stderr.count("\n") == 1, r.stderr
    assert "HTTP 401" in r.stderr and "wrong" not in r.stderr
    assert not (home / "run").exists()
    r = cli("login", registry.host, "-u", "alice", stdin=b"x\n")
    assert r.code == 2 and "--password-stdin" in r.stderr


def test_login_and_logout_through_the_configured_helper(registry, home, helper, tmp_path, cli):
    authfile = tmp_path / "auth.json"
    authfile.write_text(json.dumps({"credHelpers": {registry.host: "fake"}, "other": 1}))
    r = cli("login", registry.host, "-u", "bob", "--password-stdin", "--authfile", authfile,
            stdin=b"bobs-pw")
    assert r.code == 0, r.stderr
    assert helper.held() == {registry.host: ["bob", "bobs-pw"]}
    assert helper.calls()[-1][:2] == ["docker-credential-fake", "store"]
    assert json.loads(helper.calls()[-1][2]) == {"ServerURL": registry.host, "Username": "bob",
                                                 "Secret": "bobs-pw"}
    # the file is untouched: the helper keeps the secret
    assert json.loads(authfile.read_text()) == {"credHelpers": {registry.host: "fake"},
                                                "other": 1}
    assert cli("logout", registry.host, "--authfile", authfile).code == 0
    assert helper.held() == {}


def test_skopeo_login_file_is_read(registry, home, tmp_path, cli, skopeo, monkeypatch):
    authfile = tmp_path / "skopeo-auth.json"
    certs = home / "certs.d" / registry.host
    sh(skopeo, "login", "--authfile", authfile, "--cert-dir", certs, "-u", "alice",
       "--password-stdin", registry.host, input=PASSWORD.encode())
    src = make_image(tmp_path / "src", [1200], seed=9)
    sh(skopeo, "copy", "-q", "--dest-authfile", authfile, "--dest-cert-dir", certs,
       f"oci:{src.root}:img", f"docker://{registry.host}/creds/skopeo:1")
    r = cli("pull", f"{registry.host}/creds/skopeo:1", "-o", tmp_path / "p", "--authfile",
            authfile)
    assert r.code == 0, r.stderr
    assert verify_layout(tmp_path / "p").ok
    # REGISTRY_AUTH_FILE, for both tools: we push, skopeo reads
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(authfile))
    other = make_image(tmp_path / "other", [900], seed=10)
    assert cli("push", f"{other.root}:img", f"{registry.host}/creds/env:1").code == 0
    info = json.loads(sh(skopeo, "inspect", "--cert-dir", certs,
                         f"docker://{registry.host}/creds/env:1").stdout)
    assert info["Digest"] == str(other.read_index().manifests[0].digest)


def test_secrets_never_in_repr():
    c = Credentials("u", "pw-123", "tok-456", "x")
    assert "pw-123" not in repr(c) and "tok-456" not in repr(c) and "'u'" in repr(c)
