"""VM == RTL: every example and 200 generated programs give the same events, at the same
cycles, and leave the same registers, on the reference VM and on the simulated core.

The RTL runs on the CXXRTL engine (compiled once, in the build cache); the examples and
the first generated batches also run on amaranth.sim, so both simulators stay covered."""

from __future__ import annotations

import functools
import glob
import os
import random

import pytest

from copperline.firmware.compiler import compile_file, compile_program
from copperline.sim.engine import MachineParams
from copperline.sim.vm import Machine
from copperline.sim.cxxrtl import CxxrtlMachine
from copperline.sim.rtl import RtlMachine
from copperline.sim.verilator import VerilatorMachine
from tests.support import gen_program

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = sorted(glob.glob(os.path.join(ROOT, "examples", "*.json")))
CFG = dict(clock_hz=1_000_000, vsync_hz=20_000.0, watchdog_ops=40)
WORDS = 256



#: The ECP5 build's core options (LUT RAM, program memory through the block RAM's output
#: register with its fetch one clock earlier), simulated on amaranth.sim.
ECP5_CORE = {"lut_ram": True, "prog_outreg": True}
ENGINES = {"verilator": VerilatorMachine, "cxxrtl": CxxrtlMachine, "amaranth": RtlMachine,
           "amaranth-ecp5": functools.partial(RtlMachine, core_options=ECP5_CORE)}


def _both(engine: str = "cxxrtl"):
    params = MachineParams(**CFG, program_words=WORDS)
    return Machine(params), ENGINES[engine](params)


def _diff(a: list[dict], b: list[dict]) -> str:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return f"first difference at event {i}:\n  vm : {x}\n  rtl: {y}"
    return f"vm has {len(a)} events, rtl {len(b)}"


@pytest.mark.parametrize("engine", list(ENGINES))
@pytest.mark.parametrize("path", EXAMPLES, ids=[os.path.basename(p) for p in EXAMPLES])
def test_example_equivalence(path, engine):
    image = compile_file(path)
    vm, rtl = _both(engine)
    try:
        results = []
        for m in (vm, rtl):
            slot = m.load(image)
            m.start(slot)
            ev = m.run_until(1500)
            for i, name in enumerate(image.timelines):
                for v in (1, 2, 3):
                    m.set_fence(name, v)
                    ev += m.run_until(m.cycle + 500 + 37 * i)
            results.append((ev, m.regs, m.status(slot)["state"], m.status(slot)["pc"]))
    finally:
        rtl.close()
    (ea, ra, sa, pa), (eb, rb, sb, pb) = results
    assert ea, "the example produced no events at all"
    assert ea == eb, _diff(ea, eb)
    assert ra == rb
    assert (sa, pa) == (sb, pb)


@pytest.mark.parametrize("engine,count", [("cxxrtl", 200), ("amaranth", 24),
                                          ("amaranth-ecp5", 16)])
def test_generated_programs_equivalence(engine, count):
    """200 generated programs (the first 24 on amaranth.sim, 16 in the ECP5 build's
    configuration), four at a time on one machine
    (shared registers, staggered starts, fences set while they run), compared batch by
    batch."""
    rng = random.Random(20240605)
    programs = [compile_program(gen_program(rng), f"<gen {i}>") for i in range(count)]
    vm, rtl = _both(engine)
    machines = (vm, rtl)
    kinds = set()
    try:
        fence_val = {"t0": 0, "t1": 0}
        for batch in range(0, len(programs), 4):
            group = programs[batch:batch + 4]
            plan_rng = random.Random(batch)
            starts = sorted(plan_rng.sample(range(1, 40), len(group)))
            fences = []
            for name in ("t0", "t1"):
                for c in sorted(plan_rng.sample(range(5, 300), 2)):
                    fences.append((c, name))
            fences.sort()
            stop_at = plan_rng.choice([None, 200, 350])
            evs = []
            for m in machines:
                fv = dict(fence_val)
                for s in m.slots():
                    m.unload(s)
                base = m.cycle
                slots = [m.load(img) for img in group]
                out = m.run_until(base + 1)
                todo = sorted([(base + 1 + st, "start", slot) for st, slot in zip(starts, slots)]
                              + [(base + c, "fence", n) for c, n in fences]
                              + ([(base + stop_at, "stop", 2)] if stop_at and len(slots) > 2 else []))
                for cyc, what, arg in todo:
                    out += m.run_until(cyc)
                    if what == "start":
                        m.start(arg)
                    elif what == "stop":
                        m.stop(arg)
                    else:
                        fv[arg] = min(fv[arg] + 1, 3)
                        m.set_fence(arg, fv[arg])
                out += m.run_until(base + 400)
                evs.append((out, m.regs, [(m.status(s)["state"], m.status(s)["pc"])
                                          for s in slots]))
            fence_val = fv
            (ea, ra, sa), (eb, rb, sb) = evs
            if ea != eb and os.environ.get("COPPER_EQ_DUMP"):
                for i, img in enumerate(group):
                    print("slot", i, "start", starts[i], [hex(w) for w in img.code])
                print("fences", fences, "stop", stop_at)
                for x, y in zip(ea, eb):
                    print("OK " if x == y else "XX ", x, "|", y)
            assert ea == eb, f"batch {batch // 4}: " + _diff(ea, eb)
            assert ra == rb, f"batch {batch // 4}: registers differ"
            assert sa == sb, f"batch {batch // 4}: states or pcs differ {sa} vs {sb}"
            kinds.update((e["event"], e.get("reason")) for e in ea)
    finally:
        rtl.close()
    # the generator must actually reach the interesting corners
    if count < 200:
        return
    for k in (("reg", None), ("irq", None), ("bind", None), ("state", "halt"),
              ("state", "watchdog"), ("state", "host")):
        assert k in kinds, f"no {k} event in 200 generated programs"


@pytest.mark.parametrize("engine", list(ENGINES))
@pytest.mark.parametrize("where", ["fence", "wait", "loop"])
def test_host_stop_reports_the_same_pc(engine, where):
    # a program stopped by the host while blocked on a FENCE, inside a WAIT, or in the
    # middle of a loop: the stopped event and the status say the same pc on every engine
    body = {"fence": [{"op": "IRQ", "tag": "a"}, {"op": "FENCE", "timeline": "t", "value": 1},
                      {"op": "IRQ", "tag": "x"}, {"op": "HALT"}],
            "wait": [{"op": "IRQ", "tag": "a"}, {"op": "WAIT", "us": 1000},
                     {"op": "IRQ", "tag": "x"}, {"op": "HALT"}],
            "loop": [{"label": "l"}, {"op": "IRQ", "tag": "a"}, {"op": "WAIT", "us": 3},
                     {"op": "LOOP", "count": 1000, "label": "l"}, {"op": "HALT"}]}[where]
    image = compile_program({"version": 1, "program": body})
    vm, rtl = _both(engine)
    try:
        results = []
        for m in (vm, rtl):
            slot = m.load(image)
            m.run_until(1)
            m.start(slot)
            ev = m.run_until(40)
            m.stop(slot)
            ev += m.run_until(60)
            st = m.status(slot)
            stopped = [e for e in ev if e.get("state") == "stopped"]
            results.append((ev, st["state"], st["pc"], stopped[-1]["pc"] if stopped else None))
    finally:
        rtl.close()
    assert results[0] == results[1], (results[0][1:], results[1][1:])
    _, state, pc, event_pc = results[0]
    assert state == "stopped" and pc == event_pc
