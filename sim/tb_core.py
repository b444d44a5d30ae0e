"""cocotb tests of the generated ``copper_core`` Verilog (run by tests/test_sim_cocotb.py).

Each test runs programs on the core and on the reference VM
(:class:`copperline.sim.vm.Machine`) and compares the events (scoreboard), plus what the
VM cannot show: FIFO overflow counting, register read-back, the status port.
The build directory (``COPPER_TB_DIR``) holds ``copper_core.json`` with the parameters.
"""

from __future__ import annotations

import json
import os

import cocotb
from cocotb.triggers import RisingEdge

from copperline.firmware import isa
from copperline.firmware.compiler import compile_program
from copperline.sim.engine import MachineParams
from copperline.sim.vm import Machine
from copperline.hdl.core import CtxState
from copperline.sim.cocotb_driver import CoreDriver, vm_events


def _meta() -> dict:
    """The core's parameters (written next to its Verilog)."""
    with open(os.path.join(os.environ["COPPER_TB_DIR"], "copper_core.json")) as f:
        return json.load(f)


def _prog(ops):
    return compile_program({"version": 1, "program": ops})


async def _run(dut, programs: dict, cycles: int, fences=(), starts=None):
    """Run ``programs`` (slot -> Image) on the core and on the VM; return both event lists."""
    drv = CoreDriver(dut, os.environ["COPPER_TB_DIR"])
    await drv.reset()
    meta = drv.meta
    for slot, img in programs.items():
        await drv.write_program(slot, img.code)
    mask = sum(1 << s for s in programs)
    s0 = await drv.command(start=mask, timebase=1)
    assert s0 == 0
    todo = sorted(fences)            # (cycle, name, value)
    for cyc, name, value in todo:
        for slot, img in programs.items():
            if name in img.timelines:
                await drv.until(cyc, phase=slot)
                await drv.fence(slot, img.timelines.index(name), value)
    await drv.until(cycles)
    for _ in range(8):
        await RisingEdge(dut.clk)
    vm = Machine(MachineParams(meta["clock_hz"], meta["vsync_hz"], meta["watchdog_ops"],
                               contexts=drv.C, program_words=meta["program_words"]))
    for slot in sorted(programs):
        assert vm.load(programs[slot]) == slot
        vm.start(slot)
    ev = []
    for cyc, name, value in todo:
        ev += vm.run_until(cyc)
        vm.set_fence(name, value)
    ev += vm.run_until(cycles)
    hw = drv.events(programs, {s: 0 for s in programs})
    key = lambda e: (e[0], e[1])      # noqa: E731  (cycle, slot); stable within
    return drv, vm, sorted(hw, key=key), sorted(vm_events(ev), key=key)


@cocotb.test()
async def every_op_and_its_corners(dut):
    # Runs first on purpose: the first test of a run once saw no events (Icarus never ran
    # the combinational blocks at time 0; fixed in copperline.sim.verilog).
    """MOVE/ADD (with 16-bit and 8-bit wrap), IRQ, JUMP, nested LOOP, a LOOP -1 ended by
    the watchdog, BIND_LAYER, long WAIT us, WAIT vsync, FENCE, HALT — against the VM."""
    a = _prog([
        {"op": "BIND_LAYER", "id": 3, "surface": "s.rgba"},
        {"op": "MOVE", "reg": "layer[0].x", "value": 32767},
        {"op": "ADD", "reg": "layer[0].x", "delta": 1},
        {"op": "MOVE", "reg": "layer[0].alpha", "value": 250},
        {"label": "outer"},
        {"label": "inner"},
        {"op": "ADD", "reg": "layer[0].alpha", "delta": 3},
        {"op": "LOOP", "count": 3, "label": "inner"},
        {"op": "IRQ", "tag": "outer"},
        {"op": "WAIT", "us": 1},                        # idles: keeps the watchdog (20) quiet
        {"op": "LOOP", "count": 2, "label": "outer"},
        {"op": "JUMP", "label": "skip"},
        {"op": "IRQ", "tag": "never"},
        {"label": "skip"},
        {"op": "WAIT", "us": 700},
        {"op": "WAIT", "vsync": True},
        {"op": "FENCE", "timeline": "vk", "value": 2},
        {"op": "IRQ", "tag": "fenced"},
        {"label": "spin"},
        {"op": "ADD", "reg": "layer[1].y", "delta": -1},
        {"op": "LOOP", "count": -1, "label": "spin"},
    ])
    us = isa.cycles_per_us(_meta()["clock_hz"])      # the windows are in microseconds
    drv, vm, hw, ref = await _run(dut, {0: a}, 1000 * us,
                                  fences=[(760 * us, "vk", 1), (800 * us, "vk", 2)])
    assert hw == ref, f"\nrtl: {hw}\nvm : {ref}"
    assert len(ref) > 20 and ("irq", "fenced") in [(e[2], e[3]) for e in ref]
    assert ref[-1][2:] == ("state", ("faulted", "watchdog", ref[-1][3][2]))
    assert await drv.read_reg(isa.register_index(0, "x")) == vm.regs["layer[0].x"] == -32768
    assert await drv.read_reg(isa.register_index(0, "alpha")) == vm.regs["layer[0].alpha"]
    assert (await drv.status(0))[0] == CtxState.FAULTED


