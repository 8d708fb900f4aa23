"""gc's fast paths keep its safety: pinned blob directories, the unverified head sniff, and
removal on several threads (issue #8)."""

from __future__ import annotations

import json
import os
import shutil
import threading
from pathlib import Path

import pytest
from conftest import run_cli, sh
from dagbuild import LayoutBuilder, build_large

from layouttool import graph
from layouttool.errors import UnsafeInputError
from layouttool.ops import gc as gcmod
from layouttool.ops.gc import apply_gc, gc_layout, plan_gc
from layouttool.ops.verify import verify_layout
from layouttool.store import BlobDirs, Layout


@pytest.fixture
def b(tmp_path: Path) -> LayoutBuilder:
    return LayoutBuilder(tmp_path / "oci")


@pytest.mark.parametrize("slow_unlinks", [True, False])
def test_many_removals_on_threads_are_exactly_the_orphans_in_plan_order(
    tmp_path: Path, umoci: str, monkeypatch: pytest.MonkeyPatch, slow_unlinks: bool
) -> None:
    """Whether the first removals look slow (a disk with synchronous discards: threads) or not
    (tmpfs: one thread), the same files go, in plan order."""
    monkeypatch.setattr(gcmod, "_SLOW_S", 0.0 if slow_unlinks else 60.0)
    started: list[int] = []

    class Counted(gcmod.threading.Thread):
        def start(self) -> None:
            started.append(1)
            super().start()

    monkeypatch.setattr(gcmod.threading, "Thread", Counted)
    # enough orphans for the threaded path (untagged images: their manifests, configs, layers)
    b = build_large(tmp_path / "oci", images=6, orphan_images=30)
    orphans = b.stored() - b.expected_kept()
    assert len(orphans) >= gcmod._PARALLEL_MIN
    shutil.copytree(b.root, tmp_path / "twin", symlinks=True)
    dry = json.loads(run_cli("gc", "-n", "--json", tmp_path / "twin").stdout)
    real = run_cli("gc", "--json", b.root)
    assert real.code == 0, real.stderr
    out = json.loads(real.stdout)
    assert out["removed"] == dry["removed"]  # same files, same order
    assert {r["digest"] for r in out["removed"]} == {str(d) for d in orphans}
    assert len(started) == (gcmod._THREADS if slow_unlinks else 0)
    assert b.stored() == b.expected_kept()
    assert gc_layout(b.root).count == 0
    assert verify_layout(b.root).ok
    sh(umoci, "ls", "--layout", b.root)


