"""push and pull against a real registry (docker-registry on loopback), skopeo as oracle."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REPO, sh
from registryutil import Registry

from layouttool import mediatypes as mt
from layouttool.digest import Digest
from layouttool.errors import InvalidInputError
from layouttool.model import Descriptor, Platform, make_manifest_doc
from layouttool.ops.layout import set_ref
from layouttool.registry import RemoteRef, find_credentials, parse_challenge
from layouttool.store import Layout

SAMPLE = REPO / "testdata" / "sample-docker-save.tar"


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    reg = Registry(tmp_path)
    yield reg
    reg.stop()


@pytest.fixture
def imported(tmp_path: Path, cli) -> Path:
    layout = tmp_path / "oci"
    r = cli("from-docker-save", SAMPLE, "-o", layout)
    assert r.code == 0, r.stderr
    return layout


def test_push_is_byte_exact_and_skopeo_reads_it(registry, imported, cli, skopeo):
    r = cli("push", f"{imported}:layouttool-sample:1.0", f"{registry.host}/sample:1.0",
            "--insecure", "--json")
    assert r.code == 0, r.stderr
    out = json.loads(r.stdout)
    ours = Layout.open(imported).read_index().manifests[0].digest
    assert out["digest"] == str(ours) and out["blobsTransferred"] == 3
    info = json.loads(sh(skopeo, "inspect", "--tls-verify=false",
                         f"docker://{registry.host}/sample:1.0").stdout)
    assert info["Digest"] == str(ours)
    # a second push uploads nothing
    again = json.loads(cli("push", f"{imported}:layouttool-sample:1.0",
                           f"{registry.host}/sample:1.0", "--insecure", "--json").stdout)
    assert again["blobsTransferred"] == 0 and again["blobsSkipped"] == 3
    assert again["bytesTransferred"] == 0


def test_push_of_a_manifest_listed_under_another_type(registry, cli, tmp_path, skopeo):
    # go-containerregistry lists a Docker v2 manifest as an OCI one in index.json: the
    # registry judges a manifest by its Content-Type, which must be what the document is
    from shapes import shape_ggcr_docker_under_oci

    made = shape_ggcr_docker_under_oci(tmp_path / "ggcr")
    r = cli("push", made.images["app"], f"{registry.host}/ggcr:1", "--insecure", "--json")
    assert r.code == 0, r.stderr
    raw = sh(skopeo, "inspect", "--raw", "--tls-verify=false",
             f"docker://{registry.host}/ggcr:1").stdout
    assert json.loads(raw)["mediaType"] == mt.MT_DOCKER_MANIFEST
    assert Digest.of_bytes(raw) == Digest.parse(made.digests["manifest"])


def test_pull_what_skopeo_pushed(registry, imported, cli, skopeo, tmp_path):
    sh(skopeo, "copy", "-q", "--dest-tls-verify=false",
       f"oci:{imported}:layouttool-sample:1.0", f"docker://{registry.host}/team/app:2.0")
    want = json.loads(sh(skopeo, "inspect", "--raw", "--tls-verify=false",
                         f"docker://{registry.host}/team/app:2.0").stdout)
    dest = tmp_path / "pulled"
    r = cli("pull", f"{registry.host}/team/app:2.0", "-o", dest, "--tls-verify=false", "--json")
    assert r.code == 0, r.stderr
    idx = Layout.open(dest).read_index().manifests
    assert [d.ref_name for d in idx] == ["team/app:2.0"]
    raw = Layout.open(dest).read_blob(idx[0])
    assert json.loads(raw) == want
    assert cli("verify", dest).code == 0
    # the pulled image unpacks
    assert cli("unpack", f"{dest}:team/app:2.0", tmp_path / "rootfs").code == 0
    assert (tmp_path / "rootfs" / "etc" / "motd").exists()


def _multi_platform_layout(path: Path) -> Layout:
    layout = Layout.init(path)
    children = []
    for arch in ("amd64", "arm64"):
        layer = layout.put_bytes(f"not really a tar for {arch}".encode())
        config = layout.put_json(
            {"architecture": arch, "os": "linux",
             "rootfs": {"type": "layers", "diff_ids": [str(layer.digest)]}},
            mt.MT_OCI_CONFIG,
        )
        doc = make_manifest_doc(media_type=mt.MT_OCI_MANIFEST, config=config,
                                layers=[layer.descriptor(mt.MT_OCI_LAYER)])
        m = layout.put_json(doc, mt.MT_OCI_MANIFEST)
        children.append(m.with_(platform=Platform("linux", arch)))
    index = layout.put_json(
        {"schemaVersion": 2, "mediaType": mt.MT_OCI_INDEX,
         "manifests": [c.to_json() for c in children]},
        mt.MT_OCI_INDEX,
    )
    set_ref(layout, index, "multi")
    return layout


def test_multi_platform_round_trip(registry, cli, tmp_path, skopeo):
    src = _multi_platform_layout(tmp_path / "src")
    entry = src.read_index().manifests[0]
    r = cli("push", f"{src.root}:multi", f"{registry.host}/multi:1", "--insecure")
    assert r.code == 0, r.stderr
    raw = sh(skopeo, "inspect", "--raw", "--tls-verify=false",
             f"docker://{registry.host}/multi:1").stdout
    assert Digest.of_bytes(raw) == entry.digest
    whole = tmp_path / "whole"
    assert cli("pull", f"{registry.host}/multi:1", "-o", whole, "--insecure",
               "--all-platforms").code == 0
    got = Layout.open(whole).read_index().manifests[0]
    assert got.digest == entry.digest and mt.is_index(got.media_type)
    assert cli("verify", whole).code == 0
    one = tmp_path / "one"
    assert cli("pull", f"{registry.host}/multi:1", "-o", one, "--insecure",
               "--platform", "linux/arm64").code == 0
    picked = Layout.open(one).read_index().manifests[0]
    assert mt.is_manifest(picked.media_type)
    lay = Layout.open(one)
    man = json.loads(lay.read_blob(picked))
    cfg = json.loads(lay.read_blob(Descriptor.from_json(man["config"])))
    assert cfg["architecture"] == "arm64"


def test_corrupted_blob_from_registry_is_caught(registry, imported, cli, tmp_path):
    assert cli("push", f"{imported}:layouttool-sample:1.0", f"{registry.host}/s:1",
               "--insecure").code == 0
    layout = Layout.open(imported)
    m = json.loads(layout.read_blob(layout.read_index().manifests[0]))
    layer = Digest.parse(m["layers"][0]["digest"])
    data = bytearray(registry.blob_file(layer).read_bytes())
    data[len(data) // 2] ^= 0xFF
    registry.blob_file(layer).write_bytes(bytes(data))
    dest = tmp_path / "bad"
    r = cli("pull", f"{registry.host}/s:1", "-o", dest, "--insecure")
    assert r.code == 5, r.stderr
    assert r.stderr.startswith("layouttool: error:") and "Traceback" not in r.stderr
    assert Layout.open(dest).read_index().manifests == ()
    assert not layout.state_dir.joinpath("tmp").exists() or not any(
        Path(dest, ".layouttool", "tmp").glob("*"))


def test_interrupted_pull_resumes_from_stored_blobs(registry, imported, cli, tmp_path):
    assert cli("push", f"{imported}:layouttool-sample:1.0", f"{registry.host}/s:1",
               "--insecure").code == 0
    dest = tmp_path / "resume"
    src = Layout.open(imported)
    m = json.loads(src.read_blob(src.read_index().manifests[0]))
    # as if an earlier pull had stored the config before it was killed
    cfg = Digest.parse(m["config"]["digest"])
    Layout.init(dest).put_bytes(src.blob_path(cfg).read_bytes())
    out = json.loads(cli("pull", f"{registry.host}/s:1", "-o", dest, "--insecure",
                         "--json").stdout)
    assert out["blobsSkipped"] == 1 and out["blobsTransferred"] == len(m["layers"])


@pytest.fixture
def auth_registry(tmp_path: Path) -> Iterator[Registry]:
    bcrypt = pytest.importorskip("bcrypt")
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text("alice:" + bcrypt.hashpw(b"s3cret", bcrypt.gensalt(4)).decode() + "\n")
    reg = Registry(tmp_path, htpasswd)
    yield reg
    reg.stop()


def test_basic_auth(auth_registry, imported, cli, tmp_path, monkeypatch):
    target = f"{auth_registry.host}/private:1"
    monkeypatch.setenv("HOME", str(tmp_path))  # no stray credentials
    monkeypatch.delenv("REGISTRY_AUTH_FILE", raising=False)
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.delenv("DOCKER_CONFIG", raising=False)
    r = cli("push", f"{imported}:layouttool-sample:1.0", target, "--insecure")
    assert r.code != 0 and "credentials" in r.stderr and "Traceback" not in r.stderr
    r = cli("push", f"{imported}:layouttool-sample:1.0", target, "--insecure",
            "--creds", "alice:wrong")
    assert r.code != 0 and "s3cret" not in r.stderr + r.stdout
    r = cli("push", f"{imported}:layouttool-sample:1.0", target, "--insecure",
            "--creds", "alice:s3cret")
    assert r.code == 0, r.stderr
    # credentials from an auth file (containers auth.json format)
    auth = tmp_path / "auth.json"
    token = base64.b64encode(b"alice:s3cret").decode()
    auth.write_text(json.dumps({"auths": {auth_registry.host: {"auth": token}}}))
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(auth))
    r = cli("pull", target, "-o", tmp_path / "p", "--insecure")
    assert r.code == 0, r.stderr


def test_missing_manifest_is_not_found(registry, cli, tmp_path):
    r = cli("pull", f"{registry.host}/nothing:here", "-o", tmp_path / "x", "--insecure")
    assert r.code == 3, r.stderr
    assert "MANIFEST_UNKNOWN" in r.stderr or "NAME_UNKNOWN" in r.stderr


@pytest.mark.parametrize(
    ("ref", "registry", "repo", "tag"),
    [
        ("busybox", "docker.io", "library/busybox", None),
        ("docker.io/busybox:1.36", "docker.io", "library/busybox", "1.36"),
        ("ghcr.io/me/app:1.0", "ghcr.io", "me/app", "1.0"),
        ("localhost/app", "localhost", "app", None),
        ("127.0.0.1:5000/team/app:v2", "127.0.0.1:5000", "team/app", "v2"),
        ("me/app", "docker.io", "me/app", None),
    ],
)
def test_remote_ref_parse(ref, registry, repo, tag):
    r = RemoteRef.parse(ref)
    assert (r.registry, r.repository, r.tag) == (registry, repo, tag)


@pytest.mark.parametrize("bad", ["UPPER/app", "app:bad tag", "a//b", "app@sha256:xyz"])
def test_remote_ref_rejects(bad):
    with pytest.raises(InvalidInputError):
        RemoteRef.parse(bad)


def test_parse_challenge():
    scheme, params = parse_challenge(
        'Bearer realm="https://auth.example/token",service="registry.example",scope="x"'
    )
    assert scheme == "bearer"
    assert params["realm"] == "https://auth.example/token"
    assert params["service"] == "registry.example"


def test_find_credentials_from_docker_config(tmp_path, monkeypatch):
    monkeypatch.delenv("REGISTRY_AUTH_FILE", raising=False)
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path))
    token = base64.b64encode(b"bob:pw:with:colons").decode()
    (tmp_path / "config.json").write_text(
        json.dumps({"auths": {"https://index.docker.io/v1/": {"auth": token}}}))
    assert find_credentials("docker.io") == ("bob", "pw:with:colons")
    assert find_credentials("ghcr.io") is None
