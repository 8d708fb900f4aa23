"""Shared harness of the reliability tests: build small images, snapshot layouts, run
layouttool as a child process (and kill it), and check what a layout must still be afterwards.

Nothing here uses layouttool's importer: base layouts are written through the store
(:class:`layouttool.store.Layout`, the one writer every command uses) so the kill tests do not
depend on the command under test to set up their world. Docker save tarballs are written here by
hand (legacy form, ``manifest.json`` + ``<id>/layer.tar``), byte-deterministic from a seed.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import io
import json
import os
import random
import re
import resource
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from layouttool import mediatypes as mt
from layouttool.model import Descriptor
from layouttool.ops.layout import place_ref, ref_descriptor
from layouttool.ops.unpack import unpack_image
from layouttool.ops.verify import verify_layout
from layouttool.store import Layout

PYTHON = sys.executable
#: the CLI as a child process, exactly as users run it (module form: no entry-point shim)
LAYOUTTOOL = [PYTHON, "-m", "layouttool"]
#: our documented error exit codes (layouttool/errors.py), other than 70 (a bug) and 1
CLEAN_CODES = frozenset({3, 4, 5, 6, 7, 74, 130})
STATE_DIR = ".layouttool"


# ---------------------------------------------------------------------------- commands
@functools.cache
def available_commands() -> frozenset[str]:
    """The command names ``layouttool --help`` lists (what exists in this checkout)."""
    out = subprocess.run([*LAYOUTTOOL, "--help"], capture_output=True, text=True, timeout=60)
    names: set[str] = set()
    in_cmds = False
    for line in out.stdout.splitlines():
        if line and not line.startswith(" "):
            # a section title ("Layouts:") opens a command list; "Options:" does not
            in_cmds = line.endswith(":") and line != "Options:"
            continue
        if line.strip() == "Examples:":
            in_cmds = False
        m = re.match(r"^  ([a-z][a-z0-9-]*)\s{2,}", line)
        if in_cmds and m:
            names.add(m.group(1))
    return frozenset(names)


def require(*commands: str) -> None:
    """Skip (visibly) when a command has not landed in ``layouttool --help`` yet."""
    for c in commands:
        if c not in available_commands():
            pytest.skip(f"command {c} not available")


def have(command: str) -> bool:
    """True when ``layouttool --help`` lists ``command``."""
    return command in available_commands()


# ---------------------------------------------------------------------------- content
def layer_tar(rng: random.Random, nfiles: int = 3, size: int = 4096, prefix: str = "f") -> bytes:
    """An uncompressed layer tar of ``nfiles`` files of ``size`` random bytes (incompressible,
    so compression costs real time), deterministic from ``rng``."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        d = tarfile.TarInfo(f"{prefix}dir")
        d.type = tarfile.DIRTYPE
        d.mode = 0o755
        d.mtime = 1_600_000_000
        tar.addfile(d)
        for i in range(nfiles):
            data = rng.randbytes(size)
            ti = tarfile.TarInfo(f"{prefix}dir/{prefix}{i}.bin")
            ti.size = len(data)
            ti.mode = 0o644
            ti.mtime = 1_600_000_000
            tar.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def sha256(data: bytes) -> str:
    """``sha256:<hex>`` of ``data``."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def config_doc(diff_ids: Sequence[str], salt: str = "") -> dict[str, Any]:
    """A minimal, valid linux/amd64 image config."""
    return {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Env": ["PATH=/bin", f"SALT={salt}"], "Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": list(diff_ids)},
        "history": [{"created_by": f"layer {i}"} for i in range(len(diff_ids))],
    }


def dumps(doc: Any) -> bytes:
    """Compact JSON bytes."""
    return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()


@dataclass
class ImageSpec:
    """An image to build: its tags and its uncompressed layer tars."""

    tags: list[str]
    layers: list[bytes]
    salt: str = ""

    @property
    def config(self) -> bytes:
        """The config blob."""
        return dumps(config_doc([sha256(x) for x in self.layers], self.salt))


def random_image(rng: random.Random, tags: list[str], *, layers: int = 2, files: int = 3,
                 size: int = 4096) -> ImageSpec:
    """An image of ``layers`` random layers."""
    salt = rng.randbytes(8).hex()
    return ImageSpec(tags, [layer_tar(rng, files, size, prefix=f"l{i}{salt[:4]}")
                            for i in range(layers)], salt)


def docker_save_bytes(images: Sequence[ImageSpec], *, compress_layers: bool = False) -> bytes:
    """A legacy-form ``docker save`` tarball of ``images`` (deterministic)."""
    members: dict[str, bytes] = {}
    manifest = []
    repos: dict[str, dict[str, str]] = {}
    for img in images:
        cfg = img.config
        cfg_name = hashlib.sha256(cfg).hexdigest() + ".json"
        members[cfg_name] = cfg
        paths = []
        for layer in img.layers:
            lid = hashlib.sha256(layer).hexdigest()
            data = gzip.compress(layer, compresslevel=1, mtime=0) if compress_layers else layer
            members[f"{lid}/layer.tar"] = data
            members[f"{lid}/VERSION"] = b"1.0"
            paths.append(f"{lid}/layer.tar")
        manifest.append({"Config": cfg_name, "RepoTags": img.tags or None, "Layers": paths})
        for t in img.tags:
            name, _, tag = t.rpartition(":")
            repos.setdefault(name, {})[tag] = hashlib.sha256(cfg).hexdigest()
    members["manifest.json"] = dumps(manifest)
    members["repositories"] = dumps(repos)
    return tar_bytes(members.items())


def tar_bytes(members: Iterable[tuple[str, bytes]], fmt: int = tarfile.USTAR_FORMAT) -> bytes:
    """A tar of regular files."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for name, data in members:
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            ti.mode = 0o644
            ti.mtime = 1_600_000_000
            tar.addfile(ti, io.BytesIO(data))
    return buf.getvalue()


