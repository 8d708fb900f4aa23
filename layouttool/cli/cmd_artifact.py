"""Artifacts that refer to an image: attach, referrers."""

from __future__ import annotations

from typing import Any

import click

from layouttool.cli._common import emit, human_size, json_option, progress, summary, table
from layouttool.cli._registry import (
    DOCKER_PREFIX,
    connection,
    only_for_registries,
    request_options,
)
from layouttool.mediatypes import ANNOT_CREATED
from layouttool.model import Descriptor


def _annotation(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
                ) -> dict[str, str]:
    out: dict[str, str] = {}
    for v in values:
        key, sep, value = v.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{v!r}: expected KEY=VALUE", ctx, param)
        out[key] = value
    return out


@click.command("attach")
@click.argument("image")
@click.argument("files", nargs=-1, required=True, metavar="FILE[:TYPE]...")
@click.option("--artifact-type", required=True, metavar="TYPE",
              help="The artifact's type, a media type (e.g. application/spdx+json).")
@click.option("--annotation", "annotations", multiple=True, metavar="KEY=VALUE",
              callback=_annotation, help="An annotation of the artifact manifest. Repeatable.")
@json_option
def attach_cmd(image: str, files: tuple[str, ...], artifact_type: str,
               annotations: dict[str, str], as_json: bool) -> None:
    """Store FILEs as an OCI artifact whose subject is IMAGE (oras attach).

    One layer per FILE, titled with the file's name; FILE:TYPE gives its media type
    (default application/octet-stream). The artifact manifest (empty config, artifactType
    TYPE) gets an untagged entry in index.json; 'layouttool referrers IMAGE' lists it and gc
    keeps it while IMAGE is kept. IMAGE may be LAYOUT@sha256:... of any manifest in the
    layout, such as one platform of an index. SOURCE_DATE_EPOCH fixes the created annotation.

    \b
    Examples:
      layouttool attach ./oci:app:1.0 sbom.json --artifact-type application/spdx+json
      layouttool attach ./oci:app sig.bin --artifact-type application/vnd.example.sig
      layouttool attach ./oci:app notes.txt:text/plain --artifact-type text/plain --json
      layouttool attach ./oci:app a.json --artifact-type application/json --annotation k=v
    """
    from layouttool.ops.attach import attach_artifact

    with progress() as prog:
        res = attach_artifact(image, list(files), artifact_type=artifact_type,
                              annotations=annotations, progress=prog)
    emit(res, as_json, lambda: str(res.manifest.digest))
    size = sum(d.size for _, d in res.layers)
    summary(f"attached {len(res.layers)} file(s) ({human_size(size)}) to "
            f"{res.subject.digest} as {res.manifest.digest}")



@click.command("referrers")
@click.argument("image", metavar="IMAGE|docker://REGISTRY/REPO[:TAG|@DIGEST]")
@click.option("--artifact-type", metavar="TYPE", help="List only artifacts of this type.")
@request_options
@json_option
def referrers_cmd(image: str, artifact_type: str | None, as_json: bool, **remote: Any) -> None:
    """List the artifacts (signatures, SBOMs, attestations) whose subject is IMAGE.

    Every manifest in the layout counts, listed in index.json or not. With docker://, the
    registry's: its referrers API, or the sha256-<hex> tag on a registry without one (the
    registry options apply only there). --json prints what a registry's referrers API returns:
    an OCI image index whose manifests are the referrers' descriptors, each with its
    artifactType.

    \b
    Examples:
      layouttool referrers ./oci:app:1.0
      layouttool referrers ./oci:app:1.0 --artifact-type application/spdx+json --json
      layouttool referrers ./oci@sha256:3f5a0c1d2e4b...
      layouttool referrers docker://reg.example/team/app:1.0 --cert-dir ./certs
    """
    if image.startswith(DOCKER_PREFIX):
        from layouttool.ops.remote_referrers import list_remote_referrers

        with progress(debug_is_verbose=True) as prog:
            res = list_remote_referrers(
                image, artifact_type=artifact_type, progress=prog, **connection(remote)
            )
    else:
        from layouttool.ops.referrers import list_referrers

        only_for_registries(remote, image)
        res = list_referrers(image, artifact_type=artifact_type)
    emit(res, as_json, lambda: render_referrers(res.referrers))
    summary(f"{len(res.referrers)} referrer(s) of {res.subject.digest}")


def render_referrers(referrers: tuple[Descriptor, ...]) -> str:
    """A table of referrer descriptors: digest, artifact type, size, created."""
    rows = [[str(d.digest), d.artifact_type or "-", human_size(d.size),
             d.annotations.get(ANNOT_CREATED, "-")] for d in referrers]
    return table(rows, ["DIGEST", "ARTIFACT TYPE", "SIZE", "CREATED"]) if rows else ""
