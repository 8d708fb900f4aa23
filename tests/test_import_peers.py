"""from-docker-save against the peers: images built by umoci, exported by skopeo, imported by
us, then read back by skopeo and unpacked by umoci."""

from __future__ import annotations

import io
import json
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, sh
from test_import import assert_verified, index_entries
from treeutil import snapshot

from layouttool import mediatypes as mt
from layouttool.ops.importer import import_docker_save

pytestmark = pytest.mark.peers

LAYOUTTOOL = REPO / ".venv" / "bin" / "layouttool"


def build_images(umoci: str, tmp: Path) -> Path:
    """An OCI layout with ``app`` (3 layers: files, a symlink, a whiteout) and ``db``."""
    src = tmp / "umoci-src"
    (src / "etc").mkdir(parents=True)
    (src / "etc" / "hello.txt").write_text("hello\n")
    (src / "etc" / "old.txt").write_text("to be removed\n")
    (src / "bin").mkdir()
    (src / "bin" / "tool").write_bytes(b"#!/bin/sh\necho tool\n" * 50)
    (src / "bin" / "tool").chmod(0o755)
    (src / "bin" / "link").symlink_to("tool")
    more = tmp / "umoci-more"
    more.mkdir()
    (more / "motd").write_text("welcome\n")
    lay = tmp / "orig"
    sh(umoci, "init", "--layout", lay)
    sh(umoci, "new", "--image", f"{lay}:app")
    sh(umoci, "insert", "--rootless", "--image", f"{lay}:app", src / "etc", "/etc")
    sh(umoci, "insert", "--rootless", "--image", f"{lay}:app", src / "bin", "/usr/bin")
    sh(umoci, "insert", "--rootless", "--image", f"{lay}:app", "--whiteout", "/etc/old.txt")
    sh(umoci, "insert", "--rootless", "--image", f"{lay}:app", more / "motd", "/etc/motd")
    sh(umoci, "new", "--image", f"{lay}:db")
    sh(umoci, "insert", "--rootless", "--image", f"{lay}:db", more, "/srv/db")
    return lay


def config_digest(skopeo: str, image: str) -> str:
    """The config digest skopeo sees for ``image``."""
    raw = json.loads(sh(skopeo, "inspect", "--raw", image).stdout)
    return str(raw["config"]["digest"])


def unpacked(umoci: str, image: str, dest: Path) -> dict[str, Any]:
    """The tree ``umoci unpack`` gives for ``image``."""
    sh(umoci, "unpack", "--rootless", "--image", image, dest)
    return snapshot(dest / "rootfs", owners=False)


def merge_archives(parts: list[Path], out: Path) -> None:
    """One multi-image legacy docker save from several single-image ones (as docker save of
    several images writes): members deduplicated by name, manifest.json concatenated."""
    manifests: list[Any] = []
    seen: set[str] = set()
    with tarfile.open(out, "w") as dst:
        for part in parts:
            with tarfile.open(part) as t:
                for m in t.getmembers():
                    if m.name == "manifest.json":
                        manifests += json.loads(t.extractfile(m).read())  # type: ignore[union-attr]
                        continue
                    if m.name == "repositories" or m.name in seen:
                        continue
                    seen.add(m.name)
                    dst.addfile(m, t.extractfile(m) if m.isreg() else None)
        data = json.dumps(manifests).encode()
        info = tarfile.TarInfo("manifest.json")
        info.size = len(data)
        dst.addfile(info, io.BytesIO(data))


def test_skopeo_export_import_roundtrip(tmp_path: Path, umoci: str, skopeo: str) -> None:
    orig = build_images(umoci, tmp_path)
    archive = tmp_path / "app.tar"
    sh(
        skopeo,
        "copy",
        f"oci:{orig}:app",
        f"docker-archive:{archive}:example.com/team/app:1.0",
        "--additional-tag",
        "app:latest",
    )
    ours = tmp_path / "ours"
    res = import_docker_save(archive, ours)
    # skopeo writes RepoTags fully qualified; the ref name is the RepoTag as written
    assert [i.ref for i in res.images] == [
        "example.com/team/app:1.0",
        "docker.io/library/app:latest",
    ]
    assert [i.name for i in res.images] == [i.ref for i in res.images]
    assert_verified(ours)
    want = config_digest(skopeo, f"oci:{orig}:app")
    for ref in ("example.com/team/app:1.0", "docker.io/library/app:latest"):
        sh(skopeo, "inspect", f"oci:{ours}:{ref}")
        assert config_digest(skopeo, f"oci:{ours}:{ref}") == want
    # skopeo copy checks every digest on the way
    sh(skopeo, "copy", f"oci:{ours}:docker.io/library/app:latest", f"dir:{tmp_path / 'dir'}")
    assert unpacked(umoci, f"{ours}:example.com/team/app:1.0", tmp_path / "b1") == unpacked(
        umoci, f"{orig}:app", tmp_path / "b2"
    )


