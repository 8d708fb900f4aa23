"""runtime.runtime_config: image config -> OCI runtime config.json (image-spec conversion.md)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from layouttool import errors
from layouttool.runtime import DEFAULT_PATH, runtime_config

PASSWD = """root:x:0:0:root:/root:/bin/sh
# a comment
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
app:x:1000:1001:App:/home/app:/bin/sh
"""
GROUP = """root:x:0:
wheel:x:10:app,other
staff:x:50:app
appgrp:x:1001:
"""


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    (root / "etc/passwd").write_text(PASSWD)
    (root / "etc/group").write_text(GROUP)
    return root


def image(config: dict[str, Any] | None = None, **top: Any) -> dict[str, Any]:
    return {"architecture": "amd64", "os": "linux", "config": config or {}, **top}


def test_args_env_cwd_verbatim(rootfs: Path) -> None:
    spec = runtime_config(image({"Entrypoint": ["/bin/app", "--serve"], "Cmd": ["-v"],
                                 "Env": ["PATH=/opt/bin", "A=1"], "WorkingDir": "/srv"}), rootfs)
    proc = spec["process"]
    assert proc["args"] == ["/bin/app", "--serve", "-v"]
    assert proc["env"] == ["PATH=/opt/bin", "A=1"]  # PATH present: nothing added or changed
    assert proc["cwd"] == "/srv"
    assert spec["root"] == {"path": "rootfs", "readonly": False}
    assert spec["ociVersion"].startswith("1.")


def test_defaults_when_fields_missing(rootfs: Path) -> None:
    spec = runtime_config(image({"Cmd": ["sh"]}), rootfs)
    assert spec["process"]["args"] == ["sh"]
    assert spec["process"]["cwd"] == "/"
    assert spec["process"]["env"] == [DEFAULT_PATH]
    assert spec["process"]["user"] == {"uid": 0, "gid": 0}


def test_relative_workdir_is_made_absolute(rootfs: Path) -> None:
    assert runtime_config(image({"WorkingDir": "app"}), rootfs)["process"]["cwd"] == "/app"


def test_docker_capitalised_config_key(rootfs: Path) -> None:
    spec = runtime_config({"os": "linux", "Config": {"Cmd": ["x"]}}, rootfs)
    assert spec["process"]["args"] == ["x"]


@pytest.mark.parametrize(("user", "expected"), [
    ("1234", {"uid": 1234, "gid": 0}),
    ("1000", {"uid": 1000, "gid": 1001}),  # numeric uid listed in passwd: its primary group
    ("1234:5678", {"uid": 1234, "gid": 5678}),
    ("app", {"uid": 1000, "gid": 1001, "additionalGids": [10, 50]}),
    ("app:staff", {"uid": 1000, "gid": 50}),
    ("app:7", {"uid": 1000, "gid": 7}),
    ("daemon", {"uid": 1, "gid": 1}),
    ("0:wheel", {"uid": 0, "gid": 10}),
])
def test_user_resolution(rootfs: Path, user: str, expected: dict[str, Any]) -> None:
    assert runtime_config(image({"User": user}), rootfs)["process"]["user"] == expected


@pytest.mark.parametrize("user", ["nobody-here", "app:nogroup", "ghost:0", ":", "app:"])
def test_unknown_user_or_group_is_an_error(rootfs: Path, user: str) -> None:
    with pytest.raises(errors.InvalidInputError):
        runtime_config(image({"User": user}), rootfs)


def test_user_name_without_passwd_is_an_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(errors.InvalidInputError, match="passwd"):
        runtime_config(image({"User": "app"}), empty)
    # numeric users need no passwd
    assert runtime_config(image({"User": "5"}), empty)["process"]["user"] == {"uid": 5, "gid": 0}


def test_passwd_symlink_out_of_rootfs_is_not_followed(tmp_path: Path) -> None:
    host = tmp_path / "host-passwd"
    host.write_text("evil:x:4242:4242::/:/bin/sh\n")
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    os.symlink(str(host), root / "etc/passwd")  # absolute: resolves to rootfs/<host path>
    with pytest.raises(errors.InvalidInputError):
        runtime_config(image({"User": "evil"}), root)
    os.unlink(root / "etc/passwd")
    os.symlink("../../host-passwd", root / "etc/passwd")  # .. clamps at the rootfs
    with pytest.raises(errors.InvalidInputError):
        runtime_config(image({"User": "evil"}), root)


def test_passwd_symlink_inside_rootfs_is_followed(tmp_path: Path) -> None:
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    (root / "usr/share").mkdir(parents=True)
    (root / "usr/share/passwd").write_text("svc:x:77:88::/:/bin/sh\n")
    os.symlink("/usr/share/passwd", root / "etc/passwd")
    assert runtime_config(image({"User": "svc"}), root)["process"]["user"] == {
        "uid": 77, "gid": 88}


def test_passwd_fifo_is_not_read(tmp_path: Path) -> None:
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    os.mkfifo(root / "etc/passwd")
    with pytest.raises(errors.InvalidInputError):  # would hang if opened for reading
        runtime_config(image({"User": "app"}), root)


def test_symlink_loop_is_unsafe(tmp_path: Path) -> None:
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    os.symlink("passwd", root / "etc/passwd")
    with pytest.raises(errors.UnsafeInputError):
        runtime_config(image({"User": "app"}), root)


def test_annotations_with_label_precedence(rootfs: Path) -> None:
    spec = runtime_config(image(
        {"Labels": {"org.opencontainers.image.os": "from-label", "custom": "x"},
         "StopSignal": "SIGTERM", "ExposedPorts": {"80/tcp": {}, "443/tcp": {}}},
        variant="v8", author="me", created="2024-01-01T00:00:00Z",
        **{"os.version": "10.0", "os.features": ["win32k", "x"]},
    ), rootfs)
    ann = spec["annotations"]
    assert ann["org.opencontainers.image.os"] == "from-label"
    assert ann["org.opencontainers.image.architecture"] == "amd64"
    assert ann["org.opencontainers.image.variant"] == "v8"
    assert ann["org.opencontainers.image.os.version"] == "10.0"
    assert ann["org.opencontainers.image.os.features"] == "win32k,x"
    assert ann["org.opencontainers.image.author"] == "me"
    assert ann["org.opencontainers.image.created"] == "2024-01-01T00:00:00Z"
    assert ann["org.opencontainers.image.stopSignal"] == "SIGTERM"
    assert ann["org.opencontainers.image.exposedPorts"] == "443/tcp,80/tcp"
    assert ann["custom"] == "x"


def test_skeleton_mounts_and_namespaces(rootfs: Path) -> None:
    spec = runtime_config(image(), rootfs)
    dests = [m["destination"] for m in spec["mounts"]]
    assert dests[:3] == ["/proc", "/dev", "/dev/pts"] and "/sys" in dests
    ns = {n["type"] for n in spec["linux"]["namespaces"]}
    assert ns == {"pid", "network", "ipc", "uts", "mount"}
    devpts = next(m for m in spec["mounts"] if m["destination"] == "/dev/pts")
    assert "gid=5" in devpts["options"]


def test_rootless_skeleton(rootfs: Path) -> None:
    spec = runtime_config(image(), rootfs, rootless=True)
    ns = {n["type"] for n in spec["linux"]["namespaces"]}
    assert "user" in ns and "network" not in ns
    assert spec["linux"]["uidMappings"] == [{"containerID": 0, "hostID": os.geteuid(),
                                             "size": 1}]
    sysm = next(m for m in spec["mounts"] if m["destination"] == "/sys")
    assert sysm["type"] == "none" and "rbind" in sysm["options"]
    devpts = next(m for m in spec["mounts"] if m["destination"] == "/dev/pts")
    assert "gid=5" not in devpts["options"]


@pytest.mark.parametrize("bad", [
    {"config": {"Cmd": "not a list"}},
    {"config": {"Env": [1, 2]}},
    {"config": {"User": 5}},
    {"config": {"Labels": {"a": 1}}},
    {"config": []},
    {"os": 5},
])
def test_malformed_config_is_invalid(rootfs: Path, bad: dict[str, Any]) -> None:
    with pytest.raises(errors.InvalidInputError):
        runtime_config(bad, rootfs)
