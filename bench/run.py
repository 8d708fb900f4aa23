#!/usr/bin/env python3
"""layouttool benchmark: our commands beside skopeo and umoci on the same generated image.

Usage: ``python bench/run.py [--quick] [--only import,unpack] [--runs N] [--size-mb N]``
(``make bench``, ``make bench-quick``). It is never part of ``make test``.

Each case runs our command and its peers on the same input in the same run, alternating
(ours, peer, ours, peer, ...), and reports medians, ``peer time / our time`` ratios, MB/s of
the image's uncompressed tar bytes, each command's own peak RSS (``os.wait4``) and output size.
A command of ours that ``layouttool --help`` does not list is shown as "not available"; a
missing peer is named and we are still timed. Results: a table on stdout, ``results.json``
(machine, tool versions, inputs, every raw run) and ``results.md`` (the table for the README)
under ``bench/out/``; generated inputs are cached under ``bench/out/cache/`` by seed and size.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import gen, realimg  # noqa: E402
from bench.measure import (  # noqa: E402
    fs_type,
    machine_info,
    measure,
    tool_version,
    tree_stats,
    warm,
)
from bench.report import (  # noqa: E402
    Case,
    Side,
    Target,
    format_goals,
    format_markdown,
    format_text,
    write_results,
)

DEFAULT_SEED = 20240601
FULL = {"size_mb": 320, "big_mb": 1024, "runs": 3, "fast_runs": 10}
QUICK = {"size_mb": 32, "big_mb": 200, "runs": 1, "fast_runs": 3}


def log(msg: str) -> None:
    """Progress on stderr (stdout carries the table)."""
    print(msg, file=sys.stderr, flush=True)


def ours_argv() -> list[str]:
    """How to start our CLI: the venv's console script, else ``python -m layouttool``."""
    script = Path(sys.executable).parent / "layouttool"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "layouttool"]


def our_commands(lt: list[str]) -> set[str]:
    """Sub-commands ``layouttool --help`` lists (others are "not available" yet)."""
    proc = subprocess.run([*lt, "--help"], capture_output=True, text=True)
    names: set[str] = set()
    section = ""
    for line in proc.stdout.splitlines():
        if line and not line[0].isspace() and line.endswith(":"):
            section = line[:-1]
            continue
        m = re.match(r"^  ([a-z][a-z0-9-]*)(\s{2,}|$)", line)
        if m and section not in ("", "Usage", "Options"):
            names.add(m.group(1))
    return names


def rm(path: Path) -> None:
    """Remove a file or tree, even one with read-only directories (rootless unpacks)."""
    if not path.exists() and not path.is_symlink():
        return
    if path.is_dir() and not path.is_symlink():
        def fix(func: Callable[..., Any], p: str, exc: Any) -> None:
            # a directory without write or search permission: open it up and retry
            os.chmod(os.path.dirname(p), 0o700)
            if os.path.isdir(p) and not os.path.islink(p):
                os.chmod(p, 0o700)
                shutil.rmtree(p, onerror=fix)
            else:
                func(p)

        shutil.rmtree(path, onerror=fix)
    else:
        path.unlink()


def layout_note(layout: Path) -> str | None:
    """Check that every layer blob's magic bytes agree with its media type (a cheap sanity
    check of any tool's output); returns a note when they do not."""
    try:
        index = json.loads((layout / "index.json").read_text())
        bad = []
        for m in index.get("manifests") or []:
            man = json.loads((layout / "blobs" / m["digest"].replace(":", "/")).read_bytes())
            for layer in man.get("layers", []):
                with open(layout / "blobs" / layer["digest"].replace(":", "/"), "rb") as f:
                    head = f.read(4)
                mt = layer["mediaType"]
                is_gz, is_zst = head[:2] == b"\x1f\x8b", head == b"\x28\xb5\x2f\xfd"
                want_gz, want_zst = mt.endswith("gzip"), mt.endswith("zstd")
                if (is_gz, is_zst) != (want_gz, want_zst):
                    kind = "gzip" if is_gz else "zstd" if is_zst else "uncompressed"
                    bad.append(f"{layer['digest'][:19]} is {kind} but typed {mt}")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return f"could not read the output layout: {exc}"
    if bad:
        return f"{len(bad)} layer(s) mislabeled, e.g. {bad[0]}"
    return None


@dataclass
class Cmd:
    """How to run one side of a case."""

    side: Side
    argv: list[str]
    out: Path | None = None  # removed before and after each run
    size_path: Path | None = None  # what to measure after a run (default: out)
    prepare: Callable[[], None] | None = None  # untimed, before each run (a fresh copy)
    check_layout: bool = False  # check the output layout's layer media types
    # moved aside after each run, deleted only at the end of the benchmark (see run_plan)
    defer_delete: bool = False


@dataclass
class Plan:
    """A case and the commands that fill it (ours first)."""

    case: Case
    cmds: list[Cmd]
    runs: int
    warm: list[Path]


#: under out/: when the last run deleted its set-aside trees (see settle)
MASS_DELETE_MARKER = ".last-mass-delete"
#: free disk space below which trees are deleted between runs even where deferral is asked for
DEFER_MIN_FREE = 12 << 30


