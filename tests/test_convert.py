"""convert: recompression, OCI <-> Docker media types, rewriting up to index.json.

Images are the shared BuildKit oci-archives (a layout in a tar, extracted here) and small
images built in tmp_path through the store. The oracles are independent of convert: hashlib
over the uncompressed tars we built, the digests the fixtures README names, verify_layout.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest
import zstandard
from conftest import REPO, run_cli, shared_fixture
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from layerbuild import build_layer

from layouttool import mediatypes as mt
from layouttool.codec import Compression
from layouttool.errors import IntegrityError
from layouttool.model import Descriptor, Platform, parse_config, parse_index, parse_manifest
from layouttool.ops.convert import ConvertResult, convert_image
from layouttool.ops.layout import tag_image
from layouttool.ops.verify import verify_layout
from layouttool.store import Layout

UNCOMPRESSED_DIFF_ID = "sha256:356d5e7f4012d87cb1078ac1f480e90528eec4940ce45c50380321436db38758"
CONFIG_DIGEST = "sha256:3eaccc100f866490f00ae82727b459a737af031dcf44c791d8aa714a70f24959"


# ---------------------------------------------------------------------------------- helpers
def import_archive(kind: str, dest: Path) -> Path:
    """Extract ``test-oci-<kind>-image.tar`` (an OCI layout in a tar) into ``dest``."""
    src = shared_fixture("oci-archive", f"test-oci-{kind}-image.tar")
    with tarfile.open(src) as tar:
        tar.extractall(dest, filter="data")
    for p in dest.rglob("*"):  # the archive's blobs are read-only; tests corrupt some
        p.chmod(p.stat().st_mode | 0o200)
    return dest


def compress(data: bytes, c: Compression) -> bytes:
    """Compress with a different encoder than layouttool's (so recompression shows)."""
    if c is Compression.GZIP:
        return gzip.compress(data, compresslevel=9, mtime=0)
    if c is Compression.ZSTD:
        return zstandard.ZstdCompressor(level=10).compress(data)
    return data


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def add_image(
    layout: Layout,
    tars: list[bytes],
    *,
    compression: Compression = Compression.GZIP,
    docker: bool = False,
    platform: tuple[str, str] = ("linux", "amd64"),
    diff_ids: list[str] | None = None,
    manifest_extra: dict[str, Any] | None = None,
    layer_annotations: dict[str, str] | None = None,
) -> Descriptor:
    """Store an image (layers, config, manifest) and return the manifest's descriptor."""
    layers = []
    for t in tars:
        blob = compress(t, compression)
        info = layout.put_bytes(blob)
        d: dict[str, Any] = {
            "mediaType": mt.layer_media_type(compression, docker=docker),
            "digest": str(info.digest),
            "size": info.size,
        }
        if layer_annotations:
            d["annotations"] = dict(layer_annotations)
        layers.append(d)
    cfg = {
        "architecture": platform[1],
        "os": platform[0],
        "config": {"Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids or [sha(t) for t in tars]},
    }
    cdesc = layout.put_json(cfg, mt.config_type(docker=docker))
    doc: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": mt.manifest_type(docker=docker),
        "config": cdesc.to_json(),
        "layers": layers,
    }
    doc.update(manifest_extra or {})
    return layout.put_json(doc, mt.manifest_type(docker=docker))


def set_index(layout: Layout, entries: list[Descriptor]) -> None:
    layout.update_index(lambda _cur, _doc: entries)


def named(desc: Descriptor, ref: str) -> Descriptor:
    return desc.with_(annotations={**desc.annotations, mt.ANNOT_REF_NAME: ref})


def entries(root: Path) -> list[dict[str, Any]]:
    return json.loads((root / "index.json").read_bytes())["manifests"]


def blob_names(root: Path) -> set[str]:
    return {p.name for p in (root / "blobs" / "sha256").iterdir()}


