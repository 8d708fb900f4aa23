"""The README tutorial (what `make demo` runs) works, line by line, on the bundled sample."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import tarfile
from pathlib import Path

from conftest import REPO


def _demo():
    spec = importlib.util.spec_from_file_location("demo", REPO / "scripts" / "demo.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_tutorial_is_extracted_from_readme():
    cmds = _demo().tutorial_commands()
    assert cmds[0].startswith("layouttool from-docker-save app.tar")
    assert any(c.startswith("layouttool gc") for c in cmds)
    assert not any(c.startswith("#") for c in cmds)


def test_tutorial_runs(tmp_path: Path):
    _demo().run(tmp_path, quiet=True)
    # what the tutorial promises is really there
    assert (tmp_path / "rootfs" / "etc" / "motd").exists()
    assert not (tmp_path / "rootfs" / "etc" / "old.txt").exists()
    assert (tmp_path / "exported.tar").stat().st_size > 0
    ls = subprocess.run([sys.executable, "-m", "layouttool", "ls", "oci2", "--json"],
                        cwd=tmp_path, capture_output=True, text=True, check=True)
    refs = {i["ref"] for i in json.loads(ls.stdout)["images"]}
    assert "layouttool-sample:1.0" in refs
    # the "build an image" part: what it made is there, and right
    ls = subprocess.run([sys.executable, "-m", "layouttool", "ls", "oci", "--json"],
                        cwd=tmp_path, capture_output=True, text=True, check=True)
    refs = {i["ref"] for i in json.loads(ls.stdout)["images"]}
    assert {"hello", "layouttool-sample:edited"} <= refs
    for image, dest in (("oci:hello", "check-hello"),
                        ("oci:layouttool-sample:edited", "check-edit")):
        subprocess.run([sys.executable, "-m", "layouttool", "unpack", image, dest, "--rootless"],
                       cwd=tmp_path, capture_output=True, check=True)
    page = tmp_path / "check-hello" / "srv" / "www" / "index.html"
    assert page.read_text() == "<h1>hello</h1>\n"
    assert (tmp_path / "check-hello" / "bin" / "hello").is_file()
    assert (tmp_path / "check-edit" / "etc" / "motd").read_text() == "edited\n"
    assert not (tmp_path / "check-edit" / "bin").exists()
    assert (tmp_path / "check-edit" / "etc" / "hello.txt").exists()
    # looking inside: the exported tar holds the image's files; flatten made one layer
    with tarfile.open(tmp_path / "hello.tar") as tf:
        names = set(tf.getnames())
    assert {"srv/www/index.html", "bin/hello", "etc/motd"} <= names
    inspect = subprocess.run([sys.executable, "-m", "layouttool", "inspect", "oci:hello:flat",
                              "--json"], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert len(json.loads(inspect.stdout)["layers"]) == 1
    found = subprocess.run([sys.executable, "-m", "layouttool", "referrers", "oci:hello",
                            "--json"], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert [m["artifactType"] for m in json.loads(found.stdout)["manifests"]] == [
        "application/spdx+json"]
