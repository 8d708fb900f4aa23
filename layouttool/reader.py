"""Read one document of a layout: classify it, parse it, and say what is wrong with it.

Every command reads documents through here (``graph.walk`` for gc, verify and push; the
resolution of IMAGE arguments for inspect, unpack, convert and to-docker-save; ``ls``), so they
all agree about what a document is and what is wrong with it.

**What a document is** is decided by its own shape and ``mediaType``, not by the descriptor
that points at it (go-containerregistry writes Docker manifests under OCI-typed descriptors):
``manifests`` makes an index, ``config``/``layers`` a manifest, ``fsLayers`` a schema 1
manifest, ``blobs`` an artifact manifest of image-spec v1.1's release candidates. OCI and
Docker types of the same shape read alike. A manifest is an *artifact* rather than an image
when it has an ``artifactType`` or its config or layers are not image types, whatever its
config media type says (:attr:`layouttool.model.Manifest.is_image`).

**Findings instead of exceptions.** A quirk that does not stop reading is a *warning* (the
descriptor's media type disagrees with the document; a ``subject`` or a platform manifest is
absent; null where a field is optional). Only broken integrity or a broken MUST is a *problem*
(a digest or size that lies, a blob that something needs missing, JSON that cannot be read, a
document readable as both a manifest and an index). A document with a problem is not walked.
Each :class:`Finding` carries a stable code (:data:`CODES`), the digest of the blob it is about
and where it was found (the path from ``index.json``).

:func:`read_document` does the IO (one verified read per document); :func:`parse_document`
and :func:`check_document` are pure: the first decides the kind and finds what every command
must know, the second runs the costlier checks only ``verify`` wants (image-spec schemas,
nulls, artifact rules).
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, Final, Literal, NamedTuple

from layouttool import mediatypes as mt
from layouttool.digest import Digest
from layouttool.errors import (
    DigestMismatchError,
    IntegrityError,
    InvalidInputError,
    IOFailure,
    LayoutToolError,
    NotFoundError,
    SizeMismatchError,
    UnsafeInputError,
)
from layouttool.model import (
    ArtifactManifest,
    Descriptor,
    Index,
    Manifest,
    parse_artifact_manifest,
    parse_index,
    parse_json,
    parse_manifest,
)

if TYPE_CHECKING:
    from layouttool.store import Layout

Severity = Literal["problem", "warning"]
#: how a descriptor was reached: an index.json entry, a child of an index, a manifest's config
#: or layer, a ``subject``, or a descriptor inside a document of a type we do not know
Role = Literal["root", "manifest", "index", "config", "layer", "subject", "blob"]

# --- finding codes (stable: scripts match on them) -------------------------------------------
BLOB_MISSING: Final = "blob-missing"
SIZE_MISMATCH: Final = "size-mismatch"
DIGEST_MISMATCH: Final = "digest-mismatch"
DATA_MISMATCH: Final = "data-mismatch"
INVALID_JSON: Final = "invalid-json"
INVALID_DOCUMENT: Final = "invalid-document"
SCHEMA: Final = "schema"
DIFF_IDS_COUNT: Final = "diff-ids-count"
DIFF_ID_MISMATCH: Final = "diff-id-mismatch"
CORRUPT_LAYER: Final = "corrupt-layer"
UNSAFE_BLOB: Final = "unsafe-blob"
TOO_LARGE: Final = "too-large"
IO_ERROR: Final = "io-error"
MEDIA_TYPE_MISMATCH: Final = "media-type-mismatch"
SUBJECT_MISSING: Final = "subject-missing"
MANIFEST_MISSING: Final = "manifest-missing"
NONDISTRIBUTABLE_MISSING: Final = "nondistributable-missing"
REFERENCE_MISSING: Final = "reference-missing"
UNKNOWN_MEDIA_TYPE: Final = "unknown-media-type"
NULL_FIELD: Final = "null-field"
LAYERS_EMPTY: Final = "layers-empty"
ARTIFACT_CONFIG: Final = "artifact-config"

#: code -> (severity, exit code it stands for, what it means). The exit code is the one a
#: problem makes ``verify`` use (3 and 5 make it exit 5); a warning's is used with --strict.
CODES: Final[dict[str, tuple[Severity, int, str]]] = {
    BLOB_MISSING: ("problem", 3, "a blob that something needs is absent"),
    SIZE_MISMATCH: ("problem", 5, "a blob's size is not the size its descriptor declares"),
    DIGEST_MISMATCH: ("problem", 5, "a blob's content does not hash to its digest"),
    DATA_MISMATCH: ("problem", 5, "a descriptor's embedded data does not match its digest"),
    INVALID_JSON: ("problem", 4, "a document that must be read is not JSON"),
    INVALID_DOCUMENT: ("problem", 4, "a document breaks a MUST of its shape"),
    SCHEMA: ("problem", 4, "a document breaks the image-spec JSON schema"),
    DIFF_IDS_COUNT: ("problem", 5, "an image config lists a diff_id count unlike its layers"),
    DIFF_ID_MISMATCH: ("problem", 5, "(--deep) a layer does not decompress to its diff_id"),
    CORRUPT_LAYER: ("problem", 4, "(--deep) a layer cannot be decompressed as its type says"),
    UNSAFE_BLOB: ("problem", 6, "a blob is a symlink or not a regular file"),
    TOO_LARGE: ("problem", 4, "a document is larger than the 16 MiB JSON cap"),
    IO_ERROR: ("problem", 74, "the operating system refused a read"),
    MEDIA_TYPE_MISMATCH: ("warning", 4, "a descriptor's media type disagrees with its document"),
    SUBJECT_MISSING: ("warning", 3, "a referrer's subject is not in the layout"),
    MANIFEST_MISSING: ("warning", 3, "a child of an index is not in the layout"),
    NONDISTRIBUTABLE_MISSING: ("warning", 3, "a non-distributable layer is not in the layout"),
    REFERENCE_MISSING: ("warning", 3, "a blob a document of unknown type names is absent"),
    UNKNOWN_MEDIA_TYPE: ("warning", 4, "a document of a media type we do not know"),
    NULL_FIELD: ("warning", 4, "null where a field is optional (read as absent)"),
    LAYERS_EMPTY: ("warning", 4, "an image manifest with no layers (a SHOULD)"),
    ARTIFACT_CONFIG: ("warning", 4, "an artifact's config is typed as an image config"),
    # a lazy-pull layer (zstd:chunked, eStargz) whose TOC lies: layouttool.lazy.check
    "lazy-annotation": ("problem", 5, "its annotations disagree with its footer"),
    "lazy-toc-digest": ("problem", 5, "its TOC does not hash to what names it"),
    "lazy-toc": ("problem", 4, "its TOC cannot be read"),
    "lazy-toc-entry": ("problem", 5, "a TOC entry differs from the tar"),
    "lazy-toc-offset": ("problem", 5, "a TOC offset does not start its piece"),
    "lazy-toc-content": ("problem", 5, "a file or chunk digest does not match"),
    "lazy-tar-split": ("problem", 5, "the tar-split does not rebuild the tar"),
    "lazy-diff-id": ("problem", 5, "the layer does not decompress to its diff_id"),
    "lazy-size": ("problem", 5, "eStargz's uncompressed-size annotation is wrong"),
}

#: the content of the empty descriptor (image-spec v1.1 manifest.md "Guidance for an Empty
#: Descriptor"): ``{}``, base64 ``e30=``
EMPTY_JSON: Final = b"{}"


class Kind(enum.Enum):
    """What a document is, by its own shape and media type."""

    INDEX = "index"
    IMAGE = "image"
    ARTIFACT = "artifact"
    SCHEMA1 = "schema1"
    UNKNOWN = "unknown"


_ERRORS: Final[dict[str, type[LayoutToolError]]] = {
    SIZE_MISMATCH: SizeMismatchError,
    DIGEST_MISMATCH: DigestMismatchError,
}
_BY_EXIT: Final[dict[int, type[LayoutToolError]]] = {
    3: NotFoundError,
    4: InvalidInputError,
    5: IntegrityError,
    6: UnsafeInputError,
    74: IOFailure,
}


class Finding(NamedTuple):
    """One thing wrong (a problem) or odd (a warning) about a blob of a layout.

    (A NamedTuple, immutable and compared by value: every command imports this module, and a
    frozen dataclass costs ~1 ms of start-up.)"""

    severity: Severity
    #: stable code, a key of :data:`CODES`
    code: str
    #: the blob it is about: the document (or layer, config) whose content or descriptor is
    #: at fault; None for index.json itself
    digest: Digest | None
    #: the path from index.json (``app:1.0 > manifest sha256:.. > layer sha256:..``)
    where: str
    message: str

    @property
    def exit_code(self) -> int:
        """The exit code this finding stands for as a problem."""
        return CODES[self.code][1]

    def error(self) -> LayoutToolError:
        """The exception a command that cannot go on raises for this finding."""
        cls = _ERRORS.get(self.code) or _BY_EXIT.get(self.exit_code, LayoutToolError)
        return cls(self.message)

    def line(self) -> str:
        """One line for a terminal: ``<digest>: <message> [<code>]``."""
        about = str(self.digest) if self.digest is not None else "index.json"
        return f"{about}: {self.message} [{self.code}]"

    def to_json(self) -> dict[str, Any]:
        """``{"code", "severity", "digest", "where", "message"}``."""
        return {
            "code": self.code,
            "severity": self.severity,
            "digest": str(self.digest) if self.digest is not None else None,
            "where": self.where,
            "message": self.message,
        }


def finding(code: str, digest: Digest | None, where: str, message: str) -> Finding:
    """A finding of ``code``, its severity taken from :data:`CODES`."""
    return Finding(CODES[code][0], code, digest, where, message)


def lazy_finding(code: str, digest: Digest, where: str, message: str) -> Finding:
    """A problem of a lazy-pull layer (:mod:`layouttool.lazy.check`): a code it may add later
    is still a problem, exit 5 (the layer lies)."""
    if code not in CODES:
        code = "lazy-toc-content"
    return finding(code, digest, where, message)


#: the error a blob read raises -> its code (first match; read_blob refuses a blob over the
#: JSON cap with InvalidInputError)
_READ_ERRORS: Final[tuple[tuple[type[LayoutToolError], str], ...]] = (
    (SizeMismatchError, SIZE_MISMATCH),
    (IntegrityError, DIGEST_MISMATCH),
    (NotFoundError, BLOB_MISSING),
    (UnsafeInputError, UNSAFE_BLOB),
    (IOFailure, IO_ERROR),
    (InvalidInputError, TOO_LARGE),
)


def finding_of(exc: LayoutToolError, digest: Digest | None, where: str) -> Finding:
    """The problem an error from :meth:`Layout.read_blob` or :meth:`Layout.open_blob` stands
    for."""
    code = next((c for cls, c in _READ_ERRORS if isinstance(exc, cls)), INVALID_DOCUMENT)
    return finding(code, digest, where, str(exc))


class Document:
    """A document as the reader found it: its kind, its parsed content, what is wrong.

    Read-only by convention (the reader makes it; nothing changes it). A plain slotted class,
    not a frozen dataclass: every command imports this module, and a dataclass costs ~1 ms of
    start-up (tests/test_startup.py).
    """

    __slots__ = ("content", "desc", "findings", "kind", "media_type", "raw", "refs", "value",
                 "where")

    #: the descriptor it was reached by (its media type may disagree with ``media_type``)
    desc: Descriptor
    where: str
    kind: Kind
    #: what the document is: its own ``mediaType``, else its descriptor's when that names a
    #: document of its shape, else the OCI type of its shape; the descriptor's when unreadable
    media_type: str
    #: the raw bytes (None when they could not be read); digests are always of these
    raw: bytes | None
    #: the parsed model (None for schema 1, unknown types and unreadable documents)
    content: Manifest | Index | ArtifactManifest | None
    #: the parsed JSON value (None when unreadable)
    value: Any
    #: what the document references, in order
    refs: tuple[tuple[Role, Descriptor], ...]
    findings: tuple[Finding, ...]

    def __init__(
        self,
        desc: Descriptor,
        where: str,
        kind: Kind,
        media_type: str,
        raw: bytes | None,
        content: Manifest | Index | ArtifactManifest | None,
        value: Any,
        refs: tuple[tuple[Role, Descriptor], ...],
        findings: tuple[Finding, ...],
    ) -> None:
        self.desc = desc
        self.where = where
        self.kind = kind
        self.media_type = media_type
        self.raw = raw
        self.content = content
        self.value = value
        self.refs = refs
        self.findings = findings

    def __repr__(self) -> str:
        return (f"Document({self.desc.digest}, {self.kind.value}, {self.media_type!r}, "
                f"findings={list(self.findings)!r})")

    @property
    def problems(self) -> tuple[Finding, ...]:
        """The findings that are problems."""
        return tuple(f for f in self.findings if f.severity == "problem")

    @property
    def warnings(self) -> tuple[Finding, ...]:
        """The findings that are warnings."""
        return tuple(f for f in self.findings if f.severity == "warning")

    @property
    def ok(self) -> bool:
        """True when the document was read and has no problem (it may have warnings)."""
        if self.raw is None:
            return False
        return not self.findings or all(f.severity != "problem" for f in self.findings)

    @property
    def manifest(self) -> Manifest | None:
        """The image or artifact manifest (config and layers), if that is what it is."""
        return self.content if isinstance(self.content, Manifest) else None

    @property
    def index(self) -> Index | None:
        """The index, if that is what it is."""
        return self.content if isinstance(self.content, Index) else None

    @property
    def subject(self) -> Descriptor | None:
        """The ``subject`` (manifests, indexes and artifact manifests may have one)."""
        return self.content.subject if self.content is not None else None

    @property
    def annotations(self) -> Mapping[str, str]:
        """The document's own annotations."""
        return self.content.annotations if self.content is not None else {}

    @property
    def artifact_type(self) -> str | None:
        """For an artifact: its ``artifactType``, else its config's media type; else None."""
        if isinstance(self.content, Manifest):
            return self.content.effective_artifact_type
        if isinstance(self.content, ArtifactManifest):
            return self.content.artifact_type
        return None

    def describe(self) -> str:
        """What it is, in a few words (``an artifact (application/vnd.cncf.helm...)``)."""
        if self.kind is Kind.ARTIFACT:
            return f"an artifact ({self.artifact_type})"
        return {
            Kind.INDEX: "an index",
            Kind.IMAGE: "an image manifest",
            Kind.SCHEMA1: "a Docker schema 1 manifest",
            Kind.UNKNOWN: f"a document of media type {self.media_type!r}",
        }[self.kind]

    def raise_unless_ok(self) -> None:
        """Raise the error of the first problem, or of the warning that says why the document
        could not be read (an absent platform manifest, say); return when it is :attr:`ok`."""
        for f in self.findings:
            if f.severity == "problem":
                raise f.error()
        if self.raw is None and self.findings:
            raise self.findings[0].error()


