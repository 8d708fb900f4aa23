"""Every media-type string layouttool knows, and the predicates over them.

No other module spells a media type: a test greps the package for stray literals.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Final

from layouttool.errors import CorruptStreamError, UnsupportedError


class Compression(enum.Enum):
    """A compression format. Layers use NONE, GZIP and ZSTD; whole archives may also be XZ/BZIP2.

    It lives here, beside the media types that name it, so that reading a media type never
    loads the codecs (``layouttool.codec`` re-exports it).
    """

    NONE = "none"
    GZIP = "gzip"
    ZSTD = "zstd"
    XZ = "xz"
    BZIP2 = "bzip2"

    @classmethod
    def parse(cls, value: str) -> Compression:
        """``"gzip"`` -> GZIP; also accepts ``"uncompressed"`` for NONE."""
        v = value.lower()
        if v in ("uncompressed", "tar"):
            v = "none"
        try:
            return cls(v)
        except ValueError:
            raise CorruptStreamError(f"unknown compression {value!r}") from None


# --- OCI (image-spec media-types.md) ---------------------------------------------------------
MT_OCI_LAYOUT_HEADER: Final = "application/vnd.oci.layout.header.v1+json"
MT_OCI_DESCRIPTOR: Final = "application/vnd.oci.descriptor.v1+json"
MT_OCI_INDEX: Final = "application/vnd.oci.image.index.v1+json"
MT_OCI_MANIFEST: Final = "application/vnd.oci.image.manifest.v1+json"
MT_OCI_CONFIG: Final = "application/vnd.oci.image.config.v1+json"
MT_OCI_EMPTY: Final = "application/vnd.oci.empty.v1+json"
#: the OCI artifact manifest of image-spec v1.1's release candidates (dropped from v1.1.0; oras
#: 1.0 wrote it with --image-spec v1.1-rc): ``blobs`` instead of config and layers
MT_OCI_ARTIFACT_MANIFEST: Final = "application/vnd.oci.artifact.manifest.v1+json"
MT_OCI_LAYER: Final = "application/vnd.oci.image.layer.v1.tar"
MT_OCI_LAYER_GZIP: Final = "application/vnd.oci.image.layer.v1.tar+gzip"
MT_OCI_LAYER_ZSTD: Final = "application/vnd.oci.image.layer.v1.tar+zstd"
MT_OCI_LAYER_ND: Final = "application/vnd.oci.image.layer.nondistributable.v1.tar"
MT_OCI_LAYER_ND_GZIP: Final = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
MT_OCI_LAYER_ND_ZSTD: Final = "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"

# --- Docker (distribution manifest-v2-2.md, manifest-v2-1.md) --------------------------------
MT_DOCKER_MANIFEST: Final = "application/vnd.docker.distribution.manifest.v2+json"
MT_DOCKER_LIST: Final = "application/vnd.docker.distribution.manifest.list.v2+json"
MT_DOCKER_CONFIG: Final = "application/vnd.docker.container.image.v1+json"
MT_DOCKER_LAYER: Final = "application/vnd.docker.image.rootfs.diff.tar"
MT_DOCKER_LAYER_GZIP: Final = "application/vnd.docker.image.rootfs.diff.tar.gzip"
# de facto (containerd, regclient); skopeo refuses zstd in Docker images and so do we on write
MT_DOCKER_LAYER_ZSTD: Final = "application/vnd.docker.image.rootfs.diff.tar.zstd"
MT_DOCKER_LAYER_FOREIGN: Final = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
MT_DOCKER_SCHEMA1: Final = "application/vnd.docker.distribution.manifest.v1+json"
MT_DOCKER_SCHEMA1_SIGNED: Final = "application/vnd.docker.distribution.manifest.v1+prettyjws"
MT_DOCKER_PLUGIN_CONFIG: Final = "application/vnd.docker.plugin.v1+json"

# --- artifacts -------------------------------------------------------------------------------
#: an artifact layer whose type was not given (IANA's type for arbitrary bytes)
MT_OCTET_STREAM: Final = "application/octet-stream"

# --- annotations -----------------------------------------------------------------------------
ANNOT_REF_NAME: Final = "org.opencontainers.image.ref.name"
ANNOT_CONTAINERD_NAME: Final = "io.containerd.image.name"
ANNOT_CREATED: Final = "org.opencontainers.image.created"
#: the file name of an artifact layer (oras sets it, and restores the file under that name)
ANNOT_TITLE: Final = "org.opencontainers.image.title"
# lazy-pull layers (containers/storage pkg/chunked, containerd/stargz-snapshotter estargz)
#: zstd:chunked: sha256 of the zstd-compressed TOC
ANNOT_ZSTD_CHUNKED_TOC_DIGEST: Final = "io.github.containers.zstd-chunked.manifest-checksum"
#: zstd:chunked: ``offset:length:uncompressed length:1`` of the TOC's skippable frame payload
ANNOT_ZSTD_CHUNKED_TOC_POSITION: Final = "io.github.containers.zstd-chunked.manifest-position"
#: zstd:chunked: ``offset:length:uncompressed length`` of the tar-split's frame payload
ANNOT_ZSTD_CHUNKED_TARSPLIT_POSITION: Final = (
    "io.github.containers.zstd-chunked.tarsplit-position"
)
#: zstd:chunked: sha256 of the compressed tar-split, as containers/storage 1.47 to 1.49 named it
#: (later in the TOC's ``tarSplitDigest``); read, never written
ANNOT_ZSTD_CHUNKED_TARSPLIT_DIGEST_OLD: Final = (
    "io.github.containers.zstd-chunked.tarsplit-checksum"
)
#: the keys containers/storage before 1.44 (podman 4.x) wrote; read, never written
ANNOT_ZSTD_CHUNKED_TOC_DIGEST_OLD: Final = "io.containers.zstd-chunked.manifest-checksum"
ANNOT_ZSTD_CHUNKED_TOC_POSITION_OLD: Final = "io.containers.zstd-chunked.manifest-position"
#: eStargz: sha256 of the uncompressed TOC JSON (stargz.index.json)
ANNOT_ESTARGZ_TOC_DIGEST: Final = "containerd.io/snapshot/stargz/toc.digest"
#: eStargz: the layer's uncompressed size, for containers/storage's stargz store
ANNOT_ESTARGZ_UNCOMPRESSED_SIZE: Final = "io.containers.estargz.uncompressed-size"

#: annotations that describe one particular compressed blob and become false after recompression:
#: the lazy-pull formats' offsets and TOC digests (a layer that leaves zstd:chunked or eStargz
#: must not keep them), and containerd's record of the uncompressed digest. Keys as the writers
#: spell them: containers/storage ``pkg/chunked`` (``io.github.containers.zstd-chunked.``
#: manifest-checksum, manifest-position, tarsplit-position, and the retired tarsplit-checksum);
#: stargz-snapshotter and podman 4 (``io.containers.zstd-chunked.`` manifest-checksum,
#: manifest-position; ``io.containers.estargz.uncompressed-size``;
#: ``containerd.io/snapshot/stargz/`` toc.digest, layer.digest)
#: on an index entry (containers/image, ``--add-compression``): this instance's layers are zstd;
#: false once they are recompressed to anything else
ANNOT_INSTANCE_ZSTD: Final = "io.github.containers.compression.zstd"
BLOB_SPECIFIC_ANNOTATION_PREFIXES: Final = (
    "containerd.io/snapshot/stargz/",
    "io.github.containers.zstd-chunked.",
    "io.containers.zstd-chunked.",
    "io.containers.estargz.",
    "containerd.io/uncompressed",
)

INDEX_TYPES: Final = frozenset({MT_OCI_INDEX, MT_DOCKER_LIST})
MANIFEST_TYPES: Final = frozenset({MT_OCI_MANIFEST, MT_DOCKER_MANIFEST})
SCHEMA1_TYPES: Final = frozenset({MT_DOCKER_SCHEMA1, MT_DOCKER_SCHEMA1_SIGNED})
CONFIG_TYPES: Final = frozenset({MT_OCI_CONFIG, MT_DOCKER_CONFIG})
_DOCUMENT_TYPES: Final = INDEX_TYPES | MANIFEST_TYPES | SCHEMA1_TYPES | {MT_OCI_ARTIFACT_MANIFEST}

#: layer media type -> the compression it declares
_LAYER_COMPRESSION: Final[dict[str, Compression]] = {
    MT_OCI_LAYER: Compression.NONE,
    MT_OCI_LAYER_GZIP: Compression.GZIP,
    MT_OCI_LAYER_ZSTD: Compression.ZSTD,
    MT_OCI_LAYER_ND: Compression.NONE,
    MT_OCI_LAYER_ND_GZIP: Compression.GZIP,
    MT_OCI_LAYER_ND_ZSTD: Compression.ZSTD,
    MT_DOCKER_LAYER: Compression.NONE,
    MT_DOCKER_LAYER_GZIP: Compression.GZIP,
    MT_DOCKER_LAYER_ZSTD: Compression.ZSTD,
    MT_DOCKER_LAYER_FOREIGN: Compression.GZIP,
}
#: every tar layer media type we can decompress
LAYER_TYPES: Final = frozenset(_LAYER_COMPRESSION)
NONDISTRIBUTABLE_TYPES: Final = frozenset(
    {MT_OCI_LAYER_ND, MT_OCI_LAYER_ND_GZIP, MT_OCI_LAYER_ND_ZSTD, MT_DOCKER_LAYER_FOREIGN}
)
DOCKER_TYPES: Final = frozenset(
    {
        MT_DOCKER_MANIFEST,
        MT_DOCKER_LIST,
        MT_DOCKER_CONFIG,
        MT_DOCKER_LAYER,
        MT_DOCKER_LAYER_GZIP,
        MT_DOCKER_LAYER_ZSTD,
        MT_DOCKER_LAYER_FOREIGN,
    }
)


def is_index(mt: str | None) -> bool:
    """An OCI image index or a Docker manifest list."""
    return mt in INDEX_TYPES


def is_manifest(mt: str | None) -> bool:
    """An OCI image manifest or a Docker v2 schema 2 manifest."""
    return mt in MANIFEST_TYPES


def is_schema1(mt: str | None) -> bool:
    """A Docker v2 schema 1 manifest (signed or not)."""
    return mt in SCHEMA1_TYPES


def is_artifact_manifest(mt: str | None) -> bool:
    """The OCI artifact manifest of image-spec v1.1's release candidates."""
    return mt == MT_OCI_ARTIFACT_MANIFEST


