"""to-docker-save: archive structure, peers reading it (skopeo), compression, names, atomicity."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest
import zstandard
from conftest import sh
from fixtures_path import shared_fixture
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from layouttool import mediatypes as mt
from layouttool.cli import COMMANDS
from layouttool.digest import Digest
from layouttool.errors import ConflictError, IntegrityError, InternalError, InvalidInputError
from layouttool.formats.docker_save_writer import TarWriter, parse_docker_name
from layouttool.model import Platform, parse_config, parse_manifest
from layouttool.ops.common import open_image
from layouttool.ops.docker_save import export_docker_save
from layouttool.ops.layout import set_ref
from layouttool.ops.verify import verify_layout
from layouttool.store import Layout

GZIP_MAGIC = b"\x1f\x8b"
ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"


def _skopeo_copy(skopeo: str, fixture: str, dest: str, *extra: str, pick: str = "") -> None:
    src = shared_fixture("docker-save", fixture)
    sh(skopeo, "copy", "-q", *extra, f"docker-archive:{src}{pick}", f"oci:{dest}")


@pytest.fixture(scope="module")
def layouts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Source layouts made by skopeo from the shared docker-save fixtures.

    ``a``: ``emptyimage:latest`` (gzip), ``dive:z`` (14 zstd layers), ``latest`` (hello-world
    arm64, a ref that is only a tag), and ``multi``: an index over the first and the third.
    ``b``: ``test_image_1:latest`` from a second tarball, so exports span two layouts.
    """
    from conftest import need_tool

    skopeo = need_tool("skopeo")
    base = tmp_path_factory.mktemp("export-src")
    a, b = base / "a", base / "b"
    _skopeo_copy(skopeo, "almostempty.tar", f"{a}:emptyimage:latest")
    _skopeo_copy(
        skopeo, "dive-test-docker-image.tar", f"{a}:dive:z", "--dest-compress-format", "zstd"
    )
    _skopeo_copy(skopeo, "hello-world-v25.tar", f"{a}:latest")
    # its RepoTags are bare names, which skopeo does not match by name: pick by index
    _skopeo_copy(skopeo, "test_bundle.tar", f"{b}:test_image_1:latest", pick=":@1")
    layout = Layout.open(a)
    amd = open_image(f"{a}:emptyimage:latest")
    arm = open_image(f"{a}:latest")
    index = {
        "schemaVersion": 2,
        "mediaType": mt.MT_OCI_INDEX,
        "manifests": [
            amd.manifest_desc.with_(platform=Platform("linux", "amd64")).to_json(),
            arm.manifest_desc.with_(platform=Platform("linux", "arm64", "v8")).to_json(),
        ],
    }
    with layout.writing():
        set_ref(layout, layout.put_json(index, mt.MT_OCI_INDEX), "multi")
    assert verify_layout(a).ok and verify_layout(b).ok
    return {"a": a, "b": b}


def _members(path: Path) -> list[tarfile.TarInfo]:
    with tarfile.open(path) as f:
        return f.getmembers()


def _read(tar_path: Path, name: str) -> bytes:
    with tarfile.open(tar_path) as t:
        fh = t.extractfile(name)
        assert fh is not None, name
        return fh.read()


def _json(tar_path: Path, name: str) -> Any:
    return json.loads(_read(tar_path, name))


def _config_digest(skopeo: str, ref: str) -> str:
    raw = json.loads(sh(skopeo, "inspect", "--raw", ref).stdout)
    return str(raw["config"]["digest"])