def read_json(root: Path, digest: str) -> Any:
    return json.loads((root / "blobs" / "sha256" / digest.split(":")[1]).read_bytes())


def manifests_of(root: Path) -> list[dict[str, Any]]:
    """Every image manifest reachable from index.json (through indexes), in order."""
    out = []
    stack = list(reversed(entries(root)))
    while stack:
        d = stack.pop()
        doc = read_json(root, d["digest"])
        if "manifests" in doc:
            stack.extend(reversed(doc["manifests"]))
        else:
            out.append(doc)
    return out


def image_summary(root: Path) -> list[tuple[str, list[str]]]:
    """(config digest, diff_ids) of every image: what conversion must never change."""
    out = []
    for m in manifests_of(root):
        cfg = parse_config(
            (root / "blobs" / "sha256" / m["config"]["digest"].split(":")[1]).read_bytes()
        )
        out.append((m["config"]["digest"], [str(d) for d in cfg.diff_ids]))
    return out


def assert_verified(root: Path) -> None:
    res = verify_layout(root)
    assert res.ok, res.to_json()


def convert_cli(*args: str | Path) -> dict[str, Any]:
    r = run_cli("convert", *args, "--json")
    assert r.code == 0, r.stderr
    doc: dict[str, Any] = json.loads(r.stdout)
    return doc


# ---------------------------------------------------------------------------------- fixtures
@pytest.mark.parametrize("kind", ["gzip", "zstd"])
def test_fixture_to_uncompressed_gives_the_reference_blob(tmp_path: Path, kind: str) -> None:
    root = import_archive(kind, tmp_path / kind)
    (orig,) = entries(root)
    out = convert_cli(root, "--compression", "none")
    (layer,) = out["images"][0]["layers"]
    assert layer["new"] == {
        "digest": UNCOMPRESSED_DIFF_ID,
        "size": 12800,
        "mediaType": mt.MT_OCI_LAYER,
    }
    assert layer["recompressed"] is True
    assert layer["diffID"] == UNCOMPRESSED_DIFF_ID
    (m,) = manifests_of(root)
    assert m["config"]["digest"] == CONFIG_DIGEST
    assert m["layers"][0]["digest"] == UNCOMPRESSED_DIFF_ID
    # the BuildKit index.json entry keeps its platform and annotation
    (e,) = entries(root)
    assert e["platform"] == {"architecture": "arm64", "os": "linux"} == orig["platform"]
    assert e["annotations"] == orig["annotations"]
    assert "org.opencontainers.image.created" in e["annotations"]
    assert e["digest"] == out["entries"][0]["new"]["digest"] != out["entries"][0]["old"]["digest"]
    data = (root / "blobs" / "sha256" / UNCOMPRESSED_DIFF_ID[7:]).read_bytes()
    assert len(data) == 12800 and sha(data) == UNCOMPRESSED_DIFF_ID
    assert_verified(root)


def test_fixtures_convert_between_each_other(tmp_path: Path) -> None:
    """Every fixture converted to every compression has the same diff_ids and config."""
    for src in ("gzip", "zstd", "uncompressed"):
        for target in ("gzip", "zstd", "none"):
            root = import_archive(src, tmp_path / f"{src}-{target}")
            convert_cli(root, "--compression", target)
            ((cfg, ids),) = image_summary(root)
            assert (cfg, ids) == (CONFIG_DIGEST, [UNCOMPRESSED_DIFF_ID])
            (m,) = manifests_of(root)
            want = mt.layer_media_type(Compression.parse(target), docker=False)
            assert m["layers"][0]["mediaType"] == want
            assert_verified(root)


