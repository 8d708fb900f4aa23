"""Apply one uncompressed layer tar stream to a directory, exactly and safely.

This is the filesystem half of ``layouttool unpack``: the caller opens, decompresses and hashes
the layer blob and hands us a non-seekable byte stream; we read it once with
``tarfile.open(mode="r|")`` and mutate ``root`` entry by entry. We never call
``extractall``/``extract`` (CVE-2007-4559 and the PEP 706 filter bypasses of 2024/2025): every
entry is written by hand through directory file descriptors.

Safety model (our "securejoin")
    Every path is resolved one component at a time from a directory fd of ``root`` with
    ``O_PATH | O_DIRECTORY | O_NOFOLLOW``. A symlink met *in the middle* of a path is followed
    by reading it and resolving its target the same way, with chroot semantics: an absolute
    target restarts at ``root`` and ``..`` never climbs above ``root`` (as umoci's securejoin
    and containerd's ``fs.RootPath`` do, so ``lib -> /usr/lib`` works as it will inside the
    container). At most :attr:`ApplyOptions.max_symlink_hops` symlinks are followed per path,
    then :class:`~layouttool.errors.UnsafeInputError`. The *final* component of an entry is
    never followed: it is removed and recreated, and every metadata call on it is made relative
    to its opened parent fd with no-follow flags. Nothing is done through a path string that was
    resolved earlier, so no entry, link target, whiteout or hardlink can reach outside ``root``.

Decisions where the specs are silent (each is covered by a test):

* **Entry names that escape are refused, not confined.** A leading ``/`` is stripped and the
  name is normalised lexically (``a/../b`` is ``b``); a name that still starts with ``..``
  (``../x``, ``/../x``) raises :class:`~layouttool.errors.UnsafeInputError`, and so does a
  hardlink *target* that does. No legitimate layer contains such a name (moby refuses too; umoci
  clamps). Symlink *targets* met while resolving are different: they mean what they will mean
  inside the container, so their ``..`` is clamped at ``root``.
* **The root itself is never replaced.** A ``.``/``./``/``/`` directory entry only changes the
  root's attributes; any other type named ``.`` (a symlink, CVE-2021-29136) is refused with
  :class:`~layouttool.errors.UnsafeInputError`.
* **Duplicate entries in one layer: the later one wins** (a directory over a directory merges
  attributes, anything else replaces). The spec says a layer MUST NOT have duplicates; real
  generators occasionally emit them, so we do not crash.
* **Non-directory parents are replaced by a directory** (umoci 0.5, umoci issue #546), whether
  the non-directory came from a lower layer or from this one: the later entry wins, as for
  duplicates. A *symlink* parent is followed inside ``root`` instead (containerd); a dangling
  one gets its missing target directories created inside ``root``.
* **Whiteouts** follow umoci's ``upperPaths`` rule: a whiteout only removes what lower layers
  left; what this layer wrote survives (also below an opaque marker, wherever the marker sits).
  A whiteout of a directory that this layer already wrote *into* removes only the lower part of
  that directory. Whiteouts resolve their directory like any entry (through in-root symlinks)
  but never create anything. Bare ``.wh.``, ``.wh..`` and ``.wh...`` are
  :class:`~layouttool.errors.InvalidInputError`, so is a ``.wh.`` name used as a *directory*
  component (containerd would create ``.wh.etc/``; a rootfs can never hold such a name). Other
  ``.wh..wh.*`` names are AUFS metadata: skipped with a warning, like Docker.
* **Directory mtimes are exact after each layer.** They are set at the end of
  :func:`apply_layer` (after all content), and a directory this layer changed without carrying
  an entry for it (a whiteout deleted a child, a file was added) gets its previous mtime back,
  so the result does not depend on whether later layers are applied. No ``finish_rootfs`` step is
  needed.
* **Unprivileged or rootless** (``rootless=True``, or not running as root): no chown; char and
  block devices are skipped with a warning (a lower entry at that path is still removed, since
  the layer replaces it); FIFOs are still created (``mkfifo`` needs no privilege);
  ``security.capability`` is dropped with a warning; directories whose mode would lock us out
  (``0o500``, ``0o000``) are kept ``u+rwx`` while the layer is applied and get their real mode
  at the end, like ``umoci --rootless``.
* **Xattrs**: ``SCHILY.xattr.user.*`` and ``security.capability`` are restored (EPERM, EACCES
  and ENOTSUP become warnings); ``trusted.*`` (incl. ``trusted.overlay.*``, which would alter
  overlayfs on the host) and every other namespace are dropped with a warning. Symlinks get no
  xattrs.
* Hardlink entries never change the metadata of the inode they link to (GNU tar's rule), so a
  hardlink to a symlink can never be used to chmod through it (containerd's
  ``HardlinkSymlinkChmod``).

The tar stream is read by :mod:`layouttool.rootfs.tarread` (guarded headers, our own member
loop); names and whiteouts mean what :mod:`layouttool.rootfs.names` says.
"""

