"""Config and manifest edits as raw JSON (layouttool.mutate): the Dockerfile meanings, unknown
fields kept, inputs never changed."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from layouttool.digest import Digest
from layouttool.errors import InvalidInputError
from layouttool.model import Descriptor, Platform
from layouttool.mutate import (
    ConfigEdit,
    add_layer,
    edit_config,
    history_entry,
    manifest_with,
    new_config,
    parse_command,
    rfc3339,
)

T = "2025-05-20T00:00:00Z"
D1 = Digest.of_bytes(b"one")


def base(**cfg: Any) -> dict[str, Any]:
    return {
        "created": "2020-01-01T00:00:00Z",
        "architecture": "amd64",
        "os": "linux",
        "x-unknown": {"kept": True},
        "config": {"Env": ["PATH=/usr/bin", "HOME=/root"], "X-Custom": 1, **cfg},
        "rootfs": {"type": "layers", "diff_ids": [str(D1)]},
        "history": [{"created": "2020-01-01T00:00:00Z", "created_by": "base"}],
    }


def edit(doc: dict[str, Any], **opts: Any) -> Any:
    before = copy.deepcopy(doc)
    res = edit_config(doc, ConfigEdit(**opts), created=T)
    assert doc == before  # the input is never changed
    return res


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('["/app", "--x"]', ["/app", "--x"]),
        ("  [\"a\"]  ", ["a"]),
        ("echo hi", ["/bin/sh", "-c", "echo hi"]),
        ("[not json", ["/bin/sh", "-c", "[not json"]),
        ("[]", []),
        ('{"a": 1}', ["/bin/sh", "-c", '{"a": 1}']),
    ],
)
def test_command_forms(value: str, expected: list[str]) -> None:
    assert parse_command(value, "--cmd") == expected


def test_command_array_must_hold_strings() -> None:
    with pytest.raises(InvalidInputError, match="strings"):
        parse_command("[1, 2]", "--cmd")


def test_entrypoint_clears_inherited_cmd_and_says_so() -> None:
    res = edit(base(Cmd=["bash"]), entrypoint='["/app"]')
    assert res.doc["config"]["Entrypoint"] == ["/app"]
    assert "Cmd" not in res.doc["config"]
    assert any("Cmd" in n and "cleared" in n for n in res.notes)
    assert res.changed == ("Entrypoint", "Cmd")


def test_entrypoint_with_cmd_keeps_the_given_cmd() -> None:
    res = edit(base(Cmd=["bash"]), entrypoint='["/app"]', cmd="serve")
    assert res.doc["config"]["Cmd"] == ["/bin/sh", "-c", "serve"]
    assert res.notes == ()


def test_empty_array_unsets() -> None:
    res = edit(base(Entrypoint=["/x"], Cmd=["y"]), entrypoint="[]", cmd="[]")
    assert "Entrypoint" not in res.doc["config"] and "Cmd" not in res.doc["config"]


def test_env_replaces_in_place_expands_and_unsets() -> None:
    res = edit(base(), env=("PATH=/opt/bin:$PATH", "NEW=${HOME}/x", "LIT=\\$HOME"),
               unset_env=("HOME",))
    assert res.doc["config"]["Env"] == [
        "PATH=/opt/bin:/usr/bin", "NEW=/root/x", "LIT=$HOME"
    ]


def test_env_expansion_uses_the_environment_before_the_edit() -> None:
    res = edit(base(), env=("A=1", "B=$A"))
    assert "B=" in res.doc["config"]["Env"]


@pytest.mark.parametrize("bad", ["NOEQUALS", "=v", "1X=v", "A-B=v"])
def test_env_needs_a_name(bad: str) -> None:
    with pytest.raises(InvalidInputError, match="--env"):
        edit(base(), env=(bad,))


def test_labels_set_unset_and_note_on_missing() -> None:
    res = edit(base(Labels={"a": "1", "b": "2"}), labels=("c=3", "a=x=y"),
               unset_labels=("b", "zz"))
    assert res.doc["config"]["Labels"] == {"a": "x=y", "c": "3"}
    assert any("zz" in n for n in res.notes)


def test_last_label_removed_drops_the_field() -> None:
    res = edit(base(Labels={"a": "1"}), unset_labels=("a",))
    assert "Labels" not in res.doc["config"]


@pytest.mark.parametrize(
    ("ports", "expected"),
    [(("80",), {"80/tcp": {}}), (("53/UDP", "9/sctp"), {"53/udp": {}, "9/sctp": {}})],
)
def test_expose(ports: tuple[str, ...], expected: dict[str, Any]) -> None:
    assert edit(base(), expose=ports).doc["config"]["ExposedPorts"] == expected


@pytest.mark.parametrize("bad", ["0", "65536", "80/icmp", "http", "-1"])
def test_expose_refuses_bad_ports(bad: str) -> None:
    with pytest.raises(InvalidInputError, match="--expose"):
        edit(base(), expose=(bad,))


def test_volumes_are_absolute() -> None:
    assert edit(base(), volumes=("/data",)).doc["config"]["Volumes"] == {"/data": {}}
    with pytest.raises(InvalidInputError, match="absolute"):
        edit(base(), volumes=("data",))


@pytest.mark.parametrize(
    ("current", "given", "expected"),
    [(None, "app", "/app"), ("/srv", "app/../x", "/srv/x"), ("/srv", "/abs//y/", "/abs/y")],
)
def test_workdir_like_the_dockerfile(current: str | None, given: str, expected: str) -> None:
    cfg = {"WorkingDir": current} if current else {}
    assert edit(base(**cfg), workdir=given).doc["config"]["WorkingDir"] == expected


def test_verbatim_fields_and_empty_removes() -> None:
    res = edit(base(User="1"), user="", stop_signal="SIGQUIT", author="me", variant="v8",
               arch="arm64", os="linux")
    cfg = res.doc["config"]
    assert "User" not in cfg and cfg["StopSignal"] == "SIGQUIT"
    assert res.doc["author"] == "me" and res.doc["architecture"] == "arm64"
    assert res.doc["variant"] == "v8"
    assert set(res.changed) == {"User", "StopSignal", "author", "architecture", "variant"}


def test_created_must_be_rfc3339() -> None:
    with pytest.raises(InvalidInputError, match="RFC 3339"):
        edit(base(), created="yesterday")


def test_unknown_fields_survive_and_history_records_the_edit() -> None:
    doc = base()
    res = edit(doc, labels=("a=b",), history_comment="why")
    out = res.doc
    assert out["x-unknown"] == {"kept": True} and out["config"]["X-Custom"] == 1
    assert out["rootfs"] == doc["rootfs"]
    assert list(out)[:4] == list(doc)[:4]  # key order kept
    assert out["created"] == T
    assert out["history"][:-1] == doc["history"]
    assert out["history"][-1] == {
        "created": T, "created_by": "layouttool config --label a=b", "comment": "why",
        "empty_layer": True,
    }


def test_command_line_quotes_values() -> None:
    line = ConfigEdit(entrypoint='["/app"]', env=("A=b c",)).command_line()
    assert line == "layouttool config --entrypoint '[\"/app\"]' --env 'A=b c'"


def test_is_empty() -> None:
    assert ConfigEdit().is_empty()
    assert ConfigEdit(history_comment="x").is_empty()
    assert not ConfigEdit(cmd="[]").is_empty()


def test_non_object_config_is_invalid() -> None:
    with pytest.raises(InvalidInputError, match="JSON object"):
        edit_config({"config": ["x"]}, ConfigEdit(user="1"), created=T)


def test_add_layer_appends_diff_id_history_and_created() -> None:
    doc = base()
    d2 = Digest.of_bytes(b"two")
    out = add_layer(doc, d2, history_entry(T, "layouttool append x/"))
    assert out["rootfs"]["diff_ids"] == [str(D1), str(d2)]
    assert out["history"][-1] == {"created": T, "created_by": "layouttool append x/"}
    assert out["created"] == T
    assert doc["rootfs"]["diff_ids"] == [str(D1)]


def test_add_layer_pads_history_for_layers_without_one() -> None:
    doc = {"rootfs": {"type": "layers", "diff_ids": [str(D1), str(D1)]},
           "history": [{"created_by": "x", "empty_layer": True}]}
    out = add_layer(doc, D1, history_entry(T, "new"))
    described = [h for h in out["history"] if not h.get("empty_layer")]
    assert len(described) == len(out["rootfs"]["diff_ids"]) == 3
    assert described[-1]["created_by"] == "new"


def test_new_config_and_manifest_with() -> None:
    cfg = new_config(Platform("linux", "arm64", "v8"), T)
    assert cfg == {"created": T, "architecture": "arm64", "os": "linux", "variant": "v8",
                   "config": {}, "rootfs": {"type": "layers", "diff_ids": []}}
    man = {"schemaVersion": 2, "config": {"mediaType": "m", "digest": str(D1), "size": 3,
                                          "annotations": {"k": "v"}},
           "layers": [], "subject": {"x": 1}}
    new_cfg = Descriptor("m", Digest.of_bytes(b"c"), 1)
    layer = Descriptor("l", D1, 3)
    out = manifest_with(man, config=new_cfg, add=(layer,))
    assert out["config"] == {"mediaType": "m", "digest": str(new_cfg.digest), "size": 1,
                             "annotations": {"k": "v"}}
    assert out["layers"] == [layer.to_json()] and out["subject"] == {"x": 1}
    assert json.dumps(man["layers"]) == "[]"


def test_rfc3339() -> None:
    assert rfc3339(0) == "1970-01-01T00:00:00Z"
    assert rfc3339(1747699200) == "2025-05-20T00:00:00Z"
