"""from-docker-save: the peers' real tarballs, every docker save form we build, the options."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import lzma
import random
import subprocess
import tarfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import zstandard
from conftest import REPO, run_cli, shared_fixture
from killharness import docker_save_bytes, random_image
from layerbuild import build_layer

from layouttool import codec
from layouttool import mediatypes as mt
from layouttool.errors import NotFoundError, SizeLimitError, UnsupportedError
from layouttool.ops.importer import archive as importer_archive
from layouttool.ops.importer import import_docker_save
from layouttool.ops.verify import verify_layout
from layouttool.store import Layout

LAYOUTTOOL = REPO / ".venv" / "bin" / "layouttool"


# ----------------------------------------------------------------------------- builders
def sha(data: bytes) -> str:
    """Hex sha256."""
    return hashlib.sha256(data).hexdigest()


def tar_of(members: list[dict[str, Any]]) -> bytes:
    """A tar of ``{"name", "data"}`` files, ``{"name", "symlink"}``, ``{"name", "hardlink"}``,
    ``{"name", "type": b"3"}`` (raw typeflag) members, in order, with fixed metadata."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for m in members:
            ti = tarfile.TarInfo(m["name"])
            ti.mtime = 0
            data = None
            if "symlink" in m:
                ti.type, ti.linkname = tarfile.SYMTYPE, m["symlink"]
            elif "hardlink" in m:
                ti.type, ti.linkname = tarfile.LNKTYPE, m["hardlink"]
            elif m.get("type") == "dir":
                ti.type = tarfile.DIRTYPE
            elif isinstance(m.get("type"), bytes):
                ti.type = m["type"]
            else:
                data = m["data"]
                ti.size = len(data)
            tar.addfile(ti, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def layer(*files: tuple[str, str]) -> bytes:
    """An uncompressed layer tar of (name, content) files."""
    return build_layer([{"name": n, "data": d} for n, d in files])


def compress(data: bytes, codec: str | None) -> bytes:
    """``data`` compressed with ``codec`` (gzip, zstd, xz, or None)."""
    if codec == "gzip":
        return gzip.compress(data, mtime=0)
    if codec == "zstd":
        return zstandard.ZstdCompressor().compress(data)
    if codec == "xz":
        return lzma.compress(data)
    return data


def make_config(layers: list[bytes], arch: str = "amd64", **extra: Any) -> bytes:
    """An image config whose diff_ids are those of ``layers``."""
    cfg = {
        "architecture": arch,
        "os": "linux",
        "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{sha(x)}" for x in layers]},
        **extra,
    }
    return json.dumps(cfg).encode()


