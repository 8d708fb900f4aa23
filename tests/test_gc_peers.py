"""gc on layouts that skopeo, umoci and our own convert made and edited; skopeo is the oracle.

For each layout the expected kept set is computed from what ``skopeo inspect --raw`` says every
ref's manifest references (not from our graph code); after gc, ``verify`` passes, skopeo can
copy every ref, and the freed set is exactly the blobs the edits made old.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
from conftest import run_cli, sh, shared_fixture

from layouttool import mediatypes as mt
from layouttool.ops.verify import verify_layout
from layouttool.store import Layout

pytestmark = pytest.mark.peers


def stored(layout: Path) -> set[str]:
    """Every blob digest on disk."""
    return {f"{alg.name}:{p.name}" for alg in (layout / "blobs").iterdir()
            for p in alg.iterdir()}


def refs(layout: Path) -> list[str]:
    """Every ref name in index.json."""
    doc = json.loads((layout / "index.json").read_text())
    return [m["annotations"][mt.ANNOT_REF_NAME] for m in doc["manifests"]]


def entry(layout: Path, ref: str) -> dict:
    doc = json.loads((layout / "index.json").read_text())
    return next(m for m in doc["manifests"] if m["annotations"][mt.ANNOT_REF_NAME] == ref)


def is_docker_entry(layout: Path, ref: str) -> bool:
    # skopeo 1.9.3 writes Docker v2s2 manifests into OCI layouts but cannot find them by ref
    # afterwards ("no descriptor found for reference"), so those are read by hand
    return bool(entry(layout, ref)["mediaType"] == mt.MT_DOCKER_MANIFEST)


def skopeo_blobs(skopeo: str, layout: Path, ref: str) -> set[str]:
    """The manifest, config and layer digests of ``ref`` as skopeo reads them."""
    if is_docker_entry(layout, ref):
        digest = entry(layout, ref)["digest"]
        raw = (layout / "blobs" / "sha256" / digest.split(":")[1]).read_bytes()
    else:
        raw = sh(skopeo, "inspect", "--raw", f"oci:{layout}:{ref}").stdout
    doc = json.loads(raw)
    out = {"sha256:" + hashlib.sha256(raw).hexdigest(), doc["config"]["digest"]}
    out |= {x["digest"] for x in doc["layers"]}
    return out


def skopeo_kept(skopeo: str, layout: Path) -> set[str]:
    """What every ref in the layout references, per skopeo."""
    kept: set[str] = set()
    for r in refs(layout):
        kept |= skopeo_blobs(skopeo, layout, r)
    return kept


def gc_json(layout: Path, *args: str) -> dict:
    res = run_cli("gc", "--json", *args, layout)
    assert res.code == 0, res.stderr
    return json.loads(res.stdout)


def removed(out: dict) -> set[str]:
    return {r["digest"] for r in out["removed"] if "digest" in r}


def check_after_gc(skopeo: str, layout: Path, tmp: Path) -> None:
    """verify passes, skopeo copies every ref, a second gc removes nothing."""
    v = verify_layout(layout)
    assert v.ok, v.problems
    for r in refs(layout):
        if is_docker_entry(layout, r):
            assert run_cli("inspect", f"{layout}:{r}").code == 0
            continue
        sh(skopeo, "copy", "-q", f"oci:{layout}:{r}", f"dir:{tmp / ('copy-' + r)}")
    assert gc_json(layout)["count"] == 0


def add_referrer(layout: Path, subject_ref: str) -> tuple[str, set[str]]:
    """An SBOM whose subject is ``subject_ref``'s manifest, not listed in index.json."""
    lay = Layout.open(layout)
    idx = lay.read_index()
    subject = next(d for d in idx.manifests if d.ref_name == subject_ref)
    with lay.writing():
        empty = lay.put_bytes(b"{}").descriptor(mt.MT_OCI_EMPTY)
        payload = lay.put_bytes(b'{"spdxVersion":"SPDX-2.3"}').descriptor(
            "application/spdx+json")
        doc = {
            "schemaVersion": 2, "mediaType": mt.MT_OCI_MANIFEST,
            "artifactType": "application/spdx+json",
            "config": empty.to_json(), "layers": [payload.to_json()],
            "subject": {"mediaType": subject.media_type, "digest": str(subject.digest),
                        "size": subject.size},
        }
        m = lay.put_json(doc, mt.MT_OCI_MANIFEST)
    return str(m.digest), {str(m.digest), str(empty.digest), str(payload.digest)}


@pytest.fixture
def skopeo_layout(skopeo: str, tmp_path: Path) -> Path:
    """Five images copied by skopeo: Docker-typed (v2s2) and OCI, shared configs."""
    lay = tmp_path / "oci"
    ds, oa = "docker-save", "oci-archive"
    sh(skopeo, "copy", "-q", f"docker-archive:{shared_fixture(ds, 'almostempty.tar')}",
       f"oci:{lay}:a")
    for ref, name in (("b", "gzip"), ("c", "zstd"), ("e", "uncompressed")):
        sh(skopeo, "copy", "-q",
           f"oci-archive:{shared_fixture(oa, f'test-oci-{name}-image.tar')}", f"oci:{lay}:{ref}")
    # a Docker v2 schema 2 manifest inside an OCI layout (umoci gc loses its config and layer)
    sh(skopeo, "copy", "-q", "--format", "v2s2",
       f"docker-archive:{shared_fixture(ds, 'hello-world-v25.tar')}", f"oci:{lay}:d")
    return lay


