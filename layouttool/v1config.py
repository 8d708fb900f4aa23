"""Docker's V1 image JSON -> an image config, byte for byte as Docker 1.10's migration made it.

Before Docker 1.10 an image was a chain of layers, each with a V1 JSON (``id``, ``parent``,
``created``, ``container_config``, ``config``, ...) and no config blob. Docker 1.10 upgraded such
chains once, offline, and every ``docker load`` of a pre-1.10 save since then does the same
(moby ``image/v1``: ``HistoryFromConfig`` and ``MakeConfigFromV1Config``, called by
``migrate/v1`` and by ``image/tarexport`` ``legacyLoadImage``):

* each layer of the chain, base first, gives one ``history`` item: its ``created``, ``author``,
  ``comment``, and ``created_by`` = its ``container_config.Cmd`` joined by spaces (never
  ``empty_layer``: every V1 layer, even an empty tar, stays a layer);
* the top layer's JSON becomes the config: every top-level key is kept as written except
  ``id``, ``parent``, ``Size``, ``parent_id``, ``layer_id`` and ``throwaway``; ``rootfs``
  (the diff_ids, base first) and ``history`` are added; keys are sorted and every value is
  compacted, as Go's ``encoding/json`` marshals a ``map[string]*json.RawMessage``;
* a JSON written by Docker older than 1.8.3 (or with no ``docker_version``) first goes through
  Go's ``V1Image`` struct, which drops unknown keys, re-formats ``created`` and writes every
  field of ``container_config``/``config`` (the "fallback" of ``MakeConfigFromV1Config``).

Reproducing Go's bytes (sorted keys, ``<``/``>``/``&`` as ``\\u003c``..., RFC 3339 times with
nanoseconds trimmed) makes the config digest, the image ID, the one Docker 1.10 to 24 gave
the same save on ``docker load``. The structs are those of Docker 1.10.3 (engine-api
``container.Config``); later Dockers added fields, so for pre-1.8.3 JSONs their IDs differ
from ours and from each other. This module does no I/O.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any, Final

from layouttool.digest import Digest
from layouttool.errors import InvalidInputError

#: top-level keys of a V1 JSON that describe the V1 chain, not the image (dropped by Docker)
V1_ONLY_KEYS: Final = ("id", "parent", "Size", "parent_id", "layer_id", "throwaway")
#: JSONs from Docker before this version go through the V1Image struct first
NO_FALLBACK_MIN_VERSION: Final = "1.8.3"



# ----------------------------------------------------------------------------- Go's encoding
#: what Go's encoder escapes in a string (HTML-safe): quote, backslash, controls, < > &,
#: U+2028/U+2029; a lone surrogate (from a "\ud800" escape) was decoded to U+FFFD
_GO_ESCAPED: Final = re.compile('["\\\\\x00-\x1f<>&\u2028\u2029\ud800-\udfff]')
_GO_SHORT: Final = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
#: a JSON string token, or a run of insignificant whitespace (only outside strings)
_STRING_OR_SPACE: Final = re.compile(rb'("[^"\\]*(?:\\.[^"\\]*)*")|[ \t\r\n]+', re.DOTALL)
#: what Go's compaction escapes: < > & and U+2028/U+2029 (valid JSON has them in strings only)
_COMPACT_ESCAPES: Final = tuple(
    (ch.encode(), f"\\u{ord(ch):04x}".encode()) for ch in "<>&\u2028\u2029"
)


def _go_escape(m: re.Match[str]) -> str:
    ch = m.group()
    if ch in _GO_SHORT:
        return _GO_SHORT[ch]
    if "\ud800" <= ch <= "\udfff":
        return "\ufffd"  # a valid rune: Go writes it as is, not as the "\ufffd" escape
    return f"\\u{ord(ch):04x}"


def go_string(s: str) -> bytes:
    """``s`` as Go's ``encoding/json`` writes a string (HTML-safe escaping, UTF-8 kept)."""
    return ('"' + _GO_ESCAPED.sub(_go_escape, s) + '"').encode()