def docker_save(
    images: list[dict[str, Any]],
    *,
    form: str = "legacy",
    layer_codec: str | None = None,
    prefix: str = "",
    manifest: Any = None,
    extra: list[dict[str, Any]] | None = None,
    members_first: bool = True,
) -> bytes:
    """A docker save tarball of ``images`` (dicts with ``tags`` and ``layers`` (plain tars),
    optional ``config`` bytes and ``layer_sources``).

    ``form``: ``legacy`` (``<id>/layer.tar``, ``<hex>.json``; a layer seen before becomes a
    symlink, as Docker and skopeo write), ``crane`` (``sha256:<hex>`` config, ``<hex>.tar.gz``
    layers) or ``docker25`` (OCI layout blobs + manifest.json with LayerSources and an
    index.json whose manifests are null). ``manifest`` replaces the generated manifest.json.
    """
    members: list[dict[str, Any]] = []
    entries = []
    seen: dict[str, str] = {}
    names: set[str] = set()
    for n, img in enumerate(images):
        cfg = img.get("config") or make_config(img["layers"])
        cfg_hex = sha(cfg)
        paths = []
        if form == "legacy":
            cfg_path = f"{cfg_hex}.json"
        elif form == "crane":
            cfg_path = f"sha256:{cfg_hex}"
        else:
            cfg_path = f"blobs/sha256/{cfg_hex}"
        if cfg_path not in names:
            members.append({"name": prefix + cfg_path, "data": cfg})
            names.add(cfg_path)
        for i, plain in enumerate(img["layers"]):
            blob = compress(plain, layer_codec)
            if form == "legacy":
                lid = sha(f"{n}/{i}/{sha(plain)}".encode())
                path = f"{lid}/layer.tar"
                if sha(blob) in seen:
                    members.append({"name": prefix + path, "symlink": f"../{seen[sha(blob)]}"})
                else:
                    members.append({"name": prefix + path, "data": blob})
                    seen[sha(blob)] = path
            elif form == "crane":
                path = f"{sha(blob)}.tar.gz" if layer_codec else f"{sha(blob)}.tar"
                if path not in names:
                    members.append({"name": prefix + path, "data": blob})
            else:
                path = f"blobs/sha256/{sha(blob)}"
                if path not in names:
                    members.append({"name": prefix + path, "data": blob})
            names.add(path)
            paths.append(prefix + path)
        entry: dict[str, Any] = {
            "Config": prefix + cfg_path,
            "RepoTags": img.get("tags"),
            "Layers": paths,
        }
        if form == "docker25":
            entry["LayerSources"] = img.get("layer_sources") or {
                f"sha256:{sha(x)}": {
                    "mediaType": mt.MT_OCI_LAYER,
                    "size": len(x),
                    "digest": f"sha256:{sha(x)}",
                }
                for x in img["layers"]
            }
        elif "layer_sources" in img:
            entry["LayerSources"] = img["layer_sources"]
        entries.append(entry)
    meta = [
        {
            "name": prefix + "manifest.json",
            "data": json.dumps(entries if manifest is None else manifest).encode(),
        }
    ]
    if form == "docker25":
        meta += [
            {
                "name": "index.json",
                "data": b'{"schemaVersion":2,"mediaType":"%s","manifests":null}'
                % mt.MT_OCI_INDEX.encode(),
            },
            {"name": "oci-layout", "data": b'{"imageLayoutVersion":"1.0.0"}'},
        ]
    all_members = members + meta if members_first else meta + members
    return tar_of(all_members + (extra or []))


def write(tmp_path: Path, data: bytes, name: str = "save.tar") -> Path:
    """Write ``data`` to ``tmp_path/name``."""
    p = tmp_path / name
    p.write_bytes(data)
    return p


def index_entries(layout: Path) -> list[dict[str, Any]]:
    """The manifests of a layout's index.json."""
    return json.loads((layout / "index.json").read_bytes())["manifests"]


def manifest_of(layout: Path, digest: str) -> dict[str, Any]:
    """A manifest blob, parsed."""
    return json.loads((layout / "blobs" / "sha256" / digest.split(":")[1]).read_bytes())


def assert_verified(layout: Path) -> None:
    """``verify`` finds nothing wrong, and no temp file is left behind."""
    res = verify_layout(layout)
    assert res.ok, res.problems
    assert Layout.open(layout).tmp_files() == []


def blob_bytes(layout: Path, digest: str) -> bytes:
    """A blob's content."""
    return (layout / "blobs" / "sha256" / digest.split(":")[1]).read_bytes()


def plain_layer(layout: Path, desc: dict[str, Any]) -> bytes:
    """The uncompressed bytes of a layer blob."""
    data = blob_bytes(layout, desc["digest"])
    if data[:2] == b"\x1f\x8b":
        return gzip.decompress(data)
    if data[:4] == b"\x28\xb5\x2f\xfd":
        return zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)).read()
    return data


L1 = layer(("etc/a", "one\n"), ("bin/x", "x" * 3000))
L2 = layer(("etc/b", "two\n"))
L3 = layer(("srv/c", "three\n"))


