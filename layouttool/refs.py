"""The IMAGE syntax (``LAYOUT[:REF]``, ``LAYOUT@sha256:<hex>``) and ref resolution.

Resolution of REF against ``index.json``, in order: exact ``org.opencontainers.image.ref.name``;
exact ``io.containerd.image.name`` (also after Docker name normalisation, so ``busybox`` finds
``docker.io/library/busybox:latest``); then a tag suffix (``:REF``) when it names one image. Several
entries that point at the same digest are one image. Anything else is an error that lists the
candidates (exit 3). A bare LAYOUT names its one image; untagged entries that carry an
``artifactType`` (signatures and SBOMs attached to it) are not counted.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from layouttool import mediatypes as mt
from layouttool.digest import Digest
from layouttool.errors import InvalidInputError, NotFoundError
from layouttool.model import Descriptor, Index, Platform, host_platform

_TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
# image-spec annotations.md ref.name grammar: components separated by "/"
_REF_COMPONENT = r"[A-Za-z0-9]+(?:(?:[-._:@+]|--)[A-Za-z0-9]+)*"
_REF_NAME_RE = re.compile(rf"{_REF_COMPONENT}(?:/{_REF_COMPONENT})*")


@dataclass(frozen=True, slots=True)
class ImageRef:
    """A parsed IMAGE argument."""

    layout: Path
    ref: str | None = None
    digest: Digest | None = None

    def __str__(self) -> str:
        if self.digest is not None:
            return f"{self.layout}@{self.digest}"
        return f"{self.layout}:{self.ref}" if self.ref else str(self.layout)


def parse_image(value: str) -> ImageRef:
    """Split an IMAGE argument into layout path and ref or digest.

    ``LAYOUT@<digest>`` selects by digest. Otherwise, if a prefix of ``value`` ending before a
    ``:`` is an existing directory, that prefix is the layout (so refs may contain ``/`` and
    ``:``); failing that, the split is at the first ``:`` after the last ``/``.
    """
    if not value:
        raise InvalidInputError("empty IMAGE argument")
    at = value.rfind("@")
    if at > 0:
        tail = value[at + 1 :]
        if ":" in tail and not os.path.isdir(value):
            return ImageRef(Path(value[:at]), digest=Digest.parse(tail, what="image digest"))
    if os.path.isdir(value):
        return ImageRef(Path(value))
    start = 0
    while (i := value.find(":", start)) != -1:
        if i > 0 and os.path.isdir(value[:i]):
            ref = value[i + 1 :]
            return ImageRef(Path(value[:i]), ref or None)
        start = i + 1
    slash = value.rfind("/")
    i = value.find(":", slash + 1)
    if i <= 0:
        return ImageRef(Path(value))
    return ImageRef(Path(value[:i]), value[i + 1 :] or None)


def validate_ref_name(ref: str) -> str:
    """Check ``ref`` against the image-spec ref.name grammar."""
    if not _REF_NAME_RE.fullmatch(ref):
        raise InvalidInputError(
            f"invalid ref name {ref!r}: use letters, digits and separators such as "
            "'.', '_', '-', ':', '/' (e.g. 'app:1.0' or 'docker.io/library/app:1.0')"
        )
    return ref


def normalize_docker_name(name: str) -> str:
    """``busybox`` -> ``docker.io/library/busybox:latest``; keeps digests and explicit hosts."""
    if "@" in name:
        repo, _, dig = name.partition("@")
        return f"{normalize_docker_name(repo).rsplit(':', 1)[0]}@{dig}"
    slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > slash:
        repo, tag = name[:colon], name[colon + 1 :]
    else:
        repo, tag = name, "latest"
    first, _, rest = repo.partition("/")
    if not rest:
        repo = f"docker.io/library/{repo}"
    elif not ("." in first or ":" in first or first == "localhost"):
        repo = f"docker.io/{repo}"
    elif first == "index.docker.io":
        repo = f"docker.io/{rest}"
    if repo.startswith("docker.io/") and repo.count("/") == 1:
        repo = "docker.io/library/" + repo.split("/", 1)[1]
    return f"{repo.lower()}:{tag}"


def display_name(desc: Descriptor) -> str:
    """The name to show for an index.json entry: ref.name, else the containerd name, else digest."""
    return (
        desc.annotations.get(mt.ANNOT_REF_NAME)
        or desc.annotations.get(mt.ANNOT_CONTAINERD_NAME)
        or str(desc.digest)
    )


def _unique(matches: list[Descriptor]) -> Descriptor | None:
    if matches and len({d.digest for d in matches}) == 1:
        return matches[0]
    return None


def _attached(desc: Descriptor) -> bool:
    """An untagged entry that says it is an artifact: what ``attach`` and ``oras attach`` list
    beside the image they refer to. A bare LAYOUT means the one image that is left."""
    return desc.artifact_type is not None and not (
        desc.annotations.get(mt.ANNOT_REF_NAME) or desc.annotations.get(mt.ANNOT_CONTAINERD_NAME))


#: names an error lists at most (a layout of thousands of refs made a line of 60 KB)
_SHOWN: Final = 12


def _candidates(entries: list[Descriptor]) -> str:
    names = sorted({display_name(d) for d in entries})
    if not names:
        return "(the layout is empty)"
    more = len(names) - _SHOWN
    shown = ", ".join(names[:_SHOWN])
    return shown if more <= 0 else f"{shown} and {more} more; 'layouttool ls' lists them all"


def resolve(index: Index, ref: str | None, digest: Digest | None, layout: Path) -> Descriptor:
    """Pick the index.json entry that IMAGE names."""
    entries = list(index.manifests)
    if digest is not None:
        for d in entries:
            if d.digest == digest:
                return d
        raise NotFoundError(f"{layout}: no image with digest {digest} in index.json")
    if ref is None:
        only = _unique(entries) or _unique([d for d in entries if not _attached(d)])
        if only is not None:
            return only
        if not entries:
            raise NotFoundError(f"{layout}: the layout holds no image")
        raise NotFoundError(
            f"{layout} holds {len({d.digest for d in entries})} images; name one with "
            f"{layout}:REF (refs: {_candidates(entries)})"
        )
    exact = [d for d in entries if d.annotations.get(mt.ANNOT_REF_NAME) == ref]
    if (hit := _unique(exact)) is not None:
        return hit
    norm = normalize_docker_name(ref) if _looks_like_docker_name(ref) else ref
    by_name = [
        d for d in entries if d.annotations.get(mt.ANNOT_CONTAINERD_NAME) in (ref, norm)
    ]
    if (hit := _unique(by_name)) is not None:
        return hit
    suffix = [
        d
        for d in entries
        if any(
            (d.annotations.get(k) or "").endswith(":" + ref)
            for k in (mt.ANNOT_REF_NAME, mt.ANNOT_CONTAINERD_NAME)
        )
    ]
    if (hit := _unique(suffix)) is not None:
        return hit
    ambiguous = exact or by_name or suffix
    if ambiguous:
        raise NotFoundError(
            f"{layout}: ref {ref!r} is ambiguous; candidates: {_candidates(ambiguous)}"
        )
    raise NotFoundError(f"{layout}: no image named {ref!r} (refs: {_candidates(entries)})")


def _looks_like_docker_name(ref: str) -> bool:
    return bool(re.fullmatch(r"[a-z0-9][a-z0-9._/:-]*(?:@sha256:[a-f0-9]{64})?", ref))


def pick_platform(index: Index, want: Platform | None, what: str) -> Descriptor:
    """The first image manifest of ``index`` that matches ``want`` (default: this host).

    Attestation manifests (BuildKit's ``unknown/unknown`` entries) never match.
    """
    target = want or host_platform()
    images = [
        d for d in index.manifests if mt.is_manifest(d.media_type) or mt.is_index(d.media_type)
    ]
    for d in images:
        if d.platform is not None and d.platform.matches(target):
            return d
    # a single manifest without a platform is the image
    if want is None and len(images) == 1 and images[0].platform is None:
        return images[0]
    have = ", ".join(
        sorted({str(d.platform) for d in images if d.platform and d.platform.os != "unknown"})
    ) or "none"
    raise NotFoundError(
        f"{what}: no image for platform {target} (platforms: {have}); use --platform"
    )


def valid_tag(tag: str) -> bool:
    """Docker tag grammar."""
    return bool(_TAG_RE.fullmatch(tag))
