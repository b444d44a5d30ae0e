"""FENCE values across the comparator's 12-bit halves, on the core (amaranth.sim).

The core compares fence values in two 12-bit halves (``fence_terms``); the generated
equivalence programs used values 0-3, where a comparator of the low half alone passes
(the ``fence_high_half_off`` mutant, ``python -m tests.mutants``). The formal proof
``fence_compare`` covers every value; this test checks the core's wiring of it.
"""

from copperline.firmware.board_interface import CtxState, EventKind
from copperline.firmware import isa
from copperline.hdl.core import Core
from tests.support import run_core

E = isa.encode


def test_fence_compares_both_halves():
    core = Core(1_000_000, 1000.0, watchdog_ops=1000, program_words=8)
    prog = [
        E("FENCE", timeline=0, value=0x001000),   # 0: low half met by 0x000FFF, high not
        E("IRQ", tag=1),                          # 1
        E("FENCE", timeline=0, value=0x002FFF),   # 2: met by 0x003000 (low half smaller)
        E("IRQ", tag=2),                          # 3
        E("FENCE", timeline=0, value=0xFFF001),   # 4: never met by 0xFFF000
        E("IRQ", tag=3),                          # 5
    ]
    fences = [(5, 0, 0, 0x000FFF), (10, 0, 0, 0x001000), (20, 0, 0, 0x003000),
              (30, 0, 0, 0xFFF000)]
    recs, regs = run_core(core, {0: prog}, cycles=40, fences=fences)
    irqs = [(r[0], r[4]) for r in recs if r[3] == EventKind.IRQ]
    lat = isa.FENCE_RESUME_LATENCY
    assert irqs == [(10 + lat, 1), (20 + lat, 2)], (
        f"IRQs {irqs}: each FENCE must resume only when the whole 24-bit value is >= its "
        f"operand (not on the low 12 bits alone), and at once when it is")
    assert regs[("status", 0)] == (CtxState.FENCE, 5)
