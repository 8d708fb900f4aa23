"""The merged tree (rootfs.merge) against unpack (rootfs.apply), the truth it models.

For every stack of layers: applying them to a directory, and applying them to a MergedTree and
then unpacking the one tar write_merged makes of it, must give the same tree (types, modes,
owners, contents, link targets, hardlink groups, devices, xattrs, file mtimes), or both refuse
the same layer with the same error class. The stacks: the peers' tables (containerd, moby,
umoci), the dive fixture (392 hardlinks, whiteouts), hand-made tricky cases, and hypothesis.
"""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import pytest
from fixtures_path import shared_fixture
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from layerbuild import NonSeekable, build_layer
from layerstacks import TRICKY, D, Layer, containerd_cases, containerd_ids, dive_layers
from treeutil import diff as tree_diff
from treeutil import snapshot

from layouttool import errors
from layouttool.rootfs import apply_layer
from layouttool.rootfs.merge import MergedTree
from layouttool.rootfs.merged_tar import write_merged
from layouttool.rootfs.treediff import compare

#: the first layer refused, and how (None: every layer applied)
Refusal = tuple[int, type[BaseException]] | None
ALLOWED = (errors.UnsafeInputError, errors.InvalidInputError)


def as_bytes(layer: Layer) -> bytes:
    return layer if isinstance(layer, bytes) else build_layer(layer)


def full_snapshot(root: Path) -> dict[str, dict[str, Any]]:
    """treeutil's snapshot plus file mtimes and xattrs."""
    snap = snapshot(root, mtimes=True)
    for rel, info in snap.items():
        p = root / rel
        if not stat.S_ISLNK(info["type"]):
            info["xattrs"] = {k: os.getxattr(p, k) for k in sorted(os.listxattr(p))}
    return snap


def unpack_all(root: Path, layers: list[bytes]) -> Refusal:
    """Apply layers to root; the first refusal as (layer index, error class)."""
    root.mkdir()
    for i, data in enumerate(layers):
        try:
            apply_layer(NonSeekable(data), root)
        except ALLOWED as exc:
            return i, type(exc)
    return None


def merge_all(layers: list[bytes], **kw: Any) -> tuple[MergedTree, Refusal]:
    tree = MergedTree(**kw)
    for i, data in enumerate(layers):
        try:
            tree.apply_layer(NonSeekable(data), hash_contents=True)
        except ALLOWED as exc:
            return tree, (i, type(exc))
    return tree, None


def merged_tar(tree: MergedTree, layers: list[bytes]) -> bytes:
    out = io.BytesIO()

    @contextmanager
    def opener(i: int) -> Iterator[BinaryIO]:
        stream = NonSeekable(layers[i])
        yield stream  # type: ignore[misc]
        stream.rest()

    write_merged(tree, opener, out.write)
    return out.getvalue()


def check_stack(tmp_path: Path, stack: list[Layer]) -> bytes | None:
    """The core property; returns the merged tar (None when both refused)."""
    layers = [as_bytes(layer) for layer in stack]
    want = unpack_all(tmp_path / "unpacked", layers)
    tree, got = merge_all(layers)
    assert got == want, f"unpack refused {want}, merge refused {got}"
    if want is not None:
        return None
    data = merged_tar(tree, layers)
    assert_well_formed(data)
    again = tmp_path / "from-merged"
    assert unpack_all(again, [data]) is None
    expected = full_snapshot(tmp_path / "unpacked")
    assert tree_diff(expected, full_snapshot(again)) == []
    # the model's own listing agrees with the disk as well
    listed = {e.path: e for e in tree.entries()}
    assert sorted(listed) == sorted(expected)
    for path, e in listed.items():
        info = expected[path]
        assert stat.S_IFMT(info["type"]) == {
            "file": stat.S_IFREG, "dir": stat.S_IFDIR, "symlink": stat.S_IFLNK,
            "char": stat.S_IFCHR, "block": stat.S_IFBLK, "fifo": stat.S_IFIFO}[e.kind], path
        assert (e.meta.uid, e.meta.gid) == info["owner"], path
        if e.kind == "file":
            assert e.meta.size == info["size"], path
            assert e.meta.digest is not None and e.meta.digest.hex() == info["sha256"], path
    return data