def test_skopeo_layout_retagged_and_untagged_by_umoci(
    skopeo: str, umoci: str, skopeo_layout: Path, tmp_path: Path
) -> None:
    lay = skopeo_layout
    blobs_of = {r: skopeo_blobs(skopeo, lay, r) for r in refs(lay)}
    sbom, sbom_blobs = add_referrer(lay, "c")
    # umoci edits: move tag b onto a's image, drop tag e
    sh(umoci, "tag", "--image", f"{lay}:a", "b")
    sh(umoci, "rm", "--image", f"{lay}:e")
    assert sorted(refs(lay)) == ["a", "b", "c", "d"]
    still = blobs_of["a"] | blobs_of["c"] | blobs_of["d"]
    old = (blobs_of["b"] | blobs_of["e"]) - still
    assert len(old) == 4  # two manifests, the gzip and the uncompressed layer (config shared)
    assert old == stored(lay) - skopeo_kept(skopeo, lay) - sbom_blobs

    before = stored(lay)
    umoci_copy = tmp_path / "umoci-copy"
    shutil.copytree(lay, umoci_copy, symlinks=True)
    dry = gc_json(lay, "--dry-run")
    assert stored(lay) == before
    out = gc_json(lay)
    assert removed(out) == removed(dry) == old, "the freed set is exactly the old blobs"
    assert out["referrersKept"] == [sbom]
    assert sbom_blobs <= stored(lay)
    # a Docker-typed manifest keeps its config and layer
    assert blobs_of["d"] <= stored(lay)
    check_after_gc(skopeo, lay, tmp_path)

    # umoci gc on the same layout removes at least as much: we are never less careful
    sh(umoci, "gc", "--layout", umoci_copy)
    assert old <= before - stored(umoci_copy)


def test_umoci_built_layout_matches_umoci_gc(skopeo: str, umoci: str, tmp_path: Path) -> None:
    lay, b1, b2 = tmp_path / "u", tmp_path / "b1", tmp_path / "b2"
    sh(umoci, "init", "--layout", lay)
    sh(umoci, "new", "--image", f"{lay}:base")
    sh(umoci, "unpack", "--rootless", "--image", f"{lay}:base", b1)
    (b1 / "rootfs" / "hello").write_text("hello\n")
    sh(umoci, "repack", "--image", f"{lay}:v1", b1)
    sh(umoci, "unpack", "--rootless", "--image", f"{lay}:v1", b2)
    (b2 / "rootfs" / "more").write_text("more\n")
    sh(umoci, "repack", "--image", f"{lay}:v2", b2)
    sh(umoci, "tag", "--image", f"{lay}:v2", "v2-copy")
    v1_blobs = skopeo_blobs(skopeo, lay, "v1")
    v2_first = skopeo_blobs(skopeo, lay, "v2")
    # orphans made by re-tagging: a config edit re-tags v2, then a repack re-tags it again
    sh(umoci, "config", "--image", f"{lay}:v2", "--config.env", "FOO=bar", "--tag", "v2")
    (b2 / "rootfs" / "third").write_text("3\n")
    sh(umoci, "repack", "--image", f"{lay}:v2", b2)
    # and tag removal (base has no layers, which the image-spec schema does not allow)
    sh(umoci, "rm", "--image", f"{lay}:base")
    sh(umoci, "rm", "--image", f"{lay}:v1")
    assert sorted(refs(lay)) == ["v2", "v2-copy"]

    kept = skopeo_kept(skopeo, lay)
    old = stored(lay) - kept
    assert v1_blobs & kept, "v1's layer is shared with v2 and must stay"
    assert (v1_blobs | v2_first) - kept <= old
    umoci_copy = tmp_path / "umoci-copy"
    shutil.copytree(lay, umoci_copy, symlinks=True)
    before = stored(lay)
    out = gc_json(lay)
    assert removed(out) == old
    assert out["bytesFreed"] == sum(r["size"] for r in out["removed"])
    check_after_gc(skopeo, lay, tmp_path)
    # on an OCI-only layout without referrers, umoci gc agrees blob for blob
    sh(umoci, "gc", "--layout", umoci_copy)
    assert before - stored(umoci_copy) == old
    # and umoci can still unpack what we kept
    sh(umoci, "unpack", "--rootless", "--image", f"{lay}:v2", tmp_path / "check")
    assert (tmp_path / "check" / "rootfs" / "third").read_text() == "3\n"


def test_after_our_convert_gc_frees_the_old_blobs(
    skopeo: str, skopeo_layout: Path, tmp_path: Path
) -> None:
    lay = skopeo_layout
    old_b = skopeo_blobs(skopeo, lay, "b")
    res = run_cli("convert", f"{lay}:b", "--compression", "zstd")
    assert res.code == 0, res.stderr
    new_b = skopeo_blobs(skopeo, lay, "b")
    kept = skopeo_kept(skopeo, lay)
    old = old_b - kept
    # the old manifest and its gzip layer; the config is unchanged by recompression and shared
    assert len(old) == 2 and new_b != old_b
    out = gc_json(lay)
    assert removed(out) == old
    assert stored(lay) == kept
    check_after_gc(skopeo, lay, tmp_path)
