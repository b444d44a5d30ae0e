"""Formal wrapper: the link receiver (``hdl/link.py``) never executes a bad or repeated frame.

The host side is free (any bytes, any timing) within these limits: it never sends the
SLIP escape byte (0xDB: frames are raw bytes between 0xC0 delimiters), it sends a
frame's bytes back to back (no idle timeout inside a frame) and starts a frame only
while the link is not ``busy`` (a host that waits for each response, as the host driver
does). The response path is free too (``tx.ready``, ``bus.err``, ``bus.rdata``).

The wrapper decodes the stream on its own: per frame its length, its CRC-16/CCITT-FALSE
residue (an ``amaranth.lib.crc.Processor`` of its own), its sequence byte and its last two
bytes (the CRC). A frame is *good* when it has at least 4 bytes and its CRC matches; it is
*new* unless its sequence number and CRC equal those of the last frame the link executed.

Asserted: the link starts executing a request (``activity``, the dispatcher's HEADER
state: before any bus access) exactly ``LATENCY`` clocks after a frame that is good and
new ended, and at no other time. So a frame with a bad CRC, a too-short frame and a
repeated frame (same sequence number and CRC) are never executed, and every good new
frame is.

Why it covers the real link: the check is the same logic for every buffer size and
timeout (``buf_bytes`` is the minimum the link accepts; frames in the bound are short);
bytes are opaque to the CRC and sequence logic; the escape decoder feeds the same byte
path and is covered by ``tests/test_hdl_link.py``.
"""

from __future__ import annotations

from amaranth import Elaboratable, Module, Signal, Cat
from amaranth.hdl import Assert, Assume, Cover
from amaranth.asserts import AnySeq
from amaranth.lib import crc

from copperline.firmware import board_interface as proto
from copperline.hdl.link import Link, info_words

#: clocks from the 0xC0 that ends a frame to its ``activity`` pulse
LATENCY = 9


def first_frame() -> list[int]:
    """A concrete good ECHO request (sequence 0x5A), CRC appended, no SLIP specials."""
    body = bytes([proto.T_ECHO, 0x5A, 0x11])
    c = crc.catalog.CRC16_CCITT_FALSE(8).compute(body)
    frame = list(body) + [c >> 8, c & 0xFF]
    assert proto.SLIP_END not in frame and proto.SLIP_ESC not in frame
    return frame


class LinkSpec(Elaboratable):
    """``fixed_first``: the first frame is :func:`first_frame` (concrete), the rest free.

    A free first frame checks the CRC decision on any frame from reset (a short bound);
    a concrete first frame reaches the second frame within the bound at a lower cost, so
    a repeat of it, and any other second frame, are checked too.
    """

    def __init__(self, fixed_first: bool = False):
        self.fixed_first = fixed_first

    def elaborate(self, platform):
        m = Module()
        m.submodules.link = link = Link(info=info_words(clock_hz=1_000_000, baud=115200),
                                        idle_timeout=8)
        rx = link.rx
        m.d.comb += [rx.valid.eq(AnySeq(1)), rx.payload.eq(AnySeq(8)),
                     link.tx.ready.eq(AnySeq(1)), link.bus.err.eq(AnySeq(1)),
                     link.bus.rdata.eq(AnySeq(32))]
        m.submodules.crc = ref = crc.Processor(crc.catalog.CRC16_CCITT_FALSE(8))

        length = Signal(4)                 # bytes of the frame so far (saturating)
        seq = Signal(8)
        last2 = Signal(16)
        end = Signal()                     # this byte is the 0xC0 ending a frame
        byte = Signal()
        m.d.comb += [
            Assume(~rx.valid | (rx.payload != proto.SLIP_ESC)),
            # a frame's bytes back to back; a new frame only while the link is idle
            Assume(rx.valid | (length == 0)),
            Assume(~rx.valid | (length != 0) | ~link.busy),
            byte.eq(rx.valid & (rx.payload != proto.SLIP_END)),
            end.eq(rx.valid & (rx.payload == proto.SLIP_END) & (length != 0)),
            ref.data.eq(rx.payload), ref.valid.eq(byte), ref.start.eq(length == 0),
        ]
        with m.If(byte):
            m.d.sync += [length.eq(length + (length != 15)), last2.eq(Cat(rx.payload, last2[:8]))]
            with m.If(length == 1):
                m.d.sync += seq.eq(rx.payload)
        with m.If(end):
            m.d.sync += length.eq(0)
        frames = Signal(2)                 # frames ended so far (saturating)
        with m.If(end & (frames != 3)):
            m.d.sync += frames.eq(frames + 1)
        if self.fixed_first:
            ff = first_frame()
            with m.If(frames == 0):
                with m.Switch(length):
                    for i, b in enumerate(ff):
                        with m.Case(i):
                            m.d.comb += Assume(rx.valid & (rx.payload == b))
                    with m.Case(len(ff)):
                        m.d.comb += Assume(rx.valid & (rx.payload == proto.SLIP_END))

        good = Signal()
        m.d.comb += good.eq(end & (length >= 4) & ref.match_detected)
        # the last executed frame (seq, CRC)
        ex_seq, ex_crc, ex_valid = Signal(8), Signal(16), Signal()
        new = ~(ex_valid & (seq == ex_seq) & (last2 == ex_crc))
        due = Signal(LATENCY)              # a good new frame ended 1..LATENCY clocks ago
        pend_seq, pend_crc = Signal(8), Signal(16)
        m.d.sync += due.eq(Cat(good & new, due[:-1]))
        with m.If(good & new):
            m.d.sync += [pend_seq.eq(seq), pend_crc.eq(last2)]
        with m.If(link.activity):
            m.d.sync += [ex_seq.eq(pend_seq), ex_crc.eq(pend_crc), ex_valid.eq(1)]
        bad_end = Signal()
        m.d.comb += bad_end.eq(end & ~good)
        m.d.comb += [
            Assert(link.activity == due[-1], "a request executed that is not a good new frame "
                   "(or a good new frame not executed)"),
            Assert(~link.bus.we | ex_valid),
            Cover(bad_end & (length >= 4)),               # a bad CRC
        ]
        if self.fixed_first:
            m.d.comb += [Cover(good & ~new),                 # a repeat (not executed)
                         Cover(link.activity & ex_valid)]     # a second new frame executed
        else:
            m.d.comb += Cover(link.activity)                  # a (free) good frame executed
        return m
