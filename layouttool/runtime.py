"""Convert an image config into an OCI runtime-spec ``config.json`` (image-spec conversion.md).

:func:`runtime_config` builds the "default generated runtime configuration": the fields the
image-spec names are copied or parsed from the image config, and everything else comes from a
minimal Linux skeleton like the one ``umoci unpack`` writes (``runc spec``'s defaults: proc,
dev, devpts, shm, mqueue, sysfs mounts; pid/network/ipc/uts/mount namespaces; masked and
read-only ``/proc`` paths; ``root.path = "rootfs"``, writable). With ``rootless=True`` the
skeleton is ``runc spec --rootless``'s: a user namespace mapping container root to the calling
user, no network namespace, ``/sys`` bind-mounted, no ``gid=5`` on devpts.

Decisions where the spec is silent:

* ``process.args`` is ``Entrypoint + Cmd``; when both are missing it is ``[]`` (the runtime, not
  the converter, decides whether that can run).
* ``process.cwd`` is ``WorkingDir`` or ``/``; a relative ``WorkingDir`` is taken from ``/`` (as
  Docker does), since the runtime spec requires an absolute ``cwd``.
* ``PATH`` is added to ``process.env`` only when the image sets no ``PATH`` (the spec allows
  added names, never changed ones).
* With no ``User`` the process runs as ``0:0``. A numeric user without a group takes its
  primary group from the rootfs ``/etc/passwd`` when listed there, else gid 0 (runc's rule).
  A user *name* (or group name) is looked up in the rootfs ``/etc/passwd`` / ``/etc/group``;
  an unknown one is :class:`~layouttool.errors.InvalidInputError` (the spec's MUST).
  ``additionalGids`` is set only for a user name without an explicit group.
* ``/etc/passwd`` and ``/etc/group`` are read *inside* the rootfs: every component is opened
  with ``O_NOFOLLOW`` relative to the rootfs, symlinks resolve with chroot semantics (absolute
  targets and ``..`` stay inside), and only regular files of at most 16 MiB are read.
* Annotations: the implicit ``org.opencontainers.image.*`` values (``os.features`` joined with
  ``,``), ``exposedPorts`` (sorted, comma-joined), then every ``Config.Labels`` entry, which
  wins on conflict.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from layouttool import errors

__all__ = ["DEFAULT_PATH", "OCI_VERSION", "runtime_config"]

OCI_VERSION = "1.0.2"
DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_MAX_DB_SIZE = 16 << 20
_MAX_HOPS = 255
_PREFIX = "org.opencontainers.image."

# top-level image config field -> annotation suffix
_IMPLICIT = {
    "os": "os",
    "architecture": "architecture",
    "variant": "variant",
    "os.version": "os.version",
    "os.features": "os.features",
    "author": "author",
    "created": "created",
}

_MASKED_PATHS = [
    "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware",
    "/proc/scsi",
]
_READONLY_PATHS = [
    "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
]
_CAPS = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]


def runtime_config(
    image_config: Mapping[str, Any], rootfs: Path, *, rootless: bool = False
) -> dict[str, Any]:
    """Return the runtime-spec ``config.json`` (as a dict) for an image config.

    ``image_config`` is the parsed Docker or OCI image config JSON; ``rootfs`` is the unpacked
    root filesystem, consulted only to resolve user and group names. Raises
    :class:`~layouttool.errors.InvalidInputError` for a malformed config or an unknown user or
    group.
    """
    if not isinstance(image_config, Mapping):
        raise errors.InvalidInputError("image config: not a JSON object")
    cfg = image_config.get("config")
    if cfg is None:
        cfg = image_config.get("Config")
    if cfg is None:
        cfg = {}
    if not isinstance(cfg, Mapping):
        raise errors.InvalidInputError("image config: 'config' is not an object")

    entrypoint = _str_list(cfg, "Entrypoint")
    cmd = _str_list(cfg, "Cmd")
    env = _str_list(cfg, "Env")
    if not any(e.split("=", 1)[0] == "PATH" for e in env):
        env.append(DEFAULT_PATH)
    workdir = _opt_str(cfg, "WorkingDir") or "/"
    if not workdir.startswith("/"):
        workdir = "/" + workdir
    user = _resolve_user(_opt_str(cfg, "User") or "", rootfs)

    spec = _skeleton(rootless)
    spec["process"].update(args=entrypoint + cmd, env=env, cwd=workdir, user=user)
    spec["annotations"] = _annotations(image_config, cfg)
    return spec


# -- fields ---------------------------------------------------------------------------------


def _str_list(cfg: Mapping[str, Any], key: str) -> list[str]:
    value = cfg.get(key)
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise errors.InvalidInputError(f"image config: config.{key} is not a list of strings")
    return list(value)


def _opt_str(cfg: Mapping[str, Any], key: str) -> str | None:
    value = cfg.get(key)
    if value is not None and not isinstance(value, str):
        raise errors.InvalidInputError(f"image config: {key} is not a string")
    return value


def _annotations(image: Mapping[str, Any], cfg: Mapping[str, Any]) -> dict[str, str]:
    out: dict[str, str] = {}
    for field, suffix in _IMPLICIT.items():
        value = image.get(field)
        if value is None:
            continue
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            value = ",".join(value)
        if not isinstance(value, str):
            raise errors.InvalidInputError(f"image config: {field} is not a string")
        out[_PREFIX + suffix] = value
    stop = _opt_str(cfg, "StopSignal")
    if stop is not None:
        out[_PREFIX + "stopSignal"] = stop
    ports = cfg.get("ExposedPorts")
    if isinstance(ports, Mapping) and ports:
        out[_PREFIX + "exposedPorts"] = ",".join(sorted(str(p) for p in ports))
    labels = cfg.get("Labels") or {}
    if not isinstance(labels, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in labels.items()
    ):
        raise errors.InvalidInputError("image config: config.Labels is not a string map")
    out.update(labels)  # explicit labels take precedence (conversion.md, Annotations)
    return out


def _skeleton(rootless: bool) -> dict[str, Any]:
    devpts_opts = ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]
    if not rootless:
        devpts_opts.append("gid=5")
    sys_mount: dict[str, Any] = (
        {"destination": "/sys", "type": "none", "source": "/sys",
         "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]}
        if rootless else
        {"destination": "/sys", "type": "sysfs", "source": "sysfs",
         "options": ["nosuid", "noexec", "nodev", "ro"]}
    )
    namespaces = [{"type": t} for t in ("pid", "ipc", "uts", "mount")]
    linux: dict[str, Any] = {
        "namespaces": namespaces,
        "maskedPaths": list(_MASKED_PATHS),
        "readonlyPaths": list(_READONLY_PATHS),
    }
    if rootless:
        namespaces.append({"type": "user"})
        linux["uidMappings"] = [{"containerID": 0, "hostID": os.geteuid(), "size": 1}]
        linux["gidMappings"] = [{"containerID": 0, "hostID": os.getegid(), "size": 1}]
    else:
        namespaces.insert(1, {"type": "network"})
        linux["resources"] = {"devices": [{"allow": False, "access": "rwm"}]}
    return {
        "ociVersion": OCI_VERSION,
        "process": {
            "terminal": False,
            "user": {"uid": 0, "gid": 0},
            "args": [],
            "env": [],
            "cwd": "/",
            "capabilities": {k: list(_CAPS) for k in ("bounding", "effective", "permitted")},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": False},
        "hostname": "layouttool",
        "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": devpts_opts},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
            {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
             "options": ["nosuid", "noexec", "nodev"]},
            sys_mount,
        ],
        "linux": linux,
    }


# -- users ----------------------------------------------------------------------------------


def _resolve_user(spec: str, rootfs: Path) -> dict[str, Any]:
    if not spec:
        return {"uid": 0, "gid": 0}
    user, sep, group = spec.partition(":")
    if not user or (sep and not group):
        raise errors.InvalidInputError(f"image config: invalid User {spec!r}")
    result: dict[str, Any] = {}
    passwd: list[list[str]] | None = None

    def passwd_db() -> list[list[str]]:
        nonlocal passwd
        if passwd is None:
            passwd = _read_db(rootfs, "etc/passwd")
        return passwd

    if user.isdigit():
        uid = int(user)
        entry = next((e for e in passwd_db() if len(e) > 3 and e[2] == user), None)
        primary = int(entry[3]) if entry is not None and entry[3].isdigit() else 0
    else:
        entry = next((e for e in passwd_db() if len(e) > 3 and e[0] == user), None)
        if entry is None or not entry[2].isdigit() or not entry[3].isdigit():
            raise errors.InvalidInputError(
                f"image config: User {user!r} is not in the image's /etc/passwd"
            )
        uid, primary = int(entry[2]), int(entry[3])
    result["uid"] = uid

    if sep:
        if group.isdigit():
            result["gid"] = int(group)
        else:
            gentry = next((e for e in _read_db(rootfs, "etc/group")
                           if len(e) > 2 and e[0] == group), None)
            if gentry is None or not gentry[2].isdigit():
                raise errors.InvalidInputError(
                    f"image config: group {group!r} is not in the image's /etc/group"
                )
            result["gid"] = int(gentry[2])
    else:
        result["gid"] = primary
        if not user.isdigit():
            extra = sorted({int(e[2]) for e in _read_db(rootfs, "etc/group")
                            if len(e) > 3 and e[2].isdigit() and user in e[3].split(",")})
            if extra:
                result["additionalGids"] = extra
    return result


def _read_db(rootfs: Path, rel: str) -> list[list[str]]:
    """Parse a colon-separated database (passwd, group) from inside the rootfs."""
    data = _read_in_root(rootfs, rel)
    if data is None:
        return []
    rows = []
    for line in data.decode("utf-8", "replace").splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            rows.append(line.split(":"))
    return rows


def _read_in_root(rootfs: Path, rel: str) -> bytes | None:
    """Read a regular file at ``rel`` resolved inside ``rootfs``; None when it is missing."""
    try:
        root_fd = os.open(rootfs, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        raise errors.from_oserror(exc, "runtime config: open rootfs", rootfs) from exc
    fds = [root_fd]  # fds[i] is the directory at depth i
    try:
        pending = list(reversed(rel.split("/")))
        hops = 0
        while pending:
            comp = pending.pop()
            if comp in ("", "."):
                continue
            if comp == "..":
                if len(fds) > 1:
                    os.close(fds.pop())
                continue
            try:
                st = os.stat(comp, dir_fd=fds[-1], follow_symlinks=False)
            except (FileNotFoundError, NotADirectoryError):
                return None
            if stat.S_ISLNK(st.st_mode):
                hops += 1
                if hops > _MAX_HOPS:
                    raise errors.UnsafeInputError(f"runtime config: symlink loop reading /{rel}")
                target = os.readlink(comp, dir_fd=fds[-1])
                if target.startswith("/"):
                    while len(fds) > 1:
                        os.close(fds.pop())
                pending.extend(reversed(target.split("/")))
                continue
            if pending:
                if not stat.S_ISDIR(st.st_mode):
                    return None
                fds.append(os.open(comp, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW
                                   | os.O_CLOEXEC, dir_fd=fds[-1]))
                continue
            if not stat.S_ISREG(st.st_mode):
                return None
            fd = os.open(comp, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC,
                         dir_fd=fds[-1])
            with os.fdopen(fd, "rb") as fh:
                if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                    return None
                data = fh.read(_MAX_DB_SIZE + 1)
            if len(data) > _MAX_DB_SIZE:
                raise errors.InvalidInputError(f"runtime config: /{rel} is larger than 16 MiB")
            return data
        return None
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            return None
        raise errors.from_oserror(exc, "runtime config: read", f"/{rel}") from exc
    finally:
        for fd in fds:
            os.close(fd)

