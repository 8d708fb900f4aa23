"""repack: every kind of change, as root and rootless, each checked by unpacking the result
with umoci (the oracle) and comparing it with the edited tree; plus what the layer holds
(one whiteout per deleted directory, opaque where smaller) and what repack refuses."""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import stat
import tarfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import run_cli, sh
from layerbuild import build_layer
from treeutil import diff, snapshot

from layouttool.errors import NotFoundError
from layouttool.ops.append import append_layers
from layouttool.ops.new import new_image
from layouttool.ops.repack import repack_image
from layouttool.ops.unpack import unpack_image
from layouttool.ops.verify import verify_layout
from layouttool.rootfs import record as record_mod
from layouttool.rootfs.record import Record

ROOT = os.geteuid() == 0
MODES = ["root", "rootless"] if ROOT else ["rootless"]

LOWER = [
    {"type": "dir", "name": "etc/", "mode": 0o755},
    {"name": "etc/passwd", "data": "root:x:0:0\n", "mtime": 1_600_000_000},
    {"name": "etc/group", "data": "root:x:0:\n"},
    {"type": "dir", "name": "etc/conf.d/"},
    *({"name": f"etc/conf.d/{n}.conf", "data": n * 100} for n in "abcdef"),
    {"type": "dir", "name": "usr/bin/"},
    {"name": "usr/bin/tool", "data": "#!/bin/sh\n" * 50, "mode": 0o755, "uid": 1000,
     "gid": 1000, "xattrs": {"user.x": b"1"}},
    {"type": "hardlink", "name": "usr/bin/tool-alias", "target": "usr/bin/tool"},
    {"type": "dir", "name": "usr/lib/deep/er/"},
    *({"name": f"usr/lib/deep/er/f{i}", "data": str(i)} for i in range(5)),
    {"type": "symlink", "name": "link", "target": "usr/bin/tool"},
    {"name": "data/big", "data": bytes(range(256)) * 800},
    {"type": "dir", "name": "opt/dir-to-file/"},
    {"name": "opt/dir-to-file/x", "data": "x"},
    {"name": "opt/file-to-dir", "data": "f"},
    {"name": "opt/file-to-link", "data": "f"},
    {"type": "fifo", "name": "run/fifo"},
    {"type": "char", "name": "dev/null", "devmajor": 1, "devminor": 3, "mode": 0o666},
]
UPPER = [  # a second layer: the record must reflect the merged tree
    {"name": "etc/motd", "data": "hello\n", "uid": 7, "gid": 7},
    {"name": "usr/lib/.wh.gone"},
]


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("repack-base")
    layout = root / "oci"
    new_image(f"{layout}:base")
    for i, layer in enumerate((LOWER, UPPER)):
        (root / f"l{i}.tar").write_bytes(build_layer(layer))
    append_layers(f"{layout}:base", [root / "l0.tar", root / "l1.tar"])
    return layout


@pytest.fixture
def layout(template: Path, tmp_path: Path) -> Path:
    dest = tmp_path / "oci"
    shutil.copytree(template, dest)
    return dest


def write(p: Path, data: str | bytes) -> None:
    p.write_bytes(data.encode() if isinstance(data, str) else data)


def edit_same_size_same_mtime(r: Path) -> None:
    p = r / "data" / "big"
    st = p.stat()
    data = bytearray(p.read_bytes())
    data[1000] ^= 0xFF
    p.write_bytes(bytes(data))
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))


def chmod_and_back(r: Path) -> None:
    for p in (r / "etc" / "passwd", r / "usr" / "bin" / "tool", r / "etc"):
        mode = stat.S_IMODE(p.stat().st_mode)
        os.chmod(p, 0o600)
        os.chmod(p, mode)


def refill(r: Path) -> None:
    d = r / "etc" / "conf.d"
    for p in d.iterdir():
        p.unlink()
    write(d / "new.conf", "n")
    write(d / "other.conf", "o")


def dir_to_file(r: Path) -> None:
    shutil.rmtree(r / "opt" / "dir-to-file")
    write(r / "opt" / "dir-to-file", "now a file")


