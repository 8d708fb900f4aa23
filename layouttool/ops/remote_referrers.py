"""``referrers docker://REGISTRY/REPO:TAG``: a registry's referrers of an image, as the local
``referrers`` lists a layout's (the same result, so the same rendering and JSON).

The registry's referrers API answers (every page); on a registry without it (a 404), the
fallback tag ``sha256-<hex>`` does. ``docker://`` is skopeo's transport prefix.
"""

from __future__ import annotations

from typing import Unpack

from layouttool.model import Descriptor, parse_json
from layouttool.ops.attach import check_media_type
from layouttool.ops.pull import media_type_of
from layouttool.ops.referrers import ReferrersResult
from layouttool.ops.transfer import Connection, open_client
from layouttool.progress import NULL_PROGRESS, Progress
from layouttool.registry import RemoteRef
from layouttool.registry.referrers import list_referrers

#: skopeo's transport prefix, which a registry reference may carry
DOCKER_PREFIX = "docker://"


def list_remote_referrers(
    source: str,
    *,
    artifact_type: str | None = None,
    progress: Progress = NULL_PROGRESS,
    **connection: Unpack[Connection],
) -> ReferrersResult:
    """The referrers of what ``[docker://]REGISTRY/REPO[:TAG|@DIGEST]`` names, sorted by digest
    (only those of ``artifact_type`` when given)."""
    if artifact_type is not None:
        check_media_type(artifact_type, "--artifact-type")
    ref = RemoteRef.parse(source.removeprefix(DOCKER_PREFIX))
    with open_client(ref, progress, **connection) as client:
        raw, ctype, digest = client.get_manifest(ref.repository, ref.reference, expected=ref.digest)
        subject = Descriptor(
            media_type_of(ctype, parse_json(raw, f"manifest {ref}")), digest, len(raw)
        )
        found = list_referrers(client, ref.repository, digest, artifact_type)
    return ReferrersResult(
        source, subject, artifact_type, tuple(sorted(found, key=lambda d: d.digest))
    )


__all__ = ["DOCKER_PREFIX", "list_remote_referrers"]
