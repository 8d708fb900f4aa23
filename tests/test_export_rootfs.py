"""``export``: the merged root filesystem as one tar, checked against ``tar -c`` of what our
``unpack`` leaves (GNU tar is the oracle of what a tar of that tree holds)."""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from conftest import run_cli, sh
from imagebuild import make_image
from layerbuild import build_layer
from layerstacks import D, named_stacks, stack
from treeutil import tar_tree

from layouttool.digest import Digest

LAYOUTTOOL = Path(sys.executable).parent / "layouttool"


def layers_of(name: str, tmp_path: Path) -> list[bytes]:
    return [la if isinstance(la, bytes) else build_layer(la)
            for la in stack(name, str(tmp_path / "outside"))]


def tar_of_unpack(tmp_path: Path, image: str) -> bytes | int:
    """``tar -c`` of our unpack of IMAGE, or unpack's exit code when it refuses."""
    dest = tmp_path / "unpacked"
    res = run_cli("-q", "unpack", image, dest)
    if res.code:
        return res.code
    return sh("tar", "--xattrs", "--xattrs-include=*", "-C", dest, "-cf", "-", ".").stdout


@pytest.mark.parametrize("name", named_stacks())
def test_export_is_tar_c_of_unpack(name: str, tmp_path: Path) -> None:
    layout = make_image(tmp_path / "oci", layers_of(name, tmp_path))
    want = tar_of_unpack(tmp_path, f"{layout}:t")
    res = run_cli("-q", "export", f"{layout}:t", "-o", tmp_path / "out.tar")
    if isinstance(want, int):
        assert res.code == want, res.stderr
        assert res.stderr.startswith("layouttool: error: layer ")
        assert not (tmp_path / "out.tar").exists()
        return
    assert res.code == 0, res.stderr
    got = tar_tree(tmp_path / "out.tar")
    expected = tar_tree(want)
    assert got == expected
    with tarfile.open(tmp_path / "out.tar") as tf:
        names = tf.getnames()
    assert all(not n.startswith(("/", "./")) or n == "./" for n in names)


def test_export_to_stdout_is_the_same_tar(tmp_path: Path) -> None:
    layout = make_image(tmp_path / "oci", layers_of("dive", tmp_path))
    assert run_cli("export", f"{layout}:t", "-o", tmp_path / "a.tar").code == 0
    piped = sh(LAYOUTTOOL, "export", f"{layout}:t").stdout
    assert piped == (tmp_path / "a.tar").read_bytes()
    dash = run_cli("export", f"{layout}:t", "-o", "-")
    assert dash.code == 0 and dash.stdout_bytes == piped


def test_export_twice_gives_the_same_bytes(tmp_path: Path) -> None:
    layout = make_image(tmp_path / "oci", layers_of("hardlink target deleted later", tmp_path))
    a = sh(LAYOUTTOOL, "export", f"{layout}:t").stdout
    b = sh(LAYOUTTOOL, "export", f"{layout}:t").stdout
    assert a == b and a.endswith(bytes(1024))


def test_export_refuses_a_terminal(tmp_path: Path) -> None:
    layout = make_image(tmp_path / "oci", [build_layer([{"name": "f", "data": "x"}])])
    leader, follower = pty.openpty()
    try:
        proc = subprocess.run([LAYOUTTOOL, "export", f"{layout}:t"], stdout=follower,
                              stderr=subprocess.PIPE, timeout=60)
    finally:
        os.close(follower)
        os.close(leader)
    assert proc.returncode == 2
    assert proc.stderr.decode().startswith(
        "layouttool: error: refusing to write a tar to a terminal; use -o FILE or a pipe")


def test_export_json_needs_a_file(tmp_path: Path) -> None:
    layout = make_image(tmp_path / "oci", [build_layer([{"name": "f", "data": "x"}])])
    res = run_cli("export", f"{layout}:t", "--json")
    assert res.code == 2 and res.stdout == ""
    res = run_cli("export", f"{layout}:t", "-o", tmp_path / "o.tar", "--json")
    assert res.code == 0
    doc = json.loads(res.stdout)
    assert doc["entries"] == 1 and doc["contentBytes"] == 1 and doc["layers"] == 1
    assert doc["bytesWritten"] == (tmp_path / "o.tar").stat().st_size


