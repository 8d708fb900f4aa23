"""Behaviour of rootfs.apply_layer on well-formed layers (hostile ones: test_rootfs_hostile)."""

from __future__ import annotations

import io
import json
import os
import shutil
import stat
import subprocess
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import pytest
from fixtures_path import shared_fixture
from layerbuild import DEFAULT_MTIME, NonSeekable, build_layer

from layouttool import errors
from layouttool.rootfs import ApplyOptions, ApplyStats, apply_layer

IS_ROOT = os.geteuid() == 0
needs_root = pytest.mark.skipif(not IS_ROOT, reason="needs root (mknod, chown)")


def apply(root: Path, entries: list[dict[str, Any]], **opts: Any) -> ApplyStats:
    return apply_layer(NonSeekable(build_layer(entries)), root, ApplyOptions(**opts))


def listing(root: Path) -> list[str]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel = os.path.relpath(dirpath, root)
        for d in dirnames:
            p = os.path.normpath(os.path.join(rel, d))
            out.append(p + ("/" if not os.path.islink(os.path.join(dirpath, d)) else ""))
        for f in filenames:
            out.append(os.path.normpath(os.path.join(rel, f)))
    return sorted(out)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "rootfs"
    r.mkdir()
    return r


# -- entry types ----------------------------------------------------------------------------


def test_regular_file_content_mode_mtime(root: Path) -> None:
    stats = apply(root, [{"name": "etc/hosts", "data": b"127.0.0.1 localhost\n", "mode": 0o640,
                          "mtime": 1_500_000_000}])
    st = (root / "etc/hosts").lstat()
    assert (root / "etc/hosts").read_bytes() == b"127.0.0.1 localhost\n"
    assert stat.S_IMODE(st.st_mode) == 0o640
    assert st.st_mtime_ns == 1_500_000_000 * 10**9
    assert stats.entries == 1
    assert stats.bytes_written == 20


def test_large_file_copied_in_chunks(root: Path) -> None:
    data = os.urandom(3 * (1 << 20) + 12345)
    seen: list[int] = []
    stats = apply_layer(NonSeekable(build_layer([{"name": "big", "data": data}])), root,
                        progress=seen.append)
    assert (root / "big").read_bytes() == data
    assert sum(seen) == len(data) == stats.bytes_written
    assert max(seen) <= 1 << 20


def test_modes_special_bits_and_masked_ifmt(root: Path) -> None:
    apply(root, [
        {"name": "bin/su", "mode": 0o4755},
        {"name": "bin/wall", "mode": 0o2755},
        {"type": "dir", "name": "tmp", "mode": 0o1777},
        # docker 18.09 (dive-test) writes S_IFREG / S_IFDIR into the mode field
        {"name": "dive", "mode": 0o100755},
        {"type": "dir", "name": "dived", "mode": 0o40700},
    ])
    assert stat.S_IMODE((root / "bin/su").stat().st_mode) == 0o4755
    assert stat.S_IMODE((root / "bin/wall").stat().st_mode) == 0o2755
    assert stat.S_IMODE((root / "tmp").stat().st_mode) == 0o1777
    assert stat.S_IMODE((root / "dive").stat().st_mode) == 0o755
    assert stat.S_ISREG((root / "dive").stat().st_mode)
    assert stat.S_IMODE((root / "dived").stat().st_mode) == 0o700


def test_symlinks_stored_verbatim_and_not_followed(root: Path, tmp_path: Path) -> None:
    apply(root, [
        {"type": "symlink", "name": "abs", "target": "/etc/passwd", "mtime": 1_400_000_000},
        {"type": "symlink", "name": "rel", "target": "../../x/y"},
        {"type": "symlink", "name": "dangling", "target": "nowhere"},
    ])
    assert os.readlink(root / "abs") == "/etc/passwd"
    assert os.readlink(root / "rel") == "../../x/y"
    assert os.readlink(root / "dangling") == "nowhere"
    assert (root / "abs").lstat().st_mtime_ns == 1_400_000_000 * 10**9


