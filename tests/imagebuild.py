"""Build small images in an OCI layout from layer tars (for tests), with layouttool's store."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from layouttool import mediatypes as mt
from layouttool.codec import Compression
from layouttool.layers import store_layer
from layouttool.model import make_manifest_doc
from layouttool.ops.layout import set_ref
from layouttool.store import Layout


def make_image(
    layout_path: Path,
    layers: Sequence[bytes],
    *,
    ref: str = "t",
    compression: str = "gzip",
    docker: bool = False,
    config: dict[str, Any] | None = None,
    annotations: dict[str, str] | None = None,
) -> Path:
    """Store ``layers`` (plain tars, lowest first) as one image tagged ``ref`` in the layout at
    ``layout_path`` (made when absent); returns the layout path. The config gets one history
    entry per layer; ``config`` adds fields to it."""
    layout = Layout.open(layout_path, create=True)
    comp = Compression(compression)
    descs = []
    diff_ids = []
    for data in layers:
        res = store_layer(layout, io.BytesIO(data), target=comp, declared=Compression.NONE)
        descs.append(res.blob.descriptor(mt.layer_media_type(comp, docker=docker)))
        diff_ids.append(str(res.diff_id))
    cfg: dict[str, Any] = {
        "architecture": "amd64",
        "os": "linux",
        "created": "2024-01-01T00:00:00Z",
        "config": {"Env": ["PATH=/usr/bin:/bin"], "Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [{"created": "2024-01-01T00:00:00Z", "created_by": f"layer {i}"}
                    for i in range(len(layers))],
    }
    cfg.update(config or {})
    cdesc = layout.put_json(cfg, mt.config_type(docker=docker))
    mdoc = make_manifest_doc(media_type=mt.manifest_type(docker=docker), config=cdesc,
                             layers=descs, annotations=annotations)
    mdesc = layout.put_json(mdoc, mt.manifest_type(docker=docker))
    with layout.writing():
        set_ref(layout, mdesc, ref)
    return layout.root