def add_image(layout: Layout, img: ImageSpec, *, docker: bool = False,
              compress: str = "gzip") -> Descriptor:
    """Store ``img`` in ``layout`` through the store and point each of its tags at it (an
    untagged entry when it has none). Returns the manifest descriptor (without ref)."""
    layer_descs = []
    for layer in img.layers:
        if compress == "gzip":
            data = gzip.compress(layer, compresslevel=1, mtime=0)
            mtype = mt.MT_DOCKER_LAYER_GZIP if docker else mt.MT_OCI_LAYER_GZIP
        else:
            data = layer
            mtype = mt.MT_DOCKER_LAYER if docker else mt.MT_OCI_LAYER
        info = layout.put_bytes(data)
        layer_descs.append({"mediaType": mtype, "digest": str(info.digest), "size": info.size})
    cfg = layout.put_bytes(img.config)
    mtype = mt.MT_DOCKER_MANIFEST if docker else mt.MT_OCI_MANIFEST
    cfg_type = mt.MT_DOCKER_CONFIG if docker else mt.MT_OCI_CONFIG
    man = {
        "schemaVersion": 2,
        "mediaType": mtype,
        "config": {"mediaType": cfg_type, "digest": str(cfg.digest), "size": cfg.size},
        "layers": layer_descs,
    }
    desc = layout.put_bytes(dumps(man)).descriptor(mtype)

    def change(entries: list[Descriptor], _doc: dict[str, Any]) -> list[Descriptor]:
        if not img.tags:
            return [*entries, desc]
        for t in img.tags:
            entries, _ = place_ref(entries, ref_descriptor(desc, t))
        return entries

    with layout.writing():
        layout.update_index(change)
    return desc


