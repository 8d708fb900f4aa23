"""Docker <= 1.9 saves (image format V1): ``repositories`` and one ``<id>/`` folder per layer.

Each folder holds ``json`` (the layer's V1 JSON, naming its ``parent``), ``layer.tar`` and
``VERSION``; there is no ``manifest.json`` and no config blob. ``repositories`` maps
``{"name": {"tag": "<id of the top layer>"}}`` (absent when nothing was tagged).

An image is a chain: from a tagged layer (or an untagged *head*, a layer no other layer names
as its parent) follow ``parent`` to the base. :mod:`layouttool.v1config` turns a chain into the
config Docker 1.10's migration made of it; this module only reads the archive's structure and
refuses what is hostile: an ID that is not 64 lowercase hex digits (it is a path in the
archive), a ``parent`` that is missing from the archive, and a parent chain that loops or is
deeper than Docker ever built (:data:`V1_MAX_DEPTH`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from layouttool.digest import Digest
from layouttool.errors import InvalidInputError, SizeLimitError, UnsafeInputError
from layouttool.formats._tar import MemberIndex
from layouttool.formats.docker_archive import REPOSITORIES, Tag, parse_repo_tag
from layouttool.model import parse_json
from layouttool.v1config import V1Image

V1_JSON: Final = "json"
V1_LAYER: Final = "layer.tar"
#: the layers' JSONs are all held at once (a real one is 1-2 KiB): their total is capped
V1_JSON_TOTAL_CAP: Final = 64 << 20
#: the deepest chain read: Docker 1.9 built none deeper (``graph.MaxImageDepth``) and Docker
#: 1.10 loaded none deeper (its layer store's ``maxLayerDepth`` is 125). Every tag of a chain
#: is an image of up to that many layers, so the cap also bounds what a few MB of folders,
#: each tagged, can ask us to write (a manifest and a history per tag)
V1_MAX_DEPTH: Final = 127
_ID_RE: Final = re.compile(r"[a-f0-9]{64}")


def check_id(value: object, what: str) -> str:
    """A V1 layer ID: 64 lowercase hex digits (it names a folder of the archive)."""
    if not isinstance(value, str):
        raise InvalidInputError(f"{what}: a V1 image ID must be a string, found {value!r}")
    if _ID_RE.fullmatch(value):
        return value
    if "/" in value or value in ("", ".", ".."):
        raise UnsafeInputError(
            f"{what}: V1 image ID {value!r} is a path, not 64 hex digits; refusing it "
            "(the tarball is corrupt or malicious)"
        )
    raise InvalidInputError(f"{what}: V1 image ID {value!r} is not 64 lowercase hex digits")


@dataclass(frozen=True, slots=True)
class V1Layer:
    """One ``<id>/`` folder: its V1 JSON as stored, and what it says."""

    id: str
    raw: bytes
    parent: str | None
    #: its item of the image history (:meth:`V1Image.history`), made once for every chain
    history: bytes

    @property
    def layer_path(self) -> str:
        """The archive path of its layer tar."""
        return f"{self.id}/{V1_LAYER}"


@dataclass(frozen=True, slots=True)
class V1Chain:
    """An image of the save: its layers base first, and the tags that name its top."""

    layers: tuple[V1Layer, ...]
    tags: tuple[Tag, ...]

    @property
    def top(self) -> V1Layer:
        """The layer whose JSON is the image's."""
        return self.layers[-1]