# --- structure -------------------------------------------------------------------------------
def test_archive_structure(layouts, tmp_path, cli):
    out = tmp_path / "out.tar"
    r = cli("to-docker-save", f"{layouts['a']}:emptyimage:latest", "-o", out, "--json")
    assert r.code == 0, r.stderr
    res = json.loads(r.stdout)
    assert res["output"] == str(out) and res["bytesWritten"] == out.stat().st_size

    members = _members(out)
    names = [m.name for m in members]
    head = ["oci-layout", "index.json", "manifest.json", "repositories", "blobs", "blobs/sha256"]
    assert names[:6] == head
    blobs = names[6:]
    assert blobs == sorted(blobs) and all(n.startswith("blobs/sha256/") for n in blobs)
    for m in members:
        assert not m.name.startswith("/") and ".." not in m.name.split("/")
        assert (m.mtime, m.uid, m.gid, m.uname, m.gname) == (0, 0, 0, "", "")
        assert m.mode == (0o755 if m.isdir() else 0o644)
        assert m.isdir() or m.isfile()
        assert not m.pax_headers  # small members never need PAX
    # every blob is stored under its own digest
    for name in blobs:
        assert hashlib.sha256(_read(out, name)).hexdigest() == name.rsplit("/", 1)[1]

    assert json.loads(_read(out, "oci-layout")) == {"imageLayoutVersion": "1.0.0"}
    manifest = _json(out, "manifest.json")
    assert isinstance(manifest, list) and len(manifest) == 1
    item = manifest[0]
    assert set(item) == {"Config", "RepoTags", "Layers"}
    assert item["RepoTags"] == ["emptyimage:latest"]
    assert item["Config"] in names and all(p in names for p in item["Layers"])

    src = open_image(f"{layouts['a']}:emptyimage:latest")
    # the config is byte-identical: its digest is Docker's image ID
    assert _read(out, item["Config"]) == src.config.raw
    assert item["Config"] == f"blobs/sha256/{src.config.digest.encoded}"
    assert res["images"][0]["configDigest"] == str(src.config.digest)
    top = src.config.diff_ids[-1].encoded
    assert _json(out, "repositories") == {"emptyimage": {"latest": top}}

    index = _json(out, "index.json")
    (entry,) = index["manifests"]
    assert entry["annotations"] == {
        mt.ANNOT_CONTAINERD_NAME: "docker.io/library/emptyimage:latest",
        mt.ANNOT_REF_NAME: "latest",
    }
    # gzip layers are copied as they are, so the manifest is the layout's, byte for byte
    assert entry["digest"] == str(src.manifest_desc.digest)
    assert res["images"][0]["manifestRewritten"] is False
    oci_manifest = parse_manifest(_read(out, f"blobs/sha256/{src.manifest_desc.digest.encoded}"))
    assert [f"blobs/sha256/{d.digest.encoded}" for d in oci_manifest.layers] == item["Layers"]


def test_skopeo_reads_archive_and_keeps_config_digest(layouts, tmp_path, cli, skopeo):
    out = tmp_path / "out.tar"
    assert cli("to-docker-save", f"{layouts['a']}:dive:z", "-o", out).code == 0
    src = open_image(f"{layouts['a']}:dive:z")

    info = json.loads(sh(skopeo, "inspect", f"docker-archive:{out}").stdout)
    assert info["Layers"] == [str(d) for d in src.config.diff_ids]
    assert _config_digest(skopeo, f"docker-archive:{out}") == str(src.config.digest)

    dest = tmp_path / "copy"
    sh(skopeo, "copy", "-q", f"docker-archive:{out}", f"oci:{dest}:x")
    assert _config_digest(skopeo, f"oci:{dest}:x") == str(src.config.digest)
    assert verify_layout(dest).ok
    # the OCI side of the archive is a valid layout too (podman load and skopeo read it)
    assert _config_digest(skopeo, f"oci-archive:{out}:z") == str(src.config.digest)
    sh(skopeo, "copy", "-q", f"oci-archive:{out}:z", f"dir:{tmp_path / 'dir'}")


