"""Typed models: strict where we rely on a field, and lossless for everything else."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from layouttool import mediatypes as mt
from layouttool.digest import Digest
from layouttool.errors import InvalidInputError
from layouttool.model import (
    JSON_CAP,
    Descriptor,
    Platform,
    dump_json,
    parse_config,
    parse_index,
    parse_json,
    parse_manifest,
)

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64


def desc(**over: Any) -> dict[str, Any]:
    d: dict[str, Any] = {"mediaType": mt.MT_OCI_LAYER_GZIP, "digest": D1, "size": 10}
    d.update(over)
    return {k: v for k, v in d.items() if v is not ...}


def manifest_doc(**over: Any) -> dict[str, Any]:
    d: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": mt.MT_OCI_MANIFEST,
        "config": desc(mediaType=mt.MT_OCI_CONFIG, digest=D2, size=5),
        "layers": [desc()],
    }
    d.update(over)
    return {k: v for k, v in d.items() if v is not ...}


def raw(doc: Any) -> bytes:
    return json.dumps(doc).encode()


# ----------------------------------------------------------------------------- descriptors
@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({"size": -1}, "negative size -1"),
        ({"size": True}, "'size' must be an integer"),
        ({"size": 1.5}, "'size' must be an integer"),
        ({"size": "10"}, "'size' must be an integer"),
        ({"size": ...}, "'size' must be an integer"),
        ({"digest": ...}, "not a string"),
        ({"digest": "sha256:../../x"}, "not of the form"),
        ({"mediaType": ...}, "missing 'mediaType'"),
        ({"mediaType": 5}, "'mediaType' must be a string"),
        ({"urls": "http://x"}, "'urls' must be a list of strings"),
        ({"annotations": {"a": 1}}, r"annotations\['a'\] must be a string"),
        ({"annotations": []}, "expected a JSON object"),
        ({"platform": {"os": "linux"}}, "missing 'architecture'"),
    ],
)
def test_descriptor_is_strict(over: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidInputError, match=message) as exc:
        Descriptor.from_json(desc(**over))
    assert exc.value.exit_code == 4


def test_descriptor_keeps_unknown_fields() -> None:
    obj = desc(
        annotations={"k": "v"},
        platform={"os": "linux", "architecture": "arm64", "variant": "v8", "x-p": 1},
        urls=["https://example.com/blob"],
        artifactType="application/x-test",
        data="aGk=",
    )
    obj["x-future"] = {"nested": [1, 2]}
    d = Descriptor.from_json(obj)
    assert d.digest == Digest.parse(D1)
    assert d.platform == Platform("linux", "arm64", "v8", extra={"x-p": 1})
    assert d.extra == {"x-future": {"nested": [1, 2]}}
    assert d.to_json() == obj
    assert Descriptor.from_json(d.to_json()) == d


def test_platform_parse_and_match() -> None:
    assert str(Platform.parse("linux/arm64/v8")) == "linux/arm64/v8"
    with pytest.raises(InvalidInputError, match="expected OS/ARCH"):
        Platform.parse("linux")
    with pytest.raises(InvalidInputError):
        Platform.parse("linux//v7")
    arm64 = Platform("linux", "arm64")
    assert arm64.matches(Platform("linux", "arm64", "v8"))  # arm64 implies v8
    assert Platform("linux", "arm", "v7").matches(Platform("linux", "arm"))
    assert not Platform("linux", "arm", "v6").matches(Platform("linux", "arm", "v7"))
    assert not arm64.matches(Platform("linux", "amd64"))


# ----------------------------------------------------------------------------- manifests
def test_manifest_keeps_raw_bytes_and_digest_is_of_them() -> None:
    doc = manifest_doc()
    data = json.dumps(doc, indent=3).encode()  # not our serialisation
    m = parse_manifest(data, "m", mt.MT_OCI_MANIFEST)
    assert m.raw == data
    assert m.digest == Digest.of_bytes(data)
    assert m.config.digest == Digest.parse(D2)
    assert len(m.layers) == 1
    assert not m.is_docker and m.is_image


def test_manifest_unknown_fields_survive_a_rewrite() -> None:
    doc = manifest_doc(annotations={"a": "b"})
    doc["x-vendor"] = {"keep": True}
    doc["layers"][0]["x-layer"] = 7
    m = parse_manifest(raw(doc))
    rewritten = dict(m.doc)
    rewritten["layers"] = [d.to_json() for d in m.layers]
    assert rewritten == doc


@pytest.mark.parametrize(
    ("doc", "media_type", "message"),
    [
        (manifest_doc(schemaVersion=1), None, "schemaVersion must be 2"),
        (manifest_doc(schemaVersion=...), None, "schemaVersion must be 2"),
        (manifest_doc(config=...), None, "expected a JSON object"),
        (manifest_doc(layers={"a": 1}), None, "'layers' must be a list"),
        (manifest_doc(layers=[desc(size=-5)]), None, "negative size"),
        # CVE-2021-41190: a manifest that also has "manifests"
        (manifest_doc(manifests=[]), None, "must not have a 'manifests' field"),
        (manifest_doc(mediaType=mt.MT_OCI_INDEX), None, "is not an image manifest"),
        (manifest_doc(mediaType=mt.MT_OCI_INDEX), mt.MT_OCI_INDEX, "not an image manifest"),
        # an empty media type is a wrong one, not a missing one (no default applies)
        (manifest_doc(mediaType=""), None, "'' is not an image manifest"),
        ([], None, "expected a JSON object"),
        ("x", None, "expected a JSON object"),
    ],
)
def test_manifest_is_strict(doc: Any, media_type: str | None, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        parse_manifest(raw(doc), "manifest", media_type)


def test_docker_manifest() -> None:
    doc = manifest_doc(
        mediaType=mt.MT_DOCKER_MANIFEST,
        config=desc(mediaType=mt.MT_DOCKER_CONFIG, digest=D2, size=5),
        layers=[desc(mediaType=mt.MT_DOCKER_LAYER_GZIP)],
    )
    m = parse_manifest(raw(doc), "m", mt.MT_DOCKER_MANIFEST)
    assert m.is_docker and m.is_image


def test_manifest_without_media_type_takes_the_descriptors() -> None:
    m = parse_manifest(raw(manifest_doc(mediaType=...)), "m", mt.MT_DOCKER_MANIFEST)
    assert m.media_type == mt.MT_DOCKER_MANIFEST
    assert parse_manifest(raw(manifest_doc(mediaType=...))).media_type == mt.MT_OCI_MANIFEST
    # a descriptor of another kind (or an empty type) says nothing about a manifest
    for wrong in (mt.MT_OCI_INDEX, ""):
        m = parse_manifest(raw(manifest_doc(mediaType=...)), "m", wrong)
        assert m.media_type == mt.MT_OCI_MANIFEST


def test_the_document_says_what_it_is_not_its_descriptor() -> None:
    """go-containerregistry writes Docker manifests under OCI-typed descriptors: the model
    reads the document as it says (the reader warns about the descriptor)."""
    m = parse_manifest(raw(manifest_doc()), "m", mt.MT_DOCKER_MANIFEST)
    assert m.media_type == mt.MT_OCI_MANIFEST and not m.is_docker
    idx = parse_index(raw(index_doc()), "i", mt.MT_DOCKER_LIST)
    assert idx.media_type == mt.MT_OCI_INDEX


@pytest.mark.parametrize(
    ("over", "image"),
    [
        ({}, True),
        ({"layers": []}, True),  # BuildKit's zero-layer image
        ({"artifactType": "application/vnd.example.sbom"}, False),
        ({"config": desc(mediaType="application/vnd.cncf.helm.config.v1+json")}, False),
        ({"config": desc(mediaType=mt.MT_OCI_EMPTY, digest=D2, size=2)}, False),
        # old-style artifact: an image-typed config, layers that are not tar layers
        ({"layers": [desc(mediaType="application/vnd.cncf.helm.chart.content.v1.tar+gzip")]},
         False),
    ],
)
def test_image_or_artifact(over: dict[str, Any], image: bool) -> None:
    m = parse_manifest(raw(manifest_doc(**over)))
    assert m.is_image is image
    assert (m.effective_artifact_type is None) is image


# ----------------------------------------------------------------------------- indexes
def index_doc(**over: Any) -> dict[str, Any]:
    d: dict[str, Any] = {
        "schemaVersion": 2,
        "mediaType": mt.MT_OCI_INDEX,
        "manifests": [desc(mediaType=mt.MT_OCI_MANIFEST)],
    }
    d.update(over)
    return {k: v for k, v in d.items() if v is not ...}


def test_index_manifests_null_reads_as_empty() -> None:
    """Docker 25 writes "manifests": null (moby#47210)."""
    idx = parse_index(raw(index_doc(manifests=None)))
    assert idx.manifests == ()
    assert parse_index(raw(index_doc(manifests=...))).manifests == ()


@pytest.mark.parametrize(
    ("doc", "media_type", "message"),
    [
        (index_doc(config=desc()), None, "must not have 'config' or 'layers'"),
        (index_doc(layers=[]), None, "must not have 'config' or 'layers'"),
        (index_doc(mediaType=mt.MT_OCI_MANIFEST), None, "is not an index media type"),
        (index_doc(manifests={}), None, "'manifests' must be a list"),
        (index_doc(manifests=[desc(digest="sha256:AB")]), None, "invalid"),
        (index_doc(schemaVersion="2"), None, "schemaVersion must be 2"),
        (index_doc(mediaType=""), None, "'' is not an index media type"),
    ],
)
def test_index_is_strict(doc: Any, media_type: str | None, message: str) -> None:
    with pytest.raises(InvalidInputError, match=message):
        parse_index(raw(doc), "index", media_type)


def test_index_keeps_raw_and_unknown_fields() -> None:
    doc = index_doc(annotations={"x": "y"})
    doc["x-extra"] = 1
    data = raw(doc)
    idx = parse_index(data, "i", mt.MT_OCI_INDEX)
    assert idx.raw == data and idx.digest == Digest.of_bytes(data)
    assert idx.doc["x-extra"] == 1
    assert idx.annotations == {"x": "y"}


# ----------------------------------------------------------------------------- configs
def test_config() -> None:
    doc = {
        "architecture": "arm",
        "variant": "v7",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [D1, D2]},
        "x-unknown": True,
    }
    cfg = parse_config(raw(doc))
    assert cfg.diff_ids == (Digest.parse(D1), Digest.parse(D2))
    assert str(cfg.platform) == "linux/arm/v7"
    assert cfg.doc["x-unknown"] is True
    with pytest.raises(InvalidInputError, match=r"rootfs\.diff_ids\[1\]"):
        parse_config(raw({**doc, "rootfs": {"diff_ids": [D1, "sha256:bad"]}}))
    with pytest.raises(InvalidInputError, match="must be a list"):
        parse_config(raw({**doc, "rootfs": {"diff_ids": D1}}))
    assert parse_config(b"{}").platform is None


