"""layouttool: OCI image layouts and docker save tarballs, on disk.

The public API is re-exported here; everything else is internal.

>>> import layouttool
>>> layouttool.__version__ != ""
True
"""

from layouttool._version import __version__
from layouttool.digest import Digest
from layouttool.errors import (
    ConflictError,
    CorruptStreamError,
    IntegrityError,
    Interrupted,
    InvalidInputError,
    IOFailure,
    LayoutToolError,
    NotFoundError,
    SizeLimitError,
    UnsafeInputError,
    UnsupportedError,
)
from layouttool.model import Descriptor, ImageConfig, Index, Manifest, Platform
from layouttool.ops.convert import ConvertResult, convert_image
from layouttool.ops.export import ExportResult, export_docker_save
from layouttool.ops.gc import GcResult, gc_layout
from layouttool.ops.importer import ImportResult, import_docker_save
from layouttool.ops.layout import init_layout, inspect_image, list_images, tag_image, untag_image
from layouttool.ops.verify import verify_layout
from layouttool.store import Layout

__all__ = [
    "ConflictError",
    "ConvertResult",
    "CorruptStreamError",
    "Descriptor",
    "Digest",
    "ExportResult",
    "GcResult",
    "IOFailure",
    "ImageConfig",
    "ImportResult",
    "Index",
    "IntegrityError",
    "Interrupted",
    "InvalidInputError",
    "Layout",
    "LayoutToolError",
    "Manifest",
    "NotFoundError",
    "Platform",
    "SizeLimitError",
    "UnsafeInputError",
    "UnsupportedError",
    "__version__",
    "convert_image",
    "export_docker_save",
    "gc_layout",
    "import_docker_save",
    "init_layout",
    "inspect_image",
    "list_images",
    "tag_image",
    "untag_image",
    "verify_layout",
]
