"""``gc``: remove what nothing reachable from ``index.json`` references, and temp leftovers.

Plan, then apply (GGCR's split): :func:`plan_gc` is pure and says what would go and why;
:func:`apply_gc` deletes exactly that plan; :func:`gc_layout` runs both under the layout's
exclusive lock, so no import or convert can add a blob between the mark and the sweep.

Mark (fails closed):

* roots are every ``index.json`` entry, tagged or not;
* :func:`layouttool.graph.walk` follows every descriptor: index children (nested), configs,
  layers, ``subject``, Docker and OCI types alike, and every descriptor-shaped object in a
  manifest-like document of an unknown media type. Only documents are read; layers never are;
* referrers (:func:`layouttool.graph.sniff_referrer`): a blob nothing reaches, small enough to
  be a document (at most :data:`~layouttool.model.JSON_CAP`) whose first bytes open a JSON
  object, whose ``subject`` is a kept blob, is kept too, with everything it references, until
  nothing changes (umoci #455, zot #1229 lost signatures and SBOMs here);
* documents are read through :mod:`layouttool.reader`: a *problem* in a document needed to
  find other blobs (an index.json entry's document missing; any document unreadable, corrupt,
  not JSON, or of a type we cannot walk) makes the plan raise (nothing is deleted) unless
  ``force``: then that document is kept (when present) but not read, it is reported in
  ``skipped``, and blobs that only it references are treated as unreferenced. A *warning* (an
  absent ``subject`` or platform manifest of an index, a media type that disagrees with its
  document) is reported in ``warnings`` and the mark goes on.

Sweep: every file under ``blobs/<alg>/`` whose name is a valid digest and is not kept; a symlink
is removed as a link (its target is untouched); names that are not digests and things that are
not files are reported and left alone. Temp files in ``.layouttool/tmp`` are removed: with the
exclusive lock held, no writer that made them is alive.

Speed without losing any of that (issue #8): ``blobs/`` and ``blobs/<alg>/`` are opened once,
following no symlink (:class:`~layouttool.store.BlobDirs`; a ``blobs`` that is a symlink is
refused), and every read, stat and unlink is relative to them; only unreached blobs are
stat'ed; an unreached blob is sniffed from its first bytes without hashing, and read verified
only when it may be a referrer; removals run on a few threads, each still checking the
planned (dev, ino) right before its unlink.
"""

from __future__ import annotations

import contextlib
import os
import stat
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from layouttool.digest import Digest
from layouttool.errors import ConflictError, LayoutToolError
from layouttool.graph import Node, sniff_referrer, walk
from layouttool.model import Descriptor
from layouttool.progress import NULL_PROGRESS, Progress
from layouttool.reader import Finding
from layouttool.store import BlobDirs, BlobEntry, Layout

REASON_UNREFERENCED: Final = "unreferenced"
REASON_LINK: Final = "unreferenced symlink (removed as a link; its target is untouched)"
REASON_TEMP: Final = "temp file of an interrupted write"
SKIP_BAD_NAME: Final = "file name is not a valid digest; left alone"
SKIP_NOT_FILE: Final = "not a regular file or symlink; left alone"
SKIP_UNWALKED: Final = "kept but not walked (--force)"

#: removals run on this many threads when there are at least _PARALLEL_MIN of them and the
#: first _PROBE, done in order, took over _SLOW_S each: an unlink on ext4 mounted with discard
#: waits ~0.2 ms for a synchronous discard, off-CPU; threads overlap those waits (1450 blobs of
#: the bench: 250-360 ms on 1 thread, 200-250 ms on 4, 185-200 ms on 8). Where an unlink is
#: a few microseconds of CPU (tmpfs, ext4 without discard) threads only add GIL hand-offs
#: (1450 blobs on tmpfs: ~50 ms on 8 threads, ~15 ms on one), so they are not started.
_THREADS: Final = 8
_PARALLEL_MIN: Final = 64
_PROBE: Final = 16
_SLOW_S: Final = 50e-6


