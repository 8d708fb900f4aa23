"""``new``: an empty image (no layers, a valid config), as ``umoci new`` makes, creating the
layout when needed.

The manifest has no layers until something is appended. The image-spec's JSON schema asks
for at least one layer (its prose only says "SHOULD"), so ``verify`` reports an empty image
until ``append`` or ``repack`` gives it one; podman, skopeo and umoci read it as it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from layouttool import mediatypes as mt
from layouttool.errors import InvalidInputError
from layouttool.model import Descriptor, Platform, host_platform, make_manifest_doc
from layouttool.mutate import new_config
from layouttool.ops.edit import ImageUpdate, point, source_date_epoch, store_document, timestamp
from layouttool.refs import parse_image, validate_ref_name
from layouttool.store import Layout, is_layout


@dataclass(frozen=True, slots=True)
class NewResult:
    """What ``new`` made."""

    update: ImageUpdate
    platform: str
    created: str
    #: True when the layout did not exist before
    layout_created: bool

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {
            **self.update.to_json(),
            "platform": self.platform,
            "created": self.created,
            "layoutCreated": self.layout_created,
        }


def new_image(image: str, *, platform: Platform | None = None) -> NewResult:
    """Make an empty image named ``LAYOUT:TAG`` (the layout is created when absent or empty).

    ``platform`` defaults to this host's. An existing TAG is moved to the new image. The
    ``created`` time is ``SOURCE_DATE_EPOCH`` when set, so the digests are reproducible.
    """
    ref = parse_image(image)
    if ref.digest is not None or not ref.ref:
        raise InvalidInputError(f"new needs LAYOUT:TAG, got {image!r}")
    validate_ref_name(ref.ref)
    plat = platform or host_platform()
    existed = is_layout(ref.layout)
    layout = Layout.open(ref.layout, create=True)
    created = timestamp(source_date_epoch())
    with layout.writing():
        cfg = store_document(layout, new_config(plat, created), mt.MT_OCI_CONFIG, "new config")
        man = store_document(
            layout,
            make_manifest_doc(media_type=mt.MT_OCI_MANIFEST, config=cfg, layers=[]),
            mt.MT_OCI_MANIFEST,
            "new manifest",
        )
        entry = Descriptor(man.media_type, man.digest, man.size)
        action, name = point(layout, None, entry, tag=ref.ref)
    return NewResult(
        ImageUpdate.of(layout, action, name, man, man, cfg, None),
        platform=str(plat),
        created=created,
        layout_created=not existed,
    )
