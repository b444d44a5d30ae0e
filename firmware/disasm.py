"""Disassemble a Copper :class:`~copperline.firmware.image.Image`.

:func:`listing` gives a human-readable listing (address, word, op, named fields, labels,
table strings). :func:`to_program` gives program JSON that recompiles to the identical
bytes for every image the compiler produced; :func:`recompiles_identically` checks that
for any image (hand-made images may use non-canonical tables or unnamed jump targets).
"""

from __future__ import annotations

from . import isa
from .image import Image


class DisasmError(ValueError):
    """An image that cannot be turned back into a program."""


def _reg_names(image: Image) -> dict[int, str]:
    """Register index -> name: the image's REGMAP where it agrees with the ISA."""
    names = {}
    for index, name in image.regmap:
        try:
            if isa.parse_register(name, 1 << isa.LAYER_BITS) == index:
                names[index] = name
        except ValueError:
            pass
    return names


def _reg_name(index: int, names: dict[int, str]) -> str:
    if index in names:
        return names[index]
    try:
        return isa.register_name(index)
    except ValueError:
        return f"reg#{index}"


def _table(items, i: int) -> str | None:
    return items[i] if 0 <= i < len(items) else None


def _labels_by_addr(image: Image) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {}
    for addr, name in image.labels:
        out.setdefault(addr, []).append(name)
    return out


def _target_names(image: Image) -> dict[int, str]:
    """Address -> a label name for every JUMP/LOOP target (invented where the image has none)."""
    by_addr = _labels_by_addr(image)
    taken = {name for _, name in image.labels}
    names = {addr: names[0] for addr, names in by_addr.items()}
    for word in image.code:
        ins = isa.decode(word)
        if "target" in ins.fields and ins.fields["target"] not in names:
            addr = ins.fields["target"]
            name, n = f"L{addr}", 0
            while name in taken:
                n += 1
                name = f"L{addr}_{n}"
            taken.add(name)
            names[addr] = name
    return names


def _op_fields(ins: isa.Instruction, image: Image, regs: dict[int, str],
               targets: dict[int, str]) -> dict:
    """The JSON fields of one decoded op (without ``op``)."""
    def resolve(arg: isa.JsonArg, raw: int):
        if arg.kind == "reg":
            return _reg_name(raw, regs)
        if arg.kind == "label":
            return targets[raw]
        return _table(image.table(arg.kind), raw)

    return isa.fields_to_args(ins, resolve)


def to_program(image: Image) -> dict:
    """Program JSON for ``image``: label markers, register names, decoded values.

    For an image the compiler produced, compiling the result gives the same bytes.
    Raises :class:`DisasmError` when the image cannot be expressed (invalid words, a
    label outside the code).
    """
    try:
        decoded = image.decoded()
        targets = _target_names(image)
    except ValueError as exc:
        raise DisasmError(str(exc)) from None
    for addr, name in image.labels:
        if not 0 <= addr < len(image.code):
            raise DisasmError(f"label {name!r} names address {addr}, outside the code "
                              f"({len(image.code)} words)")
    regs = _reg_names(image)
    # Every label of the image, plus invented names for unnamed jump targets.
    markers = _labels_by_addr(image)
    for addr, name in targets.items():
        if name not in markers.get(addr, []):
            markers.setdefault(addr, []).append(name)
    program: list[dict] = []
    for addr, ins in enumerate(decoded):
        for name in sorted(markers.get(addr, [])):
            program.append({"label": name})
        program.append({"op": ins.name, **_op_fields(ins, image, regs, targets)})
    return {"version": 1, "program": program}


def format_program(doc: dict) -> str:
    """Program JSON text with one ``program`` entry per line (diff-friendly)."""
    import json
    head = {k: v for k, v in doc.items() if k != "program"}
    lines = ["{"] + [f"  {json.dumps(k)}: {json.dumps(v)}," for k, v in head.items()]
    entries = doc.get("program", [])
    lines.append('  "program": [')
    lines += [f"    {json.dumps(e)}{',' if i < len(entries) - 1 else ''}" for i, e in enumerate(entries)]
    lines += ["  ]", "}"]
    return "\n".join(lines) + "\n"


def recompiles_identically(image: Image) -> bool:
    """True if ``to_program(image)`` compiles back to exactly ``image``'s bytes."""
    from .compiler import compile_program
    try:
        again = compile_program(to_program(image), "<disasm>", layers=1 << isa.LAYER_BITS,
                                program_words=max(len(image.code), 1))
    except ValueError:
        return False
    return again.to_bytes() == image.to_bytes()


def _describe(ins: isa.Instruction, image: Image, regs: dict[int, str],
              labels: dict[int, list[str]]) -> str:
    """The listing's operands: each arg of the word's form by kind, then the fields no
    arg sets (LOOP's slot)."""
    f = ins.fields
    reg = ins.op.register(f)
    parts = []
    for arg in ins.op.form(f):
        key, raw = arg.field, f[arg.field]
        if arg.kind == "reg":
            parts.append(_reg_name(raw, regs))
        elif arg.kind == "true":
            parts.append(arg.name)
        elif arg.kind == "label":
            parts.append(f"{key}={raw:04d}{_label_note(raw, labels)}")
        elif arg.kind in isa.TABLE_KINDS:
            parts.append(f"{key}={raw} ({_quote(_table(image.table(arg.kind), raw))})")
        elif arg.kind == "loop_count":
            parts.append(f"{key}={'forever' if raw == 0 else raw}")
        else:
            parts.append(f"{key}={isa.FROM_RAW[arg.kind](raw, reg)}")
    parts += [f"{b.name}={f[b.name]}" for b in ins.op.assigned_bits]
    return " ".join(parts)


def _label_note(addr: int, labels: dict[int, list[str]]) -> str:
    return f" ({labels[addr][0]})" if addr in labels else ""


def _quote(s: str | None) -> str:
    return "?" if s is None else '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def listing(image: Image) -> str:
    """A human-readable listing: header, tables, then one line per word."""
    regs = _reg_names(image)
    labels = _labels_by_addr(image)
    lines = [f"; Copper image: {len(image.code)} words, ISA {isa.ISA_VERSION}, "
             f"sha256 {image.sha256()}"]
    if image.regmap:
        lines.append("; registers: " + ", ".join(f"{i}={n}" for i, n in image.regmap))
    for title, items in (("tags", image.tags), ("surfaces", image.surfaces),
                         ("timelines", image.timelines)):
        if items:
            lines.append(f"; {title}: " + ", ".join(f"{i}={_quote(s)}" for i, s in enumerate(items)))
    for addr, word in enumerate(image.code):
        for name in labels.get(addr, []):
            lines.append(f"{name}:")
        try:
            ins = isa.decode(word)
        except ValueError as exc:
            lines.append(f"  {addr:04d}  {word:08x}  ; invalid: {exc}")
            continue
        text = f"  {addr:04d}  {word:08x}  {ins.name:<10} {_describe(ins, image, regs, labels)}".rstrip()
        lines.append(text)
    for addr in sorted(a for a in labels if not 0 <= a < len(image.code)):
        lines.append(f"; labels outside the code at {addr}: {', '.join(labels[addr])}")
    return "\n".join(lines) + "\n"
