"""Reading ``docker save`` tarballs: which form, what ``manifest.json`` says, and the names.

Forms (PEERS.md section 4 item 11):

* legacy (Docker 1.10 to 24, skopeo, podman, kaniko, crane): ``manifest.json`` plus
  ``<hex>.json`` (or crane's ``sha256:<hex>``) configs and ``<id>/layer.tar`` (or crane's
  ``<hex>.tar.gz``) layers, which may be symlinks to other members;
* Docker 25+: an OCI layout inside the tar *plus* ``manifest.json`` whose paths are
  ``blobs/sha256/<hex>``. Docker's ``index.json`` is known to be wrong (``"manifests": null``,
  moby#47210; missing entries, moby#51389), so ``manifest.json`` is the truth. Docker lists every
  layer in ``LayerSources`` with a plain OCI layer type, so only a non-distributable media type
  there marks a foreign layer;
* pre-1.10, image format V1 (``repositories`` + ``<id>/json`` chains, no ``manifest.json``):
  :mod:`layouttool.formats.docker_v1` reads the chains and :mod:`layouttool.v1config` makes
  each image's config as Docker 1.10's migration did (so its digest is the image ID
  ``docker load`` gave). Docker dropped that loader in 2025 (API 1.52) and no peer reads it.

This module only interprets; :mod:`layouttool.ops.importer` moves the bytes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from layouttool import mediatypes as mt
from layouttool.digest import Digest
from layouttool.errors import (
    IntegrityError,
    InvalidInputError,
)
from layouttool.formats._tar import MemberIndex, clean_ref
from layouttool.model import Descriptor, parse_json
from layouttool.refs import normalize_docker_name, valid_tag, validate_ref_name

MANIFEST_JSON: Final = "manifest.json"
REPOSITORIES: Final = "repositories"
OCI_INDEX: Final = "index.json"
OCI_LAYOUT: Final = "oci-layout"
#: members read into memory by name whatever they hold (all capped at model.JSON_CAP)
META_MEMBERS: Final = frozenset({MANIFEST_JSON, REPOSITORIES, OCI_INDEX, OCI_LAYOUT})

Form = Literal["docker-save", "docker-save-v1", "oci-archive"]

_BLOB_PATH_RE = re.compile(r"blobs/([a-z0-9]+)/([a-f0-9]+)")
_HEX_JSON_RE = re.compile(r"(?:.*/)?([a-f0-9]{64})\.json")
_CRANE_CONFIG_RE = re.compile(r"(?:.*/)?(sha256:[a-f0-9]{64})")
_REPO_RE = re.compile(
    r"(?:[a-zA-Z0-9.-]+(?::[0-9]+)?/)?[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
    r"(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
)


def detect_form(index: MemberIndex, what: str) -> Form:
    """Which kind of archive ``index`` is: a docker save with manifest.json, a pre-1.10 save
    (``repositories`` and ``<id>/json`` layers), or an OCI archive."""
    if MANIFEST_JSON in index:
        return "docker-save"
    if OCI_INDEX in index and OCI_LAYOUT in index:
        return "oci-archive"
    if REPOSITORIES in index or has_v1_layers(index):
        return "docker-save-v1"
    raise InvalidInputError(
        f"{what}: neither a docker save tarball (no manifest.json, nor repositories and "
        "<id>/json layers) nor an OCI archive (no index.json and oci-layout)"
    )


def has_v1_layers(index: MemberIndex) -> bool:
    """True when some folder holds both ``json`` and ``layer.tar`` (a V1 layer)."""
    return any(
        name.endswith("/json") and f"{name[:-4]}layer.tar" in index for name in index.members
    )


def blob_path_digest(path: str) -> Digest | None:
    """The digest a content-addressed member path encodes: ``blobs/sha256/<hex>``."""
    m = _BLOB_PATH_RE.fullmatch(path)
    if m is None:
        return None
    return Digest.parse(f"{m.group(1)}:{m.group(2)}", what=f"blob path {path!r}")


def config_name_digest(path: str) -> Digest | None:
    """The digest a config member's name claims: ``<hex>.json``, ``sha256:<hex>``, a blob path."""
    if (d := blob_path_digest(path)) is not None:
        return d
    if (m := _HEX_JSON_RE.fullmatch(path)) is not None:
        return Digest("sha256", m.group(1))
    if (m := _CRANE_CONFIG_RE.fullmatch(path)) is not None:
        return Digest.parse(m.group(1))
    return None


def check_config_name(path: str, raw: bytes, what: str) -> Digest:
    """The config digest (its image ID); a name that claims another digest is an error."""
    digest = Digest.of_bytes(raw)
    claimed = config_name_digest(path)
    if claimed is not None and claimed.algorithm == digest.algorithm and claimed != digest:
        raise IntegrityError(
            f"{what}: config {path!r} hashes to {digest}, not the digest its name claims; "
            "the tarball is corrupt or was tampered with"
        )
    return digest


