"""An image's merged filesystem: its layers read into a :class:`~layouttool.rootfs.merge.
MergedTree` (pass 1), and read again for their contents (pass 2), for export, flatten and diff.

Every layer read is verified as ``unpack`` verifies it (:func:`~layouttool.layers.plain_layer`:
blob digest and size, media type against the magic bytes, ``diff_id``); errors name the image
and the layer.
"""

from __future__ import annotations

import typing
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass

from layouttool import mediatypes as mt
from layouttool.errors import LayoutToolError
from layouttool.layers import plain_layer
from layouttool.lazy import ESTARGZ_OWN_ENTRIES
from layouttool.model import Descriptor
from layouttool.ops.common import ResolvedImage
from layouttool.progress import NULL_PROGRESS, Progress
from layouttool.rootfs.merge import LayerStats, MergedTree


@dataclass(frozen=True, slots=True)
class MergedImage:
    """One image's layers, merged."""

    image: ResolvedImage
    tree: MergedTree
    stats: tuple[LayerStats, ...]

    @property
    def layers(self) -> tuple[Descriptor, ...]:
        """The manifest's layer descriptors, lowest first."""
        return self.image.manifest.layers

    def warnings(self) -> list[str]:
        """Every layer's warnings, each prefixed with its layer."""
        return [f"{_what(self.image, i)}: {w}" for i, s in enumerate(self.stats)
                for w in s.warnings]

    def opener(
        self, progress: Progress = NULL_PROGRESS
    ) -> Callable[[int], AbstractContextManager[typing.BinaryIO]]:
        """``open_layer(i)`` for :func:`~layouttool.rootfs.merged_tar.write_merged` (pass 2)."""

        @contextmanager
        def open_layer(i: int) -> Iterator[typing.BinaryIO]:
            img = self.image
            desc = img.manifest.layers[i]
            what = _what(img, i)
            task = progress.task(f"layer {i + 1}/{len(img.manifest.layers)} {desc.digest.short}"
                                 " (again)", desc.size)
            # the first read checked the diff_id; the blob's digest still covers this one
            with _named(what), plain_layer(img.layout, desc, None, what=what,
                                           advance=task.advance) as stream:
                yield typing.cast(typing.BinaryIO, stream)
            task.done()

        return open_layer


def _what(img: ResolvedImage, i: int) -> str:
    return f"layer {i + 1}/{len(img.manifest.layers)} {img.manifest.layers[i].digest}"


@contextmanager
def _named(what: str) -> Iterator[None]:
    """Prefix an error from the tar reader (``layer tar: ...``) with the layer it is in."""
    try:
        yield
    except LayoutToolError as exc:
        if str(exc).startswith("layer tar:"):
            raise type(exc)(f"{what}: {exc}") from exc
        raise


def merge_image(
    img: ResolvedImage,
    *,
    hash_contents: bool = False,
    track: bool = False,
    progress: Progress = NULL_PROGRESS,
) -> MergedImage:
    """Read every layer of ``img`` once, lowest first, into a merged tree.

    ``hash_contents`` records each file's sha256 (diff); ``track`` records what each layer
    changed (diff --layers).
    """
    layers = img.manifest.layers
    diff_ids = img.layer_diff_ids(str(img.manifest_desc.digest))
    tree = MergedTree(track=track)
    stats = []
    for i, desc in enumerate(layers):
        what = _what(img, i)
        task = progress.task(f"layer {i + 1}/{len(layers)} {desc.digest.short}", desc.size)
        with _named(what), plain_layer(img.layout, desc, diff_ids[i], what=what,
                                       advance=task.advance) as stream:
            # an eStargz layer's own entries (TOC, landmarks) are not the image's files
            skip = ESTARGZ_OWN_ENTRIES if mt.lazy_format(desc.annotations) == "estargz" \
                else frozenset()
            stats.append(tree.apply_layer(typing.cast(typing.BinaryIO, stream),
                                          hash_contents=hash_contents, skip_names=skip))
        task.done()
        for w in stats[-1].warnings:
            progress.note(f"warning: {what}: {w}")
    return MergedImage(img, tree, tuple(stats))
