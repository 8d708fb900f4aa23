"""Tests for layouttool.schema: the spec's own 84 verdicts, then each keyword on its own."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import pytest

from layouttool import schema
from layouttool.errors import InternalError
from layouttool.schema import SchemaKind, schema_for_media_type, validate

REPO = Path(__file__).resolve().parents[1]
SHARED_FIXTURES = REPO.parent / "shared" / "fixtures"
CASES_DIR = SHARED_FIXTURES / "image-spec" / "schema-cases"


def shared_fixture(*parts: str) -> Path:
    """Path of a shared fixture; skip when it is missing, but fail under CI=true."""
    path = SHARED_FIXTURES.joinpath(*parts)
    if not path.exists():
        msg = f"shared fixture {path} is missing (CI has shared/ beside the checkout)"
        if os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    return path


def _load_cases() -> list[Any]:
    try:
        data = json.loads((CASES_DIR / "cases.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        # one placeholder, so the test runs and skips (or fails under CI) instead of vanishing
        return [pytest.param(None, id="cases.json-missing")]
    return [pytest.param(case, id=case["file"]) for case in data["cases"]]


CASES = _load_cases()

#: kinds that schema_for_media_type deliberately does not map
_OTHER_KINDS = {
    "application/vnd.oci.descriptor.v1+json": SchemaKind.DESCRIPTOR,
    "application/vnd.oci.layout.header.v1+json": SchemaKind.LAYOUT,
}
#: image-spec's backwards_compatibility_test.go validates Docker v2.2 documents as their OCI kin
_COMPAT_KINDS = {
    "compat-docker-list": SchemaKind.INDEX,
    "compat-docker-manifest": SchemaKind.MANIFEST,
    "compat-docker-config": SchemaKind.CONFIG,
}


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")  # Go's encoding/json refuses NaN and Infinity


def _verdict(raw: bytes, kind: SchemaKind) -> list[str]:
    try:
        doc = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)
    except ValueError as e:
        return [f"not JSON: {e}"]
    return validate(doc, kind)


def _kind_of(case: dict[str, Any]) -> SchemaKind:
    if case["kind"] in _COMPAT_KINDS:
        return _COMPAT_KINDS[case["kind"]]
    kind = schema_for_media_type(case["mediaType"])
    return kind if kind is not None else _OTHER_KINDS[case["mediaType"]]


# --- the spec's verdicts -------------------------------------------------------------------


@pytest.mark.parametrize("case", CASES)
def test_spec_case_verdict(case: dict[str, Any] | None) -> None:
    shared_fixture("image-spec", "schema-cases", "cases.json")
    assert case is not None
    raw = shared_fixture("image-spec", "schema-cases", case["file"]).read_bytes()
    if "declared_digest" in case:
        assert "sha256:" + hashlib.sha256(raw).hexdigest() == case["declared_digest"]
    problems = _verdict(raw, _kind_of(case))
    got = "invalid" if problems else "valid"
    assert got == case["expect"], f"{case['comment']!r}: problems={problems}"


@pytest.mark.parametrize(
    ("file", "path"),
    [
        # the four cases the schema alone does not decide, and the check that decides each
        ("config/09-invalid-env-is-invalid.json", "config.Env[0]: "),
        (
            "descriptor/15-invalid-digest-does-not-match-pattern-characters-needs-to-.json",
            "digest: ",
        ),
        (
            "descriptor/17-invalid-urls-does-not-match-format-invalide-url-characters.json",
            "urls[0]: ",
        ),
        ("descriptor/29-invalid-invalid-data-base64-missing-padding.json", "data: "),
    ],
)
def test_extra_check_cases_name_the_problem(file: str, path: str) -> None:
    raw = shared_fixture("image-spec", "schema-cases", file).read_bytes()
    kind = SchemaKind.CONFIG if file.startswith("config/") else SchemaKind.DESCRIPTOR
    problems = _verdict(raw, kind)
    assert len(problems) == 1
    assert problems[0].startswith(path)


def test_packaged_schemas_equal_shared_ones() -> None:
    shared = shared_fixture("image-spec", "schema")
    packaged = REPO / "layouttool" / "schemas"
    shared_names = sorted(p.name for p in shared.glob("*.json"))
    assert sorted(p.name for p in packaged.glob("*.json")) == shared_names
    for name in shared_names:
        assert (packaged / name).read_bytes() == (shared / name).read_bytes(), (
            f"{name} drifted: run scripts/sync-schemas.sh"
        )
    assert (packaged / "NOTICE").is_file()


# --- helpers for keyword tests -------------------------------------------------------------

DIGEST = "sha256:" + "ab" * 32


def _desc(**over: object) -> dict[str, object]:
    d: dict[str, object] = {
        "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
        "size": 3,
        "digest": DIGEST,
    }
    d.update(over)
    return {k: v for k, v in d.items() if v is not None}


def _manifest(**over: object) -> dict[str, object]:
    m: dict[str, object] = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": _desc(mediaType="application/vnd.oci.image.config.v1+json"),
        "layers": [_desc()],
    }
    m.update(over)
    return m


def _config(**config: object) -> dict[str, object]:
    return {
        "architecture": "amd64",
        "os": "linux",
        "config": config,
        "rootfs": {"type": "layers", "diff_ids": [DIGEST]},
    }


def _errors(sch: object, inst: object, **docs: object) -> list[str]:
    """Validate against an ad-hoc schema (file t.json), with optional sibling files."""
    compiler = schema._Compiler({"t.json": sch, **docs})
    return compiler.node("t.json", "").errors(inst, "")


# --- the packaged schemas ------------------------------------------------------------------


@pytest.mark.parametrize("kind", list(SchemaKind))
def test_every_kind_compiles_and_rejects_an_empty_array(kind: SchemaKind) -> None:
    assert validate([], kind) == ["(root): expected object, got array"]


def test_valid_documents_have_no_problems() -> None:
    assert validate(_manifest(), SchemaKind.MANIFEST) == []
    assert validate(_desc(), SchemaKind.DESCRIPTOR) == []
    assert validate(_config(Env=["A=b"]), SchemaKind.CONFIG) == []
    assert validate({"imageLayoutVersion": "1.0.0"}, SchemaKind.LAYOUT) == []
    index = {
        "schemaVersion": 2,
        "manifests": [_desc(platform={"os": "linux", "architecture": "arm64"})],
    }
    assert validate(index, SchemaKind.INDEX) == []


def test_schema_for_media_type() -> None:
    assert (
        schema_for_media_type("application/vnd.oci.image.manifest.v1+json") is SchemaKind.MANIFEST
    )
    assert schema_for_media_type("application/vnd.oci.image.index.v1+json") is SchemaKind.INDEX
    assert schema_for_media_type("application/vnd.oci.image.config.v1+json") is SchemaKind.CONFIG
    assert schema_for_media_type("application/vnd.docker.distribution.manifest.v2+json") is None
    assert schema_for_media_type("application/vnd.oci.image.layer.v1.tar+gzip") is None
    assert schema_for_media_type("") is None


# --- type ----------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [True, False, 3.0, 3.5, "3", None])
def test_integer_is_not_bool_or_float(size: object) -> None:
    problems = validate({**_desc(), "size": size}, SchemaKind.DESCRIPTOR)
    assert len(problems) == 1
    assert problems[0].startswith("size: expected integer, got ")


def test_schema_version_bool_is_not_two() -> None:
    # True == 1 in Python; the minimum check must never see a bool
    assert validate(_manifest(schemaVersion=True), SchemaKind.MANIFEST) == [
        "schemaVersion: expected integer, got boolean"
    ]
    assert validate(_manifest(schemaVersion=1), SchemaKind.MANIFEST) == [
        "schemaVersion: must be >= 2, got 1"
    ]


def test_type_lists_and_number() -> None:
    sch: dict[str, object] = {"type": ["integer", "null"]}
    assert _errors(sch, 1) == []
    assert _errors(sch, None) == []
    assert _errors(sch, False) == ["(root): expected integer or null, got boolean"]
    assert _errors({"type": "number"}, 1.5) == []
    assert _errors({"type": "number"}, 2) == []
    assert _errors({"type": "number"}, True) == ["(root): expected number, got boolean"]
    assert _errors({"type": "boolean"}, 0) == ["(root): expected boolean, got integer"]


# --- pattern -------------------------------------------------------------------------------


def test_pattern_is_unanchored() -> None:
    assert _errors({"pattern": "b+"}, "abbbc") == []
    assert _errors({"pattern": "^b"}, "abc") == ['(root): "abc" does not match pattern ^b']
    assert _errors({"pattern": "x"}, 5) == []  # pattern only applies to strings


def test_pattern_dollar_is_end_of_input() -> None:
    # Python's "$" also matches before a trailing newline; ECMA-262's does not
    problems = validate(_desc(mediaType="text/plain\n"), SchemaKind.DESCRIPTOR)
    assert len(problems) == 1
    assert problems[0].startswith('mediaType: "text/plain\\n" does not match pattern')
    assert validate(_desc(digest=DIGEST + "\n"), SchemaKind.DESCRIPTOR) != []


def test_pattern_dot_excludes_ecma_line_terminators() -> None:
    for ch in "\n\r\u2028\u2029":
        assert _errors({"pattern": "^.$"}, ch) != []
    assert _errors({"pattern": "^.$"}, "é") == []


def test_pattern_properties_check_only_matching_keys() -> None:
    labels = {"a": "x", "org.example.n": 5}
    problems = validate(_config(Labels=labels), SchemaKind.CONFIG)
    assert problems[0].startswith("config.Labels: matches none of the allowed forms")
    assert 'config.Labels["org.example.n"]: expected string, got integer' in problems[0]


# --- $ref ----------------------------------------------------------------------------------


def test_ref_across_files_reports_the_instance_path() -> None:
    # manifest -> content-descriptor.json -> defs-descriptor.json#/definitions/digest
    problems = validate(_manifest(config=_desc(digest="nope")), SchemaKind.MANIFEST)
    assert len(problems) == 1
    assert problems[0].startswith('config.digest: "nope" does not match pattern ^[a-z0-9]+')


def test_ref_local_pointer_and_namespace_url() -> None:
    defs = {"definitions": {"small": {"type": "integer", "maximum": 9}}}
    local = {
        "definitions": {"s": {"type": "string"}},
        "properties": {"a": {"$ref": "#/definitions/s"}},
    }
    assert _errors(local, {"a": 1}) == ["a: expected string, got integer"]
    for ref in (
        "d.json#/definitions/small",
        "https://opencontainers.org/schema/image/d.json#/definitions/small",
    ):
        assert _errors({"$ref": ref}, 10, **{"d.json": defs}) == ["(root): must be <= 9, got 10"]


def test_ref_ignores_sibling_keywords_and_tolerates_recursion() -> None:
    tree = {
        "definitions": {
            "node": {
                "type": "object",
                "properties": {"kids": {"type": "array", "items": {"$ref": "#/definitions/node"}}},
            }
        },
        "$ref": "#/definitions/node",
        "type": "string",  # ignored: draft-04 $ref replaces the object
    }
    assert _errors(tree, {"kids": [{"kids": []}]}) == []
    assert _errors(tree, {"kids": [{"kids": [1]}]}) == [
        "kids[0].kids[0]: expected object, got integer"
    ]


def test_ref_that_does_not_resolve_is_an_internal_error() -> None:
    with pytest.raises(InternalError, match="unresolvable pointer"):
        _errors({"$ref": "#/definitions/missing"}, 1)
    with pytest.raises(InternalError, match="unsupported \\$ref"):
        _errors({"$ref": "https://example.com/x.json"}, 1)


# --- nested paths and messages -------------------------------------------------------------


def test_nested_errors_carry_their_path() -> None:
    index = {
        "schemaVersion": 2,
        "manifests": [_desc(), _desc(platform={"os": "linux"}, annotations={"org.x": 1})],
    }
    assert validate(index, SchemaKind.INDEX) == [
        'manifests[1].platform: missing required property "architecture"',
        'manifests[1].annotations["org.x"]: expected string, got integer',
    ]


def test_messages_escape_hostile_text() -> None:
    problems = validate({"imageLayoutVersion": "\x1b[31m2"}, SchemaKind.LAYOUT)
    assert problems == ['imageLayoutVersion: must be one of "1.0.0", got "\\u001b[31m2"']


def test_problem_list_is_capped() -> None:
    # three problems per entry: mediaType and digest missing, size not an integer
    index = {"schemaVersion": 2, "manifests": [{"size": "x"}] * 500}
    problems = validate(index, SchemaKind.INDEX)
    assert len(problems) == schema.MAX_PROBLEMS + 1
    assert problems[-1] == f"... and {500 * 3 - schema.MAX_PROBLEMS} more problems"


# --- the other keywords --------------------------------------------------------------------


def test_required_properties_and_additional_properties() -> None:
    sch: dict[str, object] = {
        "required": ["a"],
        "properties": {"a": {"type": "string"}},
        "patternProperties": {"^x-": {}},
        "additionalProperties": False,
    }
    assert _errors(sch, {"a": "1", "x-y": 2}) == []
    assert _errors(sch, {"b": 1}) == [
        '(root): missing required property "a"',
        '(root): unexpected property "b"',
    ]
    assert _errors({"additionalProperties": {"type": "integer"}}, {"k": "v"}) == [
        "k: expected integer, got string"
    ]


def test_enum_and_unique_items_use_json_equality() -> None:
    assert _errors({"enum": [1]}, 1.0) == []
    assert _errors({"enum": [1]}, True) == ["(root): must be one of 1, got true"]
    assert _errors({"uniqueItems": True}, [1, True, "1"]) == []
    assert _errors({"uniqueItems": True}, [{"a": 1}, {"a": 1.0}]) == [
        '[1]: duplicate item {"a": 1.0}'
    ]


def test_array_and_string_sizes() -> None:
    assert validate(_manifest(layers=[]), SchemaKind.MANIFEST) == [
        "layers: must have at least 1 item(s), got 0"
    ]
    assert _errors({"maxItems": 1}, [1, 2]) == ["(root): must have at most 1 item(s), got 2"]
    assert _errors({"minLength": 2, "maxLength": 3}, "é") == [
        "(root): must be at least 2 character(s) long"
    ]
    tup = {"items": [{"type": "string"}], "additionalItems": False}
    assert _errors(tup, ["a"]) == []
    assert _errors(tup, [1, 2]) == [
        "[0]: expected string, got integer",
        "(root): at most 1 items allowed, got 2",
    ]


def test_minimum_and_maximum() -> None:
    assert validate(_desc(size=-1), SchemaKind.DESCRIPTOR) == ["size: must be >= 0, got -1"]
    assert validate(_desc(size=2**63 - 1), SchemaKind.DESCRIPTOR) == []
    excl = {"minimum": 0, "exclusiveMinimum": True, "maximum": 2, "exclusiveMaximum": True}
    assert _errors(excl, 1) == []
    assert _errors(excl, 0) == ["(root): must be > 0, got 0"]
    assert _errors(excl, 2.0) == ["(root): must be < 2, got 2.0"]


def test_combinators() -> None:
    one = {"oneOf": [{"type": "integer"}, {"minimum": 0}]}
    assert _errors(one, -1) == []
    assert _errors(one, 1) == ["(root): matches 2 of the allowed forms, expected one"]
    assert _errors({"anyOf": [{"type": "integer"}, {"minimum": 0}]}, 1) == []
    assert _errors({"anyOf": [{"type": "null"}]}, 1)[0].startswith(
        "(root): matches none of the allowed forms: [0] (root): expected null"
    )
    assert _errors({"allOf": [{"type": "integer"}, {"minimum": 3}]}, 2) == [
        "(root): must be >= 3, got 2"
    ]
    assert _errors({"not": {"type": "string"}}, 1) == []
    assert _errors({"not": {"type": "string"}}, "s")[0].startswith("(root): must not match")


def test_unsupported_keyword_or_format_is_an_internal_error() -> None:
    with pytest.raises(InternalError, match="unsupported keyword 'multipleOf'"):
        _errors({"multipleOf": 2}, 4)
    with pytest.raises(InternalError, match="unsupported format 'email'"):
        _errors({"format": "email"}, "a@b")


# --- formats -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://example.com/foo", True),
        ("https://[::1]:5000/v2/a%20b?x=1#frag", True),
        ("urn:oid:1.2.3", True),
        ("value", False),
        ("/relative/path", False),
        ("http://example.com/a b", False),
        ("http://exa\\mple.com/", False),
        ("http://example.com:port/", False),
        ("http://example.com/%zz", False),
        ("http://example.com/#a#b", False),
        ("http://example.com/[x]", False),
        ("http://[::1/", False),
    ],
)
def test_uri_format(url: str, ok: bool) -> None:
    problems = validate(_desc(urls=[url]), SchemaKind.DESCRIPTOR)
    assert problems == ([] if ok else [f"urls[0]: {json.dumps(url)} is not a valid uri"])


@pytest.mark.parametrize(
    ("stamp", "ok"),
    [
        ("2015-10-31T22:22:56.015925234Z", True),
        ("0001-01-01T00:00:00Z", True),
        ("2024-02-29t23:59:59+05:30", True),
        ("2023-02-29T00:00:00Z", False),
        ("2015-13-01T00:00:00Z", False),
        ("2015-10-31T24:00:00Z", False),
        ("2015-10-31 22:22:56Z", False),
        ("2015-10-31T22:22:56", False),
        ("2015-10-31", False),
    ],
)
def test_date_time_format(stamp: str, ok: bool) -> None:
    doc = _config()
    doc["created"] = stamp
    doc["history"] = [{"created": stamp}]
    problems = validate(doc, SchemaKind.CONFIG)
    assert len(problems) == (0 if ok else 2)


# --- the checks image-spec's Go validator adds ---------------------------------------------


@pytest.mark.parametrize(
    ("digest", "ok"),
    [
        (DIGEST, True),
        ("sha256:" + "AB" * 32, False),
        ("sha256:" + "ab" * 31, False),
        ("sha384:" + "0" * 96, True),
        ("sha512:" + "0" * 128, True),
        ("sha512:" + "0" * 64, False),
        ("sha256+b64u:LCa0a2j_xo_5m0U8HTBBNBNCLXBkg7-g-YpeiGJm564", True),  # unknown: accepted
    ],
)
def test_known_digest_algorithms_need_lowercase_hex(digest: str, ok: bool) -> None:
    assert (validate(_desc(digest=digest), SchemaKind.DESCRIPTOR) == []) is ok
    # and in every descriptor of a manifest or index, with the path of that descriptor
    problems = validate(_manifest(layers=[_desc(), _desc(digest=digest)]), SchemaKind.MANIFEST)
    if ok:
        assert problems == []
    else:
        assert len(problems) == 1
        assert problems[0].startswith("layers[1].digest: ")
    index = {"schemaVersion": 2, "manifests": [_desc(digest=digest)]}
    assert (validate(index, SchemaKind.INDEX) == []) is ok


@pytest.mark.parametrize(
    ("data", "ok"),
    [
        ("aGk=", True),
        ("", True),
        ("aGVs\nbG8=", True),  # Go's StdEncoding skips CR and LF
        ("aGk", False),
        ("aGk=aGk=", False),
        ("a*k=", False),
        ("aGké", False),
    ],
)
def test_data_must_be_padded_base64(data: str, ok: bool) -> None:
    problems = validate(_desc(data=data), SchemaKind.DESCRIPTOR)
    assert (problems == []) is ok
    if not ok:
        assert problems[0].startswith("data: not valid padded base64")
    sub = validate(_manifest(subject=_desc(data=data)), SchemaKind.MANIFEST)
    assert (sub == []) is ok


@pytest.mark.parametrize(
    ("entry", "ok"),
    [
        ("A=b", True),
        ("A=", True),
        ("A=b=c", True),
        ("A=line1\nline2", True),
        ("foo", False),
        ("=b", False),
        ("", False),
    ],
)
def test_env_entries_need_a_name_and_equals(entry: str, ok: bool) -> None:
    problems = validate(_config(Env=["PATH=/bin", entry]), SchemaKind.CONFIG)
    assert problems == (
        [] if ok else [f"config.Env[1]: {json.dumps(entry)} is not of the form NAME=VALUE"]
    )
