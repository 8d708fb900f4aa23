"""Describe a directory tree exactly, to compare two unpacked root filesystems."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path
from typing import Any


def snapshot(
    root: Path, *, owners: bool = True, mtimes: bool = False, skip: tuple[str, ...] = ()
) -> dict[str, dict[str, Any]]:
    """Map every path under ``root`` (relative, '/'-joined) to its type, mode, size, content
    hash, link target, owner and hardlink group (the smallest path sharing its inode)."""
    out: dict[str, dict[str, Any]] = {}
    inodes: dict[tuple[int, int], str] = {}
    #: an inode's content hash: hardlinks share it (the dive image links busybox 392 times)
    hashes: dict[tuple[int, int], str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(dirnames + filenames):
            p = Path(dirpath) / name
            rel = p.relative_to(root).as_posix()
            if rel in skip or rel.startswith(tuple(s + "/" for s in skip)):
                continue
            st = os.lstat(p)
            info: dict[str, Any] = {
                "type": stat.S_IFMT(st.st_mode),
                "mode": stat.S_IMODE(st.st_mode),
            }
            if owners:
                info["owner"] = (st.st_uid, st.st_gid)
            if mtimes and not stat.S_ISDIR(st.st_mode):
                info["mtime"] = int(st.st_mtime)
            if stat.S_ISLNK(st.st_mode):
                info["target"] = os.readlink(p)
                info.pop("mode")
            elif stat.S_ISREG(st.st_mode):
                info["size"] = st.st_size
                inode = (st.st_dev, st.st_ino)
                if inode not in hashes:
                    h = hashlib.sha256()
                    with open(p, "rb") as f:
                        while chunk := f.read(1 << 20):
                            h.update(chunk)
                    hashes[inode] = h.hexdigest()
                info["sha256"] = hashes[inode]
                if st.st_nlink > 1:
                    key = (st.st_dev, st.st_ino)
                    info["link_group"] = inodes.setdefault(key, rel)
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                info["rdev"] = (os.major(st.st_rdev), os.minor(st.st_rdev))
            out[rel] = info
    return out


def diff(a: dict[str, dict[str, Any]], b: dict[str, dict[str, Any]]) -> list[str]:
    """Human-readable differences between two snapshots (empty when equal)."""
    problems = []
    for k in sorted(set(a) | set(b)):
        if k not in a:
            problems.append(f"only in second: {k}")
        elif k not in b:
            problems.append(f"only in first: {k}")
        elif a[k] != b[k]:
            problems.append(f"{k}: {a[k]} != {b[k]}")
    return problems


def tar_tree(tar: Path | bytes) -> dict[str, dict[str, Any]]:
    """Describe a tar's entries the way :func:`snapshot` describes a tree: names without
    ``./`` or a trailing ``/`` (the root left out), type, mode, owner, content hash, link
    target, device numbers, xattrs, mtime (not for directories), and the hardlink group (the
    sorted names sharing the content) instead of which member is the file."""
    import io
    import tarfile

    fileobj = io.BytesIO(tar) if isinstance(tar, bytes) else None
    out: dict[str, dict[str, Any]] = {}
    links: dict[str, str] = {}
    with tarfile.open(name=None if fileobj else tar, fileobj=fileobj) as tf:
        for m in tf:
            name = m.name.removeprefix("./").rstrip("/")
            if name in ("", "."):
                continue
            if m.islnk():
                links[name] = m.linkname.removeprefix("./")
                continue
            info: dict[str, Any] = {"type": m.type, "mode": m.mode & 0o7777,
                                    "owner": (m.uid, m.gid)}
            if m.isreg():
                info["type"] = tarfile.REGTYPE
                f = tf.extractfile(m)
                assert f is not None
                info["sha256"] = hashlib.sha256(f.read()).hexdigest()
                info["size"] = m.size
            if not m.isdir():
                info["mtime"] = int(m.mtime)
            if m.issym():
                info["target"] = m.linkname
                info.pop("mode")
            if m.ischr() or m.isblk():
                info["rdev"] = (m.devmajor, m.devminor)
            info["xattrs"] = {k: v for k, v in m.pax_headers.items()
                              if k.startswith("SCHILY.xattr.")}
            out[name] = info
    groups: dict[str, list[str]] = {}
    for name, target in links.items():
        out[name] = dict(out[target])
        groups.setdefault(target, [target]).append(name)
    for members in groups.values():
        for name in members:
            out[name]["links"] = sorted(members)
    return out
