"""push and pull over a hostile network: retries, chunked uploads, mounts, parallel transfers,
the registry's error bodies, lying registries and schema 1 (all on 127.0.0.1)."""

from __future__ import annotations

import gzip
import json
import math
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import sh
from registryutil import (
    FakeRegistry,
    Proxy,
    Registry,
    Rule,
    clean_env,
    free_port,
    layout_files,
    make_image,
)
from test_schema1 import BASE_TAR, EMPTY_TAR, TOP_TAR, V1, schema1_doc

from layouttool import mediatypes as mt
from layouttool.digest import Digest
from layouttool.ops.verify import verify_layout
from layouttool.registry import Client, RegistryError, retry_after
from layouttool.registry import client as client_mod
from layouttool.registry import transport as transport_mod
from layouttool.store import Layout


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Backoff of a millisecond: the retry logic runs, the suite does not wait."""
    monkeypatch.setattr(transport_mod, "RETRY_BACKOFF", 0.001)
    clean_env(monkeypatch, tmp_path)


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    reg = Registry(tmp_path)
    yield reg
    reg.stop()


@pytest.fixture
def fake() -> Iterator[FakeRegistry]:
    f = FakeRegistry()
    yield f
    f.stop()


def _proxy(reg: Registry, *rules: Rule, **kw) -> Proxy:
    return Proxy(reg.host, list(rules), **kw)


def _one_error_line(stderr: str) -> str:
    assert stderr.startswith("layouttool: error: ") and stderr.count("\n") == 1, stderr
    assert "Traceback" not in stderr and "\x1b" not in stderr
    return stderr


# ------------------------------------------------------------------------------ retries
def test_push_and_pull_survive_5xx_429_and_dropped_connections(registry, tmp_path, cli, skopeo):
    src = make_image(tmp_path / "src", [5000, 9000, 300])
    entry = src.read_index().manifests[0]
    proxy = _proxy(
        registry,
        Rule("HEAD", "/blobs/", 2, "503"),
        Rule("POST", "/blobs/uploads/", 1, "429", {"Retry-After": "0"}),
        Rule("PUT", "/blobs/uploads/", 1, "drop"),  # the closing PUT: the upload starts again
        Rule("PUT", "/manifests/", 1, "502"),
        Rule("GET", "/manifests/", 1, "500"),
        Rule("GET", "/blobs/sha256", 1, "cut"),  # half a blob, then the connection closes
        Rule("GET", "/blobs/sha256", 1, "drop"),
    )
    try:
        r = cli("push", f"{src.root}:img", f"{proxy.host}/flaky/app:1", "--insecure", "--json")
        assert r.code == 0, r.stderr
        assert json.loads(r.stdout)["blobsTransferred"] == 4
        info = json.loads(sh(skopeo, "inspect", "--tls-verify=false",
                             f"docker://{registry.host}/flaky/app:1").stdout)
        assert info["Digest"] == str(entry.digest)
        dest = tmp_path / "dest"
        r = cli("pull", f"{proxy.host}/flaky/app:1", "-o", dest, "--insecure", "--json")
        assert r.code == 0, r.stderr
        assert json.loads(r.stdout)["digest"] == str(entry.digest)
        assert verify_layout(dest).ok
        blobs = {k: v for k, v in layout_files(dest).items() if k.startswith("blobs/")}
        assert blobs == {k: v for k, v in layout_files(src.root).items() if k.startswith("blobs/")}
        # every rule fired, and each failed request was followed by a good one
        assert all(rule.times == 0 for rule in proxy.rules)
        actions = {s.action for s in proxy.log}
        assert {"503", "429", "502", "500", "drop", "cut"} <= actions
        # 4 blobs; one POST refused with 429 and resent; the dropped closing PUT made the
        # upload start again in a new session
        assert proxy.count("POST", "/blobs/uploads/") == 4 + 1 + 1
    finally:
        proxy.stop()


def test_retry_after_is_honoured(registry, tmp_path):
    proxy = _proxy(registry, Rule("GET", "/v2/", 1, "429", {"Retry-After": "7"}),
                   Rule("GET", "/v2/", 1, "503", {"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}))
    waits: list[float] = []
    try:
        with Client(proxy.host, insecure=True, sleep=waits.append, backoff=0.25) as client:
            client.ping()
        # 7 s as asked; a date in the past means no wait at all
        assert waits == [7.0]
        assert proxy.count("GET", "/v2/") == 3
    finally:
        proxy.stop()


@pytest.mark.parametrize(
    ("value", "want"),
    [("3", 3.0), ("0", 0.0), ("Wed, 21 Oct 2015 07:28:10 GMT", 10.0), ("soon", None), ("", None)],
)
def test_retry_after_parsing(value, want):
    now = 1445412480.0  # Wed, 21 Oct 2015 07:28:00 GMT
    assert retry_after(value, now=now) == want


def test_backoff_doubles_and_is_capped(tmp_path):
    port = free_port()  # nothing listens there
    waits: list[float] = []
    client = Client(f"127.0.0.1:{port}", insecure=True, retries=6, backoff=1.0, max_wait=5.0,
                    sleep=waits.append)
    with client, pytest.raises(RegistryError, match="gave up after 7 tries"):
        client.ping()
    assert len(waits) == 6
    for i, w in enumerate(waits):
        assert min(5.0, 0.5 * 2**i) <= w <= min(5.0, 2**i)
    assert waits[-1] == 5.0


def test_registry_down_is_one_line_exit_1(tmp_path, cli):
    port = free_port()
    start = time.monotonic()
    r = cli("pull", f"127.0.0.1:{port}/x:1", "-o", tmp_path / "o", "--insecure", "--retries", "2")
    assert r.code == 1
    line = _one_error_line(r.stderr)
    assert "gave up after 3 tries" in line and "manifest" in line
    assert time.monotonic() - start < 5


def test_registry_that_stays_5xx_is_one_line_exit_1(registry, tmp_path, cli):
    src = make_image(tmp_path / "src", [100])
    proxy = _proxy(registry, Rule("HEAD", "/blobs/", 1000, "503"))
    try:
        r = cli("push", f"{src.root}:img", f"{proxy.host}/down:1", "--insecure", "--retries", "3",
                "-j", "1")
        assert r.code == 1
        line = _one_error_line(r.stderr)
        assert "HEAD blob sha256:" in line and "HTTP 503 (gave up after 4 tries)" in line
        # four tries of the first blob; the second is not started once one has failed
        assert proxy.count("HEAD") == 4
        proxy.rules = [Rule("GET", "/manifests/", 1000, "503")]
        r = cli("pull", f"{proxy.host}/down:1", "-o", tmp_path / "o", "--insecure",
                "--retries", "1")
        assert r.code == 1
        line = _one_error_line(r.stderr)
        assert "HTTP 503 (UNAVAILABLE: flaky) (gave up after 2 tries)" in line
    finally:
        proxy.stop()


def test_patch_is_never_resent_alone(registry, tmp_path, cli, monkeypatch):
    monkeypatch.setattr(client_mod, "UPLOAD_CHUNK", 4096)
    src = make_image(tmp_path / "src", [10000])
    proxy = _proxy(registry, Rule("PATCH", "/blobs/uploads/", 1, "drop"),
                   Rule("PATCH", "/blobs/uploads/", 1, "500"))
    try:
        r = cli("push", f"{src.root}:img", f"{proxy.host}/p:1", "--insecure", "-j", "1", "--json")
        assert r.code == 0, r.stderr
        # each failed PATCH abandoned its session: the blob went up in a third one from byte 0
        assert proxy.count("POST", "/blobs/uploads/") == 3 + 1  # + the config's
        ranges = [s.headers.get("Content-Range") for s in proxy.log if s.method == "PATCH"]
        assert ranges == ["0-4095", "0-4095", "0-4095", "4096-8191", "8192-9999"]
        assert json.loads(r.stdout)["bytesTransferred"] == 10000 + _config_size(src)
    finally:
        proxy.stop()


def _config_size(layout: Layout) -> int:
    entry = layout.read_index().manifests[0]
    return json.loads(layout.read_blob(entry))["config"]["size"]


# ------------------------------------------------------------------------------ chunked
def test_large_blob_goes_up_in_patch_chunks(registry, tmp_path, cli, monkeypatch, skopeo):
    monkeypatch.setattr(client_mod, "UPLOAD_CHUNK", 64 << 10)
    size = 300_000
    src = make_image(tmp_path / "src", [size, 1000])
    m = json.loads(src.read_blob(src.read_index().manifests[0]))
    big = Digest.parse(m["layers"][0]["digest"])
    proxy = _proxy(registry)
    try:
        r = cli("push", f"{src.root}:img", f"{proxy.host}/big:1", "--insecure", "--json")
        assert r.code == 0, r.stderr
        patches = [s for s in proxy.log if s.method == "PATCH"]
        assert len(patches) == math.ceil(size / (64 << 10))
        ends = [int(s.headers["Content-Range"].split("-")[1]) for s in patches]
        assert ends == sorted(ends) and ends[-1] == size - 1
        closing = [s for s in proxy.log if s.method == "PUT" and f"digest={big}".replace(
            ":", "%3A") in s.path]
        assert len(closing) == 1 and closing[0].headers.get("Content-Length") == "0"
        # small blobs went up in one PUT
        assert json.loads(r.stdout)["bytesTransferred"] == size + 1000 + m["config"]["size"]
    finally:
        proxy.stop()
    assert registry.blob_file(big).read_bytes() == src.blob_path(big).read_bytes()
    raw = sh(skopeo, "inspect", "--raw", "--tls-verify=false",
             f"docker://{registry.host}/big:1").stdout
    assert Digest.of_bytes(raw) == src.read_index().manifests[0].digest


# ------------------------------------------------------------------------------ mounts
def test_second_repository_mounts_instead_of_uploading(registry, tmp_path, cli):
    src = make_image(tmp_path / "src", [40000, 2000])
    assert cli("push", f"{src.root}:img", f"{registry.host}/team/base:1", "--insecure").code == 0
    proxy = _proxy(registry)
    try:
        r = cli("push", f"{src.root}:img", f"{proxy.host}/team/app:1", "--insecure",
                "--mount-from", "team/base", "--json")
        assert r.code == 0, r.stderr
        out = json.loads(r.stdout)
        assert (out["blobsMounted"], out["blobsTransferred"], out["bytesTransferred"]) == (3, 0, 0)
        assert proxy.count("POST", "mount=") == 3
        assert proxy.count("PATCH") == 0 and proxy.count("PUT", "/blobs/") == 0
    finally:
        proxy.stop()


def test_mount_source_from_the_imported_name(registry, tmp_path, cli):
    """An image whose io.containerd.image.name is REGISTRY/team/base:1 mounts from there."""
    make_image(tmp_path / "first", [3000])
    assert cli("push", f"{tmp_path / 'first'}:img", f"{registry.host}/team/base:1",
               "--insecure").code == 0
    # the same blobs, in a layout that remembers where they came from
    src = make_image(tmp_path / "src", [3000], ref="base", full_name=f"{registry.host}/team/base:1")
    r = cli("push", f"{src.root}:base", f"{registry.host}/team/other:1", "--insecure", "--json")
    assert r.code == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["blobsMounted"] == 2 and out["bytesTransferred"] == 0


def test_declined_mount_uploads_into_the_offered_session(registry, tmp_path, cli):
    """Mounting from a repository that lacks the blob: the registry answers 202 with a session
    and the blob goes into that session (no second POST)."""
    src = make_image(tmp_path / "src", [3000])
    proxy = _proxy(registry)
    try:
        r = cli("push", f"{src.root}:img", f"{proxy.host}/team/app:1", "--insecure",
                "--mount-from", "team/nothing", "--json")
        assert r.code == 0, r.stderr
        out = json.loads(r.stdout)
        assert out["blobsMounted"] == 0 and out["blobsTransferred"] == 2
        assert proxy.count("POST") == 2  # the two mount attempts, nothing more
    finally:
        proxy.stop()


# ------------------------------------------------------------------------------ parallel
def test_jobs_run_in_parallel_and_match_a_serial_run(registry, tmp_path, cli):
    src = make_image(tmp_path / "src", [2000 + i for i in range(6)])
    slow = lambda method, path: 0.15 if "/blobs/" in path and method in ("GET", "PUT") else 0  # noqa: E731
    proxy = _proxy(registry, delay=slow)
    try:
        r = cli("push", f"{src.root}:img", f"{proxy.host}/par:1", "--insecure", "-j", "4")
        assert r.code == 0, r.stderr
        assert proxy.max_overlap(lambda s: s.method == "PUT" and "/blobs/" in s.path) >= 2
        outs = {}
        for jobs in ("1", "4"):
            proxy.log.clear()
            dest = tmp_path / f"j{jobs}"
            r = cli("pull", f"{proxy.host}/par:1", "-o", dest, "--insecure", "-j", jobs, "--json")
            assert r.code == 0, r.stderr
            overlap = proxy.max_overlap(lambda s: s.method == "GET" and "/blobs/" in s.path)
            assert overlap == 1 if jobs == "1" else overlap >= 2
            doc = json.loads(r.stdout)
            outs[jobs] = ({k: v for k, v in doc.items() if k not in ("seconds", "destination")},
                          layout_files(dest))
            assert verify_layout(dest).ok
        assert outs["1"] == outs["4"]
    finally:
        proxy.stop()


# ------------------------------------------------------------------------------ errors
@pytest.mark.parametrize(
    ("status", "code", "message", "exit_code"),
    [
        (404, "MANIFEST_UNKNOWN", "manifest unknown", 3),
        (401, "UNAUTHORIZED", "authentication required", 1),
        (403, "DENIED", "requested access to the resource is denied", 1),
        (404, "BLOB_UNKNOWN", "blob unknown to registry", 3),
        (400, "NAME_INVALID", "invalid repository name", 1),
        (500, "UNKNOWN", "unknown error\n\x1b[31mwith an escape\x1b[0m", 1),
    ],
)
def test_registry_error_bodies_become_one_line(fake, tmp_path, cli, status, code, message,
                                               exit_code):
    body = json.dumps({"errors": [{"code": code, "message": message, "detail": {"x": 1}}]})
    fake.routes[("GET", "/v2/team/app/manifests/1")] = (
        status, {"Content-Type": "application/json"}, body.encode())
    r = cli("pull", f"{fake.host}/team/app:1", "-o", tmp_path / "o", "--insecure",
            "--retries", "1")
    assert r.code == exit_code
    line = _one_error_line(r.stderr)
    assert f"{fake.host}: GET manifest team/app:1: HTTP {status} ({code}: " in line
    if status in (401, 403):
        assert "no credentials" in line


def test_blob_unknown_from_a_real_registry_is_exit_3(registry, tmp_path, cli):
    src = make_image(tmp_path / "src", [5000])
    assert cli("push", f"{src.root}:img", f"{registry.host}/gone:1", "--insecure").code == 0
    m = json.loads(src.read_blob(src.read_index().manifests[0]))
    layer = m["layers"][0]["digest"]
    import urllib.request

    req = urllib.request.Request(f"http://{registry.host}/v2/gone/blobs/{layer}", method="DELETE")
    urllib.request.urlopen(req).close()
    dest = tmp_path / "dest"
    r = cli("pull", f"{registry.host}/gone:1", "-o", dest, "--insecure")
    assert r.code == 3
    assert "BLOB_UNKNOWN" in _one_error_line(r.stderr)
    assert Layout.open(dest).read_index().manifests == ()


def test_manifest_not_matching_the_requested_digest_is_exit_5(fake, tmp_path, cli):
    real = json.dumps({"schemaVersion": 2, "mediaType": mt.MT_OCI_MANIFEST}).encode()
    asked = Digest.of_bytes(b"something else entirely")
    fake.manifest("x", str(asked), real, mt.MT_OCI_MANIFEST)
    dest = tmp_path / "dest"
    r = cli("pull", f"{fake.host}/x@{asked}", "-o", dest, "--insecure")
    assert r.code == 5
    assert "asked for manifest" in _one_error_line(r.stderr)
    assert not dest.exists() or Layout.open(dest).read_index().manifests == ()


def _fake_image(fake: FakeRegistry, repo: str, layer: bytes = b"layer") -> bytes:
    """Serve a one-layer image's blobs; return its manifest (not served yet)."""
    ld = fake.blob(repo, layer)
    cfg = json.dumps({"architecture": "amd64", "os": "linux",
                      "rootfs": {"type": "layers", "diff_ids": [ld]}}).encode()
    doc = {"schemaVersion": 2, "mediaType": mt.MT_OCI_MANIFEST,
           "config": {"mediaType": mt.MT_OCI_CONFIG, "digest": fake.blob(repo, cfg),
                      "size": len(cfg)},
           "layers": [{"mediaType": mt.MT_OCI_LAYER, "digest": ld, "size": len(layer)}]}
    return json.dumps(doc).encode()


