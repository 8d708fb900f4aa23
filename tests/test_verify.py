"""``verify``: good layouts pass; every problem of a broken one is reported with its exit code."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import run_cli, sh
from fixtures_path import shared_fixture
from test_store import first_layer, make_image, make_layout

from layouttool import mediatypes as mt
from layouttool.model import Descriptor
from layouttool.ops.verify import verify_layout
from layouttool.store import Layout


def problems(path: Path) -> list[tuple[str, str]]:
    res = verify_layout(path)
    return [(p.code, p.message) for p in res.problems]


def manifest_of(layout: Layout, desc: Descriptor) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(layout.blob_path(desc.digest).read_bytes())
    return doc


def config_desc(layout: Layout, desc: Descriptor) -> Descriptor:
    return Descriptor.from_json(manifest_of(layout, desc)["config"])


def test_good_layout(tmp_path: Path) -> None:
    layout = make_layout(tmp_path, "a", "b")
    make_image(layout, "docker", docker=True)
    res = verify_layout(layout.root)
    assert res.ok and res.exit_code == 0
    # 3 images x (manifest + config + layer)
    assert res.checked == 9
    r = run_cli("verify", layout.root)
    assert r.code == 0, r.stderr
    assert r.stdout.startswith("OK: 9 blobs")
    j = json.loads(run_cli("verify", layout.root, "--json").stdout)
    assert set(j) == {"layout", "ok", "strict", "checked", "bytesChecked", "layersChecked",
                      "problems", "warnings"}
    assert j["ok"] is True and j["problems"] == []


def test_empty_layout_is_ok(tmp_path: Path) -> None:
    assert verify_layout(Layout.init(tmp_path / "e").root).ok


def test_missing_blob(tmp_path: Path) -> None:
    layout = make_layout(tmp_path)
    d = make_image(layout, "a")
    layer = first_layer(layout, d)
    layout.blob_path(layer.digest).unlink()
    res = verify_layout(layout.root)
    assert res.exit_code == 5
    assert [(p.code, p.where, p.digest) for p in res.problems] == [
        ("blob-missing", f"a > layer {layer.digest}", layer.digest)
    ]


def test_corrupt_layer(tmp_path: Path) -> None:
    layout = make_layout(tmp_path)
    d = make_image(layout, "a")
    layer = first_layer(layout, d)
    path = layout.blob_path(layer.digest)
    data = bytearray(path.read_bytes())
    data[-3] ^= 1
    path.write_bytes(bytes(data))
    res = verify_layout(layout.root)
    assert res.exit_code == 5
    assert len(res.problems) == 1
    assert res.problems[0].code == "digest-mismatch"
    assert f"blob {layer.digest} is corrupt" in res.problems[0].message


def test_wrong_size(tmp_path: Path) -> None:
    layout = make_layout(tmp_path)
    d = make_image(layout, "a")
    layer = first_layer(layout, d)
    with open(layout.blob_path(layer.digest), "ab") as f:
        f.write(b"\0")
    ((code, msg),) = problems(layout.root)
    assert code == "size-mismatch"
    assert f"size {layer.size + 1} on disk does not match descriptor size {layer.size}" in msg
    assert verify_layout(layout.root).exit_code == 5


def _retarget(layout: Layout, ref: str, manifest: dict[str, Any], media_type: str) -> None:
    """Store ``manifest`` and point ``ref`` at it (other entries kept)."""
    new = layout.put_bytes(json.dumps(manifest).encode()).descriptor(
        media_type, annotations={mt.ANNOT_REF_NAME: ref}
    )
    layout.update_index(lambda es, _d: [e for e in es if e.ref_name != ref] + [new])


def test_bad_json_config(tmp_path: Path) -> None:
    layout = make_layout(tmp_path)
    d = make_image(layout, "a")
    m = manifest_of(layout, d)
    bad = layout.put_bytes(b'{"architecture": "amd64", ')
    m["config"] = bad.descriptor(mt.MT_OCI_CONFIG).to_json()
    _retarget(layout, "a", m, mt.MT_OCI_MANIFEST)
    res = verify_layout(layout.root)
    assert res.exit_code == 4
    assert [p.code for p in res.problems] == ["invalid-json"]
    assert "not valid JSON" in res.problems[0].message


def test_bad_json_manifest(tmp_path: Path) -> None:
    layout = make_layout(tmp_path)
    bad = layout.put_bytes(b"<html>not json</html>")
    desc = bad.descriptor(mt.MT_OCI_MANIFEST, annotations={mt.ANNOT_REF_NAME: "x"})
    layout.update_index(lambda es, _d: [*es, desc])
    res = verify_layout(layout.root)
    assert res.exit_code == 4
    assert res.problems[0].where == "x"


def test_media_type_disagreement(tmp_path: Path) -> None:
    layout = make_layout(tmp_path)
    d = make_image(layout, "a")
    m = manifest_of(layout, d)
    # the document says Docker, the index.json descriptor says OCI
    m["mediaType"] = mt.MT_DOCKER_MANIFEST
    _retarget(layout, "a", m, mt.MT_OCI_MANIFEST)
    res = verify_layout(layout.root)
    # a quirk that does not stop reading: a warning, exit 0; --strict makes it count
    assert res.ok and res.exit_code == 0 and res.problems == ()
    (w,) = res.warnings
    assert w.code == "media-type-mismatch" and w.severity == "warning"
    assert w.digest == layout.read_index().manifests[-1].digest
    assert verify_layout(layout.root, strict=True).exit_code == 4


def test_diff_id_count_mismatch(tmp_path: Path) -> None:
    layout = make_layout(tmp_path)
    make_image(layout, "a", layers=[b"one", b"two"], diff_ids=["sha256:" + "0" * 64])
    res = verify_layout(layout.root)
    assert res.exit_code == 5
    (p,) = res.problems
    assert "lists 1 diff_ids but the manifest has 2 layers" in p.message


def test_schema_invalid_oci_manifest(tmp_path: Path) -> None:
    layout = make_layout(tmp_path)
    d = make_image(layout, "a")
    m = manifest_of(layout, d)
    m["layers"][0]["mediaType"] = "not a media type"
    m["annotations"] = {"org.opencontainers.image.created": "x"}
    _retarget(layout, "a", m, mt.MT_OCI_MANIFEST)
    res = verify_layout(layout.root)
    assert res.exit_code == 4
    assert {p.code for p in res.problems} == {"schema"}


def test_every_problem_is_reported(tmp_path: Path) -> None:
    """Several broken images: all of their problems, not only the first, and exit 5 wins."""
    layout = make_layout(tmp_path, "good")
    missing = make_image(layout, "missing", layers=[b"m"])
    corrupt = make_image(layout, "corrupt", layers=[b"c"])
    make_image(layout, "count", layers=[b"x", b"y"], diff_ids=["sha256:" + "0" * 64])
    layout.blob_path(first_layer(layout, missing).digest).unlink()
    layout.blob_path(config_desc(layout, corrupt).digest).write_bytes(b"{}")
    res = verify_layout(layout.root)
    assert res.exit_code == 5
    wheres = sorted(p.where.split(" ")[0] for p in res.problems)
    assert wheres == ["corrupt", "count", "missing"]
    r = run_cli("verify", layout.root)
    assert r.code == 5
    lines = r.stdout.splitlines()
    assert sum(line.startswith("layouttool: problem: ") for line in lines) == 3
    assert lines[-1].startswith("3 problem(s): ")
    j = json.loads(run_cli("verify", layout.root, "--json").stdout)
    assert j["ok"] is False and len(j["problems"]) == 3
    assert {"code", "severity", "digest", "where", "message"} == set(j["problems"][0])


def test_only_invalid_problems_exit_4(tmp_path: Path) -> None:
    layout = make_layout(tmp_path, "good")
    bad = layout.put_bytes(b"[]")
    layout.update_index(
        lambda es, _d: [*es, bad.descriptor(mt.MT_OCI_MANIFEST, annotations={
            mt.ANNOT_REF_NAME: "bad"})]
    )
    assert run_cli("verify", layout.root).code == 4


def test_shared_index_with_subject_and_nested_index(tmp_path: Path) -> None:
    """A nested index and a referrer (subject) are walked and checked too."""
    layout = make_layout(tmp_path)
    img = make_image(layout, None, add_to_index=False)
    img_p = img.with_(platform=None).to_json()
    img_p["platform"] = {"os": "linux", "architecture": "amd64"}
    inner = layout.put_json(
        {"schemaVersion": 2, "mediaType": mt.MT_OCI_INDEX, "manifests": [img_p]},
        mt.MT_OCI_INDEX,
    )
    outer = layout.put_json(
        {"schemaVersion": 2, "mediaType": mt.MT_OCI_INDEX, "manifests": [inner.to_json()]},
        mt.MT_OCI_INDEX,
        annotations={mt.ANNOT_REF_NAME: "multi"},
    )
    layout.update_index(lambda es, _d: [*es, outer])
    assert verify_layout(layout.root).ok
    layout.blob_path(first_layer(layout, img).digest).unlink()
    res = verify_layout(layout.root)
    assert res.exit_code == 5
    assert res.problems[0].where.startswith(f"multi > index {inner.digest} > manifest ")


def test_verify_skopeo_layout(tmp_path: Path, skopeo: str) -> None:
    lay = tmp_path / "sk"
    for ref, fixture, fmt in (
        ("empty", "almostempty.tar", []),
        ("hello", "hello-world-v25.tar", ["--format", "v2s2"]),
    ):
        src = shared_fixture("docker-save", fixture)
        sh(skopeo, "copy", "-q", *fmt, f"docker-archive:{src}", f"oci:{lay}:{ref}")
    res = verify_layout(lay)
    assert res.ok, res.problems
    assert res.checked == 6
    # break it and see it reported
    idx = json.loads((lay / "index.json").read_bytes())
    man = json.loads(
        (lay / "blobs" / "sha256" / idx["manifests"][1]["digest"].split(":")[1]).read_bytes()
    )
    (lay / "blobs" / "sha256" / man["layers"][0]["digest"].split(":")[1]).unlink()
    assert verify_layout(lay).exit_code == 5


def test_verify_umoci_layout(tmp_path: Path, umoci: str) -> None:
    lay = tmp_path / "um"
    sh(umoci, "init", "--layout", lay)
    sh(umoci, "new", "--image", f"{lay}:t")
    f = tmp_path / "file.txt"
    f.write_text("hi\n")
    sh(umoci, "insert", "--image", f"{lay}:t", f, "/etc/file.txt")
    res = verify_layout(lay)
    assert res.ok, res.problems
    assert res.checked == 3


@pytest.mark.parametrize("what", ["index.json", "oci-layout"])
def test_unreadable_layout_files(tmp_path: Path, what: str) -> None:
    layout = make_layout(tmp_path, "a")
    (layout.root / what).write_text("{")
    r = run_cli("verify", layout.root)
    assert r.code == 4
    assert r.stderr.startswith("layouttool: error: ")
    assert "not valid JSON" in r.stderr
