"""Referrers over the registry: push --referrers / pull --referrers through the fallback tag
schema on docker-registry 2.8 (it has no referrers API), and through the API on a registry that
has one (the API answered by a fake, OCI-Subject added by a proxy in front of the real one)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import sh
from registryutil import FakeRegistry, Proxy, Registry, clean_env, make_image

from layouttool import mediatypes as mt
from layouttool.digest import Digest
from layouttool.errors import UnsupportedError
from layouttool.model import Descriptor, make_manifest_doc
from layouttool.ops.verify import verify_layout
from layouttool.registry import Client, RegistryError
from layouttool.registry.referrers import add_to_fallback, fallback_tag, list_referrers
from layouttool.store import Layout

SBOM = "application/spdx+json"
SIG = "application/vnd.dev.cosign.simplesigning.v1+json"


@pytest.fixture(scope="module")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Registry]:
    reg = Registry(tmp_path_factory.mktemp("referrers-registry"))
    yield reg
    reg.stop()


@pytest.fixture(autouse=True)
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_env(monkeypatch, tmp_path / "home")


def attach(layout: Layout, subject: Descriptor, artifact_type: str, payload: bytes,
           *, listed: bool = False, annotations: dict[str, str] | None = None) -> Descriptor:
    """An OCI 1.1 artifact manifest whose subject is ``subject`` (unlisted unless ``listed``)."""
    empty = layout.put_bytes(b"{}").descriptor(mt.MT_OCI_EMPTY)
    blob = layout.put_bytes(payload).descriptor(artifact_type)
    doc = make_manifest_doc(media_type=mt.MT_OCI_MANIFEST, config=empty, layers=[blob])
    doc["artifactType"] = artifact_type
    doc["subject"] = {"mediaType": subject.media_type, "digest": str(subject.digest),
                      "size": subject.size}
    if annotations:
        doc["annotations"] = annotations
    desc = layout.put_json(doc, mt.MT_OCI_MANIFEST)
    if listed:
        with layout.writing():
            layout.update_index(lambda entries, _doc: [*entries, desc])
    return desc


def signed_image(path: Path, seed: int = 0) -> tuple[Layout, Descriptor, Descriptor, Descriptor]:
    """An image with an SBOM (unlisted) and a signature of the SBOM (listed), and an unrelated
    artifact of another image."""
    layout = make_image(path, [3000, 4000], seed=seed)
    image = layout.read_index().manifests[0]
    sbom = attach(layout, image, SBOM, b'{"spdxVersion": "SPDX-2.3"}' + bytes([seed]))
    sig = attach(layout, sbom, SIG, b"signature of the sbom" + bytes([seed]), listed=True)
    other = make_image(path, [100], ref="other", seed=seed + 100)
    attach(other, other.read_index().manifests[-1], SBOM, b"not ours")
    return layout, image, sbom, sig


def test_push_referrers_to_a_registry_without_the_api(registry, tmp_path, cli, skopeo):
    layout, image, sbom, sig = signed_image(tmp_path / "src")
    target = f"{registry.host}/signed/app:1"
    r = cli("push", f"{layout.root}:img", target, "--referrers", "--insecure", "--json")
    assert r.code == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["referrers"] == [str(sbom.digest), str(sig.digest)]  # subjects first
    assert out["manifests"] == 3
    # the fallback tags: sha256-<image> lists the SBOM, sha256-<sbom> lists the signature
    for subject, referrer, kind in ((image, sbom, SBOM), (sbom, sig, SIG)):
        raw = sh(skopeo, "inspect", "--raw", "--tls-verify=false",
                 f"docker://{registry.host}/signed/app:{fallback_tag(subject.digest)}").stdout
        index = json.loads(raw)
        assert index["mediaType"] == mt.MT_OCI_INDEX
        assert [(m["digest"], m["artifactType"], m["size"]) for m in index["manifests"]] == [
            (str(referrer.digest), kind, referrer.size)]
    # pushed byte-exact, by digest
    raw = sh(skopeo, "inspect", "--raw", "--tls-verify=false",
             f"docker://{registry.host}/signed/app@{sig.digest}").stdout
    assert Digest.of_bytes(raw) == sig.digest
    # the other image's artifact did not go
    with Client(registry.host, insecure=True) as client:
        assert client.referrers_api is None
        assert list_referrers(client, "signed/app", image.digest) == [
            Descriptor(mt.MT_OCI_MANIFEST, sbom.digest, sbom.size, artifact_type=SBOM)]
        assert client.referrers_api is False  # 404 from distribution 2.8: remembered


def test_pull_referrers_through_the_fallback_tag(registry, tmp_path, cli):
    layout, image, sbom, sig = signed_image(tmp_path / "src", seed=1)
    target = f"{registry.host}/signed/pull:1"
    assert cli("push", f"{layout.root}:img", target, "--referrers", "--insecure").code == 0
    dest = tmp_path / "pulled"
    r = cli("pull", target, "-o", dest, "--referrers", "--insecure", "--json")
    assert r.code == 0, r.stderr
    assert json.loads(r.stdout)["referrers"] == [str(sbom.digest), str(sig.digest)]
    entries = Layout.open(dest).read_index().manifests
    assert [(e.digest, e.ref_name, e.artifact_type) for e in entries] == [
        (image.digest, "signed/pull:1", None),
        (sbom.digest, None, SBOM),
        (sig.digest, None, SIG),
    ]
    assert verify_layout(dest).ok
    for d in (sbom, sig):
        assert Layout.open(dest).read_blob(d) == layout.read_blob(d)
    # without --referrers, none come
    plain = tmp_path / "plain"
    r = cli("pull", target, "-o", plain, "--insecure", "--json")
    assert json.loads(r.stdout)["referrers"] == []
    assert len(Layout.open(plain).read_index().manifests) == 1


def test_fallback_index_keeps_other_referrers_and_is_read_just_before_it_is_written(
    registry, tmp_path, cli
):
    layout, image, sbom, _sig = signed_image(tmp_path / "src", seed=2)
    # someone else's referrer of the same image, already in the fallback index
    theirs_layout = Layout.init(tmp_path / "theirs")
    theirs_layout.put_bytes(layout.blob_path(image.digest).read_bytes())
    theirs = attach(theirs_layout, image, "application/vnd.example.attestation", b"theirs",
                    listed=True)
    repo = "signed/shared"
    assert cli("push", f"{layout.root}:img", f"{registry.host}/{repo}:1", "--insecure").code == 0
    assert cli("push", f"{theirs_layout.root}@{theirs.digest}",
               f"{registry.host}/{repo}@{theirs.digest}", "--insecure").code == 0
    with Client(registry.host, insecure=True) as client:
        raw = theirs_layout.read_blob(theirs)
        from layouttool.registry.referrers import referrer_descriptor

        assert add_to_fallback(client, repo, image.digest,
                               referrer_descriptor(raw, theirs.digest, theirs.media_type))
        assert not add_to_fallback(client, repo, image.digest,
                                   referrer_descriptor(raw, theirs.digest, theirs.media_type))
    proxy = Proxy(registry.host)
    try:
        r = cli("push", f"{layout.root}:img", f"{proxy.host}/{repo}:1", "--referrers",
                "--insecure", "-j", "1")
        assert r.code == 0, r.stderr
        tag = fallback_tag(image.digest)
        log = [(s.method, s.path.split("?")[0]) for s in proxy.log]
        put = log.index(("PUT", f"/v2/{repo}/manifests/{tag}"))
        assert log[put - 1] == ("GET", f"/v2/{repo}/manifests/{tag}")  # read just before
    finally:
        proxy.stop()
    with Client(registry.host, insecure=True) as client:
        listed = [d.digest for d in list_referrers(client, repo, image.digest)]
    assert listed == [theirs.digest, sbom.digest]


def test_a_registry_with_the_api_gets_no_fallback_tag(registry, tmp_path, cli):
    """OCI-Subject on the referrer's PUT says the registry indexed it: no tag is written."""
    layout, _image, sbom, sig = signed_image(tmp_path / "src", seed=3)

    def oci_subject(method: str, path: str, body: bytes) -> dict[str, str]:
        if method == "PUT" and "/manifests/" in path and b'"subject"' in body:
            return {"OCI-Subject": json.loads(body)["subject"]["digest"]}
        return {}

    proxy = Proxy(registry.host, extra_headers=oci_subject)
    try:
        r = cli("push", f"{layout.root}:img", f"{proxy.host}/signed/api:1", "--referrers",
                "--insecure", "--json")
        assert r.code == 0, r.stderr
        assert json.loads(r.stdout)["referrers"] == [str(sbom.digest), str(sig.digest)]
        assert not [s for s in proxy.log if "/manifests/sha256-" in s.path]
        assert [s.method for s in proxy.log if f"/manifests/{sig.digest}" in s.path] == ["PUT"]
    finally:
        proxy.stop()


