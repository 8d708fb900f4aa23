"""Typed models of descriptors, platforms, manifests, indexes and image configs.

Parsing is strict on the fields we rely on and keeps everything else: each document model holds
its raw bytes (a digest is always of the raw bytes) and the parsed JSON object, so a rewrite
changes only what it means to change and unknown fields survive. Descriptors keep their unknown
fields in ``extra``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Final, NamedTuple

from layouttool import mediatypes as mt
from layouttool.digest import Digest
from layouttool.errors import InvalidInputError

#: JSON documents larger than this are refused before parsing (containerd caps at 20 MiB)
JSON_CAP: Final = 16 << 20

_DESC_KEYS: Final = frozenset(
    {"mediaType", "digest", "size", "urls", "annotations", "platform", "artifactType", "data"}
)
_PLATFORM_KEYS: Final = frozenset({"os", "architecture", "variant", "os.version", "os.features"})
#: the fields of most descriptors (a layer's, a config's): no optional field to check
_REQUIRED_DESC_KEYS: Final = frozenset({"mediaType", "digest", "size"})


def parse_json(raw: bytes, what: str) -> Any:
    """Parse a JSON document, refusing oversized or non-UTF-8 input with InvalidInputError."""
    if len(raw) > JSON_CAP:
        raise InvalidInputError(f"{what}: JSON document of {len(raw)} bytes exceeds {JSON_CAP}")
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise InvalidInputError(f"{what}: not valid JSON: {exc}") from None


def dump_json(doc: Any) -> bytes:
    """Serialise a document the way we write new blobs: compact, key order as given, UTF-8."""
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


def _str(obj: Mapping[str, Any], key: str, what: str, *, required: bool) -> str | None:
    v = obj.get(key)
    if v is None:
        if required:
            raise InvalidInputError(f"{what}: missing {key!r}")
        return None
    if not isinstance(v, str):
        raise InvalidInputError(f"{what}: {key!r} must be a string, not {type(v).__name__}")
    return v


def _obj(v: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(v, dict):
        raise InvalidInputError(f"{what}: expected a JSON object, found {type(v).__name__}")
    return v


def _annotations(obj: Mapping[str, Any], what: str) -> Mapping[str, str]:
    a = obj.get("annotations")
    if a is None:
        return {}
    a = _obj(a, f"{what}.annotations")
    for k, v in a.items():
        if not isinstance(v, str):
            raise InvalidInputError(f"{what}.annotations[{k!r}] must be a string")
    return dict(a)


@dataclass(frozen=True, slots=True)
class Platform:
    """The platform an image runs on (image-index.md)."""

    os: str
    architecture: str
    variant: str | None = None
    os_version: str | None = None
    os_features: tuple[str, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        s = f"{self.os}/{self.architecture}"
        return f"{s}/{self.variant}" if self.variant else s

    @classmethod
    def parse(cls, value: str) -> Platform:
        """Parse ``os/arch[/variant]``."""
        parts = value.split("/")
        if len(parts) not in (2, 3) or not all(parts):
            raise InvalidInputError(f"invalid platform {value!r}: expected OS/ARCH[/VARIANT]")
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else None)

    @classmethod
    def from_json(cls, obj: Any, what: str = "platform") -> Platform:
        """Parse a platform object."""
        o = _obj(obj, what)
        feats = o.get("os.features") or ()
        if not isinstance(feats, list | tuple) or not all(isinstance(f, str) for f in feats):
            raise InvalidInputError(f"{what}: 'os.features' must be a list of strings")
        return cls(
            os=_str(o, "os", what, required=True) or "",
            architecture=_str(o, "architecture", what, required=True) or "",
            variant=_str(o, "variant", what, required=False),
            os_version=_str(o, "os.version", what, required=False),
            os_features=tuple(feats),
            extra={k: v for k, v in o.items() if k not in _PLATFORM_KEYS},
        )

    def to_json(self) -> dict[str, Any]:
        """The JSON object."""
        d: dict[str, Any] = {"architecture": self.architecture, "os": self.os}
        if self.os_version:
            d["os.version"] = self.os_version
        if self.os_features:
            d["os.features"] = list(self.os_features)
        if self.variant:
            d["variant"] = self.variant
        d.update(self.extra)
        return d

    def matches(self, want: Platform) -> bool:
        """True when this platform satisfies ``want`` (no variant in ``want`` matches any)."""
        if (self.os, self.architecture) != (want.os, want.architecture):
            return False
        return want.variant is None or _norm_variant(self) == _norm_variant(want)


def _norm_variant(p: Platform) -> str | None:
    # arm64 images often omit "v8", and amd64 "v1" (containerd's normalisation)
    if p.variant is None:
        return {"arm64": "v8", "amd64": "v1"}.get(p.architecture)
    return p.variant


def host_platform() -> Platform:
    """The platform of this machine, as ``linux/<GOARCH>[/variant]``."""
    import platform as _p

    m = _p.machine().lower()
    arch = {
        "x86_64": "amd64",
        "amd64": "amd64",
        "aarch64": "arm64",
        "arm64": "arm64",
        "i686": "386",
        "i386": "386",
        "ppc64le": "ppc64le",
        "s390x": "s390x",
        "riscv64": "riscv64",
    }.get(m)
    if arch is None and m.startswith("armv7"):
        return Platform("linux", "arm", "v7")
    if arch is None and m.startswith("armv6"):
        return Platform("linux", "arm", "v6")
    return Platform("linux", arch or m)


@dataclass(frozen=True, slots=True)
class Descriptor:
    """A content descriptor (descriptor.md)."""

    media_type: str
    digest: Digest
    size: int
    urls: tuple[str, ...] = ()
    annotations: Mapping[str, str] = field(default_factory=dict)
    platform: Platform | None = None
    artifact_type: str | None = None
    data: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, obj: Any, what: str = "descriptor") -> Descriptor:
        """Parse a descriptor, validating the digest (before it can become a path) and size."""
        o = _obj(obj, what)
        media_type = _str(o, "mediaType", what, required=True) or ""
        digest = Digest.parse(o.get("digest"), what=f"{what} digest")
        size = o.get("size")
        if not isinstance(size, int) or isinstance(size, bool):
            raise InvalidInputError(f"{what}: 'size' must be an integer")
        if size < 0:
            raise InvalidInputError(f"{what}: negative size {size}")
        if len(o) == 3 and o.keys() == _REQUIRED_DESC_KEYS:
            # the common case, taken ~40% faster (gc and verify parse thousands)
            return cls(media_type, digest, size)
        urls = o.get("urls") or ()
        if not isinstance(urls, list | tuple) or not all(isinstance(u, str) for u in urls):
            raise InvalidInputError(f"{what}: 'urls' must be a list of strings")
        plat = o.get("platform")
        data = _str(o, "data", what, required=False)
        return cls(
            media_type=media_type,
            digest=digest,
            size=size,
            urls=tuple(urls),
            annotations=_annotations(o, what),
            platform=Platform.from_json(plat, f"{what}.platform") if plat is not None else None,
            artifact_type=_str(o, "artifactType", what, required=False),
            data=data,
            extra={k: v for k, v in o.items() if k not in _DESC_KEYS},
        )

    def to_json(self) -> dict[str, Any]:
        """The JSON object, with unknown fields kept."""
        d: dict[str, Any] = {
            "mediaType": self.media_type,
            "digest": str(self.digest),
            "size": self.size,
        }
        if self.urls:
            d["urls"] = list(self.urls)
        if self.annotations:
            d["annotations"] = dict(self.annotations)
        if self.data is not None:
            d["data"] = self.data
        if self.platform is not None:
            d["platform"] = self.platform.to_json()
        if self.artifact_type is not None:
            d["artifactType"] = self.artifact_type
        d.update(self.extra)
        return d

    def with_(self, **changes: Any) -> Descriptor:
        """A copy with ``changes`` applied (dataclasses.replace)."""
        return replace(self, **changes)

    @property
    def ref_name(self) -> str | None:
        """The ``org.opencontainers.image.ref.name`` annotation."""
        return self.annotations.get(mt.ANNOT_REF_NAME)


def _descriptor_list(doc: Mapping[str, Any], key: str, what: str) -> tuple[Descriptor, ...]:
    v = doc.get(key)
    if v is None:
        return ()
    if not isinstance(v, list):
        raise InvalidInputError(f"{what}: {key!r} must be a list")
    return tuple(Descriptor.from_json(d, f"{what} {key}[{i}]") for i, d in enumerate(v))


@dataclass(frozen=True, slots=True)
class Manifest:
    """An OCI image manifest or a Docker v2 schema 2 manifest."""

    raw: bytes
    doc: Mapping[str, Any]
    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]
    subject: Descriptor | None
    annotations: Mapping[str, str]
    artifact_type: str | None

    @property
    def digest(self) -> Digest:
        """sha256 of the raw bytes."""
        return Digest.of_bytes(self.raw)

    @property
    def is_docker(self) -> bool:
        """True for a Docker v2 schema 2 manifest."""
        return self.media_type == mt.MT_DOCKER_MANIFEST

    @property
    def is_image(self) -> bool:
        """True for a container image; False for an artifact.

        An artifact is a manifest with an ``artifactType``, or whose config is not an image
        config, or whose layers are not all tar layers, whatever its config media type says
        (image-spec v1.1 "Guidelines for Artifact Usage"; old-style artifacts type an empty
        ``{}`` config as an image config and carry non-layer blobs as layers).
        """
        if self.artifact_type is not None or self.config.media_type not in mt.CONFIG_TYPES:
            return False
        # (a set, not all() over a generator: gc classifies thousands of manifests)
        return {d.media_type for d in self.layers} <= mt.LAYER_TYPES

    @property
    def effective_artifact_type(self) -> str | None:
        """What kind of artifact this is: ``artifactType``, else the config's media type (the
        referrers API's rule); None for an image."""
        if self.is_image:
            return None
        return self.artifact_type or self.config.media_type


