"""The RTL engine: the Amaranth Copper core simulated, as an engine (copperline.sim.engine).

:class:`RtlMachine` satisfies the same engine interface as the VM
(:class:`copperline.sim.vm.Machine`), so that the same driver code and the same
equivalence tests run on the VM and on the RTL. The design runs in
``amaranth.sim`` on a dedicated thread; every host action becomes a port transaction at a
core-cycle boundary (``cmd`` stream in phase 0, ``fence_wr`` in the phase of the slot),
and events are read from the executor's record stream (the FIFO's input, so there is no
FIFO latency to wait for; the FIFO itself is tested by the cocotb benches).

Simulation-only shortcuts (the ports they stand for are tested elsewhere): program words
and the reset of registers/fences are written straight into the memories.
"""

from __future__ import annotations

import logging
import operator
import queue
import threading

from amaranth.sim import Simulator

from copperline.firmware import isa
from copperline.firmware.image import Image
from copperline.hdl.core import Core, CtxState, Reason
from copperline.hdl.event_fifo import EventKind, TIMESTAMP_BITS
from copperline.sim.engine import EngineError, MachineParams


log = logging.getLogger(__name__)

__all__ = ["RtlMachine", "RtlEngineBase", "RtlError"]

_REASONS = {Reason.HALT: "halt", Reason.HOST: "host", Reason.WATCHDOG: "watchdog",
            Reason.ILLEGAL: "illegal"}
_TS_MASK = (1 << TIMESTAMP_BITS) - 1
_BY_CYCLE = operator.itemgetter(0, 1)


class RtlError(EngineError):
    """A request the RTL engine refuses."""


def core_for(params: MachineParams, **options) -> Core:
    """The :class:`~copperline.hdl.core.Core` of the machine ``params`` describes;
    ``options``: more Core arguments (program memory, ECP5 build options)."""
    return Core(params.clock_hz, params.vsync_hz, watchdog_ops=params.watchdog_ops,
                layers=params.layers, contexts=params.contexts,
                program_words=params.program_words, **options)


class _Slot:
    def __init__(self, image: Image):
        self.image = image
        self.started = False
        self.start = 0
        self.state = "loaded"
        self.reason: str | None = None
        self.bindings: dict[int, str] = {}
        self.ops = None


