"""Smoke tests of the benchmark code (bench/): the generator at a tiny size, the measurement
helper, the table/JSON writer and a tiny end-to-end run. No timing is asserted anywhere."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import sys
import tarfile
from pathlib import Path

import pytest
from conftest import REPO, run_cli, sh

from layouttool.ops.verify import verify_layout

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import gen, realimg
from bench import run as bench_run
from bench.measure import Measured, measure, tree_stats
from bench.report import (
    Case,
    Side,
    Target,
    format_goals,
    format_markdown,
    format_text,
    write_results,
)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _members(tar: Path) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(tar) as tf:
        return {m.name: m for m in tf.getmembers()}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> gen.Inputs:
    """A 1 MiB image whose OCI layouts the generator writes itself (no skopeo)."""
    return gen.generate(tmp_path_factory.mktemp("cache"), 7, 1, use_skopeo=False)


def test_generator_is_deterministic_and_cached(tiny: gen.Inputs, tmp_path: Path) -> None:
    again = gen.generate(tmp_path, 7, 1, use_skopeo=False)
    assert _sha(Path(again.save_tar)) == _sha(Path(tiny.save_tar))
    assert again.diff_ids == tiny.diff_ids
    other = gen.generate(tmp_path, 8, 1, use_skopeo=False)
    assert other.diff_ids != tiny.diff_ids
    # a complete cache entry is reused, not regenerated
    before = Path(again.save_tar).stat().st_mtime_ns
    assert gen.generate(tmp_path, 7, 1, use_skopeo=False) == again
    assert Path(again.save_tar).stat().st_mtime_ns == before


def test_docker_save_tarball_is_consistent(tiny: gen.Inputs) -> None:
    save = Path(tiny.save_tar)
    with tarfile.open(save) as tf:
        manifest = json.load(tf.extractfile("manifest.json"))  # type: ignore[arg-type]
        (entry,) = manifest
        config_raw = tf.extractfile(entry["Config"]).read()  # type: ignore[union-attr]
        repos = json.load(tf.extractfile("repositories"))  # type: ignore[arg-type]
        layer_digests = [
            "sha256:" + hashlib.sha256(tf.extractfile(name).read()).hexdigest()  # type: ignore[union-attr]
            for name in entry["Layers"]
        ]
    assert entry["Config"] == hashlib.sha256(config_raw).hexdigest() + ".json"
    assert entry["RepoTags"] == [gen.REPO_TAG]
    config = json.loads(config_raw)
    assert config["rootfs"]["diff_ids"] == layer_digests == tiny.diff_ids
    assert len(config["history"]) == len(layer_digests) == 4
    repo, tag = gen.REPO_TAG.split(":")
    assert repos[repo][tag] == entry["Layers"][-1].split("/")[0]


def test_layers_hold_the_edge_cases(tiny: gen.Inputs) -> None:
    layers = [_members(Path(p)) for p in tiny.layer_tars]
    base, _, third, fourth = layers
    assert any(m.issym() and m.linkname.startswith("/") for m in base.values())
    assert any(m.issym() and not m.linkname.startswith("/") for m in base.values())
    assert any(m.islnk() for m in base.values())
    assert any(m.mode & 0o4000 for m in base.values())
    assert any(m.uid == 1000 for m in base.values())
    assert "usr/share/locale/.wh..wh..opq" in third
    whiteouts = [n for n in third if "/.wh." in n and not n.endswith(".wh..opq")]
    assert len(whiteouts) >= 2
    assert "opt/data/.wh.archive.bin" in fourth
    assert fourth["usr/local/bin/tool"].islnk()
    assert fourth["usr/local/bin/tool"].linkname in base
    sizes = [m.size for layer in layers for m in layer.values() if m.isfile()]
    assert min(sizes) == 0 and max(sizes) > 50_000
    assert tiny.files == len(sizes)


def test_own_oci_layouts_and_gc_layout_verify(tiny: gen.Inputs) -> None:
    assert tiny.oci_tool == "bench/gen.py"
    for layout in (tiny.oci_gzip, tiny.oci_zstd, tiny.gc_layout):
        assert verify_layout(layout).ok, layout
    res = run_cli("ls", tiny.oci_gzip, "--json")
    assert res.code == 0, res.stderr
    assert [i["ref"] for i in json.loads(res.stdout)["images"]] == [gen.REF]
    blobs = sum(1 for _ in (Path(tiny.gc_layout) / "blobs" / "sha256").iterdir())
    assert blobs == tiny.gc_blobs["blobs"] > tiny.gc_blobs["garbage"] > 0


def test_peers_read_the_generated_image(tmp_path: Path, skopeo: str, umoci: str) -> None:
    inp = gen.generate(tmp_path / "cache", 11, 1)
    assert inp.oci_tool == "skopeo"
    out = json.loads(sh(skopeo, "inspect", "--raw", "--config",
                        f"docker-archive:{inp.save_tar}").stdout)
    assert out["rootfs"]["diff_ids"] == inp.diff_ids
    assert verify_layout(inp.oci_gzip).ok
    assert verify_layout(inp.oci_zstd).ok
    bundle = tmp_path / "bundle"
    sh(umoci, "unpack", "--rootless", "--image", f"{inp.oci_gzip}:{gen.REF}", bundle)
    rootfs = bundle / "rootfs"
    facts = inp.facts
    for path in facts["deleted"] + facts["deleted_dirs"] + facts["opaque_removed"]:
        assert not (rootfs / path).exists(), path
    for path in facts["opaque_kept"] + facts["overwritten"]:
        assert (rootfs / path).is_file(), path
    for link, target in facts["hardlinks"]:
        if (rootfs / target).exists():
            assert (rootfs / link).stat().st_ino == (rootfs / target).stat().st_ino


def test_big_generator(tmp_path: Path) -> None:
    big = gen.generate_big(tmp_path, 3, 2)
    assert big.layer_bytes >= 2 << 20
    with tarfile.open(big.save_tar) as tf:
        (entry,) = json.load(tf.extractfile("manifest.json"))  # type: ignore[arg-type]
        (layer,) = entry["Layers"]
        digest = hashlib.sha256(tf.extractfile(layer).read()).hexdigest()  # type: ignore[union-attr]
    assert big.diff_id == f"sha256:{digest}"


def test_big_layout_is_made_once_by_skopeo(
    tmp_path: Path, skopeo: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    big = gen.generate_big(tmp_path, 3, 2)
    layout = gen.big_layout(big)
    assert layout is not None and verify_layout(layout).ok

    def again(*args: object) -> None:
        raise AssertionError("the cached layout was made again")

    monkeypatch.setattr(gen, "skopeo_layout", again)
    assert gen.big_layout(big) == layout


def test_measure_reports_each_commands_own_peak_rss(tmp_path: Path) -> None:
    py = sys.executable
    big = measure([py, "-c", "b = bytearray(96 << 20); b[::4096] = b'x' * len(b[::4096])"],
                  tmp_path / "big")
    small = measure(["sh", "-c", "echo hi; echo oops >&2; exit 3"], tmp_path / "small")
    assert big.ok and big.maxrss_kib >= 96 * 1024
    # measured alone: not the previous command's peak, nor the benchmark process's
    assert small.maxrss_kib < 48 * 1024
    assert (small.exit, small.ok, small.stderr_tail) == (3, False, "oops")
    assert (tmp_path / "small.out").read_text() == "hi\n"
    hung = measure(["sleep", "30"], tmp_path / "hung", timeout=0.3)
    assert hung.timed_out and not hung.ok
    missing = measure(["no-such-command-here"], tmp_path / "missing")
    assert missing.exit == 127


def test_tree_stats_counts_hardlinks_once(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "a").write_bytes(b"x" * 100)
    os.link(tmp_path / "d" / "a", tmp_path / "d" / "b")
    (tmp_path / "c").symlink_to("d/a")
    assert tree_stats(tmp_path) == (100, 4)


def _run(wall: float, rss_mib: int = 20, code: int = 0) -> Measured:
    return Measured(["x"], wall, rss_mib * 1024, 0.0, 0.0, code, False, "boom" if code else "")


def test_table_and_json(tmp_path: Path) -> None:
    ours = Side("ours", "layouttool", runs=[_run(1.0), _run(1.2), _run(0.9)],
                out_bytes=[1030, 1030, 1030])
    peer = Side("peer", "skopeo", runs=[_run(3.0, 200), _run(2.7, 210), _run(3.3, 190)],
                out_bytes=[1000, 1000, 1000])
    fast = Case("import gzip", "import", 10_000_000, ours, [peer],
                Target(min_ratio=2.5, max_size_ratio=1.03))
    slow = Case("convert gzip->zstd", "convert", 10_000_000,
                Side("ours", "layouttool", runs=[_run(2.0, 300)]),
                [Side("peer", "skopeo", runs=[_run(2.0)])], Target(min_ratio=1.5))
    absent = Case("gc", "gc", None, Side("ours", "layouttool", missing="not available"),
                  [Side("peer", "umoci", missing="umoci not installed")], Target(min_ratio=20))
    broken = Case("unpack", "unpack", 1, Side("ours", "layouttool", runs=[_run(1.0, code=2)]),
                  [Side("peer", "umoci", runs=[_run(1.0)])], Target(min_ratio=1.5))
    cases = [fast, slow, absent, broken]

    assert fast.ratio(peer) == pytest.approx(3.0)
    assert fast.mb_s() == pytest.approx(10.0)
    assert fast.verdict() == "ok"
    assert slow.verdict() == "MISS RSS 300M, 1.00x<1.5x"
    assert absent.verdict() == broken.verdict() == "-"

    text = format_text(cases)
    lines = text.splitlines()
    assert lines[0].split()[:4] == ["case", "peer", "ours", "s"]
    assert len(lines) == 2 + len(cases)
    assert "3.00x" in text and "not available" in text and "umoci not installed" in text
    assert "FAILED (exit 2)" in text

    machine = {"date": "2024-01-01T00:00:00+00:00", "nproc": 2, "cpu": "Test CPU"}
    md = format_markdown(cases, machine, {"skopeo": "1.0"}, {"seed": 1, "size_mb": 1, "runs": 3})
    assert "Test CPU" in md and md.count("\n| ") == 1 + len(cases)

    doc = write_results(tmp_path / "results.json", cases, machine=machine, tools={},
                        config={"runs": 3}, inputs={})
    assert json.loads((tmp_path / "results.json").read_text()) == doc
    first = doc["cases"][0]
    assert first["verdict"] == "ok" and first["ratios"] == {"skopeo": pytest.approx(3.0)}
    assert [r["wall_s"] for r in first["sides"][0]["runs"]] == [1.0, 1.2, 0.9]
    assert first["sides"][1]["peak_rss_mib"] == 210
    assert doc["cases"][2]["sides"][0]["status"] == "not available"


def test_our_commands_come_from_help() -> None:
    names = bench_run.our_commands(bench_run.ours_argv())
    assert {"ls", "inspect", "verify"} <= names
    assert not names & {"docker", "error", "layouttool", "examples"}


def test_tiny_end_to_end_run(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = bench_run.main(["--size-mb", "1", "--big-mb", "0", "--runs", "1", "--fast-runs", "1",
                           "--only", "startup ls,startup inspect", "--no-real",
                           "--out", str(tmp_path)])
    assert code == 0
    doc = json.loads((tmp_path / "results.json").read_text())
    assert [c["name"] for c in doc["cases"]] == ["startup ls", "startup inspect"]
    for case in doc["cases"]:
        ours = case["sides"][0]
        assert ours["status"] == "ok", ours
        assert len(ours["runs"]) == 1 and ours["runs"][0]["maxrss_kib"] > 0
    assert doc["machine"]["nproc"] == os.cpu_count()
    assert (tmp_path / "results.md").read_text().startswith("Measured ")
    out = capsys.readouterr().out
    assert "startup ls" in out and "startup inspect" in out
    # the goals table: each start-up row against the bare interpreter
    goals = out.split("goals (issue 19), from this run:")[1]
    assert "python -c pass" in goals and "ours <= 3x theirs" in goals
    assert not any((tmp_path / "work").iterdir())


def test_set_aside_defers_deletion_and_falls_back_when_disk_is_short(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Disk unpack trees are moved to the trash (deleted after the last case, so no timed run
    follows a mass delete); with too little free space they are deleted at once, with a note."""
    case = Case("unpack root disk", "unpack", None, Side("ours", "layouttool", None), [])
    trash = tmp_path / "trash"
    for i in range(2):
        out = tmp_path / "unpack-root-ours"
        (out / "etc").mkdir(parents=True)
        (out / "etc" / "passwd").write_text(f"run {i}\n")
        monkeypatch.setattr(bench_run, "DEFER_MIN_FREE", 0)
        bench_run.set_aside(out, trash, case)
        assert not out.exists()
    kept = sorted(p.name for p in trash.iterdir())
    assert kept == ["0-unpack-root-ours", "1-unpack-root-ours"]
    assert (trash / kept[1] / "etc" / "passwd").read_text() == "run 1\n"
    assert case.notes == []

    out = tmp_path / "unpack-root-ours"
    (out / "bin").mkdir(parents=True)
    monkeypatch.setattr(bench_run, "DEFER_MIN_FREE", 1 << 62)
    bench_run.set_aside(out, trash, case)
    assert not out.exists() and len(list(trash.iterdir())) == 2
    assert len(case.notes) == 1 and "low disk space" in case.notes[0]


