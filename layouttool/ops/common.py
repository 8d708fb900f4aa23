"""Helpers shared by the operations: opening an IMAGE, resolving it to one image.

Documents are read through :mod:`layouttool.reader`, as every walk reads them: what a document
is comes from its own shape and media type, a disagreeing descriptor is a warning (collected in
``warnings``), and only a problem stops the resolution.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from layouttool.digest import Digest
from layouttool.errors import IntegrityError, InvalidInputError, NotFoundError, UnsupportedError
from layouttool.model import Descriptor, ImageConfig, Index, Manifest, Platform, parse_config
from layouttool.reader import Document, Finding, Kind, read_document
from layouttool.refs import ImageRef, parse_image, pick_platform, resolve
from layouttool.store import Layout

#: indexes nested deeper than this are refused (a cycle, or a hostile layout)
MAX_DEPTH = 8


@dataclass(frozen=True, slots=True)
class Selected:
    """The descriptor an IMAGE argument names: an index.json entry, or (``LAYOUT@digest``) a
    manifest or index that one of them reaches."""

    layout: Layout
    ref: ImageRef
    entry: Descriptor
    #: False when ``entry`` is not in index.json but inside one of its indexes
    listed: bool = True


class ResolvedManifest(NamedTuple):
    """One manifest (an image or an artifact), and how it was reached. (A NamedTuple: a
    dataclass costs every command that imports this module ~1 ms of start-up.)"""

    layout: Layout
    entry: Descriptor
    #: indexes passed through from the entry down to the manifest
    indexes: tuple[Index, ...]
    manifest_desc: Descriptor
    #: the manifest (None for an OCI artifact manifest of v1.1's release candidates, which has
    #: no config: see ``document.content``)
    manifest: Manifest | None
    document: Document
    #: what the reader found odd on the way down
    warnings: tuple[Finding, ...]

    @property
    def kind(self) -> Kind:
        """IMAGE or ARTIFACT."""
        return self.document.kind


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
    #: what the reader found odd on the way down
    warnings: tuple[Finding, ...] = ()

    def layer_diff_ids(self, what: str) -> tuple[Digest, ...]:
        """The config's diff_ids, one per manifest layer, or IntegrityError naming ``what``."""
        layers, diff_ids = self.manifest.layers, self.config.diff_ids
        if len(diff_ids) != len(layers):
            raise IntegrityError(
                f"image {what}: the manifest has {len(layers)} layers but the config lists "
                f"{len(diff_ids)} diff_ids"
            )
        return diff_ids


def select(image: str | ImageRef) -> Selected:
    """Open the layout IMAGE names and pick the descriptor it names.

    ``LAYOUT@digest`` names any manifest or index reachable from index.json: an entry, or one
    inside an index (one platform of a multi-platform image), found by reading indexes.
    """
    ref = parse_image(image) if isinstance(image, str) else image
    layout = Layout.open(ref.layout)
    index = layout.read_index()
    if ref.digest is not None and all(d.digest != ref.digest for d in index.manifests):
        nested = find_nested(layout, index, ref)
        return Selected(layout, ref, nested, listed=False)
    entry = resolve(index, ref.ref, ref.digest, ref.layout)
    return Selected(layout, ref, entry)


def find_nested(layout: Layout, index: Index, ref: ImageRef) -> Descriptor:
    """The descriptor of ``ref.digest`` inside an index that index.json reaches."""
    todo = [(d, 1) for d in index.manifests]
    seen = set()
    while todo:
        desc, depth = todo.pop(0)
        if desc.digest in seen or depth > MAX_DEPTH:
            continue
        seen.add(desc.digest)
        doc = read_document(layout, desc, f"{desc.digest}")
        idx = doc.index if doc.ok else None
        if idx is None:
            continue
        for child in idx.manifests:
            if child.digest == ref.digest:
                return child
            todo.append((child, depth + 1))
    raise NotFoundError(
        f"{ref.layout}: no manifest or index with digest {ref.digest} is reachable from "
        "index.json"
    )


def read_config(layout: Layout, desc: Descriptor) -> ImageConfig:
    """Read and parse an image config."""
    return parse_config(layout.read_blob(desc), f"config {desc.digest}")


def read_checked(layout: Layout, desc: Descriptor, where: str) -> Document:
    """Read a document that the caller needs: a problem raises its error."""
    doc = read_document(layout, desc, where)
    doc.raise_unless_ok()
    return doc


def read_manifest(layout: Layout, desc: Descriptor) -> Manifest:
    """Read an image (or artifact) manifest through the reader: a problem raises, and so does
    a document that is not a manifest (whatever its descriptor says)."""
    doc = read_checked(layout, desc, f"manifest {desc.digest}")
    if doc.manifest is None:
        raise UnsupportedError(f"{desc.digest} is {doc.describe()}, not a manifest")
    return doc.manifest


def read_index_blob(layout: Layout, desc: Descriptor) -> Index:
    """Read an index through the reader (as :func:`read_manifest`)."""
    doc = read_checked(layout, desc, f"index {desc.digest}")
    if doc.index is None:
        raise UnsupportedError(f"{desc.digest} is {doc.describe()}, not an index")
    return doc.index


def resolve_manifest(
    layout: Layout, entry: Descriptor, platform: Platform | None = None
) -> ResolvedManifest:
    """Descend from ``entry`` to one image or artifact manifest (choosing by platform)."""
    indexes: list[Index] = []
    warnings: list[Finding] = []
    desc = entry
    where = str(entry.ref_name or entry.digest)
    for _ in range(MAX_DEPTH):
        doc = read_checked(layout, desc, where)
        warnings += doc.warnings
        if doc.kind is Kind.INDEX and doc.index is not None:
            indexes.append(doc.index)
            desc = pick_platform(doc.index, platform, f"index {desc.digest}")
            where = f"{where} > manifest {desc.digest}"
            continue
        if doc.kind is Kind.IMAGE or doc.kind is Kind.ARTIFACT:
            return ResolvedManifest(layout, entry, tuple(indexes), desc, doc.manifest, doc,
                                    tuple(warnings))
        if doc.kind is Kind.SCHEMA1:
            raise UnsupportedError(
                f"manifest {desc.digest} is Docker schema 1; run 'layouttool convert' first "
                "to upgrade it"
            )
        raise UnsupportedError(f"{desc.digest} is {doc.describe()}, not an image")
    raise InvalidInputError(f"{entry.digest}: indexes nested more than {MAX_DEPTH} deep")


def resolve_image(
    layout: Layout, entry: Descriptor, platform: Platform | None = None, *, purpose: str = "use"
) -> ResolvedImage:
    """Descend from ``entry`` to one image manifest and read its config.

    An artifact is refused in one line that says what it is and that there is nothing to
    ``purpose`` (unpack, export, convert...).
    """
    m = resolve_manifest(layout, entry, platform)
    if m.kind is not Kind.IMAGE or m.manifest is None:
        what = m.document.describe()
        raise UnsupportedError(
            f"{m.manifest_desc.digest} is {what}, not a container image: nothing to {purpose}"
        )
    return ResolvedImage(layout, entry, m.indexes, m.manifest_desc, m.manifest,
                         read_config(layout, m.manifest.config), m.warnings)


def open_image(
    image: str | ImageRef, platform: Platform | None = None, *, purpose: str = "use"
) -> ResolvedImage:
    """Resolve IMAGE to one image."""
    sel = select(image)
    return resolve_image(sel.layout, sel.entry, platform, purpose=purpose)
