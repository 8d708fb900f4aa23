"""``--json`` on every command: one JSON document on stdout, matching docs/json/<cmd>.schema.json.

The schemas are the documented contract (README "JSON output"). They are strict
(``additionalProperties: false``, every field required), so a field added to a result's
``to_json()`` without documenting it fails here. They are checked with layouttool's own draft-04
validator (:mod:`layouttool.schema`), the one that checks the image-spec schemas.

Errors keep their usual shape under ``--json``: nothing on stdout, one ``layouttool: error:``
line on stderr, the error's exit code.
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, run_cli

from layouttool import schema
from layouttool.cli import COMMANDS
from layouttool.ops.verify import verify_layout

SCHEMAS = REPO / "docs" / "json"
SAMPLE = REPO / "testdata" / "sample-docker-save.tar"
#: every command that takes --json (all of them)
JSON_COMMANDS = (
    "init", "ls", "inspect", "verify", "tag", "untag", "from-docker-save", "convert",
    "unpack", "to-docker-save", "gc", "push", "pull",
    "new", "append", "config", "repack",
    "export", "diff", "flatten", "attach", "referrers",
    "login", "logout",
)


def need(command: str) -> None:
    """Skip (visibly) when ``command`` is not in this build's CLI yet."""
    if command not in COMMANDS:
        pytest.skip(f"'layouttool {command}' does not exist yet (not in layouttool --help)")


def schema_errors(command: str, doc: Any) -> list[str]:
    """Problems of ``doc`` against docs/json/<command>.schema.json."""
    name = f"{command}.schema.json"
    compiler = schema._Compiler({name: json.loads((SCHEMAS / name).read_text())})
    return compiler.node(name, "").errors(doc, "")


