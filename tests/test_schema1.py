"""Docker v2 schema 1 manifests found in a layout are upgraded by convert.

The manifests are built here, signed and unsigned. The JWS ``signatures`` block of the signed
one is fake (valid JSON, no valid signature): the upgrade strips signatures without checking
them (a layout has no trust root, and the result is a new unsigned document), so a real key
would test nothing more. Expectations are written out by hand from the upgrade rules.
"""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from conftest import run_cli
from layerbuild import build_layer

from layouttool import mediatypes as mt
from layouttool.errors import InvalidInputError
from layouttool.ops.verify import verify_layout
from layouttool.schema1 import parse_schema1, synthesize_config
from layouttool.store import Layout

A, B, C = "a" * 64, "b" * 64, "c" * 64
BASE_TAR = build_layer(
    [{"name": "etc", "type": "dir"}, {"name": "etc/os-release", "data": "ID=t\n"}]
)
EMPTY_TAR = b"\0" * 1024
TOP_TAR = build_layer([{"name": "app", "data": b"#!/bin/sh\necho hi\n", "mode": 0o755}])

# base first; the manifest lists them newest first
V1 = [
    {
        "id": A,
        "created": "2016-01-01T00:00:00Z",
        "container_config": {"Cmd": ["/bin/sh", "-c", "#(nop) ADD file:0123 in /"]},
        "Size": 5,
    },
    {
        "id": B,
        "parent": A,
        "created": "2016-01-02T00:00:00Z",
        "container_config": {"Cmd": ["/bin/sh", "-c", "#(nop) ENV X=1"]},
        "throwaway": True,
    },
    {
        "id": C,
        "parent": B,
        "created": "2016-01-03T00:00:00Z",
        "author": "me@example.com",
        "comment": "top",
        "container": "c0ffee",
        "container_config": {"Cmd": ["/bin/sh", "-c", "cp app /app"]},
        "docker_version": "1.12.0",
        "config": {"Env": ["X=1"], "Cmd": ["/app"]},
        "architecture": "amd64",
        "os": "linux",
        "Size": 18,
        "layer_id": "x",
        "parent_id": "y",
    },
]


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def schema1_doc(blobs: list[str], v1: list[dict[str, Any]], *, signed: bool) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "schemaVersion": 1,
        "name": "library/test",
        "tag": "latest",
        "architecture": "amd64",
        "fsLayers": [{"blobSum": b} for b in reversed(blobs)],
        "history": [{"v1Compatibility": json.dumps(h)} for h in reversed(v1)],
    }
    if signed:
        doc["signatures"] = [
            {
                "header": {"jwk": {"crv": "P-256", "kty": "EC", "x": "fake", "y": "fake"}},
                "alg": "ES256",
                "signature": "ZmFrZQ",
                "protected": "ZmFrZQ",
            }
        ]
    return doc


def make_layout(
    root: Path, *, signed: bool, v1: list[dict[str, Any]] = V1
) -> tuple[Layout, list[str]]:
    layout = Layout.init(root)
    blobs = [
        str(layout.put_bytes(gzip.compress(t, mtime=0)).digest)
        for t in (BASE_TAR, EMPTY_TAR, TOP_TAR)
    ]
    media_type = mt.MT_DOCKER_SCHEMA1_SIGNED if signed else mt.MT_DOCKER_SCHEMA1
    desc = layout.put_json(schema1_doc(blobs, v1, signed=signed), media_type)
    layout.update_index(lambda _c, _d: [desc.with_(annotations={mt.ANNOT_REF_NAME: "test:latest"})])
    return layout, blobs


