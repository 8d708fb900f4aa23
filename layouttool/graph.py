"""What references what: walking the content graph of a layout from ``index.json``.

Read-only. The walk follows every descriptor field of the documents it can parse: index
children (nested indexes too), manifest configs and layers, and ``subject``; OCI and Docker media
types alike; Docker schema 1 ``fsLayers``; and, in a manifest-like document of a media type we do
not know, every JSON object shaped like a descriptor. It fails closed: a referenced manifest or
index that is missing, corrupt or not JSON raises (or, with ``on_error``, is reported and its
subtree skipped) instead of being treated as a leaf, so gc can never mistake an unreadable
manifest's blobs for orphans.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

from layouttool import mediatypes as mt
from layouttool.digest import Digest
from layouttool.errors import InvalidInputError, LayoutToolError
from layouttool.model import Descriptor, Index, Manifest, parse_index, parse_json, parse_manifest
from layouttool.store import Layout

Role = Literal["root", "manifest", "index", "config", "layer", "subject", "blob"]


@dataclass(frozen=True, slots=True)
class Node:
    """A descriptor reached by the walk, with how it was reached."""

    desc: Descriptor
    role: Role
    parent: Node | None
    #: the parsed document when the node is a manifest or an index we could read
    doc: Manifest | Index | None = None

    def path(self) -> list[Node]:
        """The nodes from the root to this one."""
        out: list[Node] = []
        n: Node | None = self
        while n is not None:
            out.append(n)
            n = n.parent
        return out[::-1]

    def where(self) -> str:
        """A human path such as ``busybox:latest > manifest sha256:ab12.. > layer sha256:..``."""
        parts = []
        for n in self.path():
            label = n.desc.ref_name if n.role == "root" and n.desc.ref_name else None
            parts.append(label or f"{n.role} {n.desc.digest}")
        return " > ".join(parts)


def is_walkable(media_type: str) -> bool:
    """True for documents whose descriptors we follow by type."""
    return mt.is_index(media_type) or mt.is_manifest(media_type) or mt.is_schema1(media_type)


def _generic_descriptors(doc: Any, what: str) -> list[Descriptor]:
    """Every object shaped like a descriptor inside an unknown manifest-like document."""
    found: list[Descriptor] = []
    stack = [doc]
    while stack:
        v = stack.pop()
        if isinstance(v, dict):
            if {"mediaType", "digest", "size"} <= v.keys():
                found.append(Descriptor.from_json(v, what))
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)
    return found


def _schema1_layers(doc: Any, what: str) -> list[Descriptor]:
    layers = doc.get("fsLayers") if isinstance(doc, dict) else None
    if not isinstance(layers, list):
        raise InvalidInputError(f"{what}: schema 1 manifest without fsLayers")
    out: list[Descriptor] = []
    for i, layer in enumerate(layers):
        d = Digest.parse(
            layer.get("blobSum") if isinstance(layer, dict) else None,
            what=f"{what} fsLayers[{i}]",
        )
        # schema 1 gives no sizes; -1 would be invalid, so size is taken from disk on read
        out.append(Descriptor(media_type=mt.MT_DOCKER_LAYER_GZIP, digest=d, size=0))
    return out


def read_document(layout: Layout, desc: Descriptor, what: str) -> Manifest | Index | None:
    """Read and parse the manifest/index ``desc`` points at (None for other media types)."""
    if mt.is_index(desc.media_type):
        return parse_index(layout.read_blob(desc), what, desc.media_type)
    if mt.is_manifest(desc.media_type):
        return parse_manifest(layout.read_blob(desc), what, desc.media_type)
    return None


def children(layout: Layout, node: Node) -> tuple[Manifest | Index | None, list[Node]]:
    """Parse ``node``'s document (when it is one) and return its child nodes."""
    desc = node.desc
    what = f"{node.role} {desc.digest}"
    doc = read_document(layout, desc, what)
    kids: list[Node] = []
    if isinstance(doc, Index):
        for d in doc.manifests:
            role: Role = "index" if mt.is_index(d.media_type) else "manifest"
            kids.append(Node(d, role, node))
    elif isinstance(doc, Manifest):
        kids.append(Node(doc.config, "config", node))
        kids.extend(Node(d, "layer", node) for d in doc.layers)
    elif mt.is_schema1(desc.media_type):
        raw = layout.read_blob(desc)
        kids.extend(Node(d, "layer", node) for d in _schema1_layers(parse_json(raw, what), what))
    elif node.role in ("root", "manifest", "index", "subject"):
        # An unknown media type where a manifest belongs: if it is JSON, follow every
        # descriptor in it (an artifact manifest of a newer spec); if not, refuse to guess.
        raw = layout.read_blob(desc)
        parsed = parse_json(raw, f"{what} ({desc.media_type})")
        kids.extend(Node(d, "blob", node) for d in _generic_descriptors(parsed, what))
        return None, kids
    if doc is not None and doc.subject is not None:
        kids.append(Node(doc.subject, "subject", node))
    return doc, kids


def walk(
    layout: Layout,
    roots: list[Descriptor] | None = None,
    *,
    on_error: Callable[[Node, LayoutToolError], None] | None = None,
    follow_subject: bool = True,
) -> Iterator[Node]:
    """Yield every node reachable from ``roots`` (default: index.json), each digest once.

    Errors reading a document raise, unless ``on_error`` is given: then it is called and the
    node's subtree is skipped. Leaves (configs, layers) are yielded but never read. A digest
    met first as a leaf and later where a document belongs (a manifest bundled as another
    image's layer) is yielded again as that document and read, so its children are reached.
    """
    if roots is None:
        roots = list(layout.read_index().manifests)
    # Two sets, not one: if a digest seen as a leaf were never read as a document, gc would
    # take that document's config and layers for orphans.
    seen_leaf: set[Digest] = set()
    seen_doc: set[Digest] = set()
    # a subject not followed is yielded as a subject even when the same digest was met as a
    # leaf: the caller (gc) walks such subjects later as documents
    seen_subject: set[Digest] = set()
    stack = [Node(d, "root", None) for d in reversed(roots)]
    while stack:
        node = stack.pop()
        if node.role == "subject" and not follow_subject:
            if node.desc.digest in seen_doc or node.desc.digest in seen_subject:
                continue
            seen_subject.add(node.desc.digest)
            seen_leaf.add(node.desc.digest)
            yield node
            continue
        if node.role in ("config", "layer") or (
            node.role == "blob" and not is_walkable(node.desc.media_type)
        ):
            if node.desc.digest in seen_leaf or node.desc.digest in seen_doc:
                continue
            seen_leaf.add(node.desc.digest)
            yield node
            continue
        if node.desc.digest in seen_doc:
            continue
        seen_doc.add(node.desc.digest)
        try:
            doc, kids = children(layout, node)
        except LayoutToolError as exc:
            if on_error is None:
                raise
            on_error(node, exc)
            yield node
            continue
        yield Node(node.desc, node.role, node.parent, doc)
        stack.extend(reversed(kids))
