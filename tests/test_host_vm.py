"""The reference VM (copperline.sim.vm.Machine) against isa.EXECUTION_RULES.

Every op and corner, plus a cross-check against an independent cycle-by-cycle reference
interpreter on random programs (hypothesis).
"""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings, strategies as st, HealthCheck

from copperline.firmware import isa
from copperline.firmware.image import Image, ImageError
from copperline.firmware.trace import time_us
from copperline.sim.engine import MachineParams
from copperline.sim.vm import Machine, MachineError

MHZ = 1_000_000          # 1 cycle per us: easy arithmetic
X1 = isa.register_index(1, "x")


def img(*ops, tags=("t0", "t1"), surfaces=("s0", "s1"), timelines=("vk", "gl")) -> Image:
    """An image from (NAME, {fields}) pairs; a HALT is appended."""
    code = [isa.encode(name, **fields) for name, fields in ops] + [isa.encode("HALT")]
    return Image(code=tuple(code), tags=tags, surfaces=surfaces, timelines=timelines)


def reg(layer: int, field: str) -> int:
    return isa.register_index(layer, field)


def run(image, until, *, clock_hz=MHZ, vsync_hz=1000.0, watchdog_ops=isa.DEFAULT_WATCHDOG_OPS,
        fences=()):
    m = Machine(MachineParams(clock_hz, vsync_hz, watchdog_ops))
    slot = m.load(image)
    m.start(slot)
    for name, value in fences:
        m.set_fence(name, value)
    return m, m.run_until(until)


def ev(events, kind):
    return [e for e in events if e["event"] == kind]


# -- single ops ------------------------------------------------------------------------------
def test_start_event_and_move():
    m, events = run(img(("MOVE", {"reg": X1, "value": 104})), 10)
    assert events[0] == {"event": "state", "slot": 0, "state": "running", "reason": "start",
                         "pc": 0, "cycle": 0, "time_us": 0.0}
    assert events[1] == {"event": "reg", "slot": 0, "reg": "layer[1].x", "value": 104,
                         "cycle": 0, "time_us": 0.0}
    assert events[2]["state"] == "done" and events[2]["cycle"] == 1 and events[2]["pc"] == 1
    assert m.regs["layer[1].x"] == 104
    assert m.status(0)["state"] == "done" and m.status(0)["reason"] == "halt"


def test_move_negative_value_is_twos_complement():
    m, events = run(img(("MOVE", {"reg": X1, "value": 0xFFFF}),
                        ("MOVE", {"reg": reg(1, "alpha"), "value": 255}),
                        ("MOVE", {"reg": reg(1, "visible"), "value": 1})), 10)
    assert [e["value"] for e in ev(events, "reg")] == [-1, 255, 1]
    # out-of-range values of unsigned registers never reach the VM
    with pytest.raises(ImageError, match="does not fit"):
        Machine(MachineParams(MHZ)).load(img(("MOVE", {"reg": reg(1, "alpha"), "value": 0x1FF})))


@pytest.mark.parametrize("field,start,delta,expected", [
    ("x", 32767, 1, -32768), ("x", -32768, -1, 32767), ("y", 100, -200, -100),
    ("z", 32000, 1000, -32536), ("alpha", 255, 1, 0), ("alpha", 0, -1, 255),
    ("alpha", 200, 300, 244), ("visible", 1, 1, 0), ("visible", 0, -1, 1),
    ("visible", 0, 2, 0),
])
def test_add_wraps_per_register_kind(field, start, delta, expected):
    r = reg(2, field)
    f = isa.REGISTER_FIELD_BY_NAME[field]
    m, events = run(img(("MOVE", {"reg": r, "value": start & 0xFFFF}),
                        ("ADD", {"reg": r, "delta": delta})), 10)
    assert ev(events, "reg")[0]["value"] == start
    assert ev(events, "reg")[1]["value"] == expected == f.wrap(start + delta)
    assert m.regs[f"layer[2].{field}"] == expected


