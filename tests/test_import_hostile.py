"""from-docker-save on hostile and broken input: refused cleanly, layout untouched."""

from __future__ import annotations

import gzip
import io
import json
import os
from pathlib import Path
from typing import Any

import pytest
from conftest import run_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_import import L1, L2, docker_save, make_config, sha, tar_of, write

from layouttool.formats._tar import MemberIndex, normalize
from layouttool.ops.importer import import_docker_save
from layouttool.ops.verify import verify_layout

CFG = make_config([L1])
CFG_PATH = f"{sha(CFG)}.json"
GOOD = [{"name": CFG_PATH, "data": CFG}, {"name": "l1/layer.tar", "data": L1}]


def manifest(config: Any = CFG_PATH, layers: Any = None, tags: Any = None) -> bytes:
    """A one-image manifest.json."""
    return json.dumps(
        [
            {
                "Config": config,
                "RepoTags": ["evil:1"] if tags is None else tags,
                "Layers": ["l1/layer.tar"] if layers is None else layers,
            }
        ]
    ).encode()


def save(members: list[dict[str, Any]], man: bytes | None = None) -> bytes:
    """A tar of ``members`` plus manifest.json."""
    return tar_of([*members, {"name": "manifest.json", "data": man or manifest()}])


def snapshot(root: Path) -> dict[str, bytes | None]:
    """Every file under ``root`` with its content (directories as None), ignoring our lock
    files: what a failed import must leave unchanged."""
    out: dict[str, bytes | None] = {}
    for dirpath, dirs, files in os.walk(root):
        for d in dirs:
            out[os.path.relpath(os.path.join(dirpath, d), root)] = None
        for f in files:
            p = os.path.join(dirpath, f)
            rel = os.path.relpath(p, root)
            if rel.startswith(".layouttool/") and rel.endswith("lock"):
                continue
            out[rel] = Path(p).read_bytes()
    return {k: v for k, v in out.items() if k not in (".layouttool", ".layouttool/tmp")}


CASES: list[tuple[str, list[dict[str, Any]], bytes, int, str]] = [
    ("config ../", GOOD, manifest(config="../etc/passwd"), 6, "outside the archive"),
    ("config absolute", GOOD, manifest(config="/etc/passwd"), 6, "outside the archive"),
    ("layer ../ escape", GOOD, manifest(layers=["a/../../l1/layer.tar"]), 6, "outside the archive"),
    ("layer absolute", GOOD, manifest(layers=["/l1/layer.tar"]), 6, "outside the archive"),
    (
        "symlink out",
        [*GOOD[:1], {"name": "l1/layer.tar", "symlink": "../../etc/passwd"}],
        manifest(),
        6,
        "points outside the archive",
    ),
    (
        "absolute symlink",
        [*GOOD[:1], {"name": "l1/layer.tar", "symlink": "/etc/passwd"}],
        manifest(),
        6,
        "absolute path",
    ),
    (
        "symlink cycle",
        [
            *GOOD[:1],
            {"name": "l1/layer.tar", "symlink": "../l2/layer.tar"},
            {"name": "l2/layer.tar", "symlink": "../l1/layer.tar"},
        ],
        manifest(),
        6,
        "link cycle",
    ),
    (
        "self symlink",
        [*GOOD[:1], {"name": "l1/layer.tar", "symlink": "layer.tar"}],
        manifest(),
        6,
        "link cycle",
    ),
    (
        "directory symlink out",
        [*GOOD[:1], {"name": "l1", "symlink": ".."}, {"name": "x/layer.tar", "data": L1}],
        manifest(layers=["l1/l1/l1/x/layer.tar"]),
        6,
        "outside the archive",
    ),
    (
        "hardlink out",
        [*GOOD[:1], {"name": "l1/layer.tar", "hardlink": "../etc/passwd"}],
        manifest(),
        6,
        "outside the archive",
    ),
    (
        "hardlink cycle",
        [
            *GOOD[:1],
            {"name": "l1/layer.tar", "hardlink": "l2/layer.tar"},
            {"name": "l2/layer.tar", "hardlink": "l1/layer.tar"},
        ],
        manifest(),
        6,
        "link cycle",
    ),
    (
        "layer is a directory",
        [*GOOD[:1], {"name": "l1/layer.tar", "type": "dir"}],
        manifest(),
        4,
        "not a regular file",
    ),
    (
        "layer is a fifo",
        [*GOOD[:1], {"name": "l1/layer.tar", "type": b"6"}],
        manifest(),
        4,
        "not a regular file",
    ),
    (
        "layer is a char device",
        [*GOOD[:1], {"name": "l1/layer.tar", "type": b"3"}],
        manifest(),
        4,
        "not a regular file",
    ),
    ("layer missing", GOOD[:1], manifest(), 3, "not in the archive"),
    ("config missing", GOOD[1:], manifest(), 3, "not in the archive"),
    (
        "member stored with absolute name",
        [*GOOD[:1], {"name": "/l1/layer.tar", "data": L1}],
        manifest(),
        6,
        "absolute or escaping name",
    ),
    ("manifest not a list", GOOD, b'{"Config": "x"}', 4, "must be a list"),
    ("manifest empty", GOOD, b"[]", 4, "lists no image"),
    ("manifest not json", GOOD, b"[{", 4, "not valid JSON"),
    ("Config not a string", GOOD, manifest(config=7), 4, "non-empty path"),
    ("Layers not a list", GOOD, manifest(layers="l1/layer.tar"), 4, "must be a list"),
    ("RepoTag with digest", GOOD, manifest(tags=["a@sha256:" + "0" * 64]), 4, "holds a digest"),
    ("RepoTag invalid", GOOD, manifest(tags=["UPPER/Case:1"]), 4, "not a valid NAME:TAG"),
    (
        "config not json",
        [{"name": CFG_PATH, "data": b"\x00garbage"}, GOOD[1]],
        manifest(),
        5,
        "hashes to",
    ),
    (
        "config name lies",
        [{"name": "0" * 64 + ".json", "data": CFG}, GOOD[1]],
        manifest(config="0" * 64 + ".json"),
        5,
        "not the digest its name claims",
    ),
    (
        "diff_id mismatch",
        [GOOD[0], {"name": "l1/layer.tar", "data": L2}],
        manifest(),
        5,
        "but the config's diff_id is",
    ),
    (
        "layer count mismatch",
        GOOD,
        manifest(layers=["l1/layer.tar", "l1/layer.tar"]),
        5,
        "lists 2 layers but config",
    ),
    (
        "xz layer",
        [GOOD[0], {"name": "l1/layer.tar", "data": __import__("lzma").compress(L1)}],
        manifest(),
        4,
        "xz-compressed layers are not supported",
    ),
    (
        "corrupt gzip layer",
        [GOOD[0], {"name": "l1/layer.tar", "data": gzip.compress(L1)[:40] + b"\x00" * 64}],
        manifest(),
        4,
        "decompress gzip",
    ),
]


