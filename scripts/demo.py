"""`make demo`: run the README's tutorial, line by line, on the bundled sample.

The tutorial block in README.md (between the `<!-- tutorial:start -->` and
`<!-- tutorial:end -->` markers) is the single source: this script executes exactly those
commands in a scratch directory, so the README cannot drift from the code (a test runs it too).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def tutorial_commands(readme: Path = REPO / "README.md") -> list[str]:
    """The shell commands of the README tutorial, in order (comments and prompts stripped)."""
    text = readme.read_text()
    m = re.search(r"<!-- tutorial:start -->(.*?)<!-- tutorial:end -->", text, re.S)
    if m is None:
        raise SystemExit("README.md has no tutorial block")
    cmds = []
    for block in re.findall(r"```sh\n(.*?)```", m.group(1), re.S):
        for line in block.splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                cmds.append(line.removeprefix("$ "))
    return cmds


def run(workdir: Path, quiet: bool = False) -> None:
    """Run the tutorial in ``workdir`` with the sample tarball at ``./app.tar``."""
    shutil.copy(REPO / "testdata" / "sample-docker-save.tar", workdir / "app.tar")
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    for cmd in tutorial_commands():
        if not quiet:
            print(f"\n$ {cmd}", flush=True)
        proc = subprocess.run(cmd, shell=True, cwd=workdir, env=env, text=True,
                              capture_output=quiet)
        if proc.returncode != 0:
            detail = f"\n{proc.stderr}" if quiet else ""
            raise SystemExit(f"demo: `{cmd}` exited {proc.returncode}{detail}")


def main() -> None:
    """Entry point of `make demo`."""
    keep = "--keep" in sys.argv
    work = Path(tempfile.mkdtemp(prefix="layouttool-demo-"))
    print(f"demo: working in {work} (sample: testdata/sample-docker-save.tar)")
    try:
        run(work)
    finally:
        if keep:
            print(f"\ndemo: left {work} for you to look at")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print("\ndemo: all steps succeeded", " ".join(shlex.quote(a) for a in sys.argv[1:]))


if __name__ == "__main__":
    main()
