"""Time ``layouttool push``/``pull`` against ``skopeo copy`` on a loopback docker-registry.

Standalone::

    .venv/bin/python bench/registry_bench.py [LAYOUT:REF] [--size-mb 150] [--rounds 5]
        [--json bench/out/registry_bench.json]

Without a LAYOUT:REF it generates (once, cached under ``bench/out/work/registry``) an OCI image of
gzip layers holding a mix of incompressible and text-like bytes, ``--size-mb`` uncompressed.

Each push goes to a freshly started, empty registry (so neither tool can skip or mount a blob
it saw before: skopeo keeps a blob-info cache and would mount across repositories); each pull
goes into a fresh, empty directory from one registry seeded once. The two tools alternate,
the order flipping every round, and the table shows medians. Both run with their defaults
(plain HTTP on 127.0.0.1).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

REF = "bench"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Registry:
    """docker-registry with filesystem storage in ``root``, on 127.0.0.1."""

    def __init__(self, root: Path) -> None:
        binary = shutil.which("docker-registry")
        if binary is None:
            raise SystemExit("docker-registry is not installed (apt-get install docker-registry)")
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.host = f"127.0.0.1:{free_port()}"
        cfg = root / "config.yml"
        cfg.write_text(
            "version: 0.1\nlog:\n  level: error\n"
            f"storage:\n  filesystem:\n    rootdirectory: {root / 'data'}\n"
            f"http:\n  addr: {self.host}\n"
        )
        self.proc = subprocess.Popen([binary, "serve", str(cfg)], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 15
        while True:
            try:
                urllib.request.urlopen(f"http://{self.host}/v2/", timeout=1).close()
                return
            except urllib.error.HTTPError:
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("docker-registry did not start") from None
                time.sleep(0.05)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        shutil.rmtree(self.root, ignore_errors=True)


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


def timed(argv: list[str]) -> float:
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True)
    seconds = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}):\n"
                         f"{proc.stderr.decode(errors='replace')[-2000:]}")
    return seconds


def layout_bytes(image: str) -> int:
    path = Path(image.rsplit(":", 1)[0])
    return sum(p.stat().st_size for p in (path / "blobs").rglob("*") if p.is_file())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("image", nargs="?", help="LAYOUT:REF to push (default: generate one)")
    ap.add_argument("--size-mb", type=int, default=150)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--work", type=Path, default=HERE / "out" / "work" / "registry")
    ap.add_argument("--json", type=Path, default=HERE / "out" / "registry_bench.json")
    args = ap.parse_args(argv)
    skopeo = shutil.which("skopeo")
    if skopeo is None:
        raise SystemExit("skopeo is not installed")
    ours = [sys.executable, "-m", "layouttool", "-q"]
    args.work.mkdir(parents=True, exist_ok=True)
    image = args.image or generate(args.work / "image", args.size_mb)
    layout_path, _, ref = image.rpartition(":")
    size = layout_bytes(image)

    tools = {
        "push": {
            "layouttool": lambda host: [*ours, "push", image, f"{host}/bench/app:1",
                                        "--insecure"],
            "skopeo": lambda host: [skopeo, "copy", "-q", "--dest-tls-verify=false",
                                    f"oci:{layout_path}:{ref}", f"docker://{host}/bench/app:1"],
        },
        "pull": {
            "layouttool": lambda host, out: [*ours, "pull", f"{host}/bench/app:1", "-o", out,
                                             "--insecure", "--ref", "app"],
            "skopeo": lambda host, out: [skopeo, "copy", "-q", "--src-tls-verify=false",
                                         f"docker://{host}/bench/app:1", f"oci:{out}:app"],
        },
    }
    times: dict[str, dict[str, list[float]]] = {
        op: {t: [] for t in ("layouttool", "skopeo")} for op in ("push", "pull")
    }
    with tempfile.TemporaryDirectory(dir=args.work) as tmp_s:
        tmp = Path(tmp_s)
        for rnd in range(args.rounds):
            order = ["layouttool", "skopeo"] if rnd % 2 == 0 else ["skopeo", "layouttool"]
            for tool in order:
                reg = Registry(tmp / f"push-{rnd}-{tool}")
                try:
                    times["push"][tool].append(timed(tools["push"][tool](reg.host)))
                finally:
                    reg.stop()
        seeded = Registry(tmp / "seeded")
        try:
            timed(tools["push"]["layouttool"](seeded.host))
            for rnd in range(args.rounds):
                order = ["layouttool", "skopeo"] if rnd % 2 == 0 else ["skopeo", "layouttool"]
                for tool in order:
                    out = tmp / f"pull-{rnd}-{tool}"
                    times["pull"][tool].append(timed(tools["pull"][tool](seeded.host, str(out))))
                    shutil.rmtree(out)
        finally:
            seeded.stop()

    rows = []
    result: dict[str, Any] = {"image": image, "bytes": size, "rounds": args.rounds,
                              "cpus": os.cpu_count(), "results": {}}
    for op, per_tool in times.items():
        med = {t: statistics.median(v) for t, v in per_tool.items()}
        result["results"][op] = {
            t: {"median_s": round(med[t], 3), "runs_s": [round(x, 3) for x in v],
                "mib_per_s": round(size / (1 << 20) / med[t], 1)}
            for t, v in per_tool.items()
        }
        result["results"][op]["ratio_skopeo_over_layouttool"] = round(
            med["skopeo"] / med["layouttool"], 2)
        for t in ("layouttool", "skopeo"):
            rows.append((op, t, f"{med[t]:.2f}", f"{size / (1 << 20) / med[t]:.0f}",
                         " ".join(f"{x:.2f}" for x in per_tool[t])))
    print(f"image {image}: {size / (1 << 20):.1f} MiB of blobs, {args.rounds} rounds, "
          f"{os.cpu_count()} CPUs")
    header = ("op", "tool", "median s", "MiB/s", "runs")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
