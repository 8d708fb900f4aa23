"""The reader: what a document is, what is wrong with it (problems vs warnings), and the local
referrer scan."""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from shapes import SBOM, RawLayout, dumps, tagged

from layouttool import mediatypes as mt
from layouttool.digest import Digest
from layouttool.graph import find_referrers, walk
from layouttool.model import Descriptor
from layouttool.ops.common import select
from layouttool.reader import (
    CODES,
    Kind,
    check_schema,
    parse_document,
    read_document,
)
from layouttool.store import Layout

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64


def desc_of(raw: bytes, media_type: str) -> Descriptor:
    return Descriptor(media_type, Digest.of_bytes(raw), len(raw))


def codes(doc: Any) -> list[tuple[str, str]]:
    return [(f.severity, f.code) for f in doc.findings]


def manifest(**over: Any) -> dict[str, Any]:
    d: dict[str, Any] = {
        "schemaVersion": 2, "mediaType": mt.MT_OCI_MANIFEST,
        "config": {"mediaType": mt.MT_OCI_CONFIG, "digest": D1, "size": 3},
        "layers": [{"mediaType": mt.MT_OCI_LAYER_GZIP, "digest": D2, "size": 4}],
    }
    d.update(over)
    return {k: v for k, v in d.items() if v is not ...}


@pytest.mark.parametrize(
    ("doc", "descriptor_type", "kind", "media_type", "found"),
    [
        (manifest(), mt.MT_OCI_MANIFEST, Kind.IMAGE, mt.MT_OCI_MANIFEST, []),
        # go-containerregistry: a Docker manifest under an OCI-typed descriptor
        (manifest(mediaType=mt.MT_DOCKER_MANIFEST), mt.MT_OCI_MANIFEST, Kind.IMAGE,
         mt.MT_DOCKER_MANIFEST, [("warning", "media-type-mismatch")]),
        # no mediaType of its own: the descriptor's, when it names a manifest
        (manifest(mediaType=...), mt.MT_DOCKER_MANIFEST, Kind.IMAGE, mt.MT_DOCKER_MANIFEST, []),
        # the descriptor says index; the shape says manifest
        (manifest(mediaType=...), mt.MT_OCI_INDEX, Kind.IMAGE, mt.MT_OCI_MANIFEST,
         [("warning", "media-type-mismatch")]),
        (manifest(artifactType=SBOM), mt.MT_OCI_MANIFEST, Kind.ARTIFACT, mt.MT_OCI_MANIFEST, []),
        (manifest(layers=[]), mt.MT_OCI_MANIFEST, Kind.IMAGE, mt.MT_OCI_MANIFEST, []),
        ({"schemaVersion": 2, "manifests": []}, mt.MT_DOCKER_LIST, Kind.INDEX, mt.MT_DOCKER_LIST,
         []),
        ({"schemaVersion": 1, "fsLayers": [{"blobSum": D1}], "signatures": []},
         mt.MT_OCI_MANIFEST, Kind.SCHEMA1, mt.MT_DOCKER_SCHEMA1_SIGNED,
         [("warning", "media-type-mismatch")]),
        ({"mediaType": mt.MT_OCI_ARTIFACT_MANIFEST, "artifactType": SBOM, "blobs": []},
         mt.MT_OCI_ARTIFACT_MANIFEST, Kind.ARTIFACT, mt.MT_OCI_ARTIFACT_MANIFEST, []),
        # JSON of a type we do not know: every descriptor in it is followed
        ({"parts": [{"mediaType": "x/y", "digest": D1, "size": 1}]}, "application/x-thing",
         Kind.UNKNOWN, "application/x-thing", [("warning", "unknown-media-type")]),
        # CVE-2021-41190: readable as both a manifest and an index
        (manifest(manifests=[]), mt.MT_OCI_MANIFEST, Kind.UNKNOWN, mt.MT_OCI_MANIFEST,
         [("problem", "invalid-document")]),
        # a document that says it is an index, shaped as a manifest, contradicts itself
        (manifest(mediaType=mt.MT_OCI_INDEX), mt.MT_OCI_MANIFEST, Kind.UNKNOWN,
         mt.MT_OCI_MANIFEST, [("problem", "invalid-document")]),
        ({}, mt.MT_OCI_MANIFEST, Kind.UNKNOWN, mt.MT_OCI_MANIFEST,
         [("problem", "invalid-document")]),
        ([], mt.MT_OCI_MANIFEST, Kind.UNKNOWN, mt.MT_OCI_MANIFEST,
         [("problem", "invalid-document")]),
    ],
)
def test_classify_by_the_document(
    doc: Any, descriptor_type: str, kind: Kind, media_type: str, found: list[tuple[str, str]]
) -> None:
    raw = dumps(doc)
    d = parse_document(raw, desc_of(raw, descriptor_type), "here")
    assert (d.kind, d.media_type, codes(d)) == (kind, media_type, found)
    assert d.ok is (not any(s == "problem" for s, _ in found))
    assert all(f.where == "here" and f.digest == Digest.of_bytes(raw) for f in d.findings)


