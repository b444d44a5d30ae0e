"""Formal wrapper: LOOP counters re-arm (``loop_*`` in hdl/core.py), nested loops.

The core keeps, per context, one counter per LOOP slot (``loop_mem``) and an "armed" bit
per slot (``ctx_mem``). X decides from the armed bit (``counting``) whether the LOOP
falls through (``loop_falls_through``) and computes both candidates for the counter
(``loop_counter_candidates``); E selects one (``loop_counter_next``) and the armed bits
after a jump back (``loop_armed_back``) or a fall-through (``loop_armed_exit``).

The wrapper composes these functions as X and E do, for two nested loops on free
distinct slots ``a`` (inner, count ``N1``) and ``b`` (outer, count ``N2``), both free in
1 .. 2**13 - 1 (the ISA's whole range): each step issues the inner LOOP, or, in the step
after the inner one fell through, the outer one (the bodies do not touch the counters).
Asserted every step: the inner LOOP falls through exactly on its ``N1``-th issue of each
outer pass (so the body runs ``N1`` times on every pass: the counter re-armed), the outer
one on its ``N2``-th issue, and no other slot's armed bit is ever set. With the inductive
invariants (armed => counter == count - issues so far in this pass) k-induction proves
it for every count.
"""

from __future__ import annotations

from amaranth import Elaboratable, Module, Signal, Const
from amaranth.hdl import Assert, Assume, Cover
from amaranth.asserts import AnyConst

from copperline.firmware import isa
from copperline.hdl.core import (loop_falls_through, loop_counter_candidates, loop_counter_next,
                                 loop_armed_back, loop_armed_exit)


class LoopSpec(Elaboratable):
    def elaborate(self, platform):
        m = Module()
        CB = isa.LOOP_COUNT_BITS
        sa, sb = AnyConst(3), AnyConst(3)
        n1, n2 = AnyConst(CB), AnyConst(CB)
        m.d.comb += Assume((sa != sb) & (n1 != 0) & (n2 != 0))
        oh_a = Signal(isa.LOOP_SLOTS)
        oh_b = Signal(isa.LOOP_SLOTS)
        m.d.comb += [oh_a.eq(Const(1, isa.LOOP_SLOTS) << sa), oh_b.eq(Const(1, isa.LOOP_SLOTS) << sb)]
        armed = Signal(isa.LOOP_SLOTS)
        ctr_a, ctr_b = Signal(CB), Signal(CB)       # the two counters in loop_mem
        it_a, it_b = Signal(CB), Signal(CB)         # issues so far in this pass
        outer_turn = Signal()                       # the inner LOOP fell through last step

        def issue(oh, slot_ctr, count):
            counting = (armed & oh) != 0            # act = 1: a running context
            exits = loop_falls_through(counting, slot_ctr, count)
            c1, n1_ = loop_counter_candidates(slot_ctr, count)
            nxt = loop_counter_next(counting, c1, n1_)
            arm = Mux_(exits, loop_armed_exit(armed, oh), loop_armed_back(armed, oh, 1))
            return exits, nxt, arm

        from amaranth import Mux as Mux_
        ex_a, nx_a, arm_a = issue(oh_a, ctr_a, n1)
        ex_b, nx_b, arm_b = issue(oh_b, ctr_b, n2)
        with m.If(~outer_turn):
            m.d.sync += [ctr_a.eq(nx_a), armed.eq(arm_a), outer_turn.eq(ex_a),
                         it_a.eq(Mux_(ex_a, 0, it_a + 1))]
            m.d.comb += [Assert(ex_a == (it_a == n1 - 1), "inner LOOP: N1 issues per pass"),
                         Cover(ex_a & (it_b == 1) & (n1 == 3))]
        with m.Else():
            m.d.sync += [ctr_b.eq(nx_b), armed.eq(arm_b), outer_turn.eq(0),
                         it_b.eq(Mux_(ex_b, 0, it_b + 1))]
            m.d.comb += [Assert(ex_b == (it_b == n2 - 1), "outer LOOP: N2 issues"),
                         Cover(ex_b & (n2 == 2) & (n1 == 2))]
        # inductive invariants
        for oh, ctr, it, n in ((oh_a, ctr_a, it_a, n1), (oh_b, ctr_b, it_b, n2)):
            with m.If((armed & oh) != 0):
                m.d.comb += [Assert(ctr + it == n), Assert(ctr != 0), Assert(it != 0)]
            with m.Else():
                m.d.comb += Assert(it == 0)
        m.d.comb += [Assert((armed & ~(oh_a | oh_b)) == 0, "another slot armed"),
                     Assert(~outer_turn | (it_a == 0))]
        return m
