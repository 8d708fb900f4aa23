"""Lazy-pull layers: zstd:chunked and eStargz writers, convert, round trips.

The oracles are independent of the writers: plain ``zstandard`` / ``gzip`` decoders, Python's
``tarfile``, hashlib over byte ranges the TOC names, and a literal port of containers/storage's
chunking state machines (holesFinder + rollingChecksumReader) written here byte by byte.
"""

from __future__ import annotations

import base64
import gzip
import hashlib
import io
import json
import os
import random
import struct
import tarfile
from pathlib import Path
from typing import Any

import pytest
import zstandard
from conftest import run_cli
from hypothesis import given, settings
from hypothesis import strategies as st
from layerbuild import build_layer
from test_convert import add_image, named, read_json, set_index, sha

from layouttool import mediatypes as mt
from layouttool.codec import Compression
from layouttool.errors import CorruptStreamError
from layouttool.lazy import LazyOptions, estargz, zstd_chunked
from layouttool.lazy.chunker import Chunker
from layouttool.lazy.tarsplit import iter_items
from layouttool.ops.convert import convert_image
from layouttool.ops.verify import verify_layout
from layouttool.store import Layout


# ---------------------------------------------------------------------------------- layers
def kinds_layer(fmt: int = tarfile.PAX_FORMAT) -> bytes:
    """Every kind of entry our tables use, in one layer."""
    r = random.Random(19)
    rnd = bytes(range(256)) * 1200 + r.randbytes(200_000)
    # a hole, a short zero run (ordinary bytes), a hole at the end; non-zero edges
    holes = b"\x01" + r.randbytes(3000) + b"\x01" + bytes(5000) + b"\x02" * 100
    holes += bytes(1023) + b"x" + bytes(2048)
    entries: list[dict[str, Any]] = [
        {"type": "dir", "name": "etc/", "mode": 0o755, "uid": 0, "gname": "root", "uname": "root"},
        {"name": "etc/passwd", "data": "root:x:0:0::/root:/bin/sh\n", "uname": "root"},
        {"name": "etc/empty", "data": b""},
        {"type": "symlink", "name": "etc/link", "target": "passwd"},
        {"type": "symlink", "name": "abs", "target": "/etc/passwd"},
        {"type": "hardlink", "name": "etc/hard", "target": "etc/passwd"},
        {"type": "dir", "name": "opaque/"},
        {"name": "opaque/.wh..wh..opq"},
        {"name": ".wh.gone"},
        {"type": "fifo", "name": "fifo"},
        {"name": "big.bin", "data": rnd, "uid": 1000, "gid": 1000, "uname": "u", "gname": "g"},
        {"name": "holes.bin", "data": holes},
        {"name": "zeros.bin", "data": bytes(70_000)},
        {"name": "d/" + "long" * 40 + ".txt", "data": "long name"},
        {"type": "symlink", "name": "d/longlink", "target": "x/" * 70 + "t"},
    ]
    if fmt == tarfile.PAX_FORMAT:
        entries += [
            {
                "name": "xattr",
                "data": "x",
                "xattrs": {"user.k": b"v\x00\xff", "security.capability": b"\x01"},
            },
            {"name": "frac", "data": "t", "mtime": 1_600_000_000.25},
            {"type": "char", "name": "dev/null", "devmajor": 1, "devminor": 3, "mode": 0o666},
            {"type": "block", "name": "dev/loop0", "devmajor": 7, "devminor": 0},
        ]
    return build_layer(entries, fmt=fmt)


LAYERS = {
    "pax": lambda: kinds_layer(tarfile.PAX_FORMAT),
    "gnu": lambda: kinds_layer(tarfile.GNU_FORMAT),
    "empty": lambda: build_layer([]),
    "one-empty-file": lambda: build_layer([{"name": "e"}]),
}


# ---------------------------------------------------------------------------------- oracles
def tar_members(data: bytes) -> list[tarfile.TarInfo]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        return tf.getmembers()


def _content(plain: bytes, name: str) -> bytes:
    with tarfile.open(fileobj=io.BytesIO(plain)) as tf:
        f = tf.extractfile(name)
        assert f is not None
        return f.read()


def literal_chunks(data: bytes) -> list[tuple[int, int, str]]:
    """containers/storage's holesFinder + rollingChecksumReader, one byte at a time."""
    s1, s2, win, w = 64 * 31, 64 * 63 * 31, [0] * 64, 0
    chunks: list[tuple[int, int, str]] = []
    start, i, n = 0, 0, len(data)

    def roll(ch: int) -> bool:
        nonlocal s1, s2, w
        drop = win[w]
        s1 = (s1 + ch - drop) & 0xFFFFFFFF
        s2 = (s2 + s1 - 64 * (drop + 31)) & 0xFFFFFFFF
        win[w] = ch
        w = (w + 1) & 63
        return s2 & 0xFFFF == 0xFFFF

    while i < n:
        if data[i] == 0:
            j = i
            while j < n and data[j] == 0:
                j += 1
            if j - i >= 1024:  # a hole: the data before it ends a chunk
                if i > start:
                    chunks.append((start, i - start, ""))
                for _ in range(j - i):
                    roll(0)
                chunks.append((i, j - i, "zeros"))
                start = i = j
                continue
        if roll(data[i]):
            chunks.append((start, i + 1 - start, ""))
            start = i + 1
        i += 1
    if n > start:
        chunks.append((start, n - start, ""))
    return chunks


def our_chunks(data: bytes, piece: int) -> list[tuple[int, int, str]]:
    c = Chunker()
    out: list[tuple[int, int, str]] = []
    start = cur = 0
    evs = [ev for i in range(0, len(data), piece) for ev in c.feed(data[i : i + piece])]
    for ev in [*evs, *c.close()]:
        if ev[0] == "data":
            cur += len(ev[1])
        else:
            out.append((start, cur - start, "zeros" if ev[1] == "zeros" else ""))
            start = cur
    assert cur == len(data)
    return out


_part = st.one_of(
    st.binary(min_size=0, max_size=3000),
    st.integers(0, 3000).map(bytes),
    st.tuples(st.integers(1, 255), st.integers(0, 2000)).map(lambda t: bytes([t[0]]) * t[1]),
)


