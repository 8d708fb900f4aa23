"""gc: what it keeps and removes in hand-made layouts, fail-closed cases, the CLI, the lock."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path

import pytest
from conftest import run_cli
from dagbuild import UNKNOWN_DOC_TYPE, LayoutBuilder

import layouttool
from layouttool import mediatypes as mt
from layouttool.digest import Digest
from layouttool.errors import NotFoundError
from layouttool.ops.gc import (
    REASON_LINK,
    REASON_TEMP,
    REASON_UNREFERENCED,
    SKIP_BAD_NAME,
    SKIP_NOT_FILE,
    gc_layout,
    plan_gc,
)
from layouttool.ops.verify import verify_layout
from layouttool.store import Layout


def D(desc: dict) -> Digest:
    return Digest.parse(desc["digest"])


def all_files(root: Path) -> set[str]:
    """Every path under the layout except our lock files."""
    return {str(p.relative_to(root)) for p in root.rglob("*")
            if not p.is_dir() or p.is_symlink()} - {".layouttool/lock", ".layouttool/index.lock"}


def assert_gc_ok(b: LayoutBuilder) -> None:
    """gc removes exactly the oracle's orphans, then verify passes and a 2nd gc is a no-op."""
    orphans = b.stored() - b.expected_kept()
    res = gc_layout(b.root)
    assert {r.digest for r in res.removed if r.digest} == orphans
    assert gc_layout(b.root).count == 0
    v = verify_layout(b.root)
    assert v.ok, v.problems


@pytest.fixture
def b(tmp_path: Path) -> LayoutBuilder:
    return LayoutBuilder(tmp_path / "oci")


# -- what is kept ----------------------------------------------------------------------------


def test_docker_manifest_keeps_config_and_layers(b: LayoutBuilder) -> None:
    # umoci 0.4.7 deletes 5 of these 6 blobs: it treats Docker media types as leaves
    dm = b.image(2, docker=True, nonce="d")
    lst = b.index([b.image(1, docker=True, nonce="arm"), dm], docker=True)
    b.add_root(dm, "docker")
    b.add_root(lst, "list")
    stray = b.orphan()
    res = gc_layout(b.root)
    assert [r.digest for r in res.removed] == [stray]
    assert b.stored() == b.expected_kept() & b.stored()
    manifest = json.loads(b.blob_path(D(dm)).read_bytes())
    for d in [manifest["config"], *manifest["layers"]]:
        assert b.blob_path(D(d)).is_file()
    assert verify_layout(b.root).ok


def test_untagged_entries_and_nested_indexes_are_roots(b: LayoutBuilder) -> None:
    inner = b.index([b.image(1, nonce=1), b.image(2, nonce=2)])
    outer = b.index([inner, b.image(1, nonce=3)])
    b.add_root(outer)  # no ref name
    b.orphan()
    b.orphan(b'{"schemaVersion":2}')  # JSON-looking, no subject: an orphan all the same
    assert len(b.stored() - b.expected_kept()) == 2
    assert_gc_ok(b)


def test_unknown_manifest_like_documents_are_followed(b: LayoutBuilder) -> None:
    img = b.image(1, nonce="inside")
    loose = b.layer()
    art = b.artifact([img, dict(loose, mediaType="application/vnd.example.data")])
    b.add_root(art, "future")
    b.orphan()
    assert {D(img), D(loose)} <= b.expected_kept()
    assert_gc_ok(b)
    assert b.blob_path(D(loose)).exists()