def assert_well_formed(data: bytes) -> None:
    """Relative names, no whiteouts, no duplicates, parents before children, hardlinks after
    their targets, and a tar that ends with its end marker."""
    seen: set[str] = set()
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tf:
        for m in tf:
            name = m.name.rstrip("/")
            assert not name.startswith(("/", "./")) or name == ".", name
            assert ".wh." not in name.rsplit("/", 1)[-1], name
            assert name not in seen, f"duplicate {name}"
            parent = os.path.dirname(name)
            assert parent == "" or parent in seen, f"{name} before its directory"
            if m.islnk():
                assert m.linkname in seen, f"hardlink {name} before its target {m.linkname}"
                assert not tf.getmember(m.linkname).islnk()
            seen.add(name)
    assert data.endswith(bytes(1024))


# -- hand-made stacks --------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(TRICKY))
def test_tricky_stacks(name: str, tmp_path: Path) -> None:
    check_stack(tmp_path, TRICKY[name])


def test_hardlink_whose_target_was_deleted_carries_the_content(tmp_path: Path) -> None:
    data = check_stack(tmp_path, TRICKY["hardlink target deleted later"])
    assert data is not None
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        members = {m.name: m for m in tf}
        assert "bin/busybox" not in members
        # the first surviving name by name carries the bytes, the other links to it
        assert members["bin/ls"].isreg() and members["bin/ls"].size == 2
        assert members["bin/sh"].islnk() and members["bin/sh"].linkname == "bin/ls"


def test_stored_name_stays_the_file_when_it_survives(tmp_path: Path) -> None:
    data = check_stack(tmp_path, TRICKY["hardlink target replaced later"])
    assert data is not None
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        members = {m.name: m for m in tf}
        assert members["a"].isreg() and members["b"].isreg()  # two inodes now
        assert tf.extractfile("b").read() == b"old"  # type: ignore[union-attr]
        assert tf.extractfile("a").read() == b"new"  # type: ignore[union-attr]


def test_sparse_file_comes_out_whole(tmp_path: Path) -> None:
    src = tmp_path / "sparse"
    with open(src, "wb") as f:
        f.seek(3 << 20)
        f.write(b"tail")
        f.truncate(5 << 20)
    tarball = tmp_path / "sparse.tar"
    subprocess.run(["tar", "--sparse", "--format=gnu", "-cf", tarball, "-C", tmp_path, "sparse"],
                   check=True)
    (tmp_path / "case").mkdir()
    data = check_stack(tmp_path / "case", [tarball.read_bytes()])
    assert data is not None
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        m = tf.getmember("sparse")
        assert m.size == 5 << 20 and m.sparse is None
        assert tf.extractfile(m).read() == src.read_bytes()  # type: ignore[union-attr]


def test_layers_without_surviving_content_are_not_read_again(tmp_path: Path) -> None:
    layers = [build_layer([{"name": "gone", "data": "x" * 5000}, {**D, "name": "kept"}]),
              build_layer([{"name": ".wh.gone"}, {"name": "kept/new", "data": "y"}])]
    tree, err = merge_all(layers)
    assert err is None
    opened: list[int] = []

    @contextmanager
    def opener(i: int) -> Iterator[BinaryIO]:
        opened.append(i)
        yield NonSeekable(layers[i])  # type: ignore[misc]

    stats = write_merged(tree, opener, io.BytesIO().write)
    assert opened == [1] and stats.layers_read == (1,)
    assert stats.entries == 2 and stats.content_bytes == 1


def test_a_layer_shorter_on_the_second_read_is_an_integrity_error() -> None:
    """Pass 2 reads a file's bytes where pass 1 found them (the caller's verified stream
    catches any other change of the blob at its end)."""
    first = build_layer([{"name": "a", "data": "aaaa"}, {"name": "b", "data": "bbbb"}])
    tree, _ = merge_all([first])

    @contextmanager
    def opener(i: int) -> Iterator[BinaryIO]:
        yield NonSeekable(first[:1024])  # type: ignore[misc]

    with pytest.raises(errors.IntegrityError, match="did the blob change"):
        write_merged(tree, opener, io.BytesIO().write)


