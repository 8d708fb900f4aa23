"""Codecs: sniffing by magic bytes, streaming round trips, corrupt streams, determinism."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
import random
import subprocess
import zlib
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import zstandard
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from layouttool import codec
from layouttool.codec import (
    Compression,
    HashingReader,
    LimitReader,
    PeekReader,
    PrefetchReader,
    new_encoder,
    open_decompress,
    open_sniffed,
    pump,
    sniff,
)
from layouttool.digest import Digest
from layouttool.errors import CorruptStreamError, SizeLimitError


class Chunky:
    """A reader that hands out at most ``step`` bytes per read (like a pipe or a socket)."""

    def __init__(self, data: bytes, step: int = 7) -> None:
        self._buf = io.BytesIO(data)
        self._step = step

    def read(self, n: int = -1, /) -> bytes:
        if n < 0:
            return self._buf.read()
        return self._buf.read(min(n, self._step))


def compress(kind: Compression, data: bytes, level: int | None = None) -> bytes:
    enc = new_encoder(kind, level)
    return enc.compress(data) + enc.flush()


def read_all(reader: object, sizes: list[int]) -> bytes:
    out: list[bytes] = []
    i = 0
    while True:
        n = sizes[i % len(sizes)] if sizes else -1
        i += 1
        chunk = reader.read(n)  # type: ignore[attr-defined]
        if not chunk:
            return b"".join(out)
        out.append(chunk)


# ----------------------------------------------------------------------------- sniffing
def _skippable(payload: bytes, nibble: int = 0) -> bytes:
    magic = (0x184D2A50 + nibble).to_bytes(4, "little")
    return magic + len(payload).to_bytes(4, "little") + payload


@pytest.mark.parametrize(
    ("head", "kind"),
    [
        (gzip.compress(b"x", mtime=0), Compression.GZIP),
        (zstandard.ZstdCompressor().compress(b"x"), Compression.ZSTD),
        (_skippable(b"meta"), Compression.ZSTD),
        (_skippable(b"meta", 0xF), Compression.ZSTD),
        (lzma.compress(b"x"), Compression.XZ),
        (bz2.compress(b"x"), Compression.BZIP2),
        (b"BZh", Compression.NONE),  # too short to be bzip2
        (b"BZhx rest", Compression.NONE),  # no block-size digit
        (b"ustar\x00" + b"\x00" * 20, Compression.NONE),
        (b"", Compression.NONE),
        (b"\x1f", Compression.NONE),
        ((0x184D2A60).to_bytes(4, "little"), Compression.NONE),  # just past the skippable range
    ],
)
def test_sniff(head: bytes, kind: Compression) -> None:
    assert sniff(head[:8]) is kind


def test_sniff_with_peek_keeps_the_bytes() -> None:
    data = gzip.compress(b"payload" * 100, mtime=0)
    kind, reader = open_sniffed(Chunky(data, 3))
    assert kind is Compression.GZIP
    assert read_all(reader, [5, 100]) == b"payload" * 100


def test_skippable_frame_then_data_decompresses() -> None:
    frame = zstandard.ZstdCompressor().compress(b"after the skippable frame")
    kind, reader = open_sniffed(io.BytesIO(_skippable(b"metadata") + frame))
    assert kind is Compression.ZSTD
    assert read_all(reader, [4096]) == b"after the skippable frame"


def test_xz_and_bzip2_decompress() -> None:
    for kind, blob in (
        (Compression.XZ, lzma.compress(b"xz data")),
        (Compression.BZIP2, bz2.compress(b"bz data")),
    ):
        found, reader = open_sniffed(io.BytesIO(blob))
        assert found is kind
        assert read_all(reader, [3]) in (b"xz data", b"bz data")


def test_compression_parse() -> None:
    assert Compression.parse("GZIP") is Compression.GZIP
    assert Compression.parse("uncompressed") is Compression.NONE
    assert Compression.parse("zstd") is Compression.ZSTD
    with pytest.raises(CorruptStreamError, match="unknown compression 'lz4'"):
        Compression.parse("lz4")


# ----------------------------------------------------------------------------- round trips
_payload = st.one_of(
    st.binary(max_size=4096),
    # compressible data with long runs, so that the deflate/zstd paths do real work
    st.lists(st.sampled_from([b"a" * 100, b"layer", os.urandom(64)]), max_size=200).map(
        b"".join
    ),
)
_sizes = st.lists(st.integers(min_value=1, max_value=70_000), min_size=1, max_size=6)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=_payload, level=st.integers(0, 9), sizes=_sizes, step=st.integers(1, 5000))
def test_gzip_round_trip(data: bytes, level: int, sizes: list[int], step: int) -> None:
    """Every gzip level (ISA-L 0-3, zlib 4-9) round-trips through our reader and zlib's."""
    blob = compress(Compression.GZIP, data, level)
    assert gzip.decompress(blob) == data
    assert read_all(open_decompress(Chunky(blob, step), Compression.GZIP), sizes) == data


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=_payload, level=st.integers(1, 19), sizes=_sizes, step=st.integers(1, 5000))
def test_zstd_round_trip(data: bytes, level: int, sizes: list[int], step: int) -> None:
    blob = compress(Compression.ZSTD, data, level)
    dctx = zstandard.ZstdDecompressor()
    assert dctx.stream_reader(io.BytesIO(blob), read_across_frames=True).read() == data
    assert read_all(open_decompress(Chunky(blob, step), Compression.ZSTD), sizes) == data


