"""new, append and config: what they write, where the ref goes, what they refuse.

The peers' view of the same images (umoci unpack, skopeo inspect, podman load) is in
test_build_peers.py.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import lzma
import os
import tarfile
from pathlib import Path
from typing import Any

import pytest
import zstandard
from conftest import REPO, run_cli
from layerbuild import build_layer
from treeutil import diff, snapshot

from layouttool import mediatypes as mt
from layouttool.errors import InvalidInputError, NotFoundError, UnsafeInputError, UnsupportedError
from layouttool.model import Platform
from layouttool.mutate import ConfigEdit
from layouttool.ops.append import append_layers
from layouttool.ops.config import configure_image
from layouttool.ops.new import new_image
from layouttool.ops.verify import verify_layout
from layouttool.rootfs import ApplyOptions, apply_layer
from layouttool.store import Layout

EPOCH = "1700000000"
SAMPLE = REPO / "testdata" / "sample-docker-save.tar"
ROOT = os.geteuid() == 0


@pytest.fixture(autouse=True)
def _epoch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SOURCE_DATE_EPOCH", EPOCH)


def cli_ok(*args: str | Path, stdin: bytes | None = None) -> dict[str, Any]:
    res = run_cli(*args, "--json", stdin=stdin)
    assert res.code == 0, res.stderr
    doc: dict[str, Any] = json.loads(res.stdout)
    return doc


def index(layout: Path) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = json.loads((layout / "index.json").read_text())["manifests"]
    return entries


def blob_json(layout: Path, digest: str) -> Any:
    return json.loads((layout / "blobs" / "sha256" / digest.split(":")[1]).read_bytes())


def blob_bytes(layout: Path, digest: str) -> bytes:
    return (layout / "blobs" / "sha256" / digest.split(":")[1]).read_bytes()


def verified(layout: Path) -> None:
    """verify finds nothing but the empty images ``new`` made (which the schema flags)."""
    problems = verify_layout(layout).problems
    assert all("must have at least 1 item" in p.message for p in problems), problems


def refs(layout: Path) -> dict[str, str]:
    return {e["annotations"][mt.ANNOT_REF_NAME]: e["digest"] for e in index(layout)
            if mt.ANNOT_REF_NAME in e.get("annotations", {})}


def unpack_layers(layout: Path, manifest_digest: str, dest: Path) -> Path:
    """Apply the image's layers with our own applier (the peers check the same in
    test_build_peers)."""
    dest.mkdir()
    man = blob_json(layout, manifest_digest)
    for layer in man["layers"]:
        data = blob_bytes(layout, layer["digest"])
        if layer["mediaType"].endswith("gzip"):
            data = gzip.decompress(data)
        elif layer["mediaType"].endswith("zstd"):
            data = zstandard.ZstdDecompressor().decompressobj().decompress(data)
        apply_layer(io.BytesIO(data), dest, ApplyOptions(rootless=not ROOT))
    return dest


@pytest.fixture
def src_tree(tmp_path: Path) -> Path:
    src = tmp_path / "src"
    (src / "app" / "bin").mkdir(parents=True)
    (src / "app" / "bin" / "tool").write_text("#!/bin/sh\necho tool\n")
    os.chmod(src / "app" / "bin" / "tool", 0o755)
    os.link(src / "app" / "bin" / "tool", src / "app" / "bin" / "tool2")
    os.symlink("bin/tool", src / "app" / "run")
    (src / "app" / "data.bin").write_bytes(os.urandom(70_000))
    return src


@pytest.fixture
def base(tmp_path: Path) -> Path:
    """A layout with an empty image ``base``."""
    layout = tmp_path / "oci"
    new_image(f"{layout}:base")
    return layout


# ----------------------------------------------------------------------------------- new

def test_new_makes_an_empty_image_and_the_layout(tmp_path: Path) -> None:
    layout = tmp_path / "fresh" / "oci"
    doc = cli_ok("new", f"{layout}:scratch", "--platform", "linux/arm64/v8")
    assert doc["layoutCreated"] is True and doc["action"] == "tagged"
    assert doc["ref"] == "scratch" and doc["platform"] == "linux/arm64/v8"
    assert refs(layout) == {"scratch": doc["digest"]}
    man = blob_json(layout, doc["manifestDigest"])
    assert man["layers"] == [] and man["mediaType"] == mt.MT_OCI_MANIFEST
    cfg = blob_json(layout, doc["configDigest"])
    assert cfg == {"created": "2023-11-14T22:13:20Z", "architecture": "arm64", "os": "linux",
                   "variant": "v8", "config": {},
                   "rootfs": {"type": "layers", "diff_ids": []}}
    # image-spec v1.1 asks for a layer (a SHOULD): verify warns, and only that
    res = verify_layout(layout)
    assert res.problems == () and [w.code for w in res.warnings] == ["layers-empty"]


def test_new_is_reproducible_and_moves_an_existing_tag(tmp_path: Path) -> None:
    a = cli_ok("new", f"{tmp_path}/a:x")
    b = cli_ok("new", f"{tmp_path}/b:x")
    assert a["digest"] == b["digest"]
    again = cli_ok("new", f"{tmp_path}/a:x", "--platform", "linux/s390x")
    assert again["action"] == "moved" and again["layoutCreated"] is False
    assert refs(tmp_path / "a") == {"x": again["digest"]}


@pytest.mark.parametrize("arg", ["oci", "oci@sha256:" + "0" * 64])
def test_new_needs_a_tag(tmp_path: Path, arg: str) -> None:
    with pytest.raises(InvalidInputError, match="TAG"):
        new_image(str(tmp_path / arg))


# ----------------------------------------------------------------------------------- append

def test_append_directory(base: Path, src_tree: Path, tmp_path: Path) -> None:
    doc = cli_ok("append", f"{base}:base", src_tree, "--tag", "app:1")
    assert doc["ref"] == "app:1" and doc["action"] == "tagged"
    # --tag leaves the edited ref alone
    assert set(refs(base)) == {"base", "app:1"} and refs(base)["app:1"] == doc["digest"]
    (layer,) = doc["layers"]
    assert layer["source"] == "src/" and layer["mediaType"] == mt.MT_OCI_LAYER_GZIP
    assert layer["entries"] == 6
    data = gzip.decompress(blob_bytes(base, layer["digest"]))
    assert "sha256:" + hashlib.sha256(data).hexdigest() == layer["diffID"]
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        ms = {m.name: m for m in tf.getmembers()}
    assert all((m.uid, m.gid, m.mtime) == (0, 0, int(EPOCH)) for m in ms.values())
    assert ms["app/bin/tool2"].islnk()
    cfg = blob_json(base, doc["configDigest"])
    assert cfg["rootfs"]["diff_ids"] == [layer["diffID"]]
    assert cfg["history"] == [{"created": "2023-11-14T22:13:20Z",
                               "created_by": "layouttool append src/"}]
    out = unpack_layers(base, doc["manifestDigest"], tmp_path / "out")
    assert diff(snapshot(src_tree, owners=False), snapshot(out, owners=False)) == []
    verified(base)


def test_append_is_deterministic(tmp_path: Path, src_tree: Path) -> None:
    digests = []
    for name in ("a", "b"):
        new_image(f"{tmp_path / name}:img")
        res = append_layers(f"{tmp_path / name}:img", [src_tree])
        digests.append((res.update.digest, res.layers[0].digest))
    assert digests[0] == digests[1]


def test_append_tar_sources_keep_their_bytes(base: Path, tmp_path: Path) -> None:
    plain = build_layer([{"type": "dir", "name": "./etc/"},
                         {"name": "./etc/motd", "data": "hi", "uid": 5, "mtime": 123}])
    files = {
        "l.tar": plain,
        "l.tar.gz": gzip.compress(plain),
        "l.tar.zst": zstandard.ZstdCompressor().compress(plain),
        "l.tar.xz": lzma.compress(plain),
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    doc = cli_ok("append", f"{base}:base", *(tmp_path / n for n in files))
    want = "sha256:" + hashlib.sha256(plain).hexdigest()
    assert [la["diffID"] for la in doc["layers"]] == [want] * 4
    assert [la["source"] for la in doc["layers"]] == list(files)
    cfg = blob_json(base, doc["configDigest"])
    assert len(cfg["history"]) == 4 and cfg["rootfs"]["diff_ids"] == [want] * 4
    assert refs(base)["base"] == doc["digest"] and doc["action"] == "moved"


def test_append_from_stdin_with_prefix_and_owner(base: Path) -> None:
    plain = build_layer([{"name": "x", "data": "1", "uid": 9},
                         {"type": "hardlink", "name": "y", "target": "x"}])
    doc = cli_ok("append", f"{base}:base", "-", "--prefix", "/opt/app/", "--owner", "1:2",
                 stdin=plain)
    (layer,) = doc["layers"]
    assert layer["source"] == "-"
    data = gzip.decompress(blob_bytes(base, layer["digest"]))
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        ms = tf.getmembers()
    assert [(m.name, m.uid, m.gid) for m in ms] == [("opt/app/x", 1, 2), ("opt/app/y", 1, 2)]
    assert ms[1].linkname == "opt/app/x"
    assert blob_json(base, doc["configDigest"])["history"][0]["created_by"] == (
        "layouttool append - --prefix /opt/app")


def test_append_keep_owner(base: Path, src_tree: Path) -> None:
    res = append_layers(f"{base}:base", [src_tree], keep_owner=True)
    data = gzip.decompress(blob_bytes(base, res.layers[0].digest))
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        assert {(m.uid, m.gid) for m in tf.getmembers()} == {(os.getuid(), os.getgid())}


def test_append_compression_follows_the_last_layer(base: Path, src_tree: Path) -> None:
    first = append_layers(f"{base}:base", [src_tree], compression="zstd")
    assert first.layers[0].media_type == mt.MT_OCI_LAYER_ZSTD
    second = append_layers(f"{base}:base", [src_tree])
    assert second.layers[0].media_type == mt.MT_OCI_LAYER_ZSTD
    third = append_layers(f"{base}:base", [src_tree], compression="none")
    assert third.layers[0].media_type == mt.MT_OCI_LAYER
    man = blob_json(base, third.update.manifest_digest)
    assert [la["mediaType"] for la in man["layers"]] == [
        mt.MT_OCI_LAYER_ZSTD, mt.MT_OCI_LAYER_ZSTD, mt.MT_OCI_LAYER]
    verified(base)


@pytest.fixture
def docker_image(tmp_path: Path) -> Path:
    layout = tmp_path / "dk"
    assert run_cli("-q", "from-docker-save", SAMPLE, "-o", layout, "--format", "docker").code == 0
    return layout


def test_docker_typed_images_stay_docker_typed(docker_image: Path, src_tree: Path) -> None:
    res = append_layers(f"{docker_image}:layouttool-sample:1.0", [src_tree])
    man = blob_json(docker_image, res.update.manifest_digest)
    assert man["mediaType"] == mt.MT_DOCKER_MANIFEST
    assert man["config"]["mediaType"] == mt.MT_DOCKER_CONFIG
    assert {la["mediaType"] for la in man["layers"]} == {mt.MT_DOCKER_LAYER_GZIP}
    conf = configure_image(f"{docker_image}:layouttool-sample:1.0", ConfigEdit(user="1"))
    assert blob_json(docker_image, conf.update.manifest_digest)["mediaType"] == (
        mt.MT_DOCKER_MANIFEST)
    with pytest.raises(UnsupportedError, match="zstd"):
        append_layers(f"{docker_image}:layouttool-sample:1.0", [src_tree], compression="zstd")
    assert verify_layout(docker_image).ok


@pytest.mark.parametrize(
    ("entries", "error", "code"),
    [
        ([{"name": "../../etc/passwd", "data": "x"}], UnsafeInputError, 6),
        ([{"name": "a"}, {"name": "a"}], InvalidInputError, 4),
        ([{"type": "hardlink", "name": "h", "target": "/etc/shadow"}], InvalidInputError, 4),
    ],
)
def test_append_refuses_hostile_tars_and_leaves_the_layout(
    base: Path, tmp_path: Path, entries: list[dict[str, Any]], error: type[Exception],
    code: int,
) -> None:
    bad = tmp_path / "bad.tar"
    bad.write_bytes(build_layer(entries))
    before = (base / "index.json").read_bytes()
    blobs = set((base / "blobs" / "sha256").iterdir())
    with pytest.raises(error):
        append_layers(f"{base}:base", [bad])
    res = run_cli("append", f"{base}:base", bad)
    assert res.code == code and res.stderr.startswith("layouttool: error: ")
    assert (base / "index.json").read_bytes() == before
    assert set((base / "blobs" / "sha256").iterdir()) == blobs
    assert Layout.open(base).tmp_files() == []


def test_append_errors(base: Path, src_tree: Path, tmp_path: Path) -> None:
    with pytest.raises(NotFoundError):
        append_layers(f"{base}:base", [tmp_path / "missing"])
    with pytest.raises(UnsafeInputError):
        append_layers(f"{base}:base", [src_tree], prefix="../x")
    with pytest.raises(InvalidInputError, match="exclude"):
        append_layers(f"{base}:base", [src_tree], owner=(0, 0), keep_owner=True)
    with pytest.raises(InvalidInputError, match="ref name"):
        append_layers(f"{base}:base", [src_tree], tag="bad tag")
    res = run_cli("append", f"{base}:base", src_tree, "--owner", "root")
    assert res.code == 2 and "UID:GID" in res.stderr
    (tmp_path / "junk").write_bytes(b"not a tar at all" * 100)
    assert run_cli("append", f"{base}:base", tmp_path / "junk").code == 4


# ----------------------------------------------------------------------------------- config

def test_config_through_the_cli(base: Path) -> None:
    doc = cli_ok("config", f"{base}:base", "--entrypoint", '["/app"]', "--cmd", "serve",
                 "--env", "A=1", "--label", "k=v", "--expose", "8080", "--volume", "/data",
                 "--workdir", "/srv", "--user", "10:10", "--stop-signal", "SIGINT",
                 "--author", "me", "--history-comment", "why")
    cfg = blob_json(base, doc["configDigest"])
    assert cfg["config"] == {
        "Entrypoint": ["/app"], "Cmd": ["/bin/sh", "-c", "serve"], "Env": ["A=1"],
        "Labels": {"k": "v"}, "WorkingDir": "/srv", "User": "10:10",
        "ExposedPorts": {"8080/tcp": {}}, "Volumes": {"/data": {}}, "StopSignal": "SIGINT",
    }
    assert cfg["author"] == "me" and cfg["history"][-1]["comment"] == "why"
    assert doc["changed"] == ["Entrypoint", "Cmd", "Env", "Labels", "WorkingDir", "User",
                              "ExposedPorts", "Volumes", "StopSignal", "author"]
    assert refs(base)["base"] == doc["digest"] and doc["previousDigest"] != doc["digest"]


def test_config_says_when_it_clears_cmd(base: Path) -> None:
    configure_image(f"{base}:base", ConfigEdit(cmd='["sh"]'))
    res = run_cli("config", f"{base}:base", "--entrypoint", "/app")
    assert res.code == 0
    assert "layouttool: note: Cmd" in res.stderr and "cleared" in res.stderr


def test_config_keeps_unknown_fields(base: Path) -> None:
    layout = Layout.open(base)
    res = configure_image(f"{base}:base", ConfigEdit(user="1"))
    cfg = dict(blob_json(base, res.update.config_digest))
    cfg["x-vendor"] = {"keep": [1, 2]}
    cfg["config"]["X-Odd"] = True
    man = blob_json(base, res.update.manifest_digest)
    man["annotations"] = {"org.example": "kept"}
    cfg_desc = layout.put_json(cfg, mt.MT_OCI_CONFIG)
    man["config"] = cfg_desc.to_json()
    man_desc = layout.put_json(man, mt.MT_OCI_MANIFEST)
    from layouttool.ops.layout import set_ref

    set_ref(layout, man_desc, "odd")
    out = configure_image(f"{base}:odd", ConfigEdit(labels=("a=b",)))
    new_cfg = blob_json(base, out.update.config_digest)
    assert new_cfg["x-vendor"] == {"keep": [1, 2]} and new_cfg["config"]["X-Odd"] is True
    assert blob_json(base, out.update.manifest_digest)["annotations"] == {"org.example": "kept"}


def test_config_nothing_to_change(base: Path) -> None:
    res = run_cli("config", f"{base}:base")
    assert res.code == 4 and "nothing to change" in res.stderr
    res = run_cli("config", f"{base}:base", "--created", "soon")
    assert res.code == 4 and "RFC 3339" in res.stderr


def test_config_is_deterministic(tmp_path: Path) -> None:
    out = []
    for name in ("a", "b"):
        new_image(f"{tmp_path / name}:img")
        out.append(configure_image(f"{tmp_path / name}:img",
                                   ConfigEdit(env=("A=1",), cmd="x")).update.digest)
    assert out[0] == out[1]


# ------------------------------------------------------------------- multi-platform indexes

def test_an_index_is_rewritten_around_the_edited_image(tmp_path: Path, src_tree: Path) -> None:
    layout = tmp_path / "oci"
    amd = new_image(f"{layout}:amd", platform=Platform("linux", "amd64"))
    arm = new_image(f"{layout}:arm", platform=Platform("linux", "arm64", "v8"))
    lay = Layout.open(layout)
    kids = []
    for res, plat in ((amd, {"os": "linux", "architecture": "amd64"}),
                      (arm, {"os": "linux", "architecture": "arm64", "variant": "v8"})):
        kids.append({"mediaType": mt.MT_OCI_MANIFEST, "digest": res.update.digest,
                     "size": len(blob_bytes(layout, res.update.digest)), "platform": plat,
                     "annotations": {"x": "kept"}})
    idx = lay.put_json({"schemaVersion": 2, "mediaType": mt.MT_OCI_INDEX, "manifests": kids,
                        "annotations": {"idx": "kept"}}, mt.MT_OCI_INDEX)
    from layouttool.ops.layout import set_ref

    set_ref(lay, idx, "multi")
    res = append_layers(f"{layout}:multi", [src_tree], platform=Platform("linux", "arm64"))
    assert res.update.media_type == mt.MT_OCI_INDEX and res.update.action == "moved"
    new_idx = blob_json(layout, res.update.digest)
    assert new_idx["annotations"] == {"idx": "kept"}
    assert new_idx["manifests"][0] == kids[0]  # the other platform is untouched
    assert new_idx["manifests"][1]["digest"] == res.update.manifest_digest
    assert new_idx["manifests"][1]["annotations"] == {"x": "kept"}
    # config --arch moves the index entry's platform with the config
    conf = configure_image(f"{layout}:multi", ConfigEdit(arch="riscv64", variant=""),
                           platform=Platform("linux", "arm64"))
    kid = blob_json(layout, conf.update.digest)["manifests"][1]
    assert kid["platform"] == {"os": "linux", "architecture": "riscv64"}
    verified(layout)


def test_an_image_named_by_digest_gets_an_untagged_entry(base: Path) -> None:
    digest = refs(base)["base"]
    res = configure_image(f"{base}@{digest}", ConfigEdit(user="1"))
    assert res.update.action == "added" and res.update.ref is None
    assert refs(base) == {"base": digest}
    assert res.update.digest in {e["digest"] for e in index(base)}
    # a tag given with it names the result instead
    res2 = configure_image(f"{base}@{digest}", ConfigEdit(user="2"), tag="two")
    assert res2.update.action == "tagged" and refs(base)["two"] == res2.update.digest


def test_the_only_image_of_an_untagged_layout_is_replaced(tmp_path: Path) -> None:
    layout = tmp_path / "oci"
    res = new_image(f"{layout}:t")
    lay = Layout.open(layout)
    lay.update_index(lambda _e, _d: [lay.read_index().manifests[0].with_(annotations={})])
    out = configure_image(str(layout), ConfigEdit(user="1"))
    assert out.update.action == "replaced"
    assert [e["digest"] for e in index(layout)] == [out.update.digest]
    assert out.update.previous_digest == res.update.digest


@pytest.mark.parametrize("name", [".wh.file", ".wh..wh..opq"])
def test_append_refuses_whiteout_names_in_a_directory(
    base: Path, src_tree: Path, name: str
) -> None:
    """A file named .wh.* would be read as a whiteout by every unpacker (umoci refuses it
    too): it deletes instead of adding. Exit 4, nothing written."""
    (src_tree / "app" / name).write_text("")
    before = (base / "index.json").read_bytes()
    res = run_cli("append", f"{base}:base", src_tree)
    assert res.code == 4, res.stderr
    assert res.stderr.startswith("layouttool: error: ") and f"app/{name}" in res.stderr
    assert len(res.stderr.splitlines()) == 1
    assert (base / "index.json").read_bytes() == before


def test_append_follows_a_source_that_is_a_symlink_to_a_directory(
    base: Path, src_tree: Path, tmp_path: Path
) -> None:
    """The directory the user named may be reached through a symlink (as tar -C, umoci
    insert); symlinks inside it are still stored, never followed."""
    link = tmp_path / "link"
    link.symlink_to(src_tree)
    via_link = cli_ok("append", f"{base}:base", link, "--tag", "a")
    direct = cli_ok("append", f"{base}:base", src_tree, "--tag", "b")
    assert via_link["layers"][0]["diffID"] == direct["layers"][0]["diffID"]


def test_append_names_the_unreadable_path(base: Path, src_tree: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    real_open = os.open

    def fake_open(path: Any, flags: int, *args: Any, **kw: Any) -> int:
        if str(path) == "bin":
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, flags, *args, **kw)

    monkeypatch.setattr(os, "open", fake_open)
    res = run_cli("append", f"{base}:base", src_tree)
    assert res.code == 74 and "app/bin" in res.stderr, res.stderr
    assert len(res.stderr.splitlines()) == 1