def go_compact(raw: bytes) -> bytes:
    """``raw`` (valid JSON) without insignificant whitespace, ``<``, ``>``, ``&``, U+2028 and
    U+2029 escaped: what Go's encoder does to a ``json.RawMessage`` it writes."""
    out = _STRING_OR_SPACE.sub(rb"\1", raw)
    for ch, escape in _COMPACT_ESCAPES:
        out = out.replace(ch, escape)
    return out


def go_object(members: dict[str, bytes]) -> bytes:
    """A JSON object of already-encoded values, keys sorted as Go sorts a map's keys."""
    parts = [go_string(k) + b":" + go_compact(v) for k, v in sorted(members.items())]
    return b"{" + b",".join(parts) + b"}"


def _go_value(value: Any) -> bytes:
    """A decoded JSON value (strings, bools, None, lists, dicts of these) as Go writes it."""
    if value is None:
        return b"null"
    if value is True:
        return b"true"
    if value is False:
        return b"false"
    if isinstance(value, str):
        return go_string(value)
    if isinstance(value, list):
        return b"[" + b",".join(_go_value(v) for v in value) + b"]"
    if isinstance(value, dict):
        return go_object({k: _go_value(v) for k, v in value.items()})
    raise TypeError(f"no Go encoding for {type(value).__name__}")  # pragma: no cover


# ----------------------------------------------------------------------------- Go's time
_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(Z|([+-])(\d{2}):(\d{2}))"
)


@dataclass(frozen=True, slots=True)
class GoTime:
    """A ``time.Time`` as Go parses RFC 3339 and writes it back (RFC 3339 with nanoseconds)."""

    text: str

    @classmethod
    def zero(cls) -> GoTime:
        """Go's zero time, which a missing ``created`` becomes."""
        return cls("0001-01-01T00:00:00Z")

    @classmethod
    def parse(cls, value: str, what: str) -> GoTime:
        """Parse as ``time.Time.UnmarshalJSON`` does; the result formats as Go marshals it."""
        m = _RFC3339.fullmatch(value)
        if m is None:
            raise InvalidInputError(f"{what}: {value!r} is not an RFC 3339 time")
        year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
        frac = m.group(7) or ""
        try:
            # Go's times start at year 0, a leap year like 2000 (Python's dates start at 1)
            date(year or 2000, month, day)
        except ValueError:
            raise InvalidInputError(f"{what}: {value!r} is not a valid date") from None
        if hour > 23 or minute > 59 or second > 59:
            raise InvalidInputError(f"{what}: {value!r} is not a valid time of day")
        zone = "Z"
        if m.group(8) != "Z":
            zh, zm = int(m.group(10)), int(m.group(11))
            if zh > 23 or zm > 59:
                raise InvalidInputError(f"{what}: {value!r} has an invalid zone offset")
            if zh or zm:  # Go writes a zero offset as Z
                zone = f"{m.group(9)}{zh:02d}:{zm:02d}"
        nanos = (frac + "000000000")[:9].rstrip("0")  # Go keeps 9 digits, then trims zeros
        text = f"{year:04d}-{month:02d}-{day:02d}T{hour:02d}:{minute:02d}:{second:02d}"
        return cls(text + (f".{nanos}" if nanos else "") + zone)


# ----------------------------------------------------------------------------- Go's decoding
class _Object(list[tuple[str, Any]]):
    """A decoded JSON object: its ``(key, value)`` members in order, repeats kept."""


def _strict_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _load(raw: bytes | str, what: str) -> Any:
    """Decode JSON keeping objects as :class:`_Object` lists of members (repeats too)."""
    try:
        return json.loads(raw, object_pairs_hook=_Object, parse_constant=_strict_constant)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"{what}: not valid JSON ({exc})") from None