def test_multi_image_from_two_layouts(layouts, tmp_path, cli, skopeo):
    out = tmp_path / "multi.tar"
    images = [
        f"{layouts['a']}:emptyimage:latest",
        f"{layouts['a']}:dive:z",
        f"{layouts['b']}:test_image_1:latest",
    ]
    r = cli("to-docker-save", *images, "-o", out, "--json")
    assert r.code == 0, r.stderr
    res = json.loads(r.stdout)
    assert [i["repoTags"] for i in res["images"]] == [
        ["emptyimage:latest"],
        ["dive:z"],
        ["test_image_1:latest"],
    ]
    manifest = _json(out, "manifest.json")
    assert [m["RepoTags"] for m in manifest] == [i["repoTags"] for i in res["images"]]
    names = {m.name for m in _members(out)}
    assert res["blobs"] == len([n for n in names if n.startswith("blobs/sha256/") and n[-1] != "/"])
    repos = _json(out, "repositories")
    assert set(repos) == {"emptyimage", "dive", "test_image_1"}
    index = _json(out, "index.json")
    assert [e["annotations"][mt.ANNOT_REF_NAME] for e in index["manifests"]] == [
        "latest",
        "z",
        "latest",
    ]
    for image, name in zip(
        images, ["emptyimage:latest", "dive:z", "test_image_1:latest"], strict=True
    ):
        src = open_image(image)
        ref = f"docker-archive:{out}:{name}"
        assert _config_digest(skopeo, ref) == str(src.config.digest)
        dest = tmp_path / name.replace(":", "_")
        sh(skopeo, "copy", "-q", ref, f"oci:{dest}:x")
        assert verify_layout(dest).ok


def test_same_image_twice_is_one_item_with_both_names(layouts, tmp_path):
    a = layouts["a"]
    digest = open_image(f"{a}:emptyimage:latest").manifest_desc.digest
    out = tmp_path / "o.tar"
    res = export_docker_save(
        [f"{a}:emptyimage:latest", f"{a}@{digest}", f"{a}:emptyimage:latest"], out
    )
    assert [i.repo_tags for i in res.images] == [("emptyimage:latest",), (), ("emptyimage:latest",)]
    manifest = _json(out, "manifest.json")
    assert len(manifest) == 1 and manifest[0]["RepoTags"] == ["emptyimage:latest"]


def test_one_name_for_two_images_is_refused(layouts, tmp_path):
    out = tmp_path / "o.tar"
    # two layouts, the same name, different images: docker load would keep only the last
    c = tmp_path / "c"
    Layout.init(c)
    src = open_image(f"{layouts['a']}:dive:z")
    # copy the dive image into layout c under the name emptyimage:latest
    lc = Layout.open(c)
    with lc.writing():
        for d in (src.manifest_desc, src.manifest.config, *src.manifest.layers):
            with src.layout.open_blob(d.digest, d.size) as r:
                lc.put_bytes(r.read(d.size + 1), expected=d.digest)
        set_ref(lc, src.manifest_desc, "emptyimage:latest")
    assert verify_layout(c).ok
    with pytest.raises(ConflictError, match="emptyimage:latest would name two different images"):
        export_docker_save([f"{layouts['a']}:emptyimage:latest", f"{c}:emptyimage:latest"], out)
    assert not out.exists()


# --- compression -----------------------------------------------------------------------------
def _layers_of(out: Path) -> list[bytes]:
    return [_read(out, p) for p in _json(out, "manifest.json")[0]["Layers"]]


def test_zstd_layers_are_decompressed_by_default(layouts, tmp_path, cli):
    src = open_image(f"{layouts['a']}:dive:z")
    assert all(d.media_type == mt.MT_OCI_LAYER_ZSTD for d in src.manifest.layers)
    out = tmp_path / "out.tar"
    r = cli("to-docker-save", f"{layouts['a']}:dive:z", "-o", out, "--json")
    assert r.code == 0, r.stderr
    img = json.loads(r.stdout)["images"][0]
    assert {layer["action"] for layer in img["layers"]} == {"decompressed"}
    layers = _layers_of(out)
    assert [Digest.of_bytes(b) for b in layers] == list(src.config.diff_ids)
    # the manifest in the archive's OCI index is a new one, naming the archive's blobs
    (entry,) = _json(out, "index.json")["manifests"]
    assert img["manifestRewritten"] is True
    assert entry["digest"] == img["manifestDigest"] != str(src.manifest_desc.digest)
    m = parse_manifest(_read(out, "blobs/sha256/" + entry["digest"].split(":")[1]))
    assert [d.media_type for d in m.layers] == [mt.MT_OCI_LAYER] * len(layers)
    assert [d.digest for d in m.layers] == list(src.config.diff_ids)
    assert m.config == src.manifest.config
    assert {k: v for k, v in m.doc.items() if k != "layers"} == {
        k: v for k, v in src.manifest.doc.items() if k != "layers"
    }


