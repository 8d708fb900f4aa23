"""Build random OCI image layouts for tests and fuzzing, with the expected gc outcome.

Two levels:

* :class:`LayoutBuilder` writes one layout by hand: layers, configs, OCI and Docker manifests,
  indexes (nested), referrers (manifests with a ``subject``), manifest-like documents of an
  unknown media type, orphan blobs, and hostile extras (symlinked blobs, file names that are not
  digests, temp files). Every blob it writes is recorded in an *oracle graph* (what the blob
  references, and which of those references a gc walk must read through), so
  :meth:`LayoutBuilder.expected_kept` can say which blobs gc must keep without using any of
  layouttool's own graph code.
* :func:`dag_specs` is a hypothesis strategy of :class:`DagSpec` (plain data: nodes that refer
  to earlier nodes, so it is a DAG, plus the index.json roots), and :func:`build` turns one into
  a layout and a :class:`BuiltDag` holding the expected ``kept`` and ``orphans`` sets.

The oracle's rules (they are the gc contract, written a second time, independently):

* roots are every index.json entry, tagged or not;
* a document reached as a root, an index child or a ``subject`` is read and its references
  followed; configs and layers are leaves; inside a document of an unknown media type every
  descriptor-shaped object is a reference, read through only when its media type is a
  manifest or index type;
* a blob that is not reached but is a JSON object whose ``subject`` names a kept blob is kept
  (a referrer), with everything it references, until nothing changes.

Blobs are written straight into ``blobs/sha256`` without fsync: a test helper may, library code
may not (it goes through :class:`layouttool.store.Layout`).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from layouttool import mediatypes as mt
from layouttool.digest import Digest

#: a media type no tool knows: a manifest-like artifact document of a newer spec
UNKNOWN_DOC_TYPE = "application/vnd.example.future-manifest.v9+json"
#: payload of referrers (an SBOM, a signature)
SBOM_TYPE = "application/vnd.example.sbom.v1+json"
SIG_ARTIFACT_TYPE = "application/vnd.example.signature.v1"


def _dump(doc: Any) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


@dataclass
class BlobInfo:
    """What the oracle knows about one stored blob."""

    kind: str
    size: int
    #: (digest, read-through) for every reference in the blob
    refs: list[tuple[Digest, bool]] = field(default_factory=list)
    #: the ``subject`` digest when the blob is a JSON object with a subject descriptor
    subject: Digest | None = None


class LayoutBuilder:
    """Write an OCI layout blob by blob and remember the reference graph."""

    def __init__(self, root: Path, *, rng: random.Random | None = None) -> None:
        self.root = Path(root)
        self.rng = rng or random.Random(0)
        (self.root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        (self.root / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
        self.blobs: dict[Digest, BlobInfo] = {}
        self.roots: list[dict[str, Any]] = []
        self.write_index()

    # ------------------------------------------------------------------ raw blobs
    def blob_path(self, digest: Digest) -> Path:
        """Where ``digest`` is stored."""
        return self.root / "blobs" / digest.algorithm / digest.encoded

    def put(
        self,
        data: bytes,
        *,
        kind: str,
        refs: Iterable[tuple[Digest, bool]] = (),
        subject: Digest | None = None,
    ) -> Digest:
        """Store ``data`` (idempotent) and record what it references."""
        d = Digest("sha256", hashlib.sha256(data).hexdigest())
        p = self.blob_path(d)
        if not p.exists():
            p.write_bytes(data)
        if d not in self.blobs:
            self.blobs[d] = BlobInfo(kind, len(data), list(refs), subject)
        return d

    def desc(self, media_type: str, digest: Digest, **extra: Any) -> dict[str, Any]:
        """A descriptor object for a stored blob."""
        return {"mediaType": media_type, "digest": str(digest),
                "size": self.blobs[digest].size, **extra}

    # ------------------------------------------------------------------ image parts
    def layer(self, data: bytes | None = None, *, docker: bool = False) -> dict[str, Any]:
        """A layer blob (content is opaque to gc: random bytes unless given)."""
        if data is None:
            data = self.rng.randbytes(self.rng.randint(1, 256))
        d = self.put(data, kind="layer")
        return self.desc(mt.MT_DOCKER_LAYER_GZIP if docker else mt.MT_OCI_LAYER_GZIP, d)

    def config(self, n_layers: int, *, docker: bool = False, nonce: object = 0) -> dict[str, Any]:
        """A valid image config with one diff_id per layer (``nonce`` varies the bytes)."""
        diff_ids = [
            "sha256:" + hashlib.sha256(f"diff-{nonce}-{i}".encode()).hexdigest()
            for i in range(n_layers)
        ]
        doc = {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Labels": {"nonce": str(nonce)}},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }
        d = self.put(_dump(doc), kind="config")
        return self.desc(mt.MT_DOCKER_CONFIG if docker else mt.MT_OCI_CONFIG, d)

    def empty_config(self) -> dict[str, Any]:
        """The OCI empty descriptor's blob ``{}`` (artifacts use it as config)."""
        return self.desc(mt.MT_OCI_EMPTY, self.put(b"{}", kind="config"))

    def manifest(
        self,
        config: dict[str, Any],
        layers: Sequence[dict[str, Any]],
        *,
        docker: bool = False,
        subject: dict[str, Any] | None = None,
        artifact_type: str | None = None,
        annotations: dict[str, str] | None = None,
    ) -> dict[str, Any]:
        """An OCI image manifest or a Docker v2 schema 2 manifest."""
        media_type = mt.MT_DOCKER_MANIFEST if docker else mt.MT_OCI_MANIFEST
        doc: dict[str, Any] = {"schemaVersion": 2, "mediaType": media_type}
        if artifact_type:
            doc["artifactType"] = artifact_type
        doc["config"] = config
        doc["layers"] = list(layers)
        if subject is not None:
            doc["subject"] = subject
        if annotations:
            doc["annotations"] = annotations
        refs = [(Digest.parse(config["digest"]), False)]
        refs += [(Digest.parse(x["digest"]), False) for x in layers]
        subj = Digest.parse(subject["digest"]) if subject is not None else None
        if subj is not None:
            refs.append((subj, True))
        d = self.put(_dump(doc), kind="manifest", refs=refs, subject=subj)
        return self.desc(media_type, d)

    def image(
        self, n_layers: int = 1, *, docker: bool = False, nonce: object = 0,
        layers: Sequence[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        """A manifest with a config and ``n_layers`` fresh layers (or the given ones)."""
        if layers is None:
            layers = [self.layer(docker=docker) for _ in range(n_layers)]
        cfg = self.config(len(layers), docker=docker, nonce=nonce)
        return self.manifest(cfg, layers, docker=docker)

    def index(
        self,
        children: Sequence[dict[str, Any]],
        *,
        docker: bool = False,
        subject: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """An OCI image index or a Docker manifest list over ``children`` (nesting allowed)."""
        media_type = mt.MT_DOCKER_LIST if docker else mt.MT_OCI_INDEX
        doc: dict[str, Any] = {"schemaVersion": 2, "mediaType": media_type,
                               "manifests": list(children)}
        if subject is not None:
            doc["subject"] = subject
        refs = [(Digest.parse(c["digest"]), True) for c in children]
        subj = Digest.parse(subject["digest"]) if subject is not None else None
        if subj is not None:
            refs.append((subj, True))
        d = self.put(_dump(doc), kind="index", refs=refs, subject=subj)
        return self.desc(media_type, d)

    def artifact(
        self, descs: Sequence[dict[str, Any]], *, subject: dict[str, Any] | None = None,
        nonce: object = 0,
    ) -> dict[str, Any]:
        """A manifest-like document of an unknown media type holding ``descs`` (and a subject).

        gc must follow every descriptor in it, reading through those of manifest/index type.
        """
        doc: dict[str, Any] = {"mediaType": UNKNOWN_DOC_TYPE, "nonce": str(nonce),
                               "parts": {"blobs": list(descs)}}
        if subject is not None:
            doc["subject"] = subject
        every = [*descs, *([subject] if subject is not None else [])]
        refs = [
            (Digest.parse(x["digest"]),
             mt.is_manifest(x["mediaType"]) or mt.is_index(x["mediaType"]))
            for x in every
        ]
        subj = Digest.parse(subject["digest"]) if subject is not None else None
        d = self.put(_dump(doc), kind="artifact", refs=refs, subject=subj)
        return self.desc(UNKNOWN_DOC_TYPE, d)

    def referrer(self, subject: dict[str, Any], *, nonce: object = 0,
                 docs: bool = True) -> dict[str, Any]:
        """An OCI artifact manifest (an SBOM) whose ``subject`` is ``subject``; not rooted."""
        payload = self.put(_dump({"sbom": str(nonce)}) if docs else self.rng.randbytes(40),
                           kind="layer")
        return self.manifest(
            self.empty_config(), [self.desc(SBOM_TYPE, payload)], subject=subject,
            artifact_type=SIG_ARTIFACT_TYPE,
        )

    def orphan(self, data: bytes | None = None) -> Digest:
        """A blob nothing references."""
        if data is None:
            data = self.rng.randbytes(self.rng.randint(1, 256))
        return self.put(data, kind="orphan")

    # ------------------------------------------------------------------ hostile extras
    def symlink_blob(self, target: Path, data: bytes) -> tuple[Digest, Path]:
        """A symlink named by the digest of ``data``, pointing at ``target`` (written)."""
        target.write_bytes(data)
        d = Digest("sha256", hashlib.sha256(data).hexdigest())
        link = self.blob_path(d)
        os.symlink(target, link)
        return d, link

    def junk_file(self, rel: str, data: bytes = b"junk") -> Path:
        """A file under ``blobs/`` whose name is not a valid digest (``rel`` below blobs/)."""
        p = self.root / "blobs" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
        return p

    def temp_file(self, name: str = "tmp-4242-deadbeef", data: bytes = b"partial") -> Path:
        """A temp file an interrupted layouttool write left behind."""
        d = self.root / ".layouttool" / "tmp"
        d.mkdir(parents=True, exist_ok=True)
        p = d / name
        p.write_bytes(data)
        return p

    # ------------------------------------------------------------------ index.json
    def add_root(self, desc: dict[str, Any], ref: str | None = None) -> None:
        """List ``desc`` in index.json (tagged when ``ref`` is given)."""
        entry = dict(desc)
        if ref is not None:
            entry["annotations"] = {mt.ANNOT_REF_NAME: ref}
        self.roots.append(entry)
        self.write_index()

    def write_index(self) -> None:
        """Write index.json from :attr:`roots`."""
        doc = {"schemaVersion": 2, "mediaType": mt.MT_OCI_INDEX, "manifests": self.roots}
        (self.root / "index.json").write_bytes(_dump(doc))

    # ------------------------------------------------------------------ the oracle
    def expected_kept(
        self, *, unreadable: Iterable[Digest] = (), referrers: bool = True
    ) -> set[Digest]:
        """Every digest gc must keep (see :meth:`expected_walk`)."""
        return self.expected_walk(unreadable=unreadable, referrers=referrers)[0]

    def expected_walk(
        self, *, unreadable: Iterable[Digest] = (), referrers: bool = True
    ) -> tuple[set[Digest], set[Digest]]:
        """Every digest gc must keep (reachable, and referrers to a fixpoint), and the documents
        it must read to know that.

        ``unreadable`` documents are kept but not read through (what ``--force`` does with a
        document it cannot read); ``referrers=False`` gives what index.json alone reaches.
        The result may name digests that are not stored.
        """
        broken = set(unreadable)
        kept: set[Digest] = set()
        expanded: set[Digest] = set()

        def reach(start: Iterable[Digest]) -> None:
            stack = list(start)
            while stack:
                d = stack.pop()
                kept.add(d)
                if d in expanded or d in broken:
                    continue
                expanded.add(d)
                info = self.blobs.get(d)
                if info is None:
                    continue
                for child, through in info.refs:
                    if through:
                        stack.append(child)
                    else:
                        kept.add(child)

        reach(Digest.parse(r["digest"]) for r in self.roots)
        while referrers:
            new = [d for d, info in self.blobs.items()
                   if d not in kept and info.subject is not None and info.subject in kept]
            if not new:
                break
            reach(new)
        return kept, expanded

    def stored(self) -> set[Digest]:
        """Every digest with a file in ``blobs/sha256`` (what is on disk now)."""
        base = self.root / "blobs" / "sha256"
        return {Digest("sha256", p.name) for p in base.iterdir()
                if len(p.name) == 64 and all(c in "0123456789abcdef" for c in p.name)}


# ---------------------------------------------------------------------- random DAGs
@dataclass(frozen=True)
class NodeSpec:
    """One node of a random DAG; ``refs`` and ``subject`` index earlier nodes."""

    kind: str  # layer | image | index | artifact | referrer | orphan
    docker: bool = False
    refs: tuple[int, ...] = ()
    subject: int | None = None
    nonce: int = 0
    size: int = 16


@dataclass(frozen=True)
class DagSpec:
    """A random layout: nodes in dependency order and the index.json roots."""

    nodes: tuple[NodeSpec, ...]
    #: (node index, ref name or None); a node may be listed more than once
    roots: tuple[tuple[int, str | None], ...]


@dataclass
class BuiltDag:
    """A layout made from a :class:`DagSpec`, with the expected gc outcome."""

    root: Path
    builder: LayoutBuilder
    #: the descriptor of every node, in spec order
    descs: list[dict[str, Any]]
    kept: set[Digest]
    orphans: set[Digest]

    def documents(self, *, referrers: bool = True) -> list[Digest]:
        """Kept blobs that gc reads (manifests, indexes, artifacts), in a stable order;
        ``referrers=False``: only those index.json reaches (not kept as referrers)."""
        docs = {Digest.parse(d["digest"]) for d in self.descs
                if d["mediaType"] in (mt.MT_OCI_MANIFEST, mt.MT_DOCKER_MANIFEST,
                                      mt.MT_OCI_INDEX, mt.MT_DOCKER_LIST, UNKNOWN_DOC_TYPE)}
        # only documents gc reads through: one reached only as another document's blob (an
        # artifact listed as a layer) is a leaf, and losing it is not a walk error
        read = self.builder.expected_walk(referrers=referrers)[1]
        return sorted(docs & read & self.builder.stored())


_DOC_KINDS = ("image", "index", "artifact", "referrer")


@st.composite
def dag_specs(draw: st.DrawFn, max_nodes: int = 18) -> DagSpec:
    """Random DAGs of layers, OCI/Docker images, nested indexes, unknown-type artifacts,
    referrers (rooted or not, of rooted or orphaned subjects, chains of them) and orphans."""
    n = draw(st.integers(2, max_nodes))
    nodes: list[NodeSpec] = []
    for i in range(n):
        layers = [j for j, x in enumerate(nodes) if x.kind == "layer"]
        docs = [j for j, x in enumerate(nodes) if x.kind in _DOC_KINDS]
        choices = ["layer", "orphan"] + (["image"] if layers else [])
        if docs:
            choices += ["index", "artifact", "referrer"]
        kind = draw(st.sampled_from(choices))
        nonce = draw(st.integers(0, 3))  # small: identical documents (shared blobs) happen
        if kind in ("layer", "orphan"):
            nodes.append(NodeSpec(kind, size=draw(st.integers(1, 64)), nonce=i))
        elif kind == "image":
            # the OCI schema wants at least one layer
            refs = tuple(draw(st.lists(st.sampled_from(layers), min_size=1, max_size=3,
                                       unique=True)))
            docker = draw(st.booleans())
            subject = None if docker or not docs else draw(st.none() | st.sampled_from(docs))
            nodes.append(NodeSpec("image", docker, refs, subject, nonce))
        elif kind == "index":
            kids = tuple(draw(st.lists(st.sampled_from(docs), min_size=1, max_size=3,
                                       unique=True)))
            docker = draw(st.booleans())
            subject = None if docker else draw(st.none() | st.sampled_from(docs))
            nodes.append(NodeSpec("index", docker, kids, subject, nonce))
        elif kind == "artifact":
            refs = tuple(draw(st.lists(st.integers(0, i - 1), max_size=3, unique=True)))
            subject = draw(st.none() | st.sampled_from(docs))
            nodes.append(NodeSpec("artifact", refs=refs, subject=subject, nonce=nonce))
        else:
            nodes.append(NodeSpec("referrer", subject=draw(st.sampled_from(docs)), nonce=i))
    rootable = [j for j, x in enumerate(nodes) if x.kind in _DOC_KINDS]
    roots: list[tuple[int, str | None]] = []
    if rootable:
        picked = draw(st.lists(st.sampled_from(rootable), max_size=5))
        for k, j in enumerate(picked):
            roots.append((j, draw(st.sampled_from([None, f"tag{k}", "latest"]))))
    return DagSpec(tuple(nodes), tuple(roots))


def build(spec: DagSpec, root: Path) -> BuiltDag:
    """Write the layout ``spec`` describes under ``root`` and compute the expected outcome."""
    b = LayoutBuilder(root, rng=random.Random(len(spec.nodes)))
    descs: list[dict[str, Any]] = []
    for i, node in enumerate(spec.nodes):
        if node.kind == "layer":
            descs.append(b.layer(_bytes(i, node.size)))
        elif node.kind == "orphan":
            # an "orphan" stays one unless a later artifact happens to reference it
            descs.append(b.desc(SBOM_TYPE, b.orphan(_bytes(i, node.size, orphan=True))))
        elif node.kind == "image":
            family = mt.MT_DOCKER_LAYER_GZIP if node.docker else mt.MT_OCI_LAYER_GZIP
            layers = [dict(descs[j], mediaType=family) for j in node.refs]
            cfg = b.config(len(layers), docker=node.docker, nonce=node.nonce)
            subject = descs[node.subject] if node.subject is not None else None
            descs.append(b.manifest(cfg, layers, docker=node.docker, subject=subject))
        elif node.kind == "index":
            subject = descs[node.subject] if node.subject is not None else None
            descs.append(b.index([descs[j] for j in node.refs], docker=node.docker,
                                 subject=subject))
        elif node.kind == "artifact":
            subject = descs[node.subject] if node.subject is not None else None
            descs.append(b.artifact([descs[j] for j in node.refs], subject=subject,
                                    nonce=node.nonce))
        else:
            assert node.subject is not None
            descs.append(b.referrer(descs[node.subject], nonce=node.nonce))
    for j, ref in spec.roots:
        b.roots.append(dict(descs[j], **({"annotations": {mt.ANNOT_REF_NAME: ref}}
                                         if ref else {})))
    b.write_index()
    kept = b.expected_kept()
    return BuiltDag(root, b, descs, kept, b.stored() - kept)


def _bytes(i: int, size: int, *, orphan: bool = False) -> bytes:
    """Deterministic blob content; some orphans look like JSON (gc must sniff, not assume)."""
    rng = random.Random(i * 7919 + size)
    if orphan and i % 3 == 0:
        return _dump({"orphan": i, "pad": "x" * size})
    return bytes([0x1F, 0x8B]) + rng.randbytes(size)


def build_large(root: Path, *, images: int, layers_per_image: int = 3,
                orphan_images: int = 0, layer_size: int = 4096, seed: int = 1) -> LayoutBuilder:
    """A layout of many small images (for benchmarks): ``images`` tagged images whose layers
    are partly shared, plus ``orphan_images`` untagged ones that gc must remove."""
    rng = random.Random(seed)
    b = LayoutBuilder(root, rng=rng)
    shared = [b.layer(rng.randbytes(layer_size)) for _ in range(max(1, layers_per_image))]
    for k in range(images + orphan_images):
        own = [b.layer(rng.randbytes(layer_size)) for _ in range(layers_per_image - 1)]
        m = b.image(layers=[shared[k % len(shared)], *own], nonce=k)
        if k < images:
            b.roots.append(dict(m, annotations={mt.ANNOT_REF_NAME: f"img{k}"}))
    b.write_index()
    return b