class RtlEngineBase:
    """The host side shared by the RTL engines: slots, fences, commands at core-cycle
    boundaries, and the conversion of the core's event records to the VM's events.

    A subclass runs the core (``amaranth.sim`` here, CXXRTL in :mod:`copperline.sim.cxxrtl`)
    and provides ``_hw_clear_regs``, ``_hw_clear_fences``, ``_hw_load``, ``_hw_regs``,
    ``_hw_status``, ``_hw_run`` and ``close``.

    Pipeline note: E of the last context of core cycle ``c`` runs in phase 0 of ``c + 1``
    from registers only, so ``_hw_run`` reads that record (without clocking) at the end of
    a run and the next run does not read it again; its register write lands on the next
    clock, so :attr:`regs` applies it (``_pending_reg``).
    """

    def __init__(self, core: Core, params: MachineParams):
        self.core = core
        self.params = params
        # (flat copies: the event conversion and the command encoding read them)
        self.clock_hz = params.clock_hz
        self.vsync_period = core.vsync_period
        self.layers, self.contexts = params.layers, params.contexts
        self.program_words = params.program_words
        self.vsync_events = params.vsync_events
        self.cycle = 0
        self._slots: list[_Slot | None] = [None] * params.contexts
        self._fences: dict[str, int] = {}
        self._cmd = {"start": 0, "stop": 0, "reset": 0, "timebase": 0}
        self._fence_writes: list[tuple[int, int, int]] = []
        self._actions: list[tuple[int, str]] = []     # host actions of the pending cycle
        self._stopping: dict[int, _Slot] = {}
        self._reg_names = isa.register_names(params.layers)
        self._wraps = [isa.register_field(i).wrap if name else None
                       for i, name in enumerate(self._reg_names)]
        self._pending_reg: tuple[int, int] | None = None
        self._clear_regs = False
        # Before the first cycle that counts, one hidden core cycle primes the pipeline
        # (and resets every slot), so that programs loaded at cycle 0 are fetched.
        self._prelude = True
        self._loaded_now: set[int] = set()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self) -> None:
        raise NotImplementedError

    # -- programs ---------------------------------------------------------------------
    def time_us(self, cycle: int) -> float:
        return round(cycle * 1_000_000 / self.clock_hz, 3)

    def reset(self) -> None:
        """Machine reset: registers and fences 0, every slot freed, cycle 0."""
        self._hw_clear_fences()
        # the register file is cleared after the prelude cycle: a write still in flight
        # (E of the last context, see the class docstring) lands in its first clock
        self._clear_regs = True
        self._pending_reg = None
        self._fences = {}
        self._slots = [None] * self.contexts
        self._cmd = {"start": 0, "stop": 0, "reset": 0, "timebase": 0}
        self._fence_writes, self._actions = [], []
        self._prelude = True
        self._loaded_now = set()
        self.cycle = 0

    def load(self, image: Image) -> int:
        """Load ``image`` into the lowest free slot and return the slot."""
        if not isinstance(image, Image):
            raise TypeError(f"load() needs an Image, got {type(image).__name__}")
        image.check_fits(self.program_words, self.layers)
        for slot, cur in enumerate(self._slots):
            if cur is None:
                break
        else:
            raise RtlError(f"all {self.contexts} program contexts are in use")
        base = slot * self.program_words
        code = list(image.code)
        # the slot's fence entries get the current values of the image's timelines
        fences = [self._fences.get(name, 0) for name in image.timelines]
        fences += [0] * (isa.FENCE_TIMELINES - len(fences))

        self._hw_load(base, code, slot * isa.FENCE_TIMELINES, fences)
        self._slots[slot] = _Slot(image)
        self._loaded_now.add(slot)
        return slot

    def unload(self, slot: int) -> None:
        s = self._slot(slot)
        if s.state == "running":
            self.stop(slot)
        self._slots[slot] = None

    def start(self, slot: int) -> None:
        """Start the program in ``slot``: its first op issues in the current cycle."""
        s = self._slot(slot)
        if s.state == "running":
            raise RtlError(f"slot {slot} is already running")
        if self._cmd["stop"] >> slot & 1:
            raise RtlError(f"slot {slot}: the core cannot stop and restart a program in the "
                           "same cycle; run at least one cycle in between")
        if slot in self._loaded_now and slot < 2 and not self._prelude:
            # Contexts 0 and 1 fetch their first word in the previous core cycle.
            raise RtlError(f"slot {slot}: a program loaded in this cycle can start one cycle "
                           "later at the earliest (run_until(cycle + 1) first)")
        self._cmd["start"] |= 1 << slot
        s.state, s.reason = "running", None
        self._actions.append((slot, "start"))

    def stop(self, slot: int) -> None:
        s = self._slot(slot)
        if s.state != "running":
            return
        if self._cmd["start"] >> slot & 1:
            raise RtlError(f"slot {slot}: started in this cycle; run at least one cycle first")
        self._cmd["stop"] |= 1 << slot
        self._actions.append((slot, "stop"))
        self._stopping[slot] = s     # the slot may be unloaded before the event comes back

    def set_fence(self, name: str, value: int) -> None:
        """Set timeline ``name`` to ``value``, effective in the current cycle (rule 5)."""
        problem = isa.fence_update_problem(name, value, self._fences.get(name, 0))
        if problem:
            raise ValueError(problem)
        self._fences[name] = value
        for slot, s in enumerate(self._slots):
            if s is not None and name in s.image.timelines:
                self._fence_writes.append((slot, s.image.timelines.index(name), value))

    def fence(self, name: str) -> int:
        return self._fences.get(name, 0)

    def slots(self) -> list[int]:
        return [i for i, s in enumerate(self._slots) if s is not None]

    def slot_start(self, slot: int) -> int:
        return self._slot(slot).start

    def next_event_cycle(self) -> int | None:
        """The RTL cannot look ahead: the current cycle while a program runs, vsync
        events are on or host actions are pending; None otherwise."""
        if (self.vsync_events or self._actions
                or any(s is not None and s.state == "running" for s in self._slots)):
            return self.cycle
        return None

    @property
    def regs(self) -> dict[str, int]:
        """Every register by name, read from the host read-back copy of the register file."""
        raw = list(self._hw_regs())
        if self._pending_reg is not None:          # E's write of the last cycle run
            idx, value = self._pending_reg
            raw[idx] = value
        return {name: isa.register_field(i).wrap(raw[i])
                for i, name in enumerate(self._reg_names) if name}

    def status(self, slot: int) -> dict:
        """State, pc, reason, bindings and program cycle of ``slot`` (state and pc from the
        core's status port)."""
        s = self._slot(slot)

        hw_state, pc = self._hw_status(slot)
        if slot == self.core.phases - 1 and not self._prelude:
            # E of the last context runs in phase 0 of the next core cycle: its result
            # (what the VM shows after the cycle) is not in the status registers yet
            hw_state, pc = self._hw_next()
        state = s.state if s.state == "loaded" and not s.started else CtxState(hw_state).host_name
        if self._cmd["start"] >> slot & 1:
            state, pc = "running", 0
        return {"slot": slot, "state": state, "pc": pc, "reason": s.reason,
                "bindings": dict(s.bindings), "ops": None,
                "cycle": self.cycle - s.start if s.started else 0}

    def _slot(self, slot: int) -> _Slot:
        if not isinstance(slot, int) or not 0 <= slot < self.contexts or self._slots[slot] is None:
            raise RtlError(f"no program in slot {slot!r}")
        return self._slots[slot]

    # -- running ----------------------------------------------------------------------
    def run_until(self, cycle: int) -> list[dict]:
        """Simulate every core cycle from ``self.cycle`` up to (not including) ``cycle``;
        returns their events in the VM's order."""
        if cycle < self.cycle:
            raise ValueError(f"run_until({cycle}): the machine is already at cycle {self.cycle}")
        if cycle == self.cycle:
            return []
        if self._prelude:
            pending = self._cmd
            self._cmd = {"start": 0, "stop": 0, "reset": (1 << self.contexts) - 1, "timebase": 0}
            saved, self._fence_writes = self._fence_writes, []
            self._run(1, collect=False)
            if self._clear_regs:
                self._hw_clear_regs()
                self._clear_regs = False
            self._cmd, self._fence_writes = pending, saved
            self._cmd["timebase"] = 1
            self._prelude = False
        self._loaded_now = set()
        out = self._convert(self._run(cycle - self.cycle))
        self.cycle = cycle
        return out

    def _run(self, n: int, collect: bool = True):
        """Run ``n`` core cycles with the pending host actions in the first one."""
        cmd = self._cmd
        cmd_val = (cmd["start"] | cmd["stop"] << self.contexts | cmd["reset"] << 2 * self.contexts
                   | cmd["timebase"] << 3 * self.contexts)
        writes: dict[int, tuple[int, int]] = {}
        late = []
        for slot, tl, value in self._fence_writes:
            if slot in writes:
                late.append((slot, tl, value))
            else:
                writes[slot] = (tl, value)
        if late:
            log.warning("more than one fence write for a slot in one cycle: %s applied a cycle late",
                        late)
        if late and n > 1:      # the late writes go out in the next cycle
            first = self._hw_run(1, cmd_val, writes, collect)
            self._cmd = {"start": 0, "stop": 0, "reset": 0, "timebase": 0}
            self._fence_writes = late
            rest = self._run(n - 1, collect)
            return first[0] + rest[0], first[1] + rest[1]
        records, vsync_cycles, tail = self._hw_run(n, cmd_val, writes, collect)
        self._cmd = {"start": 0, "stop": 0, "reset": 0, "timebase": 0}
        self._fence_writes = late
        self._pending_reg = None
        if tail is not None and tail & 7 == EventKind.REG:
            payload = tail >> (4 + self.core.slot_bits) & 0xFFFFFF
            self._pending_reg = (payload >> 16, payload & 0xFFFF)
        return records, vsync_cycles

    def _convert(self, result) -> list[dict]:
        records, vsync_cycles = result[:2]
        sb = self.core.slot_bits
        first = self.cycle
        actions, self._actions = self._actions, []
        stopping, self._stopping = self._stopping, {}
        order = {act: i for i, act in enumerate(actions)}
        front: list[tuple[int, dict]] = []     # host actions of the first cycle, call order
        rest: list[tuple[int, int, dict]] = []  # (cycle, 0 vsync / 1 program, event)

        def unwrap(ts: int) -> int:            # hardware cycle == engine cycle mod 2**32
            return first + ((ts - first) & _TS_MASK)

        for hw in vsync_cycles:
            g = unwrap(hw)
            rest.append((g, 0, {"event": "vsync", "frame": g // self.vsync_period, "cycle": g,
                                "time_us": self.time_us(g)}))
        # (the hot loop of a busy run: names bound locally, enum values as ints)
        k_none, k_reg, k_irq = int(EventKind.NONE), int(EventKind.REG), int(EventKind.IRQ)
        k_bind, k_state, r_host = int(EventKind.BIND), int(EventKind.STATE), int(Reason.HOST)
        slot_mask, shift_p, shift_g = (1 << sb) - 1, 4 + sb, 4 + sb + 24
        pc_mask = (1 << isa.ADDR_BITS) - 1
        slots, names, wraps = self._slots, self._reg_names, self._wraps
        hz = self.clock_hz
        append = rest.append
        for rec in records:
            kind = rec & 7
            slot = rec >> 4 & slot_mask
            payload = rec >> shift_p & 0xFFFFFF
            g = first + (((rec >> shift_g) - first) & _TS_MASK)
            s = slots[slot]
            if (kind == k_state and payload >> 3 & 7 == r_host and g == first
                    and slot in stopping):
                s = stopping[slot]
            if s is None:
                continue
            if rec >> 3 & 1:
                s.started, s.start, s.bindings = True, g, {}
                front.append((order.get((slot, "start"), len(order)),
                              {"event": "state", "slot": slot, "state": "running",
                               "reason": "start", "pc": 0, "cycle": 0, "time_us": 0.0}))
            if kind == k_none:
                continue
            c = g - s.start
            t = round(c * 1_000_000 / hz, 3)           # (self.time_us, inline)
            if kind == k_reg:
                idx = payload >> 16
                ev = {"event": "reg", "slot": slot, "reg": names[idx],
                      "value": wraps[idx](payload & 0xFFFF), "cycle": c, "time_us": t}
            elif kind == k_irq:
                ev = {"event": "irq", "slot": slot, "tag": s.image.tags[payload & 0xFF],
                      "cycle": c, "time_us": t}
            elif kind == k_bind:
                layer, surface = payload >> 8 & 0xFF, s.image.surfaces[payload & 0xFF]
                s.bindings[layer] = surface
                ev = {"event": "bind", "slot": slot, "layer": layer, "surface": surface,
                      "cycle": c, "time_us": t}
            elif kind == k_state:
                state = CtxState(payload & 7).host_name
                reason = _REASONS.get(Reason(payload >> 3 & 7))
                s.state, s.reason = state, reason
                ev = {"event": "state", "slot": slot, "state": state, "reason": reason,
                      "pc": payload >> 6 & pc_mask, "cycle": c, "time_us": t}
                if reason == "host" and g == first and (slot, "stop") in order:
                    front.append((order[(slot, "stop")], ev))
                    continue
            else:
                raise RtlError(f"the core emitted an unknown event kind {kind}")
            append((g, 1, ev))
        front.sort(key=lambda p: p[0])
        if vsync_cycles:
            rest.sort(key=_BY_CYCLE)             # stable: slot order within a cycle
        return [e for _, e in front] + [e for _, _, e in rest]


