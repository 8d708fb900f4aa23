"""Kill anywhere: SIGKILL a write command at random instants and check the layout survives.

Each command runs as a child process against a copy of a layout that already holds other
images (and orphans, and Docker-typed images), and is killed at a seeded random instant spread
over its measured duration. After every kill: ``verify`` passes; index.json is exactly the
before-state or the after-a-clean-run state; every image kept by the op unpacks; and after one
``gc`` the blob set is exactly that of the before- or after-state (so all a kill leaves is temp
files and orphan blobs, and gc removes them). ``LAYOUTTOOL_KILL_TRIALS=N`` runs N trials per
command instead of the CI default.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from killharness import (
    KillCase,
    docker_save_bytes,
    kill_instants,
    kill_trial,
    make_layout,
    random_image,
    reference,
    require,
    trials,
)

from layouttool.ops.layout import untag_image
from layouttool.store import Layout

SEED = 7_0707
DEFAULT_TRIALS = 16


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A template layout (3 tagged images, one of them Docker-typed, plus orphans) and a docker
    save tarball of two more images."""
    root = tmp_path_factory.mktemp("kill")
    rng = random.Random(SEED)
    images = [random_image(rng, [f"app{i}:1.0"], layers=2, files=2, size=64 << 10)
              for i in range(3)]
    template = root / "template"
    layout = make_layout(template, images, docker_every=3)
    # orphans for gc to remove: an image written, then untagged
    orphan = random_image(rng, ["gone:1"], layers=3, files=4, size=256 << 10)
    make_orphans(layout, orphan)
    new = [random_image(rng, [f"new{i}:2.0", f"new{i}:latest"], layers=2, files=4,
                        size=256 << 10) for i in range(2)]
    tarball = root / "new.tar"
    tarball.write_bytes(docker_save_bytes(new))
    return {"template": template, "tarball": tarball, "root": root}


def make_orphans(layout: Layout, img: object) -> None:
    """Add ``img`` then untag it, leaving its blobs unreferenced."""
    from killharness import add_image

    add_image(layout, img)  # type: ignore[arg-type]
    untag_image(f"{layout.root}:gone:1")


def _run_trials(name: str, world: dict[str, Path], argv: Callable[[Path], list[str]],
                tmp_path: Path, seed: int, *, referrer: bool = False) -> Counter[str]:
    case = KillCase(name, world["template"], argv, referrer)
    ref = reference(case, tmp_path)
    instants = kill_instants(seed, trials(DEFAULT_TRIALS), ref)
    with ThreadPoolExecutor(max_workers=2) as pool:
        outcomes = list(pool.map(lambda a: kill_trial(case, ref, a[1], tmp_path, a[0]),
                                 enumerate(instants)))
    seen = Counter(outcomes)
    print(f"{name}: {dict(seen)} over {ref.seconds:.2f}s runs, write phase {ref.write_phase:.3f}s")
    return seen


def test_kill_tag(world, tmp_path):
    """``tag``: the new ref is there or not; nothing else changes."""
    require("tag")
    seen = _run_trials("tag", world, lambda d: ["tag", f"{d}:app1:1.0", "app1:moved"],
                       tmp_path, SEED + 1)
    assert sum(seen.values()) == trials(DEFAULT_TRIALS)


def test_kill_untag(world, tmp_path):
    """``untag``: the ref is gone or not; the image's blobs stay until gc."""
    require("untag")
    seen = _run_trials("untag", world, lambda d: ["untag", f"{d}:app2:1.0"], tmp_path, SEED + 2)
    assert sum(seen.values()) == trials(DEFAULT_TRIALS)


def test_kill_convert(world, tmp_path):
    """``convert`` in place to zstd: the converted entry replaces the old one, or nothing."""
    require("convert")
    seen = _run_trials("convert", world,
                       lambda d: ["convert", f"{d}:app1:1.0", "--compression", "zstd"],
                       tmp_path, SEED + 3)
    assert sum(seen.values()) == trials(DEFAULT_TRIALS)


def test_kill_import(world, tmp_path):
    """``from-docker-save`` into a layout holding other images: all four tags or none."""
    require("from-docker-save")
    tarball = world["tarball"]
    seen = _run_trials("import", world, lambda d: ["from-docker-save", str(tarball), "-o",
                                                   str(d)], tmp_path, SEED + 4)
    assert sum(seen.values()) == trials(DEFAULT_TRIALS)


def test_kill_gc(world, tmp_path):
    """``gc``: a kill mid-sweep leaves a valid layout; the next gc finishes the job."""
    require("gc")
    seen = _run_trials("gc", world, lambda d: ["gc", str(d)], tmp_path, SEED + 5)
    assert sum(seen.values()) == trials(DEFAULT_TRIALS)