def set_aside(out: Path, trash: Path, case: Case) -> None:
    """Move a run's output tree into ``trash`` instead of deleting it now.

    Why: ext4 does not hand out an inode freed in the last few seconds (``recently_deleted()``;
    300 s while its inode-table block is dirty), and it finds that out by scanning the freed
    inodes one by one at every file creation. After ``rm -rf`` of a 23,000-file tree, the next
    unpack on the same disk spent 20 s of *kernel* time in that scan (perf: 32 % of samples in
    ``find_get_block_common <- recently_deleted <- __ext4_new_inode``), whichever tool ran it:
    ``tar -x`` went from 2.4 s to 22 s. Deleting between runs measured the filesystem's
    inode-reuse scan, not the tools. The trash is removed once, after the last case.
    """
    if shutil.disk_usage(out.parent).free < DEFER_MIN_FREE:
        note = "low disk space: trees deleted between runs (ext4 inode-reuse scans may add time)"
        if note not in case.notes:
            case.notes.append(note)
        rm(out)
        return
    trash.mkdir(parents=True, exist_ok=True)
    n = sum(1 for _ in trash.iterdir())
    os.rename(out, trash / f"{n}-{out.name}")


#: how long after a mass delete ext4 keeps skipping (and scanning) the freed inodes: 300 s
#: while their inode-table block is dirty (``recently_deleted()``), plus margin
SETTLE_S = 330.0


def settle(marker: Path) -> None:
    """Wait until :data:`SETTLE_S` have passed since the last mass delete ``marker`` records.

    The trees a run sets aside are deleted when it ends (:func:`set_aside`); a run started
    right after would meet those freed inodes at every file creation: in one such run our
    first two disk unpacks spent 8 s in the kernel instead of 3 s, umoci's 6.5 s instead of
    4.3 s. Only the disk unpack cases wait, and only once.
    """
    try:
        t = float(marker.read_text())
    except (OSError, ValueError):
        return
    wait = t + SETTLE_S - time.time()
    if wait > 0:
        log(f"  waiting {wait:.0f}s: the last run deleted its unpacked trees "
            f"{time.time() - t:.0f}s ago, and ext4 scans recently freed inodes at every file "
            "creation for about 5 minutes after")
        time.sleep(wait)


def run_plan(plan: Plan, logs: Path, timeout: float, trash: Path | None = None,
             marker: Path | None = None) -> None:
    """Run a case: warm the input, then alternate ours and each peer ``runs`` times."""
    case = plan.case
    runnable = [c for c in plan.cmds if c.side.missing is None]
    if not runnable:
        return
    if marker is not None and any(c.defer_delete for c in runnable):
        settle(marker)
    warm(plan.warm)
    slug = re.sub(r"[^a-z0-9]+", "-", case.name.lower()).strip("-")
    for i in range(plan.runs):
        for cmd in runnable:
            side = cmd.side
            if side.failed is not None:
                continue
            if cmd.out is not None:
                rm(cmd.out)
            if cmd.prepare is not None:
                cmd.prepare()
            # start every run with no dirty pages of earlier runs left to write back: otherwise
            # a run on disk pays for its predecessor's writes
            os.sync()
            tool = re.sub(r"[^a-z0-9]+", "-", side.tool.lower()).strip("-")
            m = measure(cmd.argv, logs / f"{slug}.{tool}.{i}", timeout=timeout)
            side.runs.append(m)
            target = cmd.size_path or cmd.out
            if m.ok and target is not None:
                b, e = tree_stats(target)
                side.out_bytes.append(b)
                side.out_entries.append(e)
                if cmd.check_layout and i == plan.runs - 1:
                    note = layout_note(target)
                    if note:
                        case.notes.append(f"{side.tool}: {note}")
            if not m.ok:
                why = "timed out" if m.timed_out else f"exit {m.exit}"
                case.notes.append(f"{side.tool} failed ({why}): {m.stderr_tail.splitlines()[-1:]}")
            if cmd.out is not None:
                if cmd.defer_delete and trash is not None and cmd.out.exists():
                    set_aside(cmd.out, trash, case)
                else:
                    rm(cmd.out)
    # a fast wrong answer is not fast: compare what the tools produced where it should match
    if case.group in ("unpack", "gc"):
        counts = {c.side.tool: c.side.out_entries[-1] for c in runnable
                  if c.side.out_entries and c.side.role != "floor"}
        if len(set(counts.values())) > 1:
            case.notes.append(f"outputs differ in entry count: {counts}")


def log_case(case: Case) -> None:
    """One progress line per case."""
    parts = []
    for side in [case.ours, *case.peers]:
        status = side.status()
        parts.append(f"{side.tool} {status}" if status else f"{side.tool} {side.median_s:.3f}s")
    log(f"  {case.name}: " + ", ".join(parts))


