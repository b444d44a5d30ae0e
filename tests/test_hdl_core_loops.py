"""Nested LOOPs on the core (amaranth.sim): the inner counter re-arms on every outer pass.

``tests/test_hdl_core.py`` runs one LOOP once; a counter that stayed armed after falling
through (the ``loop_not_rearmed`` mutant, ``python -m tests.mutants``) only shows on the
second pass of an enclosing loop. The formal proof ``loop_rearm`` states it for any
counts; this test checks the core's wiring of it, cycle for cycle.
"""

import pytest

from copperline.firmware.board_interface import CtxState, EventKind
from copperline.firmware import isa
from copperline.hdl.core import Core
from tests.support import run_core

E = isa.encode


@pytest.mark.parametrize("inner,outer", [(2, 2), (3, 2), (1, 3)])
def test_nested_loop_body_runs_inner_times_outer(inner, outer):
    core = Core(1_000_000, 1000.0, watchdog_ops=1000, program_words=8)
    prog = [
        E("IRQ", tag=7),                                   # 0: body
        E("LOOP", slot=2, target=0, count=inner),          # 1: inner
        E("LOOP", slot=5, target=0, count=outer),          # 2: outer
        E("HALT"),                                         # 3
    ]
    # expected cycles: IRQ costs CYCLES_SIMPLE, a taken LOOP CYCLES_BRANCH, an exit
    # CYCLES_LOOP_EXIT
    irqs, t = [], 0
    for _ in range(outer):
        for i in range(inner):
            irqs.append(t)
            t += isa.CYCLES_SIMPLE
            t += isa.CYCLES_BRANCH if i < inner - 1 else isa.CYCLES_LOOP_EXIT
        t += isa.CYCLES_BRANCH                              # outer LOOP (taken or not below)
    t_halt = t - isa.CYCLES_BRANCH + isa.CYCLES_LOOP_EXIT
    recs, regs = run_core(core, {0: prog}, cycles=t_halt + 10)
    got = [r[0] for r in recs if r[3] == EventKind.IRQ]
    assert got == irqs, (f"IRQ cycles {got}, expected {irqs}: the body must run {inner} x "
                         f"{outer} times (the inner counter re-armed after each exit)")
    halt = recs[-1]
    assert halt[3] == EventKind.STATE and halt[4] & 7 == CtxState.DONE and halt[0] == t_halt
    assert regs[("status", 0)] == (CtxState.DONE, 3)
