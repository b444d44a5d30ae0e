"""The core's event records: the layout against the gateware's, the decoder, the
timestamp unwrapping and the converter to trace events (firmware/board_interface.py,
firmware/core_events.py)."""

from __future__ import annotations

import pytest

from copperline.firmware import isa
from copperline.firmware.board_interface import (EventKind, TimestampUnwrapper, decode_record,
                                                 iter_records, record_bytes, slot_bits_for)
from copperline.firmware.compiler import compile_program
from copperline.firmware.core_events import CoreEventError, RecordConverter

SB = 2   # 4 contexts


def pack(kind, started, slot, payload, ts, sb=SB):
    return kind | started << 3 | slot << 4 | payload << (4 + sb) | ts << (4 + sb + 24)


def test_record_layout_matches_the_core():
    from copperline.hdl.event_fifo import event_layout
    assert record_bytes(slot_bits_for(4)) == (event_layout(2).size + 7) // 8 == 8
    assert slot_bits_for(5) == 3 and record_bytes(3) == 8
    raw = pack(EventKind.IRQ, 1, 3, 0xABCDEF, 0xFEDCBA98)
    for form in (raw, raw.to_bytes(8, "little")):
        r = decode_record(form, SB)
        assert (r.kind, r.started, r.slot, r.payload, r.timestamp) == \
            (EventKind.IRQ, True, 3, 0xABCDEF, 0xFEDCBA98)


def test_timestamps_unwrap_across_2_to_the_32():
    u = TimestampUnwrapper()
    assert [u.unwrap(t) for t in (5, 0xFFFFFFF0, 3, 3, 10)] == \
        [5, 0xFFFFFFF0, (1 << 32) + 3, (1 << 32) + 3, (1 << 32) + 10]
    u.rebase(0)
    assert u.unwrap(7) == 7


def test_converter_makes_vm_shaped_events():
    image = compile_program({"version": 1, "program": [
        {"op": "BIND_LAYER", "id": 2, "surface": "a.rgba"},
        {"op": "IRQ", "tag": "go"},
        {"op": "HALT"}]})
    conv = RecordConverter(3_000_000)
    conv.set_slot(1, 7, image)
    reg = isa.register_index(1, "x")
    start = 1000
    ev = conv.convert(decode_record(pack(EventKind.BIND, 1, 1, isa.register_index(2, "surface") << 16 | 0, start), SB), start)
    assert ev == [{"event": "state", "prog": 7, "state": "running", "reason": "start", "pc": 0,
                   "cycle": 0, "time_us": 0.0},
                  {"event": "bind", "prog": 7, "layer": 2, "surface": "a.rgba", "cycle": 0,
                   "time_us": 0.0}]
    assert conv.bindings(1) == {2: "a.rgba"}
    # a negative x: raw 16-bit two's complement, sign-extended by the register's width
    ev = conv.convert(decode_record(pack(EventKind.REG, 0, 1, reg << 16 | 0xFFE0, start + 3), SB),
                      start + 3)
    assert ev == [{"event": "reg", "prog": 7, "reg": "layer[1].x", "value": -32, "cycle": 3,
                   "time_us": 1.0}]
    ev = conv.convert(decode_record(pack(EventKind.IRQ, 0, 1, 0, start + 4), SB), start + 4)
    assert ev[0]["tag"] == "go"
    raw = pack(EventKind.STATE, 0, 1, 2 << 6 | 1 << 3 | 4, start + 5)
    ev = conv.convert(decode_record(raw, SB), start + 5)
    assert ev == [{"event": "state", "prog": 7, "state": "done", "reason": "halt", "pc": 2,
                   "cycle": 5, "time_us": 1.667}]
    assert conv.convert(decode_record(pack(EventKind.IRQ, 0, 0, 0, 9), SB), 9) == []   # empty slot
    with pytest.raises(CoreEventError, match="tag index 5"):
        conv.convert(decode_record(pack(EventKind.IRQ, 0, 1, 5, 9), SB), 9)
    with pytest.raises(CoreEventError, match="unknown event kind 6"):
        conv.convert(decode_record(pack(6, 0, 1, 0, 9), SB), 9)


def test_slot_key_for_machine_engines():
    conv = RecordConverter(1_000_000, key="slot")
    conv.set_slot(0, 0, compile_program({"version": 1, "program": [{"op": "HALT"}]}))
    assert conv.convert(decode_record(pack(0, 1, 0, 0, 0), SB), 0)[0]["slot"] == 0


def test_a_batch_unpacks_as_single_records_do():
    raws = [pack(EventKind.IRQ, 1, 3, 0xABCDEF, 0xFEDCBA98), pack(EventKind.REG, 0, 1, 7, 5)]
    assert [tuple(decode_record(r, SB)) for r in raws] == list(iter_records(raws, SB))