def test_nop_irq_bind_costs_and_events():
    m, events = run(img(("NOP", {}), ("IRQ", {"tag": 1}), ("BIND_LAYER", {"layer": 3, "surface": 1}),
                        ("IRQ", {"tag": 0})), 10)
    assert ev(events, "irq") == [
        {"event": "irq", "slot": 0, "tag": "t1", "cycle": 1, "time_us": 1.0},
        {"event": "irq", "slot": 0, "tag": "t0", "cycle": 3, "time_us": 3.0}]
    assert ev(events, "bind") == [{"event": "bind", "slot": 0, "layer": 3, "surface": "s1",
                                   "cycle": 2, "time_us": 2.0}]
    assert m.status(0)["bindings"] == {3: "s1"}
    assert ev(events, "state")[-1]["cycle"] == 4


def test_jump_costs_two_cycles():
    # 0: IRQ, 1: JUMP 3, 2: IRQ (skipped), 3: IRQ
    m, events = run(img(("IRQ", {"tag": 0}), ("JUMP", {"target": 3}), ("IRQ", {"tag": 1}),
                        ("IRQ", {"tag": 1})), 10)
    assert [(e["tag"], e["cycle"]) for e in ev(events, "irq")] == [("t0", 0), ("t1", 3)]


def test_wait_us_is_exact_at_12mhz():
    m, events = run(img(("IRQ", {"tag": 0}), ("WAIT", {"us": 1000}), ("IRQ", {"tag": 1})),
                    100_000, clock_hz=12_000_000)
    irqs = ev(events, "irq")
    assert irqs[1]["cycle"] - irqs[0]["cycle"] == 1 + 12_000
    assert irqs[1]["time_us"] == time_us(12_001, 12_000_000) == 1000.083


def test_long_wait_is_skipped_in_constant_time():
    m = Machine(MachineParams(12_000_000, 60.0))
    m.start(m.load(img(("WAIT", {"us": isa.WAIT_US_MAX}), ("IRQ", {"tag": 0}))))
    t0 = time.perf_counter()
    events = m.run_until(isa.WAIT_US_MAX * 12 + 10)
    # cycle by cycle this would be ~2e8 steps (minutes); skipped, it is microseconds. The
    # bound is loose on purpose: a loaded CI machine must not turn it into a flake.
    assert time.perf_counter() - t0 < 1.0
    assert ev(events, "irq")[0]["cycle"] == isa.WAIT_US_MAX * 12


@pytest.mark.parametrize("wait_at,resume", [
    (0, 1001),        # first edge after 0 is P
    (999, 1001),      # just before an edge
    (1000, 2001),     # issued exactly on an edge: the *next* edge
    (1001, 2001),
])
def test_wait_vsync_edges(wait_at, resume):
    # P = 1000 cycles (1 MHz, 1 kHz vsync); reach wait_at with NOPs/WAIT us.
    pre = [("WAIT", {"us": wait_at})] if wait_at else []
    m, events = run(img(*pre, ("WAIT", {"vsync": 1}), ("IRQ", {"tag": 0})), 5000)
    assert ev(events, "irq")[0]["cycle"] == resume


def test_wait_vsync_edges_are_global_not_program_relative():
    m = Machine(MachineParams(MHZ, 1000.0))
    m.run_until(300)
    m.start(m.load(img(("WAIT", {"vsync": 1}), ("IRQ", {"tag": 0}))))
    events = m.run_until(3000)
    # started at global 300; edge at global 1000 -> resumes global 1001 = program 701
    assert ev(events, "irq")[0]["cycle"] == 701


def test_loop_count_one_falls_through_in_one_cycle():
    m, events = run(img(("IRQ", {"tag": 0}), ("LOOP", {"slot": 0, "target": 0, "count": 1}),
                        ("IRQ", {"tag": 1})), 100)
    assert [(e["tag"], e["cycle"]) for e in ev(events, "irq")] == [("t0", 0), ("t1", 2)]


def test_loop_runs_body_n_times_and_costs():
    m, events = run(img(("IRQ", {"tag": 0}), ("LOOP", {"slot": 0, "target": 0, "count": 3}),
                        ("IRQ", {"tag": 1})), 100)
    # body at 0, 3, 6 (taken LOOP costs 2); fall-through at 7 costs 1 -> t1 at 8
    assert [(e["tag"], e["cycle"]) for e in ev(events, "irq")] == [
        ("t0", 0), ("t0", 3), ("t0", 6), ("t1", 8)]


