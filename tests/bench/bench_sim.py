"""RTL engine speed: simulated core cycles per wall second, CXXRTL vs amaranth.sim.

Both engines run the same core (4 contexts, 12 MHz core cycle) on four programs at once
(MOVE/ADD/IRQ/JUMP loops with short WAITs, so every context issues and emits events),
``run_until`` in chunks of one vsync period (what ``copper run`` does). The baseline is
amaranth.sim, measured in the same run; the CXXRTL build is done (or found in the cache)
before timing. Target (issue #5): ``copper run examples/sprite.json --backend sim
--frames 3`` (600,000 core cycles) in well under a minute, i.e. >= 100,000 cycles/s.
"""

from __future__ import annotations

import statistics
import time

from copperline.firmware.compiler import compile_program
from copperline.sim.cxxrtl import CxxrtlMachine
from copperline.sim.rtl import RtlMachine

TARGET = 100_000
CLOCK_HZ = 12_000_000
RUNS = 3
PROG = {"version": 1, "program": [
    {"label": "top"},
    {"op": "MOVE", "reg": "layer[0].x", "value": 1},
    {"op": "ADD", "reg": "layer[0].x", "delta": 3},
    {"op": "IRQ", "tag": "t"},
    {"op": "WAIT", "us": 2},
    {"op": "JUMP", "label": "top"}]}


def measure(cls, cycles: int) -> tuple[float, int]:
    m = cls(CLOCK_HZ, 60.0, watchdog_ops=10**6)
    try:
        image = compile_program(PROG)
        for _ in range(4):
            m.load(image)
        m.run_until(1)
        for s in range(4):
            m.start(s)
        events = 0
        t0 = time.perf_counter()
        while m.cycle < 1 + cycles:
            events += len(m.run_until(min(1 + cycles, m.cycle + m.vsync_period)))
        return time.perf_counter() - t0, events
    finally:
        m.close()


def main(argv) -> int:
    CxxrtlMachine(CLOCK_HZ, 60.0).close()          # build (or find) the simulator first
    cx_cycles, am_cycles = 600_000, 3_000
    cx = [measure(CxxrtlMachine, cx_cycles) for _ in range(RUNS)]
    am = [measure(RtlMachine, am_cycles) for _ in range(RUNS)]
    cx_s = statistics.median(d for d, _ in cx)
    am_s = statistics.median(d for d, _ in am)
    cx_rate, am_rate = cx_cycles / cx_s, am_cycles / am_s
    print(f"CXXRTL engine: {cx_cycles:,} core cycles (4 contexts, {cx[0][1]:,} events), "
          f"median of {RUNS}: {cx_s:.2f} s = {cx_rate:,.0f} core cycles/s")
    print(f"amaranth.sim engine (baseline): {am_cycles:,} core cycles ({am[0][1]:,} events), "
          f"median of {RUNS}: {am_s:.2f} s = {am_rate:,.0f} core cycles/s")
    print(f"ratio CXXRTL / amaranth.sim: {cx_rate / am_rate:,.0f}x")
    print(f"verdict: {'PASS' if cx_rate >= TARGET else 'BELOW TARGET'} (target >= {TARGET:,}/s)")
    return 0