# ----------------------------------------------------------------------------- peers' tarballs
def test_almostempty_facts(tmp_path: Path) -> None:
    out = tmp_path / "oci"
    res = import_docker_save(shared_fixture("docker-save", "almostempty.tar"), out)
    [img] = res.images
    assert img.ref == "emptyimage:latest"
    assert img.name == "docker.io/library/emptyimage:latest"
    assert img.config_digest == (
        "sha256:9d7f147c0d0c4d4538a04c7ef385809e56eb1aac7bf800fbe976612188025b68"
    )
    assert [la.diff_id for la in img.layers] == [
        "sha256:0b916d257bd406111a3fced53f81b47de9a30f7c7d514a89769b3483aaddca7e"
    ]
    [entry] = index_entries(out)
    assert entry["annotations"] == {
        mt.ANNOT_REF_NAME: "emptyimage:latest",
        mt.ANNOT_CONTAINERD_NAME: "docker.io/library/emptyimage:latest",
    }
    man = manifest_of(out, entry["digest"])
    assert man["mediaType"] == mt.MT_OCI_MANIFEST
    assert man["config"]["mediaType"] == mt.MT_OCI_CONFIG
    assert man["layers"][0]["mediaType"] == mt.MT_OCI_LAYER_GZIP
    # the config is stored byte for byte: its digest is Docker's image ID
    with tarfile.open(shared_fixture("docker-save", "almostempty.tar")) as t:
        cfg = t.extractfile(f"{img.config_digest[7:]}.json").read()  # type: ignore[union-attr]
    assert blob_bytes(out, img.config_digest) == cfg
    assert_verified(out)


def test_dive_test_facts(tmp_path: Path) -> None:
    out = tmp_path / "oci"
    res = import_docker_save(
        shared_fixture("docker-save", "dive-test-docker-image.tar"), out, compression="none"
    )
    [img] = res.images
    assert img.ref == "dive-test:latest"
    assert img.config_digest == (
        "sha256:75ae28b8ebf89b203319069ddcbecdf5c3838503bbebc0d0d85e4b8589c5de3a"
    )
    assert len(img.layers) == 14
    cfg = json.loads(blob_bytes(out, img.config_digest))
    assert [la.diff_id for la in img.layers] == cfg["rootfs"]["diff_ids"]
    # uncompressed layers stored as they are: digest == diff_id, not recompressed
    assert all(la.digest == la.diff_id and not la.recompressed for la in img.layers)
    assert_verified(out)


def test_hello_world_v25_untagged_and_null_index(tmp_path: Path) -> None:
    out = tmp_path / "oci"
    res = import_docker_save(shared_fixture("docker-save", "hello-world-v25.tar"), out)
    [img] = res.images
    assert img.ref is None and img.name is None and img.action == "added"
    assert img.config_digest == (
        "sha256:ee301c921b8aadc002973b2e0c3da17d701dcd994b606769a7e6eaa100b81d44"
    )
    assert [la.diff_id for la in img.layers] == [
        "sha256:12660636fe55438cc3ae7424da7ac56e845cdb52493ff9cf949c47a7f57f8b43"
    ]
    [entry] = index_entries(out)
    assert "annotations" not in entry
    assert entry["platform"] == {"architecture": "arm64", "os": "linux"}
    assert len(blob_bytes(out, img.config_digest)) == 581
    # the unreferenced legacy v1 JSON blob of the save is not imported
    assert not (
        out / "blobs/sha256/411caf340c828657e915a83ed561a79d2b8150dabad4dc079d881cbfe6f86afe"
    ).exists()
    # LayerSources lists the layer with a plain OCI type: not foreign, so it is stored
    assert not img.layers[0].foreign and img.layers[0].recompressed
    assert_verified(out)


def test_test_bundle_two_images(tmp_path: Path) -> None:
    out = tmp_path / "oci"
    res = import_docker_save(shared_fixture("docker-save", "test_bundle.tar"), out)
    by_ref = {i.ref: i for i in res.images}
    assert set(by_ref) == {"test_image_1:latest", "test_image_2:latest"}
    assert by_ref["test_image_1:latest"].config_digest.startswith("sha256:6e0b0504")
    assert by_ref["test_image_2:latest"].config_digest.startswith("sha256:930705ce")
    assert by_ref["test_image_2:latest"].name == "docker.io/library/test_image_2:latest"
    # the gzip blob LayerSources names is not in the tar: never referenced by what we write
    absent = "321460fa87fd42433950b42d04b7aff249f4ed960d43404a9f699886906cc9d3"
    for e in index_entries(out):
        assert absent not in json.dumps(manifest_of(out, e["digest"]))
    assert_verified(out)


def test_null_manifest_refused_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "oci"
    r = run_cli("from-docker-save", shared_fixture("docker-save", "null_manifest.tar"), "-o", out)
    assert r.code == 4
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("layouttool: error: ")
    assert "Traceback" not in r.stderr
    assert "manifest.json is null" in r.stderr
    assert not out.exists()