def test_docker_content_digest_disagreeing_is_exit_5(fake, tmp_path, cli):
    raw = _fake_image(fake, "x")
    fake.manifest("x", "1", raw, mt.MT_OCI_MANIFEST,
                  digest_header=str(Digest.of_bytes(raw + b" ")))
    dest = tmp_path / "dest"
    r = cli("pull", f"{fake.host}/x:1", "-o", dest, "--insecure")
    assert r.code == 5
    assert "Docker-Content-Digest" in _one_error_line(r.stderr)
    assert not dest.exists()
    # with the right header the same manifest pulls (so the check above is the header's)
    fake.manifest("x", "1", raw, mt.MT_OCI_MANIFEST, digest_header=str(Digest.of_bytes(raw)))
    r = cli("pull", f"{fake.host}/x:1", "-o", dest, "--insecure")
    assert r.code == 0, r.stderr
    assert verify_layout(dest).ok


def test_blob_longer_than_its_descriptor_is_exit_5(fake, tmp_path, cli):
    raw = _fake_image(fake, "x")
    layer = json.loads(raw)["layers"][0]["digest"]
    fake.routes[("GET", f"/v2/x/blobs/{layer}")] = (200, {}, b"layer" + b"\0" * 100_000)
    fake.manifest("x", "1", raw, mt.MT_OCI_MANIFEST)
    dest = tmp_path / "dest"
    r = cli("pull", f"{fake.host}/x:1", "-o", dest, "--insecure")
    assert r.code == 5
    assert "expected 5" in _one_error_line(r.stderr)
    assert Layout.open(dest).read_index().manifests == ()
    assert not Layout.open(dest).has_blob(Digest.parse(layer))