def file_to_dir(r: Path) -> None:
    (r / "opt" / "file-to-dir").unlink()
    (r / "opt" / "file-to-dir").mkdir()
    write(r / "opt" / "file-to-dir" / "inside", "i")


def file_to_link(r: Path) -> None:
    (r / "opt" / "file-to-link").unlink()
    os.symlink("/etc/passwd", r / "opt" / "file-to-link")


def dir_to_dir_again(r: Path) -> None:
    shutil.rmtree(r / "usr" / "lib")
    (r / "usr" / "lib").mkdir()
    write(r / "usr" / "lib" / "fresh", "f")


def xattrs(r: Path) -> None:
    os.setxattr(r / "etc" / "passwd", "user.new", b"value")
    os.removexattr(r / "usr" / "bin" / "tool", "user.x")


def touch(r: Path) -> None:
    os.utime(r / "etc" / "passwd", (1_500_000_000, 1_500_000_000))


def retarget(r: Path) -> None:
    (r / "link").unlink()
    os.symlink("etc/passwd", r / "link")


def nested(r: Path) -> None:
    (r / "srv" / "www" / "static").mkdir(parents=True)
    write(r / "srv" / "www" / "static" / "index.html", "<html>")
    os.symlink("static/index.html", r / "srv" / "www" / "index")


def replace_everything(r: Path) -> None:
    for p in r.iterdir():
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()
    write(r / "only", "a new world")


def chown(r: Path) -> None:
    os.chown(r / "etc" / "passwd", 5, 6)


#: name -> (edit, what the layer must hold: member name -> "whiteout"/"opaque"/"entry"/"absent")
CASES: dict[str, tuple[Callable[[Path], None], dict[str, str]]] = {
    "add-file": (lambda r: write(r / "etc" / "new", "new\n"), {"etc/new": "entry"}),
    "modify-content": (lambda r: write(r / "etc" / "group", "root:x:0:me\n"),
                       {"etc/group": "entry", "etc/passwd": "absent"}),
    "modify-same-size-same-mtime": (edit_same_size_same_mtime, {"data/big": "entry"}),
    "delete-file": (lambda r: (r / "etc" / "group").unlink(), {"etc/.wh.group": "whiteout"}),
    "delete-directory": (lambda r: shutil.rmtree(r / "usr" / "lib"),
                         {"usr/.wh.lib": "whiteout", "usr/lib/deep/.wh.er": "absent",
                          "usr/lib/deep/er/.wh.f0": "absent"}),
    "dir-to-file": (dir_to_file, {"opt/dir-to-file": "entry", "opt/.wh.dir-to-file": "absent"}),
    "file-to-dir": (file_to_dir, {"opt/file-to-dir": "entry",
                                  "opt/file-to-dir/inside": "entry"}),
    "file-to-symlink": (file_to_link, {"opt/file-to-link": "entry"}),
    "emptied-and-refilled": (refill, {"etc/conf.d/.wh..wh..opq": "opaque",
                                      "etc/conf.d/.wh.a.conf": "absent",
                                      "etc/conf.d/new.conf": "entry"}),
    # one child gone: a whiteout costs what an opaque marker does, so the explicit form
    "dir-removed-and-recreated": (dir_to_dir_again, {"usr/lib/.wh.deep": "whiteout",
                                                     "usr/lib/.wh..wh..opq": "absent",
                                                     "usr/lib/fresh": "entry"}),
    "chmod": (lambda r: os.chmod(r / "usr" / "bin" / "tool", 0o700),
              {"usr/bin/tool": "entry", "usr/bin/tool-alias": "entry"}),
    "xattrs": (xattrs, {"etc/passwd": "entry", "usr/bin/tool": "entry"}),
    "mtime": (touch, {"etc/passwd": "entry"}),
    "new-hardlink": (lambda r: os.link(r / "etc" / "passwd", r / "etc" / "passwd2"),
                     {"etc/passwd2": "entry", "etc/passwd": "entry"}),
    "symlink-retarget": (retarget, {"link": "entry"}),
    "new-tree": (nested, {"srv/www/static/index.html": "entry", "srv/www/index": "entry"}),
    "delete-fifo": (lambda r: (r / "run" / "fifo").unlink(), {"run/.wh.fifo": "whiteout"}),
    # seven whiteouts at the top cost more than one opaque marker for the root
    "replace-everything": (replace_everything, {".wh..wh..opq": "opaque", "only": "entry",
                                                ".wh.etc": "absent"}),
}
ROOT_ONLY = {"chown": (chown, {"etc/passwd": "entry"})}