# ------------------------------------------------------------------------------ reading
def read_document(
    layout: Layout, desc: Descriptor, where: str, role: Role = "root"
) -> Document:
    """Read, verify, classify and parse the document ``desc`` points at.

    Never raises for what is wrong with the layout: a blob that is absent, lies about its size
    or digest, or cannot be parsed gives a :class:`Document` whose ``raw`` (or ``content``)
    is None and whose findings say why. How bad an absent blob is depends on ``role``: for an
    index.json entry it is a problem; for a child of an index (a partial multi-platform
    export, as ``ctr export`` and Docker's containerd store write), a ``subject``, or a
    descriptor inside a document of unknown type, a warning.
    """
    try:
        raw = layout.read_blob(desc)
    except NotFoundError as exc:
        data = _embedded(desc)
        if data is not None:
            return parse_document(data, desc, where)
        return _unread(desc, where, absent_finding(desc, where, role, str(exc)))
    except LayoutToolError as exc:
        return _unread(desc, where, finding_of(exc, desc.digest, where))
    return parse_document(raw, desc, where)


def absent_finding(desc: Descriptor, where: str, role: Role, message: str = "") -> Finding:
    """The finding for a blob ``desc`` names that is not in the layout, by how it was reached:
    a problem for what something needs (an index.json entry's document, a config, a layer), a
    warning for weak or optional links."""
    msg = message or f"blob {desc.digest} is missing"
    if role == "subject":
        return finding(SUBJECT_MISSING, desc.digest, where,
                       f"subject {desc.digest} is not in the layout (a weak link; the referrer "
                       "is read without it)")
    if role in ("manifest", "index"):
        return finding(MANIFEST_MISSING, desc.digest, where,
                       f"{_plat(desc)}{desc.digest}, listed by an index, is not in the layout (a "
                       "partial multi-platform export?); the rest of the index is read")
    if role == "blob":
        return finding(REFERENCE_MISSING, desc.digest, where, msg)
    if mt.is_nondistributable(desc.media_type):
        return finding(NONDISTRIBUTABLE_MISSING, desc.digest, where,
                       f"non-distributable layer {desc.digest} is not in the layout (allowed: "
                       "its content lives at its urls)")
    return finding(BLOB_MISSING, desc.digest, where, msg)