def _tree(root: Path, rng: random.Random) -> Path:
    """A directory to append: a few files, one large enough to be killed in the middle of."""
    (root / "app" / "lib").mkdir(parents=True)
    (root / "app" / "big.bin").write_bytes(rng.randbytes(4 << 20))
    for i in range(20):
        (root / "app" / "lib" / f"f{i}").write_bytes(rng.randbytes(1024 * i))
    return root


def test_kill_append(world, tmp_path, monkeypatch):
    """``append``: the ref moves to the image with the new layer, or stays; a fixed
    SOURCE_DATE_EPOCH makes the result the same in every trial."""
    require("append")
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    src = _tree(tmp_path / "src", random.Random(SEED + 6))
    seen = _run_trials("append", world, lambda d: ["append", f"{d}:app1:1.0", str(src)],
                       tmp_path, SEED + 6)
    assert sum(seen.values()) == trials(DEFAULT_TRIALS)


def test_kill_config(world, tmp_path, monkeypatch):
    """``config``: the ref moves to the edited image, or stays."""
    require("config")
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    seen = _run_trials("config", world,
                       lambda d: ["config", f"{d}:app2:1.0", "--env", "A=1", "--label", "k=v"],
                       tmp_path, SEED + 7)
    assert sum(seen.values()) == trials(DEFAULT_TRIALS)


def test_kill_repack(world, tmp_path, monkeypatch):
    """``repack``: the ref moves to the unpacked image plus its one new layer, or stays (the
    unpacked tree and its record are only read, so every trial repacks the same edit)."""
    require("repack")
    from layouttool.ops.unpack import unpack_image

    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    rootfs = tmp_path / "unpacked"
    unpack_image(f"{world['template']}:app1:1.0", rootfs)
    rng = random.Random(SEED + 8)
    (rootfs / "added.bin").write_bytes(rng.randbytes(4 << 20))
    seen = _run_trials("repack", world, lambda d: ["repack", f"{d}:app1:1.0", str(rootfs)],
                       tmp_path, SEED + 8)
    assert sum(seen.values()) == trials(DEFAULT_TRIALS)


def test_kill_flatten(world, tmp_path, monkeypatch):
    """``flatten``: the ref names the one-layer image, or the old one; nothing else changes."""
    require("flatten")
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")  # the same result in every run
    seen = _run_trials("flatten", world, lambda d: ["flatten", f"{d}:app1:1.0"], tmp_path,
                       SEED + 16)
    assert sum(seen.values()) == trials(DEFAULT_TRIALS)


def test_kill_attach(world, tmp_path, monkeypatch):
    """``attach``: the artifact's untagged entry is there or not; the image is untouched."""
    require("attach")
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")  # the same result in every run
    sbom = world["root"] / "sbom.json"
    sbom.write_bytes(b'{"spdxVersion": "SPDX-2.3"}\n' * 4096)
    seen = _run_trials("attach", world, lambda d: ["attach", f"{d}:app1:1.0", str(sbom),
                                                   "--artifact-type", "application/spdx+json"],
                       tmp_path, SEED + 17, referrer=True)
    assert sum(seen.values()) == trials(DEFAULT_TRIALS)


def test_kill_new(world, tmp_path, monkeypatch):
    """``new``: the empty image's ref is there or not; nothing else changes."""
    require("new")
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")  # the same result in every run
    seen = _run_trials("new", world, lambda d: ["new", f"{d}:fresh:1"], tmp_path, SEED + 18)
    assert sum(seen.values()) == trials(DEFAULT_TRIALS)


def test_kill_pull(world, tmp_path):
    """``pull`` into a layout holding other images: the pulled ref is there or not, and the
    blobs a killed pull stored are whole (a later gc takes them, or the ref holds them)."""
    require("pull", "push")
    from conftest import run_cli
    from registryutil import Registry

    reg = Registry(tmp_path)
    try:
        src = tmp_path / "src"
        img = random_image(random.Random(SEED + 19), ["img:1"], layers=3, files=4,
                           size=2 << 20)
        make_layout(src, [img])
        pushed = run_cli("push", f"{src}:img:1", f"{reg.host}/kill/me:1", "--insecure")
        assert pushed.code == 0, pushed.stderr
        seen = _run_trials("pull", world, lambda d: ["pull", f"{reg.host}/kill/me:1", "-o",
                                                     str(d), "--insecure", "--ref", "pulled:1"],
                           tmp_path, SEED + 19)
        assert sum(seen.values()) == trials(DEFAULT_TRIALS)
    finally:
        reg.stop()