# -- the peers' tables -------------------------------------------------------------------------


@pytest.mark.parametrize("name", containerd_ids())
def test_containerd_breakout_table(name: str, tmp_path: Path) -> None:
    case = next(c for c in containerd_cases() if c["name"] == name)
    outside = str(tmp_path / "outside")

    def fix(v: Any) -> Any:
        if not isinstance(v, str):
            return v
        return v.replace("${OUTSIDE}", outside).replace("TNAME", "tname")

    check_stack(tmp_path, [[{k: fix(v) for k, v in e.items()} for e in layer]
                           for layer in case["layers"]])


def test_moby_whiteout_table_every_prefix(tmp_path: Path) -> None:
    table = json.loads(shared_fixture(
        "layer-tables", "moby-go-archive_TestApplyLayerWhiteouts.json").read_text())
    layers: list[Layer] = []
    for k, step in enumerate(table["steps"]):
        layers.append([{**D, "name": n, "mode": 0o700} if n.endswith("/")
                       else {"name": n, "mode": 0o600} for n in step["change"]])
        case = tmp_path / f"k{k}"
        case.mkdir()
        check_stack(case, list(layers))
        listed = sorted(e.path + ("/" if e.kind == "dir" else "")
                        for e in merge_all([as_bytes(la) for la in layers])[0].entries())
        assert listed == step["expected"]


def test_umoci_whiteout_table(tmp_path: Path) -> None:
    table = json.loads(shared_fixture(
        "layer-tables", "umoci_whiteout_and_scoping.json").read_text())
    for i, case in enumerate(table["whiteout_cases"]):
        lower: list[dict[str, Any]] = []
        for desc in case.get("lower", []):
            path = desc.split(" (")[0]
            if path.endswith("/"):
                lower += [{**D, "name": path}, {"name": path + "sub/file"},
                          {"name": path + "file2"}]
            else:
                lower.append({"name": path})
        d = tmp_path / f"case{i}"
        d.mkdir()
        check_stack(d, [lower, [{"name": case["whiteout_entry"]}]])


def test_dive_fixture(tmp_path: Path) -> None:
    data = check_stack(tmp_path, list(dive_layers()))
    assert data is not None
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        members = tf.getmembers()
    links = [m for m in members if m.islnk()]
    assert len(links) >= 300
    assert {m.linkname for m in links} == {"bin/["}
    assert not [m for m in members if m.name.startswith("root/example")]


def test_dive_fixture_layer_changes() -> None:
    layers = dive_layers()
    tree = MergedTree(track=True)
    stats = [tree.apply_layer(NonSeekable(d), hash_contents=True) for d in layers]
    changes = [s.changes for s in stats]
    assert all(c is not None for c in changes)
    # layer 1 (busybox) only adds; some later layer removes root/example as a whole
    assert changes[0] is not None and not changes[0].removed and not changes[0].overwritten
    removed = {c.path for ch in changes if ch for c in ch.removed}
    assert "root/example" in removed and "root/example/somefile3.txt" in removed
    total_hidden = sum(ch.hidden_bytes for ch in changes if ch)
    tracker = tree.tracker
    assert tracker is not None
    total_wasted = sum(tracker.layer_wasted_bytes(i) for i in range(len(layers)))
    assert total_hidden == total_wasted == sum(w.bytes for w in tracker.wasted_files()) > 0
    # what is visible plus what is wasted is what the layers store
    visible = sum(e.meta.size for e in tree.entries() if e.kind == "file" and
                  (not e.links or e.path == e.links[0]))
    assert visible + total_wasted == sum(s.file_bytes for s in stats)


