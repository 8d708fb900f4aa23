"""Edits of image documents as raw JSON: what ``new``, ``append``, ``config`` and ``repack``
change in a config or a manifest.

Pure functions over parsed JSON objects: each returns a new object and never changes its
input; keys keep their order (a new key goes at the end) and every field we do not know
survives. The caller serialises the result (:func:`layouttool.model.dump_json`) and stores it.

:class:`ConfigEdit` holds the options of ``layouttool config`` as the user typed them, and
:func:`edit_config` gives them the meanings of the Dockerfile instructions (``umoci config``
agrees on every one of them):

* ``--entrypoint``/``--cmd``: a JSON array of strings is used as it is; any other string is
  the shell form ``["/bin/sh", "-c", STRING]``; ``[]`` removes the field. A new entrypoint
  clears an inherited ``Cmd`` unless ``--cmd`` is given too (a Dockerfile's ``ENTRYPOINT``
  does), and a note says so.
* ``--env K=V`` replaces ``K`` where it is (else appends); ``$VAR`` and ``${VAR}`` in ``V``
  expand from the environment the image had before this edit (as ``ENV`` does; ``\\$`` is a
  literal ``$``). ``--unset-env K`` removes it.
* ``--label K=V`` / ``--unset-label K``; ``--expose PORT[/tcp|udp|sctp]``; ``--volume /PATH``;
  ``--workdir`` (a relative one is joined to the current working directory, as ``WORKDIR``
  does); ``--user``, ``--stop-signal``, ``--author`` verbatim (an empty value removes the
  field); ``--created`` an RFC 3339 time; ``--os``/``--arch``/``--variant`` the platform
  fields (an empty variant removes it).

Every edit adds one ``history`` entry (``empty_layer: true``) that says what was done.
"""

from __future__ import annotations

import json
import posixpath
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Any, Final

from layouttool.digest import Digest
from layouttool.errors import InvalidInputError
from layouttool.model import Descriptor, Platform

__all__ = [
    "ConfigEdit",
    "EditedConfig",
    "add_layer",
    "check_created",
    "edit_config",
    "history_entry",
    "manifest_with",
    "new_config",
    "parse_command",
    "patch_descriptor",
    "rfc3339",
]

#: the shell of the Dockerfile's shell form
SHELL: Final = ("/bin/sh", "-c")
_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:[Zz]|[+-]\d{2}:\d{2})"
)
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_ENV_REF = re.compile(r"\\\$|\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")
_PROTOCOLS: Final = ("tcp", "udp", "sctp")
#: note on a history entry added for a layer that had none (so entries and layers line up)
_PADDING_COMMENT: Final = "added by layouttool: this layer had no history entry"


def rfc3339(seconds: int) -> str:
    """``1747699200`` -> ``2025-05-20T00:00:00Z``."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def patch_descriptor(obj: Mapping[str, Any], new: Descriptor) -> dict[str, Any]:
    """The descriptor JSON ``obj`` pointing at ``new``; every other field kept as it was."""
    out = dict(obj)
    out["mediaType"] = new.media_type
    out["digest"] = str(new.digest)
    out["size"] = new.size
    return out


def new_config(platform: Platform, created: str) -> dict[str, Any]:
    """The config of an empty image: no layers, no history, an empty runtime config."""
    doc: dict[str, Any] = {
        "created": created,
        "architecture": platform.architecture,
        "os": platform.os,
    }
    if platform.variant:
        doc["variant"] = platform.variant
    doc["config"] = {}
    doc["rootfs"] = {"type": "layers", "diff_ids": []}
    return doc


def history_entry(
    created: str,
    created_by: str,
    *,
    comment: str | None = None,
    author: str | None = None,
    empty_layer: bool = False,
) -> dict[str, Any]:
    """A ``history`` item (config.md), fields in Docker's order."""
    h: dict[str, Any] = {"created": created, "created_by": created_by}
    if author:
        h["author"] = author
    if comment:
        h["comment"] = comment
    if empty_layer:
        h["empty_layer"] = True
    return h