def test_a_second_ctrl_c_still_waits_for_every_removal_thread(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pinned directory descriptors close when apply_gc leaves: no worker may still be
    about to unlink through one (its number could be reused by then), even when the user
    presses Ctrl-C twice."""
    monkeypatch.setattr(gcmod, "_SLOW_S", 0.0)
    started: list[threading.Thread] = []
    interrupts = [2]

    class Interrupted(gcmod.threading.Thread):
        def start(self) -> None:
            started.append(self)
            super().start()

        def join(self, timeout: float | None = None) -> None:
            if interrupts[0]:  # Ctrl-C while waiting, then again while cleaning up
                interrupts[0] -= 1
                raise KeyboardInterrupt
            super().join(timeout)

    real_remove = gcmod._remove

    def slow_remove(*args: object, **kw: object) -> bool:
        gcmod.time.sleep(0.002)
        return real_remove(*args, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(gcmod.threading, "Thread", Interrupted)
    monkeypatch.setattr(gcmod, "_remove", slow_remove)
    b = build_large(tmp_path / "oci", images=2, orphan_images=30)
    layout = Layout.open(b.root)
    plan = plan_gc(layout)
    with pytest.raises(KeyboardInterrupt):
        apply_gc(layout, plan)
    assert interrupts == [0] and len(started) == gcmod._THREADS
    assert not any(t.is_alive() for t in started)
    assert gc_layout(b.root).count > 0  # stopped early: the rest is still there to collect
    assert b.stored() == b.expected_kept()


def test_apply_leaves_alone_a_file_replaced_after_the_plan(b: LayoutBuilder) -> None:
    b.add_root(b.image(1), "a")
    stray, other = b.orphan(b"stray bytes"), b.orphan(b"other bytes")
    layout = Layout.open(b.root)
    plan = plan_gc(layout)
    p = b.blob_path(stray)
    fresh = p.with_name("fresh")
    fresh.write_bytes(b"stray bytes")  # written while the old file exists: another inode
    fresh.replace(p)  # same name and content, a new write (as an import would rename it in)
    done = apply_gc(layout, plan)
    assert [r.digest for r in done] == [other]
    assert p.exists() and not b.blob_path(other).exists()
    assert verify_layout(b.root).ok


def test_apply_follows_no_alg_directory_swapped_for_a_symlink(
    b: LayoutBuilder, tmp_path: Path
) -> None:
    b.add_root(b.image(1), "a")
    stray = b.orphan(b"stray")
    layout = Layout.open(b.root)
    plan = plan_gc(layout)
    # between plan and apply (another tool, no lock): blobs/sha256 becomes a symlink to a copy
    real = b.root / "blobs" / "sha256"
    moved = tmp_path / "moved-sha256"
    real.rename(moved)
    real.symlink_to(moved)
    assert apply_gc(layout, plan) == ()
    assert (moved / stray.encoded).exists()


@pytest.mark.parametrize("empty_index", [True, False])
def test_a_symlinked_blobs_directory_is_refused(
    b: LayoutBuilder, tmp_path: Path, empty_index: bool
) -> None:
    if not empty_index:
        b.add_root(b.image(1), "a")
    b.orphan(b"outside, must survive")
    # blobs/ points outside the layout: listing through it would make gc delete files there
    outside = tmp_path / "elsewhere"
    (b.root / "blobs").rename(outside)
    (b.root / "blobs").symlink_to(outside)
    before = sorted(p.name for p in (outside / "sha256").iterdir())
    res = run_cli("gc", b.root)
    assert res.code == UnsafeInputError.exit_code, res.stderr
    assert "blobs is a symlink" in res.stderr
    assert sorted(p.name for p in (outside / "sha256").iterdir()) == before


@pytest.mark.parametrize("link", [".layouttool", ".layouttool/tmp"])
def test_a_symlinked_state_directory_is_refused(
    b: LayoutBuilder, tmp_path: Path, link: str
) -> None:
    """A layout from an untrusted tarball with ``.layouttool/tmp -> $HOME``: gc once deleted
    every ``tmp-*`` file there as "temp files of interrupted writes"; writers would have put
    their temp files there. Both refuse now (exit 6) and touch nothing outside."""
    b.add_root(b.image(1), "a")
    b.write_index()
    outside = tmp_path / "home"
    (outside / "tmp").mkdir(parents=True)
    precious = [outside / "tmp-precious.db", outside / "tmp" / "tmp-precious.db"]
    for p in precious:
        p.write_text("user data")
    target = b.root / link
    shutil.rmtree(target, ignore_errors=True)
    target.parent.mkdir(exist_ok=True)
    target.symlink_to(outside)
    before = sorted(p.name for p in outside.rglob("*"))
    for args in (("gc", b.root), ("tag", f"{b.root}:a", "b")):
        res = run_cli(*args)
        assert res.code == UnsafeInputError.exit_code, res.stderr
        assert res.stderr.startswith("layouttool: error: ")
        assert "is a symlink or not a directory" in res.stderr
    assert sorted(p.name for p in outside.rglob("*")) == before
    assert all(p.read_text() == "user data" for p in precious)


def test_a_short_read_does_not_hide_a_referrers_subject(
    b: LayoutBuilder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read may return fewer bytes than asked (NFS, FUSE): the sniff must read on, or the
    referrer's "subject" goes unseen and the referrer is deleted."""
    img = b.image(1)
    b.add_root(img, "a")
    ref = b.referrer(img)
    b.write_index()
    real_read = os.read
    monkeypatch.setattr(os, "read", lambda fd, n: real_read(fd, min(n, 7)))
    plan = plan_gc(Layout.open(b.root))
    assert ref["digest"] in {str(d) for d in plan.referrers}
    assert ref["digest"] not in {str(r.digest) for r in plan.removals}


def test_alg_directories_opened_once_from_many_threads(b: LayoutBuilder) -> None:
    """gc's removal threads ask for blobs/<alg> at once: one descriptor each, none leaked."""
    b.add_root(b.image(1), "a")
    b.write_index()
    (b.root / "blobs" / "sha512").mkdir()
    fds_before = len(os.listdir("/proc/self/fd"))
    for _ in range(20):
        with BlobDirs(Layout.open(b.root)) as dirs:
            barrier = threading.Barrier(8)
            got: list[int | None] = []

            def open_alg(dirs: BlobDirs = dirs, barrier: threading.Barrier = barrier,
                         got: list[int | None] = got) -> None:
                barrier.wait()
                got.append(dirs.alg_fd("sha512"))

            threads = [threading.Thread(target=open_alg) for _ in range(8)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert len(got) == 8 and len(set(got)) == 1 and got[0] is not None
    assert len(os.listdir("/proc/self/fd")) == fds_before


def test_a_referrer_behind_more_whitespace_than_the_sniff_is_kept(b: LayoutBuilder) -> None:
    img = b.image(1)
    b.add_root(img, "a")
    pad = b" \n\t" * graph._SNIFF  # JSON allows any amount of leading whitespace
    ref = b.orphan(pad + json.dumps({"subject": img}).encode())
    blank = b.orphan(b" " * (graph._SNIFF * 2))  # all whitespace: not JSON, so not kept
    res = gc_layout(b.root)
    assert res.referrers == (ref,)
    assert [r.digest for r in res.removed] == [blank]
    assert verify_layout(b.root).ok


def test_layers_are_not_hashed_and_configs_without_subject_not_verified(
    b: LayoutBuilder,
) -> None:
    # an orphan layer and an orphan JSON document whose bytes do not match their names: gc
    # decides from their first bytes / lack of a subject and never reads them verified
    layer, doc = b.orphan(b"\x1f\x8b" + os.urandom(4096)), b.orphan(b'{"config": 1}')
    b.add_root(b.image(1), "a")
    for d in (layer, doc):
        p = b.blob_path(d)
        p.write_bytes(p.read_bytes()[:-1] + b"!")  # corrupt, same size
    opened: list[str] = []
    real_open = BlobDirs.open_blob

    def spy(self: BlobDirs, digest, size=None):  # type: ignore[no-untyped-def]
        opened.append(str(digest))
        return real_open(self, digest, size)

    BlobDirs.open_blob = spy  # type: ignore[method-assign]
    try:
        res = gc_layout(b.root)
    finally:
        BlobDirs.open_blob = real_open  # type: ignore[method-assign]
    assert {r.digest for r in res.removed} == {layer, doc}
    assert opened and str(layer) not in opened and str(doc) not in opened