def test_compression_keep_and_gzip(layouts, tmp_path):
    image = f"{layouts['a']}:dive:z"
    src = open_image(image)
    keep = export_docker_save([image], tmp_path / "keep.tar", compression="keep")
    assert keep.images[0].manifest_digest == src.manifest_desc.digest
    assert all(b.startswith(ZSTD_MAGIC) for b in _layers_of(tmp_path / "keep.tar"))

    gz = export_docker_save([image], tmp_path / "gz.tar", compression="gzip")
    layers = _layers_of(tmp_path / "gz.tar")
    assert all(b.startswith(GZIP_MAGIC) for b in layers)
    import gzip

    assert [Digest.of_bytes(gzip.decompress(b)) for b in layers] == list(src.config.diff_ids)
    assert {layer.action for layer in gz.images[0].layers} == {"recompressed"}
    m = parse_manifest(
        _read(tmp_path / "gz.tar", f"blobs/sha256/{gz.images[0].manifest_digest.encoded}")
    )
    assert {d.media_type for d in m.layers} == {mt.MT_OCI_LAYER_GZIP}

    # gzip source layers: none decompresses them, auto keeps them
    e = f"{layouts['a']}:emptyimage:latest"
    none = export_docker_save([e], tmp_path / "none.tar", compression="none")
    (layer,) = _layers_of(tmp_path / "none.tar")
    assert Digest.of_bytes(layer) == open_image(e).config.diff_ids[0]
    assert none.images[0].layers[0].action == "decompressed"
    with pytest.raises(InvalidInputError, match="unknown compression"):
        export_docker_save([e], tmp_path / "x.tar", compression="brotli")


def test_zstd_check_data_is_real(layouts):
    # guard for the test above: the source layers really are zstd frames that decode
    src = open_image(f"{layouts['a']}:dive:z")
    d = src.manifest.layers[0]
    with src.layout.open_blob(d.digest, d.size) as r:
        data = r.read(d.size + 1)
    plain = zstandard.ZstdDecompressor().decompressobj().decompress(data)
    assert Digest.of_bytes(plain) == src.config.diff_ids[0]


# --- determinism and streaming ---------------------------------------------------------------
def test_two_exports_are_byte_identical_and_stdout_matches(layouts, tmp_path):
    images = [f"{layouts['a']}:dive:z", f"{layouts['b']}:test_image_1:latest"]
    one, two = tmp_path / "1.tar", tmp_path / "2.tar"
    export_docker_save(images, one, compression="gzip")
    export_docker_save(images, two, compression="gzip")
    buf = io.BytesIO()
    res = export_docker_save(images, buf, compression="gzip")
    assert one.read_bytes() == two.read_bytes() == buf.getvalue()
    assert res.output == "-" and res.bytes_written == len(buf.getvalue())