def whited_out(members: dict[str, tarfile.TarInfo]) -> list[str]:
    """The paths the layer's plain whiteouts delete."""
    out = []
    for name in members:
        parent, _, base = name.rpartition("/")
        if base.startswith(".wh.") and base != ".wh..wh..opq":
            out.append(f"{parent}/{base[4:]}" if parent else base[4:])
    return out


def layer_members(layout: Path, digest: str) -> dict[str, tarfile.TarInfo]:
    data = (layout / "blobs" / "sha256" / digest.split(":")[1]).read_bytes()
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(data))) as tf:
        return {m.name.rstrip("/"): m for m in tf.getmembers()}


def expected_owners(tree: dict[str, dict[str, Any]], image: dict[str, dict[str, Any]]
                    ) -> dict[str, dict[str, Any]]:
    """Rootless: paths of the image keep the image's owners, new ones belong to root."""
    out = {}
    for path, info in tree.items():
        info = dict(info)
        old = image.get(path)
        info["owner"] = old["owner"] if old is not None else (0, 0)
        out[path] = info
    return out


def xattrs_of(root: Path) -> dict[str, dict[str, bytes]]:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_symlink():
            continue
        names = [n for n in os.listxattr(p, follow_symlinks=False) if n.startswith("user.")]
        if names:
            out[p.relative_to(root).as_posix()] = {n: os.getxattr(p, n) for n in names}
    return out


#: every case in every mode, but for chown rootless (a rootless unpack cannot chown)
KIND_PARAMS = [(c, m) for c in sorted({**CASES, **ROOT_ONLY}) for m in MODES
               if not (c in ROOT_ONLY and m == "rootless")]


@pytest.mark.parametrize(("case", "mode"), KIND_PARAMS)
def test_repack_change_kinds(layout: Path, tmp_path: Path, umoci: str, mode: str,
                             case: str) -> None:
    edit, want = {**CASES, **ROOT_ONLY}[case]
    rootless = mode == "rootless"
    dest = tmp_path / "unpacked"
    unpack_image(f"{layout}:base", dest, rootless=rootless, bundle=rootless)
    rootfs = dest / "rootfs" if rootless else dest
    image_tree = snapshot(rootfs, mtimes=True)
    edit(rootfs)
    res = repack_image(f"{layout}:base", dest, tag="edited")
    assert res.changed and res.layer is not None
    members = layer_members(layout, res.layer["digest"])
    for name, kind in want.items():
        if kind == "absent":
            assert name not in members, (name, sorted(members))
        else:
            assert name in members, (name, sorted(members))
    for gone in whited_out(members):  # nothing beneath what a whiteout deletes
        assert not [n for n in members if n.startswith(gone + "/")], gone
    # raw unpack: umoci's unpacker without the mtree manifest (which hashes every file)
    out = tmp_path / "umoci"
    sh(umoci, "raw", "unpack", "--image", f"{layout}:edited", out)
    skip = ("dev",) if rootless else ()  # devices are skipped by a rootless unpack
    got = snapshot(out, mtimes=True, skip=skip)
    expected = snapshot(rootfs, mtimes=True, skip=skip)
    if rootless:
        base_dir = tmp_path / "umoci-base"
        sh(umoci, "raw", "unpack", "--image", f"{layout}:base", base_dir)
        expected = expected_owners(expected, snapshot(base_dir, skip=skip))
        # the rootless rootfs holds none of the image's owners, the repacked image all of them
        assert {i["owner"] for i in image_tree.values()} == {(os.getuid(), os.getgid())}
        if "usr/bin/tool" in got:
            assert got["usr/bin/tool"]["owner"] == (1000, 1000)
    assert diff(expected, got) == []
    assert xattrs_of(out) == xattrs_of(rootfs)
    assert verify_layout(layout).ok or all(
        "at least 1 item" in p.message for p in verify_layout(layout).problems)