@settings(max_examples=60, deadline=None)
@given(parts=st.lists(_part, max_size=8), piece=st.sampled_from([1, 7, 1000, 1 << 20]))
def test_chunker_equals_containers_storage_state_machine(parts: list[bytes], piece: int) -> None:
    data = b"".join(parts)
    assert our_chunks(data, piece) == literal_chunks(data)


def test_chunker_on_random_data_cuts_about_every_64k() -> None:
    data = os.urandom(1 << 20)
    chunks = literal_chunks(data)
    assert our_chunks(data, 100_000) == chunks
    assert 4 <= len(chunks) <= 64


def zstd_frames_of(blob: bytes) -> dict[int, int]:
    """Compressed offset of each frame start -> uncompressed offset (a frame walker)."""
    out: dict[int, int] = {}
    pos = upos = 0
    d = zstandard.ZstdDecompressor()
    while pos < len(blob):
        magic = blob[pos : pos + 4]
        if magic[:1] == b"\x50" and magic[1:] == b"\x2a\x4d\x18":
            (size,) = struct.unpack("<I", blob[pos + 4 : pos + 8])
            pos += 8 + size
            continue
        out[pos] = upos
        obj = d.decompressobj()
        data = obj.decompress(blob[pos:])
        used = len(blob) - pos - len(obj.unused_data)
        pos += used
        upos += len(data)
    out[pos] = upos
    return out


def check_zstd_chunked(
    blob: bytes, annotations: dict[str, str], plain: bytes
) -> list[dict[str, Any]]:
    """Check a zstd:chunked blob against its tar by independent means; return the TOC."""
    dec = (
        zstandard.ZstdDecompressor()
        .stream_reader(io.BytesIO(blob), read_across_frames=True, closefd=False)
        .read()
    )
    assert dec == plain
    o, ln, u, t = map(int, annotations[mt.ANNOT_ZSTD_CHUNKED_TOC_POSITION].split(":"))
    assert t == 1
    ctoc = blob[o : o + ln]
    assert annotations[mt.ANNOT_ZSTD_CHUNKED_TOC_DIGEST] == sha(ctoc)
    toc_json = zstandard.ZstdDecompressor().decompressobj().decompress(ctoc)
    assert len(toc_json) == u
    toc = json.loads(toc_json)
    # footer
    footer = blob[-64:]
    assert footer[-8:] == b"GNUlInUx" and blob[-72:-64] == b"\x50\x2a\x4d\x18\x40\x00\x00\x00"
    fo, fl, fu, ft, tso, tsl, tsu = struct.unpack("<7Q", footer[:56])
    assert (fo, fl, fu, ft) == (o, ln, u, 1)
    assert annotations[mt.ANNOT_ZSTD_CHUNKED_TARSPLIT_POSITION] == f"{tso}:{tsl}:{tsu}"
    cts = blob[tso : tso + tsl]
    assert toc["tarSplitDigest"] == sha(cts)
    ts = zstandard.ZstdDecompressor().decompressobj().decompress(cts)
    assert len(ts) == tsu
    # the tar-split rebuilds the tar, given each file's content from the tar itself
    members = {m.name: m for m in tar_members(plain)}
    rebuilt = []
    for item in iter_items(iter(ts.splitlines(keepends=True)), "tar-split"):
        if item.type == 2:
            rebuilt.append(item.payload)
        elif item.size:
            m = members[item.name.decode().rstrip("/")]
            rebuilt.append(plain[m.offset_data : m.offset_data + m.size])
    assert b"".join(rebuilt) == plain
    # every payload range: starts and ends on frame boundaries, digests hold
    frames = zstd_frames_of(blob)
    ents = toc["entries"]
    for i, e in enumerate(ents):
        if e["type"] != "reg" or not e.get("size"):
            continue
        m = members[e["name"].rstrip("/")]
        assert frames[e["offset"]] == m.offset_data
        assert frames[e["endOffset"]] == m.offset_data + m.size
        assert e["digest"] == sha(plain[m.offset_data : m.offset_data + m.size])
        chunks = [e]
        for c in ents[i + 1 :]:
            if c["type"] != "chunk":
                break
            chunks.append(c)
        if len(chunks) > 1:
            for c in chunks:
                start = m.offset_data + c.get("chunkOffset", 0)
                assert frames[c["offset"]] == start
                assert c["chunkDigest"] == sha(plain[start : start + c["chunkSize"]])
    return ents


def check_estargz(blob: bytes, annotations: dict[str, str]) -> tuple[bytes, list[dict[str, Any]]]:
    """Check an eStargz blob by independent means; return its tar and TOC entries."""
    plain = gzip.decompress(blob)
    assert hashlib.sha256(plain).hexdigest()  # decodes as one gzip stream (of members)
    assert annotations[mt.ANNOT_ESTARGZ_UNCOMPRESSED_SIZE] == str(len(plain))
    footer = blob[-51:]
    assert footer[:4] == b"\x1f\x8b\x08\x04" and footer[16 + 16 : 16 + 22] == b"STARGZ"
    off = int(footer[16:32], 16)
    toc_json = _content(gzip.decompress(blob[off:-51]), "stargz.index.json")
    assert annotations[mt.ANNOT_ESTARGZ_TOC_DIGEST] == sha(toc_json)
    toc = json.loads(toc_json)["entries"]
    names = [m.name for m in tar_members(plain)]
    assert names[-1] == "stargz.index.json"
    offsets = set()
    for e in toc:
        if e.get("offset"):
            assert e["offset"] not in offsets  # estargz: an offset is unique
            offsets.add(e["offset"])
            size = e.get("chunkSize") or None
            g = gzip.GzipFile(fileobj=io.BytesIO(blob[e["offset"] :]))
            data = g.read(size) if size else None
            if data is not None:
                assert e["chunkDigest"] == sha(data)
    return plain, toc


# ---------------------------------------------------------------------------------- writers
@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_zstd_chunked_round_trip(kind: str) -> None:
    plain = LAYERS[kind]()
    out = io.BytesIO()
    res = zstd_chunked.write(io.BytesIO(plain), out, LazyOptions())
    blob = out.getvalue()
    assert str(res.diff_id) == sha(plain)
    ents = check_zstd_chunked(blob, res.annotations, plain)
    names = [e["name"] for e in ents if e["type"] != "chunk"]
    assert names == [m.name + ("/" if m.isdir() else "") for m in tar_members(plain)]
    # deterministic
    again = io.BytesIO()
    zstd_chunked.write(io.BytesIO(plain), again, LazyOptions())
    assert again.getvalue() == blob


