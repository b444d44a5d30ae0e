"""Copper program JSON: loading and validation.

A program is ``{"version": 1, "labels": {...}, "program": [...]}``. The ``program`` array
holds ops (``{"op": "MOVE", "reg": "layer[1].x", "value": 100}``) and label markers
(``{"label": "loop"}``, naming the next op). The optional top-level ``labels`` object maps a
label name to an index into ``program`` (of a marker or of an op; it names the first op at or
after that index; ``len(program)`` names the end). A label may be defined both ways when both
definitions name the same op.

Ops and their fields come from :data:`copperline.firmware.isa.OPS`. :func:`validate` checks
everything the compiler relies on and reports *all* problems, each naming the source file,
the entry index, the op and the field. The compiler (:mod:`.compiler`) calls it first.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass

from . import isa

PROGRAM_VERSION = 1

#: Length limits of the strings a program names (in characters).
TAG_MAX_LEN = 64
TIMELINE_MAX_LEN = 64
LABEL_MAX_LEN = 64
SURFACE_MAX_LEN = 255

#: String kinds: (length limit, table size limit, what to call one).
_STRING_KINDS = {
    "tag": (TAG_MAX_LEN, isa.MAX_TAGS, "tag"),
    "surface": (SURFACE_MAX_LEN, isa.MAX_SURFACES, "surface"),
    "timeline": (TIMELINE_MAX_LEN, isa.FENCE_TIMELINES, "timeline"),
}

_TOP_KEYS = ("version", "labels", "program")


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a program, and where.

    ``index`` is the entry's index in the ``program`` array (None for top-level problems),
    ``op`` the entry's op name (if it has a valid one), ``field`` the field at fault.
    ``line``/``col`` are set for JSON syntax errors.
    """
    source: str
    index: int | None
    op: str | None
    field: str | None
    message: str
    line: int | None = None
    col: int | None = None

    def __str__(self) -> str:
        if self.line is not None:
            return f"{self.source}:{self.line}:{self.col}: {self.message}"
        parts = [self.source]
        if self.index is not None:
            parts.append(f"program[{self.index}]" + (f" ({self.op})" if self.op else ""))
            if self.field is not None:
                parts.append(f"field '{self.field}'")
        elif self.field is not None:
            parts.append(self.field)
        return ": ".join(parts + [self.message])

    def to_dict(self) -> dict:
        """JSON form (for ``copper check --json``)."""
        d = {"source": self.source, "index": self.index, "op": self.op,
             "field": self.field, "message": self.message, "text": str(self)}
        if self.line is not None:
            d.update(line=self.line, col=self.col)
        return d


class ProgramError(ValueError):
    """A program that cannot be compiled; ``problems`` lists everything wrong, in order."""

    def __init__(self, problems: list[Problem]):
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class _Obj(dict):
    """A JSON object that remembers keys it had more than once (json keeps only the last)."""
    duplicate_keys: tuple[str, ...] = ()


def _pairs_hook(pairs):
    obj = _Obj()
    dups = []
    for k, v in pairs:
        if k in obj and k not in dups:
            dups.append(k)
        obj[k] = v
    if dups:
        obj.duplicate_keys = tuple(dups)
    return obj


def parse_program(text: str, source: str = "<program>") -> dict:
    """Parse program JSON text; syntax errors raise :class:`ProgramError` with line:col."""
    try:
        return json.loads(text, object_pairs_hook=_pairs_hook)
    except json.JSONDecodeError as exc:
        raise ProgramError([Problem(source, None, None, None, f"invalid JSON: {exc.msg}",
                                    line=exc.lineno, col=exc.colno)]) from None