def test_stdout_into_a_pipe(layouts, tmp_path):
    image = f"{layouts['a']}:dive:z"
    export_docker_save([image], tmp_path / "ref.tar")
    cmd = [sys.executable, "-m", "layouttool", "-q", "to-docker-save", image, "-o", "-"]
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as producer:
        assert producer.stdout is not None and producer.stderr is not None
        consumer = subprocess.run(
            ["tar", "-tf", "-"], stdin=producer.stdout, capture_output=True, check=False
        )
        producer.stdout.close()
        err = producer.stderr.read()
        assert producer.wait() == 0, err
    assert consumer.returncode == 0, consumer.stderr
    listed = consumer.stdout.decode().split()
    assert listed == [
        m.name.rstrip("/") + ("/" if m.isdir() else "") for m in _members(tmp_path / "ref.tar")
    ]
    # and the bytes are the same as the file export
    piped = subprocess.run(cmd, capture_output=True, check=True).stdout
    assert piped == (tmp_path / "ref.tar").read_bytes()


def test_stdout_refusals(layouts, cli):
    r = cli("to-docker-save", f"{layouts['a']}:dive:z", "-o", "-", "--json")
    assert r.code == 2 and "--json" in r.stderr


# --- failure leaves OUTPUT alone -------------------------------------------------------------
def _corrupt_copy(src: Path, dest: Path, digest: Digest) -> None:
    import shutil

    shutil.copytree(src, dest)
    blob = dest / "blobs" / "sha256" / digest.encoded
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))


@pytest.mark.parametrize("image", ["emptyimage:latest", "dive:z"])
def test_failed_export_leaves_existing_output_untouched(layouts, tmp_path, cli, image):
    src = open_image(f"{layouts['a']}:{image}")
    bad = tmp_path / "bad"
    _corrupt_copy(layouts["a"], bad, src.manifest.layers[-1].digest)
    out = tmp_path / "out" / "app.tar"
    out.parent.mkdir()
    out.write_bytes(b"previous content")
    r = cli("to-docker-save", f"{bad}:{image}", "-o", out)
    # a copied gzip layer fails its digest check while streaming, a decompressed zstd one
    # fails in the spool pass (corrupt stream or digest): both before OUTPUT is touched
    assert r.code in (4, 5), r.stderr
    assert str(src.manifest.layers[-1].digest) in r.stderr or "decompress" in r.stderr
    assert out.read_bytes() == b"previous content"
    assert sorted(p.name for p in out.parent.iterdir()) == ["app.tar"]


def test_wrong_diff_id_of_copied_layer_is_caught(layouts, tmp_path):
    """A gzip layer copied as it is still has its diff_id checked (docker load would refuse)."""
    a = Layout.open(layouts["a"])
    src = open_image(f"{layouts['a']}:emptyimage:latest")
    doc = json.loads(src.config.raw)
    doc["rootfs"]["diff_ids"] = ["sha256:" + "0" * 64]
    cfg = a.put_json(doc, src.manifest.config.media_type)
    mdoc = dict(src.manifest.doc)
    mdoc["config"] = cfg.to_json()
    c = tmp_path / "c"
    import shutil

    shutil.copytree(layouts["a"], c)
    lc = Layout.open(c)
    with lc.writing():
        lc.put_bytes(a.read_blob(cfg), expected=cfg.digest)
        set_ref(lc, lc.put_json(mdoc, mt.MT_OCI_MANIFEST), "broken")
    out = tmp_path / "o.tar"
    with pytest.raises(IntegrityError, match="diff_id"):
        export_docker_save([f"{c}:broken"], out)
    assert not out.exists() and list(tmp_path.glob(".o.tar*")) == []


def test_output_is_a_directory(layouts, tmp_path, cli):
    r = cli("to-docker-save", f"{layouts['a']}:dive:z", "-o", tmp_path)
    assert r.code == 7 and "is a directory" in r.stderr


def test_missing_image(layouts, tmp_path, cli):
    r = cli("to-docker-save", f"{layouts['a']}:nope", "-o", tmp_path / "x.tar")
    assert r.code == 3 and "nope" in r.stderr
    assert not (tmp_path / "x.tar").exists()


