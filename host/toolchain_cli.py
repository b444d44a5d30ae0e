"""``copper check`` / ``copper compile`` / ``copper disasm``: the program toolchain CLI.

Thin layer over :mod:`copperline.firmware.program`, :mod:`~copperline.firmware.compiler`
and :mod:`~copperline.firmware.disasm`. Human-readable output by default, ``--json`` for
scripts (one object with ``ok``, docs/cli.md); errors go to stderr, one per line, and the
exit code is 1.
"""

from __future__ import annotations

import json
import logging
import os
import sys

from copperline.cli_output import emit_json, error_object, wrote, written

log = logging.getLogger(__name__)


def register(subparsers) -> None:
    """Add the ``check``, ``compile`` and ``disasm`` subcommands."""
    from copperline.firmware import isa

    def limits(p):
        p.add_argument("--program-words", type=int, default=isa.DEFAULT_PROGRAM_WORDS, metavar="N",
                       help=f"program memory size in words (default {isa.DEFAULT_PROGRAM_WORDS})")
        p.add_argument("--layers", type=int, default=isa.DEFAULT_LAYERS, metavar="N",
                       help=f"display layers the target has (default {isa.DEFAULT_LAYERS})")

    p = subparsers.add_parser("check", help="validate a program JSON file",
                              description="Validate a Copper program. Errors name the file, the "
                                          "entry index, the op and the field.")
    p.add_argument("program", metavar="PROG.json")
    p.add_argument("--json", action="store_true", help="print a machine-readable result")
    limits(p)
    p.set_defaults(func=cmd_check)

    p = subparsers.add_parser("compile", help="compile a program JSON file to a .cop image",
                              description="Compile a Copper program to a binary image.")
    p.add_argument("program", metavar="PROG.json")
    p.add_argument("-o", "--output", metavar="PROG.cop",
                   help="output image (default: PROG.json with the suffix .cop)")
    p.add_argument("--json", action="store_true", help="print a machine-readable result")
    limits(p)
    p.set_defaults(func=cmd_compile)

    p = subparsers.add_parser("disasm", help="list a .cop image (or turn it into program JSON)",
                              description="Disassemble a Copper image (a .json program is "
                                          "compiled first). --program prints (-o writes) "
                                          "program JSON that recompiles to the same bytes.")
    p.add_argument("image", metavar="PROG.cop")
    form = p.add_mutually_exclusive_group()
    form.add_argument("--program", action="store_true",
                      help="print the program JSON instead of a listing")
    form.add_argument("-o", "--output", metavar="PROG.json",
                      help="write the program JSON to this file")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object: the listing lines and the program")
    p.set_defaults(func=cmd_disasm)


def _fail_problems(exc, as_json: bool) -> int:
    """Report a ProgramError: one problem per line on stderr (and the error object, with
    every problem under ``errors``, on stdout)."""
    if as_json:
        first = str(exc.problems[0]) if exc.problems else str(exc)
        more = len(exc.problems) - 1
        emit_json(error_object("BAD_PROGRAM", first + (f" (and {more} more)" if more > 0 else ""),
                               errors=[p.to_dict() for p in exc.problems]))
    for p in exc.problems:
        print(f"error: {p}", file=sys.stderr)
    return 1


def _fail(message: str, as_json: bool = False, code: str = "BAD_INPUT") -> int:
    if as_json:
        emit_json(error_object(code, message, errors=[{"message": message, "text": message}]))
    print(f"error: {message}", file=sys.stderr)
    return 1


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def _summary(image) -> dict:
    finite_loops = sum(1 for ins in image.decoded() if ins.name == "LOOP" and ins.fields["count"])
    return {"words": len(image.code), "bytes": len(image.to_bytes()), "sha256": image.sha256(),
            "registers": [name for _, name in image.regmap], "tags": list(image.tags),
            "surfaces": list(image.surfaces), "timelines": list(image.timelines),
            "labels": {name: addr for addr, name in image.labels}, "finite_loops": finite_loops}


