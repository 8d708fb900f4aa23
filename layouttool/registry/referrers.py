"""Referrers on a registry: the OCI 1.1 referrers API, or the fallback tag schema without it.

A registry with the API indexes a manifest's ``subject`` itself (it answers the manifest's
``PUT`` with ``OCI-Subject``) and lists the referrers at ``GET /v2/REPO/referrers/DIGEST``.
Without it (distribution 2.8 is one; it answers that ``GET`` with 404, the one answer that
means "no API"), the referrers of ``sha256:HEX`` are listed by an image index tagged
``sha256-HEX`` (distribution-spec, "Referrers Tag Schema"), which every client that pushes a
referrer updates: read it, add the referrer if missing, put it back. The read happens just
before the write and only what is missing is added, so another client's referrers are kept
(two clients adding at the same instant can still race: the tag schema has no lock).
"""

from __future__ import annotations

import json
from typing import Any

from layouttool import mediatypes as mt
from layouttool.digest import Digest
from layouttool.errors import InvalidInputError
from layouttool.model import Descriptor, Index, parse_index, parse_json
from layouttool.registry.client import Client
from layouttool.registry.errors import NotFoundRegistryError, RegistryError

#: the longest digest part of a fallback tag (tags are at most 128 characters)
_TAG_HEX = 64


def fallback_tag(subject: Digest) -> str:
    """The tag of ``subject``'s referrers index: ``<alg>-<hex>`` (the hex cut at 64)."""
    return f"{subject.algorithm}-{subject.encoded[:_TAG_HEX]}"


def referrer_descriptor(raw: bytes, digest: Digest, media_type: str) -> Descriptor:
    """How a referrers list names a referrer: its media type, digest and size, its
    ``artifactType`` (else its config's media type) and its own annotations."""
    doc = parse_json(raw, f"referrer {digest}")
    if not isinstance(doc, dict):
        raise InvalidInputError(f"referrer {digest} is not a JSON object")
    artifact_type = doc.get("artifactType")
    if not isinstance(artifact_type, str):
        config = doc.get("config")
        artifact_type = config.get("mediaType") if isinstance(config, dict) else None
    annotations = doc.get("annotations")
    return Descriptor(
        media_type=media_type,
        digest=digest,
        size=len(raw),
        artifact_type=artifact_type if isinstance(artifact_type, str) else None,
        annotations=(
            {k: v for k, v in annotations.items() if isinstance(v, str)}
            if isinstance(annotations, dict)
            else {}
        ),
    )


def _read_fallback(client: Client, repo: str, subject: Digest) -> Index | None:
    """The fallback index of ``subject`` (None: there is none)."""
    tag = fallback_tag(subject)
    try:
        raw, ctype, _ = client.get_manifest(repo, tag)
    except NotFoundRegistryError:
        return None
    what = f"{client.registry}: {repo}:{tag}"
    index = parse_index(raw, what, ctype or None)
    if index.media_type != mt.MT_OCI_INDEX:
        raise RegistryError(
            f"{what} is a {index.media_type}, not a referrers index; refused to use or replace it"
        )
    return index


def list_referrers(
    client: Client, repo: str, subject: Digest, artifact_type: str | None = None
) -> list[Descriptor]:
    """The referrers of ``subject`` in ``repo``: the API's list, else the fallback tag's."""
    found = client.referrers(repo, subject, artifact_type)
    if found is not None:
        return found
    index = _read_fallback(client, repo, subject)
    if index is None:
        return []
    return [d for d in index.manifests if not artifact_type or d.artifact_type == artifact_type]


def add_to_fallback(client: Client, repo: str, subject: Digest, referrer: Descriptor) -> bool:
    """Add ``referrer`` to ``subject``'s fallback index (read just before it is written, so
    the referrers others added are kept); False when it was listed already."""
    index = _read_fallback(client, repo, subject)
    doc: dict[str, Any] = (
        dict(index.doc)
        if index is not None
        else {"schemaVersion": 2, "mediaType": mt.MT_OCI_INDEX, "manifests": []}
    )
    if index is not None and any(d.digest == referrer.digest for d in index.manifests):
        return False
    manifests = doc.get("manifests") or []
    doc["manifests"] = [*manifests, referrer.to_json()]
    raw = json.dumps(doc, separators=(",", ":")).encode()
    client.put_manifest(repo, fallback_tag(subject), raw, mt.MT_OCI_INDEX)
    return True


__all__ = ["add_to_fallback", "fallback_tag", "list_referrers", "referrer_descriptor"]
