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
                h = hashlib.sha256()
                with open(p, "rb") as f:
                    while chunk := f.read(1 << 20):
                        h.update(chunk)
                info["sha256"] = h.hexdigest()
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
