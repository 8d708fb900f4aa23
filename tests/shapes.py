"""Layouts shaped as other tools write them, byte by byte (for the tolerant-reader tests).

Each ``shape_*`` function writes one layout under ``root`` the way a peer writes it (what we
learnt from reading its exporter; notes per function) and returns a :class:`Made` naming the
refs and digests a test needs. Nothing here goes through layouttool's writers: index.json and
every blob are written raw, so descriptors can disagree with their documents as in the wild.
"""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dagbuild import _dump as dumps
from layerbuild import build_layer

from layouttool import mediatypes as mt

HELM_CONFIG = "application/vnd.cncf.helm.config.v1+json"
HELM_CHART = "application/vnd.cncf.helm.chart.content.v1.tar+gzip"
SBOM = "application/spdx+json"
IN_TOTO = "application/vnd.in-toto+json"
SIGNATURE = "application/vnd.dev.cosign.artifact.sig.v1+json"


@dataclass
class Made:
    """What a shape wrote: the layout, its refs, the digests a test looks at."""

    root: Path
    #: the IMAGE arguments of the entries (``root:ref`` or ``root@digest``)
    images: dict[str, str] = field(default_factory=dict)
    digests: dict[str, str] = field(default_factory=dict)
    #: a file every unpackable image's rootfs holds
    file: str = "etc/hello.txt"


