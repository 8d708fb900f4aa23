"""Time ``layouttool push``/``pull`` against ``skopeo copy`` on a loopback docker-registry,
over plain HTTP and over TLS.

Standalone::

    .venv/bin/python bench/registry_bench.py [LAYOUT:REF] [--size-mb 150] [--rounds 5]
        [--transports http,tls] [--json bench/out/registry_bench.json]

Without a LAYOUT:REF it generates (once, cached under ``bench/out/work/registry``) an OCI image of
gzip layers holding a mix of incompressible and text-like bytes, ``--size-mb`` uncompressed.

Each push goes to a freshly started, empty registry (so neither tool can skip or mount a blob
it saw before: skopeo keeps a blob-info cache and would mount across repositories); each pull
goes into a fresh, empty directory from one registry seeded once. The two tools alternate,
the order flipping every round, and the table shows medians of wall time and of CPU time
(user + system of the tool's process: what a busy machine inflates least). Over TLS both tools
get the same certificate directory (the registry's CA, made by openssl for the run):
``--cert-dir`` for us, ``--dest-cert-dir``/``--src-cert-dir`` for skopeo.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from bench import registryd  # noqa: E402

REF = "bench"


def generate(dest: Path, size_mb: int) -> str:
    """An OCI layout with a few gzip layers of ``size_mb`` MB in all; returns ``LAYOUT:REF``."""
    from layouttool import mediatypes as mt
    from layouttool.model import make_manifest_doc
    from layouttool.ops.layout import set_ref
    from layouttool.store import Layout

    marker = dest / f".done-{size_mb}"
    if marker.exists():
        return f"{dest}:{REF}"
    shutil.rmtree(dest, ignore_errors=True)
    layout = Layout.init(dest)
    shares = [0.45, 0.3, 0.15, 0.07, 0.03]
    layers, diff_ids = [], []
    words = b" ".join(hashlib.sha256(str(i).encode()).hexdigest()[:7].encode() for i in range(5000))
    for i, share in enumerate(shares):
        n = int(size_mb * (1 << 20) * share)
        raw = io.BytesIO()
        with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tf:
            done, j = 0, 0
            while done < n:
                size = min(n - done, 8 << 20)
                if j % 2:  # text-like: compresses about 3x
                    data = (words * (size // len(words) + 1))[:size]
                else:  # incompressible
                    data = hashlib.shake_256(f"{i}-{j}".encode()).digest(size)
                info = tarfile.TarInfo(f"layer{i}/file{j}")
                info.size, info.mtime = size, 0
                tf.addfile(info, io.BytesIO(data))
                done, j = done + size, j + 1
        tar = raw.getvalue()
        diff_ids.append("sha256:" + hashlib.sha256(tar).hexdigest())
        gz = gzip.compress(tar, compresslevel=1, mtime=0)
        layers.append(layout.put_bytes(gz).descriptor(mt.MT_OCI_LAYER_GZIP))
    config = layout.put_json(
        {"architecture": "amd64", "os": "linux",
         "rootfs": {"type": "layers", "diff_ids": diff_ids}},
        mt.MT_OCI_CONFIG,
    )
    doc = make_manifest_doc(media_type=mt.MT_OCI_MANIFEST, config=config, layers=layers)
    with layout.writing():
        set_ref(layout, layout.put_json(doc, mt.MT_OCI_MANIFEST), REF)
    marker.touch()
    return f"{dest}:{REF}"


def timed(argv: list[str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one run of ``argv``, which must succeed."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}):\n"
                         f"{proc.stderr.decode(errors='replace')[-2000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return seconds, cpu


def layout_bytes(image: str) -> int:
    path = Path(image.rsplit(":", 1)[0])
    return sum(p.stat().st_size for p in (path / "blobs").rglob("*") if p.is_file())


class Bench:
    """The tools' command lines for one transport (plain HTTP or TLS) and a registry maker."""

    def __init__(self, transport: str, tmp: Path, image: str, skopeo: str, binary: str) -> None:
        self.transport = transport
        self.tmp = tmp
        self.image = image
        self.skopeo = skopeo
        self.binary = binary
        self.layout_path, _, self.ref = image.rpartition(":")
        self.ours = [sys.executable, "-m", "layouttool", "-q"]
        self.server: registryd.Pair | None = None
        self.certs = tmp / "certs"
        if transport == "tls":
            ca = registryd.CA.make(tmp / "ca")
            self.server = ca.issue(tmp / "ca", "server", ["127.0.0.1"])
            self.certs.mkdir(parents=True, exist_ok=True)
            shutil.copy(ca.cert, self.certs / "ca.crt")

    def registry(self, name: str) -> registryd.RegistryD:
        return registryd.start(self.binary, self.tmp / name, server=self.server)

    def _ours_flags(self) -> list[str]:
        return ["--cert-dir", str(self.certs)] if self.server else ["--insecure"]

    def _skopeo_flags(self, side: str) -> list[str]:
        if self.server:
            return [f"--{side}-cert-dir", str(self.certs)]
        return [f"--{side}-tls-verify=false"]

    def push(self, tool: str, host: str) -> list[str]:
        if tool == "layouttool":
            return [*self.ours, "push", self.image, f"{host}/bench/app:1", *self._ours_flags()]
        return [self.skopeo, "copy", "-q", *self._skopeo_flags("dest"),
                f"oci:{self.layout_path}:{self.ref}", f"docker://{host}/bench/app:1"]

    def pull(self, tool: str, host: str, out: Path) -> list[str]:
        if tool == "layouttool":
            return [*self.ours, "pull", f"{host}/bench/app:1", "-o", str(out), "--ref", "app",
                    *self._ours_flags()]
        return [self.skopeo, "copy", "-q", *self._skopeo_flags("src"),
                f"docker://{host}/bench/app:1", f"oci:{out}:app"]