class Builder:
    """Makes the commands of the cases and collects the plans, in the order they run."""

    def __init__(self, runs: int) -> None:
        self.runs = runs
        self.lt = [*ours_argv(), "-q"]
        self.have = our_commands(ours_argv())
        self.skopeo = shutil.which("skopeo")
        self.umoci = shutil.which("umoci")
        self.plans: list[Plan] = []

    def ours(self, cmd: str, argv: list[str], **kw: Any) -> Cmd:
        """Our command ``cmd`` (shown as "not available" when the CLI does not have it)."""
        side = Side("ours", "layouttool", None if cmd in self.have else "not available")
        return Cmd(side, [*self.lt, cmd, *argv], **kw)

    def peer(self, name: str, path: str | None, argv: list[str], **kw: Any) -> Cmd:
        """A peer tool's command (shown as not installed when ``path`` is None)."""
        side = Side("peer", name, None if path else f"{name} not installed")
        return Cmd(side, [path or name, *argv], **kw)

    def floor(self, name: str, argv: list[str], *, need: str | None = None, **kw: Any) -> Cmd:
        """A yardstick command (``need``: a program it runs, reported when missing)."""
        missing = f"{need} not installed" if need and shutil.which(need) is None else None
        return Cmd(Side("floor", name, missing), argv, **kw)

    def add(self, name: str, group: str, nbytes: int | None, cmds: list[Cmd],
            target: Target | None, warm_paths: list[Path], n: int | None = None, *,
            headline: bool = False) -> None:
        """A case: ``cmds[0]`` is ours, the rest its peers and floors."""
        case = Case(name, group, nbytes, cmds[0].side, [c.side for c in cmds[1:]], target,
                    headline=headline)
        self.plans.append(Plan(case, cmds, self.runs if n is None else n, warm_paths))


