"""convert results read by the peers: skopeo inspects and copies them, umoci unpacks them.

Images enter through ``skopeo copy oci-archive:... oci:...`` (the peers' own import). Limits of
the installed peers, worked around rather than skipped: skopeo 1.9's ``oci:`` transport only
looks at index.json entries of OCI media types, so Docker-typed results are converted back
to OCI before skopeo reads them; umoci 0.4 cannot decompress zstd, so umoci unpacks the gzip
and uncompressed forms.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import random
from pathlib import Path
from typing import Any

import pytest
from conftest import run_cli, sh, shared_fixture
from layerbuild import build_layer
from test_convert import (
    CONFIG_DIGEST,
    UNCOMPRESSED_DIFF_ID,
    add_image,
    assert_verified,
    image_summary,
    named,
    set_index,
    three_layers,
)
from treeutil import snapshot

from layouttool import mediatypes as mt
from layouttool.codec import Compression
from layouttool.store import Layout

pytestmark = pytest.mark.peers


def skopeo_import(skopeo: str, kind: str, layout: Path, ref: str = "img") -> None:
    archive = shared_fixture("oci-archive", f"test-oci-{kind}-image.tar")
    extra = ["--dest-oci-accept-uncompressed-layers"] if kind == "uncompressed" else []
    sh(skopeo, "copy", "-q", *extra, f"oci-archive:{archive}", f"oci:{layout}:{ref}")


def convert(*args: str | Path) -> dict[str, Any]:
    r = run_cli("convert", *args, "--json")
    assert r.code == 0, r.stderr
    out: dict[str, Any] = json.loads(r.stdout)
    return out


def skopeo_inspect(skopeo: str, image: str) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(sh(skopeo, "inspect", image).stdout)
    return out


@pytest.mark.parametrize("target", ["gzip", "zstd", "none"])
def test_skopeo_inspects_and_copies_recompressed(skopeo: str, tmp_path: Path, target: str) -> None:
    src = tmp_path / "src"
    skopeo_import(skopeo, "gzip" if target != "gzip" else "zstd", src)
    out = convert(f"{src}:img", "--compression", target)
    new_layer = out["images"][0]["layers"][0]["new"]
    info = skopeo_inspect(skopeo, f"oci:{src}:img")
    assert info["Digest"] == out["entries"][0]["new"]["digest"]
    assert info["Layers"] == [new_layer["digest"]]
    raw = json.loads(sh(skopeo, "inspect", "--raw", f"oci:{src}:img").stdout)
    want = mt.layer_media_type(Compression.parse(target), docker=False)
    assert [la["mediaType"] for la in raw["layers"]] == [want]
    dest = tmp_path / "dir"
    sh(skopeo, "copy", "-q", f"oci:{src}:img", f"dir:{dest}")
    copied = (dest / new_layer["digest"][7:]).read_bytes()
    assert len(copied) == new_layer["size"]
    assert (dest / CONFIG_DIGEST[7:]).is_file()
    if target == "none":
        assert new_layer["digest"] == UNCOMPRESSED_DIFF_ID
    assert_verified(src)


def test_skopeo_reads_after_oci_docker_oci(skopeo: str, tmp_path: Path) -> None:
    src = tmp_path / "src"
    skopeo_import(skopeo, "zstd", src)
    before = image_summary(src)
    convert(src, "--format", "docker", "--compression", "gzip", "-o", tmp_path / "docker")
    assert image_summary(tmp_path / "docker") == before
    convert(tmp_path / "docker", "--format", "oci", "-o", tmp_path / "oci")
    assert image_summary(tmp_path / "oci") == before
    raw = json.loads(sh(skopeo, "inspect", "--raw", f"oci:{tmp_path / 'oci'}:img").stdout)
    assert [la["mediaType"] for la in raw["layers"]] == [mt.MT_OCI_LAYER_GZIP]
    assert skopeo_inspect(skopeo, f"oci:{tmp_path / 'oci'}:img")["Architecture"] == "arm64"
    sh(skopeo, "copy", "-q", f"oci:{tmp_path / 'oci'}:img", f"dir:{tmp_path / 'dir'}")
    assert_verified(tmp_path / "oci")


def test_skopeo_reads_converted_multi_platform_index(skopeo: str, tmp_path: Path) -> None:
    layout = Layout.init(tmp_path / "l")
    amd = add_image(layout, three_layers(), platform=("linux", "amd64"))
    arm = add_image(layout, three_layers()[:1], platform=("linux", "arm64"))
    idx = layout.put_json(
        {
            "schemaVersion": 2,
            "mediaType": mt.MT_OCI_INDEX,
            "manifests": [
                {**amd.to_json(), "platform": {"architecture": "amd64", "os": "linux"}},
                {**arm.to_json(), "platform": {"architecture": "arm64", "os": "linux"}},
            ],
        },
        mt.MT_OCI_INDEX,
    )
    set_index(layout, [named(idx, "multi")])
    out = convert(layout.root, "--compression", "zstd")
    raw = json.loads(sh(skopeo, "inspect", "--raw", f"oci:{layout.root}:multi").stdout)
    assert [c["digest"] for c in raw["manifests"]] == [i["new"]["digest"] for i in out["images"]]
    for arch, im in zip(("amd64", "arm64"), out["images"], strict=True):
        info = json.loads(
            sh(skopeo, "--override-arch", arch, "inspect", f"oci:{layout.root}:multi").stdout
        )
        assert info["Architecture"] == arch
        assert info["Layers"] == [la["new"]["digest"] for la in im["layers"]]
    sh(skopeo, "copy", "-q", "--all", f"oci:{layout.root}:multi", f"oci:{tmp_path / 'copy'}:m")
    assert_verified(layout.root)


def test_skopeo_reads_upgraded_schema1(skopeo: str, tmp_path: Path) -> None:
    from test_schema1 import BASE_TAR, TOP_TAR, make_layout, sha

    layout, _ = make_layout(tmp_path / "l", signed=True)
    convert(layout.root)
    info = skopeo_inspect(skopeo, f"oci:{layout.root}:test:latest")
    assert info["Architecture"] == "amd64"
    cfg = json.loads(sh(skopeo, "inspect", "--config", f"oci:{layout.root}:test:latest").stdout)
    assert cfg["rootfs"]["diff_ids"] == [sha(BASE_TAR), sha(TOP_TAR)]
    sh(skopeo, "copy", "-q", f"oci:{layout.root}:test:latest", f"dir:{tmp_path / 'dir'}")


def umoci_tree(umoci: str, image: str, bundle: Path) -> dict[str, dict[str, Any]]:
    sh(umoci, "unpack", "--rootless", "--image", image, bundle)
    return snapshot(bundle / "rootfs", owners=False)


def test_umoci_unpacks_the_same_tree(skopeo: str, umoci: str, tmp_path: Path) -> None:
    src = tmp_path / "src"
    skopeo_import(skopeo, "gzip", src)
    reference = umoci_tree(umoci, f"{src}:img", tmp_path / "b0")
    assert "README.md" in reference and reference["README.md"]["size"] == 11189
    convert(f"{src}:img", "--compression", "none", "-o", tmp_path / "none")
    assert umoci_tree(umoci, f"{tmp_path / 'none'}:img", tmp_path / "b1") == reference
    # zstd -> gzip (umoci cannot read the zstd original itself)
    zsrc = tmp_path / "zsrc"
    skopeo_import(skopeo, "zstd", zsrc)
    convert(f"{zsrc}:img", "--compression", "gzip", "--level", "9")
    assert umoci_tree(umoci, f"{zsrc}:img", tmp_path / "b2") == reference
    assert_verified(zsrc)


def test_umoci_unpacks_built_image_after_round_trip(umoci: str, tmp_path: Path) -> None:
    layout = Layout.init(tmp_path / "l")
    d = add_image(layout, three_layers(), compression=Compression.NONE)
    set_index(layout, [named(d, "app")])
    reference = umoci_tree(umoci, f"{layout.root}:app", tmp_path / "b0")
    assert reference["c"]["mode"] == 0o755 and reference["dir/b"]["size"] == 5120
    for step in (["--compression", "gzip"], ["--format", "docker"], ["--format", "oci"]):
        convert(layout.root, *step)
    assert umoci_tree(umoci, f"{layout.root}:app", tmp_path / "b1") == reference
    assert_verified(layout.root)


def test_skopeo_decompresses_our_long_window_zstd(skopeo: str, tmp_path: Path) -> None:
    """Our zstd layers use a 16 MiB window and long-distance matching: skopeo's decoder
    (klauspost/compress) must decompress them. skopeo recompresses to gzip, which makes it
    decode every byte; the result must have our diff_id."""
    rnd = random.Random(24)
    part = rnd.randbytes(1 << 20)
    # a repeat 12 MiB back: found only through the long window
    pad = rnd.randbytes(11 << 20)
    tar = build_layer([{"name": "a", "data": part}, {"name": "pad", "data": pad},
                       {"name": "b", "data": part}])
    layout = Layout.init(tmp_path / "l")
    set_index(layout, [named(add_image(layout, [tar], compression=Compression.NONE), "img")])
    out = convert(layout.root, "--compression", "zstd")
    layer = out["images"][0]["layers"][0]["new"]
    assert layer["size"] < len(tar) - (1 << 20) + (64 << 10)
    dest = tmp_path / "gz"
    sh(skopeo, "copy", "-q", "--dest-compress-format", "gzip", f"oci:{layout.root}:img",
       f"oci:{dest}:img")
    raw = json.loads(sh(skopeo, "inspect", "--raw", f"oci:{dest}:img").stdout)
    gz = (dest / "blobs" / "sha256" / raw["layers"][0]["digest"][7:]).read_bytes()
    assert gz[:2] == b"\x1f\x8b"
    diff_id = out["images"][0]["layers"][0]["diffID"]
    assert "sha256:" + hashlib.sha256(gzip.decompress(gz)).hexdigest() == diff_id