def run_transport(bench: Bench, rounds: int) -> dict[str, dict[str, list[tuple[float, float]]]]:
    """Every run's (wall, cpu) by op and tool."""
    runs: dict[str, dict[str, list[tuple[float, float]]]] = {
        op: {t: [] for t in ("layouttool", "skopeo")} for op in ("push", "pull")
    }
    for rnd in range(rounds):
        order = ["layouttool", "skopeo"] if rnd % 2 == 0 else ["skopeo", "layouttool"]
        for tool in order:
            reg = bench.registry(f"push-{bench.transport}-{rnd}-{tool}")
            try:
                runs["push"][tool].append(timed(bench.push(tool, reg.host)))
            finally:
                reg.stop()
                shutil.rmtree(reg.root, ignore_errors=True)
    seeded = bench.registry(f"seeded-{bench.transport}")
    try:
        timed(bench.push("layouttool", seeded.host))
        for rnd in range(rounds):
            order = ["layouttool", "skopeo"] if rnd % 2 == 0 else ["skopeo", "layouttool"]
            for tool in order:
                out = bench.tmp / f"pull-{bench.transport}-{rnd}-{tool}"
                runs["pull"][tool].append(timed(bench.pull(tool, seeded.host, out)))
                shutil.rmtree(out)
    finally:
        seeded.stop()
        shutil.rmtree(seeded.root, ignore_errors=True)
    return runs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("image", nargs="?", help="LAYOUT:REF to push (default: generate one)")
    ap.add_argument("--size-mb", type=int, default=150)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--transports", default="http,tls",
                    help="comma-separated: http (plain, on 127.0.0.1), tls (a test CA)")
    ap.add_argument("--work", type=Path, default=HERE / "out" / "work" / "registry")
    ap.add_argument("--json", type=Path, default=HERE / "out" / "registry_bench.json")
    args = ap.parse_args(argv)
    skopeo = shutil.which("skopeo")
    if skopeo is None:
        raise SystemExit("skopeo is not installed")
    binary = registryd.which_registry()
    if binary is None:
        raise SystemExit("docker-registry is not installed (apt-get install docker-registry)")
    transports = [t for t in args.transports.split(",") if t]
    if not set(transports) <= {"http", "tls"}:
        raise SystemExit(f"--transports: http and/or tls, not {args.transports!r}")
    args.work.mkdir(parents=True, exist_ok=True)
    image = args.image or generate(args.work / "image", args.size_mb)
    size = layout_bytes(image)
    mib = size / (1 << 20)
    result: dict[str, Any] = {"image": image, "bytes": size, "rounds": args.rounds,
                              "cpus": os.cpu_count(), "load": os.getloadavg()[0], "results": {}}
    rows = []
    with tempfile.TemporaryDirectory(dir=args.work) as tmp_s:
        for transport in transports:
            tmp = Path(tmp_s) / transport
            bench = Bench(transport, tmp, image, skopeo, binary)
            runs = run_transport(bench, args.rounds)
            for op, per_tool in runs.items():
                key = op if transport == "http" else f"{op}-tls"
                med = {t: statistics.median(w for w, _ in v) for t, v in per_tool.items()}
                cpu = {t: statistics.median(c for _, c in v) for t, v in per_tool.items()}
                result["results"][key] = {
                    t: {"median_s": round(med[t], 3), "cpu_median_s": round(cpu[t], 3),
                        "runs_s": [round(w, 3) for w, _ in v],
                        "cpu_runs_s": [round(c, 3) for _, c in v],
                        "mib_per_s": round(mib / med[t], 1)}
                    for t, v in per_tool.items()
                }
                result["results"][key]["ratio_skopeo_over_layouttool"] = round(
                    med["skopeo"] / med["layouttool"], 2)
                for t in ("layouttool", "skopeo"):
                    rows.append((op, transport, t, f"{med[t]:.2f}", f"{cpu[t]:.2f}",
                                 f"{mib / med[t]:.0f}",
                                 " ".join(f"{w:.2f}" for w, _ in per_tool[t])))
    print(f"image {image}: {mib:.1f} MiB of blobs, {args.rounds} rounds, "
          f"{os.cpu_count()} CPUs, load {result['load']:.1f}")
    header = ("op", "transport", "tool", "median s", "cpu s", "MiB/s", "runs (wall s)")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
