"""Lazy-pull layer formats: zstd:chunked (containers/storage) and eStargz (stargz snapshotter).

Both are ordinary compressed tar layers (a plain zstd or gzip reader decodes them) made of
independently compressed pieces, with a table of contents (TOC) that lets a runtime fetch one
file's bytes by range:

* :mod:`.zstd_chunked`: the tar is unchanged (same diff_id); each file's payload (cut into
  content-defined chunks, :mod:`.chunker`) is its own zstd frame; the TOC and the tar-split
  data (:mod:`.tarsplit`) follow in skippable frames, then a 64-byte footer; the layer
  descriptor's ``io.github.containers.zstd-chunked.*`` annotations locate them.
* :mod:`.estargz`: each file chunk starts a gzip member; a landmark file leads, the TOC
  (``stargz.index.json``) is the tar's last entry, then a 51-byte footer; the tar changes, so
  the diff_id is new; ``containerd.io/snapshot/stargz/toc.digest`` names the TOC.

This package is pure: it reads and writes streams (:mod:`.frames` compresses on a worker
thread) and never touches the store or the manifests; :mod:`layouttool.layers` and the
operations do.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from layouttool import mediatypes as mt
from layouttool.digest import Digest
from layouttool.errors import InvalidInputError

if TYPE_CHECKING:
    from layouttool.codec import Compression

#: eStargz's default chunk size (estargz Writer.ChunkSize's default)
DEFAULT_CHUNK_SIZE = 4 << 20
#: the zstd level of zstd:chunked frames when none is given (zstd's own default)
DEFAULT_ZSTD_CHUNKED_LEVEL = 3
#: the entries eStargz adds to a layer (its TOC and landmarks); unpack leaves them out, as
#: containers/storage does
ESTARGZ_OWN_ENTRIES = frozenset(
    {"stargz.index.json", ".prefetch.landmark", ".no.prefetch.landmark"}
)


class LazyFormat(enum.Enum):
    """A lazy-pull layer format."""

    ZSTD_CHUNKED = "zstd:chunked"
    ESTARGZ = "estargz"

    @property
    def compression(self) -> Compression:
        """The stream compression every plain reader sees."""
        from layouttool.codec import Compression

        return Compression.ZSTD if self is LazyFormat.ZSTD_CHUNKED else Compression.GZIP


def parse_target(value: str) -> tuple[Compression, LazyFormat | None]:
    """``--compression`` values: ``gzip``, ``zstd``, ``none``, ``zstd:chunked``, ``estargz``."""
    from layouttool.codec import Compression

    v = value.lower()
    for f in LazyFormat:
        if v == f.value:
            return f.compression, f
    return Compression.parse(value), None


def detect(annotations: Mapping[str, str]) -> LazyFormat | None:
    """Which lazy format a layer descriptor's annotations announce (None: a plain layer)."""
    found = mt.lazy_format(annotations)
    return None if found is None else LazyFormat(found)


@dataclass(frozen=True, slots=True)
class LazyOptions:
    """How to write a lazy layer.

    ``level``: compression level (None: 3 for zstd:chunked, our gzip default for eStargz).
    ``chunk_size``: eStargz's largest chunk of a file (zstd:chunked cuts by content, as
    containers/storage does). ``prioritize``: eStargz files to put first, before the
    ``.prefetch.landmark`` (empty: a ``.no.prefetch.landmark`` leads, as nerdctl writes).
    """

    level: int | None = None
    chunk_size: int = DEFAULT_CHUNK_SIZE
    prioritize: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.chunk_size < 1:
            raise InvalidInputError(f"--chunk-size must be positive, not {self.chunk_size}")

    @classmethod
    def from_flags(
        cls,
        lazy: LazyFormat | None,
        level: int | None,
        chunk_size: int | None,
        prioritize: Sequence[str],
    ) -> LazyOptions:
        """The options of ``--level``, ``--chunk-size`` and ``--estargz-prioritize`` for the
        format ``--compression`` named; the last two are eStargz's and refused for any other."""
        if lazy is not LazyFormat.ESTARGZ and (chunk_size is not None or prioritize):
            if lazy is None:
                raise InvalidInputError(
                    "--chunk-size and --estargz-prioritize need --compression estargz"
                )
            raise InvalidInputError(
                "--chunk-size and --estargz-prioritize are eStargz options; zstd:chunked cuts "
                "files where their content says, as containers/storage does"
            )
        return cls(
            level=level,
            chunk_size=chunk_size if chunk_size is not None else DEFAULT_CHUNK_SIZE,
            prioritize=tuple(prioritize),
        )


@dataclass(frozen=True, slots=True)
class LazyLayer:
    """A lazy layer written: the blob's diff_id and the annotations its descriptor needs."""

    diff_id: Digest
    uncompressed_size: int
    annotations: dict[str, str] = field(default_factory=dict)


__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "DEFAULT_ZSTD_CHUNKED_LEVEL",
    "ESTARGZ_OWN_ENTRIES",
    "LazyFormat",
    "LazyLayer",
    "LazyOptions",
    "detect",
    "parse_target",
]
