"""Layouts as other tools write them: every command reads them, and says the same about them.

For each shape of :mod:`shapes` (the quirks of go-containerregistry, regclient, BuildKit, helm,
oras, containerd, Docker 25+...): ``verify`` (its problems and warnings, and ``--strict``),
``ls`` (every entry listed, exit 0), ``inspect``, ``gc`` (removes no reachable blob; a second
run removes nothing) and ``unpack`` (an image unpacks, an artifact is refused in one line).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import run_cli
from shapes import SHAPES, Made


@dataclass(frozen=True)
class Expect:
    """What the commands must say about one shape."""

    warnings: frozenset[str] = frozenset()
    problems: frozenset[str] = frozenset()
    #: ls: the kind of each entry, in index order (None: unreadable, with an error)
    kinds: tuple[str | None, ...] = ()
    #: IMAGE name in Made.images -> (inspect kind, unpack exit code)
    images: dict[str, tuple[str, int]] = field(default_factory=dict)


def _e(warnings: set[str] = frozenset(), problems: set[str] = frozenset(),
       kinds: tuple[str | None, ...] = (), **images: tuple[str, int]) -> Expect:
    return Expect(frozenset(warnings), frozenset(problems), kinds, images)


IMAGE = ("image", 0)
ARTIFACT = ("artifact", 4)
EXPECT: dict[str, Expect] = {
    "ggcr-docker-under-oci": _e({"media-type-mismatch"}, kinds=("image",), app=IMAGE),
    "regclient-absent-subject": _e({"subject-missing"}, kinds=("artifact",), sbom=ARTIFACT),
    # the "4 problems" are 4 warnings now: layers: [] and three nulls
    "buildkit-zero-layers": _e({"layers-empty", "null-field"}, kinds=("image",), scratch=IMAGE),
    "helm-chart": _e(kinds=("artifact",), chart=ARTIFACT),
    "old-style-artifact": _e({"artifact-config"}, kinds=("artifact",), sig=ARTIFACT),
    "size-lie-beside-truth": _e(problems={"size-mismatch"}, kinds=("image", None), good=IMAGE),
    "platform-in-index": _e(kinds=("index",), multi=IMAGE, arm64=("image", 0),
                            amd64=IMAGE),
    "containerd-export": _e({"manifest-missing"}, kinds=("index",), app=IMAGE),
    "buildkit-attestations": _e(kinds=("index",), app=IMAGE, attestation=ARTIFACT),
    "docker-c8d-save": _e({"manifest-missing"}, kinds=("index",), app=IMAGE),
    "oras-v11rc-artifact": _e(kinds=("image", "artifact"), app=IMAGE, artifact=ARTIFACT),
    "oras-empty-config": _e(kinds=("artifact",), thing=ARTIFACT),
    "docker25-null-manifests": _e({"null-field"}),
}


def test_every_shape_has_its_expectations() -> None:
    assert set(EXPECT) == set(SHAPES)


@pytest.fixture(params=sorted(SHAPES))
def made(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, Made]:
    name = request.param
    return name, SHAPES[name](tmp_path / "oci")


def blobs(root: Path) -> set[str]:
    return {p.name for p in (root / "blobs" / "sha256").iterdir()}


def test_verify(made: tuple[str, Made]) -> None:
    name, m = made
    want = EXPECT[name]
    r = run_cli("verify", "--json", m.root)
    doc = json.loads(r.stdout)
    assert {p["code"] for p in doc["problems"]} == want.problems, doc["problems"]
    assert {w["code"] for w in doc["warnings"]} == want.warnings, doc["warnings"]
    assert r.code == (5 if want.problems else 0), r.stderr
    # every finding names its blob and where it was found
    for f in doc["problems"] + doc["warnings"]:
        assert f["where"] and f["message"] and (f["digest"] or f["where"] == "index.json")
    strict = run_cli("verify", "--strict", m.root)
    assert (strict.code != 0) is bool(want.warnings or want.problems), strict.stdout
    # the text report: one line per finding, each ending with its code
    text = run_cli("verify", m.root).stdout.splitlines()
    assert len(text) == len(doc["problems"]) + len(doc["warnings"]) + 1
    assert all(line.endswith("]") for line in text[:-1])


def test_ls_lists_every_entry(made: tuple[str, Made]) -> None:
    name, m = made
    want = EXPECT[name]
    r = run_cli("ls", "--json", m.root)
    assert r.code == 0, r.stderr
    images = json.loads(r.stdout)["images"]
    assert tuple(e["kind"] for e in images) == want.kinds
    for e in images:
        assert (e["error"] is None) is (e["kind"] is not None)
    table = run_cli("ls", m.root)
    assert table.code == 0 and len(table.stdout.splitlines()) == 1 + len(images)
    if any(k is None for k in want.kinds):
        assert "ERROR" in table.stdout.splitlines()[0]


def test_inspect_and_unpack(made: tuple[str, Made], tmp_path: Path) -> None:
    name, m = made
    for key, (kind, unpack_code) in EXPECT[name].images.items():
        image = m.images[key]
        r = run_cli("inspect", "--json", image)
        assert r.code == 0, r.stderr
        doc = json.loads(r.stdout)
        assert doc["kind"] == kind
        if kind == "artifact":
            assert doc["artifactType"]
        dest = tmp_path / f"rootfs-{key}"
        u = run_cli("unpack", image, dest, "--rootless")
        assert u.code == unpack_code, u.stderr
        if unpack_code:
            (line,) = u.stderr.splitlines()
            assert line.startswith("layouttool: error: ") and "is an artifact" in line
            assert "nothing to unpack" in line
        elif m.file:
            assert (dest / m.file).read_bytes() == b"hello\n"


def test_gc_keeps_everything_reachable(made: tuple[str, Made]) -> None:
    name, m = made
    before = blobs(m.root)
    (m.root / "blobs" / "sha256" / ("0" * 64)).write_bytes(b"orphan")
    r = run_cli("gc", "--json", m.root)
    assert r.code == 0, r.stderr
    doc = json.loads(r.stdout)
    assert [x["digest"] for x in doc["removed"]] == ["sha256:" + "0" * 64]
    assert blobs(m.root) == before
    # gc warns about what verify warns about (the same reader)
    assert {w["code"] for w in doc["warnings"]} <= EXPECT[name].warnings
    assert json.loads(run_cli("gc", "--json", m.root).stdout)["count"] == 0


@pytest.mark.parametrize("name", ["helm-chart", "old-style-artifact", "oras-empty-config"])
def test_export_and_convert_refuse_an_artifact_in_one_line(name: str, tmp_path: Path) -> None:
    m = SHAPES[name](tmp_path / "oci")
    (image,) = m.images.values()
    for argv, verb in (
        (["to-docker-save", image, "-o", tmp_path / "out.tar"], "export"),
        (["convert", image, "--compression", "zstd"], "convert"),
    ):
        before = blobs(m.root)
        r = run_cli(*argv)
        assert r.code == 4, r.stderr
        (line,) = r.stderr.splitlines()
        assert "is an artifact (" in line and f"nothing to {verb}" in line
        assert blobs(m.root) == before and not (tmp_path / "out.tar").exists()
    # converting the whole layout copies the artifact unchanged instead
    r = run_cli("convert", m.root, "--compression", "zstd", "-o", tmp_path / "all")
    assert r.code == 0, r.stderr
    assert run_cli("verify", tmp_path / "all").code == 0
