"""Interoperability: we read what skopeo and umoci write, and they read what we write."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_cli, sh
from fixtures_path import shared_fixture
from test_store import assert_verifies, make_image, make_layout

from layouttool import mediatypes as mt
from layouttool.store import Layout

HELLO_CONFIG = "sha256:ee301c921b8aadc002973b2e0c3da17d701dcd994b606769a7e6eaa100b81d44"
EMPTY_CONFIG = "sha256:9d7f147c0d0c4d4538a04c7ef385809e56eb1aac7bf800fbe976612188025b68"
EMPTY_DIFF_ID = "sha256:0b916d257bd406111a3fced53f81b47de9a30f7c7d514a89769b3483aaddca7e"


@pytest.fixture
def skopeo_layout(tmp_path: Path, skopeo: str) -> Path:
    """A layout skopeo wrote: several tags, OCI and Docker-typed (v2s2) manifests."""
    lay = tmp_path / "sk"
    save = shared_fixture("docker-save")
    for src, ref, fmt in (
        (f"docker-archive:{save / 'almostempty.tar'}", "empty:latest", []),
        (f"docker-archive:{save / 'hello-world-v25.tar'}", "hello:v2s2", ["--format", "v2s2"]),
        (f"docker-archive:{save / 'test_bundle.tar'}:@0", "bundle1", []),
        (f"docker-archive:{save / 'test_bundle.tar'}:@1", "bundle2", []),
    ):
        sh(skopeo, "copy", "-q", *fmt, src, f"oci:{lay}:{ref}")
    return lay


def test_ls_inspect_verify_skopeo_layout(skopeo_layout: Path) -> None:
    lay = skopeo_layout
    r = run_cli("ls", lay, "--json")
    assert r.code == 0, r.stderr
    images = {i["ref"]: i for i in json.loads(r.stdout)["images"]}
    assert set(images) == {"empty:latest", "hello:v2s2", "bundle1", "bundle2"}
    assert images["hello:v2s2"]["mediaType"] == mt.MT_DOCKER_MANIFEST
    assert images["empty:latest"]["mediaType"] == mt.MT_OCI_MANIFEST
    assert images["hello:v2s2"]["platforms"] == ["linux/arm64"]

    hello = json.loads(run_cli("inspect", f"{lay}:hello:v2s2", "--json").stdout)
    assert hello["configDigest"] == HELLO_CONFIG
    assert hello["manifestMediaType"] == mt.MT_DOCKER_MANIFEST
    assert hello["cmd"] == ["/hello"]
    assert hello["layers"][0]["mediaType"] == mt.MT_DOCKER_LAYER_GZIP

    empty = json.loads(run_cli("inspect", f"{lay}:empty:latest", "--json").stdout)
    assert empty["layers"][0]["diffID"] == EMPTY_DIFF_ID
    # the tag suffix resolves too ("latest" is unique)
    assert json.loads(run_cli("inspect", f"{lay}:latest", "--json").stdout)["digest"] == (
        empty["digest"]
    )
    # skopeo re-serialises the config when it converts to OCI; the raw bytes still hash right
    raw = run_cli("inspect", f"{lay}:empty:latest", "--raw", "config").stdout_bytes
    assert json.loads(raw)["rootfs"]["diff_ids"] == [EMPTY_DIFF_ID]

    v = run_cli("verify", lay)
    assert v.code == 0, v.stdout
    assert_verifies(lay)


def test_skopeo_reads_what_we_tag(skopeo_layout: Path, skopeo: str) -> None:
    lay = skopeo_layout
    # skopeo 1.9 finds only OCI-typed index.json entries (not even its own --format v2s2
    # ones), so the refs it is asked about here point at OCI manifests
    assert run_cli("tag", f"{lay}:empty:latest", "empty:copy").code == 0
    assert run_cli("tag", f"{lay}:hello:v2s2", "hello:copy").code == 0
    assert run_cli("tag", f"{lay}:bundle1", "docker.io/library/b:1").code == 0
    assert run_cli("untag", f"{lay}:bundle2").code == 0
    assert_verifies(lay)
    layout = Layout.open(lay)
    by_ref = {d.ref_name: d for d in layout.read_index().manifests}
    assert "bundle2" not in by_ref
    for ref in ("empty:copy", "docker.io/library/b:1"):
        raw = sh(skopeo, "inspect", "--raw", f"oci:{lay}:{ref}").stdout
        assert raw == layout.blob_path(by_ref[ref].digest).read_bytes()
        info = json.loads(sh(skopeo, "inspect", f"oci:{lay}:{ref}").stdout)
        assert info["Digest"] == str(by_ref[ref].digest)
    # and copies it out, blobs and all
    out = lay.parent / "copied"
    sh(skopeo, "copy", "-q", f"oci:{lay}:empty:copy", f"dir:{out}")
    assert (out / "manifest.json").read_bytes() == layout.blob_path(
        by_ref["empty:copy"].digest
    ).read_bytes()
    assert by_ref["hello:copy"].digest == by_ref["hello:v2s2"].digest
    proc = sh(skopeo, "inspect", f"oci:{lay}:bundle2", check=False)
    assert proc.returncode != 0


def test_skopeo_reads_our_images(tmp_path: Path, skopeo: str) -> None:
    """Images our store wrote, tagged by us, read by skopeo."""
    layout = make_layout(tmp_path, "oci-img")
    make_image(layout, "docker-img", docker=True, layers=[b"d1", b"d2"])  # a neighbour
    assert run_cli("tag", f"{layout.root}:oci-img", "example.com/app:1.0").code == 0
    for n, ref in enumerate(("oci-img", "example.com/app:1.0")):
        info = json.loads(sh(skopeo, "inspect", f"oci:{layout.root}:{ref}").stdout)
        assert info["Architecture"] == "amd64"
        assert len(info["Layers"]) == 1
        sh(skopeo, "copy", "-q", f"oci:{layout.root}:{ref}", f"dir:{tmp_path / f'copy{n}'}")
    assert_verifies(layout)


@pytest.fixture
def umoci_layout(tmp_path: Path, umoci: str) -> Path:
    """A layout umoci wrote: new image, a file inserted, config changed, a second tag."""
    lay = tmp_path / "um"
    sh(umoci, "init", "--layout", lay)
    sh(umoci, "new", "--image", f"{lay}:base")
    f = tmp_path / "hello.txt"
    f.write_text("hello from umoci\n")
    sh(umoci, "insert", "--image", f"{lay}:base", f, "/etc/hello.txt")
    sh(umoci, "config", "--image", f"{lay}:base", "--config.cmd", "/bin/true",
       "--config.label", "org.example=yes", "--tag", "configured")
    sh(umoci, "tag", "--image", f"{lay}:configured", "second")
    return lay


def test_ls_inspect_verify_umoci_layout(umoci_layout: Path) -> None:
    lay = umoci_layout
    images = json.loads(run_cli("ls", lay, "--json").stdout)["images"]
    assert sorted(i["ref"] for i in images) == ["base", "configured", "second"]
    conf = json.loads(run_cli("inspect", f"{lay}:configured", "--json").stdout)
    assert conf["cmd"] == ["/bin/true"]
    assert conf["labels"] == {"org.example": "yes"}
    assert len(conf["layers"]) == 1
    assert conf["layers"][0]["mediaType"] == mt.MT_OCI_LAYER_GZIP
    assert run_cli("verify", lay).code == 0
    assert_verifies(lay)


def test_umoci_reads_what_we_tag(umoci_layout: Path, umoci: str) -> None:
    lay = umoci_layout
    assert run_cli("tag", f"{lay}:configured", "ours").code == 0
    assert run_cli("untag", f"{lay}:base").code == 0
    listed = sh(umoci, "ls", "--layout", lay).stdout.decode().split()
    assert sorted(listed) == ["configured", "ours", "second"]
    stat = json.loads(sh(umoci, "stat", "--json", "--image", f"{lay}:ours").stdout)
    assert stat["history"]
    assert_verifies(lay)


def test_umoci_reads_our_images(tmp_path: Path, umoci: str) -> None:
    layout = make_layout(tmp_path, "ours")
    out = tmp_path / "bundle"
    sh(umoci, "unpack", "--rootless", "--image", f"{layout.root}:ours", out)
    assert (out / "rootfs" / "f0.txt").read_bytes() == b"ours"
