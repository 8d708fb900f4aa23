"""The bad-input table: every command against every kind of broken layout and tarball.

Each run must end with exit 0 (when the command has no reason to read the broken part) or with
exactly one ``layouttool: error:`` line and a documented exit code (for a command that must
read the broken part: the one the table names), never a traceback or exit 70, never a hang (a
timer per run), and an error changes nothing in the layout (every file compared, ``.layouttool``
state aside). Runs are in-process (the real ``main`` with its error mapping) to keep the table
fast; the child-process contract is covered by the other reliability tests.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import random
import shutil
import signal
import tarfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import zstandard
from conftest import CliResult, run_cli
from killharness import (
    ImageSpec,
    docker_save_bytes,
    dumps,
    have,
    layer_tar,
    make_layout,
    random_image,
    snapshot,
    tar_bytes,
)

from layouttool import mediatypes as mt
from layouttool.model import JSON_CAP

TIMEOUT = 20


class Hang(BaseException):
    """Raised by the per-run timer (a BaseException, so no except-Exception can swallow it)."""


@contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Fail the test when the block runs longer than ``seconds``."""

    def on_alarm(signum: int, frame: object) -> None:
        raise Hang(f"no answer within {seconds}s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def run_bounded(*args: str | os.PathLike[str]) -> CliResult:
    """``run_cli`` under a deadline."""
    try:
        with deadline(TIMEOUT):
            return run_cli(*args)
    except Hang as exc:
        pytest.fail(f"layouttool {' '.join(map(str, args))}: hang: {exc}")


def check_contract(r: CliResult, expect: frozenset[int] | None, what: str, *,
                   report: bool = False) -> None:
    """exit 0 (only when ``expect`` is None) or one clean error line with an expected code.

    With ``report`` (``verify``) problems are the command's output: a layout it can open gives
    a report on stdout and exit 4/5 instead of an error line.
    """
    ctx = f"{what}: exit {r.code}, stdout={r.stdout[-300:]!r} stderr={r.stderr[-600:]!r}"
    assert "Traceback" not in r.stderr + r.stdout, ctx
    assert r.code != 70, ctx
    if expect is not None:
        assert r.code in expect, ctx
    if r.code == 0:
        return
    assert r.code in {2, 3, 4, 5, 6, 7}, ctx
    if report and not r.stderr.strip():
        assert r.code in {4, 5} and r.stdout.strip(), ctx
        return
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    errs = [ln for ln in lines if ln.startswith("layouttool: error:")]
    assert len(errs) == 1 and lines[-1] == errs[0], ctx


# ---------------------------------------------------------------------------- the layout
def _blob(root: Path, digest: str) -> Path:
    alg, hexd = digest.split(":")
    return root / "blobs" / alg / hexd


def _put(root: Path, data: bytes) -> dict[str, Any]:
    d = "sha256:" + hashlib.sha256(data).hexdigest()
    _blob(root, d).write_bytes(data)
    return {"digest": d, "size": len(data)}


def _index(root: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((root / "index.json").read_bytes())
    return doc


def _entry(root: Path) -> dict[str, Any]:
    e: dict[str, Any] = _index(root)["manifests"][0]
    return e


def _set_index(root: Path, doc: Any) -> None:
    (root / "index.json").write_bytes(dumps(doc))


def _set_entry(root: Path, **changes: Any) -> None:
    doc = _index(root)
    doc["manifests"][0].update(changes)
    _set_index(root, doc)


def _manifest(root: Path) -> dict[str, Any]:
    m: dict[str, Any] = json.loads(_blob(root, _entry(root)["digest"]).read_bytes())
    return m


def _set_manifest_bytes(root: Path, raw: bytes) -> None:
    """Store ``raw`` as the manifest (under its true digest) and point the entry at it."""
    _set_entry(root, **_put(root, raw))


def _set_manifest(root: Path, doc: Any) -> None:
    _set_manifest_bytes(root, dumps(doc))


def _set_config_bytes(root: Path, raw: bytes) -> None:
    m = _manifest(root)
    m["config"].update(_put(root, raw))
    _set_manifest(root, m)


def _set_layer_bytes(root: Path, raw: bytes, media_type: str | None = None) -> None:
    m = _manifest(root)
    m["layers"][0].update(_put(root, raw))
    if media_type:
        m["layers"][0]["mediaType"] = media_type
    _set_manifest(root, m)


def _flip(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x55
    path.write_bytes(bytes(data))


def _bad_tar_checksum() -> bytes:
    data = bytearray(layer_tar(random.Random(1), 1, 100))
    data[148:156] = b"0000000\0"  # header checksum field
    return bytes(data)


def _negative_size_tar() -> bytes:
    data = bytearray(layer_tar(random.Random(2), 1, 100))
    hdr = 512 if data[156:157] == b"x" else 0  # skip a PAX header of the directory entry
    data[hdr + 124 : hdr + 136] = b"-0000000001\0"
    return bytes(data)


def _nul_name_tar() -> bytes:
    data = bytearray(tar_bytes([("a\0b/../../x", b"data")]))
    return bytes(data)


def _cycle(root: Path) -> None:
    """Two nested indexes that name each other; one of the descriptors has a wrong digest
    (a true cycle is impossible by hash), so the file stored under it holds the other."""
    fake = "sha256:" + "ab" * 32
    b = dumps({"schemaVersion": 2, "mediaType": mt.MT_OCI_INDEX, "manifests": [
        {"mediaType": mt.MT_OCI_INDEX, "digest": fake, "size": 0}]})
    bd = _put(root, b)
    a = dumps({"schemaVersion": 2, "mediaType": mt.MT_OCI_INDEX, "manifests": [
        {"mediaType": mt.MT_OCI_INDEX, **bd}]})
    _blob(root, fake).write_bytes(a)
    # B's descriptor of A needs the right size, or a reader stops at the size check
    b = dumps({"schemaVersion": 2, "mediaType": mt.MT_OCI_INDEX, "manifests": [
        {"mediaType": mt.MT_OCI_INDEX, "digest": fake, "size": len(a)}]})
    bd = _put(root, b)
    a = dumps({"schemaVersion": 2, "mediaType": mt.MT_OCI_INDEX, "manifests": [
        {"mediaType": mt.MT_OCI_INDEX, **bd}]})
    # sizes of a and b are fixed now (same lengths), so A's file is consistent with B
    _blob(root, fake).write_bytes(a)
    _set_entry(root, mediaType=mt.MT_OCI_INDEX, digest=fake, size=len(a))


def _huge_json(n: int) -> bytes:
    return b'{"pad":"' + b"x" * n + b'"}'


@dataclass(frozen=True)
class Case:
    """One way to break a layout, at a level that decides which commands must notice."""

    level: str  # layout | index | manifest | config | layer
    codes: frozenset[int]
    mutate: Callable[[Path], None]


def _c(level: str, codes: set[int], fn: Callable[[Path], None]) -> Case:
    return Case(level, frozenset(codes), fn)


GZ_LAYER = gzip.compress(layer_tar(random.Random(3), 2, 4096), mtime=0)
ZST_LAYER = zstandard.ZstdCompressor().compress(layer_tar(random.Random(3), 2, 4096))

LAYOUT_CASES: dict[str, Case] = {
    "layout-missing": _c("layout", {3}, lambda r: shutil.rmtree(r)),
    # click refuses a file where a directory is wanted: a usage error
    "layout-is-file": _c("layout", {2, 4}, lambda r: (shutil.rmtree(r), r.write_bytes(b"x"))),
    "layout-empty-dir": _c("layout", {4}, lambda r: (shutil.rmtree(r), r.mkdir())),
    "oci-layout-bad-version": _c("layout", {4}, lambda r: (r / "oci-layout").write_bytes(
        b'{"imageLayoutVersion":"9.9.9"}')),
    "oci-layout-not-json": _c("layout", {4}, lambda r: (r / "oci-layout").write_bytes(b"\x00")),
    "index-missing": _c("index", {3, 4}, lambda r: (r / "index.json").unlink()),
    "index-empty": _c("index", {4}, lambda r: (r / "index.json").write_bytes(b"")),
    "index-not-json": _c("index", {4}, lambda r: (r / "index.json").write_bytes(b"{nope")),
    "index-random": _c("index", {4}, lambda r: (r / "index.json").write_bytes(
        random.Random(4).randbytes(300))),
    "index-array": _c("index", {4}, lambda r: _set_index(r, [])),
    "index-manifests-object": _c("index", {4}, lambda r: _set_index(
        r, {"schemaVersion": 2, "manifests": {}})),
    "index-entry-no-digest": _c("index", {4}, lambda r: _set_index(
        r, {"schemaVersion": 2, "manifests": [{"mediaType": mt.MT_OCI_MANIFEST, "size": 1}]})),
    "index-negative-size": _c("index", {4}, lambda r: _set_entry(r, size=-1)),
    "index-size-string": _c("index", {4}, lambda r: _set_entry(r, size="12")),
    "index-digest-traversal": _c("index", {4, 6}, lambda r: _set_entry(r,
                                                                      digest="sha256:../../x")),
    "index-digest-uppercase": _c("index", {4}, lambda r: _set_entry(
        r, digest=_entry(r)["digest"].upper().replace("SHA256", "sha256"))),
    "index-digest-short": _c("index", {4}, lambda r: _set_entry(
        r, digest=_entry(r)["digest"][:-2])),
    "index-digest-unknown-alg": _c("index", {4}, lambda r: _set_entry(
        r, digest="md5:" + "a" * 32)),
    "index-huge": _c("index", {4}, lambda r: (r / "index.json").write_bytes(
        _huge_json(JSON_CAP + 10))),
    # a descriptor whose media type disagrees with its document is a quirk, not a break: the
    # document says what it is (test_a_disagreeing_descriptor_is_read_with_a_warning)
    "index-mt-says-index": _c("quirk", {0}, lambda r: _set_entry(
        r, mediaType=mt.MT_OCI_INDEX)),
    "index-mt-unknown": _c("quirk", {0}, lambda r: _set_entry(
        r, mediaType="application/vnd.example.unknown+json")),
    "manifest-missing": _c("manifest", {3, 5}, lambda r: _blob(r, _entry(r)["digest"]).unlink()),
    "manifest-bytes-mismatch": _c("manifest", {5}, lambda r: _flip(_blob(r,
                                                                         _entry(r)["digest"]))),
    "manifest-size-mismatch": _c("manifest", {5}, lambda r: _set_entry(
        r, size=_entry(r)["size"] + 1)),
    "manifest-not-json": _c("manifest", {4}, lambda r: _set_manifest_bytes(r, b"\x89PNG\r\n")),
    "manifest-empty": _c("manifest", {4}, lambda r: _set_manifest_bytes(r, b"")),
    "manifest-layers-string": _c("manifest", {4}, lambda r: _set_manifest(
        r, {**_manifest(r), "layers": "x"})),
    "manifest-no-config": _c("manifest", {4}, lambda r: _set_manifest(
        r, {k: v for k, v in _manifest(r).items() if k != "config"})),
    "manifest-negative-layer-size": _c("manifest", {4}, lambda r: _set_manifest(
        r, {**_manifest(r), "layers": [{**_manifest(r)["layers"][0], "size": -5}]})),
    "manifest-bad-layer-digest": _c("manifest", {4, 6}, lambda r: _set_manifest(
        r, {**_manifest(r), "layers": [{**_manifest(r)["layers"][0],
                                        "digest": "sha256:../../../etc/passwd"}]})),
    "manifest-mt-is-index": _c("manifest", {4}, lambda r: _set_manifest(
        r, {**_manifest(r), "mediaType": mt.MT_OCI_INDEX})),
    "manifest-with-manifests": _c("manifest", {4}, lambda r: _set_manifest(
        r, {**_manifest(r), "manifests": []})),
    "manifest-huge": _c("manifest", {4}, lambda r: _set_manifest_bytes(
        r, _huge_json(JSON_CAP + 10))),
    "index-cycle": _c("manifest", {4, 5}, _cycle),
    "config-missing": _c("config", {3, 5}, lambda r: _blob(
        r, _manifest(r)["config"]["digest"]).unlink()),
    "config-bytes-mismatch": _c("config", {5}, lambda r: _flip(_blob(
        r, _manifest(r)["config"]["digest"]))),
    "config-not-json": _c("config", {4}, lambda r: _set_config_bytes(r, b"not json")),
    "config-wrong-shape": _c("config", {4}, lambda r: _set_config_bytes(
        r, dumps({"rootfs": "x", "os": 1}))),
    "config-huge": _c("config", {4}, lambda r: _set_config_bytes(r, _huge_json(JSON_CAP + 1))),
    "layer-missing": _c("layer", {3, 5}, lambda r: _blob(
        r, _manifest(r)["layers"][0]["digest"]).unlink()),
    # a flipped byte mid-stream may break the gzip stream (4) before EOF shows the digest (5)
    "layer-bytes-mismatch": _c("layer", {4, 5}, lambda r: _flip(_blob(
        r, _manifest(r)["layers"][0]["digest"]))),
    "layer-random": _c("stream", {4, 5}, lambda r: _set_layer_bytes(
        r, random.Random(5).randbytes(2000))),
    "layer-truncated-gzip": _c("stream", {4}, lambda r: _set_layer_bytes(
        r, GZ_LAYER[: len(GZ_LAYER) // 2])),
    "layer-truncated-zstd": _c("stream", {4}, lambda r: _set_layer_bytes(
        r, ZST_LAYER[: len(ZST_LAYER) // 2], mt.MT_OCI_LAYER_ZSTD)),
    "layer-gzip-labelled-zstd": _c("stream", {4, 5}, lambda r: _set_layer_bytes(
        r, GZ_LAYER, mt.MT_OCI_LAYER_ZSTD)),
    "layer-tar-bad-checksum": _c("stream", {4, 5}, lambda r: _set_layer_bytes(
        r, gzip.compress(_bad_tar_checksum(), mtime=0))),
    "layer-tar-negative-size": _c("stream", {4, 5}, lambda r: _set_layer_bytes(
        r, gzip.compress(_negative_size_tar(), mtime=0))),
    "layer-tar-nul-name": _c("stream", {4, 5, 6}, lambda r: _set_layer_bytes(
        r, gzip.compress(_nul_name_tar(), mtime=0))),
    "layer-unknown-mt": _c("stream", {4}, lambda r: _set_layer_bytes(
        r, GZ_LAYER, "application/vnd.example.weird-layer")),
}

#: which commands must notice a break at each level (others may succeed)
MUST = {
    "layout": {"ls", "inspect", "verify", "tag", "untag", "unpack", "convert", "export", "gc",
               "import"},
    "index": {"ls", "inspect", "verify", "tag", "untag", "unpack", "convert", "export", "gc",
              "import"},
    "manifest": {"inspect", "verify", "unpack", "convert", "export", "gc"},
    "image": {"inspect", "unpack", "export"},
    "quirk": {"ls", "inspect", "verify", "tag", "untag", "unpack", "convert", "export", "gc"},
    "config": {"inspect", "verify", "unpack", "convert", "export"},
    "layer": {"verify", "unpack"},
    # a layer blob that matches its digest but is not a valid stream: verify does not
    # decompress layers (documented), unpack must refuse
    "stream": {"unpack"},
}
#: commands that may legitimately change the layout when they succeed
WRITERS = {"tag", "untag", "convert", "gc", "import"}

COMMANDS: dict[str, tuple[str, Callable[[Path, Path, Path], list[str | Path]]]] = {
    "ls": ("ls", lambda L, t, s: ["ls", L]),
    "inspect": ("inspect", lambda L, t, s: ["inspect", f"{L}:a:1"]),
    "verify": ("verify", lambda L, t, s: ["verify", L]),
    "tag": ("tag", lambda L, t, s: ["tag", f"{L}:a:1", "b:2"]),
    "untag": ("untag", lambda L, t, s: ["untag", f"{L}:a:1"]),
    "unpack": ("unpack", lambda L, t, s: ["unpack", f"{L}:a:1", t / "rootfs"]),
    "convert": ("convert", lambda L, t, s: ["convert", f"{L}:a:1", "--compression", "zstd"]),
    "export": ("to-docker-save", lambda L, t, s: ["to-docker-save", f"{L}:a:1", "-o",
                                                  t / "out.tar"]),
    "gc": ("gc", lambda L, t, s: ["gc", L]),
    "import": ("from-docker-save", lambda L, t, s: ["from-docker-save", s, "-o", L]),
}


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A layout with image ``a:1`` (one gzip layer) and a good tarball to import."""
    root = tmp_path_factory.mktemp("bad")
    rng = random.Random(404)
    make_layout(root / "layout", [random_image(rng, ["a:1"], layers=1, files=2, size=2048)])
    good = root / "good.tar"
    good.write_bytes(docker_save_bytes([random_image(rng, ["imp:1"], layers=1, files=1)]))
    return {"layout": root / "layout", "good": good}


def _table() -> list[Any]:
    return [pytest.param(c, k, id=f"{c}-{k}") for k in LAYOUT_CASES for c in COMMANDS]


@pytest.mark.parametrize(("command", "case"), _table())
def test_broken_layout(base, tmp_path, command, case, request):
    name, argv = COMMANDS[command]
    if not have(name):
        pytest.skip(f"command {name} not available")
    spec = LAYOUT_CASES[case]
    L = tmp_path / "layout"
    shutil.copytree(base["layout"], L)
    spec.mutate(L)
    before = snapshot(L)
    outside = snapshot(tmp_path)
    r = run_bounded(*argv(L, tmp_path, base["good"]))
    must = command in MUST[spec.level]
    if command == "import" and case in ("layout-missing", "layout-empty-dir"):
        must = False  # -o creates the layout
    check_contract(r, spec.codes if must else None, f"{command} on {case}",
                   report=command == "verify")
    if r.code != 0 or command not in WRITERS:
        assert snapshot(L) == before, f"{command} on {case} changed the layout"
    if r.code != 0:
        # nothing outside the layout either (no partial export, no stray files)
        after = {k: v for k, v in snapshot(tmp_path).items() if not k.startswith("rootfs")}
        assert after == {k: v for k, v in outside.items() if not k.startswith("rootfs")}


@pytest.mark.parametrize("case", ["index-mt-says-index", "index-mt-unknown"])
def test_a_disagreeing_descriptor_is_read_with_a_warning(base, tmp_path, case):
    L = tmp_path / "layout"
    shutil.copytree(base["layout"], L)
    LAYOUT_CASES[case].mutate(L)
    digest = _entry(L)["digest"]
    r = run_bounded("verify", L)
    assert r.code == 0 and "[media-type-mismatch]" in r.stdout, r.stdout
    assert run_bounded("verify", "--strict", L).code == 4
    r = run_bounded("inspect", f"{L}:a:1")
    assert r.code == 0
    assert r.stderr.startswith(f"layouttool: warning: {digest}: its descriptor says ")
    assert len(r.stderr.splitlines()) == 1
    assert run_bounded("-q", "inspect", f"{L}:a:1").stderr == ""


# ---------------------------------------------------------------------------- tarballs
def _members(img: ImageSpec) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(docker_save_bytes([img]))) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()  # type: ignore[union-attr]
                if m.isfile()}


IMG = random_image(random.Random(77), ["t:1"], layers=1, files=2, size=4096)
GOOD = docker_save_bytes([IMG])


def _with(changes: dict[str, bytes | None]) -> bytes:
    m = _members(IMG)
    for k, v in changes.items():
        if v is None:
            m.pop(k, None)
        else:
            m[k] = v
    return tar_bytes(m.items())


def _manifest_json() -> list[dict[str, Any]]:
    doc: list[dict[str, Any]] = json.loads(_members(IMG)["manifest.json"])
    return doc


def _layer_name() -> str:
    return str(_manifest_json()[0]["Layers"][0])


def _cfg_name() -> str:
    return str(_manifest_json()[0]["Config"])


def _tar_header_edit(offset: int, value: bytes) -> bytes:
    data = bytearray(GOOD)
    data[offset : offset + len(value)] = value
    return bytes(data)


TARBALL_CASES: dict[str, tuple[set[int], Callable[[], bytes | None]]] = {
    "missing": ({3}, lambda: None),
    "empty": ({4}, lambda: b""),
    "random": ({4}, lambda: random.Random(6).randbytes(5000)),
    "truncated-tar": ({4}, lambda: GOOD[: len(GOOD) // 2]),
    "truncated-in-header": ({4}, lambda: GOOD[:700]),
    "truncated-gzip": ({4}, lambda: gzip.compress(GOOD, mtime=0)[:-100]),
    "truncated-zstd": ({4}, lambda: zstandard.ZstdCompressor().compress(GOOD)[:-50]),
    "gzip-garbage-after-magic": ({4}, lambda: b"\x1f\x8b\x08\x00" + b"\xff" * 100),
    "bad-header-checksum": ({4}, lambda: _tar_header_edit(148, b"0000000\0")),
    "negative-member-size": ({4}, lambda: _tar_header_edit(124, b"-0000000001\0")),
    "nul-in-name": ({4, 6}, lambda: _with({"a\0b": b"x", "manifest.json": dumps(
        [{**_manifest_json()[0], "Layers": ["a\0b"]}])})),
    "no-manifest-json": ({4}, lambda: _with({"manifest.json": None, "repositories": None})),
    "manifest-json-null": ({4}, lambda: _with({"manifest.json": b"null"})),
    "manifest-json-not-json": ({4}, lambda: _with({"manifest.json": b"[{"})),
    "manifest-json-object": ({4}, lambda: _with({"manifest.json": b"{}"})),
    "manifest-json-layers-int": ({4}, lambda: _with({"manifest.json": dumps(
        [{**_manifest_json()[0], "Layers": 3}])})),
    "manifest-json-huge": ({4}, lambda: _with({"manifest.json": b"[" + b" " * (JSON_CAP + 10)
                                                + b"]"})),
    "manifest-json-escape": ({6}, lambda: _with({"manifest.json": dumps(
        [{**_manifest_json()[0], "Layers": ["../../etc/passwd"]}])})),
    "manifest-json-absolute": ({6}, lambda: _with({"manifest.json": dumps(
        [{**_manifest_json()[0], "Config": "/etc/passwd"}])})),
    "layer-missing": ({3, 4}, lambda: _with({_layer_name(): None})),
    "config-missing": ({3, 4}, lambda: _with({_cfg_name(): None})),
    "config-not-json": ({4, 5}, lambda: _with({_cfg_name(): b"xx"})),
    "config-digest-mismatch": ({5}, lambda: _with({_cfg_name(): _members(IMG)[_cfg_name()]
                                                   + b" "})),
    "diff-id-mismatch": ({5}, lambda: _with({_layer_name(): layer_tar(random.Random(9), 1,
                                                                       10)})),
    "layer-truncated-gzip": ({4, 5}, lambda: _with({_layer_name(): gzip.compress(
        IMG.layers[0], mtime=0)[:-40]})),
    "layer-truncated-zstd": ({4, 5}, lambda: _with({_layer_name(): zstandard.ZstdCompressor()
                                                    .compress(IMG.layers[0])[:-40]})),
    "layer-random-bytes": ({4, 5}, lambda: _with({_layer_name(): random.Random(8).randbytes(
        3000)})),
}


@pytest.mark.parametrize("into", ["existing", "new"])
@pytest.mark.parametrize("case", sorted(TARBALL_CASES))
def test_broken_tarball(base, tmp_path, case, into):
    if not have("from-docker-save"):
        pytest.skip("command from-docker-save not available")
    codes, make = TARBALL_CASES[case]
    src = tmp_path / "in.tar"
    data = make()
    if data is not None:
        src.write_bytes(data)
    L = tmp_path / "layout"
    if into == "existing":
        shutil.copytree(base["layout"], L)
    before = snapshot(tmp_path)
    r = run_bounded("from-docker-save", src, "-o", L)
    check_contract(r, frozenset(codes), f"import {case}")
    assert r.code != 0
    after = snapshot(tmp_path)
    if into == "new" and after != before:
        # an import into a new layout may leave nothing, or an empty valid layout
        extra = set(after) - set(before)
        assert all(k.startswith("layout") for k in extra), extra
        assert json.loads((L / "index.json").read_bytes())["manifests"] == []
        assert not [k for k in extra if k.startswith("layout/blobs/sha256/")], extra
    else:
        assert after == before, f"import of {case} changed something"


# ---------------------------------------------------------------------------- bombs
GIB = 1 << 30
MAX_RSS_KIB = 200 << 10


@pytest.fixture(scope="module")
def zeros_gz() -> bytes:
    """One gzip member of 64 MiB of zeros (~65 KB); 16 of them are 1 GiB."""
    return gzip.compress(b"\0" * (64 << 20), compresslevel=9, mtime=0)


def _tar_header(name: str, size: int) -> bytes:
    ti = tarfile.TarInfo(name)
    ti.size = size
    ti.mtime = 1_600_000_000
    return ti.tobuf(tarfile.USTAR_FORMAT)


def _gzip_bomb_tar(zeros_gz: bytes, prefix: bytes, suffix: bytes) -> bytes:
    """gzip members: ``prefix`` + 1 GiB of zeros + ``suffix`` (the whole never in memory)."""
    return (gzip.compress(prefix, mtime=0) + zeros_gz * (GIB // (64 << 20))
            + gzip.compress(suffix, mtime=0))


def _zstd_zeros(n: int) -> bytes:
    c = zstandard.ZstdCompressor(level=3).compressobj()
    chunk = b"\0" * (1 << 22)
    parts = [c.compress(chunk) for _ in range(n // len(chunk))]
    return b"".join(parts) + c.flush()


def _bomb_layout(root: Path, layer: bytes, media_type: str) -> Path:
    L = root / "layout"
    make_layout(L, [random_image(random.Random(10), ["bomb:1"], layers=1, files=1)])
    _set_layer_bytes(L, layer, media_type)
    return L


@pytest.mark.parametrize("codec", ["gzip", "zstd"])
def test_layer_bomb_unpack_max_size(tmp_path, zeros_gz, codec):
    """A ~1 MB layer that expands to 1 GiB: ``unpack --max-size`` stops at the cap, exit 4,
    with bounded memory, and never writes past it."""
    if not have("unpack"):
        pytest.skip("command unpack not available")
    head = _tar_header("zeros.bin", GIB)
    tail = b"\0" * 1024
    if codec == "gzip":
        layer, mtype = _gzip_bomb_tar(zeros_gz, head, tail), mt.MT_OCI_LAYER_GZIP
    else:
        layer = zstandard.ZstdCompressor().compress(head) + _zstd_zeros(GIB) + \
            zstandard.ZstdCompressor().compress(tail)
        mtype = mt.MT_OCI_LAYER_ZSTD
    assert len(layer) < 2 << 20
    L = _bomb_layout(tmp_path, layer, mtype)
    before = snapshot(L)
    from killharness import assert_clean_error, run_wait4

    r = run_wait4(["unpack", f"{L}:bomb:1", tmp_path / "rootfs", "--max-size", str(8 << 20)],
                  timeout=60)
    print(f"{codec} layer bomb: {r.seconds:.2f}s, peak RSS {r.maxrss_kib} KiB")
    assert_clean_error(r, 4, f"{codec} bomb")
    assert r.maxrss_kib < MAX_RSS_KIB, f"peak RSS {r.maxrss_kib} KiB"
    assert snapshot(L) == before
    written = sum(p.stat().st_size for p in (tmp_path / "rootfs").rglob("*") if p.is_file())
    assert written <= 8 << 20


def test_tarball_bomb_import_max_size(tmp_path, zeros_gz):
    """A gzip'd docker save (~1 MB) whose layer.tar is 1 GiB: ``from-docker-save --max-size``
    stops cleanly (exit 4), bounded memory, the layout unchanged."""
    if not have("from-docker-save"):
        pytest.skip("command from-docker-save not available")
    cfg = dumps({"architecture": "amd64", "os": "linux",
                 "rootfs": {"type": "layers", "diff_ids": ["sha256:" + "0" * 64]}})
    cfg_name = hashlib.sha256(cfg).hexdigest() + ".json"
    manifest = dumps([{"Config": cfg_name, "RepoTags": ["bomb:1"], "Layers": ["l/layer.tar"]}])
    # the small members come first, then the 1 GiB layer (it must be streamed to find its end)
    prefix = io.BytesIO()
    for name, data in ((cfg_name, cfg), ("manifest.json", manifest)):
        prefix.write(_tar_header(name, len(data)))
        prefix.write(data + b"\0" * (-len(data) % 512))
    prefix.write(_tar_header("l/layer.tar", GIB))
    src = tmp_path / "bomb.tar.gz"
    src.write_bytes(_gzip_bomb_tar(zeros_gz, prefix.getvalue(), b"\0" * 1024))
    L = tmp_path / "layout"
    make_layout(L, [random_image(random.Random(11), ["keep:1"], layers=1)])
    before = snapshot(L)
    from killharness import assert_clean_error, run_wait4

    r = run_wait4(["from-docker-save", src, "-o", L, "--max-size", str(8 << 20)], timeout=60)
    print(f"tarball bomb: {r.seconds:.2f}s, peak RSS {r.maxrss_kib} KiB")
    assert_clean_error(r, 4, "tarball bomb")
    assert r.maxrss_kib < MAX_RSS_KIB, f"peak RSS {r.maxrss_kib} KiB"
    assert snapshot(L) == before