def test_round_trip_compressions_keep_diff_ids_and_second_run_writes_nothing(
    tmp_path: Path,
) -> None:
    root = import_archive("gzip", tmp_path / "img")
    before = image_summary(root)
    for target in ("zstd", "none", "gzip"):
        out = convert_cli(root, "--compression", target)
        assert out["layersRecompressed"] == 1
        assert image_summary(root) == before
        blobs, index = blob_names(root), (root / "index.json").read_bytes()
        again = convert_cli(root, "--compression", target)
        assert again["blobsWritten"] == 0 and again["layersRecompressed"] == 0
        assert not again["entries"][0]["changed"]
        assert blob_names(root) == blobs
        assert (root / "index.json").read_bytes() == index
    assert_verified(root)


def test_oci_docker_oci_round_trip(tmp_path: Path) -> None:
    root = import_archive("gzip", tmp_path / "img")
    before = image_summary(root)
    old_manifest = entries(root)[0]["digest"]
    out = convert_cli(root, "--format", "docker")
    assert out["layersRecompressed"] == 0  # gzip stays gzip: same blob, new media type
    (e,) = entries(root)
    assert e["mediaType"] == mt.MT_DOCKER_MANIFEST
    (m,) = manifests_of(root)
    assert m["mediaType"] == mt.MT_DOCKER_MANIFEST
    assert m["config"] == {**m["config"], "mediaType": mt.MT_DOCKER_CONFIG}
    assert m["config"]["digest"] == CONFIG_DIGEST  # the config blob itself is not rewritten
    assert [la["mediaType"] for la in m["layers"]] == [mt.MT_DOCKER_LAYER_GZIP]
    assert image_summary(root) == before
    assert_verified(root)
    blobs = blob_names(root)
    assert convert_cli(root, "--format", "docker")["blobsWritten"] == 0
    assert blob_names(root) == blobs
    convert_cli(root, "--format", "oci")
    assert image_summary(root) == before
    (m,) = manifests_of(root)
    assert m["mediaType"] == mt.MT_OCI_MANIFEST
    assert [la["mediaType"] for la in m["layers"]] == [mt.MT_OCI_LAYER_GZIP]
    assert entries(root)[0]["digest"] != old_manifest  # re-serialised compactly
    assert_verified(root)


def test_docker_zstd_refused(tmp_path: Path) -> None:
    root = import_archive("zstd", tmp_path / "img")
    index = (root / "index.json").read_bytes()
    r = run_cli("convert", root, "--format", "docker", "--compression", "zstd")
    assert r.code == 4
    assert "--format docker cannot be combined with --compression zstd" in r.stderr
    r = run_cli("convert", root, "--format", "docker")
    assert r.code == 4
    assert "add --compression gzip" in r.stderr
    assert (root / "index.json").read_bytes() == index
    out = convert_cli(root, "--format", "docker", "--compression", "gzip")
    (m,) = manifests_of(root)
    assert [la["mediaType"] for la in m["layers"]] == [mt.MT_DOCKER_LAYER_GZIP]
    assert out["images"][0]["layers"][0]["diffID"] == UNCOMPRESSED_DIFF_ID
    assert_verified(root)


def test_output_layout_leaves_source_untouched(tmp_path: Path) -> None:
    src = import_archive("zstd", tmp_path / "src")
    src_blobs = {p.name: p.read_bytes() for p in (src / "blobs" / "sha256").iterdir()}
    src_index = (src / "index.json").read_bytes()
    dest = tmp_path / "dest"
    out = convert_cli(src, "-o", dest, "--format", "docker", "--compression", "none")
    assert out["inPlace"] is False
    assert {p.name: p.read_bytes() for p in (src / "blobs" / "sha256").iterdir()} == src_blobs
    assert (src / "index.json").read_bytes() == src_index
    assert not (src / ".layouttool" / "tmp").exists() or not any(
        (src / ".layouttool" / "tmp").iterdir()
    )
    # the destination holds exactly the new image: config copied, layer recompressed
    (m,) = manifests_of(dest)
    assert blob_names(dest) == {
        entries(dest)[0]["digest"][7:],
        CONFIG_DIGEST[7:],
        UNCOMPRESSED_DIFF_ID[7:],
    }
    assert m["layers"][0]["mediaType"] == mt.MT_DOCKER_LAYER
    assert_verified(dest)
    # a second run into the same destination makes the same blobs (no new one), one entry
    blobs, index = blob_names(dest), (dest / "index.json").read_bytes()
    convert_cli(src, "-o", dest, "--format", "docker", "--compression", "none")
    assert blob_names(dest) == blobs
    assert (dest / "index.json").read_bytes() == index


