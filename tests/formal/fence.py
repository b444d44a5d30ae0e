"""Formal wrapper: the FENCE comparator (``fence_terms``/``fence_blocked`` in hdl/core.py).

The core compares a fence value with a FENCE's operand in two 12-bit halves (high >,
high != and low <, registered in X, finished in E). Asserted for every pair of 24-bit values: the
FENCE blocks exactly when ``stored < value`` (a plain 24-bit comparison), and a host
write in the FENCE's own clock meets it exactly when ``written >= value``. The proof is
combinational (all inputs are free constants), so k-induction with k = 1 covers every
value: no small configuration is involved.
"""

from __future__ import annotations

from amaranth import Elaboratable, Module
from amaranth.hdl import Assert, Cover
from amaranth.asserts import AnyConst

from copperline.firmware import isa
from copperline.hdl.core import fence_terms, fence_blocked, fence_write_met


class FenceSpec(Elaboratable):
    def elaborate(self, platform):
        m = Module()
        n = isa.FENCE_VALUE_BITS
        h = n // 2
        stored, value, written = AnyConst(n), AnyConst(n), AnyConst(n)
        blocked = fence_blocked(*fence_terms(stored, value))
        m.d.comb += [
            Assert(blocked == (stored < value), "FENCE blocks unless stored >= value"),
            Assert(fence_write_met(written, value) == (written >= value),
                   "a same-clock write meets the FENCE iff it is >= value"),
            # the cases a comparator of one half would get wrong
            Cover(~blocked & (stored[h:] > value[h:]) & (stored[:h] < value[:h])),
            Cover(blocked & (stored[h:] < value[h:]) & (stored[:h] > value[:h])),
            Cover(blocked & (stored[h:] == value[h:]) & (stored[:h] < value[:h])),
            Cover(~blocked & (stored == value)),
        ]
        return m
