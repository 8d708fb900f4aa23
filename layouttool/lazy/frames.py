"""A stream of independent compressed frames (zstd frames, gzip members), written in order.

Both lazy-pull formats are sequences of independently decompressible pieces whose compressed
offsets go into a table of contents. :class:`FrameWriter` takes the uncompressed bytes, frame
by frame, from the thread that parses the layer (handed over in batches), and compresses and
writes them on one worker thread (zstandard and ISA-L release the GIL), so parsing and
compressing use two cores. The worker also hashes every uncompressed byte it compresses: that
is the diff_id of the blob it writes, taken from the very bytes the frames hold, never from the
input layer.

Offsets are known only once the worker has written the frames before them, so the parser asks
for a :meth:`~FrameWriter.mark` (which also ends the current frame) and reads its offset from
:attr:`~FrameWriter.offsets` after :meth:`~FrameWriter.close`. Memory is bounded: at most
``depth`` batches wait in the queue, and a frame of any size is compressed as a stream.
"""

from __future__ import annotations

import queue
import struct
import threading
import zlib
from collections.abc import Callable
from typing import Any, Final, Protocol

from layouttool.codec import Writer
from layouttool.digest import Digest, new_hasher

#: the gzip member header we write (as codec's): no name, mtime 0, OS 255 ("unknown")
GZIP_HEADER: Final = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"


class FrameEncoder(Protocol):
    """Compresses one frame: feed bytes, then end it."""

    def compress(self, data: bytes, /) -> bytes: ...

    def end(self) -> bytes: ...


class _Zstd:
    def __init__(self, cctx: Any) -> None:
        self._obj = cctx.compressobj()

    def compress(self, data: bytes, /) -> bytes:
        out: bytes = self._obj.compress(data)
        return out

    def end(self) -> bytes:
        out: bytes = self._obj.flush()
        return out


def zstd_frames(level: int) -> Callable[[], FrameEncoder]:
    """A factory of zstd frame encoders at ``level`` (one shared compression context)."""
    import zstandard

    cctx = zstandard.ZstdCompressor(level=level, write_checksum=False)
    return lambda: _Zstd(cctx)


#: the size of the pieces a gzip member's input is compressed in
_GZIP_STEP: Final = 64 << 10


class _Gzip:
    def __init__(self, level: int) -> None:
        from isal import isal_zlib

        lib: Any = isal_zlib if level <= isal_zlib.ISAL_BEST_COMPRESSION else zlib
        self._obj = lib.compressobj(level, lib.DEFLATED, -15)
        self._crc32: Callable[[bytes, int], int] = isal_zlib.crc32
        self._crc = 0
        self._size = 0
        self._started = False
        self._held = bytearray()

    def compress(self, data: bytes, /) -> bytes:
        # ISA-L's output depends on how its input is cut (zlib's and zstd's do not), and the
        # pieces that arrive here depend on read sizes upstream: fed in whole _GZIP_STEP
        # pieces, a member is the same bytes whatever they were
        self._crc = self._crc32(data, self._crc)
        self._size += len(data)
        self._held += data
        if len(self._held) < _GZIP_STEP:
            return b""
        cut = len(self._held) - len(self._held) % _GZIP_STEP
        view = memoryview(self._held)
        out = b"".join(self._obj.compress(view[i:i + _GZIP_STEP])
                       for i in range(0, cut, _GZIP_STEP))
        view.release()
        del self._held[:cut]
        if not self._started:
            self._started = True
            return GZIP_HEADER + out
        return out

    def end(self) -> bytes:
        head = b"" if self._started else GZIP_HEADER
        tail: bytes = self._obj.compress(bytes(self._held)) + self._obj.flush()
        self._held.clear()
        return head + tail + struct.pack("<II", self._crc, self._size & 0xFFFFFFFF)


def gzip_members(level: int) -> Callable[[], FrameEncoder]:
    """A factory of gzip member encoders (levels 0-3 ISA-L, 4-9 zlib, as codec)."""
    return lambda: _Gzip(level)


_DATA, _END, _MARK, _RAW, _STOP = range(5)
#: a batch is handed to the worker at this many bytes or items (with ``depth`` batches
#: waiting, memory stays within depth x _BATCH_BYTES plus one piece)
_BATCH_BYTES: Final = 256 << 10
_BATCH_ITEMS: Final = 256