@dataclass(frozen=True, slots=True)
class Index:
    """An OCI image index or a Docker manifest list (index.json is one too)."""

    raw: bytes
    doc: Mapping[str, Any]
    media_type: str
    manifests: tuple[Descriptor, ...]
    subject: Descriptor | None
    annotations: Mapping[str, str]

    @property
    def digest(self) -> Digest:
        """sha256 of the raw bytes."""
        return Digest.of_bytes(self.raw)


class ArtifactManifest(NamedTuple):
    """An OCI artifact manifest of image-spec v1.1's release candidates: ``blobs`` and an
    ``artifactType``, no config (oras 1.0 wrote these; v1.1.0 dropped the type). A NamedTuple:
    rarely met, and a frozen dataclass costs every command ~1 ms of start-up."""

    raw: bytes
    doc: Mapping[str, Any]
    media_type: str
    artifact_type: str | None
    blobs: tuple[Descriptor, ...]
    subject: Descriptor | None
    annotations: Mapping[str, str]

    @property
    def digest(self) -> Digest:
        """sha256 of the raw bytes."""
        return Digest.of_bytes(self.raw)


@dataclass(frozen=True, slots=True)
class ImageConfig:
    """An image configuration (config.md); only the fields we use are typed."""

    raw: bytes
    doc: Mapping[str, Any]
    architecture: str | None
    os: str | None
    variant: str | None
    diff_ids: tuple[Digest, ...]

    @property
    def digest(self) -> Digest:
        """sha256 of the raw bytes (Docker's image ID)."""
        return Digest.of_bytes(self.raw)

    @property
    def platform(self) -> Platform | None:
        """The platform the config declares."""
        if not self.os or not self.architecture:
            return None
        return Platform(self.os, self.architecture, self.variant)


