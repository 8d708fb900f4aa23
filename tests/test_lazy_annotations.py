"""A layer that leaves a lazy-pull format (zstd:chunked, eStargz) loses that format's
annotations, and keeps every other one.

The keys are the ones the writers use: containers/storage ``pkg/chunked`` writes
``io.github.containers.zstd-chunked.*``; podman 4 and stargz-snapshotter write the older
``io.containers.zstd-chunked.*``; eStargz layers carry ``containerd.io/snapshot/stargz/toc.digest``
and ``io.containers.estargz.uncompressed-size``. Their offsets and digests describe one
compressed blob: after recompression they point at nothing.
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

from conftest import run_cli
from podmanutil import Podman
from test_convert import (
    add_image,
    assert_verified,
    convert_cli,
    manifests_of,
    named,
    set_index,
    three_layers,
)

from layouttool import mediatypes as mt
from layouttool.codec import Compression
from layouttool.store import Layout

LAZY = {
    "io.github.containers.zstd-chunked.manifest-checksum": "sha256:" + "1" * 64,
    "io.github.containers.zstd-chunked.manifest-position": "1:2:3:1",
    "io.github.containers.zstd-chunked.tarsplit-position": "4:5:6",
    "io.github.containers.zstd-chunked.tarsplit-checksum": "sha256:" + "2" * 64,
    "io.containers.zstd-chunked.manifest-checksum": "sha256:" + "3" * 64,
    "io.containers.zstd-chunked.manifest-position": "7:8:9:1",
    "containerd.io/snapshot/stargz/toc.digest": "sha256:" + "4" * 64,
    "io.containers.estargz.uncompressed-size": "10240",
}
KEPT = {
    "org.opencontainers.image.title": "layer.tar",
    "org.example.layer": "kept",
    # near misses: other keys of the same vendors that say nothing about the blob's bytes
    "io.github.containers.compression.zstd": "true",
    "io.containers.other": "x",
}


def test_every_lazy_key_dropped_on_recompress_and_others_kept(tmp_path: Path) -> None:
    layout = Layout.init(tmp_path / "l")
    d = add_image(
        layout,
        three_layers(),
        compression=Compression.ZSTD,
        layer_annotations={**LAZY, **KEPT},
    )
    set_index(layout, [named(d, "app")])
    convert_cli(f"{layout.root}:app", "--compression", "gzip")
    (m,) = manifests_of(layout.root)
    for la in m["layers"]:
        assert la["mediaType"] == mt.MT_OCI_LAYER_GZIP
        assert la["annotations"] == KEPT
    assert_verified(layout.root)


def test_same_compression_keeps_the_blob_and_its_annotations(tmp_path: Path) -> None:
    layout = Layout.init(tmp_path / "l")
    d = add_image(
        layout, three_layers()[:1], compression=Compression.ZSTD, layer_annotations=LAZY
    )
    set_index(layout, [named(d, "app")])
    convert_cli(f"{layout.root}:app", "--compression", "zstd")
    (m,) = manifests_of(layout.root)
    # not recompressed: the offsets still describe these very bytes
    assert m["layers"][0]["annotations"] == LAZY


def _podman_zstd_chunked(tmp_path: Path, podman: Podman) -> Path:
    """An OCI layout whose one layer podman wrote with ``--compression-format zstd:chunked``.

    podman builds the layer itself: podman 4.3 writes zstd:chunked by re-encoding the tar
    headers with Go's archive/tar, so only a layer Go wrote keeps its diff_id (from one that
    Python's tarfile wrote it makes a blob whose content no longer matches the config, which
    convert rightly refuses with exit 5)."""
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "hello").write_text("hello\n")
    (ctx / "Containerfile").write_text("FROM scratch\nCOPY hello /hello\n")
    podman("build", "-q", "-t", "app:1", ctx)
    out = tmp_path / "chunked"
    podman("push", "-q", "--compression-format", "zstd:chunked", "app:1", f"oci:{out}:app")
    return out


def test_podman_zstd_chunked_layer_converted(tmp_path: Path, podman: Podman) -> None:
    root = _podman_zstd_chunked(tmp_path, podman)
    (before,) = manifests_of(root)
    written = before["layers"][0]["annotations"]
    # as podman 4 writes it (the older key family)
    assert {"io.containers.zstd-chunked.manifest-checksum",
            "io.containers.zstd-chunked.manifest-position"} <= set(written)
    convert_cli(f"{root}:app", "--compression", "gzip")
    (after,) = manifests_of(root)
    assert after["layers"][0]["mediaType"] == mt.MT_OCI_LAYER_GZIP
    assert "annotations" not in after["layers"][0]
    assert_verified(root)
    # podman reads the converted image
    podman("pull", "-q", f"oci:{root}:app")


def test_podman_zstd_chunked_layer_exported_decompressed(tmp_path: Path, podman: Podman) -> None:
    root = _podman_zstd_chunked(tmp_path, podman)
    out = tmp_path / "app.tar"
    assert run_cli("to-docker-save", f"{root}:app", "-o", out).code == 0
    with tarfile.open(out) as tar:
        index = json.load(tar.extractfile("index.json"))  # type: ignore[arg-type]
        digest = index["manifests"][0]["digest"].split(":")[1]
        manifest = json.load(tar.extractfile(f"blobs/sha256/{digest}"))  # type: ignore[arg-type]
    [la] = manifest["layers"]
    assert la["mediaType"] == mt.MT_OCI_LAYER
    assert "annotations" not in la
    podman("load", "-q", "-i", out)


def _index_with_zstd_instance(root: Path) -> Layout:
    """An index as ``podman push --add-compression zstd`` writes it: a gzip instance and a
    zstd one, the latter marked ``io.github.containers.compression.zstd``."""
    layout = Layout.init(root)
    gz = add_image(layout, three_layers()[:2])
    zs = add_image(layout, three_layers()[:2], compression=Compression.ZSTD)
    index = layout.put_json(
        {
            "schemaVersion": 2,
            "mediaType": mt.MT_OCI_INDEX,
            "manifests": [
                {**gz.to_json(), "platform": {"architecture": "amd64", "os": "linux"}},
                {
                    **zs.to_json(),
                    "platform": {"architecture": "amd64", "os": "linux"},
                    "annotations": {mt.ANNOT_INSTANCE_ZSTD: "true", "org.example": "kept"},
                },
            ],
        },
        mt.MT_OCI_INDEX,
    )
    set_index(layout, [named(index, "multi")])
    return layout


def _instance_annotations(root: Path) -> list[dict[str, str]]:
    entry = json.loads((root / "index.json").read_bytes())["manifests"][0]
    index = json.loads((root / "blobs/sha256" / entry["digest"].split(":")[1]).read_bytes())
    return [m.get("annotations", {}) for m in index["manifests"]]


def test_zstd_instance_mark_dropped_when_its_layers_leave_zstd(tmp_path: Path) -> None:
    layout = _index_with_zstd_instance(tmp_path / "l")
    convert_cli(f"{layout.root}:multi", "--compression", "gzip")
    assert _instance_annotations(layout.root) == [{}, {"org.example": "kept"}]
    assert_verified(layout.root)


def test_zstd_instance_mark_kept_when_its_layers_stay_zstd(tmp_path: Path) -> None:
    layout = _index_with_zstd_instance(tmp_path / "l")
    convert_cli(f"{layout.root}:multi", "--compression", "zstd")
    assert _instance_annotations(layout.root) == [
        {}, {mt.ANNOT_INSTANCE_ZSTD: "true", "org.example": "kept"}
    ]