def load_program(path) -> dict:
    """Read a program JSON file (not yet validated).

    Unreadable files and JSON syntax errors raise :class:`ProgramError` naming the file
    (and ``file:line:col`` for syntax errors).
    """
    source = str(path)
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise ProgramError([Problem(source, None, None, None,
                                    f"cannot read: {exc.strerror or exc}")]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProgramError([Problem(source, None, None, None,
                                    f"not UTF-8 text (byte {exc.start}: {exc.reason})")]) from None
    return parse_program(text, source)


def _type_name(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def _is_int(value) -> bool:
    # bool is a subclass of int in Python; in a program `true` is never a number.
    return isinstance(value, int) and not isinstance(value, bool)


def _show(value) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


def is_marker(entry) -> bool:
    """True for a label marker entry (an object with ``label`` and no ``op``)."""
    return isinstance(entry, dict) and "op" not in entry and "label" in entry


def label_addresses(entries: list) -> list[int]:
    """For each index 0..len(entries): the address of the first op at or after it."""
    out, addr = [], 0
    for e in entries:
        out.append(addr)
        if not is_marker(e):
            addr += 1
    out.append(addr)
    return out


def code_words(ops: list, labels: dict[str, int]) -> int:
    """Words of code: the ops, plus the HALT the compiler appends when the last op is not
    HALT or a label names the end of the program (a label must name a real word)."""
    ends_in_halt = bool(ops) and ops[-1][1].get("op") == "HALT"
    label_at_end = any(addr == len(ops) for addr in labels.values())
    return len(ops) + (0 if ends_in_halt and not label_at_end else 1)


@dataclass
class Checked:
    """What validation learned, for the compiler: ops, resolved labels, registers."""
    ops: list[tuple[int, dict]]            # (program index, entry) of each op, in order
    labels: dict[str, int]                  # label -> address
    registers: dict[int, int]               # program index -> register index (MOVE/ADD)


def validate(doc, source: str = "<program>", *, program_words: int = isa.DEFAULT_PROGRAM_WORDS,
             layers: int = isa.DEFAULT_LAYERS) -> Checked:
    """Check a program against the ISA and the hardware limits.

    Raises :class:`ProgramError` listing every problem found, in order; returns what the
    compiler needs otherwise. ``program_words`` is the program memory size (the HALT the
    compiler appends counts); ``layers`` the number of display layers.
    """
    if not 1 <= program_words <= 1 << isa.ADDR_BITS:
        raise ValueError(f"program_words must be 1..{1 << isa.ADDR_BITS} (got {program_words})")
    if not 1 <= layers <= 1 << isa.LAYER_BITS:
        raise ValueError(f"layers must be 1..{1 << isa.LAYER_BITS} (got {layers})")
    return _Validator(source, program_words, layers).run(doc)


class _Validator:
    def __init__(self, source: str, program_words: int, layers: int):
        self.source = source
        self.program_words = program_words
        self.layers = layers
        self.problems: list[Problem] = []
        #: Labels whose definition is already reported: uses of them are not reported again.
        self.broken_labels: set[str] = set()

    def top(self, field: str | None, message: str) -> None:
        self.problems.append(Problem(self.source, None, None, field, message))

    def at(self, index: int, op: str | None, field: str | None, message: str) -> None:
        self.problems.append(Problem(self.source, index, op, field, message))

    # -- top level ----------------------------------------------------------------------
    def run(self, doc) -> Checked:
        if not isinstance(doc, dict):
            self.top(None, f"a program must be a JSON object, got {_type_name(doc)}")
            raise ProgramError(self.problems)
        for key in getattr(doc, "duplicate_keys", ()):
            self.top(key, "key given more than once")
        if "version" not in doc:
            self.top("version", f"missing (expected {PROGRAM_VERSION})")
        elif not _is_int(doc["version"]) or doc["version"] != PROGRAM_VERSION:
            self.top("version", f"unsupported program version {_show(doc['version'])} "
                                f"(expected {PROGRAM_VERSION})")
        for key in doc:
            if key not in _TOP_KEYS:
                self.top(key, f"unknown top-level key (expected {', '.join(_TOP_KEYS)})")
        entries = doc.get("program")
        if "program" not in doc:
            self.top("program", "missing (expected an array of ops)")
            entries = []
        elif not isinstance(entries, list):
            self.top("program", f"expected an array of ops, got {_type_name(entries)}")
            entries = []

        addresses = label_addresses(entries)
        labels = self.collect_labels(doc, entries, addresses)

        ops: list[tuple[int, dict]] = []
        registers: dict[int, int] = {}
        self.tables = {kind: {} for kind in _STRING_KINDS}
        self.finite_loops = 0
        for index, entry in enumerate(entries):
            if not isinstance(entry, dict):
                self.at(index, None, None, f"expected an object (an op or a label marker), "
                                           f"got {_type_name(entry)} {_show(entry)}")
                continue
            if is_marker(entry):
                continue  # checked by collect_labels
            ops.append((index, entry))
            self.check_op(index, entry, labels, registers)

        if isinstance(doc.get("program"), list) and not ops:
            self.top("program", "the program is empty (it needs at least one op)")
        words = code_words(ops, labels)
        if words > self.program_words:
            extra = "" if words == len(ops) else " + the HALT the compiler appends"
            self.top("program", f"the program needs {words} words ({len(ops)} ops{extra}) but "
                                f"program memory holds {self.program_words}")
        if self.problems:
            raise ProgramError(self.problems)
        return Checked(ops, labels, registers)

    def check_label_name(self, name, where) -> bool:
        if not isinstance(name, str):
            where(f"a label name must be a string, got {_type_name(name)} {_show(name)}")
            return False
        if not 1 <= len(name) <= LABEL_MAX_LEN:
            where(f"label name must be 1..{LABEL_MAX_LEN} characters (got {len(name)})")
            return False
        return True

    def collect_labels(self, doc, entries, addresses) -> dict[str, int]:
        """Label definitions from markers and the ``labels`` object -> address."""
        labels: dict[str, int] = {}
        marker_at: dict[str, int] = {}
        for index, entry in enumerate(entries):
            if not is_marker(entry):
                continue
            for key in getattr(entry, "duplicate_keys", ()):
                self.at(index, None, key, "key given more than once")
            extra = sorted(set(entry) - {"label"})
            if extra:
                self.at(index, None, extra[0], "unknown field in a label marker "
                                               "(a marker is just {\"label\": NAME}; an op needs 'op')")
            name = entry["label"]
            if not self.check_label_name(name, lambda m, i=index: self.at(i, None, "label", m)):
                continue
            if name in marker_at:
                self.at(index, None, "label", f"duplicate label {name!r} "
                                              f"(already defined by the marker at program[{marker_at[name]}])")
                continue
            marker_at[name] = index
            labels[name] = addresses[index]

        table = doc.get("labels", {})
        if not isinstance(table, dict):
            self.top("labels", f"expected an object mapping label names to program indices, "
                               f"got {_type_name(table)}")
            return labels
        for key in getattr(table, "duplicate_keys", ()):
            self.top("labels", f"label {key!r} given more than once")
        for name, idx in table.items():
            if not self.check_label_name(name, lambda m: self.top("labels", m)):
                continue
            if not _is_int(idx):
                self.broken_labels.add(name)
                self.top("labels", f"label {name!r}: expected a program index (integer), "
                                   f"got {_type_name(idx)} {_show(idx)}")
                continue
            if not 0 <= idx <= len(entries):
                self.broken_labels.add(name)
                self.top("labels", f"label {name!r}: index {idx} is outside the program "
                                   f"(0..{len(entries)})")
                continue
            addr = addresses[idx]
            if name in labels and labels[name] != addr:
                self.top("labels", f"duplicate label {name!r}: labels[{name!r}] = {idx} names op "
                                   f"{addr}, but the marker at program[{marker_at[name]}] names "
                                   f"op {labels[name]}")
                continue
            labels[name] = addr
        return labels

    # -- one op -------------------------------------------------------------------------
    def check_op(self, index: int, entry: dict, labels: dict, registers: dict) -> None:
        if "op" not in entry:
            self.at(index, None, "op", "missing field: an op needs 'op' "
                                       "(a label marker is just {\"label\": NAME})")
            return
        name = entry["op"]
        if not isinstance(name, str):
            self.at(index, None, "op", f"expected an op name (string), got {_type_name(name)} {_show(name)}")
            return
        spec = isa.OP_BY_NAME.get(name)
        if spec is None:
            close = difflib.get_close_matches(name.upper(), isa.OP_BY_NAME, n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            self.at(index, None, "op", f"unknown op {name!r} ({hint}ops: {', '.join(isa.OP_BY_NAME)})")
            return
        for key in getattr(entry, "duplicate_keys", ()):
            self.at(index, name, key, "key given more than once")
        allowed = [a.name for a in spec.args]
        given = [k for k in entry if k != "op"]
        for key in given:
            if key not in allowed:
                takes = f"takes {', '.join(allowed)}" if allowed else "takes no fields"
                self.at(index, name, key, f"unknown field ({name} {takes})")
        if spec.forms:
            present = [f for f in spec.forms if all(k in entry for k in f)]
            if not present:
                alts = " or ".join(" + ".join(repr(k) for k in f) for f in spec.forms)
                self.at(index, name, None, f"missing field: {name} needs {alts}")
                return
            if len(present) > 1:
                self.at(index, name, None, f"{name} takes one of "
                        + " or ".join(repr(f[0]) for f in present) + ", not both")
                return
            wanted = present[0]
        else:
            wanted = tuple(allowed)
            for key in wanted:
                if key not in entry:
                    self.at(index, name, key, "missing field")
        reg_index = None
        for key in wanted:
            if key not in entry:
                continue
            arg = spec.arg(key)
            value = entry[key]
            if arg.kind == "reg":
                reg_index = self.check_reg(index, name, key, value)
                if reg_index is not None:
                    registers[index] = reg_index
            elif arg.kind == "reg_value":
                pass  # needs the register: checked below
            else:
                self.check_arg(index, spec, arg, value, labels)
        for key in wanted:
            if key in entry and spec.arg(key).kind == "reg_value":
                self.check_reg_value(index, name, key, entry[key], reg_index)

    def check_reg(self, index, op, key, value):
        if not isinstance(value, str):
            self.at(index, op, key, f"expected a register name (string), got {_type_name(value)} {_show(value)}")
            return None
        try:
            return isa.parse_register(value, self.layers)
        except ValueError as exc:
            self.at(index, op, key, str(exc))
            return None

    def check_reg_value(self, index, op, key, value, reg_index):
        if not _is_int(value):
            self.at(index, op, key, f"expected an integer, got {_type_name(value)} {_show(value)}")
            return
        if reg_index is None:
            return  # the register is already reported
        reg = isa.register_field(reg_index)
        if not reg.min <= value <= reg.max:
            kind = "signed" if reg.signed else "unsigned"
            self.at(index, op, key, f"{value} is out of range for {isa.register_name(reg_index)} "
                                    f"({reg.width}-bit {kind}: {reg.min}..{reg.max})")

    def check_arg(self, index, spec, arg, value, labels):
        op, key = spec.name, arg.name
        kind = arg.kind
        if kind == "true":
            if value is not True:
                self.at(index, op, key, f"must be true, got {_show(value)}")
            return
        if kind in ("int", "layer", "loop_count"):
            if not _is_int(value):
                self.at(index, op, key, f"expected an integer, got {_type_name(value)} {_show(value)}")
                return
            if kind == "layer":
                if not 0 <= value < self.layers:
                    self.at(index, op, key, f"layer {value} out of range (0..{self.layers - 1})")
            elif kind == "loop_count":
                if value != -1 and not 1 <= value <= isa.LOOP_COUNT_MAX:
                    self.at(index, op, key, f"bad loop count {value}: the body runs count times in "
                                            f"total, so count is 1..{isa.LOOP_COUNT_MAX}, or -1 for forever")
                elif value != -1:
                    self.finite_loops += 1
                    if self.finite_loops > isa.LOOP_SLOTS:
                        self.at(index, op, key, f"too many finite LOOPs: this is finite LOOP number "
                                                f"{self.finite_loops}, a program may have {isa.LOOP_SLOTS} "
                                                f"(one hardware loop counter each)")
            else:
                self.check_int_range(index, spec, arg, value)
            return
        if kind == "label":
            if (self.check_label_name(value, lambda m: self.at(index, op, key, m))
                    and value not in labels and value not in self.broken_labels):
                close = difflib.get_close_matches(value, labels, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                self.at(index, op, key, f"missing label {value!r}: no marker or labels entry defines it{hint}")
            return
        if kind in _STRING_KINDS:
            max_len, max_count, what = _STRING_KINDS[kind]
            if not isinstance(value, str):
                self.at(index, op, key, f"expected a {what} name (string), got {_type_name(value)} {_show(value)}")
                return
            if not 1 <= len(value) <= max_len:
                self.at(index, op, key, f"{what} must be 1..{max_len} characters (got {len(value)})")
                return
            table = self.tables[kind]
            if value not in table:
                table[value] = len(table)
                if len(table) > max_count:
                    self.at(index, op, key, f"too many {what}s: {value!r} is distinct {what} number "
                                            f"{len(table)}, a program may use {max_count}")
            return
        raise AssertionError(f"isa.OPS uses an unknown JsonArg kind {kind!r}")  # pragma: no cover

    def check_int_range(self, index, spec, arg, value):
        lo, hi = arg.min, arg.max
        if lo <= value <= hi:
            return
        op, key = spec.name, arg.name
        if spec.name == "WAIT" and key == "us" and value <= 0:
            self.at(index, op, key, f"wait must be positive: {value} us (1..{hi})")
            return
        b = spec.bit(arg.field)
        if (b.min, b.max) == (lo, hi) or not b.min <= value <= b.max:
            sign = "signed " if b.signed else ""
            self.at(index, op, key, f"{value} does not fit in {sign}{b.width} bits ({lo}..{hi})")
            return
        self.at(index, op, key, f"{value} is out of range ({lo}..{hi})")
