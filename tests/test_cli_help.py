"""CLI ergonomics: help with examples on every command, sections, --version, typo hints,
shell completion, and the same flag spelled the same way on every command."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest
from conftest import run_cli

import layouttool
from layouttool.cli import COMMANDS, SECTIONS, cli

SCRIPT = Path(sys.executable).parent / "layouttool"


def command(name: str) -> click.Command:
    """The click command ``name``."""
    with click.Context(cli) as ctx:
        cmd = cli.get_command(ctx, name)
    assert cmd is not None
    return cmd


def options(cmd: click.Command) -> list[click.Option]:
    """The options of ``cmd`` (no arguments, no --help)."""
    return [p for p in cmd.params if isinstance(p, click.Option)]


@pytest.mark.parametrize("name", sorted(COMMANDS))
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_every_command_has_help_with_examples(name: str, flag: str) -> None:
    res = run_cli(name, flag)
    assert res.code == 0, res.stderr
    assert res.stderr == ""
    assert res.stdout.startswith(f"Usage: layouttool {name} ")
    lines = res.stdout.splitlines()
    assert "  Examples:" in lines, res.stdout
    # the \b kept each example on its own line, and each is a real invocation of this command
    after = lines[lines.index("  Examples:") + 1 :]
    examples = [ln.strip() for ln in after if ln.startswith("    layouttool ")]
    assert examples, res.stdout
    assert all(ex.split()[1] == name or ex.split()[1].startswith("-") for ex in examples[:1])
    assert any(f"layouttool {name} " in ex for ex in examples)
    # every option is documented
    for opt in options(command(name)):
        assert opt.help, f"{name} {opt.opts} has no help text"


def test_every_example_parses() -> None:
    """Each example's flags exist on its command (examples must not drift from the options)."""
    for name in COMMANDS:
        cmd = command(name)
        known = {o for opt in options(cmd) for o in (*opt.opts, *opt.secondary_opts)}
        text = run_cli(name, "--help").stdout
        for line in text.splitlines():
            line = line.strip()
            if not line.startswith(f"layouttool {name} "):
                continue
            words = line.split("|")[0].split("&&")[0].split()
            for w in words[2:]:
                if w.startswith("-") and w != "-":
                    assert w.split("=")[0] in known, f"example {line!r} uses unknown {w}"


def test_top_level_help_groups_commands_by_section() -> None:
    res = run_cli("--help")
    assert res.code == 0
    lines = res.stdout.splitlines()
    heads = [ln for ln in lines if ln.rstrip(":") in SECTIONS and ln.endswith(":")]
    used = [s for s in SECTIONS if any(sec == s for _, _, sec in COMMANDS.values())]
    assert [h.rstrip(":") for h in heads] == used
    for name, (_, _, section) in COMMANDS.items():
        start = lines.index(f"{section}:")
        block = []
        for ln in lines[start + 1 :]:
            if not ln.strip():
                break
            block.append(ln)
        assert any(ln.split()[0] == name for ln in block if ln.startswith("  ") and
                   not ln.startswith("   ")), f"{name} not under {section}"
    assert "Examples:" in res.stdout and "Exit codes" in res.stdout


def test_no_args_shows_usage() -> None:
    res = run_cli()
    # click shows the help for a group called without a command
    assert "Usage: layouttool" in res.stdout + res.stderr


def test_version_comes_from_one_place() -> None:
    res = run_cli("--version")
    assert res.code == 0
    assert res.stdout.strip() == f"layouttool, version {layouttool.__version__}"
    assert importlib.metadata.version("layouttool") == layouttool.__version__


@pytest.mark.parametrize(
    ("typo", "meant"),
    [("convrt", "convert"), ("lss", "ls"), ("verfy", "verify"), ("from-docker", "from-docker-save"),
     ("to-docker-sav", "to-docker-save"), ("unpak", "unpack")],
)
def test_typo_suggests_the_closest_command(typo: str, meant: str) -> None:
    if meant not in COMMANDS:
        pytest.skip(f"'layouttool {meant}' does not exist yet")
    res = run_cli(typo, "x")
    assert res.code == 2
    assert res.stdout == ""
    assert res.stderr.splitlines() == [
        f"layouttool: error: no such command {typo!r}. Did you mean {meant!r}? "
        "(see 'layouttool --help')"
    ]


def test_nonsense_command_has_no_suggestion() -> None:
    res = run_cli("xyzzy")
    assert res.code == 2
    assert "no such command 'xyzzy'" in res.stderr and "Did you mean" not in res.stderr


