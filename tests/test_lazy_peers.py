"""Lazy-pull layers with the peers: podman loads ours, skopeo copies them, umoci's tree of the
gzip original equals our unpack of them, and we read what podman writes.

podman runs as root with vfs storage under tmp_path (``--root``/``--runroot``), so tests never
share state. podman 4.3.1 (Debian 12) writes zstd:chunked with containers/storage 1.43: the
``io.containers.zstd-chunked.*`` keys, a 40-byte footer, no tar-split.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import IN_CI, need_tool, run_cli, sh
from layerbuild import build_layer
from test_convert import add_image, named, read_json, set_index
from test_lazy import kinds_layer
from treeutil import diff, snapshot

from layouttool import mediatypes as mt
from layouttool.lazy import zstd_chunked
from layouttool.ops.verify import verify_layout
from layouttool.store import Layout

FORMATS = ["zstd:chunked", "estargz"]


@pytest.fixture
def podman(tmp_path: Path) -> Iterator[list[str]]:
    """podman with private vfs storage (root only); its runroot must be under 50 characters."""
    exe = need_tool("podman")
    if os.geteuid() != 0:
        msg = "podman with vfs storage under tmp_path needs root"
        if IN_CI:
            pytest.fail(msg)
        pytest.skip(msg)
    run = tempfile.mkdtemp(prefix="lz-pm-")
    try:
        yield [
            exe,
            "--root",
            str(tmp_path / "pm-root"),
            "--runroot",
            run,
            "--storage-driver",
            "vfs",
        ]
    finally:
        shutil.rmtree(run, ignore_errors=True)


def gzip_image(tmp_path: Path) -> Path:
    """A gzip OCI image with every kind of entry (no devices: umoci runs rootless here)."""
    layout = Layout.init(tmp_path / "gz")
    tars = [
        build_layer(
            [
                {"type": "dir", "name": "etc/"},
                {"name": "etc/passwd", "data": "root:x:0:0::/root:/bin/sh\n"},
                {"name": "etc/old", "data": "old"},
                {"type": "dir", "name": "opt/"},
                {"name": "opt/a", "data": "a"},
            ]
        ),
        kinds_layer(tarfile.GNU_FORMAT),
        build_layer(
            [
                {"name": "etc/.wh.old"},
                {"type": "dir", "name": "opt/"},
                {"name": "opt/.wh..wh..opq"},
                {"name": "opt/b", "data": "b" * 5000},
            ]
        ),
    ]
    set_index(layout, [named(add_image(layout, tars), "app")])
    return layout.root


def convert_to(src: Path, fmt: str, dest: Path) -> Path:
    r = run_cli("convert", f"{src}:app", "--compression", fmt, "-o", dest)
    assert r.code == 0, r.stderr
    assert verify_layout(dest).ok
    return dest


def diff_ids(root: Path) -> list[str]:
    idx = json.loads((root / "index.json").read_bytes())
    man = read_json(root, idx["manifests"][0]["digest"])
    return list(read_json(root, man["config"]["digest"])["rootfs"]["diff_ids"])


@pytest.mark.parametrize("fmt", FORMATS)
def test_podman_pulls_our_lazy_image_with_the_same_diff_ids(
    tmp_path: Path, podman: list[str], fmt: str
) -> None:
    lay = convert_to(gzip_image(tmp_path), fmt, tmp_path / "lazy")
    sh(*podman, "pull", "-q", f"oci:{lay}:app")
    ids = sh(*podman, "images", "-q").stdout.decode().split()
    assert len(ids) == 1
    got = json.loads(sh(*podman, "image", "inspect", ids[0]).stdout)[0]["RootFS"]["Layers"]
    assert got == diff_ids(lay)


@pytest.mark.parametrize("fmt", FORMATS)
def test_skopeo_copies_our_lazy_image(tmp_path: Path, skopeo: str, fmt: str) -> None:
    lay = convert_to(gzip_image(tmp_path), fmt, tmp_path / "lazy")
    sh(skopeo, "copy", "-q", f"oci:{lay}:app", f"oci:{tmp_path / 'copy'}:app")
    assert verify_layout(tmp_path / "copy").ok
    src = {p.name for p in (lay / "blobs" / "sha256").iterdir()}
    dst = {p.name for p in (tmp_path / "copy" / "blobs" / "sha256").iterdir()}
    assert dst <= src  # every blob byte for byte, layers included
    raw = json.loads(sh(skopeo, "inspect", "--raw", f"oci:{tmp_path / 'copy'}:app").stdout)
    assert all(mt.lazy_format(layer.get("annotations", {})) == fmt for layer in raw["layers"])


@pytest.mark.parametrize("fmt", FORMATS)
def test_unpack_of_lazy_image_equals_umoci_of_gzip_original(
    tmp_path: Path, umoci: str, fmt: str
) -> None:
    src = gzip_image(tmp_path)
    sh(umoci, "unpack", "--rootless", "--image", f"{src}:app", tmp_path / "umoci")
    want = snapshot(tmp_path / "umoci" / "rootfs", owners=False)
    lay = convert_to(src, fmt, tmp_path / "lazy")
    r = run_cli("unpack", f"{lay}:app", tmp_path / "ours", "--rootless")
    assert r.code == 0, r.stderr
    got = snapshot(tmp_path / "ours", owners=False)
    assert diff(want, got) == []
    assert not any(n in got for n in ("stargz.index.json", ".no.prefetch.landmark"))


def podman_layout(tmp_path: Path, podman: list[str], *, padded: bool, tz: str = "UTC") -> Path:
    """An image podman pushed with --compression-format zstd:chunked to an oci: directory
    (its TOC's times are in the time zone ``tz``: Go writes them in the local one)."""
    data = kinds_layer(tarfile.GNU_FORMAT)
    if not padded:  # cut the tar's record padding after the end-of-archive blocks
        with tarfile.open(fileobj=io.BytesIO(data)) as tf:
            last = tf.getmembers()[-1]
        data = data[: last.offset_data + -(-last.size // 512) * 512 + 1024]
    (tmp_path / "layer.tar").write_bytes(data)
    sh(*podman, "import", tmp_path / "layer.tar", "localhost/lz:1")
    out = tmp_path / "pushed"
    sh(
        *podman,
        "push",
        "-q",
        "--compression-format",
        "zstd:chunked",
        "localhost/lz:1",
        f"oci:{out}:lz",
        env={**os.environ, "TZ": tz},
    )
    return out


@pytest.mark.parametrize("tz", ["UTC", "Europe/Berlin"])
def test_we_read_what_podman_writes_as_zstd_chunked(
    tmp_path: Path, podman: list[str], tz: str
) -> None:
    out = podman_layout(tmp_path, podman, padded=False, tz=tz)
    if tz != "UTC":  # the TOC's times carry the offset, and verify takes them as instants
        idx = json.loads((out / "index.json").read_bytes())
        layer = read_json(out, idx["manifests"][0]["digest"])["layers"][0]
        blob = (out / "blobs/sha256" / layer["digest"][7:]).read_bytes()
        toc = zstd_chunked.locate(layer["annotations"]).toc
        ctoc = blob[toc.offset : toc.offset + toc.length]
        assert "+02:00" in json.dumps(zstd_chunked.decompress_toc(ctoc, toc.uncompressed, "t"))
    idx = json.loads((out / "index.json").read_bytes())
    man = read_json(out, idx["manifests"][0]["digest"])
    layer = man["layers"][0]
    assert mt.lazy_format(layer["annotations"]) == "zstd:chunked"
    assert verify_layout(out).ok
    r = run_cli("inspect", f"{out}:lz", "--json")
    assert r.code == 0 and json.loads(r.stdout)["layers"][0]["lazy"] == "zstd:chunked"
    # and to eStargz from it
    r = run_cli("convert", f"{out}:lz", "--compression", "estargz", "-o", tmp_path / "es")
    assert r.code == 0, r.stderr
    r = run_cli("unpack", f"{out}:lz", tmp_path / "t1", "--rootless")
    assert r.code == 0, r.stderr
    r = run_cli("unpack", f"{tmp_path / 'es'}:lz", tmp_path / "t2", "--rootless")
    assert r.code == 0, r.stderr
    assert (
        diff(snapshot(tmp_path / "t1", owners=False), snapshot(tmp_path / "t2", owners=False)) == []
    )


def test_podman_4_drops_trailing_tar_padding_and_verify_says_so(
    tmp_path: Path, podman: list[str]
) -> None:
    """containers/storage 1.43 did not copy the bytes after the end-of-archive blocks into the
    zstd:chunked stream, so a padded tar comes out with another diff_id than its config says:
    verify reports it (the TOC check decompresses the layer)."""
    out = podman_layout(tmp_path, podman, padded=True)
    r = run_cli("verify", out, "--json")
    assert r.code == 5
    kinds = [p["code"] for p in json.loads(r.stdout)["problems"]]
    assert kinds == ["lazy-diff-id"]
