"""Several processes writing one layout at once lose nothing (skopeo #1018 is what we avoid)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

from conftest import sh
from test_store import assert_verifies, make_layout

from layouttool.store import Layout

_ADDER = """
import sys
from layouttool import mediatypes as mt
from layouttool.store import Layout

layout = Layout.open(sys.argv[1])
worker, count = sys.argv[2], int(sys.argv[3])
base = layout.read_index().manifests[0]
with layout.writing():
    for i in range(count):
        d = base.with_(annotations={mt.ANNOT_REF_NAME: f"w{worker}-{i}"})
        layout.update_index(lambda entries, _doc, d=d: [*entries, d])
"""


def test_processes_adding_entries_lose_none(tmp_path: Path) -> None:
    layout = make_layout(tmp_path, "base")
    workers, count = 4, 25
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _ADDER, str(layout.root), str(w), str(count)],
            stderr=subprocess.PIPE,
            text=True,
            env=_ENV,
        )
        for w in range(workers)
    ]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    refs = [d.ref_name for d in Layout.open(layout.root).read_index().manifests]
    expected = {"base"} | {f"w{w}-{i}" for w in range(workers) for i in range(count)}
    assert len(refs) == len(expected)
    assert set(refs) == expected
    assert layout.tmp_files() == []
    assert_verifies(layout)


_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
# many short-lived processes: let them share compiled bytecode (outside the repository)
_ENV["PYTHONPYCACHEPREFIX"] = os.path.join(
    os.environ.get("TMPDIR", "/tmp"), f"layouttool-pycache-{os.getuid()}"
)


def _layouttool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "layouttool", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=_ENV,
    )


def test_concurrent_tag_commands_and_readers(tmp_path: Path) -> None:
    """`layouttool tag` in parallel processes while `ls` reads: all tags land, reads never fail."""
    layout = make_layout(tmp_path, "base", "other")
    digest = str(layout.read_index().manifests[0].digest)
    workers, per_worker = 3, 3
    failures: list[str] = []
    stop = threading.Event()
    reads = 0

    def tagger(w: int) -> None:
        for i in range(per_worker):
            r = _layouttool("tag", f"{layout.root}@{digest}", f"t{w}-{i}", "--json")
            if r.returncode != 0 or json.loads(r.stdout)["action"] != "tagged":
                failures.append(f"tag t{w}-{i}: {r.returncode} {r.stderr}")

    def reader() -> None:
        nonlocal reads
        while not stop.is_set():
            r = _layouttool("ls", str(layout.root), "--json")
            if r.returncode != 0:
                failures.append(f"ls: {r.returncode} {r.stderr}")
                return
            json.loads(r.stdout)
            reads += 1

    threads = [threading.Thread(target=tagger, args=(w,)) for w in range(workers)]
    rt = threading.Thread(target=reader)
    rt.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stop.set()
    rt.join()
    assert failures == []
    assert reads >= 1
    entries = Layout.open(layout.root).read_index().manifests
    tags = {d.ref_name for d in entries}
    want = {f"t{w}-{i}" for w in range(workers) for i in range(per_worker)}
    assert want <= tags
    assert len(entries) == 2 + len(want)
    assert {str(d.digest) for d in entries if d.ref_name in want} == {digest}
    assert_verifies(layout)


def test_concurrent_untag_and_tag(tmp_path: Path) -> None:
    """Removing some refs while others are added: exactly the expected set remains."""
    layout = make_layout(tmp_path, "base", *(f"old{i}" for i in range(4)))
    digest = str(layout.read_index().manifests[0].digest)
    results: list[subprocess.CompletedProcess[str]] = []

    def run(*args: str) -> None:
        results.append(_layouttool(*args))

    threads = [
        threading.Thread(target=run, args=("untag", f"{layout.root}:old{i}")) for i in range(4)
    ] + [
        threading.Thread(target=run, args=("tag", f"{layout.root}@{digest}", f"new{i}"))
        for i in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [r.returncode for r in results] == [0] * 8, [r.stderr for r in results]
    refs = sorted(d.ref_name or "" for d in Layout.open(layout.root).read_index().manifests)
    assert refs == ["base", *(f"new{i}" for i in range(4))]
    assert_verifies(layout)


def test_skopeo_reads_after_concurrent_tags(tmp_path: Path, skopeo: str) -> None:
    layout = make_layout(tmp_path, "base")
    digest = str(layout.read_index().manifests[0].digest)
    threads = [
        threading.Thread(target=_layouttool, args=("tag", f"{layout.root}@{digest}", f"s{i}"))
        for i in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(4):
        out = sh(skopeo, "inspect", "--raw", f"oci:{layout.root}:s{i}").stdout
        assert out == layout.blob_path(layout.read_index().manifests[0].digest).read_bytes()