def test_settle_waits_out_a_recent_mass_delete(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A disk case right after a run deleted its trees waits until ext4 stops scanning the
    freed inodes; an old or missing marker costs nothing."""
    slept: list[float] = []
    monkeypatch.setattr(bench_run.time, "sleep", slept.append)
    marker = tmp_path / bench_run.MASS_DELETE_MARKER
    bench_run.settle(marker)  # no marker
    marker.write_text(f"{bench_run.time.time() - 2 * bench_run.SETTLE_S}\n")
    bench_run.settle(marker)  # long ago
    assert slept == []
    marker.write_text(f"{bench_run.time.time() - 30}\n")
    bench_run.settle(marker)
    assert len(slept) == 1 and bench_run.SETTLE_S - 31 < slept[0] <= bench_run.SETTLE_S - 30


def test_codec_bench_models_the_encoders_we_ship() -> None:
    """bench/codecs.py must measure what the importer writes: its gzip and default zstd
    settings give the same sizes as layouttool's own encoders."""
    from bench import codecs as bench_codecs
    from layouttool.codec import Compression, new_encoder

    content = gen.Content(random.Random(3), 1 << 20)
    data = content.text_bytes(3 << 20) + content.random_bytes(2 << 20)  # 2 stored blocks
    enc = new_encoder(Compression.GZIP, 2)
    ours = enc.compress(data) + enc.flush()
    # gzip header (10) + deflate blocks + empty final block (2) + CRC and size (8)
    assert bench_codecs.gzip_blocks(2)(data) == len(ours) - 20
    zenc = new_encoder(Compression.ZSTD, None, 2)
    assert bench_codecs.zstd(2, long=True)(data) == len(zenc.compress(data) + zenc.flush())


def test_floor_target_and_goals_table() -> None:
    """A case judged against a floor (unpack vs pigz | tar, start-up vs python -c pass): the
    verdict names the floor, the goals table shows one row per peer and floor."""
    ours = Side("ours", "layouttool", runs=[_run(2.4, 60)])
    umoci = Side("peer", "umoci", runs=[_run(9.0)])
    pigz = Side("floor", "pigz -dc | tar -x", runs=[_run(2.0)])
    case = Case("real unpack root tmpfs", "real-unpack", 1, ours, [umoci, pigz],
                Target(min_ratio=3.5, max_over_floor=1.15, floor="pigz -dc | tar -x"),
                headline=True)
    assert case.over_floor() == pytest.approx(1.2)
    assert case.verdict() == "MISS 1.20x pigz -dc | tar -x"
    other = Case("import none", "import", 1, Side("ours", "layouttool", runs=[_run(1.0)]),
                 [Side("peer", "skopeo", runs=[_run(2.0)])], Target())
    table = format_goals([case, other]).splitlines()
    assert table[0].split()[:2] == ["case", "vs"]
    assert len(table) == 2 + 2  # header, rule, umoci row, pigz row; "import none" is no headline
    assert "3.75x" in table[2] and ">= 3.5x" in table[2] and "MISS" in table[2]
    assert "1.20x theirs" in table[3] and "ours <= 1.15x theirs" in table[3]
    assert format_goals([other]) == ""


def test_real_image_plan_stage_and_build(tiny: gen.Inputs, tmp_path: Path) -> None:
    """The real image's inputs are found in the script's output layout and copied to tmpfs
    (here: the generated image, laid out as the script lays out its output)."""
    src = tmp_path / "realimg"
    src.mkdir()
    (src / "docker-save.tar").write_bytes(Path(tiny.save_tar).read_bytes())
    shutil.copytree(tiny.oci_gzip, src / "oci-umoci")
    (src / ".complete").write_text(realimg.GEN_MARK + "\n")
    img = realimg.plan(src, tmp_path / "staged", ref=tiny.ref)
    assert not img.save_tar.exists()
    realimg.stage(src, img)
    assert img.save_bytes == img.save_tar.stat().st_size
    assert [p.read_bytes() for p in img.layer_tars] == [
        Path(p).read_bytes() for p in tiny.layer_tars]
    assert img.uncompressed_bytes == tiny.uncompressed_bytes
    assert len(img.gzip_layers) == len(img.layer_tars)
    assert all(p.read_bytes()[:2] == b"\x1f\x8b" for p in img.gzip_layers)
    doc = json.loads(json.dumps(img.to_json()))  # results.json holds it
    assert doc["layer_tars"] == [str(p) for p in img.layer_tars] and doc["ref"] == tiny.ref

    log: list[str] = []
    assert realimg.build(log.append, src) == (src, f"cached in {src}")
    missing, why = realimg.build(log.append, tmp_path / "none", tmp_path / "no-script.sh")
    assert missing is None and "not found" in why and log == []


def test_tiny_run_with_a_real_image(tiny: gen.Inputs, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """The real image's rows end to end, on a stand-in laid out as the script's output: staged
    on tmpfs, timed, written to results.json with the image's inputs."""
    if bench_run.tmpfs_dir() is None:
        pytest.skip("no tmpfs at /dev/shm: the real image's rows run only there")
    src = tmp_path / "realimg"
    src.mkdir()
    (src / "docker-save.tar").write_bytes(Path(tiny.save_tar).read_bytes())
    shutil.copytree(tiny.oci_gzip, src / "oci-umoci")
    (src / ".complete").write_text(realimg.GEN_MARK + "\n")
    monkeypatch.setattr(realimg, "OUT", src)
    monkeypatch.setattr(realimg, "REF", tiny.ref)
    out = tmp_path / "out"
    code = bench_run.main(["--size-mb", "1", "--big-mb", "0", "--runs", "1", "--real",
                           "--only", "real import gzip,real unpack root tmpfs", "--out", str(out)])
    assert code == 0
    doc = json.loads((out / "results.json").read_text())
    cases = {c["name"]: c for c in doc["cases"]}
    assert set(cases) <= {"real import gzip", "real unpack root tmpfs"}
    assert cases["real import gzip"]["sides"][0]["status"] == "ok"
    assert doc["inputs"]["real"]["ref"] == tiny.ref