@pytest.mark.parametrize("mode", MODES)
def test_no_change_no_layer(layout: Path, tmp_path: Path, mode: str) -> None:
    dest = tmp_path / "u"
    unpack_image(f"{layout}:base", dest, rootless=mode == "rootless")
    before = (layout / "index.json").read_bytes()
    chmod_and_back(dest)  # ctime moves, nothing else: hashed, found equal
    os.utime(dest / "data" / "big", ns=(1, (dest / "data" / "big").stat().st_mtime_ns))
    res = run_cli("repack", f"{layout}:base", dest, "--json")
    assert res.code == 0, res.stderr
    doc = json.loads(res.stdout)
    assert doc["changed"] is False and doc["layer"] is None and doc["digest"] is None
    assert doc["changes"]["hashed"] >= 1
    assert "no changes" in res.stderr
    assert (layout / "index.json").read_bytes() == before


def test_one_whiteout_for_a_deleted_directory(layout: Path, tmp_path: Path) -> None:
    dest = tmp_path / "u"
    unpack_image(f"{layout}:base", dest)
    shutil.rmtree(dest / "usr" / "lib")
    res = repack_image(f"{layout}:base", dest)
    assert res.layer is not None
    names = sorted(layer_members(layout, res.layer["digest"]))
    assert [n for n in names if ".wh." in n] == ["usr/.wh.lib"]
    assert not any(n.startswith("usr/lib/") for n in names)
    assert res.deleted == 1


def test_emptied_directory_keeps_explicit_whiteouts_when_smaller(
    layout: Path, tmp_path: Path
) -> None:
    """One deleted file among many kept: a whiteout, not an opaque marker plus every file."""
    dest = tmp_path / "u"
    unpack_image(f"{layout}:base", dest)
    (dest / "etc" / "conf.d" / "a.conf").unlink()
    res = repack_image(f"{layout}:base", dest)
    assert res.layer is not None and res.opaque == 0
    names = set(layer_members(layout, res.layer["digest"]))
    assert "etc/conf.d/.wh.a.conf" in names and "etc/conf.d/b.conf" not in names


def test_repack_builds_on_the_unpacked_image_each_time(layout: Path, tmp_path: Path) -> None:
    dest = tmp_path / "u"
    unpack_image(f"{layout}:base", dest)
    write(dest / "one", "1")
    first = repack_image(f"{layout}:base", dest)
    write(dest / "two", "2")
    second = repack_image(f"{layout}:base", dest)
    assert second.layer is not None and second.update is not None
    assert set(layer_members(layout, second.layer["digest"])) >= {"one", "two"}
    assert any("not at the unpacked image" in n for n in second.notes)
    man = json.loads((layout / "blobs" / "sha256" /
                      second.update.manifest_digest.split(":")[1]).read_text())
    assert len(man["layers"]) == 3  # the two base layers and one repacked layer
    assert first.update is not None and second.update.previous_digest == first.update.digest


