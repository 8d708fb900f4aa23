"""Reading an OCI archive: a tar of an OCI image layout (``oci-layout``, ``index.json``,
``blobs/``) with no ``manifest.json``, as BuildKit, ``skopeo copy oci-archive:`` and regctl
write.

Its ``index.json`` entries are imported as they are: same descriptors, same annotations, every
blob copied byte for byte with its digest checked. This module decides *which* blobs: everything
reachable from the entries (nested indexes, manifests, configs, layers, and a ``subject`` when
the archive holds it). The importer moves the bytes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from layouttool import mediatypes as mt
from layouttool.digest import Digest
from layouttool.errors import InvalidInputError, NotFoundError
from layouttool.model import Descriptor, Manifest, parse_index, parse_manifest

#: nesting depth of indexes we follow
MAX_DEPTH = 8


def blob_member(digest: Digest) -> str:
    """The archive path of a blob."""
    return f"blobs/{digest.algorithm}/{digest.encoded}"


@dataclass(slots=True)
class OciPlan:
    """What to copy out of an OCI archive."""

    entries: tuple[Descriptor, ...]
    #: manifests and indexes by digest: raw bytes, already checked against the digest
    documents: dict[Digest, bytes] = field(default_factory=dict)
    #: configs, layers and any other leaf blobs to copy
    leaves: dict[Digest, Descriptor] = field(default_factory=dict)
    #: (index.json entry, manifest descriptor, manifest) of every image manifest reached
    images: list[tuple[Descriptor, Descriptor, Manifest]] = field(default_factory=list)


def plan_oci_archive(
    index_raw: bytes,
    read_doc: Callable[[Descriptor], bytes | None],
    what: str,
    select: Callable[[Descriptor], bool] | None = None,
) -> OciPlan:
    """Walk from the archive's ``index.json`` and list every blob an import must copy.

    ``read_doc(desc)`` returns the verified bytes of a (small) document blob, or None when the
    archive does not hold it. ``select`` keeps only some index.json entries.
    """
    index = parse_index(index_raw, f"{what}: index.json")
    if not index.manifests:
        raise InvalidInputError(f"{what}: the OCI archive's index.json lists no image")
    entries = tuple(d for d in index.manifests if select is None or select(d))
    plan = OciPlan(entries=entries)
    stack: list[tuple[Descriptor, Descriptor, int, bool]] = [
        (d, d, 0, True) for d in reversed(entries)
    ]
    seen: set[Digest] = set()
    while stack:
        desc, entry, depth, required = stack.pop()
        if desc.digest in seen:
            continue
        seen.add(desc.digest)
        w = f"{what}: {desc.media_type} {desc.digest}"
        if depth > MAX_DEPTH:
            raise InvalidInputError(f"{w}: indexes nested more than {MAX_DEPTH} deep")
        if mt.is_index(desc.media_type) or mt.is_manifest(desc.media_type):
            raw = read_doc(desc)
            if raw is None:
                if not required:
                    continue  # a subject the archive does not carry: a weak link
                raise NotFoundError(f"{w} is referenced but not in the archive")
            plan.documents[desc.digest] = raw
            if mt.is_index(desc.media_type):
                idx = parse_index(raw, w, desc.media_type)
                stack.extend((d, entry, depth + 1, True) for d in reversed(idx.manifests))
                subject = idx.subject
            else:
                man = parse_manifest(raw, w, desc.media_type)
                plan.images.append((entry, desc, man))
                plan.leaves.setdefault(man.config.digest, man.config)
                for layer in man.layers:
                    plan.leaves.setdefault(layer.digest, layer)
                subject = man.subject
            if subject is not None:
                stack.append((subject, entry, depth + 1, False))
            continue
        # anything else (schema 1, an artifact manifest of a newer spec, a subject blob)
        # is copied as an opaque blob
        if required:
            plan.leaves.setdefault(desc.digest, desc)
    return plan
