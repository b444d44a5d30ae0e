"""Compile Copper program JSON into a binary :class:`~copperline.firmware.image.Image`.

The compiler validates first (:func:`copperline.firmware.program.validate`), then encodes
each op with :func:`copperline.firmware.isa.encode`. It is deterministic: the same program
always gives the same bytes. Canonical choices:

- a HALT is appended unless the last op is HALT (and always when a label names the end);
- tag, surface and timeline tables list strings in order of first use;
- finite LOOPs get loop-counter slots 0, 1, 2, ... in program order; forever LOOPs
  (``count: -1``, encoded 0) use slot 0 and no counter;
- the register map lists the registers the code uses, by index, with canonical names;
- labels are sorted by (address, name).
"""

from __future__ import annotations

import logging
import os

from . import isa
from .image import Image, load_image
from .program import ProgramError, load_program, validate

log = logging.getLogger(__name__)


def compile_program(doc, source: str = "<program>", **limits) -> Image:
    """Validate and compile a program document; raises :class:`ProgramError`.

    ``limits`` are passed to :func:`validate` (``program_words``, ``layers``).
    """
    checked = validate(doc, source, **limits)
    tables: dict[str, dict[str, int]] = {kind: {} for kind in isa.TABLE_KINDS}
    code: list[int] = []
    used_regs: set[int] = set()
    next_slot = 0

    def intern(kind: str, value: str) -> int:
        table = tables[kind]
        return table.setdefault(value, len(table))

    for index, entry in checked.ops:
        spec = isa.OP_BY_NAME[entry["op"]]

        def resolve(arg: isa.JsonArg, value) -> int:
            if arg.kind == "reg":
                return checked.registers[index]
            if arg.kind == "label":
                return checked.labels[value]
            return intern(arg.kind, value)

        fields = isa.args_to_fields(spec, entry, resolve)
        for arg in spec.args:
            if arg.kind == "reg":
                used_regs.add(fields[arg.field])
            elif arg.kind == "loop_count" and fields[arg.field]:
                # A finite LOOP takes the next hardware loop counter; forever LOOPs use none.
                fields[isa.LOOP_SLOT.name] = next_slot
                next_slot += 1
        code.append(isa.encode(spec.name, **fields))

    ends_in_halt = code and code[-1] >> isa.OPCODE_SHIFT == isa.Opcode.HALT
    if not ends_in_halt or any(addr == len(code) for addr in checked.labels.values()):
        code.append(isa.encode("HALT"))

    image = Image(
        code=tuple(code),
        regmap=tuple((r, isa.register_name(r)) for r in sorted(used_regs)),
        tags=tuple(tables["tag"]),
        surfaces=tuple(tables["surface"]),
        timelines=tuple(tables["timeline"]),
        labels=tuple(sorted((addr, name) for name, addr in checked.labels.items())),
    )
    image.check(source)  # the compiler's own output must pass the loader's checks
    log.debug("compiled %s: %d words", source, len(code))
    return image


def compile_file(path, **limits) -> Image:
    """Load, validate and compile a program JSON file."""
    return compile_program(load_program(path), str(path), **limits)


def load_any(path, **limits) -> Image:
    """An image from ``path``: a ``.json`` program is compiled, anything else is loaded
    as a ``.cop`` image (:func:`copperline.firmware.image.load_image`)."""
    if os.fspath(path).lower().endswith(".json"):
        return compile_file(path, **limits)
    return load_image(path)


__all__ = ["compile_program", "compile_file", "load_any", "ProgramError"]