def build_plans(
    inp: gen.Inputs,
    big: gen.BigInput | None,
    work: Path,
    tmpfs: Path | None,
    runs: int,
    fast_runs: int,
    *,
    unpack_on_disk: bool = True,
    real: realimg.RealImage | None = None,
    sample: Path | None = None,
) -> list[Plan]:
    """Every case of the benchmark, in the order they run: the generated image's, then the
    real image's (``real``, on tmpfs), then start-up on the small layout ``sample``."""
    b = Builder(runs)
    ours, peer, add, plans = b.ours, b.peer, b.add, b.plans
    skopeo, umoci = b.skopeo, b.umoci
    root = os.geteuid() == 0
    save = Path(inp.save_tar)
    ogz, ozst = Path(inp.oci_gzip), Path(inp.oci_zstd)
    layers = [Path(p) for p in inp.layer_tars]
    ref = inp.ref
    tar_bytes = inp.uncompressed_bytes

    # import: docker save tarball -> OCI layout
    skopeo_flags = {"gzip": [], "zstd": ["--dest-compress-format", "zstd"],
                    "none": ["--dest-oci-accept-uncompressed-layers"]}
    targets = {"gzip": Target(min_ratio=2.5, max_size_ratio=1.03),
               "zstd": Target(min_ratio=1.4), "none": Target()}
    for comp in ("gzip", "zstd", "none"):
        o1, o2 = work / f"import-{comp}-ours", work / f"import-{comp}-skopeo"
        add(f"import {comp}", "import", save.stat().st_size, [
            ours("from-docker-save", [str(save), "-o", str(o1), "--compression", comp],
                 out=o1, check_layout=True),
            peer("skopeo", skopeo, ["copy", "-q", *skopeo_flags[comp],
                                    f"docker-archive:{save}", f"oci:{o2}:{ref}"],
                 out=o2, check_layout=True),
        ], targets[comp], [save])

    # the size/speed trade of gzip levels: ISA-L's highest level beside skopeo's output
    o1, o2 = work / "import-gzip3-ours", work / "import-gzip3-skopeo"
    add("import gzip --level 3", "import", save.stat().st_size, [
        ours("from-docker-save", [str(save), "-o", str(o1), "--compression", "gzip",
                                  "--level", "3"], out=o1, check_layout=True),
        peer("skopeo", skopeo, ["copy", "-q", f"docker-archive:{save}", f"oci:{o2}:{ref}"],
             out=o2, check_layout=True),
    ], Target(max_size_ratio=1.03), [save])

    # convert: recompress every layer into another layout
    for src, comp, name in ((ogz, "zstd", "gzip->zstd"), (ozst, "gzip", "zstd->gzip")):
        o1, o2 = work / f"convert-{comp}-ours", work / f"convert-{comp}-skopeo"
        add(f"convert {name}", "convert", tar_bytes, [
            ours("convert", [f"{src}:{ref}", "--compression", comp, "-o", str(o1)],
                 out=o1, check_layout=True),
            peer("skopeo", skopeo, ["copy", "-q", "--dest-compress-format", comp,
                                    f"oci:{src}:{ref}", f"oci:{o2}:{ref}"],
                 out=o2, check_layout=True),
        ], Target(min_ratio=1.5) if comp == "zstd" else Target(), [src])

    # unpack: the skopeo-made gzip layout (umoci needs OCI types) to a root filesystem
    places = [("disk", work)] if unpack_on_disk or tmpfs is None else []
    places += [("tmpfs", tmpfs)] if tmpfs is not None else []
    for rootless in (False, True):
        for where, base in places:
            mode = "rootless" if rootless else "root"
            flag = ["--rootless"] if rootless else []
            d1, d2, d3 = base / f"unpack-{mode}-ours", base / f"unpack-{mode}-umoci", \
                base / f"unpack-{mode}-tar"
            # tar -x of the uncompressed layers, one after the other: no decompression, no
            # whiteouts, no safety checks; the machine's floor for writing this tree
            owner = " --no-same-owner" if rootless else ""
            floor = floor_cmd(b, "tar -x (floor)", f'tar -xf "$f" -C "$d"{owner}', "tar", d3,
                              layers, defer_delete=where == "disk")
            cmds = [
                ours("unpack", [f"{ogz}:{ref}", str(d1), *flag], out=d1,
                     defer_delete=where == "disk"),
                peer("umoci", umoci, ["unpack", *flag, "--image", f"{ogz}:{ref}", str(d2)],
                     out=d2, size_path=d2 / "rootfs", defer_delete=where == "disk"),
                floor,
            ]
            if not rootless and not root:
                for c in cmds:
                    c.side.missing = "needs root"
            add(f"unpack {mode} {where}", "unpack", tar_bytes, cmds, Target(min_ratio=1.5),
                [ogz, *layers])

    # gc: thousands of blobs, each tool on its own fresh copy; on disk and on tmpfs. On this
    # kind of disk (ext4 mounted with discard) every unlink of a file with data waits for a
    # synchronous discard (~0.2 ms, perf: ext4_free_blocks -> blkdev_issue_discard), a cost
    # of the filesystem that any tool pays per deleted blob; tmpfs shows the tools' own work
    gsrc = Path(inp.gc_layout)

    # gc on the kind of layout: one real image plus the orphans a convert leaves (the
    # zstd blobs of the same image), a few dozen large blobs; umoci reads blobs, we do not
    def image_with_orphans(dst: Path, src: Path = ogz) -> None:
        shutil.copytree(src, dst, symlinks=True)
        for blob in (ozst / "blobs" / "sha256").iterdir():
            target = dst / "blobs" / "sha256" / blob.name
            if not target.exists():
                shutil.copyfile(blob, target)

    gc_places = [("disk", work)] + ([("tmpfs", tmpfs)] if tmpfs is not None else [])
    for what, make, warm_paths in (
        (f"gc {inp.gc_blobs['blobs']} blobs",
         lambda dst: shutil.copytree(gsrc, dst, symlinks=True), [gsrc]),
        ("gc image + orphans", image_with_orphans, [ogz, ozst]),
    ):
        for where, base in gc_places:
            slug = "gc" if what.endswith("blobs") else "gci"
            g1, g2 = base / f"{slug}-ours", base / f"{slug}-umoci"
            add(f"{what} {where}", "gc", None, [
                ours("gc", [str(g1)], out=g1, size_path=g1 / "blobs",
                     prepare=functools.partial(make, g1)),
                peer("umoci", umoci, ["gc", "--layout", str(g2)], out=g2,
                     size_path=g2 / "blobs", prepare=functools.partial(make, g2)),
            ], Target(min_ratio=20), warm_paths)

    # start-up cost on a small layout: see startup_plans

    # flat memory: one very large layer
    if big is not None:
        bsave = Path(big.save_tar)
        o1, o2 = work / "big-ours", work / "big-skopeo"
        add(f"import gzip, one {big.layer_bytes // (1 << 20)} MiB layer", "import-big",
            bsave.stat().st_size, [
                ours("from-docker-save", [str(bsave), "-o", str(o1)], out=o1,
                     check_layout=True),
                peer("skopeo", skopeo, ["copy", "-q", f"docker-archive:{bsave}",
                                        f"oci:{o2}:{ref}"], out=o2, check_layout=True),
            ], Target(), [bsave])
        # gc where the layers are large: umoci reads and hashes every reachable blob, so its
        # time grows with the image's bytes (the 625 MB image: ~5 s); ours does not
        blayout = gen.big_layout(big)
        if blayout is not None:
            g1, g2 = work / "gcb-ours", work / "gcb-umoci"
            add(f"gc {big.layer_bytes // (1 << 20)} MiB-layer image + orphans disk", "gc", None, [
                ours("gc", [str(g1)], out=g1, size_path=g1 / "blobs",
                     prepare=functools.partial(image_with_orphans, g1, blayout)),
                peer("umoci", umoci, ["gc", "--layout", str(g2)], out=g2,
                     size_path=g2 / "blobs",
                     prepare=functools.partial(image_with_orphans, g2, blayout)),
            ], Target(min_ratio=20), [blayout, ozst])

    export_cases(add, ours, peer, ogz, ref, work, tar_bytes, layers)
    lazy_plans(ours, peer, add, ogz, ozst, ref, work, tmpfs, tar_bytes)
    # make and change images (issue 17), on the real image when make-real-image.sh built it
    src_layout, src_ref = real_image_layout() or (ogz, ref)
    build_rows(add, ours, peer, umoci, b.lt, src_layout, src_ref, tmpfs or work, runs)
    if real is not None and tmpfs is not None:
        real_plans(b, real, tmpfs)
    if sample is not None:
        startup_plans(b, sample, fast_runs)
    return plans


#: the floor scripts extract layer after layer. GNU tar's exit 2 ("some entries failed, the
#: rest extracted") is accepted: it knows no whiteouts, so a layer that replaces a directory by
#: a file fails that entry (the real image's third layer), and the real image's last layer has
#: no end-of-archive marker (umoci 0.4.7 writes it so); anything else (pigz failing: pipefail)
#: fails the floor
FLOOR_SCRIPT = ('set -o pipefail; d=$1; shift; for f; do {cmd}; rc=$?; '
                '[ $rc -eq 0 ] || [ $rc -eq 2 ] || exit 1; done')


