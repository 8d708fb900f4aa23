"""Registry references: ``REGISTRY/REPO[:TAG|@DIGEST]``, with Docker Hub's defaults."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from layouttool.digest import Digest
from layouttool.errors import InvalidInputError

DOCKER_HUB: Final = "docker.io"
DOCKER_HUB_API: Final = "registry-1.docker.io"
_REPO_RE = re.compile(
    r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*)*"
)
_TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")


@dataclass(frozen=True, slots=True)
class RemoteRef:
    """``REGISTRY/REPO[:TAG|@DIGEST]``."""

    registry: str
    repository: str
    tag: str | None = None
    digest: Digest | None = None

    @property
    def reference(self) -> str:
        """The tag or digest to address the manifest by."""
        if self.digest is not None:
            return str(self.digest)
        return self.tag or "latest"

    def __str__(self) -> str:
        s = f"{self.registry}/{self.repository}"
        if self.digest is not None:
            return f"{s}@{self.digest}"
        return f"{s}:{self.tag or 'latest'}"

    @classmethod
    def parse(cls, value: str) -> RemoteRef:
        """Parse a registry reference; a first component without ``.``/``:`` is Docker Hub."""
        rest, digest = value, None
        if "@" in value:
            rest, _, d = value.partition("@")
            digest = Digest.parse(d, what="reference digest")
        tag = None
        slash = rest.rfind("/")
        colon = rest.rfind(":")
        if colon > slash:
            rest, tag = rest[:colon], rest[colon + 1 :]
            if not _TAG_RE.fullmatch(tag):
                raise InvalidInputError(f"invalid tag {tag!r} in {value!r}")
        first, sep, path = rest.partition("/")
        if sep and ("." in first or ":" in first or first == "localhost"):
            registry, repo = first, path
        else:
            registry, repo = DOCKER_HUB, rest
        if registry in (DOCKER_HUB, "index.docker.io") and "/" not in repo:
            repo = f"library/{repo}"
        if registry == "index.docker.io":
            registry = DOCKER_HUB
        # distribution refuses names over 255 characters (NAME_INVALID); say so before a request
        if not _REPO_RE.fullmatch(repo) or len(repo) > 255:
            raise InvalidInputError(
                f"invalid repository {repo[:80]!r} in {value[:120]!r}: lowercase letters, digits "
                "and separators, at most 255 characters, e.g. "
                "'registry.example:5000/team/app:1.0'"
            )
        return cls(registry, repo, tag, digest)


def api_host(registry: str) -> str:
    """The host[:port] that serves ``registry``'s API (Docker Hub's is not ``docker.io``)."""
    return DOCKER_HUB_API if registry == DOCKER_HUB else registry


__all__ = ["DOCKER_HUB", "DOCKER_HUB_API", "RemoteRef", "api_host"]