# --- names and platforms ---------------------------------------------------------------------
def test_tag_only_ref_is_untagged_and_tag_option(layouts, tmp_path, cli, skopeo):
    out = tmp_path / "u.tar"
    assert cli("to-docker-save", f"{layouts['a']}:latest", "-o", out).code == 0
    manifest = _json(out, "manifest.json")
    assert manifest[0]["RepoTags"] is None
    assert "repositories" not in {m.name for m in _members(out)}
    (entry,) = _json(out, "index.json")["manifests"]
    assert "annotations" not in entry
    src = open_image(f"{layouts['a']}:latest")
    assert _config_digest(skopeo, f"docker-archive:{out}") == str(src.config.digest)

    named = tmp_path / "n.tar"
    r = cli(
        "to-docker-save",
        f"{layouts['a']}:latest",
        "-o",
        named,
        "--tag",
        "hello",
        "--tag",
        "registry.example.com:5000/team/hello:2.0",
        "--json",
    )
    assert r.code == 0, r.stderr
    assert _json(named, "manifest.json")[0]["RepoTags"] == [
        "hello:latest",
        "registry.example.com:5000/team/hello:2.0",
    ]
    assert _json(named, "repositories") == {
        "hello": {"latest": src.config.diff_ids[-1].encoded},
        "registry.example.com:5000/team/hello": {"2.0": src.config.diff_ids[-1].encoded},
    }
    names = [e["annotations"] for e in _json(named, "index.json")["manifests"]]
    assert names == [
        {mt.ANNOT_CONTAINERD_NAME: "docker.io/library/hello:latest", mt.ANNOT_REF_NAME: "latest"},
        {
            mt.ANNOT_CONTAINERD_NAME: "registry.example.com:5000/team/hello:2.0",
            mt.ANNOT_REF_NAME: "2.0",
        },
    ]
    ref = f"docker-archive:{named}:registry.example.com:5000/team/hello:2.0"
    assert _config_digest(skopeo, ref) == str(src.config.digest)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--tag", "Bad:1"], "not a valid Docker name"),
        (["--tag", "app@sha256:" + "a" * 64], "cannot hold a digest"),
        (["--tag", "app:1", "EXTRA"], "--tag names one image"),
    ],
)
def test_tag_errors(layouts, tmp_path, cli, args, message):
    extra = [f"{layouts['a']}:emptyimage:latest"] if "EXTRA" in args else []
    args = [a for a in args if a != "EXTRA"]
    r = cli("to-docker-save", f"{layouts['a']}:dive:z", *extra, "-o", tmp_path / "t.tar", *args)
    assert r.code == 4 and message in r.stderr
    assert not (tmp_path / "t.tar").exists()


def test_selected_by_digest_is_untagged(layouts, tmp_path):
    d = open_image(f"{layouts['a']}:dive:z").manifest_desc.digest
    res = export_docker_save([f"{layouts['a']}@{d}"], tmp_path / "d.tar", compression="keep")
    assert res.images[0].repo_tags == ()
    assert _json(tmp_path / "d.tar", "manifest.json")[0]["RepoTags"] is None


def test_platform_picks_one_image_of_an_index(layouts, tmp_path, cli):
    a = layouts["a"]
    arm = open_image(f"{a}:latest")
    amd = open_image(f"{a}:emptyimage:latest")
    for plat, want in (("linux/arm64", arm), ("linux/amd64", amd)):
        out = tmp_path / f"{plat.replace('/', '-')}.tar"
        r = cli("to-docker-save", f"{a}:multi", "--platform", plat, "-o", out, "--tag", "m:1")
        assert r.code == 0, r.stderr
        cfg = _json(out, "manifest.json")[0]["Config"]
        assert cfg == f"blobs/sha256/{want.config.digest.encoded}"
        assert parse_config(_read(out, cfg)).platform == want.config.platform
    r = cli("to-docker-save", f"{a}:multi", "--platform", "linux/s390x", "-o", tmp_path / "s.tar")
    assert r.code == 3 and "linux/s390x" in r.stderr


