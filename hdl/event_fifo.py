"""The event record and the event FIFO (drops and counts when full; never stalls)."""

from __future__ import annotations

import enum

from amaranth import Module, unsigned
from amaranth.lib import wiring, data, stream, fifo
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

    Parameters
    ----------
    layout : data.StructLayout
        The record layout (:func:`event_layout`).
    depth : int
        Records the FIFO holds.

    Attributes
    ----------
    sink : In(stream.Signature(layout, always_ready=True))
        Records from the executor (``ready`` is always 1: full means dropped).
    source : Out(stream.Signature(layout))
        Records to the host.
    dropped : Out(16)
        Records dropped since reset, modulo 2**16.
    """

    def __init__(self, layout: data.StructLayout, depth: int = 256):
        self.layout = layout
        self.depth = depth
        super().__init__({
            "sink": In(stream.Signature(layout, always_ready=True)),
            "source": Out(stream.Signature(layout)),
            "dropped": Out(16),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.fifo = q = fifo.SyncFIFOBuffered(width=self.layout.size, depth=self.depth)
        m.d.comb += [
            q.w_data.eq(self.sink.payload.as_value()),
            q.w_en.eq(self.sink.valid),
            self.source.payload.eq(q.r_data),
            self.source.valid.eq(q.r_rdy),
            q.r_en.eq(self.source.ready),
        ]
        with m.If(self.sink.valid & ~q.w_rdy):
            m.d.sync += self.dropped.eq(self.dropped + 1)
        return m