@needs_root
def test_owners_applied_as_root_including_symlinks(root: Path) -> None:
    apply(root, [
        {"type": "dir", "name": "home/u", "uid": 1000, "gid": 1001},
        {"name": "home/u/f", "uid": 1000, "gid": 1001},
        {"type": "symlink", "name": "home/u/l", "target": "/", "uid": 1002, "gid": 1003},
    ])
    assert ((root / "home/u").stat().st_uid, (root / "home/u").stat().st_gid) == (1000, 1001)
    assert (root / "home/u/f").stat().st_uid == 1000
    st = (root / "home/u/l").lstat()
    assert (st.st_uid, st.st_gid) == (1002, 1003)
    assert os.stat("/").st_uid == 0  # the symlink's target was not chowned


def test_rootless_keeps_current_user(root: Path) -> None:
    apply(root, [{"name": "f", "uid": 1234, "gid": 4321, "mode": 0o4755}], rootless=True)
    st = (root / "f").stat()
    assert (st.st_uid, st.st_gid) == (os.geteuid(), os.getegid())
    assert stat.S_IMODE(st.st_mode) == 0o4755


def test_hardlink_shares_inode_with_same_layer_file(root: Path) -> None:
    apply(root, [
        {"name": "bin/busybox", "data": "bb", "mode": 0o755},
        {"type": "hardlink", "name": "bin/sh", "target": "bin/busybox"},
        {"type": "hardlink", "name": "bin/ls", "target": "/bin/busybox"},
    ])
    ino = (root / "bin/busybox").stat().st_ino
    assert (root / "bin/sh").stat().st_ino == ino
    assert (root / "bin/ls").stat().st_ino == ino
    assert (root / "bin/busybox").stat().st_nlink == 3


def test_hardlink_to_lower_layer_and_upper_replacement_keeps_partner(root: Path) -> None:
    apply(root, [{"name": "usr/bin/tool", "data": "v1"}])
    apply(root, [{"type": "hardlink", "name": "usr/bin/alias", "target": "usr/bin/tool"}])
    assert (root / "usr/bin/alias").stat().st_ino == (root / "usr/bin/tool").stat().st_ino
    # a third layer replaces one name: the other keeps the old inode and content
    apply(root, [{"name": "usr/bin/tool", "data": "v2"}])
    assert (root / "usr/bin/tool").read_text() == "v2"
    assert (root / "usr/bin/alias").read_text() == "v1"
    assert (root / "usr/bin/alias").stat().st_ino != (root / "usr/bin/tool").stat().st_ino


def test_hardlink_missing_target_is_invalid(root: Path) -> None:
    with pytest.raises(errors.InvalidInputError, match="does not exist"):
        apply(root, [{"type": "hardlink", "name": "x", "target": "nope"}])


def test_hardlink_to_directory_is_invalid(root: Path) -> None:
    with pytest.raises(errors.InvalidInputError, match="directory"):
        apply(root, [{"type": "dir", "name": "d"}, {"type": "hardlink", "name": "x",
                                                   "target": "d"}])


def test_hardlink_to_itself_is_a_no_op(root: Path) -> None:
    apply(root, [{"name": "a", "data": "keep"}, {"type": "hardlink", "name": "a", "target": "a"}])
    assert (root / "a").read_text() == "keep"


