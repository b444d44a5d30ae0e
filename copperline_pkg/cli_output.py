"""The ``copper`` output contract (docs/cli.md): every subcommand prints, with ``--json``,
exactly one JSON object on stdout, ``{"ok": true, ...}`` on success and
``{"ok": false, "error": {"code": ..., "message": ...}, ...}`` on failure; in human mode
it prints text, errors on stderr, and confirms every file it writes.

Subcommands raise :class:`CliError` (or return :func:`done`); ``copper``'s dispatcher
turns a CliError into the error object or the ``copper <cmd>: message`` line.
"""

from __future__ import annotations

import json
import os
import sys

#: Exit codes shared by the subcommands.
EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


class CliError(Exception):
    """A failure to report: ``code`` (upper case, e.g. ``NOT_FOUND``), a message naming
    the file / option / field, the exit status, and extra keys for the JSON object."""

    def __init__(self, message: str, code: str = "FAILED", exit: int = EXIT_FAIL, **extra):
        super().__init__(message)
        self.message = message
        self.code = code
        self.exit = exit
        self.extra = extra


def error_object(code: str, message: str, **extra) -> dict:
    """The one failure shape."""
    return {"ok": False, "error": {"code": code, "message": message}, **extra}


def emit_json(obj: dict) -> None:
    print(json.dumps(obj, indent=2))


def done(args, obj: dict, human=None) -> int:
    """Success: ``{"ok": true, **obj}`` with ``--json``, else ``human`` (text, a list of
    lines, or a callable that prints). Returns 0."""
    if getattr(args, "json", False):
        emit_json({"ok": True, **obj})
    elif callable(human):
        human()
    elif isinstance(human, (list, tuple)):
        for line in human:
            print(line)
    elif human:
        print(human)
    return EXIT_OK


def report_error(args, exc: CliError, command: str) -> int:
    """Print ``exc`` in the mode ``args`` asks for; returns its exit status."""
    if getattr(args, "json", False):
        emit_json(error_object(exc.code, exc.message, **exc.extra))
    else:
        print(f"copper {command}: {exc.message}", file=sys.stderr)
    return exc.exit


def wrote(path, what: str = "") -> str:
    """``wrote PATH (N bytes)`` / ``wrote PATH (WHAT, N bytes)``: the confirmation line
    for a written file."""
    try:
        size = f"{os.path.getsize(path)} bytes"
    except OSError:
        size = "size unknown"
    return f"wrote {path} ({what + ', ' if what else ''}{size})"


def written(path, what: str = "") -> dict:
    """The JSON form of a written file: ``{"path": ..., "bytes": N, "what": ...}``."""
    out = {"path": str(path)}
    try:
        out["bytes"] = os.path.getsize(path)
    except OSError:
        pass
    if what:
        out["what"] = what
    return out
