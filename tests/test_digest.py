"""Digest syntax: a digest string is validated before any part of it can become a path."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from layouttool.digest import CANONICAL, SMALL_HASH, Digest, is_valid, new_hasher
from layouttool.errors import InvalidInputError

HEX64 = "a" * 64


@pytest.mark.parametrize(
    "value",
    [
        f"sha256:{HEX64}",
        f"sha512:{'0123456789abcdef' * 8}",
    ],
)
def test_accepts_sha256_and_sha512(value: str) -> None:
    d = Digest.parse(value)
    assert str(d) == value
    assert d.algorithm == value.split(":")[0]
    assert is_valid(value)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("sha256:../../x", "not of the form"),
        ("sha256:../../../etc/passwd", "not of the form"),
        (f"sha256:{HEX64.upper()}", "lowercase hex"),
        (f"sha256:{'A' + HEX64[1:]}", "lowercase hex"),
        (f"sha256:{HEX64[:-1]}", "exactly 64"),
        (f"sha256:{HEX64}0", "exactly 64"),
        (f"sha512:{HEX64}", "exactly 128"),
        (f"md5:{'a' * 32}", "unsupported algorithm"),
        (f"blake3:{HEX64}", "unsupported algorithm"),
        (f"SHA256:{HEX64}", "not of the form"),
        (HEX64, "not of the form"),
        ("sha256:", "not of the form"),
        (":" + HEX64, "not of the form"),
        (f"sha256:{HEX64}/x", "not of the form"),
        (f"sha256:{'g' * 64}", "lowercase hex"),
        (f"sha256:{HEX64}\n", "not of the form"),
        ("", "not of the form"),
    ],
)
def test_refuses_malformed(value: str, reason: str) -> None:
    with pytest.raises(InvalidInputError, match=reason) as info:
        Digest.parse(value)
    assert info.value.exit_code == 4
    assert repr(value) in str(info.value)  # the message names what was refused
    assert not is_valid(value)


@pytest.mark.parametrize("value", [None, 12, ["sha256:" + HEX64], {"a": 1}, b"sha256:" + b"a" * 64])
def test_refuses_non_strings(value: object) -> None:
    with pytest.raises(InvalidInputError, match="not a string"):
        Digest.parse(value)


def test_what_names_the_field() -> None:
    with pytest.raises(InvalidInputError, match="invalid layer digest"):
        Digest.parse("sha256:x", what="layer digest")


def test_of_bytes_and_hasher_agree_with_hashlib() -> None:
    data = b"layouttool"
    assert Digest.of_bytes(data).encoded == hashlib.sha256(data).hexdigest()
    assert Digest.of_bytes(data, "sha512").encoded == hashlib.sha512(data).hexdigest()
    h = new_hasher()
    h.update(data)
    assert Digest.from_hasher(CANONICAL, h) == Digest.of_bytes(data)
    assert Digest.of_bytes(data).hasher().hexdigest() == hashlib.sha256(b"").hexdigest()


def test_new_hasher_refuses_unknown_algorithms() -> None:
    with pytest.raises(InvalidInputError, match="unsupported digest algorithm"):
        new_hasher("md5")


def test_short_and_ordering() -> None:
    a = Digest.parse("sha256:" + "1" * 64)
    b = Digest.parse("sha256:" + "2" * 64)
    assert a.short == "1" * 12
    assert sorted([b, a]) == [a, b]
    assert a == Digest("sha256", "1" * 64)
    assert len({a, Digest.parse(str(a))}) == 1


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=80))
def test_anything_accepted_is_a_safe_path_component(value: str) -> None:
    """Whatever parses can only ever name blobs/<alg>/<hex>: no separators, no dots."""
    try:
        d = Digest.parse(value)
    except InvalidInputError:
        return
    assert d.algorithm in ("sha256", "sha512")
    assert set(d.encoded) <= set("0123456789abcdef")
    assert "/" not in str(d) and ".." not in str(d)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=256))
def test_round_trip_of_real_digests(data: bytes) -> None:
    for alg in ("sha256", "sha512"):
        d = Digest.of_bytes(data, alg)
        assert Digest.parse(str(d)) == d


@pytest.mark.parametrize("alg", ["sha256", "sha512"])
@pytest.mark.parametrize("size", [0, 5, SMALL_HASH, SMALL_HASH + 1, None])
def test_small_and_large_hashers_give_the_same_digest(alg: str, size: int | None) -> None:
    """Documents go through CPython's sha2, layers through OpenSSL's: same digests either way."""
    data = bytes(range(256)) * ((size or 1000) // 256) + b"x" * ((size or 1000) % 256)
    h = new_hasher(alg, size)
    h.update(data)
    assert h.hexdigest() == hashlib.new(alg, data).hexdigest()
    assert Digest.of_bytes(data, alg).encoded == hashlib.new(alg, data).hexdigest()