def split_object(raw: bytes, what: str) -> dict[str, bytes]:
    """The members of a JSON object as raw value bytes, as Go decodes it into a
    ``map[string]*json.RawMessage`` (a repeated key keeps its last value)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInputError(f"{what}: not valid UTF-8") from None
    _load(text, what)  # refuse anything that is not JSON before slicing it
    dec = json.JSONDecoder(parse_constant=_strict_constant)
    i = _skip_ws(text, 0)
    if not text.startswith("{", i):
        raise InvalidInputError(f"{what}: expected a JSON object")
    out: dict[str, bytes] = {}
    i = _skip_ws(text, i + 1)
    if text.startswith("}", i):
        return out
    while True:
        key, i = dec.raw_decode(text, i)
        i = _skip_ws(text, i) + 1  # the ':'
        start = _skip_ws(text, i)
        _value, end = dec.raw_decode(text, start)
        out[key] = text[start:end].encode()
        i = _skip_ws(text, end)
        if text[i] == "}":
            return out
        i = _skip_ws(text, i + 1)  # the ','


def _skip_ws(text: str, i: int) -> int:
    while i < len(text) and text[i] in " \t\r\n":
        i += 1
    return i


def _fold(pairs: list[tuple[str, Any]], names: Sequence[str]) -> list[tuple[str, Any]]:
    """Match object keys to struct field names as Go does (exact, else case-insensitive);
    unknown keys are dropped. Order (and repeats) are kept: a later value wins."""
    exact = set(names)
    lower = {n.lower(): n for n in names}
    out = []
    for key, value in pairs:
        name = key if key in exact else lower.get(key.lower())
        if name is not None:
            out.append((name, value))
    return out


class _Decoder:
    """Go's ``json.Unmarshal`` into Docker 1.10's ``V1Image`` and ``container.Config``: the
    same type checks (a wrong type is an error, ``null`` leaves the zero value) and the
    values Go would hold, kept as plain Python values ready for :func:`_go_value`."""

    def __init__(self, what: str) -> None:
        self.what = what

    def fail(self, field: str, want: str, got: Any) -> InvalidInputError:
        kind = type(got).__name__ if not isinstance(got, list) else "array or object"
        return InvalidInputError(f"{self.what}: {field} must be {want}, found {kind}")

    def string(self, field: str, value: Any, current: str) -> str:
        if value is None:
            return current
        if not isinstance(value, str):
            raise self.fail(field, "a string", value)
        return value

    def boolean(self, field: str, value: Any, current: bool) -> bool:
        if value is None:
            return current
        if not isinstance(value, bool):
            raise self.fail(field, "true or false", value)
        return value

    def strings(self, field: str, value: Any) -> list[str] | None:
        if value is None:
            return None
        if not _is_array(value) or not all(v is None or isinstance(v, str) for v in value):
            raise self.fail(field, "an array of strings", value)
        return [v or "" for v in value]

    def str_slice(self, field: str, value: Any) -> list[str] | None:
        """engine-api's StrSlice: an array of strings, or one string."""
        if value is None:
            return None
        if isinstance(value, str):
            return [value]
        return self.strings(field, value)

    def set_map(
        self, field: str, value: Any, current: dict[str, Any] | None, of_strings: bool
    ) -> dict[str, Any] | None:
        """``map[string]string`` or ``map[string]struct{}``; Go merges into a map it holds."""
        if value is None:
            return None
        if not _is_object(value):
            raise self.fail(field, "an object", value)
        out = dict(current or {})
        for k, v in value:
            if of_strings:
                out[k] = self.string(f"{field}[{k!r}]", v, "")
            else:
                if v is not None and not _is_object(v):
                    raise self.fail(f"{field}[{k!r}]", "an object", v)
                out[k] = {}
        return out

    def container_config(self, field: str, value: Any, current: dict[str, Any] | None) -> Any:
        """Decode into a ``container.Config`` (``current`` holds what an earlier key set)."""
        if not _is_object(value):
            raise self.fail(field, "an object", value)
        cfg = dict(current) if current is not None else _zero_config()
        for name, v in _fold(value, [f.name for f in _CONFIG_FIELDS]):
            spec = _CONFIG_BY_NAME[name]
            where = f"{field}.{name}"
            if spec.kind == "string":
                cfg[name] = self.string(where, v, cfg[name])
            elif spec.kind == "bool":
                cfg[name] = self.boolean(where, v, cfg[name])
            elif spec.kind == "strings":
                cfg[name] = self.strings(where, v)
            elif spec.kind == "strslice":
                cfg[name] = self.str_slice(where, v)
            else:
                cfg[name] = self.set_map(where, v, cfg[name], spec.kind == "strmap")
        return cfg


