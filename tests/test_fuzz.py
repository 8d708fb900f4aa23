"""Property-based fuzzing of import (tarballs), layouts (index.json, manifests) and layers
(unpack), plus the regression corpus in ``tests/regressions/``.

The contract for every input: exit 0 or exactly one ``layouttool: error:`` line with one of our
codes (3-7), no traceback, no exit 70, an answer within the deadline, nothing outside the
target touched (a canary tree beside it), and on failure the layout unchanged. Examples per
test: ``LAYOUTTOOL_FUZZ_EXAMPLES`` (default small, for CI). An input that breaks the contract
is saved to ``tests/regressions/`` (data + a one-line note) before the test fails.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import random
import shutil
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import pytest
from conftest import CliResult
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from killharness import (
    docker_save_bytes,
    dumps,
    have,
    layer_tar,
    make_layout,
    random_image,
    snapshot,
)
from test_bad_input import check_contract, run_bounded

from layouttool.ops.verify import verify_layout

EXAMPLES = int(os.environ.get("LAYOUTTOOL_FUZZ_EXAMPLES", "40"))
REGRESSIONS = Path(__file__).parent / "regressions"
SETTINGS = settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.function_scoped_fixture])

IMG = random_image(random.Random(2024), ["fz:1"], layers=2, files=2, size=700)
GOOD_TAR = docker_save_bytes([IMG])
GOOD_LAYER = layer_tar(random.Random(5), 3, 300)
CODES = frozenset({0, 3, 4, 5, 6, 7})


def save_regression(kind: str, data: bytes, note: str) -> Path:
    """Keep an input that broke us: ``<kind>-<sha12>.bin`` and a ``.note`` beside it."""
    REGRESSIONS.mkdir(exist_ok=True)
    name = f"{kind}-{hashlib.sha256(data).hexdigest()[:12]}"
    (REGRESSIONS / f"{name}.bin").write_bytes(data)
    (REGRESSIONS / f"{name}.note").write_text(" ".join(note.split())[:300] + "\n")
    return REGRESSIONS / f"{name}.bin"


# ---------------------------------------------------------------------------- mutations
def tar_header_offsets(data: bytes) -> list[int]:
    """Offsets of every tar header block in ``data`` (a valid tar)."""
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return [m.offset for m in tar.getmembers()]


#: (offset, length) of the ustar header fields worth breaking
FIELDS = [(0, 100), (100, 8), (108, 8), (116, 8), (124, 12), (136, 12), (148, 8), (156, 1),
          (157, 100), (257, 6), (345, 155)]

mutation = st.one_of(
    st.tuples(st.just("flip"), st.floats(0, 1), st.integers(1, 255)),
    st.tuples(st.just("truncate"), st.floats(0, 1), st.just(0)),
    st.tuples(st.just("field"), st.integers(0, 1000), st.sampled_from(
        [b"", b"\0", b"-1", b"77777777777", b"../../x", b"/etc/passwd", b"\xff" * 12, b"0",
         b"x", b"L", b"K", b"2", b"1", b"5", b"g", b"99999999999999"])),
)


def mutate(data: bytes, ops: list[tuple[str, Any, Any]], headers: list[int]) -> bytes:
    """Apply byte flips, a truncation, and header field overwrites."""
    buf = bytearray(data)
    for op, a, b in ops:
        if not buf:
            break
        if op == "flip":
            buf[int(a * (len(buf) - 1))] ^= b
        elif op == "truncate":
            del buf[int(a * len(buf)) :]
        elif headers:
            hdr = headers[a % len(headers)]
            off, length = FIELDS[a % len(FIELDS)]
            val = (b + b"\0" * length)[:length]
            if hdr + off + length <= len(buf):
                buf[hdr + off : hdr + off + length] = val
    return bytes(buf)


def _contract(r: CliResult, what: str, kind: str, data: bytes, *, report: bool = False) -> None:
    try:
        check_contract(r, CODES, what, report=report)
    except AssertionError as exc:
        save_regression(kind, data, f"{what}: {exc}")
        raise


# ---------------------------------------------------------------------------- tarballs
@SETTINGS
@given(ops=st.lists(mutation, min_size=1, max_size=4))
def test_fuzz_import_tarball(ops):
    if not have("from-docker-save"):
        pytest.skip("command from-docker-save not available")
    data = mutate(GOOD_TAR, ops, tar_header_offsets(GOOD_TAR))
    with tempfile.TemporaryDirectory() as t:
        root = Path(t)
        (root / "canary").mkdir()
        (root / "canary" / "passwd").write_text("canary")
        src = root / "in.tar"
        src.write_bytes(data)
        make_layout(root / "layout", [random_image(random.Random(1), ["keep:1"], layers=1)])
        before = snapshot(root)
        r = run_bounded("from-docker-save", src, "-o", root / "layout")
        _contract(r, f"import mutated tarball {ops}", "tarball", data)
        after = snapshot(root)
        if r.code != 0:
            assert after == before, "a failed import changed something"
        else:
            assert {k for k in after if not k.startswith("layout")} == {
                k for k in before if not k.startswith("layout")}
            assert verify_layout(root / "layout").ok


# ---------------------------------------------------------------------------- layouts
@pytest.fixture(scope="module")
def fuzz_layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fz") / "layout"
    make_layout(root, [IMG, random_image(random.Random(3), ["other:1"], layers=1)],
                docker_every=2)
    return root


json_edit = st.one_of(
    st.tuples(st.just("bytes"), st.lists(st.tuples(st.just("flip"), st.floats(0, 1),
                                                   st.integers(1, 255)), min_size=1,
                                         max_size=3)),
    st.tuples(st.just("value"), st.tuples(
        st.sampled_from(["manifests", "mediaType", "digest", "size", "schemaVersion",
                         "config", "layers", "annotations", "platform", "subject"]),
        st.sampled_from([None, -1, 0, 2**63, "", "x", [], {}, [1], {"a": 1},
                         "sha256:" + "0" * 64, "application/vnd.oci.image.index.v1+json"]))),
)


def _edit_json(raw: bytes, edit: tuple[str, Any]) -> bytes:
    kind, arg = edit
    if kind == "bytes":
        return mutate(raw, arg, [])
    key, value = arg
    doc = json.loads(raw)

    def walk(o: Any) -> None:
        if isinstance(o, dict):
            if key in o:
                o[key] = value
                return
            for v in list(o.values()):
                walk(v)
        elif isinstance(o, list) and o:
            walk(o[0])

    walk(doc)
    return dumps(doc)


@SETTINGS
@given(target=st.sampled_from(["index", "manifest"]), edit=json_edit,
       command=st.sampled_from(["verify", "inspect", "unpack", "ls"]))
def test_fuzz_layout_documents(fuzz_layout, target, edit, command):
    with tempfile.TemporaryDirectory() as t:
        root = Path(t)
        L = root / "layout"
        shutil.copytree(fuzz_layout, L)
        (root / "canary").mkdir()
        idx = json.loads((L / "index.json").read_bytes())
        if target == "index":
            data = _edit_json((L / "index.json").read_bytes(), edit)
            (L / "index.json").write_bytes(data)
        else:
            entry = idx["manifests"][0]
            blob = L / "blobs" / "sha256" / entry["digest"].split(":")[1]
            data = _edit_json(blob.read_bytes(), edit)
            d = hashlib.sha256(data).hexdigest()
            (L / "blobs" / "sha256" / d).write_bytes(data)
            entry.update(digest="sha256:" + d, size=len(data))
            (L / "index.json").write_bytes(dumps(idx))
        before = snapshot(root)
        args: list[str | Path] = {
            "verify": ["verify", L], "inspect": ["inspect", f"{L}:fz:1"],
            "unpack": ["unpack", f"{L}:fz:1", root / "rootfs"], "ls": ["ls", L]}[command]
        r = run_bounded(*args)
        _contract(r, f"{command} after {target} edit {edit}", f"{target}-json", data,
                  report=command == "verify")
        after = {k: v for k, v in snapshot(root).items() if not k.startswith("rootfs")}
        assert after == before


# ---------------------------------------------------------------------------- layers
@SETTINGS
@given(ops=st.lists(mutation, min_size=1, max_size=4))
def test_fuzz_layer_unpack(fuzz_layout, ops):
    """A mutated layer tar (its diff_id made to match, so the tar parser is what is tested)."""
    tar = mutate(GOOD_LAYER, ops, tar_header_offsets(GOOD_LAYER))
    with tempfile.TemporaryDirectory() as t:
        root = Path(t)
        (root / "canary").mkdir()
        (root / "canary" / "x").write_text("canary")
        L = root / "layout"
        img = random_image(random.Random(9), ["lz:1"], layers=1)
        img.layers = [tar]
        make_layout(L, [img])
        before = snapshot(root)
        r = run_bounded("unpack", f"{L}:lz:1", root / "rootfs")
        _contract(r, f"unpack mutated layer {ops}", "layer", tar)
        after = {k: v for k, v in snapshot(root).items() if not k.startswith("rootfs")}
        assert after == before, "unpack touched something outside DEST"


# ---------------------------------------------------------------------------- corpus
def _corpus() -> list[Path]:
    return sorted(REGRESSIONS.glob("*.bin")) if REGRESSIONS.is_dir() else []


@pytest.mark.parametrize("path", _corpus(), ids=lambda p: p.stem)
def test_regression(path, tmp_path):
    """Every input that ever broke us still gets a clean answer."""
    note = path.with_suffix(".note").read_text().strip()
    assert note, f"{path.name} needs a one-line note"
    data = path.read_bytes()
    kind = path.stem.rsplit("-", 1)[0]
    L = tmp_path / "layout"
    if kind == "tarball":
        if not have("from-docker-save"):
            pytest.skip("command from-docker-save not available")
        src = tmp_path / "in"
        src.write_bytes(data)
        r = run_bounded("from-docker-save", src, "-o", L)
    elif kind == "layer":
        img = random_image(random.Random(9), ["lz:1"], layers=1)
        img.layers = [data]
        make_layout(L, [img])
        r = run_bounded("unpack", f"{L}:lz:1", tmp_path / "rootfs")
    elif kind == "gzlayer":
        # a stored gzip layer blob, as it is (the bytes are the compressed stream)
        make_layout(L, [random_image(random.Random(9), ["lz:1"], layers=1)])
        from killharness import index_entries

        man_d = index_entries(L)[0]["digest"].split(":")[1]
        man = json.loads((L / "blobs" / "sha256" / man_d).read_bytes())
        d = hashlib.sha256(data).hexdigest()
        (L / "blobs" / "sha256" / d).write_bytes(data)
        man["layers"][0].update(digest="sha256:" + d, size=len(data))
        raw = dumps(man)
        nd = hashlib.sha256(raw).hexdigest()
        (L / "blobs" / "sha256" / nd).write_bytes(raw)
        idx = json.loads((L / "index.json").read_bytes())
        idx["manifests"][0].update(digest="sha256:" + nd, size=len(raw))
        (L / "index.json").write_bytes(dumps(idx))
        r = run_bounded("unpack", f"{L}:lz:1", tmp_path / "rootfs")
    else:
        pytest.skip(f"{path.name}: kind {kind!r} has no runner ({note})")
    check_contract(r, CODES, f"{path.name} ({note})")
    assert r.code != 0 or kind != "gzlayer"


def test_corpus_seeds_exist():
    """The corpus is not empty (a silently empty glob would test nothing)."""
    assert _corpus(), "tests/regressions/ has no inputs"


def _seed_gzip() -> bytes:  # pragma: no cover - how tests/regressions/gzlayer-* was made
    good = gzip.compress(GOOD_LAYER, mtime=0)
    return good[:10] + b"\xff" * 40 + good[50:]
