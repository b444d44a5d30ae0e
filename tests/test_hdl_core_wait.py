"""``WAIT us N`` on the core at clocks where a microsecond is several cycles (amaranth.sim).

At 1 MHz the sub-microsecond counter is degenerate (one cycle per µs), so a wrong
sub-µs decrement (the ``subus_decrement_wrong`` mutant, ``python -m tests.mutants``)
passes every 1 MHz test. The formal proofs ``timer_*`` cover every N; this test checks
the core's use of the counter at 3, 5 and 12 MHz, cycle for cycle.
"""

import pytest

from copperline.firmware.board_interface import EventKind
from copperline.firmware import isa
from copperline.hdl.core import Core
from tests.support import run_core

E = isa.encode


@pytest.mark.parametrize("mhz", [3, 5, 12])
def test_wait_us_takes_n_times_cycles_per_us(mhz):
    core = Core(mhz * 1_000_000, 1000.0, watchdog_ops=1000, program_words=8)
    prog = [E("IRQ", tag=1), E("WAIT", us=3), E("IRQ", tag=2), E("WAIT", us=1),
            E("IRQ", tag=3), E("HALT")]
    recs, _ = run_core(core, {0: prog}, cycles=5 * mhz + 10)
    t1 = 1 + 3 * mhz                      # WAIT issued in cycle 1
    t2 = t1 + 1 + 1 * mhz
    got = [r[0] for r in recs if r[3] == EventKind.IRQ]
    assert got == [0, t1, t2], (f"at {mhz} MHz: IRQ cycles {got}, expected {[0, t1, t2]} "
                                f"(WAIT us N = N * {mhz} cycles)")