def _is_array(value: Any) -> bool:
    return isinstance(value, list) and not isinstance(value, _Object)


def _is_object(value: Any) -> bool:
    return isinstance(value, _Object)


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    kind: str  # string | bool | strings | strslice | setmap | strmap
    omitempty: bool = False


#: engine-api ``container.Config`` as vendored by Docker 1.10.3, in declaration order
_CONFIG_FIELDS: Final = (
    _Field("Hostname", "string"),
    _Field("Domainname", "string"),
    _Field("User", "string"),
    _Field("AttachStdin", "bool"),
    _Field("AttachStdout", "bool"),
    _Field("AttachStderr", "bool"),
    _Field("ExposedPorts", "setmap", omitempty=True),
    _Field("PublishService", "string", omitempty=True),
    _Field("Tty", "bool"),
    _Field("OpenStdin", "bool"),
    _Field("StdinOnce", "bool"),
    _Field("Env", "strings"),
    _Field("Cmd", "strslice"),
    _Field("ArgsEscaped", "bool", omitempty=True),
    _Field("Image", "string"),
    _Field("Volumes", "setmap"),
    _Field("WorkingDir", "string"),
    _Field("Entrypoint", "strslice"),
    _Field("NetworkDisabled", "bool", omitempty=True),
    _Field("MacAddress", "string", omitempty=True),
    _Field("OnBuild", "strings"),
    _Field("Labels", "strmap"),
    _Field("StopSignal", "string", omitempty=True),
)
_CONFIG_BY_NAME: Final = {f.name: f for f in _CONFIG_FIELDS}


def _zero_config() -> dict[str, Any]:
    zero: dict[str, Any] = {"string": "", "bool": False}
    return {f.name: zero.get(f.kind) for f in _CONFIG_FIELDS}


def _marshal_config(cfg: dict[str, Any]) -> bytes:
    """A ``container.Config`` as Go marshals it: declaration order, ``omitempty`` honoured."""
    parts = []
    for f in _CONFIG_FIELDS:
        value = cfg[f.name]
        if f.omitempty and not value:
            continue
        parts.append(go_string(f.name) + b":" + _go_value(value))
    return b"{" + b",".join(parts) + b"}"