def test_manifest_over_4_mib_is_refused(fake, tmp_path, cli):
    raw = _fake_image(fake, "x")
    doc = json.loads(raw)
    doc["annotations"] = {"padding": "x" * (4 << 20)}
    fake.manifest("x", "1", json.dumps(doc).encode(), mt.MT_OCI_MANIFEST)
    dest = tmp_path / "dest"
    r = cli("pull", f"{fake.host}/x:1", "-o", dest, "--insecure")
    assert r.code == 4
    assert "is over 4 MiB; refused" in _one_error_line(r.stderr)
    assert not dest.exists()


def test_endless_redirects_stop(fake, tmp_path, cli):
    raw = _fake_image(fake, "x")
    layer = json.loads(raw)["layers"][0]["digest"]
    path = f"/v2/x/blobs/{layer}"
    fake.routes[("GET", path)] = (307, {"Location": path}, b"")  # to itself, forever
    fake.manifest("x", "1", raw, mt.MT_OCI_MANIFEST)
    dest = tmp_path / "dest"
    r = cli("pull", f"{fake.host}/x:1", "-o", dest, "--insecure")
    assert r.code == 1
    assert "too many redirects" in _one_error_line(r.stderr)
    assert sum(1 for m, p, _ in fake.log if m == "GET" and p == path) == 6  # 1 + 5 redirects
    assert Layout.open(dest).read_index().manifests == ()


