"""Generate the benchmark's input images from a fixed seed.

Everything is deterministic for a given ``(seed, size)``: the same bytes on every machine and
every run, so a cached input can be reused and two machines time the same work.

What it writes (see :func:`generate`):

* ``layers/N.tar``: the uncompressed layer tars (the ``tar -x`` floor extracts these),
* ``save.tar``: a legacy ``docker save`` tarball (``manifest.json``, ``<hex>.json`` config with
  the right ``diff_ids``, ``<id>/layer.tar``, ``repositories``) written with :mod:`tarfile`,
* ``oci-gzip/`` and ``oci-zstd/``: the same image as OCI layouts (ref ``bench``), made by
  ``skopeo copy docker-archive:... oci:...`` when skopeo is installed, else by
  :func:`write_oci_layout` here,
* ``gc/``: a layout with thousands of blobs (many small images sharing layers, untagged images
  and orphan blobs) for the gc benchmark,

and, separately (:func:`generate_big`), ``big.tar``: a ``docker save`` tarball with one very large
layer, for the flat-memory check.

The image looks like a distribution root: thousands of small files (100 B to 50 KB, text from a
seeded word list, some binary), a few large compressible and incompressible files, symlinks
(relative and absolute), hardlinks, setuid and non-root owners, and four layers with overwrites,
whiteouts (files, a whole directory, a large file) and an opaque directory.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import os
import random
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from layouttool.mediatypes import (
    MT_OCI_CONFIG,
    MT_OCI_INDEX,
    MT_OCI_LAYER,
    MT_OCI_LAYER_GZIP,
    MT_OCI_LAYER_ZSTD,
    MT_OCI_MANIFEST,
)

#: bump when the generator's output changes, so stale caches are not reused
GEN_VERSION = 2
MiB = 1 << 20
MTIME = 1_700_000_000
CREATED = "2023-11-14T22:13:20Z"
#: ref.name of the image in the OCI layouts
REF = "bench"
#: RepoTag of the image in the docker save tarballs
REPO_TAG = "layouttool-bench:latest"
#: chunk size of generated streams and of tar copies (tarfile's default is 16 KiB)
CHUNK = MiB


# ---------------------------------------------------------------- content


def make_words(rng: random.Random, n: int) -> list[str]:
    """``n`` distinct pronounceable pseudo-words."""
    cons = "bcdfghjklmnprstvwxz"
    vows = "aeiouy"
    words: set[str] = set()
    while len(words) < n:
        k = rng.choice((1, 2, 2, 3, 3, 3, 4, 5))
        words.add("".join(rng.choice(cons) + rng.choice(vows) for _ in range(k)))
    return sorted(words)


def make_text_pool(rng: random.Random, size: int) -> bytes:
    """About ``size`` bytes of text-like lines (Zipf-distributed words, code-ish punctuation).

    It compresses about like source code and documentation (gzip ~3x); files and large text
    files are slices of it at random offsets. For the full-size image it is larger than the
    longest window the tools use (16 MiB), so repeats do not make it unrealistically
    compressible.
    """
    words = make_words(rng, 5000)
    cum: list[float] = []
    total = 0.0
    for rank in range(len(words)):
        total += 1.0 / (rank + 1)
        cum.append(total)
    tokens = rng.choices(words, cum_weights=cum, k=size // 6 + 64)
    prefixes = ("", "", "", "    ", "        ", "# ", "\t", "  * ", "")
    suffixes = ("", ".", ",", ":", ";", " {", "()", " = 0", "")
    lines: list[str] = []
    i = 0
    n = len(tokens)
    while i < n:
        k = rng.randint(2, 16)
        lines.append(rng.choice(prefixes) + " ".join(tokens[i : i + k]) + rng.choice(suffixes))
        i += k
    return ("\n".join(lines) + "\n").encode()


class Content:
    """Deterministic file contents: text, binary (executable-like) and incompressible bytes."""

    def __init__(self, rng: random.Random, pool_size: int) -> None:
        self.rng = rng
        self.text = make_text_pool(rng, pool_size)
        # incompressible bytes are the XOR of slices of two random pools at independent
        # offsets: about 10x faster than randbytes() and never repeats within a window
        noise = min(4 * MiB, max(2 * MiB, pool_size))
        self._noise_a = rng.randbytes(noise)
        self._noise_b = rng.randbytes(noise)
        self.licenses = [self.text_bytes(rng.randint(1500, 35000)) for _ in range(5)]

    def text_bytes(self, n: int) -> bytes:
        """``n`` bytes of text."""
        out = []
        while n > 0:
            k = min(n, CHUNK, len(self.text) // 2)
            off = self.rng.randrange(len(self.text) - k)
            out.append(self.text[off : off + k])
            n -= k
        return b"".join(out)

    def random_bytes(self, n: int) -> bytes:
        """``n`` incompressible bytes."""
        if n <= 4096:
            return self.rng.randbytes(n)
        out = []
        while n > 0:
            k = min(n, CHUNK)
            a = self.rng.randrange(len(self._noise_a) - k)
            b = self.rng.randrange(len(self._noise_b) - k)
            x = int.from_bytes(self._noise_a[a : a + k], "little") ^ int.from_bytes(
                self._noise_b[b : b + k], "little"
            )
            out.append(x.to_bytes(k, "little"))
            n -= k
        return b"".join(out)

    def binary_bytes(self, n: int) -> bytes:
        """``n`` bytes that look like an executable: code, zero padding, strings, tables."""
        out = []
        left = n
        while left > 0:
            k = min(left, self.rng.randint(64, 4096))
            r = self.rng.random()
            if r < 0.45:
                out.append(self.random_bytes(k))
            elif r < 0.65:
                out.append(bytes(k))
            elif r < 0.85:
                out.append(self.text_bytes(k))
            else:
                out.append((self.rng.randbytes(16) * (k // 16 + 1))[:k])
            left -= k
        return b"".join(out)

    def mixed_bytes(self, n: int) -> bytes:
        """``n`` bytes, half incompressible and half text (a model file, a database)."""
        out = []
        while n > 0:
            k = min(n, CHUNK)
            out.append(self.random_bytes(k) if self.rng.random() < 0.5 else self.text_bytes(k))
            n -= k
        return b"".join(out)

    def data(self, flavor: str, n: int) -> bytes:
        """Bytes of a given flavor (``text``, ``binary``, ``random``, ``mixed``, ``license:I``)."""
        if flavor.startswith("license:"):
            return self.licenses[int(flavor[8:])]
        if flavor == "text":
            return self.text_bytes(n)
        if flavor == "binary":
            return self.binary_bytes(n)
        if flavor == "random":
            return self.random_bytes(n)
        if flavor == "mixed":
            return self.mixed_bytes(n)
        raise ValueError(f"unknown content flavor {flavor!r}")


class StreamReader:
    """A file object producing ``size`` bytes of a flavor in 1 MiB chunks (large files)."""

    def __init__(self, content: Content, flavor: str, size: int) -> None:
        self._content = content
        self._flavor = flavor
        self._left = size
        self._buf = b""

    def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes (all that is left when ``n`` < 0)."""
        if n < 0:
            n = self._left + len(self._buf)
        while len(self._buf) < n and self._left > 0:
            k = min(CHUNK, self._left)
            self._buf += self._content.data(self._flavor, k)
            self._left -= k
        out, self._buf = self._buf[:n], self._buf[n:]
        return out