@pytest.mark.parametrize("kind", ["gzip", "zstd", "uncompressed"])
def test_oci_archives_imported_as_they_are(tmp_path: Path, kind: str) -> None:
    src = shared_fixture("oci-archive", f"test-oci-{kind}-image.tar")
    out = tmp_path / "oci"
    res = import_docker_save(src, out)
    assert res.source_format == "oci-archive"
    [img] = res.images
    assert img.ref is None
    assert img.config_digest.startswith("sha256:3eaccc10")
    with tarfile.open(src) as t:
        archived = json.loads(t.extractfile("index.json").read())  # type: ignore[union-attr]
    # index.json entries as they are (annotations and platform kept)
    assert index_entries(out) == archived["manifests"]
    [layer_] = manifest_of(out, img.digest)["layers"]
    plain = plain_layer(out, layer_)
    assert len(plain) == 12800
    assert "sha256:" + sha(plain) == (
        "sha256:356d5e7f4012d87cb1078ac1f480e90528eec4940ce45c50380321436db38758"
    )
    assert_verified(out)


# ----------------------------------------------------------------------------- forms we build
@pytest.mark.parametrize(
    ("form", "codec", "prefix"),
    [
        ("legacy", None, ""),
        ("legacy", None, "./"),
        ("legacy", "gzip", ""),
        ("crane", "gzip", ""),
        ("crane", "zstd", "./"),
        ("docker25", None, ""),
        ("docker25", "gzip", ""),
    ],
)
def test_forms_round_trip_layers(tmp_path: Path, form: str, codec: str | None, prefix: str) -> None:
    data = docker_save(
        [{"tags": ["app:1.0", "registry.example.com:5000/team/app:v2"], "layers": [L1, L2]}],
        form=form,
        layer_codec=codec,
        prefix=prefix,
    )
    out = tmp_path / "oci"
    res = import_docker_save(write(tmp_path, data), out)
    assert [i.ref for i in res.images] == ["app:1.0", "registry.example.com:5000/team/app:v2"]
    assert [i.name for i in res.images] == [
        "docker.io/library/app:1.0",
        "registry.example.com:5000/team/app:v2",
    ]
    assert res.images[0].digest == res.images[1].digest
    man = manifest_of(out, res.images[0].digest)
    assert [plain_layer(out, d) for d in man["layers"]] == [L1, L2]
    # a layer already gzip is kept as it is; anything else is recompressed
    for la in res.images[0].layers:
        assert la.recompressed == (codec != "gzip")
        assert la.media_type == mt.MT_OCI_LAYER_GZIP
    assert_verified(out)


def test_seekable_stream_and_serial_give_identical_layouts(tmp_path: Path) -> None:
    data = docker_save(
        [{"tags": ["a:1"], "layers": [L1, L2]}, {"tags": ["b:1"], "layers": [L1, L3]}]
    )
    src = write(tmp_path, data)
    a = import_docker_save(src, tmp_path / "par", jobs=4)
    b = import_docker_save(src, tmp_path / "ser", jobs=1)
    c = import_docker_save(io.BytesIO(data), tmp_path / "stream")
    d = import_docker_save(io.BytesIO(gzip.compress(data)), tmp_path / "gz")
    assert not a.streamed and c.streamed and d.source_compression == "gzip"
    digests = {tuple(i.digest for i in r.images) for r in (a, b, c, d)}
    assert len(digests) == 1
    for name in ("par", "ser", "stream", "gz"):
        assert (tmp_path / name / "index.json").read_bytes() == (
            tmp_path / "par" / "index.json"
        ).read_bytes()
        assert_verified(tmp_path / name)
    # identical layers stored once: L1 is shared by both images
    blobs = sorted(p.name for p in (tmp_path / "par" / "blobs" / "sha256").iterdir())
    assert len(blobs) == 3 + 2 + 2  # 3 layers, 2 configs, 2 manifests


@pytest.mark.parametrize("codec", ["gzip", "zstd", "xz", "bzip2"])
def test_compressed_outer_tarball(tmp_path: Path, codec: str) -> None:
    import bz2

    data = docker_save([{"tags": ["app:1"], "layers": [L1]}])
    packed = bz2.compress(data) if codec == "bzip2" else compress(data, codec)
    out = tmp_path / "oci"
    res = import_docker_save(write(tmp_path, packed, "save.tar.x"), out)
    assert res.streamed and res.source_compression == codec
    assert res.images[0].ref == "app:1"
    assert_verified(out)