def expected_config() -> dict[str, Any]:
    """Worked out by hand: the top v1Compatibility without id/parent/Size/layer_id/parent_id,
    plus rootfs (2 layers: the throwaway one has none) and 3 history items; keys sorted."""
    return {
        "architecture": "amd64",
        "author": "me@example.com",
        "comment": "top",
        "config": {"Env": ["X=1"], "Cmd": ["/app"]},
        "container": "c0ffee",
        "container_config": {"Cmd": ["/bin/sh", "-c", "cp app /app"]},
        "created": "2016-01-03T00:00:00Z",
        "docker_version": "1.12.0",
        "history": [
            {
                "created": "2016-01-01T00:00:00Z",
                "created_by": "/bin/sh -c #(nop) ADD file:0123 in /",
            },
            {
                "created": "2016-01-02T00:00:00Z",
                "created_by": "/bin/sh -c #(nop) ENV X=1",
                "empty_layer": True,
            },
            {
                "created": "2016-01-03T00:00:00Z",
                "created_by": "/bin/sh -c cp app /app",
                "author": "me@example.com",
                "comment": "top",
            },
        ],
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [sha(BASE_TAR), sha(TOP_TAR)]},
    }


def blob(root: Path, digest: str) -> bytes:
    return (root / "blobs" / "sha256" / digest.split(":")[1]).read_bytes()


def converted(root: Path) -> tuple[dict[str, Any], dict[str, Any], bytes, dict[str, Any]]:
    (entry,) = json.loads((root / "index.json").read_bytes())["manifests"]
    manifest = json.loads(blob(root, entry["digest"]))
    cfg_raw = blob(root, manifest["config"]["digest"])
    return entry, manifest, cfg_raw, json.loads(cfg_raw)


@pytest.mark.parametrize("signed", [False, True], ids=["unsigned", "signed"])
def test_upgrade_to_oci(tmp_path: Path, signed: bool) -> None:
    layout, blobs = make_layout(tmp_path / "l", signed=signed)
    r = run_cli("convert", layout.root, "--json")
    assert r.code == 0, r.stderr
    out = json.loads(r.stdout)
    (image,) = out["images"]
    assert image["schema1"] is True and image["config"]["old"] is None
    entry, manifest, cfg_raw, cfg = converted(layout.root)
    assert entry["mediaType"] == mt.MT_OCI_MANIFEST
    assert entry["annotations"] == {mt.ANNOT_REF_NAME: "test:latest"}
    assert manifest["mediaType"] == mt.MT_OCI_MANIFEST
    assert manifest["config"]["mediaType"] == mt.MT_OCI_CONFIG
    # base first, throwaway layer dropped, gzip blobs kept as they are
    assert [(la["mediaType"], la["digest"]) for la in manifest["layers"]] == [
        (mt.MT_OCI_LAYER_GZIP, blobs[0]),
        (mt.MT_OCI_LAYER_GZIP, blobs[2]),
    ]
    assert cfg == expected_config()
    assert list(cfg) == sorted(cfg)
    # Docker's bytes (its pull made the config with image/v1.MakeConfigFromV1Config): compact,
    # keys sorted, rootfs and each history item in their struct's field order
    top = {k: v for k, v in V1[2].items() if k not in ("id", "parent", "Size", "layer_id",
                                                       "parent_id")}
    items = [(k, json.dumps(v, separators=(",", ":"))) for k, v in top.items()]
    items.append(("rootfs", f'{{"type":"layers","diff_ids":["{sha(BASE_TAR)}","{sha(TOP_TAR)}"]}}'))
    order = ("created", "author", "created_by", "comment", "empty_layer")  # image.History
    hist = [
        json.dumps({k: h[k] for k in order if k in h}, separators=(",", ":"))
        for h in expected_config()["history"]
    ]
    items.append(("history", "[" + ",".join(hist) + "]"))
    assert cfg_raw.decode() == "{" + ",".join(f'"{k}":{v}' for k, v in sorted(items)) + "}"
    assert [la["diffID"] for la in image["layers"]] == [sha(BASE_TAR), sha(TOP_TAR)]
    assert "signatures" not in cfg_raw.decode()
    assert verify_layout(layout.root).ok


def test_signed_and_unsigned_upgrade_to_the_same_image(tmp_path: Path) -> None:
    digests = []
    for signed in (False, True):
        layout, _ = make_layout(tmp_path / str(signed), signed=signed)
        assert run_cli("convert", layout.root).code == 0
        digests.append(converted(layout.root)[0]["digest"])
    assert digests[0] == digests[1]