def test_refs_follow_what_the_document_is() -> None:
    subject = {"mediaType": mt.MT_OCI_MANIFEST, "digest": D2, "size": 9}
    raw = dumps(manifest(subject=subject))
    d = parse_document(raw, desc_of(raw, "application/octet-stream"), "x")
    assert [(r, str(x.digest)) for r, x in d.refs] == [
        ("config", D1), ("layer", D2), ("subject", D2)]
    unknown = dumps({"a": {"b": [{"mediaType": "x/y", "digest": D1, "size": 1}]}})
    u = parse_document(unknown, desc_of(unknown, "x/doc"), "x")
    assert [(r, str(x.digest)) for r, x in u.refs] == [("blob", D1)]


def test_not_json_is_a_problem_whatever_the_type_says() -> None:
    raw = b"\x1f\x8b\x08 gzip"
    d = parse_document(raw, desc_of(raw, mt.MT_OCI_MANIFEST), "x")
    assert codes(d) == [("problem", "invalid-json")]
    u = parse_document(raw, desc_of(raw, "application/x-unknown"), "x")
    assert codes(u) == [("problem", "invalid-json")]
    assert "no telling what it references" in u.findings[0].message


@pytest.mark.parametrize(
    ("role", "code"),
    [("root", "blob-missing"), ("manifest", "manifest-missing"), ("index", "manifest-missing"),
     ("subject", "subject-missing"), ("blob", "reference-missing")],
)
def test_an_absent_document_is_as_bad_as_its_link(tmp_path: Path, role: Any, code: str) -> None:
    layout = Layout.init(tmp_path / "l")
    desc = Descriptor(mt.MT_OCI_MANIFEST, Digest.parse(D1), 10)
    d = read_document(layout, desc, "w", role)
    assert d.raw is None and not d.ok
    (f,) = d.findings
    assert (f.code, f.severity, f.digest) == (code, CODES[code][0], desc.digest)
    with pytest.raises(Exception) as exc:
        d.raise_unless_ok()
    assert getattr(exc.value, "exit_code", None) == 3


def test_embedded_data_stands_in_for_an_absent_blob(tmp_path: Path) -> None:
    layout = Layout.init(tmp_path / "l")
    raw = dumps(manifest())
    desc = desc_of(raw, mt.MT_OCI_MANIFEST).with_(data=base64.b64encode(raw).decode())
    d = read_document(layout, desc, "w")
    assert d.ok and d.kind is Kind.IMAGE and d.raw == raw
    lie = desc.with_(data=base64.b64encode(b"{}").decode())
    assert read_document(layout, lie, "w").findings[0].code == "blob-missing"


@pytest.mark.parametrize(
    ("doc", "found"),
    [
        # BuildKit's zero-layer config: Go's nil slices and zero times
        ({"architecture": "amd64", "os": "linux", "created": None, "history": None,
          "rootfs": {"type": "layers", "diff_ids": None}},
         [("warning", "null-field", "created"), ("warning", "null-field", "history"),
          ("warning", "null-field", "rootfs.diff_ids")]),
        # a required field that is null has no value: a broken MUST
        ({"architecture": None, "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}},
         [("problem", "schema", "architecture")]),
        ({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []},
          "created": "yesterday"}, [("problem", "schema", "created")]),
    ],
)
def test_schema_nulls_are_warnings_unless_required(
    doc: dict[str, Any], found: list[tuple[str, str, str]]
) -> None:
    got = check_schema(doc, mt.MT_OCI_CONFIG, None, "c")
    assert sorted((f.severity, f.code, f.message.split(" ")[0].rstrip(":")) for f in got) == (
        sorted(found))


def test_an_empty_layers_array_is_a_should() -> None:
    image = list(check_schema(manifest(layers=[]), mt.MT_OCI_MANIFEST, None, "m"))
    assert [(f.severity, f.code) for f in image] == [("warning", "layers-empty")]
    assert list(check_schema(manifest(layers=[]), mt.MT_OCI_MANIFEST, None, "m",
                             image=False)) == []


