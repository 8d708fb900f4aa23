"""What ``from-docker-save`` reports: the images and layers it added, and the run's totals."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class ImportedLayer:
    """One layer of an imported image."""

    digest: str
    size: int
    diff_id: str | None
    media_type: str
    #: True when the bytes were re-encoded, False when stored as they came
    recompressed: bool
    #: a non-distributable layer whose blob is not in the layout (its descriptor is kept)
    foreign: bool = False

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "digest": self.digest,
            "size": self.size,
            "diffID": self.diff_id,
            "mediaType": self.media_type,
            "recompressed": self.recompressed,
            "foreign": self.foreign,
        }


@dataclass(frozen=True, slots=True)
class ImportedImage:
    """One index.json entry the import added or moved."""

    ref: str | None
    name: str | None
    digest: str
    media_type: str
    config_digest: str | None
    layers: tuple[ImportedLayer, ...]
    #: ``tagged`` (new ref), ``moved`` (ref pointed elsewhere before), ``added`` (untagged),
    #: ``unchanged`` (the same entry was already there)
    action: str = "tagged"

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "ref": self.ref,
            "name": self.name,
            "digest": self.digest,
            "mediaType": self.media_type,
            "configDigest": self.config_digest,
            "action": self.action,
            "layers": [layer.to_json() for layer in self.layers],
        }


@dataclass(frozen=True, slots=True)
class ImportResult:
    """What ``from-docker-save`` did."""

    source: str
    layout: str
    #: ``docker-save`` (any form with manifest.json), ``docker-save-v1`` (Docker <= 1.9) or
    #: ``oci-archive``
    source_format: str
    #: compression of the whole tarball (``none``, ``gzip``, ``zstd``, ``xz``, ``bzip2``)
    source_compression: str
    streamed: bool
    images: tuple[ImportedImage, ...]
    bytes_read: int
    bytes_written: int
    seconds: float
    notes: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "source": self.source,
            "layout": self.layout,
            "sourceFormat": self.source_format,
            "sourceCompression": self.source_compression,
            "streamed": self.streamed,
            "images": [i.to_json() for i in self.images],
            "bytesRead": self.bytes_read,
            "bytesWritten": self.bytes_written,
            "seconds": round(self.seconds, 3),
            "notes": list(self.notes),
        }


__all__ = ["ImportResult", "ImportedImage", "ImportedLayer"]
