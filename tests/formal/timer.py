"""Formal wrapper: the µs delay counter (``hdl/timer.py``) behind ``WAIT us N``.

The core issues a ``WAIT us N`` in one core cycle and loads ``delay_wait(N)`` (``N *
cpu - 1`` cycles, ``cpu = clock_hz / 1e6``); in every following cycle a context whose
delay is not zero (``delay_zero``; the core keeps it precomputed with ``delay_one``
before each count down) counts it down with ``delay_dec``, and it issues its next op in
the cycle it finds it zero: ``1 + (N * cpu - 1) = N * cpu`` cycles after the WAIT.

The wrapper loads ``delay_wait(N)`` for a free ``N`` (1 .. 2**27 - 1, the ISA's whole
range) and counts down as the core does, counting the cycles in ``elapsed``. Asserted
every cycle: the remaining delay ``(hi - 1) * cpu + lo`` is ``N * cpu - 1 - elapsed``
(``lo < cpu``), ``delay_zero`` holds exactly when ``elapsed == N * cpu - 1`` and
``delay_one`` exactly when one cycle remains. The constant costs (``delay_const``)
are checked to hold their cycle counts too. This is an inductive invariant, so k-
induction proves it for every N, with the full 27-bit microsecond field; it is run for
each clock the equivalence tests use (1, 3, 5 and 12 MHz: ``cpu == 1`` is a separate
code path, and 3, 5, 12 cover odd, prime and even non-power-of-two sub-µs counters).
"""

from __future__ import annotations

from amaranth import Elaboratable, Module, Signal, unsigned
from amaranth.hdl import Assert, Assume, Cover
from amaranth.asserts import AnyConst

from copperline.firmware import isa
from copperline.hdl.timer import (delay_layout, delay_const, delay_wait, delay_dec,
                                  delay_zero, delay_one)


class TimerSpec(Elaboratable):
    def __init__(self, clock_hz: int):
        self.clock_hz = clock_hz

    def elaborate(self, platform):
        m = Module()
        chz = self.clock_hz
        cpu = isa.cycles_per_us(chz)
        lay = delay_layout(chz)
        hi = Signal(lay.members["hi"])
        lo = Signal(lay.members["lo"])
        n_us = AnyConst(isa.WAIT_US_BITS)
        m.d.comb += Assume(n_us != 0)
        wide = unsigned(isa.WAIT_US_BITS + 5)
        total = Signal(wide)                     # N * cpu - 1
        remaining = Signal(wide)
        elapsed = Signal(wide)
        loaded = Signal()
        m.d.comb += [total.eq(n_us * cpu - 1), remaining.eq((hi - 1) * cpu + lo)]
        w_hi, w_lo = delay_wait(n_us, chz)
        d_hi, d_lo = delay_dec(hi, lo, chz)
        with m.If(~loaded):
            m.d.sync += [hi.eq(w_hi), lo.eq(w_lo), elapsed.eq(0), loaded.eq(1)]
        with m.Elif(~delay_zero(hi, lo)):
            m.d.sync += [hi.eq(d_hi), lo.eq(d_lo), elapsed.eq(elapsed + 1)]
        with m.If(loaded):
            m.d.comb += [
                Assert(hi >= 1, "hi holds microseconds + 1"),
                Assert(lo < cpu, "lo below one microsecond"),
                Assert(remaining + elapsed == total, "the delay counts one cycle per cycle"),
                Assert(delay_zero(hi, lo) == (elapsed == total),
                       "zero exactly N * cpu - 1 cycles after the load"),
                Assert(delay_one(hi, lo, chz) == (remaining == 1), "delay_one"),
                Cover(delay_zero(hi, lo) & (n_us == 2)),
                Cover((n_us == 3) & (elapsed == cpu + 1)),
            ]
        for cycles in {isa.CYCLES_SIMPLE - 1, isa.CYCLES_BRANCH - 1, isa.CYCLES_LOOP_EXIT - 1,
                       isa.VSYNC_LATENCY - 1, isa.FENCE_RESUME_LATENCY - 1}:
            k_hi, k_lo = delay_const(chz, cycles)
            m.d.comb += Assert((k_hi - 1) * cpu + k_lo == cycles, f"delay_const({cycles})")
        return m