def make_layout(path: Path, images: Sequence[ImageSpec], *, docker_every: int = 0) -> Layout:
    """A new layout at ``path`` holding ``images`` (every ``docker_every``-th with Docker types)."""
    layout = Layout.init(path)
    for i, img in enumerate(images):
        add_image(layout, img, docker=bool(docker_every) and i % docker_every == 0)
    return layout


# ---------------------------------------------------------------------------- snapshots
def snapshot(root: Path, *, include_state: bool = False) -> dict[str, str]:
    """relative path -> content hash (or ``link:<target>`` / ``dir``) of everything under
    ``root``; our private ``.layouttool`` state (locks, temp files) is left out unless asked."""
    out: dict[str, str] = {}
    if not root.exists():
        return out
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        if rel_dir == "." and not include_state and STATE_DIR in dirnames:
            dirnames.remove(STATE_DIR)
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            rel = os.path.normpath(os.path.join(rel_dir, name))
            if p.is_symlink():
                out[rel] = "link:" + os.readlink(p)
            elif p.is_dir():
                out[rel] = "dir"
            elif p.is_file():
                out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
            else:
                out[rel] = "special"
    return out


def index_entries(root: Path) -> list[dict[str, Any]]:
    """The ``manifests`` of ``root/index.json`` as JSON objects."""
    doc = json.loads((root / "index.json").read_bytes())
    return list(doc.get("manifests") or [])


def blob_set(root: Path) -> set[str]:
    """Every file name under ``blobs/``, as ``alg/hex``."""
    base = root / "blobs"
    return {f"{a.name}/{b.name}" for a in base.iterdir() if a.is_dir() for b in a.iterdir()}


def tmp_files(root: Path) -> list[str]:
    """Files left in our temp directory."""
    d = root / STATE_DIR / "tmp"
    return sorted(p.name for p in d.iterdir()) if d.is_dir() else []


def _key(entry: dict[str, Any]) -> str:
    return json.dumps(entry, sort_keys=True)


def check_verify(root: Path) -> None:
    """``verify_layout`` finds nothing wrong."""
    res = verify_layout(root)
    assert res.ok, f"verify {root}: {[p.message for p in res.problems]}"


def check_unpack(root: Path, entries: Iterable[dict[str, Any]], scratch: Path) -> None:
    """Every image of ``entries`` unpacks (every blob read and verified, every diff_id);
    artifacts (entries with an ``artifactType``, as ``attach`` adds) are not images."""
    for e in entries:
        if e.get("artifactType"):
            continue
        dest = Path(tempfile.mkdtemp(dir=scratch))
        shutil.rmtree(dest)
        unpack_image(f"{root}@{e['digest']}", dest)
        shutil.rmtree(dest)


def gc_in_process(root: Path) -> None:
    """Run gc on ``root`` (the library call; the CLI's ``gc`` may not have landed)."""
    from layouttool.ops.gc import gc_layout

    gc_layout(root)


# ---------------------------------------------------------------------------- processes
@dataclass
class Run:
    """What one child run produced."""

    code: int
    stdout: bytes
    stderr: str
    seconds: float
    maxrss_kib: int = 0

    @property
    def error_lines(self) -> list[str]:
        """stderr lines that are error messages."""
        return [ln for ln in self.stderr.splitlines() if ln.startswith("layouttool: error:")]


def child_env() -> dict[str, str]:
    """The environment of child runs: no colour, no TTY progress, unbuffered."""
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("PYTHONBREAKPOINT", None)
    return env


