"""The IMAGE syntax and the rules that turn a REF into one index.json entry."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from layouttool import mediatypes as mt
from layouttool.digest import Digest
from layouttool.errors import InvalidInputError, NotFoundError
from layouttool.model import Index, Platform, host_platform, parse_index
from layouttool.refs import (
    ImageRef,
    normalize_docker_name,
    parse_image,
    pick_platform,
    resolve,
    validate_ref_name,
)

A = "sha256:" + "a" * 64
B = "sha256:" + "b" * 64
C = "sha256:" + "c" * 64
D = "sha256:" + "d" * 64


def entry(
    digest: str, ref: str | None = None, name: str | None = None, **kw: Any
) -> dict[str, Any]:
    ann = {}
    if ref is not None:
        ann[mt.ANNOT_REF_NAME] = ref
    if name is not None:
        ann[mt.ANNOT_CONTAINERD_NAME] = name
    d: dict[str, Any] = {"mediaType": mt.MT_OCI_MANIFEST, "digest": digest, "size": 100}
    if ann:
        d["annotations"] = ann
    d.update(kw)
    return d


def index(*entries: dict[str, Any]) -> Index:
    return parse_index(json.dumps({"schemaVersion": 2, "manifests": list(entries)}).encode())


def pick(idx: Index, ref: str | None, digest: str | None = None) -> str:
    d = resolve(idx, ref, Digest.parse(digest) if digest else None, Path("L"))
    return str(d.digest)


# ----------------------------------------------------------------------------- IMAGE syntax
def test_parse_plain_paths(tmp_path: Path) -> None:
    (tmp_path / "oci").mkdir()
    lay = tmp_path / "oci"
    assert parse_image(str(lay)) == ImageRef(lay)
    assert parse_image(f"{lay}:app") == ImageRef(lay, "app")
    assert parse_image(f"{lay}:app:1.0") == ImageRef(lay, "app:1.0")
    assert parse_image(f"{lay}:docker.io/library/busybox:latest") == ImageRef(
        lay, "docker.io/library/busybox:latest"
    )
    assert parse_image(f"{lay}:") == ImageRef(lay)
    assert parse_image(f"{lay}@{A}") == ImageRef(lay, digest=Digest.parse(A))


def test_parse_layout_paths_with_colons(tmp_path: Path) -> None:
    """A directory whose name holds ':' is found as the layout; the rest is the ref."""
    lay = tmp_path / "a:b"
    lay.mkdir()
    assert parse_image(str(lay)) == ImageRef(lay)
    assert parse_image(f"{lay}:ref") == ImageRef(lay, "ref")
    assert parse_image(f"{lay}:x/y:z") == ImageRef(lay, "x/y:z")


def test_parse_missing_layout_splits_after_last_slash() -> None:
    """As skopeo's oci: transport: the first ':' after the last '/' of the path."""
    assert parse_image("/no/such/dir:tag") == ImageRef(Path("/no/such/dir"), "tag")
    assert parse_image("/no/such:x/dir:tag") == ImageRef(Path("/no/such:x/dir"), "tag")
    assert parse_image("/no/such/dir") == ImageRef(Path("/no/such/dir"))
    assert parse_image("rel:1.0") == ImageRef(Path("rel"), "1.0")


@pytest.mark.parametrize(
    "value", ["", "/x@sha256:../../x", "/x@sha256:" + "A" * 64, "/x@sha256:abc"]
)
def test_parse_refuses_bad_input(value: str) -> None:
    with pytest.raises(InvalidInputError) as exc:
        parse_image(value)
    assert exc.value.exit_code == 4


def test_str_round_trips(tmp_path: Path) -> None:
    lay = tmp_path / "L"
    lay.mkdir()
    for v in (str(lay), f"{lay}:app:1", f"{lay}@{A}"):
        assert str(parse_image(v)) == v


@pytest.mark.parametrize("ref", ["app", "app:1.0", "docker.io/library/app:1.0", "a-b_c.d"])
def test_valid_ref_names(ref: str) -> None:
    assert validate_ref_name(ref) == ref


