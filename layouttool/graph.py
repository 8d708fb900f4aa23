"""What references what: walking the content graph of a layout from ``index.json``, and
finding the referrers of a manifest.

Read-only. Every document is read through :func:`layouttool.reader.read_document`, so the walk
follows what a document *is* (its own shape and media type), whatever its descriptor says:
index children (nested indexes too), manifest configs and layers, ``subject``, OCI and Docker
types alike, Docker schema 1 ``fsLayers``, the ``blobs`` of an OCI artifact manifest and, in a
JSON document of a media type we do not know, every object shaped like a descriptor.

What the reader finds goes to the caller: a warning (a ``subject`` or a platform manifest
absent, a media type that disagrees) does not stop the walk; a problem (a document that is
missing where something needs it, corrupt, or unparseable) stops the walk *below* that
document, so gc can never take an unreadable manifest's blobs for orphans.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from typing import Final, NamedTuple

from layouttool import mediatypes as mt
from layouttool.digest import Digest
from layouttool.errors import (
    IntegrityError,
    InvalidInputError,
    NotFoundError,
    UnsafeInputError,
)
from layouttool.model import JSON_CAP, Descriptor, Index, Manifest, parse_json
from layouttool.reader import Document, Finding, Kind, Role, read_document
from layouttool.store import BlobDirs, BlobEntry, Layout

__all__ = [
    "Node",
    "Referrer",
    "Role",
    "find_referrers",
    "is_walkable",
    "sniff_referrer",
    "walk",
]


@dataclass(frozen=True, slots=True)
class Node:
    """A descriptor reached by the walk, with how it was reached."""

    desc: Descriptor
    role: Role
    parent: Node | None
    #: the document as the reader found it, when the node was read as one
    document: Document | None = None
    #: (``walk(repeats=True)``) this digest was met before; it is not read again
    repeat: bool = False

    @property
    def doc(self) -> Manifest | Index | None:
        """The parsed manifest or index, when the node is one that could be read."""
        d = self.document
        if d is None or not d.ok:
            return None
        return d.content if isinstance(d.content, Manifest | Index) else None

    @property
    def in_schema1(self) -> bool:
        """True for a layer of a schema 1 manifest (which gives no sizes)."""
        p = self.parent
        return p is not None and p.document is not None and p.document.kind is Kind.SCHEMA1

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
    return mt.is_document(media_type)


#: media types that are never documents, wherever they are met (an index.json entry or an
#: index child typed as a layer or a config is not read as a document)
_LEAF_TYPES: Final = mt.LAYER_TYPES | mt.CONFIG_TYPES | {mt.MT_OCI_EMPTY}


def _is_leaf(node: Node) -> bool:
    """True when the walk yields ``node`` without reading it (configs and layers are tested
    before the call: this runs for every node of a gc)."""
    if node.role == "blob":
        return not mt.is_document(node.desc.media_type)
    return node.desc.media_type in _LEAF_TYPES


def walk(
    layout: Layout,
    roots: Sequence[Descriptor | Node] | None = None,
    *,
    on_finding: Callable[[Finding], None] | None = None,
    follow_subject: bool = True,
    repeats: bool = False,
) -> Iterator[Node]:
    """Yield every node reachable from ``roots`` (default: index.json), each digest once.

    A root is a descriptor (an index.json entry) or a :class:`Node` (to give it another role,
    such as ``subject``). Documents are read through the reader and yielded with their
    :class:`~layouttool.reader.Document`; its findings go to ``on_finding``. Without
    ``on_finding`` the first problem raises its error (warnings are dropped); with it, a
    document with a problem is yielded and its subtree skipped. Leaves (configs, layers) are
    yielded but never read. A digest met first as a leaf and later where a document belongs
    (a manifest bundled as another image's layer) is yielded again as that document and read,
    so its children are reached. With ``repeats``, every later descriptor of a digest already
    met is yielded too (``repeat=True``, with the document read the first time), so that
    ``verify`` can check each descriptor's size; a document whose read failed through one
    descriptor is read again through another of a different size or role.
    """
    if roots is None:
        roots = list(layout.read_index().manifests)
    # Two sets, not one: if a digest seen as a leaf were never read as a document, gc would
    # take that document's config and layers for orphans.
    seen_leaf: set[Digest] = set()
    read: dict[Digest, Document | None] = {}
    # by role too: what is a warning through a weak link (an absent subject) is a problem
    # through a strong one (an absent index.json entry), so the first must not hide the second
    failed: dict[tuple[Digest, int, str], Document] = {}
    # a subject not followed is yielded as a subject even when the same digest was met as a
    # leaf: the caller (gc) walks such subjects later as documents
    seen_subject: set[Digest] = set()
    stack = [r if isinstance(r, Node) else Node(r, "root", None) for r in reversed(roots)]
    while stack:
        node = stack.pop()
        digest = node.desc.digest
        # a root given the subject role is read (absent, it is a warning): the caller walks
        # the subjects it was handed back this way, once each
        if node.role == "subject" and not follow_subject and node.parent is not None:
            if digest in read or digest in seen_subject:
                continue
            seen_subject.add(digest)
            seen_leaf.add(digest)
            yield node
            continue
        if node.role == "config" or node.role == "layer" or _is_leaf(node):
            if digest in seen_leaf or digest in read:
                if repeats:
                    yield replace(node, repeat=True)
                continue
            seen_leaf.add(digest)
            yield node
            continue
        if digest in read:
            if repeats:
                yield replace(node, document=read[digest], repeat=True)
            continue
        key = (digest, node.desc.size, node.role)
        if failed and key in failed:
            if repeats:
                yield replace(node, document=failed[key], repeat=True)
            continue
        doc = read_document(layout, node.desc, node.where(), node.role)
        for f in doc.findings:
            if on_finding is not None:
                on_finding(f)
            elif f.severity == "problem":
                raise f.error()
        node = Node(node.desc, node.role, node.parent, doc)
        if not doc.ok:
            failed[key] = doc
            yield node
            continue
        # the documents are kept only when a repeat may ask for one again
        read[digest] = doc if repeats else None
        yield node
        stack.extend(Node(d, role, node) for role, d in reversed(doc.refs))


# ------------------------------------------------------------------------------ referrers
#: how many leading bytes are looked at to decide whether a blob may be a JSON document
_SNIFF: Final = 64
_JSON_WS: Final = b" \t\r\n"


class Referrer(NamedTuple):
    """A document whose ``subject`` names another manifest (a NamedTuple: gc imports this
    module, and a dataclass costs ~1 ms of start-up)."""

    #: as the distribution-spec referrers API lists it: the document's media type, digest,
    #: size, ``artifactType`` (its own, else its config's media type) and annotations
    descriptor: Descriptor
    subject: Digest


def sniff_referrer(dirs: BlobDirs, e: BlobEntry, st: os.stat_result) -> Referrer | None:
    """If the blob of ``e`` (``st`` its lstat) is a referrer (a JSON object with a
    ``subject``), say so; else None. Cheap for layers: only the first bytes are read, nothing
    is hashed.

    A blob that cannot be read for a reason other than its content (permission, I/O) raises:
    we cannot tell whether it is a referrer, so gc must not delete it.
    """
    size, digest = st.st_size, e.digest
    if digest is None or not stat.S_ISREG(st.st_mode) or size > JSON_CAP or size < 2:
        return None
    # Unverified on purpose: hashing a whole layer to learn that it is not JSON is the cost gc
    # avoids, and a blob whose first bytes are not JSON cannot be a referrer, corrupt or not.
    head = dirs.head(e, _SNIFF)
    if head is None:
        return None
    rest = head.lstrip(_JSON_WS)
    if not rest.startswith(b"{") and (rest or len(head) < _SNIFF):
        return None  # (all whitespace so far: JSON may still follow, so read on)
    if len(head) < size:
        # a JSON object (a config, a manifest): still unverified, whole (it is small)
        whole = dirs.head(e, size + 1)
        if whole is None:
            return None
    else:
        whole = head
    # no subject, no referrer: no hashing, no parsing (a key may hide behind a \u escape)
    if b'"subject"' not in whole and b"\\u" not in whole:
        return None
    try:
        # a candidate: only now read verified (the digest is checked at EOF)
        with dirs.open_blob(digest, size) as r:
            raw = r.read()
        doc = parse_json(raw, f"blob {digest}")
    except (InvalidInputError, IntegrityError, UnsafeInputError, NotFoundError):
        # not JSON, corrupt (its content is not what its name says), not a regular file, or
        # gone: not a document anyone can refer to by this digest
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("subject"), dict):
        return None
    try:
        subject = Descriptor.from_json(doc["subject"], f"blob {digest} subject")
    except InvalidInputError:
        return None
    declared = doc.get("mediaType")
    if isinstance(declared, str):
        media_type = declared
    elif "manifests" in doc:
        media_type = mt.MT_OCI_INDEX
    elif "config" in doc:
        media_type = mt.MT_OCI_MANIFEST
    else:
        media_type = ""  # unknown: walked as a document of an unknown type
    artifact_type = doc.get("artifactType")
    if not isinstance(artifact_type, str):
        config = doc.get("config")
        artifact_type = config.get("mediaType") if isinstance(config, dict) else None
    annotations = doc.get("annotations")
    desc = Descriptor(
        media_type=media_type,
        digest=digest,
        size=size,
        artifact_type=artifact_type if isinstance(artifact_type, str) else None,
        annotations=(
            {k: v for k, v in annotations.items() if isinstance(v, str)}
            if isinstance(annotations, dict) else {}
        ),
    )
    return Referrer(desc, subject.digest)


def find_referrers(
    layout: Layout, subject: Digest, artifact_type: str | None = None
) -> tuple[Descriptor, ...]:
    """Every document in the layout, listed in index.json or not, whose ``subject`` is
    ``subject`` (and whose artifact type is ``artifact_type``, when given), as descriptors in
    the referrers API's form, sorted by digest.

    Every blob is looked at, but a layer only by its first bytes; a blob that cannot be read
    for a reason other than its content raises.
    """
    found = []
    with layout.pinned() as dirs:
        for e in dirs.scan():
            if e.digest is None:
                continue
            st = dirs.lstat(e)
            if st is None:
                continue
            ref = sniff_referrer(dirs, e, st)
            if ref is None or ref.subject != subject:
                continue
            if artifact_type is None or ref.descriptor.artifact_type == artifact_type:
                found.append(ref.descriptor)
    return tuple(sorted(found, key=lambda d: d.digest))