def run(args: Sequence[str | os.PathLike[str]], *, timeout: float = 60,
        preexec: Callable[[], None] | None = None, stdin: bytes | None = None,
        cwd: Path | None = None) -> Run:
    """Run ``layouttool ARGS`` as a child; a timeout kills it and fails the test (a hang)."""
    argv = [*LAYOUTTOOL, *map(str, args)]
    start = time.monotonic()
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE if stdin is not None else
                            subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=preexec, env=child_env(), cwd=cwd)
    try:
        out, err = proc.communicate(stdin, timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        pytest.fail(f"layouttool {' '.join(map(str, args))} hung (> {timeout}s)")
    return Run(proc.returncode, out, err.decode(errors="replace"), time.monotonic() - start)


#: runs argv[2:] and writes its peak RSS (KiB) to the file argv[1]. A child of the test
#: process would not do: Linux carries ru_maxrss across fork and exec, so a child of a large
#: pytest process reports at least the parent's size; this small process's child starts afresh
_RSS_WRAPPER = (
    "import os, subprocess, sys\n"
    "p = subprocess.Popen(sys.argv[2:])\n"
    "_, status, usage = os.wait4(p.pid, 0)\n"
    "open(sys.argv[1], 'w').write(str(usage.ru_maxrss))\n"
    "sys.exit(os.waitstatus_to_exitcode(status))\n"
)


def run_wait4(args: Sequence[str | os.PathLike[str]], *, timeout: float = 120,
              preexec: Callable[[], None] | None = None) -> Run:
    """Like :func:`run` but with the child's own peak RSS, measured through a small wrapper
    process (stdout is discarded, stderr kept in a temp file so a pipe can never fill up)."""
    with tempfile.TemporaryDirectory() as tmp:
        rss_file = Path(tmp) / "maxrss"
        argv = [PYTHON, "-c", _RSS_WRAPPER, str(rss_file), *LAYOUTTOOL, *map(str, args)]
        with (Path(tmp) / "stderr").open("w+b") as errf:
            start = time.monotonic()
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                    stderr=errf, preexec_fn=preexec, env=child_env(),
                                    start_new_session=True)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)  # the wrapper and layouttool under it
                proc.wait()
                pytest.fail(f"layouttool {' '.join(map(str, args))} hung (> {timeout}s)")
            seconds = time.monotonic() - start
            errf.seek(0)
            err = errf.read().decode(errors="replace")
        maxrss = int(rss_file.read_text())
    return Run(proc.returncode, b"", err, seconds, maxrss)


def run_killed(args: Sequence[str | os.PathLike[str]], delay: float,
               sig: int = signal.SIGKILL) -> int | None:
    """Start ``layouttool ARGS``, send ``sig`` after ``delay`` seconds; return its exit code
    when it finished before the signal, else None (killed)."""
    argv = [*LAYOUTTOOL, *map(str, args)]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env=child_env())
    try:
        return proc.wait(timeout=delay)
    except subprocess.TimeoutExpired:
        proc.send_signal(sig)
        proc.wait(timeout=60)
        return None


def assert_clean_error(r: Run, codes: Iterable[int] | int, what: str = "") -> None:
    """Exactly one ``layouttool: error:`` line, no traceback, and an expected exit code."""
    allowed = {codes} if isinstance(codes, int) else set(codes)
    ctx = f"{what}: exit {r.code}, stderr={r.stderr!r}"
    assert "Traceback" not in r.stderr, ctx
    assert r.code in allowed, ctx
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    errs = r.error_lines
    assert len(errs) == 1, ctx
    # the error is the last thing said (a summary or progress line may precede nothing else)
    assert lines[-1] == errs[0], ctx


def limit_fsize(nbytes: int) -> Callable[[], None]:
    """A ``preexec_fn``: the child may write files of at most ``nbytes``; SIGXFSZ ignored so an
    oversized write fails with EFBIG instead of killing the child."""

    def f() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, nbytes))

    return f


# ---------------------------------------------------------------------------- kill trials
def _layout_state(root: Path) -> tuple[object, ...]:
    """A cheap fingerprint of what a write changes first: temp files, blob names, index.json."""
    try:
        tmp = tuple(sorted(os.listdir(root / STATE_DIR / "tmp")))
    except OSError:
        tmp = ()
    try:
        blobs = len(os.listdir(root / "blobs" / "sha256"))
    except OSError:
        blobs = -1
    try:
        st = os.stat(root / "index.json")
        idx: tuple[int, int] = (st.st_ino, st.st_mtime_ns)
    except OSError:
        idx = (0, 0)
    return tmp, blobs, idx