def test_output_copies_unchanged_blobs_verified(tmp_path: Path) -> None:
    src = import_archive("gzip", tmp_path / "src")
    # corrupt the config: a copy must refuse it rather than spread it
    cfg = src / "blobs" / "sha256" / CONFIG_DIGEST[7:]
    cfg.write_bytes(cfg.read_bytes().replace(b"arm64", b"arm65"))
    r = run_cli("convert", src, "-o", tmp_path / "dest", "--format", "docker")
    assert r.code == 5, r.stderr
    assert CONFIG_DIGEST in r.stderr


# ---------------------------------------------------------------------------------- built images
def three_layers() -> list[bytes]:
    return [
        build_layer([{"name": "a.txt", "data": b"A" * 3000}]),
        build_layer(
            [{"name": "dir", "type": "dir"}, {"name": "dir/b", "data": bytes(range(256)) * 20}]
        ),
        build_layer([{"name": "c", "data": b"cccc", "mode": 0o755}]),
    ]


def test_multi_platform_index_every_child_rewritten(tmp_path: Path) -> None:
    layout = Layout.init(tmp_path / "l")
    amd = add_image(layout, three_layers(), platform=("linux", "amd64"))
    arm = add_image(layout, three_layers()[:2], platform=("linux", "arm64"))
    idx_doc = {
        "schemaVersion": 2,
        "mediaType": mt.MT_OCI_INDEX,
        "manifests": [
            {**amd.to_json(), "platform": {"architecture": "amd64", "os": "linux"}},
            {
                **arm.to_json(),
                "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"},
                "annotations": {"keep": "me"},
            },
        ],
        "annotations": {"org.example.index": "yes"},
        "x-unknown": [1, 2],
    }
    idx = layout.put_json(idx_doc, mt.MT_OCI_INDEX)
    set_index(layout, [named(idx, "multi:1")])
    root = layout.root
    before = image_summary(root)
    out = convert_cli(f"{root}:multi:1", "--compression", "zstd")
    assert len(out["images"]) == 2 and all(i["changed"] for i in out["images"])
    (e,) = entries(root)
    assert e["annotations"] == {mt.ANNOT_REF_NAME: "multi:1"}
    assert e["digest"] == out["entries"][0]["new"]["digest"] != str(idx.digest)
    new_idx = read_json(root, e["digest"])
    assert new_idx["annotations"] == {"org.example.index": "yes"}
    assert new_idx["x-unknown"] == [1, 2]
    assert [c["platform"] for c in new_idx["manifests"]] == [
        c["platform"] for c in idx_doc["manifests"]
    ]
    assert new_idx["manifests"][1]["annotations"] == {"keep": "me"}
    assert {c["digest"] for c in new_idx["manifests"]}.isdisjoint(
        {str(amd.digest), str(arm.digest)}
    )
    for m in manifests_of(root):
        assert {la["mediaType"] for la in m["layers"]} == {mt.MT_OCI_LAYER_ZSTD}
    assert image_summary(root) == before
    assert_verified(root)