def floor_cmd(b: Builder, name: str, extract: str, need: str, dest: Path,
              files: list[Path], **kw: Any) -> Cmd:
    """A floor that runs ``extract`` (a shell command on "$f" and "$d") on each of ``files``."""
    script = FLOOR_SCRIPT.format(cmd=extract)
    return b.floor(name, ["bash", "-c", script, "bash", str(dest), *map(str, files)],
                   need=need, out=dest, prepare=functools.partial(dest.mkdir, parents=True), **kw)


def real_plans(b: Builder, img: realimg.RealImage, base: Path) -> None:
    """The issue's cases on the real image, every input and output on tmpfs (``base``)."""
    save, lay, ref = img.save_tar, img.layout, img.ref
    nbytes = img.save_bytes
    skopeo_flags = {"gzip": [], "zstd": ["--dest-compress-format", "zstd"]}
    for comp, goal in (("gzip", 2.6), ("zstd", 1.6)):
        o1, o2 = base / f"real-import-{comp}-ours", base / f"real-import-{comp}-skopeo"
        b.add(f"real import {comp}", "real-import", nbytes, [
            b.ours("from-docker-save", [str(save), "-o", str(o1), "--compression", comp],
                   out=o1, check_layout=True),
            b.peer("skopeo", b.skopeo, ["copy", "-q", *skopeo_flags[comp],
                                        f"docker-archive:{save}", f"oci:{o2}:{ref}"],
                   out=o2, check_layout=True),
        ], Target(min_ratio=goal), [save], headline=True)
    o1, o2 = base / "real-convert-ours", base / "real-convert-skopeo"
    b.add("real convert gzip->zstd", "real-convert", img.uncompressed_bytes, [
        b.ours("convert", [f"{lay}:{ref}", "--compression", "zstd", "-o", str(o1)], out=o1,
               check_layout=True),
        b.peer("skopeo", b.skopeo, ["copy", "-q", "--dest-compress-format", "zstd",
                                    f"oci:{lay}:{ref}", f"oci:{o2}:{ref}"],
               out=o2, check_layout=True),
    ], Target(min_ratio=1.6), [lay], headline=True)
    for rootless in (False, True):
        mode = "rootless" if rootless else "root"
        flag = ["--rootless"] if rootless else []
        owner = " --no-same-owner" if rootless else ""
        d = {k: base / f"real-unpack-{mode}-{k}" for k in ("ours", "umoci", "tar", "pigz")}
        cmds = [
            b.ours("unpack", [f"{lay}:{ref}", str(d["ours"]), *flag], out=d["ours"]),
            b.peer("umoci", b.umoci, ["unpack", *flag, "--image", f"{lay}:{ref}",
                                      str(d["umoci"])],
                   out=d["umoci"], size_path=d["umoci"] / "rootfs"),
            # decompression included, no whiteouts, no checks: what the goal is set on
            floor_cmd(b, "pigz -dc | tar -x", f'pigz -dc "$f" | tar -xf - -C "$d"{owner}',
                      "pigz", d["pigz"], list(img.gzip_layers)),
            # the uncompressed layers: the cost of writing this tree and nothing else
            floor_cmd(b, "tar -x (floor)", f'tar -xf "$f" -C "$d"{owner}', "tar", d["tar"],
                      list(img.layer_tars)),
        ]
        if not rootless and os.geteuid() != 0:
            for c in cmds:
                c.side.missing = "needs root"
        b.add(f"real unpack {mode} tmpfs", "real-unpack", img.uncompressed_bytes, cmds,
              Target(min_ratio=3.5, max_over_floor=1.15, floor="pigz -dc | tar -x"),
              [lay, *img.layer_tars], headline=True)


#: the image and tag of the start-up rows (the import of testdata/sample-docker-save.tar)
SAMPLE_TAR = REPO / "testdata" / "sample-docker-save.tar"
SAMPLE_REF = "layouttool-sample:1.0"


def startup_plans(b: Builder, sample: Path, runs: int) -> None:
    """What scripts call in loops, on a small layout, beside umoci and the bare interpreter."""
    floors = [
        b.floor("python -c pass", [sys.executable, "-c", "pass"]),
        b.floor("python -c 'import click'", [sys.executable, "-c", "import click"]),
    ]
    target = Target(max_over_floor=3.0, floor="python -c pass")
    image = f"{sample}:{SAMPLE_REF}"
    for cmd, argv, peer_argv in (
        ("ls", [str(sample)], ["ls", "--layout", str(sample)]),
        ("inspect", [image], ["stat", "--image", image]),
        ("tag", [image, "bench"], ["tag", "--image", image, "bench"]),
        ("verify", [str(sample)], None),
    ):
        peers = [] if peer_argv is None else [b.peer("umoci", b.umoci, peer_argv)]
        b.add(f"startup {cmd}", "startup", None, [b.ours(cmd, argv), *peers, *floors], target,
              [sample], runs, headline=True)


def make_sample(dest: Path) -> Path:
    """The small layout of the start-up rows, imported by our CLI."""
    subprocess.run([*ours_argv(), "-q", "from-docker-save", str(SAMPLE_TAR), "-o", str(dest)],
                   check=True)
    return dest


