"""The facts shared/fixtures/README.md states for each docker save, through our own import
(file and stream) and our own unpack: what a user of the real tarball would see."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from conftest import shared_fixture
from test_import import blob_bytes
from test_import_v1 import import_from

from layouttool.ops.importer import ImportedImage
from layouttool.ops.unpack import unpack_image


def _import_and_unpack(tmp_path: Path, name: str, stream: bool) -> tuple[Path, Path, ImportedImage]:
    src = shared_fixture("docker-save", name)
    out = tmp_path / "oci"
    [img] = import_from(src, out, stream=stream).images
    rootfs = tmp_path / "rootfs"
    unpack_image(f"{out}@{img.digest}", rootfs, rootless=True)
    return out, rootfs, img


def _tree(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*"))


@pytest.mark.parametrize("stream", [False, True], ids=["file", "stream"])
def test_almostempty(tmp_path: Path, stream: bool) -> None:
    _, rootfs, img = _import_and_unpack(tmp_path, "almostempty.tar", stream)
    assert img.config_digest == (
        "sha256:9d7f147c0d0c4d4538a04c7ef385809e56eb1aac7bf800fbe976612188025b68"
    )
    assert _tree(rootfs) == ["emptyfile"]
    st = (rootfs / "emptyfile").stat()
    assert st.st_size == 0 and stat.S_IMODE(st.st_mode) == 0o664


@pytest.mark.parametrize("stream", [False, True], ids=["file", "stream"])
def test_hello_world_v25(tmp_path: Path, stream: bool) -> None:
    out, rootfs, img = _import_and_unpack(tmp_path, "hello-world-v25.tar", stream)
    assert img.ref is None and img.action == "added"  # RepoTags: null
    assert img.config_digest == (
        "sha256:ee301c921b8aadc002973b2e0c3da17d701dcd994b606769a7e6eaa100b81d44"
    )
    assert len(blob_bytes(out, img.config_digest)) == 581
    assert [la.diff_id for la in img.layers] == [
        "sha256:12660636fe55438cc3ae7424da7ac56e845cdb52493ff9cf949c47a7f57f8b43"
    ]
    st = (rootfs / "hello").stat()
    assert st.st_size == 9136 and stat.S_IMODE(st.st_mode) == 0o755


@pytest.mark.parametrize("stream", [False, True], ids=["file", "stream"])
def test_dive_test(tmp_path: Path, stream: bool) -> None:
    _, rootfs, img = _import_and_unpack(tmp_path, "dive-test-docker-image.tar", stream)
    assert img.config_digest == (
        "sha256:75ae28b8ebf89b203319069ddcbecdf5c3838503bbebc0d0d85e4b8589c5de3a"
    )
    assert not (rootfs / "root/example").exists()
    saved = (rootfs / "root/saved.txt").stat()
    assert saved.st_size == 6405 and stat.S_IMODE(saved.st_mode) == 0o755
    bracket = (rootfs / "bin/[").stat().st_ino
    links = [p for p in (rootfs / "bin").iterdir() if p.stat().st_ino == bracket]
    assert len(links) >= 300
    assert not [p for p in _tree(rootfs) if ".wh." in p]