@pytest.mark.parametrize(
    ("value", "familiar", "full"),
    [
        ("busybox:latest", "busybox:latest", "docker.io/library/busybox:latest"),
        ("docker.io/library/busybox:1", "busybox:1", "docker.io/library/busybox:1"),
        ("index.docker.io/user/app:v2", "user/app:v2", "docker.io/user/app:v2"),
        ("user/app:v2", "user/app:v2", "docker.io/user/app:v2"),
        ("localhost/app:dev", "localhost/app:dev", "localhost/app:dev"),
        ("localhost:5000/a/b:t", "localhost:5000/a/b:t", "localhost:5000/a/b:t"),
        ("Registry.Example.com/a:t", "Registry.Example.com/a:t", "Registry.Example.com/a:t"),
        ("ghcr.io/o/app:1@sha256:" + "a" * 64, "ghcr.io/o/app:1", "ghcr.io/o/app:1"),
        ("a__b/c-d--e.f:1.0_rc-1", "a__b/c-d--e.f:1.0_rc-1", "docker.io/a__b/c-d--e.f:1.0_rc-1"),
        # dropping docker.io here would turn "a.b" into a registry name
        ("docker.io/a.b/c:1", "docker.io/a.b/c:1", "docker.io/a.b/c:1"),
    ],
)
def test_docker_names(value, familiar, full):
    name = parse_docker_name(value)
    assert name is not None and name.familiar == familiar and name.full == full


@pytest.mark.parametrize(
    "value",
    [
        "latest",  # a tag alone is not a name
        "app",  # no tag, no default
        "App:1",
        "app:-x",
        "app:" + "x" * 129,
        "a//b:1",
        "a/:1",
        "app@sha256:" + "a" * 64,
        "-app:1",
        "app_:1",
        "exa_mple.com/app:1",
        "a/" + "b" * 260 + ":1",
    ],
)
def test_not_docker_names(value):
    assert parse_docker_name(value) is None


# --- round trip through our own importer -----------------------------------------------------
@pytest.mark.skipif(
    "from-docker-save" not in COMMANDS, reason="from-docker-save is not registered yet"
)
def test_round_trip_through_from_docker_save(layouts, tmp_path, cli, skopeo):
    images = [f"{layouts['a']}:emptyimage:latest", f"{layouts['a']}:dive:z"]
    out = tmp_path / "rt.tar"
    assert cli("to-docker-save", *images, "-o", out).code == 0
    dest = tmp_path / "imported"
    r = cli("from-docker-save", out, "-o", dest)
    assert r.code == 0, r.stderr
    assert verify_layout(dest).ok
    for image, ref in zip(images, ["emptyimage:latest", "dive:z"], strict=True):
        src = open_image(image)
        back = open_image(f"{dest}:{ref}")
        assert back.config.digest == src.config.digest
        assert back.config.diff_ids == src.config.diff_ids
        sh(skopeo, "inspect", f"oci:{dest}:{ref}")


def _public_api() -> Any:
    """The ``layouttool`` package as ``layouttool/__init__.py`` defines it.

    Loaded from the file: an editable install whose finder lists ``layouttool`` among its
    namespace packages (as this venv's does) imports it without running ``__init__.py``.
    """
    import importlib.util

    import layouttool.ops

    init = Path(layouttool.ops.__file__ or "").parents[1] / "__init__.py"
    spec = importlib.util.spec_from_file_location("layouttool_public", init)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_public_api_and_streams_to_a_binary_file(layouts, tmp_path):
    api = _public_api()
    assert {"export_docker_save", "ExportResult"} <= set(api.__all__)
    with open(tmp_path / "api.tar", "wb") as fh:
        res = api.export_docker_save([f"{layouts['a']}:emptyimage:latest"], fh)
    assert isinstance(res, api.ExportResult)
    assert res.bytes_written == os.path.getsize(tmp_path / "api.tar")
    assert res.to_json()["images"][0]["repoTags"] == ["emptyimage:latest"]


