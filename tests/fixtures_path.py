"""Locate the shared peer fixtures (``../shared/fixtures`` beside the checkout)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

FIXTURES_ROOT = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures"


def shared_fixture(*parts: str) -> Path:
    """Path of a shared fixture; fails under ``CI=true`` and skips elsewhere when missing."""
    path = FIXTURES_ROOT.joinpath(*parts)
    if not path.exists():
        msg = f"shared fixture {path} is missing (expected ../shared/fixtures beside the repo)"
        if os.environ.get("CI") == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    return path