def cmd_check(args) -> int:
    from copperline.firmware.compiler import compile_program
    from copperline.firmware.program import ProgramError, is_marker, load_program

    try:
        doc = load_program(args.program)
        image = compile_program(doc, args.program, program_words=args.program_words,
                                layers=args.layers)
    except ProgramError as exc:
        return _fail_problems(exc, args.json)
    except ValueError as exc:  # bad --program-words / --layers
        return _fail(str(exc), args.json, "BAD_ARG")
    ops = sum(1 for e in doc["program"] if not is_marker(e))
    info = _summary(image)
    if args.json:
        print(json.dumps({"ok": True, "source": args.program, "ops": ops, **info}, indent=2))
    else:
        print(f"ok: {args.program}: {_plural(ops, 'op')} ({_plural(info['words'], 'word')}), "
              f"{_plural(len(info['registers']), 'register')}, {_plural(len(info['tags']), 'tag')}, "
              f"{_plural(len(info['labels']), 'label')}")
    return 0


def cmd_compile(args) -> int:
    from copperline.firmware.compiler import compile_file
    from copperline.firmware.program import ProgramError

    out = args.output or os.path.splitext(args.program)[0] + ".cop"
    try:
        image = compile_file(args.program, program_words=args.program_words, layers=args.layers)
    except ProgramError as exc:
        return _fail_problems(exc, args.json)
    except ValueError as exc:
        return _fail(str(exc), args.json, "BAD_ARG")
    data = image.to_bytes()
    try:
        # Write then rename, so a failed write never leaves a half image behind.
        tmp = f"{out}.tmp{os.getpid()}"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, out)
    except OSError as exc:
        return _fail(f"cannot write {out}: {exc.strerror or exc}", args.json, "CANNOT_WRITE")
    info = _summary(image)
    log.info("wrote %s", out)
    if args.json:
        print(json.dumps({"ok": True, "source": args.program, "output": out,
                          "files": [written(out, "image")], **info}, indent=2))
    else:
        print(f"wrote {out} ({len(data)} bytes): {_plural(info['words'], 'word')}, "
              f"sha256 {info['sha256']}")
    return 0


def cmd_disasm(args) -> int:
    from copperline.firmware.compiler import load_any
    from copperline.firmware.disasm import (DisasmError, format_program, listing,
                                             recompiles_identically, to_program)
    from copperline.firmware.image import ImageError
    from copperline.firmware.program import ProgramError

    try:
        image = load_any(args.image)
    except ProgramError as exc:
        return _fail_problems(exc, args.json)
    except ImageError as exc:
        return _fail(str(exc), args.json, "BAD_FORMAT")
    except OSError as exc:
        return _fail(f"{args.image}: cannot read: {exc.strerror or exc}", args.json, "NOT_FOUND")
    text = listing(image)
    if not (args.json or args.program or args.output):
        sys.stdout.write(text)
        return 0
    try:
        program = to_program(image)
    except DisasmError as exc:
        return _fail(f"{args.image}: {exc}", args.json, "BAD_FORMAT")
    canonical = recompiles_identically(image)
    if not canonical:
        # Hand-made images may order their tables differently from the compiler.
        print(f"warning: {args.image} is not in the compiler's canonical form: the JSON "
              "compiles to an equivalent image with different bytes", file=sys.stderr)
    out = None
    if args.output:
        try:
            with open(args.output, "w") as f:
                f.write(format_program(program))
        except OSError as exc:
            return _fail(f"cannot write {args.output}: {exc.strerror or exc}", args.json,
                         "CANNOT_WRITE")
        out = written(args.output, "program JSON")
    if args.json:
        emit_json({"ok": True, "source": args.image, "sha256": image.sha256(),
                   "words": len(image.code), "canonical": canonical,
                   "listing": text.splitlines(), "program": program,
                   **({"output": out} if out else {})})
    elif args.output:
        print(wrote(args.output, "program JSON"))
    else:
        sys.stdout.write(format_program(program))
    return 0
