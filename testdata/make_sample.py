"""Make ``testdata/sample-docker-save.tar``: a tiny legacy-form ``docker save`` (Docker 1.10-24).

Two layers: the first has ``etc/hello.txt``, ``etc/old.txt`` and a symlink
``bin/hello -> ../etc/hello.txt``; the second deletes ``etc/old.txt`` with a whiteout and adds
``etc/motd``. Two tags. Every byte is fixed (mtimes, owners, order), so running this again gives
the same file: ``python testdata/make_sample.py`` (``--check`` only compares).
"""

from __future__ import annotations

import hashlib
import io
import json
import sys
import tarfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "sample-docker-save.tar"
MTIME = 1_700_000_000
TAGS = ["layouttool-sample:1.0", "layouttool-sample:latest"]


def _tar(entries: list[tuple[str, str, bytes | str, int]]) -> bytes:
    """(type, name, data-or-target, mode) -> tar bytes (USTAR, fixed metadata)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for kind, name, payload, mode in entries:
            info = tarfile.TarInfo(name)
            info.mtime = MTIME
            info.mode = mode
            info.uname = info.gname = ""
            data = None
            if kind == "dir":
                info.type = tarfile.DIRTYPE
            elif kind == "symlink":
                info.type = tarfile.SYMTYPE
                info.linkname = str(payload)
            else:
                data = payload.encode() if isinstance(payload, str) else payload
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def build() -> bytes:
    """The bytes of the sample tarball."""
    layer1 = _tar(
        [
            ("dir", "bin", "", 0o755),
            ("symlink", "bin/hello", "../etc/hello.txt", 0o777),
            ("dir", "etc", "", 0o755),
            ("file", "etc/hello.txt", "hello from layouttool\n", 0o644),
            ("file", "etc/old.txt", "deleted by the second layer\n", 0o644),
        ]
    )
    layer2 = _tar(
        [
            ("dir", "etc", "", 0o755),
            ("file", "etc/.wh.old.txt", b"", 0o644),
            ("file", "etc/motd", "welcome\n", 0o644),
        ]
    )
    diff_ids = [f"sha256:{_sha(layer1)}", f"sha256:{_sha(layer2)}"]
    config = {
        "architecture": "amd64",
        "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/usr/bin:/bin"], "WorkingDir": "/"},
        "created": "2023-11-14T22:13:20Z",
        "history": [
            {"created": "2023-11-14T22:13:20Z", "created_by": "ADD hello"},
            {"created": "2023-11-14T22:13:20Z", "created_by": "RUN rm /etc/old.txt"},
        ],
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }
    config_raw = json.dumps(config, sort_keys=True).encode()
    config_hex = _sha(config_raw)
    # legacy v1 layer ids: a chain over the diff_ids, as Docker derives them
    ids: list[str] = []
    parent = ""
    for d in diff_ids:
        ids.append(_sha(f"{parent} {d}".encode()))
        parent = ids[-1]
    manifest = [
        {
            "Config": f"{config_hex}.json",
            "RepoTags": TAGS,
            "Layers": [f"{i}/layer.tar" for i in ids],
        }
    ]
    repositories = {"layouttool-sample": {"1.0": ids[-1], "latest": ids[-1]}}
    entries: list[tuple[str, str, bytes | str, int]] = [
        ("file", f"{config_hex}.json", config_raw, 0o644)
    ]
    for n, (lid, layer) in enumerate(zip(ids, (layer1, layer2), strict=True)):
        v1: dict[str, object] = {"id": lid, "created": "2023-11-14T22:13:20Z", "os": "linux"}
        if n:
            v1["parent"] = ids[n - 1]
        entries += [
            ("dir", lid, "", 0o755),
            ("file", f"{lid}/VERSION", "1.0", 0o644),
            ("file", f"{lid}/json", json.dumps(v1, sort_keys=True), 0o644),
            ("file", f"{lid}/layer.tar", layer, 0o644),
        ]
    entries += [
        ("file", "manifest.json", json.dumps(manifest), 0o644),
        ("file", "repositories", json.dumps(repositories), 0o644),
    ]
    return _tar(entries)


def main() -> int:
    """Write (or with --check, compare) the sample."""
    data = build()
    if "--check" in sys.argv[1:]:
        same = OUT.exists() and OUT.read_bytes() == data
        sys.stdout.write(f"{OUT}: {'up to date' if same else 'DIFFERS'}\n")
        return 0 if same else 1
    OUT.write_bytes(data)
    sys.stdout.write(f"wrote {OUT} ({len(data)} bytes)\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
