"""``referrers``: what points at an image, found by scanning every document of the layout
(listed in index.json or not); round trips with ``attach``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import run_cli
from imagebuild import make_image
from layerbuild import build_layer

SBOM = "application/spdx+json"
SIG = "application/vnd.example.signature.v1"


@pytest.fixture(autouse=True)
def _epoch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")


def referrers(*args: str | Path) -> dict[str, Any]:
    res = run_cli("referrers", *args, "--json")
    assert res.code == 0, res.stderr
    doc: dict[str, Any] = json.loads(res.stdout)
    return doc


def attach(image: str, path: Path, artifact_type: str) -> dict[str, Any]:
    res = run_cli("attach", image, path, "--artifact-type", artifact_type, "--json")
    assert res.code == 0, res.stderr
    doc: dict[str, Any] = json.loads(res.stdout)
    return doc


@pytest.fixture
def layout(tmp_path: Path) -> Path:
    make_image(tmp_path / "oci", [build_layer([{"name": "a", "data": "1"}])], ref="app")
    return make_image(tmp_path / "oci", [build_layer([{"name": "b", "data": "2"}])], ref="other")


def test_attach_then_referrers_round_trip(layout: Path, tmp_path: Path) -> None:
    (tmp_path / "sbom.json").write_text("{}\n")
    (tmp_path / "sig").write_bytes(b"\x00signature")
    sbom = attach(f"{layout}:app", tmp_path / "sbom.json", SBOM)
    sig = attach(f"{layout}:app", tmp_path / "sig", SIG)
    attach(f"{layout}:other", tmp_path / "sig", SIG)  # another image's: not listed
    doc = referrers(f"{layout}:app")
    assert doc["schemaVersion"] == 2
    assert doc["mediaType"] == "application/vnd.oci.image.index.v1+json"
    listed = {d["digest"]: d for d in doc["manifests"]}
    assert set(listed) == {sbom["digest"], sig["digest"]}
    assert [d["digest"] for d in doc["manifests"]] == sorted(listed)
    assert listed[sbom["digest"]] == {
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": sbom["digest"],
        "size": sbom["size"],
        "artifactType": SBOM,
        "annotations": {"org.opencontainers.image.created": "2023-11-14T22:13:20Z"},
    }
    only = referrers(f"{layout}:app", "--artifact-type", SIG)
    assert [d["digest"] for d in only["manifests"]] == [sig["digest"]]


def test_referrers_not_in_index_json_are_found(layout: Path, tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    art = attach(f"{layout}:app", tmp_path / "f", SBOM)
    index = json.loads((layout / "index.json").read_text())
    index["manifests"] = [m for m in index["manifests"] if m["digest"] != art["digest"]]
    (layout / "index.json").write_text(json.dumps(index))
    assert [d["digest"] for d in referrers(f"{layout}:app")["manifests"]] == [art["digest"]]
    # and a referrer of the referrer (a signature of the SBOM), by digest
    sig = attach(f"{layout}@{art['digest']}", tmp_path / "f", SIG)
    assert [d["digest"] for d in referrers(f"{layout}@{art['digest']}")["manifests"]] == [
        sig["digest"]]


def test_no_referrers_is_an_empty_index(layout: Path) -> None:
    assert referrers(f"{layout}:app")["manifests"] == []
    res = run_cli("referrers", f"{layout}:app")
    assert res.code == 0 and res.stdout == ""
    assert res.stderr.startswith("0 referrer(s) of sha256:")


def test_text_output_is_a_table(layout: Path, tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    art = attach(f"{layout}:app", tmp_path / "f", SBOM)
    res = run_cli("referrers", f"{layout}:app")
    lines = res.stdout.splitlines()
    assert lines[0].split() == ["DIGEST", "ARTIFACT", "TYPE", "SIZE", "CREATED"]
    assert lines[1].split()[:2] == [art["digest"], SBOM]


def test_errors(layout: Path) -> None:
    assert run_cli("referrers", f"{layout}:nope").code == 3
    res = run_cli("referrers", f"{layout}:app", "--artifact-type", "not-a-type")
    assert res.code == 4 and "is not a media type" in res.stderr
