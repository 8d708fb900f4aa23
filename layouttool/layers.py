"""One layer, one pass: read -> (decompress -> diff_id hash) -> (compress) -> hashing write.

Used by import (a member of a docker save tar) and convert (a verified blob of the store). The
source is read exactly once, in bounded memory:

* target compression equals the source's: the raw bytes are teed into the blob writer
  unchanged while a decompressor on the same bytes computes the diff_id;
* otherwise: decompress -> diff_id hash -> compress -> blob writer.

The whole decompressed stream is hashed, including any bytes after the tar end marker, and the
raw source is drained to its end (so a VerifiedReader source checks its digest).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from layouttool import mediatypes as mt
from layouttool.codec import (
    CHUNK,
    Compression,
    HashingReader,
    LimitReader,
    PeekReader,
    PrefetchReader,
    Reader,
    TeeReader,
    Writer,
    new_encoder,
    open_decompress,
    sniff,
)
from layouttool.digest import Digest
from layouttool.errors import IntegrityError, InternalError, InvalidInputError, UnsupportedError
from layouttool.model import Descriptor
from layouttool.progress import Task
from layouttool.store import BlobInfo, BlobWriter, Layout

if TYPE_CHECKING:
    from layouttool.lazy import LazyFormat, LazyLayer, LazyOptions

LAYER_COMPRESSIONS: Final = (Compression.NONE, Compression.GZIP, Compression.ZSTD)


@dataclass(frozen=True, slots=True)
class LayerResult:
    """A layer stored in the layout."""

    blob: BlobInfo
    diff_id: Digest
    #: compression of the stored blob
    compression: Compression
    #: compression the source had
    source_compression: Compression
    uncompressed_size: int
    #: annotations the blob's descriptor needs (a lazy-pull layer's TOC digest and position)
    annotations: dict[str, str] = field(default_factory=dict)
    #: the lazy-pull format written, if any
    lazy: LazyFormat | None = None

    @property
    def recompressed(self) -> bool:
        """True when the bytes were re-encoded (not stored as they came)."""
        return self.compression is not self.source_compression or self.lazy is not None


class PendingLayer:
    """A layer fully written to a temp file and hashed, not yet in the store.

    :func:`spool_layer` returns it so a caller that does not yet know whether it wants the
    layer (a ``docker save`` stream whose ``manifest.json`` comes last) can decide later:
    :meth:`commit` renames the blob into place, :meth:`abort` drops it. Use it as a context
    manager (or call :meth:`abort`) so an error never leaves the temp file behind.
    """

    def __init__(
        self,
        writer: BlobWriter,
        diff_id: Digest,
        compression: Compression,
        source_compression: Compression,
        uncompressed_size: int,
        lazy: LazyLayer | None = None,
        lazy_format: LazyFormat | None = None,
    ) -> None:
        self._writer = writer
        self.diff_id = diff_id
        self.compression = compression
        self.source_compression = source_compression
        self.uncompressed_size = uncompressed_size
        self._lazy = lazy
        self._lazy_format = lazy_format
        #: the lazy format written, if any, and the annotations its descriptor needs
        self.lazy = lazy_format
        self.annotations: dict[str, str] = dict(lazy.annotations) if lazy is not None else {}
        #: the diff_id of the input tar (an eStargz layer's own ``diff_id`` is new)
        self.source_diff_id = diff_id
        self._result: LayerResult | None = None

    @property
    def size(self) -> int:
        """Size of the blob as written."""
        return self._writer.size

    def commit(self) -> LayerResult:
        """Store the blob (idempotent: a second call returns the first result)."""
        if self._result is None:
            blob = self._writer.commit()
            self._result = LayerResult(
                blob,
                self.diff_id,
                self.compression,
                self.source_compression,
                self.uncompressed_size,
                dict(self._lazy.annotations) if self._lazy is not None else {},
                self._lazy_format,
            )
        return self._result

    def abort(self) -> None:
        """Drop the temp file (no-op after :meth:`commit`)."""
        self._writer.abort()

    def __enter__(self) -> PendingLayer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.abort()


def _read_full(r: Reader, n: int) -> bytes:
    """Exactly ``n`` bytes from ``r``, fewer only at its end (joins short reads, rarely)."""
    data = r.read(n)
    if len(data) == n or not data:
        return data
    parts = [data]
    got = len(data)
    while got < n and (more := r.read(n - got)):
        parts.append(more)
        got += len(more)
    return b"".join(parts)


def _tee(src: Reader, w: Writer | None, task: Task | None) -> TeeReader:
    """``src``'s bytes, copied into ``w`` (when given) and counted for ``task``."""
    return TeeReader(src, w.write if w is not None else None, task.advance if task else None)


