"""Where a registry's credentials come from, and where ``login`` keeps them.

The files are read in the order containers/image (skopeo, podman) reads them, first match wins:

1. ``--authfile FILE`` or ``$REGISTRY_AUTH_FILE``, else ``$XDG_RUNTIME_DIR/containers/auth.json``
   (``/run/containers/UID/auth.json`` when ``XDG_RUNTIME_DIR`` is unset): the *primary* file,
   the one ``login`` writes;
2. ``$XDG_CONFIG_HOME/containers/auth.json`` (``~/.config/...``), unless a file was named in 1;
3. ``$DOCKER_CONFIG/config.json``, else ``~/.docker/config.json``;
4. ``~/.dockercfg`` (the legacy form: the file is the ``auths`` map).

Within a file, the order Docker uses: ``credHelpers[HOST]``, then ``credsStore`` (both run as
Docker credential helpers, see :mod:`~layouttool.registry.credhelper`), then ``auths``
(``auth`` = base64 ``user:password``, or ``username``/``password``, and ``identitytoken``;
keys ``HOST/REPO``..., most specific first, then the host with any scheme or path stripped,
Docker Hub's aliases included). A helper that has nothing means "go on"; one that is missing,
fails or prints garbage gives one warning naming it, and the search goes on (so a public pull
still works). Nothing found means anonymous.

A ``<token>`` user name, or an ``identitytoken``, is an OAuth2 refresh token: the token
endpoint is asked with ``grant_type=refresh_token`` (see :mod:`~layouttool.registry.auth`).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from layouttool.errors import InvalidInputError, NotFoundError
from layouttool.registry import credhelper
from layouttool.registry.reference import DOCKER_HUB

#: the key Docker (and credential helpers) use for Docker Hub
DOCKER_HUB_SERVER = "https://index.docker.io/v1/"
_HUB_ALIASES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
#: auth files larger than this are not read
_FILE_CAP = 1 << 20


@dataclass(frozen=True, slots=True)
class Credentials:
    """A user name and password, or an identity token (an OAuth2 refresh token)."""

    username: str = ""
    password: str = field(default="", repr=False)
    identity_token: str = field(default="", repr=False)
    #: where they came from, for ``-v`` (never the secret)
    source: str = ""

    @classmethod
    def of(cls, username: str, secret: str, source: str = "") -> Credentials:
        """``username``/``secret``; a ``<token>`` user name makes ``secret`` a refresh token."""
        if username == credhelper.TOKEN_USERNAME:
            return cls(identity_token=secret, source=source)
        return cls(username, secret, source=source)

    @property
    def basic(self) -> tuple[str, str] | None:
        """``(user, password)`` when these are a user name and password."""
        return (self.username, self.password) if self.password or not self.identity_token else None


@dataclass(frozen=True, slots=True)
class AuthFile:
    """An auth file and its form."""

    path: Path
    #: ``~/.dockercfg``: the whole file is the ``auths`` map
    legacy: bool = False


@dataclass(frozen=True, slots=True)
class Lookup:
    """The result of a credential search: what was found (None: anonymous), and warnings."""

    credentials: Credentials | None
    warnings: tuple[str, ...] = ()


def _home(env: Mapping[str, str]) -> Path:
    home = env.get("HOME")
    return Path(home) if home else Path.home()


def primary_auth_file(
    authfile: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
) -> Path:
    """The file ``login`` writes and ``logout`` edits (skopeo's and podman's)."""
    env = os.environ if env is None else env
    if authfile:
        return Path(authfile)
    if named := env.get("REGISTRY_AUTH_FILE"):
        return Path(named)
    if runtime := env.get("XDG_RUNTIME_DIR"):
        return Path(runtime) / "containers" / "auth.json"
    return Path(f"/run/containers/{os.getuid()}/auth.json")


def auth_files(
    authfile: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
) -> list[AuthFile]:
    """The files searched for credentials, in order (see the module's docstring)."""
    env = os.environ if env is None else env
    home = _home(env)
    files = [AuthFile(primary_auth_file(authfile, env))]
    if not authfile and not env.get("REGISTRY_AUTH_FILE"):
        config_home = env.get("XDG_CONFIG_HOME")
        base = Path(config_home) if config_home else home / ".config"
        files.append(AuthFile(base / "containers" / "auth.json"))
    docker_config = env.get("DOCKER_CONFIG")
    files.append(
        AuthFile(
            Path(docker_config) / "config.json" if docker_config else home / ".docker/config.json"
        )
    )
    files.append(AuthFile(home / ".dockercfg", legacy=True))
    return files


def normalize_key(key: str) -> str:
    """An ``auths`` or ``credHelpers`` key as a host: no scheme, no path; Docker Hub as one."""
    host = key.removeprefix("https://").removeprefix("http://").split("/", 1)[0].lower()
    return DOCKER_HUB if host in _HUB_ALIASES else host


def host_key(key: str) -> str | None:
    """The host a registry-wide key names (``https://index.docker.io/v1/`` included), or None
    for a per-repository key such as ``quay.io/team``."""
    stripped = key.removeprefix("https://").removeprefix("http://").rstrip("/")
    host, _, path = stripped.partition("/")
    if path and path not in ("v1", "v2"):
        return None
    return normalize_key(host)


def helper_server(registry: str) -> str:
    """What a credential helper is given for ``registry``: the bare host, Hub's URL for Hub."""
    return DOCKER_HUB_SERVER if normalize_key(registry) == DOCKER_HUB else registry


def _read(f: AuthFile, warnings: list[str]) -> dict[str, Any] | None:
    try:
        with open(f.path, "rb") as fh:
            data = fh.read(_FILE_CAP + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        warnings.append(f"warning: cannot read auth file {f.path} ({exc.strerror}); skipped")
        return None
    if len(data) > _FILE_CAP:
        warnings.append(f"warning: auth file {f.path} is over 1 MiB; skipped")
        return None
    try:
        doc = json.loads(data) if data.strip() else {}
    except ValueError:
        warnings.append(f"warning: auth file {f.path} is not valid JSON; skipped")
        return None
    if not isinstance(doc, dict):
        warnings.append(f"warning: auth file {f.path} is not a JSON object; skipped")
        return None
    return {"auths": doc} if f.legacy else doc


def _entry_credentials(entry: Any, source: str) -> Credentials | None:
    """The credentials of one ``auths`` entry (None when it holds none, like Docker's ``{}``)."""
    if not isinstance(entry, dict):
        return None
    user = password = ""
    auth = entry.get("auth")
    if isinstance(auth, str) and auth:
        try:
            decoded = base64.b64decode(auth, validate=False).decode()
        except (binascii.Error, ValueError, UnicodeDecodeError):
            decoded = ""
        user, sep, password = decoded.partition(":")
        if not sep:
            user = password = ""  # as Docker: an entry that does not decode is skipped
        password = password.strip("\x00")
    else:
        u, p = entry.get("username"), entry.get("password")
        user = u if isinstance(u, str) else ""
        password = p if isinstance(p, str) else ""
    token = entry.get("identitytoken")
    if isinstance(token, str) and token:
        return Credentials(user, "", token, source)
    if user == credhelper.TOKEN_USERNAME and password:
        return Credentials(identity_token=password, source=source)
    if user or password:
        return Credentials(user, password, source=source)
    return None


def _auth_keys(registry: str, repository: str | None) -> list[str]:
    """``HOST/NS/REPO``, ``HOST/NS``, ... down to the host: containers' per-repository keys."""
    keys = []
    if repository:
        parts = repository.split("/")
        keys = [f"{registry}/{'/'.join(parts[:i])}" for i in range(len(parts), 0, -1)]
    return [*keys, registry]


def _from_helper(
    name: str, registry: str, why: str, warnings: list[str], env: Mapping[str, str]
) -> Credentials | None:
    try:
        got = credhelper.get(name, helper_server(registry), dict(env))
    except credhelper.HelperFailed as exc:
        warnings.append(f"warning: {exc} ({why}); going on without its credentials")
        return None
    if got is None:
        return None
    return Credentials.of(got.username, got.secret, f"credential helper {credhelper.program(name)}")


def _search_file(
    f: AuthFile,
    doc: dict[str, Any],
    registry: str,
    repository: str | None,
    warnings: list[str],
    env: Mapping[str, str],
) -> Credentials | None:
    host = normalize_key(registry)
    helpers = doc.get("credHelpers")
    if isinstance(helpers, dict):
        for key, name in helpers.items():
            if isinstance(name, str) and name and normalize_key(key) == host:
                found = _from_helper(name, registry, f"credHelpers in {f.path}", warnings, env)
                if found is not None:
                    return found
                break
    store = doc.get("credsStore")
    if isinstance(store, str) and store:
        found = _from_helper(store, registry, f"credsStore in {f.path}", warnings, env)
        if found is not None:
            return found
    auths = doc.get("auths")
    if not isinstance(auths, dict):
        return None
    source = f"auth file {f.path}"
    for key in _auth_keys(registry, repository):
        if key in auths and (found := _entry_credentials(auths[key], source)) is not None:
            return found
    for key, entry in auths.items():
        if isinstance(key, str) and host_key(key) == host:
            found = _entry_credentials(entry, source)
            if found is not None:
                return found
    return None


def lookup(
    registry: str,
    repository: str | None = None,
    *,
    authfile: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> Lookup:
    """Search the auth files (and the helpers they name) for ``registry``'s credentials."""
    env = os.environ if env is None else env
    warnings: list[str] = []
    for f in auth_files(authfile, env):
        doc = _read(f, warnings)
        if doc is None:
            continue
        found = _search_file(f, doc, registry, repository, warnings, env)
        if found is not None:
            return Lookup(found, tuple(warnings))
    return Lookup(None, tuple(warnings))


def find_credentials(registry: str) -> tuple[str, str] | None:
    """``(user, password)`` for ``registry`` from the auth files (helpers included)."""
    found = lookup(registry).credentials
    return found.basic if found is not None else None


# ---------------------------------------------------------------------------- login / logout
def _load_for_edit(path: Path) -> dict[str, Any]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise InvalidInputError(f"auth file {path}: cannot read it ({exc.strerror})") from exc
    try:
        doc = json.loads(data) if data.strip() else {}
    except ValueError:
        raise InvalidInputError(
            f"auth file {path} is not valid JSON; fix or remove it before logging in"
        ) from None
    if not isinstance(doc, dict):
        raise InvalidInputError(f"auth file {path} is not a JSON object")
    return doc


def _save(path: Path, doc: dict[str, Any]) -> None:
    from layouttool.store import write_atomically  # only login and logout write a file

    target = path.resolve() if path.is_symlink() else path
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_atomically(target, (json.dumps(doc, indent="\t") + "\n").encode(), mode=0o600)


def _configured_helper(doc: dict[str, Any], registry: str) -> tuple[str, str] | None:
    """``(helper, why)`` when ``doc`` sends ``registry``'s credentials to a helper."""
    helpers = doc.get("credHelpers")
    if isinstance(helpers, dict):
        for key, name in helpers.items():
            if isinstance(name, str) and name and normalize_key(key) == normalize_key(registry):
                return name, "credHelpers"
    store = doc.get("credsStore")
    if isinstance(store, str) and store:
        return store, "credsStore"
    return None


def store_credentials(
    registry: str,
    username: str,
    password: str,
    *,
    authfile: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> str:
    """Keep credentials for ``registry`` as ``skopeo login`` does; returns where.

    Through the helper the primary file names for it (``credHelpers``, ``credsStore``), else in
    that file's ``auths``, written 0600 through a temp file and a rename.
    """
    env = os.environ if env is None else env
    path = primary_auth_file(authfile, env)
    doc = _load_for_edit(path)
    helper = _configured_helper(doc, registry)
    if helper is not None:
        try:
            credhelper.store(helper[0], helper_server(registry), username, password, dict(env))
        except credhelper.HelperFailed as exc:
            raise InvalidInputError(f"{exc} ({helper[1]} in {path}); nothing was stored") from None
        return f"credential helper {credhelper.program(helper[0])} ({helper[1]} in {path})"
    auths = doc.get("auths")
    if not isinstance(auths, dict):
        auths = doc["auths"] = {}
    auths[registry] = {"auth": base64.b64encode(f"{username}:{password}".encode()).decode()}
    _save(path, doc)
    return str(path)


def erase_credentials(
    registry: str,
    *,
    authfile: str | os.PathLike[str] | None = None,
    env: Mapping[str, str] | None = None,
) -> str:
    """Forget ``registry``'s credentials where :func:`store_credentials` keeps them.

    Raises :class:`NotFoundError` when there were none there (naming the file that holds some
    elsewhere, if any: ``logout`` does not edit another tool's file).
    """
    env = os.environ if env is None else env
    path = primary_auth_file(authfile, env)
    doc = _load_for_edit(path)
    where: list[str] = []
    helper = _configured_helper(doc, registry)
    if helper is not None:
        try:
            if credhelper.erase(helper[0], helper_server(registry), dict(env)):
                where.append(f"credential helper {credhelper.program(helper[0])}")
        except credhelper.HelperFailed as exc:
            raise InvalidInputError(f"{exc} ({helper[1]} in {path})") from None
    auths = doc.get("auths")
    if isinstance(auths, dict):
        gone = [
            k
            for k in auths
            if k == registry or ("/" not in registry and host_key(k) == normalize_key(registry))
        ]
        for k in gone:
            del auths[k]
        if gone:
            _save(path, doc)
            where.append(str(path))
    if where:
        return ", ".join(where)
    elsewhere = lookup(registry, authfile=authfile, env=env).credentials
    hint = ""
    if elsewhere is not None and elsewhere.source:
        hint = f"; the credentials in use come from {elsewhere.source} (remove them there)"
    raise NotFoundError(f"not logged in to {registry} in {path}{hint}")


__all__ = [
    "DOCKER_HUB_SERVER",
    "AuthFile",
    "Credentials",
    "Lookup",
    "auth_files",
    "erase_credentials",
    "find_credentials",
    "helper_server",
    "host_key",
    "lookup",
    "normalize_key",
    "primary_auth_file",
    "store_credentials",
]