@pytest.mark.parametrize("streamed", [False, True], ids=["file", "stream"])
@pytest.mark.parametrize(
    ("label", "members", "man", "code", "message"), CASES, ids=[c[0] for c in CASES]
)
def test_hostile_table(
    tmp_path: Path,
    label: str,
    members: list[dict[str, Any]],
    man: bytes,
    code: int,
    message: str,
    streamed: bool,
) -> None:
    # the target layout already holds an image: it must come out byte-identical
    out = tmp_path / "oci"
    import_docker_save(io.BytesIO(docker_save([{"tags": ["keep:1"], "layers": [L2]}])), out)
    before = snapshot(out)
    data = save(members, man)
    if streamed:
        r = run_cli("from-docker-save", "-", "-o", out, stdin=data)
    else:
        r = run_cli("from-docker-save", write(tmp_path, data), "-o", out)
    assert r.code == code, r.stderr
    assert message in r.stderr
    assert r.stderr.startswith("layouttool: error: ") and r.stderr.count("\n") == 1
    assert snapshot(out) == before
    assert verify_layout(out).ok


def test_failure_into_new_layout_leaves_nothing(tmp_path: Path) -> None:
    data = save([GOOD[0], {"name": "l1/layer.tar", "data": L2}])
    for i, src in enumerate([io.BytesIO(data), write(tmp_path, data)]):
        out = tmp_path / f"new{i}"
        r = run_cli(
            "from-docker-save", "-" if i == 0 else src, "-o", out, stdin=data if i == 0 else None
        )
        assert r.code == 5
        assert not out.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run_cli("from-docker-save", "-", "-o", empty, stdin=data).code == 5
    assert list(empty.iterdir()) == []


