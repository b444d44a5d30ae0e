"""The Copper instruction set: the single source of truth.

Everything that knows about opcodes, field layouts, value ranges, registers or cycle
costs derives from this module: the validator, the compiler, the disassembler, the
software VM, the HDL decoder and ``docs/isa.md``. Change the ISA here and nowhere else.

Encoding
--------
Every op is one 32-bit word. Bits ``[31:28]`` hold the opcode; the op's fields sit at
fixed bit positions below that (see :data:`OPS`). Bits no field uses are *reserved* and
must be zero: a word with a reserved bit set is invalid. Opcode 0 is ``HALT`` so that
erased program memory stops a program instead of running off into it.

Timing model
------------
Time is counted in core clock cycles. An op *issues* in one cycle; the op's cost says
how many cycles later the next op of the same program issues. The VM implements this
model; the RTL must produce the same events at the same cycles. See ``CYCLES`` below and
the generated ``docs/isa.md``.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field

ISA_VERSION = 1

WORD_BITS = 32
OPCODE_SHIFT = 28
OPCODE_BITS = 4

#: Program memory words the reference hardware provides (per program context).
#: Encodable addresses go up to ``2**ADDR_BITS``.
DEFAULT_PROGRAM_WORDS = 1024
ADDR_BITS = 12

#: Programs that can run at once on the reference hardware (contexts).
DEFAULT_CONTEXTS = 4

#: Finite LOOP ops one program may contain: each gets its own hardware loop counter.
LOOP_SLOTS = 8
#: LOOP ``count`` encodes 1..LOOP_COUNT_MAX; the encoded value 0 means "forever" (-1).
LOOP_COUNT_BITS = 13
LOOP_COUNT_MAX = (1 << LOOP_COUNT_BITS) - 1

#: WAIT ``us`` encodes 1..WAIT_US_MAX microseconds.
WAIT_US_BITS = 27
WAIT_US_MAX = (1 << WAIT_US_BITS) - 1

#: FENCE timelines a single program may refer to, and the width of fence values.
FENCE_TIMELINES = 4
FENCE_VALUE_BITS = 24
FENCE_VALUE_MAX = (1 << FENCE_VALUE_BITS) - 1

#: IRQ tags and BIND_LAYER surfaces per program (string-table indices).
MAX_TAGS = 256
MAX_SURFACES = 256

# ---------------------------------------------------------------------------------
# Timing constants (core clock cycles). The VM and the RTL use exactly these numbers.
# ---------------------------------------------------------------------------------

#: MOVE, ADD, IRQ, NOP, BIND_LAYER: the next op issues one cycle later.
CYCLES_SIMPLE = 1
#: JUMP (always taken) and a taken LOOP: one cycle to issue, one to refetch.
CYCLES_BRANCH = 2
#: A LOOP that falls through (its count is exhausted): like a simple op.
CYCLES_LOOP_EXIT = 1
#: After a FENCE is observed satisfied in cycle c, the next op issues in c + this.
#: A FENCE satisfied when it issues therefore costs one cycle.
FENCE_RESUME_LATENCY = 1
#: A WAIT vsync issued in cycle t resumes in e + this, e = first vsync edge after t.
VSYNC_LATENCY = 1
#: Default vsync rate when none is configured.
DEFAULT_VSYNC_HZ = 60.0
#: Ops a program may issue without idling (a WAIT, or a FENCE that had to wait)
#: before the watchdog stops it. A run parameter; this is the default.
DEFAULT_WATCHDOG_OPS = 65536


def cycles_per_us(clock_hz: int) -> int:
    """Core cycles per microsecond. The clock must be a whole number of MHz."""
    if clock_hz <= 0 or clock_hz % 1_000_000:
        raise ValueError(
            f"clock_hz must be a positive whole number of MHz (got {clock_hz}): "
            "WAIT us N must be exactly N * clock_hz / 1e6 cycles")
    return clock_hz // 1_000_000


def vsync_period_cycles(clock_hz: int, vsync_hz: float) -> int:
    """Cycles between vsync edges: ``round(clock_hz / vsync_hz)``.

    Vsync edges fall on global cycles ``k * period`` for ``k >= 1``, counted from the
    last time-base reset (machine reset, or the start of a ``copper run``).
    """
    if vsync_hz <= 0:
        raise ValueError(f"vsync_hz must be > 0 (got {vsync_hz})")
    period = round(clock_hz / vsync_hz)
    if period < 2:
        raise ValueError(f"vsync_hz {vsync_hz} is too fast for clock_hz {clock_hz}")
    return period


def check_machine(*, watchdog_ops: int, layers: int, contexts: int) -> None:
    """Raise ValueError for machine parameters no engine (VM or RTL) can have."""
    if watchdog_ops < 1:
        raise ValueError(f"watchdog_ops must be >= 1 (got {watchdog_ops})")
    if not 1 <= layers <= 1 << LAYER_BITS:
        raise ValueError(f"layers must be 1..{1 << LAYER_BITS} (got {layers})")
    if contexts < 1:
        raise ValueError(f"contexts must be >= 1 (got {contexts})")


# ---------------------------------------------------------------------------------
# Registers: layer[N].x|y|alpha|z|visible
# ---------------------------------------------------------------------------------

#: Layers the reference hardware implements; the encoding has room for 32.
DEFAULT_LAYERS = 16
LAYER_BITS = 5
#: Register index = layer * REG_STRIDE + field index.
REG_STRIDE = 8


def int_range(width: int, signed: bool) -> tuple[int, int]:
    """The smallest and largest value of a ``width``-bit field (two's complement if
    ``signed``)."""
    if signed:
        return -(1 << (width - 1)), (1 << (width - 1)) - 1
    return 0, (1 << width) - 1


@dataclass(frozen=True)
class RegisterField:
    """One per-layer register: its index within the layer, width and signedness."""
    name: str
    index: int
    width: int
    signed: bool
    doc: str

    @property
    def min(self) -> int:
        return int_range(self.width, self.signed)[0]

    @property
    def max(self) -> int:
        return int_range(self.width, self.signed)[1]

    def wrap(self, value: int) -> int:
        """Reduce ``value`` modulo 2**width into this register's range (two's complement)."""
        value &= (1 << self.width) - 1
        if self.signed and value >> (self.width - 1):
            value -= 1 << self.width
        return value


REGISTER_FIELDS: tuple[RegisterField, ...] = (
    RegisterField("x", 0, 16, True, "horizontal position in pixels"),
    RegisterField("y", 1, 16, True, "vertical position in pixels"),
    RegisterField("alpha", 2, 8, False, "opacity, 0 transparent .. 255 opaque"),
    RegisterField("z", 3, 16, True, "stacking order, larger is nearer"),
    RegisterField("visible", 4, 1, False, "0 hidden, 1 shown"),
)
REGISTER_FIELD_BY_NAME = {f.name: f for f in REGISTER_FIELDS}
#: The register BIND_LAYER writes: the layer's surface, as the board's surface descriptor
#: number (0: none; ``copperline.firmware.surface_memory``). Programs cannot name it (MOVE
#: and ADD have no ``layer[n].surface``): only the host knows which descriptor holds which
#: surface, and it sets the number when it loads the program.
SURFACE_FIELD = RegisterField("surface", 5, 8, False, "bound surface descriptor, 0 none")
#: Every register of a layer in the register file: the program registers and the surface.
LAYER_FIELDS: tuple[RegisterField, ...] = REGISTER_FIELDS + (SURFACE_FIELD,)


def register_index(layer: int, field_name: str) -> int:
    """Index of ``layer[layer].field_name`` in the register file (``surface``: the
    register BIND_LAYER writes)."""
    f = SURFACE_FIELD if field_name == SURFACE_FIELD.name else REGISTER_FIELD_BY_NAME[field_name]
    return layer * REG_STRIDE + f.index


def register_name(index: int) -> str:
    """Name of register ``index``; raises ValueError for an index no register has."""
    layer, sub = divmod(index, REG_STRIDE)
    for f in REGISTER_FIELDS:
        if f.index == sub and layer < (1 << LAYER_BITS):
            return f"layer[{layer}].{f.name}"
    raise ValueError(f"no register has index {index}")


def register_names(layers: int) -> list[str | None]:
    """Names of the register indices of a machine with ``layers`` layers (None for the
    indices between a layer's fields and the next layer)."""
    return [register_name(i) if i % REG_STRIDE < len(REGISTER_FIELDS) else None
            for i in range(layers * REG_STRIDE)]


def layer_field(index: int) -> RegisterField:
    """The :class:`RegisterField` of register-file word ``index``: a program register's,
    or :data:`SURFACE_FIELD`; ValueError for a word no register has."""
    if index % REG_STRIDE == SURFACE_FIELD.index:
        return SURFACE_FIELD
    return register_field(index)


def register_field(index: int) -> RegisterField:
    """The :class:`RegisterField` (width, signedness) of program register ``index``."""
    sub = index % REG_STRIDE
    for f in REGISTER_FIELDS:
        if f.index == sub:
            return f
    raise ValueError(f"no register has index {index}")


def parse_register(name: str, layers: int = DEFAULT_LAYERS) -> int:
    """Index of a register named ``layer[N].field``; ValueError naming what is wrong."""
    import re
    m = re.fullmatch(r"layer\[(\d+)\]\.([a-z]+)", name)
    if not m:
        raise ValueError(f"{name!r} is not a register name (expected layer[N].x|y|alpha|z|visible)")
    layer, fname = int(m.group(1)), m.group(2)
    if fname not in REGISTER_FIELD_BY_NAME:
        raise ValueError(f"{name!r}: unknown register field {fname!r} "
                         f"(expected one of {', '.join(REGISTER_FIELD_BY_NAME)})")
    if layer >= layers:
        raise ValueError(f"{name!r}: layer {layer} out of range (0..{layers - 1})")
    return register_index(layer, fname)


# ---------------------------------------------------------------------------------
# Ops
# ---------------------------------------------------------------------------------

class Opcode(enum.IntEnum):
    HALT = 0
    NOP = 1
    WAIT = 2
    MOVE = 3
    ADD = 4
    IRQ = 5
    JUMP = 6
    LOOP = 7
    FENCE = 8
    BIND_LAYER = 9


@dataclass(frozen=True)
class BitField:
    """A field of the instruction word: bits ``[lsb + width - 1 : lsb]``."""
    name: str
    lsb: int
    width: int
    signed: bool = False
    doc: str = ""

    @property
    def mask(self) -> int:
        return ((1 << self.width) - 1) << self.lsb

    @property
    def min(self) -> int:
        return int_range(self.width, self.signed)[0]

    @property
    def max(self) -> int:
        return int_range(self.width, self.signed)[1]

    def insert(self, word: int, value: int) -> int:
        if not self.min <= value <= self.max:
            raise ValueError(f"field {self.name}: {value} does not fit in {self.width} "
                             f"{'signed ' if self.signed else ''}bits ({self.min}..{self.max})")
        return word | ((value & ((1 << self.width) - 1)) << self.lsb)

    def extract(self, word: int) -> int:
        value = (word >> self.lsb) & ((1 << self.width) - 1)
        if self.signed and value >> (self.width - 1):
            value -= 1 << self.width
        return value


@dataclass(frozen=True)
class JsonArg:
    """A field of the op in program JSON.

    ``kind`` says how the validator checks it and how it maps onto its bit field:
    ``reg`` (register name), ``reg_value`` (int in the register's range), ``int``
    (int in ``[min, max]``), ``label``, ``tag``, ``surface``, ``timeline`` (strings
    that go to the image's tables), ``layer`` (layer id), ``loop_count``
    (-1 or 1..LOOP_COUNT_MAX), ``true`` (the literal ``true``).
    """
    name: str
    kind: str
    doc: str
    min: int | None = None
    max: int | None = None
    #: The bit field that holds the value ("": the one named like the arg).
    bit: str = ""

    @property
    def field(self) -> str:
        """Name of the bit field that holds this arg."""
        return self.bit or self.name


#: Arg kinds whose JSON value is a name that only the program (or image) resolves: a
#: register name, a label, or a string of one of the image's tables.
NAME_KINDS = frozenset({"reg", "label", "tag", "surface", "timeline"})
#: Arg kinds whose field indexes one of the image's string tables.
TABLE_KINDS = ("tag", "surface", "timeline")

#: JSON value -> raw field value for the other kinds. ``reg`` is the
#: :class:`RegisterField` of the op's register (``reg_value`` is stored in its width).
TO_RAW = {
    "int": lambda value, reg: value,
    "layer": lambda value, reg: value,
    "true": lambda value, reg: 1,
    "loop_count": lambda value, reg: 0 if value == -1 else value,
    "reg_value": lambda value, reg: value & ((1 << reg.width) - 1),
}
#: Raw field value -> JSON value, the inverse of :data:`TO_RAW` (``reg`` is None when the
#: register index names no register: the raw value is shown as it is).
FROM_RAW = {
    "int": lambda raw, reg: raw,
    "layer": lambda raw, reg: raw,
    "true": lambda raw, reg: True,
    "loop_count": lambda raw, reg: raw or -1,
    "reg_value": lambda raw, reg: reg.wrap(raw) if reg is not None else raw,
}


@dataclass(frozen=True)
class OpSpec:
    """Everything about one op: opcode, JSON form, encoding, cycle cost, meaning."""
    name: str
    opcode: Opcode
    args: tuple[JsonArg, ...]
    bits: tuple[BitField, ...]
    cycles: str
    doc: str
    #: For ops with alternative JSON forms (WAIT): each form is a tuple of arg names.
    forms: tuple[tuple[str, ...], ...] = field(default=())
    #: Cycles from issue to the next op's issue when the op goes on to the next address
    #: at a fixed cost (None: it never does so: HALT, JUMP, WAIT).
    cost: int | None = None
    #: Cycles from issue to the next op's issue when the op branches (JUMP, a taken LOOP).
    branch_cost: int | None = None
    #: What is wrong with a word's decoded fields beyond widths and arg kinds, or None.
    problem: Callable[[dict[str, int]], str | None] | None = None

    def arg(self, name: str) -> JsonArg:
        return next(a for a in self.args if a.name == name)

    def bit(self, name: str) -> BitField:
        return next(b for b in self.bits if b.name == name)

    @property
    def reserved_mask(self) -> int:
        used = 0xF << OPCODE_SHIFT
        for b in self.bits:
            used |= b.mask
        return ~used & 0xFFFF_FFFF

    @property
    def assigned_bits(self) -> tuple[BitField, ...]:
        """The bit fields no JSON arg sets (LOOP's slot: the compiler assigns it)."""
        by_args = {a.field for a in self.args}
        return tuple(b for b in self.bits if b.name not in by_args)

    def form(self, fields: dict[str, int]) -> tuple[JsonArg, ...]:
        """The args a word with these raw ``fields`` expresses: all of them, or for an op
        with forms (WAIT) the form whose flags (``true`` args) are the set ones."""
        if not self.forms:
            return self.args
        flags = [a for a in self.args if a.kind == "true"]
        for names in self.forms:
            if all(bool(fields[a.field]) == (a.name in names) for a in flags):
                return tuple(self.arg(n) for n in names)
        raise ValueError(f"{self.name}: no form has the flags of {fields}")  # pragma: no cover

    def register(self, fields: dict[str, int]) -> RegisterField | None:
        """The register field of the op's ``reg`` arg (None: no such arg or register)."""
        for a in self.args:
            if a.kind == "reg":
                try:
                    return register_field(fields[a.field])
                except ValueError:
                    return None
        return None


def args_to_fields(spec: OpSpec, values: dict, resolve: Callable[[JsonArg, object], int]
                   ) -> dict[str, int]:
    """The raw bit fields of a (validated) op whose JSON args are ``values``.

    ``resolve(arg, value)`` gives the raw value of an arg of a :data:`NAME_KINDS` kind;
    fields no given arg sets are left out (they encode as 0).
    """
    fields: dict[str, int] = {}
    for a in spec.args:
        if a.name not in values:
            continue
        if a.kind in NAME_KINDS:
            fields[a.field] = resolve(a, values[a.name])
        else:
            fields[a.field] = TO_RAW[a.kind](values[a.name], spec.register(fields))
    return fields


def fields_to_args(ins: Instruction, resolve: Callable[[JsonArg, int], object]) -> dict:
    """The JSON args of a decoded word, in the op's arg order (the inverse of
    :func:`args_to_fields`); ``resolve(arg, raw)`` names the :data:`NAME_KINDS` kinds."""
    f = ins.fields
    reg = ins.op.register(f)
    return {a.name: resolve(a, f[a.field]) if a.kind in NAME_KINDS
            else FROM_RAW[a.kind](f[a.field], reg)
            for a in ins.op.form(f)}


def field_problem(ins: Instruction) -> str | None:
    """What is wrong with a decoded word's fields that the ISA alone can tell (a register
    index that names no register, a value beyond its register, a layer beyond the
    encoding, the op's own rules), or None. Table indices and targets need the image."""
    f = ins.fields
    reg_index = None
    for a in ins.op.form(f):
        raw = f[a.field]
        if a.kind == "reg":
            try:
                register_field(raw)
            except ValueError:
                return f"register index {raw} names no register"
            reg_index = raw
        elif a.kind == "reg_value":
            reg = register_field(reg_index)
            if not reg.signed and raw > reg.max:
                return (f"{a.field} {raw} does not fit register {register_name(reg_index)} "
                        f"({reg.min}..{reg.max})")
        elif a.kind == "layer" and raw >= 1 << LAYER_BITS:
            return f"{a.field} {raw} is out of range (0..{(1 << LAYER_BITS) - 1})"
    return ins.op.problem(f) if ins.op.problem else None


def _wait_problem(f: dict[str, int]) -> str | None:
    if f["vsync"] and f["us"]:
        return "vsync wait with a non-zero us field"
    if not f["vsync"] and f["us"] == 0:
        return "wait of 0 us"
    return None


def _loop_problem(f: dict[str, int]) -> str | None:
    if f["count"] == 0 and f["slot"]:
        return f"forever LOOP with loop slot {f['slot']} (must be 0)"
    return None


_REG = BitField("reg", 20, 8, doc="register index (layer * 8 + field)")
_ADDR = BitField("target", 0, ADDR_BITS, doc="target address (op index)")
_DELTA = BitField("delta", 0, 16, signed=True, doc="signed 16-bit delta")
#: LOOP's counter field: not in the JSON; the compiler gives finite LOOPs slots 0, 1, ...
LOOP_SLOT = BitField("slot", 25, (LOOP_SLOTS - 1).bit_length(),
                     doc="loop counter used by this LOOP (assigned by the compiler)")

OPS: tuple[OpSpec, ...] = (
    OpSpec(
        "HALT", Opcode.HALT, (), (),
        cycles="ends the program (state `done`) in the cycle it issues",
        doc="Stop the program. The compiler appends one when the program does not end in HALT."),
    OpSpec(
        "NOP", Opcode.NOP, (), (),
        cycles=f"{CYCLES_SIMPLE}",
        doc="Do nothing for one cycle.",
        cost=CYCLES_SIMPLE),
    OpSpec(
        "WAIT", Opcode.WAIT,
        (JsonArg("us", "int", "microseconds to wait", 1, WAIT_US_MAX),
         JsonArg("vsync", "true", "wait for the next vsync edge")),
        (BitField("vsync", 27, 1, doc="1: wait for vsync; 0: wait `us`"),
         BitField("us", 0, WAIT_US_BITS, doc="microseconds, 1..2^27-1 (0 when vsync)")),
        cycles=("`us`: exactly N * clock_hz/1e6; `vsync`: the next op issues at e + "
                f"{VSYNC_LATENCY}, e = the first vsync edge after the WAIT issued"),
        doc="Wait N microseconds, or for the next vsync edge.",
        forms=(("us",), ("vsync",)),
        problem=_wait_problem),
    OpSpec(
        "MOVE", Opcode.MOVE,
        (JsonArg("reg", "reg", "destination register, `layer[N].field`"),
         JsonArg("value", "reg_value", "value, within the register's range")),
        (_REG, BitField("value", 0, 16, doc="value, two's complement in the register's width")),
        cycles=f"{CYCLES_SIMPLE}",
        doc="Set a register. Emits a `reg` event with the new value.",
        cost=CYCLES_SIMPLE),
    OpSpec(
        "ADD", Opcode.ADD,
        (JsonArg("reg", "reg", "register to change, `layer[N].field`"),
         JsonArg("delta", "int", "signed amount to add", _DELTA.min, _DELTA.max)),
        (_REG, _DELTA),
        cycles=f"{CYCLES_SIMPLE}",
        doc="Add to a register, wrapping modulo 2^width of the register "
            "(two's complement for signed registers). Emits a `reg` event.",
        cost=CYCLES_SIMPLE),
    OpSpec(
        "IRQ", Opcode.IRQ,
        (JsonArg("tag", "tag", "event tag, 1..64 characters"),),
        (BitField("tag", 0, 8, doc="index into the image's tag table"),),
        cycles=f"{CYCLES_SIMPLE}",
        doc="Emit `{\"event\":\"irq\",\"tag\":...}`. Never stalls the program.",
        cost=CYCLES_SIMPLE),
    OpSpec(
        "JUMP", Opcode.JUMP,
        (JsonArg("label", "label", "label to jump to", bit="target"),),
        (_ADDR,),
        cycles=f"{CYCLES_BRANCH}",
        doc="Continue at a label.",
        branch_cost=CYCLES_BRANCH),
    OpSpec(
        "LOOP", Opcode.LOOP,
        (JsonArg("count", "loop_count", f"times the body runs in total: 1..{LOOP_COUNT_MAX}, or -1 forever"),
         JsonArg("label", "label", "first op of the loop body", bit="target")),
        (LOOP_SLOT,
         BitField("target", 13, ADDR_BITS, doc="address of the body's first op"),
         BitField("count", 0, LOOP_COUNT_BITS, doc="body runs this many times; 0 = forever")),
        cycles=f"{CYCLES_BRANCH} when it jumps back, {CYCLES_LOOP_EXIT} when it falls through",
        doc=("Placed after a body that starts at `label`: the body runs `count` times in total. "
             "The loop counter re-arms when the loop falls through, so nested loops work."),
        cost=CYCLES_LOOP_EXIT, branch_cost=CYCLES_BRANCH, problem=_loop_problem),
    OpSpec(
        "FENCE", Opcode.FENCE,
        (JsonArg("timeline", "timeline", "timeline name, e.g. `vk`"),
         JsonArg("value", "int", "wait until the timeline is >= this", 0, FENCE_VALUE_MAX)),
        (BitField("timeline", 24, 2, doc="index into the image's timeline table"),
         BitField("value", 0, FENCE_VALUE_BITS, doc="fence value")),
        cycles=(f"{CYCLES_SIMPLE} when already satisfied; otherwise the next op issues "
                f"{FENCE_RESUME_LATENCY} cycle after the cycle the value is seen >= `value`"),
        doc="Wait until the host has set the timeline's value to at least `value` (values are monotonic).",
        cost=CYCLES_SIMPLE),
    OpSpec(
        "BIND_LAYER", Opcode.BIND_LAYER,
        (JsonArg("id", "layer", "layer id", 0, DEFAULT_LAYERS - 1, bit="layer"),
         JsonArg("surface", "surface", "surface to show on the layer (path or name)")),
        (BitField("layer", 20, 8, doc="layer id"),
         BitField("surface", 0, 8, doc="index into the image's surface table")),
        cycles=f"{CYCLES_SIMPLE}",
        doc=("Bind a layer to a surface (a PNG, or raw RGBA named `path@WxH`; docs/display.md): "
             "writes the layer's `surface` register, which the display shows. Emits a `bind` "
             "event; the binding shows in `status`."),
        cost=CYCLES_SIMPLE),
)

OP_BY_NAME: dict[str, OpSpec] = {op.name: op for op in OPS}
OP_BY_CODE: dict[int, OpSpec] = {int(op.opcode): op for op in OPS}


@dataclass(frozen=True)
class Instruction:
    """A decoded word: the op and its raw bit-field values."""
    op: OpSpec
    fields: dict[str, int]

    @property
    def name(self) -> str:
        return self.op.name


def encode(op_name: str, **fields: int) -> int:
    """Encode one op from its raw bit-field values; raises ValueError if one does not fit."""
    spec = OP_BY_NAME[op_name]
    extra = set(fields) - {b.name for b in spec.bits}
    if extra:
        raise ValueError(f"{op_name}: no bit field named {', '.join(sorted(extra))}")
    word = int(spec.opcode) << OPCODE_SHIFT
    for b in spec.bits:
        word = b.insert(word, fields.get(b.name, 0))
    return word


def decode(word: int) -> Instruction:
    """Decode one word; raises ValueError for an unknown opcode or a set reserved bit."""
    if not 0 <= word <= 0xFFFF_FFFF:
        raise ValueError(f"word {word:#x} is not 32 bits")
    code = word >> OPCODE_SHIFT
    spec = OP_BY_CODE.get(code)
    if spec is None:
        raise ValueError(f"unknown opcode {code} in word {word:#010x}")
    if word & spec.reserved_mask:
        raise ValueError(f"{spec.name} word {word:#010x} has reserved bits set "
                         f"({word & spec.reserved_mask:#010x})")
    return Instruction(spec, {b.name: b.extract(word) for b in spec.bits})


# ---------------------------------------------------------------------------------
# Execution rules. The VM implements them; the RTL matches them cycle for cycle.
# docs/isa.md prints this text.
# ---------------------------------------------------------------------------------

EXECUTION_RULES = """\
1. **Time base.** A global cycle counter runs from the last time-base reset (machine
   reset; `copper run` resets it and starts its program at global cycle 0). Vsync edges
   fall on global cycles `k * P`, `k >= 1`, `P = round(clock_hz / vsync_hz)`.
   `clock_hz` is the rate of these core cycles. (The reference RTL serves its program
   contexts in turn, so its fabric clock runs a few times faster: see docs/core.md.)
2. **Program time.** A program started in global cycle `S` issues its first op in `S`.
   Its events carry `cycle = global - S` and `time_us = cycle * 1e6 / clock_hz`.
   The program's image must be in program memory at least one core cycle before `S`.
3. **One op per cycle per program.** An op issues in one cycle; its cost (table above)
   says how many cycles later the program's next op issues.
4. **WAIT.** `WAIT us N` issued in `t`: next op in `t + N * clock_hz / 1e6` exactly
   (the clock must be a whole number of MHz). `WAIT vsync` issued in `t`: next op in
   `e + VSYNC_LATENCY`, `e` the first vsync edge with `e > t`.
5. **FENCE** `timeline T, value V` issued in `t`: if T's value is `>= V` in `t`, the
   next op issues in `t + 1`; otherwise in `c + FENCE_RESUME_LATENCY`, `c` the first
   cycle in which T's value is seen `>= V`. Timeline values are set by the host,
   start at 0, only grow, and are shared by name across programs.
6. **LOOP** `count N, label L` keeps a counter per LOOP op (its `slot`), 0 when idle.
   On issue: N = forever: jump. Else if the counter is 0: load `N - 1`; jump if that is
   non-zero. Else decrement; jump if the result is non-zero. A LOOP that falls through
   leaves its counter at 0 (re-armed), so an enclosing loop can run it again.
   Counters are cleared when a program starts.
7. **Registers** are shared by all programs, start at 0 on machine reset, and wrap
   modulo `2^width` (two's complement for signed registers). MOVE and ADD emit a `reg`
   event with the new value. Machine reset is when a backend opens: every `copper run`
   on every backend, and copperd's start; loading or starting a program keeps the
   registers (other programs may own them). On a board the fpga backend clears them
   at open (the gateware's reset-all keeps them), so a run starts from the same
   registers, fences (0) and time base on every backend.
8. **Several programs.** Each running program has a context `slot` (0, 1, ...). When
   several programs issue ops in the same cycle, the ops take effect in ascending slot
   order: each sees the registers as left by the lower slots (two ADDs to one register
   in one cycle both count), and their events are ordered by slot.
9. **Watchdog.** A program's idle counter starts at 0. Before an op issues, if the
   counter equals `watchdog_ops` (default DEFAULT_WATCHDOG_OPS) the op does not issue and
   the program faults (`state` event, `reason: "watchdog"`) in that cycle. After an op
   issues, a WAIT or a FENCE that had to wait resets the counter to 0; any other op
   adds 1.
10. **HALT** ends the program in the cycle it issues (`state` event `done`, reason
   `halt`). Starting a program emits `state` `running` at cycle 0; a host stop emits
   `stopped`.
"""


def fence_update_problem(timeline, value, current: int) -> str | None:
    """What is wrong with setting ``timeline`` from ``current`` to ``value``, or None.

    Fence values are integers of FENCE_VALUE_BITS and only grow (rule 5)."""
    if not isinstance(timeline, str) or not timeline:
        return f"fence: timeline must be a non-empty name, got {timeline!r}"
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= FENCE_VALUE_MAX:
        return (f"fence {timeline!r}: value {value!r} is not an integer in "
                f"0..{FENCE_VALUE_MAX}")
    if value < current:
        return f"fence {timeline!r}: values are monotonic; {value} < current {current}"
    return None
