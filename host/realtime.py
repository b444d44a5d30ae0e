"""Real-time execution of an :class:`~copperline.sim.engine.Engine` on a dedicated thread.

The machine's global cycle ``g`` is due at the absolute instant ``t0 + g / clock_hz``
(``t0`` = the time-base reset, taken when the executor starts). Every deadline is
computed from ``t0``, never from the previous wake-up, so timing errors do not add up.

The timing thread asks the machine for its next issue cycle, sleeps until about
``spin_us`` before that deadline (on an Event, so a host command wakes it at once),
computes that cycle's events ahead (the machine is deterministic), spins on
``time.perf_counter_ns()`` until the deadline and hands the events, with the measured
wall time, to ``deliver``. When it is behind real time it runs the machine over every
cycle that is due, in slices.
asyncio sleeps are not used: they wake ~0.5-1 ms late.

Host commands (load, start, fence, status, ...) run *on the timing thread*
(:meth:`RealTimeExecutor.call`): the thread first brings the machine up to the current
real-time cycle, then applies the command there. One thread owns the machine and emits
every event, so events are never reordered and no lock is held across a sleep.

Timed host actions (:meth:`RealTimeExecutor.call_at`, what ``copper run --clock
monotonic`` uses for ``--start``/``--stop``/``--fence``): posted ahead, they run on the
timing thread exactly at their cycle (the machine is not computed past it before), at
that cycle's deadline, so a real-time run takes them where a virtual run does.

Overload: a program denser than Python can run in real time (``WAIT 1 us`` + ``IRQ`` in
a loop) makes the machine fall behind real time. It then runs in slices sized to take
about ``slice_budget_us`` of CPU each (fewer cycles per slice as the program gets denser),
handing each slice's events over at once, and between slices it sleeps briefly so the
daemon's other threads (the event loop serving stop/status/ping) get the GIL. A host
command never makes it compute every overdue cycle first: it is applied after at most one
slice, at the machine's cycle (behind real time). So event production is paced by the CPU
the thread is given, memory per slice is bounded, and the program's cycle-model timing
is unchanged; only its ``wall_us`` lateness grows (:attr:`RealTimeExecutor.lag_us`).
"""

from __future__ import annotations

import collections
import heapq
import itertools
import logging
import os
import threading
import time
from concurrent.futures import Future
from typing import Callable

from copperline.sim.engine import Engine

log = logging.getLogger(__name__)

#: deliver(prepared, wall_ns): wall_ns is the measured time since t0 at the hand-over.
Deliver = Callable[[list, int], None]
#: prepare(events) -> prepared: whatever can be done to a batch of machine events before
#: its deadline (mapping, building the dicts), so the hand-over itself is short.
Prepare = Callable[[list], list]