@settings(max_examples=40, deadline=None)
@given(
    frames=st.lists(st.binary(max_size=3000), min_size=2, max_size=5),
    sizes=_sizes,
    step=st.integers(1, 5000),
)
def test_zstd_multi_frame_decompresses_fully(
    frames: list[bytes], sizes: list[int], step: int
) -> None:
    """zstandard stops after the first frame by default; we must read all of them."""
    blob = b"".join(zstandard.ZstdCompressor().compress(f) for f in frames)
    got = read_all(open_decompress(Chunky(blob, step), Compression.ZSTD), sizes)
    assert got == b"".join(frames)


@settings(max_examples=30, deadline=None)
@given(
    members=st.lists(st.binary(max_size=3000), min_size=2, max_size=4),
    sizes=_sizes,
)
def test_gzip_multi_member_decompresses_fully(members: list[bytes], sizes: list[int]) -> None:
    blob = b"".join(gzip.compress(m, mtime=0) for m in members)
    assert read_all(open_decompress(io.BytesIO(blob), Compression.GZIP), sizes) == b"".join(
        members
    )


@settings(max_examples=40, deadline=None)
@given(data=st.binary(max_size=10_000), sizes=_sizes, step=st.integers(1, 5000))
def test_none_round_trip(data: bytes, sizes: list[int], step: int) -> None:
    assert compress(Compression.NONE, data) == data
    assert read_all(open_decompress(Chunky(data, step), Compression.NONE), sizes) == data


def test_large_stream_in_small_reads() -> None:
    data = os.urandom(1 << 20) + b"z" * (3 << 20)
    for kind in (Compression.GZIP, Compression.ZSTD):
        blob = compress(kind, data)
        assert read_all(open_decompress(io.BytesIO(blob), kind), [65536, 1, 333_333]) == data


# ----------------------------------------------------------------------------- corrupt streams
@pytest.mark.parametrize("kind", [Compression.GZIP, Compression.ZSTD])
@pytest.mark.parametrize("cut", [0.25, 0.5, 0.9])
def test_truncated_stream_is_corrupt(kind: Compression, cut: float) -> None:
    blob = compress(kind, os.urandom(50_000))
    truncated = blob[: int(len(blob) * cut)]
    with pytest.raises(CorruptStreamError) as exc:
        read_all(open_decompress(io.BytesIO(truncated), kind, what="layer sha256:ab"), [8192])
    assert exc.value.exit_code == 4
    assert str(exc.value).startswith(f"layer sha256:ab: decompress {kind.value}: ")