def test_referrers_are_kept_and_their_subtrees_too(b: LayoutBuilder) -> None:
    img = b.image(1, nonce="app")
    b.add_root(img, "app")
    sbom = b.referrer(img, nonce="sbom")
    sig = b.referrer(sbom, nonce="sig")  # a signature of the SBOM: a chain
    # a referrer that is an index, listing an image nobody else lists
    extra = b.image(1, nonce="attest-image")
    ref_index = b.index([extra], subject=img)
    # referrers of an orphan image go with it
    gone = b.image(1, nonce="old")
    gone_sbom = b.referrer(gone, nonce="old-sbom")
    # referrers of a Docker manifest too (a subject may be any manifest)
    dm = b.image(1, docker=True, nonce="dk")
    b.add_root(dm, "dk")
    dsig = b.referrer(dm, nonce="dk-sig")
    plan = plan_gc(Layout.open(b.root))
    assert set(plan.referrers) == {D(sbom), D(sig), D(ref_index), D(dsig)}
    kept = b.expected_kept()
    assert {D(sbom), D(sig), D(ref_index), D(extra), D(dsig)} <= kept
    assert {D(gone), D(gone_sbom)} <= b.stored() - kept
    res = gc_layout(b.root)
    assert str(D(sig)) in json.dumps(res.to_json()["referrersKept"])
    assert_gc_ok(b)


def test_the_subject_of_a_found_referrer_is_read_even_if_met_as_a_leaf(
    b: LayoutBuilder,
) -> None:
    # M is reached only as a layer (a leaf: not read) and as the subject of an unrooted
    # referrer. gc once kept M's digest but never read it, deleting M's config and layers
    m = b.image(2, nonce="m")
    top = b.manifest(b.config(1, nonce="top"), [dict(m, mediaType=mt.MT_OCI_LAYER)])
    b.add_root(top, "top")
    sig = b.referrer(m, nonce="sig")
    kept = b.expected_kept()
    assert D(sig) in kept and len(b.blobs[D(m)].refs) == 3
    assert {d for d, _ in b.blobs[D(m)].refs} <= kept
    assert_gc_ok(b)


def test_a_referrer_of_an_unread_unknown_document_ends(b: LayoutBuilder) -> None:
    # X lists Y by a type that is no manifest (so Y is a leaf, never read), and a referrer
    # names Y as its subject: gc handed Y back as a pending subject every round, forever
    y = b.artifact([b.layer()], nonce="y")
    x = b.artifact([dict(y, mediaType=UNKNOWN_DOC_TYPE)], nonce="x")
    b.add_root(x, "x")
    b.referrer(y, nonce="sig")
    b.orphan(b"old")
    assert_gc_ok(b)


def test_a_manifest_bundled_as_a_layer_is_still_walked(b: LayoutBuilder) -> None:
    # graph.walk once marked B's digest as a leaf first and never read B, so gc deleted B's
    # config and layers although B is tagged
    mb = b.image(2, nonce="b")
    ma = b.manifest(b.config(2, nonce="a"), [b.layer(), dict(mb, mediaType=mt.MT_OCI_LAYER)])
    b.add_root(ma, "a")
    b.add_root(mb, "b")
    assert gc_layout(b.root).count == 0
    assert verify_layout(b.root).ok


def test_layers_are_never_read(b: LayoutBuilder) -> None:
    img = b.image(2, nonce=1)
    b.add_root(img, "a")
    layer = json.loads(b.blob_path(D(img)).read_bytes())["layers"][0]
    p = b.blob_path(D(layer))
    p.write_bytes(b"\x00" * p.stat().st_size)  # corrupt, same size: only hashing would tell
    stray = b.orphan()
    res = gc_layout(b.root)
    assert [r.digest for r in res.removed] == [stray]
    assert p.exists()
    assert not verify_layout(b.root).ok  # verify hashes layers; gc does not


def test_missing_layer_is_not_a_gc_error(b: LayoutBuilder) -> None:
    img = b.image(2, nonce=1)
    b.add_root(img, "a")
    layer = json.loads(b.blob_path(D(img)).read_bytes())["layers"][1]
    b.blob_path(D(layer)).unlink()
    stray = b.orphan()
    assert [r.digest for r in gc_layout(b.root).removed] == [stray]


