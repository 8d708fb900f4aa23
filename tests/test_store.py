"""The content-addressable store: writes, verified reads, index.json, locks, temp files.

Also home of :func:`make_image`, the small image builder the foundation tests share (it writes
through the store's public API only, the way an import would).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from layouttool import mediatypes as mt
from layouttool.codec import Compression, new_encoder
from layouttool.digest import Digest
from layouttool.errors import (
    ConflictError,
    IntegrityError,
    InvalidInputError,
    NotFoundError,
    UnsafeInputError,
)
from layouttool.model import JSON_CAP, Descriptor, parse_index
from layouttool.ops.verify import verify_layout
from layouttool.store import Layout, is_layout

REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- builders
def tar_of(files: dict[str, bytes]) -> bytes:
    """An uncompressed layer tar holding ``files``."""
    import io
    import tarfile

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = 1_600_000_000
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def make_image(
    layout: Layout,
    ref: str | None = None,
    *,
    layers: Sequence[bytes] = (b"hello",),
    compression: Compression = Compression.GZIP,
    docker: bool = False,
    arch: str = "amd64",
    annotations: dict[str, str] | None = None,
    add_to_index: bool = True,
    diff_ids: Sequence[str] | None = None,
) -> Descriptor:
    """Write a small image (one tar per entry of ``layers``) and return its manifest descriptor.

    Each ``layers`` item is the content of one file, ``f<i>.txt``, in its own layer. The entry
    is appended to index.json (with ``ref`` as ref.name) unless ``add_to_index`` is false.
    """
    layer_descs = []
    ids = []
    for i, content in enumerate(layers):
        plain = tar_of({f"f{i}.txt": content})
        ids.append(str(Digest.of_bytes(plain)))
        enc = new_encoder(compression)
        blob = enc.compress(plain) + enc.flush()
        info = layout.put_bytes(blob)
        layer_descs.append(
            info.descriptor(mt.layer_media_type(compression, docker=docker))
        )
    config = {
        "architecture": arch,
        "os": "linux",
        "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/bin"]},
        "rootfs": {"type": "layers", "diff_ids": list(ids if diff_ids is None else diff_ids)},
    }
    cfg = layout.put_json(config, mt.config_type(docker=docker))
    manifest = {
        "schemaVersion": 2,
        "mediaType": mt.manifest_type(docker=docker),
        "config": cfg.to_json(),
        "layers": [d.to_json() for d in layer_descs],
    }
    desc = layout.put_json(manifest, mt.manifest_type(docker=docker))
    ann = dict(annotations or {})
    if ref is not None:
        ann[mt.ANNOT_REF_NAME] = ref
    desc = desc.with_(annotations=ann)
    if add_to_index:
        layout.update_index(lambda entries, _doc: [*entries, desc])
    return desc


def make_layout(tmp_path: Path, *refs: str, name: str = "oci") -> Layout:
    """A fresh layout holding one small image per ref (distinct contents)."""
    layout = Layout.init(tmp_path / name)
    for r in refs:
        make_image(layout, r, layers=[r.encode()])
    return layout


def assert_verifies(path: Path | Layout) -> None:
    """The layout passes ``verify`` with no problem."""
    root = path.root if isinstance(path, Layout) else path
    res = verify_layout(root)
    assert res.ok, [p.message for p in res.problems]


def first_layer(layout: Layout, desc: Descriptor) -> Descriptor:
    """The first layer descriptor of the manifest ``desc``."""
    doc = json.loads(layout.blob_path(desc.digest).read_bytes())
    return Descriptor.from_json(doc["layers"][0])


def config_desc_of(layout: Layout, desc: Descriptor) -> Descriptor:
    """The config descriptor of the manifest ``desc``."""
    doc = json.loads(layout.blob_path(desc.digest).read_bytes())
    return Descriptor.from_json(doc["config"])


# ----------------------------------------------------------------------------- init / open
def test_init_creates_a_spec_layout(tmp_path: Path) -> None:
    layout = Layout.init(tmp_path / "new")
    root = layout.root
    assert json.loads((root / "oci-layout").read_bytes()) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads((root / "index.json").read_bytes())
    assert index == {"schemaVersion": 2, "mediaType": mt.MT_OCI_INDEX, "manifests": []}
    assert (root / "blobs" / "sha256").is_dir()
    assert is_layout(root)
    assert Layout.open(root).read_index().manifests == ()
    assert layout.tmp_files() == []
    assert_verifies(root)


def test_init_refuses_to_clobber(tmp_path: Path) -> None:
    layout = make_layout(tmp_path, "a")
    with pytest.raises(ConflictError, match="already an OCI layout"):
        Layout.init(layout.root)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_bytes(b"")
    with pytest.raises(ConflictError, match="not empty"):
        Layout.init(tmp_path / "full")
    (tmp_path / "file").write_bytes(b"")
    with pytest.raises(ConflictError, match="not a directory"):
        Layout.init(tmp_path / "file")
    assert len(Layout.open(layout.root).read_index().manifests) == 1


def test_open_errors(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="does not exist"):
        Layout.open(tmp_path / "absent")
    (tmp_path / "plain").mkdir()
    with pytest.raises(InvalidInputError, match="oci-layout is missing"):
        Layout.open(tmp_path / "plain")
    layout = make_layout(tmp_path)
    (layout.root / "oci-layout").write_text('{"imageLayoutVersion":"2.0.0"}')
    with pytest.raises(InvalidInputError, match=r"imageLayoutVersion must be '1\.0\.0'"):
        Layout.open(layout.root)


# ----------------------------------------------------------------------------- writes
def test_put_bytes_writes_at_its_digest(tmp_path: Path) -> None:
    layout = make_layout(tmp_path)
    info = layout.put_bytes(b"some bytes")
    assert info.digest == Digest.of_bytes(b"some bytes")
    assert info.size == 10
    assert layout.blob_path(info.digest) == layout.root / "blobs" / "sha256" / info.digest.encoded
    assert layout.blob_path(info.digest).read_bytes() == b"some bytes"
    assert layout.has_blob(info.digest)
    assert layout.tmp_files() == []


def test_put_bytes_is_idempotent(tmp_path: Path) -> None:
    layout = make_layout(tmp_path)
    first = layout.put_bytes(b"same")
    path = layout.blob_path(first.digest)
    second = layout.put_bytes(b"same")
    assert first == second
    assert path.read_bytes() == b"same"
    assert sorted(p.name for p in path.parent.iterdir()) == [first.digest.encoded]
    assert layout.tmp_files() == []


def test_put_repairs_a_corrupt_copy(tmp_path: Path) -> None:
    """An existing blob is never trusted by name: storing the content again replaces it."""
    layout = make_layout(tmp_path)
    info = layout.put_bytes(b"good content")
    layout.blob_path(info.digest).write_bytes(b"evil content")
    layout.put_bytes(b"good content")
    assert layout.blob_path(info.digest).read_bytes() == b"good content"


def test_expected_digest_mismatch_keeps_nothing(tmp_path: Path) -> None:
    layout = make_layout(tmp_path)
    wrong = Digest.of_bytes(b"other")
    with pytest.raises(IntegrityError, match="does not match expected") as info:
        layout.put_bytes(b"content", expected=wrong)
    assert info.value.exit_code == 5
    assert not layout.has_blob(wrong)
    assert not layout.has_blob(Digest.of_bytes(b"content"))
    assert layout.tmp_files() == []


def test_sha512_expected_is_written_under_sha512(tmp_path: Path) -> None:
    layout = make_layout(tmp_path)
    d = Digest.of_bytes(b"x", "sha512")
    info = layout.put_bytes(b"x", expected=d)
    assert info.digest == d
    assert layout.blob_path(d).parent.name == "sha512"
    with layout.open_blob(d, 1) as r:
        assert r.read() == b"x"


def test_temp_file_removed_on_exception(tmp_path: Path) -> None:
    layout = make_layout(tmp_path)
    with pytest.raises(RuntimeError), layout.writer() as w:
        w.write(b"partial")
        assert len(layout.tmp_files()) == 1
        raise RuntimeError("boom")
    assert layout.tmp_files() == []
    assert not layout.has_blob(Digest.of_bytes(b"partial"))


def test_temp_file_removed_on_keyboard_interrupt(tmp_path: Path) -> None:
    layout = make_layout(tmp_path)
    with pytest.raises(KeyboardInterrupt), layout.writer() as w:
        w.write(b"partial")
        raise KeyboardInterrupt
    assert layout.tmp_files() == []


def test_index_temp_removed_on_keyboard_interrupt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C in the middle of replacing index.json leaves the old one and no temp file."""
    layout = make_layout(tmp_path, "a")
    before = (layout.root / "index.json").read_bytes()

    def interrupted(fd: int) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        make_image(layout, "b", layers=[b"b"])
    monkeypatch.undo()
    assert (layout.root / "index.json").read_bytes() == before
    assert layout.tmp_files() == []