def is_document(mt: str | None) -> bool:
    """A media type whose content is a document that references blobs (index, manifest, schema
    1 manifest, artifact manifest)."""
    return mt in _DOCUMENT_TYPES


def is_image_config(mt: str | None) -> bool:
    """An image configuration (OCI or Docker)."""
    return mt in CONFIG_TYPES


def is_layer(mt: str | None) -> bool:
    """A tar layer of a media type we can decompress."""
    return mt in _LAYER_COMPRESSION


def is_nondistributable(mt: str | None) -> bool:
    """A foreign / non-distributable layer (may be absent from the layout)."""
    return mt in NONDISTRIBUTABLE_TYPES


def is_docker(mt: str | None) -> bool:
    """A Docker v2 schema 2 media type."""
    return mt in DOCKER_TYPES


def layer_compression(mt: str) -> Compression | None:
    """The compression a layer media type declares, or None if ``mt`` is not a known layer."""
    return _LAYER_COMPRESSION.get(mt)


def layer_media_type(
    compression: Compression, *, docker: bool, nondistributable: bool = False
) -> str:
    """The layer media type for ``compression`` in the OCI or Docker family.

    Docker has no zstd media type that the reference tools accept; asking for one raises
    :class:`~layouttool.errors.UnsupportedError`.
    """
    if docker:
        if compression is Compression.ZSTD:
            raise UnsupportedError(
                "zstd compression is not supported for Docker media types "
                "(use --format oci, or --compression gzip or none)"
            )
        if nondistributable:
            if compression is not Compression.GZIP:
                raise UnsupportedError("Docker foreign layers must be gzip-compressed")
            return MT_DOCKER_LAYER_FOREIGN
        return MT_DOCKER_LAYER_GZIP if compression is Compression.GZIP else MT_DOCKER_LAYER
    if nondistributable:
        return {
            Compression.NONE: MT_OCI_LAYER_ND,
            Compression.GZIP: MT_OCI_LAYER_ND_GZIP,
            Compression.ZSTD: MT_OCI_LAYER_ND_ZSTD,
        }[compression]
    return {
        Compression.NONE: MT_OCI_LAYER,
        Compression.GZIP: MT_OCI_LAYER_GZIP,
        Compression.ZSTD: MT_OCI_LAYER_ZSTD,
    }[compression]


def lazy_format(annotations: Mapping[str, str]) -> str | None:
    """``"zstd:chunked"`` or ``"estargz"`` when a layer descriptor's annotations announce that
    lazy-pull format (a TOC digest), else None."""
    if ANNOT_ESTARGZ_TOC_DIGEST in annotations:
        return "estargz"
    if (
        ANNOT_ZSTD_CHUNKED_TOC_DIGEST in annotations
        or ANNOT_ZSTD_CHUNKED_TOC_DIGEST_OLD in annotations
    ):
        return "zstd:chunked"
    return None


def manifest_type(*, docker: bool) -> str:
    """The image manifest media type of a family."""
    return MT_DOCKER_MANIFEST if docker else MT_OCI_MANIFEST


def index_type(*, docker: bool) -> str:
    """The index / manifest list media type of a family."""
    return MT_DOCKER_LIST if docker else MT_OCI_INDEX


def config_type(*, docker: bool) -> str:
    """The image config media type of a family."""
    return MT_DOCKER_CONFIG if docker else MT_OCI_CONFIG