def test_platform_limits_conversion(tmp_path: Path) -> None:
    layout = Layout.init(tmp_path / "l")
    amd = add_image(layout, three_layers(), platform=("linux", "amd64"))
    arm = add_image(layout, three_layers()[1:], platform=("linux", "arm64"))
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
    dest = tmp_path / "dest"
    out = convert_cli(layout.root, "--platform", "linux/arm64", "--compression", "none", "-o", dest)
    assert [i["platform"] for i in out["images"]] == ["linux/arm64"]
    new_idx = read_json(dest, entries(dest)[0]["digest"])
    assert new_idx["manifests"][0]["digest"] == str(amd.digest)  # kept as it was
    assert new_idx["manifests"][1]["digest"] != str(arm.digest)
    assert_verified(dest)  # the untouched amd64 image was copied whole
    r = run_cli("convert", layout.root, "--platform", "linux/s390x", "--compression", "none")
    assert r.code == 3 and "no image for platform linux/s390x" in r.stderr


def test_parallel_output_equals_serial(tmp_path: Path) -> None:
    import os

    layout = Layout.init(tmp_path / "l")
    rnd = [
        build_layer([{"name": f"f{i}", "data": os.urandom(200_000) + b"x" * 200_000}])
        for i in range(6)
    ]
    d1 = add_image(layout, rnd[:4], compression=Compression.ZSTD)
    d2 = add_image(layout, rnd[2:], compression=Compression.NONE, platform=("linux", "arm64"))
    set_index(layout, [named(d1, "one"), named(d2, "two")])
    results = {}
    for jobs in ("1", "4"):
        for target in ("gzip", "zstd"):
            dest = tmp_path / f"out-{jobs}-{target}"
            convert_cli(layout.root, "-o", dest, "--compression", target, "--jobs", jobs)
            results[jobs, target] = (
                (dest / "index.json").read_bytes(),
                {n: (dest / "blobs/sha256" / n).read_bytes() for n in blob_names(dest)},
            )
            assert_verified(dest)
    for target in ("gzip", "zstd"):
        assert results["1", target] == results["4", target]


def test_repeated_runs_are_deterministic(tmp_path: Path) -> None:
    digests = []
    for i in range(2):
        root = import_archive("zstd", tmp_path / f"r{i}")
        convert_cli(root, "--compression", "gzip", "--level", "6")
        digests.append(entries(root)[0]["digest"])
    assert digests[0] == digests[1]


def test_unknown_fields_kept_and_blob_annotations_dropped(tmp_path: Path) -> None:
    layout = Layout.init(tmp_path / "l")
    d = add_image(
        layout,
        three_layers(),
        manifest_extra={"annotations": {"org.example": "m"}, "x-extra": {"a": 1}},
        layer_annotations={
            "containerd.io/snapshot/stargz/toc.digest": "sha256:" + "0" * 64,
            "org.example.layer": "kept",
        },
    )
    set_index(layout, [named(d, "app")])
    convert_cli(f"{layout.root}:app", "--compression", "zstd")
    (m,) = manifests_of(layout.root)
    assert m["annotations"] == {"org.example": "m"} and m["x-extra"] == {"a": 1}
    assert list(m)[:4] == ["schemaVersion", "mediaType", "config", "layers"]
    for la in m["layers"]:
        assert la["annotations"] == {"org.example.layer": "kept"}
    # a conversion that does not recompress keeps them: they still describe the same blob
    convert_cli(f"{layout.root}:app", "--format", "oci")
    layout2 = Layout.init(tmp_path / "l2")
    d2 = add_image(
        layout2, three_layers()[:1], layer_annotations={"containerd.io/uncompressed": "x"}
    )
    set_index(layout2, [named(d2, "app")])
    convert_cli(layout2.root, "--format", "docker")
    (m2,) = manifests_of(layout2.root)
    assert m2["layers"][0]["annotations"] == {"containerd.io/uncompressed": "x"}
    assert_verified(layout.root)