def test_upload_that_never_completes_stops(fake, tmp_path, cli):
    """A registry that opens upload sessions and never takes the closing PUT (202 each time):
    the push gives up after its retries, with one line."""
    src = make_image(tmp_path / "src", [100])
    fake.routes[("POST", "/v2/x/blobs/uploads/")] = (
        202, {"Location": "/v2/x/blobs/uploads/session"}, b"")
    fake.routes[("PUT", "/v2/x/blobs/uploads/session")] = (
        503, {"Content-Type": "application/json"},
        b'{"errors":[{"code":"UNAVAILABLE","message":"try again"}]}')
    r = cli("push", f"{src.root}:img", f"{fake.host}/x:1", "--insecure", "--retries", "2",
            "-j", "1")
    assert r.code == 1
    assert "UNAVAILABLE" in _one_error_line(r.stderr)
    puts = sum(1 for m, p, _ in fake.log if m == "PUT")
    assert puts == 3  # the first try and two retries of the whole upload, then no more


def test_redirect_to_another_host_carries_no_authorization(tmp_path):
    """A blob GET redirected elsewhere (a CDN) must not take the registry's credentials along."""
    cdn = FakeRegistry()
    reg = FakeRegistry()
    try:
        data = b"blob bytes"
        digest = cdn.blob("x", data)
        reg.routes[("GET", f"/v2/x/blobs/{digest}")] = (
            307, {"Location": f"http://{cdn.host}/v2/x/blobs/{digest}?sig=1"}, b"")
        client = Client(reg.host, insecure=True, creds=("user", "pw"))
        client.auth._basic = True  # as after a Basic challenge
        with client, client.open_blob("x", Digest.parse(digest)) as resp:
            assert resp.read() == data
        seen = [h for _, _, h in reg.log] + [h for _, _, h in cdn.log]
        assert ["Authorization" in h for h in seen] == [True, False]
        assert seen[1]["Host"] == cdn.host
    finally:
        cdn.stop()
        reg.stop()


