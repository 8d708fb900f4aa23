"""unpack: real images (Docker fixtures), umoci as the differential oracle, and error paths."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from conftest import sh
from fixtures_path import shared_fixture
from layerbuild import build_layer
from treeutil import diff, snapshot

from layouttool import mediatypes as mt
from layouttool.digest import Digest
from layouttool.model import Descriptor, make_manifest_doc
from layouttool.ops.layout import set_ref
from layouttool.store import Layout


def _skopeo_layout(skopeo: str, fixture: str, dest: Path, tag: str) -> Path:
    sh(skopeo, "copy", "-q", f"docker-archive:{shared_fixture('docker-save', fixture)}",
       f"oci:{dest}:{tag}")
    return dest


def test_dive_fixture_unpacks_to_documented_facts(tmp_path, skopeo, cli):
    layout = _skopeo_layout(skopeo, "dive-test-docker-image.tar", tmp_path / "oci", "dive")
    dest = tmp_path / "rootfs"
    r = cli("unpack", f"{layout}:dive", dest, "--json")
    assert r.code == 0, r.stderr
    out = json.loads(r.stdout)
    assert len(out["layers"]) == 14
    assert not (dest / "root" / "example").exists()
    saved = dest / "root" / "saved.txt"
    assert stat.S_IMODE(saved.stat().st_mode) == 0o755
    assert saved.stat().st_size == 6405
    bracket = (dest / "bin" / "[").stat()
    links = [p for p in (dest / "bin").iterdir() if p.stat().st_ino == bracket.st_ino]
    # busybox: every applet is a hardlink of bin/[ (392 hardlink entries point at it)
    assert len(links) >= 300 and bracket.st_nlink == len(links)
    assert not [p for p in dest.rglob("*") if ".wh." in p.name]


def test_almostempty_fixture(tmp_path, skopeo, cli):
    layout = _skopeo_layout(skopeo, "almostempty.tar", tmp_path / "oci", "e")
    dest = tmp_path / "rootfs"
    assert cli("unpack", f"{layout}:e", dest).code == 0
    f = dest / "emptyfile"
    assert f.stat().st_size == 0 and stat.S_IMODE(f.stat().st_mode) == 0o664


def _build_umoci_image(umoci: str, tmp_path: Path) -> Path:
    """An image made only by umoci: several layers, deletions, opaque dir, links, modes."""
    layout = tmp_path / "umoci-oci"
    sh(umoci, "init", "--layout", layout)
    sh(umoci, "new", "--image", f"{layout}:img")
    bundle = tmp_path / "b1"
    sh(umoci, "unpack", "--image", f"{layout}:img", bundle)
    r = bundle / "rootfs"
    (r / "etc").mkdir()
    (r / "etc" / "config").write_text("one\n")
    (r / "etc" / "gone").write_text("to be deleted\n")
    (r / "opt" / "app" / "lib").mkdir(parents=True)
    (r / "opt" / "app" / "lib" / "old.so").write_bytes(b"\x7fELF" + bytes(1000))
    (r / "bin").mkdir()
    big = r / "bin" / "big"
    big.write_bytes(os.urandom(1 << 20) + b"z" * (3 << 20))
    os.chmod(big, 0o4755)
    os.link(big, r / "bin" / "big-link")
    os.symlink("/etc/config", r / "etc" / "abs-link")
    os.symlink("../etc/config", r / "bin" / "rel-link")
    (r / "tmp").mkdir(mode=0o1777)
    os.chmod(r / "tmp", 0o1777)
    os.chown(r / "etc" / "config", 1000, 1000)
    sh(umoci, "repack", "--image", f"{layout}:img", bundle)
    # layer 2: delete a file, change a mode, replace a file by a directory
    b2 = tmp_path / "b2"
    sh(umoci, "unpack", "--image", f"{layout}:img", b2)
    r2 = b2 / "rootfs"
    (r2 / "etc" / "gone").unlink()
    os.chmod(r2 / "etc" / "config", 0o600)
    (r2 / "etc" / "config").write_text("two\n")
    (r2 / "bin" / "rel-link").unlink()
    (r2 / "bin" / "rel-link").mkdir()
    sh(umoci, "repack", "--image", f"{layout}:img", b2)
    # layer 3: opaque replacement of /opt/app
    src = tmp_path / "newapp"
    (src / "lib").mkdir(parents=True)
    (src / "lib" / "new.so").write_bytes(b"new")
    sh(umoci, "insert", "--image", f"{layout}:img", "--opaque", src, "/opt/app")
    return layout


@pytest.mark.parametrize("rootless", [False, True], ids=["root", "rootless"])
def test_same_tree_as_umoci(tmp_path, umoci, cli, rootless):
    if not rootless and os.geteuid() != 0:
        pytest.skip("needs root to unpack with owners")
    layout = _build_umoci_image(umoci, tmp_path)
    theirs = tmp_path / "theirs"
    args = ["--rootless"] if rootless else []
    sh(umoci, "unpack", *args, "--image", f"{layout}:img", theirs)
    ours = tmp_path / "ours"
    r = cli("unpack", f"{layout}:img", ours, *args)
    assert r.code == 0, r.stderr
    a = snapshot(theirs / "rootfs", owners=not rootless, mtimes=True)
    b = snapshot(ours, owners=not rootless, mtimes=True)
    assert diff(a, b) == []
    assert (ours / "opt" / "app" / "lib" / "new.so").exists()
    assert not (ours / "opt" / "app" / "lib" / "old.so").exists()
    assert not (ours / "etc" / "gone").exists()


def test_bundle_writes_runtime_config(tmp_path, umoci, cli):
    layout = _build_umoci_image(umoci, tmp_path)
    sh(umoci, "config", "--image", f"{layout}:img", "--config.entrypoint", "/bin/big",
       "--config.cmd", "--flag", "--config.env", "A=1")
    r = cli("unpack", f"{layout}:img", tmp_path / "bundle", "--bundle")
    assert r.code == 0, r.stderr
    spec = json.loads((tmp_path / "bundle" / "config.json").read_text())
    assert spec["process"]["args"] == ["/bin/big", "--flag"]
    assert "A=1" in spec["process"]["env"]
    assert spec["root"]["path"] == "rootfs"
    assert (tmp_path / "bundle" / "rootfs" / "etc" / "config").read_text() == "two\n"


def _layout_with_layer(tmp_path: Path, layer: bytes, diff_id: Digest | None = None,
                       layer_type: str = mt.MT_OCI_LAYER) -> Path:
    layout = Layout.init(tmp_path / "l")
    blob = layout.put_bytes(layer)
    config = {
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [str(diff_id or blob.digest)]},
    }
    cdesc = layout.put_json(config, mt.MT_OCI_CONFIG)
    mdoc = make_manifest_doc(media_type=mt.MT_OCI_MANIFEST, config=cdesc,
                             layers=[blob.descriptor(layer_type)])
    mdesc: Descriptor = layout.put_json(mdoc, mt.MT_OCI_MANIFEST)
    set_ref(layout, mdesc, "t")
    return layout.root


def test_diff_id_mismatch_is_integrity_error(tmp_path, cli):
    layer = build_layer([{"name": "a", "data": "x"}])
    wrong = Digest.of_bytes(b"something else")
    layout = _layout_with_layer(tmp_path, layer, wrong)
    r = cli("unpack", f"{layout}:t", tmp_path / "out")
    assert r.code == 5
    assert r.stderr.startswith("layouttool: error: layer 1/1") and "diff_id" in r.stderr
    assert "Traceback" not in r.stderr


def test_bytes_after_tar_end_are_hashed(tmp_path, cli):
    layer = build_layer([{"name": "a", "data": "x"}])
    # the diff_id of the tar alone: the blob has extra bytes after the end marker
    layout = _layout_with_layer(tmp_path, layer + b"trailing junk", Digest.of_bytes(layer))
    r = cli("unpack", f"{layout}:t", tmp_path / "out")
    assert r.code == 5, r.stderr


def test_media_type_must_agree_with_content(tmp_path, cli):
    layer = build_layer([{"name": "a", "data": "x"}])
    layout = _layout_with_layer(tmp_path, layer, layer_type=mt.MT_OCI_LAYER_GZIP)
    r = cli("unpack", f"{layout}:t", tmp_path / "out")
    assert r.code == 4 and "does not match the content" in r.stderr


def test_artifact_layer_is_refused(tmp_path, cli):
    layout = _layout_with_layer(tmp_path, b"not a tar", layer_type="application/x-artifact")
    r = cli("unpack", f"{layout}:t", tmp_path / "out")
    # one line that says what it is: an artifact (its layers are not tar layers)
    assert r.code == 4 and "is an artifact" in r.stderr and "nothing to unpack" in r.stderr
    assert len(r.stderr.splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_dest_must_be_empty_unless_force(tmp_path, cli):
    layer = build_layer([{"name": "a", "data": "x"}])
    layout = _layout_with_layer(tmp_path, layer)
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "keep").write_text("k")
    r = cli("unpack", f"{layout}:t", dest)
    assert r.code == 7 and "--force" in r.stderr
    assert cli("unpack", f"{layout}:t", dest, "--force").code == 0
    assert (dest / "a").read_text() == "x" and (dest / "keep").read_text() == "k"


def test_max_size_stops_a_bomb(tmp_path, cli):
    layer = build_layer([{"name": "big", "data": b"\0" * (4 << 20)}])
    layout = _layout_with_layer(tmp_path, layer)
    r = cli("unpack", f"{layout}:t", tmp_path / "out", "--max-size", str(1 << 20))
    assert r.code == 4 and "limit" in r.stderr


def test_corrupt_blob_is_integrity_error(tmp_path, cli):
    layer = build_layer([{"name": "a", "data": "x" * 1000}])
    layout = _layout_with_layer(tmp_path, layer)
    blob = layout / "blobs" / "sha256" / Digest.of_bytes(layer).encoded
    data = bytearray(blob.read_bytes())
    data[600] ^= 1
    os.chmod(blob, 0o644)
    blob.write_bytes(bytes(data))
    r = cli("unpack", f"{layout}:t", tmp_path / "out")
    assert r.code == 5 and "corrupt" in r.stderr


@pytest.mark.parametrize("how", ["corrupt", "bomb", "mislabeled"])
def test_a_failed_unpack_leaves_no_reader_thread_behind(tmp_path, cli, how):
    """The blob is read, and the layer decompressed, by threads of their own: whatever stops
    the unpack (a corrupt blob found at its end, a size limit inside the stream, a media type
    refused before the first byte of tar), both are stopped and joined."""
    import threading

    layer = build_layer([{"name": "a", "data": os.urandom(3 << 20)}])
    layer_type = mt.MT_OCI_LAYER_ZSTD if how == "mislabeled" else mt.MT_OCI_LAYER
    layout = _layout_with_layer(tmp_path, layer, layer_type=layer_type)
    blob = layout / "blobs" / "sha256" / Digest.of_bytes(layer).encoded
    args = []
    if how == "corrupt":
        data = bytearray(blob.read_bytes())
        data[-10] ^= 1
        os.chmod(blob, 0o644)
        blob.write_bytes(bytes(data))
    elif how == "bomb":
        args = ["--max-size", str(1 << 20)]
    before = threading.active_count()
    r = cli("unpack", f"{layout}:t", tmp_path / "out", *args)
    assert r.code in (4, 5), r.stderr
    assert threading.active_count() == before
    assert not [t.name for t in threading.enumerate() if t.name == "prefetch"]