def test_trailing_bytes_after_tar_end_survive(tmp_path: Path) -> None:
    tar = build_layer([{"name": "x", "data": b"hello"}]) + b"TOC-AFTER-END" * 100
    layout = Layout.init(tmp_path / "l")
    d = add_image(layout, [tar], compression=Compression.GZIP)
    set_index(layout, [named(d, "app")])
    for target in ("zstd", "none"):
        out = convert_cli(layout.root, "--compression", target)
        assert out["images"][0]["layers"][0]["diffID"] == sha(tar)
    (m,) = manifests_of(layout.root)
    assert m["layers"][0]["digest"] == sha(tar)
    assert (layout.root / "blobs/sha256" / sha(tar)[7:]).read_bytes() == tar
    assert_verified(layout.root)


def test_artifacts_copied_and_subject_refused_for_docker(tmp_path: Path) -> None:
    layout = Layout.init(tmp_path / "l")
    img = add_image(layout, three_layers()[:1])
    empty = layout.put_bytes(b"{}").descriptor(mt.MT_OCI_EMPTY)
    blob = layout.put_bytes(b"an sbom").descriptor("application/spdx+json")
    art = layout.put_json(
        {
            "schemaVersion": 2,
            "mediaType": mt.MT_OCI_MANIFEST,
            "artifactType": "application/spdx+json",
            "config": empty.to_json(),
            "layers": [blob.to_json()],
            "subject": img.to_json(),
        },
        mt.MT_OCI_MANIFEST,
    )
    set_index(layout, [named(img, "app"), art.with_(artifact_type="application/spdx+json")])
    dest = tmp_path / "dest"
    out = convert_cli(layout.root, "--compression", "zstd", "-o", dest)
    assert any("artifact" in n for n in out["notes"])
    e_img, e_art = entries(dest)
    assert e_art["digest"] == str(art.digest)  # copied, not converted
    assert e_img["digest"] != str(img.digest)
    assert_verified(dest)  # the subject (the old image) was copied along
    # an image manifest with a subject cannot become Docker
    with_subject = add_image(layout, three_layers()[:1], manifest_extra={"subject": img.to_json()})
    set_index(layout, [named(with_subject, "ref")])
    r = run_cli("convert", f"{layout.root}:ref", "--format", "docker")
    assert r.code == 4 and "--format oci" in r.stderr


def test_nondistributable_layer_absent_is_kept(tmp_path: Path) -> None:
    layout = Layout.init(tmp_path / "l")
    tars = three_layers()
    d = add_image(layout, tars[:2])
    m = json.loads(layout.read_blob(d))
    foreign = {
        "mediaType": mt.MT_OCI_LAYER_ND_GZIP,
        "digest": "sha256:" + "ab" * 32,
        "size": 1234,
        "urls": ["https://example.invalid/layer.tar.gz"],
    }
    m["layers"].insert(0, foreign)
    cfg = json.loads(layout.read_blob(Descriptor.from_json(m["config"])))
    cfg["rootfs"]["diff_ids"].insert(0, "sha256:" + "cd" * 32)
    m["config"] = layout.put_json(cfg, mt.MT_OCI_CONFIG).to_json()
    d = layout.put_json(m, mt.MT_OCI_MANIFEST)
    set_index(layout, [named(d, "app")])
    out = convert_cli(layout.root, "--format", "docker", "--compression", "none")
    (m2,) = manifests_of(layout.root)
    assert m2["layers"][0] == {**foreign, "mediaType": mt.MT_DOCKER_LAYER_FOREIGN}
    assert [la["mediaType"] for la in m2["layers"][1:]] == [mt.MT_DOCKER_LAYER] * 2
    assert out["images"][0]["layers"][0]["recompressed"] is False
    res = verify_layout(layout.root)
    assert res.ok and res.warnings