class FrameWriter:
    """Compress frames on a worker thread and write them to ``out`` in order."""

    def __init__(
        self, out: Writer, new_frame: Callable[[], FrameEncoder], *, depth: int = 8
    ) -> None:
        self._out = out
        self._new = new_frame
        self._q: queue.Queue[list[tuple[int, Any]]] = queue.Queue(maxsize=depth)
        #: items not yet handed to the worker: they go over in batches, since one queue
        #: hand-over per item (a distribution tree has ~5 per file) cost more than the
        #: compression of most frames
        self._batch: list[tuple[int, Any]] = []
        self._batch_bytes = 0
        self._marks = 0
        #: compressed offset of each mark, by mark number (complete after :meth:`close`)
        self.offsets: list[int] = []
        #: compressed bytes written
        self.size = 0
        #: uncompressed bytes compressed
        self.uncompressed_size = 0
        self._hasher = new_hasher()
        self._error: BaseException | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._work, name="frames", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------------ producer side
    def _put(self, item: tuple[int, Any], size: int = 0) -> None:
        if self._error is not None:
            raise self._error
        self._batch.append(item)
        self._batch_bytes += size
        if self._batch_bytes >= _BATCH_BYTES or len(self._batch) >= _BATCH_ITEMS:
            self._hand_over()

    def _hand_over(self) -> None:
        batch, self._batch, self._batch_bytes = self._batch, [], 0
        while True:
            if self._error is not None:
                raise self._error
            try:
                self._q.put(batch, timeout=0.1)
                return
            except queue.Full:
                continue

    def write(self, data: bytes) -> None:
        """Uncompressed bytes for the current frame (one is opened when none is)."""
        if data:
            self._put((_DATA, data), len(data))

    def end_frame(self) -> None:
        """End the current frame, if one is open."""
        self._put((_END, None))

    def mark(self) -> int:
        """End the current frame and return a mark whose offset the next frame starts at."""
        n = self._marks
        self._marks += 1
        self._put((_MARK, n))
        return n

    def raw(self, data: bytes) -> None:
        """Bytes written as they are, between frames (skippable frames, a footer)."""
        self._put((_RAW, data), len(data))

    def close(self) -> None:
        """Flush everything and stop the worker; re-raises a worker error."""
        if not self._closed:
            self._closed = True
            self._batch.append((_STOP, None))
            self._hand_over()
            self._thread.join()
        if self._error is not None:
            raise self._error

    def abort(self) -> None:
        """Stop the worker without waiting for the queue to be written."""
        if self._closed:
            return
        self._closed = True
        if self._error is None:
            self._error = RuntimeError("aborted")
        self._batch = []
        # unblock the worker: drain the queue, then stop it
        while True:
            try:
                self._q.get_nowait()
            except queue.Empty:
                break
        try:
            self._q.put_nowait([(_STOP, None)])
        except queue.Full:  # pragma: no cover - the queue was just drained
            pass
        self._thread.join()

    def frame_now(self, data: bytes) -> None:
        """After :meth:`close`: compress ``data`` as one last frame, in this thread."""
        if not self._closed:
            raise RuntimeError("frame_now() before close()")
        enc = self._new()
        self._hasher.update(data)
        self.uncompressed_size += len(data)
        self._emit(enc.compress(data) + enc.end())

    def diff_id(self) -> Digest:
        """sha256 of every uncompressed byte that went into the frames (after :meth:`close`)."""
        return Digest.from_hasher("sha256", self._hasher)

    # ------------------------------------------------------------------ worker side
    def _emit(self, data: bytes) -> None:
        if data:
            self._out.write(data)
            self.size += len(data)

    def _work(self) -> None:
        enc: FrameEncoder | None = None
        try:
            while True:
                batch = self._q.get()
                if self._error is not None:
                    return
                for kind, arg in batch:
                    if kind == _DATA:
                        if enc is None:
                            enc = self._new()
                        self._hasher.update(arg)
                        self.uncompressed_size += len(arg)
                        self._emit(enc.compress(arg))
                        continue
                    if enc is not None:
                        self._emit(enc.end())
                        enc = None
                    if kind == _MARK:
                        self.offsets.append(self.size)
                    elif kind == _RAW:
                        self._emit(arg)
                    elif kind == _STOP:
                        return
        except BaseException as exc:  # handed to the producer, raised there
            self._error = exc


__all__ = ["GZIP_HEADER", "FrameEncoder", "FrameWriter", "gzip_members", "zstd_frames"]
