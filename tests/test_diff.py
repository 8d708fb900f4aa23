"""``diff``: file-level differences between two images, and ``diff --layers`` (what each layer
changes, the bytes wasted on replaced files), checked against changes made on purpose."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from conftest import run_cli
from imagebuild import make_image
from layerbuild import build_layer
from layerstacks import D, dive_layers

BASE = [
    {**D, "name": "etc"},
    {"name": "etc/same", "data": "same"},
    {"name": "etc/content", "data": "aaaa"},
    {"name": "etc/mode", "data": "m", "mode": 0o644},
    {"name": "etc/owner", "data": "o"},
    {"name": "etc/gone", "data": "bye"},
    {"name": "etc/typed", "data": "file"},
    {"type": "symlink", "name": "etc/link", "target": "same"},
    {"name": "etc/xattr", "data": "x", "xattrs": {"user.a": b"1"}},
    {"name": "etc/touched", "data": "t", "mtime": 1},
    {**D, "name": "var"},
    {"name": "var/tree/a", "data": "a"},
]
CHANGES = [
    {"name": "etc/content", "data": "bbbb"},  # same size, other bytes
    {"name": "etc/mode", "data": "m", "mode": 0o600},
    {"name": "etc/owner", "data": "o", "uid": 1000, "gid": 1000},
    {"name": "etc/.wh.gone"},
    {**D, "name": "etc/typed"},
    {"type": "symlink", "name": "etc/link", "target": "content"},
    {"name": "etc/xattr", "data": "x", "xattrs": {"user.a": b"2"}},
    {"name": "etc/touched", "data": "t", "mtime": 2},  # only the mtime: not a change
    {"name": "etc/new", "data": "hello"},
    {"name": ".wh.var"},
]


def two_images(tmp_path: Path, *, same_layout: bool = True) -> tuple[str, str]:
    base = build_layer(BASE)
    a = make_image(tmp_path / "a", [base], ref="v1")
    b = make_image(tmp_path / ("a" if same_layout else "b"), [base, build_layer(CHANGES)],
                   ref="v2")
    return f"{a}:v1", f"{b}:v2"


def run_diff(*args: str) -> dict[str, Any]:
    res = run_cli("diff", *args, "--json")
    assert res.code == 0, res.stderr
    doc: dict[str, Any] = json.loads(res.stdout)
    return doc


@pytest.mark.parametrize("same_layout", [True, False])
def test_diff_finds_each_kind_of_change(tmp_path: Path, same_layout: bool) -> None:
    old, new = two_images(tmp_path, same_layout=same_layout)
    doc = run_diff(old, new)
    assert [i["path"] for i in doc["added"]] == ["etc/new"]
    assert doc["added"][0]["digest"] == (
        "sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824")
    assert [i["path"] for i in doc["removed"]] == ["etc/gone", "var", "var/tree", "var/tree/a"]
    changed = {i["path"]: i for i in doc["changed"]}
    assert {p: i["changes"] for p, i in changed.items()} == {
        "etc/content": ["content"],
        "etc/mode": ["mode"],
        "etc/owner": ["owner"],
        "etc/typed": ["type"],
        "etc/link": ["linkTarget"],
        "etc/xattr": ["xattrs"],
    }
    assert changed["etc/content"]["old"]["size"] == changed["etc/content"]["new"]["size"] == 4
    assert (changed["etc/mode"]["old"]["mode"], changed["etc/mode"]["new"]["mode"]) == (
        0o644, 0o600)
    assert (changed["etc/typed"]["old"]["type"], changed["etc/typed"]["new"]["type"]) == (
        "file", "dir")
    assert changed["etc/link"]["new"]["linkTarget"] == "content"
    assert doc["from"]["image"] == old and doc["to"]["image"] == new


def test_diff_the_other_way_swaps_added_and_removed(tmp_path: Path) -> None:
    old, new = two_images(tmp_path)
    fwd, back = run_diff(old, new), run_diff(new, old)
    assert [i["path"] for i in back["added"]] == [i["path"] for i in fwd["removed"]]
    assert [i["path"] for i in back["removed"]] == [i["path"] for i in fwd["added"]]
    assert [i["path"] for i in back["changed"]] == [i["path"] for i in fwd["changed"]]


def test_an_image_against_itself_and_a_flattened_copy_is_empty(tmp_path: Path) -> None:
    old, _ = two_images(tmp_path)
    doc = run_diff(old, old)
    assert doc["added"] == doc["removed"] == doc["changed"] == []
    # the same tree from other layers (one merged layer): still no difference
    same = make_image(tmp_path / "c", [build_layer([*BASE[:5], *BASE[6:]]),
                                       build_layer([{"name": "etc/gone", "data": "bye"}])])
    assert run_diff(old, f"{same}:t")["changed"] == []


def test_diff_text_output(tmp_path: Path) -> None:
    old, new = two_images(tmp_path)
    res = run_cli("diff", old, new)
    assert res.code == 0
    lines = res.stdout.splitlines()
    assert "+ etc/new  (file, 5 B)" in lines
    assert "- etc/gone  (file, 3 B)" in lines
    assert "~ etc/content  content  (4 B)" in lines
    assert "~ etc/typed  type  (file, 4 B -> dir)" in lines
    assert res.stderr == "1 added, 4 removed, 6 changed\n"


@pytest.mark.parametrize("args", [["x"], ["x", "y", "--layers"], ["x", "y", "z"]])
def test_diff_needs_two_images_or_one_with_layers(args: list[str]) -> None:
    res = run_cli("diff", *args)
    assert res.code == 2
    assert "give IMAGE_A IMAGE_B, or one IMAGE with --layers" in res.stderr


def test_missing_image_is_not_found(tmp_path: Path) -> None:
    old, _ = two_images(tmp_path)
    res = run_cli("diff", old, f"{tmp_path / 'a'}:nope")
    assert res.code == 3 and res.stdout == ""


# -- --layers -------------------------------------------------------------------------------


def test_layers_report_adds_removes_overwrites(tmp_path: Path) -> None:
    _, new = two_images(tmp_path)
    doc = run_diff(new, "--layers")
    first, second = doc["layers"]
    assert first["index"] == 1 and not first["removed"] and not first["overwritten"]
    assert {c["path"] for c in first["added"]} == {
        "etc", "etc/same", "etc/content", "etc/mode", "etc/owner", "etc/gone", "etc/typed",
        "etc/link", "etc/xattr", "etc/touched", "var", "var/tree", "var/tree/a"}
    assert [c["path"] for c in second["added"]] == ["etc/new"]
    assert [c["path"] for c in second["removed"]] == [
        "etc/gone", "var", "var/tree", "var/tree/a"]
    over = {c["path"]: c for c in second["overwritten"]}
    assert set(over) == {"etc/content", "etc/mode", "etc/owner", "etc/typed", "etc/link",
                         "etc/xattr", "etc/touched"}
    assert over["etc/typed"] == {"path": "etc/typed", "type": "dir", "size": 0,
                                 "oldType": "file", "oldSize": 4}
    # wasted: every file of layer 1 that layer 2 replaced or deleted
    hidden = 4 + 1 + 1 + 3 + 4 + 1 + 1 + 1  # content mode owner gone typed xattr touched a
    assert first["wastedBytes"] == second["hiddenBytes"] == doc["wastedBytes"] == hidden
    assert second["wastedBytes"] == 0
    assert doc["fileBytes"] == first["fileBytes"] + second["fileBytes"]
    assert first["createdBy"] == "layer 0"


def test_layers_on_the_dive_fixture(tmp_path: Path) -> None:
    """dive's own test image: somefile1.txt stored twice (cp, chmod) then removed with its
    directory, somefile2/3 removed, saved.txt replaced by a chmod: 5 copies of 6405 bytes."""
    layout = make_image(tmp_path / "oci", dive_layers(), compression="none")
    doc = run_diff(f"{layout}:t", "--layers")
    assert len(doc["layers"]) == 14
    wasted = {w["path"]: (w["bytes"], w["copies"]) for w in doc["wastedFiles"]}
    assert wasted == {
        "root/example/somefile1.txt": (2 * 6405, 2),
        "root/example/somefile2.txt": (6405, 1),
        "root/example/somefile3.txt": (6405, 1),
        "root/saved.txt": (6405, 1),
    }
    assert doc["wastedBytes"] == 5 * 6405
    removed = {c["path"] for la in doc["layers"] for c in la["removed"]}
    assert {"root/example", "root/example/somefile1.txt"} <= removed
    assert doc["efficiency"] == round(1 - 5 * 6405 / doc["fileBytes"], 6)
    text = run_cli("diff", f"{layout}:t", "--layers")
    assert text.code == 0
    assert "12.5 KiB  2 copies  root/example/somefile1.txt" in text.stdout
    assert "layer 10 removes: root/example," in text.stdout
