"""The command line: parse, make one ops call, render. Errors are mapped here and only here.

Commands live in sibling modules and are imported lazily, so ``layouttool ls`` does not pay for
importing the codecs of ``convert``.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys
from typing import Any, NoReturn

import click

from layouttool._version import __version__
from layouttool.errors import InternalError, Interrupted, LayoutToolError, from_oserror

#: command name -> (module under layouttool.cli, function, section)
COMMANDS: dict[str, tuple[str, str, str]] = {
    "init": ("cmd_layout", "init_cmd", "Layouts"),
    "ls": ("cmd_layout", "ls_cmd", "Layouts"),
    "inspect": ("cmd_layout", "inspect_cmd", "Layouts"),
    "tag": ("cmd_layout", "tag_cmd", "Layouts"),
    "untag": ("cmd_layout", "untag_cmd", "Layouts"),
    "verify": ("cmd_layout", "verify_cmd", "Layouts"),
    "gc": ("cmd_gc", "gc_cmd", "Maintenance"),
    "from-docker-save": ("cmd_import", "from_docker_save_cmd", "Import and export"),
    "convert": ("cmd_convert", "convert_cmd", "Transform"),
    "to-docker-save": ("cmd_docker_save", "to_docker_save_cmd", "Import and export"),
    "unpack": ("cmd_unpack", "unpack_cmd", "Transform"),
    "new": ("cmd_build", "new_cmd", "Build"),
    "append": ("cmd_build", "append_cmd", "Build"),
    "config": ("cmd_build", "config_cmd", "Build"),
    "repack": ("cmd_build", "repack_cmd", "Build"),
    "export": ("cmd_merge", "export_cmd", "Import and export"),
    "diff": ("cmd_merge", "diff_cmd", "Layouts"),
    "flatten": ("cmd_merge", "flatten_cmd", "Transform"),
    "attach": ("cmd_artifact", "attach_cmd", "Layouts"),
    "referrers": ("cmd_artifact", "referrers_cmd", "Layouts"),
    "push": ("cmd_remote", "push_cmd", "Registries"),
    "pull": ("cmd_remote", "pull_cmd", "Registries"),
    "login": ("cmd_remote", "login_cmd", "Registries"),
    "logout": ("cmd_remote", "logout_cmd", "Registries"),
}
SECTIONS = ("Import and export", "Layouts", "Transform", "Build", "Maintenance", "Registries")


class LazyGroup(click.Group):
    """A group whose commands are imported on first use, listed by section in ``--help``."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        spec = COMMANDS.get(cmd_name)
        if spec is None:
            return None
        module = importlib.import_module(f"layouttool.cli.{spec[0]}")
        cmd: click.Command = getattr(module, spec[1])
        return cmd

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        name = args[0] if args else ""
        # not while completing: a half-typed word must not print an error into the shell
        if name and not name.startswith("-") and name not in COMMANDS and not ctx.resilient_parsing:
            import difflib  # only for this error: its import costs ~2 ms of every start-up

            close = difflib.get_close_matches(name, list(COMMANDS), n=1)
            hint = f" Did you mean {close[0]!r}?" if close else ""
            ctx.fail(f"no such command {name!r}.{hint}")
        return super().resolve_command(ctx, args)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            # click would print an empty line on stderr before its Abort; the error contract is
            # one line (on a terminal, the newline ends the echoed ^C)
            if sys.stderr.isatty():
                click.echo(err=True)
            raise Interrupted("interrupted") from None

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        for section in SECTIONS:
            rows = []
            for name, (_, _, sec) in sorted(COMMANDS.items()):
                if sec != section:
                    continue
                cmd = self.get_command(ctx, name)
                if cmd is not None and not cmd.hidden:
                    rows.append((name, cmd.get_short_help_str(limit=70)))
            if rows:
                with formatter.section(section):
                    formatter.write_dl(rows)


EPILOG = """\b
Examples:
  layouttool from-docker-save app.tar -o ./oci
  layouttool ls ./oci
  layouttool convert ./oci:app:1.0 --compression zstd
  layouttool unpack ./oci:app:1.0 ./rootfs --rootless
  layouttool gc ./oci

IMAGE arguments are LAYOUT[:REF] or LAYOUT@sha256:<hex>. Exit codes: 0 ok, 1 error,
2 usage, 3 not found, 4 invalid input, 5 integrity, 6 unsafe input, 7 conflict,
70 internal bug, 74 I/O error, 130 interrupted.
"""


@click.group(cls=LazyGroup, epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="layouttool")
@click.option("-q", "--quiet", is_flag=True, help="No progress and no summary on stderr.")
@click.option("-v", "--verbose", is_flag=True, help="More detail on stderr.")
@click.option("--debug", is_flag=True, help="Show a traceback for unexpected errors.")
@click.pass_context
def cli(ctx: click.Context, quiet: bool, verbose: bool, debug: bool) -> None:
    """Import, convert, unpack, verify and garbage-collect OCI image layouts and docker save
    tarballs."""
    ctx.ensure_object(dict)
    ctx.obj.update(quiet=quiet, verbose=verbose, debug=debug)


def _fail(message: str, code: int) -> NoReturn:
    # one line, whatever the message holds
    line = " ".join(message.split())
    try:
        click.echo(f"layouttool: error: {line}", err=True)
    except OSError:
        pass
    sys.exit(code)


def _on_sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> NoReturn:
    """Run the CLI; never lets a traceback out except with ``--debug`` for a bug."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        cli.main(args=args, prog_name="layouttool", standalone_mode=False)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        _fail("interrupted", Interrupted.exit_code)
    except click.ClickException as exc:
        msg = exc.format_message()
        if isinstance(exc, click.UsageError) and exc.ctx is not None:
            msg += f" (see '{exc.ctx.command_path} --help')"
        _fail(msg, exc.exit_code)
    except LayoutToolError as exc:
        _fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        _fail("interrupted", Interrupted.exit_code)
    except BrokenPipeError:
        # the reader of our stdout went away (e.g. `| head`): not an error of ours
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(1)
    except OSError as exc:
        err = from_oserror(exc, "I/O")
        _fail(str(err), err.exit_code)
    except Exception as exc:
        if debug:
            raise
        _fail(
            f"internal error: {type(exc).__name__}: {exc} (a bug; rerun with --debug for a "
            "traceback and report it)",
            InternalError.exit_code,
        )
    if argv is None:
        # the process is ours and its work is done (index.json written): a signal from here
        # on must not turn success into a death by signal during interpreter shutdown
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sys.exit(0)