def _plat(desc: Descriptor) -> str:
    return f"the {desc.platform} manifest " if desc.platform is not None else ""


def _unread(desc: Descriptor, where: str, f: Finding) -> Document:
    return Document(desc, where, Kind.UNKNOWN, desc.media_type, None, None, None, (), (f,))


def _b64(value: str) -> bytes | None:
    """Padded standard base64 (descriptor.md ``data``), or None when it is not."""
    # imported here: base64 costs every command's start-up ~2 ms, and ``data`` is rare
    import base64
    import binascii

    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        return None


def _embedded(desc: Descriptor) -> bytes | None:
    """The content embedded in ``desc.data`` when it matches the digest and size."""
    if desc.data is None:
        return None
    data = _b64(desc.data)
    if data is None or len(data) != desc.size:
        return None
    return data if Digest.of_bytes(data, desc.digest.algorithm) == desc.digest else None


# ------------------------------------------------------------------------------ parsing
def _shape(obj: Mapping[str, Any]) -> Kind | None:
    """The kind a JSON object's fields make it, before looking at media types; None when it is
    shaped as both a manifest and an index."""
    is_index = "manifests" in obj
    is_manifest = "config" in obj or "layers" in obj
    if is_index and is_manifest:
        return None
    if is_index:
        return Kind.INDEX
    if is_manifest:
        return Kind.IMAGE  # or ARTIFACT: decided once parsed
    if "blobs" in obj and "artifactType" in obj:
        return Kind.ARTIFACT
    if obj.get("schemaVersion") == 1 and "fsLayers" in obj:
        return Kind.SCHEMA1
    return Kind.UNKNOWN