def test_verbose_and_quiet_are_global() -> None:
    res = run_cli("--help")
    assert "-q, --quiet" in res.stdout and "-v, --verbose" in res.stdout
    for name in COMMANDS:
        opts = {o for opt in options(command(name)) for o in opt.opts}
        # a command redefining -q/-v would shadow the global meaning
        assert not opts & {"-q", "--quiet", "-v", "--verbose"}, name


# --------------------------------------------------------------------- consistent flag names
#: the one spelling of each recurring flag: the option's names, and its metavar when it has one
CANONICAL: dict[str, tuple[list[str], str | None]] = {
    "--json": (["--json"], None),
    "--platform": (["--platform"], "OS/ARCH[/VARIANT]"),
    "--compression": (["--compression"], None),
    "--level": (["--level"], None),
    "--jobs": (["-j", "--jobs"], None),
    "--max-size": (["--max-size"], "BYTES"),
    "--output": (["-o", "--output"], None),
    "--format": (["--format"], None),
    "--force": (["--force"], None),
    "--dry-run": (["-n", "--dry-run"], None),  # as git clean, rsync, make
}
#: spellings that would be a second name for one of the above
SYNONYMS = {
    "--out", "--output-dir", "--dest", "--destination", "--target", "--workers", "--threads",
    "--parallel", "--parallelism", "-J", "-p", "--max-bytes", "--limit", "--size-limit",
    "--compress", "--algorithm", "--arch", "--os", "--os-arch", "--compression-level", "--lvl",
    "--json-output", "--output-format", "--yes", "-f", "--dryrun", "--plan", "-c", "-l",
}


#: flags that would be synonyms elsewhere but mean something else on this command: `config`
#: --os/--arch *set* the config's fields (issue 17, as `umoci config` does); --platform still
#: selects the image there
NOT_SYNONYMS = {"config": {"--os", "--arch"}}


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_flags_are_spelled_the_same_on_every_command(name: str) -> None:
    cmd = command(name)
    for opt in options(cmd):
        names = set(opt.opts) | set(opt.secondary_opts)
        bad = names & (SYNONYMS - NOT_SYNONYMS.get(name, set()))
        assert not bad, f"{name}: {sorted(bad)} (use the canonical flag)"
        for flag, (want, metavar) in CANONICAL.items():
            if flag in names or (set(want) - {flag}) & names:
                assert sorted(opt.opts) == sorted(want), f"{name}: {opt.opts} should be {want}"
                if metavar is not None:
                    assert opt.metavar == metavar, f"{name} {flag}: metavar {opt.metavar}"
        if "--level" in names:
            assert opt.type is click.INT or isinstance(opt.type, click.IntRange)
        if "--jobs" in names or "--max-size" in names:
            assert isinstance(opt.type, click.IntRange), f"{name} {opt.opts}: not a range"
        if "--compression" in names:
            assert isinstance(opt.type, click.Choice)
            assert {"gzip", "none"} <= set(opt.type.choices)
            assert set(opt.type.choices) <= {
                "gzip", "zstd", "none", "auto", "keep", "zstd:chunked", "estargz"
            }
    assert "--json" in {o for opt in options(cmd) for o in opt.opts}, f"{name} has no --json"


# --------------------------------------------------------------------------- shell completion
def _complete(words: str, cword: int) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, COMP_WORDS=words, COMP_CWORD=str(cword),
               _LAYOUTTOOL_COMPLETE="bash_complete")
    return subprocess.run([str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_completion_script(shell: str) -> None:
    env = dict(os.environ, _LAYOUTTOOL_COMPLETE=f"{shell}_source")
    proc = subprocess.run([str(SCRIPT)], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "_LAYOUTTOOL_COMPLETE" in proc.stdout and proc.stderr == ""


def test_completion_of_commands_and_choices() -> None:
    proc = _complete("layouttool con", 1)
    assert proc.returncode == 0 and proc.stderr == ""
    assert proc.stdout.split() == [f"plain,{c}" for c in sorted(COMMANDS) if c.startswith("con")]
    assert "plain,convert" in proc.stdout.split()
    if "convert" in COMMANDS:
        proc = _complete("layouttool convert x --compression ", 4)
        assert sorted(proc.stdout.split()) == [
            "plain,estargz", "plain,gzip", "plain,none", "plain,zstd", "plain,zstd:chunked"
        ]


def test_completion_after_a_typo_is_silent() -> None:
    proc = _complete("layouttool convrt x ", 2)
    assert proc.returncode == 0
    assert proc.stderr == ""
