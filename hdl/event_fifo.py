"""The event record and the event FIFO (drops and counts when full; never stalls)."""

from __future__ import annotations

import enum

from amaranth import Module, Signal, unsigned
from amaranth.lib import wiring, data, stream, memory
from amaranth.lib.wiring import In, Out

__all__ = ["EventKind", "event_layout", "EventFIFO", "PAYLOAD_BITS", "TIMESTAMP_BITS"]

PAYLOAD_BITS = 24
TIMESTAMP_BITS = 32


class EventKind(enum.IntEnum):
    """``kind`` field of an event record."""
    NONE = 0    # only the ``started`` flag is meaningful
    REG = 1     # payload: value[15:0], reg index[23:16]
    IRQ = 2     # payload: tag index[7:0]
    BIND = 3    # payload: surface index[7:0], layer[15:8]
    STATE = 4   # payload: state[2:0], reason[5:3], pc[17:6]


def event_layout(slot_bits: int) -> data.StructLayout:
    """Layout of one event record.

    ``started`` set means: the program in ``slot`` started in cycle ``timestamp``
    (a ``state running`` event), and it comes *before* the event the other fields
    describe (if ``kind`` is not NONE).
    """
    return data.StructLayout({
        "kind": unsigned(3),
        "started": unsigned(1),
        "slot": unsigned(slot_bits),
        "payload": unsigned(PAYLOAD_BITS),
        "timestamp": unsigned(TIMESTAMP_BITS),
    })


class EventFIFO(wiring.Component):
    """Block-RAM FIFO between the executor and the host link.

    The executor offers at most one record per clock and never waits: a record that
    finds the FIFO full is dropped and ``dropped`` (wrapping 16-bit) counts it.

    It behaves as ``amaranth.lib.fifo.SyncFIFOBuffered(depth)`` clock for clock (a RAM
    of ``depth - 1`` records and an output register), but its flags ("full", "holds a
    record") are registers, so the writer's ``valid`` meets one LUT before the RAM's
    write enable and the counters' enables (the library FIFO compares its level there,
    in the same clock). The RAM has a power-of-two number of rows (the pointers wrap
    without a comparison) and holds at most ``depth - 1`` records: it only ever reads a
    row while it holds records, never the row being written (``Core`` lists it in
    ``COLLISION_FREE_MEMORIES`` as ``event_mem``).

    Parameters
    ----------
    layout : data.StructLayout
        The record layout (:func:`event_layout`).
    depth : int
        Records the FIFO holds (at least 2).

    Attributes
    ----------
    sink : In(stream.Signature(layout, always_ready=True))
        Records from the executor (``ready`` is always 1: full means dropped).
    source : Out(stream.Signature(layout))
        Records to the host.
    dropped : Out(16)
        Records dropped since reset, modulo 2**16.
    full : Signal
        A record offered now is dropped (a register).
    """

    def __init__(self, layout: data.StructLayout, depth: int = 256):
        if depth < 2:
            raise ValueError(f"depth must be at least 2 (got {depth})")
        self.layout = layout
        self.depth = depth
        super().__init__({
            "sink": In(stream.Signature(layout, always_ready=True)),
            "source": Out(stream.Signature(layout)),
            "dropped": Out(16),
        })
        self.full = Signal()

    def elaborate(self, platform):
        m = Module()
        inner = self.depth - 1                   # records in the RAM at most
        abits = max(1, (inner - 1).bit_length())
        m.submodules.event_mem = mem = memory.Memory(shape=self.layout.size, depth=1 << abits,
                                                     init=[])
        wp = mem.write_port()
        rp = mem.read_port()
        produce, consume = Signal(abits), Signal(abits)
        level = Signal(range(inner + 1))         # records in the RAM
        full, held = self.full, Signal()         # level == inner, level != 0
        out_valid = Signal()                     # the output register holds a record

        do_write = Signal()
        do_read = Signal()
        m.d.comb += [do_write.eq(self.sink.valid & ~full),
                     do_read.eq(held & (~out_valid | self.source.ready))]
        m.d.comb += [wp.addr.eq(produce), wp.data.eq(self.sink.payload.as_value()),
                     wp.en.eq(do_write),
                     rp.addr.eq(consume), rp.en.eq(do_read)]
        with m.If(do_write):
            m.d.sync += produce.eq(produce + 1)
        with m.If(do_read):
            m.d.sync += consume.eq(consume + 1)
        # the level and its two flags, the flags from tests of the current level
        with m.If(do_write & ~do_read):
            m.d.sync += [level.eq(level + 1), full.eq(level == inner - 1), held.eq(1)]
        with m.If(do_read & ~do_write):
            m.d.sync += [level.eq(level - 1), full.eq(0), held.eq(level != 1)]
        with m.If(do_read):
            m.d.sync += out_valid.eq(1)
        with m.Elif(self.source.ready):
            m.d.sync += out_valid.eq(0)
        m.d.comb += [self.source.valid.eq(out_valid),
                     self.source.payload.eq(rp.data)]
        with m.If(self.sink.valid & full):
            m.d.sync += self.dropped.eq(self.dropped + 1)
        return m