def _reduce_timer_slack() -> None:
    """Linux: let this thread's timed sleeps end within ~1 us instead of the default 50.

    A sleep that ends on time means a shorter spin before each deadline, so the thread
    burns less CPU and is less likely to be preempted mid-spin on a busy machine.
    Best effort: does nothing where prctl is unavailable.
    """
    try:
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_TIMERSLACK = 29
        libc.prctl(PR_SET_TIMERSLACK, 1000, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def _raise_priority(priority: int) -> bool:
    """Linux: run this thread under SCHED_FIFO at ``priority`` when allowed (root or
    CAP_SYS_NICE). A real-time thread is not preempted by ordinary processes mid-spin,
    which is what makes the p99 lateness small on a busy machine. Best effort: returns
    False (and the thread stays SCHED_OTHER) where it is not permitted."""
    if priority <= 0 or not hasattr(os, "sched_setscheduler"):
        return False
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
    except (OSError, PermissionError) as exc:
        log.debug("SCHED_FIFO not available (%s); timing thread stays SCHED_OTHER", exc)
        return False
    log.info("timing thread runs SCHED_FIFO priority %d", priority)
    return True


class RealTimeExecutor:
    """Runs an engine (the machine) against the wall clock on its own thread.

    Parameters
    ----------
    machine:
        The machine; from :meth:`start` on, only the timing thread touches it.
    deliver:
        Called on the timing thread at each hand-over with a prepared batch of events and
        the measured time; must not block.
    spin_us:
        How long before a deadline the thread stops sleeping and starts spinning.
    slice_cycles:
        Most cycles run in one go before the thread yields (bounds op-dense stretches).
    prepare:
        Called on the timing thread ahead of each deadline with the machine's events; its
        result is what ``deliver`` gets (default: the events as they are).
    rt_priority:
        SCHED_FIFO priority for the timing thread where permitted; 0 keeps SCHED_OTHER.
        The environment variable ``COPPER_RT_PRIORITY`` overrides the default.
    slice_budget_us, yield_us:
        Behind real time: about how much CPU one slice takes, and the sleep between
        slices (ten times longer while ``backlog()`` > 0.5).
    backlog:
        How full the event consumer's queue is, 0..1 (copperd's inbox).
    fifo_margin_us:
        Under SCHED_FIFO, gaps between deadlines are slept until this long before the
        next one (a FIFO thread spinning through a dense event train starves the
        process's other threads).
    """

    def __init__(self, machine: Engine, deliver: Deliver, *, spin_us: int = 300,
                 slice_cycles: int | None = None, rt_priority: int | None = None,
                 prepare: Prepare | None = None, slice_budget_us: int = 1000,
                 yield_us: int = 200, backlog: Callable[[], float] | None = None,
                 fifo_margin_us: int = 50):
        self.machine = machine
        self._deliver = deliver
        self._prepare = prepare or (lambda events: events)
        self.spin_ns = spin_us * 1000
        # Under SCHED_FIFO a sleep ends on time: sleep through gaps between deadlines
        # until this long before the next one (spin only the rest).
        self.fifo_sleep_ns = fifo_margin_us * 1000
        # ~1 ms of model time, at most 16384 cycles (~10 ms of Python on op-dense code).
        self.slice_cycles = slice_cycles or max(1, min(machine.params.clock_hz // 1000, 16384))
        # Behind real time: the current slice size, adapted so that one slice takes about
        # slice_budget_us of CPU; between such slices the thread sleeps yield_us.
        self._slice = self.slice_cycles
        self.slice_budget_ns = slice_budget_us * 1000
        self.yield_s = yield_us / 1e6
        # How full the consumer's queue is (0..1): when behind real time *and* the consumer
        # is saturated, producing more events only to have them dropped would take the
        # CPU and the GIL from the consumer, so the thread yields longer.
        self._backlog = backlog or (lambda: 0.0)
        self.paced_slices = 0
        #: how far behind real time the machine was at the last slice, us
        self.lag_us = 0.0
        self.max_lag_us = 0.0
        self.behind_slices = 0
        self._hz = machine.params.clock_hz
        self._commands: collections.deque = collections.deque()
        self._timed: list = []                # heap of (cycle, seq, fn, future)
        self._timed_lock = threading.Lock()
        self._seq = itertools.count()
        self._in_command = False
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.t0_ns = 0
        self.error: BaseException | None = None
        if rt_priority is None:
            rt_priority = int(os.environ.get("COPPER_RT_PRIORITY", "10"))
        self.rt_priority = rt_priority
        self.realtime_scheduling = False

    # -- host side ----------------------------------------------------------------------
    def start(self) -> None:
        """Reset the time base to now and start the timing thread."""
        if self._thread is not None:
            raise RuntimeError("the executor is already running")
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name="copper-realtime", daemon=True)
        self._thread.start()
        # t0 is taken by the thread once it is set up (priority, timer slack): taking it
        # here would make the first deadlines late by the thread's start-up time.
        self._ready.wait()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the timing thread (pending commands still run first)."""
        if self._thread is None:
            return
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            log.warning("timing thread did not stop within %.1f s", timeout)
        self._thread = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def now_cycle(self) -> int:
        """The global cycle real time is in now."""
        return (time.perf_counter_ns() - self.t0_ns) * self._hz // 1_000_000_000

    def call(self, fn: Callable[[Engine], object], timeout: float = 5.0):
        """Run ``fn(machine)`` on the timing thread at the current real-time cycle.

        Raises TimeoutError when the thread does not get to it within ``timeout``, and
        re-raises whatever ``fn`` raises.
        """
        if self._thread is None or threading.current_thread() is self._thread:
            # Not started (or called from an event sink on the timing thread itself, or
            # from a submitted command, which _drain has already caught up).
            if self._thread is not None and not self._in_command:
                self._catch_up()
            return fn(self.machine)
        return self.submit(fn).result(timeout)

    def submit(self, fn: Callable[[Engine], object]) -> Future:
        """Queue ``fn(machine)`` for the timing thread; returns its Future at once (for
        callers that must not block, such as copperd's event loop)."""
        fut: Future = Future()
        if self._thread is None or not self._thread.is_alive():
            fut.set_exception(RuntimeError(f"the timing thread has stopped: {self.error!r}"))
            return fut
        self._commands.append((fn, fut))
        self._wake.set()
        return fut

    def call_at(self, cycle: int, fn: Callable[[Engine], object]) -> Future:
        """Run ``fn(machine)`` on the timing thread with the machine at exactly global
        ``cycle``, at that cycle's deadline; the returned Future gets its result. Post it
        ahead (more than a spin window): a cycle the machine has already passed runs at
        once, late (the Future's result shows where, if ``fn`` returns ``machine.cycle``)."""
        fut: Future = Future()
        with self._timed_lock:
            heapq.heappush(self._timed, (cycle, next(self._seq), fn, fut))
        self._wake.set()
        return fut

    def _next_timed(self) -> int | None:
        with self._timed_lock:
            return self._timed[0][0] if self._timed else None

    def _run_timed(self) -> None:
        """Run the first timed action (the machine brought up to its cycle first)."""
        with self._timed_lock:
            cycle, _, fn, fut = heapq.heappop(self._timed)
        m = self.machine
        if not fut.set_running_or_notify_cancel():
            return
        try:
            if m.cycle < cycle:
                events = m.run_until(cycle)
                if events:
                    self._deliver(self._prepare(events), time.perf_counter_ns() - self.t0_ns)
            fut.set_result(fn(m))
        except BaseException as exc:   # handed to the caller
            fut.set_exception(exc)

    # -- timing thread ------------------------------------------------------------------
    def _catch_up(self) -> None:
        """Bring the machine towards the current real-time cycle, delivering its events:
        at most one slice of work, so that a command waits for one slice, not for every
        cycle overdue (which, for a dense program, can be seconds of work and millions of
        events). When still behind, the command applies at the machine's cycle."""
        target = max(self.machine.cycle, self.now_cycle())
        tc = self._next_timed()
        while tc is not None and tc <= target:   # timed actions first, at their own cycle
            self._run_timed()
            tc = self._next_timed()
        events = self._run_slice(target)
        if events:
            self._deliver(self._prepare(events), time.perf_counter_ns() - self.t0_ns)

    def _run_slice(self, target: int) -> list:
        """Run the machine towards global cycle ``target`` (exclusive): idle cycles all at
        once (they cost nothing), then at most one slice of cycles in which ops issue."""
        m = self.machine
        nc = m.next_event_cycle()
        if nc is None or nc >= target:
            return m.run_until(target)
        events = m.run_until(nc) if nc > m.cycle else []
        start = time.perf_counter_ns()
        events += m.run_until(min(target, nc + self._slice))
        took = time.perf_counter_ns() - start
        # Adapt the slice to the program's density: halve it when a slice ran over its
        # budget, grow it back when there is room.
        if took > self.slice_budget_ns:
            self._slice = max(16, self._slice // 2)
        elif took < self.slice_budget_ns // 4 and self._slice < self.slice_cycles:
            self._slice = min(self.slice_cycles, self._slice * 2)
        return events

    def _drain(self) -> None:
        caught_up = False
        while self._commands:
            fn, fut = self._commands.popleft()
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                if not caught_up:
                    # Once per batch: behind real time, queued commands share one slice
                    # of catching up instead of waiting for one slice each.
                    self._catch_up()
                    caught_up = True
                self._in_command = True
                try:
                    result = fn(self.machine)
                finally:
                    self._in_command = False
                fut.set_result(result)
            except BaseException as exc:   # handed to the caller
                fut.set_exception(exc)

    def _main(self) -> None:
        _reduce_timer_slack()
        self.realtime_scheduling = _raise_priority(self.rt_priority)
        # Cycle 0 lies one spin window ahead, so the first cycles' events are computed
        # ahead and handed over on time like every later one.
        self.t0_ns = time.perf_counter_ns() + self.spin_ns
        self._ready.set()
        try:
            self._loop()
        except BaseException as exc:
            self.error = exc
            log.exception("timing thread failed")
        finally:
            # Nobody will run queued commands any more: fail them instead of hanging.
            with self._timed_lock:
                timed, self._timed = self._timed, []
            for *_, fut in timed:
                if fut.set_running_or_notify_cancel():
                    fut.set_exception(RuntimeError("the timing thread has stopped"))
            while self._commands:
                _, fut = self._commands.popleft()
                if fut.set_running_or_notify_cancel():
                    fut.set_exception(RuntimeError("the timing thread has stopped"))

    def _loop(self) -> None:
        m = self.machine
        hz = self._hz
        t0 = self.t0_ns
        clock = time.perf_counter_ns
        spin = self.spin_ns
        wake = self._wake
        while True:
            wake.clear()                      # before draining: a later command re-sets it
            self._drain()
            if self._stopping:
                return
            nc = m.next_event_cycle()
            tc = self._next_timed()
            if tc is not None and (nc is None or tc <= nc):
                # the next thing is a timed host action: run up to its cycle, apply it at
                # its deadline
                if tc <= m.cycle:
                    self._run_timed()
                    continue
                deadline = t0 + -(-tc * 1_000_000_000 // hz)
                now = clock()
                if deadline - now > spin:
                    wake.wait((deadline - now - spin) / 1e9)
                    continue
                while clock() < deadline:
                    pass
                self._run_timed()
                continue
            if nc is None:
                wake.wait()
                continue
            deadline = t0 + -(-nc * 1_000_000_000 // hz)
            now = clock()
            if deadline - now > spin:
                wake.wait((deadline - now - spin) / 1e9)
                continue
            if now < deadline:
                # The machine is deterministic: compute the events of every cycle due in
                # the next spin window now, so at each deadline only the hand-over is
                # left. Host commands that arrive meanwhile run on the next turn of the
                # loop, at most about two spin windows later.
                batches = []
                horizon = deadline + spin
                cyc = nc
                while cyc is not None and len(batches) < 256 and (tc is None or cyc < tc):
                    due = t0 + -(-cyc * 1_000_000_000 // hz)
                    if due > horizon:
                        break
                    events = m.run_until(cyc + 1)
                    batches.append((due, self._prepare(events) if events else None))
                    cyc = m.next_event_cycle()
                fifo = self.realtime_scheduling
                for due, events in batches:
                    while now < due:
                        gap = due - now
                        if fifo and gap > self.fifo_sleep_ns + 20_000:
                            # SCHED_FIFO wakes on time, so sleep (freeing the CPU and the
                            # GIL) until shortly before the deadline. Spinning through
                            # dense event trains instead starves the daemon's own event
                            # loop thread (ping p99 ~100 ms at 10 kHz of IRQs).
                            time.sleep((gap - self.fifo_sleep_ns) / 1e9)
                        elif gap > 150_000:
                            # Let other threads run while far from it; not closer: a
                            # sleep(0) can lose the CPU for tens of microseconds.
                            time.sleep(0)
                        now = clock()
                    if events:
                        self._deliver(events, now - t0)
                continue
            now_cycle = (now - t0) * hz // 1_000_000_000
            events = self._run_slice(now_cycle + 1 if tc is None else min(now_cycle + 1, tc))
            if events:
                prepared = self._prepare(events)
                self._deliver(prepared, clock() - t0)
            if m.cycle <= now_cycle:
                # Behind real time: give the other threads the GIL for a moment (a
                # sleep(0) alone often hands it straight back to this thread).
                self.behind_slices += 1
                self.lag_us = (now_cycle - m.cycle) * 1e6 / hz
                if self.lag_us > self.max_lag_us:
                    self.max_lag_us = self.lag_us
                # On the Event: a host command cuts the pause short (it then waits for
                # one slice at most, not for a slice and a pause).
                if self._backlog() > 0.5:
                    self.paced_slices += 1
                    wake.wait(self.yield_s * 10)
                else:
                    wake.wait(self.yield_s)
            else:
                self.lag_us = 0.0
