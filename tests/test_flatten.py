"""``flatten``: one layer holding the merged filesystem. umoci unpacks exactly the tree our
unpack gives of the original (every tricky, containerd, moby and dive stack); the index
entry moves, the config keeps its fields, Docker stays Docker, digests are reproducible,
skopeo reads the result and podman loads it."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest
from conftest import run_cli, sh
from imagebuild import make_image
from layerbuild import build_layer
from layerstacks import D, named_stacks, stack
from podmanutil import Podman
from treeutil import diff, snapshot

ROOT = os.geteuid() == 0
pytestmark = pytest.mark.skipif(not ROOT, reason="the stacks hold devices and owners: as root")


@pytest.fixture(autouse=True)
def _epoch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")


def layers_of(name: str, tmp_path: Path) -> list[bytes]:
    return [la if isinstance(la, bytes) else build_layer(la)
            for la in stack(name, str(tmp_path / "outside"))]


def blob(layout: Path, digest: str) -> Any:
    return json.loads((layout / "blobs" / digest.replace(":", "/")).read_bytes())


def flatten_json(*args: str | Path) -> dict[str, Any]:
    res = run_cli("flatten", *args, "--json")
    assert res.code == 0, res.stderr
    doc: dict[str, Any] = json.loads(res.stdout)
    return doc


@pytest.mark.parametrize("name", named_stacks())
def test_umoci_unpacks_the_tree_unpack_gives_of_the_original(
    name: str, tmp_path: Path, umoci: str
) -> None:
    layout = make_image(tmp_path / "oci", layers_of(name, tmp_path))
    ours = run_cli("-q", "unpack", f"{layout}:t", tmp_path / "original")
    res = run_cli("flatten", f"{layout}:t", "--tag", "flat")
    if ours.code:
        assert res.code == ours.code, res.stderr
        return
    assert res.code == 0, res.stderr
    # raw unpack: umoci's unpacker without the mtree manifest (which hashes every file)
    sh(umoci, "raw", "unpack", "--image", f"{layout}:flat", tmp_path / "theirs")
    assert diff(snapshot(tmp_path / "original"), snapshot(tmp_path / "theirs")) == []
    man = blob(layout, json.loads(run_cli("inspect", f"{layout}:flat", "--json").stdout)[
        "manifestDigest"])
    assert len(man["layers"]) == 1


def test_flatten_moves_the_ref_and_keeps_the_rest(tmp_path: Path) -> None:
    layers = [build_layer([{**D, "name": "a"}, {"name": "a/f", "data": "1"}]),
              build_layer([{"name": "a/.wh.f"}, {"name": "a/g", "data": "22"}])]
    layout = make_image(tmp_path / "oci", layers, config={"x-unknown": {"kept": True}},
                        annotations={"org.example.note": "kept"})
    before = json.loads((layout / "index.json").read_text())["manifests"]
    doc = flatten_json(f"{layout}:t")
    assert doc["action"] == "moved" and doc["ref"] == "t"
    assert doc["previousDigest"] == before[0]["digest"]
    entries = json.loads((layout / "index.json").read_text())["manifests"]
    assert [e["digest"] for e in entries] == [doc["digest"]]  # replaced, not duplicated
    assert (layout / "blobs" / before[0]["digest"].replace(":", "/")).exists()  # until gc
    man = blob(layout, doc["manifestDigest"])
    assert man["annotations"] == {"org.example.note": "kept"}
    assert [la["digest"] for la in man["layers"]] == [doc["layer"]["digest"]]
    assert man["layers"][0]["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip"
    cfg = blob(layout, doc["configDigest"])
    assert cfg["x-unknown"] == {"kept": True}
    assert cfg["config"] == {"Env": ["PATH=/usr/bin:/bin"], "Cmd": ["/bin/sh"]}
    assert cfg["rootfs"] == {"type": "layers", "diff_ids": [doc["layer"]["diffID"]]}
    assert len(cfg["history"]) == 1
    assert cfg["history"][0]["created_by"] == "layouttool flatten"
    assert cfg["created"] == cfg["history"][0]["created"] == "2023-11-14T22:13:20Z"
    assert doc["layersBefore"] == 2 and doc["entries"] == 2
    assert run_cli("verify", "--strict", "--deep", layout).code == 0


def test_tag_leaves_the_original(tmp_path: Path) -> None:
    layout = make_image(tmp_path / "oci", [build_layer([{"name": "f", "data": "x"}])])
    before = json.loads((layout / "index.json").read_text())["manifests"]
    doc = flatten_json(f"{layout}:t", "--tag", "t-flat")
    assert doc["action"] == "tagged" and doc["ref"] == "t-flat"
    after = json.loads((layout / "index.json").read_text())["manifests"]
    assert after[0] == before[0] and after[1]["digest"] == doc["digest"]


def test_same_input_same_epoch_same_digests(tmp_path: Path) -> None:
    layers = layers_of("dive", tmp_path)
    a = make_image(tmp_path / "a", layers)
    b = make_image(tmp_path / "b", layers)
    da, db = flatten_json(f"{a}:t"), flatten_json(f"{b}:t")
    for key in ("digest", "manifestDigest", "configDigest"):
        assert da[key] == db[key]
    assert da["layer"] == db["layer"]


@pytest.mark.parametrize(("compression", "docker", "want"), [
    ("zstd", False, "application/vnd.oci.image.layer.v1.tar+zstd"),
    ("none", False, "application/vnd.oci.image.layer.v1.tar"),
    ("gzip", True, "application/vnd.docker.image.rootfs.diff.tar.gzip"),
    ("none", True, "application/vnd.docker.image.rootfs.diff.tar"),
])
def test_layer_compression_follows_the_image(tmp_path: Path, compression: str, docker: bool,
                                             want: str) -> None:
    layout = make_image(tmp_path / "oci", [build_layer([{"name": "f", "data": "x"}])],
                        compression=compression, docker=docker)
    doc = flatten_json(f"{layout}:t")
    assert doc["layer"]["mediaType"] == want
    man = blob(layout, doc["manifestDigest"])
    assert man["mediaType"] == json.loads((layout / "index.json").read_text())[
        "manifests"][0]["mediaType"]
    assert ("docker" in man["mediaType"]) == docker


def test_compression_option_overrides(tmp_path: Path) -> None:
    layout = make_image(tmp_path / "oci", [build_layer([{"name": "f", "data": "x"}])])
    doc = flatten_json(f"{layout}:t", "--compression", "zstd")
    assert doc["layer"]["mediaType"].endswith("+zstd")
    docker = make_image(tmp_path / "d", [build_layer([{"name": "f"}])], docker=True)
    res = run_cli("flatten", f"{docker}:t", "--compression", "zstd")
    assert res.code == 4 and "zstd" in res.stderr


def test_an_image_without_layers_gets_one_empty_layer(tmp_path: Path) -> None:
    layout = make_image(tmp_path / "oci", [])
    doc = flatten_json(f"{layout}:t")
    assert doc["entries"] == 0 and doc["layersBefore"] == 0
    cfg = blob(layout, doc["configDigest"])
    assert len(cfg["rootfs"]["diff_ids"]) == 1


def test_skopeo_reads_the_flattened_image(tmp_path: Path, skopeo: str) -> None:
    layout = make_image(tmp_path / "oci", layers_of("dive", tmp_path))
    flatten_json(f"{layout}:t")
    info = json.loads(sh(skopeo, "inspect", f"oci:{layout}:t").stdout)
    assert len(info["Layers"]) == 1


def test_podman_loads_a_flattened_image(tmp_path: Path, podman: Podman) -> None:
    layout = make_image(tmp_path / "oci", layers_of("dive", tmp_path), ref="dive:flat")
    doc = flatten_json(f"{layout}:dive:flat")
    out = tmp_path / "flat.tar"
    res = run_cli("-q", "to-docker-save", f"{layout}:dive:flat", "--tag", "dive:flat", "-o", out)
    assert res.code == 0, res.stderr
    podman("load", "-i", out)
    image_id = doc["configDigest"].split(":")[1]
    info = podman.inspect(image_id)
    assert info["RootFS"]["Layers"] == [doc["layer"]["diffID"]]
    assert any(t.endswith("dive:flat") for t in info["RepoTags"])
    assert info["Config"]["Cmd"] == ["/bin/sh"]


def test_flatten_one_platform_of_an_index(tmp_path: Path) -> None:
    """The index is rewritten around the flattened image; the other platform is untouched."""
    layout = make_image(tmp_path / "oci", [build_layer([{"name": "a", "data": "1"}]),
                                           build_layer([{"name": "b", "data": "2"}])], ref="amd")
    make_image(tmp_path / "oci", [build_layer([{"name": "c", "data": "3"}])], ref="arm",
               config={"architecture": "arm64"})
    amd, arm = json.loads((layout / "index.json").read_text())["manifests"]
    children = [{**{k: amd[k] for k in ("mediaType", "digest", "size")},
                 "platform": {"os": "linux", "architecture": "amd64"}},
                {**{k: arm[k] for k in ("mediaType", "digest", "size")},
                 "platform": {"os": "linux", "architecture": "arm64"}}]
    raw = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                      "manifests": children}).encode()
    digest = hashlib.sha256(raw).hexdigest()
    (layout / "blobs" / "sha256" / digest).write_bytes(raw)
    (layout / "index.json").write_text(json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": "application/vnd.oci.image.index.v1+json",
                       "digest": f"sha256:{digest}", "size": len(raw),
                       "annotations": {"org.opencontainers.image.ref.name": "multi"}}]}))
    doc = flatten_json(f"{layout}:multi", "--platform", "linux/amd64")
    assert doc["mediaType"] == "application/vnd.oci.image.index.v1+json"
    index = blob(layout, doc["digest"])
    new_amd, same_arm = index["manifests"]
    assert same_arm == children[1]
    assert new_amd["digest"] == doc["manifestDigest"]
    assert new_amd["platform"] == {"os": "linux", "architecture": "amd64"}
    assert len(blob(layout, doc["manifestDigest"])["layers"]) == 1
    assert run_cli("verify", "--strict", "--deep", layout).code == 0