def test_stdin_through_a_real_pipe(tmp_path: Path) -> None:
    src = write(tmp_path, docker_save([{"tags": ["piped:1"], "layers": [L1, L2]}]))
    out = tmp_path / "oci"
    proc = subprocess.run(
        f"cat {src} | {LAYOUTTOOL} from-docker-save - -o {out} --json",
        shell=True,
        capture_output=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["streamed"] is True and doc["source"] == "-"
    assert [i["ref"] for i in doc["images"]] == ["piped:1"]
    assert doc["bytesRead"] == src.stat().st_size
    assert_verified(out)


def test_stdin_in_process(tmp_path: Path) -> None:
    data = docker_save([{"tags": ["x:1"], "layers": [L1]}])
    r = run_cli("from-docker-save", "-", "-o", tmp_path / "oci", stdin=data)
    assert r.code == 0, r.stderr
    assert "x:1" in r.stdout
    assert_verified(tmp_path / "oci")


@pytest.mark.parametrize(
    ("compression", "fmt", "layer_type", "manifest_type"),
    [
        ("zstd", "oci", mt.MT_OCI_LAYER_ZSTD, mt.MT_OCI_MANIFEST),
        ("none", "oci", mt.MT_OCI_LAYER, mt.MT_OCI_MANIFEST),
        ("gzip", "docker", mt.MT_DOCKER_LAYER_GZIP, mt.MT_DOCKER_MANIFEST),
        ("none", "docker", mt.MT_DOCKER_LAYER, mt.MT_DOCKER_MANIFEST),
    ],
)
def test_compression_and_format(
    tmp_path: Path, compression: str, fmt: str, layer_type: str, manifest_type: str
) -> None:
    src = write(tmp_path, docker_save([{"tags": ["app:1"], "layers": [L1, L2]}]))
    out = tmp_path / "oci"
    r = run_cli(
        "from-docker-save",
        src,
        "-o",
        out,
        "--compression",
        compression,
        "--format",
        fmt,
        "--level",
        "3",
        "--json",
    )
    assert r.code == 0, r.stderr
    doc = json.loads(r.stdout)
    man = manifest_of(out, doc["images"][0]["digest"])
    assert man["mediaType"] == manifest_type == index_entries(out)[0]["mediaType"]
    assert {d["mediaType"] for d in man["layers"]} == {layer_type}
    assert man["config"]["mediaType"] == (
        mt.MT_DOCKER_CONFIG if fmt == "docker" else mt.MT_OCI_CONFIG
    )
    assert [plain_layer(out, d) for d in man["layers"]] == [L1, L2]
    assert doc["images"][0]["layers"][0]["diffID"] == f"sha256:{sha(L1)}"
    assert_verified(out)


def test_docker_format_with_zstd_is_refused(tmp_path: Path) -> None:
    src = write(tmp_path, docker_save([{"tags": ["app:1"], "layers": [L1]}]))
    r = run_cli(
        "from-docker-save",
        src,
        "-o",
        tmp_path / "oci",
        "--format",
        "docker",
        "--compression",
        "zstd",
    )
    assert r.code == 4
    assert "zstd compression is not supported for Docker media types" in r.stderr
    assert not (tmp_path / "oci").exists()


def test_zstd_layer_kept_when_zstd_requested(tmp_path: Path) -> None:
    src = write(
        tmp_path, docker_save([{"tags": ["z:1"], "layers": [L1]}], form="crane", layer_codec="zstd")
    )
    res = import_docker_save(src, tmp_path / "oci", compression="zstd")
    [la] = res.images[0].layers
    assert not la.recompressed and la.media_type == mt.MT_OCI_LAYER_ZSTD
    assert la.digest == "sha256:" + sha(compress(L1, "zstd"))
    assert_verified(tmp_path / "oci")


def test_image_filter(tmp_path: Path) -> None:
    cfg_b = make_config([L3], arch="arm64")
    src = write(
        tmp_path,
        docker_save(
            [
                {"tags": ["a:1", "a:latest"], "layers": [L1]},
                {"tags": ["b:1"], "layers": [L3], "config": cfg_b},
                {"tags": None, "layers": [L2]},
            ]
        ),
    )
    out = tmp_path / "oci"
    res = import_docker_save(src, out, images=["docker.io/library/a:latest"])
    assert [i.ref for i in res.images] == ["a:latest"]
    # an image ID (config digest prefix) selects an image with all its tags
    res = import_docker_save(src, out, images=[sha(cfg_b)[:12]])
    assert [i.ref for i in res.images] == ["b:1"]
    assert {e["annotations"][mt.ANNOT_REF_NAME] for e in index_entries(out)} == {"a:latest", "b:1"}
    with pytest.raises(NotFoundError, match=r"no image named 'nope'.*a:1"):
        import_docker_save(src, out, images=["nope"])
    assert_verified(out)


def test_import_adds_and_moves_refs(tmp_path: Path) -> None:
    out = tmp_path / "oci"
    first = import_docker_save(
        write(tmp_path, docker_save([{"tags": ["app:1", "app:stable"], "layers": [L1]}]), "1.tar"),
        out,
    )
    second = import_docker_save(
        write(tmp_path, docker_save([{"tags": ["app:2", "app:stable"], "layers": [L2]}]), "2.tar"),
        out,
    )
    assert [i.action for i in second.images] == ["tagged", "moved"]
    refs = {e["annotations"][mt.ANNOT_REF_NAME]: e["digest"] for e in index_entries(out)}
    assert refs == {
        "app:1": first.images[0].digest,
        "app:2": second.images[0].digest,
        "app:stable": second.images[0].digest,
    }
    again = import_docker_save(
        write(tmp_path, docker_save([{"tags": ["app:2"], "layers": [L2]}]), "3.tar"), out
    )
    assert [i.action for i in again.images] == ["unchanged"]
    assert len(index_entries(out)) == 3
    # the old app:stable manifest stays on disk until gc
    assert (out / "blobs/sha256" / first.images[0].digest[7:]).exists()
    assert_verified(out)


def test_untagged_import_is_not_duplicated(tmp_path: Path) -> None:
    src = write(tmp_path, docker_save([{"tags": None, "layers": [L1]}]))
    out = tmp_path / "oci"
    import_docker_save(src, out)
    res = import_docker_save(src, out)
    assert res.images[0].action == "unchanged"
    assert len(index_entries(out)) == 1
    assert_verified(out)


def test_foreign_layer_from_layer_sources(tmp_path: Path) -> None:
    foreign = {
        "mediaType": mt.MT_DOCKER_LAYER_FOREIGN,
        "size": 1234,
        "digest": "sha256:" + "ab" * 32,
        "urls": ["https://example.com/layer"],
    }
    src = write(
        tmp_path,
        docker_save(
            [
                {
                    "tags": ["win:1"],
                    "layers": [L1, L2],
                    "layer_sources": {f"sha256:{sha(L1)}": foreign},
                }
            ]
        ),
    )
    out = tmp_path / "oci"
    res = import_docker_save(src, out)
    first, second = res.images[0].layers
    assert first.foreign and not second.foreign
    man = manifest_of(out, res.images[0].digest)
    assert man["layers"][0] == {
        "mediaType": mt.MT_OCI_LAYER_ND_GZIP,
        "digest": foreign["digest"],
        "size": 1234,
        "urls": foreign["urls"],
    }
    assert verify_layout(out).ok


def test_max_size(tmp_path: Path) -> None:
    big = layer(("big", "z" * 200_000))
    data = docker_save([{"tags": ["b:1"], "layers": [big]}], layer_codec="gzip")
    src = write(tmp_path, data)
    r = run_cli("from-docker-save", src, "-o", tmp_path / "oci", "--max-size", "100000")
    assert r.code == 4 and "larger than the limit of 100000 bytes" in r.stderr
    assert not (tmp_path / "oci").exists()
    with pytest.raises(SizeLimitError):
        import_docker_save(io.BytesIO(data), tmp_path / "oci2", max_size=100_000)
    assert not (tmp_path / "oci2").exists()
    assert import_docker_save(src, tmp_path / "oci3", max_size=len(big)).images


def test_bad_options(tmp_path: Path) -> None:
    src = write(tmp_path, docker_save([{"tags": ["a:1"], "layers": [L1]}]))
    with pytest.raises(UnsupportedError):
        import_docker_save(src, tmp_path / "o", compression="xz")
    r = run_cli("from-docker-save", src, "-o", tmp_path / "o", "--level", "99")
    assert r.code == 4 and "level 99" in r.stderr
    r = run_cli("from-docker-save", tmp_path / "missing.tar", "-o", tmp_path / "o")
    assert r.code == 3 and "missing.tar" in r.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("compression", "says"),
    [("gzip", "need --compression estargz"), ("zstd:chunked", "are eStargz options")],
)
def test_estargz_options_need_estargz(tmp_path: Path, compression: str, says: str) -> None:
    """from-docker-save and convert refuse --chunk-size and --estargz-prioritize alike for
    any other --compression, before writing anything."""
    src = write(tmp_path, docker_save([{"tags": ["a:1"], "layers": [L1]}]))
    import_docker_save(src, tmp_path / "in")
    for flag in (("--chunk-size", "4096"), ("--estargz-prioritize", "bin/sh")):
        for argv in (("from-docker-save", src), ("convert", f"{tmp_path / 'in'}:a:1")):
            r = run_cli(*argv, "-o", tmp_path / "o", "--compression", compression, *flag)
            assert r.code == 4 and says in r.stderr, r.stderr
            assert not (tmp_path / "o").exists()