def parse_document(raw: bytes, desc: Descriptor, where: str) -> Document:
    """Classify and parse ``raw`` (already verified against ``desc``); pure.

    The findings are those every command must know: a document that cannot be read as what
    it is (a problem), and a descriptor that disagrees with it (a warning).
    """
    what = f"{desc.media_type.rsplit('.', 1)[-1] or 'document'} {desc.digest}"
    declared_type = desc.media_type
    try:
        obj = parse_json(raw, what)
    except InvalidInputError as exc:
        msg = str(exc)
        if not mt.is_document(declared_type):
            msg += (f" (media type {declared_type!r} is not one we know, so there is no telling "
                    "what it references)")
        return _failed(raw, desc, where, INVALID_JSON, msg)
    if not isinstance(obj, dict):
        return _failed(raw, desc, where, INVALID_DOCUMENT,
                       f"{what}: expected a JSON object, found {type(obj).__name__}")
    shape = _shape(obj)
    if shape is None:
        return _failed(raw, desc, where, INVALID_DOCUMENT,
                       f"{what}: has both 'manifests' and 'config'/'layers' fields: it must not "
                       "be readable as both a manifest and an index (CVE-2021-41190)")
    findings: list[Finding] = []
    content: Manifest | Index | ArtifactManifest | None = None
    refs: list[tuple[Role, Descriptor]] = []
    try:
        if shape is Kind.INDEX:
            content = parse_index(raw, what, declared_type, parsed=obj)
            kind, media_type = Kind.INDEX, content.media_type
            refs = [("index" if mt.is_index(d.media_type) else "manifest", d)
                    for d in content.manifests]
        elif shape is Kind.IMAGE:
            content = parse_manifest(raw, what, declared_type, parsed=obj)
            kind = Kind.IMAGE if content.is_image else Kind.ARTIFACT
            media_type = content.media_type
            refs = [("config", content.config)]
            refs += [("layer", d) for d in content.layers]
        elif shape is Kind.ARTIFACT:
            content = parse_artifact_manifest(raw, what, parsed=obj)
            kind, media_type = Kind.ARTIFACT, content.media_type
            refs = [("blob", d) for d in content.blobs]
        elif shape is Kind.SCHEMA1:
            kind = Kind.SCHEMA1
            media_type = _schema1_type(obj, declared_type)
            refs = [("layer", d) for d in _schema1_layers(obj, what)]
        else:
            kind, media_type = Kind.UNKNOWN, declared_type
            if mt.is_document(declared_type):
                return _failed(raw, desc, where, INVALID_DOCUMENT,
                               f"{what}: a {declared_type!r} document needs "
                               "'manifests', or 'config' and 'layers'")
            refs = [("blob", d) for d in _generic_descriptors(obj, what)]
            findings.append(finding(
                UNKNOWN_MEDIA_TYPE, desc.digest, where,
                f"media type {declared_type!r} is not one we know; every descriptor in it is "
                "followed"))
    except InvalidInputError as exc:
        return _failed(raw, desc, where, INVALID_DOCUMENT, str(exc))
    if content is not None and content.subject is not None:
        refs.append(("subject", content.subject))
    if kind is not Kind.UNKNOWN and media_type != declared_type:
        findings.append(media_type_finding(desc, media_type, where))
    return Document(desc, where, kind, media_type, raw, content, obj, tuple(refs),
                    tuple(findings))