def test_a_path_through_missing_dotdot_is_resolved_afresh(tmp_path: Path) -> None:
    # b -> a/.. is the root while a is missing. unpack cached that answer, so after a
    # symlink a -> c/d was made it still put b/y at the root (c/y, as merge and securejoin
    # say), and after a -> a it took b/a for the root instead of refusing the loop
    moved = [[{"type": "symlink", "name": "b", "target": "a/.."}, {"name": "b/x"},
              {"type": "symlink", "name": "a", "target": "c/d"}, {"name": "b/y"}]]
    (tmp_path / "moved").mkdir()
    check_stack(tmp_path / "moved", moved)
    assert sorted(os.listdir(tmp_path / "moved" / "unpacked" / "c")) == ["y"]
    loop = [[{"type": "symlink", "name": "b", "target": "a/.."},
             {"type": "symlink", "name": "b/a", "target": "a"}, {"name": "b/a", "data": ""}]]
    (tmp_path / "loop").mkdir()
    check_stack(tmp_path / "loop", loop)
    assert unpack_all(tmp_path / "loop" / "again", [as_bytes(la) for la in loop]) == (
        0, errors.UnsafeInputError)


# -- hypothesis: random stacks over a small name space -------------------------------------------

_NAMES = ["a", "b", "a/b", "a/c", "b/a", "a/b/c", "c"]


@st.composite
def _entry(draw: st.DrawFn) -> dict[str, Any]:
    name = draw(st.sampled_from(_NAMES))
    kind = draw(st.sampled_from(["file", "file", "dir", "dir", "symlink", "hardlink",
                                 "whiteout", "opaque"]))
    if kind == "whiteout":
        head, _, base = name.rpartition("/")
        return {"name": (head + "/" if head else "") + ".wh." + base}
    if kind == "opaque":
        return {"name": name + "/.wh..wh..opq"}
    if kind == "symlink":
        target = draw(st.sampled_from([*_NAMES, "/a", "../a", "/", "a/..", "nowhere"]))
        return {"type": "symlink", "name": name, "target": target}
    if kind == "hardlink":
        return {"type": "hardlink", "name": name, "target": draw(st.sampled_from(_NAMES))}
    if kind == "dir":
        return {**D, "name": name, "mode": draw(st.sampled_from([0o755, 0o700]))}
    return {"name": name, "data": draw(st.sampled_from(["", "x", "yy"])),
            "mode": draw(st.sampled_from([0o644, 0o600]))}


@settings(max_examples=int(os.environ.get("LAYOUTTOOL_MERGE_EXAMPLES", "150")), deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(stack=st.lists(st.lists(_entry(), max_size=6), min_size=1, max_size=4))
def test_random_stacks_merge_like_unpack(stack: list[list[dict[str, Any]]],
                                         tmp_path_factory: pytest.TempPathFactory) -> None:
    check_stack(tmp_path_factory.mktemp("h"), list(stack))


# -- compare ------------------------------------------------------------------------------------


def test_compare_judges_content_mode_owner_type_target_not_mtime() -> None:
    base = [{"name": "same", "data": "s"}, {"name": "content", "data": "1"},
            {"name": "mode", "mode": 0o644}, {"name": "owner"}, {"name": "type"},
            {"type": "symlink", "name": "link", "target": "x"}, {"name": "gone"},
            {"name": "mtime", "mtime": 1}, {"name": "samesize", "data": "ab"}]
    new = [{"name": "same", "data": "s"}, {"name": "content", "data": "22"},
           {"name": "mode", "mode": 0o600}, {"name": "owner", "uid": 7}, {**D, "name": "type"},
           {"type": "symlink", "name": "link", "target": "y"}, {"name": "added"},
           {"name": "mtime", "mtime": 2}, {"name": "samesize", "data": "ba"}]
    a, _ = merge_all([build_layer(base)])
    b, _ = merge_all([build_layer(new)])
    d = compare(a, b)
    assert [i.path for i in d.added] == ["added"]
    assert [i.path for i in d.removed] == ["gone"]
    assert {i.path: i.changes for i in d.changed} == {
        "content": ("content",), "mode": ("mode",), "owner": ("owner",), "type": ("type",),
        "link": ("linkTarget",), "samesize": ("content",),
    }