@needs_root
def test_devices_created_as_root(root: Path) -> None:
    apply(root, [
        {"type": "char", "name": "dev/null", "devmajor": 1, "devminor": 3, "mode": 0o666},
        {"type": "block", "name": "dev/loop0", "devmajor": 7, "devminor": 0, "mode": 0o660,
         "gid": 6},
        {"type": "fifo", "name": "run/initctl", "mode": 0o600},
    ])
    st = (root / "dev/null").lstat()
    assert stat.S_ISCHR(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o666
    assert (os.major(st.st_rdev), os.minor(st.st_rdev)) == (1, 3)
    st = (root / "dev/loop0").lstat()
    assert stat.S_ISBLK(st.st_mode) and st.st_gid == 6
    assert stat.S_ISFIFO((root / "run/initctl").lstat().st_mode)


def test_devices_skipped_rootless_with_warning(root: Path) -> None:
    apply(root, [{"name": "dev/null", "data": "lower file"}])
    stats = apply(root, [
        {"type": "char", "name": "dev/null", "devmajor": 1, "devminor": 3},
        {"type": "fifo", "name": "dev/fifo"},
    ], rootless=True)
    assert not (root / "dev/null").exists()  # the layer replaced it; we could not make it
    assert stat.S_ISFIFO((root / "dev/fifo").lstat().st_mode)  # fifos need no privilege
    assert stats.skipped == 1
    assert any("dev/null" in w and "device" in w for w in stats.warnings)


def test_unknown_type_skipped_with_warning(root: Path) -> None:
    stats = apply(root, [{"type": b"V", "name": "volume-label", "data": "x" * 600},
                         {"name": "after", "data": "ok"}])
    assert not (root / "volume-label").exists()
    assert (root / "after").read_text() == "ok"
    assert stats.skipped == 1 and stats.warnings


# -- xattrs ---------------------------------------------------------------------------------


def _user_xattrs_supported(path: Path) -> bool:
    probe = path / ".xattr-probe"
    probe.write_bytes(b"")
    try:
        os.setxattr(probe, "user.probe", b"1")
    except OSError:
        return False
    finally:
        probe.unlink()
    return True


def test_xattrs_user_restored_trusted_dropped(root: Path) -> None:
    if not _user_xattrs_supported(root):
        pytest.skip(f"the filesystem of {root} refuses user.* xattrs")
    stats = apply(root, [
        {"name": "f", "xattrs": {"user.bin": b"\x00\xff\xfe", "trusted.overlay.opaque": b"y",
                                 "security.selinux": b"ctx"}},
        {"type": "dir", "name": "d", "xattrs": {"user.dir": b"yes"}},
    ])
    assert os.getxattr(root / "f", "user.bin") == b"\x00\xff\xfe"
    assert os.getxattr(root / "d", "user.dir") == b"yes"
    names = os.listxattr(root / "f")
    assert "trusted.overlay.opaque" not in names
    assert "security.selinux" not in names or os.getxattr(root / "f", "security.selinux") != b"ctx"
    assert any("trusted.overlay.opaque" in w for w in stats.warnings)


@needs_root
def test_security_capability_restored_as_root(root: Path) -> None:
    # vfs_cap_data v2: cap_net_raw permitted+effective
    cap = bytes.fromhex("01000002" "00200000" "00000000" "00000000" "00000000")
    stats = apply(root, [{"name": "bin/ping", "mode": 0o755, "uid": 0,
                          "xattrs": {"security.capability": cap}}])
    try:
        got = os.getxattr(root / "bin/ping", "security.capability")
    except OSError:
        assert any("security.capability" in w for w in stats.warnings)
        pytest.skip("filesystem refused security.capability (warned)")
    assert got == cap


def test_security_capability_dropped_rootless(root: Path) -> None:
    cap = bytes.fromhex("01000002" "00200000" "00000000" "00000000" "00000000")
    stats = apply(root, [{"name": "ping", "xattrs": {"security.capability": cap}}],
                  rootless=True)
    assert "security.capability" not in os.listxattr(root / "ping")
    assert any("security.capability" in w for w in stats.warnings)


# -- sparse files ---------------------------------------------------------------------------


def _gnu_tar() -> str:
    tar = shutil.which("tar")
    if tar is None:
        pytest.skip("no tar binary to make sparse archives")
    out = subprocess.run([tar, "--version"], capture_output=True, text=True, check=False).stdout
    if "GNU tar" not in out:
        pytest.skip("sparse archives need GNU tar")
    return tar


@pytest.mark.parametrize("fmt", [["--format=gnu"], ["--format=pax", "--sparse-version=1.0"],
                                 ["--format=pax", "--sparse-version=0.1"],
                                 ["--format=pax", "--sparse-version=0.0"]])
def test_sparse_file_written_sparse(root: Path, tmp_path: Path, fmt: list[str]) -> None:
    tar = _gnu_tar()
    src = tmp_path / "src"
    src.mkdir()
    size = 64 << 20
    with open(src / "sparse.img", "wb") as f:
        f.seek(1 << 20)
        f.write(b"middle")
        f.seek(size - 5)
        f.write(b"tail!")
    layer = tmp_path / "layer.tar"
    subprocess.run([tar, "-C", str(src), "--sparse", *fmt, "-cf", str(layer), "sparse.img"],
                   check=True)
    assert layer.stat().st_size < 1 << 20  # the archive really is sparse
    with open(layer, "rb") as fh:
        apply_layer(NonSeekable(fh.read()), root)
    out = root / "sparse.img"
    st = out.stat()
    assert st.st_size == size
    assert st.st_blocks * 512 < 1 << 20  # holes stayed holes
    with open(out, "rb") as f:
        f.seek(1 << 20)
        assert f.read(6) == b"middle"
        f.seek(size - 5)
        assert f.read() == b"tail!"
        f.seek(0)
        assert f.read(4096) == bytes(4096)


# -- whiteouts ------------------------------------------------------------------------------


def test_whiteout_removes_lower_file_and_dir_and_is_hidden(root: Path) -> None:
    apply(root, [{"name": "a/file"}, {"name": "a/sub/deep/x"}, {"name": ".hidden"}])
    stats = apply(root, [{"name": "a/.wh.file"}, {"name": "a/.wh.sub"}, {"name": ".wh..hidden"}])
    assert listing(root) == ["a/"]
    assert stats.whiteouts == 3


def test_whiteout_keeps_parent_mtime(root: Path) -> None:
    apply(root, [{"type": "dir", "name": "some/path", "mtime": 1_000_000},
                 {"name": "some/path/file"}, {"type": "dir", "name": "some", "mtime": 2_000_000}])
    assert (root / "some/path").stat().st_mtime == 1_000_000
    apply(root, [{"name": "some/path/.wh.file"}, {"name": "some/new"}])
    assert not (root / "some/path/file").exists()
    assert (root / "some/path").stat().st_mtime == 1_000_000
    assert (root / "some").stat().st_mtime == 2_000_000  # got a child, no entry: unchanged


def test_whiteout_spares_same_layer_entries(root: Path) -> None:
    apply(root, [{"name": "x", "data": "lower"}])
    apply(root, [{"name": "x", "data": "upper"}, {"name": ".wh.x"}])
    assert (root / "x").read_text() == "upper"


def test_whiteout_of_dir_this_layer_wrote_into_removes_only_lower(root: Path) -> None:
    apply(root, [{"name": "d/old"}])
    apply(root, [{"name": "d/new"}, {"name": ".wh.d"}])
    assert listing(root) == ["d/", "d/new"]


def test_whiteout_of_any_tar_type_is_a_path(root: Path) -> None:
    apply(root, [{"name": "a"}, {"name": "b"}, {"name": "c"}, {"name": "t"}])
    apply(root, [{"type": "hardlink", "name": ".wh.a", "target": "t"},
                 {"type": "symlink", "name": ".wh.b", "target": "/"},
                 {"type": "dir", "name": ".wh.c"}])
    assert listing(root) == ["t"]


@pytest.mark.parametrize("position", ["first", "last"])
def test_opaque_whatever_its_position(root: Path, position: str) -> None:
    apply(root, [{"name": "d/lower1"}, {"name": "d/sub/lower2"}, {"name": "keep"}])
    entries: list[dict[str, Any]] = [{"type": "dir", "name": "d"}, {"name": "d/upper1"},
                                     {"name": "d/sub/upper2"}]
    marker = {"name": "d/.wh..wh..opq"}
    entries = [marker, *entries] if position == "first" else [*entries, marker]
    apply(root, entries)
    assert listing(root) == ["d/", "d/sub/", "d/sub/upper2", "d/upper1", "keep"]


def test_aufs_metadata_skipped(root: Path) -> None:
    stats = apply(root, [{"name": ".wh..wh.aufs"}, {"name": "x"}])
    assert listing(root) == ["x"]
    assert stats.skipped == 1


@pytest.mark.parametrize("name", [".wh.", "some/path/.wh.", ".wh..", ".wh...", "etc/.wh.."])
def test_bare_whiteouts_are_invalid(root: Path, name: str) -> None:
    with pytest.raises(errors.InvalidInputError):
        apply(root, [{"name": name}])


# -- replacing ------------------------------------------------------------------------------


def test_dir_over_dir_changes_attributes_only(root: Path) -> None:
    apply(root, [{"type": "dir", "name": "d", "mode": 0o755}, {"name": "d/child"}])
    ino = (root / "d").stat().st_ino
    apply(root, [{"type": "dir", "name": "d", "mode": 0o700, "mtime": 42}])
    st = (root / "d").stat()
    assert st.st_ino == ino and stat.S_IMODE(st.st_mode) == 0o700 and st.st_mtime == 42
    assert (root / "d/child").exists()


def test_file_replaces_dir_and_dir_replaces_file_and_symlink(root: Path) -> None:
    apply(root, [{"name": "a/child"}, {"name": "b"}, {"type": "symlink", "name": "c",
                                                       "target": "/b"}])
    apply(root, [{"name": "a", "data": "file now"}, {"type": "dir", "name": "b"},
                 {"type": "dir", "name": "c"}])
    assert (root / "a").read_text() == "file now"
    assert (root / "b").is_dir() and not (root / "b").is_symlink()
    assert (root / "c").is_dir() and not (root / "c").is_symlink()


def test_non_dir_parent_replaced_by_directory(root: Path) -> None:
    # umoci TestUnpackEntryNonDirParent (issue #546), both in one layer
    apply(root, [{"name": "nondir", "data": "file"}, {"name": "nondir/foo/bar/baz", "data": "z"}])
    assert (root / "nondir").is_dir()
    assert (root / "nondir/foo/bar/baz").read_text() == "z"


def test_duplicate_entries_later_wins(root: Path) -> None:
    apply(root, [{"name": "f", "data": "one", "mode": 0o600}, {"name": "f", "data": "two",
                                                                "mode": 0o644},
                 {"type": "dir", "name": "d", "mode": 0o700}, {"type": "dir", "name": "d",
                                                                "mode": 0o755}])
    assert (root / "f").read_text() == "two"
    assert stat.S_IMODE((root / "f").stat().st_mode) == 0o644
    assert stat.S_IMODE((root / "d").stat().st_mode) == 0o755


def test_root_dir_entry_sets_root_attributes(root: Path) -> None:
    apply(root, [{"type": "dir", "name": "./", "mode": 0o750, "mtime": 77}, {"name": "./x"}])
    st = root.stat()
    assert stat.S_IMODE(st.st_mode) == 0o750 and st.st_mtime == 77
    assert (root / "x").exists()


# -- directory mtimes and rootless permissions ---------------------------------------------


def test_directory_mtimes_set_after_contents(root: Path) -> None:
    apply(root, [{"type": "dir", "name": "a", "mtime": 100}, {"type": "dir", "name": "a/b",
                                                               "mtime": 200},
                 {"name": "a/b/f", "mtime": 300}, {"name": "a/g", "mtime": 400}])
    assert (root / "a").stat().st_mtime == 100
    assert (root / "a/b").stat().st_mtime == 200
    assert (root / "a/b/f").stat().st_mtime == 300


def test_pax_fractional_mtime_exact(root: Path) -> None:
    apply(root, [{"name": "f", "pax": {"mtime": "1600000000.123456789"}}])
    assert (root / "f").stat().st_mtime_ns == 1_600_000_000_123_456_789


@pytest.mark.parametrize("mode", [0o500, 0o000, 0o555])
def test_rootless_locked_dirs_writable_during_unpack(root: Path, mode: int) -> None:
    apply(root, [{"type": "dir", "name": "locked", "mode": mode}, {"name": "locked/f", "data": "x"},
                 {"type": "dir", "name": "locked/sub", "mode": mode}, {"name": "locked/sub/g"}],
          rootless=True)
    assert stat.S_IMODE((root / "locked").stat().st_mode) == mode
    assert stat.S_IMODE((root / "locked/sub").stat().st_mode) == mode
    os.chmod(root / "locked", 0o755)
    assert (root / "locked/f").read_text() == "x"
    # a later layer can still write into it and the mode comes back
    os.chmod(root / "locked", mode)
    apply(root, [{"name": "locked/h"}], rootless=True)
    assert stat.S_IMODE((root / "locked").stat().st_mode) == mode
    os.chmod(root / "locked", 0o755)
    assert (root / "locked/h").exists()


def test_rootless_really_unprivileged() -> None:
    """Run the unpack as nobody in a child process, so DAC is really enforced."""
    if not IS_ROOT:
        pytest.skip("needs root to switch to an unprivileged user")
    # pytest's tmp_path sits under 0700 dirs nobody cannot traverse
    base = Path(tempfile.mkdtemp(prefix="layouttool-nobody-"))
    try:
        os.chmod(base, 0o755)
        target = base / "rootfs"
        target.mkdir()
        os.chown(target, 65534, 65534)
        layer = build_layer([{"type": "dir", "name": "ro", "mode": 0o500}, {"name": "ro/f"},
                             {"type": "dir", "name": "none", "mode": 0o000},
                             {"name": "none/deep/g", "data": "g"},
                             {"type": "char", "name": "dev/null", "devmajor": 1,
                              "devminor": 3}])
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # pragma: no cover - child
            os.close(r)
            msg = b"child did not finish"
            try:
                os.setgid(65534)
                os.setuid(65534)
                stats = apply_layer(NonSeekable(layer), target)
                msg = f"ok skipped={stats.skipped}".encode()
            except BaseException as exc:
                msg = repr(exc).encode()
            finally:
                os.write(w, msg)
                os._exit(0)
        os.close(w)
        with os.fdopen(r, "rb") as rf:
            result = rf.read().decode()
        os.waitpid(pid, 0)
        assert result == "ok skipped=1"
        assert stat.S_IMODE((target / "ro").stat().st_mode) == 0o500
        assert stat.S_IMODE((target / "none").stat().st_mode) == 0o000
        assert (target / "none/deep/g").read_text() == "g"
        assert (target / "ro/f").stat().st_uid == 65534
    finally:
        shutil.rmtree(base)


# -- stream handling ------------------------------------------------------------------------


def test_stream_read_only_forward_and_rest_left_for_caller(root: Path) -> None:
    data = build_layer([{"name": "a", "data": "x"}]) + b"trailing junk"
    stream = NonSeekable(data)
    apply_layer(stream, root)
    # the caller hashes what we read and drains the rest: together, every byte exactly once
    before = stream.consumed
    rest = stream.rest()
    assert before + len(rest) == len(data)
    assert (root / "a").read_text() == "x"


def test_truncated_stream_is_corrupt(root: Path) -> None:
    data = build_layer([{"name": "a", "data": "x" * 5000}])
    with pytest.raises(errors.CorruptStreamError, match="layer tar"):
        apply_layer(NonSeekable(data[:3000]), root)


def test_garbage_header_mid_stream_is_corrupt(root: Path) -> None:
    data = build_layer([{"name": "a", "data": "x"}, {"name": "b", "data": "y"}])
    # corrupt the checksum of the second header (at 1024 for PAX-free entries)
    hdr2 = 1024
    assert data[hdr2:hdr2 + 1] == b"b"
    broken = data[:hdr2 + 148] + b"9999999\x00" + data[hdr2 + 156:]
    with pytest.raises(errors.CorruptStreamError, match="bad header"):
        apply_layer(NonSeekable(broken), root)
    assert (root / "a").exists()


def test_empty_stream_is_corrupt(root: Path) -> None:
    with pytest.raises(errors.CorruptStreamError):
        apply_layer(NonSeekable(b""), root)


def test_end_marker_only_is_an_empty_layer(root: Path) -> None:
    stats = apply_layer(NonSeekable(bytes(1024)), root)
    assert stats.entries == 0 and listing(root) == []


def test_gnu_long_names(root: Path) -> None:
    long = "/".join(["d" * 100] * 5) + "/" + "f" * 200
    data = build_layer([{"name": long, "data": "deep"}], fmt=tarfile.GNU_FORMAT)
    apply_layer(NonSeekable(data), root)
    assert (root / long).read_text() == "deep"


# -- a real Docker save --------------------------------------------------------------------


def test_dive_test_image_layers(root: Path) -> None:
    """Docker 18.09 save from wagoodman/dive: 14 layers, 392 hardlinks, whiteouts."""
    archive = shared_fixture("docker-save", "dive-test-docker-image.tar")
    with tarfile.open(archive) as outer:
        manifest = outer.extractfile("manifest.json")
        assert manifest is not None
        layers = json.load(manifest)[0]["Layers"]
        assert len(layers) == 14
        for name in layers:
            member = outer.extractfile(name)
            assert member is not None
            apply_layer(NonSeekable(member.read()), root)
    assert not (root / "root/example").exists()
    saved = root / "root/saved.txt"
    assert stat.S_IMODE(saved.stat().st_mode) == 0o755 and saved.stat().st_size == 6405
    bracket = (root / "bin/[").stat().st_ino
    shared = [p for p in (root / "bin").iterdir() if p.stat().st_ino == bracket]
    assert len(shared) >= 300
    assert not [p for p in listing(root) if ".wh." in p]


def test_applying_from_a_pipe(root: Path) -> None:
    data = build_layer([{"name": "x", "data": "piped"}])
    r, w = os.pipe()
    with os.fdopen(w, "wb") as wf:
        wf.write(data)
    with os.fdopen(r, "rb") as rf:
        apply_layer(rf, root)
    assert (root / "x").read_text() == "piped"


def test_default_mtime_constant_is_used(root: Path) -> None:
    apply(root, [{"name": "f"}])
    assert (root / "f").stat().st_mtime == DEFAULT_MTIME


def test_stats_counts(root: Path) -> None:
    stats = apply(root, [{"name": "a", "data": io.BytesIO(b"12345").getvalue()},
                         {"type": "dir", "name": "d"}, {"name": ".wh.nothing"}])
    assert (stats.entries, stats.bytes_written, stats.whiteouts) == (3, 5, 1)


def test_implicit_parents_are_0755_whatever_the_umask(root: Path) -> None:
    old = os.umask(0o077)
    try:
        apply(root, [{"name": "a/b/c", "data": "x"}])
    finally:
        os.umask(old)
    assert stat.S_IMODE((root / "a").stat().st_mode) == 0o755
    assert stat.S_IMODE((root / "a/b").stat().st_mode) == 0o755


def test_missing_component_cancelled_by_dotdot_in_symlink(root: Path) -> None:
    # securejoin treats "missing/.." as nothing; no stray "missing" dir is created
    apply(root, [{"type": "dir", "name": "etc"},
                 {"type": "symlink", "name": "l", "target": "missing/../etc"},
                 {"name": "l/f", "data": "x"}])
    assert (root / "etc/f").read_text() == "x"
    assert not (root / "missing").exists()


def test_cache_invalidated_when_parent_dir_replaced(root: Path) -> None:
    apply(root, [{"name": "d/a"}, {"name": "d", "data": "now a file"}, {"name": "d/b", "data": "b"},
                 {"name": "x/y/1"}, {"type": "symlink", "name": "x/y", "target": "/elsewhere"},
                 {"name": "x/y/2", "data": "2"}])
    assert listing(root) == ["d/", "d/b", "elsewhere/", "elsewhere/2", "x/", "x/y"]


def test_tar_input_reads_forward_without_copies() -> None:
    """The tar stream reader: exact reads across source chunks, views that stop at a chunk's
    end, forward seeks that skip, and a backwards seek refused as a corrupt stream."""
    from layouttool.rootfs.tarread import TarInput

    data = bytes(range(256)) * 40  # 10240 bytes, read in 4096-byte chunks
    t = TarInput(io.BytesIO(data), chunk=4096)
    assert t.read(512) == data[:512] and t.tell() == 512
    assert bytes(t.read_view(8192)) == data[512:4096]  # up to the chunk's end only
    assert t.read(5000) == data[4096:9096]  # an exact read joins chunks
    assert t.seek(9096) == 9096  # tarfile seeks to where it is
    assert t.seek(10000) == 10000 and t.read(-1) == data[10000:]
    assert t.read(10) == b"" and len(t.read_view(10)) == 0 and t.tell() == len(data)
    with pytest.raises(errors.CorruptStreamError, match="only goes forward"):
        t.seek(100)