def _obj(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise InvalidInputError(f"config: {what} must be a JSON object")
    return dict(value)


def _list(value: Any, what: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidInputError(f"config: {what} must be a JSON array")
    return list(value)


def add_layer(
    doc: Mapping[str, Any], diff_id: Digest, history: dict[str, Any]
) -> dict[str, Any]:
    """``doc`` with one more layer: its diff_id appended to ``rootfs.diff_ids``, ``history``
    appended to the history, and ``created`` set to the history entry's time.

    When the config lists fewer (non-empty) history entries than layers, entries are added for
    the layers that had none first, so that the new entry describes the new layer.
    """
    out = dict(doc)
    rootfs = _obj(out.get("rootfs"), "rootfs")
    ids = _list(rootfs.get("diff_ids"), "rootfs.diff_ids")
    hist = _list(out.get("history"), "history")
    described = sum(1 for h in hist if not (isinstance(h, dict) and h.get("empty_layer")))
    for _ in range(len(ids) - described):
        hist.append({"created_by": "", "comment": _PADDING_COMMENT})
    ids.append(str(diff_id))
    rootfs.setdefault("type", "layers")
    rootfs["diff_ids"] = ids
    hist.append(history)
    out["created"] = history["created"]
    out["rootfs"] = rootfs
    out["history"] = hist
    return out


def manifest_with(
    doc: Mapping[str, Any],
    *,
    config: Descriptor,
    add: tuple[Descriptor, ...] = (),
    layers: tuple[Descriptor, ...] | None = None,
) -> dict[str, Any]:
    """The manifest ``doc`` pointing at a new ``config`` and with the layers ``add`` appended,
    or its layers replaced by ``layers`` (``flatten``); everything else, annotations and
    ``subject`` included, kept."""
    out = dict(doc)
    out["config"] = patch_descriptor(_obj(out.get("config"), "manifest config"), config)
    if layers is not None:
        out["layers"] = [d.to_json() for d in (*layers, *add)]
    elif add or "layers" in out:
        out["layers"] = [*_list(out.get("layers"), "manifest layers"),
                         *(d.to_json() for d in add)]
    return out


# ---------------------------------------------------------------------------------- config

@dataclass(frozen=True, slots=True)
class ConfigEdit:
    """The options of ``layouttool config``, as given (None or empty: not given)."""

    entrypoint: str | None = None
    cmd: str | None = None
    env: tuple[str, ...] = ()
    unset_env: tuple[str, ...] = ()
    labels: tuple[str, ...] = ()
    unset_labels: tuple[str, ...] = ()
    workdir: str | None = None
    user: str | None = None
    expose: tuple[str, ...] = ()
    volumes: tuple[str, ...] = ()
    stop_signal: str | None = None
    author: str | None = None
    created: str | None = None
    os: str | None = None
    arch: str | None = None
    variant: str | None = None
    history_comment: str | None = None

    def is_empty(self) -> bool:
        """True when no option that changes the image was given."""
        return all(
            getattr(self, f.name) in (None, ())
            for f in fields(self)
            if f.name != "history_comment"
        )

    def command_line(self) -> str:
        """The edit as a ``layouttool config`` command line (the history's ``created_by``)."""
        words = ["layouttool", "config"]
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "history_comment" or value in (None, ()):
                continue
            flag = "--" + {"labels": "label", "unset_labels": "unset-label",
                           "volumes": "volume"}.get(f.name, f.name).replace("_", "-")
            for v in value if isinstance(value, tuple) else (value,):
                words += [flag, shlex.quote(v)]
        return " ".join(words)


@dataclass(frozen=True, slots=True)
class EditedConfig:
    """The result of :func:`edit_config`."""

    doc: dict[str, Any]
    #: the fields whose value changed (``Entrypoint``, ``Env``, ``architecture``...)
    changed: tuple[str, ...]
    notes: tuple[str, ...]


def parse_command(value: str, option: str) -> list[str]:
    """``--entrypoint``/``--cmd``: a JSON array of strings as is, else the shell form."""
    text = value.strip()
    if text.startswith("["):
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = None  # not JSON: the shell form, as a Dockerfile reads it
        if isinstance(parsed, list):
            if not all(isinstance(a, str) for a in parsed):
                raise InvalidInputError(f"{option} {value!r}: a JSON array must hold strings")
            return parsed
    return [*SHELL, value]


def _pair(value: str, option: str, *, name_re: re.Pattern[str] | None = None) -> tuple[str, str]:
    key, sep, val = value.partition("=")
    if not sep or not key:
        raise InvalidInputError(f"{option} {value!r}: expected KEY=VALUE")
    if name_re is not None and not name_re.fullmatch(key):
        raise InvalidInputError(f"{option} {value!r}: {key!r} is not a variable name")
    return key, val


def _expand(value: str, env: Mapping[str, str]) -> str:
    def sub(m: re.Match[str]) -> str:
        if m.group(0) == "\\$":
            return "$"
        return env.get(m.group(1) or m.group(2), "")

    return _ENV_REF.sub(sub, value)


def _port(value: str) -> str:
    port, _, proto = value.partition("/")
    proto = (proto or "tcp").lower()
    if proto not in _PROTOCOLS or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise InvalidInputError(
            f"--expose {value!r}: expected PORT[/tcp|udp|sctp] with PORT in 1-65535"
        )
    return f"{int(port)}/{proto}"


def check_created(value: str) -> str:
    """``value`` if it is an RFC 3339 date-time, else InvalidInputError."""
    if not _RFC3339.fullmatch(value):
        raise InvalidInputError(
            f"--created {value!r}: expected an RFC 3339 time such as 2025-05-20T00:00:00Z"
        )
    return value


class _Editor:
    def __init__(self, doc: Mapping[str, Any]) -> None:
        self.doc = dict(doc)
        self.cfg = _obj(self.doc.get("config"), "config")
        self.changed: list[str] = []
        self.notes: list[str] = []

    def set_top(self, key: str, value: str | None) -> None:
        """Set (or, for an empty value, remove) a top-level field."""
        old = self.doc.get(key)
        if value:
            self.doc[key] = value
        else:
            self.doc.pop(key, None)
        if self.doc.get(key) != old:
            self.changed.append(key)

    def set_cfg(self, key: str, value: Any) -> None:
        """Set (or, for None, remove) a field of the runtime config."""
        old = self.cfg.get(key)
        if value is None:
            self.cfg.pop(key, None)
        else:
            self.cfg[key] = value
        if self.cfg.get(key) != old:
            self.changed.append(key)


def _env_edit(ed: _Editor, edit: ConfigEdit) -> None:
    env = [e for e in _list(ed.cfg.get("Env"), "config.Env") if isinstance(e, str)]
    before = {e.partition("=")[0]: e.partition("=")[2] for e in env}
    for key in edit.unset_env:
        if not any(e.split("=", 1)[0] == key for e in env):
            ed.notes.append(f"--unset-env {key}: not set")
        env = [e for e in env if e.split("=", 1)[0] != key]
    for item in edit.env:
        key, val = _pair(item, "--env", name_re=_ENV_NAME)
        entry = f"{key}={_expand(val, before)}"
        for i, e in enumerate(env):
            if e.split("=", 1)[0] == key:
                env[i] = entry
                break
        else:
            env.append(entry)
    ed.set_cfg("Env", env or None)


def _labels_edit(ed: _Editor, edit: ConfigEdit) -> None:
    labels = _obj(ed.cfg.get("Labels"), "config.Labels")
    for key in edit.unset_labels:
        if labels.pop(key, None) is None:
            ed.notes.append(f"--unset-label {key}: not set")
    for item in edit.labels:
        key, val = _pair(item, "--label")
        labels[key] = val
    ed.set_cfg("Labels", labels or None)


def _set_members(ed: _Editor, key: str, values: list[str]) -> None:
    """Add ``values`` to a set-like object field (``ExposedPorts``, ``Volumes``)."""
    obj = _obj(ed.cfg.get(key), f"config.{key}")
    for v in values:
        obj.setdefault(v, {})
    ed.set_cfg(key, obj)


def edit_config(doc: Mapping[str, Any], edit: ConfigEdit, *, created: str) -> EditedConfig:
    """Apply ``edit`` to the image config ``doc`` (a Docker or OCI config).

    ``created`` is the time of the edit (``--created`` when given, which the caller passes
    here too): it becomes the config's ``created`` and the new history entry's.
    """
    ed = _Editor(doc)
    if edit.entrypoint is not None:
        ep = parse_command(edit.entrypoint, "--entrypoint")
        ed.set_cfg("Entrypoint", ep or None)
        if edit.cmd is None and ed.cfg.get("Cmd") is not None:
            old = json.dumps(ed.cfg["Cmd"])
            ed.set_cfg("Cmd", None)
            ed.notes.append(
                f"Cmd {old} cleared: a new entrypoint drops the inherited Cmd, as in a "
                "Dockerfile; give --cmd to keep one"
            )
    if edit.cmd is not None:
        ed.set_cfg("Cmd", parse_command(edit.cmd, "--cmd") or None)
    if edit.env or edit.unset_env:
        _env_edit(ed, edit)
    if edit.labels or edit.unset_labels:
        _labels_edit(ed, edit)
    if edit.workdir is not None:
        wd = edit.workdir
        if wd and not wd.startswith("/"):
            wd = posixpath.join(str(ed.cfg.get("WorkingDir") or "/"), wd)
        ed.set_cfg("WorkingDir", posixpath.normpath(wd) if wd else None)
    if edit.user is not None:
        ed.set_cfg("User", edit.user or None)
    if edit.expose:
        _set_members(ed, "ExposedPorts", [_port(p) for p in edit.expose])
    if edit.volumes:
        for v in edit.volumes:
            if not v.startswith("/"):
                raise InvalidInputError(f"--volume {v!r}: expected an absolute path")
        _set_members(ed, "Volumes", list(edit.volumes))
    if edit.stop_signal is not None:
        ed.set_cfg("StopSignal", edit.stop_signal or None)
    if edit.author is not None:
        ed.set_top("author", edit.author)
    if edit.os is not None:
        if not edit.os:
            raise InvalidInputError("--os: the operating system cannot be empty")
        ed.set_top("os", edit.os)
    if edit.arch is not None:
        if not edit.arch:
            raise InvalidInputError("--arch: the architecture cannot be empty")
        ed.set_top("architecture", edit.arch)
    if edit.variant is not None:
        ed.set_top("variant", edit.variant)
    if edit.created is not None:
        check_created(edit.created)
        ed.changed.append("created")
    out = ed.doc
    if ed.cfg or "config" in out:
        out["config"] = ed.cfg
    hist = _list(out.get("history"), "history")
    hist.append(
        history_entry(created, edit.command_line(), comment=edit.history_comment,
                      author=edit.author or None, empty_layer=True)
    )
    out["history"] = hist
    if out.get("created") != created:
        out["created"] = created
    return EditedConfig(out, tuple(dict.fromkeys(ed.changed)), tuple(ed.notes))
