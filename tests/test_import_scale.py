"""from-docker-save on tarballs with more layers than the process may open files.

Every waiting layer or blob must be a *closed* temp file: the number of descriptors an import
holds depends on ``--jobs``, never on how many layers the tarball has. The tests run the CLI
in a subprocess under an open-files limit of 64 with 80 layers (each over the 64 KiB a stream
import keeps in memory, so every one is spooled from the stream): a descriptor held per layer
fails them with EMFILE exactly as a save with 2,000 layers fails under the usual limit of 1024.
"""

from __future__ import annotations

import json
import random
import subprocess
import tarfile
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO
from layerbuild import build_layer
from test_import import assert_verified, docker_save, write

from layouttool.ops.importer import import_docker_save

LIMIT = 64
IMAGES = 4
PER_IMAGE = 20


def _images() -> list[dict[str, Any]]:
    rng = random.Random(16)
    return [
        {
            "tags": [f"tall{k}:1"],
            "layers": [
                build_layer([{"name": f"f{k}-{i}", "data": rng.randbytes(66 << 10)}])
                for i in range(PER_IMAGE)
            ],
        }
        for k in range(IMAGES)
    ]


def _oci_archive(tmp_path: Path) -> Path:
    """A tar of an OCI layout whose layer blobs are uncompressed (so a gzip import would
    re-encode them, and a stream import keeps a raw copy of each beside its spool)."""
    src = write(tmp_path, docker_save(_images()), "src.tar")
    layout = tmp_path / "layout"
    import_docker_save(src, layout, compression="none")
    out = tmp_path / "archive.tar"
    with tarfile.open(out, "w") as tar:
        for name in ("oci-layout", "index.json", "blobs"):
            tar.add(layout / name, arcname=name)
    return out


def _v1_save() -> bytes:
    """The same images as a Docker <= 1.9 save: one chain of V1 layer folders each."""
    from test_import_v1 import v1_id, v1_json, v1_save

    layers = []
    repos: dict[str, dict[str, str]] = {}
    for k, img in enumerate(_images()):
        parent = ""
        for i, tar in enumerate(img["layers"]):
            lid = v1_id(f"{k}/{i}")
            layers.append((v1_json(lid, parent or None, ["sh"]), tar))
            parent = lid
        repos[f"tall{k}"] = {"1": parent}
    return v1_save(layers, repos)


def _run_limited(src: Path, out: Path, *, stream: bool) -> subprocess.CompletedProcess[bytes]:
    limit = f"import resource; resource.setrlimit(resource.RLIMIT_NOFILE, ({LIMIT}, {LIMIT}))"
    argv = [
        str(REPO / ".venv" / "bin" / "python"),
        "-c",
        f"{limit}; import sys; from layouttool.cli import main; sys.exit(main())",
        "from-docker-save",
        "-" if stream else str(src),
        "-o",
        str(out),
        "--json",
    ]
    with src.open("rb") as stdin:
        return subprocess.run(argv, stdin=stdin, capture_output=True, check=False)


@pytest.mark.parametrize("stream", [False, True], ids=["file", "stream"])
@pytest.mark.parametrize("form", ["legacy", "docker25", "oci-archive", "v1"])
def test_more_layers_than_open_files(tmp_path: Path, form: str, stream: bool) -> None:
    if form == "oci-archive":
        src = _oci_archive(tmp_path)
    elif form == "v1":
        src = write(tmp_path, _v1_save())
    else:
        src = write(tmp_path, docker_save(_images(), form=form))
    out = tmp_path / "oci"
    proc = _run_limited(src, out, stream=stream)
    assert proc.returncode == 0, proc.stderr.decode()
    doc = json.loads(proc.stdout)
    assert doc["streamed"] is stream
    assert sorted(i["ref"] for i in doc["images"]) == [f"tall{k}:1" for k in range(IMAGES)]
    assert all(len(i["layers"]) == PER_IMAGE for i in doc["images"])
    assert_verified(out)