def test_repack_is_deterministic(template: Path, tmp_path: Path,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    digests = []
    for name in ("a", "b"):
        lay = tmp_path / name / "oci"
        shutil.copytree(template, lay)
        dest = tmp_path / name / "u"
        unpack_image(f"{lay}:base", dest)
        write(dest / "etc" / "new", "n")
        shutil.rmtree(dest / "usr" / "lib")
        res = repack_image(f"{lay}:base", dest)
        assert res.update is not None
        digests.append(res.update.digest)
    assert digests[0] == digests[1]


def test_repack_errors(layout: Path, tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    with pytest.raises(NotFoundError, match="no unpack record"):
        repack_image(f"{layout}:base", plain)
    res = run_cli("repack", f"{layout}:base", tmp_path / "missing")
    assert res.code == 3
    dest = tmp_path / "u"
    unpack_image(f"{layout}:base", dest)
    other = tmp_path / "other"
    new_image(f"{other}:x")
    res = run_cli("repack", f"{other}:x", dest)
    assert res.code == 3 and "not in this layout" in res.stderr
    (tmp_path / "u.layouttool-unpack").write_bytes(b"garbage")
    res = run_cli("repack", f"{layout}:base", dest)
    assert res.code == 4 and res.stderr.startswith("layouttool: error: ")


def test_the_record_sits_beside_the_rootfs(layout: Path, tmp_path: Path) -> None:
    plain = unpack_image(f"{layout}:base", tmp_path / "p")
    assert plain.record == str(tmp_path / "p.layouttool-unpack")
    bundle = unpack_image(f"{layout}:base", tmp_path / "b", bundle=True)
    assert bundle.record == str(tmp_path / "b" / "rootfs.layouttool-unpack")
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == [
        "config.json", "rootfs", "rootfs.layouttool-unpack"]
    assert not list((tmp_path / "p").rglob("*layouttool*"))


# ------------------------------------------------------------------------- hostile input

def rewrite_record(path: Path, edit: Callable[[list[Any]], list[bytes]]) -> None:
    """Rewrite the record at ``path``: ``edit`` gets its entries and returns packed ones
    (``pack`` below), as someone editing the file by hand could."""
    with Record(path) as rec:
        header = dict(rec.header)
        entries = list(rec)
    body = json.dumps(header).encode() + b"\n" + b"".join(edit(entries))
    path.write_bytes(record_mod.MAGIC + zlib.compress(body))


def pack(e: Any, *, path: bytes | None = None, xblob: bytes | None = None) -> bytes:
    p = e.path if path is None else path
    x = record_mod._xattr_blob(e.xattrs) if xblob is None else xblob
    return record_mod._ENTRY.pack(
        len(p), e.mode, e.uid, e.gid, e.size, e.mtime_ns, e.ctime_ns, e.ino, e.nlink, e.rdev,
        e.src_layer, e.src_offset, len(e.link), len(x)) + p + e.link + x


def _with_extra(path: bytes, like: bytes = b"etc/passwd") -> Callable[[list[Any]], list[bytes]]:
    """The record plus an entry ``path`` (a copy of ``like``'s), kept in sorted order."""
    def edit(entries: list[Any]) -> list[bytes]:
        src = next(e for e in entries if e.path == like)
        extra = (tuple(path.split(b"/")), pack(src, path=path))
        rows = [(e.key, pack(e)) for e in entries] + [extra]
        rows.sort(key=lambda r: r[0])
        return [r[1] for r in rows]
    return edit


def _bad_xattrs(entries: list[Any]) -> list[bytes]:
    return [pack(e, xblob=b"\x05\x00use") if e.path == b"etc/passwd" else pack(e)
            for e in entries]


def _reversed(entries: list[Any]) -> list[bytes]:
    return [pack(entries[0]), *(pack(e) for e in reversed(entries[1:]))]


TAMPERED = {
    "escape": _with_extra(b"../../victim"),
    "dot": _with_extra(b"etc/./passwd2"),
    "empty-component": _with_extra(b"etc//x"),
    "under-a-file": _with_extra(b"etc/passwd/x"),
    "whiteout-name": _with_extra(b"etc/.wh.x"),
    "bad-xattrs": _bad_xattrs,
    "out-of-order": _reversed,
}


@pytest.mark.parametrize("case", sorted(TAMPERED))
def test_a_tampered_record_is_refused(layout: Path, tmp_path: Path, case: str) -> None:
    """The record sits beside the rootfs, where anyone can edit it: a path it names that
    could not have come from a walk of the tree (an escape, a component that is not a
    name, an entry under a file, paths out of order) or entries that do not decode are
    refused (exit 4) before anything is written; no layer with such a name is made."""
    dest = tmp_path / "u"
    unpack_image(f"{layout}:base", dest)
    write(dest / "etc" / "new", "n")
    rewrite_record(tmp_path / "u.layouttool-unpack", TAMPERED[case])
    before = (layout / "index.json").read_bytes()
    blobs = set((layout / "blobs" / "sha256").iterdir())
    res = run_cli("repack", f"{layout}:base", dest)
    assert res.code == 4, (res.code, res.stderr)
    assert res.stderr.startswith("layouttool: error: ") and len(res.stderr.splitlines()) == 1
    assert "u.layouttool-unpack" in res.stderr
    assert (layout / "index.json").read_bytes() == before
    assert set((layout / "blobs" / "sha256").iterdir()) == blobs


def test_a_record_rewritten_in_order_still_works(layout: Path, tmp_path: Path) -> None:
    """The helpers above write what unpack writes (so the refusals are about the edits)."""
    dest = tmp_path / "u"
    unpack_image(f"{layout}:base", dest)
    write(dest / "etc" / "new", "n")
    rewrite_record(tmp_path / "u.layouttool-unpack", lambda es: [pack(e) for e in es])
    res = repack_image(f"{layout}:base", dest)
    assert res.layer is not None and set(layer_members(layout, res.layer["digest"])) == {
        "etc/new", "etc"}


def test_repack_refuses_whiteout_names_in_the_tree(layout: Path, tmp_path: Path) -> None:
    dest = tmp_path / "u"
    unpack_image(f"{layout}:base", dest)
    write(dest / "etc" / ".wh.passwd", "")
    res = run_cli("repack", f"{layout}:base", dest)
    assert res.code == 4 and "etc/.wh.passwd" in res.stderr, res.stderr


def test_repack_never_follows_a_symlink_out_of_the_rootfs(layout: Path, tmp_path: Path
                                                          ) -> None:
    """A symlink the user puts in the rootfs, pointing at a directory outside it, is stored
    as a symlink: nothing outside is read, listed or changed."""
    outside = tmp_path / "outside"
    outside.mkdir()
    write(outside / "secret", "do not read")
    os.chmod(outside / "secret", 0o600)
    before = snapshot(outside, mtimes=True)
    dest = tmp_path / "u"
    unpack_image(f"{layout}:base", dest)
    os.symlink(outside, dest / "escape")
    (dest / "etc" / "conf.d").rename(dest / "etc" / "conf.d.old")
    os.symlink(outside, dest / "etc" / "conf.d")  # a directory the record knows, now a link
    res = repack_image(f"{layout}:base", dest)
    assert res.layer is not None
    members = layer_members(layout, res.layer["digest"])
    assert members["escape"].issym() and members["escape"].linkname == str(outside)
    assert members["etc/conf.d"].issym()
    assert not [n for n in members if n.startswith(("escape/", "etc/conf.d/"))]
    assert not any("secret" in n for n in members)
    assert snapshot(outside, mtimes=True) == before


def test_rootless_owners_of_directories_unpack_made_again(tmp_path: Path) -> None:
    """A rootless record keeps the image's owners; a directory that a later layer only
    implies (after a whiteout removed the one a layer made, or over a file) is unpack's own,
    0:0, as umoci unpacks it, not the owner of what was there before."""
    layout = tmp_path / "oci"
    new_image(f"{layout}:base")
    layers = [
        [{"type": "dir", "name": "a/", "uid": 5, "gid": 5}, {"name": "a/f", "data": "f"},
         {"name": "b", "data": "a file", "uid": 6, "gid": 6}],
        [{"name": ".wh.a"}],
        [{"name": "a/x", "data": "x"}, {"name": "b/y", "data": "y"}],
    ]
    for i, entries in enumerate(layers):
        (tmp_path / f"l{i}.tar").write_bytes(build_layer(entries))
    append_layers(f"{layout}:base", [tmp_path / f"l{i}.tar" for i in range(3)])
    dest = tmp_path / "u"
    unpack_image(f"{layout}:base", dest, rootless=True)
    write(dest / "a" / "new", "n")  # moves the mtimes of a and b: both are written again
    write(dest / "b" / "new", "n")
    res = repack_image(f"{layout}:base", dest)
    assert res.layer is not None
    members = layer_members(layout, res.layer["digest"])
    assert {n: (m.uid, m.gid) for n, m in members.items() if n in ("a", "b")} == {
        "a": (0, 0), "b": (0, 0)}
