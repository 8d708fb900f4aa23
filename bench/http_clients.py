"""Which HTTP client should carry the registry transport? push/pull on loopback, over TLS.

Runs ``push_image``/``pull_image`` in a child process per run, with the transport's ``send``
done by one of:

* ``http.client`` - what ships (layouttool/registry/transport.py);
* ``urllib3`` - urllib3 2's PoolManager (a prototype here, never shipped);
* ``httpx`` - httpx's Client (a prototype here, never shipped).

Everything above ``send`` (auth, retries, redirects, digests, the store) is the same code, so
the rows compare the clients alone. Each run reports the child's CPU time (user + system, what
a busy shared machine cannot inflate much) and its wall time; pushes go to a fresh registry,
pulls into an empty directory from a registry seeded once. The clients alternate, the order
rotating every round; the table shows medians and every run.

    .venv/bin/python bench/http_clients.py [--size-mb 150] [--rounds 5] [--plain]

urllib3 and httpx are not dependencies: install them into the interpreter that runs this
(``pip install 'urllib3>=2' httpx``); a client that is missing is skipped with a note.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from bench import registryd  # noqa: E402
from bench.registry_bench import generate  # noqa: E402

CLIENTS = ("http.client", "urllib3", "httpx")


# ------------------------------------------------------------------------ prototypes (child)
class _Buffered:
    """``read(n)`` over an iterator of byte strings."""

    def __init__(self, it: Iterator[bytes]) -> None:
        self._it = it
        self._buf = b""
        self._done = False

    def read(self, n: int = -1) -> bytes:
        while not self._done and (n < 0 or len(self._buf) < n):
            try:
                self._buf += next(self._it)
            except StopIteration:
                self._done = True
        if n < 0:
            out, self._buf = self._buf, b""
        else:
            out, self._buf = self._buf[:n], self._buf[n:]
        return out


def _patch(client: str) -> None:
    """Replace ``Transport.send`` (and close) with ``client``'s."""
    from layouttool.registry import transport as tmod

    if client == "http.client":
        return
    if client == "urllib3":
        import urllib3

        class U3Resp:
            def __init__(self, r: Any) -> None:
                self.r = r
                self.status = r.status
                self.headers = r.headers

            def read(self, n: int = -1) -> bytes:
                data: bytes = self.r.read(None if n < 0 else n, decode_content=False)
                return data

            def isclosed(self) -> bool:
                return bool(self.r.closed)

            def close(self) -> None:
                self.r.release_conn()

        def send_u3(self: Any, method: str, target: Any, headers: dict[str, str],
                    body: Any) -> Any:
            pm = getattr(self, "_u3", None)
            if pm is None:
                pm = self._u3 = urllib3.PoolManager(
                    num_pools=8, maxsize=16, ssl_context=self.context(),
                    timeout=self.timeout, retries=False)
            scheme, host, path = target
            data = b"".join(body()) if callable(body) else body
            r = pm.urlopen(method, f"{scheme}://{host}{path}", body=data, headers=headers,
                           redirect=False, retries=False, preload_content=False,
                           decode_content=False)
            return tmod.Response(self, method, target, U3Resp(r))  # type: ignore[arg-type]

        tmod.Transport.send = send_u3  # type: ignore[method-assign]
        tmod.Transport.drop_conn = lambda self, s, h: None  # type: ignore[method-assign]
        return
    if client == "httpx":
        import httpx

        class HxResp:
            def __init__(self, r: Any) -> None:
                self.r = r
                self.status = r.status_code
                self.headers = r.headers
                self.b = _Buffered(r.iter_raw(1 << 20))

            def read(self, n: int = -1) -> bytes:
                return self.b.read(n)

            def isclosed(self) -> bool:
                return bool(self.r.is_closed)

            def close(self) -> None:
                self.r.close()

        def send_hx(self: Any, method: str, target: Any, headers: dict[str, str],
                    body: Any) -> Any:
            cl = getattr(self, "_hx", None)
            if cl is None:
                cl = self._hx = httpx.Client(
                    verify=self.context(), timeout=self.timeout, trust_env=False,
                    limits=httpx.Limits(max_connections=16, max_keepalive_connections=16))
            scheme, host, path = target
            data = b"".join(body()) if callable(body) else body
            req = cl.build_request(method, f"{scheme}://{host}{path}", content=data,
                                   headers=headers)
            return tmod.Response(self, method, target,  # type: ignore[arg-type]
                                 HxResp(cl.send(req, stream=True)))

        tmod.Transport.send = send_hx  # type: ignore[method-assign]
        tmod.Transport.drop_conn = lambda self, s, h: None  # type: ignore[method-assign]
        return
    raise SystemExit(f"unknown client {client}")


def child(argv: list[str]) -> int:
    """``--child CLIENT push|pull IMAGE|SOURCE DEST 0|1``: one transfer, in this process
    (the last argument: plain HTTP)."""
    client, op, a, b, plain = argv
    t0 = time.perf_counter()
    _patch(client)
    from layouttool.ops.pull import pull_image
    from layouttool.ops.push import push_image

    imported = time.perf_counter() - t0
    if op == "push":
        push_image(a, b, jobs=4, insecure=plain == "1")
    else:
        pull_image(a, b, jobs=4, ref_name="app", insecure=plain == "1")
    print(json.dumps({"import_s": imported}))
    return 0