def test_nested_loops_rearm():
    # outer 2 x (inner 3 x IRQ t0; IRQ t1)
    m, events = run(img(("IRQ", {"tag": 0}),
                        ("LOOP", {"slot": 0, "target": 0, "count": 3}),
                        ("IRQ", {"tag": 1}),
                        ("LOOP", {"slot": 1, "target": 0, "count": 2})), 1000)
    assert [e["tag"] for e in ev(events, "irq")] == ["t0"] * 3 + ["t1"] + ["t0"] * 3 + ["t1"]
    assert m.status(0)["state"] == "done"


def test_loop_forever():
    m, events = run(img(("IRQ", {"tag": 0}), ("WAIT", {"us": 10}),
                        ("LOOP", {"slot": 0, "target": 0, "count": 0})), 10_000)
    irqs = ev(events, "irq")
    assert len(irqs) == 770           # period 1 + 10 + 2 = 13 cycles; ceil(10000 / 13)
    assert all(b["cycle"] - a["cycle"] == 13 for a, b in zip(irqs, irqs[1:]))
    assert m.status(0)["state"] == "running"


def test_forever_loop_leaves_slot_0_to_a_finite_loop():
    # The forever LOOP uses slot 0 without touching its counter: the finite LOOP (also
    # slot 0) still runs its body 3 times on every 11-cycle pass.
    m, events = run(img(("IRQ", {"tag": 0}),
                        ("LOOP", {"slot": 0, "target": 0, "count": 3}),
                        ("IRQ", {"tag": 1}),
                        ("LOOP", {"slot": 0, "target": 0, "count": 0})), 33)
    assert [e["tag"] for e in ev(events, "irq")] == (["t0"] * 3 + ["t1"]) * 3


def test_loop_counters_cleared_on_restart():
    m = Machine(MachineParams(MHZ, 1000.0))
    s = m.load(img(("IRQ", {"tag": 0}), ("WAIT", {"us": 5}),
                   ("LOOP", {"slot": 0, "target": 0, "count": 3})))
    m.start(s)
    m.run_until(8)              # mid-loop: counter armed
    m.stop(s)
    m.start(s)
    events = m.run_until(200)
    assert len(ev(events, "irq")) == 3
    assert [e["state"] for e in ev(events, "state")] == ["stopped", "running", "done"]


def test_fence_already_satisfied_costs_one_cycle():
    m, events = run(img(("FENCE", {"timeline": 0, "value": 5}), ("IRQ", {"tag": 0})), 100,
                    fences=[("vk", 5)])
    assert ev(events, "irq")[0]["cycle"] == 1


def test_fence_later_resumes_one_cycle_after_set():
    m = Machine(MachineParams(MHZ, 1000.0))
    m.start(m.load(img(("FENCE", {"timeline": 0, "value": 5}), ("IRQ", {"tag": 0}))))
    assert [e["state"] for e in m.run_until(100)] == ["running"]
    assert m.status(0)["fence"] == {"timeline": "vk", "value": 5}
    assert m.next_event_cycle() is None
    m.set_fence("vk", 4)                      # not enough
    assert ev(m.run_until(200), "irq") == []
    m.set_fence("gl", 9)                      # other timeline
    assert ev(m.run_until(300), "irq") == []
    m.set_fence("vk", 7)
    assert m.next_event_cycle() == 300 + isa.FENCE_RESUME_LATENCY
    assert ev(m.run_until(400), "irq")[0]["cycle"] == 300 + isa.FENCE_RESUME_LATENCY


def test_fence_set_in_issue_cycle_is_seen():
    m = Machine(MachineParams(MHZ, 1000.0))
    m.start(m.load(img(("WAIT", {"us": 50}), ("FENCE", {"timeline": 0, "value": 1}),
                       ("IRQ", {"tag": 0}))))
    m.run_until(50)                           # the FENCE issues in cycle 50
    m.set_fence("vk", 1)                      # effective in cycle 50
    assert ev(m.run_until(100), "irq")[0]["cycle"] == 51