_V1IMAGE_KEYS: Final = (
    "id", "parent", "comment", "created", "container", "container_config", "docker_version",
    "author", "config", "architecture", "os", "Size",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class V1Image:
    """What Go's ``json.Unmarshal`` into Docker 1.10's ``image.V1Image`` holds."""

    strings: dict[str, str]
    created: GoTime
    container_config: dict[str, Any]
    config: dict[str, Any] | None

    @classmethod
    def decode(cls, raw: bytes, what: str) -> V1Image:
        """Decode a V1 JSON; a value of the wrong type is an error, as it is for Docker."""
        doc = _load(raw, what)
        if not _is_object(doc):
            raise InvalidInputError(f"{what}: expected a JSON object")
        d = _Decoder(what)
        strings = dict.fromkeys(
            ("id", "parent", "comment", "container", "docker_version", "author",
             "architecture", "os"), "",
        )  # fmt: skip
        created = GoTime.zero()
        container_config = _zero_config()
        config: dict[str, Any] | None = None
        for name, value in _fold(doc, _V1IMAGE_KEYS):
            if name in strings:
                strings[name] = d.string(name, value, strings[name])
            elif name == "created":
                if value is not None:
                    if not isinstance(value, str):
                        raise d.fail(name, "an RFC 3339 time string", value)
                    created = GoTime.parse(value, f"{what}: created")
            elif name == "container_config":
                if value is not None:
                    container_config = d.container_config(name, value, container_config)
            elif name == "config":
                config = None if value is None else d.container_config(name, value, config)
            elif value is not None and (
                not isinstance(value, int) or isinstance(value, bool) or abs(value) >= 1 << 63
            ):  # Size, an int64
                raise d.fail(name, "an integer", value)
        return cls(strings, created, container_config, config)

    def history(self, *, empty_layer: bool = False) -> bytes:
        """The ``image.History`` item of this layer (``HistoryFromConfig``), Go-encoded."""
        parts = [b'"created":' + go_string(self.created.text)]
        cmd = self.container_config["Cmd"] or []
        for key, value in (
            ("author", self.strings["author"]),
            ("created_by", " ".join(cmd)),
            ("comment", self.strings["comment"]),
        ):
            if value:
                parts.append(go_string(key) + b":" + go_string(value))
        if empty_layer:
            parts.append(b'"empty_layer":true')
        return b"{" + b",".join(parts) + b"}"

    def fallback_members(self) -> dict[str, bytes]:
        """The top-level members Go writes for this struct (``omitempty`` honoured)."""
        out: dict[str, bytes] = {}
        for key in ("id", "parent", "comment"):
            if self.strings[key]:
                out[key] = go_string(self.strings[key])
        out["created"] = go_string(self.created.text)
        if self.strings["container"]:
            out["container"] = go_string(self.strings["container"])
        out["container_config"] = _marshal_config(self.container_config)
        for key in ("docker_version", "author"):
            if self.strings[key]:
                out[key] = go_string(self.strings[key])
        if self.config is not None:
            out["config"] = _marshal_config(self.config)
        for key in ("architecture", "os"):
            if self.strings[key]:
                out[key] = go_string(self.strings[key])
        return out


def _version_less(version: str, other: str) -> bool:
    """Docker's ``pkg/version`` comparison: dot-separated integers, anything else is 0."""

    def parts(v: str) -> list[int]:
        return [int(p) if re.fullmatch(r"[+-]?\d+", p) else 0 for p in v.split(".")]

    a, b = parts(version), parts(other)
    width = max(len(a), len(b))
    a += [0] * (width - len(a))
    b += [0] * (width - len(b))
    return a < b


# ----------------------------------------------------------------------------- the upgrade
@dataclass(frozen=True, slots=True)
class V1Config:
    """An image config made from a V1 chain."""

    raw: bytes
    #: what was filled in because the V1 JSON lacked it (the image ID then differs from Docker's)
    defaults: tuple[str, ...] = ()


def make_config(
    top: bytes,
    diff_ids: Sequence[Digest],
    history: Sequence[bytes],
    what: str,
    *,
    platform_default: Callable[[str], str | None] | None = None,
) -> V1Config:
    """The config of the image whose top V1 JSON is ``top`` (``MakeConfigFromV1Config``).

    ``diff_ids`` and ``history`` (items made by :meth:`V1Image.history`) run base first.
    ``platform_default`` names a value for ``os`` or ``architecture`` when the JSON has none
    (an OCI config requires both); Docker itself would leave them out.
    """
    image = V1Image.decode(top, what)
    if _version_less(image.strings["docker_version"], NO_FALLBACK_MIN_VERSION):
        members = image.fallback_members()
    else:
        members = split_object(top, what)
    for key in V1_ONLY_KEYS:
        members.pop(key, None)
    # image.RootFS, a struct: its fields in declaration order, not sorted
    diffs = b",".join(go_string(str(d)) for d in diff_ids)
    rootfs = b'{"type":"layers"' + (b',"diff_ids":[' + diffs + b"]" if diff_ids else b"")
    members["rootfs"] = rootfs + b"}"
    members["history"] = b"[" + b",".join(history) + b"]"
    filled = []
    if platform_default is not None:
        for key in ("architecture", "os"):
            if not image.strings[key]:
                value = platform_default(key)
                if value is not None:
                    members[key] = go_string(value)
                    filled.append(f"{key}={value}")
    return V1Config(go_object(members), tuple(filled))


__all__ = [
    "NO_FALLBACK_MIN_VERSION",
    "V1_ONLY_KEYS",
    "GoTime",
    "V1Config",
    "V1Image",
    "go_compact",
    "go_object",
    "go_string",
    "make_config",
    "split_object",
]
