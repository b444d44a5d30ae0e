"""The soft backend: the reference VM behind the :class:`~copperline.host.backend.Backend` interface.

Two clocks:

- ``clock="virtual"``: time only moves when the caller says so (:meth:`SoftBackend.run_until`,
  :meth:`SoftBackend.advance_us`); as fast as Python goes. Deterministic.
- ``clock="monotonic"``: real time. A dedicated timing thread
  (:class:`~copperline.host.realtime.RealTimeExecutor`) runs the machine so that every op
  issues at its absolute deadline from the time-base reset (taken at :meth:`open`), and
  every command is applied at the current real-time cycle. Events carry ``wall_us``
  (measured, since program start) next to ``time_us`` (model). The event sink is called
  on the timing thread and must not block.

Program ids are 1, 2, 3, ... (never reused while the backend lives) and map to machine
slots; events carry ``prog`` instead of the machine's ``slot``.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Future

from copperline.firmware import isa
from copperline.firmware.board_interface import DEFAULT_CLOCK_HZ
from copperline.firmware.image import Image, ImageError
from copperline.host.backend import Backend, BackendError, ProgramState, ProgramStatus
from copperline.host.realtime import RealTimeExecutor
from copperline.sim.engine import MachineParams
from copperline.sim.vm import Machine, MachineError

log = logging.getLogger(__name__)

CLOCKS = ("virtual", "monotonic")


class SoftBackend(Backend):
    """Copper programs on the Python reference VM.

    Parameters
    ----------
    clock:
        ``"virtual"`` or ``"monotonic"`` (see the module docstring).
    clock_hz, vsync_hz, watchdog_ops, layers, contexts, vsync_events:
        The machine (:class:`~copperline.sim.engine.MachineParams`) the VM runs.
    spin_us:
        Monotonic clock: how long before a deadline the timing thread starts spinning.
    """

    name = "soft"
    #: load() and start() may be called before open(): the program then starts at global
    #: cycle 0 of the time base that open() resets (what `copper run` needs).
    starts_before_open = True

    def __init__(self, clock: str = "virtual", *, clock_hz: int = DEFAULT_CLOCK_HZ,
                 vsync_hz: float = isa.DEFAULT_VSYNC_HZ,
                 watchdog_ops: int = isa.DEFAULT_WATCHDOG_OPS, layers: int = isa.DEFAULT_LAYERS,
                 contexts: int = isa.DEFAULT_CONTEXTS, vsync_events: bool = False,
                 spin_us: int = 300, command_timeout: float = 5.0):
        super().__init__()
        if clock not in CLOCKS:
            raise ValueError(f"clock must be one of {', '.join(CLOCKS)} (got {clock!r})")
        self.clock = clock
        self.clock_hz = clock_hz
        self.vsync_hz = vsync_hz
        self.machine = Machine(MachineParams(clock_hz, vsync_hz, watchdog_ops, layers,
                                             contexts=contexts, vsync_events=vsync_events))
        self._timeout = command_timeout
        self._lock = threading.RLock()           # virtual clock: serialises callers
        self._rt = (RealTimeExecutor(self.machine, self._emit_prepared, spin_us=spin_us,
                                     prepare=self._prepare,
                                     backlog=lambda: self.event_backlog())
                    if clock == "monotonic" else None)
        self._next_id = 1
        self._slot_of: dict[int, int] = {}       # prog id -> slot
        self._prog_of: dict[int, int] = {}       # slot -> prog id
        self._sha: dict[int, str] = {}           # prog id -> image sha256
        self._opened = False

    # -- engine plumbing --------------------------------------------------------------
    def _do(self, fn):
        """Run ``fn(machine)`` where it is safe: on the timing thread, or under the lock."""
        if self._rt is not None and self._rt.running:
            try:
                return self._rt.call(fn, self._timeout)
            except TimeoutError:
                raise BackendError("TIMEOUT", "the soft backend's timing thread did not "
                                   f"answer within {self._timeout} s") from None
        with self._lock:
            return fn(self.machine)

    def _prepare(self, events: list[dict]) -> list[tuple[dict, float]]:
        """Map machine events (slot) to backend events (prog), each with the model time
        (us) its ``wall_us`` is measured from. Done ahead of the deadline in real time."""
        out = []
        m = self.machine
        hz = self.clock_hz
        for e in events:
            slot = e.get("slot")
            if slot is None:                     # vsync: counted from the time-base reset
                out.append((dict(e), 0.0))
            else:
                prog = self._prog_of.get(slot)
                ev = {("prog" if k == "slot" else k): (prog if k == "slot" else v)
                      for k, v in e.items()}
                out.append((ev, m.slot_start(slot) * 1_000_000 / hz))
        return out

    def _emit_prepared(self, prepared: list[tuple[dict, float]],
                       wall_ns: int | None = None) -> list[dict]:
        """Stamp ``wall_us`` (when measured) and hand the events to the sink."""
        out = []
        for ev, start_us in prepared:
            if wall_ns is not None:
                ev["wall_us"] = round(wall_ns / 1000 - start_us, 3)
            out.append(ev)
            self.emit(ev)
        return out

    def _deliver(self, events: list[dict], wall_ns: int | None = None) -> list[dict]:
        return self._emit_prepared(self._prepare(events), wall_ns)

    def _flush(self, m: Machine) -> None:
        """Deliver the events of host actions just taken (they are at the current cycle)."""
        events = m.run_until(m.cycle)
        if events:
            wall = None
            if self._rt is not None and self._rt.running:
                wall = time.perf_counter_ns() - self._rt.t0_ns
            elif self._rt is not None and m.cycle == 0:
                wall = 0      # before open(): open() makes this instant the time base
            self._deliver(events, wall)

    def _slot(self, prog_id: int) -> int:
        try:
            return self._slot_of[prog_id]
        except (KeyError, TypeError):
            raise BackendError("NOT_FOUND", f"no program with id {prog_id!r}") from None

    # -- Backend ------------------------------------------------------------------------
    def open(self) -> None:
        """Start the timing thread (monotonic clock); resets the time base."""
        if self._opened:
            return
        if self._rt is not None:
            self._rt.start()
        self._opened = True
        log.info("soft backend open: clock=%s clock_hz=%d vsync_hz=%s",
                 self.clock, self.clock_hz, self.vsync_hz)

    def close(self) -> None:
        """Stop every program (``stopped`` events) and the timing thread."""
        def stop_all(m: Machine):
            for slot in m.slots():
                m.stop(slot)
            self._flush(m)
        try:
            self._do(stop_all)
        finally:
            if self._rt is not None:
                self._rt.stop()
            self._opened = False

    def load(self, image: Image, surfaces=None) -> int:
        # (the soft backend has no display: its binds are events only)
        try:    # before a slot is taken: an image that cannot be hashed must not leave a ghost
            sha = image.sha256()
        except (UnicodeError, ValueError, OverflowError) as exc:
            raise BackendError("BAD_FORMAT", f"the image cannot be encoded: {exc}") from None

        def do(m: Machine) -> int:
            try:
                slot = m.load(image)
            except MachineError as exc:
                raise BackendError("BUSY", str(exc)) from None
            except (ImageError, TypeError) as exc:
                raise BackendError("BAD_FORMAT", str(exc)) from None
            prog = self._next_id
            self._next_id += 1
            self._slot_of[prog], self._prog_of[slot] = slot, prog
            self._sha[prog] = sha
            return prog
        return self._do(do)

    def start(self, prog_id: int) -> None:
        def do(m: Machine) -> None:
            try:
                m.start(self._slot(prog_id))
            except MachineError as exc:
                raise BackendError("BUSY", f"program {prog_id}: {exc}") from None
            self._flush(m)
        self._do(do)

    def stop(self, prog_id: int) -> None:
        def do(m: Machine) -> None:
            m.stop(self._slot(prog_id))
            self._flush(m)
        self._do(do)

    def schedule(self, cycle: int, kind: str, prog_id: int | None = None,
                 timeline: str | None = None, value: int | None = None):
        """Monotonic clock: take a host action (``start``/``stop`` of ``prog_id``,
        ``fence`` of ``timeline`` to ``value``) exactly at machine ``cycle`` (post it
        ahead, best before :meth:`open`); returns a Future of the cycle it took effect in.
        None with the virtual clock: the caller acts itself."""
        if self._rt is None:
            return None

        def do(m: Machine) -> int:
            if kind == "start":
                m.start(self._slot(prog_id))
            elif kind == "stop":
                m.stop(self._slot(prog_id))
            elif kind == "fence":
                m.set_fence(timeline, value)
            else:
                raise ValueError(f"schedule: unknown action {kind!r}")
            self._flush(m)
            return m.cycle
        return self._rt.call_at(cycle, do)

    def start_cycle(self, prog_id: int) -> int:
        """The machine cycle in which the program last started (``copper run`` takes the
        offsets between programs' starts from it)."""
        return self._do(lambda m: m.slot_start(self._slot(prog_id)))

    def unload(self, prog_id: int) -> None:
        def do(m: Machine) -> None:
            slot = self._slot(prog_id)
            m.stop(slot)
            self._flush(m)
            m.unload(slot)
            del self._slot_of[prog_id], self._prog_of[slot], self._sha[prog_id]
        self._do(do)

    def _status(self, m: Machine, prog_id: int) -> ProgramStatus:
        slot = self._slot(prog_id)
        st = m.status(slot)
        return ProgramStatus(id=prog_id, state=ProgramState(st["state"]), pc=st["pc"], slot=slot,
                             cycle=st["cycle"], reason=st["reason"], bindings=st["bindings"],
                             program=self._sha[prog_id])

    def status(self, prog_id: int) -> ProgramStatus:
        return self._do(lambda m: self._status(m, prog_id))

    def programs(self) -> list[ProgramStatus]:
        return self._do(lambda m: [self._status(m, p) for p in sorted(self._slot_of)])

    def fence(self, timeline: str, value: int) -> None:
        def do(m: Machine) -> None:
            try:
                m.set_fence(timeline, value)
            except ValueError as exc:
                raise BackendError("BAD_ARG", str(exc)) from None
        self._do(do)

    def regs(self) -> dict[str, int]:
        return self._do(lambda m: m.regs)

    @property
    def command_timeout(self) -> float:
        """How long a caller waits for the timing thread to take a command, s."""
        return self._timeout

    def submit(self, name: str, *args) -> Future:
        """Call backend method ``name`` without blocking: on the monotonic clock it is
        queued to the timing thread and the Future completes there (copperd's loop then
        needs no worker thread in between); otherwise it runs now."""
        method = getattr(self, name)
        rt = self._rt
        if rt is None or not rt.running:
            fut: Future = Future()
            try:
                fut.set_result(method(*args))
            except BaseException as exc:
                fut.set_exception(exc)
            return fut
        return rt.submit(lambda m: method(*args))

    def stats(self) -> dict:
        """Counters for copperd's ``stats``: how far the timing thread is behind real time."""
        rt = self._rt
        if rt is None:
            return {"clock": self.clock}
        return {"clock": self.clock, "lag_us": round(rt.lag_us, 1),
                "max_lag_us": round(rt.max_lag_us, 1), "behind_slices": rt.behind_slices, "paced_slices": rt.paced_slices,
                "slice_cycles": rt._slice, "realtime_scheduling": rt.realtime_scheduling}

    def program_ops(self, prog_id: int) -> int:
        """Ops the program has issued since it (last) started."""
        return self._do(lambda m: m.status(self._slot(prog_id))["ops"])

    # -- virtual clock ------------------------------------------------------------------
    @property
    def cycle(self) -> int:
        """The machine's global cycle (virtual clock: how far time has been advanced)."""
        return self.machine.cycle

    def run_until(self, cycle: int) -> list[dict]:
        """Virtual clock: advance to global ``cycle``; emits and returns the events."""
        if self._rt is not None:
            raise BackendError("BAD_CMD", "run_until drives the virtual clock; this backend "
                               "runs on the monotonic clock")
        with self._lock:
            return self._deliver(self.machine.run_until(cycle))

    def advance_us(self, us: float) -> list[dict]:
        """Virtual clock: advance by ``us`` microseconds (rounded down to whole cycles)."""
        return self.run_until(self.machine.cycle + int(us * self.clock_hz // 1_000_000))