def media_type_finding(desc: Descriptor, media_type: str, where: str) -> Finding:
    """The warning for a descriptor whose media type is not the document's."""
    return finding(MEDIA_TYPE_MISMATCH, desc.digest, where,
                   f"its descriptor says {desc.media_type!r} but the document is "
                   f"{media_type!r}; read as the document says")


def check_reference(desc: Descriptor, doc: Document, where: str) -> list[Finding]:
    """What is wrong with one more descriptor of a document already read through another
    (``verify`` checks every descriptor, not each digest once): its size and media type."""
    if doc.raw is None:
        return []
    out = []
    if desc.size != len(doc.raw):
        out.append(finding(SIZE_MISMATCH, desc.digest, where,
                           f"blob {desc.digest}: size {len(doc.raw)} on disk does not match "
                           f"descriptor size {desc.size}"))
    if doc.kind is not Kind.UNKNOWN and desc.media_type != doc.media_type:
        out.append(media_type_finding(desc, doc.media_type, where))
    return out


def _failed(raw: bytes, desc: Descriptor, where: str, code: str, message: str) -> Document:
    return Document(desc, where, Kind.UNKNOWN, desc.media_type, raw, None, None, (),
                    (finding(code, desc.digest, where, message),))


def _schema1_type(obj: Mapping[str, Any], declared: str) -> str:
    own = obj.get("mediaType")
    if isinstance(own, str) and mt.is_schema1(own):
        return own
    if mt.is_schema1(declared):
        return declared
    return mt.MT_DOCKER_SCHEMA1_SIGNED if "signatures" in obj else mt.MT_DOCKER_SCHEMA1


