"""Docker v2 schema 1 manifests: parse them, and synthesize the schema 2 / OCI config.

Schema 1 (``application/vnd.docker.distribution.manifest.v1+json``, and the JWS-signed
``…v1+prettyjws``) has no config blob and no diff_ids. It lists ``fsLayers`` and ``history``
newest first, one ``v1Compatibility`` JSON string per entry; the newest one carries the image
config. Upgrading it (as containers/image and Docker's pull do) means:

* reverse both lists so the base layer comes first;
* drop repeated consecutive layer IDs (Docker's ``fixManifestLayers``: a Dockerfile step that
  changes only the config repeats its parent's ID) and check that every other ID is unique;
* drop the layers of entries marked ``throwaway`` (they are empty tars), keeping their history
  entries as ``empty_layer``;
* compute each kept layer's diff_id by decompressing it (the caller streams the blobs);
* build the config from the newest ``v1Compatibility`` minus its v1-only fields, plus
  ``rootfs`` and ``history``, byte for byte as Docker's pull did (:mod:`layouttool.v1config`:
  the same conversion as for a pre-1.10 save), so its digest is the image ID Docker gave.

JWS signatures are stripped, never verified: a layout has no trust root for them, and the
upgraded manifest is a new, unsigned document anyway. This module does no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from layouttool import mediatypes as mt
from layouttool.digest import Digest
from layouttool.errors import InvalidInputError
from layouttool.model import Platform, parse_json
from layouttool.v1config import V1Image, make_config


@dataclass(frozen=True, slots=True)
class Schema1Entry:
    """One ``fsLayers``/``history`` pair, base first after parsing."""

    blob: Digest
    v1: Mapping[str, Any]
    #: the ``v1Compatibility`` string as the manifest holds it (the config is made from it)
    v1_raw: bytes = b"{}"

    @property
    def throwaway(self) -> bool:
        """True when the entry adds no layer (its blob is an empty tar to be dropped)."""
        return self.v1.get("throwaway") is True

    def history(self, what: str = "v1Compatibility") -> bytes:
        """The schema 2 ``history`` item for this entry, as Docker writes it (empty fields
        omitted, ``empty_layer`` for a throwaway one)."""
        return V1Image.decode(self.v1_raw, what).history(empty_layer=self.throwaway)


@dataclass(frozen=True, slots=True)
class Schema1Manifest:
    """A parsed schema 1 manifest, entries base first, duplicates and signatures removed."""

    raw: bytes
    doc: Mapping[str, Any]
    signed: bool
    entries: tuple[Schema1Entry, ...]

    @property
    def layers(self) -> tuple[Schema1Entry, ...]:
        """The entries that contribute a layer (not ``throwaway``), base first."""
        return tuple(e for e in self.entries if not e.throwaway)

    @property
    def newest(self) -> Schema1Entry:
        """The top entry, whose ``v1Compatibility`` is the image config."""
        return self.entries[-1]

    @property
    def platform(self) -> Platform | None:
        """``os``/``architecture`` of the image config (the manifest's ``architecture`` too)."""
        v1 = self.newest.v1
        arch = v1.get("architecture") or self.doc.get("architecture")
        os_ = v1.get("os") or "linux"
        if isinstance(arch, str) and arch and isinstance(os_, str):
            variant = v1.get("variant")
            return Platform(os_, arch, variant if isinstance(variant, str) else None)
        return None


def parse_schema1(
    raw: bytes, what: str = "manifest", media_type: str | None = None
) -> Schema1Manifest:
    """Parse a schema 1 manifest, signed or not. Raises InvalidInputError when it is malformed."""
    if media_type is not None and not mt.is_schema1(media_type):
        raise InvalidInputError(f"{what}: {media_type!r} is not a Docker schema 1 media type")
    doc = parse_json(raw, what)
    if not isinstance(doc, dict):
        raise InvalidInputError(f"{what}: expected a JSON object")
    if doc.get("schemaVersion") != 1:
        raise InvalidInputError(
            f"{what}: schemaVersion must be 1 for a schema 1 manifest, "
            f"found {doc.get('schemaVersion')!r}"
        )
    signed = "signatures" in doc
    doc = {k: v for k, v in doc.items() if k != "signatures"}
    fs_layers = doc.get("fsLayers")
    history = doc.get("history")
    if not isinstance(fs_layers, list) or not isinstance(history, list):
        raise InvalidInputError(f"{what}: 'fsLayers' and 'history' must be lists")
    if len(fs_layers) != len(history):
        raise InvalidInputError(
            f"{what}: {len(history)} history entries but {len(fs_layers)} fsLayers; "
            "a schema 1 manifest needs one history entry per layer"
        )
    if not fs_layers:
        raise InvalidInputError(f"{what}: no fsLayers")
    newest_first: list[Schema1Entry] = []
    for i, (layer, hist) in enumerate(zip(fs_layers, history, strict=True)):
        blob = Digest.parse(
            layer.get("blobSum") if isinstance(layer, dict) else None,
            what=f"{what} fsLayers[{i}].blobSum",
        )
        v1_raw = hist.get("v1Compatibility") if isinstance(hist, dict) else None
        if not isinstance(v1_raw, str):
            raise InvalidInputError(f"{what}: history[{i}].v1Compatibility must be a string")
        v1 = parse_json(v1_raw.encode(), f"{what} history[{i}].v1Compatibility")
        if not isinstance(v1, dict):
            raise InvalidInputError(f"{what}: history[{i}].v1Compatibility is not an object")
        newest_first.append(Schema1Entry(blob, v1, v1_raw.encode()))
    newest_first = _drop_repeated_ids(newest_first, what)
    return Schema1Manifest(raw, doc, signed, tuple(reversed(newest_first)))


def _drop_repeated_ids(entries: list[Schema1Entry], what: str) -> list[Schema1Entry]:
    """Docker's rule: an ID repeated by its parent entry is one layer; any other repeat is an
    error (it would make a cycle in the v1 chain)."""
    ids = [e.v1.get("id") for e in entries]
    if not all(isinstance(i, str) for i in ids):
        return entries  # no v1 IDs to reason about: keep the manifest as written
    seen: set[object] = set()
    for prev, cur in zip([None, *ids], ids, strict=False):
        if cur != prev and cur in seen:
            raise InvalidInputError(f"{what}: v1 ID {cur} appears more than once")
        seen.add(cur)
    out = list(entries)
    # walk from the base up so indexes after the one removed stay valid
    for i in range(len(out) - 2, -1, -1):
        if out[i].v1.get("id") == out[i + 1].v1.get("id"):
            del out[i]
    return out


def synthesize_config(manifest: Schema1Manifest, diff_ids: Sequence[Digest]) -> bytes:
    """The image config of an upgraded schema 1 manifest, given its layers' diff_ids.

    It is the newest ``v1Compatibility`` without its v1-only fields, plus ``rootfs`` and a
    ``history`` with one item per entry (``empty_layer`` for throwaway ones), in the bytes
    Docker's pull wrote (sorted keys, Go's escaping), so the digest is Docker's image ID.
    """
    if len(diff_ids) != len(manifest.layers):
        raise InvalidInputError(
            f"schema 1 upgrade: {len(diff_ids)} diff_ids for {len(manifest.layers)} layers"
        )
    history = [
        e.history(f"history[{len(manifest.entries) - 1 - i}].v1Compatibility")
        for i, e in enumerate(manifest.entries)
    ]
    what = "history[0].v1Compatibility"
    return make_config(manifest.newest.v1_raw, diff_ids, history, what).raw


__all__ = ["Schema1Entry", "Schema1Manifest", "parse_schema1", "synthesize_config"]