def test_referrer_found_whatever_its_json_spelling(b: LayoutBuilder) -> None:
    img = b.image(1)
    b.add_root(img, "a")
    subject = json.dumps(img)
    # leading whitespace, an escaped key, no mediaType: still a JSON object with a subject
    hidden = b.orphan(f' \n{{"\\u0073ubject": {subject}, "note": "sig"}}'.encode())
    plain = b.orphan(f'{{"subject": {subject}}}'.encode())
    res = gc_layout(b.root)
    assert res.count == 0
    assert set(res.referrers) == {hidden, plain}


def test_corrupt_json_orphan_with_subject_is_not_a_referrer(b: LayoutBuilder) -> None:
    img = b.image(1)
    b.add_root(img, "a")
    doc = json.dumps({"subject": img, "x": 1}).encode()
    d = b.orphan(doc)
    b.blob_path(d).write_bytes(doc.replace(b'"x": 1', b'"x": 2'))  # content != its name
    assert [r.digest for r in gc_layout(b.root).removed] == [d]


# -- the blobs/ and tmp sweep ----------------------------------------------------------------


def test_symlinked_blob_is_removed_as_a_link(b: LayoutBuilder, tmp_path: Path) -> None:
    b.add_root(b.image(1), "a")
    target = tmp_path / "precious"
    d, link = b.symlink_blob(target, b"precious bytes")
    res = gc_layout(b.root)
    assert [(r.digest, r.reason) for r in res.removed] == [(d, REASON_LINK)]
    assert not link.exists() and not link.is_symlink()
    assert target.read_bytes() == b"precious bytes"


def test_dangling_symlink_blob_is_removed(b: LayoutBuilder, tmp_path: Path) -> None:
    b.add_root(b.image(1), "a")
    d, link = b.symlink_blob(tmp_path / "t", b"x")
    (tmp_path / "t").unlink()
    assert [r.digest for r in gc_layout(b.root).removed] == [d]
    assert not link.is_symlink()


def test_names_that_are_not_digests_are_left_alone(b: LayoutBuilder) -> None:
    b.add_root(b.image(1), "a")
    hexes = hashlib.sha256(b"x").hexdigest()
    junk = [
        b.junk_file("sha256/notadigest"),
        b.junk_file(f"sha256/{hexes.upper()}"),
        b.junk_file(f"sha256/{hexes}.partial"),
        b.junk_file(f"md5/{hashlib.md5(b'x').hexdigest()}"),  # an algorithm we cannot verify
        b.junk_file("README"),
    ]
    (b.root / "blobs" / "sha256" / hashlib.sha256(b"dir").hexdigest()).mkdir()
    res = gc_layout(b.root)
    assert res.count == 0
    assert all(p.exists() for p in junk)
    reasons = {s.path: s.reason for s in res.skipped}
    for p in junk:
        assert reasons[str(p.relative_to(b.root))] == SKIP_BAD_NAME
    assert reasons[f"blobs/sha256/{hashlib.sha256(b'dir').hexdigest()}"] == SKIP_NOT_FILE
    assert verify_layout(b.root).ok


def test_sha512_blobs_are_collected_too(b: LayoutBuilder) -> None:
    b.add_root(b.image(1), "a")
    data = b"an orphan stored under sha512"
    p = b.root / "blobs" / "sha512" / hashlib.sha512(data).hexdigest()
    p.parent.mkdir()
    p.write_bytes(data)
    res = gc_layout(b.root)
    assert [str(r.digest) for r in res.removed] == [f"sha512:{p.name}"]


def test_temp_files_are_removed(b: LayoutBuilder) -> None:
    b.add_root(b.image(1), "a")
    t1 = b.temp_file("tmp-1-aaaa", b"half a layer")
    t2 = b.temp_file("tmp-2-bbbb", b"")
    other = b.temp_file("not-ours", b"keep")
    res = gc_layout(b.root)
    assert {(r.rel, r.reason) for r in res.removed} == {
        (".layouttool/tmp/tmp-1-aaaa", REASON_TEMP), (".layouttool/tmp/tmp-2-bbbb", REASON_TEMP)}
    assert res.bytes_freed == len(b"half a layer")
    assert not t1.exists() and not t2.exists() and other.exists()
    assert res.to_json()["removed"][0].keys() == {"path", "size", "reason"}