def _index(*descs: Descriptor) -> bytes:
    return json.dumps({"schemaVersion": 2, "mediaType": mt.MT_OCI_INDEX,
                       "manifests": [d.to_json() for d in descs]}).encode()


def test_referrers_api_pages_and_filters():
    fake = FakeRegistry()
    try:
        subject = Digest.of_bytes(b"subject")
        a = Descriptor(mt.MT_OCI_MANIFEST, Digest.of_bytes(b"a"), 10, artifact_type=SBOM)
        b = Descriptor(mt.MT_OCI_MANIFEST, Digest.of_bytes(b"b"), 11, artifact_type=SIG)
        path = f"/v2/x/referrers/{subject}"
        fake.routes[("GET", path)] = (200, {"Content-Type": mt.MT_OCI_INDEX,
                                            "Link": f'<{path}/2?n=1>; rel="next"'}, _index(a))
        fake.routes[("GET", f"{path}/2")] = (200, {"Content-Type": mt.MT_OCI_INDEX}, _index(b))
        with Client(fake.host, insecure=True) as client:
            assert list_referrers(client, "x", subject) == [a, b]
            assert client.referrers_api is True
            # a registry that ignores the artifactType filter is filtered here
            assert list_referrers(client, "x", subject, SIG) == [b]
        # a registry whose next page links back to itself forever
        fake.routes[("GET", f"{path}/2")] = (200, {"Content-Type": mt.MT_OCI_INDEX,
                                                   "Link": f'<{path}/2>; rel="next"'}, _index(b))
        with Client(fake.host, insecure=True) as client, pytest.raises(
                RegistryError, match="more than 100 pages"):
            list_referrers(client, "x", subject)
    finally:
        fake.stop()