@dataclass(frozen=True, slots=True)
class Removal:
    """One file gc removes (or would remove)."""

    #: the layout's root directory
    root: str
    #: the path relative to the layout root
    rel: str
    #: the blob's digest; None for a temp file
    digest: Digest | None
    size: int
    reason: str
    #: (st_dev, st_ino) when planned: apply leaves alone a file replaced since
    ident: tuple[int, int]
    #: the blob's directory entry (None for a temp file): apply removes it relative to its
    #: directory, never through a path that a swapped-in symlink could redirect
    entry: BlobEntry | None = None

    @property
    def path(self) -> Path:
        """The file's path (made on demand: a Path per planned file is a measurable part of a
        gc of thousands)."""
        return Path(self.root, self.rel)

    def to_json(self) -> dict[str, Any]:
        """``{"digest"|"path", "size", "reason"}``."""
        key = {"digest": str(self.digest)} if self.digest is not None else {"path": self.rel}
        return {**key, "size": self.size, "reason": self.reason}


@dataclass(frozen=True, slots=True)
class Skipped:
    """Something gc did not remove and reports: a stray file, or (--force) an unread document."""

    reason: str
    path: str | None = None
    digest: str | None = None
    #: for an unread document: where it was reached from, and the error
    where: str | None = None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON form (only the fields that are set)."""
        out: dict[str, Any] = {}
        if self.digest is not None:
            out["digest"] = self.digest
        if self.path is not None:
            out["path"] = self.path
        out["reason"] = self.reason
        if self.where is not None:
            out["where"] = self.where
        if self.error is not None:
            out["error"] = self.error
        return out


@dataclass(frozen=True, slots=True)
class GcPlan:
    """What a gc would do: files to remove with reasons, what is kept, what is left alone."""

    layout: str
    removals: tuple[Removal, ...]
    #: every digest the mark reached (referrers included), stored or not
    kept: frozenset[Digest]
    #: blob files kept
    kept_files: int
    #: referrers kept only because their subject is kept
    referrers: tuple[Digest, ...]
    skipped: tuple[Skipped, ...]
    #: what the reader found odd on the way (a subject or a platform manifest absent...)
    warnings: tuple[Finding, ...] = ()

    @property
    def bytes(self) -> int:
        """Bytes the removals free."""
        return sum(r.size for r in self.removals)

    def to_json(self) -> dict[str, Any]:
        """JSON form (the shape of a dry run's result)."""
        return GcResult(self.layout, True, self.removals, self.kept_files, self.referrers,
                        self.skipped, self.warnings).to_json()


@dataclass(frozen=True, slots=True)
class GcResult:
    """The outcome of ``gc``."""

    layout: str
    dry_run: bool
    #: removed files (with ``dry_run``: what a real run would remove)
    removed: tuple[Removal, ...]
    #: blob files kept
    kept: int
    referrers: tuple[Digest, ...]
    skipped: tuple[Skipped, ...]
    #: what the reader found odd on the way; gc went on
    warnings: tuple[Finding, ...] = ()

    @property
    def count(self) -> int:
        """Number of files removed."""
        return len(self.removed)

    @property
    def bytes_freed(self) -> int:
        """Bytes freed."""
        return sum(r.size for r in self.removed)

    @property
    def unwalked(self) -> tuple[Skipped, ...]:
        """Documents that could not be read and were kept (only with ``force``)."""
        return tuple(s for s in self.skipped if s.error is not None)

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "layout": self.layout,
            "dryRun": self.dry_run,
            "removed": [r.to_json() for r in self.removed],
            "count": self.count,
            "bytesFreed": self.bytes_freed,
            "kept": self.kept,
            "referrersKept": [str(d) for d in self.referrers],
            "skipped": [s.to_json() for s in self.skipped],
            "warnings": [w.to_json() for w in self.warnings],
        }