def test_skopeo_archive_through_stdin_pipe(tmp_path: Path, umoci: str, skopeo: str) -> None:
    orig = build_images(umoci, tmp_path)
    archive = tmp_path / "db.tar"
    sh(skopeo, "copy", f"oci:{orig}:db", f"docker-archive:{archive}:db:2")
    ours = tmp_path / "ours"
    proc = subprocess.run(
        f"gzip -c {archive} | {LAYOUTTOOL} -q from-docker-save - -o {ours} --compression none",
        shell=True,
        capture_output=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == b""  # -q
    assert_verified(ours)
    [entry] = index_entries(ours)
    man = json.loads((ours / "blobs/sha256" / entry["digest"][7:]).read_bytes())
    # (umoci 0.4 cannot read zstd layers, so the peer check uses uncompressed ones)
    assert {d["mediaType"] for d in man["layers"]} == {mt.MT_OCI_LAYER}
    assert config_digest(skopeo, f"oci:{ours}:docker.io/library/db:2") == config_digest(
        skopeo, f"oci:{orig}:db"
    )
    sh(skopeo, "copy", f"oci:{ours}:docker.io/library/db:2", f"dir:{tmp_path / 'dir'}")
    assert unpacked(umoci, f"{ours}:docker.io/library/db:2", tmp_path / "b1") == unpacked(
        umoci, f"{orig}:db", tmp_path / "b2"
    )


def test_multi_image_archive(tmp_path: Path, umoci: str, skopeo: str) -> None:
    orig = build_images(umoci, tmp_path)
    a, b = tmp_path / "a.tar", tmp_path / "b.tar"
    sh(skopeo, "copy", f"oci:{orig}:app", f"docker-archive:{a}:app:1", "--additional-tag", "app:2")
    sh(skopeo, "copy", f"oci:{orig}:db", f"docker-archive:{b}:db:1")
    multi = tmp_path / "multi.tar"
    merge_archives([a, b], multi)
    ours = tmp_path / "ours"
    r = subprocess.run(
        [LAYOUTTOOL, "from-docker-save", multi, "-o", ours, "--json"],
        capture_output=True,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert [i["ref"] for i in doc["images"]] == [
        "docker.io/library/app:1",
        "docker.io/library/app:2",
        "docker.io/library/db:1",
    ]
    assert_verified(ours)
    for ref, src in (("docker.io/library/app:2", "app"), ("docker.io/library/db:1", "db")):
        raw = json.loads(sh(skopeo, "inspect", "--raw", f"oci:{ours}:{ref}").stdout)
        assert raw["mediaType"] == mt.MT_OCI_MANIFEST
        assert raw["config"]["digest"] == config_digest(skopeo, f"oci:{orig}:{src}")
        sh(skopeo, "copy", f"oci:{ours}:{ref}", f"dir:{tmp_path / ('dir-' + src)}")
    # our own ref resolution also finds the short names
    r2 = subprocess.run([LAYOUTTOOL, "inspect", f"{ours}:db:1"], capture_output=True, check=False)
    assert r2.returncode == 0, r2.stderr


def test_our_sample_reads_like_skopeo_reads_it(tmp_path: Path, skopeo: str, umoci: str) -> None:
    """skopeo's own import of our sample (docker-archive: -> oci:) and ours agree."""
    sample = REPO / "testdata" / "sample-docker-save.tar"
    theirs = tmp_path / "theirs"
    sh(skopeo, "copy", f"docker-archive:{sample}:layouttool-sample:1.0", f"oci:{theirs}:s")
    ours = tmp_path / "ours"
    import_docker_save(sample, ours)
    # skopeo's docker-archive -> oci: copy rewrites the config; what it reads from the
    # tarball itself is the config we keep byte for byte
    assert config_digest(skopeo, f"oci:{ours}:layouttool-sample:1.0") == config_digest(
        skopeo, f"docker-archive:{sample}:layouttool-sample:1.0"
    )
    tree = unpacked(umoci, f"{ours}:layouttool-sample:1.0", tmp_path / "b1")
    assert tree == unpacked(umoci, f"{theirs}:s", tmp_path / "b2")
    assert "etc/old.txt" not in tree and tree["bin/hello"]["target"] == "../etc/hello.txt"