def test_zstd_chunked_toc_fields_as_containers_storage() -> None:
    plain = kinds_layer()
    out = io.BytesIO()
    res = zstd_chunked.write(io.BytesIO(plain), out, LazyOptions())
    ents = check_zstd_chunked(out.getvalue(), res.annotations, plain)
    by = {e["name"]: e for e in ents if e["type"] != "chunk"}
    assert by["etc/"]["type"] == "dir" and by["etc/"]["mode"] == 0o755
    assert by["etc/hard"] == {**by["etc/hard"], "type": "hardlink", "linkName": "etc/passwd"}
    assert "digest" not in by["etc/empty"] and "offset" not in by["etc/empty"]
    assert by["dev/null"]["devMajor"] == 1 and by["dev/null"]["devMinor"] == 3
    assert by["xattr"]["xattrs"] == {
        "user.k": base64.b64encode(b"v\x00\xff").decode(),
        "security.capability": base64.b64encode(b"\x01").decode(),
    }
    assert by["frac"]["modtime"] == "2020-09-13T12:26:40.25Z"
    assert by["big.bin"]["uid"] == 1000 and "chunkSize" in by["big.bin"]
    holes = [e for e in ents if e["name"] == "holes.bin"]
    assert [e.get("chunkType", "") for e in holes].count("zeros") == 2
    assert [(c.get("chunkOffset", 0), c["chunkSize"]) for c in holes] == [
        (a, n) for a, n, _ in literal_chunks(_content(plain, "holes.bin"))
    ]


def test_toc_xattrs_are_every_schily_record_as_go_reads_them() -> None:
    """containers/storage (minimal.NewFileMetadata) and estargz take a TOC's xattrs from Go's
    ``hdr.PAXRecords``, which keeps a record with an empty value (only the deprecated
    ``hdr.Xattrs`` drops it), and Go's JSON writes a map's keys sorted. A TOC without the empty
    one is refused by containers/storage ("TOC and tar-split metadata doesn't match")."""
    plain = build_layer(
        [{"name": "x", "data": "1", "xattrs": {"user.z": b"1", "user.empty": b"", "user.a": b""}}]
    )
    want = {"user.a": "", "user.empty": "", "user.z": base64.b64encode(b"1").decode()}
    blob, ann, diff_id = written(zstd_chunked, plain)
    [e] = [e for e in check_zstd_chunked(blob, ann, plain) if e["name"] == "x"]
    assert e["xattrs"] == want and list(e["xattrs"]) == sorted(want)
    eblob, eann, ediff = written(estargz, plain)
    [e] = [e for e in check_estargz(eblob, eann)[1] if e["name"] == "x"]
    assert e["xattrs"] == want and list(e["xattrs"]) == sorted(want)
    assert findings(blob, ann, diff_id) == findings(eblob, eann, ediff) == []


@pytest.mark.parametrize("kind", sorted(LAYERS))
@pytest.mark.parametrize("chunk", [64 << 10, 4 << 20])
def test_estargz_round_trip(kind: str, chunk: int) -> None:
    plain = LAYERS[kind]()
    out = io.BytesIO()
    res = estargz.write(io.BytesIO(plain), out, LazyOptions(chunk_size=chunk))
    blob = out.getvalue()
    tar, toc = check_estargz(blob, res.annotations)
    assert str(res.diff_id) == sha(tar)
    orig = [(m.name, m.type, m.size, m.linkname) for m in tar_members(plain)]
    got = [(m.name, m.type, m.size, m.linkname) for m in tar_members(tar)]
    assert got[0] == (".no.prefetch.landmark", tarfile.REGTYPE, 1, "")
    assert got[1:-1] == orig
    for name, *_ in orig:
        if name in ("big.bin", "holes.bin"):
            assert _content(tar, name) == _content(plain, name)
    regs = [e for e in toc if e["type"] == "reg"]
    assert all(e["digest"].startswith("sha256:") for e in regs)
    big = [e for e in toc if e["name"] == "big.bin"]
    if kind in ("pax", "gnu"):
        assert len(big) == -(-len(_content(plain, "big.bin")) // chunk)
    # a second conversion of the result drops the first TOC and landmark: same bytes
    again = io.BytesIO()
    res2 = estargz.write(io.BytesIO(tar), again, LazyOptions(chunk_size=chunk))
    assert again.getvalue() == blob and res2 == res


def test_estargz_prioritized_files_come_first() -> None:
    plain = kinds_layer()
    out = io.BytesIO()
    res = estargz.write(io.BytesIO(plain), out, LazyOptions(prioritize=("/etc/hard", "big.bin")))
    tar, _ = check_estargz(out.getvalue(), res.annotations)
    names = [m.name for m in tar_members(tar)]
    # the hardlink pulls its parent and its target first, as estargz's moveRec does
    assert names[:5] == ["etc", "etc/passwd", "etc/hard", "big.bin", ".prefetch.landmark"]
    assert sorted(names[5:-1]) == sorted(
        n
        for n in (m.name for m in tar_members(plain))
        if n not in ("etc", "etc/passwd", "etc/hard", "big.bin")
    )


def test_unsupported_entries_refused_cleanly(cli: Any, tmp_path: Path) -> None:
    plain = build_layer([{"name": "a", "data": "1"}, {"name": "a", "data": "2"}])
    with pytest.raises(Exception, match="twice"):
        zstd_chunked.write(io.BytesIO(plain), io.BytesIO(), LazyOptions())
    bad = build_layer([{"name": "x", "type": b"S", "data": "z"}])
    for w in (zstd_chunked.write, estargz.write):
        with pytest.raises(Exception, match="cannot describe"):
            w(io.BytesIO(bad), io.BytesIO(), LazyOptions())


# ---------------------------------------------------------------------------------- convert
def lazy_image(tmp_path: Path, tars: list[bytes] | None = None) -> Path:
    layout = Layout.init(tmp_path / "oci")
    tars = (
        tars if tars is not None else [kinds_layer(), build_layer([{"name": "two", "data": "2"}])]
    )
    set_index(layout, [named(add_image(layout, tars), "app")])
    return layout.root


def layers_of(root: Path) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, Any]]:
    idx = json.loads((root / "index.json").read_bytes())
    man = read_json(root, idx["manifests"][0]["digest"])
    return man, man["layers"], read_json(root, man["config"]["digest"])


