"""v1config against Docker's own code: Docker 1.10.3's ``HistoryFromConfig`` and
``MakeConfigFromV1Config`` (with its ``V1Image`` and engine-api ``container.Config`` structs),
compiled with Go 1.19 and run on the JSONs below, wrote the expected bytes (a differential run
of 3,000 random V1 JSONs through both found only the cases kept here); plus properties of
Go's compaction that must hold for every JSON value."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from layouttool.digest import Digest
from layouttool.errors import InvalidInputError
from layouttool.v1config import V1Image, go_compact, make_config

DIFF_ID = Digest("sha256", "a" * 64)


def _config(raw: bytes) -> bytes:
    return make_config(raw, [DIFF_ID], [V1Image.decode(raw, "v1").history()], "v1").raw


def test_a_lone_surrogate_becomes_u_fffd_written_as_utf8() -> None:
    """Go decodes a lone ``\\ud800`` escape to U+FFFD and writes that rune as its UTF-8
    bytes, not as ``\\ufffd``: in a key, and in the history items made from decoded strings
    (raw values keep their escapes)."""
    raw = (
        b'{"author":"\\ud800 <x>","created":"2015-11-20T18:10:48Z","docker_version":"1.9.1",'
        b'"k\\udfff":"\\ud800","container_config":{"Cmd":["a\\udc00"]}}'
    )
    assert _config(raw) == (
        b'{"author":"\\ud800 \\u003cx\\u003e","container_config":{"Cmd":["a\\udc00"]},'
        b'"created":"2015-11-20T18:10:48Z","docker_version":"1.9.1","history":[{"created":'
        b'"2015-11-20T18:10:48Z","author":"\xef\xbf\xbd \\u003cx\\u003e","created_by":'
        b'"a\xef\xbf\xbd"}],"k\xef\xbf\xbd":"\\ud800","rootfs":{"type":"layers","diff_ids":'
        b'["sha256:' + b"a" * 64 + b'"]}}'
    )


def test_year_zero_is_a_time_go_reads() -> None:
    """Go's times run from year 0 (a leap year in the proleptic calendar); Python's dates
    start at 1, which must not make us refuse a JSON Docker loaded."""
    raw = (
        b'{"created":"0000-02-29T23:59:59.5-00:00","docker_version":"1.8.2",'
        b'"config":{"Cmd":"sh"}}'
    )
    zero = (
        b'"Hostname":"","Domainname":"","User":"","AttachStdin":false,"AttachStdout":false,'
        b'"AttachStderr":false,"Tty":false,"OpenStdin":false,"StdinOnce":false,"Env":null,'
    )
    tail = (
        b',"Image":"","Volumes":null,"WorkingDir":"","Entrypoint":null,"OnBuild":null,'
        b'"Labels":null}'
    )
    assert _config(raw) == (
        b'{"config":{' + zero + b'"Cmd":["sh"]' + tail + b',"container_config":{' + zero
        + b'"Cmd":null' + tail + b',"created":"0000-02-29T23:59:59.5Z","docker_version":"1.8.2",'
        b'"history":[{"created":"0000-02-29T23:59:59.5Z"}],"rootfs":{"type":"layers",'
        b'"diff_ids":["sha256:' + b"a" * 64 + b'"]}}'
    )
    # and what is no date in any calendar stays refused
    for bad in ("0001-02-29T00:00:00Z", "2015-02-29T00:00:00Z", "2015-13-01T00:00:00Z"):
        with pytest.raises(InvalidInputError, match="not a valid date"):
            V1Image.decode(json.dumps({"created": bad}).encode(), "v1")


def test_docker_migration_id_of_a_config_with_every_escape() -> None:
    """A >= 1.8.3 JSON is kept raw but compacted: whitespace out, < > & U+2028 U+2029 escaped,
    every other escape (\\u00e9, \\/, \\b) as written."""
    raw = (
        b'{ "created" : "2015-11-20T18:10:48Z",\n  "docker_version": "1.9.1",\n'
        b'  "x": [ "\\u00e9\\/\\b", "\xe2\x80\xa8&<>" , { "a" : null } ] }'
    )
    cfg = _config(raw)
    assert b'"x":["\\u00e9\\/\\b","\\u2028\\u0026\\u003c\\u003e",{"a":null}]' in cfg
    # the image ID Docker's code gave it
    assert hashlib.sha256(cfg).hexdigest() == (
        "bad4b86c6a26a6c3f806c549c7386fb181a3b14d7739737f01b8e5361dcde895"
    )


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@given(_JSON, st.sampled_from([None, 0, 2]), st.booleans())
def test_go_compact_drops_only_whitespace_and_escapes_like_go(
    value: Any, indent: int | None, ascii_only: bool
) -> None:
    text = json.dumps(value, indent=indent, ensure_ascii=ascii_only).encode()
    out = go_compact(text)
    assert json.loads(out) == value
    compact = json.dumps(value, separators=(",", ":"), ensure_ascii=ascii_only).encode()
    assert out == go_compact(compact)
    for ch in (b"<", b">", b"&", "\u2028".encode(), "\u2029".encode()):
        assert ch not in out
    assert go_compact(out) == out
