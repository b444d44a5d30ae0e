"""Formal wrapper: the event FIFO (``hdl/event_fifo.py``), plain and ``outreg``.

The wrapper holds a reference model of an ideal FIFO of ``depth`` records with
``reserve`` places for urgent records: its level ``lvl`` (records held, counting the
output register), the records accepted and taken so far (``wseq``, ``rseq``, modulo
``2**W``) and the records dropped (``drops``). A record offered on ``sink`` is accepted
iff it is urgent and ``lvl < depth``, or ordinary and ``lvl < depth - reserve``.

Assumed: the writer offers, as payload, the sequence number of the next record the model
accepts (``wseq``); ``valid``, ``urgent`` and the reader's ``ready`` are free.

Asserted, every clock:

* ``source.payload == rseq`` whenever ``source.valid``: every record comes out in order,
  exactly once (a lost record shifts the sequence, a duplicated or reordered one
  repeats or skips a number; ``2**W > 2 * depth``, so no shift is hidden by the wrap);
* ``source.valid`` only while the model holds a record, and always when it holds one
  written two or more clocks ago (a record is offered from the second clock after the
  one that wrote it, if every older one has been taken: no record is held back);
* ``dropped == drops`` (mod ``2**16``): the FIFO accepts exactly the records the model
  accepts, so the drop count is exact, urgent records are accepted whenever the FIFO is
  not full and ordinary ones only below ``depth - reserve``.

Why a small FIFO covers the big one (``depth`` 256, ``reserve`` ``2 * contexts``): the
FIFO's control logic treats the payload as opaque bits (data independence: 4 bits stand
for 75), and it is the same code for every depth, with counters and pointers that wrap
at a power of two; the proofs use depths whose RAM pointers wrap (``depth - 1`` rows in a
power-of-two RAM) and, for ``outreg``, ``depth - reserve`` above the prefetch size
``PREFETCH`` (= 4, the branch the real configuration takes) as well as at or below it.
"""

from __future__ import annotations

from amaranth import Elaboratable, Module, Signal, Mux, unsigned
from amaranth.lib import data
from amaranth.hdl import Assert, Assume, Cover
from amaranth.asserts import AnySeq

from copperline.hdl.event_fifo import EventFIFO

W = 4                       # payload bits (sequence numbers modulo 16)


class FifoSpec(Elaboratable):
    """The event FIFO against the ideal FIFO model (see the module docstring)."""

    def __init__(self, depth: int, reserve: int, outreg: bool):
        assert 2 * depth < (1 << W)
        self.depth, self.reserve, self.outreg = depth, reserve, outreg

    def elaborate(self, platform):
        m = Module()
        D, R = self.depth, self.reserve
        m.submodules.fifo = fifo = EventFIFO(data.StructLayout({"v": unsigned(W)}), D,
                                             reserve=R, outreg=self.outreg)
        lvl = Signal(range(D + 1))
        wseq, rseq = Signal(W), Signal(W)
        drops = Signal(16)
        w1 = Signal()                                   # the model accepted last clock
        acc = Signal()
        pop = Signal()
        # the free inputs (an undriven input would be a constant 0)
        m.d.comb += [fifo.sink.valid.eq(AnySeq(1)), fifo.urgent.eq(AnySeq(1)),
                     fifo.source.ready.eq(AnySeq(1)), fifo.sink.payload.eq(AnySeq(W))]
        m.d.comb += [
            acc.eq(fifo.sink.valid & Mux(fifo.urgent, lvl < D, lvl < D - R)),
            pop.eq(fifo.source.valid & fifo.source.ready),
            Assume(fifo.sink.payload.v == wseq),
        ]
        m.d.sync += [lvl.eq(lvl + acc - pop), wseq.eq(wseq + acc), rseq.eq(rseq + pop),
                     w1.eq(acc)]
        with m.If(fifo.sink.valid & ~acc):
            m.d.sync += drops.eq(drops + 1)

        with m.If(fifo.source.valid):
            m.d.comb += [Assert(fifo.source.payload.v == rseq, "record out of sequence"),
                         Assert(lvl != 0, "a record out of an empty FIFO")]
        with m.If(lvl > w1):
            m.d.comb += Assert(fifo.source.valid, "a held record is not offered")
        m.d.comb += Assert(fifo.dropped == drops, "drop count differs")

        # reachability: full; an ordinary record dropped while an urgent one would fit;
        # an urgent record taking the last place; the pointers wrapping; a pop while
        # full and a write in the same clock
        m.d.comb += [
            Cover(lvl == D),
            Cover(fifo.sink.valid & ~fifo.urgent & (lvl == D - R) & (R > 0)),
            Cover(fifo.sink.valid & fifo.urgent & (lvl == D - 1) & acc),
            Cover((rseq == D + 1) & pop & (lvl >= 2)),        # the RAM pointers wrapped
            Cover((lvl == D) & pop & fifo.sink.valid),
        ]
        return m
