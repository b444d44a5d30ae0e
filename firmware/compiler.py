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
    tables: dict[str, dict[str, int]] = {"tag": {}, "surface": {}, "timeline": {}}
    code: list[int] = []
    used_regs: set[int] = set()
    next_slot = 0

    def intern(kind: str, value: str) -> int:
        table = tables[kind]
        return table.setdefault(value, len(table))

    for index, entry in checked.ops:
        spec = isa.OP_BY_NAME[entry["op"]]
        name = spec.name
        if name in ("HALT", "NOP"):
            fields = {}
        elif name == "WAIT":
            fields = {"vsync": 1} if "vsync" in entry else {"vsync": 0, "us": entry["us"]}
        elif name in ("MOVE", "ADD"):
            reg = checked.registers[index]
            used_regs.add(reg)
            if name == "MOVE":
                width = isa.register_field(reg).width
                # Two's complement in the register's width (validated to be in range).
                fields = {"reg": reg, "value": entry["value"] & ((1 << width) - 1)}
            else:
                fields = {"reg": reg, "delta": entry["delta"]}
        elif name == "IRQ":
            fields = {"tag": intern("tag", entry["tag"])}
        elif name == "JUMP":
            fields = {"target": checked.labels[entry["label"]]}
        elif name == "LOOP":
            count = entry["count"]
            if count == -1:
                fields = {"slot": 0, "count": 0}
            else:
                fields = {"slot": next_slot, "count": count}
                next_slot += 1
            fields["target"] = checked.labels[entry["label"]]
        elif name == "FENCE":
            fields = {"timeline": intern("timeline", entry["timeline"]), "value": entry["value"]}
        elif name == "BIND_LAYER":
            fields = {"layer": entry["id"], "surface": intern("surface", entry["surface"])}
        else:  # pragma: no cover - validate() only lets isa.OPS through
            raise NotImplementedError(f"compiler does not know op {name}")
        code.append(isa.encode(name, **fields))

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
