"""Ctrl-C and SIGTERM in the middle of a write: exit 130 promptly, one error line, own temp
files removed, the layout as it was (index.json identical, verify ok, old images unpack)."""

from __future__ import annotations

import random
import shutil
import signal
from pathlib import Path

import pytest
from killharness import (
    add_image,
    blob_set,
    check_unpack,
    check_verify,
    docker_save_bytes,
    gc_in_process,
    index_entries,
    make_layout,
    random_image,
    require,
    snapshot,
    tmp_files,
    watch_and_kill,
)

from layouttool.store import Layout


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A layout with two small images and one big one (to convert), and a big tarball."""
    root = tmp_path_factory.mktemp("intr")
    rng = random.Random(130)
    template = root / "template"
    layout = make_layout(template, [random_image(rng, [f"small{i}:1"], layers=1, files=1)
                                    for i in range(2)])
    # random bytes do not compress: each MiB costs real time in gzip/zstd and hashing. 18 MiB
    # once converted in 0.1 s, so the signal 0.08 s after the first write landed after the
    # work was done (exit 0, a flaky CI failure); 72 MiB keeps convert writing for ~0.4 s
    add_image(layout, random_image(rng, ["big:1"], layers=2, files=3, size=12 << 20))
    tarball = root / "big.tar"
    # big enough that the import is still writing 0.08 s after its first write on a quiet
    # machine (a faster importer once made the signal land after the work was done)
    tarball.write_bytes(docker_save_bytes([random_image(rng, ["imp:1"], layers=2, files=3,
                                                        size=12 << 20)]))
    return {"template": template, "tarball": tarball}


COMMANDS = {
    "import": lambda w, d: ["from-docker-save", str(w["tarball"]), "-o", str(d)],
    "convert": lambda w, d: ["convert", f"{d}:big:1", "--compression", "zstd"],
}
NEEDS = {"import": "from-docker-save", "convert": "convert"}


@pytest.mark.parametrize("offset", [0.0, 0.08])
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_interrupt_mid_write(world, tmp_path, command, sig, offset):
    require(NEEDS[command])
    d = tmp_path / "layout"
    shutil.copytree(world["template"], d)
    before_index = index_entries(d)
    before_files = snapshot(d)
    errlog = tmp_path / "stderr"
    w = watch_and_kill(COMMANDS[command](world, d), d, after_change=offset, sig=sig,
                       wait_after_signal=True, stderr=errlog)
    if w.signalled is None:
        pytest.fail(f"{command} finished before the signal ({w.end:.2f}s): make the input larger")
    assert w.end - w.signalled < 5.0, f"took {w.end - w.signalled:.2f}s to stop"
    err = errlog.read_text(errors="replace")
    assert "Traceback" not in err
    assert w.code == 130, err
    assert err.splitlines()[-1] == "layouttool: error: interrupted", err
    assert [ln for ln in err.splitlines() if ln.startswith("layouttool: error:")] == [
        "layouttool: error: interrupted"
    ]
    # its own temp files are gone: nothing to clean, index.json untouched
    assert tmp_files(d) == []
    assert index_entries(d) == before_index
    check_verify(d)
    check_unpack(d, before_index, tmp_path)
    # blobs committed before the signal are plain orphans: gc brings back the exact file set
    gc_in_process(d)
    ref = tmp_path / "ref"
    shutil.copytree(world["template"], ref)
    gc_in_process(ref)
    assert blob_set(d) == blob_set(ref)
    assert snapshot(d) == snapshot(ref)
    assert set(before_files) >= set(snapshot(d))


def test_interrupt_gc_waiting_for_lock(world, tmp_path):
    """A gc blocked on the layout lock (an import holds it) stops on SIGINT too."""
    require("gc")
    d = tmp_path / "layout"
    shutil.copytree(world["template"], d)
    layout = Layout.open(d)
    errlog = tmp_path / "stderr"
    with layout.writing():
        w = watch_and_kill(["gc", str(d)], d, after_start=1.5, sig=signal.SIGINT,
                           wait_after_signal=True, stderr=errlog)
    err = errlog.read_text(errors="replace")
    assert w.code == 130, err
    assert err.splitlines()[-1] == "layouttool: error: interrupted"
    check_verify(d)
