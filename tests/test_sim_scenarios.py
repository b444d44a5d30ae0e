"""VM == RTL on generated scenarios that reach the corners: several clocks and context
counts, every layer, fence values across the comparator's 12-bit halves, waits and loop
counts up to the ISA's limits, tangled loops left and re-entered with their counters
armed, host stops wherever a program happens to be (a FENCE, a WAIT, mid-loop) and
restarts. Events, registers, and every program's final state and pc must be equal.

Each configuration simulates at least ``CYCLES`` core cycles (4 configurations:
>= 1,000,000 core cycles in ``make test``). ``COPPER_EQ_SCALE=10`` runs ten times as
many (the nightly size): ``COPPER_EQ_SCALE=10 make test PYTEST_ARGS=tests/test_sim_scenarios.py``.

A share of the generated programs also runs on the virtual board (the iCEBreaker top
behind its UART, programs uploaded through the link into its SPRAM) and must give the
VM's trace at 0 us.
"""

from __future__ import annotations

import os
import random

import pytest

from copperline.firmware import isa
from copperline.firmware.compiler import compile_program
from copperline.sim.engine import MachineParams
from copperline.sim.vm import Machine
from copperline.sim.cxxrtl import CxxrtlMachine
from tests.support import random_add, random_move

SCALE = int(os.environ.get("COPPER_EQ_SCALE", "1"))
CYCLES = 260_000 * SCALE              # per configuration
WINDOW = 10_000                       # core cycles per batch
CONFIGS = [dict(clock_hz=1_000_000, contexts=4), dict(clock_hz=3_000_000, contexts=4),
           dict(clock_hz=5_000_000, contexts=5), dict(clock_hz=12_000_000, contexts=5)]
COMMON = dict(vsync_hz=1000.0, watchdog_ops=40, program_words=256)
REGS = [isa.register_name(i) for i in range(isa.DEFAULT_LAYERS * isa.REG_STRIDE)
        if i % isa.REG_STRIDE < len(isa.REGISTER_FIELDS)]
TIMELINES = ("t0", "t1", "t2")
#: Fence values that straddle the comparator's two 12-bit halves, and its extremes.
FENCE_EDGES = (0, 1, 2, 3, 0xFFF, 0x1000, 0x1001, 0xFFFF, 0x10000, 0xFFF000, 0xFFF001,
               isa.FENCE_VALUE_MAX - 1, isa.FENCE_VALUE_MAX)