# ---------------------------------------------------------------------- mark
class _Marker:
    """Mark through graph.walk, recording what was reached, what could not be read (the
    reader's problems) and what was odd (its warnings)."""

    def __init__(self, layout: Layout, progress: Progress) -> None:
        self.layout = layout
        self.kept: set[Digest] = set()
        #: digests whose document was read and followed, or failed to be (never retried)
        self.visited: set[Digest] = set()
        #: documents read (through at least one of their descriptors)
        self._read: set[Digest] = set()
        self._failed: dict[Digest | None, Finding] = {}
        self.warnings: dict[tuple[str, Digest | None, str], Finding] = {}
        self._task = progress.task("gc: reading documents", None)

    @property
    def errors(self) -> list[Finding]:
        """The first problem of each document that could not be read through any of its
        descriptors (one that lies about a size but is read through another is walked)."""
        return [f for d, f in self._failed.items() if d not in self._read]

    def _on_finding(self, f: Finding) -> None:
        if f.severity == "warning":
            self.warnings.setdefault((f.code, f.digest, f.message), f)
        else:
            self._failed.setdefault(f.digest, f)

    def mark(self, roots: list[Descriptor | Node], *, follow_subject: bool) -> list[Descriptor]:
        """Walk from ``roots``; return the subjects met but not followed and not yet read."""
        pending: list[Descriptor] = []
        for node in walk(self.layout, roots, on_finding=self._on_finding,
                         follow_subject=follow_subject):
            self.kept.add(node.desc.digest)
            if node.role == "subject" and not follow_subject:
                pending.append(node.desc)
            elif node.document is not None and node.desc.digest not in self.visited:
                self.visited.add(node.desc.digest)
                if node.document.ok:
                    self._read.add(node.desc.digest)
                self._task.advance(node.desc.size)
        return [d for d in pending if d.digest not in self.visited]

    def done(self) -> None:
        """The marking is over."""
        self._task.done()


def _refuse(errors: list[Finding]) -> LayoutToolError:
    """The error that stops a gc: the first problem's class, naming the blob and its path."""
    f = errors[0]
    more = f" ({len(errors) - 1} more unreadable documents)" if len(errors) > 1 else ""
    msg = (
        f"gc stopped, nothing was deleted: {f.where}: {f.message}{more}. Restore or repair "
        "that blob, or rerun with --force to keep it unread and collect the rest (blobs only "
        "it references are then deleted)"
    )
    return type(f.error())(msg)


def _rel(layout: Layout, path: Path) -> str:
    # plain string work: Path.relative_to costs more than the rest of the sweep per file
    root, p = os.fspath(layout.root).rstrip("/") + "/", os.fspath(path)
    return p[len(root):] if p.startswith(root) else p


def plan_gc(
    layout: Layout, *, force: bool = False, progress: Progress | None = None
) -> GcPlan:
    """Work out what gc would remove, and why, without changing anything.

    Raises the class of the first problem (NotFoundError, IntegrityError, InvalidInputError,
    UnsafeInputError...) when a reachable manifest or index cannot be read, unless ``force``.
    Hold ``layout.exclusive()`` around this and :func:`apply_gc` (as :func:`gc_layout` does),
    or the plan may be stale when applied.
    """
    prog = progress or NULL_PROGRESS
    # blobs/ and blobs/<alg>/ opened once for every read and stat of the run: one system call
    # per blob instead of three opens, and no symlink swapped in meanwhile is followed
    with layout.pinned() as dirs:
        return _plan(layout, dirs, force, prog)


