"""The op table of firmware/isa.py: every JSON arg has its bit field, the codecs invert
each other, and the costs and ranges the engines read are declared there."""

from __future__ import annotations

import pytest

from copperline.firmware import isa


@pytest.mark.parametrize("spec", isa.OPS, ids=lambda s: s.name)
def test_every_arg_has_a_bit_field_and_every_field_an_arg(spec):
    fields = {b.name for b in spec.bits}
    assert {a.field for a in spec.args} <= fields
    assert fields - {a.field for a in spec.args} == {b.name for b in spec.assigned_bits}
    assert spec.assigned_bits in ((), (isa.LOOP_SLOT,))


def test_loop_slot_field_holds_every_slot():
    assert 1 << isa.LOOP_SLOT.width == isa.LOOP_SLOTS
    assert isa.OP_BY_NAME["LOOP"].bit("slot") is isa.LOOP_SLOT


def test_int_args_fit_their_fields():
    for spec in isa.OPS:
        for a in spec.args:
            if a.kind == "int":
                b = spec.bit(a.field)
                assert b.min <= a.min <= a.max <= b.max, (spec.name, a.name)
    delta = isa.OP_BY_NAME["ADD"].arg("delta")
    assert (delta.min, delta.max) == (-32768, 32767)


def test_costs():
    simple = [s.name for s in isa.OPS if s.cost == isa.CYCLES_SIMPLE and s.branch_cost is None]
    assert simple == ["NOP", "MOVE", "ADD", "IRQ", "FENCE", "BIND_LAYER"]
    assert isa.OP_BY_NAME["JUMP"].branch_cost == isa.CYCLES_BRANCH
    assert isa.OP_BY_NAME["JUMP"].cost is None
    loop = isa.OP_BY_NAME["LOOP"]
    assert (loop.cost, loop.branch_cost) == (isa.CYCLES_LOOP_EXIT, isa.CYCLES_BRANCH)
    for name in ("HALT", "WAIT"):
        assert isa.OP_BY_NAME[name].cost is None and isa.OP_BY_NAME[name].branch_cost is None


NAMES = {"reg": ("layer[1].x", 8), "label": ("L", 3), "tag": ("t", 4), "surface": ("s", 2),
         "timeline": ("vk", 1)}

SAMPLES = [
    ("NOP", {}),
    ("WAIT", {"us": 5}),
    ("WAIT", {"vsync": True}),
    ("MOVE", {"reg": "layer[1].x", "value": -2}),
    ("ADD", {"reg": "layer[1].x", "delta": -300}),
    ("IRQ", {"tag": "t"}),
    ("JUMP", {"label": "L"}),
    ("LOOP", {"count": -1, "label": "L"}),
    ("LOOP", {"count": 7, "label": "L"}),
    ("FENCE", {"timeline": "vk", "value": 9}),
    ("BIND_LAYER", {"id": 3, "surface": "s"}),
]


@pytest.mark.parametrize("name, values", SAMPLES)
def test_args_to_fields_and_back(name, values):
    spec = isa.OP_BY_NAME[name]
    fields = isa.args_to_fields(spec, values, lambda arg, v: NAMES[arg.kind][1])
    ins = isa.decode(isa.encode(name, **fields))
    back = {raw: name for name, raw in NAMES.values()}
    assert isa.fields_to_args(ins, lambda arg, raw: back[raw]) == values
    assert isa.field_problem(ins) is None


@pytest.mark.parametrize("name, fields, problem", [
    ("WAIT", {"vsync": 1, "us": 4}, "vsync wait with a non-zero us field"),
    ("WAIT", {"us": 0}, "wait of 0 us"),
    ("LOOP", {"count": 0, "slot": 2}, "forever LOOP with loop slot 2 (must be 0)"),
    ("MOVE", {"reg": 5, "value": 1}, "register index 5 names no register"),
    ("MOVE", {"reg": 2, "value": 256}, "value 256 does not fit register layer[0].alpha (0..255)"),
    ("BIND_LAYER", {"layer": 32}, "layer 32 is out of range (0..31)"),
])
def test_field_problem(name, fields, problem):
    assert isa.field_problem(isa.decode(isa.encode(name, **fields))) == problem