def test_index_temp_removed_on_oserror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    layout = make_layout(tmp_path, "a")
    before = (layout.root / "index.json").read_bytes()
    real_rename = os.rename

    def failing(src: Any, dst: Any) -> None:
        if str(dst).endswith("index.json"):
            raise OSError(28, "No space left on device")
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", failing)
    with pytest.raises(Exception) as info:
        layout.update_index(lambda entries, _doc: [])
    monkeypatch.undo()
    assert getattr(info.value, "exit_code", None) == 74
    assert "index.json" in str(info.value)
    assert (layout.root / "index.json").read_bytes() == before
    assert layout.tmp_files() == []


# ----------------------------------------------------------------------------- reads
def test_verified_read_returns_the_bytes(tmp_path: Path) -> None:
    layout = make_layout(tmp_path)
    data = os.urandom(3 << 20)
    info = layout.put_bytes(data)
    chunks = []
    with layout.open_blob(info.digest, info.size) as r:
        while chunk := r.read(65536 + 7):
            chunks.append(chunk)
    assert b"".join(chunks) == data


def _corrupt(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_corrupted_blob_is_refused(tmp_path: Path) -> None:
    layout = make_layout(tmp_path)
    info = layout.put_bytes(b"0123456789" * 100)
    _corrupt(layout.blob_path(info.digest))
    with (
        pytest.raises(IntegrityError, match="is corrupt: its content hashes to") as exc,
        layout.open_blob(info.digest, info.size) as r,
    ):
        r.finish()
    assert exc.value.exit_code == 5
    assert str(info.digest) in str(exc.value)


def test_corruption_seen_by_read_blob(tmp_path: Path) -> None:
    layout = make_layout(tmp_path)
    desc = layout.put_json({"a": 1}, mt.MT_OCI_CONFIG)
    layout.blob_path(desc.digest).write_bytes(b'{"a":2}')
    with pytest.raises(IntegrityError):
        layout.read_blob(desc)


def test_wrong_size_is_refused_before_reading(tmp_path: Path) -> None:
    layout = make_layout(tmp_path)
    info = layout.put_bytes(b"abc")
    with pytest.raises(IntegrityError, match="size 3 on disk does not match descriptor size 4"):
        layout.open_blob(info.digest, 4)
    # a truncated blob: same digest name, fewer bytes
    layout.blob_path(info.digest).write_bytes(b"ab")
    with pytest.raises(IntegrityError) as exc:
        layout.open_blob(info.digest, 3)
    assert exc.value.exit_code == 5


def test_size_unknown_still_checks_the_digest(tmp_path: Path) -> None:
    layout = make_layout(tmp_path)
    info = layout.put_bytes(b"abc")
    layout.blob_path(info.digest).write_bytes(b"abcd")
    with pytest.raises(IntegrityError), layout.open_blob(info.digest, None) as r:
        r.read()


def test_symlinked_blob_is_refused_and_not_followed(tmp_path: Path) -> None:
    layout = make_layout(tmp_path)
    secret = tmp_path / "secret"
    secret.write_bytes(b"host file")
    d = Digest.of_bytes(b"host file")
    layout.blob_path(d).symlink_to(secret)
    with pytest.raises(UnsafeInputError, match=r"is a symlink .*refusing to follow it") as exc:
        layout.open_blob(d, 9)
    assert exc.value.exit_code == 6
    assert not layout.has_blob(d)


def test_symlinked_blob_dir_is_refused(tmp_path: Path) -> None:
    """blobs/sha256 itself a symlink to elsewhere: the blob behind it must not be served."""
    layout = make_layout(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    d = Digest.of_bytes(b"outside")
    (elsewhere / d.encoded).write_bytes(b"outside")
    sha = layout.root / "blobs" / "sha256"
    os.rmdir(sha)
    sha.symlink_to(elsewhere)
    with pytest.raises(UnsafeInputError):
        layout.open_blob(d, 7)


def test_directory_blob_is_refused(tmp_path: Path) -> None:
    layout = make_layout(tmp_path)
    d = Digest.of_bytes(b"dir")
    layout.blob_path(d).mkdir()
    with pytest.raises(UnsafeInputError, match="not a regular file") as exc:
        layout.open_blob(d, 3)
    assert exc.value.exit_code == 6
    assert not layout.has_blob(d)


def test_fifo_blob_is_refused_without_hanging(tmp_path: Path) -> None:
    """Opening a FIFO for reading blocks until a writer appears: the store must not wait."""
    layout = make_layout(tmp_path)
    d = Digest.of_bytes(b"fifo")
    os.mkfifo(layout.blob_path(d))
    code = textwrap.dedent(
        f"""
        from layouttool.store import Layout
        from layouttool.digest import Digest
        from layouttool.errors import UnsafeInputError
        try:
            Layout.open({str(layout.root)!r}).open_blob(Digest.parse({str(d)!r}), 4)
        except UnsafeInputError as exc:
            print("refused:", exc)
        """
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=20
    )
    assert proc.returncode == 0, proc.stderr
    assert "refused:" in proc.stdout and "not a regular file" in proc.stdout


def test_missing_blob_is_not_found(tmp_path: Path) -> None:
    layout = make_layout(tmp_path)
    d = Digest.of_bytes(b"never stored")
    with pytest.raises(NotFoundError, match=f"blob {d} is missing") as exc:
        layout.open_blob(d, 12)
    assert exc.value.exit_code == 3


def test_blob_growing_while_read_is_refused(tmp_path: Path) -> None:
    """The size is snapshotted at open: a file that keeps growing cannot keep us reading."""
    layout = make_layout(tmp_path)
    info = layout.put_bytes(b"x" * 1000)
    path = layout.blob_path(info.digest)
    with pytest.raises(IntegrityError, match="grew while being read"):  # noqa: SIM117
        with layout.open_blob(info.digest, None) as r:
            r.read(500)
            with open(path, "ab") as f:
                f.write(b"y" * 10_000)
            while r.read(300):
                pass


def test_early_stop_then_finish_verifies(tmp_path: Path) -> None:
    layout = make_layout(tmp_path)
    info = layout.put_bytes(b"0123456789" * 1000)
    _corrupt(layout.blob_path(info.digest))
    with layout.open_blob(info.digest, info.size) as r:
        assert len(r.read(10)) == 10
        with pytest.raises(IntegrityError):
            r.finish()


def test_read_blob_cap_is_enforced_before_reading(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    layout = make_layout(tmp_path)
    desc = layout.put_json({"k": "v" * 100}, mt.MT_OCI_CONFIG)

    def never(*_a: Any, **_k: Any) -> Any:
        raise AssertionError("the blob was opened")

    monkeypatch.setattr(layout, "open_blob", never)
    with pytest.raises(InvalidInputError, match="over the cap of 50") as exc:
        layout.read_blob(desc, cap=50)
    assert exc.value.exit_code == 4


def test_oversized_index_json_is_refused_before_parsing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    layout = make_layout(tmp_path)
    pad = " " * (JSON_CAP + 10)
    (layout.root / "index.json").write_text('{"schemaVersion":2,"manifests":[]' + pad + "}")

    def never(*_a: Any, **_k: Any) -> Any:
        raise AssertionError("json.loads was called on an oversized document")

    opened = Layout.open(layout.root)
    monkeypatch.setattr(json, "loads", never)
    with pytest.raises(InvalidInputError, match="exceeds") as exc:
        opened.read_index()
    assert exc.value.exit_code == 4


@pytest.mark.parametrize(
    "value",
    [
        "sha256:../../x",
        "sha256:" + "A" * 64,
        "sha256:" + "a" * 63,
        "md5:" + "a" * 32,
    ],
)
def test_invalid_digest_in_index_is_refused(tmp_path: Path, value: str) -> None:
    layout = make_layout(tmp_path)
    doc = {
        "schemaVersion": 2,
        "manifests": [{"mediaType": mt.MT_OCI_MANIFEST, "digest": value, "size": 2}],
    }
    (layout.root / "index.json").write_text(json.dumps(doc))
    with pytest.raises(InvalidInputError, match=r"invalid .*digest") as exc:
        layout.read_index()
    assert exc.value.exit_code == 4


def test_sha512_blobs_are_read(tmp_path: Path) -> None:
    layout = make_layout(tmp_path)
    data = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
    d = Digest.of_bytes(data, "sha512")
    (layout.root / "blobs" / "sha512").mkdir()
    layout.blob_path(d).write_bytes(data)
    desc = Descriptor(mt.MT_OCI_CONFIG, d, len(data))
    assert layout.read_blob(desc) == data
    layout.blob_path(d).write_bytes(data.replace(b"amd64", b"arm64"))
    with pytest.raises(IntegrityError):
        layout.read_blob(desc)


def test_iter_blob_files_reports_bad_names(tmp_path: Path) -> None:
    layout = make_layout(tmp_path, "a")
    (layout.root / "blobs" / "sha256" / "not-a-digest").write_bytes(b"")
    (layout.root / "blobs" / "sha256" / ("A" * 64)).write_bytes(b"")
    files = list(layout.iter_blob_files())
    bad = sorted(f.path.name for f in files if f.digest is None)
    assert bad == ["A" * 64, "not-a-digest"]
    assert sum(1 for f in files if f.digest is not None) == 3  # layer, config, manifest


# ----------------------------------------------------------------------------- index.json
def test_update_index_keeps_unknown_fields(tmp_path: Path) -> None:
    layout = make_layout(tmp_path)
    doc = json.loads((layout.root / "index.json").read_bytes())
    doc["annotations"] = {"org.example": "kept"}
    doc["x-unknown"] = [1, 2]
    (layout.root / "index.json").write_text(json.dumps(doc))
    make_image(layout, "a")
    after = json.loads((layout.root / "index.json").read_bytes())
    assert after["annotations"] == {"org.example": "kept"}
    assert after["x-unknown"] == [1, 2]
    assert [m["annotations"][mt.ANNOT_REF_NAME] for m in after["manifests"]] == ["a"]
    assert_verifies(layout)


def test_update_index_adds_media_type_when_absent(tmp_path: Path) -> None:
    layout = make_layout(tmp_path)
    (layout.root / "index.json").write_text('{"schemaVersion":2,"manifests":[]}')
    make_image(layout, "a")
    after = json.loads((layout.root / "index.json").read_bytes())
    assert after["mediaType"] == mt.MT_OCI_INDEX
    assert_verifies(layout)


def test_write_index_refuses_an_invalid_document(tmp_path: Path) -> None:
    layout = make_layout(tmp_path, "a")
    before = (layout.root / "index.json").read_bytes()
    with pytest.raises(InvalidInputError):
        layout.write_index({"schemaVersion": 2, "manifests": [{"digest": "sha256:x"}]})
    assert (layout.root / "index.json").read_bytes() == before


_WRITER = """
import sys
from layouttool.store import Layout
from layouttool import mediatypes as mt
layout = Layout.open(sys.argv[1])
base = layout.read_index().manifests[0]
for i in range(int(sys.argv[2])):
    pad = "x" * (i * 37 % 4000)
    d = base.with_(annotations={mt.ANNOT_REF_NAME: f"r{i}", "pad": pad})
    layout.update_index(lambda entries, _doc, d=d: [base, d])
print("done")
"""

_READER = """
import sys, json, os
from layouttool.model import parse_index
path = os.path.join(sys.argv[1], "index.json")
stop = os.path.join(sys.argv[1], "stop")
reads = 0
while not os.path.exists(stop):
    with open(path, "rb") as f:
        raw = f.read()
    parse_index(raw, "index.json")  # raises on a partial document
    reads += 1
print(reads)
"""


def test_index_replacement_is_atomic(tmp_path: Path) -> None:
    """A reader in a loop never sees a partial index.json while a writer rewrites it."""
    layout = make_layout(tmp_path, "base")
    reader = subprocess.Popen(
        [sys.executable, "-c", _READER, str(layout.root)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        writer = subprocess.run(
            [sys.executable, "-c", _WRITER, str(layout.root), "150"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert writer.returncode == 0, writer.stderr
    finally:
        (layout.root / "stop").write_bytes(b"")
        out, err = reader.communicate(timeout=60)
    assert reader.returncode == 0, err
    assert int(out) > 0
    (layout.root / "stop").unlink()
    final = parse_index((layout.root / "index.json").read_bytes())
    assert [d.ref_name for d in final.manifests] == ["base", "r149"]
    assert layout.tmp_files() == []
    assert_verifies(layout)


def test_gc_lock_conflict_is_reported(tmp_path: Path) -> None:
    """While an operation writes (shared lock), an exclusive non-waiting lock is refused."""
    layout = make_layout(tmp_path, "a")
    code = textwrap.dedent(
        f"""
        import sys
        from layouttool.store import Layout
        from layouttool.errors import ConflictError
        try:
            with Layout.open({str(layout.root)!r}).exclusive(wait=False):
                print("acquired")
        except ConflictError as exc:
            print("conflict:", exc)
        """
    )
    with layout.writing():
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "conflict:" in proc.stdout and "locked by another layouttool process" in proc.stdout
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.stdout.strip() == "acquired"


def test_make_image_builds_valid_images(tmp_path: Path) -> None:
    """The builder itself: gzip, zstd, uncompressed and Docker-typed images verify."""
    layout = Layout.init(tmp_path / "oci")
    for i, comp in enumerate((Compression.GZIP, Compression.ZSTD, Compression.NONE)):
        make_image(layout, f"c{i}", layers=[b"a", b"b"], compression=comp)
    make_image(layout, "docker", docker=True)
    assert len(layout.read_index().manifests) == 4
    layer = first_layer(layout, layout.read_index().manifests[0])
    assert zlib.decompress(layout.blob_path(layer.digest).read_bytes(), 31).startswith(b"f0.txt")
    assert_verifies(layout)


def test_write_atomically_says_when_only_the_directory_flush_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A failure before the rename leaves the old file; one of the directory fsync after it
    must not claim that: the file holds the new bytes (a crash could still undo them)."""
    import errno

    from layouttool import store
    from layouttool.errors import IOFailure

    target = tmp_path / "index.json"
    target.write_bytes(b"old")

    def eio(path: Path) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(store, "fsync_dir", eio)
    with pytest.raises(IOFailure, match=r"replaced .*index.json, then could not flush its dir"):
        store.write_atomically(target, b"new")
    assert target.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index.json"]


def test_write_parts_hashes_and_writes_what_write_would(tmp_path: Path) -> None:
    """An encoder's output pieces go to the blob without being joined: same bytes, same digest,
    empty pieces skipped, a short writev carried on where it stopped."""
    lay = Layout.init(tmp_path / "l")
    parts: list[bytes | memoryview] = [b"head", memoryview(b"0123456789")[2:8], b"", b"x" * 5000]
    joined = b"".join(parts)
    w = lay.writer()
    real_writev = os.writev
    calls: list[int] = []

    def short_writev(fd: int, bufs: list[bytes | memoryview]) -> int:
        calls.append(len(bufs))
        return real_writev(fd, [memoryview(bufs[0])[:3]])  # 3 bytes at a time

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(os, "writev", short_writev)
        w.write_parts(parts)
    info = w.commit()
    assert info.digest == Digest.of_bytes(joined) and info.size == len(joined)
    assert (tmp_path / "l" / "blobs" / "sha256" / info.digest.encoded).read_bytes() == joined
    assert len(calls) > 3