def real_image_layout() -> tuple[Path, str] | None:
    """The real image's ``oci-umoci`` layout and ref when ``make-real-image.sh`` finished
    (:data:`realimg.OUT`), else None."""
    out = realimg.OUT
    if realimg.complete(out) and (out / "oci-umoci" / "index.json").is_file():
        return out / "oci-umoci", realimg.REF
    return None


def build_rows(
    add: Callable[..., None],
    ours: Callable[..., Cmd],
    peer: Callable[..., Cmd],
    umoci: str | None,
    lt: list[str],
    src_layout: Path,
    ref: str,
    base: Path,
    runs: int,
) -> None:
    """The rows of issue 17: ``repack`` after a one-file change of the image's unpacked tree
    beside ``umoci repack`` on the same change, and ``append`` of a large directory (the
    image's unpacked tree, gzip) beside ``umoci insert``. Each tool gets its own copy of the
    layout and of the unpacked tree, made once before its first run (untimed); repack and
    append leave both as they were, so later runs start from the same state."""
    tree = base / "build-tree"
    work = {side: base / f"build-{side}" for side in ("ours", "umoci")}
    done: set[str] = set()

    def one_file_change(rootfs: Path) -> None:
        # an existing file of the image, or a new one when it has none
        target = rootfs / "etc" / "os-release"
        if not target.is_file():
            target = rootfs / "etc" / "layouttool-bench"
        with target.open("a") as f:
            f.write("# changed by make bench\n")

    def setup(side: str) -> None:
        if not tree.exists():  # the large directory append adds (either side may come first)
            subprocess.run([*lt, "unpack", f"{src_layout}:{ref}", str(tree)], check=True)
        if side in done:
            return
        d = work[side]
        shutil.copytree(src_layout, d / "oci", symlinks=True)
        if side == "ours":
            subprocess.run([*lt, "unpack", f"{d / 'oci'}:{ref}", str(d / "rootfs")], check=True)
            one_file_change(d / "rootfs")
        else:
            subprocess.run([umoci or "umoci", "unpack", "--image", f"{d / 'oci'}:{ref}",
                            str(d / "bundle")], check=True, stdout=subprocess.DEVNULL)
            one_file_change(d / "bundle" / "rootfs")
        done.add(side)

    o, u = work["ours"], work["umoci"]
    add("repack one-file change", "build", None, [
        ours("repack", [f"{o / 'oci'}:{ref}", str(o / "rootfs"), "--tag", "repacked"],
             prepare=functools.partial(setup, "ours")),
        peer("umoci", umoci, ["repack", "--image", f"{u / 'oci'}:repacked", str(u / "bundle")],
             prepare=functools.partial(setup, "umoci")),
    ], Target(), [], runs)
    add("append large directory (gzip)", "build", None, [
        ours("append", [f"{o / 'oci'}:{ref}", str(tree), "--prefix", "/big", "--tag", "appended"],
             prepare=functools.partial(setup, "ours")),
        peer("umoci", umoci, ["insert", "--image", f"{u / 'oci'}:{ref}", "--tag", "inserted",
                              str(tree), "/big"],
             prepare=functools.partial(setup, "umoci")),
    ], Target(), [], runs)


def export_cases(add: Callable[..., None], ours: Callable[..., Cmd], peer: Callable[..., Cmd],
                 layout: Path, ref: str, work: Path, tar_bytes: int,
                 layers: list[Path]) -> None:
    """export (the merged root filesystem as one tar, from the gzip layout) beside ``tar -c``
    of the same tree unpacked on disk (made once, untimed): what the tree costs to tar when
    it is already on disk, against reading and merging the layers."""
    tree = work / "export-tree"
    o1, o2 = work / "export-ours.tar", work / "export-tar.tar"

    def unpacked() -> None:
        if not tree.exists():
            subprocess.run([*ours_argv(), "-q", "unpack", f"{layout}:{ref}", str(tree)],
                           check=True)

    add("export", "export", tar_bytes, [
        ours("export", [f"{layout}:{ref}", "-o", str(o1)], out=o1),
        peer("tar -c", shutil.which("tar"), ["-C", str(tree), "-cf", str(o2), "."], out=o2,
             prepare=unpacked),
    ], Target(), [layout, *layers])


