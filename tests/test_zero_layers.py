"""Images with no layer, as BuildKit saves them (``FROM scratch`` plus metadata only):
``"Layers": []`` in manifest.json, and a config whose ``created``, ``rootfs.diff_ids`` and
``history`` are ``null`` (Go's nil values). Import keeps the config byte for byte (its digest
is the image ID); unpack makes an empty rootfs; convert and to-docker-save carry them through.
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest
from conftest import run_cli
from podmanutil import Podman
from test_import import blob_bytes, docker_save, index_entries, manifest_of, write
from test_import_v1 import assert_verified, import_from

from layouttool import mediatypes as mt
from layouttool.ops.importer import import_docker_save
from layouttool.ops.unpack import unpack_image
from layouttool.reader import NULL_FIELD

#: the config's nulls (kept byte for byte: its digest is the image ID); no layers is no finding
INPUT_WARNINGS = frozenset({NULL_FIELD})

CONFIG = (
    b'{"architecture":"amd64","config":{"Env":["PATH=/usr/local/bin:/usr/bin"],'
    b'"WorkingDir":"/","Labels":{"org.example":"meta-only"}},"created":null,"history":null,'
    b'"os":"linux","rootfs":{"type":"layers","diff_ids":null}}'
)


def _save(form: str, layers: object = ()) -> bytes:
    return docker_save(
        [{"tags": ["scratch:meta"], "layers": list(layers) if layers else [], "config": CONFIG}],
        form=form,
    )


@pytest.mark.parametrize("stream", [False, True], ids=["file", "stream"])
@pytest.mark.parametrize("form", ["legacy", "docker25"])
def test_zero_layer_save_imports_config_byte_exact(tmp_path: Path, form: str, stream: bool) -> None:
    src = write(tmp_path, _save(form))
    out = tmp_path / "oci"
    [img] = import_from(src, out, stream=stream).images
    assert img.ref == "scratch:meta" and img.layers == ()
    assert blob_bytes(out, img.config_digest) == CONFIG
    [entry] = index_entries(out)
    man = manifest_of(out, entry["digest"])
    assert man["layers"] == []
    assert entry["platform"] == {"architecture": "amd64", "os": "linux"}
    assert_verified(out, INPUT_WARNINGS)
    rootfs = tmp_path / "rootfs"
    res_unpack = unpack_image(f"{out}:scratch:meta", rootfs, rootless=True)
    assert res_unpack.entries == 0
    assert rootfs.is_dir() and list(rootfs.iterdir()) == []


def test_null_layers_in_manifest_json(tmp_path: Path) -> None:
    data = _save("legacy")
    with tarfile.open(fileobj=__import__("io").BytesIO(data)) as t:
        man = json.load(t.extractfile("manifest.json"))  # type: ignore[arg-type]
    man[0]["Layers"] = None
    src = write(tmp_path, docker_save(
        [{"tags": ["scratch:meta"], "layers": [], "config": CONFIG}], manifest=man))
    [img] = import_docker_save(src, tmp_path / "oci").images
    assert img.layers == ()


@pytest.mark.parametrize(
    "args",
    [
        ("--compression", "zstd"),
        ("--format", "docker"),
        ("--format", "docker", "--compression", "none"),
    ],
)
def test_convert_keeps_the_zero_layer_image(tmp_path: Path, args: tuple[str, ...]) -> None:
    out = tmp_path / "oci"
    import_docker_save(write(tmp_path, _save("legacy")), out)
    dest = tmp_path / "converted"
    r = run_cli("convert", f"{out}:scratch:meta", *args, "-o", dest)
    assert r.code == 0, r.stderr
    [entry] = index_entries(dest)
    man = manifest_of(dest, entry["digest"])
    assert man["layers"] == []
    assert blob_bytes(dest, man["config"]["digest"]) == CONFIG
    if "docker" in args:
        assert man["mediaType"] == mt.MT_DOCKER_MANIFEST
    assert_verified(dest, INPUT_WARNINGS)


def test_to_docker_save_round_trip_and_podman_load(tmp_path: Path, podman: Podman) -> None:
    out = tmp_path / "oci"
    [img] = import_docker_save(write(tmp_path, _save("docker25")), out).images
    exported = tmp_path / "exported.tar"
    r = run_cli("to-docker-save", f"{out}:scratch:meta", "-o", exported)
    assert r.code == 0, r.stderr
    with tarfile.open(exported) as t:
        [entry] = json.load(t.extractfile("manifest.json"))  # type: ignore[arg-type]
    assert entry["Layers"] == [] and entry["RepoTags"] == ["scratch:meta"]
    [back] = import_docker_save(exported, tmp_path / "back").images
    assert back.config_digest == img.config_digest and back.layers == ()
    podman("load", "-q", "-i", exported)
    assert podman.inspect("scratch:meta")["Config"]["WorkingDir"] == "/"
