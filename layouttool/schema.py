"""Validate OCI documents against the image-spec JSON schemas, with no third-party dependency.

The seven schemas of opencontainers/image-spec (``layouttool/schemas/*.json``, draft-04) are
read from the package directory and compiled once per :class:`SchemaKind` into a graph of
small check functions. The validator here is deliberately small: it implements the draft-04
keywords those schemas use plus a few neighbours (see ``_KEYWORDS``), and refuses to compile a
schema that uses anything else, so a re-synced schema with a new keyword fails loudly in the
tests instead of being silently ignored.

On top of the schema, :func:`validate` runs the checks that image-spec's Go validator
(``schema/validator.go``) adds through ``json.Unmarshal`` into its Go types and ``go-digest``:

* a digest with a known algorithm (sha256/sha384/sha512) must be lowercase hex of the right
  length (the schema pattern allows ``A-Z``); unknown algorithms are accepted, as go-digest does;
* ``data`` must be padded standard base64 (Go decodes it into ``[]byte``);
* every ``config.Env`` entry must be ``NAME=VALUE`` with a non-empty name.

The descriptor checks run on every descriptor of a manifest or index as well (Go only checks
the digest of standalone descriptors; ``verify`` wants the stricter answer).
"""

from __future__ import annotations

import base64
import enum
import json
import re
import threading
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Final, TypeGuard

from layouttool.errors import InternalError
from layouttool.mediatypes import MT_OCI_CONFIG, MT_OCI_INDEX, MT_OCI_MANIFEST

__all__ = ["SchemaKind", "schema_for_media_type", "validate"]

#: the problems :func:`validate` reports at most; the rest are summarised in one line, so a
#: hostile document with a million bad layers cannot make ``verify`` print a million lines
MAX_PROBLEMS: Final = 100
#: the packaged schemas (package data of ``layouttool.schemas``)
_SCHEMA_DIR: Final = Path(__file__).resolve().parent / "schemas"


class SchemaKind(enum.Enum):
    """Which image-spec schema a document is checked against (the value is its file name)."""

    MANIFEST = "image-manifest-schema.json"
    INDEX = "image-index-schema.json"
    CONFIG = "config-schema.json"
    DESCRIPTOR = "content-descriptor.json"
    LAYOUT = "image-layout-schema.json"


_KIND_BY_MEDIA_TYPE: Final[dict[str, SchemaKind]] = {
    MT_OCI_MANIFEST: SchemaKind.MANIFEST,
    MT_OCI_INDEX: SchemaKind.INDEX,
    MT_OCI_CONFIG: SchemaKind.CONFIG,
}


def schema_for_media_type(media_type: str) -> SchemaKind | None:
    """Return the schema for an OCI manifest, index or config media type, else ``None``.

    Docker types are not mapped: the OCI schemas are not the definition of Docker documents,
    even though image-spec's own compatibility tests show that they pass.
    """
    return _KIND_BY_MEDIA_TYPE.get(media_type)


def validate(doc: object, kind: SchemaKind) -> list[str]:
    """Check a parsed JSON document against the schema of ``kind`` and the spec's extra checks.

    ``doc`` is what :func:`json.loads` returned. The result lists human-readable problems, each
    prefixed with the path of the offending value (``layers[0].digest: does not match pattern
    ...``; ``(root)`` for the document itself); it is empty when the document is valid. At most
    :data:`MAX_PROBLEMS` are listed, followed by a line that counts the rest.

    Raises :class:`~layouttool.errors.InternalError` only if the packaged schemas are missing
    or use a keyword this validator does not implement (a bug in layouttool, not in ``doc``).
    """
    errs: list[str] = []
    _compiled(kind).validate(doc, "", errs)
    _EXTRA_CHECKS[kind](doc, errs)
    if len(errs) > MAX_PROBLEMS:
        more = len(errs) - MAX_PROBLEMS
        errs = [*errs[:MAX_PROBLEMS], f"... and {more} more problems"]
    return errs


# --- paths and values in messages ----------------------------------------------------------

