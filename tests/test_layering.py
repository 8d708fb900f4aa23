"""The architecture under test (GGCR's depcheck): who may import whom, read with ``ast``.

Every import counts, including the lazy ones inside functions: a lazy import is still a
dependency.
"""

from __future__ import annotations

import ast
import sys
from functools import cache
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "layouttool"

#: the pure core: no IO layers above it
CORE = ("codec", "model", "digest", "mediatypes", "errors")
#: what the core must never reach
ABOVE_CORE = ("store", "formats", "ops", "graph", "layers", "cli", "rootfs")


def module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def sources() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(PKG.rglob("*.py"))}


@cache
def imports_of(mod: str) -> frozenset[str]:
    """Every module ``mod`` imports (absolute names), anywhere in the file."""
    path = sources()[mod]
    tree = ast.parse(path.read_text(), str(path))
    is_pkg = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = mod.split(".")
                if not is_pkg:
                    base = base[:-1]
                base = base[: len(base) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            found.add(prefix)
            # "from layouttool import store" imports the submodule layouttool.store
            for a in node.names:
                if f"{prefix}.{a.name}" in sources():
                    found.add(f"{prefix}.{a.name}")
    return frozenset(found)


def top(name: str) -> str:
    return name.split(".")[0]


def is_ours(name: str) -> bool:
    return top(name) == "layouttool"


def second(name: str) -> str:
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else ""


def test_the_scan_sees_the_package() -> None:
    mods = sources()
    for m in ("layouttool.store", "layouttool.codec", "layouttool.cli", "layouttool.ops.layout"):
        assert m in mods
    assert "click" in imports_of("layouttool.cli")
    assert "layouttool.store" in imports_of("layouttool.ops.layout")
    # relative imports are resolved too
    assert all(not i.startswith(".") for m in mods for i in imports_of(m))


def test_only_the_cli_imports_click() -> None:
    offenders = sorted(
        m
        for m in sources()
        if not (m == "layouttool.cli" or m.startswith("layouttool.cli."))
        and any(top(i) == "click" for i in imports_of(m))
    )
    assert offenders == []


def test_nothing_imports_the_cli() -> None:
    offenders = sorted(
        m
        for m in sources()
        if not (m == "layouttool.cli" or m.startswith("layouttool.cli."))
        and m != "layouttool.__main__"  # the entry point is the one allowed caller
        and any(i == "layouttool.cli" or i.startswith("layouttool.cli.") for i in imports_of(m))
    )
    assert offenders == []


@pytest.mark.parametrize("core", CORE)
def test_core_imports_nothing_above_it(core: str) -> None:
    mod = f"layouttool.{core}"
    bad = sorted(i for i in imports_of(mod) if is_ours(i) and second(i) in ABOVE_CORE)
    assert bad == [], f"{mod} imports {bad}"


def rootfs_modules() -> list[str]:
    return sorted(m for m in sources() if m == "layouttool.rootfs" or
                  m.startswith("layouttool.rootfs."))


def test_rootfs_is_a_package_of_modules() -> None:
    mods = rootfs_modules()
    assert "layouttool.rootfs.apply" in mods
    assert "layouttool.rootfs.apply" in imports_of("layouttool.rootfs")


@pytest.mark.parametrize("mod", rootfs_modules())
def test_rootfs_imports_only_stdlib_errors_and_itself(mod: str) -> None:
    """The filesystem side knows nothing of the store, digests or codecs."""
    bad = sorted(
        i
        for i in imports_of(mod)
        if not (top(i) in sys.stdlib_module_names or top(i) == "__future__")
        and i not in ("layouttool.errors", "layouttool")
        and not (i == "layouttool.rootfs" or i.startswith("layouttool.rootfs."))
    )
    assert bad == []


def _docstring_nodes(tree: ast.AST) -> set[int]:
    ids = set()
    for node in ast.walk(tree):
        if isinstance(
            node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef
        ):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                ids.add(id(body[0].value))
    return ids


def test_media_type_strings_live_in_mediatypes() -> None:
    """No ``application/vnd.`` literal outside mediatypes.py and schema.py (docstrings aside)."""
    allowed = {"layouttool.mediatypes", "layouttool.schema"}
    offenders = []
    for mod, path in sources().items():
        if mod in allowed:
            continue
        tree = ast.parse(path.read_text(), str(path))
        docs = _docstring_nodes(tree)
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and "application/vnd." in node.value
                and id(node) not in docs
            ):
                offenders.append(f"{path.relative_to(PKG.parent)}:{node.lineno}")
    assert offenders == []