def _plan(layout: Layout, dirs: BlobDirs, force: bool, prog: Progress) -> GcPlan:
    marker = _Marker(layout, prog)
    pending = marker.mark(list(layout.read_index().manifests), follow_subject=True)
    if marker.errors and not force:
        raise _refuse(marker.errors)

    # Only what the mark did not reach is looked at further (lstat once: the size decides
    # whether to sniff it, the mode and inode go into the plan); kept blobs cost no syscall.
    kept_files = 0
    unreached: list[tuple[BlobEntry, os.stat_result | None]] = []
    for e in dirs.scan():
        if e.digest is not None and e.digest in marker.kept:
            kept_files += 1
        else:
            unreached.append((e, None if e.digest is None else dirs.lstat(e)))
    # referrers: unreached blobs that may be documents, indexed by their subject
    by_subject: dict[Digest, list[Descriptor]] = {}
    unreadable: dict[Digest, LayoutToolError] = {}
    for e, st in unreached:
        if e.digest is not None and st is not None:
            try:
                found = sniff_referrer(dirs, e, st)
            except LayoutToolError as exc:
                if not force:
                    raise type(exc)(
                        f"gc stopped, nothing was deleted: cannot read unreferenced blob "
                        f"{e.digest} to tell whether it is a referrer: {exc}. Fix its "
                        "permissions, or rerun with --force to keep it"
                    ) from exc
                unreadable[e.digest] = exc
                continue
            if found is not None:
                by_subject.setdefault(found.subject, []).append(found.descriptor)
    referrers: list[Digest] = []
    while True:
        # referrers of anything kept so far, plus subjects a referrer walk met but did not read
        found_now = [d for s in list(by_subject) if s in marker.kept for d in by_subject.pop(s)
                     if d.digest not in marker.kept]
        referrers += [d.digest for d in found_now]
        # a pending subject is walked as a subject: absent, it is a warning, not a refusal
        roots: list[Descriptor | Node] = [*found_now,
                                          *(Node(d, "subject", None) for d in pending)]
        if not roots:
            break
        # follow_subject=False: the subject of a referrer is already kept and read; other
        # subjects come back in `pending` and are walked in the next round, so nothing is
        # walked twice however many referrers a large index has
        pending = marker.mark(roots, follow_subject=False)
        if marker.errors and not force:
            raise _refuse(marker.errors)
    marker.done()

    root = str(layout.root)
    removals: list[Removal] = []
    skipped: list[Skipped] = [
        Skipped(SKIP_UNWALKED, digest=str(f.digest), where=f.where, error=f.message)
        for f in marker.errors
    ]
    for e, st in unreached:
        if e.digest is not None and e.digest in marker.kept:  # a referrer, or its blobs
            kept_files += 1
            continue
        rel = e.rel
        if e.digest is None:
            skipped.append(Skipped(SKIP_BAD_NAME, path=rel))
        elif e.digest in unreadable:
            skipped.append(Skipped("unreadable, so kept (--force)", path=rel,
                                   digest=str(e.digest), error=str(unreadable[e.digest])))
        elif st is None or not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
            skipped.append(Skipped(SKIP_NOT_FILE, path=rel))
        else:
            reason = REASON_LINK if stat.S_ISLNK(st.st_mode) else REASON_UNREFERENCED
            removals.append(Removal(root, rel, e.digest, st.st_size, reason,
                                    (st.st_dev, st.st_ino), e))
    for path in layout.tmp_files():
        rel = _rel(layout, path)
        removal = _removal(root, path, rel, None, REASON_TEMP)
        if removal is None:
            skipped.append(Skipped(SKIP_NOT_FILE, path=rel))
        else:
            removals.append(removal)
    return GcPlan(
        layout=str(layout.root),
        removals=tuple(removals),
        kept=frozenset(marker.kept),
        kept_files=kept_files,
        referrers=tuple(sorted(set(referrers))),
        skipped=tuple(skipped),
        warnings=tuple(marker.warnings.values()),
    )


