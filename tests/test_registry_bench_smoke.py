"""Smoke test of bench/registry_bench.py (make bench's push/pull rows): a tiny image, one round,
plain HTTP and TLS, both tools; every row is there and the JSON is complete. No timing is
asserted."""

from __future__ import annotations

import json
import sys

import pytest
from conftest import REPO, need_tool

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench import registry_bench


@pytest.mark.slow
def test_registry_bench_runs_both_transports_beside_skopeo(tmp_path, capsys):
    need_tool("skopeo")
    need_tool("docker-registry")
    need_tool("openssl")
    out = tmp_path / "bench.json"
    assert registry_bench.main(["--size-mb", "1", "--rounds", "1", "--work", str(tmp_path / "w"),
                                "--json", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert set(doc["results"]) == {"push", "pull", "push-tls", "pull-tls"}
    for row in doc["results"].values():
        for tool in ("layouttool", "skopeo"):
            assert len(row[tool]["runs_s"]) == 1 and row[tool]["median_s"] > 0
            assert row[tool]["cpu_median_s"] > 0
    text = capsys.readouterr().out
    assert text.count(" tls ") == 4 and text.count(" http ") == 4
    # the registries it started are gone, and so is their data
    assert not [p for p in (tmp_path / "w").iterdir() if p.name.startswith("tmp")]
