"""Property tests of gc over random DAGs (tests/dagbuild.py): exactly the orphans go."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from dagbuild import BuiltDag, DagSpec, build, dag_specs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from layouttool.digest import Digest
from layouttool.errors import LayoutToolError
from layouttool.ops.gc import gc_layout, plan_gc
from layouttool.ops.verify import verify_layout
from layouttool.store import Layout

#: many small files per example: a RAM-backed temp dir when there is one keeps the suite fast
FAST_TMP = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None
SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file of the layout (symlinks as their target text) with its content; our lock
    files in .layouttool/ are not content."""
    out: dict[str, bytes] = {}
    for dirpath, _dirs, files in os.walk(root):
        if Path(dirpath) == root / ".layouttool":
            files = [f for f in files if f not in ("lock", "index.lock")]
        for f in files:
            p = Path(dirpath) / f
            rel = str(p.relative_to(root))
            out[rel] = b"->" + os.readlink(p).encode() if p.is_symlink() else p.read_bytes()
    return out


def removed_digests(res_removed) -> set[Digest]:
    return {r.digest for r in res_removed if r.digest is not None}


def check_gc(dag: BuiltDag) -> None:
    before = dag.builder.stored()
    assert verify_layout(dag.root).ok, "the builder must make valid layouts"
    dry = gc_layout(dag.root, dry_run=True)
    assert removed_digests(dry.removed) == dag.orphans
    assert snapshot(dag.root).keys() >= {f"blobs/sha256/{d.encoded}" for d in before}
    res = gc_layout(dag.root)
    gone = removed_digests(res.removed)
    assert gone == dag.orphans, "removed == orphans exactly"
    assert not gone & dag.kept, "nothing reachable is removed"
    assert [r.to_json() for r in res.removed] == [r.to_json() for r in dry.removed]
    assert dag.builder.stored() == before - dag.orphans
    assert res.bytes_freed == sum(dag.builder.blobs[d].size for d in dag.orphans)
    assert res.kept == len(before - dag.orphans)
    again = gc_layout(dag.root)
    assert again.count == 0, "a second gc removes nothing"
    v = verify_layout(dag.root)
    assert v.ok, v.problems


@SETTINGS
@given(dag_specs())
def test_gc_removes_exactly_the_orphans(spec: DagSpec) -> None:
    with tempfile.TemporaryDirectory(dir=FAST_TMP) as tmp:
        check_gc(build(spec, Path(tmp) / "oci"))


@SETTINGS
@given(dag_specs(max_nodes=10), st.data())
def test_referrers_of_kept_subjects_are_kept(spec: DagSpec, data: st.DataObject) -> None:
    with tempfile.TemporaryDirectory(dir=FAST_TMP) as tmp:
        dag = build(spec, Path(tmp) / "oci")
        b = dag.builder
        kept_docs = dag.documents()
        if not kept_docs:
            return
        # an unlisted SBOM of a kept document, and a signature of that SBOM (a chain)
        target = data.draw(st.sampled_from(kept_docs))
        subject = next(d for d in dag.descs if Digest.parse(d["digest"]) == target)
        sbom = b.referrer(subject, nonce="sbom")
        sig = b.referrer(sbom, nonce="sig", docs=False)
        # and a referrer of a blob nobody keeps: it goes
        ghost = b.referrer(b.image(1, nonce="ghost"), nonce="ghost-sbom")
        dag.kept = b.expected_kept()
        dag.orphans = b.stored() - dag.kept
        for d in (sbom, sig):
            assert Digest.parse(d["digest"]) in dag.kept
        assert Digest.parse(ghost["digest"]) in dag.orphans
        plan = plan_gc(Layout.open(dag.root))
        assert {Digest.parse(sbom["digest"]), Digest.parse(sig["digest"])} <= set(
            plan.referrers)
        check_gc(dag)


BREAKS = ("delete", "corrupt", "not-json", "symlink", "truncate")


def break_blob(dag: BuiltDag, digest: Digest, how: str) -> None:
    p = dag.builder.blob_path(digest)
    data = p.read_bytes()
    if how == "delete":
        p.unlink()
    elif how == "corrupt":
        p.write_bytes(bytes([data[0] ^ 1]) + data[1:])  # same size, other content
    elif how == "not-json":
        p.write_bytes(b"\x00" * len(data))
    elif how == "truncate":
        p.write_bytes(data[:-1])
    else:
        target = dag.root.parent / f"target-{digest.encoded}"
        target.write_bytes(data)
        p.unlink()
        p.symlink_to(target)


@SETTINGS
@given(dag_specs(), st.data())
def test_fail_closed_deletes_nothing_and_force_keeps_what_is_known(
    spec: DagSpec, data: st.DataObject
) -> None:
    with tempfile.TemporaryDirectory(dir=FAST_TMP) as tmp:
        dag = build(spec, Path(tmp) / "oci")
        # a document index.json reaches (a referrer found only by scanning just goes when
        # it is unreadable: nothing proves it is one)
        docs = dag.documents(referrers=False)
        if not docs:
            return
        victim = data.draw(st.sampled_from(docs))
        how = data.draw(st.sampled_from(BREAKS))
        break_blob(dag, victim, how)
        before = snapshot(dag.root)
        kept = dag.builder.expected_kept(unreadable=[victim])
        on_disk = {Digest.parse(f"sha256:{Path(k).name}") for k in before
                   if k.startswith("blobs/sha256/")}
        roots = {Digest.parse(r["digest"]) for r in dag.builder.roots}
        if how == "delete" and victim not in roots:
            # absent where only an index or a subject names it (a partial export, a referrer
            # of an absent image): a warning, and gc walks everything else
            res = gc_layout(dag.root)
            assert removed_digests(res.removed) == on_disk - kept
            assert victim in {w.digest for w in res.warnings}
            assert res.unwalked == ()
            return
        with pytest.raises(LayoutToolError) as ei:
            gc_layout(dag.root)
        assert str(victim) in str(ei.value)
        assert "nothing was deleted" in str(ei.value)
        assert ei.value.exit_code in (3, 4, 5, 6)
        with pytest.raises(LayoutToolError):
            gc_layout(dag.root, dry_run=True)
        assert snapshot(dag.root) == before, "a refused gc changes nothing"

        # --force: the broken document is kept unread; the rest is collected as usual
        res = gc_layout(dag.root, force=True)
        assert removed_digests(res.removed) == on_disk - kept
        assert [s.digest for s in res.unwalked] == [str(victim)]
        if how != "delete":
            assert (dag.builder.blob_path(victim)).is_symlink() or (
                dag.builder.blob_path(victim).exists())