def test_every_code_is_documented_with_its_severity_and_exit_code() -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    for code, (severity, exit_code, meaning) in CODES.items():
        assert severity in ("problem", "warning") and exit_code in (3, 4, 5, 6, 74) and meaning
        assert f"`{code}`" in readme, code


# ------------------------------------------------------------------------------ walk
def test_walk_reads_a_document_again_through_a_descriptor_that_does_not_lie(
    tmp_path: Path,
) -> None:
    lay = RawLayout(tmp_path / "l")
    m = lay.image()
    lay.write_index([tagged({**m, "size": m["size"] + 1}, "bad"), tagged(m, "good")])
    found = []
    nodes = list(walk(Layout.open(lay.root), on_finding=found.append, repeats=True))
    assert [f.code for f in found] == ["size-mismatch"]
    assert found[0].where == "bad"
    # the manifest's config and layer are reached through the good descriptor
    assert {n.role for n in nodes} >= {"config", "layer"}


def test_walk_without_a_listener_raises_problems_and_drops_warnings(tmp_path: Path) -> None:
    lay = RawLayout(tmp_path / "l")
    m = lay.image(docker=True)
    lay.write_index([{**m, "mediaType": mt.MT_OCI_MANIFEST}])
    assert len(list(walk(Layout.open(lay.root)))) == 3
    data = lay.path(m).read_bytes()
    lay.path(m).write_bytes(data.replace(b'"schemaVersion"', b'"schemaVersiom"'))
    with pytest.raises(Exception, match="is corrupt"):
        list(walk(Layout.open(lay.root)))


# ------------------------------------------------------------------------------ referrers
def test_find_referrers_listed_or_not_and_by_artifact_type(tmp_path: Path) -> None:
    lay = RawLayout(tmp_path / "l")
    img = lay.image()
    empty = lay.blob(b"{}", mt.MT_OCI_EMPTY)
    sbom = lay.manifest(empty, [lay.blob(b'{"sbom":1}', SBOM)], artifactType=SBOM,
                        subject=img, annotations={"k": "v"})
    sig_cfg = lay.blob(b'{"sig":1}', "application/vnd.example.sig.config")
    sig = lay.manifest(sig_cfg, [], subject=img)
    other = lay.image(arch="arm64")
    lay.manifest(empty, [], artifactType=SBOM, subject=other)
    lay.write_index([tagged(img, "app"), sbom])  # the signature is not listed
    layout = Layout.open(lay.root)
    got = find_referrers(layout, Digest.parse(img["digest"]))
    assert sorted(str(d.digest) for d in got) == sorted([sbom["digest"], sig["digest"]])
    by = {str(d.digest): d for d in got}
    assert by[sbom["digest"]].artifact_type == SBOM
    assert by[sbom["digest"]].annotations == {"k": "v"}
    assert by[sbom["digest"]].media_type == mt.MT_OCI_MANIFEST
    # no artifactType: the config's media type stands for it (the referrers API's rule)
    assert by[sig["digest"]].artifact_type == "application/vnd.example.sig.config"
    only = find_referrers(layout, Digest.parse(img["digest"]), SBOM)
    assert [str(d.digest) for d in only] == [sbom["digest"]]
    assert find_referrers(layout, Digest.parse(D1)) == ()


# ------------------------------------------------------------------------------ IMAGE@digest
def test_a_digest_reaches_a_manifest_inside_nested_indexes(tmp_path: Path) -> None:
    lay = RawLayout(tmp_path / "l")
    arm = lay.image(arch="arm64")
    inner = lay.index([{**arm, "platform": {"os": "linux", "architecture": "arm64"}}])
    outer = lay.index([inner])
    lay.write_index([tagged(outer, "multi")])
    sel = select(f"{lay.root}@{arm['digest']}")
    assert str(sel.entry.digest) == arm["digest"] and not sel.listed
    assert str(sel.entry.platform) == "linux/arm64"
    with pytest.raises(Exception, match=r"reachable from index\.json") as exc:
        select(f"{lay.root}@{D1}")
    assert getattr(exc.value, "exit_code", None) == 3


def test_mediatypes_does_not_load_the_codecs() -> None:
    out = subprocess.run(
        [sys.executable, "-c", "import sys, layouttool.mediatypes as m, layouttool.reader; "
         "print(m.Compression.GZIP.value, 'layouttool.codec' in sys.modules)"],
        capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["gzip", "False"]
    from layouttool.codec import Compression

    assert Compression is mt.Compression