_IDENT_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _shorten(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _show_value(value: object) -> str:
    # ensure_ascii: input is hostile, and a message must not carry terminal escapes
    try:
        text = json.dumps(value, ensure_ascii=True)
    except (TypeError, ValueError):
        text = type(value).__name__
    return _shorten(text)


def _key_path(path: str, key: str) -> str:
    if _IDENT_RE.fullmatch(key):
        return f"{path}.{key}" if path else key
    return f"{path}[{_shorten(json.dumps(key, ensure_ascii=True))}]"


def _item_path(path: str, index: int) -> str:
    return f"{path}[{index}]"


def _at(path: str) -> str:
    return path or "(root)"


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _is_type(value: object, name: str) -> bool:
    # bool is an int subclass in Python but never a JSON number; and draft-04 (like Go's
    # json.Unmarshal into int64) does not take 2.0 as an integer
    match name:
        case "null":
            return value is None
        case "boolean":
            return isinstance(value, bool)
        case "integer":
            return isinstance(value, int) and not isinstance(value, bool)
        case "number":
            return isinstance(value, int | float) and not isinstance(value, bool)
        case "string":
            return isinstance(value, str)
        case "array":
            return isinstance(value, list)
        case "object":
            return isinstance(value, dict)
        case _:
            raise InternalError(f"JSON schema: unknown type {name!r}")


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _canonical(value: object) -> str:
    """A key under which two values are equal exactly when JSON Schema says they are."""

    def norm(v: object) -> object:
        if isinstance(v, float) and v.is_integer():
            return int(v)
        if isinstance(v, list):
            return [norm(x) for x in v]
        if isinstance(v, dict):
            return {k: norm(x) for k, x in v.items()}
        return v

    return json.dumps(norm(value), sort_keys=True)


# --- ECMA-262 patterns ---------------------------------------------------------------------

_ECMA_DOT: Final = "[^\\n\\r\\u2028\\u2029]"


def _ecma_regex(pattern: str) -> re.Pattern[str]:
    """Compile an ECMA-262 ``pattern`` (as JSON Schema defines it) into a Python regex.

    Use it with ``search``: JSON Schema patterns are not anchored. The translation covers what
    differs for the patterns OCI uses: ``$`` is end of input (Python's ``$`` also matches before
    a final newline), ``.`` excludes all ECMA line terminators, ``\\d``/``\\w`` are ASCII, and
    ``&``, ``~``, ``|``, ``[`` inside a class are escaped (Python may read them as set syntax).
    """
    out: list[str] = []
    in_class = False
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        if c == "\\":
            if i + 1 >= n:
                raise InternalError(f"JSON schema pattern {pattern!r}: trailing backslash")
            e = pattern[i + 1]
            i += 2
            if e == "d":
                out.append("0-9" if in_class else "[0-9]")
            elif e == "w":
                out.append("A-Za-z0-9_" if in_class else "[A-Za-z0-9_]")
            elif e in "DW":
                if in_class:
                    raise InternalError(f"JSON schema pattern {pattern!r}: \\{e} in a class")
                out.append("[^0-9]" if e == "D" else "[^A-Za-z0-9_]")
            else:
                out.append("\\" + e)
            continue
        i += 1
        if in_class:
            if c == "]":
                in_class = False
                out.append(c)
            elif c in "&~|[":
                out.append("\\" + c)
            else:
                out.append(c)
        elif c == "[":
            # ECMA's "[]" (matches nothing) and "[^]" (anything) mean something else in Python
            negated = pattern.startswith("^", i)
            if pattern.startswith("]", i + negated):
                raise InternalError(f"JSON schema pattern {pattern!r}: empty class")
            in_class = True
            out.append("[^" if negated else "[")
            i += negated
        elif c == ".":
            out.append(_ECMA_DOT)
        elif c == "$":
            out.append(r"\Z")
        else:
            out.append(c)
    try:
        return re.compile("".join(out))
    except re.error as e:
        raise InternalError(f"JSON schema pattern {pattern!r}: {e}") from e


# --- formats -------------------------------------------------------------------------------

_URI_CHARS_RE: Final = re.compile(
    r"[A-Za-z][A-Za-z0-9+.-]*:(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/?#\[\]]|%[0-9A-Fa-f]{2})*"
)


def _is_uri(value: str) -> bool:
    """RFC 3986 ``URI`` (absolute, with a scheme): what draft-04 ``format: uri`` means."""
    if not _URI_CHARS_RE.fullmatch(value) or value.count("#") > 1:
        return False
    try:
        parts = urllib.parse.urlsplit(value)
        _ = parts.port  # raises ValueError for a port that is not a number in range
    except ValueError:
        return False
    # brackets are only legal around an IP literal in the authority
    rest = value[value.index(":") + 1 :]
    if parts.netloc and rest.startswith("//"):
        rest = rest[2 + len(parts.netloc) :]
    return "[" not in rest and "]" not in rest


_DATE_TIME_RE: Final = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.[0-9]+)?"
    r"(?:[Zz]|[+-]([0-9]{2}):([0-9]{2}))"
)
_DAYS_IN_MONTH: Final = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def _is_date_time(value: str) -> bool:
    """RFC 3339 ``date-time`` (section 5.6), with its range checks."""
    m = _DATE_TIME_RE.fullmatch(value)
    if not m:
        return False
    year, month, day, hour, minute, second = (int(g) for g in m.groups()[:6])
    if not 1 <= month <= 12:
        return False
    leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    days = 29 if month == 2 and leap else _DAYS_IN_MONTH[month - 1]
    if not 1 <= day <= days or hour > 23 or minute > 59 or second > 60:
        return False
    off_h, off_m = m.group(7), m.group(8)
    return off_h is None or (int(off_h) <= 23 and int(off_m) <= 59)