from __future__ import annotations

import errno
import functools
import os
import posixpath
import shutil
import stat
import tarfile
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from layouttool import errors
from layouttool.rootfs.names import (
    WHITEOUT_META_PREFIX,
    WHITEOUT_OPAQUE,
    WHITEOUT_PREFIX,
    XATTR_PREFIX,
    join,
    split_name,
)
from layouttool.rootfs.tarread import (
    CHUNK_SIZE,
    ViewReader,
    corrupt,
    iter_members,
    open_stream,
    time_ns,
)

__all__ = ["ApplyOptions", "ApplyStats", "EntryHook", "apply_layer"]

#: called after each entry is written: (its canonical path under root, ``""`` for the root
#: itself; the member, None for a missing parent made; for a hardlink, the canonical path of
#: the file it links to)
EntryHook = Callable[[str, "tarfile.TarInfo | None", "str | None"], None]

_DIR_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_CACHE_MAX = 128
_MAX_WARNINGS = 100
# errnos that mean "this filesystem or this user cannot hold that xattr"
_XATTR_SOFT_ERRNOS = frozenset({errno.EPERM, errno.EACCES, errno.ENOTSUP, errno.EOPNOTSUPP})


@dataclass(frozen=True, slots=True)
class ApplyOptions:
    """How to apply a layer.

    ``rootless``: never chown, skip char/block devices with a warning, keep directories
    writable while unpacking (see the module docstring). Running as a non-root user implies it.
    ``xattrs``: restore the permitted ``SCHILY.xattr.*`` records (``user.*``,
    ``security.capability``); with ``False`` every xattr is ignored silently.
    ``max_symlink_hops``: symlinks followed while resolving one path before giving up.
    ``skip_names``: entries at the root with these names are left out (an eStargz layer's TOC
    and landmark files, as containers/storage leaves them out).
    """

    rootless: bool = False
    xattrs: bool = True
    max_symlink_hops: int = 255
    skip_names: frozenset[str] = frozenset()


@dataclass(slots=True)
class ApplyStats:
    """What :func:`apply_layer` did.

    ``entries`` counts tar members handled (whiteouts and skipped members included),
    ``bytes_written`` the file payload bytes written, ``whiteouts`` the whiteout and opaque
    markers seen, ``skipped`` the members not reproduced (devices when unprivileged, unknown
    types, AUFS metadata). ``warnings`` holds human-readable notes (at most about 100, then a
    count of the rest).
    """

    entries: int = 0
    bytes_written: int = 0
    warnings: list[str] = field(default_factory=list)
    whiteouts: int = 0
    skipped: int = 0


def apply_layer(
    stream: typing.BinaryIO,
    root: Path,
    options: ApplyOptions = ApplyOptions(),
    *,
    progress: Callable[[int], None] | None = None,
    on_entry: EntryHook | None = None,
) -> ApplyStats:
    """Apply one uncompressed tar stream (non-seekable; read with tarfile mode ``'r|'``) to root.

    ``root`` must be an existing directory (it may already hold lower layers). The stream is
    only read forward and is left positioned somewhere after the end-of-archive marker; the
    caller drains and hashes the rest. ``progress``, when given, is called with the number of
    payload bytes written since its last call; ``on_entry`` after each entry written (not for
    whiteouts or skipped members), and with no member for each missing parent directory made
    (what was at that path before is gone), which is how ``unpack`` records what it wrote.

    Raises :class:`~layouttool.errors.CorruptStreamError` for unreadable tar data,
    :class:`~layouttool.errors.UnsafeInputError` for entries that would escape ``root`` or loop,
    :class:`~layouttool.errors.InvalidInputError` for malformed whiteouts and links, and the
    translation of :class:`OSError` by :func:`layouttool.errors.from_oserror` (exit 74) naming
    the path relative to ``root``. On error, ``root`` is left partially applied.
    """
    applier = _Applier(root, options, progress)
    applier.on_entry = on_entry
    try:
        applier.run(stream)
        applier.finish()
    finally:
        applier.close()
    return applier.stats


def _utime_dir(times: tuple[int, int], pfd: int, name: str) -> None:
    os.utime(name, ns=times, dir_fd=pfd, follow_symlinks=False)