@pytest.mark.parametrize("ref", ["", "-x", "a b", "a//b", "app:", "../x", "é"])
def test_invalid_ref_names(ref: str) -> None:
    with pytest.raises(InvalidInputError, match="invalid ref name"):
        validate_ref_name(ref)


@pytest.mark.parametrize(
    ("name", "full"),
    [
        ("busybox", "docker.io/library/busybox:latest"),
        ("busybox:1.36", "docker.io/library/busybox:1.36"),
        ("user/app", "docker.io/user/app:latest"),
        ("docker.io/busybox", "docker.io/library/busybox:latest"),
        ("index.docker.io/user/app:2", "docker.io/user/app:2"),
        ("ghcr.io/o/app:3", "ghcr.io/o/app:3"),
        ("localhost:5000/app", "localhost:5000/app:latest"),
        ("localhost/app:1", "localhost/app:1"),
        (f"busybox@{A}", f"docker.io/library/busybox@{A}"),
    ],
)
def test_normalize_docker_name(name: str, full: str) -> None:
    assert normalize_docker_name(name) == full


# ----------------------------------------------------------------------------- resolution
def test_exact_ref_name_first() -> None:
    idx = index(entry(A, ref="1.0"), entry(B, ref="app:1.0"), entry(C, name="1.0"))
    assert pick(idx, "1.0") == A


def test_containerd_name_with_normalisation() -> None:
    idx = index(
        entry(A, name="docker.io/library/busybox:latest", ref="latest"),
        entry(B, name="docker.io/library/alpine:3.19", ref="3.19"),
    )
    assert pick(idx, "docker.io/library/busybox:latest") == A
    assert pick(idx, "busybox") == A
    assert pick(idx, "busybox:latest") == A
    assert pick(idx, "alpine:3.19") == B


def test_containerd_name_beats_tag_suffix() -> None:
    idx = index(entry(A, ref="other:app"), entry(B, name="app"))
    assert pick(idx, "app") == B


def test_tag_suffix_when_unique() -> None:
    idx = index(entry(A, ref="example.com/app:1.0"), entry(B, ref="example.com/app:2.0"))
    assert pick(idx, "1.0") == A
    assert pick(idx, "2.0") == B


def test_ambiguous_suffix_lists_candidates() -> None:
    idx = index(entry(A, ref="a:1.0"), entry(B, ref="b:1.0"), entry(C, ref="c:2.0"))
    with pytest.raises(NotFoundError) as exc:
        pick(idx, "1.0")
    assert exc.value.exit_code == 3
    assert str(exc.value) == "L: ref '1.0' is ambiguous; candidates: a:1.0, b:1.0"


def test_duplicate_ref_names_of_one_digest_are_one_image() -> None:
    idx = index(entry(A, ref="x:1"), entry(A, ref="y:1"), entry(A, ref="z"))
    assert pick(idx, "1") == A
    assert pick(idx, None) == A


def test_duplicate_exact_ref_names_of_different_digests_are_ambiguous() -> None:
    idx = index(entry(A, ref="same"), entry(B, ref="same"))
    with pytest.raises(NotFoundError, match="ambiguous; candidates: same"):
        pick(idx, "same")


def test_absent_ref_lists_refs() -> None:
    idx = index(entry(A, ref="one"), entry(B, name="docker.io/library/two:latest"))
    with pytest.raises(NotFoundError) as exc:
        pick(idx, "three")
    assert exc.value.exit_code == 3
    assert str(exc.value) == (
        "L: no image named 'three' (refs: docker.io/library/two:latest, one)"
    )


def test_no_ref() -> None:
    assert pick(index(entry(A)), None) == A
    with pytest.raises(NotFoundError, match="holds 2 images; name one with L:REF") as exc:
        pick(index(entry(A, ref="one"), entry(B, ref="two")), None)
    assert "(refs: one, two)" in str(exc.value)
    with pytest.raises(NotFoundError, match="the layout holds no image"):
        pick(index(), None)