class RawLayout:
    """Write an OCI layout blob by blob, with no checks."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        (root / "oci-layout").write_bytes(b'{"imageLayoutVersion":"1.0.0"}')

    def blob(self, content: bytes, media_type: str, **extra: Any) -> dict[str, Any]:
        digest = hashlib.sha256(content).hexdigest()
        (self.root / "blobs" / "sha256" / digest).write_bytes(content)
        return {"mediaType": media_type, "digest": f"sha256:{digest}", "size": len(content),
                **extra}

    def path(self, desc: dict[str, Any]) -> Path:
        return self.root / "blobs" / "sha256" / desc["digest"].split(":")[1]

    def layer(self, name: str = "etc/hello.txt", data: bytes = b"hello\n", *,
              docker: bool = False) -> tuple[dict[str, Any], str]:
        plain = build_layer([{"type": "dir", "name": "etc/"}, {"name": name, "data": data}])
        diff_id = "sha256:" + hashlib.sha256(plain).hexdigest()
        mtype = mt.MT_DOCKER_LAYER_GZIP if docker else mt.MT_OCI_LAYER_GZIP
        return self.blob(gzip.compress(plain, mtime=0), mtype), diff_id

    def config(self, diff_ids: list[str] | None, *, docker: bool = False,
               arch: str = "amd64", **over: Any) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "architecture": arch, "os": "linux", "created": "2024-01-01T00:00:00Z",
            "config": {"Cmd": ["/bin/sh"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }
        doc.update(over)
        return self.blob(dumps(doc), mt.MT_DOCKER_CONFIG if docker else mt.MT_OCI_CONFIG)

    def manifest(self, config: dict[str, Any], layers: list[dict[str, Any]], *,
                 media_type: str = mt.MT_OCI_MANIFEST, **extra: Any) -> dict[str, Any]:
        doc: dict[str, Any] = {"schemaVersion": 2, "mediaType": media_type}
        if "artifactType" in extra:
            doc["artifactType"] = extra.pop("artifactType")
        doc["config"] = config
        doc["layers"] = layers
        doc.update(extra)
        return self.blob(dumps(doc), media_type)

    def image(self, *, docker: bool = False, arch: str = "amd64") -> dict[str, Any]:
        layer, diff_id = self.layer(docker=docker)
        cfg = self.config([diff_id], docker=docker, arch=arch)
        return self.manifest(cfg, [layer],
                             media_type=mt.MT_DOCKER_MANIFEST if docker else mt.MT_OCI_MANIFEST)

    def index(self, children: list[dict[str, Any]], *, media_type: str = mt.MT_OCI_INDEX,
              **extra: Any) -> dict[str, Any]:
        doc = {"schemaVersion": 2, "mediaType": media_type, "manifests": children, **extra}
        return self.blob(dumps(doc), media_type)

    def write_index(self, entries: list[dict[str, Any]] | None) -> None:
        doc = {"schemaVersion": 2, "mediaType": mt.MT_OCI_INDEX, "manifests": entries}
        (self.root / "index.json").write_bytes(dumps(doc))


def tagged(desc: dict[str, Any], ref: str, **annotations: str) -> dict[str, Any]:
    return {**desc, "annotations": {mt.ANNOT_REF_NAME: ref, **annotations}}


def platform(desc: dict[str, Any], os: str, arch: str, **extra: Any) -> dict[str, Any]:
    return {**desc, "platform": {"architecture": arch, "os": os}, **extra}


# ------------------------------------------------------------------------------ the shapes
def shape_ggcr_docker_under_oci(root: Path) -> Made:
    """go-containerregistry: a Docker v2 manifest whose index.json descriptor says OCI."""
    lay = RawLayout(root)
    m = lay.image(docker=True)
    lay.write_index([tagged({**m, "mediaType": mt.MT_OCI_MANIFEST}, "app")])
    return Made(root, {"app": f"{root}:app"}, {"manifest": m["digest"]})


def shape_regclient_absent_subject(root: Path) -> Made:
    """regclient: a referrer (an SBOM) listed in index.json whose subject is not there."""
    lay = RawLayout(root)
    absent = {"mediaType": mt.MT_OCI_MANIFEST, "size": 1234,
              "digest": "sha256:" + hashlib.sha256(b"not here").hexdigest()}
    empty = lay.blob(b"{}", mt.MT_OCI_EMPTY)
    sbom = lay.blob(b'{"spdxVersion":"SPDX-2.3"}', SBOM)
    ref = lay.manifest(empty, [sbom], artifactType=SBOM, subject=absent)
    lay.write_index([tagged(ref, "sbom")])
    return Made(root, {"sbom": f"{root}:sbom"}, {"referrer": ref["digest"],
                                                 "subject": absent["digest"]})


def shape_buildkit_zero_layers(root: Path) -> Made:
    """BuildKit: an image with no layers; Go writes nil slices and unset times as null."""
    lay = RawLayout(root)
    cfg = lay.blob(dumps({"architecture": "amd64", "os": "linux", "created": None,
                          "config": {"Env": ["PATH=/bin"]}, "history": None,
                          "rootfs": {"type": "layers", "diff_ids": None}}), mt.MT_OCI_CONFIG)
    m = lay.manifest(cfg, [])
    lay.write_index([tagged(m, "scratch")])
    return Made(root, {"scratch": f"{root}:scratch"}, {"manifest": m["digest"]}, file="")


def shape_helm_chart(root: Path) -> Made:
    """helm push / oras: a chart (its own config type, a chart tarball as its layer)."""
    lay = RawLayout(root)
    cfg = lay.blob(dumps({"name": "demo", "version": "0.1.0", "apiVersion": "v2"}), HELM_CONFIG)
    chart = lay.blob(gzip.compress(b"chart", mtime=0), HELM_CHART)
    m = lay.manifest(cfg, [chart], annotations={"org.opencontainers.image.title": "demo"})
    lay.write_index([tagged(m, "demo:0.1.0")])
    return Made(root, {"chart": f"{root}:demo:0.1.0"}, {"manifest": m["digest"]})


def shape_old_style_artifact(root: Path) -> Made:
    """oras 0.x / cosign: an empty ``{}`` config typed as an image config, non-layer layers."""
    lay = RawLayout(root)
    cfg = lay.blob(b"{}", mt.MT_OCI_CONFIG)
    sig = lay.blob(b'{"critical":{}}', SIGNATURE)
    m = lay.manifest(cfg, [sig])
    lay.write_index([tagged(m, "sig")])
    return Made(root, {"sig": f"{root}:sig"}, {"manifest": m["digest"], "config": cfg["digest"]})


def shape_size_lie_beside_truth(root: Path) -> Made:
    """The same manifest listed twice, once with a wrong size (hand-edited index.json)."""
    lay = RawLayout(root)
    m = lay.image()
    lay.write_index([tagged(m, "good"), tagged({**m, "size": m["size"] + 7}, "bad")])
    return Made(root, {"good": f"{root}:good", "bad": f"{root}:bad"},
                {"manifest": m["digest"]})


def shape_platform_in_index(root: Path) -> Made:
    """A multi-platform image; one platform is addressed as LAYOUT@sha256:..."""
    lay = RawLayout(root)
    amd = lay.image(arch="amd64")
    arm = lay.image(arch="arm64")
    idx = lay.index([platform(amd, "linux", "amd64"), platform(arm, "linux", "arm64")])
    lay.write_index([tagged(idx, "multi")])
    return Made(root, {"multi": f"{root}:multi", "arm64": f"{root}@{arm['digest']}",
                       "amd64": f"{root}@{amd['digest']}"},
                {"index": idx["digest"], "amd64": amd["digest"], "arm64": arm["digest"]})


def shape_containerd_export(root: Path) -> Made:
    """``ctr export`` / ``nerdctl save`` (one platform): the whole index, only the host's
    platform present; index.json names the image (ref.name = tag, containerd name = full)."""
    lay = RawLayout(root)
    amd = lay.image(arch="amd64")
    absent = {"mediaType": mt.MT_OCI_MANIFEST, "size": 999,
              "digest": "sha256:" + hashlib.sha256(b"arm64 manifest").hexdigest()}
    idx = lay.index([platform(amd, "linux", "amd64"), platform(absent, "linux", "arm64")])
    lay.write_index([tagged(idx, "1.0", **{mt.ANNOT_CONTAINERD_NAME: "docker.io/library/app:1.0"})])
    (root / "manifest.json").write_bytes(dumps([{"Config": "x", "RepoTags": ["app:1.0"],
                                                 "Layers": []}]))
    return Made(root, {"app": f"{root}:1.0"}, {"absent": absent["digest"],
                                               "index": idx["digest"]})


def shape_buildkit_attestations(root: Path) -> Made:
    """BuildKit's OCI exporter: an index with the image and its attestation manifest
    (``unknown/unknown``; an image-typed config, in-toto layers: an artifact)."""
    lay = RawLayout(root)
    img = lay.image()
    statement = lay.blob(b'{"_type":"https://in-toto.io/Statement/v0.1"}', IN_TOTO,
                         annotations={"in-toto.io/predicate-type": "https://spdx.dev/Document"})
    acfg = lay.blob(dumps({"architecture": "unknown", "os": "unknown", "config": {},
                           "rootfs": {"type": "layers", "diff_ids": []}}), mt.MT_OCI_CONFIG)
    att = lay.manifest(acfg, [statement])
    idx = lay.index([
        platform(img, "linux", "amd64"),
        platform(att, "unknown", "unknown", annotations={
            "vnd.docker.reference.type": "attestation-manifest",
            "vnd.docker.reference.digest": img["digest"]}),
    ])
    lay.write_index([tagged(idx, "latest")])
    return Made(root, {"app": f"{root}:latest", "attestation": f"{root}@{att['digest']}"},
                {"attestation": att["digest"]})


def shape_docker_c8d_save(root: Path) -> Made:
    """Docker 25+ with the containerd store: a nested index per image, Docker-typed
    manifests, an attestation whose blobs were not pulled (absent)."""
    lay = RawLayout(root)
    img = lay.image(docker=True)
    absent = {"mediaType": mt.MT_OCI_MANIFEST, "size": 566,
              "digest": "sha256:" + hashlib.sha256(b"attestation").hexdigest(),
              "annotations": {"vnd.docker.reference.type": "attestation-manifest"},
              "platform": {"architecture": "unknown", "os": "unknown"}}
    inner = lay.index([platform(img, "linux", "amd64"), absent])
    outer = lay.index([inner])
    lay.write_index([tagged(outer, "app:1", **{mt.ANNOT_CONTAINERD_NAME:
                                               "docker.io/library/app:1"})])
    return Made(root, {"app": f"{root}:app:1"}, {"absent": absent["digest"]})


def shape_oras_v11rc_artifact(root: Path) -> Made:
    """oras 1.0 with --image-spec v1.1-rc: an OCI artifact manifest (``blobs``) referring to an
    image that is in the layout, listed in index.json."""
    lay = RawLayout(root)
    img = lay.image()
    sig = lay.blob(b"signature", "application/vnd.example.signature")
    doc = {"mediaType": mt.MT_OCI_ARTIFACT_MANIFEST, "artifactType": "application/vnd.example",
           "blobs": [sig], "subject": img}
    art = lay.blob(dumps(doc), mt.MT_OCI_ARTIFACT_MANIFEST)
    lay.write_index([tagged(img, "app"), art])
    return Made(root, {"app": f"{root}:app", "artifact": f"{root}@{art['digest']}"},
                {"artifact": art["digest"], "image": img["digest"]})


def shape_oras_empty_config(root: Path) -> Made:
    """oras 1.x push: artifactType, the empty descriptor as config (with its data), titled
    layers of any type."""
    lay = RawLayout(root)
    empty = lay.blob(b"{}", mt.MT_OCI_EMPTY, data="e30=")
    f = lay.blob(b"hello", "application/vnd.example.file",
                 annotations={"org.opencontainers.image.title": "hello.txt"})
    m = lay.manifest(empty, [f], artifactType="application/vnd.example.thing",
                     annotations={mt.ANNOT_CREATED: "2024-01-01T00:00:00Z"})
    lay.write_index([tagged(m, "thing")])
    return Made(root, {"thing": f"{root}:thing"}, {"manifest": m["digest"]})


def shape_docker25_null_manifests(root: Path) -> Made:
    """Docker 25 graphdriver ``docker save`` of nothing tagged: ``"manifests": null``
    (moby#47210)."""
    lay = RawLayout(root)
    lay.write_index(None)
    return Made(root)


SHAPES = {
    "ggcr-docker-under-oci": shape_ggcr_docker_under_oci,
    "regclient-absent-subject": shape_regclient_absent_subject,
    "buildkit-zero-layers": shape_buildkit_zero_layers,
    "helm-chart": shape_helm_chart,
    "old-style-artifact": shape_old_style_artifact,
    "size-lie-beside-truth": shape_size_lie_beside_truth,
    "platform-in-index": shape_platform_in_index,
    "containerd-export": shape_containerd_export,
    "buildkit-attestations": shape_buildkit_attestations,
    "docker-c8d-save": shape_docker_c8d_save,
    "oras-v11rc-artifact": shape_oras_v11rc_artifact,
    "oras-empty-config": shape_oras_empty_config,
    "docker25-null-manifests": shape_docker25_null_manifests,
}