def test_gc_waits_for_a_writer_and_never_sees_its_temp_file(b: LayoutBuilder) -> None:
    b.add_root(b.image(1), "a")
    layout = Layout.open(b.root)
    started = threading.Event()
    release = threading.Event()
    committed: list[Digest] = []

    def writer() -> None:
        # an import in progress: shared lock held, a blob written but not yet referenced
        with layout.writing(), layout.writer() as w:
            w.write(b"fresh layer")
            started.set()
            release.wait(5)
            committed.append(w.commit().digest)

    t = threading.Thread(target=writer)
    t.start()
    assert started.wait(5)
    result: list[layouttool.GcResult] = []
    g = threading.Thread(target=lambda: result.append(gc_layout(b.root)))
    g.start()
    time.sleep(0.3)
    assert not result, "gc must wait while a writer holds the layout lock"
    assert len(layout.tmp_files()) == 1
    release.set()
    t.join(5)
    g.join(5)
    # gc ran after the writer: the new blob is an orphan now (nobody tagged it), the writer's
    # temp file had become that blob, and nothing was lost in between
    assert [r.digest for r in result[0].removed] == committed


def test_plan_is_pure(b: LayoutBuilder) -> None:
    b.add_root(b.image(1), "a")
    b.orphan()
    b.temp_file()
    before = all_files(b.root)
    plan = plan_gc(Layout.open(b.root))
    assert len(plan.removals) == 2
    assert all_files(b.root) == before


def test_python_api_is_exported(b: LayoutBuilder) -> None:
    b.add_root(b.image(1), "a")
    b.orphan()
    res = layouttool.gc_layout(b.root, dry_run=True)
    assert isinstance(res, layouttool.GcResult)
    assert res.count == 1 and b.blob_path(res.removed[0].digest).exists()


# -- fail closed -----------------------------------------------------------------------------


def _break(b: LayoutBuilder, d: Digest, how: str, tmp: Path) -> None:
    p = b.blob_path(d)
    data = p.read_bytes()
    if how == "missing":
        p.unlink()
    elif how == "corrupt":
        p.write_bytes(data.replace(b"schemaVersion", b"schemaVersiom"))
    elif how == "not-json":
        p.write_bytes(b"\xff" * len(data))
    elif how == "symlink":
        (tmp / "t").write_bytes(data)
        p.unlink()
        p.symlink_to(tmp / "t")


@pytest.mark.parametrize(("how", "code", "where"), [
    ("missing", 3, "root"),
    *((how, code, where) for how, code in (("corrupt", 5), ("not-json", 5), ("symlink", 6))
      for where in ("root", "nested")),
])
def test_unreadable_reachable_manifest_stops_gc(
    b: LayoutBuilder, tmp_path: Path, how: str, code: int, where: str
) -> None:
    img = b.image(2, nonce="victim")
    other = b.image(1, nonce="ok")
    if where == "root":
        b.add_root(img, "app")
    else:
        b.add_root(b.index([other, img]), "multi")
    stray = b.orphan()
    b.temp_file()
    _break(b, D(img), how, tmp_path)
    before = all_files(b.root)
    res = run_cli("gc", b.root)
    assert res.code == code, res.stderr
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("layouttool: error: gc stopped, nothing "
                                                   "was deleted: ")
    assert str(D(img)) in lines[0] and "--force" in lines[0]
    assert res.stdout == ""
    assert all_files(b.root) == before
    assert run_cli("gc", "--dry-run", b.root).code == code

    # the broken manifest's config and layers are unknown to gc now: they go with the orphan
    expected = b.stored() - b.expected_kept(unreadable=[D(img)])
    # stray + the victim's config and 2 layers (+ the unlisted `other` image when rooted)
    assert stray in expected and len(expected) == (4 if where == "nested" else 7)
    forced = run_cli("gc", "--force", "--json", b.root)
    assert forced.code == 0, forced.stderr
    out = json.loads(forced.stdout)
    gone = {r.get("digest") for r in out["removed"]}
    assert gone - {None} == {str(x) for x in expected}
    assert [s["digest"] for s in out["skipped"] if "error" in s] == [str(D(img))]
    assert "unreadable documents kept (--force)" in forced.stderr
    if how != "missing":
        assert b.blob_path(D(img)).is_symlink() or b.blob_path(D(img)).exists()
    if where == "nested":
        assert b.blob_path(D(other)).exists()