# ------------------------------------------------------------------------------ parent
def available(client: str) -> bool:
    if client == "http.client":
        return True
    proc = subprocess.run([sys.executable, "-c", f"import {client}"], capture_output=True)
    return proc.returncode == 0


def run_child(client: str, op: str, a: str, b: str, env: dict[str, str],
              plain: bool) -> tuple[float, float]:
    """(cpu seconds, wall seconds) of one child run."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, "--child", client, op, a, b, "01"[plain]],
                          capture_output=True, env=env)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        raise SystemExit(f"{client} {op} failed:\n{proc.stderr.decode(errors='replace')[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return cpu, wall


def import_cost(client: str) -> float:
    """Median seconds to import the client module in a fresh interpreter (5 runs)."""
    mod = "http.client, ssl" if client == "http.client" else client
    code = f"import time; t=time.perf_counter(); import {mod}; print(time.perf_counter()-t)"
    runs = []
    for _ in range(5):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        runs.append(float(out.stdout))
    return statistics.median(runs)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        return child(argv[1:])
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size-mb", type=int, default=150)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--plain", action="store_true", help="plain HTTP instead of TLS")
    ap.add_argument("--work", type=Path, default=HERE / "out" / "work" / "registry")
    ap.add_argument("--json", type=Path, default=HERE / "out" / "http_clients.json")
    args = ap.parse_args(argv)
    binary = registryd.which_registry()
    if binary is None:
        raise SystemExit("docker-registry is not installed")
    clients = [c for c in CLIENTS if available(c)]
    for c in CLIENTS:
        if c not in clients:
            print(f"note: {c} is not importable here; skipped", file=sys.stderr)
    args.work.mkdir(parents=True, exist_ok=True)
    image = generate(args.work / "image", args.size_mb)
    size = sum(p.stat().st_size for p in (Path(image.rsplit(":", 1)[0]) / "blobs").rglob("*")
               if p.is_file())
    cpu: dict[str, dict[str, list[float]]] = {op: {c: [] for c in clients}
                                              for op in ("push", "pull")}
    wall: dict[str, dict[str, list[float]]] = {op: {c: [] for c in clients}
                                               for op in ("push", "pull")}
    with tempfile.TemporaryDirectory(dir=args.work) as tmp_s:
        tmp = Path(tmp_s)
        env = dict(os.environ)
        server = None
        if not args.plain:
            ca = registryd.CA.make(tmp / "ca")
            server = ca.issue(tmp / "ca", "server", ["127.0.0.1"])
            env["LAYOUTTOOL_CERTS_D"] = str(tmp / "certs")
        for k in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy"):
            env.pop(k, None)

        def registry(name: str) -> registryd.RegistryD:
            reg = registryd.start(binary, tmp / name, server=server)
            if server is not None:
                d = tmp / "certs" / reg.host
                d.mkdir(parents=True, exist_ok=True)
                shutil.copy(ca.cert, d / "ca.crt")
            return reg

        for rnd in range(args.rounds):
            order = clients[rnd % len(clients):] + clients[: rnd % len(clients)]
            for c in order:
                reg = registry(f"push-{rnd}-{c}")
                try:
                    got = run_child(c, "push", image, f"{reg.host}/bench/app:1", env,
                                    args.plain)
                finally:
                    reg.stop()
                    shutil.rmtree(reg.root, ignore_errors=True)
                cpu["push"][c].append(got[0])
                wall["push"][c].append(got[1])
        seeded = registry("seeded")
        try:
            run_child("http.client", "push", image, f"{seeded.host}/bench/app:1", env,
                      args.plain)
            for rnd in range(args.rounds):
                order = clients[rnd % len(clients):] + clients[: rnd % len(clients)]
                for c in order:
                    out = tmp / f"pull-{rnd}-{c}"
                    got = run_child(c, "pull", f"{seeded.host}/bench/app:1", str(out), env,
                                    args.plain)
                    shutil.rmtree(out)
                    cpu["pull"][c].append(got[0])
                    wall["pull"][c].append(got[1])
        finally:
            seeded.stop()
    mib = size / (1 << 20)
    print(f"{mib:.1f} MiB of blobs, {args.rounds} rounds, {'plain HTTP' if args.plain else 'TLS'}"
          f", {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f}")
    header = ("op", "client", "cpu s (median)", "wall s (median)", "MiB/s wall", "cpu runs",
              "wall runs")
    rows = []
    result: dict[str, Any] = {"bytes": size, "rounds": args.rounds,
                              "tls": not args.plain, "import_s": {}, "results": {}}
    for c in clients:
        result["import_s"][c] = round(import_cost(c), 4)
    for op in ("push", "pull"):
        result["results"][op] = {}
        for c in clients:
            mc, mw = statistics.median(cpu[op][c]), statistics.median(wall[op][c])
            result["results"][op][c] = {"cpu_s": [round(x, 3) for x in cpu[op][c]],
                                        "wall_s": [round(x, 3) for x in wall[op][c]]}
            rows.append((op, c, f"{mc:.2f}", f"{mw:.2f}", f"{mib / mw:.0f}",
                         " ".join(f"{x:.2f}" for x in cpu[op][c]),
                         " ".join(f"{x:.2f}" for x in wall[op][c])))
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        print("  ".join(str(x).ljust(w) for x, w in zip(r, widths, strict=True)))
    print("import time: " + ", ".join(f"{c} {v * 1000:.1f} ms"
                                      for c, v in result["import_s"].items()))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