class RtlMachine(RtlEngineBase):
    """Cycle-exact RTL simulation of the Copper core in ``amaranth.sim``.

    Parameters
    ----------
    params : MachineParams
        The machine to simulate.
    waves : str or None
        Write a VCD of the whole run to this file (closed by :meth:`close`).
    core_options : dict or None
        More :class:`~copperline.hdl.core.Core` arguments (e.g. the ECP5 build's
        ``lut_ram``/``prog_outreg``, so that its configuration is simulated too).
    """

    def __init__(self, params: MachineParams, *, waves: str | None = None,
                 core_options: dict | None = None):
        super().__init__(core_for(params, **(core_options or {})), params)
        self.waves = waves
        self._requests: queue.Queue = queue.Queue()
        self._replies: queue.Queue = queue.Queue()
        self._closed = False
        self._thread = threading.Thread(target=self._sim_main, name="copper-rtl", daemon=True)
        self._thread.start()

    # -- the simulation thread ---------------------------------------------------------
    def _sim_main(self) -> None:
        sim = Simulator(self.core)
        sim.add_clock(1e-6)
        sim.add_testbench(self._bench)
        try:
            if self.waves:
                with sim.write_vcd(self.waves):
                    sim.run()
            else:
                sim.run()
        except BaseException as exc:   # report to the caller instead of dying silently
            self._replies.put(("error", exc))

    async def _bench(self, ctx) -> None:
        ctx.set(self.core.events.ready, 1)
        while True:
            fn = self._requests.get()
            if fn is None:
                return
            try:
                self._replies.put(("ok", await fn(ctx)))
            except Exception as exc:
                self._replies.put(("error", exc))

    def _call(self, fn):
        if self._closed:
            raise RtlError("the RTL engine is closed")
        self._requests.put(fn)
        kind, value = self._replies.get()
        if kind == "error":
            raise value
        return value

    def close(self) -> None:
        """End the simulation (flushes the VCD file)."""
        if not self._closed:
            self._closed = True
            self._requests.put(None)
            self._thread.join(timeout=30)

    # -- the engine primitives -----------------------------------------------------------
    def _hw_clear_regs(self) -> None:
        async def clear(ctx):
            for mem in (self.core.regfile.exec_mem, self.core.regfile.host_mem):
                for i in range(mem.depth):
                    ctx.set(mem.data[i], 0)
        self._call(clear)

    def _hw_clear_fences(self) -> None:
        async def clear(ctx):
            fm = self.core.fence_mem
            for i in range(fm.depth):
                ctx.set(fm.data[i], 0)
        self._call(clear)

    def _hw_load(self, base: int, code: list[int], fence_base: int, fences: list[int]) -> None:
        async def write(ctx):
            for i, word in enumerate(code):
                ctx.set(self.core.prog_mem.data[base + i], word)
            for i, value in enumerate(fences):
                ctx.set(self.core.fence_mem.data[fence_base + i], value)
        self._call(write)

    def _hw_regs(self) -> list[int]:
        mem = self.core.regfile.host_mem

        async def read(ctx):
            return [ctx.get(mem.data[i]) for i in range(len(self._reg_names))]
        return self._call(read)

    def _hw_status(self, slot: int) -> tuple[int, int]:
        async def read(ctx):
            ctx.set(self.core.status_slot, slot)
            return ctx.get(self.core.status_state), ctx.get(self.core.status_pc)
        return self._call(read)

    def _hw_next(self) -> tuple[int, int]:
        async def read(ctx):
            return ctx.get(self.core.sim_next_state), ctx.get(self.core.sim_next_pc)
        return self._call(read)

    def _hw_run(self, n: int, cmd_val: int, writes: dict, collect: bool):
        return self._call(lambda ctx: self._run_cycles(ctx, n, cmd_val, writes, collect))

    async def _run_cycles(self, ctx, n: int, cmd_val: int, writes: dict, collect: bool):
        """Clock ``n`` core cycles; host actions go out in the first one."""
        core = self.core
        P = core.phases
        tap_valid, tap_payload = core.tap.valid, core.tap.payload.as_value()
        records = []
        vsync_cycles = []
        for i in range(n):
            for ph in range(P):
                if i == 0 and ph == 0 and cmd_val:
                    ctx.set(core.cmd.valid, 1)
                    ctx.set(core.cmd.payload.as_value(), cmd_val)
                w = writes.get(ph) if i == 0 else None
                if w is not None:
                    ctx.set(core.fence_wr.valid, 1)
                    ctx.set(core.fence_wr.payload.as_value(),
                            ph | w[0] << core.slot_bits | w[1] << (core.slot_bits + 2))
                if ph == 0 and self.vsync_events and ctx.get(core.vsync_edge):
                    vsync_cycles.append(ctx.get(core.cycle))
                # phase 0 of the first cycle: E of the previous cycle's last context, read
                # at the end of the previous run
                if collect and (i or ph) and ctx.get(tap_valid):
                    records.append(ctx.get(tap_payload))
                await ctx.tick()
                if w is not None:
                    ctx.set(core.fence_wr.valid, 0)
                if i == 0 and ph == 0 and cmd_val:
                    ctx.set(core.cmd.valid, 0)
        tail = ctx.get(tap_payload) if ctx.get(tap_valid) else None
        if collect and tail is not None:
            records.append(tail)
        return records, vsync_cycles, tail

