"""Several writers at once on one layout (processes): imports, tags, untags, converts and gc.

At the end every writer's entries are there, nothing that was there is lost, ``verify`` passes
and every image unpacks; readers running meanwhile (``ls``, ``inspect``, ``unpack`` as
processes, and a tight in-process loop over index.json) never fail, so they never saw a
half-written index.json (skopeo #1018 lost tags this way).
"""

from __future__ import annotations

import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from killharness import (
    Run,
    check_unpack,
    check_verify,
    docker_save_bytes,
    index_entries,
    make_layout,
    random_image,
    require,
    run,
)

from layouttool import mediatypes as mt
from layouttool.store import Layout


def _refs(root: Path) -> dict[str, str]:
    return {e["annotations"][mt.ANNOT_REF_NAME]: e["digest"] for e in index_entries(root)
            if mt.ANNOT_REF_NAME in e.get("annotations", {})}


class Readers:
    """Reader processes and an in-process index.json loop, until :meth:`stop`."""

    def __init__(self, root: Path, scratch: Path) -> None:
        self.root = root
        self.scratch = scratch
        self.failures: list[str] = []
        self.runs = 0
        self.index_reads = 0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._procs, args=(i,)) for i in range(2)]
        self._threads.append(threading.Thread(target=self._loop))

    def __enter__(self) -> Readers:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()

    def _procs(self, k: int) -> None:
        n = 0
        while not self._stop.is_set():
            n += 1
            kind = ("ls", "inspect", "unpack")[(n + k) % 3]
            if kind == "ls":
                r = run(["ls", self.root, "--json"])
            elif kind == "inspect":
                r = run(["inspect", f"{self.root}:base0:1", "--json"])
            else:
                r = run(["unpack", f"{self.root}:base1:1", self.scratch / f"u{k}-{n}"])
            self._check(kind, r)

    def _check(self, kind: str, r: Run) -> None:
        self.runs += 1
        if r.code != 0:
            self.failures.append(f"{kind}: exit {r.code}: {r.stderr.strip()}")

    def _loop(self) -> None:
        layout = Layout.open(self.root)
        while not self._stop.is_set():
            try:
                layout.read_index()
            except Exception as exc:  # a partial index.json shows up here
                self.failures.append(f"read_index: {exc}")
            self.index_reads += 1
            time.sleep(0.001)


@pytest.fixture
def world(tmp_path: Path) -> dict[str, object]:
    rng = random.Random(1018)
    root = tmp_path / "layout"
    make_layout(root, [random_image(rng, [f"base{i}:1"], layers=1, files=2, size=32 << 10)
                       for i in range(2)])
    tarballs = []
    for i in range(4):
        p = tmp_path / f"in{i}.tar"
        imgs = [random_image(rng, [f"imp{i}-{j}:1", f"imp{i}-{j}:latest"], layers=2, files=2,
                             size=64 << 10) for j in range(2)]
        p.write_bytes(docker_save_bytes(imgs))
        tarballs.append(p)
    return {"root": root, "tarballs": tarballs}


def test_concurrent_imports_tags_gc_with_readers(world, tmp_path):
    require("from-docker-save", "tag", "gc", "ls", "inspect", "unpack")
    root: Path = world["root"]  # type: ignore[assignment]
    tarballs: list[Path] = world["tarballs"]  # type: ignore[assignment]
    before = index_entries(root)
    jobs: list[list[str | Path]] = [["from-docker-save", t, "-o", root] for t in tarballs]
    jobs += [["tag", f"{root}:base{i % 2}:1", f"tag{i}:x"] for i in range(4)]
    jobs += [["gc", root], ["gc", root]]
    random.Random(7).shuffle(jobs)
    with Readers(root, tmp_path) as readers, ThreadPoolExecutor(len(jobs)) as pool:
        results = list(pool.map(lambda a: run(a, timeout=240), jobs))
    for args, r in zip(jobs, results, strict=True):
        assert r.code == 0, f"{args}: {r.stderr}"
    assert readers.failures == [], readers.failures
    assert readers.runs >= 2 and readers.index_reads > 10
    refs = _refs(root)
    want = {f"imp{i}-{j}:{t}" for i in range(4) for j in range(2) for t in ("1", "latest")}
    want |= {f"tag{i}:x" for i in range(4)} | {"base0:1", "base1:1"}
    assert set(refs) == want
    for i in range(4):
        assert refs[f"tag{i}:x"] == refs[f"base{i % 2}:1"]
    now = index_entries(root)
    assert all(e in now for e in before)
    check_verify(root)
    check_unpack(root, now, tmp_path)
    # the gcs ran while imports were half done: a last one finds only what nothing references
    r = run(["gc", root, "--json"])
    assert r.code == 0, r.stderr
    check_verify(root)


def test_concurrent_tags_untags_keep_every_ref(world, tmp_path):
    """Twelve tag/untag processes at once: the final refs are exactly the expected set."""
    require("tag", "untag", "ls")
    root: Path = world["root"]  # type: ignore[assignment]
    for i in range(4):
        assert run(["tag", f"{root}:base0:1", f"old{i}:1"]).code == 0
    jobs: list[list[str | Path]] = [["tag", f"{root}:base{i % 2}:1", f"new{i}:1"]
                                    for i in range(8)]
    jobs += [["untag", f"{root}:old{i}:1"] for i in range(4)]
    with Readers(root, tmp_path) as readers, ThreadPoolExecutor(len(jobs)) as pool:
        results = list(pool.map(lambda a: run(a, timeout=240), jobs))
    assert [r.stderr for r in results if r.code != 0] == []
    assert readers.failures == []
    assert set(_refs(root)) == {"base0:1", "base1:1"} | {f"new{i}:1" for i in range(8)}
    check_verify(root)


def test_concurrent_converts_of_different_images(world, tmp_path):
    """Two in-place converts of two images at once: both land, neither undoes the other."""
    require("convert")
    root: Path = world["root"]  # type: ignore[assignment]
    jobs: list[list[str | Path]] = [["convert", f"{root}:base{i}:1", "--compression", "zstd"]
                                    for i in range(2)]
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda a: run(a, timeout=240), jobs))
    assert [r.stderr for r in results if r.code != 0] == []
    layout = Layout.open(root)
    for e in layout.read_index().manifests:
        man = layout.read_blob(e)
        assert mt.MT_OCI_LAYER_ZSTD.encode() in man, f"{e.ref_name} was not converted"
    check_verify(root)
    check_unpack(root, index_entries(root), tmp_path)
