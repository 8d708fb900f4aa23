"""layouttool: OCI image layouts and docker save tarballs, on disk.

The names in ``__all__`` are the public API; everything else is internal and may change.
Each operation takes paths or ``IMAGE`` strings (``LAYOUT[:REF]`` or ``LAYOUT@sha256:<hex>``,
as on the command line), returns a frozen result dataclass with a ``to_json()`` (the
``--json`` document of the matching command), accepts an optional ``progress``
(:class:`Progress`) and raises only :class:`LayoutToolError` subclasses, each carrying the
``exit_code`` the CLI uses:

==========================  ====  ===========================================================
exception                   exit  raised when
==========================  ====  ===========================================================
:class:`NotFoundError`      3     a layout, ref, blob or file does not exist
:class:`InvalidInputError`  4     malformed JSON, schema, media type, bad option value
:class:`CorruptStreamError` 4     a compressed or tar stream is truncated or corrupt
:class:`UnsupportedError`   4     well formed, but not something we can do (schema 1 unpack)
:class:`SizeLimitError`     4     ``max_size`` or a JSON size cap exceeded
:class:`IntegrityError`     5     digest, size or diff_id mismatch
:class:`SizeMismatchError`  5     (an IntegrityError) a blob's size is not its descriptor's
:class:`DigestMismatchError` 5    (an IntegrityError) a blob does not hash to its digest
:class:`UnsafeInputError`   6     a path escape or link cycle was refused
:class:`ConflictError`      7     a layout is locked, or a destination would be clobbered
:class:`IOFailure`          74    the OS refused a read or write (ENOSPC, EACCES)
:class:`Interrupted`        130   SIGINT/SIGTERM
==========================  ====  ===========================================================

A short session (the README has a longer one, run by ``tests/test_api.py``):

>>> import pathlib, tempfile
>>> import layouttool
>>> oci = pathlib.Path(tempfile.mkdtemp()) / "oci"
>>> layouttool.init_layout(oci).layout == str(oci)
True
>>> layouttool.list_images(oci).images
()
>>> layouttool.verify_layout(oci).ok
True
>>> try:
...     layouttool.inspect_image(f"{oci}:app:1.0")
... except layouttool.NotFoundError as exc:
...     print(exc.exit_code)
3

Importing ``layouttool`` is cheap: the operations' modules (and their codecs) load on first use
of a name, so ``layouttool ls`` does not pay for ``convert``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from layouttool._version import __version__
from layouttool.errors import (
    ConflictError,
    CorruptStreamError,
    DigestMismatchError,
    IntegrityError,
    Interrupted,
    InvalidInputError,
    IOFailure,
    LayoutToolError,
    NotFoundError,
    SizeLimitError,
    SizeMismatchError,
    UnsafeInputError,
    UnsupportedError,
)

if TYPE_CHECKING:
    from layouttool.digest import Digest
    from layouttool.graph import find_referrers
    from layouttool.model import Descriptor, ImageConfig, Index, Manifest, Platform
    from layouttool.mutate import ConfigEdit
    from layouttool.ops.append import AppendResult, append_layers
    from layouttool.ops.attach import AttachResult, attach_artifact
    from layouttool.ops.common import ResolvedImage, open_image
    from layouttool.ops.config import ConfigResult, configure_image
    from layouttool.ops.convert import ConvertResult, convert_image
    from layouttool.ops.diff import ImageDiffResult, LayersDiffResult, diff_images, diff_layers
    from layouttool.ops.docker_save import ExportResult, export_docker_save
    from layouttool.ops.edit import ImageUpdate
    from layouttool.ops.export_rootfs import RootfsExportResult, export_rootfs
    from layouttool.ops.flatten import FlattenResult, flatten_image
    from layouttool.ops.gc import GcResult, gc_layout
    from layouttool.ops.importer import ImportResult, import_docker_save
    from layouttool.ops.layout import (
        InitResult,
        InspectResult,
        ListEntry,
        ListResult,
        TagResult,
        init_layout,
        inspect_image,
        list_images,
        tag_image,
        untag_image,
    )
    from layouttool.ops.new import NewResult, new_image
    from layouttool.ops.referrers import ReferrersResult, list_referrers
    from layouttool.ops.repack import RepackResult, repack_image
    from layouttool.ops.unpack import UnpackResult, unpack_image
    from layouttool.ops.verify import Problem, VerifyResult, verify_layout
    from layouttool.progress import Progress, Task
    from layouttool.reader import Finding, Kind
    from layouttool.store import Layout

#: public name -> module that defines it (imported on first access, PEP 562)
_LAZY: dict[str, str] = {
    "Digest": "layouttool.digest",
    "Descriptor": "layouttool.model",
    "ImageConfig": "layouttool.model",
    "Index": "layouttool.model",
    "Manifest": "layouttool.model",
    "Platform": "layouttool.model",
    "Layout": "layouttool.store",
    "Progress": "layouttool.progress",
    "Task": "layouttool.progress",
    "ResolvedImage": "layouttool.ops.common",
    "open_image": "layouttool.ops.common",
    "InitResult": "layouttool.ops.layout",
    "ListEntry": "layouttool.ops.layout",
    "ListResult": "layouttool.ops.layout",
    "InspectResult": "layouttool.ops.layout",
    "TagResult": "layouttool.ops.layout",
    "init_layout": "layouttool.ops.layout",
    "list_images": "layouttool.ops.layout",
    "inspect_image": "layouttool.ops.layout",
    "tag_image": "layouttool.ops.layout",
    "untag_image": "layouttool.ops.layout",
    "Problem": "layouttool.ops.verify",
    "Finding": "layouttool.reader",
    "Kind": "layouttool.reader",
    "find_referrers": "layouttool.graph",
    "VerifyResult": "layouttool.ops.verify",
    "verify_layout": "layouttool.ops.verify",
    "ImportResult": "layouttool.ops.importer",
    "import_docker_save": "layouttool.ops.importer",
    "ConvertResult": "layouttool.ops.convert",
    "convert_image": "layouttool.ops.convert",
    "UnpackResult": "layouttool.ops.unpack",
    "unpack_image": "layouttool.ops.unpack",
    "ExportResult": "layouttool.ops.docker_save",
    "export_docker_save": "layouttool.ops.docker_save",
    "GcResult": "layouttool.ops.gc",
    "gc_layout": "layouttool.ops.gc",
    "ConfigEdit": "layouttool.mutate",
    "ImageUpdate": "layouttool.ops.edit",
    "NewResult": "layouttool.ops.new",
    "new_image": "layouttool.ops.new",
    "AppendResult": "layouttool.ops.append",
    "append_layers": "layouttool.ops.append",
    "ConfigResult": "layouttool.ops.config",
    "configure_image": "layouttool.ops.config",
    "RepackResult": "layouttool.ops.repack",
    "repack_image": "layouttool.ops.repack",
    "RootfsExportResult": "layouttool.ops.export_rootfs",
    "export_rootfs": "layouttool.ops.export_rootfs",
    "FlattenResult": "layouttool.ops.flatten",
    "flatten_image": "layouttool.ops.flatten",
    "ImageDiffResult": "layouttool.ops.diff",
    "LayersDiffResult": "layouttool.ops.diff",
    "diff_images": "layouttool.ops.diff",
    "diff_layers": "layouttool.ops.diff",
    "AttachResult": "layouttool.ops.attach",
    "attach_artifact": "layouttool.ops.attach",
    "ReferrersResult": "layouttool.ops.referrers",
    "list_referrers": "layouttool.ops.referrers",
}

__all__ = [
    "AppendResult",
    "AttachResult",
    "ConfigEdit",
    "ConfigResult",
    "ConflictError",
    "ConvertResult",
    "CorruptStreamError",
    "Descriptor",
    "Digest",
    "DigestMismatchError",
    "ExportResult",
    "Finding",
    "FlattenResult",
    "GcResult",
    "IOFailure",
    "ImageConfig",
    "ImageDiffResult",
    "ImageUpdate",
    "ImportResult",
    "Index",
    "InitResult",
    "InspectResult",
    "IntegrityError",
    "Interrupted",
    "InvalidInputError",
    "Kind",
    "LayersDiffResult",
    "Layout",
    "LayoutToolError",
    "ListEntry",
    "ListResult",
    "Manifest",
    "NewResult",
    "NotFoundError",
    "Platform",
    "Problem",
    "Progress",
    "ReferrersResult",
    "RepackResult",
    "ResolvedImage",
    "RootfsExportResult",
    "SizeLimitError",
    "SizeMismatchError",
    "TagResult",
    "Task",
    "UnpackResult",
    "UnsafeInputError",
    "UnsupportedError",
    "VerifyResult",
    "__version__",
    "append_layers",
    "attach_artifact",
    "configure_image",
    "convert_image",
    "diff_images",
    "diff_layers",
    "export_docker_save",
    "export_rootfs",
    "find_referrers",
    "flatten_image",
    "gc_layout",
    "import_docker_save",
    "init_layout",
    "inspect_image",
    "list_images",
    "list_referrers",
    "new_image",
    "open_image",
    "repack_image",
    "tag_image",
    "unpack_image",
    "untag_image",
    "verify_layout",
]


def __getattr__(name: str) -> Any:
    """Load a public name from its module on first use."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'layouttool' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
