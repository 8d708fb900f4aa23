"""``attach``: store files as an OCI 1.1 artifact that refers to an image (``oras attach``).

The artifact is an image manifest (image-spec manifest.md, "Guidelines for Artifact Usage")
whose ``subject`` is the descriptor IMAGE names, whose ``artifactType`` is the type given, whose
``config`` is the empty descriptor (``application/vnd.oci.empty.v1+json``, the digest of
``{}``, size 2, ``data`` ``e30=``), and which has one layer per file, titled with the file's
name (``org.opencontainers.image.title``, as oras does, so ``oras pull`` restores it). Files
are read once, hashed while they are stored. The manifest gets an untagged ``index.json``
entry (oras does the same), so ``ls`` shows it and ``gc`` keeps it; ``referrers`` finds it
whether or not that entry is there.
"""

from __future__ import annotations

import base64
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from layouttool import mediatypes as mt
from layouttool.digest import Digest
from layouttool.errors import InvalidInputError, NotFoundError, UnsupportedError, from_oserror
from layouttool.model import Descriptor, dump_json, parse_manifest
from layouttool.ops.common import read_checked, select
from layouttool.ops.edit import source_date_epoch, timestamp
from layouttool.progress import NULL_PROGRESS, Progress
from layouttool.reader import Kind
from layouttool.refs import parse_image
from layouttool.store import Layout

#: the empty JSON object, the config of an artifact that has none (image-spec manifest.md)
EMPTY_JSON = b"{}"
_CHUNK = 1 << 20
# RFC 6838 type/subtype (with an optional +suffix), what a descriptor's mediaType holds
_TOKEN = r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}"
_MEDIA_TYPE = re.compile(rf"{_TOKEN}/{_TOKEN}")


def check_media_type(value: str, what: str) -> str:
    """``value`` when it is a media type (``type/subtype``), else InvalidInputError."""
    if not _MEDIA_TYPE.fullmatch(value):
        raise InvalidInputError(
            f"{what} {value!r} is not a media type (type/subtype, e.g. "
            "application/spdx+json)"
        )
    return value


def split_file_arg(arg: str) -> tuple[Path, str]:
    """``FILE`` or ``FILE:TYPE`` (oras's syntax): an existing path is taken whole (so a name
    may hold ``:``); otherwise the part after the last ``:`` is the layer's media type."""
    if os.path.lexists(arg) or ":" not in arg:
        return Path(arg), mt.MT_OCTET_STREAM
    path, _, media_type = arg.rpartition(":")
    if not path:
        raise InvalidInputError(f"{arg!r}: empty file name")
    return Path(path), check_media_type(media_type, f"{arg!r}: media type")


def subject_of(image: str) -> tuple[Layout, Descriptor]:
    """The layout IMAGE is in and the descriptor of the document it names: what
    :func:`~layouttool.ops.common.select` finds (an index.json entry by ref or digest, or one
    inside an index), else, by digest, any manifest or index stored in the layout (an artifact
    nothing lists, so that its own referrers can point at it). The media type is the
    document's own, as the reader classifies it."""
    ref = parse_image(image)
    try:
        sel = select(ref)
        layout, desc = sel.layout, sel.entry
    except NotFoundError:
        if ref.digest is None:
            raise
        layout = Layout.open(ref.layout)
        if not layout.has_blob(ref.digest):
            raise NotFoundError(
                f"{layout.root}: no image or blob with digest {ref.digest}") from None
        size = os.lstat(layout.blob_path(ref.digest)).st_size
        desc = Descriptor(mt.MT_OCI_MANIFEST, ref.digest, size)
    doc = read_checked(layout, desc, f"{desc.digest}")
    if doc.kind not in (Kind.IMAGE, Kind.ARTIFACT, Kind.INDEX):
        raise UnsupportedError(
            f"{desc.digest} is {doc.describe()}: not a manifest or index to refer to"
        )
    return layout, Descriptor(doc.media_type, desc.digest, desc.size)


