"""``referrers``: the documents in a layout whose ``subject`` is an image (``oras discover``).

Every blob of the layout is looked at, listed in ``index.json`` or not (gc keeps unlisted
referrers of kept images, so they are there to find): the scan is the graph's
(:func:`layouttool.graph.find_referrers`, the one gc's subject sniffing uses), which reads a
layer only by its first bytes. The result is what the distribution spec's referrers API
returns: an OCI image index whose ``manifests`` are the referrers' descriptors, each with its
``artifactType``. The rendering lives in the CLI, so a registry's referrers (``docker://``)
can come back as the same result.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from layouttool import mediatypes as mt
from layouttool.graph import find_referrers
from layouttool.model import Descriptor
from layouttool.ops.attach import check_media_type, subject_of


@dataclass(frozen=True, slots=True)
class ReferrersResult:
    """The referrers of one subject, sorted by digest."""

    #: IMAGE as given
    image: str
    subject: Descriptor
    artifact_type: str | None
    referrers: tuple[Descriptor, ...]

    def to_json(self) -> dict[str, Any]:
        """An OCI image index whose ``manifests`` are the referrers (the referrers API's)."""
        return {
            "schemaVersion": 2,
            "mediaType": mt.MT_OCI_INDEX,
            "manifests": [d.to_json() for d in self.referrers],
        }


def list_referrers(image: str, *, artifact_type: str | None = None) -> ReferrersResult:
    """The documents of IMAGE's layout whose ``subject`` is what IMAGE names (an index.json
    entry, or by digest any manifest or index stored there), optionally only those of
    ``artifact_type``."""
    if artifact_type is not None:
        check_media_type(artifact_type, "--artifact-type")
    layout, subject = subject_of(image)
    found = find_referrers(layout, subject.digest, artifact_type)
    return ReferrersResult(image, subject, artifact_type, tuple(found))
