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
* ``dropped == drops`` (modulo the counter's width, 32 bits): the FIFO accepts exactly
  the records the model accepts, so the drop count is exact, urgent records are accepted
  whenever the FIFO is not full and ordinary ones only below ``depth - reserve``.

Found by the proof (not a fault of a shipped configuration): with ``depth - reserve == 2``
an ordinary record is dropped in the clock after a write into an empty FIFO (that record
is on its way from the RAM to the output register and still counts against the RAM's
``depth - 1 - reserve`` places), one record early; the same holds for ``full`` at
``depth == 2``, as in ``SyncFIFOBuffered(2)``. The core's FIFOs have ``depth - reserve``
of 246 or more (and 4 or 8 in the tests), so the proofs use ``depth - reserve >= 3``.

Why a small FIFO covers the big one (``depth`` 256, ``reserve`` ``2 * contexts``): the
FIFO's control logic treats the payload as opaque bits (data independence: 4 bits stand
for the 62-63 of a record), and it is the same code for every depth, with counters and pointers that wrap
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


def _internals(module) -> dict:
    """The signals an elaborated FIFO module assigns, by name (no change to hdl/)."""
    found = {}
    for stmts in module._statements.values():
        for st in stmts:
            for sig in st._lhs_signals():
                found.setdefault(sig.name, sig)
    return found


class FifoSpec(Elaboratable):
    """The event FIFO against the ideal FIFO model (see the module docstring).

    ``induct`` (plain FIFO only): also assert the invariants that tie the FIFO's own
    state to the model (its RAM level plus the output register is the model's level,
    its flags are tests of that level, the write pointer is the read pointer plus the
    level, every held RAM row holds the sequence number it should, the output register
    is empty only in the clock after a write into an empty FIFO), which makes the
    properties provable by k-induction: true at any time, not only within a bound.
    """

    def __init__(self, depth: int, reserve: int, outreg: bool, induct: bool = False):
        assert 2 * depth < (1 << W)
        assert not (induct and outreg)
        self.depth, self.reserve, self.outreg, self.induct = depth, reserve, outreg, induct

    def elaborate(self, platform):
        m = Module()
        D, R = self.depth, self.reserve
        fifo = EventFIFO(data.StructLayout({"v": unsigned(W)}), D, reserve=R, outreg=self.outreg)
        if self.induct:
            # elaborated here, so that the invariants can name its signals
            fifo._MustUse__silence = True
            fm = fifo.elaborate(platform)
            m.submodules.fifo = fm
        else:
            m.submodules.fifo = fifo
        lvl = Signal(range(D + 1))
        wseq, rseq = Signal(W), Signal(W)
        drops = Signal(len(fifo.dropped))
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

        if self.induct:
            self._invariants(m, fm, fifo, lvl, w1, rseq, wseq)

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

    def _invariants(self, m, fm, fifo, lvl, w1, rseq, wseq):
        D, R = self.depth, self.reserve
        inner = D - 1
        sig = _internals(fm)
        level, out_valid, held, roomy = (sig[n] for n in ("level", "out_valid", "held", "roomy"))
        consume, wp_addr = sig["consume"], sig["wp__addr"]
        rows = 1 << len(consume)
        mem = fm._named_submodules["event_mem"][0]      # (elaboratable, src_loc)
        m.d.comb += [
            Assert(level <= inner),
            Assert(lvl == level + out_valid),
            Assert(wseq == (rseq + lvl)[:W]),
            Assert(fifo.full == (level == inner)),
            Assert(held == (level != 0)),
            Assert(roomy == (level < inner - R)),
            Assert(wp_addr == (consume + level)[:len(consume)]),
            Assert(out_valid | (level == w1)),
        ]
        for i in range(inner):
            port = mem.read_port(domain="comb")
            m.d.comb += port.addr.eq((consume + i)[:len(consume)])
            with m.If(i < level):
                m.d.comb += Assert(port.data == (rseq + out_valid + i)[:W],
                                   f"RAM row consume+{i} holds the wrong record")