# ---------------------------------------------------------------- tree plan


@dataclass
class Entry:
    """One planned tar member."""

    name: str
    size: int = 0
    flavor: str = "text"
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    kind: str = "file"  # file, symlink, hardlink (directories are implied by the names)
    target: str = ""


@dataclass
class Plan:
    """The layers of the image plus facts the smoke test checks against a peer's unpack."""

    layers: list[list[Entry]] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    deleted_dirs: list[str] = field(default_factory=list)
    opaque_dir: str = ""
    opaque_kept: list[str] = field(default_factory=list)
    opaque_removed: list[str] = field(default_factory=list)
    hardlinks: list[tuple[str, str]] = field(default_factory=list)
    overwritten: list[str] = field(default_factory=list)


def _logsize(rng: random.Random, lo: int = 100, hi: int = 50_000) -> int:
    return int(math.exp(rng.uniform(math.log(lo), math.log(hi))))


class Planner:
    """Plans a distribution-like tree layer by layer, tracking what exists for deletions."""

    LANGS = ("de", "fr", "es", "it", "ja", "pt_BR", "ru", "zh_CN", "nl", "pl")

    def __init__(self, rng: random.Random, small_budget: int, large_budget: int) -> None:
        self.rng = rng
        self.small = small_budget
        self.large = large_budget
        self.words = make_words(rng, 3000)
        self.used_names: set[str] = set()
        # regular files present in the image so far: path -> layer index
        self.files: dict[str, int] = {}
        # symlinks and hardlinks: never reused as a file name
        self.links: set[str] = set()
        self.dir_attrs: dict[str, tuple[int, int, int]] = {
            "tmp": (0o1777, 0, 0),
            "root": (0o700, 0, 0),
            "home/user": (0o755, 1000, 1000),
            "var/mail": (0o2775, 0, 8),
        }
        self.plan = Plan()

    def pkg_name(self) -> str:
        """A fresh package name."""
        while True:
            name = self.rng.choice(self.words)
            if self.rng.random() < 0.4:
                name += "-" + self.rng.choice(self.words)
            if self.rng.random() < 0.3:
                name += str(self.rng.randint(0, 9))
            if name not in self.used_names:
                self.used_names.add(name)
                return name

    def package(self, layer: int) -> list[Entry]:
        """The files of one package (docs, binaries, libraries, python, headers, locales)."""
        rng = self.rng
        pkg = self.pkg_name()
        out = [
            # licenses repeat across packages, as in a distribution; ~18 KB on average
            Entry(f"usr/share/doc/{pkg}/copyright", 18_000, f"license:{rng.randrange(5)}"),
            Entry(f"usr/share/doc/{pkg}/changelog.Debian.gz", _logsize(rng, 200, 8000), "random"),
            Entry(f"usr/share/man/man1/{pkg}.1.gz", _logsize(rng, 300, 6000), "random"),
            Entry(f"var/lib/dpkg/info/{pkg}.list", _logsize(rng, 100, 4000)),
            Entry(f"var/lib/dpkg/info/{pkg}.md5sums", _logsize(rng, 100, 4000)),
        ]
        for i in range(rng.choice((0, 1, 1, 2, 3))):
            suffix = "" if i == 0 else "-" + rng.choice(self.words)
            out.append(
                Entry(f"usr/bin/{pkg}{suffix}", _logsize(rng, 2000, 50_000), "binary", 0o755)
            )
        if rng.random() < 0.5:
            major = rng.randint(0, 9)
            real = f"usr/lib/x86_64-linux-gnu/lib{pkg}.so.{major}.{rng.randint(0, 30)}.0"
            out.append(Entry(real, _logsize(rng, 5000, 50_000), "binary", 0o644))
            base = real.rsplit("/", 1)[1]
            out.append(
                Entry(f"usr/lib/x86_64-linux-gnu/lib{pkg}.so.{major}", kind="symlink", target=base)
            )
        if rng.random() < 0.4:
            for _ in range(rng.randint(2, 20)):
                mod = rng.choice(self.words)
                out.append(Entry(f"usr/lib/python3/dist-packages/{pkg}/{mod}.py", _logsize(rng)))
            out.append(Entry(f"usr/lib/python3/dist-packages/{pkg}/__init__.py", 120))
        if rng.random() < 0.2:
            for _ in range(rng.randint(1, 8)):
                out.append(Entry(f"usr/include/{pkg}/{rng.choice(self.words)}.h", _logsize(rng)))
        if rng.random() < 0.3:
            for lang in rng.sample(self.LANGS, rng.randint(1, 4)):
                out.append(
                    Entry(
                        f"usr/share/locale/{lang}/LC_MESSAGES/{pkg}.mo",
                        _logsize(rng, 300, 20_000),
                        "binary",
                    )
                )
        # names made of two words may collide with another package's: keep the first
        seen: set[str] = set()
        uniq = []
        for e in out:
            if e.name not in seen and e.name not in self.files and e.name not in self.links:
                seen.add(e.name)
                uniq.append(e)
        for e in uniq:
            if e.kind == "file":
                self.files[e.name] = layer
            else:
                self.links.add(e.name)
        return uniq

    def packages(self, layer: int, budget: int) -> list[Entry]:
        """Packages until about ``budget`` bytes of small files."""
        out: list[Entry] = []
        used = 0
        while used < budget:
            for e in self.package(layer):
                used += e.size
                out.append(e)
        return out

    def base_skeleton(self) -> list[Entry]:
        """The bits of a root every distribution has: etc files, top symlinks, odd modes."""
        rng = self.rng
        out = [
            Entry("bin", kind="symlink", target="usr/bin"),
            Entry("sbin", kind="symlink", target="usr/sbin"),
            Entry("lib", kind="symlink", target="usr/lib"),
            Entry("lib64", kind="symlink", target="usr/lib64"),
            Entry("usr/lib64/ld-linux-x86-64.so.2", kind="symlink",
                  target="/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"),
            Entry("usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2", 48_000, "binary", 0o755),
            Entry("usr/bin/su", 40_000, "binary", 0o4755),
            Entry("usr/bin/passwd", 30_000, "binary", 0o4755),
            Entry("usr/bin/wall", 20_000, "binary", 0o2755, gid=5),
            Entry("usr/sbin/unix_chkpwd", 30_000, "binary", 0o2755, gid=42),
            Entry("etc/passwd", 900),
            Entry("etc/group", 600),
            Entry("etc/shadow", 500, mode=0o640, gid=42),
            Entry("etc/hostname", 12),
            Entry("etc/os-release", 400),
            Entry("home/user/.profile", 800, uid=1000, gid=1000),
            Entry("home/user/.bashrc", 3500, uid=1000, gid=1000),
            Entry("var/mail/.keep", 0, gid=8),
            Entry("tmp/.keep", 0),
            Entry("root/.profile", 160, mode=0o600),
        ]
        for name in ("editor", "pager", "awk"):
            out.append(Entry(f"etc/alternatives/{name}", kind="symlink",
                             target=f"/usr/bin/{name}.real"))
            out.append(Entry(f"usr/bin/{name}.real", _logsize(rng, 5000, 50_000), "binary", 0o755))
            out.append(Entry(f"usr/bin/{name}", kind="symlink", target=f"/etc/alternatives/{name}"))
        for e in out:
            if e.kind == "file":
                self.files[e.name] = 0
            else:
                self.links.add(e.name)
        return out

    def build(self) -> Plan:
        """Plan all four layers."""
        rng = self.rng
        plan = self.plan
        small, large = self.small, self.large

        # layer 0: the base system, with hardlinked tools
        l0 = self.base_skeleton() + self.packages(0, int(small * 0.5))
        bins = sorted(e.name for e in l0 if e.kind == "file" and e.name.startswith("usr/bin/"))
        for src in bins[::20]:
            l0.append(Entry(f"{src}.hl", kind="hardlink", target=src))
            plan.hardlinks.append((f"{src}.hl", src))
        plan.layers.append(l0)

        # layer 1: more packages, a large text corpus and a large incompressible archive
        l1 = self.packages(1, int(small * 0.3))
        l1.append(Entry("usr/share/corpus/words.txt", int(large * 0.35), "text"))
        l1.append(Entry("opt/data/archive.bin", int(large * 0.20), "random"))
        self.files["usr/share/corpus/words.txt"] = 1
        self.files["opt/data/archive.bin"] = 1
        plan.layers.append(l1)

        # layer 2: a whole doc directory deleted, an opaque directory, files deleted and
        # overwritten, new packages and large files
        l2: list[Entry] = []
        docs = sorted({n.split("/")[3] for n in self.files if n.startswith("usr/share/doc/")})
        gone = rng.choice(docs)
        gone_dir = f"usr/share/doc/{gone}"
        l2.append(Entry(f"usr/share/doc/.wh.{gone}", 0))
        plan.deleted_dirs.append(gone_dir)
        for n in [n for n in self.files if n.startswith(gone_dir + "/")]:
            del self.files[n]
        plan.opaque_dir = "usr/share/locale"
        l2.append(Entry("usr/share/locale/.wh..wh..opq", 0))
        for n in sorted(n for n in self.files if n.startswith("usr/share/locale/")):
            del self.files[n]
            if len(plan.opaque_removed) < 5:
                plan.opaque_removed.append(n)
        for lang in ("de", "fr", "ja"):
            name = f"usr/share/locale/{lang}/LC_MESSAGES/app.mo"
            l2.append(Entry(name, _logsize(rng, 300, 20_000), "binary"))
            plan.opaque_kept.append(name)
        linked = {t for _, t in plan.hardlinks}
        candidates = sorted(
            n for n, layer in self.files.items() if layer < 2 and n not in linked and
            n not in ("usr/share/corpus/words.txt", "opt/data/archive.bin")
        )
        victims = rng.sample(candidates, max(1, len(candidates) * 3 // 100))
        for n in victims:
            d, b = n.rsplit("/", 1)
            l2.append(Entry(f"{d}/.wh.{b}", 0))
            del self.files[n]
            plan.deleted.append(n)
        rest = sorted(set(candidates) - set(victims))
        for n in rng.sample(rest, max(1, len(rest) * 2 // 100)):
            l2.append(Entry(n, _logsize(rng), "text"))
            plan.overwritten.append(n)
        new = self.packages(2, int(small * 0.15))
        l2.extend(new)
        l2.append(Entry("opt/app/assets.pak", int(large * 0.15), "random"))
        l2.append(Entry("var/log/app/app.log", int(large * 0.20), "text", uid=1000, gid=1000))
        self.files["opt/app/assets.pak"] = 2
        self.files["var/log/app/app.log"] = 2
        plan.layers.append(l2)

        # layer 3: configuration, a deleted large file, a hardlink to a lower layer's file
        l3 = [Entry(f"etc/app/{w}.conf", _logsize(rng, 100, 4000))
              for w in rng.sample(self.words, 20)]
        l3.append(Entry("opt/data/.wh.archive.bin", 0))
        del self.files["opt/data/archive.bin"]
        plan.deleted.append("opt/data/archive.bin")
        new_files = sorted(e.name for e in new if e.kind == "file" and e.name in self.files
                           and e.name not in linked)
        for n in rng.sample(new_files, max(1, len(new_files) // 100)):
            d, b = n.rsplit("/", 1)
            l3.append(Entry(f"{d}/.wh.{b}", 0))
            del self.files[n]
            plan.deleted.append(n)
        lower_bin = sorted(n for n in self.files if n.startswith("usr/bin/") and
                           self.files[n] == 0 and n not in linked)[0]
        l3.append(Entry("usr/local/bin/tool", kind="hardlink", target=lower_bin))
        plan.hardlinks.append(("usr/local/bin/tool", lower_bin))
        l3.extend(self.packages(3, int(small * 0.05)))
        l3.append(Entry("opt/app/model.bin", int(large * 0.10), "mixed"))
        plan.layers.append(l3)
        return plan


# ---------------------------------------------------------------- tar writing


class HashingWriter:
    """A write-only file object that hashes and counts what it passes on."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.hash = hashlib.sha256()
        self.count = 0

    def write(self, data: bytes) -> int:
        """Write and hash ``data``."""
        self.hash.update(data)
        self.raw.write(data)
        self.count += len(data)
        return len(data)

    def tell(self) -> int:
        """Bytes written so far (tarfile asks)."""
        return self.count

    def flush(self) -> None:
        """Flush the underlying file."""
        self.raw.flush()


def _tarinfo(name: str, kind: str, mode: int, uid: int, gid: int) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(name)
    ti.type = {
        "file": tarfile.REGTYPE,
        "dir": tarfile.DIRTYPE,
        "symlink": tarfile.SYMTYPE,
        "hardlink": tarfile.LNKTYPE,
    }[kind]
    ti.mode = mode
    ti.uid, ti.gid = uid, gid
    ti.uname = "root" if uid == 0 else ""
    ti.gname = "root" if gid == 0 else ""
    ti.mtime = MTIME
    return ti


def write_layer(
    path: Path,
    entries: list[Entry],
    content: Content,
    dir_attrs: dict[str, tuple[int, int, int]] | None = None,
) -> tuple[str, int]:
    """Write one layer tar (parent directories included, sorted by name).

    Returns ``(diff_id, size)``.
    """
    dir_attrs = dir_attrs or {}
    dirs: set[str] = set()
    for e in entries:
        parts = e.name.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            dirs.add("/".join(parts[:i]))
    members: list[tuple[str, Entry | None]] = [(d, None) for d in dirs]
    members += [(e.name, e) for e in entries]
    members.sort(key=lambda m: m[0])
    with open(path, "wb") as raw:
        hw = HashingWriter(raw)
        with tarfile.TarFile(
            fileobj=hw, mode="w", format=tarfile.PAX_FORMAT, copybufsize=CHUNK  # type: ignore[arg-type]
        ) as tf:
            for name, maybe in members:
                if maybe is None:
                    mode, uid, gid = dir_attrs.get(name, (0o755, 0, 0))
                    tf.addfile(_tarinfo(name, "dir", mode, uid, gid))
                    continue
                e = maybe
                ti = _tarinfo(name, e.kind, e.mode if e.kind != "symlink" else 0o777, e.uid, e.gid)
                if e.kind in ("symlink", "hardlink"):
                    ti.linkname = e.target
                    tf.addfile(ti)
                elif e.size > 4 * CHUNK:
                    ti.size = e.size
                    tf.addfile(ti, StreamReader(content, e.flavor, e.size))
                else:
                    data = content.data(e.flavor, e.size)
                    ti.size = len(data)
                    tf.addfile(ti, _BytesReader(data))
        return "sha256:" + hw.hash.hexdigest(), hw.count


class _BytesReader:
    def __init__(self, data: bytes) -> None:
        self._view = memoryview(data)
        self._pos = 0

    def read(self, n: int = -1) -> bytes:
        end = len(self._view) if n < 0 else self._pos + n
        out = bytes(self._view[self._pos : end])
        self._pos += len(out)
        return out


def make_config(diff_ids: list[str], comment: str) -> bytes:
    """The image config blob (compact, stable key order)."""
    doc = {
        "architecture": "amd64",
        "os": "linux",
        "created": CREATED,
        "author": "layouttool bench",
        "config": {
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["/bin/sh"],
            "WorkingDir": "/",
            "Labels": {"org.opencontainers.image.description": comment},
        },
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
        "history": [
            {"created": CREATED, "created_by": f"/bin/sh -c #(nop) bench layer {i}"}
            for i in range(len(diff_ids))
        ],
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def _add_bytes(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    ti = _tarinfo(name, "file", 0o644, 0, 0)
    ti.size = len(data)
    tf.addfile(ti, _BytesReader(data))


def write_docker_save(
    path: Path, layers: list[tuple[Path, str]], config: bytes, repo_tag: str = REPO_TAG
) -> None:
    """Write a legacy (Docker 1.10-24) ``docker save`` tarball of one image.

    ``layers`` are ``(uncompressed tar path, diff_id)`` pairs in order.
    """
    cfg_hex = hashlib.sha256(config).hexdigest()
    ids: list[str] = []
    parent = ""
    for _, diff_id in layers:
        lid = hashlib.sha256(f"{parent} {diff_id}".encode()).hexdigest()
        ids.append(lid)
        parent = lid
    repo, tag = repo_tag.rsplit(":", 1)
    manifest = [{"Config": f"{cfg_hex}.json", "RepoTags": [repo_tag],
                 "Layers": [f"{lid}/layer.tar" for lid in ids]}]
    with tarfile.TarFile(path, "w", format=tarfile.PAX_FORMAT, copybufsize=CHUNK) as tf:
        prev = ""
        for (layer_path, _), lid in zip(layers, ids, strict=True):
            tf.addfile(_tarinfo(lid, "dir", 0o755, 0, 0))
            _add_bytes(tf, f"{lid}/VERSION", b"1.0")
            legacy: dict[str, Any] = {"id": lid, "created": CREATED, "os": "linux"}
            if prev:
                legacy["parent"] = prev
            _add_bytes(tf, f"{lid}/json", json.dumps(legacy, sort_keys=True).encode())
            ti = _tarinfo(f"{lid}/layer.tar", "file", 0o644, 0, 0)
            ti.size = layer_path.stat().st_size
            with open(layer_path, "rb") as f:
                tf.addfile(ti, f)
            prev = lid
        _add_bytes(tf, f"{cfg_hex}.json", config)
        _add_bytes(tf, "manifest.json", json.dumps(manifest).encode())
        _add_bytes(tf, "repositories", json.dumps({repo: {tag: ids[-1]}}).encode())


# ---------------------------------------------------------------- OCI layouts


def _put_blob(layout: Path, data: bytes) -> dict[str, Any]:
    digest = hashlib.sha256(data).hexdigest()
    path = layout / "blobs" / "sha256" / digest
    if not path.exists():
        tmp = path.with_name(f".tmp-{digest}")
        tmp.write_bytes(data)
        tmp.rename(path)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def _init_layout(layout: Path) -> None:
    (layout / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')


def _write_index(layout: Path, manifests: list[dict[str, Any]]) -> None:
    doc = {"schemaVersion": 2, "mediaType": MT_OCI_INDEX, "manifests": manifests}
    (layout / "index.json").write_text(json.dumps(doc, separators=(",", ":")))


def compress_file(src: Path, dst: Path, compression: str) -> str:
    """Compress ``src`` into ``dst`` (gzip via isal when installed, or zstd); return sha256."""
    h = hashlib.sha256()
    with open(src, "rb") as fin, open(dst, "wb") as raw:
        hw = HashingWriter(raw)
        comp: Any
        if compression == "gzip":
            try:
                from isal import igzip

                comp = igzip.IGzipFile(fileobj=hw, mode="wb", compresslevel=1, mtime=0)  # type: ignore[no-untyped-call]
            except ImportError:
                comp = gzip.GzipFile(fileobj=hw, mode="wb", compresslevel=1, mtime=0)
        elif compression == "zstd":
            import zstandard

            comp = zstandard.ZstdCompressor(level=3).stream_writer(hw, closefd=False)  # type: ignore[arg-type]
        else:
            comp = hw
        while chunk := fin.read(CHUNK):
            comp.write(chunk)
        if comp is not hw:
            comp.close()
        h = hw.hash
    return h.hexdigest()


def write_oci_layout(
    layout: Path, layers: list[tuple[Path, str]], config: bytes, compression: str, ref: str = REF
) -> None:
    """Write the image as an OCI layout ourselves (used when skopeo is missing)."""
    _init_layout(layout)
    mt = {"gzip": MT_OCI_LAYER_GZIP, "zstd": MT_OCI_LAYER_ZSTD, "none": MT_OCI_LAYER}[compression]
    descs = []
    for src, _ in layers:
        tmp = layout / "blobs" / "sha256" / ".tmp-layer"
        digest = compress_file(src, tmp, compression)
        size = tmp.stat().st_size
        tmp.rename(layout / "blobs" / "sha256" / digest)
        descs.append({"mediaType": mt, "digest": f"sha256:{digest}", "size": size})
    cfg = _put_blob(layout, config) | {"mediaType": MT_OCI_CONFIG}
    manifest = {"schemaVersion": 2, "mediaType": MT_OCI_MANIFEST, "config": cfg, "layers": descs}
    mdesc = _put_blob(layout, json.dumps(manifest, separators=(",", ":")).encode())
    _write_index(layout, [mdesc | {"mediaType": MT_OCI_MANIFEST,
                                   "annotations": {"org.opencontainers.image.ref.name": ref}}])


def skopeo_layout(save_tar: Path, layout: Path, compression: str, ref: str = REF) -> None:
    """``skopeo copy docker-archive:SAVE oci:LAYOUT:REF`` with gzip or zstd layers."""
    argv = ["skopeo", "copy", "-q"]
    if compression == "zstd":
        argv += ["--dest-compress-format", "zstd"]
    argv += [f"docker-archive:{save_tar}", f"oci:{layout}:{ref}"]
    proc = subprocess.run(argv, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {proc.stderr.strip()}")


def _small_tar_gz(rng: random.Random, name: str, payload: bytes) -> tuple[bytes, str]:
    import io

    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        _add_bytes(tf, name, payload)
    raw = buf.getvalue()
    return gzip.compress(raw, compresslevel=1, mtime=0), "sha256:" + hashlib.sha256(raw).hexdigest()


def write_gc_layout(
    layout: Path, seed: int, n_images: int, n_orphans: int, base_kib: int
) -> dict[str, int]:
    """A layout with thousands of blobs for gc: images sharing base layers, and garbage.

    Three quarters of the images are tagged in index.json; the rest (manifest, config, own
    layer) are garbage, as are ``n_orphans`` loose blobs. Returns blob counts.
    """
    rng = random.Random(seed ^ 0x6C6)
    _init_layout(layout)
    bases = []
    for i in range(40):
        blob, diff = _small_tar_gz(rng, f"base{i}.bin", rng.randbytes(base_kib * 1024))
        bases.append((_put_blob(layout, blob), diff))
    index: list[dict[str, Any]] = []
    garbage = n_orphans
    for i in range(n_images):
        chosen = rng.sample(bases, 2)
        own, own_diff = _small_tar_gz(rng, f"app{i}.txt", rng.randbytes(rng.randint(200, 4000)))
        layers = [*chosen, (_put_blob(layout, own), own_diff)]
        cfg = make_config([d for _, d in layers], f"gc image {i}")
        cdesc = _put_blob(layout, cfg) | {"mediaType": MT_OCI_CONFIG}
        man = {"schemaVersion": 2, "mediaType": MT_OCI_MANIFEST, "config": cdesc,
               "layers": [d | {"mediaType": MT_OCI_LAYER_GZIP} for d, _ in layers]}
        mdesc = _put_blob(layout, json.dumps(man, separators=(",", ":")).encode())
        if i % 4 != 3:
            index.append(mdesc | {"mediaType": MT_OCI_MANIFEST,
                                  "annotations": {"org.opencontainers.image.ref.name": f"img{i}"}})
        else:
            garbage += 3
    for _ in range(n_orphans):
        _put_blob(layout, rng.randbytes(rng.randint(1000, 64_000)))
    _write_index(layout, index)
    total = sum(1 for _ in (layout / "blobs" / "sha256").iterdir())
    return {"blobs": total, "garbage": garbage, "images": n_images, "tagged": len(index)}


# ---------------------------------------------------------------- entry points


@dataclass(frozen=True)
class Inputs:
    """Paths and facts of a generated image set (also stored as ``meta.json``)."""

    root: str
    seed: int
    size_mb: int
    save_tar: str
    layer_tars: list[str]
    diff_ids: list[str]
    uncompressed_bytes: int
    files: int
    oci_gzip: str
    oci_zstd: str
    oci_tool: str
    gc_layout: str
    gc_blobs: dict[str, int]
    ref: str
    repo_tag: str
    facts: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        """A JSON-able dict."""
        return asdict(self)


def gc_params(size_mb: int) -> tuple[int, int, int]:
    """``(images, orphans, base layer KiB)`` for a gc layout that scales with the size."""
    if size_mb >= 200:
        return 600, 1000, 1024
    if size_mb >= 20:
        return 300, 500, 256
    return 20, 20, 4


def generate(cache: Path, seed: int, size_mb: int, *, use_skopeo: bool = True) -> Inputs:
    """Generate (or reuse from ``cache``) the main image set; returns its :class:`Inputs`."""
    root = cache / f"image-s{seed}-{size_mb}mb-v{GEN_VERSION}"
    meta = root / "meta.json"
    if meta.exists():
        return Inputs(**json.loads(meta.read_text()))
    if root.exists():
        shutil.rmtree(root)
    (root / "layers").mkdir(parents=True)

    total = size_mb * MiB
    rng = random.Random(seed)
    # the text pool is larger than the longest compression window in use (zstd --long=24:
    # 16 MiB), so files cut from it do not repeat within reach more than real files do; a
    # 16 MiB pool let zstd's long window compress it 13 % better than a sample of /usr
    content = Content(random.Random(seed + 1), max(MiB, min(64 * MiB, total // 8)))
    planner = Planner(rng, small_budget=total // 2, large_budget=total // 2)
    plan = planner.build()
    layers: list[tuple[Path, str]] = []
    size = 0
    for i, entries in enumerate(plan.layers):
        p = root / "layers" / f"{i}.tar"
        diff_id, n = write_layer(p, entries, content, planner.dir_attrs)
        layers.append((p, diff_id))
        size += n
    config = make_config([d for _, d in layers], f"layouttool bench image, seed {seed}")
    save = root / "save.tar"
    write_docker_save(save, layers, config)

    tool = "skopeo" if use_skopeo and shutil.which("skopeo") else "bench/gen.py"
    for comp in ("gzip", "zstd"):
        dest = root / f"oci-{comp}"
        if tool == "skopeo":
            skopeo_layout(save, dest, comp)
        else:
            write_oci_layout(dest, layers, config, comp)

    n_img, n_orph, base_kib = gc_params(size_mb)
    gc_counts = write_gc_layout(root / "gc", seed, n_img, n_orph, base_kib)

    facts = {
        "deleted": plan.deleted,
        "deleted_dirs": plan.deleted_dirs,
        "opaque_dir": plan.opaque_dir,
        "opaque_kept": plan.opaque_kept,
        "opaque_removed": plan.opaque_removed,
        "hardlinks": [list(pair) for pair in plan.hardlinks],
        "overwritten": plan.overwritten,
        "layer_entries": [len(lay) for lay in plan.layers],
    }
    inputs = Inputs(
        root=str(root),
        seed=seed,
        size_mb=size_mb,
        save_tar=str(save),
        layer_tars=[str(p) for p, _ in layers],
        diff_ids=[d for _, d in layers],
        uncompressed_bytes=size,
        files=sum(1 for lay in plan.layers for e in lay if e.kind == "file"),
        oci_gzip=str(root / "oci-gzip"),
        oci_zstd=str(root / "oci-zstd"),
        oci_tool=tool,
        gc_layout=str(root / "gc"),
        gc_blobs=gc_counts,
        ref=REF,
        repo_tag=REPO_TAG,
        facts=facts,
    )
    # written last: its presence marks a complete cache entry
    tmp = meta.with_suffix(".tmp")
    tmp.write_text(json.dumps(inputs.to_json(), indent=1))
    tmp.rename(meta)
    return inputs


@dataclass(frozen=True)
class BigInput:
    """A ``docker save`` tarball with one large layer."""

    save_tar: str
    layer_bytes: int
    diff_id: str


def generate_big(cache: Path, seed: int, size_mb: int) -> BigInput:
    """Generate (or reuse) a ``docker save`` tarball with one ``size_mb`` MiB layer."""
    root = cache / f"big-s{seed}-{size_mb}mb-v{GEN_VERSION}"
    meta = root / "meta.json"
    if meta.exists():
        return BigInput(**json.loads(meta.read_text()))
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    total = size_mb * MiB
    content = Content(random.Random(seed + 7), max(MiB, min(8 * MiB, total // 8)))
    per = max(MiB, min(128 * MiB, total // 8))
    entries = [Entry(f"data/readme-{i}.txt", 2000) for i in range(10)]
    i = 0
    left = total - 20_000
    while left > 0:
        n = min(per, left)
        flavor = ("text", "random", "text")[i % 3]
        entries.append(Entry(f"data/part{i:03d}.{'log' if flavor == 'text' else 'bin'}", n, flavor))
        left -= n
        i += 1
    layer = root / "layer.tar"
    diff_id, n = write_layer(layer, entries, content)
    config = make_config([diff_id], f"layouttool bench big layer, seed {seed}")
    save = root / "big.tar"
    write_docker_save(save, [(layer, diff_id)], config)
    layer.unlink()
    big = BigInput(save_tar=str(save), layer_bytes=n, diff_id=diff_id)
    tmp = meta.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(big)))
    tmp.rename(meta)
    return big


def big_layout(big: BigInput) -> Path | None:
    """A gzip OCI layout of the big image, made once by skopeo (as the main image's layouts
    are) and cached beside its tarball; None when skopeo is missing."""
    dest = Path(big.save_tar).parent / "oci-gzip"
    if (dest / "index.json").exists():
        return dest
    if not shutil.which("skopeo"):
        return None
    tmp = dest.with_name(dest.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    skopeo_layout(Path(big.save_tar), tmp, "gzip")
    tmp.rename(dest)
    return dest


def iter_tree_files(root: Path) -> Iterator[Path]:
    """Every non-directory under ``root`` (symlinks not followed)."""
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames:
            yield Path(dirpath) / name
        for name in dirnames:
            p = Path(dirpath) / name
            if p.is_symlink():
                yield p