def test_unreferenced_members_are_never_stored(tmp_path: Path) -> None:
    junk = b"\x1f\x8b not really gzip" + b"\x00" * 600
    data = save(
        [
            *GOOD,
            {"name": "junk/layer.tar", "data": junk},
            {"name": "other/layer.tar", "data": L2},
            {"name": "dev", "type": b"3"},
            {"name": "loop", "symlink": "loop"},
        ]
    )
    for i, src in enumerate([io.BytesIO(data), write(tmp_path, data)]):
        out = tmp_path / f"oci{i}"
        import_docker_save(src, out)
        blobs = {p.name for p in (out / "blobs" / "sha256").iterdir()}
        assert len(blobs) == 3  # layer, config, manifest: nothing of L2 or the junk
        assert sha(L2) not in blobs
        assert verify_layout(out).ok


def test_json_over_cap(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import layouttool.formats.docker_archive as da
    import layouttool.model as model
    import layouttool.ops.importer.archive as imp

    monkeypatch.setattr(model, "JSON_CAP", 1000)
    monkeypatch.setattr(imp, "JSON_CAP", 1000)
    assert da.META_MEMBERS  # the cap applies to manifest.json by name
    big_manifest = manifest() + b" " * 2000
    for streamed in (False, True):
        data = save(GOOD, big_manifest)
        src = "-" if streamed else write(tmp_path, data)
        r = run_cli(
            "from-docker-save", src, "-o", tmp_path / "oci", stdin=data if streamed else None
        )
        assert r.code == 4, r.stderr
        assert "cap" in r.stderr
        assert not (tmp_path / "oci").exists()
    big_cfg = make_config([L1], pad="x" * 2000)
    data = save(
        [{"name": f"{sha(big_cfg)}.json", "data": big_cfg}, GOOD[1]],
        manifest(config=f"{sha(big_cfg)}.json"),
    )
    for src in ("-", write(tmp_path, data)):
        r = run_cli("from-docker-save", src, "-o", tmp_path / "oci", stdin=data)
        assert r.code == 4 and "cap" in r.stderr


@pytest.mark.parametrize("cut", [100, 1000, 5000, -10])
def test_truncated_tarball(tmp_path: Path, cut: int) -> None:
    data = save(GOOD)
    # -10: inside manifest.json, the last member (the zero padding after it is not content)
    short = data[:cut] if cut > 0 else data.rstrip(b"\0")[:cut]
    for src in ("-", write(tmp_path, short)):
        r = run_cli("from-docker-save", src, "-o", tmp_path / "oci", stdin=short)
        assert r.code in (3, 4), r.stderr  # corrupt, or cut before manifest.json
        assert "Traceback" not in r.stderr and r.stderr.count("\n") == 1
        assert not (tmp_path / "oci").exists()


SAMPLE = Path(__file__).resolve().parents[1] / "testdata" / "sample-docker-save.tar"


def test_a_header_cut_or_corrupt_after_the_first_layer_is_refused(tmp_path: Path) -> None:
    # Python's tarfile takes either for the end of the archive: the sample cut inside the
    # header after its first layer imported as a V1 save of that layer alone, exit 0
    import tarfile

    data = SAMPLE.read_bytes()
    with tarfile.open(SAMPLE) as tf:
        first_layer = next(m for m in tf.getmembers() if m.name.endswith("layer.tar"))
    after = first_layer.offset_data + first_layer.size  # the next header starts here
    cut = data[:after + 152]
    bad = bytearray(data)
    bad[after + 100:after + 108] = b"XXXXXXXX"  # the mode field: the checksum fails
    for short, why in ((cut, "truncated header"), (bytes(bad), "bad checksum")):
        for src in ("-", write(tmp_path, short)):
            r = run_cli("from-docker-save", src, "-o", tmp_path / "oci", stdin=short)
            assert r.code == 4, r.stderr
            assert f"({why} at byte {after})" in r.stderr and r.stderr.count("\n") == 1
            assert not (tmp_path / "oci").exists()
    # the end-of-archive block cut short: every member is whole, so it still imports
    end_block = -(-len(data.rstrip(b"\0")) // 512) * 512
    whole = data[:end_block + 212]
    for i, src in enumerate(("-", write(tmp_path, whole))):
        r = run_cli("from-docker-save", src, "-o", tmp_path / f"ok{i}", stdin=whole)
        assert r.code == 0, r.stderr


def test_truncated_compressed_tarball(tmp_path: Path) -> None:
    data = gzip.compress(save(GOOD))[:-100]
    r = run_cli("from-docker-save", "-", "-o", tmp_path / "oci", stdin=data)
    assert r.code == 4 and "gzip" in r.stderr
    assert not (tmp_path / "oci").exists()


def test_not_a_tar(tmp_path: Path) -> None:
    for data in (b"", b"hello world" * 100, b"\x00" * 4096):
        for src in ("-", write(tmp_path, data)):
            r = run_cli("from-docker-save", src, "-o", tmp_path / "oci", stdin=data)
            assert r.code == 4, (data[:10], r.stderr)
            assert not (tmp_path / "oci").exists()


def test_oci_archive_blob_corrupt(tmp_path: Path) -> None:
    from layouttool import mediatypes as mt

    cfg = make_config([L1])
    good_layer = gzip.compress(L1, mtime=0)
    man = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": mt.MT_OCI_MANIFEST,
            "config": {
                "mediaType": mt.MT_OCI_CONFIG,
                "digest": f"sha256:{sha(cfg)}",
                "size": len(cfg),
            },
            "layers": [
                {
                    "mediaType": mt.MT_OCI_LAYER_GZIP,
                    "digest": f"sha256:{sha(good_layer)}",
                    "size": len(good_layer),
                }
            ],
        }
    ).encode()
    index = json.dumps(
        {
            "schemaVersion": 2,
            "manifests": [
                {
                    "mediaType": mt.MT_OCI_MANIFEST,
                    "digest": f"sha256:{sha(man)}",
                    "size": len(man),
                    "annotations": {mt.ANNOT_REF_NAME: "v1"},
                }
            ],
        }
    ).encode()
    bad_layer = bytearray(good_layer)
    bad_layer[20] ^= 0xFF
    for layer_bytes, code in ((bytes(good_layer), 0), (bytes(bad_layer), 5)):
        data = tar_of(
            [
                {"name": "oci-layout", "data": b'{"imageLayoutVersion":"1.0.0"}'},
                {"name": "index.json", "data": index},
                {"name": f"blobs/sha256/{sha(man)}", "data": man},
                {"name": f"blobs/sha256/{sha(cfg)}", "data": cfg},
                {"name": f"blobs/sha256/{sha(good_layer)}", "data": layer_bytes},
            ]
        )
        for src in ("-", write(tmp_path, data)):
            out = tmp_path / f"oci{code}{src == '-'}"
            r = run_cli("from-docker-save", src, "-o", out, stdin=data)
            assert r.code == code, r.stderr
            if code:
                assert not out.exists()
                # into an existing layout: nothing changes, no temp file is left
                keep = tmp_path / f"keep{src == '-'}"
                import_docker_save(io.BytesIO(save(GOOD)), keep)
                before = snapshot(keep)
                assert run_cli("from-docker-save", src, "-o", keep, stdin=data).code == code
                assert snapshot(keep) == before
            else:
                assert verify_layout(out).ok
                entry = json.loads((out / "index.json").read_bytes())["manifests"][0]
                assert entry["annotations"] == {mt.ANNOT_REF_NAME: "v1"}