def test_docker_typed_source_keeps_docker_media_types(tmp_path, skopeo):
    """A layout holding Docker v2s2 manifests (skopeo --format v2s2) keeps that family."""
    src_layout = tmp_path / "v2s2"
    _skopeo_copy(skopeo, "almostempty.tar", f"{src_layout}:e:1", "--format", "v2s2")
    src = open_image(f"{src_layout}:e:1")
    assert src.manifest.media_type == mt.MT_DOCKER_MANIFEST
    out = tmp_path / "o.tar"
    res = export_docker_save([f"{src_layout}:e:1"], out, compression="none")
    img = res.images[0]
    assert img.manifest_rewritten
    m = parse_manifest(_read(out, f"blobs/sha256/{img.manifest_digest.encoded}"))
    assert m.media_type == mt.MT_DOCKER_MANIFEST
    assert [d.media_type for d in m.layers] == [mt.MT_DOCKER_LAYER]
    (entry,) = _json(out, "index.json")["manifests"]
    assert entry["mediaType"] == mt.MT_DOCKER_MANIFEST
    assert _config_digest(skopeo, f"docker-archive:{out}:e:1") == str(src.config.digest)
    dest = tmp_path / "back"
    sh(skopeo, "copy", "-q", f"docker-archive:{out}:e:1", f"oci:{dest}:x")
    assert verify_layout(dest).ok


def test_character_device_output_is_written_in_place(layouts, cli):
    r = cli("to-docker-save", f"{layouts['a']}:dive:z", "-o", os.devnull, "--json")
    assert r.code == 0, r.stderr
    assert json.loads(r.stdout)["bytesWritten"] > 1_000_000


_component = st.from_regex(r"[a-z0-9]{1,5}(?:(?:[._]|__|-{1,2})[a-z0-9]{1,4}){0,2}", fullmatch=True)
_domain = st.sampled_from(
    ["", "docker.io/", "index.docker.io/", "localhost/", "r.example.com:5000/"]
)


@settings(max_examples=150, deadline=None)
@given(
    _domain,
    st.lists(_component, min_size=1, max_size=3),
    st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}", fullmatch=True),
)
def test_docker_name_normal_forms_are_stable(domain, path, tag):
    # without a registry, a first component holding "." names a registry (Docker's rule)
    assume(domain or len(path) == 1 or "." not in path[0])
    name = parse_docker_name(f"{domain}{'/'.join(path)}:{tag}")
    assert name is not None and name.tag == tag
    # what we write (familiar in RepoTags, full in index.json) reads back as the same name
    assert parse_docker_name(name.familiar) == name
    assert parse_docker_name(name.full) == name


@settings(max_examples=40, deadline=None)
@given(st.lists(st.binary(max_size=1500), min_size=1, max_size=6))
def test_tar_writer_round_trips_through_tarfile(payloads):
    buf = io.BytesIO()
    tar = TarWriter(buf)
    tar.add_dir("d/")
    for i, data in enumerate(payloads):
        tar.begin_file(f"d/{i}", len(data))
        half = len(data) // 2
        tar.write(data[:half])
        tar.write(data[half:])
        tar.end_file()
    tar.close()
    raw = buf.getvalue()
    assert len(raw) % 512 == 0 and tar.bytes_written == len(raw)
    with tarfile.open(fileobj=io.BytesIO(raw)) as t:
        members = t.getmembers()
        assert [m.name for m in members] == ["d", *(f"d/{i}" for i in range(len(payloads)))]
        for i, data in enumerate(payloads):
            fh = t.extractfile(f"d/{i}")
            assert fh is not None and fh.read() == data


def test_tar_writer_refuses_wrong_sizes():
    tar = TarWriter(io.BytesIO())
    tar.begin_file("x", 3)
    with pytest.raises(InternalError, match="more data"):
        tar.write(b"abcd")
    tar.write(b"ab")
    with pytest.raises(InternalError, match="1 bytes short"):
        tar.end_file()
