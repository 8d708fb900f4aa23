"""Strict in what we write: everything layouttool writes passes ``verify --strict`` (import,
convert, to-docker-save and back, pull), and ``verify --deep`` finds a layer that lies."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import REPO, run_cli
from registryutil import Registry
from shapes import RawLayout, shape_ggcr_docker_under_oci, tagged
from test_zero_layers import _save

from layouttool.ops.verify import verify_layout

SAMPLE = REPO / "testdata" / "sample-docker-save.tar"


def strict_ok(layout: Path) -> None:
    r = run_cli("verify", "--strict", "--deep", "--json", layout)
    doc = json.loads(r.stdout)
    assert r.code == 0, doc["problems"] + doc["warnings"]
    assert doc["layersChecked"] > 0


@pytest.fixture
def imported(tmp_path: Path) -> Path:
    out = tmp_path / "oci"
    r = run_cli("-q", "from-docker-save", SAMPLE, "-o", out)
    assert r.code == 0, r.stderr
    return out


def test_import_convert_export_are_strictly_clean(imported: Path, tmp_path: Path) -> None:
    strict_ok(imported)
    for args in (["--compression", "zstd"], ["--format", "docker", "--compression", "gzip"],
                 ["--compression", "none"]):
        dest = tmp_path / f"conv-{'-'.join(args)}"
        r = run_cli("-q", "convert", imported, *args, "-o", dest)
        assert r.code == 0, r.stderr
        strict_ok(dest)
    tar = tmp_path / "out.tar"
    assert run_cli("-q", "to-docker-save", f"{imported}:layouttool-sample:1.0", "-o", tar).code == 0
    back = tmp_path / "back"
    assert run_cli("-q", "from-docker-save", tar, "-o", back).code == 0
    strict_ok(back)


def test_convert_writes_a_descriptor_that_agrees_with_its_document(tmp_path: Path) -> None:
    """A go-containerregistry layout (Docker manifest, OCI-typed descriptor) is a warning;
    convert (even with nothing to recompress) rewrites the descriptor, so --strict passes."""
    m = shape_ggcr_docker_under_oci(tmp_path / "ggcr")
    assert run_cli("verify", "--strict", m.root).code == 4
    r = run_cli("convert", m.images["app"], "-o", tmp_path / "out")
    assert r.code == 0, r.stderr
    assert "[media-type-mismatch]" in r.stderr  # the input's quirk, said once on stderr
    strict_ok(tmp_path / "out")
    assert run_cli("-q", "convert", m.images["app"]).code == 0  # in place
    strict_ok(m.root)


def test_zero_layer_import_warns_only_about_the_input_config(tmp_path: Path) -> None:
    """BuildKit's zero-layer save: its config bytes are kept (their digest is the image ID), so
    their nulls stay, as warnings about the input; nothing we wrote is a problem."""
    src = tmp_path / "zero.tar"
    src.write_bytes(_save("docker25"))
    out = tmp_path / "oci"
    assert run_cli("-q", "from-docker-save", src, "-o", out).code == 0
    res = verify_layout(out)
    assert res.ok and res.problems == ()
    config = {w.digest for w in res.warnings if w.code == "null-field"}
    assert len(config) == 1 and {w.code for w in res.warnings} == {"null-field", "layers-empty"}
    assert {w.message.split(" ")[0] for w in res.warnings if w.code == "null-field"} == {
        "created", "history", "rootfs.diff_ids"}


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[Registry]:
    reg = Registry(tmp_path)
    yield reg
    reg.stop()


def test_pull_is_strictly_clean(registry: Registry, imported: Path, tmp_path: Path,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    from registryutil import clean_env

    clean_env(monkeypatch, tmp_path)
    ref = f"{registry.host}/sample:1.0"
    assert run_cli("-q", "push", f"{imported}:layouttool-sample:1.0", ref, "--insecure").code == 0
    dest = tmp_path / "pulled"
    r = run_cli("-q", "pull", ref, "-o", dest, "--insecure")
    assert r.code == 0, r.stderr
    strict_ok(dest)


# ------------------------------------------------------------------------------ --deep
def _image_with_layer(tmp_path: Path, plain: bytes, diff_id_of: bytes) -> Path:
    import hashlib

    lay = RawLayout(tmp_path / "deep")
    layer = lay.blob(gzip.compress(plain, mtime=0), "application/vnd.oci.image.layer.v1.tar+gzip")
    cfg = lay.config(["sha256:" + hashlib.sha256(diff_id_of).hexdigest()])
    lay.write_index([tagged(lay.manifest(cfg, [layer]), "x")])
    return lay.root


def test_deep_finds_a_layer_whose_content_is_not_its_diff_id(tmp_path: Path) -> None:
    lay = _image_with_layer(tmp_path, b"the real content", b"what the config claims")
    # without --deep the blob matches its digest: nothing to see
    assert run_cli("verify", lay).code == 0
    r = run_cli("verify", "--deep", "--json", lay)
    assert r.code == 5
    (p,) = json.loads(r.stdout)["problems"]
    assert p["code"] == "diff-id-mismatch" and p["where"].startswith("x > layer ")


def test_deep_finds_a_layer_that_does_not_decompress_as_typed(tmp_path: Path) -> None:
    lay = RawLayout(tmp_path / "l")
    # typed gzip, stored plain (the digest is right)
    layer = lay.blob(b"not gzip at all" * 10, "application/vnd.oci.image.layer.v1.tar+gzip")
    cfg = lay.config(["sha256:" + "0" * 64])
    lay.write_index([tagged(lay.manifest(cfg, [layer]), "x")])
    r = run_cli("verify", "--deep", "--json", lay.root)
    assert r.code == 4
    assert [p["code"] for p in json.loads(r.stdout)["problems"]] == ["corrupt-layer"]


def test_deep_reads_each_layer_once_on_every_cpu(imported: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """One pass per layer (its digest checked on the way), shared by the images that use it."""
    from layouttool import layers
    from layouttool.store import Layout

    opened: list[str] = []
    real = Layout.open_blob

    def spy(self: Layout, digest, size=None):  # type: ignore[no-untyped-def]
        opened.append(str(digest))
        return real(self, digest, size)

    monkeypatch.setattr(Layout, "open_blob", spy)
    calls: list[str] = []
    real_diff = layers.diff_layer

    def diff_spy(src, **kw):  # type: ignore[no-untyped-def]
        calls.append(kw["what"])
        return real_diff(src, **kw)

    monkeypatch.setattr(layers, "diff_layer", diff_spy)
    res = verify_layout(imported, deep=True, jobs=2)
    assert res.ok and res.layers_checked == len(calls) > 0
    # two refs, one image: each layer decompressed once
    assert len(set(calls)) == len(calls)
    plain = verify_layout(imported)
    assert res.checked == plain.checked and res.bytes_checked == plain.bytes_checked