def _schema1_layers(obj: Mapping[str, Any], what: str) -> list[Descriptor]:
    layers = obj.get("fsLayers")
    if not isinstance(layers, list):
        raise InvalidInputError(f"{what}: schema 1 manifest without fsLayers")
    out: list[Descriptor] = []
    for i, layer in enumerate(layers):
        d = Digest.parse(
            layer.get("blobSum") if isinstance(layer, dict) else None,
            what=f"{what} fsLayers[{i}]",
        )
        # schema 1 gives no sizes; 0 stands for "unknown" (callers take the size on disk)
        out.append(Descriptor(media_type=mt.MT_DOCKER_LAYER_GZIP, digest=d, size=0))
    return out


def _generic_descriptors(doc: Any, what: str) -> list[Descriptor]:
    """Every object shaped like a descriptor inside a document of unknown type."""
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


# ------------------------------------------------------------------------------ verify's checks
#: list fields a Go writer spells ``null`` when empty (a nil slice): read as empty
_NULL_MEANS_EMPTY: Final = frozenset({"manifests", "layers", "rootfs.diff_ids"})
#: by schema: the required fields that null leaves without a value (a broken MUST, not a quirk)
_REQUIRED: Final[dict[str, frozenset[str]]] = {
    "MANIFEST": frozenset({"schemaVersion", "config"}),
    "INDEX": frozenset({"schemaVersion"}),
    "CONFIG": frozenset({"architecture", "os", "rootfs", "rootfs.type"}),
}


