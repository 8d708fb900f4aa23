"""Images made by new, append and config, read by the peers: umoci unpacks exactly the
expected tree, skopeo sees the config edits, podman loads the exported tarball with them."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from conftest import run_cli, sh
from layerbuild import build_layer
from podmanutil import Podman
from treeutil import diff, snapshot

from layouttool.mutate import ConfigEdit
from layouttool.ops.append import append_layers
from layouttool.ops.config import configure_image
from layouttool.ops.new import new_image

ROOT = os.geteuid() == 0


@pytest.fixture(autouse=True)
def _epoch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")


def umoci_unpack(umoci: str, image: str, bundle: Path) -> Path:
    """umoci's tree of ``image`` (``raw unpack``: the same unpacker as ``unpack``, without
    the mtree manifest that hashes every file again)."""
    bundle.mkdir()
    sh(umoci, "raw", "unpack", *([] if ROOT else ["--rootless"]), "--image", image,
       bundle / "rootfs")
    return bundle / "rootfs"


def rich_tree(root: Path) -> Path:
    (root / "usr" / "bin").mkdir(parents=True)
    (root / "usr" / "bin" / "app").write_bytes(os.urandom(200_000))
    os.chmod(root / "usr" / "bin" / "app", 0o4755)
    os.link(root / "usr" / "bin" / "app", root / "usr" / "bin" / "app-alias")
    os.symlink("/usr/bin/app", root / "usr" / "bin" / "abs")
    os.symlink("../bin", root / "usr" / "lib")
    (root / "etc").mkdir(mode=0o750)
    (root / "etc" / "conf").write_text("x=1\n")
    os.setxattr(root / "etc" / "conf", "user.tag", b"v")
    (root / "empty-dir").mkdir()
    os.mkfifo(root / "fifo")
    if ROOT:
        os.mknod(root / "null", 0o666 | stat.S_IFCHR, os.makedev(1, 3))
    return root


def test_umoci_unpacks_what_append_wrote(tmp_path: Path, umoci: str) -> None:
    src = rich_tree(tmp_path / "src")
    layout = tmp_path / "oci"
    new_image(f"{layout}:img")
    tar = tmp_path / "extra.tar"
    tar.write_bytes(build_layer([
        {"type": "dir", "name": "opt/"},
        {"name": "opt/tool", "data": "t", "mode": 0o700, "uid": 1000, "gid": 100},
        {"type": "hardlink", "name": "opt/tool2", "target": "opt/tool"},
        {"name": "etc/.wh.conf"},  # deletes the conf the directory layer wrote
    ]))
    append_layers(f"{layout}:img", [src, tar], keep_owner=True)
    rootfs = umoci_unpack(umoci, f"{layout}:img", tmp_path / "bundle")
    got = snapshot(rootfs, owners=ROOT, mtimes=True)
    want = snapshot(src, owners=ROOT, mtimes=True)
    for info in want.values():  # SOURCE_DATE_EPOCH clamps them
        info["mtime"] = min(info.get("mtime", 0), 1700000000) if "mtime" in info else None
        if info["mtime"] is None:
            del info["mtime"]
    del want["etc/conf"]
    extra = {k: v for k, v in got.items() if k.startswith("opt")}
    assert diff(want, {k: v for k, v in got.items() if k in want or k not in extra}) == []
    assert extra["opt/tool"]["mode"] == 0o700 and extra["opt/tool2"]["link_group"] == "opt/tool"
    if ROOT:
        assert extra["opt/tool"]["owner"] == (1000, 100)
    # the umoci bundle's config.json carries what config set
    configure_image(f"{layout}:img", ConfigEdit(entrypoint='["/usr/bin/app"]', env=("A=1",),
                                                workdir="/etc"))
    sh(umoci, "unpack", *([] if ROOT else ["--rootless"]), "--image", f"{layout}:img",
       tmp_path / "bundle2")
    spec = json.loads((tmp_path / "bundle2" / "config.json").read_text())
    assert spec["process"]["args"] == ["/usr/bin/app"]
    assert "A=1" in spec["process"]["env"] and spec["process"]["cwd"] == "/etc"


def test_umoci_reads_xattrs_and_prefix(tmp_path: Path, umoci: str) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("f")
    os.setxattr(src / "f", "user.k", b"value")
    layout = tmp_path / "oci"
    new_image(f"{layout}:img")
    append_layers(f"{layout}:img", [src], prefix="/srv/www", compression="none")
    rootfs = umoci_unpack(umoci, f"{layout}:img", tmp_path / "b")
    assert (rootfs / "srv" / "www" / "f").read_text() == "f"
    assert os.getxattr(rootfs / "srv" / "www" / "f", "user.k") == b"value"


def test_skopeo_inspect_shows_the_config_edits(tmp_path: Path, skopeo: str) -> None:
    layout = tmp_path / "oci"
    new_image(f"{layout}:img")
    src = tmp_path / "s"
    src.mkdir()
    (src / "x").write_text("x")
    append_layers(f"{layout}:img", [src])
    configure_image(f"{layout}:img", ConfigEdit(
        entrypoint='["/x"]', cmd="run it", env=("PATH=/bin",), labels=("team=web",),
        expose=("80",), user="1000", workdir="/w", stop_signal="SIGTERM", author="me",
        volumes=("/data",)))
    out = json.loads(sh(skopeo, "inspect", f"oci:{layout}:img").stdout)
    assert out["Labels"] == {"team": "web"} and out["Env"] == ["PATH=/bin"]
    assert len(out["Layers"]) == 1
    cfg = json.loads(sh(skopeo, "inspect", "--config", f"oci:{layout}:img").stdout)
    assert cfg["author"] == "me"
    assert cfg["config"] == {
        "User": "1000", "ExposedPorts": {"80/tcp": {}}, "Env": ["PATH=/bin"],
        "Entrypoint": ["/x"], "Cmd": ["/bin/sh", "-c", "run it"], "Volumes": {"/data": {}},
        "WorkingDir": "/w", "Labels": {"team": "web"}, "StopSignal": "SIGTERM",
    }
    assert cfg["history"][-1]["empty_layer"] is True


@pytest.mark.skipif(not ROOT, reason="podman with a private vfs store runs as root here")
def test_podman_loads_a_made_image_with_its_config(
    tmp_path: Path, podman: Podman
) -> None:
    layout = tmp_path / "oci"
    new_image(f"{layout}:made:1.0")
    src = rich_tree(tmp_path / "src")
    append_layers(f"{layout}:made:1.0", [src])
    conf = configure_image(f"{layout}:made:1.0", ConfigEdit(
        entrypoint='["/usr/bin/app"]', env=("MODE=prod",), labels=("a=b",), user="7"))
    out = tmp_path / "made.tar"
    res = run_cli("-q", "to-docker-save", f"{layout}:made:1.0", "-o", out)
    assert res.code == 0, res.stderr
    podman("load", "-i", out)
    image_id = conf.update.config_digest.split(":")[1]
    info = podman.inspect(image_id)
    assert info["Config"]["Entrypoint"] == ["/usr/bin/app"]
    assert "MODE=prod" in info["Config"]["Env"] and info["Config"]["User"] == "7"
    assert info["Config"]["Labels"] == {"a": "b"}
    assert any(t.endswith("made:1.0") for t in info["RepoTags"])
    assert info["RootFS"]["Layers"] == json.loads(
        (layout / "blobs" / "sha256" / image_id).read_text())["rootfs"]["diff_ids"]
