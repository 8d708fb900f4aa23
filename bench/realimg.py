"""The real image of issue 19: Debian bookworm minbase built by debootstrap, layered by umoci.

``../shared/bench/make-real-image.sh`` builds it (root, debootstrap and Debian's packages
reachable; idempotent: a finished output directory is reused). Its ``docker-save.tar`` (4
layers, 597 MiB: a 200 MB and a 420 MB layer beside two small ones, one without its tar end
marker, as umoci 0.4.7 writes them) and its ``oci-umoci:latest`` are what the real-image rows
of ``make bench`` time. Every real-image row reads and writes on tmpfs: :func:`stage` copies the
inputs there (and the uncompressed layers, for the ``tar -x`` floor) once per run.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: the team's script (``../shared`` beside the repository, as in CI); LAYOUTTOOL_REAL_IMAGE_SCRIPT
#: points elsewhere
SCRIPT = Path(os.environ.get("LAYOUTTOOL_REAL_IMAGE_SCRIPT")
              or REPO.parent / "shared" / "bench" / "make-real-image.sh")
#: the script's output directory (its own default: ``$TMPDIR/realimg``)
OUT = Path(os.environ.get("LAYOUTTOOL_REAL_IMAGE_DIR")
           or Path(os.environ.get("TMPDIR", "/tmp")) / "realimg")
#: the generator version whose output we know how to read
GEN_MARK = "make-images v3"
#: the tag of oci-umoci the rows use
REF = "latest"


@dataclass(frozen=True)
class RealImage:
    """The inputs of the real-image rows (all on tmpfs once staged)."""

    save_tar: Path
    save_bytes: int
    layout: Path
    ref: str
    #: the uncompressed layers in order (docker-save.tar's members), for the ``tar -x`` floor
    layer_tars: tuple[Path, ...]
    #: the gzip blobs of ``layout:ref`` in order, for the ``pigz -dc | tar -x`` floor
    gzip_layers: tuple[Path, ...]
    uncompressed_bytes: int
    source: str

    def to_json(self) -> dict[str, object]:
        """For ``results.json``: paths as strings."""
        def plain(v: object) -> object:
            if isinstance(v, tuple):
                return [plain(x) for x in v]
            return str(v) if isinstance(v, Path) else v
        return {k: plain(v) for k, v in self.__dict__.items()}


def complete(out: Path) -> bool:
    """True when ``out`` holds a finished output of the script version we read."""
    try:
        return (out / ".complete").read_text().strip() == GEN_MARK
    except OSError:
        return False


def build(log: Callable[[str], None], out: Path = OUT,
          script: Path = SCRIPT) -> tuple[Path | None, str]:
    """The script's output directory, built when needed: ``(dir, how)`` or ``(None, why not)``."""
    if complete(out):
        return out, f"cached in {out}"
    if not script.is_file():
        return None, f"{script} not found"
    if os.geteuid() != 0:
        return None, "building it needs root (debootstrap, mknod, umoci unpack)"
    if shutil.which("debootstrap") is None:
        return None, "debootstrap is not installed (apt-get install debootstrap)"
    missing = [t for t in ("umoci", "skopeo", "jq", "zstd") if shutil.which(t) is None]
    if missing:
        return None, f"the script needs {', '.join(missing)}"
    log(f"real image: building it with {script} (debootstrap; a few minutes, once)")
    proc = subprocess.run(["bash", str(script), str(out)], stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0 or not complete(out):
        tail = proc.stderr.strip().splitlines()[-1:] or ["no output"]
        return None, f"{script.name} failed (exit {proc.returncode}): {tail[0]}"
    return out, f"built in {out}"


def _blob(layout: Path, digest: str) -> Path:
    alg, hexd = digest.split(":", 1)
    return layout / "blobs" / alg / hexd


def _manifest_layers(layout: Path, ref: str) -> list[str]:
    index = json.loads((layout / "index.json").read_text())
    for m in index["manifests"]:
        if (m.get("annotations") or {}).get("org.opencontainers.image.ref.name") == ref:
            manifest = json.loads(_blob(layout, m["digest"]).read_bytes())
            return [layer["digest"] for layer in manifest["layers"]]
    raise LookupError(f"{layout}: no ref {ref!r}")


def _layer_members(save: Path) -> list[tarfile.TarInfo]:
    """The layer members of ``save``'s only image, in order (links followed)."""
    with tarfile.open(save) as tf:
        entry = json.load(tf.extractfile("manifest.json"))[0]  # type: ignore[arg-type]
        out = []
        for name in entry["Layers"]:
            member = tf.getmember(name)
            while member.issym() or member.islnk():  # <id>/layer.tar -> ../<hex>.tar
                member = tf.getmember(os.path.normpath(
                    os.path.join(os.path.dirname(member.name), member.linkname)))
            out.append(member)
        return out


def plan(src: Path, dst: Path, ref: str = REF) -> RealImage:
    """Where the inputs of the rows will be once :func:`stage` copied them from the script's
    output ``src`` to ``dst`` (tmpfs); nothing is copied yet."""
    members = _layer_members(src / "docker-save.tar")
    layout = dst / "oci-umoci"
    source = "unknown"
    summary = src / "SUMMARY.txt"
    if summary.is_file():
        for line in summary.read_text().splitlines():
            if line.startswith("layer-1 source:"):
                source = line.split(":", 1)[1].strip()
    return RealImage(
        save_tar=dst / "docker-save.tar",
        save_bytes=(src / "docker-save.tar").stat().st_size,
        layout=layout,
        ref=ref,
        layer_tars=tuple(dst / "layers" / f"{i}.tar" for i in range(len(members))),
        gzip_layers=tuple(_blob(layout, d) for d in _manifest_layers(src / "oci-umoci", ref)),
        uncompressed_bytes=sum(m.size for m in members),
        source=source,
    )


def stage(src: Path, img: RealImage) -> None:
    """Copy the script's output ``src`` to where ``img`` (see :func:`plan`) expects it."""
    img.save_tar.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src / "docker-save.tar", img.save_tar)
    shutil.copytree(src / "oci-umoci", img.layout, symlinks=True)
    img.layer_tars[0].parent.mkdir(exist_ok=True)
    with tarfile.open(img.save_tar) as tf:
        for member, out in zip(_layer_members(img.save_tar), img.layer_tars, strict=True):
            with tf.extractfile(member) as r, open(out, "wb") as w:  # type: ignore[union-attr]
                shutil.copyfileobj(r, w, 1 << 20)