@pytest.mark.parametrize("fmt", ["zstd:chunked", "estargz"])
def test_convert_cli_writes_lazy_layers_verified_and_deterministic(
    tmp_path: Path, fmt: str
) -> None:
    src = lazy_image(tmp_path)
    _, old_layers, old_cfg = layers_of(src)
    out = [tmp_path / "a", tmp_path / "b"]
    for o in out:
        r = run_cli("convert", f"{src}:app", "--compression", fmt, "-o", o, "--json")
        assert r.code == 0, r.stderr
        assert json.loads(r.stdout)["compression"] == fmt
        assert verify_layout(o).ok
    _, layers, cfg = layers_of(out[0])
    assert (out[0] / "index.json").read_bytes() == (out[1] / "index.json").read_bytes()
    for old, new, diff_id in zip(old_layers, layers, cfg["rootfs"]["diff_ids"], strict=True):
        blob = (out[0] / "blobs" / "sha256" / new["digest"][7:]).read_bytes()
        if fmt == "zstd:chunked":
            assert new["mediaType"] == mt.MT_OCI_LAYER_ZSTD
            plain = gzip.decompress((src / "blobs" / "sha256" / old["digest"][7:]).read_bytes())
            check_zstd_chunked(blob, new["annotations"], plain)
            assert diff_id == sha(plain)
        else:
            assert new["mediaType"] == mt.MT_OCI_LAYER_GZIP
            tar, _ = check_estargz(blob, new["annotations"])
            assert (
                diff_id
                == sha(tar)
                != sha(gzip.decompress((src / "blobs/sha256" / old["digest"][7:]).read_bytes()))
            )
    assert (cfg == old_cfg) is (fmt == "zstd:chunked")
    # a second conversion to the same format keeps every layer
    r = run_cli("convert", f"{out[0]}:app", "--compression", fmt, "--json")
    assert r.code == 0 and json.loads(r.stdout)["layersRecompressed"] == 0
    # recompressing away drops the lazy annotations (an eStargz layer *is* gzip: to gzip it
    # stays as it is, a valid gzip layer whose annotations still hold)
    away = "gzip" if fmt == "zstd:chunked" else "zstd"
    r = run_cli("convert", f"{out[0]}:app", "--compression", away, "-o", tmp_path / "g")
    assert r.code == 0, r.stderr
    _, glayers, _ = layers_of(tmp_path / "g")
    assert all(not layer.get("annotations") for layer in glayers)
    assert verify_layout(tmp_path / "g").ok


def test_convert_options_checked(tmp_path: Path) -> None:
    src = lazy_image(tmp_path, [build_layer([{"name": "a", "data": "1"}])])
    r = run_cli("convert", src, "--compression", "zstd:chunked", "--format", "docker")
    assert r.code == 4 and r.stderr.startswith("layouttool: error: --format docker")
    r = run_cli("convert", src, "--compression", "zstd:chunked", "--chunk-size", "10")
    assert r.code == 4 and "eStargz options" in r.stderr
    r = run_cli("convert", src, "--compression", "estargz", "--estargz-prioritize", "/nope")
    assert r.code == 3 and "'nope' is not in the layer" in r.stderr
    assert r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    # docker + estargz is fine: gzip layers
    r = run_cli(
        "convert", src, "--compression", "estargz", "--format", "docker", "-o", tmp_path / "d"
    )
    assert r.code == 0, r.stderr
    _, layers, _ = layers_of(tmp_path / "d")
    assert layers[0]["mediaType"] == mt.MT_DOCKER_LAYER_GZIP
    assert mt.ANNOT_ESTARGZ_TOC_DIGEST in layers[0]["annotations"]


def test_api_convert_compression_zstd_chunked(tmp_path: Path) -> None:
    src = lazy_image(tmp_path)
    res = convert_image(f"{src}:app", tmp_path / "z", compression="zstd:chunked")
    assert res.compression == "zstd:chunked" and res.layers_recompressed == 2
    assert Compression.ZSTD.value in res.images[0].layers[0].new.media_type


# ---------------------------------------------------------------------------------- checking
def written(mod: Any, plain: bytes, **kw: Any) -> tuple[bytes, dict[str, str], str]:
    out = io.BytesIO()
    res = mod.write(io.BytesIO(plain), out, LazyOptions(**kw))
    return out.getvalue(), dict(res.annotations), str(res.diff_id)


def findings(blob: bytes, ann: dict[str, str], diff_id: str | None) -> list[str]:
    from layouttool.digest import Digest
    from layouttool.lazy.check import check_layer

    got = check_layer(
        ann,
        len(blob),
        lambda o, n: blob[o : o + n],
        lambda: io.BytesIO(blob),
        Digest.parse(diff_id) if diff_id else None,
    )
    return [f.code for f in got]


def relie_zstd_chunked(
    blob: bytes,
    ann: dict[str, str],
    mutate: Any = None,
    *,
    tar_split: Any = None,
    era: str = "current",
) -> tuple[bytes, dict[str, str]]:
    """The same blob with its TOC changed by ``mutate`` and its tar-split's entries (dicts, one
    a line) by ``tar_split`` (annotations, digests and footer made to agree, so only the lie
    itself is left). ``era="1.47"`` lays it out as containers/storage 1.47 to 1.49 did: the
    tar-split's digest in an annotation rather than in the TOC, a 56-byte footer."""
    loc = zstd_chunked.locate(ann)
    assert loc.tar_split is not None
    toc = zstd_chunked.decompress_toc(
        blob[loc.toc.offset : loc.toc.offset + loc.toc.length], loc.toc.uncompressed, "t"
    )
    if mutate is not None:
        mutate(toc["entries"])
    cts = blob[loc.tar_split.offset : loc.tar_split.offset + loc.tar_split.length]
    tsu = loc.tar_split.uncompressed
    if tar_split is not None:
        dec = zstandard.ZstdDecompressor().decompressobj().decompress(cts)
        lines = [json.loads(x) for x in dec.splitlines()]
        tar_split(lines)
        ts = b"".join(json.dumps(x).encode() + b"\n" for x in lines)
        cts, tsu = zstandard.ZstdCompressor().compress(ts), len(ts)
    if era == "1.47":
        del toc["tarSplitDigest"]
    else:
        toc["tarSplitDigest"] = sha(cts)
    toc_json = json.dumps(toc).encode()
    ctoc = zstandard.ZstdCompressor().compress(toc_json)
    data = blob[: loc.toc.offset - 8]
    toc_off = len(data) + 8
    ts_off = toc_off + len(ctoc) + 8
    if era == "1.47":
        footer = struct.pack("<4Q", toc_off, len(ctoc), len(toc_json), 1) + b"GnUlInUx"
        footer += bytes(16)
    else:
        footer = struct.pack("<7Q", toc_off, len(ctoc), len(toc_json), 1, ts_off, len(cts), tsu)
        footer += b"GNUlInUx"
    new = (
        data
        + zstd_chunked.skippable(ctoc)
        + zstd_chunked.skippable(cts)
        + zstd_chunked.skippable(footer)
    )
    out = {
        mt.ANNOT_ZSTD_CHUNKED_TOC_DIGEST: sha(ctoc),
        mt.ANNOT_ZSTD_CHUNKED_TOC_POSITION: f"{toc_off}:{len(ctoc)}:{len(toc_json)}:1",
        mt.ANNOT_ZSTD_CHUNKED_TARSPLIT_POSITION: f"{ts_off}:{len(cts)}:{tsu}",
    }
    if era == "1.47":
        out[mt.ANNOT_ZSTD_CHUNKED_TARSPLIT_DIGEST_OLD] = sha(cts)
    return new, out


