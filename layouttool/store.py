"""The content-addressable store over one OCI image layout directory.

This module is the only writer of blobs and of ``index.json`` and the only reader of blobs:

* a blob enters through :class:`BlobWriter`: a temp file under ``<layout>/.layouttool/tmp``,
  hashed and counted while written, fsynced, renamed to ``blobs/<alg>/<hex>``, directory fsynced;
* a blob leaves through :class:`VerifiedReader`: opened with ``O_NOFOLLOW``, refused unless a
  regular file of the expected size, and its digest checked at EOF (one exception:
  :meth:`BlobDirs.head` returns unverified bytes, which gc uses only to rule out that an
  unreferenced blob is a referrer);
* ``index.json`` is replaced atomically (temp, fsync, rename, directory fsync), under an
  exclusive lock so concurrent writers serialise instead of losing entries.

Locks (``flock``, released by the kernel if the process dies): every operation that writes blobs
holds ``.layouttool/lock`` *shared* for its whole run; ``gc`` holds it *exclusive*, so it never
deletes a blob an import has written but not yet referenced, and it knows that any temp file it
sees then belongs to a dead process. Updates of ``index.json`` hold ``.layouttool/index.lock``.
Readers take no lock: they only ever see a complete ``index.json``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, BinaryIO, Final, NamedTuple

from layouttool import mediatypes as mt
from layouttool.digest import CANONICAL, Digest, Hasher, new_hasher
from layouttool.errors import (
    ConflictError,
    DigestMismatchError,
    IntegrityError,
    InvalidInputError,
    LayoutToolError,
    NotFoundError,
    SizeMismatchError,
    UnsafeInputError,
    from_oserror,
)
from layouttool.model import JSON_CAP, Descriptor, Index, dump_json, parse_index, parse_json

OCI_LAYOUT_FILE: Final = "oci-layout"
INDEX_FILE: Final = "index.json"
BLOBS_DIR: Final = "blobs"
STATE_DIR: Final = ".layouttool"
TMP_PREFIX: Final = "tmp-"
LAYOUT_VERSION: Final = "1.0.0"
_CHUNK: Final = 1 << 20
#: buffers per writev call (Linux's IOV_MAX is 1024)
_IOV_MAX: Final = 512


def _token() -> str:
    """16 random hex digits for a temp name (what secrets.token_hex(8) returns; importing
    secrets pulls in random and base64, ~3 ms of every start-up)."""
    return os.urandom(8).hex()


def fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomically(
    path: Path, data: bytes, *, tmp_dir: Path | None = None, mode: int = 0o644
) -> None:
    """Replace ``path`` with ``data``: temp file (in ``tmp_dir``, default beside ``path``, same
    filesystem), fsync, rename, directory fsync. On a failure before the rename the temp file
    is removed and ``path`` is as it was; a failure of the directory fsync after it says so
    (``path`` holds the new data, which a crash could still undo). ``mode`` is the new file's
    (less the umask; 0o600 for a file of secrets)."""
    tmp = (tmp_dir or path.parent) / f"{TMP_PREFIX}{os.getpid()}-{_token()}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise from_oserror(exc, "write", path) from exc
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    try:
        fsync_dir(path.parent)
    except OSError as exc:
        raise from_oserror(exc, f"replaced {path}, then could not flush its directory") from exc


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_output(path: Path) -> Iterator[BinaryIO]:
    """A file to write an output (a tarball) into; on success it replaces ``path`` atomically
    (temp file beside it, fsync, rename, directory fsync), keeping an existing file's mode;
    on an error the temp file is removed and ``path`` is as it was.

    A FIFO or a character device (``/dev/null``, ``/dev/stdout``) is written in place: it cannot
    be replaced by a rename, and there is nothing partial to protect.
    """
    try:
        st = path.stat()
    except FileNotFoundError:
        st = None
    except OSError as exc:
        raise from_oserror(exc, "stat", path) from exc
    if st is not None and stat.S_ISDIR(st.st_mode):
        raise ConflictError(f"output {path} is a directory; name a file (e.g. {path}/image.tar)")
    if st is not None and not stat.S_ISREG(st.st_mode):
        try:
            with open(path, "wb") as fh:
                yield fh
        except OSError as exc:
            raise from_oserror(exc, "write", path) from exc
        return
    parent = path.parent
    # imported here: tempfile pulls in random, bisect and shutil (~3 ms of every ls)
    import tempfile

    try:
        fd, tmp = tempfile.mkstemp(dir=parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        raise from_oserror(exc, "create temp file in", parent) from exc
    try:
        with os.fdopen(fd, "wb", buffering=_CHUNK) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
            mode = stat.S_IMODE(st.st_mode) if st is not None else 0o666 & ~_umask()
            os.fchmod(fh.fileno(), mode)
        Path(tmp).replace(path)
        fsync_dir(parent)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise from_oserror(exc, "write", path) from exc
        raise


@dataclass(frozen=True, slots=True)
class BlobInfo:
    """A blob that was written: its digest and size."""

    digest: Digest
    size: int

    def descriptor(self, media_type: str, **extra: Any) -> Descriptor:
        """A descriptor for this blob."""
        return Descriptor(media_type=media_type, digest=self.digest, size=self.size, **extra)


class BlobWriter:
    """Write one blob: temp file, hash while writing, then fsync + rename on :meth:`commit`.

    Use as a context manager; leaving the block without :meth:`commit` (an error, Ctrl-C)
    removes the temp file. The digest exists only after :meth:`commit`.
    """

    def __init__(self, layout: Layout, *, expected: Digest | None = None) -> None:
        self._layout = layout
        self._expected = expected
        self._alg = expected.algorithm if expected else CANONICAL
        self._hasher: Hasher = new_hasher(self._alg)
        self.size = 0
        tmpdir = layout.tmp_dir()
        self._tmp = tmpdir / f"{TMP_PREFIX}{os.getpid()}-{_token()}"
        try:
            fd = os.open(
                self._tmp,
                os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW,
                0o644,
            )
        except OSError as exc:
            raise from_oserror(exc, "create temp file", self._tmp) from exc
        self._fh = os.fdopen(fd, "wb", buffering=0)
        self._done = False
        self._sealed = False

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Append ``data`` to the blob."""
        self._hasher.update(data)
        self.size += len(data)
        view = memoryview(data)
        try:
            while view:
                n = self._fh.write(view)
                if n is None:  # pragma: no cover - only for non-blocking files
                    continue
                view = view[n:]
        except OSError as exc:
            raise from_oserror(exc, "write blob", self._layout.root) from exc
        return len(data)

    def write_parts(self, parts: Sequence[bytes | memoryview]) -> None:
        """Append ``parts`` in order without joining them: each is hashed where it lies, and
        all go to the file in one ``writev`` (an encoder's output pieces: deflate blocks, and
        views of the input for stored blocks)."""
        views: list[bytes | memoryview] = []
        for part in parts:
            if part:
                self._hasher.update(part)
                self.size += len(part)
                views.append(part)
        fd = self._fh.fileno()
        i = 0
        try:
            while i < len(views):
                n = os.writev(fd, views[i : i + _IOV_MAX])
                while n and i < len(views):  # a short write: go on where it stopped
                    k = len(views[i])
                    if n < k:
                        views[i] = memoryview(views[i])[n:]
                        break
                    n -= k
                    i += 1
        except OSError as exc:
            raise from_oserror(exc, "write blob", self._layout.root) from exc

    def copy_fd(self, src_fd: int, length: int) -> None:
        """Append ``length`` bytes read from ``src_fd`` (at its current offset).

        ``os.copy_file_range`` lets the kernel move the bytes (a reflink where the filesystem
        shares extents); they are then hashed once by reading the temp file back. When the
        kernel cannot (another filesystem, an old kernel, no such call) the rest is streamed
        through :meth:`write`. Either way :meth:`commit` sees the digest of what was stored.
        """
        dst_fd = self._fh.fileno()
        start = self.size
        copied = 0
        if hasattr(os, "copy_file_range"):
            try:
                while copied < length:
                    n = os.copy_file_range(src_fd, dst_fd, length - copied)
                    if n == 0:
                        break
                    copied += n
            except OSError:
                pass  # streamed below from where the kernel stopped (both offsets advanced)
        if copied:
            try:
                fd = os.open(self._tmp, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
                try:
                    pos = start
                    while pos < start + copied:
                        data = os.pread(fd, min(_CHUNK, start + copied - pos), pos)
                        if not data:
                            break
                        self._hasher.update(data)
                        pos += len(data)
                finally:
                    os.close(fd)
            except OSError as exc:
                raise from_oserror(exc, "read back copied blob", self._tmp) from exc
            self.size += copied
        try:
            while copied < length:
                data = os.read(src_fd, min(_CHUNK, length - copied))
                if not data:
                    break
                self.write(data)
                copied += len(data)
        except OSError as exc:
            raise from_oserror(exc, "copy blob", self._tmp) from exc

    def seal(self) -> None:
        """No more writes: fsync the temp file and close it, keeping it for :meth:`commit`.

        A sealed writer holds no file descriptor, so a caller may keep any number of finished
        blobs waiting (a streamed ``docker save`` tarball whose ``manifest.json`` comes after
        hundreds of layers) without reaching the open-files limit; the fsync also runs here,
        in the thread that wrote the blob, rather than one after another at commit time.
        """
        if self._sealed or self._done:
            return
        try:
            os.fsync(self._fh.fileno())
            self._fh.close()
        except OSError as exc:
            self.abort()
            raise from_oserror(exc, "flush blob", self._tmp) from exc
        self._sealed = True

    def commit(self) -> BlobInfo:
        """Finish: fsync, check the expected digest, rename into place. Idempotent store."""
        digest = Digest.from_hasher(self._alg, self._hasher)
        if self._expected is not None and digest != self._expected:
            self.abort()
            raise DigestMismatchError(
                f"content digest {digest} does not match expected {self._expected}"
            )
        final = self._layout.blob_path(digest)
        try:
            if not self._sealed:
                os.fsync(self._fh.fileno())
                self._fh.close()
            final.parent.mkdir(parents=True, exist_ok=True)
            # A blob that is already there is replaced by bytes we have just hashed: never
            # trusted by name or size alone (and a corrupt copy is repaired).
            os.rename(self._tmp, final)
            fsync_dir(final.parent)
        except OSError as exc:
            self.abort()
            raise from_oserror(exc, "store blob", final) from exc
        self._done = True
        return BlobInfo(digest, self.size)

    def abort(self) -> None:
        """Drop the temp file."""
        if self._done:
            return
        self._done = True
        with contextlib.suppress(OSError):
            self._fh.close()
        with contextlib.suppress(OSError):
            os.unlink(self._tmp)

    def __enter__(self) -> BlobWriter:
        return self

    def __exit__(
        self,
        et: type[BaseException] | None,
        ev: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.abort()


_BLOB_FLAGS: Final = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


def _open_nofollow(path: Path) -> int:
    """Open ``blobs/<alg>/<hex>`` following no symlink in those three components.

    ``O_NOFOLLOW`` alone covers only the last one: a hostile ``blobs/sha256`` symlink would
    serve files from anywhere. ``O_NONBLOCK`` keeps a FIFO planted as a blob from blocking the
    open until a writer appears (it has no effect on regular files).
    """
    dflags = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
    blobs = os.open(path.parent.parent, dflags)
    try:
        alg = os.open(path.parent.name, dflags, dir_fd=blobs)
    finally:
        os.close(blobs)
    try:
        return os.open(path.name, _BLOB_FLAGS, dir_fd=alg)
    finally:
        os.close(alg)


class VerifiedReader:
    """Read a blob; its size and digest are checked, and a mismatch raises IntegrityError.

    The size is checked up front (``fstat``) when known; the digest when EOF is reached. A
    caller that stops early must call :meth:`finish` (which drains and verifies).
    """

    def __init__(
        self, path: Path | str, digest: Digest, size: int | None, *, dir_fd: int | None = None
    ) -> None:
        """Open the blob at ``path``; with ``dir_fd`` (an open ``blobs/<alg>`` directory, see
        :class:`BlobDirs`) the file is opened relative to it and ``path`` only names it in
        messages."""
        self.digest = digest
        self._path = path
        try:
            if dir_fd is None:
                fd = _open_nofollow(Path(path))
            else:
                fd = os.open(digest.encoded, _BLOB_FLAGS, dir_fd=dir_fd)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise UnsafeInputError(
                    f"blob {digest} is a symlink (or under one); refusing to follow it ({path})"
                ) from None
            if exc.errno == errno.ENOENT:
                raise NotFoundError(f"blob {digest} is missing ({path})") from None
            raise from_oserror(exc, "open blob", path) from exc
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            os.close(fd)
            raise UnsafeInputError(f"blob {digest} is not a regular file ({path})")
        if size is not None and st.st_size != size:
            os.close(fd)
            raise SizeMismatchError(
                f"blob {digest}: size {st.st_size} on disk does not match descriptor size {size}"
            )
        self.size = st.st_size
        self._fh = os.fdopen(fd, "rb", buffering=0)
        self._hasher = digest.hasher(st.st_size)
        self._count = 0
        self._verified = False

    def read(self, n: int = -1, /) -> bytes:
        """Read up to ``n`` bytes; at EOF the digest is verified."""
        if n < 0:
            # "read everything" ends at EOF, so it must also verify: loop to the empty read
            parts = []
            while chunk := self.read(_CHUNK):
                parts.append(chunk)
            return b"".join(parts)
        # read at most one byte past the size snapshot so that a growing file cannot keep us
        # reading forever
        n = min(n, self.size - self._count + 1)
        try:
            data = self._fh.read(n) if n > 0 else b""
        except OSError as exc:
            raise from_oserror(exc, "read blob", self._path) from exc
        if data:
            self._hasher.update(data)
            self._count += len(data)
            if self._count > self.size:
                raise SizeMismatchError(f"blob {self.digest} grew while being read")
        else:
            self._verify()
        return data or b""

    def readinto(self, b: bytearray | memoryview) -> int:
        """Read into ``b``."""
        data = self.read(len(b))
        b[: len(data)] = data
        return len(data)

    def _verify(self) -> None:
        if self._verified:
            return
        self._verified = True
        if self._count != self.size:
            raise SizeMismatchError(
                f"blob {self.digest}: read {self._count} of {self.size} bytes"
            )
        got = Digest.from_hasher(self.digest.algorithm, self._hasher)
        if got != self.digest:
            raise DigestMismatchError(
                f"blob {self.digest} is corrupt: its content hashes to {got}"
            )

    def finish(self) -> None:
        """Read what is left and verify the digest."""
        while self.read(_CHUNK):
            pass
        self._verify()

    def fileno(self) -> int:
        """The open file descriptor (for :meth:`Layout.copy_blob`; reads through it are not
        hashed here)."""
        return self._fh.fileno()

    def close(self) -> None:
        """Close the file."""
        self._fh.close()

    def __enter__(self) -> VerifiedReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True, slots=True)
class BlobFile:
    """A file found under ``blobs/`` by :meth:`Layout.iter_blob_files`."""

    path: Path
    digest: Digest | None  # None when the name is not a valid digest
    size: int
    is_symlink: bool


class BlobEntry(NamedTuple):
    """A name found under ``blobs/`` by :meth:`BlobDirs.scan` (nothing about it is read yet).

    A NamedTuple, not a dataclass: a dataclass costs ~1 ms of every command's start-up."""

    #: the ``<alg>`` directory it is in; None for an entry directly in ``blobs/``
    alg: str | None
    name: str
    #: None when ``<alg>:<name>`` is not a valid digest (or the entry is not in an alg directory)
    digest: Digest | None

    @property
    def rel(self) -> str:
        """The path relative to the layout root, e.g. ``blobs/sha256/<hex>``."""
        if self.alg is None:
            return f"{BLOBS_DIR}/{self.name}"
        return f"{BLOBS_DIR}/{self.alg}/{self.name}"


class BlobDirs:
    """``blobs/`` and its ``<alg>/`` directories, each opened once and none through a symlink.

    For an operation that touches thousands of blobs (gc): each later open, ``lstat`` or unlink
    is one system call relative to a directory descriptor instead of three opens or a walk of
    the whole path per blob, and a directory swapped for a symlink meanwhile cannot redirect
    it. A ``blobs`` that is a symlink (or not a directory) is refused: listing it would list,
    and gc would then delete, files outside the layout. Use as a context manager, or through
    :meth:`Layout.pinned`, which also routes :meth:`Layout.open_blob` here.
    """

    _DIR_FLAGS: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self._base = f"{layout.root}/{BLOBS_DIR}"
        self._algs: dict[str, int | None] = {}
        # gc removes on several threads: two opening the same <alg>/ must not both keep one
        self._algs_lock = threading.Lock()
        self._blobs: int | None = None
        try:
            self._blobs = os.open(self._base, self._DIR_FLAGS)
        except FileNotFoundError:
            pass  # an empty store: nothing to list, every read is "missing"
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise UnsafeInputError(
                    f"layout {layout.root}: {BLOBS_DIR} is a symlink or not a directory; "
                    "refusing to follow it (replace it with the directory it points to)"
                ) from None
            raise from_oserror(exc, "open", self._base) from exc

    def alg_fd(self, alg: str) -> int | None:
        """The open ``blobs/<alg>`` directory; None when it is missing, a symlink or not a
        directory."""
        if alg in self._algs:
            return self._algs[alg]
        with self._algs_lock:
            if alg in self._algs:
                return self._algs[alg]
            fd: int | None = None
            if self._blobs is not None:
                try:
                    fd = os.open(alg, self._DIR_FLAGS, dir_fd=self._blobs)
                except OSError as exc:
                    if exc.errno not in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR):
                        raise from_oserror(exc, "open", f"{self._base}/{alg}") from exc
            self._algs[alg] = fd
            return fd

    def scan(self) -> list[BlobEntry]:
        """Every name in ``blobs/`` and in its ``<alg>/`` directories, sorted; no ``stat``.

        An entry of ``blobs/`` that is not a directory, or is a symlink to one, is listed
        as an entry (with no digest), not entered.
        """
        if self._blobs is None:
            return []
        out: list[BlobEntry] = []
        try:
            top = sorted((e.name, e.is_dir(follow_symlinks=False)) for e in os.scandir(self._blobs))
        except OSError as exc:
            raise from_oserror(exc, "list", self._base) from exc
        for alg, is_dir in top:
            fd = self.alg_fd(alg) if is_dir else None
            if fd is None:
                out.append(BlobEntry(None, alg, None))
                continue
            try:
                names = sorted(e.name for e in os.scandir(fd))
            except OSError as exc:
                raise from_oserror(exc, "list", f"{self._base}/{alg}") from exc
            parse = Digest.from_parts
            out.extend(BlobEntry(alg, n, parse(alg, n)) for n in names)
        return out

    def _dir_of(self, entry: BlobEntry) -> int | None:
        return self._blobs if entry.alg is None else self.alg_fd(entry.alg)

    def lstat(self, entry: BlobEntry) -> os.stat_result | None:
        """``lstat`` of ``entry`` (a symlink is not followed); None when it is gone."""
        fd = self._dir_of(entry)
        if fd is None:
            return None
        try:
            return os.stat(entry.name, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise from_oserror(exc, "stat", f"{self.layout.root}/{entry.rel}") from exc

    def open_blob(self, digest: Digest, size: int | None = None) -> VerifiedReader:
        """A :class:`VerifiedReader` of a blob, opened relative to its directory."""
        fd = self.alg_fd(digest.algorithm)
        path = f"{self._base}/{digest.algorithm}/{digest.encoded}"
        if fd is None:
            # no such directory (or not one we may enter): the usual error for this case
            return VerifiedReader(Path(path), digest, size)
        return VerifiedReader(path, digest, size, dir_fd=fd)

    def head(self, entry: BlobEntry, n: int) -> bytes | None:
        """Up to ``n`` leading bytes of a regular file, NOT verified against its digest: only
        to tell what a blob cannot be (gc: a layer is not a JSON document). None when the entry
        is gone, a symlink or not a regular file. Read a blob you use with :meth:`open_blob`."""
        fd = self._dir_of(entry)
        if fd is None:
            return None
        try:
            f = os.open(entry.name, _BLOB_FLAGS, dir_fd=fd)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR):
                return None
            raise from_oserror(exc, "open blob", f"{self.layout.root}/{entry.rel}") from exc
        try:
            if not stat.S_ISREG(os.fstat(f).st_mode):
                return None
            # one read may return less than asked (NFS, FUSE): gc would then miss a referrer's
            # "subject" and delete it, so read until n bytes or the end of the file
            parts: list[bytes] = []
            got = 0
            while got < n and (data := os.read(f, n - got)):
                parts.append(data)
                got += len(data)
            return b"".join(parts)
        except OSError as exc:
            raise from_oserror(exc, "read blob", f"{self.layout.root}/{entry.rel}") from exc
        finally:
            os.close(f)

    def remove(self, entry: BlobEntry, ident: tuple[int, int]) -> bool:
        """Unlink ``entry`` if it is still the file ``ident`` (st_dev, st_ino) names; a
        symlink is removed as a link. False when it is gone or was replaced since."""
        fd = self._dir_of(entry)
        if fd is None:
            return False
        try:
            st = os.stat(entry.name, dir_fd=fd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise from_oserror(exc, "stat", f"{self.layout.root}/{entry.rel}") from exc
        if (st.st_dev, st.st_ino) != ident:
            return False
        try:
            os.unlink(entry.name, dir_fd=fd)
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise from_oserror(exc, "remove blob", f"{self.layout.root}/{entry.rel}") from exc
        return True

    def close(self) -> None:
        """Close every directory descriptor."""
        for fd in [*self._algs.values(), self._blobs]:
            if fd is not None:
                os.close(fd)
        self._algs.clear()
        self._blobs = None

    def __enter__(self) -> BlobDirs:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Layout:
    """One OCI image layout directory. Open with :meth:`open` or create with :meth:`init`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        #: while :meth:`pinned` runs, blob opens go through its directory descriptors
        self._dirs: BlobDirs | None = None

    # ------------------------------------------------------------------ opening / creating
    @classmethod
    def open(cls, path: str | os.PathLike[str], *, create: bool = False) -> Layout:
        """Open an existing layout (or create an empty one when ``create`` and it is absent)."""
        root = Path(path)
        if create and (not root.exists() or (root.is_dir() and not any(root.iterdir()))):
            return cls.init(root)
        if not root.exists():
            raise NotFoundError(f"layout {root} does not exist")
        if not root.is_dir():
            raise InvalidInputError(f"layout {root} is not a directory")
        layout = cls(root)
        layout._check_header()
        if not (root / INDEX_FILE).exists():
            raise InvalidInputError(f"layout {root}: {INDEX_FILE} is missing")
        return layout

    @classmethod
    def init(cls, path: str | os.PathLike[str]) -> Layout:
        """Create an empty layout at ``path`` (absent or an empty directory)."""
        root = Path(path)
        try:
            if root.exists():
                if not root.is_dir():
                    raise ConflictError(f"{root} exists and is not a directory")
                if any(root.iterdir()):
                    if (root / OCI_LAYOUT_FILE).exists():
                        raise ConflictError(f"{root} is already an OCI layout")
                    raise ConflictError(f"{root} exists and is not empty")
            root.mkdir(parents=True, exist_ok=True)
            layout = cls(root)
            (root / BLOBS_DIR / CANONICAL).mkdir(parents=True, exist_ok=True)
            layout._atomic_write(
                root / OCI_LAYOUT_FILE, dump_json({"imageLayoutVersion": LAYOUT_VERSION})
            )
            layout._atomic_write(
                root / INDEX_FILE,
                dump_json({"schemaVersion": 2, "mediaType": mt.MT_OCI_INDEX, "manifests": []}),
            )
        except OSError as exc:
            raise from_oserror(exc, "create layout", root) from exc
        return layout

    def _check_header(self) -> None:
        p = self.root / OCI_LAYOUT_FILE
        try:
            raw = p.read_bytes()
        except FileNotFoundError:
            raise InvalidInputError(
                f"{self.root} is not an OCI image layout: {OCI_LAYOUT_FILE} is missing"
            ) from None
        except OSError as exc:
            raise from_oserror(exc, "read", p) from exc
        doc = parse_json(raw[: JSON_CAP + 1], str(p))
        if not isinstance(doc, dict) or doc.get("imageLayoutVersion") != LAYOUT_VERSION:
            raise InvalidInputError(f"{p}: imageLayoutVersion must be {LAYOUT_VERSION!r}")

    # ------------------------------------------------------------------ paths and locks
    @property
    def state_dir(self) -> Path:
        """Our private directory inside the layout (locks, temp files)."""
        return self.root / STATE_DIR

    def _private_dir(self, *parts: str, create: bool = True) -> Path | None:
        """``.layouttool[/PARTS...]``, each part a real directory (made when missing and
        ``create``; else None when missing).

        A part that is a symlink is refused (exit 6), as :class:`BlobDirs` refuses a symlinked
        ``blobs``: a layout from an untrusted tarball with ``.layouttool/tmp -> $HOME`` would
        otherwise have gc delete ``$HOME/tmp-*`` and writers put temp files there.
        """
        d = self.root
        for part in (STATE_DIR, *parts):
            d = d / part
            try:
                st = os.lstat(d)
            except FileNotFoundError:
                if not create:
                    return None
                try:
                    d.mkdir()
                    continue
                except FileExistsError:
                    st = os.lstat(d)  # made meanwhile by another process: check it
                except OSError as exc:
                    raise from_oserror(exc, "create directory", d) from exc
            except OSError as exc:
                raise from_oserror(exc, "stat", d) from exc
            if not stat.S_ISDIR(st.st_mode):
                raise UnsafeInputError(
                    f"layout {self.root}: {d.relative_to(self.root)} is a symlink or not a "
                    "directory; refusing to follow it (remove it: it only holds layouttool's "
                    "locks and temp files)"
                )
        return d

    def tmp_dir(self) -> Path:
        """Where temp files are written (same filesystem as the blobs, so rename is atomic)."""
        d = self._private_dir("tmp")
        assert d is not None  # created when missing
        return d

    def blob_path(self, digest: Digest) -> Path:
        """``blobs/<alg>/<hex>`` (the digest is validated, so this cannot escape)."""
        return self.root / BLOBS_DIR / digest.algorithm / digest.encoded

    @contextlib.contextmanager
    def _flock(self, name: str, mode: int, *, wait: bool = True) -> Iterator[None]:
        state = self._private_dir()
        assert state is not None  # created when missing
        path = state / name
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
        except OSError as exc:
            raise from_oserror(exc, "open lock", path) from exc
        try:
            try:
                fcntl.flock(fd, mode | (0 if wait else fcntl.LOCK_NB))
            except BlockingIOError:
                raise ConflictError(
                    f"layout {self.root} is locked by another layouttool process"
                ) from None
            yield
        finally:
            os.close(fd)

    def writing(self) -> contextlib.AbstractContextManager[None]:
        """Hold for the whole of an operation that writes blobs (a shared lock)."""
        return self._flock("lock", fcntl.LOCK_SH)

    def exclusive(self, *, wait: bool = True) -> contextlib.AbstractContextManager[None]:
        """Hold while nobody else may write blobs (gc)."""
        return self._flock("lock", fcntl.LOCK_EX, wait=wait)

    # ------------------------------------------------------------------ blobs
    def writer(self, *, expected: Digest | None = None) -> BlobWriter:
        """A :class:`BlobWriter` for a new blob (sha256, or ``expected``'s algorithm)."""
        return BlobWriter(self, expected=expected)

    def put_bytes(self, data: bytes, *, expected: Digest | None = None) -> BlobInfo:
        """Store ``data`` as a blob."""
        with self.writer(expected=expected) as w:
            w.write(data)
            return w.commit()

    def put_json(self, doc: Any, media_type: str, **extra: Any) -> Descriptor:
        """Serialise ``doc`` compactly, store it, and return its descriptor."""
        return self.put_bytes(dump_json(doc)).descriptor(media_type, **extra)

    def copy_blob(self, src: Layout, digest: Digest, size: int | None = None) -> BlobInfo:
        """Copy blob ``digest`` from layout ``src`` into this one (see :meth:`BlobWriter.copy_fd`).

        The source is opened like any blob read (no symlinks, regular file, size checked) and
        the copy is verified against ``digest`` before it is renamed into place.
        """
        with src.open_blob(digest, size) as r, self.writer(expected=digest) as w:
            w.copy_fd(r.fileno(), r.size)
            try:
                return w.commit()
            except IntegrityError as exc:
                raise DigestMismatchError(
                    f"blob {digest} in {src.root} is corrupt ({exc}); nothing was copied"
                ) from exc

    def has_blob(self, digest: Digest) -> bool:
        """True when a regular file is stored under ``digest`` (content not checked)."""
        try:
            st = os.lstat(self.blob_path(digest))
        except OSError:
            return False
        return stat.S_ISREG(st.st_mode)

    def open_blob(self, digest: Digest, size: int | None = None) -> VerifiedReader:
        """A :class:`VerifiedReader` of a blob."""
        if self._dirs is not None:
            return self._dirs.open_blob(digest, size)
        return VerifiedReader(self.blob_path(digest), digest, size)

    @contextlib.contextmanager
    def pinned(self) -> Iterator[BlobDirs]:
        """Open ``blobs/`` and its ``<alg>/`` directories once (:class:`BlobDirs`) for an
        operation on thousands of blobs; until the block ends :meth:`open_blob` (and so
        :meth:`read_blob`) opens relative to them. Raises UnsafeInputError when ``blobs`` is a
        symlink. Not for a Layout object that other threads use meanwhile."""
        dirs = BlobDirs(self)
        prev, self._dirs = self._dirs, dirs
        try:
            yield dirs
        finally:
            self._dirs = prev
            dirs.close()

    def read_blob(self, desc: Descriptor, *, cap: int = JSON_CAP) -> bytes:
        """Read a whole (small) blob, verified, refusing anything larger than ``cap``."""
        if desc.size > cap:
            raise InvalidInputError(
                f"blob {desc.digest} ({desc.media_type}) is {desc.size} bytes, "
                f"over the cap of {cap}"
            )
        with self.open_blob(desc.digest, desc.size) as r:
            data = r.read(desc.size + 1)
            r.finish()
        return data

    def delete_blob(self, path: Path) -> None:
        """Remove a blob file (a symlink is removed as a link; its target is untouched)."""
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        except OSError as exc:
            raise from_oserror(exc, "remove blob", path) from exc

    def iter_blob_files(self) -> Iterator[BlobFile]:
        """Every file under ``blobs/<alg>/``, with its digest when the name is a valid one."""
        base = self.root / BLOBS_DIR
        try:
            algs = sorted(os.scandir(base), key=lambda e: e.name)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise from_oserror(exc, "list", base) from exc
        for alg in algs:
            if not alg.is_dir(follow_symlinks=False):
                yield BlobFile(Path(alg.path), None, 0, alg.is_symlink())
                continue
            for e in sorted(os.scandir(alg.path), key=lambda e: e.name):
                st = e.stat(follow_symlinks=False)
                d = Digest.from_parts(alg.name, e.name)
                yield BlobFile(Path(e.path), d, st.st_size, e.is_symlink())

    # ------------------------------------------------------------------ index.json
    def read_index(self) -> Index:
        """Parse ``index.json`` (capped, validated)."""
        p = self.root / INDEX_FILE
        try:
            with open(p, "rb") as f:
                raw = f.read(JSON_CAP + 1)
        except FileNotFoundError:
            raise InvalidInputError(f"layout {self.root}: {INDEX_FILE} is missing") from None
        except OSError as exc:
            raise from_oserror(exc, "read", p) from exc
        return parse_index(raw, f"{self.root}/{INDEX_FILE}")

    def write_index(self, doc: dict[str, Any]) -> None:
        """Replace ``index.json`` atomically (callers should hold :meth:`index_lock`)."""
        # validate what we are about to write with the same parser readers use
        raw = dump_json(doc)
        parse_index(raw, "new index.json")
        self._atomic_write(self.root / INDEX_FILE, raw)

    def index_lock(self) -> contextlib.AbstractContextManager[None]:
        """Serialise read-modify-write of ``index.json`` between processes."""
        return self._flock("index.lock", fcntl.LOCK_EX)

    def update_index(
        self, change: Callable[[list[Descriptor], dict[str, Any]], list[Descriptor]]
    ) -> list[Descriptor]:
        """Read ``index.json``, let ``change`` compute the new manifest list, write it back.

        The whole read-modify-write holds the index lock; ``change`` receives the current
        descriptors and the document (whose other fields are kept) and returns the new list.
        """
        with self.index_lock():
            index = self.read_index()
            doc = dict(index.doc)
            new = change(list(index.manifests), doc)
            doc["manifests"] = [d.to_json() for d in new]
            doc.setdefault("schemaVersion", 2)
            if "mediaType" not in doc:
                doc = {"schemaVersion": 2, "mediaType": mt.MT_OCI_INDEX, **doc}
            self.write_index(doc)
            return new

    def _atomic_write(self, path: Path, data: bytes) -> None:
        write_atomically(path, data, tmp_dir=self.tmp_dir())

    def tmp_files(self) -> list[Path]:
        """Temp files left in our state directory (by interrupted writes, when unlocked)."""
        d = self._private_dir("tmp", create=False)
        if d is None:
            return []
        try:
            return sorted(p for p in d.iterdir() if p.name.startswith(TMP_PREFIX))
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise from_oserror(exc, "list", d) from exc


def is_layout(path: Path) -> bool:
    """True when ``path`` looks like an OCI layout (has an ``oci-layout`` file)."""
    return (path / OCI_LAYOUT_FILE).is_file()


__all__ = [
    "BlobDirs",
    "BlobEntry",
    "BlobFile",
    "BlobInfo",
    "BlobWriter",
    "Layout",
    "LayoutToolError",
    "VerifiedReader",
    "is_layout",
]