_FORMATS: Final[dict[str, Callable[[str], bool]]] = {
    "uri": _is_uri,
    "date-time": _is_date_time,
}


# --- the compiler --------------------------------------------------------------------------

#: instance, path of the instance, problems so far
_Check = Callable[[object, str, list[str]], None]

#: keywords that never affect validation (``media`` is JSON Hyper-Schema, ignored by draft-04
#: validators including the gojsonschema the spec uses)
_ANNOTATIONS: Final = frozenset(
    {"$schema", "id", "description", "title", "default", "definitions", "media", "$comment"}
)


class _Node:
    """One compiled (sub)schema: a list of checks run in order."""

    __slots__ = ("checks", "where")

    def __init__(self, where: str) -> None:
        self.where = where
        self.checks: list[_Check] = []

    def validate(self, inst: object, path: str, errs: list[str]) -> None:
        for check in self.checks:
            check(inst, path, errs)

    def errors(self, inst: object, path: str) -> list[str]:
        errs: list[str] = []
        self.validate(inst, path, errs)
        return errs


def _escape_pointer(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


#: absolute schema URIs the spec's Go loader maps onto the schema directory
_NAMESPACES: Final = (
    "https://opencontainers.org/schema/image/",
    "https://opencontainers.org/schema/",
)


class _Compiler:
    """Compiles schemas by (file, JSON pointer), caching every node it makes.

    A node goes into the cache before its checks are compiled, so a recursive ``$ref`` ends on
    the (still filling) node instead of recursing forever.
    """

    def __init__(self, docs: dict[str, object] | None = None) -> None:
        # docs: schemas by file name, in place of the packaged ones (the unit tests use it)
        self._docs: dict[str, object] = dict(docs or {})
        self._nodes: dict[tuple[str, str], _Node] = {}

    def _load(self, name: str) -> object:
        doc = self._docs.get(name)
        if doc is None:
            try:
                # a plain read beside this file: importlib.resources would pull in zipfile,
                # tempfile, shutil, bz2 and lzma (~4 ms of every `verify`), and layouttool is
                # never imported from a zip
                doc = json.loads((_SCHEMA_DIR / name).read_bytes())
            except (OSError, ValueError) as e:
                raise InternalError(
                    f"load packaged JSON schema {name}: {e} (reinstall layouttool?)"
                ) from e
            self._docs[name] = doc
        return doc

    def node(self, file: str, pointer: str) -> _Node:
        key = (file, pointer)
        found = self._nodes.get(key)
        if found is not None:
            return found
        where = f"{file}#{pointer}"
        schema = self._load(file)
        for raw_token in pointer.split("/")[1:]:
            token = raw_token.replace("~1", "/").replace("~0", "~")
            if isinstance(schema, dict) and token in schema:
                schema = schema[token]
            elif isinstance(schema, list) and token.isdigit() and int(token) < len(schema):
                schema = schema[int(token)]
            else:
                raise InternalError(f"JSON schema: unresolvable pointer {where}")
        if not isinstance(schema, dict):
            raise InternalError(f"JSON schema {where}: a schema must be an object")
        node = _Node(where)
        self._nodes[key] = node
        self._compile(node, schema, file, pointer)
        return node

    def _resolve_ref(self, ref: str, file: str, where: str) -> _Node:
        target, _, fragment = ref.partition("#")
        fragment = urllib.parse.unquote(fragment)
        if fragment and not fragment.startswith("/"):
            raise InternalError(f"JSON schema {where}: unsupported $ref {ref!r}")
        if target:
            # All seven schemas live in one directory and every namespace maps onto it, so
            # resolving a relative reference against the file or against an "id" ends in the
            # same place: a sibling file. Hence the "id"s need no scope tracking.
            for prefix in _NAMESPACES:
                if target.startswith(prefix):
                    target = target[len(prefix) :]
                    break
            if "/" in target or ":" in target or target in {".", ".."}:
                raise InternalError(f"JSON schema {where}: unsupported $ref {ref!r}")
            file = target
        return self.node(file, fragment)

    def _compile(self, node: _Node, schema: dict[str, object], file: str, ptr: str) -> None:
        where = node.where
        if "$ref" in schema:
            # draft-04: a $ref replaces its whole object; sibling keywords are ignored
            ref = schema["$ref"]
            if not isinstance(ref, str):
                raise InternalError(f"JSON schema {where}: $ref must be a string")
            target = self._resolve_ref(ref, file, where)
            node.checks.append(target.validate)
            return
        for keyword, arg in schema.items():
            if keyword in _ANNOTATIONS or keyword in _PAIRED:
                continue
            make = _KEYWORDS.get(keyword)
            if make is None:
                raise InternalError(f"JSON schema {where}: unsupported keyword {keyword!r}")
            node.checks.append(make(self, arg, schema, file, f"{ptr}/{_escape_pointer(keyword)}"))


def _bad(ptr: str, what: str) -> InternalError:
    return InternalError(f"JSON schema #{ptr}: {what}")


def _number(arg: object, ptr: str) -> int | float:
    if isinstance(arg, bool) or not isinstance(arg, int | float):
        raise _bad(ptr, "expected a number")
    return arg


def _count(arg: object, ptr: str) -> int:
    if isinstance(arg, bool) or not isinstance(arg, int) or arg < 0:
        raise _bad(ptr, "expected a non-negative integer")
    return arg


def _schema_list(c: _Compiler, arg: object, file: str, ptr: str) -> list[_Node]:
    if not isinstance(arg, list) or not arg:
        raise _bad(ptr, "expected a non-empty array of schemas")
    return [c.node(file, f"{ptr}/{i}") for i in range(len(arg))]


_Maker = Callable[[_Compiler, object, dict[str, object], str, str], _Check]


def _k_type(c: _Compiler, arg: object, s: dict[str, object], file: str, ptr: str) -> _Check:
    names = [arg] if isinstance(arg, str) else arg
    if not isinstance(names, list) or not all(isinstance(x, str) for x in names):
        raise _bad(ptr, "type must be a string or an array of strings")
    types = tuple(str(x) for x in names)
    for t in types:
        _is_type(None, t)  # reject unknown type names at compile time
    wanted = " or ".join(types)

    def check(inst: object, path: str, errs: list[str]) -> None:
        if not any(_is_type(inst, t) for t in types):
            errs.append(f"{_at(path)}: expected {wanted}, got {_json_type(inst)}")

    return check


def _k_enum(c: _Compiler, arg: object, s: dict[str, object], file: str, ptr: str) -> _Check:
    if not isinstance(arg, list) or not arg:
        raise _bad(ptr, "enum must be a non-empty array")
    allowed = frozenset(_canonical(v) for v in arg)
    shown = ", ".join(_show_value(v) for v in arg)

    def check(inst: object, path: str, errs: list[str]) -> None:
        if _canonical(inst) not in allowed:
            errs.append(f"{_at(path)}: must be one of {shown}, got {_show_value(inst)}")

    return check


def _k_properties(c: _Compiler, arg: object, s: dict[str, object], file: str, ptr: str) -> _Check:
    if not isinstance(arg, dict):
        raise _bad(ptr, "properties must be an object")
    props = {k: c.node(file, f"{ptr}/{_escape_pointer(k)}") for k in arg}

    def check(inst: object, path: str, errs: list[str]) -> None:
        if isinstance(inst, dict):
            for name, sub in props.items():
                if name in inst:
                    sub.validate(inst[name], _key_path(path, name), errs)

    return check


def _pattern_props(
    c: _Compiler, s: dict[str, object], file: str, ptr: str
) -> list[tuple[re.Pattern[str], _Node]]:
    arg = s.get("patternProperties", {})
    if not isinstance(arg, dict):
        raise _bad(ptr, "patternProperties must be an object")
    return [
        (_ecma_regex(k), c.node(file, f"{ptr}/patternProperties/{_escape_pointer(k)}")) for k in arg
    ]


def _k_pattern_properties(
    c: _Compiler, arg: object, s: dict[str, object], file: str, ptr: str
) -> _Check:
    base = ptr.rsplit("/", 1)[0]
    pats = _pattern_props(c, s, file, base)

    def check(inst: object, path: str, errs: list[str]) -> None:
        if isinstance(inst, dict):
            for name, value in inst.items():
                for regex, sub in pats:
                    if regex.search(name):
                        sub.validate(value, _key_path(path, name), errs)

    return check


def _k_additional_properties(
    c: _Compiler, arg: object, s: dict[str, object], file: str, ptr: str
) -> _Check:
    base = ptr.rsplit("/", 1)[0]
    props = s.get("properties", {})
    if not isinstance(props, dict):
        raise _bad(base, "properties must be an object")
    known = frozenset(props)
    regexes = [regex for regex, _ in _pattern_props(c, s, file, base)]
    extra: _Node | None = None
    if arg is True:
        return lambda inst, path, errs: None
    if arg is not False:
        extra = c.node(file, ptr)

    def check(inst: object, path: str, errs: list[str]) -> None:
        if not isinstance(inst, dict):
            return
        for name, value in inst.items():
            if name in known or any(r.search(name) for r in regexes):
                continue
            if extra is None:
                errs.append(f"{_at(path)}: unexpected property {_show_value(name)}")
            else:
                extra.validate(value, _key_path(path, name), errs)

    return check


def _k_required(c: _Compiler, arg: object, s: dict[str, object], file: str, ptr: str) -> _Check:
    if not isinstance(arg, list) or not all(isinstance(x, str) for x in arg):
        raise _bad(ptr, "required must be an array of strings")
    names = tuple(str(x) for x in arg)

    def check(inst: object, path: str, errs: list[str]) -> None:
        if isinstance(inst, dict):
            for name in names:
                if name not in inst:
                    errs.append(f"{_at(path)}: missing required property {_show_value(name)}")

    return check


def _k_items(c: _Compiler, arg: object, s: dict[str, object], file: str, ptr: str) -> _Check:
    if isinstance(arg, dict):
        every = c.node(file, ptr)

        def check_all(inst: object, path: str, errs: list[str]) -> None:
            if isinstance(inst, list):
                for i, item in enumerate(inst):
                    every.validate(item, _item_path(path, i), errs)

        return check_all
    if not isinstance(arg, list):
        raise _bad(ptr, "items must be a schema or an array of schemas")
    # tuple form: positional schemas, then additionalItems for the rest
    positional = [c.node(file, f"{ptr}/{i}") for i in range(len(arg))]
    base = ptr.rsplit("/", 1)[0]
    more = s.get("additionalItems", True)
    rest: _Node | None = None
    if isinstance(more, dict):
        rest = c.node(file, f"{base}/additionalItems")
    elif not isinstance(more, bool):
        raise _bad(base, "additionalItems must be a boolean or a schema")

    def check_tuple(inst: object, path: str, errs: list[str]) -> None:
        if not isinstance(inst, list):
            return
        for i, item in enumerate(inst):
            if i < len(positional):
                positional[i].validate(item, _item_path(path, i), errs)
            elif rest is not None:
                rest.validate(item, _item_path(path, i), errs)
            elif more is False:
                errs.append(
                    f"{_at(path)}: at most {len(positional)} items allowed, got {len(inst)}"
                )
                return

    return check_tuple


def _k_min_items(c: _Compiler, arg: object, s: dict[str, object], file: str, ptr: str) -> _Check:
    low = _count(arg, ptr)

    def check(inst: object, path: str, errs: list[str]) -> None:
        if isinstance(inst, list) and len(inst) < low:
            errs.append(f"{_at(path)}: must have at least {low} item(s), got {len(inst)}")

    return check


def _k_max_items(c: _Compiler, arg: object, s: dict[str, object], file: str, ptr: str) -> _Check:
    high = _count(arg, ptr)

    def check(inst: object, path: str, errs: list[str]) -> None:
        if isinstance(inst, list) and len(inst) > high:
            errs.append(f"{_at(path)}: must have at most {high} item(s), got {len(inst)}")

    return check


def _k_unique_items(c: _Compiler, arg: object, s: dict[str, object], file: str, ptr: str) -> _Check:
    if not isinstance(arg, bool):
        raise _bad(ptr, "uniqueItems must be a boolean")

    def check(inst: object, path: str, errs: list[str]) -> None:
        if arg and isinstance(inst, list):
            seen: set[str] = set()
            for i, item in enumerate(inst):
                key = _canonical(item)
                if key in seen:
                    errs.append(f"{_item_path(path, i)}: duplicate item {_show_value(item)}")
                seen.add(key)

    return check


def _k_pattern(c: _Compiler, arg: object, s: dict[str, object], file: str, ptr: str) -> _Check:
    if not isinstance(arg, str):
        raise _bad(ptr, "pattern must be a string")
    regex = _ecma_regex(arg)

    def check(inst: object, path: str, errs: list[str]) -> None:
        if isinstance(inst, str) and not regex.search(inst):
            errs.append(f"{_at(path)}: {_show_value(inst)} does not match pattern {arg}")

    return check


def _k_min_length(c: _Compiler, arg: object, s: dict[str, object], file: str, ptr: str) -> _Check:
    low = _count(arg, ptr)

    def check(inst: object, path: str, errs: list[str]) -> None:
        if isinstance(inst, str) and len(inst) < low:
            errs.append(f"{_at(path)}: must be at least {low} character(s) long")

    return check


def _k_max_length(c: _Compiler, arg: object, s: dict[str, object], file: str, ptr: str) -> _Check:
    high = _count(arg, ptr)

    def check(inst: object, path: str, errs: list[str]) -> None:
        if isinstance(inst, str) and len(inst) > high:
            errs.append(f"{_at(path)}: must be at most {high} character(s) long")

    return check


def _k_format(c: _Compiler, arg: object, s: dict[str, object], file: str, ptr: str) -> _Check:
    test = _FORMATS.get(arg) if isinstance(arg, str) else None
    if test is None:
        raise _bad(ptr, f"unsupported format {arg!r}")

    def check(inst: object, path: str, errs: list[str]) -> None:
        if isinstance(inst, str) and not test(inst):
            errs.append(f"{_at(path)}: {_show_value(inst)} is not a valid {arg}")

    return check


def _k_minimum(c: _Compiler, arg: object, s: dict[str, object], file: str, ptr: str) -> _Check:
    low = _number(arg, ptr)
    exclusive = s.get("exclusiveMinimum", False)
    if not isinstance(exclusive, bool):
        raise _bad(ptr, "exclusiveMinimum must be a boolean (draft-04)")
    op = ">" if exclusive else ">="

    def check(inst: object, path: str, errs: list[str]) -> None:
        if _is_number(inst) and (inst <= low if exclusive else inst < low):
            errs.append(f"{_at(path)}: must be {op} {low}, got {_show_value(inst)}")

    return check


def _k_maximum(c: _Compiler, arg: object, s: dict[str, object], file: str, ptr: str) -> _Check:
    high = _number(arg, ptr)
    exclusive = s.get("exclusiveMaximum", False)
    if not isinstance(exclusive, bool):
        raise _bad(ptr, "exclusiveMaximum must be a boolean (draft-04)")
    op = "<" if exclusive else "<="

    def check(inst: object, path: str, errs: list[str]) -> None:
        if _is_number(inst) and (inst >= high if exclusive else inst > high):
            errs.append(f"{_at(path)}: must be {op} {high}, got {_show_value(inst)}")

    return check


def _summary(branches: list[list[str]]) -> str:
    parts = []
    for i, errs in enumerate(branches):
        shown = "; ".join(errs[:3]) + ("; ..." if len(errs) > 3 else "")
        parts.append(f"[{i}] {shown}")
    return " | ".join(parts)


def _k_all_of(c: _Compiler, arg: object, s: dict[str, object], file: str, ptr: str) -> _Check:
    subs = _schema_list(c, arg, file, ptr)

    def check(inst: object, path: str, errs: list[str]) -> None:
        for sub in subs:
            sub.validate(inst, path, errs)

    return check


def _k_any_of(c: _Compiler, arg: object, s: dict[str, object], file: str, ptr: str) -> _Check:
    subs = _schema_list(c, arg, file, ptr)

    def check(inst: object, path: str, errs: list[str]) -> None:
        branches = []
        for sub in subs:
            found = sub.errors(inst, path)
            if not found:
                return
            branches.append(found)
        errs.append(f"{_at(path)}: matches none of the allowed forms: {_summary(branches)}")

    return check


def _k_one_of(c: _Compiler, arg: object, s: dict[str, object], file: str, ptr: str) -> _Check:
    subs = _schema_list(c, arg, file, ptr)

    def check(inst: object, path: str, errs: list[str]) -> None:
        branches = [sub.errors(inst, path) for sub in subs]
        matched = sum(1 for found in branches if not found)
        if matched == 0:
            errs.append(f"{_at(path)}: matches none of the allowed forms: {_summary(branches)}")
        elif matched > 1:
            errs.append(f"{_at(path)}: matches {matched} of the allowed forms, expected one")

    return check


def _k_not(c: _Compiler, arg: object, s: dict[str, object], file: str, ptr: str) -> _Check:
    if not isinstance(arg, dict):
        raise _bad(ptr, "not must be a schema")
    sub = c.node(file, ptr)

    def check(inst: object, path: str, errs: list[str]) -> None:
        if not sub.errors(inst, path):
            errs.append(f"{_at(path)}: must not match the schema at {sub.where}")

    return check


_KEYWORDS: Final[dict[str, _Maker]] = {
    "type": _k_type,
    "enum": _k_enum,
    "properties": _k_properties,
    "patternProperties": _k_pattern_properties,
    "additionalProperties": _k_additional_properties,
    "required": _k_required,
    "items": _k_items,
    "minItems": _k_min_items,
    "maxItems": _k_max_items,
    "uniqueItems": _k_unique_items,
    "pattern": _k_pattern,
    "minLength": _k_min_length,
    "maxLength": _k_max_length,
    "format": _k_format,
    "minimum": _k_minimum,
    "maximum": _k_maximum,
    "allOf": _k_all_of,
    "anyOf": _k_any_of,
    "oneOf": _k_one_of,
    "not": _k_not,
}

#: keywords read by another keyword's compiler, never on their own
_PAIRED: Final = frozenset({"additionalItems", "exclusiveMinimum", "exclusiveMaximum"})


_COMPILER: Final = _Compiler()
_ROOTS: Final[dict[SchemaKind, _Node]] = {}
_LOCK: Final = threading.Lock()


def _compiled(kind: SchemaKind) -> _Node:
    # The lock matters: a node is cached before its checks are filled in, and another thread
    # must never validate against a half-compiled graph (it would accept everything).
    node = _ROOTS.get(kind)
    if node is None:
        with _LOCK:
            node = _ROOTS.get(kind)
            if node is None:
                node = _COMPILER.node(kind.value, "")
                _ROOTS[kind] = node
    return node


# --- the checks image-spec's Go validator adds ---------------------------------------------

#: go-digest's DigestRegexpAnchored (also the schema's digest pattern)
_DIGEST_RE: Final = re.compile(r"[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+")
#: algorithms go-digest knows, with their hex length; others are "unsupported" and accepted
_DIGEST_HEX_LEN: Final = {"sha256": 64, "sha384": 96, "sha512": 128}
_LOWER_HEX_RE: Final = re.compile(r"[0-9a-f]+")
#: validator.go uses ^[^=]+=.*$, whose "." stops at a newline; we accept newlines in values
#: (Docker does), so the rule is just "a non-empty name, then =".
_ENV_RE: Final = re.compile(r"[^=]+=", re.DOTALL)


def _check_descriptor(desc: object, path: str, errs: list[str]) -> None:
    if not isinstance(desc, dict):
        return
    digest = desc.get("digest")
    if isinstance(digest, str) and _DIGEST_RE.fullmatch(digest):
        algorithm, _, encoded = digest.partition(":")
        size = _DIGEST_HEX_LEN.get(algorithm)
        if size is not None and (len(encoded) != size or not _LOWER_HEX_RE.fullmatch(encoded)):
            errs.append(
                f"{_key_path(path, 'digest')}: {_show_value(digest)} is not a valid {algorithm}"
                f" digest (expected {size} lowercase hex digits)"
            )
    data = desc.get("data")
    if isinstance(data, str):
        # Go's encoding/json decodes []byte with StdEncoding: padding required, CR/LF skipped
        try:
            base64.b64decode(data.replace("\r", "").replace("\n", ""), validate=True)
        except ValueError as e:
            errs.append(f"{_key_path(path, 'data')}: not valid padded base64: {e}")


def _check_descriptor_list(doc: object, key: str, errs: list[str]) -> None:
    if isinstance(doc, dict):
        items = doc.get(key)
        if isinstance(items, list):
            for i, item in enumerate(items):
                _check_descriptor(item, _item_path(key, i), errs)


def _extra_manifest(doc: object, errs: list[str]) -> None:
    if isinstance(doc, dict):
        for key in ("config", "subject"):
            if key in doc:
                _check_descriptor(doc[key], key, errs)
    _check_descriptor_list(doc, "layers", errs)


def _extra_index(doc: object, errs: list[str]) -> None:
    _check_descriptor_list(doc, "manifests", errs)
    if isinstance(doc, dict) and "subject" in doc:
        _check_descriptor(doc["subject"], "subject", errs)


def _extra_config(doc: object, errs: list[str]) -> None:
    config = doc.get("config") if isinstance(doc, dict) else None
    env = config.get("Env") if isinstance(config, dict) else None
    if isinstance(env, list):
        for i, entry in enumerate(env):
            if isinstance(entry, str) and not _ENV_RE.match(entry):
                errs.append(f"config.Env[{i}]: {_show_value(entry)} is not of the form NAME=VALUE")


def _extra_descriptor(doc: object, errs: list[str]) -> None:
    _check_descriptor(doc, "", errs)


def _extra_none(doc: object, errs: list[str]) -> None:
    return


_EXTRA_CHECKS: Final[dict[SchemaKind, Callable[[object, list[str]], None]]] = {
    SchemaKind.MANIFEST: _extra_manifest,
    SchemaKind.INDEX: _extra_index,
    SchemaKind.CONFIG: _extra_config,
    SchemaKind.DESCRIPTOR: _extra_descriptor,
    SchemaKind.LAYOUT: _extra_none,
}