# ---------------------------------------------------------------------------------- failures
def test_diff_id_mismatch_exit_5_index_unchanged(tmp_path: Path) -> None:
    layout = Layout.init(tmp_path / "l")
    tars = three_layers()
    bad = [sha(t) for t in tars]
    bad[1] = sha(b"something else")
    d = add_image(layout, tars, diff_ids=bad)
    set_index(layout, [named(d, "app")])
    index = (layout.root / "index.json").read_bytes()
    blobs = blob_names(layout.root)
    r = run_cli("convert", layout.root, "--compression", "zstd", "--jobs", "2")
    assert r.code == 5
    assert "diff_id" in r.stderr and bad[1] in r.stderr
    assert (layout.root / "index.json").read_bytes() == index
    assert not any((layout.root / ".layouttool" / "tmp").iterdir())
    # the two good layers may have been written (harmless orphans for gc); never the bad one
    assert sha(compress(tars[1], Compression.ZSTD))[7:] not in blob_names(layout.root) - blobs


@pytest.mark.parametrize("where", [10, -10])
def test_corrupt_layer_refused(tmp_path: Path, where: int) -> None:
    root = import_archive("gzip", tmp_path / "img")
    (m,) = manifests_of(root)
    p = root / "blobs/sha256" / m["layers"][0]["digest"][7:]
    data = bytearray(p.read_bytes())
    data[where] ^= 0xFF
    p.write_bytes(bytes(data))
    index = (root / "index.json").read_bytes()
    r = run_cli("convert", root, "--compression", "zstd")
    assert r.code in (4, 5), r.stderr
    assert m["layers"][0]["digest"] in r.stderr
    assert (root / "index.json").read_bytes() == index


def test_bad_options(tmp_path: Path) -> None:
    root = import_archive("gzip", tmp_path / "img")
    r = run_cli("convert", root, "--compression", "gzip", "--level", "12")
    assert r.code == 4 and "out of range" in r.stderr
    r = run_cli("convert", root, "--level", "3")
    assert r.code == 4 and "--level needs --compression" in r.stderr
    r = run_cli("convert", f"{root}:nope", "--compression", "none")
    assert r.code == 3
    assert run_cli("convert", "--help").code == 0


def test_entries_added_meanwhile_survive(tmp_path: Path) -> None:
    """index.json is re-read under its lock at the end: a tag made during the run stays."""
    root = import_archive("gzip", tmp_path / "img")
    tag_image(f"{root}", "first")

    class Tagger:
        tagged = False

        def task(self, label: str, total: int | None) -> Any:
            if not self.tagged:
                self.tagged = True
                tag_image(f"{root}:first", "added-meanwhile")
            return self

        def advance(self, n: int) -> None:
            pass

        def done(self) -> None:
            pass

        def note(self, message: str) -> None:
            pass

    res = convert_image(f"{root}:first", compression=Compression.ZSTD, progress=Tagger())  # type: ignore[arg-type]
    by_ref = {e.get("annotations", {}).get(mt.ANNOT_REF_NAME): e["digest"] for e in entries(root)}
    assert by_ref["first"] == res.entries[0].new.digest
    assert by_ref["added-meanwhile"] == res.entries[0].old.digest
    assert_verified(root)


def test_public_api_exports_convert() -> None:
    # run from the checkout: the venv's editable finder may map a namespace package
    code = "import layouttool as l; print(l.convert_image.__name__, l.ConvertResult.__name__)"
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True
    )
    assert proc.stdout.split() == ["convert_image", "ConvertResult"]


def test_library_api_and_progress(tmp_path: Path) -> None:
    root = import_archive("zstd", tmp_path / "img")
    seen: list[tuple[str, int | None]] = []
    advanced: list[int] = []

    class Rec:
        def task(self, label: str, total: int | None) -> Any:
            seen.append((label, total))
            return self

        def advance(self, n: int) -> None:
            advanced.append(n)

        def done(self) -> None:
            pass

        def note(self, message: str) -> None:
            pass

    res = convert_image(str(root), compression="gzip", progress=Rec())  # type: ignore[arg-type]
    assert isinstance(res, ConvertResult)
    assert seen == [("layer 0308a5d81b28", 4314)]
    assert sum(advanced) == 4314
    assert res.bytes_in == 4314 and res.bytes_out > 0 and res.seconds >= 0
    j = res.to_json()
    assert set(j) >= {"entries", "images", "bytesIn", "bytesOut", "seconds", "blobsWritten"}