def test_sample_is_deterministic_and_imports(tmp_path: Path) -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "make_sample", REPO / "testdata" / "make_sample.py"
    )
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    sample = REPO / "testdata" / "sample-docker-save.tar"
    assert mod.build() == sample.read_bytes()
    assert sample.stat().st_size < 50_000
    out = tmp_path / "oci"
    r = run_cli("from-docker-save", sample, "-o", out, "--json")
    assert r.code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert [i["ref"] for i in doc["images"]] == [
        "layouttool-sample:1.0",
        "layouttool-sample:latest",
    ]
    assert len(doc["images"][0]["layers"]) == 2
    assert "imported 2 image ref(s)" in r.stderr
    assert_verified(out)


def test_result_json_shape(tmp_path: Path) -> None:
    src = write(tmp_path, docker_save([{"tags": ["a:1"], "layers": [L1]}]))
    doc = import_docker_save(src, tmp_path / "oci").to_json()
    assert set(doc) == {
        "source",
        "layout",
        "sourceFormat",
        "sourceCompression",
        "streamed",
        "images",
        "bytesRead",
        "bytesWritten",
        "seconds",
        "notes",
    }
    [img] = doc["images"]
    assert set(img) == {"ref", "name", "digest", "mediaType", "configDigest", "action", "layers"}
    assert set(img["layers"][0]) == {
        "digest",
        "size",
        "diffID",
        "mediaType",
        "recompressed",
        "foreign",
    }
    assert doc["bytesWritten"] > 0 and doc["bytesRead"] >= len(L1)


