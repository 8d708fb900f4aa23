"""from-docker-save of Docker <= 1.9 saves (image format V1): ``repositories`` and ``<id>/``
layer folders whose ``json`` names a ``parent``, no manifest.json.

Oracles: the digests Docker's own migration tests check (moby v1.10.3
``migrate/v1/migratev1_test.go``, a busybox saved by Docker 1.9), configs assembled here with
json.dumps from the V1 JSONs we wrote, hashlib over the layer tars we built, our verify, and
skopeo and podman reading what we wrote.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path
from typing import Any

import pytest
from conftest import run_cli, sh, shared_fixture
from layerbuild import build_layer
from podmanutil import Podman
from test_import import blob_bytes, index_entries, manifest_of, tar_of, write

from layouttool import mediatypes as mt
from layouttool.digest import Digest
from layouttool.formats import docker_v1
from layouttool.ops.importer import ImportResult, import_docker_save
from layouttool.ops.unpack import unpack_image
from layouttool.ops.verify import verify_layout
from layouttool.reader import NULL_FIELD
from layouttool.store import Layout
from layouttool.v1config import V1Image, make_config

EMPTY_DIFF_ID = "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef"

# A busybox from Docker 1.9 (two layers) as Docker's migration test writes it
# (moby v1.10.3 migrate/v1/migratev1_test.go, TestMigrateImages)
BUSYBOX_BASE = (
    b'{"architecture":"amd64","config":{"Hostname":"23304fc829f9","Domainname":"","User":"",'
    b'"AttachStdin":false,"AttachStdout":false,"AttachStderr":false,"Tty":false,"OpenStdin":'
    b'false,"StdinOnce":false,"Env":null,"Cmd":null,"Image":"","Volumes":null,"WorkingDir":"'
    b'","Entrypoint":null,"OnBuild":null,"Labels":null},"container":"23304fc829f9b9349416f6e'
    b'b1afec162907eba3a328f51d53a17f8986f865d65","container_config":{"Hostname":"23304fc829f'
    b'9","Domainname":"","User":"","AttachStdin":false,"AttachStdout":false,"AttachStderr":f'
    b'alse,"Tty":false,"OpenStdin":false,"StdinOnce":false,"Env":null,"Cmd":["/bin/sh","-c",'
    b'"#(nop) ADD file:a3bc1e842b69636f9df5256c49c5374fb4eef1e281fe3f282c65fb853ee171c5 in /'
    b'"],"Image":"","Volumes":null,"WorkingDir":"","Entrypoint":null,"OnBuild":null,"Labels"'
    b':null},"created":"2015-10-31T22:22:54.690851953Z","docker_version":"1.8.2","layer_id":'
    b'"sha256:55dc925c23d1ed82551fd018c27ac3ee731377b6bad3963a2a4e76e753d70e57","os":"linux"'
    b'}'
)

BUSYBOX_TOP = (
    b'{"architecture":"amd64","config":{"Hostname":"23304fc829f9","Domainname":"","User":"",'
    b'"AttachStdin":false,"AttachStdout":false,"AttachStderr":false,"Tty":false,"OpenStdin":'
    b'false,"StdinOnce":false,"Env":null,"Cmd":["sh"],"Image":"d1592a710ac323612bd786fa8ac20'
    b'727c58d8a67847e5a65177c594f43919498","Volumes":null,"WorkingDir":"","Entrypoint":null,'
    b'"OnBuild":null,"Labels":null},"container":"349b014153779e30093d94f6df2a43c7a0a164e05aa'
    b'207389917b540add39b51","container_config":{"Hostname":"23304fc829f9","Domainname":"","'
    b'User":"","AttachStdin":false,"AttachStdout":false,"AttachStderr":false,"Tty":false,"Op'
    b'enStdin":false,"StdinOnce":false,"Env":null,"Cmd":["/bin/sh","-c","#(nop) CMD [\\"sh\\"]'
    b'"],"Image":"d1592a710ac323612bd786fa8ac20727c58d8a67847e5a65177c594f43919498","Volumes'
    b'":null,"WorkingDir":"","Entrypoint":null,"OnBuild":null,"Labels":null},"created":"2015'
    b'-10-31T22:22:55.613815829Z","docker_version":"1.8.2","layer_id":"sha256:a3ed95caeb02ff'
    b'e68cdd9fd84406680ae93d633cb16422d00e8a7c22955b46d4","os":"linux","parent_id":"sha256:0'
    b'39b63dd2cbaa10d6015ea574392530571ed8d7b174090f032211285a71881d0"}'
)


def test_docker_migration_vectors() -> None:
    """Docker 1.10 migrated these two V1 JSONs (every layer's diff_id the empty layer's) to
    image IDs ca406eaf... and a488bec9...: we make the same config bytes."""
    base, top = V1Image.decode(BUSYBOX_BASE, "base"), V1Image.decode(BUSYBOX_TOP, "top")
    one = make_config(BUSYBOX_BASE, [Digest.parse(EMPTY_DIFF_ID)], [base.history()], "base")
    two = make_config(
        BUSYBOX_TOP, [Digest.parse(EMPTY_DIFF_ID)] * 2, [base.history(), top.history()], "top"
    )
    assert hashlib.sha256(one.raw).hexdigest() == (
        "ca406eaf9c26898414ff5b7b3a023c33310759d6203be0663dbf1b3a712f432d"
    )
    assert hashlib.sha256(two.raw).hexdigest() == (
        "a488bec94bb96b26a968f913d25ef7d8d204d727ca328b52b4b059c7d03260b6"
    )
    cfg = json.loads(two.raw)
    assert [h["created_by"] for h in cfg["history"]] == [
        "/bin/sh -c #(nop) ADD file:"
        "a3bc1e842b69636f9df5256c49c5374fb4eef1e281fe3f282c65fb853ee171c5 in /",
        '/bin/sh -c #(nop) CMD ["sh"]',
    ]
    assert "parent_id" not in cfg and "layer_id" not in cfg


def import_from(src: Path, out: Path, *, stream: bool, **kw: Any) -> ImportResult:
    """Import ``src`` by path, or read once as a stream (a pipe's code path)."""
    if not stream:
        return import_docker_save(src, out, **kw)
    with src.open("rb") as f:
        return import_docker_save(f, out, **kw)


def assert_verified(layout: Path, warnings: frozenset[str] = frozenset({NULL_FIELD})) -> None:
    """``verify --strict --deep`` finds no problem, and no warning but ``warnings``: what the
    input's own config bytes hold (Go's ``"Env": null``, kept byte for byte so the image ID
    stays Docker's); and no temp file is left."""
    res = verify_layout(layout, strict=True, deep=True)
    assert res.problems == (), res.problems
    assert {w.code for w in res.warnings} <= warnings, res.warnings
    assert Layout.open(layout).tmp_files() == []


# ----------------------------------------------------------------------------- builders
def v1_id(seed: str) -> str:
    """A V1 layer ID (random in Docker; derived from ``seed`` here)."""
    return hashlib.sha256(seed.encode()).hexdigest()


def v1_json(
    layer_id: str,
    parent: str | None,
    cmd: list[str],
    *,
    created: str = "2015-11-20T18:10:48.123456789Z",
    version: str = "1.9.1",
    config: dict[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """A V1 JSON as Docker 1.9 wrote it (key order and fields of its image.Image)."""
    doc: dict[str, Any] = {"id": layer_id}
    if parent:
        doc["parent"] = parent
    doc.update(
        {
            "created": created,
            "container": v1_id("c" + layer_id),
            "container_config": {"Hostname": "c0ffee", "Env": None, "Cmd": cmd, "Labels": {}},
            "docker_version": version,
            "config": config or {"Hostname": "c0ffee", "Env": ["PATH=/bin"], "Cmd": ["sh"]},
            "architecture": "amd64",
            "os": "linux",
            "Size": 1234,
            **extra,
        }
    )
    return doc


def v1_save(
    layers: list[tuple[dict[str, Any], bytes]],
    repositories: dict[str, dict[str, str]] | None,
    *,
    indent: int | None = None,
) -> bytes:
    """A pre-1.10 save: ``<id>/{VERSION,json,layer.tar}`` per layer, and ``repositories``."""
    members: list[dict[str, Any]] = []
    for doc, tar in layers:
        lid = doc["id"]
        members += [
            {"name": f"{lid}/VERSION", "data": b"1.0"},
            {"name": f"{lid}/json", "data": json.dumps(doc, indent=indent).encode()},
            {"name": f"{lid}/layer.tar", "data": tar},
        ]
    if repositories is not None:
        members.append({"name": "repositories", "data": json.dumps(repositories).encode()})
    return tar_of(members)


def go_expected(doc: dict[str, Any], diff_ids: list[bytes], history: list[dict[str, Any]]) -> bytes:
    """The config Docker 1.10 makes of a >= 1.8.3 V1 JSON, assembled independently of
    layouttool: keys sorted, the v1-only ones dropped, values compact, & < > escaped."""
    keep = {k: v for k, v in doc.items() if k not in ("id", "parent", "Size")}
    keep["rootfs"] = {"type": "layers", "diff_ids": ["sha256:" + hashlib.sha256(t).hexdigest()
                                                      for t in diff_ids]}
    keep["history"] = history
    text = json.dumps(dict(sorted(keep.items())), separators=(",", ":"), ensure_ascii=False)
    for ch in "<>&":
        text = text.replace(ch, f"\\u{ord(ch):04x}")
    return text.encode()


BASE = build_layer([{"name": "bin/sh", "data": "#!shell\n", "mode": 0o755},
                    {"name": "etc/os-release", "data": "ID=v1\n"}])
APP1 = build_layer([{"name": "srv/app1", "data": "one\n"}])
APP2 = build_layer([{"name": "srv/app2", "data": "two\n"}])
EMPTY = b"\0" * 1024  # Docker 1.9 wrote a layer for every step, an empty tar for most
B, A1, E1, A2 = v1_id("base"), v1_id("app1"), v1_id("app1-cmd"), v1_id("app2")


def two_images() -> tuple[list[tuple[dict[str, Any], bytes]], dict[str, dict[str, str]]]:
    """base <- app1 <- app1-cmd (tags app:1, app:latest) and base <- app2 (tag tool:2)."""
    layers = [
        (v1_json(B, None, ["/bin/sh", "-c", "#(nop) ADD file:abc in /"]), BASE),
        (v1_json(A1, B, ["/bin/sh", "-c", "make && make install > /log"]), APP1),
        (v1_json(E1, A1, ["/bin/sh", "-c", '#(nop) CMD ["app1"]'],
                 config={"Cmd": ["app1"], "Labels": {"a": "<b>"}}), EMPTY),
        (v1_json(A2, B, ["/bin/sh", "-c", "cp two /srv"], author="Ann <ann@example.org>"), APP2),
    ]
    return layers, {"app": {"1": E1, "latest": E1}, "tool": {"2": A2}}


# ----------------------------------------------------------------------------- the fixture
def test_no_manifest_fixture_imports(tmp_path: Path) -> None:
    out = tmp_path / "oci"
    res = import_docker_save(shared_fixture("docker-save", "no_manifest.tar"), out)
    assert res.source_format == "docker-save-v1"
    [img] = res.images
    assert img.ref == "bazel/v1/tarball:test_image"
    assert [la.diff_id for la in img.layers] == [
        "sha256:fbec6100edacb7a6374f75545cfdfac2d83f74d0f5ed813645e4c3944c68c761"
    ]
    cfg = blob_bytes(out, img.config_digest)
    # no docker_version: the JSON went through Docker 1.10's V1Image struct (every field of
    # config and container_config written out), as `docker load` did
    zero = (
        '{"Hostname":"","Domainname":"","User":"","AttachStdin":false,"AttachStdout":false,'
        '"AttachStderr":false,"Tty":false,"OpenStdin":false,"StdinOnce":false,"Env":null,'
        '"Cmd":null,"Image":"","Volumes":null,"WorkingDir":"","Entrypoint":null,"OnBuild":null,'
        '"Labels":null}'
    )
    assert cfg == (
        '{"architecture":"amd64","config":' + zero + ',"container_config":' + zero + ','
        '"created":"1970-01-01T00:00:00Z","history":[{"created":"1970-01-01T00:00:00Z"}],'
        '"os":"linux","rootfs":{"type":"layers","diff_ids":["sha256:fbec6100edacb7a6374f75545'
        'cfdfac2d83f74d0f5ed813645e4c3944c68c761"]}}'
    ).encode()
    assert_verified(out)
    rootfs = tmp_path / "rootfs"
    unpack_image(f"{out}:bazel/v1/tarball:test_image", rootfs, rootless=True)
    assert sorted(p.relative_to(rootfs).as_posix() for p in rootfs.rglob("*")) == [
        "foo", "foo/baz", "foo/foo", "foo/hey"
    ]


# ----------------------------------------------------------------------------- two images
def test_two_images_sharing_a_base_with_three_tags(tmp_path: Path) -> None:
    layers, repos = two_images()
    src = write(tmp_path, v1_save(layers, repos, indent=2))
    out = tmp_path / "oci"
    res = import_docker_save(src, out, compression="none")
    assert [(i.ref, i.action) for i in res.images] == [
        ("app:1", "tagged"), ("app:latest", "tagged"), ("tool:2", "tagged")
    ]
    assert res.images[0].digest == res.images[1].digest != res.images[2].digest
    entries = index_entries(out)
    refs = [e["annotations"][mt.ANNOT_REF_NAME] for e in entries]
    assert refs == ["app:1", "app:latest", "tool:2"]
    assert entries[0]["platform"] == {"architecture": "amd64", "os": "linux"}
    app, tool = manifest_of(out, entries[0]["digest"]), manifest_of(out, entries[2]["digest"])
    # uncompressed and stored as they came: the blob is the layer tar, base first
    sha = lambda t: "sha256:" + hashlib.sha256(t).hexdigest()  # noqa: E731
    assert [la["digest"] for la in app["layers"]] == [sha(BASE), sha(APP1), sha(EMPTY)]
    assert [la["digest"] for la in tool["layers"]] == [sha(BASE), sha(APP2)]
    # the config: Docker 1.10's bytes for a 1.9.1 JSON, history base first
    docs = {doc["id"]: doc for doc, _ in layers}

    def hist(lid: str) -> dict[str, Any]:
        d = docs[lid]
        h = {"created": d["created"]}
        if "author" in d:
            h["author"] = d["author"]
        h["created_by"] = " ".join(d["container_config"]["Cmd"])
        return h

    app_cfg = blob_bytes(out, app["config"]["digest"])
    assert app_cfg == go_expected(docs[E1], [BASE, APP1, EMPTY], [hist(B), hist(A1), hist(E1)])
    assert b'"created_by":"/bin/sh -c make \\u0026\\u0026 make install \\u003e /log"' in app_cfg
    tool_cfg = blob_bytes(out, tool["config"]["digest"])
    assert tool_cfg == go_expected(docs[A2], [BASE, APP2], [hist(B), hist(A2)])
    assert_verified(out)
    rootfs = tmp_path / "rootfs"
    unpack_image(f"{out}:app:1", rootfs, rootless=True)
    assert (rootfs / "srv/app1").read_text() == "one\n" and not (rootfs / "srv/app2").exists()


def test_stream_and_file_give_the_same_layout(tmp_path: Path) -> None:
    layers, repos = two_images()
    src = write(tmp_path, v1_save(layers, repos))
    a, b = tmp_path / "a", tmp_path / "b"
    assert not import_from(src, a, stream=False).streamed
    assert import_from(src, b, stream=True).streamed
    assert (a / "index.json").read_bytes() == (b / "index.json").read_bytes()
    assert sorted(p.name for p in (a / "blobs/sha256").iterdir()) == sorted(
        p.name for p in (b / "blobs/sha256").iterdir()
    )


def test_untagged_heads_and_image_filter(tmp_path: Path) -> None:
    layers, _ = two_images()
    src = write(tmp_path, v1_save(layers, None))  # `docker save <id>` wrote no repositories
    out = tmp_path / "oci"
    res = import_docker_save(src, out)
    # the two heads (layers nobody names as parent), by ID, untagged
    assert [(i.ref, i.action) for i in res.images] == [(None, "added"), (None, "added")]
    assert len(index_entries(out)) == 2
    layers, repos = two_images()
    src = write(tmp_path, v1_save(layers, repos), "tagged.tar")
    # by tag, and by the V1 ID `docker images` showed before 1.10
    res = import_docker_save(src, tmp_path / "one", images=["tool:2"])
    assert [i.ref for i in res.images] == ["tool:2"]
    res = import_docker_save(src, tmp_path / "two", images=[E1[:12]])
    assert [i.ref for i in res.images] == ["app:1", "app:latest"]


def test_old_json_goes_through_the_struct(tmp_path: Path) -> None:
    """Before 1.8.3 Docker re-marshalled the JSON: unknown keys dropped, created re-formatted,
    every Config field written; from 1.8.3 on every key is kept as written."""
    for version, kept in (("1.8.2", False), ("1.8.3", True)):
        doc = v1_json(B, None, ["sh"], version=version, created="2015-11-20T19:10:48.500+00:00",
                      checksum="tarsum+sha256:00")
        src = write(tmp_path, v1_save([(doc, BASE)], {"v": {version: B}}), f"{version}.tar")
        [img] = import_docker_save(src, tmp_path / version).images
        cfg = json.loads(blob_bytes(tmp_path / version, img.config_digest))
        assert ("checksum" in cfg) is kept
        # Go writes a time as RFC 3339 with nanoseconds trimmed and a zero offset as Z
        assert cfg["created"] == (
            "2015-11-20T19:10:48.500+00:00" if kept else "2015-11-20T19:10:48.5Z"
        )
        assert cfg["history"][0]["created"] == "2015-11-20T19:10:48.5Z"
        assert ("OnBuild" in cfg["config"]) is not kept


def test_digest_references_in_repositories_are_skipped_and_said(tmp_path: Path) -> None:
    """Docker 1.6-1.9 kept a pull by digest in the same map as the tags, and `docker save
    REPO` wrote it to ``repositories`` (``{"app": {"sha256:...": ID}}``): not a tag, and no
    manifest of ours will have that digest; the save is imported all the same."""
    layers, _ = two_images()
    pulled = "sha256:" + "c" * 64
    src = write(tmp_path, v1_save(layers, {"app": {"1": E1, pulled: E1}, "tool": {pulled: A2}}))
    res = import_docker_save(src, tmp_path / "oci")
    assert [(i.ref, i.action) for i in res.images] == [("app:1", "tagged"), (None, "added")]
    assert res.images[1].layers[-1].diff_id == "sha256:" + hashlib.sha256(APP2).hexdigest()
    said = [n for n in res.notes if pulled in n]
    assert len(said) == 2 and "app@" + pulled in said[0] and "tool@" + pulled in said[1]
    assert_verified(tmp_path / "oci")


def test_missing_platform_is_filled_and_said(tmp_path: Path) -> None:
    doc = v1_json(B, None, ["sh"])
    del doc["architecture"], doc["os"]
    src = write(tmp_path, v1_save([(doc, BASE)], {"x": {"1": B}}))
    res = import_docker_save(src, tmp_path / "oci")
    cfg = json.loads(blob_bytes(tmp_path / "oci", res.images[0].config_digest))
    assert (cfg["os"], cfg["architecture"]) == ("linux", "amd64")
    assert any("names no architecture or os" in n for n in res.notes)


# ----------------------------------------------------------------------------- hostile input
def _hostile(case: str) -> bytes:
    layers, repos = two_images()
    if case == "cycle":
        layers[0][0]["parent"] = E1  # base -> app1-cmd -> app1 -> base
    elif case == "missing-parent":
        layers = [x for x in layers if x[0]["id"] != A1]
    elif case == "parent-not-hex":
        layers[1][0]["parent"] = "base"
    elif case == "parent-path":
        layers[1][0]["parent"] = "../../etc"
    elif case == "tag-to-path":
        repos["app"]["1"] = "../" + B
    elif case == "tag-to-absent":
        repos["app"]["1"] = v1_id("nowhere")
    elif case == "bad-json":
        layers[1][0]["container_config"] = {"Cmd": [1, 2]}
    elif case == "bad-tag":
        repos["App"] = {"x": B}
    elif case == "no-layer-tar":
        kept = _members(v1_save(layers, repos))
        return tar_of([m for m in kept if m["name"] != f"{A1}/layer.tar"])
    if case == "folder-not-hex":
        return tar_of([{"name": "layer1/json", "data": b"{}"},
                       {"name": "layer1/layer.tar", "data": BASE}])
    if case == "layer-escapes":
        members = [{"name": f"{B}/layer.tar", "symlink": "../../../etc/passwd"}]
        members += [m for m in _members(v1_save(layers, repos)) if m["name"] != f"{B}/layer.tar"]
        return tar_of(members)
    return v1_save(layers, repos)


def _members(data: bytes) -> list[dict[str, Any]]:
    """The ``{"name", "data"}`` files of a tar, for :func:`tar_of`."""
    with tarfile.open(fileobj=io.BytesIO(data)) as t:
        return [{"name": m.name, "data": t.extractfile(m).read()} for m in t.getmembers()]  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("case", "code", "says"),
    [
        ("cycle", 6, "loops back"),
        ("missing-parent", 4, "not in the tarball"),
        ("parent-not-hex", 4, "not 64 lowercase hex"),
        ("parent-path", 6, "is a path"),
        ("tag-to-path", 6, "is a path"),
        ("tag-to-absent", 4, "not in the tarball"),
        ("folder-not-hex", 4, "not 64 lowercase hex"),
        ("layer-escapes", 6, "outside the archive"),
        ("bad-json", 4, "Cmd must be an array of strings"),
        ("bad-tag", 4, "not a valid NAME:TAG"),
        ("no-layer-tar", 3, f"image app:1, app:latest: layer 1: '{A1}/layer.tar' is not in"),
    ],
)
@pytest.mark.parametrize("stream", [False, True], ids=["file", "stream"])
def test_hostile_v1_saves(tmp_path: Path, case: str, code: int, says: str, stream: bool) -> None:
    src = write(tmp_path, _hostile(case))
    out = tmp_path / "oci"
    if stream:
        r = run_cli("from-docker-save", "-", "-o", out, stdin=src.read_bytes())
    else:
        r = run_cli("from-docker-save", src, "-o", out)
    assert r.code == code, r.stderr
    assert r.stderr.startswith("layouttool: error: ") and r.stderr.count("\n") == 1
    assert says in r.stderr
    assert not out.exists()


def test_json_total_is_capped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(docker_v1, "V1_JSON_TOTAL_CAP", 1000)
    layers, repos = two_images()
    r = run_cli("from-docker-save", write(tmp_path, v1_save(layers, repos)), "-o", tmp_path / "o")
    assert r.code == 4 and "JSONs total more than 1000 bytes" in r.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("stream", [False, True], ids=["file", "stream"])
def test_chain_depth_is_capped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stream: bool
) -> None:
    """A chain deeper than Docker ever built is refused: each tag of a chain N deep makes an
    image of up to N layers, so without a cap a few MB of V1 folders, every layer tagged,
    asked for N^2 manifest slots and history items (1,500 deep: 124 s, 690 MB, 320 MB
    written)."""
    monkeypatch.setattr(docker_v1, "V1_MAX_DEPTH", 2)
    layers, repos = two_images()  # app:1 is 3 layers deep, tool:2 is 2
    src = write(tmp_path, v1_save(layers, repos))
    out = tmp_path / "o"
    argv = ("from-docker-save", "-" if stream else src, "-o", out)
    r = run_cli(*argv, stdin=src.read_bytes() if stream else None)
    assert r.code == 4, r.stderr
    assert f"parent chain of {E1} is more than 2 layers deep" in r.stderr
    assert not out.exists()
    monkeypatch.setattr(docker_v1, "V1_MAX_DEPTH", 3)
    r = run_cli(*argv, stdin=src.read_bytes() if stream else None)
    assert r.code == 0, r.stderr


def test_failed_import_leaves_an_existing_layout_as_it_was(tmp_path: Path) -> None:
    layers, repos = two_images()
    out = tmp_path / "oci"
    import_docker_save(write(tmp_path, v1_save(layers, repos), "good.tar"), out)
    before = (out / "index.json").read_bytes()
    r = run_cli("from-docker-save", write(tmp_path, _hostile("cycle")), "-o", out)
    assert r.code == 6
    assert (out / "index.json").read_bytes() == before
    assert_verified(out)


# ----------------------------------------------------------------------------- peers
def test_skopeo_and_podman_read_the_upgrade(tmp_path: Path, skopeo: str, podman: Podman) -> None:
    layers, repos = two_images()
    src = write(tmp_path, v1_save(layers, repos))
    out = tmp_path / "oci"
    import_docker_save(src, out)
    doc = json.loads(sh(skopeo, "inspect", f"oci:{out}:app:1").stdout)
    assert doc["Architecture"] == "amd64" and len(doc["Layers"]) == 3
    config = json.loads(sh(skopeo, "inspect", "--config", f"oci:{out}:tool:2").stdout)
    assert config["config"]["Cmd"] == ["sh"]
    podman("pull", "-q", f"oci:{out}:app:1")
    exported = tmp_path / "app.tar"
    assert run_cli("to-docker-save", f"{out}:app:1", f"{out}:tool:2", "-o", exported).code == 0
    podman("load", "-q", "-i", exported)
    names = podman("images", "--format", "{{.Repository}}:{{.Tag}}")
    assert "localhost/app:1" in names or "docker.io/library/app:1" in names
    assert podman.inspect("tool:2")["Config"]["Cmd"] == ["sh"]