def _sniffed(
    src: Reader, declared: Compression | None, what: str, *, uncompressed: bool = False
) -> tuple[PeekReader, Compression]:
    """``src`` behind a peek, and its compression by magic bytes (which must be a layer's and
    agree with what the media type ``declared``)."""
    peek = PeekReader(src)
    # a tar the caller made (``uncompressed``) is not sniffed: its first member's name is its
    # first bytes, and a name that starts with 1f 8b would pass for gzip
    found = Compression.NONE if uncompressed else sniff(peek.peek(8))
    if found not in LAYER_COMPRESSIONS:
        raise InvalidInputError(f"{what}: {found.value}-compressed layers are not supported")
    if declared is not None and declared is not found:
        raise InvalidInputError(
            f"{what}: media type says {declared.value} but the content is {found.value}"
        )
    return peek, found


def _checked(diff_id: Digest, expected: Digest | None, what: str) -> Digest:
    if expected is not None and diff_id != expected:
        raise IntegrityError(
            f"{what}: uncompressed content hashes to {diff_id}, but the config's "
            f"diff_id is {expected}"
        )
    return diff_id


def diff_layer(
    src: Reader,
    *,
    declared: Compression | None = None,
    expected_diff_id: Digest | None = None,
    what: str = "layer",
    task: Task | None = None,
) -> Digest:
    """The diff_id of the layer read from ``src``, stored nowhere (``verify --deep``): one pass
    of read -> decompress -> hash, the raw source drained to its end (so a VerifiedReader
    checks its digest). A mismatch with ``expected_diff_id`` raises IntegrityError; a stream
    that does not decompress as ``declared``, InvalidInputError."""
    peek, found = _sniffed(src, declared, what)
    dec = open_decompress(_tee(peek, None, task), found, what=what)
    hashed = HashingReader(dec)
    hashed.drain()
    dec.close()
    rest = _tee(peek, None, task)
    while rest.read(CHUNK):
        pass
    return _checked(hashed.digest(), expected_diff_id, what)