# ----------------------------------------------------------------------------- JSON
def test_json_cap_and_errors() -> None:
    with pytest.raises(InvalidInputError, match="exceeds"):
        parse_json(b" " * (JSON_CAP + 1), "big")
    with pytest.raises(InvalidInputError, match="not valid JSON"):
        parse_json(b"{", "doc")
    with pytest.raises(InvalidInputError, match="not valid JSON"):
        parse_json(b"\xff\xfe{}", "doc")
    with pytest.raises(InvalidInputError, match="not valid JSON"):
        parse_json(b"[" * 100_000 + b"]" * 100_000, "deep")


def test_dump_json_is_compact_and_keeps_order() -> None:
    assert dump_json({"b": 1, "a": "é"}) == '{"b":1,"a":"é"}'.encode()


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=10,
)


@settings(max_examples=60, deadline=None)
@given(st.dictionaries(st.text(max_size=12), _json, max_size=6))
def test_parsers_raise_only_our_error(doc: dict[str, Any]) -> None:
    """Any JSON object either parses or raises InvalidInputError: never another exception."""
    base = manifest_doc()
    for candidate in (doc, {**base, **doc}, {**index_doc(), **doc}, {"rootfs": doc}):
        data = raw(candidate)
        for parse in (parse_manifest, parse_index, parse_config):
            try:
                parse(data)
            except InvalidInputError:
                pass
        for d in (doc, {**desc(), **doc}):
            try:
                Descriptor.from_json(d)
            except InvalidInputError:
                pass