def lazy_plans(
    ours: Callable[..., Cmd],
    peer: Callable[..., Cmd],
    add: Callable[..., None],
    ogz: Path,
    ozst: Path,
    ref: str,
    work: Path,
    tmpfs: Path | None,
    tar_bytes: int,
) -> None:
    """Lazy-pull layers: writing zstd:chunked beside podman (the one peer here that writes it)
    and beside our plain zstd; eStargz beside our plain gzip (nerdctl and ctr-remote, its
    writers, are not packaged for Debian); unpack of each beside unpack of the plain layer of
    the same compression (the goal: as fast)."""
    podman = shutil.which("podman")
    store = work / "podman-store"
    run_root = Path(tempfile.gettempdir()) / f"lt-bench-pm-{os.getpid()}"  # under 50 chars
    pm = [podman or "podman", "--root", str(store), "--runroot", str(run_root),
          "--storage-driver", "vfs"]

    def podman_image() -> None:
        # untimed: the image in podman's storage once (podman pushes from its storage)
        if not (store / ".bench-pulled").exists():
            got = subprocess.run([*pm, "pull", "-q", f"oci:{ogz}:{ref}"], check=True,
                                 capture_output=True, text=True)
            subprocess.run([*pm, "tag", got.stdout.strip(), "localhost/lt-bench:1"],
                           check=True, capture_output=True)
            (store / ".bench-pulled").write_text("")

    o1, o2, o3 = (work / f"zc-{w}" for w in ("ours", "podman", "plain"))
    podman_side = peer("podman", podman, ["push"], out=o2, prepare=podman_image)
    podman_side.argv = [*pm, "push", "-q", "--compression-format", "zstd:chunked",
                        "localhost/lt-bench:1", f"oci:{o2}:{ref}"]
    if podman and os.geteuid() != 0:
        podman_side.side.missing = "needs root (vfs storage)"
    plain_zstd = ours("convert", [f"{ogz}:{ref}", "--compression", "zstd", "-o", str(o3)],
                      out=o3)
    plain_zstd.side.role, plain_zstd.side.tool = "floor", "layouttool zstd (plain)"
    add("convert gzip->zstd:chunked", "convert", tar_bytes, [
        ours("convert", [f"{ogz}:{ref}", "--compression", "zstd:chunked", "-o", str(o1)],
             out=o1, check_layout=True),
        podman_side,
        plain_zstd,
    ], Target(), [ogz])

    e1, e3 = work / "es-ours", work / "es-plain"
    plain_gzip = ours("convert", [f"{ozst}:{ref}", "--compression", "gzip", "-o", str(e3)],
                      out=e3)
    plain_gzip.side.role, plain_gzip.side.tool = "floor", "layouttool gzip (plain)"
    add("convert gzip->estargz", "convert", tar_bytes, [
        ours("convert", [f"{ogz}:{ref}", "--compression", "estargz", "-o", str(e1)],
             out=e1, check_layout=True),
        plain_gzip,
    ], Target(), [ogz])

    # unpack: the lazy layouts made once, untimed, beside the plain ones of each compression
    base = tmpfs if tmpfs is not None else work
    lazy_src = {fmt: work / f"lazy-src-{fmt.replace(':', '-')}" for fmt in ("zstd:chunked",
                                                                             "estargz")}

    def make(fmt: str) -> None:
        if not lazy_src[fmt].exists():
            subprocess.run([*ours_argv(), "-q", "convert", f"{ogz}:{ref}", "--compression", fmt,
                            "-o", str(lazy_src[fmt])], check=True, capture_output=True)

    for fmt, plain_src, comp in (("zstd:chunked", ozst, "zstd"), ("estargz", ogz, "gzip")):
        d1, d2 = base / f"unpack-{comp}-lazy", base / f"unpack-{comp}-plain"
        plain = ours("unpack", [f"{plain_src}:{ref}", str(d2), "--rootless"], out=d2)
        plain.side.role, plain.side.tool = "floor", f"layouttool {comp} (plain)"
        add(f"unpack {fmt} rootless {'tmpfs' if tmpfs else 'disk'}", "unpack", tar_bytes, [
            ours("unpack", [f"{lazy_src[fmt]}:{ref}", str(d1), "--rootless"], out=d1,
                 prepare=functools.partial(make, fmt)),
            plain,
        ], Target(), [ogz, ozst])