@cocotb.test()
async def each_op_alone_takes_its_cost(dut):
    """Every op between two IRQs, with nothing after it that could hide an extra cycle:
    the IRQs' cycles differ by the IRQ's cost plus the op's, as isa.py's constants say
    (WAIT us at the core's cycles per us, WAIT vsync to the next edge plus its latency,
    a blocked FENCE to the host's write plus its resume latency)."""
    simple, branch, exit_ = isa.CYCLES_SIMPLE, isa.CYCLES_BRANCH, isa.CYCLES_LOOP_EXIT
    segments = [
        ("nop", [{"op": "NOP"}], simple),
        ("move", [{"op": "MOVE", "reg": "layer[4].x", "value": -5}], simple),
        ("add", [{"op": "ADD", "reg": "layer[4].x", "delta": 9}], simple),
        ("irq", [{"op": "IRQ", "tag": "mid"}], simple),
        ("bind", [{"op": "BIND_LAYER", "id": 4, "surface": "s"}], simple),
        ("jump", [{"op": "JUMP", "label": "j"}, {"op": "IRQ", "tag": "never"}, {"label": "j"}],
         branch),
        ("loop1", [{"label": "l1"}, {"op": "LOOP", "count": 1, "label": "l1"}], exit_),
        ("loop2", [{"label": "l2"}, {"op": "LOOP", "count": 2, "label": "l2"}], branch + exit_),
        ("loop3", [{"label": "l3"}, {"op": "LOOP", "count": 3, "label": "l3"}],
         2 * branch + exit_),
        ("wait1", [{"op": "WAIT", "us": 1}], "us1"),
        ("wait7", [{"op": "WAIT", "us": 7}], "us7"),
        ("fence_met", [{"op": "FENCE", "timeline": "a", "value": 0}], simple),
        ("vsync", [{"op": "WAIT", "vsync": True}], "vsync"),
        ("fence_blocked", [{"op": "FENCE", "timeline": "b", "value": 1}], "fence"),
    ]
    ops = []
    for name, body, _ in segments:
        # (the WAIT before each pair keeps the watchdog quiet; it is outside the pair)
        ops += [{"op": "WAIT", "us": 1}, {"op": "IRQ", "tag": f"{name}<"}, *body,
                {"op": "IRQ", "tag": f"{name}>"}]
    fence_at = 600
    drv, vm, hw, ref = await _run(dut, {0: _prog(ops + [{"op": "HALT"}])}, 700,
                                  fences=[(fence_at, "b", 1)])
    assert hw == ref, f"\nrtl: {hw}\nvm : {ref}"
    cpu = isa.cycles_per_us(drv.meta["clock_hz"])
    period = drv.meta["vsync_period"]
    at = {e[3]: e[0] for e in hw if e[2] == "irq"}
    for name, _, cost in segments:
        t0 = at[f"{name}<"]
        if cost == "vsync":        # WAIT issued at t0 + 1: the first edge after it
            want = (((t0 + 1) // period) + 1) * period + isa.VSYNC_LATENCY
        elif cost == "fence":
            want = fence_at + isa.FENCE_RESUME_LATENCY
        else:
            want = t0 + simple + (cost if isinstance(cost, int) else int(cost[2:]) * cpu)
        assert at[f"{name}>"] == want, f"{name}: next op at {at[f'{name}>']}, want {want}"
    assert at["fence_blocked<"] + 1 < fence_at           # the FENCE really waited


@cocotb.test()
async def every_context_shares_registers_in_slot_order(dut):
    progs = {s: _prog([{"op": "WAIT", "us": 1 + s % 2},
                       {"label": "l"},
                       {"op": "ADD", "reg": "layer[2].z", "delta": 1000 * (s + 1)},
                       {"op": "IRQ", "tag": f"p{s}"},
                       {"op": "LOOP", "count": 4, "label": "l"},
                       {"op": "WAIT", "vsync": True},
                       {"op": "MOVE", "reg": "layer[2].visible", "value": s % 2}])
             for s in range(_meta()["contexts"])}
    drv, vm, hw, ref = await _run(dut, progs, 200 * isa.cycles_per_us(_meta()["clock_hz"]))
    assert hw == ref, f"\nrtl: {hw}\nvm : {ref}"
    assert await drv.read_reg(isa.register_index(2, "z")) == vm.regs["layer[2].z"]


@cocotb.test()
async def fifo_overflow_drops_and_counts_without_shifting_time(dut):
    drv = CoreDriver(dut, os.environ["COPPER_TB_DIR"])
    await drv.reset()
    # 40 IRQ records (the first also says "started") and the end's STATE record; ordinary
    # records fill the FIFO up to its reserve, the STATE record takes a reserved place
    ordinary = drv.meta["fifo_depth"] - drv.meta["fifo_reserve"]
    img = _prog([{"label": "l"}, {"op": "IRQ", "tag": "t"}, {"op": "WAIT", "us": 1},
                 {"op": "LOOP", "count": 40, "label": "l"}])
    await drv.write_program(0, img.code)
    dut.events__ready.value = 0                  # the host is not reading
    step = isa.CYCLES_SIMPLE + isa.cycles_per_us(drv.meta["clock_hz"]) + isa.CYCLES_BRANCH
    await drv.command(start=1, timebase=1)
    await drv.until(50 * step)
    dropped = int(dut.dropped.value)
    assert dropped == 40 - ordinary, f"dropped {dropped}, expected {40 - ordinary}"
    dut.events__ready.value = 1
    await drv.until(55 * step)
    ts = [r[0] for r in drv.records if r[3].name == "IRQ"]
    assert ts == [step * i for i in range(len(ts))], ts  # kept records keep their cycles
    assert len(drv.records) == ordinary + 1
    assert drv.records[0][2] == 1                        # the start ...
    assert drv.records[-1][3].name == "STATE"            # ... and the end are never dropped
    assert (await drv.status(0))[0] == CtxState.DONE


@cocotb.test()
async def host_stop_and_restart(dut):
    drv = CoreDriver(dut, os.environ["COPPER_TB_DIR"])
    await drv.reset()
    img = _prog([{"label": "l"}, {"op": "WAIT", "us": 5}, {"op": "IRQ", "tag": "t"},
                 {"op": "JUMP", "label": "l"}])
    await drv.write_program(1, img.code)
    await drv.command(start=2, timebase=1)
    stop_at = await drv.command(stop=2)
    restart = await drv.command(start=2)
    us = isa.cycles_per_us(drv.meta["clock_hz"])
    await drv.until(restart + 20 * us)
    states = [(r[0], r[2], r[4] & 7) for r in drv.records if r[2] or r[3].name == "STATE"]
    assert states[0] == (0, 1, 0)
    assert (stop_at, 0, CtxState.STOPPED) in states
    assert (restart, 1, 0) in states
    irqs = [r[0] - restart for r in drv.records if r[3].name == "IRQ" and r[0] > restart]
    # WAIT 5 us, IRQ, JUMP, WAIT 5 us, IRQ
    first = 5 * us
    assert irqs[:2] == [first, first + isa.CYCLES_SIMPLE + isa.CYCLES_BRANCH + 5 * us]
