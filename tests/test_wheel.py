"""Packaging: the wheel installs into a fresh venv outside the repository and runs the README
tutorial there (so the schemas, py.typed and the entry point are really inside the package).

``python -m build`` makes the sdist and, from it, the wheel, out of a copy of the files git
tracks, so untracked files in the work tree cannot leak in and the build leaves no ``build/``
behind in the repository. Dependencies come from PyPI (network needed, like ``make``'s own install).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import REPO

import layouttool

pytestmark = pytest.mark.slow


def tutorial_commands() -> list[str]:
    """The README tutorial, as scripts/demo.py (``make demo``) reads it."""
    spec = importlib.util.spec_from_file_location("demo", REPO / "scripts" / "demo.py")
    assert spec is not None and spec.loader is not None
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    cmds: list[str] = demo.tutorial_commands(REPO / "README.md")
    return cmds


def sh(*args: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None,
       timeout: float = 600) -> str:
    """Run a command; on failure show its output."""
    proc = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)
    if proc.returncode != 0:
        raise AssertionError(f"{args} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the wheel, a fresh venv outside the repo with it installed)."""
    base = tmp_path_factory.mktemp("wheel")
    assert not base.is_relative_to(REPO)
    src = base / "src"
    tracked = sh("git", "ls-files", "-z", cwd=REPO).split("\0")
    for rel in filter(None, tracked):
        path = REPO / rel
        if path.is_file():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, src / rel)
    dist = base / "dist"
    # python -m build: the sdist first, then the wheel built from that sdist (so the sdist
    # is known to be complete enough to build)
    sh(sys.executable, "-m", "build", "--outdir", dist, src)
    wheels = list(dist.glob("layouttool-*.whl"))
    assert len(wheels) == 1, wheels
    venv = base / "venv"
    sh(sys.executable, "-m", "venv", venv)
    sh(venv / "bin" / "python", "-m", "pip", "install", "-q", "--disable-pip-version-check",
       wheels[0])
    return wheels[0], venv


def test_sdist_holds_sources_and_data(installed: tuple[Path, Path]) -> None:
    import tarfile

    wheel, _ = installed
    sdists = list(wheel.parent.glob("layouttool-*.tar.gz"))
    assert [p.name for p in sdists] == [f"layouttool-{layouttool.__version__}.tar.gz"]
    with tarfile.open(sdists[0]) as tf:
        names = {n.split("/", 1)[1] for n in tf.getnames() if "/" in n}
    assert {"README.md", "pyproject.toml", "layouttool/py.typed", "layouttool/cli/__init__.py",
            "layouttool/schemas/image-manifest-schema.json", "layouttool/schemas/NOTICE"} <= names


def test_wheel_holds_the_package_data(installed: tuple[Path, Path]) -> None:
    wheel, _ = installed
    assert wheel.name == f"layouttool-{layouttool.__version__}-py3-none-any.whl"
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
    packaged = {n for n in names if n.startswith("layouttool/schemas/")}
    shipped = {f"layouttool/schemas/{p.name}" for p in (REPO / "layouttool" / "schemas").iterdir()
               if p.suffix == ".json" or p.name == "NOTICE"}
    assert shipped <= packaged
    assert "layouttool/py.typed" in names
    assert not any(n.startswith(("tests/", "bench/", "testdata/")) for n in names)
    entry = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    with zipfile.ZipFile(wheel) as zf:
        assert "layouttool = layouttool.cli:main" in zf.read(entry).decode()


def test_installed_package_runs_outside_the_repo(installed: tuple[Path, Path],
                                                 tmp_path: Path) -> None:
    _, venv = installed
    py = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    # the installed copy, not the repository's, and its version is the one source's
    where = sh(py, "-c", "import layouttool; print(layouttool.__file__, layouttool.__version__)",
               cwd=tmp_path, env=env).split()
    assert Path(where[0]).is_relative_to(venv) and where[1] == layouttool.__version__
    assert sh(venv / "bin" / "layouttool", "--version", cwd=tmp_path, env=env).strip() == (
        f"layouttool, version {layouttool.__version__}")
    # the packaged image-spec schemas load and work (verify depends on them)
    out = sh(py, "-c", "from layouttool import schema; "
             "print(len(schema.validate({}, schema.SchemaKind.MANIFEST)))", cwd=tmp_path, env=env)
    assert int(out) > 0
    # and python -m layouttool works too
    assert "Usage: layouttool" in sh(py, "-m", "layouttool", "--help", cwd=tmp_path, env=env)


def test_readme_tutorial_runs_from_the_wheel(installed: tuple[Path, Path],
                                             tmp_path: Path) -> None:
    _, venv = installed
    sample = REPO / "testdata" / "sample-docker-save.tar"
    shutil.copy(sample, tmp_path / "app.tar")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    commands = tutorial_commands()
    assert any(c.startswith("layouttool from-docker-save") for c in commands)
    for cmd in commands:
        if cmd.split()[0] == "layouttool":
            # the tutorial's layouttool must be the wheel's
            assert shutil.which("layouttool", path=env["PATH"]) == str(venv / "bin" / "layouttool")
        proc = subprocess.run(cmd, shell=True, cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == 0, f"`{cmd}` exited {proc.returncode}:\n{proc.stderr}"
    # everything the tutorial wrote is a valid layout, per the installed verify
    for layout in ("oci", "oci2"):
        if (tmp_path / layout / "index.json").is_file():
            sh(venv / "bin" / "layouttool", "verify", tmp_path / layout, env=env)