def test_fence_values_are_monotonic_and_bounded():
    m = Machine(MachineParams(MHZ))
    m.set_fence("vk", 3)
    m.set_fence("vk", 3)
    with pytest.raises(ValueError, match="monotonic"):
        m.set_fence("vk", 2)
    with pytest.raises(ValueError, match="0..16777215"):
        m.set_fence("vk", 1 << 24)
    assert m.fence("vk") == 3 and m.fence("other") == 0


def test_fence_shared_by_programs():
    m = Machine(MachineParams(MHZ, 1000.0))
    a = m.load(img(("FENCE", {"timeline": 0, "value": 2}), ("IRQ", {"tag": 0})))
    b = m.load(img(("FENCE", {"timeline": 0, "value": 1}), ("IRQ", {"tag": 1})))
    m.start(a)
    m.start(b)
    m.run_until(10)
    m.set_fence("vk", 2)
    irqs = ev(m.run_until(20), "irq")
    assert [(e["slot"], e["cycle"]) for e in irqs] == [(0, 11), (1, 11)]


def test_watchdog_count_is_exact_on_jump_loop():
    m, events = run(img(("JUMP", {"target": 0})), 1000, watchdog_ops=10)
    st_ = ev(events, "state")[-1]
    assert st_ == {"event": "state", "slot": 0, "state": "faulted", "reason": "watchdog",
                   "pc": 0, "cycle": 20, "time_us": 20.0}
    assert m.status(0)["ops"] == 10


def test_watchdog_counts_nops_then_faults_before_issue():
    m, events = run(img(*[("NOP", {})] * 10, ("IRQ", {"tag": 0})), 1000, watchdog_ops=10)
    assert ev(events, "irq") == []
    assert ev(events, "state")[-1]["cycle"] == 10 and ev(events, "state")[-1]["pc"] == 10


def test_watchdog_reset_by_wait_and_by_waiting_fence_only():
    body = [("NOP", {})] * 4
    # 4 NOPs + WAIT = 5 ops between resets: watchdog 5 never fires.
    m, events = run(img(*body, ("WAIT", {"us": 1}), ("JUMP", {"target": 0})), 500,
                    watchdog_ops=6)
    assert m.status(0)["state"] == "running"
    # a satisfied FENCE counts like any op: 4 NOPs + FENCE + JUMP = 6 -> fault at the 7th.
    m, events = run(img(*body, ("FENCE", {"timeline": 0, "value": 0}), ("JUMP", {"target": 0})),
                    500, watchdog_ops=6)
    assert m.status(0)["state"] == "faulted" and m.status(0)["pc"] == 0
    # a FENCE that had to wait resets it
    def fence_released_at_10(watchdog_ops):
        m = Machine(MachineParams(MHZ, 1000.0, watchdog_ops))
        m.start(m.load(img(("NOP", {}), ("NOP", {}), ("FENCE", {"timeline": 0, "value": 1}),
                           ("NOP", {}), ("NOP", {}), ("NOP", {}), ("IRQ", {"tag": 0}))))
        m.run_until(10)
        m.set_fence("vk", 1)
        return m, m.run_until(100)
    m, events = fence_released_at_10(3)
    assert not any(e["event"] == "irq" for e in events)
    assert m.status(0)["state"] == "faulted" and m.status(0)["pc"] == 6
    # ... and HALT is an op too: 3 NOPs + IRQ + HALT needs watchdog_ops 5
    m, _ = fence_released_at_10(5)
    assert m.status(0)["state"] == "done"


def test_two_programs_one_register_same_cycle():
    m = Machine(MachineParams(MHZ, 1000.0))
    a = m.load(img(("ADD", {"reg": X1, "delta": 5})))
    b = m.load(img(("ADD", {"reg": X1, "delta": 7})))
    m.start(a)
    m.start(b)
    events = m.run_until(10)
    regs = ev(events, "reg")
    assert [(e["slot"], e["value"], e["cycle"]) for e in regs] == [(0, 5, 0), (1, 12, 0)]
    assert m.regs["layer[1].x"] == 12
    # MOVE: the higher slot's write is the one left
    m = Machine(MachineParams(MHZ, 1000.0))
    a = m.load(img(("MOVE", {"reg": X1, "value": 1})))
    b = m.load(img(("MOVE", {"reg": X1, "value": 2})))
    m.start(b)
    m.start(a)
    m.run_until(5)
    assert m.regs["layer[1].x"] == 2