def test_relative_and_absolute_locations_resolve(tmp_path):
    c = Client("reg.example:5000", insecure=True)
    base = ("http", "reg.example:5000", "/v2/x/blobs/uploads/")
    assert c.resolve("/v2/x/blobs/uploads/u1?_state=a", base) == (
        "http", "reg.example:5000", "/v2/x/blobs/uploads/u1?_state=a")
    assert c.resolve("u2", base) == ("http", "reg.example:5000", "/v2/x/blobs/uploads/u2")
    assert c.resolve("https://store.example/up/3?x=1", base) == (
        "https", "store.example", "/up/3?x=1")
    tls = Client("reg.example", insecure=False)
    # our own origin is never downgraded to plain HTTP (the token would travel in clear)
    assert tls.resolve("http://reg.example/v2/x", ("https", "reg.example", "/v2/"))[0] == "https"
    with pytest.raises(RegistryError, match="unusable Location"):
        c.resolve("ftp://elsewhere/x", base)


# ------------------------------------------------------------------------------ schema 1
def test_pull_schema1_then_convert(fake, tmp_path, cli):
    tars = (BASE_TAR, EMPTY_TAR, TOP_TAR)
    blobs = [fake.blob("old/app", gzip.compress(t, mtime=0)) for t in tars]
    doc = schema1_doc(blobs, V1, signed=True)
    raw = json.dumps(doc, indent=3).encode()
    # a signed schema 1 manifest's registry digest covers the payload, not these bytes
    fake.manifest("old/app", "latest", raw, mt.MT_DOCKER_SCHEMA1_SIGNED,
                  digest_header=str(Digest.of_bytes(b"payload without signatures")))
    dest = tmp_path / "dest"
    r = cli("pull", f"{fake.host}/old/app:latest", "-o", dest, "--insecure", "--json")
    assert r.code == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["mediaType"] == mt.MT_DOCKER_SCHEMA1_SIGNED
    assert out["digest"] == str(Digest.of_bytes(raw)) and out["blobsTransferred"] == 3
    layout = Layout.open(dest)
    (entry,) = layout.read_index().manifests
    assert entry.media_type == mt.MT_DOCKER_SCHEMA1_SIGNED
    assert layout.read_blob(entry) == raw
    assert verify_layout(dest).ok
    r = cli("convert", f"{dest}:old/app:latest", "--json")
    assert r.code == 0, r.stderr
    (entry,) = Layout.open(dest).read_index().manifests
    assert entry.media_type == mt.MT_OCI_MANIFEST
    assert verify_layout(dest).ok
    assert cli("unpack", f"{dest}:old/app:latest", tmp_path / "root").code == 0
    assert (tmp_path / "root" / "app").read_bytes() == b"#!/bin/sh\necho hi\n"


