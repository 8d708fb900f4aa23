"""What the commands that make or change an image share (``new``, ``append``, ``config``,
``repack``): the time they stamp, storing the new documents, and pointing a ref at the result.

The order is the store's crash-safe one: layers first (the caller), then the config, the
manifest, every index on the way from the ``index.json`` entry down to the manifest
(rewritten with the child's new descriptor, so a multi-platform image stays one), and
``index.json`` last, in one atomic update under the index lock. The old documents stay in the
store until ``gc``. Documents are edited as parsed JSON with only the changed fields patched
(:mod:`layouttool.mutate`), and each new one is checked with the parser every reader uses
before it is stored. Docker-typed images stay Docker-typed.

Which ``index.json`` entry points at the result:

* ``--tag NEW``: NEW (moved when it existed), carrying the old entry's other annotations;
  the entry that was edited stays as it was;
* an entry with a ref name: that entry, with its annotations, now names the result (``moved``);
* ``LAYOUT@sha256:...``: nothing named was given, so the result is added as an untagged entry
  (``added``) and no tag moves;
* otherwise (the layout's only image, or one named by ``io.containerd.image.name``): the
  entry itself is replaced (``replaced``).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from typing import Any, Literal

from layouttool import mediatypes as mt
from layouttool.errors import InvalidInputError
from layouttool.model import (
    Descriptor,
    ImageConfig,
    Index,
    Manifest,
    Platform,
    dump_json,
    parse_config,
    parse_index,
    parse_manifest,
)
from layouttool.mutate import manifest_with, patch_descriptor, rfc3339
from layouttool.ops.common import resolve_image, select
from layouttool.ops.layout import place_ref, ref_descriptor
from layouttool.refs import ImageRef, validate_ref_name
from layouttool.store import Layout

Action = Literal["tagged", "moved", "replaced", "added"]


def source_date_epoch() -> int | None:
    """``SOURCE_DATE_EPOCH`` (reproducible-builds.org) as seconds, or None when unset."""
    raw = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    if not raw:
        return None
    if not raw.isdigit():
        raise InvalidInputError(
            f"SOURCE_DATE_EPOCH={raw!r}: expected a number of seconds since 1970"
        )
    return int(raw)


def timestamp(epoch: int | None) -> str:
    """The ``created`` time of what we make now: ``SOURCE_DATE_EPOCH`` when set, else now."""
    return rfc3339(int(time.time()) if epoch is None else epoch)


@dataclass(frozen=True, slots=True)
class ImageUpdate:
    """Where the new image went: the ``index.json`` entry and the documents it leads to."""

    layout: str
    #: the ref name now pointing at the result (None: an untagged entry)
    ref: str | None
    action: Action
    #: the new ``index.json`` entry (the manifest, or the index rewritten above it)
    digest: str
    media_type: str
    manifest_digest: str
    config_digest: str
    #: what the edited entry pointed at before (None for a new image)
    previous_digest: str | None

    @classmethod
    def of(cls, layout: Layout, action: Action, ref: str | None, top: Descriptor,
           manifest: Descriptor, config: Descriptor, previous: Descriptor | None
           ) -> ImageUpdate:
        """From the descriptors that were written and the old index.json entry."""
        return cls(str(layout.root), ref, action, str(top.digest), top.media_type,
                   str(manifest.digest), str(config.digest),
                   str(previous.digest) if previous is not None else None)

    def to_json(self) -> dict[str, Any]:
        """JSON form (the shared part of every build command's ``--json``)."""
        return {
            "layout": self.layout,
            "ref": self.ref,
            "action": self.action,
            "digest": self.digest,
            "mediaType": self.media_type,
            "manifestDigest": self.manifest_digest,
            "configDigest": self.config_digest,
            "previousDigest": self.previous_digest,
        }


@dataclass(frozen=True, slots=True)
class Base:
    """The image a command changes, and how ``index.json`` reaches it."""

    layout: Layout
    ref: ImageRef
    #: the ``index.json`` entry that was selected (None: nothing in index.json leads to it)
    entry: Descriptor | None
    #: the indexes from the entry down to the manifest (empty when the entry is the manifest)
    indexes: tuple[Index, ...]
    manifest_desc: Descriptor
    manifest: Manifest
    config: ImageConfig


def open_base(image: str, platform: Platform | None = None) -> Base:
    """The image IMAGE names (``--platform`` picks one from an index)."""
    sel = select(image)
    img = resolve_image(sel.layout, sel.entry, platform)
    return Base(sel.layout, sel.ref, sel.entry, img.indexes, img.manifest_desc, img.manifest,
                img.config)


def check_tag(tag: str | None) -> str | None:
    """Validate ``--tag`` (a ref name) early, before any work is done."""
    return validate_ref_name(tag) if tag is not None else None


def store_document(layout: Layout, doc: dict[str, Any], media_type: str, what: str
                   ) -> Descriptor:
    """Serialise ``doc``, check it with the readers' parser, store it; its descriptor."""
    raw = dump_json(doc)
    if mt.is_index(media_type):
        parse_index(raw, what, media_type)
    elif mt.is_manifest(media_type):
        parse_manifest(raw, what, media_type)
    else:
        parse_config(raw, what)
    return layout.put_bytes(raw).descriptor(media_type)


def _platform_of(doc: dict[str, Any]) -> tuple[Any, Any, Any]:
    return doc.get("os"), doc.get("architecture"), doc.get("variant")


def _child(obj: dict[str, Any], new: Descriptor, platform: tuple[Any, Any, Any] | None
           ) -> dict[str, Any]:
    """An index's child descriptor pointing at ``new``; its ``platform`` follows the config."""
    out = patch_descriptor(obj, new)
    if platform is not None and isinstance(out.get("platform"), dict):
        plat = dict(out["platform"])
        plat["os"], plat["architecture"] = platform[0], platform[1]
        if platform[2]:
            plat["variant"] = platform[2]
        else:
            plat.pop("variant", None)
        out["platform"] = plat
    return out


def commit(
    base: Base,
    config_doc: dict[str, Any],
    *,
    add_layers: tuple[Descriptor, ...] = (),
    layers: tuple[Descriptor, ...] | None = None,
    tag: str | None = None,
) -> ImageUpdate:
    """Store the new config and manifest of ``base`` (plus ``add_layers``, already stored; or
    with its layers replaced by ``layers``), the indexes above it, and point the ref at the
    result. Hold ``layout.writing()``."""
    layout = base.layout
    cfg_desc = store_document(layout, config_doc, base.manifest.config.media_type,
                              "new config")
    man_doc = dict(base.manifest.doc)
    man_desc = store_document(
        layout,
        manifest_with(man_doc, config=cfg_desc, add=add_layers, layers=layers),
        base.manifest.media_type,
        "new manifest",
    )
    old_plat = _platform_of(dict(base.config.doc))
    new_plat = _platform_of(config_doc)
    plat = new_plat if new_plat != old_plat else None
    old_digest, new_child = base.manifest_desc.digest, man_desc
    for idx in reversed(base.indexes):
        doc = dict(idx.doc)
        doc["manifests"] = [
            _child(k, new_child, plat)
            if isinstance(k, dict) and k.get("digest") == str(old_digest) else k
            for k in doc.get("manifests") or []
        ]
        old_digest = idx.digest
        new_child = store_document(layout, doc, idx.media_type, f"new index for {idx.digest}")
    top = new_child
    if base.entry is not None and not base.indexes:
        # the entry is the manifest: its platform, if it has one, follows the config too
        entry_json = _child(base.entry.to_json(), top, plat)
    elif base.entry is not None:
        entry_json = patch_descriptor(base.entry.to_json(), top)
    else:
        entry_json = top.to_json()
    new_entry = Descriptor.from_json(entry_json, "new index.json entry")
    action, ref = point(layout, base.entry, new_entry, tag=tag,
                        by_digest=base.ref.digest is not None)
    return ImageUpdate.of(layout, action, ref, top, man_desc, cfg_desc, base.entry)


def point(
    layout: Layout,
    old: Descriptor | None,
    new: Descriptor,
    *,
    tag: str | None,
    by_digest: bool = False,
) -> tuple[Action, str | None]:
    """Update ``index.json`` once so that the result ``new`` (an entry descriptor carrying the
    old entry's fields) is reached as the module docstring says; (action, ref name)."""
    result: list[tuple[Action, str | None]] = []
    if tag is not None:
        wanted = ref_descriptor(new, tag)
    elif by_digest or old is None:
        wanted = new.with_(annotations={
            k: v for k, v in new.annotations.items()
            if k not in (mt.ANNOT_REF_NAME, mt.ANNOT_CONTAINERD_NAME)
        })
    else:
        wanted = new

    def change(entries: list[Descriptor], _doc: dict[str, Any]) -> list[Descriptor]:
        result.clear()
        if wanted.ref_name is not None:
            out, how = place_ref(entries, wanted)
            result.append(("tagged" if how == "tagged" and tag is not None else "moved",
                           wanted.ref_name))
            return out
        if old is not None and not by_digest:
            oj = old.to_json()
            for i, d in enumerate(entries):
                if d.to_json() == oj:
                    result.append(("replaced", None))
                    return [*entries[:i], wanted, *entries[i + 1:]]
        result.append(("added", None))
        if any(d.to_json() == wanted.to_json() for d in entries):
            return entries
        return [*entries, wanted]

    layout.update_index(change)
    return result[-1]
