"""``verify``: check everything reachable from index.json, and report every problem."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from layouttool import mediatypes as mt
from layouttool.errors import (
    IntegrityError,
    LayoutToolError,
    NotFoundError,
)
from layouttool.graph import Node, walk
from layouttool.model import Index, Manifest, parse_config, parse_json
from layouttool.store import Layout


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with a layout."""

    kind: str
    where: str
    message: str
    exit_code: int

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {"kind": self.kind, "where": self.where, "message": self.message}


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """The outcome of ``verify``."""

    layout: str
    checked: int
    bytes_checked: int
    problems: tuple[Problem, ...]
    warnings: tuple[str, ...]

    @property
    def ok(self) -> bool:
        """True when nothing is wrong."""
        return not self.problems

    @property
    def exit_code(self) -> int:
        """5 when any content is missing or mismatched, else 4 when anything is invalid, else 0."""
        if not self.problems:
            return 0
        return 5 if any(p.exit_code in (3, 5) for p in self.problems) else 4

    def to_json(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "layout": self.layout,
            "ok": self.ok,
            "checked": self.checked,
            "bytesChecked": self.bytes_checked,
            "problems": [p.to_json() for p in self.problems],
            "warnings": list(self.warnings),
        }


def _schema_problems(doc: Any, media_type: str) -> list[str]:
    from layouttool import schema

    kind = schema.schema_for_media_type(media_type)
    if kind is None:
        return []
    return schema.validate(doc, kind)


def _lazy_findings(
    layout: Layout,
    node: Node,
    m: Manifest | None,
    size: int | None,
    progress: Callable[[int], None] | None,
) -> list[Any]:
    """A lazy-pull layer: its TOC checked against its annotations and its tar (one more read
    of the footer and TOC by range, then the usual single pass, decompressing)."""
    import os

    from layouttool.codec import TeeReader
    from layouttool.lazy.check import check_layer

    desc = node.desc
    diff_id = None
    if m is not None:
        try:
            cfg = parse_config(layout.read_blob(m.config), f"config {m.config.digest}")
            i = next(i for i, d in enumerate(m.layers) if d.digest == desc.digest)
            diff_id = cfg.diff_ids[i] if i < len(cfg.diff_ids) else None
        except (LayoutToolError, StopIteration):
            diff_id = None  # the config's own problems are reported where it is visited
    with layout.open_blob(desc.digest, size) as r:
        fd = r.fileno()
        findings = check_layer(
            desc.annotations,
            r.size,
            lambda off, n: os.pread(fd, n, off),
            lambda: TeeReader(r, advance=progress),
            diff_id,
            what=f"lazy layer {desc.digest}",
        )
        r.finish()  # the digest is checked even if a finding stopped the pass early
    return findings


def verify_layout(
    path: str | Path, *, progress: Callable[[int], None] | None = None
) -> VerifyResult:
    """Walk every descriptor reachable from index.json and check it.

    Checks: every blob exists, is a regular file, has the descriptor's size and digest; every
    manifest, index and config is JSON of the right shape, agrees with its descriptor's media
    type and passes the image-spec schema (OCI types); an image config has one diff_id per
    layer. Non-distributable layers may be absent (a warning).
    """
    from layouttool import schema

    layout = Layout.open(path)
    problems: list[Problem] = []
    warnings: list[str] = []

    def add(node_where: str, exc: LayoutToolError) -> None:
        problems.append(Problem(exc.kind, node_where, str(exc), exc.exit_code))

    def on_error(node: Node, exc: LayoutToolError) -> None:
        add(node.where(), exc)

    idx = layout.read_index()
    for msg in schema.validate(parse_json(idx.raw, "index.json"), schema.SchemaKind.INDEX):
        problems.append(Problem("schema", "index.json", msg, 4))

    checked = 0
    nbytes = 0
    layer_counts: dict[str, int] = {}
    manifests: dict[str, Manifest] = {}
    for node in walk(layout, on_error=on_error):
        desc = node.desc
        if node.doc is not None or node.role in ("root", "manifest", "index", "subject"):
            # documents were read (and verified) by the walk; schema-check the OCI ones
            if isinstance(node.doc, Manifest | Index):
                for msg in _schema_problems(node.doc.doc, node.doc.media_type):
                    problems.append(Problem("schema", node.where(), msg, 4))
                if isinstance(node.doc, Manifest):
                    manifests[str(desc.digest)] = node.doc
                if isinstance(node.doc, Manifest) and mt.is_image_config(
                    node.doc.config.media_type
                ):
                    layer_counts[str(node.doc.config.digest)] = len(node.doc.layers)
            checked += 1
            nbytes += desc.size
            continue
        # schema 1 gives no layer sizes: take the size on disk, check the digest
        in_schema1 = node.parent is not None and mt.is_schema1(node.parent.desc.media_type)
        size = None if in_schema1 else desc.size
        try:
            if node.role == "config" and mt.is_image_config(desc.media_type):
                cfg = parse_config(layout.read_blob(desc), f"config {desc.digest}")
                for msg in _schema_problems(cfg.doc, desc.media_type):
                    problems.append(Problem("schema", node.where(), msg, 4))
                want = layer_counts.get(str(desc.digest))
                if want is not None and want != len(cfg.diff_ids):
                    raise IntegrityError(
                        f"config {desc.digest} lists {len(cfg.diff_ids)} diff_ids but the "
                        f"manifest has {want} layers"
                    )
            elif node.role == "layer" and mt.lazy_format(desc.annotations) is not None:
                parent = node.parent
                m = manifests.get(str(parent.desc.digest)) if parent is not None else None
                for f in _lazy_findings(layout, node, m, size, progress):
                    code = 4 if f.code == "lazy-toc" else 5
                    problems.append(Problem(f.code, node.where(), f.message, code))
            else:
                with layout.open_blob(desc.digest, size) as r:
                    while chunk := r.read(1 << 20):
                        if progress is not None:
                            progress(len(chunk))
            checked += 1
            nbytes += desc.size
        except NotFoundError as exc:
            if mt.is_nondistributable(desc.media_type):
                warnings.append(f"{node.where()}: non-distributable layer not present")
                continue
            add(node.where(), exc)
        except LayoutToolError as exc:
            add(node.where(), exc)
    return VerifyResult(str(path), checked, nbytes, tuple(problems), tuple(warnings))