def spool_layer(
    layout: Layout,
    src: Reader,
    *,
    target: Compression | None,
    level: int | None = None,
    threads: int | None = None,
    expected_diff_id: Digest | None = None,
    declared: Compression | None = None,
    max_size: int | None = None,
    what: str = "layer",
    task: Task | None = None,
    uncompressed: bool = False,
    lazy: LazyFormat | None = None,
    lazy_options: LazyOptions | None = None,
) -> PendingLayer:
    """Like :func:`store_layer`, but stop before the rename: the caller commits or aborts."""
    if lazy is not None:
        return _spool_lazy(
            layout, src, lazy, lazy_options, expected_diff_id=expected_diff_id,
            declared=declared, max_size=max_size, what=what, task=task,
        )
    peek, found = _sniffed(src, declared, what, uncompressed=uncompressed)
    out = found if target is None else target
    w = layout.writer()
    try:
        if out is found:
            dec = open_decompress(_tee(peek, w, task), found, what=what)
            encoder = None
        else:
            dec = open_decompress(_tee(peek, None, task), found, what=what)
            encoder = new_encoder(out, level, threads)
        plain: Reader = dec if max_size is None else LimitReader(dec, max_size, what)
        hashed = HashingReader(plain)
        # re-encoding: read, decompress and hash the diff_id in a thread of their own, a few
        # chunks ahead, while this one compresses, hashes and writes; each stage holds the GIL
        # only between its C calls, so a layer keeps two cores busy on its own (the last large
        # layer of an image is often alone for a third of the run)
        ahead = PrefetchReader(hashed) if encoder is not None else None
        try:
            feed: Reader = hashed if ahead is None else ahead
            # ISA-L's deflate output depends on how its input is split into compress() calls,
            # so the encoder always gets exactly CHUNK-sized pieces: the blob digest then
            # depends on the content only, not on how the source happens to return its reads
            while data := _read_full(feed, CHUNK):
                if encoder is not None:
                    # the pieces as they are (blocks, views of stored input): no join
                    w.write_parts(encoder.compress_parts(data))
        finally:
            if ahead is not None:
                ahead.close()
        if encoder is not None:
            w.write(encoder.flush())
        dec.close()
        # bytes the decompressor did not need (padding after the last gzip member, say) are
        # part of the blob: read them so the source is consumed (and verified) to its end
        rest = _tee(peek, w if out is found else None, task)
        while rest.read(CHUNK):
            pass
        diff_id = _checked(hashed.digest(), expected_diff_id, what)
        # closed now, committed later: a pending layer keeps no file descriptor open
        w.seal()
    except BaseException:
        w.abort()
        raise
    return PendingLayer(w, diff_id, out, found, hashed.count)


def _sniff(peek: PeekReader, declared: Compression | None, what: str) -> Compression:
    found = sniff(peek.peek(8))
    if found not in LAYER_COMPRESSIONS:
        raise InvalidInputError(f"{what}: {found.value}-compressed layers are not supported")
    if declared is not None and declared is not found:
        raise InvalidInputError(
            f"{what}: media type says {declared.value} but the content is {found.value}"
        )
    return found


def _spool_lazy(
    layout: Layout,
    src: Reader,
    lazy: LazyFormat,
    options: LazyOptions | None,
    *,
    expected_diff_id: Digest | None,
    declared: Compression | None,
    max_size: int | None,
    what: str,
    task: Task | None,
) -> PendingLayer:
    """Write the layer as zstd:chunked or eStargz, in one pass over ``src``.

    The input is decompressed and hashed (its diff_id is checked against the config's); the
    lazy writer builds the new blob from that tar, and the diff_id it returns is the hash of
    the bytes its frames hold, taken as they are compressed (:mod:`layouttool.lazy.frames`),
    never the input's. For zstd:chunked the two must be equal (the tar is kept byte for byte).
    """
    from layouttool.lazy import LazyFormat, LazyOptions, estargz, zstd_chunked

    opts = options or LazyOptions()
    peek = PeekReader(src)
    found = _sniff(peek, declared, what)
    w = layout.writer()
    try:
        dec = open_decompress(_tee(peek, None, task), found, what=what)
        plain: Reader = dec if max_size is None else LimitReader(dec, max_size, what)
        hashed = HashingReader(plain)
        if lazy is LazyFormat.ZSTD_CHUNKED:
            res = zstd_chunked.write(hashed, w, opts, what=what)
        else:
            res = estargz.write(hashed, w, opts, what=what, spool_dir=str(layout.tmp_dir()))
        hashed.drain()
        dec.close()
        rest = _tee(peek, None, task)
        while rest.read(CHUNK):
            pass
        source_diff_id = hashed.digest()
        if expected_diff_id is not None and source_diff_id != expected_diff_id:
            raise IntegrityError(
                f"{what}: uncompressed content hashes to {source_diff_id}, but the config's "
                f"diff_id is {expected_diff_id}"
            )
        if lazy is LazyFormat.ZSTD_CHUNKED and res.diff_id != source_diff_id:
            raise InternalError(
                f"{what}: the zstd:chunked blob decompresses to {res.diff_id}, not to the "
                f"input tar {source_diff_id}"
            )
        w.seal()
    except BaseException:
        w.abort()
        raise
    pending = PendingLayer(
        w, res.diff_id, lazy.compression, found, res.uncompressed_size, res, lazy
    )
    pending.source_diff_id = source_diff_id
    return pending