def test_events_ordered_by_cycle_then_slot_for_interleaved_programs():
    m = Machine(MachineParams(MHZ, 1000.0))
    a = m.load(img(("IRQ", {"tag": 0}), ("WAIT", {"us": 3}), ("JUMP", {"target": 0})))
    b = m.load(img(("IRQ", {"tag": 1}), ("NOP", {}), ("JUMP", {"target": 0})))
    m.start(b)
    m.start(a)
    events = [e for e in m.run_until(200) if e["event"] == "irq"]
    keys = [(e["cycle"], e["slot"]) for e in events]
    assert keys == sorted(keys)
    assert len([e for e in events if e["slot"] == 0]) == 34  # every 6 cycles
    assert len([e for e in events if e["slot"] == 1]) == 50  # every 4 cycles


def test_halt_and_state_events_and_stop():
    m = Machine(MachineParams(MHZ, 1000.0))
    s = m.load(img(("WAIT", {"us": 100})))
    m.start(s)
    m.run_until(40)
    m.stop(s)
    events = m.run_until(40)
    assert events == [{"event": "state", "slot": 0, "state": "stopped", "reason": "host",
                       "pc": 1, "cycle": 40, "time_us": 40.0}]
    assert m.next_event_cycle() is None
    m.stop(s)                                 # no-op when not running
    assert m.run_until(50) == []


def test_slots_load_unload_and_errors():
    m = Machine(MachineParams(MHZ, contexts=2))
    a = m.load(img(("NOP", {})))
    b = m.load(img(("NOP", {})))
    assert (a, b) == (0, 1)
    with pytest.raises(MachineError, match="contexts"):
        m.load(img(("NOP", {})))
    m.start(a)
    with pytest.raises(MachineError, match="already running"):
        m.start(a)
    m.unload(a)
    assert m.run_until(0)[-1]["state"] == "stopped"
    assert m.load(img(("NOP", {}))) == 0
    with pytest.raises(MachineError, match="no program in slot 5"):
        m.status(5)
    m.run_until(10)
    with pytest.raises(ValueError, match="already at cycle"):
        m.run_until(5)


def test_load_refuses_registers_and_layers_the_machine_lacks():
    with pytest.raises(ImageError, match="register index"):
        Machine(MachineParams(MHZ, layers=2)).load(img(("MOVE", {"reg": reg(5, "x"), "value": 1})))
    with pytest.raises(ImageError, match="register index 5"):
        Machine(MachineParams(MHZ)).load(Image(code=(isa.encode("ADD", reg=5, delta=1),
                                                     isa.encode("HALT"))))
    with pytest.raises(ImageError, match="BIND_LAYER layer 9"):
        Machine(MachineParams(MHZ, layers=4)).load(img(("BIND_LAYER", {"layer": 9, "surface": 0})))
    with pytest.raises(ImageError, match="does not end in HALT"):
        Machine(MachineParams(MHZ)).load(Image(code=(isa.encode("NOP"),)))
    with pytest.raises(ValueError, match="whole number of MHz"):
        Machine(MachineParams(12_500_000))


def test_vsync_events_interleave_before_program_events():
    m = Machine(MachineParams(MHZ, 1000.0, vsync_events=True))
    m.start(m.load(img(("WAIT", {"us": 1000}), ("IRQ", {"tag": 0}))))
    events = m.run_until(2500)
    kinds = [(e["event"], e["cycle"]) for e in events]
    assert kinds == [("state", 0), ("vsync", 1000), ("irq", 1000), ("state", 1001),
                     ("vsync", 2000)]
    assert events[1]["frame"] == 1


def test_regs_lists_every_register():
    m = Machine(MachineParams(MHZ, layers=3))
    assert len(m.regs) == 15 and m.regs["layer[2].visible"] == 0


