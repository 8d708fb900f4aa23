"""A small client of the OCI distribution API (registries: distribution, Docker Hub, GHCR, zot...).

Each module owns one thing:

* :mod:`~layouttool.registry.reference`: ``REGISTRY/REPO[:TAG|@DIGEST]`` references;
* :mod:`~layouttool.registry.credentials`: where a registry's credentials come from (auth
  files, in containers' and Docker's order) and where ``login`` keeps them;
* :mod:`~layouttool.registry.credhelper`: the Docker credential-helper protocol;
* :mod:`~layouttool.registry.tls`: the certificate directory, the TLS context, TLS errors;
* :mod:`~layouttool.registry.proxy`: ``HTTPS_PROXY``/``HTTP_PROXY``/``NO_PROXY``;
* :mod:`~layouttool.registry.transport`: HTTP connections (direct, or through a proxy),
  retries, ``Location`` resolution;
* :mod:`~layouttool.registry.auth`: answering Basic and Bearer challenges, the token cache;
* :mod:`~layouttool.registry.client`: the distribution API (manifests, blobs, uploads, mounts,
  the referrers API);
* :mod:`~layouttool.registry.referrers`: referrers through the API or the fallback tag;
* :mod:`~layouttool.registry.errors`: the errors, and how registry text enters a message.

Only the registry commands import this package (``layouttool ls`` never pays for it).
"""

from __future__ import annotations

from layouttool.registry.auth import parse_challenge
from layouttool.registry.client import Client
from layouttool.registry.credentials import find_credentials
from layouttool.registry.errors import (
    AuthError,
    NotFoundRegistryError,
    RegistryError,
    TransientError,
)
from layouttool.registry.reference import DOCKER_HUB, DOCKER_HUB_API, RemoteRef
from layouttool.registry.transport import Response, retry_after

__all__ = [
    "DOCKER_HUB",
    "DOCKER_HUB_API",
    "AuthError",
    "Client",
    "NotFoundRegistryError",
    "RegistryError",
    "RemoteRef",
    "Response",
    "TransientError",
    "find_credentials",
    "parse_challenge",
    "retry_after",
]