def test_manifest_descriptor_on_a_non_json_blob_stops_gc(b: LayoutBuilder) -> None:
    # the digest is right, so only parsing can tell: exit 4, not 5
    layer = b.layer(b"\x1f\x8b\x08 a gzip layer, not a manifest")
    b.add_root(dict(layer, mediaType=mt.MT_OCI_MANIFEST), "wrong")
    b.orphan()
    before = all_files(b.root)
    res = run_cli("gc", b.root)
    assert res.code == 4
    assert str(D(layer)) in res.stderr and "not valid JSON" in res.stderr
    assert all_files(b.root) == before


def test_root_of_unknown_type_that_is_not_json_stops_gc(b: LayoutBuilder) -> None:
    layer = b.layer(b"\x1f\x8bnot a document")
    b.add_root(dict(layer, mediaType="application/vnd.example.thing"), "odd")
    b.orphan()
    res = run_cli("gc", b.root)
    assert res.code == 4
    assert str(D(layer)) in res.stderr and "not valid JSON" in res.stderr


def _blobs_of(b: LayoutBuilder, manifest: dict) -> list[Digest]:
    return [D(manifest), *(d for d, _ in b.blobs[D(manifest)].refs)]


def test_absent_platform_manifest_warns_and_gc_goes_on(b: LayoutBuilder) -> None:
    """``ctr export`` and Docker's containerd store write a multi-platform index whose other
    platforms are absent: a warning (the rest of the index is walked), not a refusal."""
    here = b.image(2, nonce="here")
    gone = b.image(1, nonce="gone")
    b.add_root(b.index([here, gone]), "multi")
    for d in _blobs_of(b, gone):
        b.blob_path(d).unlink()
    stray = b.orphan()
    res = run_cli("gc", "--json", b.root)
    assert res.code == 0, res.stderr
    out = json.loads(res.stdout)
    assert {r["digest"] for r in out["removed"]} == {str(stray)}
    (w,) = out["warnings"]
    assert w["code"] == "manifest-missing" and w["digest"] == str(D(gone))
    assert w["where"] == f"multi > manifest {D(gone)}"
    # printed on stderr, one line, with the digest it is about; never on --json's stdout
    assert f"layouttool: warning: {D(gone)}: " in res.stderr
    assert "[manifest-missing]" in res.stderr and "warning" not in res.stdout.split('"warnings"')[0]
    assert all(b.blob_path(d).exists() for d in _blobs_of(b, here))
    assert run_cli("-q", "gc", b.root).stderr == ""


def test_absent_subject_of_a_rooted_referrer_warns_and_gc_goes_on(b: LayoutBuilder) -> None:
    """regclient writes referrers whose subject is not in the layout (allowed: a layout MAY
    miss blobs, and subject is a weak link)."""
    img = b.image(1)
    sbom = b.referrer(img)
    b.add_root(sbom, "sbom")
    b.blob_path(D(img)).unlink()
    stray = b.orphan()
    res = gc_layout(b.root)
    # the absent image's config and layer: nothing can reach them without it
    assert {r.digest for r in res.removed} == {stray, *_blobs_of(b, img)[1:]}
    assert [(w.code, w.digest, w.where) for w in res.warnings] == [
        ("subject-missing", D(img), f"sbom > subject {D(img)}")]
    assert b.blob_path(D(sbom)).exists()
    v = verify_layout(b.root)
    assert v.ok and [w.code for w in v.warnings] == ["subject-missing"]
    assert verify_layout(b.root, strict=True).exit_code == 5


