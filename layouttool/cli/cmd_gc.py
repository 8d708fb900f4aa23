"""Maintenance command: gc."""

from __future__ import annotations

import click

from layouttool.cli._common import emit, human_size, json_option, progress, summary, warn
from layouttool.ops.gc import GcResult, gc_layout


def _text(res: GcResult) -> str:
    """One line per removed file, then what was left alone."""
    verb = "would remove" if res.dry_run else "removed"
    lines = [
        f"{verb}  {r.digest or r.rel}  {human_size(r.size)}  {r.reason}" for r in res.removed
    ]
    for s in res.skipped:
        what = s.path or s.digest
        lines.append(f"left alone  {what}  {s.reason}" + (f": {s.error}" if s.error else ""))
    return "\n".join(lines)


@click.command("gc")
@click.argument("layout", type=click.Path(file_okay=False))
@click.option("-n", "--dry-run", is_flag=True,
              help="List what would be removed (digest, size, why); delete nothing.")
@click.option("--force", is_flag=True,
              help="Collect even when a reachable manifest or index cannot be read: keep that "
                   "document unread and delete blobs that only it might reference.")
@json_option
def gc_cmd(layout: str, dry_run: bool, force: bool, as_json: bool) -> None:
    """Remove blobs that nothing reachable from index.json references.

    Roots are every index.json entry, tagged or not. Every descriptor is followed: index
    children (nested), configs, layers, subject, and descriptors inside manifest-like
    documents of unknown media types; Docker and OCI types alike. Referrers are kept: a
    blob that nothing reaches but is a JSON document (at most 16 MiB; only its first bytes are
    read to tell) whose subject is a kept blob is kept, with what it references. Layers are
    never read.

    Fails closed: if a document needed to find other blobs is missing (an index.json entry's),
    corrupt, not JSON or of a type that cannot be walked, nothing is deleted and gc exits
    non-zero naming the blob (--force overrides). What only warns goes on: an absent subject
    or platform manifest of an index (partial exports), a media type that disagrees with its
    document. Files under blobs/ whose names are not digests are reported and left alone; a
    blob that is a symlink is removed as a link, its target untouched. Temp files of
    interrupted layouttool writes (.layouttool/tmp) are removed. gc waits for running
    layouttool writers and holds the layout lock while it works; do not run skopeo or umoci
    on the layout meanwhile (they take no lock). A second gc removes nothing.

    \b
    Examples:
      layouttool gc ./oci --dry-run
      layouttool gc ./oci
      layouttool gc ./oci --json | jq .bytesFreed
    """
    with progress() as prog:
        res = gc_layout(layout, dry_run=dry_run, force=force, progress=prog)
    warn(res.warnings)
    emit(res, as_json, lambda: _text(res))
    verb = "would free" if dry_run else "freed"
    unread = f"; {len(res.unwalked)} unreadable documents kept (--force)" if res.unwalked else ""
    summary(
        f"gc{' (dry run)' if dry_run else ''}: {res.count} files, {verb} "
        f"{human_size(res.bytes_freed)}; kept {res.kept} blobs"
        f"{f', {len(res.referrers)} referrers' if res.referrers else ''}{unread}"
    )
