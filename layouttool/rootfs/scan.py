"""Compare a root filesystem with its unpack record, and write the difference as one layer.

:func:`scan` walks the tree and the record side by side (both depth first, names sorted by
bytes, so one merge pass pairs them up) and decides, path by path:

* in the record only: deleted, one whiteout (a deleted directory gets one whiteout and
  nothing for what it held);
* in the tree only: added;
* in both, another type: modified (the new entry replaces the old, directory or not; a
  directory that became a file takes its old contents with it);
* in both, same inode and same ctime: unchanged, with no further system call (nothing can
  change a file's content, mode, owner, times or xattrs without moving its ctime);
* otherwise stat decides: a different mode, owner (not in a rootless unpack, where the disk
  cannot hold the image's owners), mtime, size, link target, device or xattrs is a change;
  a regular file whose stat says nothing changed but whose ctime or inode did (``chmod``
  and back, ``touch -r``, a copy with ``cp -p``) is *uncertain*: only its content can tell,
  and the caller hashes it against the original bytes (:attr:`Plan.uncertain`).

Directories that were emptied and refilled are written as one opaque marker plus their whole
content when that is smaller than a whiteout per deleted child (each 512 bytes) plus what
the layer would carry anyway: the choice is made bottom-up, per directory, on the byte
counts the record gives. Files that share an inode are written together: when one of them
is in the layer, all of them are (a hardlink to a lower layer's file could not keep them one
inode, since an unpacker replaces what it writes).

:func:`layer_entries` then reads the paths the plan names, in tar order, through directory
descriptors opened with ``O_NOFOLLOW`` (the tree came from an image: its symlinks are never
followed), and yields the entries for :class:`~layouttool.rootfs.write.TarStream`.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from layouttool import errors
from layouttool.rootfs.names import join
from layouttool.rootfs.record import RecordEntry
from layouttool.rootfs.write import (
    BLOCK,
    OwnerFn,
    TarEntry,
    disk_entry,
    opaque_entry,
    read_xattrs,
    sorted_names,
    walk_below,
    whiteout_entry,
)

__all__ = ["Action", "Plan", "hash_file", "layer_entries", "scan"]

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_CHUNK = 1 << 20

Key = tuple[bytes, ...]
Kind = Literal["entry", "whiteout", "opaque"]


@dataclass(frozen=True, slots=True)
class Action:
    """One thing the layer holds: a path's ``entry``, a ``whiteout`` of ``name`` in the
    directory ``path``, or an ``opaque`` directory (the marker and all it holds)."""

    key: Key
    kind: Kind
    path: str
    name: str = ""


def _key(rel: str) -> Key:
    return tuple(os.fsencode(rel).split(b"/")) if rel else ()


def _entry_action(rel: str) -> Action:
    return Action(_key(rel), "entry", rel)


def _cost(size: int, mode: int) -> int:
    """Bytes of tar an unchanged path would cost if it had to be written again."""
    return BLOCK + (-(-size // BLOCK) * BLOCK if stat.S_ISREG(mode) else 0)


@dataclass(slots=True)
class _Frame:
    """A directory present in both the record and the tree, while its children are merged."""

    key: Key
    path: str
    whiteouts: int = 0
    #: cost of the best plan of the child directories (their whiteouts or opaque markers)
    child_best: int = 0
    #: cost of re-writing everything unchanged below
    unchanged: int = 0


@dataclass(slots=True)
class Plan:
    """What :func:`scan` found."""

    actions: list[Action] = field(default_factory=list)
    #: regular files only their content can judge: (path, its record entry)
    uncertain: list[tuple[str, RecordEntry]] = field(default_factory=list)
    #: directories to write opaque (chosen when that is smaller)
    opaque: set[str] = field(default_factory=set)
    #: the tree's files with more than one link: inode -> paths
    inodes: dict[tuple[int, int], list[str]] = field(default_factory=dict)
    #: rootless: the image's owners of the record's paths not owned by 0:0
    owners: dict[str, tuple[int, int]] = field(default_factory=dict)
    added: int = 0
    modified: int = 0
    deleted: int = 0

    def finish(self, changed: set[str]) -> list[Action]:
        """The sorted actions once the uncertain files are judged (``changed`` are the ones
        whose content differs): opaque directories replace what they hold, and every file of
        an inode with one file in the layer joins it."""
        acts = {a.key: a for a in self.actions}
        for path in sorted(changed):
            acts.setdefault(_key(path), _entry_action(path))
            self.modified += 1
        tops = sorted((_key(d), d) for d in self.opaque)
        chosen: list[Key] = []
        for key, d in tops:
            if not any(key[:len(c)] == c for c in chosen):
                chosen.append(key)
                acts = {k: a for k, a in acts.items()
                        if not (len(k) > len(key) and k[:len(key)] == key)}
                acts[(*key, b"")] = Action((*key, b""), "opaque", d)
        self.opaque = {os.fsdecode(b"/".join(k)) for k in chosen}

        def covered(path: str) -> bool:
            k = _key(path)
            return k in acts or any(k[:len(c)] == c and len(k) > len(c) for c in chosen)

        for paths in self.inodes.values():
            if any(covered(p) for p in paths):
                for p in paths:
                    if not covered(p):
                        acts[_key(p)] = _entry_action(p)
        return [acts[k] for k in sorted(acts)]


@dataclass(slots=True)
class _Cur:
    key: Key
    rel: str
    st: os.stat_result
    dir_fd: int
    name: str


def _walk(dir_fd: int, rel: str, key: Key) -> Iterator[_Cur]:
    for name in sorted_names(dir_fd):
        path = join(rel, name)
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except FileNotFoundError:
            continue
        ck = (*key, os.fsencode(name))
        yield _Cur(ck, path, st, dir_fd, name)
        if stat.S_ISDIR(st.st_mode):
            sub = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
            try:
                yield from _walk(sub, path, ck)
            finally:
                os.close(sub)


def scan(
    rootfs: Path,
    record: Iterator[RecordEntry],
    *,
    rootless: bool,
    same_fs: bool,
) -> Plan:
    """Compare ``rootfs`` with ``record`` (see the module docstring). ``same_fs`` False (the
    tree was moved to another filesystem) turns the inode/ctime shortcut off."""
    plan = Plan()
    top = os.open(rootfs, _DIR_FLAGS)
    try:
        _merge(plan, top, record, rootless=rootless, same_fs=same_fs)
    finally:
        os.close(top)
    return plan


def _merge(plan: Plan, top: int, record: Iterator[RecordEntry], *, rootless: bool,
           same_fs: bool) -> None:
    rec_iter = iter(record)
    root_rec = next(rec_iter, None)
    if root_rec is None or root_rec.path != b"":
        raise errors.InvalidInputError("unpack record: it does not start with the root")
    frames: list[_Frame] = [_Frame((), "")]
    root_cur = _Cur((), "", os.fstat(top), top, ".")
    _compare(plan, frames, root_rec, root_cur, rootless=rootless, same_fs=same_fs,
             push=False)
    r = next(rec_iter, None)
    cur = _walk(top, "", ())
    c = next(cur, None)

    def skip_below(key: Key) -> RecordEntry | None:
        nxt = next(rec_iter, None)
        while nxt is not None and nxt.key[:len(key)] == key and len(nxt.key) > len(key):
            nxt = next(rec_iter, None)
        return nxt

    while r is not None or c is not None:
        rk = r.key if r is not None else None
        ck = c.key if c is not None else None
        here = ck if rk is None or (ck is not None and ck < rk) else rk
        assert here is not None
        _pop(plan, frames, here)
        if ck is None or (rk is not None and rk < ck):
            assert r is not None and rk is not None
            # only in the record: deleted (one whiteout, nothing for what it held)
            parent = os.fsdecode(b"/".join(rk[:-1]))
            plan.actions.append(Action((*rk[:-1], b"", rk[-1]), "whiteout", parent,
                                       os.fsdecode(rk[-1])))
            plan.deleted += 1
            frames[-1].whiteouts += 1
            r = skip_below(rk) if stat.S_ISDIR(r.mode) else next(rec_iter, None)
            continue
        assert c is not None
        if rk is None or ck < rk:
            # only in the tree: added
            plan.actions.append(_entry_action(c.rel))
            plan.added += 1
            _note_inode(plan, c)
            c = next(cur, None)
            continue
        assert r is not None
        if rootless and (r.uid, r.gid) != (0, 0):
            plan.owners[c.rel] = (r.uid, r.gid)
        dir_gone = stat.S_ISDIR(r.mode) and not stat.S_ISDIR(c.st.st_mode)
        _compare(plan, frames, r, c, rootless=rootless, same_fs=same_fs, push=True)
        _note_inode(plan, c)
        r = skip_below(r.key) if dir_gone else next(rec_iter, None)
        c = next(cur, None)
    _pop(plan, frames, None)


def _note_inode(plan: Plan, c: _Cur) -> None:
    if c.st.st_nlink > 1 and not stat.S_ISDIR(c.st.st_mode):
        plan.inodes.setdefault((c.st.st_dev, c.st.st_ino), []).append(c.rel)


def _pop(plan: Plan, frames: list[_Frame], key: Key | None) -> None:
    """Close the directory frames that ``key`` is not below (all of them for None)."""
    while len(frames) > (0 if key is None else 1):
        f = frames[-1]
        if key is not None and len(key) > len(f.key) and key[:len(f.key)] == f.key:
            return
        frames.pop()
        explicit = f.whiteouts * BLOCK + f.child_best
        opaque = BLOCK + f.unchanged
        if opaque < explicit:
            plan.opaque.add(f.path)
        if frames:
            frames[-1].child_best += min(explicit, opaque)
            frames[-1].unchanged += f.unchanged


def _compare(plan: Plan, frames: list[_Frame], r: RecordEntry, c: _Cur, *, rootless: bool,
             same_fs: bool, push: bool) -> None:
    st = c.st
    both_dirs = stat.S_ISDIR(r.mode) and stat.S_ISDIR(st.st_mode)
    if stat.S_IFMT(r.mode) != stat.S_IFMT(st.st_mode):
        changed, uncertain = True, False
    elif same_fs and st.st_ino == r.ino and st.st_ctime_ns == r.ctime_ns:
        changed, uncertain = False, False
    else:
        changed = (
            stat.S_IMODE(st.st_mode) != stat.S_IMODE(r.mode)
            or st.st_mtime_ns != r.mtime_ns
            or (not rootless and (st.st_uid, st.st_gid) != (r.uid, r.gid))
        )
        if not changed and stat.S_ISREG(st.st_mode):
            changed = st.st_size != r.size
        elif not changed and stat.S_ISLNK(st.st_mode):
            changed = os.fsencode(os.readlink(c.name, dir_fd=c.dir_fd)) != r.link
        elif not changed and (stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)):
            changed = st.st_rdev != r.rdev
        if not changed and not stat.S_ISLNK(st.st_mode):
            changed = read_xattrs(f"/proc/self/fd/{c.dir_fd}/{c.name}") != r.xattrs
        uncertain = not changed and stat.S_ISREG(st.st_mode)
    if changed:
        plan.actions.append(_entry_action(c.rel))
        plan.modified += 1
    elif uncertain:
        plan.uncertain.append((c.rel, r))
        frames[-1].unchanged += _cost(r.size, r.mode)
    elif push:
        frames[-1].unchanged += _cost(r.size, r.mode)
    if both_dirs and push:
        frames.append(_Frame(_key(c.rel), c.rel))


def _open_parent(top: int, parts: list[str]) -> int:
    """An owned descriptor of the directory ``parts`` under ``top`` (no symlink followed)."""
    fd = os.dup(top)
    try:
        for comp in parts:
            nfd = os.open(comp, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = nfd
    except BaseException:
        os.close(fd)
        raise
    return fd


def hash_file(rootfs: Path, rel: str) -> bytes:
    """sha256 of the regular file ``rel`` under ``rootfs`` (opened with no symlink followed)."""
    top = os.open(rootfs, _DIR_FLAGS)
    try:
        parts = rel.split("/")
        pfd = _open_parent(top, parts[:-1])
        try:
            fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                         dir_fd=pfd)
        finally:
            os.close(pfd)
    finally:
        os.close(top)
    h = hashlib.sha256()
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise errors.ConflictError(f"{rel}: no longer a regular file")
        while data := os.read(fd, _CHUNK):
            h.update(data)
    finally:
        os.close(fd)
    return h.digest()


class _Dirs:
    """The open directories on the path to the current action (actions come in tar order)."""

    def __init__(self, top: int) -> None:
        self.top = top
        self.stack: list[tuple[str, int]] = []

    def get(self, parts: list[str]) -> int:
        common = 0
        while (common < len(self.stack) and common < len(parts)
               and self.stack[common][0] == parts[common]):
            common += 1
        while len(self.stack) > common:
            os.close(self.stack.pop()[1])
        fd = self.stack[-1][1] if self.stack else self.top
        for comp in parts[common:]:
            fd = os.open(comp, _DIR_FLAGS, dir_fd=fd)
            self.stack.append((comp, fd))
        return fd

    def close(self) -> None:
        while self.stack:
            os.close(self.stack.pop()[1])


def layer_entries(
    rootfs: Path,
    actions: list[Action],
    *,
    owner: OwnerFn,
    clamp: int | None,
    warn: Callable[[str], None],
) -> Iterator[TarEntry]:
    """The layer's entries for ``actions`` (from :meth:`Plan.finish`), read from the tree.

    A path that vanished or changed type since the scan raises
    :class:`~layouttool.errors.ConflictError` (the tree is being changed under us).
    """
    top = os.open(rootfs, _DIR_FLAGS)
    dirs = _Dirs(top)
    try:
        for a in actions:
            parts = a.path.split("/") if a.path else []
            try:
                if a.kind == "whiteout":
                    pfd = dirs.get(parts)
                    yield whiteout_entry(a.path, a.name, _mtime(pfd, clamp))
                    continue
                if not parts:
                    pfd, name = top, "."
                else:
                    pfd, name = dirs.get(parts[:-1]), parts[-1]
                st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
            except FileNotFoundError as exc:
                raise errors.ConflictError(
                    f"{a.path or '.'}: removed while the layer was written"
                ) from exc
            if a.kind == "opaque":
                dfd = dirs.get(parts)
                yield opaque_entry(a.path, _mtime(dfd, clamp))
                yield from walk_below(dfd, a.path, owner=owner, clamp=clamp, warn=warn)
                continue
            e = disk_entry(pfd, name, st, a.path or ".", tar_name=a.path or ".",
                           owner=owner(a.path, st), clamp=clamp, warn=warn)
            if e is not None:
                yield e
    finally:
        dirs.close()
        os.close(top)


def _mtime(dir_fd: int, clamp: int | None) -> int:
    sec = os.fstat(dir_fd).st_mtime_ns // 1_000_000_000
    return sec if clamp is None else min(sec, clamp)