def test_an_absent_entry_met_first_as_a_subject_still_stops_gc(b: LayoutBuilder) -> None:
    # index.json lists a referrer, then the image it refers to, whose blob is gone. The walk
    # met the image first as the referrer's subject (absent: a warning) and then skipped the
    # entry as already failed, so gc deleted the image's config and layer
    img = b.image(1)
    sbom = b.referrer(img)
    b.add_root(sbom, "sbom")
    b.add_root(img, "app")
    b.blob_path(D(img)).unlink()
    before = all_files(b.root)
    with pytest.raises(NotFoundError, match="nothing was deleted"):
        gc_layout(b.root)
    assert all_files(b.root) == before
    v = verify_layout(b.root)
    assert [p.code for p in v.problems] == ["blob-missing"]


# -- CLI -------------------------------------------------------------------------------------


def test_cli_dry_run_lists_exactly_what_the_real_run_removes(b: LayoutBuilder) -> None:
    img = b.image(2)
    b.add_root(img, "a")
    orphans = {b.orphan(), D(b.image(1, nonce="untagged-later"))}
    b.temp_file()
    before = all_files(b.root)
    dry = run_cli("gc", "-n", "--json", b.root)
    assert dry.code == 0
    assert all_files(b.root) == before
    real = run_cli("gc", "--json", b.root)
    assert real.code == 0
    d, r = json.loads(dry.stdout), json.loads(real.stdout)
    assert d["dryRun"] is True and r["dryRun"] is False
    assert d["removed"] == r["removed"]
    assert d["count"] == r["count"] == len(r["removed"]) == 5  # 2 orphans + config + layer + tmp
    assert r["bytesFreed"] == sum(x["size"] for x in r["removed"])
    assert {x["digest"] for x in r["removed"] if "digest" in x} >= {str(o) for o in orphans}
    assert r["kept"] == 4
    assert set(r) == {"layout", "dryRun", "removed", "count", "bytesFreed", "kept",
                      "referrersKept", "skipped", "warnings"}
    assert r["warnings"] == []
    again = json.loads(run_cli("gc", "--json", b.root).stdout)
    assert again["count"] == 0 and again["removed"] == []
    assert verify_layout(b.root).ok


def test_cli_human_output(b: LayoutBuilder) -> None:
    b.add_root(b.image(1), "a")
    o = b.orphan(b"x" * 2048)
    b.junk_file("sha256/junk")
    dry = run_cli("gc", "--dry-run", b.root)
    assert dry.code == 0
    assert f"would remove  {o}  2.0 KiB  {REASON_UNREFERENCED}" in dry.stdout
    assert "left alone  blobs/sha256/junk" in dry.stdout
    assert dry.stderr.strip() == "gc (dry run): 1 files, would free 2.0 KiB; kept 3 blobs"
    real = run_cli("gc", b.root)
    assert f"removed  {o}" in real.stdout
    assert real.stderr.strip() == "gc: 1 files, freed 2.0 KiB; kept 3 blobs"
    assert run_cli("-q", "gc", b.root).stderr == ""


def test_cli_errors_are_one_line(tmp_path: Path) -> None:
    res = run_cli("gc", tmp_path / "nope")
    assert res.code == 3
    assert res.stderr.count("\n") == 1 and "does not exist" in res.stderr
    (tmp_path / "plain").mkdir()
    res = run_cli("gc", tmp_path / "plain")
    assert res.code == 4 and "not an OCI image layout" in res.stderr
    res = run_cli("gc", "--bogus", tmp_path)
    assert res.code == 2


def test_cli_help_says_what_is_kept() -> None:
    res = run_cli("gc", "--help")
    assert res.code == 0
    text = " ".join(res.stdout.split())
    for phrase in ("tagged or not", "subject", "Referrers are kept", "first bytes",
                   "Layers are never read", "--force", "symlink", "left alone", "Examples:"):
        assert phrase in text
    assert UNKNOWN_DOC_TYPE not in text