@dataclass
class Watched:
    """One watched child run: its exit code (None when killed), when the layout first changed
    and when the run ended (seconds from start; ``first_change`` None when it never changed)."""

    code: int | None
    first_change: float | None
    end: float
    #: with ``wait_after_signal``: when the signal was sent
    signalled: float | None = None


def watch_and_kill(args: Sequence[str | os.PathLike[str]], layout: Path,
                   *, after_start: float | None = None, after_change: float | None = None,
                   sig: int = signal.SIGKILL, wait_after_signal: bool = False,
                   stderr: Path | None = None) -> Watched:
    """Run ``layouttool ARGS`` on ``layout`` and send ``sig`` either ``after_start`` seconds
    after the start, or ``after_change`` seconds after the layout first changes (the write
    phase began: a temp file appeared, a blob came or went, index.json was replaced). With
    neither, only watch (to measure the phases of a clean run). With ``wait_after_signal``
    the child's own exit code is returned (for SIGINT/SIGTERM, which it handles); ``stderr``
    receives its standard error."""
    argv = [*LAYOUTTOOL, *map(str, args)]
    initial = _layout_state(layout)
    start = time.monotonic()
    errf = open(stderr, "wb") if stderr is not None else None  # noqa: SIM115
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=errf or subprocess.DEVNULL, env=child_env())
    first: float | None = None
    deadline: float | None = start + after_start if after_start is not None else None
    try:
        while True:
            code = proc.poll()
            now = time.monotonic()
            if code is not None:
                return Watched(code, first, now - start)
            if first is None and _layout_state(layout) != initial:
                first = now - start
                if after_change is not None:
                    deadline = now + after_change
            if deadline is not None and now >= deadline:
                proc.send_signal(sig)
                code = proc.wait(timeout=60)
                end = time.monotonic() - start
                if wait_after_signal:
                    return Watched(code, first, end, now - start)
                return Watched(None, first, end)
            if now - start > 120:
                pytest.fail(f"layouttool {' '.join(map(str, args))} hung")
            time.sleep(0.0005)
    finally:
        if proc.poll() is None:  # pragma: no cover - only when the test itself fails
            proc.kill()
            proc.wait()
        if errf is not None:
            errf.close()


@dataclass
class KillCase:
    """One command under the kill harness.

    ``argv(layout)`` gives the arguments for a run against the layout at ``layout``;
    ``template`` is the layout every trial starts from (copied per trial).
    """

    name: str
    template: Path
    argv: Callable[[Path], list[str]]
    #: the op stores a referrer (``attach``): gc keeps it as soon as its manifest is stored,
    #: index.json entry or not, so a kill after that may leave the after-state's blobs
    referrer: bool = False


@dataclass
class Reference:
    """A layout before an op and after a clean run of it (blob sets after gc), and the timing
    of a clean run: its length and that of its write phase."""

    before_index: list[dict[str, Any]]
    before_blobs: set[str]
    after_index: list[dict[str, Any]]
    after_blobs: set[str]
    seconds: float
    write_phase: float


def reference(case: KillCase, scratch: Path) -> Reference:
    """Run the op to completion on copies of the template and record both end states."""
    base = scratch / f"{case.name}-ref"
    shutil.copytree(case.template, base)
    before_index = index_entries(base)
    gc_in_process(base)
    before_blobs = blob_set(base)
    runs = []
    for i in range(2):  # the second run measures a warm start
        d = scratch / f"{case.name}-ref{i}"
        shutil.copytree(case.template, d)
        w = watch_and_kill(case.argv(d), d)
        assert w.code == 0, f"{case.name}: clean run failed (see: {[*case.argv(d)]})"
        runs.append(w)
    gc_in_process(d)
    check_verify(d)
    seconds = min(w.end for w in runs)
    phase = max(w.end - (w.first_change if w.first_change is not None else w.end) for w in runs)
    return Reference(before_index, before_blobs, index_entries(d), blob_set(d), seconds,
                     max(phase, 0.005))