def test_same_image_twice_gives_identical_events():
    image = img(("MOVE", {"reg": X1, "value": 3}), ("WAIT", {"vsync": 1}),
                ("ADD", {"reg": X1, "delta": 4}), ("IRQ", {"tag": 0}),
                ("LOOP", {"slot": 0, "target": 1, "count": 0}))
    a = run(image, 1_000_000, clock_hz=12_000_000, vsync_hz=60.0)[1]
    b = run(image, 1_000_000, clock_hz=12_000_000, vsync_hz=60.0)[1]
    assert a == b and len(a) == 10     # running, MOVE, 4 x (ADD, IRQ)


# -- cross-check against a cycle-by-cycle reference interpreter -----------------------------
class Reference:
    """Literal, slow reading of EXECUTION_RULES: steps every cycle, every slot in order."""

    def __init__(self, clock_hz, vsync_hz, watchdog_ops):
        self.hz = clock_hz
        self.cpu = clock_hz // 1_000_000
        self.P = round(clock_hz / vsync_hz)
        self.wd = watchdog_ops
        self.regs = {}
        self.fences = {}
        self.progs = []
        self.events = []

    def load(self, image):
        self.progs.append({"img": image, "code": image.decoded(), "state": "loaded"})
        return len(self.progs) - 1

    def _ev(self, p, g, **kw):
        c = g - p["start"]
        self.events.append({"event": kw.pop("event"), "slot": p["slot"], **kw, "cycle": c,
                            "time_us": time_us(c, self.hz)})

    def start(self, slot, g):
        p = self.progs[slot]
        p.update(slot=slot, state="running", pc=0, start=g, next=g, idle=0, loops=[0] * 8,
                 blocked=None)
        self._ev(p, g, event="state", state="running", reason="start", pc=0)

    def cycle(self, g):
        """Everything that happens in global cycle g (after host actions)."""
        for p in self.progs:
            if p["state"] == "running" and p["blocked"]:
                name, v = p["blocked"]
                if self.fences.get(name, 0) >= v:
                    p["blocked"] = None
                    p["next"] = g + 1
        for p in self.progs:
            if p["state"] != "running" or p["blocked"] or p["next"] != g:
                continue
            if p["idle"] == self.wd:
                p["state"] = "faulted"
                self._ev(p, g, event="state", state="faulted", reason="watchdog", pc=p["pc"])
                continue
            ins = p["code"][p["pc"]]
            f = ins.fields
            name = ins.name
            reset = False
            nxt, pc = g + 1, p["pc"] + 1
            if name == "HALT":
                p["state"] = "done"
                self._ev(p, g, event="state", state="done", reason="halt", pc=p["pc"])
                continue
            if name in ("MOVE", "ADD"):
                field = isa.register_field(f["reg"])
                rn = isa.register_name(f["reg"])
                old = self.regs.get(rn, 0)
                new = field.wrap(f["value"] if name == "MOVE" else old + f["delta"])
                self.regs[rn] = new
                self._ev(p, g, event="reg", reg=rn, value=new)
            elif name == "IRQ":
                self._ev(p, g, event="irq", tag=p["img"].tags[f["tag"]])
            elif name == "BIND_LAYER":
                self._ev(p, g, event="bind", layer=f["layer"],
                         surface=p["img"].surfaces[f["surface"]])
            elif name == "JUMP":
                nxt, pc = g + 2, f["target"]
            elif name == "WAIT":
                reset = True
                if f["vsync"]:
                    e = self.P
                    while e <= g:
                        e += self.P
                    nxt = e + isa.VSYNC_LATENCY
                else:
                    nxt = g + f["us"] * self.cpu
            elif name == "LOOP":
                if f["count"] == 0:
                    nxt, pc = g + 2, f["target"]
                else:
                    cnt = p["loops"][f["slot"]]
                    cnt = f["count"] - 1 if cnt == 0 else cnt - 1
                    p["loops"][f["slot"]] = cnt
                    if cnt:
                        nxt, pc = g + 2, f["target"]
            elif name == "FENCE":
                tl = p["img"].timelines[f["timeline"]]
                if self.fences.get(tl, 0) < f["value"]:
                    p["blocked"] = (tl, f["value"])
                    reset = True
                    nxt = None
            p["idle"] = 0 if reset else p["idle"] + 1
            p["pc"], p["next"] = pc, nxt


