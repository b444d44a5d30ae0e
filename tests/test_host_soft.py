"""SoftBackend: the Backend interface over the VM, virtual and monotonic clocks."""

from __future__ import annotations

import threading
import time

import pytest

from copperline.firmware import isa
from copperline.firmware.image import Image
from copperline.host.backend import BackendError, ProgramState
from copperline.host.soft import SoftBackend
from tests.support import poll

X1 = isa.register_index(1, "x")


def img(*ops, tags=("tick",), surfaces=("sprite",), timelines=("vk",)) -> Image:
    code = [isa.encode(name, **fields) for name, fields in ops] + [isa.encode("HALT")]
    return Image(code=tuple(code), tags=tags, surfaces=surfaces, timelines=timelines)


TICK = img(("WAIT", {"us": 1000}), ("IRQ", {"tag": 0}), ("JUMP", {"target": 0}))


def virtual(**kw):
    b = SoftBackend("virtual", **kw)
    got = []
    b.set_event_sink(got.append)
    b.open()
    return b, got


def test_ids_events_carry_prog_and_status():
    b, got = virtual()
    p1 = b.load(img(("BIND_LAYER", {"layer": 2, "surface": 0}), ("MOVE", {"reg": X1, "value": 7})))
    p2 = b.load(TICK)
    assert (p1, p2) == (1, 2)
    b.start(p1)
    b.start(p2)
    assert [e["state"] for e in got] == ["running", "running"]   # emitted by start()
    events = b.run_until(12_000 * 3)
    assert events == got[2:]
    assert all("slot" not in e for e in events)
    assert {e["prog"] for e in events} == {1, 2}
    assert [e["time_us"] for e in events if e["event"] == "irq"] == [1000.0, 2000.25]   # loop = 12000 + 1 + 2 cycles
    st = b.status(p1)
    assert st.state is ProgramState.DONE and st.reason == "halt" and st.bindings == {2: "sprite"}
    assert st.program == img(("BIND_LAYER", {"layer": 2, "surface": 0}),
                             ("MOVE", {"reg": X1, "value": 7})).sha256()
    assert b.status(p2).state is ProgramState.RUNNING and b.status(p2).slot == 1
    assert [s.id for s in b.programs()] == [1, 2]
    assert b.regs()["layer[1].x"] == 7
    assert b.program_ops(p2) == 7


def test_errors_use_protocol_codes():
    b, _ = virtual(contexts=1)
    p = b.load(TICK)
    with pytest.raises(BackendError) as e:
        b.load(TICK)
    assert e.value.code == "BUSY"
    with pytest.raises(BackendError) as e:
        b.status(99)
    assert e.value.code == "NOT_FOUND"
    b.fence("vk", 3)
    with pytest.raises(BackendError) as e:
        b.fence("vk", 2)
    assert e.value.code == "BAD_ARG" and "monotonic" in e.value.message
    with pytest.raises(BackendError) as e:
        b.load(Image(code=(isa.encode("NOP"),)))
    assert e.value.code == "BAD_FORMAT"
    b.start(p)
    with pytest.raises(BackendError) as e:
        b.start(p)
    assert e.value.code == "BUSY"


def test_unload_stops_and_ids_are_not_reused():
    b, got = virtual()
    p = b.load(TICK)
    b.start(p)
    b.advance_us(1500)
    b.unload(p)
    assert got[-1]["event"] == "state" and got[-1]["state"] == "stopped" and got[-1]["prog"] == p
    with pytest.raises(BackendError):
        b.status(p)
    assert b.load(TICK) == p + 1


def test_close_stops_running_programs():
    b, got = virtual()
    b.start(b.load(TICK))
    b.close()
    assert got[-1]["state"] == "stopped"


def test_virtual_fence():
    b, got = virtual()
    p = b.load(img(("FENCE", {"timeline": 0, "value": 2}), ("IRQ", {"tag": 0})))
    b.start(p)
    b.run_until(500)
    b.fence("vk", 2)
    b.run_until(1000)
    assert [e["cycle"] for e in got if e["event"] == "irq"] == [501]


def test_bad_clock_is_refused():
    with pytest.raises(ValueError, match="clock must be one of"):
        SoftBackend("wallclock")


# -- monotonic ------------------------------------------------------------------------
@pytest.fixture
def rt():
    b = SoftBackend("monotonic")
    got = []
    threads = set()

    def sink(e):
        threads.add(threading.current_thread().name)
        got.append(e)
    b.set_event_sink(sink)
    b.open()
    yield b, got, threads
    b.close()


def test_monotonic_runs_in_real_time_on_the_timing_thread(rt):
    b, got, threads = rt
    p = b.load(TICK)
    t0 = time.monotonic()
    b.start(p)
    time.sleep(0.1)
    st = b.status(p)
    assert st.state is ProgramState.RUNNING
    # ~100 ms of program time has passed, give or take a noisy machine
    assert 50_000 <= st.cycle / 12 <= (time.monotonic() - t0) * 1e6 + 5000
    irqs = [e for e in got if e["event"] == "irq"]
    elapsed_ms = (time.monotonic() - t0) * 1000
    assert 40 <= len(irqs) <= elapsed_ms + 2
    assert all("wall_us" in e and e["wall_us"] >= e["time_us"] - 1 for e in irqs)
    assert "copper-realtime" in threads
    with pytest.raises(BackendError, match="virtual clock"):
        b.run_until(10)


def test_monotonic_fence_applies_at_current_real_time(rt):
    b, got, _ = rt
    p = b.load(img(("FENCE", {"timeline": 0, "value": 1}), ("IRQ", {"tag": 0})))
    b.start(p)
    time.sleep(0.05)                   # 50 ms of real time blocked on the FENCE
    b.fence("vk", 1)
    assert poll(lambda: b.status(p).state is ProgramState.DONE
                and any(e["event"] == "irq" for e in got), 5)
    irq = [e for e in got if e["event"] == "irq"]
    assert len(irq) == 1
    assert 45_000 <= irq[0]["time_us"] <= 1_000_000


def test_monotonic_watchdog_and_host_stays_responsive(rt):
    b, got, _ = rt
    p = b.load(img(("JUMP", {"target": 0})))
    b.start(p)
    t0 = time.monotonic()
    worst = 0.0
    while time.monotonic() - t0 < 5:
        t = time.monotonic()
        st = b.status(p)               # a command served by the timing thread
        worst = max(worst, time.monotonic() - t)
        if st.state is not ProgramState.RUNNING:
            break
        time.sleep(0.005)
    assert st.state is ProgramState.FAULTED and st.reason == "watchdog"
    assert worst < 0.5
    faults = [e for e in got if e["event"] == "state" and e["state"] == "faulted"]
    assert faults and faults[0]["cycle"] == 2 * isa.DEFAULT_WATCHDOG_OPS


def test_sink_may_call_back_into_the_backend(rt):
    b, got, _ = rt
    seen = []
    orig = b._sink

    def sink(e):
        orig(e)
        if e["event"] == "irq" and not seen:
            seen.append(b.regs()["layer[1].x"])   # from the timing thread itself
    b.set_event_sink(sink)
    p = b.load(img(("MOVE", {"reg": X1, "value": 9}), ("IRQ", {"tag": 0})))
    b.start(p)
    assert poll(lambda: seen, 5) == [9]
