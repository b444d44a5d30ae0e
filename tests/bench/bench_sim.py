"""RTL engine speed: simulated core cycles per wall second, Verilator vs CXXRTL vs
amaranth.sim, measured in the same run.

Every engine runs the same core (4 contexts, 12 MHz core cycle) through the engine interface,
``run_until`` in chunks of one vsync period (what ``copper run`` does), on two workloads:

* **display** (the target's workload): four programs of the kind Copper runs -- per
  frame, wait for vsync, then a few register writes and an IRQ, and a mid-frame
  ``WAIT us`` with one more write: every context runs, a few events per frame. Here
  the simulator's speed is what counts.
* **busy**: four MOVE/ADD/IRQ/JUMP loops with a 2 us WAIT, so every context issues and
  emits events (0.4 events per core cycle): the Python side's conversion of events to
  dicts (~2 us each) costs more than the simulation itself.

The compiled engines are built (or found in the cache) before timing. Target (issue
#14): >= 2,000,000 core cycles/s on the display workload with the default engine
(Verilator); CXXRTL measured ~300,000 on the busy one before.
"""

from __future__ import annotations

import statistics
import time

from copperline.firmware.compiler import compile_program
from copperline.sim.cxxrtl import CxxrtlMachine
from copperline.sim.engine import MachineParams
from copperline.sim.rtl import RtlMachine
from copperline.sim.verilator import VerilatorMachine

TARGET = 2_000_000
CLOCK_HZ = 12_000_000
RUNS = 3
BUSY = {"version": 1, "program": [
    {"label": "top"},
    {"op": "MOVE", "reg": "layer[0].x", "value": 1},
    {"op": "ADD", "reg": "layer[0].x", "delta": 3},
    {"op": "IRQ", "tag": "t"},
    {"op": "WAIT", "us": 2},
    {"op": "JUMP", "label": "top"}]}
DISPLAY = {"version": 1, "program": [
    {"label": "frame"},
    {"op": "WAIT", "vsync": True},
    {"op": "MOVE", "reg": "layer[1].x", "value": 10},
    {"op": "ADD", "reg": "layer[1].y", "delta": 2},
    {"op": "IRQ", "tag": "f"},
    {"op": "WAIT", "us": 8000},
    {"op": "MOVE", "reg": "layer[1].alpha", "value": 128},
    {"op": "JUMP", "label": "frame"}]}
WORKLOADS = {"display": DISPLAY, "busy": BUSY}
PARAMS = MachineParams(CLOCK_HZ, 60.0, watchdog_ops=10**6)
ENGINES = {"verilator": VerilatorMachine, "cxxrtl": CxxrtlMachine, "amaranth": RtlMachine}
#: core cycles per measurement (amaranth.sim: ~1,000 cycles/s)
CYCLES = {"verilator": 2_400_000, "cxxrtl": 1_200_000, "amaranth": 3_000}


def measure(cls, program: dict, cycles: int) -> tuple[float, int]:
    m = cls(PARAMS)
    try:
        image = compile_program(program)
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
    for cls in (VerilatorMachine, CxxrtlMachine):
        cls(PARAMS).close()   # build (or find) the simulators
    rates: dict[tuple[str, str], float] = {}
    for work, program in WORKLOADS.items():
        for name, cls in ENGINES.items():
            if name == "amaranth" and work == "display":
                continue            # (the busy row is its baseline; 3,000 cycles say nothing here)
            n = CYCLES[name]
            runs = [measure(cls, program, n) for _ in range(RUNS)]
            secs = statistics.median(d for d, _ in runs)
            rates[work, name] = n / secs
            print(f"{work:8s} {name:10s}: {n:>9,} core cycles (4 contexts, {runs[0][1]:,} "
                  f"events), median of {RUNS}: {secs:.2f} s = {n / secs:>11,.0f} core cycles/s")
    for work in WORKLOADS:
        print(f"{work}: Verilator / CXXRTL = "
              f"{rates[work, 'verilator'] / rates[work, 'cxxrtl']:.1f}x")
    print(f"busy: CXXRTL / amaranth.sim = {rates['busy', 'cxxrtl'] / rates['busy', 'amaranth']:,.0f}x")
    rate = rates["display", "verilator"]
    print(f"verdict: {'PASS' if rate >= TARGET else 'BELOW TARGET'} (Verilator, display "
          f"workload: {rate:,.0f} core cycles/s; target >= {TARGET:,}/s)")
    return 0
