"""The ``copper`` command: a thin dispatcher over per-feature CLI modules.

Each feature module exposes ``register(subparsers)`` which adds its subcommands and
sets ``func`` on them; ``func(args)`` returns the exit code or raises
:class:`copperline.cli_output.CliError`. Modules import heavy dependencies (amaranth,
matplotlib, ...) inside their functions so ``copper`` starts fast.

The output contract (docs/cli.md) is kept here for every subcommand: with ``--json`` one
JSON object (usage errors included), progress on stderr in human mode only, exit 130
after Ctrl-C.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from copperline import __version__
from copperline import progress
from copperline.cli_output import EXIT_USAGE, CliError, emit_json, error_object, report_error

#: feature module -> the subcommands it provides (and the issue that builds it).
FEATURES = (
    ("copperline.host.toolchain_cli", ("check", "compile", "disasm")),
    ("copperline.host.run_cli", ("run",)),
    ("copperline.host.trace_cli", ("trace", "render")),
    ("copperline.host.board_cli", ("build", "flash", "board")),
)


def _not_implemented(name: str):
    def run(args) -> int:
        print(f"copper {name}: not implemented yet", file=sys.stderr)
        return 2
    return run


class Parser(argparse.ArgumentParser):
    """argparse with usage errors as the contract's error object when ``--json`` is on
    the command line (:data:`json_errors`)."""

    #: Set by :func:`main` from the raw arguments (the parse failed: no ``args`` yet).
    json_errors = False

    def error(self, message: str):
        if Parser.json_errors:
            emit_json(error_object("USAGE", f"{self.prog}: {message}",
                                   usage=self.format_usage().strip()))
            self.exit(EXIT_USAGE)
        super().error(message)


def command_name(args) -> str:
    """``run``, ``trace compare``, ``board sim``: for messages."""
    parts = [args.command]
    for sub in ("trace_command", "board_command"):
        if getattr(args, sub, None):
            parts.append(getattr(args, sub))
    return " ".join(parts)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="copper", description="Copper programs: check, compile, run, trace, build, flash.")
    parser.add_argument("--version", action="version", version=f"copperline {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name, commands in FEATURES:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise
            for name in commands:
                p = sub.add_parser(name, help="(not implemented yet)")
                p.add_argument("rest", nargs=argparse.REMAINDER)
                p.set_defaults(func=_not_implemented(name))
            continue
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    raw = sys.argv[1:] if argv is None else list(argv)
    Parser.json_errors = "--json" in raw
    parser = build_parser()
    args = parser.parse_args(raw)
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose, 2),
        format="%(levelname)s %(name)s: %(message)s")
    as_json = bool(getattr(args, "json", False))
    if as_json:
        progress.disable()
    else:
        progress.enable(args.command)
    try:
        return args.func(args)
    except CliError as exc:
        return report_error(args, exc, command_name(args))
    except KeyboardInterrupt:
        # (a command that can save partial work, `copper run`, handles Ctrl-C itself)
        if as_json:
            emit_json(error_object("INTERRUPTED", "interrupted (Ctrl-C)"))
        else:
            print(f"copper {command_name(args)}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
    finally:
        progress.disable()


if __name__ == "__main__":
    sys.exit(main())
