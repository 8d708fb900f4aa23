"""containers/storage's content-defined chunking of a file, for zstd:chunked.

containers/storage cuts each regular file into chunks so that a partial pull can reuse the
chunks it already has. The cut points depend on the content only:

* a **hole** is a run of at least 1024 zero bytes; it is one chunk of type ``zeros``, and the
  data before it ends a chunk;
* elsewhere a chunk ends after the byte at which bup's rolling checksum (a 64-byte window,
  ``s1``/``s2`` sums, character offset 31) has its 16 low bits of ``s2`` all set. Every byte,
  hole bytes included, enters the window; the check is skipped inside holes.

Writing the same boundaries as containers/storage means a layer we write shares chunk digests
with one podman writes from the same files (the test suite checks them against podman's own).

The rolling sum is computed for a whole piece at once: ``s2`` after byte ``t`` is a constant
plus ``sum((j+1) * b[t-j] for j in 0..63)``, a weighted window sum that six doubling steps of
uint16 vector additions give for every position (numpy; about 100 MB/s per core where a Python
loop over bytes manages about 1 MB/s). Only its low 16 bits matter, so wrapping is harmless.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Final, Literal

WINDOW: Final = 64
#: ``s2 & 0xffff == 0xffff`` with s2 = 64*63*31 + weighted window sum
_TARGET: Final = (0xFFFF - WINDOW * (WINDOW - 1) * 31) & 0xFFFF
#: zero runs this long are holes (containers/storage's holesThreshold)
HOLE_MIN: Final = 1024
_ZEROS: Final = bytes(HOLE_MIN)
_NONZERO: Final = re.compile(rb"[^\x00]")

#: ("data", bytes) payload of the current chunk; ("cut", "data"|"zeros") the current chunk ends
Event = tuple[Literal["data"], bytes] | tuple[Literal["cut"], Literal["data", "zeros"]]


def roll_cuts(ctx: bytes, data: bytes) -> list[int]:
    """Positions ``i`` in ``data`` after which the rolling checksum says cut.

    ``ctx`` holds the 63 bytes that preceded ``data`` in the file (zeros at its start).
    """
    import numpy as np

    a = np.frombuffer(ctx + data, dtype=np.uint8).astype(np.uint16)
    w = a
    for k in range(6):
        s = 1 << k
        nw = w[s:] + w[:-s]
        nw += a[:-s] << k
        a = a[s:] + a[:-s]
        w = nw
    hits: list[int] = np.flatnonzero(w == _TARGET).tolist()
    return hits


class Chunker:
    """Feed a file's payload in pieces; get back the payload cut into chunks (as events)."""

    def __init__(self) -> None:
        self._ctx = bytes(WINDOW - 1)
        self._pending = 0  # zeros at the end of what was fed, not yet known to be a hole
        self._in_hole = False
        self._open = False  # the current chunk has bytes

    def _data(self, b: bytes) -> Iterator[Event]:
        if b:
            self._open = True
            yield ("data", b)

    def _cut(self, kind: Literal["data", "zeros"]) -> Iterator[Event]:
        if self._open:
            self._open = False
            yield ("cut", kind)

    def _roll(self, d: bytes) -> Iterator[Event]:
        """Ordinary bytes: cut where the rolling checksum says."""
        if not d:
            return
        start = 0
        for i in roll_cuts(self._ctx, d):
            yield from self._data(d[start : i + 1])
            yield from self._cut("data")
            start = i + 1
        yield from self._data(d[start:])
        self._ctx = (self._ctx + d[-(WINDOW - 1) :])[-(WINDOW - 1) :]

    def _hole(self, n: int) -> Iterator[Event]:
        """``n`` zero bytes of a hole (the chunk before it is already cut)."""
        yield from self._data(bytes(n))
        self._ctx = (self._ctx + bytes(min(n, WINDOW - 1)))[-(WINDOW - 1) :]

    def feed(self, piece: bytes) -> Iterator[Event]:
        """The events for the next ``piece`` of the payload."""
        d = piece
        if self._in_hole:
            m = _NONZERO.search(d)
            end = len(d) if m is None else m.start()
            yield from self._hole(end)
            if m is None:
                return
            yield from self._cut("zeros")
            self._in_hole = False
            d = d[end:]
        if self._pending:
            m = _NONZERO.search(d)
            z = len(d) if m is None else m.start()
            if self._pending + z >= HOLE_MIN:
                yield from self._cut("data")
                yield from self._hole(self._pending + z)
                self._pending = 0
                if m is None:
                    self._in_hole = True
                    return
                yield from self._cut("zeros")
                d = d[z:]
            elif m is None:
                self._pending += z
                return
            else:  # a short run: ordinary bytes after all
                d = bytes(self._pending) + d
                self._pending = 0
        pos = 0
        while True:
            i = d.find(_ZEROS, pos)
            if i < 0:
                break
            yield from self._roll(d[pos:i])
            m = _NONZERO.search(d, i + HOLE_MIN)
            end = len(d) if m is None else m.start()
            yield from self._cut("data")
            yield from self._hole(end - i)
            if m is None:
                self._in_hole = True
                return
            yield from self._cut("zeros")
            pos = end
        tail = d[pos:]
        stripped = tail.rstrip(b"\x00")
        self._pending = len(tail) - len(stripped)
        yield from self._roll(stripped)

    def close(self) -> Iterator[Event]:
        """The events at the end of the payload."""
        if self._in_hole:
            yield from self._cut("zeros")
            self._in_hole = False
        elif self._pending:
            n, self._pending = self._pending, 0
            yield from self._roll(bytes(n))
        yield from self._cut("data")


__all__ = ["HOLE_MIN", "WINDOW", "Chunker", "Event", "roll_cuts"]