def test_pull_sends_accept_for_every_manifest_type(fake, tmp_path, cli):
    cli("pull", f"{fake.host}/x:1", "-o", tmp_path / "o", "--insecure")
    method, path, headers = fake.log[0]
    assert (method, path) == ("GET", "/v2/x/manifests/1")
    accept = headers["Accept"]
    for t in (mt.MT_OCI_INDEX, mt.MT_OCI_MANIFEST, mt.MT_DOCKER_LIST, mt.MT_DOCKER_MANIFEST,
              mt.MT_DOCKER_SCHEMA1_SIGNED, mt.MT_DOCKER_SCHEMA1):
        assert t in accept


def test_head_with_another_size_is_uploaded_again(fake, tmp_path, cli):
    """A registry that claims a blob with the wrong size has a damaged copy: send ours."""
    src = make_image(tmp_path / "src", [3000])
    entry = src.read_index().manifests[0]
    m = json.loads(src.read_blob(entry))
    layer, config = m["layers"][0], m["config"]
    fake.routes[("HEAD", f"/v2/x/blobs/{layer['digest']}")] = (200, {}, b"")  # 0 bytes
    fake.routes[("HEAD", f"/v2/x/blobs/{config['digest']}")] = (
        200, {"Content-Length": str(config["size"])}, b"")
    fake.routes[("POST", "/v2/x/blobs/uploads/")] = (
        202, {"Location": "/v2/x/blobs/uploads/u1"}, b"")
    fake.routes[("PUT", "/v2/x/blobs/uploads/u1")] = (201, {}, b"")
    fake.routes[("PUT", "/v2/x/manifests/1")] = (
        201, {"Docker-Content-Digest": str(entry.digest)}, b"")
    r = cli("push", f"{src.root}:img", f"{fake.host}/x:1", "--insecure", "--json")
    assert r.code == 0, r.stderr
    out = json.loads(r.stdout)
    assert (out["blobsTransferred"], out["blobsSkipped"]) == (1, 1)
    assert out["bytesTransferred"] == 3000
    puts = [p for m_, p, _ in fake.log if m_ == "PUT" and "/blobs/" in p]
    assert puts == [f"/v2/x/blobs/uploads/u1?digest={layer['digest'].replace(':', '%3A')}"]


def test_registry_storing_another_manifest_digest_is_exit_5(fake, tmp_path, cli):
    src = make_image(tmp_path / "src", [30])
    for d in json.loads(src.read_blob(src.read_index().manifests[0]))["layers"] + [
            json.loads(src.read_blob(src.read_index().manifests[0]))["config"]]:
        fake.routes[("HEAD", f"/v2/x/blobs/{d['digest']}")] = (
            200, {"Content-Length": str(d["size"])}, b"")
    other = Digest.of_bytes(b"re-serialised")
    fake.routes[("PUT", "/v2/x/manifests/1")] = (201, {"Docker-Content-Digest": str(other)}, b"")
    r = cli("push", f"{src.root}:img", f"{fake.host}/x:1", "--insecure")
    assert r.code == 5
    assert "not byte-exact" in _one_error_line(r.stderr)