@pytest.mark.parametrize(("compression", "docker"), [
    ("gzip", False), ("zstd", False), ("none", False), ("gzip", True), ("none", True)])
def test_every_layer_type_exports(tmp_path: Path, compression: str, docker: bool) -> None:
    layers = [build_layer([{**D, "name": "etc"}, {"name": "etc/a", "data": "1"}]),
              build_layer([{"name": "etc/.wh.a"}, {"name": "etc/b", "data": "2"}])]
    layout = make_image(tmp_path / "oci", layers, compression=compression, docker=docker)
    out = tmp_path / "o.tar"
    assert run_cli("export", f"{layout}:t", "-o", out).code == 0
    with tarfile.open(out) as tf:
        assert tf.getnames() == ["etc", "etc/b"]


def test_a_lying_diff_id_is_exit_5_and_no_output(tmp_path: Path) -> None:
    layout = make_image(tmp_path / "oci", [build_layer([{"name": "f", "data": "x"}])])
    cfg_path = next(p for p in (layout / "blobs/sha256").iterdir()
                    if p.read_bytes().startswith(b'{"architecture"'))
    doc = json.loads(cfg_path.read_bytes())
    doc["rootfs"]["diff_ids"] = [str(Digest.of_bytes(b"other"))]
    broken = make_image(tmp_path / "b", [build_layer([{"name": "f", "data": "x"}])],
                        config={"rootfs": doc["rootfs"]})
    out = tmp_path / "o.tar"
    out.write_bytes(b"previous")
    res = run_cli("export", f"{broken}:t", "-o", out)
    assert res.code == 5, res.stderr
    assert "diff_id" in res.stderr and res.stderr.count("\n") == 1
    assert out.read_bytes() == b"previous"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".o.tar")] == []


def test_memory_stays_bounded_for_a_large_file(tmp_path: Path) -> None:
    big = 128 << 20
    src = tmp_path / "big"
    with open(src, "wb") as f:
        block = os.urandom(1 << 16)
        for _ in range(big // len(block)):
            f.write(block)
    tarball = tmp_path / "layer.tar"
    sh("tar", "-C", tmp_path, "-cf", tarball, "big")
    src.unlink()
    layout = make_image(tmp_path / "oci", [tarball.read_bytes()], compression="none")
    tarball.unlink()
    # VmHWM, not ru_maxrss: Linux keeps ru_maxrss across exec, so a child forked from this
    # (large) test process would report the parent's size
    code = (
        "from layouttool.ops.export_rootfs import export_rootfs\n"
        f"export_rootfs({str(layout) + ':t'!r}, {str(tmp_path / 'o.tar')!r})\n"
        "print(next(ln.split()[1] for ln in open('/proc/self/status') if ln.startswith('VmHWM')))"
    )
    rss_kib = int(subprocess.run([sys.executable, "-c", code], capture_output=True, check=True,
                                 text=True).stdout)
    assert (tmp_path / "o.tar").stat().st_size > big
    assert rss_kib < 96 * 1024, f"peak RSS {rss_kib} KiB for a {big >> 20} MiB file"


@pytest.mark.parametrize("lazy", ["estargz", "zstd:chunked"])
def test_lazy_layers_export_as_their_plain_originals(tmp_path: Path, lazy: str) -> None:
    """eStargz's own entries (TOC, landmarks) are not files of the image: left out as unpack
    leaves them out."""
    layout = make_image(tmp_path / "oci", layers_of("hardlink target deleted later", tmp_path))
    res = run_cli("-q", "convert", f"{layout}:t", "--compression", lazy, "-o", tmp_path / "lazy")
    assert res.code == 0, res.stderr
    assert run_cli("export", f"{layout}:t", "-o", tmp_path / "a.tar").code == 0
    assert run_cli("export", f"{tmp_path / 'lazy'}:t", "-o", tmp_path / "b.tar").code == 0
    got = tar_tree(tmp_path / "b.tar")
    assert got == tar_tree(tmp_path / "a.tar")
    assert not [n for n in got if "stargz" in n or "landmark" in n]