@dataclass(frozen=True, slots=True)
class Tag:
    """A RepoTag: as written (bare names get ``:latest``) and fully qualified."""

    ref: str
    name: str


def parse_repo_tag(value: object, what: str) -> Tag:
    """Check a ``RepoTags`` entry (``name:tag``, no digest) and give its two spellings."""
    if not isinstance(value, str) or not value:
        raise InvalidInputError(f"{what}: RepoTags entry {value!r} is not a non-empty string")
    if "@" in value:
        raise InvalidInputError(
            f"{what}: RepoTags entry {value!r} holds a digest; expected NAME:TAG"
        )
    slash = value.rfind("/")
    colon = value.rfind(":")
    if colon > slash:
        repo, tag = value[:colon], value[colon + 1 :]
        ref = value
    else:
        repo, tag = value, "latest"
        ref = f"{value}:latest"
    if not _REPO_RE.fullmatch(repo) or not valid_tag(tag):
        raise InvalidInputError(f"{what}: RepoTags entry {value!r} is not a valid NAME:TAG")
    validate_ref_name(ref)
    return Tag(ref=ref, name=normalize_docker_name(ref))


@dataclass(frozen=True, slots=True)
class ArchiveImage:
    """One entry of ``manifest.json``, validated (paths normalised, not yet resolved)."""

    position: int
    config_path: str
    layer_paths: tuple[str, ...]
    tags: tuple[Tag, ...]
    #: LayerSources entries by diff_id (only foreign ones matter)
    layer_sources: dict[Digest, Descriptor] = field(default_factory=dict)

    def foreign_layer(self, diff_id: Digest) -> Descriptor | None:
        """The LayerSources descriptor of a non-distributable layer with this diff_id."""
        d = self.layer_sources.get(diff_id)
        if d is not None and mt.is_nondistributable(d.media_type):
            return d
        return None

    def matches(self, wanted: str, config_digest: Digest) -> tuple[Tag, ...] | None:
        """The tags selected by an ``--image`` value (all tags for an ID match), or None."""
        hits = tuple(
            t for t in self.tags if wanted in (t.ref, t.name) or _safe_normalize(wanted) == t.name
        )
        if hits:
            return hits
        w = wanted.removeprefix("sha256:")
        if len(w) >= 12 and config_digest.encoded.startswith(w):
            return self.tags
        return None


def _safe_normalize(name: str) -> str | None:
    try:
        return normalize_docker_name(name)
    except Exception:  # a filter that is not a name simply matches nothing
        return None


def parse_manifest_json(raw: bytes, what: str) -> list[ArchiveImage]:
    """Validate ``manifest.json``: a list of ``{Config, Layers, RepoTags?, LayerSources?}``."""
    doc = parse_json(raw, f"{what}: manifest.json")
    if doc is None:
        raise InvalidInputError(
            f"{what}: manifest.json is null: the tarball lists no image (a broken save?)"
        )
    if not isinstance(doc, list):
        raise InvalidInputError(
            f"{what}: manifest.json must be a list of images, found {type(doc).__name__}"
        )
    if not doc:
        raise InvalidInputError(f"{what}: manifest.json lists no image")
    images = []
    for i, entry in enumerate(doc):
        w = f"{what}: manifest.json[{i}]"
        if not isinstance(entry, dict):
            raise InvalidInputError(f"{w}: expected an object, found {type(entry).__name__}")
        config = clean_ref(entry.get("Config"), f"{w}.Config")
        layers = entry.get("Layers")
        if layers is None:
            layers = []
        if not isinstance(layers, list):
            raise InvalidInputError(f"{w}.Layers must be a list of paths")
        layer_paths = tuple(clean_ref(p, f"{w}.Layers[{j}]") for j, p in enumerate(layers))
        tags_raw = entry.get("RepoTags") or []
        if not isinstance(tags_raw, list):
            raise InvalidInputError(f"{w}.RepoTags must be a list of NAME:TAG strings")
        tags: list[Tag] = []
        for t in tags_raw:
            tag = parse_repo_tag(t, w)
            if tag not in tags:
                tags.append(tag)
        images.append(ArchiveImage(i, config, layer_paths, tuple(tags), _layer_sources(entry, w)))
    return images


def _layer_sources(entry: dict[str, Any], what: str) -> dict[Digest, Descriptor]:
    src = entry.get("LayerSources")
    if src is None:
        return {}
    if not isinstance(src, dict):
        raise InvalidInputError(f"{what}.LayerSources must be an object")
    out: dict[Digest, Descriptor] = {}
    for key, value in src.items():
        diff_id = Digest.parse(key, what=f"{what}.LayerSources key")
        out[diff_id] = Descriptor.from_json(value, f"{what}.LayerSources[{key}]")
    return out