def relie_estargz(blob: bytes, ann: dict[str, str], mutate: Any) -> tuple[bytes, dict[str, str]]:
    off = estargz.parse_footer(blob)
    tar = gzip.decompress(blob[off:-51])
    toc = json.loads(_content(tar, "stargz.index.json"))
    mutate(toc["entries"])
    toc_json = json.dumps(toc, indent="\t").encode()
    member = gzip.compress(estargz.toc_member(toc_json), mtime=0)
    new = blob[:off] + member + estargz.footer(off)
    size = len(gzip.decompress(new))
    return new, {
        mt.ANNOT_ESTARGZ_TOC_DIGEST: sha(toc_json),
        mt.ANNOT_ESTARGZ_UNCOMPRESSED_SIZE: str(size),
    }


def _entry(entries: list[dict[str, Any]], name: str, nth: int = 0) -> dict[str, Any]:
    return [e for e in entries if e["name"] == name][nth]


ZC_LIES = {
    "wrong file digest": (
        lambda es_: _entry(es_, "etc/passwd").update(digest="sha256:" + "0" * 64),
        "lazy-toc-content",
    ),
    "wrong chunk digest": (
        lambda es_: _entry(es_, "big.bin", 1).update(chunkDigest="sha256:" + "1" * 64),
        "lazy-toc-content",
    ),
    "wrong offset": (lambda es_: _entry(es_, "etc/passwd").update(offset=1), "lazy-toc-offset"),
    "wrong end offset": (
        lambda es_: _entry(es_, "big.bin").update(endOffset=_entry(es_, "big.bin")["offset"]),
        "lazy-toc-offset",
    ),
    "wrong mode": (lambda es_: _entry(es_, "etc/").update(mode=0o777), "lazy-toc-entry"),
    "missing entry": (lambda es_: es_.remove(_entry(es_, "fifo")), "lazy-toc-entry"),
    "extra entry": (lambda es_: es_.append({"type": "reg", "name": "ghost"}), "lazy-toc-entry"),
}
ES_LIES = {
    "wrong file digest": (
        lambda es_: _entry(es_, "etc/passwd").update(digest="sha256:" + "0" * 64),
        "lazy-toc-content",
    ),
    "wrong chunk digest": (
        lambda es_: _entry(es_, "big.bin", 1).update(chunkDigest="sha256:" + "1" * 64),
        "lazy-toc-content",
    ),
    "wrong offset": (
        lambda es_: _entry(es_, "big.bin", 1).update(offset=_entry(es_, "big.bin")["offset"]),
        "lazy-toc-offset",
    ),
    "wrong uid": (lambda es_: _entry(es_, "big.bin").update(uid=0), "lazy-toc-entry"),
    "missing entry": (lambda es_: es_.remove(_entry(es_, "fifo")), "lazy-toc-entry"),
}


@pytest.mark.parametrize("lie", sorted(ZC_LIES))
def test_zstd_chunked_lying_toc_is_a_problem(lie: str) -> None:
    plain = kinds_layer()
    blob, ann, diff_id = written(zstd_chunked, plain)
    assert findings(blob, ann, diff_id) == []
    mutate, code = ZC_LIES[lie]
    bad, bad_ann = relie_zstd_chunked(blob, ann, mutate)
    assert code in findings(bad, bad_ann, diff_id)


@pytest.mark.parametrize("lie", sorted(ES_LIES))
def test_estargz_lying_toc_is_a_problem(lie: str) -> None:
    plain = kinds_layer()
    blob, ann, diff_id = written(estargz, plain, chunk_size=64 << 10)
    assert findings(blob, ann, diff_id) == []
    mutate, code = ES_LIES[lie]
    bad, bad_ann = relie_estargz(blob, ann, mutate)
    new_diff = sha(gzip.decompress(bad))
    assert code in findings(bad, bad_ann, new_diff)


def test_lying_annotations_are_problems() -> None:
    plain = kinds_layer()
    blob, ann, diff_id = written(zstd_chunked, plain)
    wrong = {**ann, mt.ANNOT_ZSTD_CHUNKED_TOC_DIGEST: "sha256:" + "2" * 64}
    assert findings(blob, wrong, diff_id) == ["lazy-toc-digest"]
    o, ln, u, t = ann[mt.ANNOT_ZSTD_CHUNKED_TOC_POSITION].split(":")
    moved = {**ann, mt.ANNOT_ZSTD_CHUNKED_TOC_POSITION: f"{int(o) - 1}:{ln}:{u}:{t}"}
    assert "lazy-annotation" in findings(blob, moved, diff_id)
    assert findings(blob, ann, "sha256:" + "3" * 64) == ["lazy-diff-id"]
    assert set(findings(blob[:-10], ann, diff_id)) == {"lazy-toc"}  # truncated footer
    eblob, eann, ediff = written(estargz, plain)
    assert findings(eblob, {**eann, mt.ANNOT_ESTARGZ_UNCOMPRESSED_SIZE: "12"}, ediff) == [
        "lazy-size"
    ]
    wrong = {**eann, mt.ANNOT_ESTARGZ_TOC_DIGEST: "sha256:" + "2" * 64}
    assert findings(eblob, wrong, ediff) == ["lazy-toc-digest"]
    assert findings(eblob[:-3], eann, ediff) == ["lazy-toc"]