# ----------------------------------------------------------------------------- properties
_names = st.lists(st.sampled_from(["a", "b", "..", ".", "", "layer.tar"]), min_size=1, max_size=6)


@settings(max_examples=200, deadline=None)
@given(_names)
def test_normalize_never_escapes(parts: list[str]) -> None:
    name = "/".join(parts)
    norm = normalize(name)
    if norm is None:
        return
    assert not norm.startswith("/") and ".." not in norm.split("/")
    assert "" not in norm.split("/") or norm == ""
    assert normalize(norm) == norm


_link_members = st.lists(
    st.tuples(
        st.sampled_from(["a", "b", "c", "a/x", "b/x"]),
        st.sampled_from(["file", "symlink", "hardlink"]),
        st.sampled_from(["a", "b", "c", "../a", "a/x", "../../c", "x", "/a", "."]),
    ),
    min_size=1,
    max_size=6,
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_link_members, st.sampled_from(["a", "b", "c", "a/x", "b/x", "c/x"]))
def test_resolve_terminates_inside(members: list[tuple[str, str, str]], start: str) -> None:
    """Whatever the links, resolution ends at a regular file of the archive or raises one of
    our errors: it never loops and never names a path outside."""
    import tarfile

    from layouttool.errors import LayoutToolError

    idx = MemberIndex()
    for name, kind, target in members:
        ti = tarfile.TarInfo(name)
        if kind == "symlink":
            ti.type, ti.linkname = tarfile.SYMTYPE, target
        elif kind == "hardlink":
            ti.type, ti.linkname = tarfile.LNKTYPE, target
        idx.add_tarinfo(ti, seekable=False)
    try:
        m = idx.resolve(start, "t")
    except LayoutToolError:
        return
    assert m.kind == "file" and m.name in idx.members