def tmpfs_dir() -> Path | None:
    """A scratch directory on tmpfs (/dev/shm), or None when there is none."""
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK) and fs_type(shm) == "tmpfs":
        return shm / f"layouttool-bench-{os.getpid()}"
    return None


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--quick", action="store_true",
                   help="small image, one run each: under a minute")
    p.add_argument("--seed", type=int, default=DEFAULT_SEED)
    p.add_argument("--size-mb", type=int, help="size of the generated image (MiB)")
    p.add_argument("--big-mb", type=int, help="size of the single large layer (MiB; 0: skip)")
    p.add_argument("--runs", type=int, help="runs per tool per case (median)")
    p.add_argument("--fast-runs", type=int, help="runs of the start-up cases (ls, inspect)")
    p.add_argument("--real", action=argparse.BooleanOptionalAction, default=None,
                   help="the real Debian image's rows (default: on, off with --quick)")
    p.add_argument("--only", help="comma-separated words; run the cases whose name has one")
    p.add_argument("--out", type=Path, default=REPO / "bench" / "out",
                   help="output and cache directory (default bench/out)")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds per command")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Generate the inputs (cached), run every case, print and write the results."""
    args = parse_args(argv)
    preset = QUICK if args.quick else FULL
    size_mb = args.size_mb or preset["size_mb"]
    big_mb = preset["big_mb"] if args.big_mb is None else args.big_mb
    runs = args.runs or preset["runs"]
    fast_runs = args.fast_runs or max(runs, preset["fast_runs"])
    out: Path = args.out.resolve()
    # a work directory of this run's own: other runs (or other benchmarks) may share out/
    cache, work, logs = out / "cache", out / "work" / f"run-{os.getpid()}", out / "logs"
    for d in (cache, logs):
        d.mkdir(parents=True, exist_ok=True)
    rm(work)
    work.mkdir(parents=True)
    tmpfs = tmpfs_dir()

    t0 = time.perf_counter()
    log(f"inputs: seed {args.seed}, {size_mb} MiB image, {big_mb} MiB big layer "
        f"(cached in {cache})")
    inp = gen.generate(cache, args.seed, size_mb)
    big = gen.generate_big(cache, args.seed, big_mb) if big_mb > 0 else None
    log(f"inputs ready in {time.perf_counter() - t0:.1f}s: {inp.files} files, "
        f"{inp.uncompressed_bytes / 1e6:.0f} MB of layers; OCI layouts by {inp.oci_tool}")

    real, real_src = None, None
    if not (not args.quick if args.real is None else args.real):
        log("real image: not in this run (--quick; --real adds it)")
    elif tmpfs is None:
        log("real image: skipped, its rows run on tmpfs and /dev/shm is not one")
    else:
        real_src, how = realimg.build(log, realimg.OUT)
        if real_src is None:
            log(f"real image: skipped ({how}); going on with the generated image")
        else:
            real = realimg.plan(real_src, tmpfs / "real", realimg.REF)
            log(f"real image: {how}; layer 1 from {real.source}, "
                f"{real.uncompressed_bytes / 1e6:.0f} MB of layers")
    sample = make_sample(work / "sample-oci")

    # --quick unpacks on tmpfs only (when there is one): on disk is slow and noisy
    plans = build_plans(inp, big, work, tmpfs, runs, fast_runs,
                        unpack_on_disk=not args.quick or tmpfs is None, real=real,
                        sample=sample)
    if args.only:
        words = [w.strip() for w in args.only.split(",") if w.strip()]
        plans = [p for p in plans if any(w in p.case.name for w in words)]
    if real is not None and real_src is not None and any(
        p.case.group.startswith("real") for p in plans
    ):
        t2 = time.perf_counter()
        realimg.stage(real_src, real)
        log(f"real image: inputs copied to {real.save_tar.parent} in "
            f"{time.perf_counter() - t2:.1f}s")
    t1 = time.perf_counter()
    load_before = list(os.getloadavg())
    lt = ours_argv()
    tools = {
        "layouttool": tool_version([*lt, "--version"]),
        "skopeo": tool_version(["skopeo", "--version"]) if shutil.which("skopeo") else "missing",
        "umoci": tool_version(["umoci", "--version"]) if shutil.which("umoci") else "missing",
        "tar": tool_version(["tar", "--version"]) if shutil.which("tar") else "missing",
    }
    config: dict[str, Any] = {
        "seed": args.seed,
        "size_mb": size_mb,
        "big_mb": big_mb,
        "runs": runs,
        "fast_runs": fast_runs,
        "quick": args.quick,
        "only": args.only,
        "complete": False,
        "mb_s": "MB/s = 10^6 bytes of the case's input (import: the tarball; convert, unpack: "
                "the image's uncompressed layer tars) per second of our median time",
        "ratio": "peer median / our median (above 1: we are faster)",
    }
    inputs = inp.to_json() | {
        "big": None if big is None else big.__dict__,
        "real": None if real is None else real.to_json(),
    }

    def save(cases: list[Case]) -> dict[str, Any]:
        # written after every case, so an interrupted run still leaves what it measured
        machine = machine_info() | {
            "work_fs": fs_type(out),
            "tmpfs": str(tmpfs.parent) if tmpfs else None,
            "loadavg_before": load_before,
        }
        config["bench_seconds"] = round(time.perf_counter() - t1, 1)
        write_results(out / "results.json", cases, machine=machine, tools=tools, config=config,
                      inputs=inputs)
        (out / "results.md").write_text(format_markdown(cases, machine, tools, config))
        return machine

    done: list[Case] = []
    try:
        for n, plan in enumerate(plans, 1):
            log(f"[{n}/{len(plans)}] {plan.case.name} ({plan.runs} runs)")
            run_plan(plan, logs, args.timeout, trash=work / "trash",
                     marker=out / MASS_DELETE_MARKER)
            log_case(plan.case)
            done.append(plan.case)
            save(done)
        config["complete"] = True
    except KeyboardInterrupt:
        log("interrupted: the cases measured so far are in results.json")
    finally:
        mass_delete = (work / "trash").exists()
        rm(work)
        if mass_delete:
            (out / MASS_DELETE_MARKER).write_text(f"{time.time()}\n")
        if tmpfs is not None:
            rm(tmpfs)
    cases = done
    machine = save(cases)
    print(f"layouttool bench: {machine['date']}, {machine['nproc']} x {machine['cpu']}, "
          f"Linux {machine['kernel']}; image {size_mb} MiB ({inp.files} files), "
          f"{runs} run(s), ratio = peer/ours")
    print(", ".join(f"{k}: {v}" for k, v in tools.items()))
    print()
    print(format_text(cases))
    goals = format_goals(cases)
    if goals:
        print("\ngoals (issue 19), from this run:")
        print(goals)
    notes = [f"  {c.name}: {note}" for c in cases for note in c.notes]
    if notes:
        print("\nnotes:")
        print("\n".join(notes))
    print(f"\nwrote {out / 'results.json'} and {out / 'results.md'} "
          f"(bench {time.perf_counter() - t1:.0f}s, total {time.perf_counter() - t0:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