def _removal(
    root: str, path: Path, rel: str, digest: Digest | None, reason: str
) -> Removal | None:
    """A Removal for a regular file or symlink at ``path``; None for anything else."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError:
        return None
    if stat.S_ISLNK(st.st_mode):
        reason = REASON_LINK if digest is not None else reason
    elif not stat.S_ISREG(st.st_mode):
        return None
    return Removal(root, rel, digest, st.st_size, reason, (st.st_dev, st.st_ino))


def apply_gc(
    layout: Layout, plan: GcPlan, *, progress: Progress | None = None
) -> tuple[Removal, ...]:
    """Delete exactly the files of ``plan``; return those removed.

    A file already gone, or replaced since the plan was made (another inode), is left alone
    and not reported. Symlinks are removed as links.
    """
    prog = progress or NULL_PROGRESS
    task = prog.task("gc: removing", plan.bytes)
    removals = plan.removals
    removed = [False] * len(removals)
    errors: list[BaseException] = []
    stop = threading.Event()

    def work(dirs: BlobDirs, start: int, step: int, end: int = len(removals)) -> None:
        try:
            for i in range(start, end, step):
                if stop.is_set():  # another worker failed, or we were interrupted
                    return
                r = removals[i]
                removed[i] = _remove(layout, dirs, r)
                if removed[i]:
                    task.advance(r.size)
        except BaseException as exc:
            errors.append(exc)
            stop.set()

    with layout.pinned() as dirs:
        probe = min(_PROBE, len(removals))
        t0 = time.perf_counter()
        work(dirs, 0, 1, probe)
        slow = (time.perf_counter() - t0) > _SLOW_S * probe
        if errors or len(removals) < _PARALLEL_MIN or not slow:
            work(dirs, probe, 1)
        else:
            # the order of removal does not matter: every file planned is unreferenced
            workers = [threading.Thread(target=work, args=(dirs, probe + i, _THREADS),
                                        daemon=True) for i in range(_THREADS)]
            try:
                for t in workers:
                    t.start()
                for t in workers:
                    t.join()
            finally:
                # (Ctrl-C lands here, in the main thread) the directory descriptors close when
                # this block ends: no worker may still hold one, or a reused descriptor number
                # could point its next unlink at another directory
                stop.set()
                for t in workers:
                    while t.is_alive():
                        try:
                            t.join()
                        except KeyboardInterrupt:
                            # a second Ctrl-C must not leave this block early: the workers
                            # stop after at most one unlink each, then the first one propagates
                            continue
    task.done()
    if errors:
        raise errors[0]
    # in plan order whatever thread removed what, so a dry run lists what the real run removes
    return tuple(r for r, ok in zip(removals, removed, strict=True) if ok)


def _remove(layout: Layout, dirs: BlobDirs, r: Removal) -> bool:
    """Remove one planned file unless it is gone or was replaced since the plan."""
    if r.entry is not None:
        # lstat, compare (dev, ino), unlink: relative to the directory listed
        return dirs.remove(r.entry, r.ident)
    try:
        st = os.lstat(r.path)
    except FileNotFoundError:
        return False
    except OSError:
        st = None
    if st is not None and (st.st_dev, st.st_ino) != r.ident:
        return False
    layout.delete_blob(r.path)
    return True


def gc_layout(
    path: str | os.PathLike[str],
    *,
    dry_run: bool = False,
    force: bool = False,
    progress: Progress | None = None,
) -> GcResult:
    """Garbage-collect the layout at ``path``.

    Takes the layout's exclusive lock (waiting for running imports, converts, tags... to
    finish), plans, and unless ``dry_run`` deletes exactly the plan before releasing the lock.
    A dry run takes the lock too, so that what it lists is what a real run would remove.
    Tools other than layouttool (skopeo, umoci) do not take this lock: do not run them on the
    layout while gc runs. See :func:`plan_gc` for what is kept and what ``force`` does.
    """
    prog = progress or NULL_PROGRESS
    layout = Layout.open(path)
    lock = contextlib.ExitStack()
    try:
        lock.enter_context(layout.exclusive(wait=False))
    except ConflictError:
        prog.note(f"gc: waiting for other layouttool processes writing to {path} to finish")
        lock.enter_context(layout.exclusive(wait=True))
    with lock:
        plan = plan_gc(layout, force=force, progress=prog)
        removed = plan.removals if dry_run else apply_gc(layout, plan, progress=prog)
    return GcResult(str(path), dry_run, removed, plan.kept_files, plan.referrers, plan.skipped,
                    plan.warnings)
