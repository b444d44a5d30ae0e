"""The ``copper`` command: a thin dispatcher over per-feature CLI modules.

Each feature module exposes ``register(subparsers)`` which adds its subcommands and
sets ``func`` on them; ``func(args)`` returns the exit code. Modules import heavy
dependencies (amaranth, matplotlib, ...) inside their functions so ``copper`` starts fast.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from copperline import __version__

#: feature module -> the subcommands it provides (and the issue that builds it).
FEATURES = (
    ("copperline.host.toolchain_cli", ("check", "compile", "disasm")),
    ("copperline.host.run_cli", ("run",)),
    ("copperline.host.trace_cli", ("trace", "render")),
    ("copperline.boards.cli", ("build", "flash", "board")),
)


def _not_implemented(name: str):
    def run(args) -> int:
        print(f"copper {name}: not implemented yet", file=sys.stderr)
        return 2
    return run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
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
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose, 2),
        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