def _ts_file(lines: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return next(x for x in lines if x["type"] == 1 and x.get("name") == name)


def _ts_segment_before(lines: list[dict[str, Any]], name: str) -> dict[str, Any]:
    i = lines.index(_ts_file(lines, name))
    return lines[i - 1]


def _flip_payload(doc: dict[str, Any], at: int = -1) -> None:
    raw = bytearray(base64.b64decode(doc["payload"]))
    raw[at] ^= 1
    doc["payload"] = base64.b64encode(bytes(raw)).decode()


TS_LIES = {
    # containers/storage rebuilds the layer from the tar-split and the files of a partial pull
    # (tar-split's asm.WriteOutputTarStream checks each file's CRC-64), and checks the result
    # against the diff_id: each of these makes that fail, though TOC and tar agree
    "a header byte": lambda ts: _flip_payload(_ts_segment_before(ts, "etc/passwd"), 150),
    "a file's CRC-64": lambda ts: _flip_payload(_ts_file(ts, "big.bin")),
    "a file's name": lambda ts: _ts_file(ts, "big.bin").update(name="big.bim"),
    "a file's size": lambda ts: _ts_file(ts, "big.bin").update(size=7),
    "a file left out": lambda ts: ts.remove(_ts_file(ts, "etc/passwd")),
    "the end blocks": lambda ts: _flip_payload(ts[-1]),
    "an entry too many": lambda ts: ts.append({"type": 2, "payload": "AA==", "position": 999}),
}


@pytest.mark.parametrize("lie", sorted(TS_LIES))
def test_zstd_chunked_lying_tar_split_is_a_problem(lie: str) -> None:
    plain = kinds_layer()
    blob, ann, diff_id = written(zstd_chunked, plain)
    same, same_ann = relie_zstd_chunked(blob, ann, tar_split=lambda ts: None)
    assert findings(same, same_ann, diff_id) == []  # the helper itself changes nothing
    bad, bad_ann = relie_zstd_chunked(blob, ann, tar_split=TS_LIES[lie])
    assert findings(bad, bad_ann, diff_id) == ["lazy-tar-split"]


def test_zstd_chunked_as_containers_storage_1_47_laid_it_out_is_read() -> None:
    """containers/storage 1.47 to 1.49 (podman 4.6, 4.7) padded the 40-byte footer to 56 bytes
    and named the tar-split's digest in an annotation: valid layers, read by the annotations."""
    plain = kinds_layer()
    blob, ann, diff_id = written(zstd_chunked, plain)
    old, old_ann = relie_zstd_chunked(blob, ann, era="1.47")
    assert old[-24:-16] == b"GnUlInUx" and old[-16:] == bytes(16)
    assert findings(old, old_ann, diff_id) == []
    bad, bad_ann = relie_zstd_chunked(blob, ann, era="1.47", tar_split=TS_LIES["a file's size"])
    assert findings(bad, bad_ann, diff_id) == ["lazy-tar-split"]
    lying = {**old_ann, mt.ANNOT_ZSTD_CHUNKED_TARSPLIT_DIGEST_OLD: "sha256:" + "4" * 64}
    assert findings(old, lying, diff_id) == ["lazy-toc-digest"]


def test_toc_times_compare_as_instants_whatever_the_utc_offset() -> None:
    """Go's JSON writes a time in the writer's local zone (podman in Berlin writes +02:00):
    the same instant is no lie."""
    plain = kinds_layer()
    blob, ann, diff_id = written(zstd_chunked, plain)

    def berlin(entries: list[dict[str, Any]]) -> None:
        for e in entries:
            if e.get("modtime") == "2020-09-13T12:26:40Z":
                e["modtime"] = "2020-09-13T14:26:40+02:00"
        _entry(entries, "frac")["modtime"] = "2020-09-13T07:26:40.250-05:00"

    local, local_ann = relie_zstd_chunked(blob, ann, berlin)
    assert findings(local, local_ann, diff_id) == []
    later, later_ann = relie_zstd_chunked(
        blob, ann, lambda es_: _entry(es_, "frac").update(modtime="2020-09-13T12:26:40.26Z")
    )
    assert findings(later, later_ann, diff_id) == ["lazy-toc-entry"]


def test_a_toc_bomb_is_refused_after_its_announced_size() -> None:
    """A TOC frame may expand to far more than manifest-position announces: only the announced
    size (plus one byte) is ever decompressed."""
    huge = zstandard.ZstdCompressor().compressobj()
    ctoc = huge.compress(bytes(1 << 28)) + huge.flush()  # 256 MiB of zeros in ~8 KiB
    with pytest.raises(CorruptStreamError, match="more than the 100 announced"):
        zstd_chunked.decompress_toc(ctoc, 100, "layer")


TYPE_LIES = {
    "a string chunkOffset": lambda es_: _entry(es_, "big.bin", 1).update(chunkOffset="x"),
    "a list chunkSize": lambda es_: _entry(es_, "big.bin", 1).update(chunkSize=[1]),
    "a string innerOffset": lambda es_: _entry(es_, "big.bin").update(innerOffset="1"),
    "a negative mode": lambda es_: _entry(es_, "etc/").update(mode=-1),
    "a number for a name": lambda es_: _entry(es_, "etc/").update(name=5),
    "xattrs as a list": lambda es_: _entry(es_, "xattr").update(xattrs=["a"]),
}


@pytest.mark.parametrize("fmt", ["zstd:chunked", "estargz"])
@pytest.mark.parametrize("lie", sorted(TYPE_LIES))
def test_a_toc_of_wrong_json_types_is_a_problem_not_a_crash(
    tmp_path: Path, fmt: str, lie: str
) -> None:
    plain = kinds_layer()
    if fmt == "zstd:chunked":
        blob, ann, diff_id = written(zstd_chunked, plain)
        bad, bad_ann = relie_zstd_chunked(blob, ann, TYPE_LIES[lie])
        media_type = mt.MT_OCI_LAYER_ZSTD
    else:
        blob, ann, diff_id = written(estargz, plain, chunk_size=64 << 10)
        bad, bad_ann = relie_estargz(blob, ann, TYPE_LIES[lie])
        diff_id = sha(gzip.decompress(bad))
        media_type = mt.MT_OCI_LAYER_GZIP
    layout = one_layer_layout(tmp_path, bad, bad_ann, diff_id, media_type)
    r = run_cli("verify", layout, "--json")
    assert r.code in (4, 5) and "Traceback" not in r.stderr, r.stderr
    codes = [p["code"] for p in json.loads(r.stdout)["problems"]]
    assert "lazy-toc" in codes and set(codes) <= {"lazy-toc", "lazy-toc-entry"}


def one_layer_layout(
    tmp_path: Path, blob: bytes, ann: dict[str, str], diff_id: str, media_type: str
) -> Path:
    layout = Layout.init(tmp_path / "oci")
    info = layout.put_bytes(blob)
    cfg = layout.put_json(
        {
            "architecture": "amd64",
            "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
        },
        mt.MT_OCI_CONFIG,
    )
    man = layout.put_json(
        {
            "schemaVersion": 2,
            "mediaType": mt.MT_OCI_MANIFEST,
            "config": cfg.to_json(),
            "layers": [{**info.descriptor(media_type).to_json(), "annotations": ann}],
        },
        mt.MT_OCI_MANIFEST,
    )
    set_index(layout, [named(man, "lie")])
    return layout.root


def test_verify_reports_a_lying_toc_with_one_line_per_problem(tmp_path: Path) -> None:
    plain = kinds_layer()
    blob, ann, diff_id = written(zstd_chunked, plain)
    bad, bad_ann = relie_zstd_chunked(blob, ann, ZC_LIES["wrong file digest"][0])
    root = one_layer_layout(tmp_path, bad, bad_ann, diff_id, mt.MT_OCI_LAYER_ZSTD)
    r = run_cli("verify", root, "--json")
    assert r.code == 5
    doc = json.loads(r.stdout)
    assert [p["code"] for p in doc["problems"]] == ["lazy-toc-content"]
    assert "etc/passwd" in doc["problems"][0]["message"]
    r = run_cli("unpack", f"{root}:lie", tmp_path / "u", "--rootless")
    assert r.code == 0, r.stderr  # the tar itself is sound: unpack reads the tar, not the TOC


# ---------------------------------------------------------------------------------- import
@pytest.mark.parametrize("fmt", ["zstd:chunked", "estargz"])
def test_from_docker_save_writes_lazy_layers(tmp_path: Path, fmt: str) -> None:
    from conftest import REPO

    sample = REPO / "testdata" / "sample-docker-save.tar"
    r = run_cli("from-docker-save", sample, "-o", tmp_path / "plain", "--json")
    assert r.code == 0, r.stderr
    r = run_cli("from-docker-save", sample, "-o", tmp_path / "lazy", "--compression", fmt, "--json")
    assert r.code == 0, r.stderr
    assert verify_layout(tmp_path / "lazy").ok
    for ref in ("layouttool-sample:1.0", "layouttool-sample:latest"):
        plain = json.loads(run_cli("inspect", f"{tmp_path / 'plain'}:{ref}", "--json").stdout)
        lazy = json.loads(run_cli("inspect", f"{tmp_path / 'lazy'}:{ref}", "--json").stdout)
        assert [layer["lazy"] for layer in lazy["layers"]] == [fmt] * len(plain["layers"])
        same = [
            a["diffID"] == b["diffID"] for a, b in zip(plain["layers"], lazy["layers"], strict=True)
        ]
        assert all(same) if fmt == "zstd:chunked" else not any(same)
        assert (plain["configDigest"] == lazy["configDigest"]) is (fmt == "zstd:chunked")
    # the import equals a conversion of the plain import, byte for byte
    r = run_cli(
        "convert",
        f"{tmp_path / 'plain'}:layouttool-sample:1.0",
        "--compression",
        fmt,
        "-o",
        tmp_path / "conv",
    )
    assert r.code == 0, r.stderr
    a = json.loads(
        run_cli("inspect", f"{tmp_path / 'conv'}:layouttool-sample:1.0", "--json").stdout
    )
    b = json.loads(
        run_cli("inspect", f"{tmp_path / 'lazy'}:layouttool-sample:1.0", "--json").stdout
    )
    assert a["layers"] == b["layers"] and a["configDigest"] == b["configDigest"]
    r = run_cli(
        "unpack", f"{tmp_path / 'lazy'}:layouttool-sample:1.0", tmp_path / "u1", "--rootless"
    )
    assert r.code == 0, r.stderr
    r = run_cli(
        "unpack", f"{tmp_path / 'plain'}:layouttool-sample:1.0", tmp_path / "u2", "--rootless"
    )
    assert r.code == 0, r.stderr
    from treeutil import diff, snapshot

    assert (
        diff(snapshot(tmp_path / "u2", owners=False), snapshot(tmp_path / "u1", owners=False)) == []
    )


# ---------------------------------------------------------------------------------- property
_names = st.text(alphabet="abcxyz._-", min_size=1, max_size=12).filter(
    lambda n: n not in (".", "..") and not n.startswith(".wh.")
)


@st.composite
def random_layers(draw: Any) -> bytes:
    entries: list[dict[str, Any]] = []
    used: set[str] = set()
    for _ in range(draw(st.integers(0, 12))):
        name = "/".join(draw(st.lists(_names, min_size=1, max_size=3)))
        if name in used or any(name.startswith(u + "/") or u.startswith(name + "/") for u in used):
            continue
        used.add(name)
        kind = draw(st.sampled_from(["file", "file", "dir", "symlink", "fifo"]))
        e: dict[str, Any] = {"type": kind, "name": name, "mtime": draw(st.integers(0, 2**33))}
        if kind == "file":
            e["data"] = draw(
                st.one_of(
                    st.binary(max_size=2000),
                    st.integers(0, 3000).map(bytes),
                    st.binary(max_size=32).map(lambda b: b * 200),
                )
            )
        elif kind == "symlink":
            e["target"] = draw(_names)
        entries.append(e)
    fmt = draw(st.sampled_from([tarfile.PAX_FORMAT, tarfile.GNU_FORMAT]))
    return build_layer(entries, fmt=fmt)


@settings(max_examples=25, deadline=None)
@given(plain=random_layers(), chunk=st.sampled_from([777, 4096, 4 << 20]))
def test_round_trips_hold_for_any_layer(plain: bytes, chunk: int) -> None:
    blob, ann, diff_id = written(zstd_chunked, plain)
    assert diff_id == sha(plain)
    check_zstd_chunked(blob, ann, plain)
    assert findings(blob, ann, diff_id) == []
    eblob, eann, ediff = written(estargz, plain, chunk_size=chunk)
    tar, _ = check_estargz(eblob, eann)
    assert ediff == sha(tar)
    assert findings(eblob, eann, ediff) == []
    want = [(m.name, m.type, m.size) for m in tar_members(plain)]
    got = [(m.name, m.type, m.size) for m in tar_members(tar)]
    assert got[1:-1] == want
    for m in tar_members(plain):
        if m.isreg():
            assert _content(tar, m.name) == _content(plain, m.name)


# ---------------------------------------------------------------------------------- tables
def table_layers() -> list[tuple[str, bytes]]:
    """Every layer of the shared peer tables (containerd's breakouts, moby's whiteouts)."""
    from conftest import shared_fixture

    out: list[tuple[str, bytes]] = []
    cd = json.loads(shared_fixture("layer-tables", "containerd_TestBreakouts.json").read_text())
    for case in cd["cases"]:
        for i, layer in enumerate(case["layers"]):
            entries = [
                {**e, "name": e["name"].replace("${OUTSIDE}", "/outside")}
                | (
                    {"target": e["target"].replace("${OUTSIDE}", "/outside")}
                    if "target" in e
                    else {}
                )
                for e in layer
            ]
            out.append((f"containerd {case['name']} {i}", build_layer(entries)))
    for i, step in enumerate(moby_steps()):
        out.append((f"moby step {i}", step))
    return out


def moby_steps() -> list[bytes]:
    from conftest import shared_fixture

    doc = json.loads(
        shared_fixture("layer-tables", "moby-go-archive_TestApplyLayerWhiteouts.json").read_text()
    )
    return [
        build_layer(
            [
                {"type": "dir", "name": n, "mode": 0o700}
                if n.endswith("/")
                else {"name": n, "mode": 0o600}
                for n in step["change"]
            ]
        )
        for step in doc["steps"]
    ]


def test_every_table_layer_round_trips_through_both_formats() -> None:
    from layouttool.errors import UnsupportedError
    from layouttool.lazy.tarsplit import clean

    refused = 0
    for name, plain in table_layers():
        names = [clean(m.name) for m in tar_members(plain)]
        if len(set(names)) < len(names):
            # tar-split cannot describe a path twice (containers/storage refuses it too)
            with pytest.raises(UnsupportedError, match="twice"):
                written(zstd_chunked, plain)
            refused += 1
        else:
            blob, ann, diff_id = written(zstd_chunked, plain)
            assert diff_id == sha(plain), name
            assert findings(blob, ann, diff_id) == [], name
        eblob, eann, ediff = written(estargz, plain)
        tar, _ = check_estargz(eblob, eann)
        assert findings(eblob, eann, ediff) == [], name
        want = [(m.name, m.type, m.linkname) for m in tar_members(plain)]
        assert [(m.name, m.type, m.linkname) for m in tar_members(tar)][1:-1] == want, name
    assert 0 < refused < 5


@pytest.mark.parametrize("fmt", ["zstd:chunked", "estargz"])
def test_stacked_whiteout_layers_unpack_as_the_gzip_original(tmp_path: Path, fmt: str) -> None:
    from treeutil import diff, snapshot

    src = lazy_image(tmp_path, moby_steps())
    r = run_cli("convert", f"{src}:app", "--compression", fmt, "-o", tmp_path / "lazy")
    assert r.code == 0, r.stderr
    for lay, dest in ((src, "u-gzip"), (tmp_path / "lazy", "u-lazy")):
        r = run_cli("unpack", f"{lay}:app", tmp_path / dest, "--rootless")
        assert r.code == 0, r.stderr
    a, b = snapshot(tmp_path / "u-gzip", owners=False), snapshot(tmp_path / "u-lazy", owners=False)
    assert diff(a, b) == []
    assert "foobar" in a and "foo/.abc" not in a  # the steps did whiteout and opaque work


# ---------------------------------------------------------------------------------- build
@pytest.mark.parametrize("fmt", ["zstd:chunked", "estargz"])
def test_append_and_repack_write_lazy_layers(tmp_path: Path, fmt: str) -> None:
    from treeutil import diff, snapshot

    from layouttool.ops.new import new_image

    layout = tmp_path / "oci"
    new_image(f"{layout}:base")
    src = tmp_path / "src"
    (src / "etc").mkdir(parents=True)
    (src / "etc" / "hosts").write_text("127.0.0.1 localhost\n")
    (src / "big.bin").write_bytes(random.Random(3).randbytes(200_000))
    r = run_cli("append", f"{layout}:base", src, "--compression", fmt, "--json")
    assert r.code == 0, r.stderr
    assert verify_layout(layout).ok
    ins = json.loads(run_cli("inspect", f"{layout}:base", "--json").stdout)
    assert [layer["lazy"] for layer in ins["layers"]] == [fmt]
    r = run_cli("unpack", f"{layout}:base", tmp_path / "u", "--rootless")
    assert r.code == 0, r.stderr
    assert diff(snapshot(src, owners=False), snapshot(tmp_path / "u", owners=False)) == []
    # edit the unpacked tree and repack it as one more lazy layer
    (tmp_path / "u" / "etc" / "motd").write_text("hi\n")
    r = run_cli("repack", f"{layout}:base", tmp_path / "u", "--compression", fmt, "--json")
    assert r.code == 0, r.stderr
    assert verify_layout(layout).ok
    ins = json.loads(run_cli("inspect", f"{layout}:base", "--json").stdout)
    assert [layer["lazy"] for layer in ins["layers"]] == [fmt, fmt]
    r = run_cli("unpack", f"{layout}:base", tmp_path / "u2", "--rootless")
    assert r.code == 0, r.stderr
    assert (tmp_path / "u2" / "etc" / "motd").read_text() == "hi\n"
    assert not (tmp_path / "u2" / "stargz.index.json").exists()