def _ops(n_ops):
    """A strategy for n_ops random ops (raw fields), targets within the program."""
    regs = [reg(0, "x"), reg(0, "alpha"), reg(1, "visible"), reg(1, "z")]
    op = st.one_of(
        st.tuples(st.just("NOP"), st.just({})),
        st.builds(lambda r, v: ("MOVE", {"reg": r, "value": v if isa.register_field(r).signed
                                         else v % (isa.register_field(r).max + 1)}),
                  st.sampled_from(regs), st.integers(0, 0xFFFF)),
        st.builds(lambda r, d: ("ADD", {"reg": r, "delta": d}), st.sampled_from(regs),
                  st.integers(-32768, 32767)),
        st.builds(lambda t: ("IRQ", {"tag": t}), st.integers(0, 1)),
        st.builds(lambda t: ("JUMP", {"target": t}), st.integers(0, n_ops)),
        st.builds(lambda t, c: ("LOOP", {"target": t, "count": c}), st.integers(0, n_ops),
                  st.integers(0, 4)),
        st.builds(lambda u: ("WAIT", {"us": u}), st.integers(1, 6)),
        st.just(("WAIT", {"vsync": 1})),
        st.builds(lambda t, v: ("FENCE", {"timeline": t, "value": v}), st.integers(0, 1),
                  st.integers(0, 3)),
        st.builds(lambda l, s: ("BIND_LAYER", {"layer": l, "surface": s}), st.integers(0, 3),
                  st.integers(0, 1)),
    )
    return st.lists(op, min_size=n_ops, max_size=n_ops)


@st.composite
def scenario(draw):
    progs = []
    for _ in range(draw(st.integers(1, 3))):
        n = draw(st.integers(1, 10))
        ops = draw(_ops(n))
        slot = 0
        fixed = []
        for name, f in ops:
            if name == "LOOP":          # finite LOOPs get slots 0, 1, ...; forever LOOPs 0
                f = dict(f, slot=slot % 8 if f["count"] else 0)
                slot += 1 if f["count"] else 0
            fixed.append((name, f))
        progs.append((img(*fixed), draw(st.integers(0, 30))))
    fences = sorted(draw(st.lists(st.tuples(st.integers(0, 300), st.integers(0, 1),
                                            st.integers(1, 4)), max_size=4)))
    wd = draw(st.integers(1, 40))
    return progs, fences, wd


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario())
def test_fast_vm_matches_cycle_by_cycle_reference(case):
    progs, fence_plan, wd = case
    end = 400
    hz, vhz = MHZ, 50_000.0                   # P = 20 cycles
    m = Machine(MachineParams(hz, vhz, wd))
    ref = Reference(hz, vhz, wd)
    for image, _ in progs:
        assert m.load(image) == ref.load(image)
    # Host actions, by cycle: starts (in slot order), then fences (monotonic per timeline).
    actions = {}
    for slot, (_, at) in enumerate(progs):
        actions.setdefault(at, []).append(("start", slot))
    level = {0: 0, 1: 0}
    for at, tl, inc in fence_plan:
        level[tl] += inc
        actions.setdefault(at, []).append(("fence", ("vk", "gl")[tl], level[tl]))
    events = []
    for g in range(end):
        for act in actions.get(g, []):
            if act[0] == "start":
                if m.cycle < g:
                    events += m.run_until(g)
                m.start(act[1])
                ref.start(act[1], g)
            else:
                if m.cycle < g:
                    events += m.run_until(g)
                m.set_fence(act[1], act[2])
                ref.fences[act[1]] = act[2]
        ref.cycle(g)
    events += m.run_until(end)
    assert events == ref.events
    for name, value in ref.regs.items():
        assert m.regs[name] == value
    for slot, p in enumerate(ref.progs):
        assert m.status(slot)["state"] == p["state"]