def test_layer_digest_does_not_depend_on_read_sizes(tmp_path: Path) -> None:
    """ISA-L's deflate output depends on how input is split across compress() calls; a file
    import (fixed reads) and a stream import (tar reader, peeked heads) must still agree."""
    import os
    import random

    from layouttool.codec import Compression
    from layouttool.layers import store_layer

    class Jagged:
        def __init__(self, data: bytes, seed: int) -> None:
            self._b = io.BytesIO(data)
            self._r = random.Random(seed)

        def read(self, n: int = -1) -> bytes:
            limit = n if n >= 0 else 1 << 30
            return self._b.read(min(limit, self._r.randint(1, 1 << 20)))

    data = os.urandom(3 << 20) + b"abc" * (1 << 20)
    lay = Layout.init(tmp_path / "l")
    digests = {
        store_layer(lay, Jagged(data, seed), target=Compression.GZIP).blob.digest
        for seed in range(4)
    }
    assert len(digests) == 1


@pytest.mark.parametrize("target", ["gzip", "zstd"])
def test_a_corrupt_layer_fails_cleanly_while_being_re_encoded(tmp_path: Path, target: str) -> None:
    """Re-encoding reads, decompresses and hashes in a thread of its own: a corrupt layer still
    ends in one clean error (exit 4), and no temp file or blob is left behind."""
    import os

    from layouttool.codec import Compression
    from layouttool.errors import CorruptStreamError
    from layouttool.layers import store_layer

    good = gzip.compress(os.urandom(3 << 20), compresslevel=1)
    broken = good[: len(good) // 2]  # cut inside the deflate stream
    lay = Layout.init(tmp_path / "l")
    with pytest.raises(CorruptStreamError):
        store_layer(lay, io.BytesIO(broken), target=Compression(target))
    assert list((tmp_path / "l" / "blobs" / "sha256").iterdir()) == []
    assert [p.name for p in lay.tmp_dir().iterdir()] == []


def test_a_streamed_tarball_with_more_layers_than_open_files(tmp_path: Path) -> None:
    """Layers that arrive before manifest.json wait for it as closed temp files: a stream with
    200 layers imports under an open-files limit of 64 (each waiting layer used to hold a
    descriptor, so a tarball with more layers than the limit failed with EMFILE)."""
    layers = [layer((f"f{i}", f"layer {i}\n")) for i in range(200)]
    src = write(tmp_path, docker_save([{"tags": ["tall:1"], "layers": layers}]))
    out = tmp_path / "oci"
    limit = "import resource; resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))"
    with src.open("rb") as stdin:
        proc = subprocess.run(
            [str(REPO / ".venv" / "bin" / "python"), "-c",
             f"{limit}; import sys; from layouttool.cli import main; sys.exit(main())",
             "from-docker-save", "-", "-o", str(out), "--json"],
            stdin=stdin, capture_output=True, check=False,
        )
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert doc["streamed"] is True
    assert len(doc["images"][0]["layers"]) == 200
    assert_verified(out)


@dataclass
class _Spooled:
    """What the spy saw of an import's layers: their encoders' CPU shares, and how many were
    being spooled at once at most."""

    shares: list[int] = field(default_factory=list)
    running: int = 0
    peak: int = 0


def _import_on_16_cpus(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, layers: int, target: str,
    seekable: bool = True,
) -> _Spooled:
    """Import a ``layers``-layer tarball as if the machine had 16 CPUs, spying on each layer."""
    monkeypatch.setattr(codec, "_cpus", lambda: 16)
    seen = _Spooled()
    lock = threading.Lock()
    real = importer_archive.spool_layer

    def spy(*args: Any, **kw: Any) -> Any:
        with lock:
            seen.shares.append(kw["threads"])
            seen.running += 1
            seen.peak = max(seen.peak, seen.running)
        try:
            time.sleep(0.05)  # long enough for every job that may start to overlap
            return real(*args, **kw)
        finally:
            with lock:
                seen.running -= 1

    monkeypatch.setattr(importer_archive, "spool_layer", spy)
    data = docker_save_bytes([random_image(random.Random(layers), ["x:1"], layers=layers)])
    tar = tmp_path / "x.tar"
    tar.write_bytes(data)
    res = import_docker_save(tar if seekable else io.BytesIO(data), tmp_path / "oci",
                             compression=target)
    assert len(res.images) == 1
    return seen


@pytest.mark.parametrize(("target", "most"), [("zstd", 1), ("gzip", 6)])
def test_default_jobs_write_one_zstd_layer_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, target: str, most: int
) -> None:
    """Each zstd encoder holds a 16 MiB window and zstd's own workers take every CPU: on a
    16-CPU machine the default writes one zstd layer at a time, gzip layers one per CPU."""
    seen = _import_on_16_cpus(tmp_path, monkeypatch, layers=6, target=target)
    assert seen.peak == most


@pytest.mark.parametrize(
    ("layers", "target", "seekable", "share"),
    [
        (1, "gzip", True, 16),  # one layer: every CPU to its encoder
        (6, "gzip", True, 2),  # 6 at once on 16 CPUs
        (6, "zstd", True, 16),  # one at a time (zstd's default), every CPU to its workers
        (6, "gzip", False, 16),  # a stream is read one member after the other
    ],
)
def test_each_encoder_gets_its_share_of_the_cpus(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, layers: int, target: str,
    seekable: bool, share: int
) -> None:
    seen = _import_on_16_cpus(tmp_path, monkeypatch, layers=layers, target=target,
                              seekable=seekable)
    assert seen.shares == [share] * layers