def test_hostile_fallback_entries(tmp_path, cli):
    """A fallback tag anyone can write: a listed manifest naming another subject is skipped; a
    ref name planted in a descriptor's annotations never reaches index.json."""
    fake = FakeRegistry()
    try:
        layout, image, sbom, sig = signed_image(tmp_path / "src", seed=4)
        raw_image = layout.read_blob(image)
        fake.manifest("x", "1", raw_image, image.media_type)
        fake.manifest("x", str(image.digest), raw_image, image.media_type)
        for d in (sbom, sig):
            fake.manifest("x", str(d.digest), layout.read_blob(d), d.media_type)
        m = json.loads(raw_image)
        for blob in [m["config"], *m["layers"]]:
            fake.blob("x", layout.blob_path(Digest.parse(blob["digest"])).read_bytes())
        planted = sbom.with_(annotations={mt.ANNOT_REF_NAME: "planted"}, artifact_type=SBOM)
        # the signature's subject is the SBOM, not the image
        fake.manifest("x", fallback_tag(image.digest), _index(planted, sig), mt.MT_OCI_INDEX)
        sbom_doc = json.loads(layout.read_blob(sbom))
        for blob in [sbom_doc["config"], *sbom_doc["layers"]]:
            fake.blob("x", layout.blob_path(Digest.parse(blob["digest"])).read_bytes())
        dest = tmp_path / "pulled"
        r = cli("pull", f"{fake.host}/x:1", "-o", dest, "--referrers", "--insecure", "--json")
        assert r.code == 0, r.stderr
        assert f"warning: {sig.digest}, listed as a referrer of {image.digest}, names another " \
               "subject: not pulled" in r.stderr
        entries = Layout.open(dest).read_index().manifests
        assert [(e.digest, e.ref_name) for e in entries] == [(image.digest, "x:1"),
                                                            (sbom.digest, None)]
        assert verify_layout(dest).ok
    finally:
        fake.stop()


