"""The real-time executor: deadlines from the time base, commands on the timing thread.

Timing assertions are deliberately tolerant: CI shares two cores with other jobs.
"""

from __future__ import annotations

import statistics
import threading
import time

import pytest

from copperline.firmware import isa
from copperline.firmware.image import Image
from copperline.host.realtime import RealTimeExecutor
from copperline.sim.engine import MachineParams
from copperline.sim.vm import Machine
from tests.support import poll

TICK = Image(code=(isa.encode("WAIT", us=1000), isa.encode("IRQ", tag=0),
                   isa.encode("JUMP", target=0), isa.encode("HALT")), tags=("tick",))
HZ = 12_000_000


def _collect():
    got = []

    def deliver(events, wall_ns):
        for e in events:
            got.append((e, wall_ns))
    return got, deliver


def test_1khz_tick_smoke():
    m = Machine(MachineParams(HZ, watchdog_ops=10**9))
    got, deliver = _collect()
    ex = RealTimeExecutor(m, deliver)
    ex.start()
    try:
        slot = ex.call(lambda m: m.load(TICK))
        ex.call(lambda m: m.start(slot))
        time.sleep(0.2)
        start = ex.call(lambda m: m.slot_start(slot))
    finally:
        ex.stop()
    assert not ex.running
    irqs = [(e, w) for e, w in got if e["event"] == "irq"]
    assert 100 <= len(irqs) <= 230
    # model time: exactly one loop (12003 cycles) apart, no drift in the model
    cycles = [e["cycle"] for e, _ in irqs]
    assert all(b - a == 12_003 for a, b in zip(cycles, cycles[1:]))
    # wall time: lateness = wall - (start + cycle) in us; tolerant bound for noisy CI
    late = [w / 1000 - (start + e["cycle"]) / 12 for e, w in irqs]
    assert min(late) >= -1.0                    # never early
    assert statistics.median(late) < 2000


def test_commands_run_on_the_timing_thread_at_the_real_time_cycle():
    m = Machine(MachineParams(HZ))
    names = []
    ex = RealTimeExecutor(m, lambda ev, w: None)
    ex.start()
    try:
        time.sleep(0.03)
        cyc = ex.call(lambda m: (names.append(threading.current_thread().name), m.cycle)[1])
        assert names == ["copper-realtime"]
        assert 0.025 * HZ <= cyc <= ex.now_cycle()
        with pytest.raises(ValueError, match="monotonic"):
            ex.call(lambda m: (m.set_fence("vk", 5), m.set_fence("vk", 1)))
    finally:
        ex.stop()


def test_deliver_may_call_back_without_deadlock():
    m = Machine(MachineParams(HZ))
    seen = []
    ex = None

    def deliver(events, wall):
        if any(e["event"] == "irq" for e in events):
            seen.append(ex.call(lambda m: m.cycle))
    ex = RealTimeExecutor(m, deliver)
    ex.start()
    try:
        ex.call(lambda m: m.start(m.load(TICK)))
        assert poll(lambda: seen, 5)
    finally:
        ex.stop()


def test_a_failing_deliver_stops_the_thread_and_commands_fail_fast():
    m = Machine(MachineParams(HZ))

    def deliver(events, wall):
        raise RuntimeError("sink exploded")
    ex = RealTimeExecutor(m, deliver)
    ex.start()
    try:
        ex.call(lambda m: m.start(m.load(TICK)))   # its "running" event will explode
        assert poll(lambda: not ex.running, 5)
        with pytest.raises(RuntimeError, match="timing thread has stopped"):
            ex.call(lambda m: m.cycle, timeout=1)
    finally:
        ex.stop()
