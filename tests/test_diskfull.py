"""Write errors: a file-size limit (EFBIG), a full filesystem (ENOSPC on a 2 MiB tmpfs) and a
read-only filesystem (EROFS). Each ends with exit 74 and one error line naming the path, and
the layout is unchanged: index.json byte-identical, no temp files, verify ok, and gc brings
back exactly the blob set of before."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from killharness import (
    assert_clean_error,
    blob_set,
    check_unpack,
    check_verify,
    docker_save_bytes,
    gc_in_process,
    index_entries,
    limit_fsize,
    make_layout,
    random_image,
    require,
    run,
    snapshot,
    tmp_files,
)

LIMIT = 256 << 10


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A small layout (two images with ~1 MiB incompressible layers) and a tarball."""
    root = tmp_path_factory.mktemp("full")
    rng = random.Random(74)
    template = root / "template"
    make_layout(template, [random_image(rng, ["small:1"], layers=1, files=1, size=4096),
                           random_image(rng, ["big:1"], layers=1, files=1, size=1 << 20)])
    tarball = root / "in.tar"
    tarball.write_bytes(docker_save_bytes([random_image(rng, ["imp:1"], layers=2, files=1,
                                                        size=1 << 20)]))
    return {"template": template, "tarball": tarball}


def _check_unchanged(d: Path, before_index: bytes, before_blobs: set[str], scratch: Path) -> None:
    assert (d / "index.json").read_bytes() == before_index
    assert tmp_files(d) == []
    check_verify(d)
    check_unpack(d, index_entries(d), scratch)
    gc_in_process(d)
    assert blob_set(d) == before_blobs


def _names_a_path(r_stderr: str, *paths: Path) -> bool:
    return any(str(p) in r_stderr for p in paths)


CASES: dict[str, tuple[str, Callable[[dict[str, Path], Path, Path], list[str | Path]]]] = {
    "import": ("from-docker-save", lambda w, d, t: ["from-docker-save", w["tarball"], "-o", d]),
    "convert": ("convert", lambda w, d, t: ["convert", f"{d}:big:1", "--compression", "none"]),
    "export": ("to-docker-save", lambda w, d, t: ["to-docker-save", f"{d}:big:1", "-o",
                                                  t / "out.tar"]),
    "unpack": ("unpack", lambda w, d, t: ["unpack", f"{d}:big:1", t / "rootfs"]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_efbig(world, tmp_path, case):
    """RLIMIT_FSIZE below the size of one layer: the write fails with EFBIG."""
    command, argv = CASES[case]
    require(command)
    d = tmp_path / "layout"
    shutil.copytree(world["template"], d)
    before_index = (d / "index.json").read_bytes()
    gc_ref = tmp_path / "ref"
    shutil.copytree(d, gc_ref)
    gc_in_process(gc_ref)
    r = run(argv(world, d, tmp_path), preexec=limit_fsize(LIMIT))
    assert_clean_error(r, 74, case)
    assert "File too large" in r.stderr
    if case == "unpack":
        # unpack names the member inside the rootfs it was writing
        assert ".bin" in r.stderr, r.stderr
    else:
        assert _names_a_path(r.stderr, d, tmp_path), r.stderr
    _check_unchanged(d, before_index, blob_set(gc_ref), tmp_path)
    if case == "export":
        assert not (tmp_path / "out.tar").exists()
        assert list(tmp_path.glob("out.tar*")) == [], "export left its temp output"


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs (skips when mounting is not permitted)."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    p = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if p.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {p.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_enospc_import(world, tmp_path, tmpfs):
    """The filesystem fills up mid-import: exit 74, the layout as it was."""
    require("from-docker-save")
    d = tmpfs / "layout"
    rng = random.Random(28)
    make_layout(d, [random_image(rng, ["small:1"], layers=1, files=1, size=8192)])
    before = snapshot(d)
    before_index = (d / "index.json").read_bytes()
    before_blobs = blob_set(d)
    r = run(["from-docker-save", world["tarball"], "-o", d])
    assert_clean_error(r, 74, "import on a full disk")
    assert "No space left on device" in r.stderr
    assert _names_a_path(r.stderr, d), r.stderr
    _check_unchanged(d, before_index, before_blobs, tmp_path)
    assert snapshot(d) == before


def test_enospc_convert(world, tmp_path, tmpfs):
    """Recompressing to none on a filesystem with no room: exit 74, unchanged."""
    require("convert")
    d = tmpfs / "layout"
    rng = random.Random(29)
    make_layout(d, [random_image(rng, ["a:1"], layers=1, files=1, size=900 << 10)])
    with open(tmpfs / "filler", "wb") as f:  # leave less room than the uncompressed layer
        free = os.statvfs(tmpfs).f_bavail * os.statvfs(tmpfs).f_frsize
        f.write(b"\0" * max(free - (400 << 10), 0))
    before = snapshot(d)
    before_index = (d / "index.json").read_bytes()
    r = run(["convert", f"{d}:a:1", "--compression", "none"])
    assert_clean_error(r, 74, "convert on a full disk")
    assert _names_a_path(r.stderr, d), r.stderr
    assert (d / "index.json").read_bytes() == before_index
    assert tmp_files(d) == []
    check_verify(d)
    gc_in_process(d)
    assert snapshot(d) == before


def test_erofs_tag_and_import(world, tmp_path, tmpfs):
    """A read-only layout: tag and import fail with 74 naming the path; nothing changes."""
    require("tag", "from-docker-save")
    d = tmpfs / "layout"
    rng = random.Random(30)
    make_layout(d, [random_image(rng, ["a:1"], layers=1, files=1, size=4096)])
    before = snapshot(d, include_state=True)
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    try:
        for args in (["tag", f"{d}:a:1", "b:1"], ["from-docker-save", world["tarball"], "-o", d]):
            r = run(args)
            assert_clean_error(r, 74, args[0])
            assert _names_a_path(r.stderr, d), r.stderr
            assert "Read-only file system" in r.stderr
        assert snapshot(d, include_state=True) == before
        check_verify(d)
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(tmpfs)], check=True)