@pytest.mark.parametrize(
    "params",
    [
        {"write_checksum": True, "write_content_size": True},
        {"write_checksum": False, "write_content_size": False},
        {"write_checksum": True, "write_content_size": False, "write_dict_id": False},
    ],
)
def test_zstd_cut_anywhere_is_corrupt(params: dict[str, bool]) -> None:
    """Whatever the frame header holds, a zstd stream cut at any byte is refused."""
    data = os.urandom(3000) + b"r" * 300_000
    blob = zstandard.ZstdCompressor(**params).compress(data)  # type: ignore[arg-type]
    assert read_all(open_decompress(io.BytesIO(blob), Compression.ZSTD), [65536]) == data
    for cut in sorted({1, 4, 5, 6, 9, len(blob) // 2, len(blob) - 4, len(blob) - 1}):
        with pytest.raises(CorruptStreamError, match="truncated"):
            read_all(open_decompress(io.BytesIO(blob[:cut]), Compression.ZSTD), [65536])


def test_zstd_trailing_garbage_is_corrupt() -> None:
    blob = zstandard.ZstdCompressor().compress(b"data") + b"garbage!"
    with pytest.raises(CorruptStreamError):
        read_all(open_decompress(io.BytesIO(blob), Compression.ZSTD), [100])


@pytest.mark.parametrize("kind", [Compression.GZIP, Compression.ZSTD, Compression.XZ])
def test_garbage_after_magic_is_corrupt(kind: Compression) -> None:
    magic = {Compression.GZIP: b"\x1f\x8b\x08\x00", Compression.ZSTD: b"\x28\xb5\x2f\xfd"}.get(
        kind, b"\xfd7zXZ\x00"
    )
    with pytest.raises(CorruptStreamError):
        read_all(open_decompress(io.BytesIO(magic + b"\xff" * 64), kind), [100])


def test_gzip_bad_crc_is_corrupt() -> None:
    blob = bytearray(gzip.compress(b"hello world" * 10, mtime=0))
    blob[-8] ^= 0xFF  # CRC32 in the trailer
    with pytest.raises(CorruptStreamError):
        read_all(open_decompress(io.BytesIO(bytes(blob)), Compression.GZIP), [1000])


# ----------------------------------------------------------------------------- determinism
@pytest.mark.parametrize("level", [0, 1, 2, 3, 6, 9])
def test_gzip_output_is_deterministic(level: int) -> None:
    data = os.urandom(20_000) + b"x" * 50_000
    a = compress(Compression.GZIP, data, level)
    b = compress(Compression.GZIP, data, level)
    assert a == b
    assert a[:2] == b"\x1f\x8b"
    assert a[4:8] == b"\x00\x00\x00\x00"  # header mtime 0
    assert a[3] & 0x08 == 0  # no file name stored


def _gzip_in_pieces(data: bytes, level: int, cuts: list[int]) -> bytes:
    """Feed ``data`` to a gzip encoder in pieces of the sizes ``cuts`` (cycled)."""
    enc = new_encoder(Compression.GZIP, level)
    out, i, k = [], 0, 0
    while i < len(data):
        n = cuts[k % len(cuts)]
        out.append(enc.compress(data[i:i + n]))
        i, k = i + n, k + 1
    return b"".join(out) + enc.flush()


_BLOCKY = os.urandom(300_000) + b"layouttool " * 250_000 + os.urandom(100_000)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(level=st.sampled_from([0, 2, 3, 6]),
       cuts=st.lists(st.integers(1, 3 << 20), min_size=1, max_size=4))
def test_gzip_output_does_not_depend_on_how_it_is_fed(level: int, cuts: list[int]) -> None:
    """Blocks are cut at fixed offsets of the content: the bytes (hence the layer digest) are
    the same however the input arrives, across several blocks."""
    assert len(_BLOCKY) > 3 * codec.GZIP_BLOCK_SIZE
    whole = compress(Compression.GZIP, _BLOCKY, level)
    assert _gzip_in_pieces(_BLOCKY, level, cuts) == whole
    assert gzip.decompress(whole) == _BLOCKY


@pytest.mark.parametrize("workers", [1, 3])
def test_gzip_output_does_not_depend_on_threads(
    workers: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same bytes with one compression thread or several (the digest of a layer must not
    depend on the machine), and the blocks form a single gzip member zlib reads."""
    default = compress(Compression.GZIP, _BLOCKY, 2)
    pool = ThreadPoolExecutor(workers)
    monkeypatch.setattr(codec, "_pool", pool)
    monkeypatch.setattr(codec, "_cpus", lambda: workers)
    try:
        assert compress(Compression.GZIP, _BLOCKY, 2) == default
    finally:
        pool.shutdown()
    d = zlib.decompressobj(31)
    assert d.decompress(default) == _BLOCKY
    assert d.eof and d.unused_data == b""  # one member, nothing after it


@pytest.mark.parametrize("threads", [None, 1, 3])
def test_gzip_one_large_call_keeps_few_blocks_in_flight(
    monkeypatch: pytest.MonkeyPatch, threads: int | None
) -> None:
    """Memory stays bounded whatever the caller passes: a 24 MiB compress() call never has
    more than the encoder's depth (2 x its share of the CPUs) + 1 blocks queued at once, and
    the output does not depend on that share."""
    most = [0]
    real_submit = codec._BlockGzipEncoder._submit

    def submit(self: Any, block: bytes) -> None:
        real_submit(self, block)
        most[0] = max(most[0], len(self._pending))

    monkeypatch.setattr(codec._BlockGzipEncoder, "_submit", submit)
    data = os.urandom(1 << 20) * 24
    enc = new_encoder(Compression.GZIP, 1, threads)
    blob = enc.compress(data) + enc.flush()
    assert gzip.decompress(blob) == data
    assert most[0] <= 2 * (codec._cpus() if threads is None else threads) + 1
    assert blob == compress(Compression.GZIP, data, 1)


@pytest.mark.parametrize("level", [2, 6])
def test_gzip_blocks_are_primed_with_the_previous_window(level: int) -> None:
    """Each block starts with the previous block's last 32 KiB as dictionary, so content that
    repeats across a block boundary is still matched: four blocks of a repeated 4 KiB unit of
    random nibbles come out smaller than the same blocks deflated independently, by about the
    (half-size) literals of the unit that each of the three later blocks would otherwise
    spell out."""
    # 4 bits of entropy per byte: compressible, so never stored (which the priming is not for)
    unit = bytes(b & 0x0F for b in os.urandom(4096))
    size = codec.GZIP_BLOCK_SIZE
    data = unit * (4 * size // len(unit))
    blob = compress(Compression.GZIP, data, level)
    assert gzip.decompress(blob) == data
    lib = zlib if level > 3 else codec.isal_zlib
    alone = 0
    for i in range(0, len(data), size):
        c = lib.compressobj(level, lib.DEFLATED, -15)
        alone += len(c.compress(data[i:i + size]) + c.flush(lib.Z_SYNC_FLUSH))
    assert len(blob) < alone - len(unit)


@pytest.mark.parametrize("level", [1, 2, 6])
def test_gzip_blocks_that_do_not_compress_are_stored(level: int) -> None:
    """Random bytes are stored as they are, in stored deflate blocks (5 bytes per 64 KiB),
    while a block with a compressible run anywhere in it is still deflated: no CPU spent on
    what cannot shrink, never more than 0.01 % over the input, and gzip/zlib read it back."""
    size = codec.GZIP_BLOCK_SIZE
    noise = os.urandom(2 * size)
    blob = compress(Compression.GZIP, noise, level)
    assert gzip.decompress(blob) == noise
    pieces = -(-size // 0xFFFF)
    assert len(blob) == 10 + 2 * (size + 5 * pieces) + 2 + 8  # header, 2 blocks, end, trailer
    # a 64 KiB run of text in the middle of a random block: sampled, so the block is deflated
    mixed = bytearray(os.urandom(size))
    mixed[size // 2 : size // 2 + (64 << 10)] = (b"all work and no play " * 3200)[: 64 << 10]
    blob = compress(Compression.GZIP, noise[:size] + bytes(mixed), level)
    assert gzip.decompress(blob) == noise[:size] + bytes(mixed)
    assert len(blob) < 2 * size - (32 << 10)
    assert subprocess.run(["gzip", "-t"], input=blob).returncode == 0


def test_gzip_of_nothing_is_a_valid_empty_member() -> None:
    blob = compress(Compression.GZIP, b"", 2)
    assert gzip.decompress(blob) == b""
    assert blob[:3] == b"\x1f\x8b\x08"


@pytest.mark.parametrize("threads", [1, 2, 4])
def test_zstd_output_does_not_depend_on_threads(threads: int) -> None:
    data = os.urandom(10_000) + b"y" * (2 << 20)
    one = _zstd_with_threads(data, 1)
    assert _zstd_with_threads(data, threads) == one
    assert zstandard.ZstdDecompressor().stream_reader(io.BytesIO(one)).read() == data


@pytest.mark.parametrize("threads", [2, 4])
def test_zstd_long_distance_output_does_not_depend_on_threads(threads: int) -> None:
    # long-distance matching in multi-threaded mode: a repeat 12 MiB back, many jobs long
    rnd = random.Random(7)
    block = rnd.randbytes(3 << 20)
    data = block + rnd.randbytes(9 << 20) + block
    one = _zstd_with_threads(data, 1)
    assert _zstd_with_threads(data, threads) == one
    assert zstandard.ZstdDecompressor().stream_reader(io.BytesIO(one)).read() == data


def test_zstd_finds_repeats_a_16_mib_window_apart() -> None:
    # a layer repeats content far apart (a library, a copy): the window and long-distance
    # matching find the second copy 12 MiB after the first, which a 2 MiB window cannot
    rnd = random.Random(8)
    block = rnd.randbytes(1 << 20)
    data = block + rnd.randbytes(11 << 20) + block
    out = _zstd_with_threads(data, 2)
    assert len(out) < len(data) - (1 << 20) + (64 << 10)
    params = zstandard.get_frame_parameters(out)
    assert params.window_size == 16 << 20


def _zstd_with_threads(data: bytes, threads: int) -> bytes:
    enc = new_encoder(Compression.ZSTD, None, threads)
    return enc.compress(data) + enc.flush()


def test_encoder_level_checks() -> None:
    with pytest.raises(CorruptStreamError, match="gzip level 10 out of range"):
        new_encoder(Compression.GZIP, 10)
    with pytest.raises(CorruptStreamError, match="zstd level 0 out of range"):
        new_encoder(Compression.ZSTD, 0)
    with pytest.raises(CorruptStreamError, match="cannot write xz layers"):
        new_encoder(Compression.XZ)


# ----------------------------------------------------------------------------- readers
def test_limit_reader() -> None:
    assert read_all(LimitReader(io.BytesIO(b"x" * 100), 100, "layer"), [7]) == b"x" * 100
    assert LimitReader(io.BytesIO(b"x" * 100), 100, "layer").read() == b"x" * 100
    with pytest.raises(SizeLimitError, match="layer is larger than the limit of 99 bytes") as e:
        read_all(LimitReader(io.BytesIO(b"x" * 100), 99, "layer"), [7])
    assert e.value.exit_code == 4
    with pytest.raises(SizeLimitError):
        LimitReader(io.BytesIO(b"x" * 100), 10, "layer").read()


def test_limit_reader_stops_a_bomb_early() -> None:
    """A highly compressible stream is stopped at the limit, not after full expansion."""
    zeros = zstandard.ZstdCompressor().compress(b"\x00" * (64 << 20))
    consumed = io.BytesIO(zeros)
    reader = LimitReader(open_decompress(consumed, Compression.ZSTD), 1 << 20, "layer")
    with pytest.raises(SizeLimitError):
        read_all(reader, [65536])


def test_hashing_reader() -> None:
    data = os.urandom(5000)
    h = HashingReader(Chunky(data, 13))
    assert h.read(100) == data[:13]
    assert h.drain() == len(data) - 13
    assert h.count == len(data)
    assert h.digest() == Digest.of_bytes(data)
    buf = bytearray(10)
    h2 = HashingReader(io.BytesIO(b"abc"), "sha512")
    assert h2.readinto(buf) == 3
    assert h2.digest() == Digest.of_bytes(b"abc", "sha512")


def test_peek_reader() -> None:
    p = PeekReader(Chunky(b"0123456789", 3))
    assert p.peek(5) == b"01234"
    assert p.peek(2) == b"01"
    assert p.read(2) == b"01"
    assert p.read() == b"23456789"
    assert p.read() == b""


def test_peek_reader_does_not_cut_the_first_read_short() -> None:
    """The read that hands back the peeked bytes reads on for the rest: a short first read
    would shift every later fixed-size chunk off the source's boundaries (and each chunk would
    then be joined from two pieces)."""
    p = PeekReader(io.BytesIO(b"0123456789" * 100))
    assert p.peek(8) == b"01234567"
    assert p.read(100) == (b"0123456789" * 10)
    assert p.read(100) == (b"0123456789" * 10)
    p2 = PeekReader(io.BytesIO(b"abc"))
    assert p2.peek(8) == b"abc"
    assert p2.read(100) == b"abc"
    assert p2.read(100) == b""


def test_prefetch_reader_hands_on_whole_chunks_and_errors() -> None:
    data = bytes(range(256)) * 4096  # 1 MiB
    ahead = PrefetchReader(io.BytesIO(data * 3), chunk=1 << 20)
    try:
        assert [len(ahead.read(1 << 20)) for _ in range(4)] == [1 << 20] * 3 + [0]
    finally:
        ahead.close()

    class Failing:
        def __init__(self) -> None:
            self.n = 0

        def read(self, n: int = -1, /) -> bytes:
            self.n += 1
            if self.n > 2:
                raise CorruptStreamError("broken after two chunks")
            return b"x" * n

    ahead = PrefetchReader(Failing(), chunk=1000)
    try:
        assert ahead.read(1000) == b"x" * 1000
        assert ahead.read(1000) == b"x" * 1000
        with pytest.raises(CorruptStreamError, match="after two chunks"):
            ahead.read(1000)
    finally:
        ahead.close()


def test_pump_counts_and_reports_progress() -> None:
    seen: list[int] = []
    out = bytearray()
    n = pump(io.BytesIO(b"q" * 3_000_000), out.extend, progress=seen.append)
    assert n == 3_000_000 == len(out) == sum(seen)


def test_third_party_errors_never_escape() -> None:
    """zlib.error, EOFError, zstd.ZstdError all become CorruptStreamError."""
    samples = {
        Compression.GZIP: b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03" + b"\x00" * 3,
        Compression.ZSTD: zstandard.ZstdCompressor().compress(b"x" * 1000)[:-3],
        Compression.BZIP2: bz2.compress(b"x" * 1000)[:-5],
    }
    for kind, blob in samples.items():
        with pytest.raises(CorruptStreamError):
            read_all(open_decompress(io.BytesIO(blob), kind), [10])
    assert zlib.decompress(zlib.compress(b"ok")) == b"ok"


def test_default_layer_jobs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(codec, "_cpus", lambda: 16)
    assert codec.default_layer_jobs(Compression.ZSTD) == 1
    assert codec.default_layer_jobs(Compression.GZIP) == 16
    assert codec.default_layer_jobs(None) == 16  # convert keeping each layer's compression
    monkeypatch.setattr(codec, "_cpus", lambda: 1)
    assert codec.default_layer_jobs(Compression.ZSTD) == 1