def shapes(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The document shapes a schema allows: itself, or each of its top-level ``oneOf`` (a
    command whose output depends on its options, such as ``diff`` and ``diff --layers``)."""
    if "oneOf" not in doc:
        return [doc]
    return [{**alt, "definitions": doc.get("definitions", {})} for alt in doc["oneOf"]]


def shape_errors(shape: dict[str, Any], doc: Any) -> list[str]:
    """Problems of ``doc`` against one shape of a schema."""
    compiler = schema._Compiler({"shape.json": shape})
    return compiler.node("shape.json", "").errors(doc, "")


def run_json(*args: str | Path, code: int = 0) -> dict[str, Any]:
    """Run ``layouttool ARGS --json``; check the exit code and the schema; return the document."""
    res = run_cli(*args, "--json")
    assert res.code == code, res.stderr
    doc = json.loads(res.stdout)  # exactly one document: json.loads refuses trailing data
    assert isinstance(doc, dict)
    assert schema_errors(str(args[0]), doc) == []
    return doc


def index_entries(layout: Path) -> list[dict[str, Any]]:
    """The manifests array of ``layout``'s index.json."""
    entries: list[dict[str, Any]] = json.loads((layout / "index.json").read_text())["manifests"]
    return entries


def blob(layout: Path, digest: str) -> Path:
    """Path of a blob."""
    alg, hexpart = digest.split(":")
    return layout / "blobs" / alg / hexpart


def sample_tags() -> list[str]:
    """RepoTags of the sample tarball, read from its manifest.json."""
    with tarfile.open(SAMPLE) as tf:
        f = tf.extractfile("manifest.json")
        assert f is not None
        return [t for img in json.load(f) for t in img["RepoTags"]]


@pytest.fixture
def imported(tmp_path: Path) -> Path:
    """A layout with the sample image imported (refs layouttool-sample:1.0 and :latest)."""
    need("from-docker-save")
    layout = tmp_path / "oci"
    res = run_cli("-q", "from-docker-save", SAMPLE, "-o", layout)
    assert res.code == 0, res.stderr
    return layout


# ----------------------------------------------------------------------------- the schemas
def test_a_schema_for_every_command_and_all_compile() -> None:
    names = sorted(p.name.removesuffix(".schema.json") for p in SCHEMAS.glob("*.schema.json"))
    assert names == sorted(JSON_COMMANDS)
    # a new command comes with its documented --json schema
    assert set(COMMANDS) <= set(JSON_COMMANDS), sorted(set(COMMANDS) - set(JSON_COMMANDS))
    for command in JSON_COMMANDS:
        doc = json.loads((SCHEMAS / f"{command}.schema.json").read_text())
        assert doc["$schema"] == "http://json-schema.org/draft-04/schema#"
        for shape in shapes(doc):
            # strict at the top: every property documented is required, nothing else allowed
            assert shape["additionalProperties"] is False
            assert sorted(shape["required"]) == sorted(shape["properties"]), command
        # compiles (an unsupported keyword would raise InternalError)
        assert schema_errors(command, {}) != []


@pytest.mark.parametrize("command", JSON_COMMANDS)
def test_schemas_reject_a_changed_document(command: str, tmp_path: Path) -> None:
    """The checks can fail: a missing field, an extra field, a wrong type are all reported."""
    doc = json.loads((SCHEMAS / f"{command}.schema.json").read_text())
    for shape in shapes(doc):
        first = shape["required"][0]
        assert any("missing required property" in e for e in shape_errors(shape, {}))
        assert any(
            "unexpected property" in e for e in shape_errors(shape, {"undocumentedField": 1})
        )
        wrong = shape_errors(shape, {first: {"a": [1]}})
        assert any("expected" in e or "must be one of" in e for e in wrong), wrong
    assert schema_errors(command, {}) != []
    assert schema_errors(command, {"undocumentedField": 1}) != []


# ----------------------------------------------------------------------------- each command
def test_init_json(tmp_path: Path) -> None:
    doc = run_json("init", tmp_path / "new")
    assert doc["layout"] == str(tmp_path / "new")
    assert (tmp_path / "new" / "oci-layout").is_file()
    assert verify_layout(tmp_path / "new").ok


def test_from_docker_save_json(tmp_path: Path) -> None:
    need("from-docker-save")
    layout = tmp_path / "oci"
    doc = run_json("from-docker-save", SAMPLE, "-o", layout)
    assert sorted(i["ref"] for i in doc["images"]) == sorted(sample_tags())
    on_disk = {e["digest"] for e in index_entries(layout)}
    assert {i["digest"] for i in doc["images"]} == on_disk
    for img in doc["images"]:
        for layer in img["layers"]:
            assert blob(layout, layer["digest"]).stat().st_size == layer["size"]
    assert doc["bytesRead"] > 0 and doc["sourceFormat"] == "docker-save"
    assert verify_layout(layout).ok


def test_ls_json(imported: Path) -> None:
    doc = run_json("ls", imported)
    entries = index_entries(imported)
    assert [i["digest"] for i in doc["images"]] == [e["digest"] for e in entries]
    assert [i["ref"] for i in doc["images"]] == [
        e["annotations"]["org.opencontainers.image.ref.name"] for e in entries
    ]
    assert all(i["size"] > 0 for i in doc["images"])


def test_ls_json_empty_layout(tmp_path: Path) -> None:
    layout = tmp_path / "oci"
    run_json("init", layout)
    assert run_json("ls", layout)["images"] == []


def test_inspect_json(imported: Path) -> None:
    ref = sample_tags()[0]
    doc = run_json("inspect", f"{imported}:{ref}")
    manifest = json.loads(blob(imported, doc["manifestDigest"]).read_bytes())
    assert [ly["digest"] for ly in doc["layers"]] == [ly["digest"] for ly in manifest["layers"]]
    config = json.loads(blob(imported, doc["configDigest"]).read_bytes())
    assert [ly["diffID"] for ly in doc["layers"]] == config["rootfs"]["diff_ids"]
    assert doc["annotations"]["org.opencontainers.image.ref.name"] == ref


def test_verify_json_ok_and_corrupt(imported: Path) -> None:
    doc = run_json("verify", imported)
    assert doc["ok"] is True and doc["problems"] == [] and doc["checked"] >= 4
    # corrupt one layer: the document is still printed, problems name it, exit code 5
    inspect = run_json("inspect", f"{imported}:{sample_tags()[0]}")
    victim = blob(imported, inspect["layers"][0]["digest"])
    victim.chmod(0o644)
    victim.write_bytes(b"not the layer")
    doc = run_json("verify", imported, code=5)
    assert doc["ok"] is False
    assert any(inspect["layers"][0]["digest"] in p["where"] + p["message"]
               for p in doc["problems"])


def test_tag_and_untag_json(imported: Path) -> None:
    ref = sample_tags()[0]
    doc = run_json("tag", f"{imported}:{ref}", "extra")
    assert doc["action"] == "tagged" and doc["ref"] == "extra"
    assert doc["digest"] in {e["digest"] for e in index_entries(imported)}
    doc = run_json("untag", f"{imported}:extra")
    assert doc["action"] == "untagged"
    refs = [e["annotations"].get("org.opencontainers.image.ref.name")
            for e in index_entries(imported)]
    assert "extra" not in refs
    assert verify_layout(imported).ok


def test_convert_json(imported: Path) -> None:
    need("convert")
    doc = run_json("convert", imported, "--compression", "zstd")
    assert doc["inPlace"] is True and doc["compression"] == "zstd"
    assert doc["layersRecompressed"] > 0
    for img in doc["images"]:
        for layer in img["layers"]:
            assert layer["new"]["mediaType"].endswith("+zstd")
            assert blob(imported, layer["new"]["digest"]).is_file()
    assert {e["new"]["digest"] for e in doc["entries"]} == {
        e["digest"] for e in index_entries(imported)
    }
    assert verify_layout(imported).ok


def test_unpack_json(imported: Path, tmp_path: Path) -> None:
    need("unpack")
    dest = tmp_path / "rootfs"
    doc = run_json("unpack", f"{imported}:{sample_tags()[0]}", dest)
    assert doc["entries"] == sum(ly["entries"] for ly in doc["layers"])
    assert doc["bytesWritten"] == sum(ly["bytesWritten"] for ly in doc["layers"])
    assert Path(doc["rootfs"]).resolve() == dest.resolve()
    written = sum(p.stat().st_size for p in dest.rglob("*") if p.is_file() and
                  not p.is_symlink())
    assert written <= doc["bytesWritten"]  # whiteouts may remove what a lower layer wrote


def test_export_json(imported: Path, tmp_path: Path) -> None:
    need("export")
    out = tmp_path / "rootfs.tar"
    doc = run_json("export", f"{imported}:{sample_tags()[0]}", "-o", out)
    assert doc["output"] == str(out) and doc["bytesWritten"] == out.stat().st_size
    with tarfile.open(out) as tf:
        members = tf.getmembers()
    assert doc["entries"] == len(members)
    assert doc["contentBytes"] == sum(m.size for m in members if m.isreg())


def test_diff_json(imported: Path) -> None:
    need("diff")
    ref = f"{imported}:{sample_tags()[0]}"
    doc = run_json("diff", ref, ref)
    assert doc["added"] == doc["removed"] == doc["changed"] == []
    layers = run_json("diff", ref, "--layers")
    assert [la["index"] for la in layers["layers"]] == list(range(1, len(layers["layers"]) + 1))
    assert layers["fileBytes"] == sum(la["fileBytes"] for la in layers["layers"])


def test_flatten_json(imported: Path) -> None:
    need("flatten")
    ref = sample_tags()[0]
    doc = run_json("flatten", f"{imported}:{ref}", "--tag", "flat")
    assert doc["ref"] == "flat" and doc["action"] == "tagged"
    assert [e["digest"] for e in index_entries(imported) if e.get("annotations", {}).get(
        "org.opencontainers.image.ref.name") == "flat"] == [doc["digest"]]
    assert blob(imported, doc["layer"]["digest"]).stat().st_size == doc["layer"]["size"]


def test_attach_json(imported: Path, tmp_path: Path) -> None:
    need("attach")
    note = tmp_path / "note.txt"
    note.write_text("hello\n")
    doc = run_json("attach", f"{imported}:{sample_tags()[0]}", note,
                   "--artifact-type", "text/plain")
    assert doc["layers"][0]["annotations"] == {"org.opencontainers.image.title": "note.txt"}
    assert doc["digest"] in [e["digest"] for e in index_entries(imported)]
    assert json.loads(blob(imported, doc["digest"]).read_bytes())["subject"] == doc["subject"]


def test_referrers_json(imported: Path, tmp_path: Path) -> None:
    need("referrers")
    note = tmp_path / "note.txt"
    note.write_text("hello\n")
    image = f"{imported}:{sample_tags()[0]}"
    art = run_json("attach", image, note, "--artifact-type", "text/plain")
    doc = run_json("referrers", image)
    assert [(m["digest"], m["artifactType"]) for m in doc["manifests"]] == [
        (art["digest"], "text/plain")]


def test_to_docker_save_json(imported: Path, tmp_path: Path) -> None:
    need("to-docker-save")
    out = tmp_path / "out.tar"
    ref = sample_tags()[0]
    doc = run_json("to-docker-save", f"{imported}:{ref}", "-o", out)
    assert Path(doc["output"]).resolve() == out.resolve()
    with tarfile.open(out) as tf:
        f = tf.extractfile("manifest.json")
        assert f is not None
        manifest = json.load(f)
        names = set(tf.getnames())
    assert [t for m in manifest for t in m["RepoTags"]] == doc["images"][0]["repoTags"]
    for layer in doc["images"][0]["layers"]:
        assert f"blobs/sha256/{layer['digest'].split(':')[1]}" in names


def test_gc_json(imported: Path) -> None:
    need("gc")
    before = run_json("inspect", f"{imported}:{sample_tags()[0]}")
    run_json("convert", imported, "--compression", "zstd")  # leaves the gzip layers orphaned
    dry = run_json("gc", imported, "--dry-run")
    assert dry["dryRun"] is True and dry["count"] == len(dry["removed"]) > 0
    old_layers = {ly["digest"] for ly in before["layers"]}
    assert old_layers <= {r.get("digest") for r in dry["removed"]}
    assert all(blob(imported, d).exists() for d in old_layers)
    doc = run_json("gc", imported)
    assert doc["dryRun"] is False
    assert {r.get("digest") for r in doc["removed"]} == {r.get("digest") for r in dry["removed"]}
    assert doc["bytesFreed"] == sum(r["size"] for r in doc["removed"])
    assert not any(blob(imported, d).exists() for d in old_layers)
    assert verify_layout(imported).ok
    assert run_json("gc", imported)["count"] == 0


def test_push_and_pull_json(imported: Path, tmp_path: Path) -> None:
    need("push")
    need("pull")
    from registryutil import Registry  # a docker-registry on loopback (skips when missing)

    reg = Registry(tmp_path)
    try:
        ref = sample_tags()[0]
        pushed = run_json("push", f"{imported}:{ref}", f"{reg.host}/json/app:1", "--insecure")
        assert pushed["action"] == "push" and pushed["blobsTransferred"] > 0
        entry = next(e for e in index_entries(imported)
                     if e["annotations"]["org.opencontainers.image.ref.name"] == ref)
        assert pushed["digest"] == entry["digest"]
        dest = tmp_path / "pulled"
        pulled = run_json("pull", f"{reg.host}/json/app:1", "-o", dest, "--insecure")
        assert pulled["action"] == "pull" and pulled["digest"] == pushed["digest"]
        assert pulled["digest"] in {e["digest"] for e in index_entries(dest)}
        assert verify_layout(dest).ok
    finally:
        reg.stop()


# ----------------------------------------------------------------------------- errors
ERRORS = [
    # (command, argv after the command with {t} for the tmp dir, exit code)
    ("ls", ["{t}/nope"], 3),
    ("inspect", ["{t}/nope:x"], 3),
    ("verify", ["{t}/nope"], 3),
    ("tag", ["{t}/nope:a", "b"], 3),
    ("untag", ["{t}/nope:a"], 3),
    ("init", ["{t}/afile/sub"], 74),
    ("from-docker-save", ["{t}/nope.tar", "-o", "{t}/out"], 3),
    ("convert", ["{t}/nope:x", "--compression", "zstd"], 3),
    ("unpack", ["{t}/nope:x", "{t}/dest"], 3),
    ("to-docker-save", ["{t}/nope:x", "-o", "{t}/out.tar"], 3),
    ("gc", ["{t}/nope"], 3),
    ("push", ["{t}/nope:x", "127.0.0.1:9/x:1", "--insecure"], 3),
    ("pull", ["not a reference", "-o", "{t}/out"], None),
    ("inspect", ["{t}/oci:no-such-ref"], 3),
    ("convert", ["{t}/oci", "--compression", "zstd", "--level", "99"], None),
]


@pytest.mark.parametrize(("command", "argv", "code"), ERRORS,
                         ids=[f"{c}-{i}" for i, (c, _, _) in enumerate(ERRORS)])
def test_errors_go_to_stderr_with_the_exit_code(
    command: str, argv: list[str], code: int | None, tmp_path: Path
) -> None:
    need(command)
    (tmp_path / "afile").write_text("")
    run_json("init", tmp_path / "oci")
    args = [a.format(t=tmp_path) for a in argv]
    res = run_cli(command, *args, "--json")
    assert res.stdout == ""
    if code is None:
        assert res.code not in (0, 70)
    else:
        assert res.code == code
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("layouttool: error: "), res.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.tar").exists()


# ----------------------------------------------------------------------------- build commands
def test_new_append_config_json(tmp_path: Path) -> None:
    layout = tmp_path / "oci"
    doc = run_json("new", f"{layout}:img")
    assert doc["layoutCreated"] is True and doc["ref"] == "img"
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_text("f")
    doc = run_json("append", f"{layout}:img", src)
    assert doc["action"] == "moved" and len(doc["layers"]) == 1
    assert blob(layout, doc["layers"][0]["digest"]).stat().st_size == doc["layers"][0]["size"]
    assert {e["digest"] for e in index_entries(layout)} == {doc["digest"]}
    doc = run_json("config", f"{layout}:img", "--env", "A=1", "--tag", "img:2")
    assert doc["changed"] == ["Env"] and doc["ref"] == "img:2"
    assert verify_layout(layout).ok
