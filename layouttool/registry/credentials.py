"""Where a registry's credentials come from: the containers and Docker auth files."""

from __future__ import annotations

import base64
import json
import os
from pathlib import Path

from layouttool.registry.reference import DOCKER_HUB, DOCKER_HUB_API


def _auth_files() -> list[Path]:
    """Where credentials are looked up, first match wins (the order podman and skopeo use)."""
    files = []
    if env := os.environ.get("REGISTRY_AUTH_FILE"):
        files.append(Path(env))
    if runtime := os.environ.get("XDG_RUNTIME_DIR"):
        files.append(Path(runtime) / "containers" / "auth.json")
    home = Path.home()
    files.append(home / ".config" / "containers" / "auth.json")
    docker_config = os.environ.get("DOCKER_CONFIG")
    files.append(
        Path(docker_config) / "config.json" if docker_config else home / ".docker" / "config.json"
    )
    return files


def find_credentials(registry: str) -> tuple[str, str] | None:
    """``(user, password)`` for ``registry`` from the containers and Docker auth files."""
    keys = {registry, f"https://{registry}", f"http://{registry}"}
    if registry == DOCKER_HUB:
        keys |= {"https://index.docker.io/v1/", "index.docker.io", DOCKER_HUB_API}
    for f in _auth_files():
        try:
            doc = json.loads(f.read_bytes()[: 1 << 20])
        except (OSError, ValueError):
            continue
        auths = doc.get("auths") if isinstance(doc, dict) else None
        if not isinstance(auths, dict):
            continue
        for k, v in auths.items():
            if k.rstrip("/") in keys or k in keys:
                token = v.get("auth") if isinstance(v, dict) else None
                if isinstance(token, str):
                    try:
                        user, _, pw = base64.b64decode(token).decode().partition(":")
                    except (ValueError, UnicodeDecodeError):
                        continue
                    return user, pw
    return None


__all__ = ["find_credentials"]