def test_follow_referrers_order_loops_and_limits(monkeypatch):
    from layouttool.ops import transfer

    def d(name: str, media_type: str = mt.MT_OCI_MANIFEST) -> Descriptor:
        return Descriptor(media_type, Digest.of_bytes(name.encode()), 1)

    img, sbom, sig, att, blob = d("img"), d("sbom"), d("sig"), d("att"), d("x", "text/plain")
    # a hostile listing: the image refers to itself, the signature back to the image
    graph = {img.digest: [sbom, img, blob, att], sbom.digest: [sig], sig.digest: [img]}
    taken: list[tuple[Digest, Digest]] = []
    notes: list[str] = []

    class Notes:
        def task(self, label, total):  # pragma: no cover - not used
            raise AssertionError

        def note(self, message: str) -> None:
            notes.append(message)

    def take(subject: Digest, ref: Descriptor) -> list[Digest] | None:
        taken.append((subject, ref.digest))
        return None if ref is att else [ref.digest]

    n = transfer.follow_referrers([img.digest], lambda s: graph.get(s, []), take, Notes(), "x")
    assert taken == [(img.digest, sbom.digest), (img.digest, att.digest),
                     (sbom.digest, sig.digest)]
    assert n == 2  # att was refused by take
    assert notes == [f"warning: referrer {blob.digest} of {img.digest} is not a manifest or "
                     "index (text/plain): not x"]
    monkeypatch.setattr(transfer, "MAX_REFERRERS", 1)
    with pytest.raises(UnsupportedError, match="more than 1 referrers"):
        transfer.follow_referrers([img.digest], lambda s: graph.get(s, []), take, Notes(), "x")


def test_referrers_lists_a_registrys_like_a_layouts(registry, tmp_path, cli):
    from test_json_output import schema_errors

    layout, image, sbom, sig = signed_image(tmp_path / "src", seed=5)
    target = f"{registry.host}/signed/list:1"
    assert image.digest != sbom.digest
    assert cli("push", f"{layout.root}:img", target, "--referrers", "--insecure").code == 0
    r = cli("referrers", f"docker://{target}", "--insecure", "--json")
    assert r.code == 0, r.stderr
    remote = json.loads(r.stdout)
    assert schema_errors("referrers", remote) == []
    assert [(m["digest"], m["artifactType"]) for m in remote["manifests"]] == [
        (str(sbom.digest), SBOM)]
    # the same document the local command prints for the layout
    local = json.loads(cli("referrers", f"{layout.root}:img", "--json").stdout)
    assert [m["digest"] for m in local["manifests"]] == [m["digest"] for m in remote["manifests"]]
    # by digest, filtered by type; text output is the same table
    r = cli("referrers", f"docker://{registry.host}/signed/list@{sbom.digest}",
            "--tls-verify=false", "--artifact-type", SIG)
    assert r.code == 0, r.stderr
    assert str(sig.digest) in r.stdout and SIG in r.stdout
    assert r.stderr == f"1 referrer(s) of {sbom.digest}\n"
    r = cli("referrers", f"docker://{registry.host}/signed/list@{sbom.digest}", "--insecure",
            "--artifact-type", SBOM, "--json")
    assert json.loads(r.stdout)["manifests"] == []
    # registry options make no sense for a layout: said, not ignored
    r = cli("referrers", f"{layout.root}:img", "--insecure")
    assert r.code == 2 and "--insecure: only for a docker://REGISTRY/REPO reference" in r.stderr
    # nothing there: exit 3 in one line
    r = cli("referrers", f"docker://{registry.host}/signed/none:1", "--insecure")
    assert r.code == 3 and r.stderr.count("\n") == 1, r.stderr