def test_upgrade_to_docker_with_recompression(tmp_path: Path) -> None:
    layout, _ = make_layout(tmp_path / "l", signed=True)
    r = run_cli("convert", layout.root, "--format", "docker", "--compression", "none")
    assert r.code == 0, r.stderr
    entry, manifest, _, cfg = converted(layout.root)
    assert entry["mediaType"] == manifest["mediaType"] == mt.MT_DOCKER_MANIFEST
    assert manifest["config"]["mediaType"] == mt.MT_DOCKER_CONFIG
    assert [(la["mediaType"], la["digest"], la["size"]) for la in manifest["layers"]] == [
        (mt.MT_DOCKER_LAYER, sha(BASE_TAR), len(BASE_TAR)),
        (mt.MT_DOCKER_LAYER, sha(TOP_TAR), len(TOP_TAR)),
    ]
    assert cfg == expected_config()
    assert verify_layout(layout.root).ok
    # a second convert finds nothing to do
    before = (layout.root / "index.json").read_bytes()
    assert run_cli("convert", layout.root, "--format", "docker", "--compression", "none").code == 0
    assert (layout.root / "index.json").read_bytes() == before


def test_history_and_fslayers_counts_must_match(tmp_path: Path) -> None:
    layout = Layout.init(tmp_path / "l")
    doc = schema1_doc([sha(b"x")] * 2, V1, signed=False)
    desc = layout.put_json(doc, mt.MT_DOCKER_SCHEMA1)
    layout.update_index(lambda _c, _d: [desc])
    before = (layout.root / "index.json").read_bytes()
    r = run_cli("convert", layout.root)
    assert r.code == 4
    assert "3 history entries but 2 fsLayers" in r.stderr
    assert (layout.root / "index.json").read_bytes() == before


def test_layer_blob_corrupt(tmp_path: Path) -> None:
    layout, blobs = make_layout(tmp_path / "l", signed=False)
    top = layout.root / "blobs" / "sha256" / blobs[2][7:]
    top.write_bytes(gzip.compress(b"other content", mtime=0))
    before = (layout.root / "index.json").read_bytes()
    r = run_cli("convert", layout.root)
    assert r.code == 5 and blobs[2] in r.stderr
    assert (layout.root / "index.json").read_bytes() == before


# ---------------------------------------------------------------------------------- unit
def raw(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc).encode()


def test_repeated_consecutive_ids_are_one_layer() -> None:
    # Docker's rule: a step that only changed the config repeats its parent's ID
    v1 = [V1[0], {**V1[0], "created": "2016-01-01T00:00:01Z"}, {**V1[2], "parent": A}]
    m = parse_schema1(raw(schema1_doc([sha(b"1"), sha(b"2"), sha(b"3")], v1, signed=False)))
    assert [str(e.blob) for e in m.entries] == [sha(b"1"), sha(b"3")]


def test_non_consecutive_repeated_id_refused() -> None:
    v1 = [V1[0], {**V1[1], "throwaway": False}, {**V1[0]}]
    with pytest.raises(InvalidInputError, match="appears more than once"):
        parse_schema1(raw(schema1_doc([sha(b"1"), sha(b"2"), sha(b"3")], v1, signed=False)))


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d.update(schemaVersion=2), "schemaVersion must be 1"),
        (lambda d: d.update(fsLayers=[], history=[]), "no fsLayers"),
        (lambda d: d["history"][0].update(v1Compatibility=5), "must be a string"),
        (lambda d: d["history"][0].update(v1Compatibility="[1]"), "not an object"),
        (lambda d: d["fsLayers"][0].update(blobSum="sha256:../../x"), "blobSum"),
    ],
)
def test_malformed(mutate: Any, message: str) -> None:
    doc = schema1_doc([sha(b"1"), sha(b"2"), sha(b"3")], V1, signed=True)
    mutate(doc)
    with pytest.raises(InvalidInputError, match=message):
        parse_schema1(raw(doc))


def test_synthesize_config_needs_one_diff_id_per_layer() -> None:
    m = parse_schema1(raw(schema1_doc([sha(b"1"), sha(b"2"), sha(b"3")], V1, signed=False)))
    assert len(m.layers) == 2 and m.signed is False
    assert str(m.platform) == "linux/amd64"
    with pytest.raises(InvalidInputError):
        synthesize_config(m, [])