def parse_repositories(raw: bytes, what: str) -> tuple[list[tuple[Tag, str]], list[str]]:
    """``repositories`` as ``(tag, top layer ID)`` pairs in the file's order, and the notes
    about digest references skipped (Docker <= 1.9 kept pulls by digest beside the tags, and
    ``docker save REPO`` wrote them: ``{"app": {"sha256:...": ID}}``; no manifest we write
    has that digest)."""
    doc = parse_json(raw, f"{what}: repositories")
    if not isinstance(doc, dict):
        raise InvalidInputError(f"{what}: repositories must be an object of repositories")
    out: list[tuple[Tag, str]] = []
    notes: list[str] = []
    for name, tags in doc.items():
        if not isinstance(tags, dict):
            raise InvalidInputError(f"{what}: repositories[{name!r}] must map tags to IDs")
        for tag, layer_id in tags.items():
            w = f"{what}: repositories[{name!r}][{tag!r}]"
            if _is_digest(tag):
                notes.append(
                    f"{what}: repositories lists {name}@{tag} -> {layer_id}, a pull by digest "
                    "kept by Docker <= 1.9; skipped (the upgraded image has a manifest of "
                    "another digest)"
                )
                continue
            out.append((parse_repo_tag(f"{name}:{tag}", w), check_id(layer_id, w)))
    return out, notes


def _is_digest(value: str) -> bool:
    try:
        Digest.parse(value)
    except InvalidInputError:
        return False
    return True


def read_v1_save(
    index: MemberIndex, read_small: Callable[[str, str], bytes], what: str
) -> tuple[list[V1Chain], list[str]]:
    """Every image of a pre-1.10 save: the tagged ones in ``repositories`` order (an image
    with several tags once), then each untagged head, by ID; and notes on what was skipped.
    ``read_small(path, what)`` gives a small member's bytes. Nothing is read beyond
    ``repositories`` and the layers' JSONs."""
    layers: dict[str, V1Layer] = {}
    total = 0
    for name in sorted(index.members):
        folder, sep, leaf = name.rpartition("/")
        if not sep or leaf != V1_JSON or "/" in folder:
            continue
        layer_id = check_id(folder, f"{what}: folder {folder!r}")
        raw = read_small(name, f"{what}: {name}")
        total += len(raw)
        if total > V1_JSON_TOTAL_CAP:
            raise SizeLimitError(
                f"{what}: the layers' JSONs total more than {V1_JSON_TOTAL_CAP} bytes; "
                "not a docker save tarball"
            )
        image = V1Image.decode(raw, f"{what}: {name}")
        parent = image.strings["parent"] or None
        if parent is not None:
            check_id(parent, f"{what}: {name}: parent")
        layers[layer_id] = V1Layer(layer_id, raw, parent, image.history())
    if not layers:
        raise InvalidInputError(f"{what}: a pre-Docker-1.10 save with no <id>/json layer")

    tagged: dict[str, list[Tag]] = {}
    notes: list[str] = []
    if REPOSITORIES in index:
        pairs, notes = parse_repositories(read_small(REPOSITORIES, what), what)
        for tag, top in pairs:
            if top not in layers:
                raise InvalidInputError(
                    f"{what}: repositories names {tag.ref} -> {top}, which is not in the "
                    "tarball"
                )
            if tag not in tagged.setdefault(top, []):
                tagged[top].append(tag)
    parents = {layer.parent for layer in layers.values()}
    heads = [i for i in sorted(layers) if i not in parents and i not in tagged]
    chains = [
        V1Chain(_chain(layers, top, what), tuple(tagged.get(top, ()))) for top in [*tagged, *heads]
    ]
    return chains, notes


def _chain(layers: dict[str, V1Layer], top: str, what: str) -> tuple[V1Layer, ...]:
    """The layers from ``top`` down its parents, returned base first."""
    out: list[V1Layer] = []
    seen: set[str] = set()
    cur: str | None = top
    while cur is not None:
        if cur in seen:
            raise UnsafeInputError(f"{what}: the parent chain of {top} loops back to {cur}")
        if len(out) == V1_MAX_DEPTH:
            raise SizeLimitError(
                f"{what}: the parent chain of {top} is more than {V1_MAX_DEPTH} layers deep; "
                "Docker never built or loaded such a chain"
            )
        seen.add(cur)
        layer = layers.get(cur)
        if layer is None:
            child = out[-1].id if out else top
            raise InvalidInputError(
                f"{what}: layer {child} names parent {cur}, which is not in the tarball"
            )
        out.append(layer)
        cur = layer.parent
    out.reverse()
    return tuple(out)