def gen_program(rng: random.Random) -> dict:
    """A random valid program; its LOOPs and JUMPs may target any label (forward or back),
    so loops are left and re-entered with their counters armed."""
    ops: list[dict] = []
    labels: list[str] = []

    def new_label() -> str:
        lab = f"L{len(labels)}"
        labels.append(lab)
        ops.append({"label": lab})
        return lab

    def wait_us() -> int:
        r = rng.random()
        if r < 0.6:
            return rng.randint(1, 30)
        if r < 0.9:
            return rng.randint(31, 3000)
        if r < 0.97:
            return rng.randint(3001, 1_000_000)
        return rng.randint(isa.WAIT_US_MAX // 2, isa.WAIT_US_MAX)

    def loop_count() -> int:
        return rng.choice([1, 2, 3, 5, 7, rng.randint(8, 300), rng.randint(301, 4000),
                           isa.LOOP_COUNT_MAX, -1 if rng.random() < 0.3 else 2])

    pending_targets: list[str] = []        # labels referenced before they are placed
    forward = 0
    n = rng.randint(3, 16)
    for _ in range(n):
        r = rng.random()
        if r < 0.12:
            new_label()
        if r < 0.2:
            ops.append(random_move(rng, REGS))
        elif r < 0.36:
            ops.append(random_add(rng, REGS))
        elif r < 0.46:
            ops.append({"op": "IRQ", "tag": rng.choice("abcd")})
        elif r < 0.6:
            ops.append({"op": "WAIT", "us": wait_us()})
        elif r < 0.64:
            ops.append({"op": "WAIT", "vsync": True})
        elif r < 0.74:
            ops.append({"op": "FENCE", "timeline": rng.choice(TIMELINES),
                        "value": rng.choice(FENCE_EDGES + (rng.randint(0, isa.FENCE_VALUE_MAX),))})
        elif r < 0.78:
            ops.append({"op": "BIND_LAYER", "id": rng.randint(0, 15),
                        "surface": rng.choice(["s1", "s2", "s3"])})
        elif r < 0.8:
            ops.append({"op": "NOP"})
        elif r < 0.93 and labels:
            # a loop back to any earlier label: with other loops between, those are left
            # with their counters armed and re-entered on the next pass
            ops.append({"op": "LOOP", "count": loop_count(), "label": rng.choice(labels)})
        else:
            # a forward jump (or loop) to a label placed later: skips ops, leaves loops
            target = f"F{forward}"
            forward += 1
            pending_targets.append(target)
            if rng.random() < 0.5:
                ops.append({"op": "JUMP", "label": target})
            else:
                ops.append({"op": "LOOP", "count": loop_count(), "label": target})
            ops.append({"op": "IRQ", "tag": "skipped"})
            if rng.random() < 0.7:
                ops.append({"label": target})
                pending_targets.remove(target)
    for target in pending_targets:
        ops.append({"label": target})
        ops.append({"op": "IRQ", "tag": "landed"})
    if rng.random() < 0.5:
        ops.append({"op": "HALT"})
    return {"version": 1, "program": ops}


def _plan(rng: random.Random, contexts: int) -> list[tuple[int, str, object]]:
    """Host actions of one batch: staggered starts, fence steps through the comparator's
    edges, stops wherever the programs are, and some restarts."""
    todo: list[tuple[int, str, object]] = []
    for slot in range(contexts):
        at = rng.randint(1, 200)
        todo.append((at, "start", slot))
        if rng.random() < 0.5:
            stop = at + rng.randint(1, WINDOW - 300)
            todo.append((stop, "stop", slot))
            if rng.random() < 0.4:
                todo.append((stop + rng.randint(1, 200), "start", slot))
    for name in TIMELINES:
        values = sorted(set(rng.sample(FENCE_EDGES, 4)))
        for v in values:
            todo.append((rng.randint(2, WINDOW - 1), "fence", (name, v)))
    # equal cycles: fences (in value order) before stops and starts, in a fixed order
    order = {"fence": 0, "stop": 1, "start": 2}
    todo.sort(key=lambda t: (t[0], order[t[1]], str(t[2])))
    fixed, seen = [], {}
    for cyc, what, arg in todo:                 # fence values must only grow
        if what == "fence":
            name, v = arg
            if v < seen.get(name, -1):
                continue
            seen[name] = v
        fixed.append((cyc, what, arg))
    return fixed


def _run_batch(m, images, plan) -> tuple:
    m.reset()
    slots = [m.load(img) for img in images]
    out = m.run_until(1)
    running_at: dict[int, int] = {}
    for cyc, what, arg in plan:
        out += m.run_until(max(cyc, m.cycle))
        if what == "start":
            if m.status(slots[arg])["state"] == "running" or running_at.get(arg) == m.cycle:
                continue
            m.start(slots[arg])
            running_at[arg] = m.cycle
        elif what == "stop":
            if running_at.get(arg) == m.cycle:
                continue                       # started in this very cycle
            m.stop(slots[arg])
        else:
            m.set_fence(*arg)
    out += m.run_until(WINDOW)
    return out, m.regs, [(m.status(s)["state"], m.status(s)["pc"]) for s in slots]


def _diff(a: list[dict], b: list[dict]) -> str:
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return f"first difference at event {i}:\n  vm : {x}\n  rtl: {y}"
    return f"vm has {len(a)} events, rtl {len(b)}"


@pytest.mark.parametrize("config", CONFIGS,
                         ids=[f"{c['clock_hz'] // 1_000_000}MHz-{c['contexts']}ctx"
                              for c in CONFIGS])
def test_generated_scenarios(config):
    rng = random.Random(config["clock_hz"] + config["contexts"])
    cfg = dict(COMMON, **config)
    vm = Machine(MachineParams(**cfg))
    rtl = CxxrtlMachine(MachineParams(**cfg))
    cycles = 0
    kinds = set()
    try:
        batch = 0
        while cycles < CYCLES:
            images = [compile_program(gen_program(rng), f"<gen {batch}.{i}>",
                                      program_words=cfg["program_words"])
                      for i in range(cfg["contexts"])]
            plan = _plan(random.Random(rng.random()), cfg["contexts"])
            (ea, ra, sa), (eb, rb, sb) = (_run_batch(m, images, plan) for m in (vm, rtl))
            where = f"{config} batch {batch}"
            assert ea == eb, f"{where}: " + _diff(ea, eb)
            assert ra == rb, f"{where}: registers differ"
            assert sa == sb, f"{where}: states or pcs differ {sa} vs {sb}"
            kinds.update((e["event"], e.get("state"), e.get("reason")) for e in ea)
            cycles += WINDOW
            batch += 1
    finally:
        rtl.close()
    assert cycles >= 250_000
    for k in (("state", "stopped", "host"), ("state", "done", "halt"),
              ("state", "faulted", "watchdog"), ("state", "running", "start")):
        assert k in kinds, f"no {k} event in {batch} batches"


@pytest.fixture(scope="module")
def board():
    from tests.support import virtual_board_server
    server = virtual_board_server()
    yield server
    server.close()


def test_generated_programs_on_the_virtual_board(board):
    # generated programs uploaded through the link into the board's SPRAM and run by
    # the board top; fences preset (the board applies them at upload), the trace equal
    # to the VM's at 0 us up to the end cycle
    from copperline.host.fpga import FpgaBackend
    from copperline.host.run import run_realtime, run_virtual
    from copperline.host.trace_compare import compare
    rng = random.Random(7)
    end = 30_000                               # 10 ms of the board's 3 MHz core cycles
    compared = flooded = 0
    for i in range(10):
        image = compile_program(gen_program(rng), f"<board {i}>")
        fences = {name: rng.choice(FENCE_EDGES) for name in TIMELINES}
        be = FpgaBackend(port=board.url)
        be.open()
        for name, value in fences.items():
            be.fence(name, value)
        hw, hw_status = run_realtime(be, image, until_cycle=end, max_cycle=end)
        vm = Machine(MachineParams(clock_hz=be.clock_hz, vsync_hz=be.vsync_hz))
        for name, value in fences.items():
            vm.set_fence(name, value)
        ref, ref_status = run_virtual(vm, image, until_cycle=end, max_cycle=end)
        if any(e["event"] == "dropped" for e in hw):
            # more records than the line carries: what is missing is counted exactly
            c = compare(_trace("hw", hw, be), _trace("vm", ref, be), tolerance_us=0)
            assert c.ok, f"program {i}: {c.failures}"
            flooded += 1
        else:
            assert hw == ref, f"program {i}: " + _diff(ref, hw)
        if ref_status["state"] in ("done", "faulted"):      # ended inside the window
            assert (hw_status["state"], hw_status["pc"]) == (ref_status["state"],
                                                             ref_status["pc"])
        compared += len(ref)
    assert compared > 100 and flooded < 10


def _trace(name, events, be):
    from copperline.firmware.trace import Trace
    header = {"trace": 1, "backend": name, "clock_hz": be.clock_hz, "vsync_hz": be.vsync_hz}
    return Trace(name, header, events, list(range(2, len(events) + 2)))