class _Applier:
    """State of one :func:`apply_layer` call (umoci's ``TarExtractor``)."""

    def __init__(
        self, root: Path, options: ApplyOptions, progress: Callable[[int], None] | None
    ) -> None:
        self.options = options
        self.progress = progress
        self.stats = ApplyStats()
        self.on_entry: EntryHook | None = None
        #: for the hook: the canonical path a hardlink entry linked to
        self._link_src: str | None = None
        self.privileged = os.geteuid() == 0 and not options.rootless
        self._warn_counts = 0
        self._member = "<none>"
        self._path = ""
        #: lexical parent path -> (O_PATH dir fd, canonical path); valid within the layer
        #: until a directory or symlink is removed or replaced (then cleared). Creating a
        #: symlink where nothing was cannot change a cached resolution: every cached path went
        #: through directories that existed, and replacing one of them clears the cache.
        self._cache: dict[str, tuple[int, str]] = {}
        #: fds dropped from the cache while an entry may still use them; closed after it
        self._doomed: list[int] = []
        #: canonical paths written by this layer's entries (umoci's upperPaths)
        self._upper: set[str] = set()
        #: canonical directories with something in _upper below them
        self._upper_anc: set[str] = set()
        #: directories this layer created, hence holding nothing from lower layers
        self._fresh: set[str] = set()
        #: directories already purged by an opaque marker in this layer
        self._opaqued: set[str] = set()
        #: canonical dir -> (atime_ns, mtime_ns) to set once all content is written
        self._dir_times: dict[str, tuple[int, int]] = {}
        #: canonical dir -> final mode, for directories kept u+rwx while unprivileged
        self._restore_modes: dict[str, int] = {}
        try:
            self.root_fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise errors.from_oserror(exc, "unpack: open rootfs", root) from exc
        if not self.privileged:
            self._ensure_writable(self.root_fd, "")

    # -- plumbing -------------------------------------------------------------------------

    def close(self) -> None:
        for fd, _ in self._cache.values():
            os.close(fd)
        self._cache.clear()
        for fd in self._doomed:
            os.close(fd)
        self._doomed.clear()
        os.close(self.root_fd)

    def warn(self, msg: str) -> None:
        self._warn_counts += 1
        if self._warn_counts <= _MAX_WARNINGS:
            self.stats.warnings.append(msg)

    def _invalidate(self) -> None:
        """Forget every cached resolution: a directory or symlink just went away."""
        for fd, _ in self._cache.values():
            self._doomed.append(fd)
        self._cache.clear()

    def _end_entry(self) -> None:
        for fd in self._doomed:
            os.close(fd)
        self._doomed.clear()
        while len(self._cache) > _CACHE_MAX:
            oldest = next(iter(self._cache))
            os.close(self._cache.pop(oldest)[0])

    def _touch(self, canon: str, dir_fd: int) -> None:
        """Remember a directory's times before this layer first changes its content."""
        if canon not in self._dir_times:
            st = os.fstat(dir_fd)
            self._dir_times[canon] = (st.st_atime_ns, st.st_mtime_ns)

    def _mark_upper(self, canon: str) -> None:
        self._upper.add(canon)
        parent = posixpath.dirname(canon)
        while parent not in self._upper_anc:
            self._upper_anc.add(parent)
            if not parent:
                break
            parent = posixpath.dirname(parent)

    def _ensure_writable(self, fd: int, canon: str) -> None:
        """Unprivileged: keep a directory u+rwx while we work in it, restore it at the end."""
        st = os.fstat(fd)
        if st.st_mode & 0o700 != 0o700 and st.st_uid == os.geteuid():
            self._restore_modes.setdefault(canon, stat.S_IMODE(st.st_mode))
            # through the fd's /proc link: the inode we opened, whatever its name is now
            os.chmod(f"/proc/self/fd/{fd}", stat.S_IMODE(st.st_mode) | 0o700)  # noqa: PTH101

    # -- path resolution ------------------------------------------------------------------

    def _resolve_dir(self, parts: list[str], *, create: bool) -> tuple[int, str] | None:
        """Open the directory named by ``parts`` under root; None if missing and not create.

        The returned fd belongs to the cache (or is ``root_fd``): do not close it.
        """
        if not parts:
            return self.root_fd, ""
        key = "/".join(parts)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        start_fd, start_canon, start = self.root_fd, "", 0
        for i in range(len(parts) - 1, 0, -1):
            prefix = self._cache.get("/".join(parts[:i]))
            if prefix is not None:
                start_fd, start_canon, start = prefix[0], prefix[1], i
                break
        found = self._walk(start_fd, start_canon, parts[start:], create=create)
        if found is None:
            return None
        self._cache[key] = found
        return found

    def _walk(
        self, fd: int, canon_s: str, comps: list[str], *, create: bool
    ) -> tuple[int, str] | None:
        """Resolve ``comps`` from directory ``fd`` (at canonical ``canon_s``), one at a time.

        Returns a new fd owned by the caller. Symlinks in the middle are followed inside root.
        A missing component is kept as a *virtual* name, so ``missing/..`` cancels out the way
        securejoin (and containerd's cleaned targets) treat it; what is still virtual at the
        end is created as directories when ``create``, else the result is None. An existing
        non-directory is replaced by a directory only when ``create``.
        """
        canon = canon_s.split("/") if canon_s else []
        pending = list(reversed(comps))
        virtual: list[str] = []
        hops = 0
        cur, owned = fd, False
        try:
            while pending:
                comp = pending.pop()
                if comp in ("", "."):
                    continue
                if comp == "..":
                    if virtual:
                        virtual.pop()
                    elif canon:
                        canon.pop()
                        nfd = self._open_strict(canon)
                        if owned:
                            os.close(cur)
                        cur, owned = nfd, True
                    continue
                if virtual:
                    virtual.append(comp)
                    continue
                try:
                    nfd = os.open(comp, _DIR_FLAGS, dir_fd=cur)
                except FileNotFoundError:
                    virtual.append(comp)
                    continue
                except OSError as exc:
                    if exc.errno not in (errno.ENOTDIR, errno.ELOOP):
                        raise
                    st = os.stat(comp, dir_fd=cur, follow_symlinks=False)
                    if stat.S_ISLNK(st.st_mode):
                        hops += 1
                        if hops > self.options.max_symlink_hops:
                            raise errors.UnsafeInputError(
                                f"layer tar: {self._member!r}: more than "
                                f"{self.options.max_symlink_hops} symlinks while resolving the "
                                "path (a loop?)"
                            ) from None
                        target = os.readlink(comp, dir_fd=cur)
                        if not target:
                            raise errors.InvalidInputError(
                                f"layer tar: {self._member!r}: path goes through the empty "
                                f"symlink {join('/'.join(canon), comp)!r}"
                            ) from None
                        if target.startswith("/"):
                            if owned:
                                os.close(cur)
                            cur, owned, canon = self.root_fd, False, []
                        pending.extend(reversed(target.split("/")))
                        continue
                    if not create:
                        return None
                    # A file where a directory must be: the later entry wins (umoci #546).
                    parent = "/".join(canon)
                    self._touch(parent, cur)
                    os.unlink(comp, dir_fd=cur)
                    nfd = self._mkdir_implicit(cur, canon, comp)
                cur, owned = self._descend(cur, owned, nfd, canon, comp)
            if virtual:
                if not create:
                    return None
                for comp in virtual:
                    nfd = self._mkdir_implicit(cur, canon, comp)
                    cur, owned = self._descend(cur, owned, nfd, canon, comp)
            if not owned:
                cur, owned = os.dup(cur), True
            return cur, "/".join(canon)
        except BaseException:
            if owned:
                os.close(cur)
            raise

    def _descend(self, cur: int, owned: bool, nfd: int, canon: list[str], comp: str
                 ) -> tuple[int, bool]:
        """Step from ``cur`` into its child ``nfd`` (named ``comp``); closes ``cur`` if owned."""
        canon.append(comp)
        if not self.privileged:
            try:
                self._ensure_writable(nfd, "/".join(canon))
            except BaseException:
                os.close(nfd)
                raise
        if owned:
            os.close(cur)
        return nfd, True

    def _mkdir_implicit(self, dir_fd: int, canon: list[str], comp: str) -> int:
        """Create a missing parent directory the way umoci and containerd do (0755)."""
        parent = "/".join(canon)
        self._touch(parent, dir_fd)
        os.mkdir(comp, 0o755, dir_fd=dir_fd)
        # explicit chmod: the result must not depend on the caller's umask
        self._chmod_at(dir_fd, comp, 0o755)
        self._fresh.add(join(parent, comp))
        if self.on_entry is not None:
            self.on_entry(join(parent, comp), None, None)
        return os.open(comp, _DIR_FLAGS, dir_fd=dir_fd)

    def _open_strict(self, canon: list[str]) -> int:
        """Reopen a canonical directory (no symlinks allowed on the way); owned fd."""
        cur = os.dup(self.root_fd)
        try:
            for comp in canon:
                nfd = os.open(comp, _DIR_FLAGS, dir_fd=cur)
                os.close(cur)
                cur = nfd
        except OSError as exc:
            os.close(cur)
            raise errors.UnsafeInputError(
                f"layer tar: {self._member!r}: directory {'/'.join(canon)!r} changed while "
                f"unpacking: {exc.strerror}"
            ) from exc
        return cur

    # -- the member loop ------------------------------------------------------------------

    def run(self, stream: typing.BinaryIO) -> None:
        with open_stream(stream) as tar:
            members = iter_members(tar, self.warn)
            while True:
                try:
                    member = next(members, None)
                except errors.LayoutToolError:
                    raise
                except (tarfile.TarError, EOFError, ValueError, OverflowError,
                        RecursionError) as exc:
                    raise corrupt(f"bad header after {self._member!r}", exc) from exc
                except OSError as exc:
                    raise errors.from_oserror(exc, "layer tar: read") from exc
                if member is None:
                    return
                self._member = member.name
                self._path = member.name
                self.stats.entries += 1
                try:
                    self._apply(tar, member)
                except errors.LayoutToolError:
                    raise
                except (tarfile.TarError, EOFError) as exc:
                    raise corrupt(f"{member.name!r}", exc) from exc
                except OSError as exc:
                    raise self._os_error(exc) from exc
                finally:
                    self._end_entry()

    def _os_error(self, exc: OSError) -> errors.LayoutToolError:
        where = self._path or "."
        action = f"layer tar: {self._member!r}: unpack"
        if exc.errno in (errno.ENAMETOOLONG, errno.ELOOP, errno.EINVAL, errno.ENOENT):
            # the layer asked for something the filesystem cannot hold: bad input, not I/O
            return errors.InvalidInputError(f"{action} {where}: {exc.strerror or exc}")
        err = errors.from_oserror(exc, action, where)
        if exc.errno == errno.EPERM and self.privileged:
            err = errors.IOFailure(f"{err} (maybe rootless=True will help?)")
        return err

    # -- one member -----------------------------------------------------------------------

    def _apply(self, tar: tarfile.TarFile, m: tarfile.TarInfo) -> None:
        if m.size < 0:
            raise corrupt(f"{m.name!r}: negative size")
        parts = split_name(m.name, m.name)
        for comp in parts[:-1]:
            if comp.startswith(WHITEOUT_PREFIX):
                raise errors.InvalidInputError(
                    f"layer tar: {m.name!r}: whiteout name {comp!r} used as a directory"
                )
        if len(parts) == 1 and parts[0] in self.options.skip_names:
            self.stats.skipped += 1
            return
        if parts and parts[-1].startswith(WHITEOUT_PREFIX):
            # whatever its tar type, a whiteout is only a path (smolvm #401)
            self._whiteout(parts)
            return
        if not parts:
            if not m.isdir():
                raise errors.UnsafeInputError(
                    f"layer tar: {m.name!r}: refusing to replace the root directory with a "
                    "non-directory"
                )
            self._path = "."
            self._set_dir_meta(self.root_fd, ".", "", m)
            if self.on_entry is not None:
                self.on_entry("", m, None)
            return
        self._link_src = None
        if m.isreg():
            self._regular(tar, m, parts)
        elif m.isdir():
            self._directory(m, parts)
        elif m.issym():
            self._symlink(m, parts)
        elif m.islnk():
            self._hardlink(m, parts)
        elif m.ischr() or m.isblk() or m.isfifo():
            self._special(m, parts)
        else:
            self.stats.skipped += 1
            self.warn(f"layer tar: {m.name!r}: unknown entry type {m.type!r} skipped")
            return
        if self.on_entry is not None:
            self.on_entry(self._path, m, self._link_src)

    def _entry_parent(self, parts: list[str]) -> tuple[int, str, str]:
        found = self._resolve_dir(parts[:-1], create=True)
        assert found is not None  # create=True never gives None
        pfd, pcanon = found
        name = parts[-1]
        self._path = join(pcanon, name)
        return pfd, pcanon, name

    def _clear_slot(self, pfd: int, pcanon: str, name: str, *, keep_dir: bool) -> bool:
        """Make room for a new entry; True when an existing directory is kept (dir over dir).

        Anything else is unlinked first, so a hardlink partner in a lower layer never sees the
        new content (image-spec: changesets, umoci).
        """
        try:
            st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        if stat.S_ISDIR(st.st_mode):
            if keep_dir:
                return True
            self._touch(pcanon, pfd)
            self._invalidate()
            self._rmtree(pfd, name)
            return False
        self._touch(pcanon, pfd)
        if stat.S_ISLNK(st.st_mode):
            self._invalidate()
        os.unlink(name, dir_fd=pfd)
        return False

    def _rmtree(self, pfd: int, name: str) -> None:
        # shutil.rmtree(dir_fd=...) walks with fds and never follows a symlink.
        # XXX: unprivileged, a lower directory without u+w inside the removed tree makes this
        # fail with EACCES (umoci chmods its way down); not handled yet.
        shutil.rmtree(name, dir_fd=pfd)

    def _regular(self, tar: tarfile.TarFile, m: tarfile.TarInfo, parts: list[str]) -> None:
        sparse = typing.cast("list[tuple[int, int]] | None", m.sparse)
        if sparse is not None:
            stored = tar.offset - m.offset_data
            total = 0
            for off, length in sparse:
                if off < 0 or length < 0 or off + length > m.size:
                    raise corrupt(f"{m.name!r}: sparse map entry ({off}, {length}) out of range")
                total += length
            if total > stored:
                raise corrupt(f"{m.name!r}: sparse map needs more data than the entry holds")
        pfd, pcanon, name = self._entry_parent(parts)
        self._clear_slot(pfd, pcanon, name, keep_dir=False)
        self._touch(pcanon, pfd)
        fd = os.open(
            name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
            dir_fd=pfd,
        )
        try:
            src = typing.cast(ViewReader, tar.fileobj)
            if sparse is None:
                self._copy(src, fd, 0, m.size, m)
            else:
                # Holes stay holes: write each data run at its offset, then set the size.
                for off, length in sparse:
                    self._copy(src, fd, off, length, m)
                os.ftruncate(fd, m.size)
            if self.privileged:
                os.fchown(fd, m.uid, m.gid)
            # after chown: chown clears setuid/setgid and security.capability
            os.fchmod(fd, m.mode & 0o7777)
            self._set_xattrs(fd, m)
            self._utime_fd(fd, m)
        finally:
            os.close(fd)
        self._mark_upper(self._path)

    def _copy(self, src: ViewReader, fd: int, offset: int, length: int, m: tarfile.TarInfo) -> None:
        remaining = length
        while remaining:
            # a view of the decompressed chunk, written without a copy (up to a chunk's end)
            view = src.read_view(min(remaining, CHUNK_SIZE))
            want = len(view)
            if not want:
                raise corrupt(f"{m.name!r}: unexpected end of data")
            done = 0
            while done < want:
                done += os.pwrite(fd, view[done:], offset + done)
            offset += want
            remaining -= want
            self.stats.bytes_written += want
            if self.progress is not None:
                self.progress(want)

    def _directory(self, m: tarfile.TarInfo, parts: list[str]) -> None:
        pfd, pcanon, name = self._entry_parent(parts)
        canon = self._path
        if not self._clear_slot(pfd, pcanon, name, keep_dir=True):
            self._touch(pcanon, pfd)
            os.mkdir(name, 0o700, dir_fd=pfd)
            self._fresh.add(canon)
        self._set_dir_meta(pfd, name, canon, m)
        self._mark_upper(canon)

    def _set_dir_meta(self, pfd: int, name: str, canon: str, m: tarfile.TarInfo) -> None:
        mode = m.mode & 0o7777
        if self.privileged:
            os.chown(name, m.uid, m.gid, dir_fd=pfd, follow_symlinks=False)
        self._restore_modes.pop(canon, None)
        if not self.privileged and mode & 0o700 != 0o700:
            self._restore_modes[canon] = mode
            mode |= 0o700
        self._chmod_at(pfd, name, mode)
        if self._wants_xattrs(m):
            dfd = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC,
                          dir_fd=pfd)
            try:
                self._set_xattrs(dfd, m)
            finally:
                os.close(dfd)
        ns = time_ns(m)
        self._dir_times[canon] = (ns, ns)

    def _symlink(self, m: tarfile.TarInfo, parts: list[str]) -> None:
        if not m.linkname:
            raise errors.InvalidInputError(f"layer tar: {m.name!r}: symlink with an empty target")
        pfd, pcanon, name = self._entry_parent(parts)
        self._clear_slot(pfd, pcanon, name, keep_dir=False)
        self._touch(pcanon, pfd)
        # the target is stored verbatim (absolute ones too); it is never followed here
        os.symlink(m.linkname, name, dir_fd=pfd)
        if self.privileged:
            os.chown(name, m.uid, m.gid, dir_fd=pfd, follow_symlinks=False)
        if self._wants_xattrs(m):
            self.warn(f"layer tar: {m.name!r}: xattrs on a symlink are not restored")
        self._utime_at(pfd, name, m)
        self._mark_upper(self._path)

    def _hardlink(self, m: tarfile.TarInfo, parts: list[str]) -> None:
        tparts = split_name(m.linkname, m.name, what="hardlink target")
        if not tparts:
            raise errors.InvalidInputError(f"layer tar: {m.name!r}: hardlink to the root")
        pfd, pcanon, name = self._entry_parent(parts)
        dest = self._path
        found = self._resolve_dir(tparts[:-1], create=False)
        missing = errors.InvalidInputError(
            f"layer tar: {m.name!r}: hardlink target {m.linkname!r} does not exist"
        )
        if found is None:
            raise missing
        tfd, tcanon = found
        tname = tparts[-1]
        self._link_src = join(tcanon, tname)
        try:
            st = os.stat(tname, dir_fd=tfd, follow_symlinks=False)
        except (FileNotFoundError, NotADirectoryError):
            raise missing from None
        if stat.S_ISDIR(st.st_mode):
            raise errors.InvalidInputError(
                f"layer tar: {m.name!r}: hardlink target {m.linkname!r} is a directory"
            )
        if join(tcanon, tname) == dest:
            self._mark_upper(dest)  # a link to itself: nothing to do
            return
        self._clear_slot(pfd, pcanon, name, keep_dir=False)
        self._touch(pcanon, pfd)
        try:
            # follow_symlinks=False: link the target itself, even when it is a symlink
            os.link(tname, name, src_dir_fd=tfd, dst_dir_fd=pfd, follow_symlinks=False)
        except FileNotFoundError:
            # replacing the destination removed the target (a link into its own old tree)
            raise missing from None
        self._mark_upper(dest)

    def _special(self, m: tarfile.TarInfo, parts: list[str]) -> None:
        if not m.isfifo() and not self.privileged:
            pfd, pcanon, name = self._entry_parent(parts)
            # the layer replaces whatever was there, even though we cannot make the device
            self._clear_slot(pfd, pcanon, name, keep_dir=False)
            self.stats.skipped += 1
            self.warn(f"layer tar: {m.name!r}: device node skipped (not running as root)")
            self._mark_upper(self._path)
            return
        pfd, pcanon, name = self._entry_parent(parts)
        self._clear_slot(pfd, pcanon, name, keep_dir=False)
        self._touch(pcanon, pfd)
        if m.isfifo():
            os.mkfifo(name, 0o600, dir_fd=pfd)
        else:
            kind = stat.S_IFCHR if m.ischr() else stat.S_IFBLK
            try:
                dev = os.makedev(m.devmajor, m.devminor)
            except (ValueError, OverflowError) as exc:
                raise errors.InvalidInputError(
                    f"layer tar: {m.name!r}: bad device number {m.devmajor}:{m.devminor}"
                ) from exc
            os.mknod(name, kind | 0o600, dev, dir_fd=pfd)
        if self.privileged:
            os.chown(name, m.uid, m.gid, dir_fd=pfd, follow_symlinks=False)
        self._chmod_at(pfd, name, m.mode & 0o7777)
        if self._wants_xattrs(m):
            pathfd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=pfd)
            try:
                self._set_xattrs(f"/proc/self/fd/{pathfd}", m)
            finally:
                os.close(pathfd)
        self._utime_at(pfd, name, m)
        self._mark_upper(self._path)

    # -- whiteouts ------------------------------------------------------------------------

    def _whiteout(self, parts: list[str]) -> None:
        self.stats.whiteouts += 1
        base = parts[-1]
        if base == WHITEOUT_OPAQUE:
            found = self._resolve_dir(parts[:-1], create=False)
            if found is not None:
                self._path = found[1] or "."
                self._purge_lower(found[0], found[1])
            return
        if base.startswith(WHITEOUT_META_PREFIX):
            self.stats.skipped += 1
            self.warn(f"layer tar: {self._member!r}: AUFS metadata skipped")
            return
        target = base[len(WHITEOUT_PREFIX):]
        if target in ("", ".", ".."):
            raise errors.InvalidInputError(
                f"layer tar: {self._member!r}: invalid whiteout name {base!r}"
            )
        found = self._resolve_dir(parts[:-1], create=False)
        if found is None:
            return  # nothing below to hide
        pfd, pcanon = found
        path = join(pcanon, target)
        self._path = path
        if path in self._upper:
            return  # written by this layer: only a later layer may hide it
        try:
            st = os.stat(target, dir_fd=pfd, follow_symlinks=False)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode) and path in self._upper_anc:
            # this layer already wrote into it: hide only the lower part
            dfd = os.open(target, _DIR_FLAGS, dir_fd=pfd)
            try:
                self._purge_lower(dfd, path)
            finally:
                os.close(dfd)
            return
        self._clear_slot(pfd, pcanon, target, keep_dir=False)

    def _purge_lower(self, dfd: int, canon: str) -> None:
        """Remove what lower layers left in a directory, keeping this layer's entries."""
        if canon in self._fresh or canon in self._opaqued:
            return
        self._opaqued.add(canon)
        lfd = os.open(".", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC, dir_fd=dfd)
        try:
            names = os.listdir(lfd)  # noqa: PTH208 - an fd, no path
        finally:
            os.close(lfd)
        for child in names:
            path = join(canon, child)
            if path in self._upper_anc:
                try:
                    cfd = os.open(child, _DIR_FLAGS, dir_fd=dfd)
                except OSError as exc:
                    if exc.errno not in (errno.ENOTDIR, errno.ELOOP):
                        raise
                else:
                    try:
                        self._purge_lower(cfd, path)
                    finally:
                        os.close(cfd)
                    continue
            if path in self._upper:
                continue
            self._clear_slot(dfd, canon, child, keep_dir=False)

    # -- metadata helpers -----------------------------------------------------------------

    def _chmod_at(self, pfd: int, name: str, mode: int) -> None:
        """chmod without following a symlink (glibc emulates AT_SYMLINK_NOFOLLOW via /proc)."""
        try:
            os.chmod(name, mode, dir_fd=pfd, follow_symlinks=False)
        except (ValueError, NotImplementedError):
            # Python refuses when the kernel/libc cannot chmod without following: the entry is
            # a symlink (never chmod those) or /proc is missing (fall back to an O_PATH fd).
            st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
            if stat.S_ISLNK(st.st_mode):
                return
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                         dir_fd=pfd)
            try:
                os.fchmod(fd, mode)
            finally:
                os.close(fd)

    def _utime_fd(self, fd: int, m: tarfile.TarInfo) -> None:
        ns = time_ns(m)
        try:
            os.utime(fd, ns=(ns, ns))
        except (OverflowError, ValueError):
            self.warn(f"layer tar: {m.name!r}: mtime out of range, not set")

    def _utime_at(self, pfd: int, name: str, m: tarfile.TarInfo) -> None:
        ns = time_ns(m)
        try:
            os.utime(name, ns=(ns, ns), dir_fd=pfd, follow_symlinks=False)
        except (OverflowError, ValueError):
            self.warn(f"layer tar: {m.name!r}: mtime out of range, not set")

    def _wants_xattrs(self, m: tarfile.TarInfo) -> bool:
        return self.options.xattrs and any(k.startswith(XATTR_PREFIX) for k in m.pax_headers)

    def _set_xattrs(self, target: int | str, m: tarfile.TarInfo) -> None:
        if not self.options.xattrs:
            return
        for key, value in m.pax_headers.items():
            if not key.startswith(XATTR_PREFIX):
                continue
            xname = key[len(XATTR_PREFIX):]
            if xname == "security.capability" and not self.privileged:
                self.warn(f"layer tar: {m.name!r}: xattr {xname} dropped (not root)")
                continue
            if not (xname.startswith("user.") or xname == "security.capability"):
                # trusted.overlay.* would reconfigure overlayfs on the host (umoci 0.5.0)
                self.warn(f"layer tar: {m.name!r}: xattr {xname} dropped")
                continue
            # tarfile decodes PAX values as UTF-8 with surrogateescape: undo it for binary
            raw = value.encode("utf-8", "surrogateescape")
            try:
                os.setxattr(target, xname, raw)
            except OSError as exc:
                if exc.errno not in _XATTR_SOFT_ERRNOS:
                    raise
                self.warn(f"layer tar: {m.name!r}: xattr {xname} not restored: {exc.strerror}")

    # -- end of layer ---------------------------------------------------------------------

    def finish(self) -> None:
        """Set directory times, then give rootless-opened directories their real modes."""
        self._member = "<end of layer>"
        self._invalidate()
        self._end_entry()
        try:
            for canon, times in sorted(self._dir_times.items()):
                self._path = canon or "."
                self._at_dir(canon, functools.partial(_utime_dir, times))
            # deepest first: a restored 0o000 parent would hide its children
            for canon, mode in sorted(self._restore_modes.items(),
                                      key=lambda kv: kv[0].count("/") + bool(kv[0]),
                                      reverse=True):
                self._path = canon or "."
                self._at_dir(canon, functools.partial(self._chmod_mode, mode))
        except OSError as exc:
            raise self._os_error(exc) from exc
        if self._warn_counts > _MAX_WARNINGS:
            self.stats.warnings.append(
                f"... and {self._warn_counts - _MAX_WARNINGS} more warnings not shown"
            )

    def _chmod_mode(self, mode: int, pfd: int, name: str) -> None:
        self._chmod_at(pfd, name, mode)

    def _at_dir(self, canon: str, action: Callable[[int, str], object]) -> None:
        """Run ``action(parent_fd, name)`` on a canonical directory if it is still one."""
        if not canon:
            action(self.root_fd, ".")
            return
        parts = canon.split("/")
        try:
            pfd = self._open_strict(parts[:-1])
        except errors.UnsafeInputError:
            return  # replaced or removed later in the layer: nothing to restore
        try:
            st = os.stat(parts[-1], dir_fd=pfd, follow_symlinks=False)
            if stat.S_ISDIR(st.st_mode):
                action(pfd, parts[-1])
        except FileNotFoundError:
            pass
        finally:
            os.close(pfd)