#: "not parsed yet" (a parsed document may be any JSON value, ``None`` included)
_UNPARSED: Final[Any] = object()


def _document(
    raw: bytes,
    what: str,
    media_type: str | None,
    *,
    parsed: Any,
    kind: str,
    forbidden: tuple[str, ...],
    default: str,
    accept: Callable[[str | None], bool],
) -> tuple[Mapping[str, Any], str, Descriptor | None]:
    """The checks manifests and indexes share: JSON object, no fields of the other kind
    (CVE-2021-41190: a document must not be readable as both), schemaVersion 2, a media type of
    this kind. Returns the document, its media type and its subject.

    The media type is the document's own ``mediaType``; without one, the descriptor's
    (``media_type``) when it names this kind of document, else ``default``. A descriptor that
    disagrees with the document is not an error here: the reader (:mod:`layouttool.reader`)
    reports it as a warning, since the document says what it is.
    """
    doc = _obj(parse_json(raw, what) if parsed is _UNPARSED else parsed, what)
    declared = _str(doc, "mediaType", what, required=False)
    if declared is None:  # an empty string is a (wrong) media type, not a missing one
        declared = media_type if media_type is not None and accept(media_type) else default
    if any(k in doc for k in forbidden):
        fields = (
            f"a {forbidden[0]!r} field"
            if len(forbidden) == 1
            else " or ".join(repr(k) for k in forbidden) + " fields"
        )
        raise InvalidInputError(f"{what}: {kind} must not have {fields}")
    sv = doc.get("schemaVersion")
    if sv != 2:
        raise InvalidInputError(f"{what}: schemaVersion must be 2, found {sv!r}")
    if not accept(declared):
        raise InvalidInputError(f"{what}: {declared!r} is not {kind} media type")
    subject = doc.get("subject")
    subj = Descriptor.from_json(subject, f"{what} subject") if subject is not None else None
    return doc, declared, subj


