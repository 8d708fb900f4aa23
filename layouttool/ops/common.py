"""Helpers shared by the operations: opening an IMAGE, resolving it to one image."""

from __future__ import annotations

from dataclasses import dataclass

from layouttool import mediatypes as mt
from layouttool.errors import InvalidInputError, UnsupportedError
from layouttool.model import (
    Descriptor,
    ImageConfig,
    Index,
    Manifest,
    Platform,
    parse_config,
    parse_index,
    parse_manifest,
)
from layouttool.refs import ImageRef, parse_image, pick_platform, resolve
from layouttool.store import Layout


@dataclass(frozen=True, slots=True)
class Selected:
    """An index.json entry chosen by an IMAGE argument."""

    layout: Layout
    ref: ImageRef
    entry: Descriptor


@dataclass(frozen=True, slots=True)
class ResolvedImage:
    """One image: its manifest and config, and how it was reached."""

    layout: Layout
    entry: Descriptor
    #: indexes passed through from the index.json entry down to the manifest
    indexes: tuple[Index, ...]
    manifest_desc: Descriptor
    manifest: Manifest
    config: ImageConfig


def select(image: str | ImageRef) -> Selected:
    """Open the layout IMAGE names and pick its index.json entry."""
    ref = parse_image(image) if isinstance(image, str) else image
    layout = Layout.open(ref.layout)
    entry = resolve(layout.read_index(), ref.ref, ref.digest, ref.layout)
    return Selected(layout, ref, entry)


def read_manifest(layout: Layout, desc: Descriptor) -> Manifest:
    """Read and parse an image manifest."""
    return parse_manifest(layout.read_blob(desc), f"manifest {desc.digest}", desc.media_type)


def read_index_blob(layout: Layout, desc: Descriptor) -> Index:
    """Read and parse an index blob."""
    return parse_index(layout.read_blob(desc), f"index {desc.digest}", desc.media_type)


def read_config(layout: Layout, desc: Descriptor) -> ImageConfig:
    """Read and parse an image config."""
    if not mt.is_image_config(desc.media_type):
        raise UnsupportedError(
            f"config {desc.digest} has media type {desc.media_type!r}: not an image "
            "(an artifact?); nothing to unpack or convert as an image"
        )
    return parse_config(layout.read_blob(desc), f"config {desc.digest}")


def resolve_image(
    layout: Layout, entry: Descriptor, platform: Platform | None = None
) -> ResolvedImage:
    """Descend from an index.json entry to one image manifest (choosing by platform)."""
    indexes: list[Index] = []
    desc = entry
    for _ in range(8):
        if mt.is_index(desc.media_type):
            idx = read_index_blob(layout, desc)
            indexes.append(idx)
            desc = pick_platform(idx, platform, f"index {desc.digest}")
            continue
        if mt.is_manifest(desc.media_type):
            m = read_manifest(layout, desc)
            return ResolvedImage(
                layout, entry, tuple(indexes), desc, m, read_config(layout, m.config)
            )
        if mt.is_schema1(desc.media_type):
            raise UnsupportedError(
                f"manifest {desc.digest} is Docker schema 1; run 'layouttool convert' first "
                "to upgrade it"
            )
        raise UnsupportedError(
            f"{desc.digest} has media type {desc.media_type!r}, which is not an image"
        )
    raise InvalidInputError(f"{entry.digest}: indexes nested more than 8 deep")


def open_image(image: str | ImageRef, platform: Platform | None = None) -> ResolvedImage:
    """Resolve IMAGE to one image."""
    sel = select(image)
    return resolve_image(sel.layout, sel.entry, platform)