def check_schema(
    value: Any, media_type: str, digest: Digest | None, where: str, *, image: bool = True
) -> Iterator[Finding]:
    """The image-spec schema of an OCI document (problems), except for what image-spec v1.1 or
    common writers make a quirk (warnings): null where a field is optional (Go's zero value;
    read as absent, or as empty for a list), and an image with no layers (a SHOULD; nothing at
    all for an artifact). ``value`` is the parsed JSON; Docker types have no schema."""
    from layouttool import schema

    kind = schema.schema_for_media_type(media_type)
    if kind is None:
        return
    for msg in schema.validate(value, kind):
        path, _, rest = msg.partition(": ")
        if rest.endswith(", got null") and path not in _REQUIRED.get(kind.name, ()):
            read_as = "empty" if path in _NULL_MEANS_EMPTY else "absent"
            yield finding(NULL_FIELD, digest, where, f"{path} is null; read as {read_as}")
            continue
        if kind is schema.SchemaKind.MANIFEST and path == "layers" and (
            isinstance(value, dict) and value.get("layers") == []
        ):
            if image:
                yield finding(LAYERS_EMPTY, digest, where,
                              "the image has no layers (image-spec v1.1: SHOULD have one; "
                              "allowed)")
            continue
        yield finding(SCHEMA, digest, where, msg)


def check_document(doc: Document) -> list[Finding]:
    """The checks ``verify`` adds to the reader's: nulls, the image-spec schemas (OCI types),
    and the artifact rules of image-spec v1.1. Pure; a document that was not read gives none."""
    if doc.value is None or (doc.content is None and doc.kind is not Kind.SCHEMA1):
        return []
    out = list(check_schema(doc.value, doc.media_type, doc.desc.digest, doc.where,
                                image=doc.kind is Kind.IMAGE))
    m = doc.manifest
    if m is not None and m.config.media_type == mt.MT_OCI_EMPTY and m.artifact_type is None:
        out.append(finding(INVALID_DOCUMENT, doc.desc.digest, doc.where,
                           "artifactType MUST be set when config.mediaType is the empty type "
                           f"{mt.MT_OCI_EMPTY!r} (image-spec v1.1)"))
    return out


def check_config(
    value: Any, media_type: str, desc: Descriptor, where: str, *, artifact: bool
) -> list[Finding]:
    """The checks of a config blob: an image's against the image-config schema (nulls are
    warnings); an artifact's is never held to it: a config typed as an image config that is
    not one (an old-style artifact's ``{}``) is a warning."""
    if not artifact:
        return list(check_schema(value, media_type, desc.digest, where))
    from layouttool import schema

    if mt.is_image_config(media_type) and schema.validate(value, schema.SchemaKind.CONFIG):
        return [finding(ARTIFACT_CONFIG, desc.digest, where,
                        f"the config of an artifact is typed {media_type!r} but is not an "
                        "image config; not checked as one")]
    return []


def check_descriptor(desc: Descriptor, where: str) -> list[Finding]:
    """Checks of a descriptor alone: embedded ``data`` must be the content its digest and size
    name (descriptor.md), and the empty descriptor must describe ``{}``."""
    out = []
    if desc.data is not None:
        data = _b64(desc.data)
        if data is None or len(data) != desc.size or (
            Digest.of_bytes(data, desc.digest.algorithm) != desc.digest
        ):
            out.append(finding(DATA_MISMATCH, desc.digest, where,
                               f"the embedded data of {desc.digest} is not the content its "
                               "digest and size name"))
    if desc.media_type == mt.MT_OCI_EMPTY and (
        desc.size != len(EMPTY_JSON) or desc.digest != Digest.of_bytes(EMPTY_JSON)
    ):
        out.append(finding(INVALID_DOCUMENT, desc.digest, where,
                           f"an empty descriptor ({mt.MT_OCI_EMPTY}) must describe '{{}}' "
                           f"({Digest.of_bytes(EMPTY_JSON)}, 2 bytes)"))
    return out


__all__ = [
    "CODES",
    "Document",
    "Finding",
    "Kind",
    "Role",
    "Severity",
    "absent_finding",
    "check_config",
    "check_descriptor",
    "check_document",
    "check_reference",
    "check_schema",
    "finding",
    "finding_of",
    "lazy_finding",
    "media_type_finding",
    "parse_document",
    "read_document",
]