def parse_manifest(
    raw: bytes, what: str = "manifest", media_type: str | None = None, *, parsed: Any = _UNPARSED
) -> Manifest:
    """Parse an image manifest; ``media_type`` is what the referring descriptor says (used
    only when the document has no ``mediaType`` of its own). ``parsed`` is ``raw`` already
    parsed as JSON (the reader has it), so it is not parsed twice."""
    doc, declared, subject = _document(
        raw, what, media_type, parsed=parsed, kind="an image manifest", forbidden=("manifests",),
        default=mt.MT_OCI_MANIFEST, accept=mt.is_manifest,
    )
    return Manifest(
        raw=raw,
        doc=doc,
        media_type=declared,
        config=Descriptor.from_json(doc.get("config"), f"{what} config"),
        layers=_descriptor_list(doc, "layers", what),
        subject=subject,
        annotations=_annotations(doc, what),
        artifact_type=_str(doc, "artifactType", what, required=False),
    )


def parse_index(
    raw: bytes, what: str = "index", media_type: str | None = None, *, parsed: Any = _UNPARSED
) -> Index:
    """Parse an image index / manifest list (or index.json); ``parsed`` as for
    :func:`parse_manifest`.

    ``"manifests": null`` (Docker 25's known bug, moby#47210) reads as an empty list.
    """
    doc, declared, subject = _document(
        raw, what, media_type, parsed=parsed, kind="an index", forbidden=("config", "layers"),
        default=mt.MT_OCI_INDEX, accept=mt.is_index,
    )
    return Index(
        raw=raw,
        doc=doc,
        media_type=declared,
        manifests=_descriptor_list(doc, "manifests", what),
        subject=subject,
        annotations=_annotations(doc, what),
    )


def parse_artifact_manifest(
    raw: bytes, what: str = "artifact manifest", *, parsed: Any = _UNPARSED
) -> ArtifactManifest:
    """Parse an OCI artifact manifest (``application/vnd.oci.artifact.manifest.v1+json``);
    ``parsed`` as for :func:`parse_manifest`."""
    doc = _obj(parse_json(raw, what) if parsed is _UNPARSED else parsed, what)
    for key in ("manifests", "config", "layers"):
        if key in doc:
            raise InvalidInputError(f"{what}: an artifact manifest must not have a {key!r} field")
    subject = doc.get("subject")
    return ArtifactManifest(
        raw=raw,
        doc=doc,
        media_type=mt.MT_OCI_ARTIFACT_MANIFEST,
        artifact_type=_str(doc, "artifactType", what, required=False),
        blobs=_descriptor_list(doc, "blobs", what),
        subject=Descriptor.from_json(subject, f"{what} subject") if subject is not None else None,
        annotations=_annotations(doc, what),
    )


def parse_config(raw: bytes, what: str = "config") -> ImageConfig:
    """Parse an image configuration (OCI or Docker)."""
    doc = _obj(parse_json(raw, what), what)
    rootfs = doc.get("rootfs")
    diff_ids: tuple[Digest, ...] = ()
    if rootfs is not None:
        r = _obj(rootfs, f"{what} rootfs")
        ids = r.get("diff_ids") or []
        if not isinstance(ids, list):
            raise InvalidInputError(f"{what}: rootfs.diff_ids must be a list")
        diff_ids = tuple(
            Digest.parse(d, what=f"{what} rootfs.diff_ids[{i}]") for i, d in enumerate(ids)
        )
    return ImageConfig(
        raw=raw,
        doc=doc,
        architecture=_str(doc, "architecture", what, required=False),
        os=_str(doc, "os", what, required=False),
        variant=_str(doc, "variant", what, required=False),
        diff_ids=diff_ids,
    )


def make_manifest_doc(
    *,
    media_type: str,
    config: Descriptor,
    layers: list[Descriptor],
    annotations: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A new image manifest document, fields in the order the spec's examples use."""
    doc: dict[str, Any] = {"schemaVersion": 2, "mediaType": media_type}
    doc["config"] = config.to_json()
    doc["layers"] = [d.to_json() for d in layers]
    if annotations:
        doc["annotations"] = dict(annotations)
    return doc