def store_layer(
    layout: Layout,
    src: Reader,
    *,
    target: Compression | None,
    level: int | None = None,
    threads: int | None = None,
    expected_diff_id: Digest | None = None,
    declared: Compression | None = None,
    max_size: int | None = None,
    what: str = "layer",
    task: Task | None = None,
    uncompressed: bool = False,
    lazy: LazyFormat | None = None,
    lazy_options: LazyOptions | None = None,
) -> LayerResult:
    """Store the layer read from ``src`` in ``layout``, in one pass.

    ``target`` None keeps the source's compression. ``declared`` is the compression the media
    type claims: the magic bytes must agree. ``expected_diff_id`` is checked at the end (exit 5
    on mismatch; the blob is not kept). ``max_size`` caps the decompressed size.
    ``uncompressed``: the source is a tar the caller made, taken as such without sniffing.
    ``lazy`` writes a lazy-pull layer (``target`` is then ignored): the result's
    ``annotations`` go on its descriptor, and for eStargz its ``diff_id`` is new.
    """
    with spool_layer(
        layout,
        src,
        target=target,
        level=level,
        threads=threads,
        expected_diff_id=expected_diff_id,
        declared=declared,
        max_size=max_size,
        what=what,
        task=task,
        uncompressed=uncompressed,
        lazy=lazy,
        lazy_options=lazy_options,
    ) as pending:
        return pending.commit()


@contextmanager
def plain_layer(
    layout: Layout,
    desc: Descriptor,
    diff_id: Digest | None,
    *,
    what: str,
    max_size: int | None = None,
    advance: Callable[[int], None] | None = None,
) -> Iterator[Reader]:
    """The uncompressed bytes of layer ``desc``, read once and verified.

    The blob is read through a :class:`~layouttool.store.VerifiedReader`, its compression
    detected by magic bytes (the media type must agree), decompressed and hashed on another
    thread (:class:`~layouttool.codec.PrefetchReader`) while the caller reads. When the block
    ends normally the rest is drained, the blob's digest and size are checked, and the
    uncompressed digest must equal ``diff_id`` (:class:`~layouttool.errors.IntegrityError`,
    naming ``what``; None: not hashed, for a second read of a layer already checked).
    ``advance`` is called with the count of compressed bytes read.
    """
    if not mt.is_layer(desc.media_type):
        raise UnsupportedError(
            f"{what} has media type {desc.media_type!r}: not a tar layer (an artifact?)"
        )
    with layout.open_blob(desc.digest, desc.size) as blob:
        # three stages on threads of their own: the blob is read and verified on one, ahead
        # of the one that decompresses and hashes the diff_id, while the caller parses (each
        # holds the GIL only between C calls; unpacking the real Debian image, the tar parser
        # waited on one thread doing the first two for a third of the time)
        with PrefetchReader(TeeReader(blob, advance=advance)) as raw:
            peek = PeekReader(raw)
            found = sniff(peek.peek(8))
            declared = mt.layer_compression(desc.media_type)
            if found is not declared:
                raise InvalidInputError(
                    f"{what}: media type {desc.media_type} does not match the content, which "
                    f"is {found.value}"
                )
            dec = open_decompress(peek, found, what=what)
            plain: Reader = dec if max_size is None else LimitReader(dec, max_size, what)
            # no diff_id to check: the blob's own digest still covers every byte read
            hashed = HashingReader(plain) if diff_id is not None else None
            try:
                with PrefetchReader(hashed or plain) as ahead:
                    yield ahead
                    while ahead.read(CHUNK):
                        pass
            finally:
                dec.close()
        blob.finish()
    if hashed is not None and hashed.digest() != diff_id:
        raise IntegrityError(
            f"{what}: uncompressed content hashes to {hashed.digest()} but the config's "
            f"diff_id is {diff_id}"
        )