def test_no_ref_passes_over_attached_artifacts() -> None:
    sig = "application/vnd.example.signature.v1"
    # an untagged artifact entry beside one image (what attach and oras attach leave)
    assert pick(index(entry(A, ref="app"), entry(B, artifactType=sig)), None) == A
    assert pick(index(entry(B, artifactType=sig), entry(A)), None) == A
    # a tagged artifact is something the user named: still two to choose from
    with pytest.raises(NotFoundError, match="holds 2 images"):
        pick(index(entry(A, ref="app"), entry(B, ref="sig", artifactType=sig)), None)
    # two images and an artifact: still ambiguous, and the artifact is listed
    with pytest.raises(NotFoundError, match="holds 3 images") as exc:
        pick(index(entry(A, ref="one"), entry(B, ref="two"), entry(C, artifactType=sig)), None)
    assert C in str(exc.value)
    # only artifacts: the one there is
    assert pick(index(entry(B, artifactType=sig)), None) == B


def test_an_error_lists_a_dozen_refs_at_most() -> None:
    digests = [str(Digest.of_bytes(b"%d" % i)) for i in range(2000)]
    idx = index(*(entry(d, ref=f"r{i:04d}") for i, d in enumerate(digests)))
    with pytest.raises(NotFoundError) as exc:
        pick(idx, None)
    msg = str(exc.value)
    assert "holds 2000 images" in msg and len(msg) < 300
    assert "r0000, r0001," in msg and "r0011 and 1988 more; 'layouttool ls' lists them all" in msg
    with pytest.raises(NotFoundError, match="1988 more"):
        pick(idx, "nope")


def test_by_digest() -> None:
    idx = index(entry(A, ref="one"), entry(B, ref="two"))
    assert pick(idx, None, B) == B
    with pytest.raises(NotFoundError, match=f"no image with digest {C}"):
        pick(idx, None, C)


# ----------------------------------------------------------------------------- platforms
def platform_index() -> Index:
    return index(
        entry(A, platform={"os": "linux", "architecture": "amd64"}),
        entry(B, platform={"os": "linux", "architecture": "arm64", "variant": "v8"}),
        entry(C, platform={"os": "linux", "architecture": "arm", "variant": "v7"}),
        entry(
            D,
            platform={"os": "unknown", "architecture": "unknown"},
            annotations={"vnd.docker.reference.type": "attestation-manifest"},
        ),
    )


def test_pick_platform() -> None:
    idx = platform_index()
    assert str(pick_platform(idx, Platform.parse("linux/arm64"), "i").digest) == B
    assert str(pick_platform(idx, Platform.parse("linux/arm64/v8"), "i").digest) == B
    assert str(pick_platform(idx, Platform.parse("linux/arm/v7"), "i").digest) == C
    assert str(pick_platform(idx, Platform.parse("linux/arm"), "i").digest) == C


def test_pick_platform_default_is_the_host() -> None:
    idx = platform_index()
    host = host_platform()
    want = next((d for d in idx.manifests if d.platform and d.platform.matches(host)), None)
    if want is None:
        with pytest.raises(NotFoundError):
            pick_platform(idx, None, "i")
    else:
        assert pick_platform(idx, None, "i") == want


def test_pick_platform_missing_lists_what_there_is() -> None:
    with pytest.raises(NotFoundError) as exc:
        pick_platform(platform_index(), Platform.parse("linux/s390x"), "index sha256:x")
    assert exc.value.exit_code == 3
    assert str(exc.value) == (
        "index sha256:x: no image for platform linux/s390x (platforms: linux/amd64, "
        "linux/arm/v7, linux/arm64/v8); use --platform"
    ), "attestation entries (unknown/unknown) are not offered as platforms"


def test_attestation_first_does_not_shadow_the_image() -> None:
    idx = index(
        entry(D, platform={"os": "unknown", "architecture": "unknown"}),
        entry(A, platform={"os": "linux", "architecture": "amd64"}),
    )
    assert str(pick_platform(idx, Platform.parse("linux/amd64"), "i").digest) == A
    with pytest.raises(NotFoundError):
        pick_platform(idx, Platform.parse("linux/arm64"), "i")


def test_single_manifest_without_platform_is_the_image() -> None:
    assert str(pick_platform(index(entry(A)), None, "i").digest) == A