# ---------------------------------------------------------------------------------- properties
@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    payload=st.binary(max_size=5000),
    trailer=st.binary(max_size=64),
    chain=st.lists(st.sampled_from(["gzip", "zstd", "none"]), min_size=1, max_size=4),
    docker=st.booleans(),
)
def test_any_chain_of_conversions_keeps_the_uncompressed_bytes(
    tmp_path_factory: pytest.TempPathFactory,
    payload: bytes,
    trailer: bytes,
    chain: list[str],
    docker: bool,
) -> None:
    tmp = tmp_path_factory.mktemp("prop")
    tar = build_layer([{"name": "p", "data": payload}]) + trailer
    layout = Layout.init(tmp / "l")
    d = add_image(layout, [tar], compression=Compression.GZIP)
    set_index(layout, [named(d, "x")])
    for target in chain:
        fmt = "docker" if docker and target != "zstd" else "oci"
        res = convert_image(str(layout.root), compression=target, format=fmt)  # type: ignore[arg-type]
        assert res.images[0].layers[0].diff_id == sha(tar)
    m = parse_manifest(layout.read_blob(Descriptor.from_json(entries(layout.root)[0])))
    layer = m.layers[0]
    c = mt.layer_compression(layer.media_type)
    raw = (layout.root / "blobs/sha256" / layer.digest.encoded).read_bytes()
    plain = {
        Compression.NONE: lambda b: b,
        Compression.GZIP: gzip.decompress,
        Compression.ZSTD: lambda b: zstandard.ZstdDecompressor().decompressobj().decompress(b),
    }[c](raw)  # type: ignore[index]
    assert plain == tar
    assert verify_layout(layout.root).ok


def test_index_parses_after_docker_conversion(tmp_path: Path) -> None:
    layout = Layout.init(tmp_path / "l")
    a = add_image(layout, three_layers()[:1])
    idx = layout.put_json(
        {
            "schemaVersion": 2,
            "mediaType": mt.MT_OCI_INDEX,
            "manifests": [{**a.to_json(), "platform": {"architecture": "amd64", "os": "linux"}}],
        },
        mt.MT_OCI_INDEX,
    )
    set_index(layout, [named(idx, "i")])
    convert_cli(layout.root, "--format", "docker")
    (e,) = entries(layout.root)
    assert e["mediaType"] == mt.MT_DOCKER_LIST
    doc = parse_index(
        (layout.root / "blobs/sha256" / e["digest"][7:]).read_bytes(), "i", mt.MT_DOCKER_LIST
    )
    assert doc.manifests[0].media_type == mt.MT_DOCKER_MANIFEST
    assert doc.manifests[0].platform == Platform("linux", "amd64")
    assert_verified(layout.root)


def test_copy_blob_falls_back_to_streaming(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    a, b, c = (Layout.init(tmp_path / n) for n in "abc")
    data = os.urandom(3 << 20)
    info = a.put_bytes(data)
    assert b.copy_blob(a, info.digest, info.size) == info

    def refuse(*_a: object, **_k: object) -> int:
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(os, "copy_file_range", refuse)
    assert c.copy_blob(a, info.digest, info.size) == info
    assert c.blob_path(info.digest).read_bytes() == data
    p = a.blob_path(info.digest)
    p.write_bytes(data[:-1] + bytes([data[-1] ^ 1]))
    monkeypatch.undo()
    d = Layout.init(tmp_path / "d")
    with pytest.raises(IntegrityError, match="is corrupt"):
        d.copy_blob(a, info.digest, info.size)
    assert not d.has_blob(info.digest)