@dataclass(frozen=True)
class Instant:
    """When to kill: seconds after the start, or after the write phase began."""

    after_start: float | None = None
    after_change: float | None = None

    def __str__(self) -> str:
        if self.after_start is not None:
            return f"{self.after_start:.4f}s after start"
        return f"{self.after_change:.4f}s into the write phase"


def kill_instants(seed: int, n: int, ref: Reference) -> list[Instant]:
    """``n`` kill instants: a third spread over the whole run (seeded uniform, a little past
    its end), the rest over the write phase, measured from its first visible change, so that
    kills land between the first temp file and the last rename even when the machine is busy
    and start-up times wander."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        if i % 3 == 0:
            out.append(Instant(after_start=rng.uniform(0.0, ref.seconds * 1.1)))
        else:
            out.append(Instant(after_change=rng.uniform(0.0, ref.write_phase * 1.2)))
    return out


def kill_trial(case: KillCase, ref: Reference, when: Instant, scratch: Path, n: int) -> str:
    """Copy the template, run the op, SIGKILL it at ``when``, and check the contract.

    Returns the outcome: ``"before"`` (no trace but garbage), ``"after"`` (fully happened) or
    ``"finished"`` (it exited before the kill; then it must have succeeded).
    """
    d = scratch / f"{case.name}-t{n}"
    shutil.copytree(case.template, d)
    w = watch_and_kill(case.argv(d), d, after_start=when.after_start,
                       after_change=when.after_change)
    code = w.code
    where = f"{case.name} trial {n} (SIGKILL {when}, layout {d})"
    if code is not None:
        assert code == 0, f"{where}: exited {code} before the kill"
    # 1. the layout is valid as the kill left it
    res = verify_layout(d)
    assert res.ok, f"{where}: verify: {[p.message for p in res.problems]}"
    # 2. index.json is exactly one of the two states (never a partial write, never a mix)
    now = index_entries(d)
    if now == ref.before_index:
        outcome, want_blobs = "before", ref.before_blobs
    elif now == ref.after_index:
        outcome, want_blobs = "after", ref.after_blobs
    else:
        pytest.fail(f"{where}: index.json is neither before nor after:\n{now}\n"
                    f"before={ref.before_index}\nafter={ref.after_index}")
    if code is not None:
        assert outcome == "after" or ref.after_index == ref.before_index, (
            f"{where}: finished but index.json unchanged")
    # 3. every image that was there before (and that the op keeps) is still listed
    kept = [e for e in ref.before_index if e in ref.after_index]
    missing = [e for e in kept if e not in now]
    assert not missing, f"{where}: lost index entries {missing}"
    # 4. what is left over (temp files, orphan blobs) is exactly what gc removes
    gc_in_process(d)
    assert tmp_files(d) == [], f"{where}: gc left temp files {tmp_files(d)}"
    got = blob_set(d)
    if case.referrer and outcome == "before" and got == ref.after_blobs:
        want_blobs = got
    assert got == want_blobs, (
        f"{where}: after gc the blobs differ from the {outcome}-state: "
        f"extra {sorted(got - want_blobs)}, missing {sorted(want_blobs - got)}"
    )
    check_verify(d)
    # unpack reads every layer through its diff_id: kept images survived the kill *and* the gc
    check_unpack(d, now, scratch)
    shutil.rmtree(d)
    if code is not None:
        return "finished"
    # a kill that came before any visible change is "early" (it tests less)
    return outcome if w.first_change is not None else "early"


def trials(default: int) -> int:
    """Trials per command: ``LAYOUTTOOL_KILL_TRIALS`` or ``default``."""
    return int(os.environ.get("LAYOUTTOOL_KILL_TRIALS", default))
