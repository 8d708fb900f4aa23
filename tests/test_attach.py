"""``attach``: files stored as an OCI 1.1 artifact whose subject is an image (oras attach's
layout), kept by gc while its image is, reproducible with SOURCE_DATE_EPOCH."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from conftest import run_cli
from imagebuild import make_image
from layerbuild import build_layer

EMPTY = {
    "mediaType": "application/vnd.oci.empty.v1+json",
    "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a",
    "size": 2,
    "data": "e30=",
}
SBOM = "application/spdx+json"


@pytest.fixture(autouse=True)
def _epoch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")


def image(tmp_path: Path, name: str = "oci") -> Path:
    return make_image(tmp_path / name, [build_layer([{"name": "f", "data": "x"}])], ref="app")


def files(tmp_path: Path) -> tuple[Path, Path]:
    sbom = tmp_path / "sbom.spdx.json"
    sbom.write_text('{"spdxVersion": "SPDX-2.3"}\n')
    notes = tmp_path / "notes.txt"
    notes.write_bytes(b"release notes\n" * 1000)
    return sbom, notes


def attach(*args: str | Path) -> dict[str, Any]:
    res = run_cli("attach", *args, "--json")
    assert res.code == 0, res.stderr
    doc: dict[str, Any] = json.loads(res.stdout)
    return doc


def blob(layout: Path, digest: str) -> bytes:
    return (layout / "blobs" / digest.replace(":", "/")).read_bytes()


def entries(layout: Path) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = json.loads((layout / "index.json").read_text())["manifests"]
    return found


def test_attach_writes_an_oci_artifact_manifest(tmp_path: Path) -> None:
    layout = image(tmp_path)
    subject = entries(layout)[0]
    sbom, notes = files(tmp_path)
    doc = attach(f"{layout}:app", sbom, f"{notes}:text/plain", "--artifact-type", SBOM,
                 "--annotation", "org.example.by=ci")
    raw = blob(layout, doc["digest"])
    assert hashlib.sha256(raw).hexdigest() == doc["digest"].split(":")[1]
    man = json.loads(raw)
    assert man["schemaVersion"] == 2
    assert man["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert man["artifactType"] == SBOM
    assert man["config"] == EMPTY
    assert blob(layout, EMPTY["digest"]) == base64.b64decode(EMPTY["data"]) == b"{}"
    assert man["subject"] == {k: subject[k] for k in ("mediaType", "digest", "size")}
    assert man["annotations"] == {"org.example.by": "ci",
                                  "org.opencontainers.image.created": "2023-11-14T22:13:20Z"}
    first, second = man["layers"]
    assert first["mediaType"] == "application/octet-stream"
    assert first["annotations"] == {"org.opencontainers.image.title": "sbom.spdx.json"}
    assert blob(layout, first["digest"]) == sbom.read_bytes()
    assert second["mediaType"] == "text/plain" and second["size"] == notes.stat().st_size
    assert second["annotations"] == {"org.opencontainers.image.title": "notes.txt"}
    # an untagged entry, as oras leaves it; the image's own entry is untouched
    listed = entries(layout)
    assert listed[0] == subject
    assert listed[1] == {"mediaType": "application/vnd.oci.image.manifest.v1+json",
                         "digest": doc["digest"], "size": len(raw), "artifactType": SBOM}
    assert run_cli("verify", "--strict", "--deep", layout).code == 0
    # a bare LAYOUT still names the image, not the signature beside it
    shown = run_cli("inspect", str(layout), "--json")
    assert shown.code == 0, shown.stderr
    assert json.loads(shown.stdout)["manifestDigest"] == subject["digest"]


def test_attaching_the_same_again_lists_it_once_and_is_reproducible(tmp_path: Path) -> None:
    a, b = image(tmp_path, "a"), image(tmp_path, "b")
    sbom, _ = files(tmp_path)
    first = attach(f"{a}:app", sbom, "--artifact-type", SBOM)
    again = attach(f"{a}:app", sbom, "--artifact-type", SBOM)
    other = attach(f"{b}:app", sbom, "--artifact-type", SBOM)
    assert first["digest"] == again["digest"] == other["digest"]
    assert len(entries(a)) == 2


def test_attach_to_a_manifest_inside_an_index_by_digest(tmp_path: Path) -> None:
    layout = image(tmp_path)
    child = entries(layout)[0]
    # wrap the image in an index: its manifest is no longer an index.json entry
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
             "manifests": [{**child, "platform": {"os": "linux", "architecture": "amd64"}}]}
    raw = json.dumps(index).encode()
    digest = "sha256:" + hashlib.sha256(raw).hexdigest()
    (layout / "blobs" / "sha256" / digest.split(":")[1]).write_bytes(raw)
    (layout / "index.json").write_text(json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": index["mediaType"], "digest": digest, "size": len(raw),
                       "annotations": {"org.opencontainers.image.ref.name": "app"}}]}))
    sbom, _ = files(tmp_path)
    doc = attach(f"{layout}@{child['digest']}", sbom, "--artifact-type", SBOM)
    assert doc["subject"] == {k: child[k] for k in ("mediaType", "digest", "size")}
    on_index = attach(f"{layout}:app", sbom, "--artifact-type", SBOM)
    assert on_index["subject"]["digest"] == digest
    assert on_index["subject"]["mediaType"] == "application/vnd.oci.image.index.v1+json"


def test_gc_keeps_the_artifact_listed_or_not(tmp_path: Path) -> None:
    layout = image(tmp_path)
    sbom, notes = files(tmp_path)
    doc = attach(f"{layout}:app", sbom, notes, "--artifact-type", SBOM)
    kept = [doc["digest"], EMPTY["digest"], *(la["digest"] for la in doc["layers"])]
    assert run_cli("-q", "gc", layout).code == 0
    assert all((layout / "blobs" / d.replace(":", "/")).exists() for d in kept)
    # drop its index.json entry: gc still keeps it, as a referrer of a kept image
    listed = entries(layout)
    (layout / "index.json").write_text(json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [e for e in listed if e["digest"] != doc["digest"]]}))
    res = run_cli("gc", layout, "--json")
    assert res.code == 0, res.stderr
    assert doc["digest"] in json.loads(res.stdout)["referrersKept"]
    assert all((layout / "blobs" / d.replace(":", "/")).exists() for d in kept)
    # once the image is gone too, nothing keeps the artifact
    (layout / "index.json").write_text(json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": []}))
    assert run_cli("-q", "gc", layout).code == 0
    assert not any((layout / "blobs" / d.replace(":", "/")).exists() for d in kept)


@pytest.mark.parametrize(("args", "code", "message"), [
    (["missing.txt"], 3, "does not exist"),
    (["."], 4, "is a directory"),
    (["x.txt:not a type"], 4, "is not a media type"),
])
def test_bad_files_are_clean_errors(tmp_path: Path, args: list[str], code: int,
                                    message: str) -> None:
    layout = image(tmp_path)
    before = (layout / "index.json").read_bytes()
    res = run_cli("attach", f"{layout}:app", *(str(tmp_path / a) if a != "." else str(tmp_path)
                                               for a in args), "--artifact-type", SBOM)
    assert res.code == code, res.stderr
    assert message in res.stderr and res.stderr.count("\n") == 1
    assert (layout / "index.json").read_bytes() == before


def test_bad_artifact_type_and_missing_image(tmp_path: Path) -> None:
    layout = image(tmp_path)
    sbom, _ = files(tmp_path)
    res = run_cli("attach", f"{layout}:app", sbom, "--artifact-type", "sbom")
    assert res.code == 4 and "is not a media type" in res.stderr
    res = run_cli("attach", f"{layout}:nope", sbom, "--artifact-type", SBOM)
    assert res.code == 3
    res = run_cli("attach", f"{layout}@sha256:{'0' * 64}", sbom, "--artifact-type", SBOM)
    assert res.code == 3
    res = run_cli("attach", f"{layout}:app", sbom, "--artifact-type", SBOM,
                  "--annotation", "novalue")
    assert res.code == 2
