"""Layouts the real peers write (skopeo, umoci, podman, buildah), read by every command.

Each test makes the layout with the tool itself, then checks what a user of it would run:
``verify`` and ``verify --strict`` (what the tool writes is clean, but for what the spec makes
a SHOULD), ``ls`` (every entry, its kind), ``inspect``, ``gc`` (nothing reachable removed) and
``unpack``. Under CI=true a missing tool fails the test; elsewhere it skips, saying which.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import need_tool, run_cli, sh
from fixtures_path import shared_fixture
from podmanutil import Podman, short_runroot

from layouttool import mediatypes as mt


class Buildah:
    """buildah (root, vfs) with a store of its own under the test's tmp_path."""

    def __init__(self, binary: str, root: Path, runroot: Path) -> None:
        self.binary, self.root, self.runroot = binary, root, runroot

    def __call__(self, *args: str | os.PathLike[str]) -> str:
        return sh(self.binary, "--root", self.root, "--runroot", self.runroot,
                  "--storage-driver", "vfs", *args).stdout.decode()


@pytest.fixture
def buildah(tmp_path: Path) -> Iterator[Buildah]:
    binary = need_tool("buildah")
    with short_runroot("lt-bah-") as runroot:
        yield Buildah(binary, tmp_path / "buildah", runroot)


def check_all(layout: Path, *, warnings: dict[str, set[str]] | None = None,
              kinds: dict[str, str], unpack: dict[str, str], tmp: Path) -> None:
    """verify (strict clean, but for ``warnings``: ref -> codes), ls (ref -> kind), inspect and
    unpack (ref -> a file the rootfs holds, '' for none), gc (removes nothing reachable)."""
    warnings = warnings or {}
    r = run_cli("verify", "--json", layout)
    doc = json.loads(r.stdout)
    assert r.code == 0 and doc["problems"] == [], doc["problems"]
    got = {w["where"].split(" > ")[0]: set() for w in doc["warnings"]}
    for w in doc["warnings"]:
        got[w["where"].split(" > ")[0]].add(w["code"])
    assert got == warnings, doc["warnings"]
    assert run_cli("verify", "--strict", layout).code == (4 if warnings else 0)
    ls = run_cli("ls", "--json", layout)
    assert ls.code == 0, ls.stderr
    assert {e["ref"]: e["kind"] for e in json.loads(ls.stdout)["images"]} == kinds
    assert all(e["error"] is None for e in json.loads(ls.stdout)["images"])
    for ref, path in unpack.items():
        i = run_cli("inspect", "--json", f"{layout}:{ref}")
        assert i.code == 0 and json.loads(i.stdout)["kind"] == "image", i.stderr
        dest = tmp / f"rootfs-{ref.replace('/', '_').replace(':', '_')}"
        u = run_cli("unpack", f"{layout}:{ref}", dest, "--rootless")
        assert u.code == 0, u.stderr
        if path:
            assert (dest / path).exists()
    # gc removes only garbage (umoci leaves the image it replaced): verify says the same after
    g = run_cli("gc", "--json", layout)
    assert g.code == 0, g.stderr
    after = json.loads(run_cli("verify", "--json", layout).stdout)
    assert after["problems"] == [] and after["warnings"] == doc["warnings"]
    assert after["checked"] == doc["checked"]
    assert json.loads(run_cli("gc", "--json", layout).stdout)["count"] == 0


def test_skopeo_oci_docker_and_zstd(tmp_path: Path) -> None:
    skopeo = need_tool("skopeo")
    lay = tmp_path / "sk"
    src = f"docker-archive:{shared_fixture('docker-save', 'almostempty.tar')}"
    sh(skopeo, "copy", "-q", src, f"oci:{lay}:oci")
    sh(skopeo, "copy", "-q", "--format", "v2s2", src, f"oci:{lay}:docker")
    sh(skopeo, "copy", "-q", "--dest-compress-format", "zstd", src, f"oci:{lay}:zstd")
    entries = json.loads((lay / "index.json").read_bytes())["manifests"]
    assert {e["mediaType"] for e in entries} == {mt.MT_OCI_MANIFEST, mt.MT_DOCKER_MANIFEST}
    check_all(lay, kinds={"oci": "image", "docker": "image", "zstd": "image"},
              unpack={"oci": "emptyfile", "docker": "emptyfile", "zstd": "emptyfile"},
              tmp=tmp_path)


def test_umoci_new_has_no_layers_and_that_is_a_should(tmp_path: Path) -> None:
    umoci = need_tool("umoci")
    lay = tmp_path / "um"
    sh(umoci, "init", "--layout", lay)
    sh(umoci, "new", "--image", f"{lay}:empty")
    sh(umoci, "new", "--image", f"{lay}:one")
    (tmp_path / "f.txt").write_text("hi\n")
    sh(umoci, "insert", "--image", f"{lay}:one", tmp_path / "f.txt", "/f.txt")
    check_all(lay, warnings={"empty": {"layers-empty"}}, kinds={"empty": "image", "one": "image"},
              unpack={"empty": "", "one": "f.txt"}, tmp=tmp_path)


def test_buildah_push_and_manifest_list(tmp_path: Path, buildah: Buildah) -> None:
    lay = tmp_path / "bah"
    buildah("from", "--name", "c", "scratch")
    buildah("config", "--cmd", "/hello", "--label", "a=b", "c")
    buildah("commit", "-q", "c", "img:1")
    buildah("push", "-q", "img:1", f"oci:{lay}:img")
    buildah("manifest", "create", "list")
    buildah("manifest", "add", "--arch", "arm64", "--variant", "v8", "list",
            "containers-storage:localhost/img:1")
    buildah("manifest", "push", "-q", "--all", "list", f"oci:{lay}:list")
    check_all(lay, kinds={"img": "image", "list": "index"}, unpack={"img": ""},
              tmp=tmp_path)
    # one platform of the list, by digest, though index.json lists only the index
    idx = json.loads(run_cli("inspect", "--raw", "index", f"{lay}:list").stdout)
    arm = idx["manifests"][0]["digest"]
    r = run_cli("inspect", "--json", f"{lay}@{arm}")
    assert r.code == 0 and json.loads(r.stdout)["manifestDigest"] == arm, r.stderr
    assert run_cli("inspect", "--platform", "linux/arm64", f"{lay}:list").code == 0


def test_podman_push_v2s2_zstd_and_save_oci_dir(tmp_path: Path, podman: Podman) -> None:
    p = podman
    save = shared_fixture("docker-save", "almostempty.tar")
    p("load", "-q", "-i", save)
    lay = tmp_path / "pod"
    p("push", "-q", "--format", "v2s2", "emptyimage:latest", f"oci:{lay}:v2s2")
    p("push", "-q", "--compression-format", "zstd", "emptyimage:latest",
      f"oci:{lay}:zstd")
    check_all(lay, kinds={"v2s2": "image", "zstd": "image"},
              unpack={"v2s2": "emptyfile", "zstd": "emptyfile"}, tmp=tmp_path)
    d = tmp_path / "dir"
    p("save", "-q", "--format", "oci-dir", "-o", d, "emptyimage:latest")
    ref = json.loads((d / "index.json").read_bytes())["manifests"][0]["annotations"][
        mt.ANNOT_REF_NAME]
    check_all(d, kinds={ref: "image"}, unpack={ref: "emptyfile"}, tmp=tmp_path)