@dataclass(frozen=True, slots=True)
class AttachResult:
    """The artifact stored: its manifest, what it refers to, its layers."""

    layout: str
    subject: Descriptor
    manifest: Descriptor
    artifact_type: str
    #: (file as given, layer descriptor)
    layers: tuple[tuple[str, Descriptor], ...]
    annotations: Mapping[str, str]
    seconds: float

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "layout": self.layout,
            "subject": self.subject.to_json(),
            "digest": str(self.manifest.digest),
            "mediaType": self.manifest.media_type,
            "size": self.manifest.size,
            "artifactType": self.artifact_type,
            "layers": [{"file": f, **d.to_json()} for f, d in self.layers],
            "annotations": dict(self.annotations),
            "seconds": round(self.seconds, 3),
        }


def _store_file(layout: Layout, path: Path, progress: Progress) -> tuple[Digest, int]:
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed below
    except FileNotFoundError:
        raise NotFoundError(f"file {path} does not exist") from None
    except IsADirectoryError:
        raise InvalidInputError(f"{path} is a directory; attach files (tar it first)") from None
    except OSError as exc:
        raise from_oserror(exc, "open", path) from exc
    with fh, layout.writer() as w:
        task = progress.task(f"file {path.name}", os.fstat(fh.fileno()).st_size)
        try:
            while data := fh.read(_CHUNK):
                w.write(data)
                task.advance(len(data))
        except OSError as exc:
            raise from_oserror(exc, "read", path) from exc
        info = w.commit()
        task.done()
    return info.digest, info.size


def attach_artifact(
    image: str,
    files: Sequence[str],
    *,
    artifact_type: str,
    annotations: Mapping[str, str] | None = None,
    progress: Progress = NULL_PROGRESS,
) -> AttachResult:
    """Store ``files`` (each ``FILE`` or ``FILE:TYPE``) as an artifact of ``artifact_type``
    whose ``subject`` is what IMAGE names (see the module docstring).

    The manifest's ``org.opencontainers.image.created`` annotation is ``SOURCE_DATE_EPOCH``
    when set (else now), unless ``annotations`` gives it; the same files, annotations and
    ``SOURCE_DATE_EPOCH`` always give the same digest.
    """
    start = time.monotonic()
    check_media_type(artifact_type, "--artifact-type")
    if not files:
        raise InvalidInputError("name at least one FILE to attach")
    parsed = [split_file_arg(f) for f in files]
    notes = dict(annotations or {})
    for key in notes:
        if not key:
            raise InvalidInputError("--annotation needs KEY=VALUE with a non-empty KEY")
    epoch = source_date_epoch()
    layout, subject = subject_of(image)
    with layout.writing():
        layers = []
        for arg, (path, media_type) in zip(files, parsed, strict=True):
            digest, size = _store_file(layout, path, progress)
            layers.append((arg, Descriptor(media_type, digest, size,
                                           annotations={mt.ANNOT_TITLE: path.name})))
        config = layout.put_bytes(EMPTY_JSON).descriptor(
            mt.MT_OCI_EMPTY, data=base64.b64encode(EMPTY_JSON).decode())
        notes.setdefault(mt.ANNOT_CREATED, timestamp(epoch))
        doc = {
            "schemaVersion": 2,
            "mediaType": mt.MT_OCI_MANIFEST,
            "artifactType": artifact_type,
            "config": config.to_json(),
            "layers": [d.to_json() for _, d in layers],
            "subject": subject.to_json(),
            "annotations": notes,
        }
        raw = dump_json(doc)
        parse_manifest(raw, "artifact manifest", mt.MT_OCI_MANIFEST)
        manifest = layout.put_bytes(raw).descriptor(mt.MT_OCI_MANIFEST)
        entry = manifest.with_(artifact_type=artifact_type)

        def change(entries: list[Descriptor], _doc: dict[str, Any]) -> list[Descriptor]:
            if any(d.digest == entry.digest for d in entries):
                return entries  # attached before: the same artifact, listed once
            return [*entries, entry]

        layout.update_index(change)
    return AttachResult(
        layout=str(layout.root),
        subject=subject,
        manifest=manifest,
        artifact_type=artifact_type,
        layers=tuple(layers),
        annotations=notes,
        seconds=time.monotonic() - start,
    )
