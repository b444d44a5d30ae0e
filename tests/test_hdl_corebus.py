"""The bus decode (``CoreBus``) behind the link (amaranth.sim): events are only pulled
(no event mode, no event frames), CTL 0x101 errs like any unknown CTL address, the
EVENTS low/high word latching rule, and every read space served in one request each."""

import struct

from copperline.firmware import board_interface as proto
from copperline.firmware import isa
from copperline.firmware.board_interface import decode_record
from copperline.firmware.compiler import compile_program
from copperline.hdl.top import CoreConfig, LinkTop

from tests.test_hdl_link import CLOCK, TIMEOUT_US, read, req, run_bytes, words

NONE = proto.EVENT_NONE_WORD


def _top():
    return LinkTop(clock_hz=CLOCK, byte_io=True, idle_timeout_us=TIMEOUT_US,
                   core=CoreConfig(contexts=4, program_words=256))


def _ctl(seq, addr, value):
    return req(proto.T_WRITE | proto.SPACE_CTL, seq, struct.pack("<HI", addr, value))


def test_ctl_0x101_errs_like_any_unknown_ctl_address():
    """The old event-mode address answers ``bad address`` for either value; its
    neighbours 0x100 (reset all) and 0x102 (start mask) still answer ok."""
    frames, _ = run_bytes([
        _ctl(1, 0x101, 0), 300,
        _ctl(2, 0x101, 1), 300,
        _ctl(3, proto.CTL_RESET_ADDR, 1), 300,
        _ctl(4, proto.CTL_START_MASK_ADDR, 0b0001), 300,
        _ctl(5, 0x103, 1), 300,
    ], dut=_top(), settle=600)
    resp = [f for f in frames if f.type & proto.RESP]
    assert len(resp) == len(frames)                  # (nothing unasked)
    assert [f.body[0] for f in resp] == [proto.ST_BAD_ADDR, proto.ST_BAD_ADDR, proto.ST_OK,
                                         proto.ST_OK, proto.ST_BAD_ADDR]


def test_events_are_pulled_without_a_mode_write_and_a_lone_high_word_pops_nothing():
    """No event frame ever goes out; a high word read without its low word answers the
    empty marker and pops nothing; a read starting at a high word (1, 2, 3) answers
    the empty marker, then the head record whole; then the rest in order. STATUS and
    REGS read in between answer their words."""
    img = compile_program({"version": 1, "program": [
        {"op": "MOVE", "reg": "layer[1].x", "value": 104},
        {"op": "IRQ", "tag": "a"}, {"op": "WAIT", "us": 2}, {"op": "IRQ", "tag": "b"},
        {"op": "HALT"}]})
    reg = isa.register_index(1, "x")
    frames, _ = run_bytes([
        req(proto.T_WRITE | proto.SPACE_PROG, 1, struct.pack(f"<H{len(img.code)}I", 0, *img.code)),
        300,
        _ctl(2, 0, proto.CTL_START_TB), 600,
        read(proto.SPACE_EVENTS, 1, 1, 3), 300,        # a high word alone
        read(proto.SPACE_EVENTS, 5, 1, 4), 300,        # another one
        read(proto.SPACE_STATUS, 0, 4, 5), 300,
        read(proto.SPACE_REGS, reg, 1, 6), 300,
        read(proto.SPACE_EVENTS, 1, 3, 7), 300,        # high, then a whole pair
        read(proto.SPACE_EVENTS, 0, 8, 8), 300,
    ], dut=_top(), settle=600)
    resp = [f for f in frames if f.type & proto.RESP]
    assert len(resp) == len(frames)                  # (nothing unasked)
    assert [f.body[0] for f in resp[:2]] == [proto.ST_OK] * 2
    assert words(resp[2]) == [NONE] and words(resp[3]) == [NONE]
    state, pc, cycle, dropped = words(resp[4])
    assert (state, pc, dropped) == (4, 4, 0) and cycle > 0       # DONE at the HALT
    assert words(resp[5]) == [104]
    w = words(resp[6])
    assert w[0] == NONE and NONE not in w[1:]
    recs = [w[2] << 32 | w[1]]
    w = words(resp[7])
    recs += [hi << 32 | lo for lo, hi in zip(w[::2], w[1::2]) if lo != NONE]
    assert w[-2:] == [NONE, NONE]
    decoded = [decode_record(r, 2) for r in recs]
    assert decoded[0].started and decoded[0].slot == 0 and decoded[0].timestamp == 0
    irqs = [d for d in decoded if d.kind == 2]                   # IRQ a, IRQ b: not lost
    assert len(irqs) == 2 and irqs[1].timestamp - irqs[0].timestamp == 1 + 2 * 3


def test_addresses_beyond_the_kept_bits_are_refused_not_aliased():
    """The link keeps 10 address bits for this core (4 x 256 program words): a PROG write
    at 0xFC05 must not land on word 5, a write running from word 1023 into 1024 stops
    there, and a READ up there answers bad address too."""
    from copperline.hdl.link import addr_bits_for
    assert addr_bits_for(contexts=4, program_words=256, layers=16) == 10
    frames, _ = run_bytes([
        req(proto.T_WRITE | proto.SPACE_PROG, 1, struct.pack("<HI", 0xFC05, 7)), 300,
        req(proto.T_WRITE | proto.SPACE_PROG, 2, struct.pack("<HII", 1023, 7, 7)), 300,
        req(proto.T_WRITE | proto.SPACE_PROG, 3, struct.pack("<HI", 5, 7)), 300,
        read(proto.SPACE_STATUS, 0x4000, 1, 4), 300,
    ], dut=_top(), settle=600)
    assert [f.body[0] for f in frames] == [proto.ST_BAD_ADDR, proto.ST_BAD_ADDR, proto.ST_OK,
                                           proto.ST_BAD_ADDR]
