"""The run loop of ``copper run``: programs on an engine or a backend, host actions at
their cycles, and where a run ends. No argument parsing and no printing: the CLI
(:mod:`copperline.host.run_cli`) does both.

Several programs run together as copperd would: program ids 1, 2, ... in the order
given, slots in that order, each started at cycle 0 unless an :class:`Action` says
otherwise; host actions (starts, stops, fences) are applied at their cycles
(docs/traces.md, "Several programs").

Two drivers:

- :func:`run_virtual`, **virtual time** (``--backend soft --clock virtual``,
  ``--backend sim``): an :class:`~copperline.sim.engine.Engine` (the VM or an RTL
  engine). The driver loads the programs, starts them at global cycle 0, applies the
  host actions at their cycles and runs to the end. The trace is byte-for-byte
  deterministic.
- :func:`run_realtime`, **real time** (``--backend soft --clock monotonic``,
  ``--backend fpga``, or a daemon's backend with ``--via``): a
  :class:`copperline.host.backend.Backend`; the driver starts the programs, applies the
  actions when their time comes on the wall clock, waits, and records the events the
  backend streams (with ``wall_us``).

**Where a run ends** is the same on every backend (docs/traces.md, "Where a run ends"):
``--frames N`` covers vsync edges 1..N and ends just before edge N+1, cycle
``(N + 1) * P`` (:func:`frames_end_cycle`); ``--until-us T`` at cycle
``T * clock_hz / 1e6``; without either, at the vsync edge after the programs ended
(:func:`ended_end_cycle`), at most ``max_cycle``. Events at or after the end are not
recorded. Ctrl-C ends the run where it is (:attr:`RunResult.interrupted`).
"""

from __future__ import annotations

import collections
import logging
import time

from copperline.cli_output import CliError
from copperline.firmware import isa
from copperline.host.backend import BackendError
from copperline.sim.engine import Engine, EngineError

log = logging.getLogger(__name__)

_ENDED = ("done", "faulted", "stopped")


class RunError(CliError):
    """A problem with the command line or the program (exit 1)."""

    def __init__(self, message: str, code: str = "BAD_ARG"):
        super().__init__(message, code)


def frames_end_cycle(frames: int, period: int) -> int:
    """Where ``--frames N`` ends: just before vsync edge N+1, so the run holds edges
    1..N and what the program does after each (a program that waits for vsync and
    raises an IRQ gives N IRQs). ``copper render --frames N`` draws the same N edges."""
    return (frames + 1) * period


def ended_end_cycle(ended_at: int, period: int) -> int:
    """Where a run without --frames/--until-us ends when its program ended in cycle
    ``ended_at``: the next vsync edge."""
    return (ended_at // period + 1) * period


def _prog_event(e: dict, prog_of) -> dict:
    """A machine event (``slot``) as a trace event (``prog``: ``prog_of[slot]``, or the
    given id), keeping the key order."""
    if "slot" not in e:
        return e
    prog = prog_of.get(e["slot"], e["slot"] + 1) if isinstance(prog_of, dict) else prog_of
    return {("prog" if k == "slot" else k): (prog if k == "slot" else v) for k, v in e.items()}


def _as_run_prog(e: dict, run_id: dict) -> dict:
    """A backend event as ``copper run`` records it: the backend's program id becomes the
    run's (1, 2, ... in the order given; a daemon's own ids differ; its state events also
    carry the seed's ``id``, and every event its subscription id ``sub``)."""
    prog = e.get("prog")
    if prog not in run_id:
        return e
    return {k: (run_id[prog] if k == "prog" else v) for k, v in e.items()
            if k != "sub" and not (k == "id" and v == prog)}


# -- host actions -------------------------------------------------------------------------
#: Order of host actions due in the same cycle: fences, then stops, then starts (a
#: program started in a cycle sees the fence values set for that cycle).
_ACTION_RANK = {"fence": 0, "stop": 1, "start": 2}


class Action:
    """A host action of a run: ``kind`` start/stop (``prog``, a run program id 1..n) or
    fence (``name``, ``value``), due at global ``cycle`` (from the run's time base)."""

    __slots__ = ("kind", "cycle", "prog", "name", "value", "landed")

    def __init__(self, kind: str, cycle: int, prog: int | None = None, name: str | None = None,
                 value: int | None = None):
        self.kind, self.cycle, self.prog, self.name, self.value = kind, cycle, prog, name, value
        #: Real-time runs: the global cycle it took effect in (None: not known exactly).
        self.landed: int | None = cycle

    def key(self):
        return (self.cycle, _ACTION_RANK[self.kind])

    def to_json(self, realtime: bool = False) -> dict:
        out = {"cycle": self.cycle, "kind": self.kind}
        if self.kind == "fence":
            out.update(timeline=self.name, value=self.value)
        else:
            out["prog"] = self.prog
        if realtime:
            out["landed"] = self.landed
        return out

    def __repr__(self):
        return f"Action({self.to_json()})"


def actions_from_trace(path: str, images, clock_hz: int) -> list[Action]:
    """The host actions of a recorded run (its header's ``actions``), each at the cycle
    it landed in (a fence, whose landing a real-time backend cannot see, at its due
    cycle, with a warning). The trace must be of the same programs, at the same clock."""
    from copperline.firmware.trace import TraceError, read_trace
    try:
        header, _ = read_trace(path)
    except FileNotFoundError:
        raise RunError(f"--actions-from {path}: no such file", "NOT_FOUND") from None
    except (TraceError, OSError, ValueError) as exc:
        raise RunError(f"--actions-from {path}: {exc}", "BAD_FORMAT") from None
    shas = [img.sha256() for img in images]
    theirs = [p.get("sha256") for p in header.get("programs") or []] or [header.get("program")]
    if theirs != shas:
        raise RunError(f"--actions-from {path}: the trace is of other programs (its "
                       f"{len(theirs)} program(s) do not have the sha256s of the "
                       f"{len(shas)} given, in that order)")
    if header.get("clock_hz") != clock_hz:
        raise RunError(f"--actions-from {path}: the trace ran at {header.get('clock_hz')} Hz, "
                       f"this run at {clock_hz} Hz: give --clock-hz {header.get('clock_hz')}")
    acts = []
    recorded = header.get("actions") or (        # (a one-program trace: start at 0)
        [{"cycle": 0, "kind": "start", "prog": 1}]
        + [dict(f, kind="fence") for f in header.get("fences") or []])
    for a in recorded:
        cycle = a.get("landed", a["cycle"])
        if cycle is None:
            log.warning("--actions-from %s: %s at cycle %d: the cycle it landed in is not "
                        "known (a real-time backend does not report it); using it as due",
                        path, a["kind"], a["cycle"])
            cycle = a["cycle"]
        acts.append(Action(a["kind"], cycle, prog=a.get("prog"), name=a.get("timeline"),
                           value=a.get("value")))
    return sorted(acts, key=Action.key)


def plan_actions(nprogs: int, fences=(), starts=(), stops=()) -> list[Action]:
    """The run's host actions in the order they apply. A program without a ``--start``
    starts at cycle 0; each program starts at most once and stops at most once, after
    its start."""
    acts = [Action("fence", c, name=n, value=v) for c, n, v in fences]
    start_of: dict[int, Action] = {}
    for a in starts:
        if a.prog in start_of:
            raise RunError(f"--start {a.prog}@...: program {a.prog} has two --start (a "
                           "program starts once in a run)")
        start_of[a.prog] = a
    for prog in range(1, nprogs + 1):
        start_of.setdefault(prog, Action("start", 0, prog=prog))
    stopped = set()
    for a in stops:
        if a.prog in stopped:
            raise RunError(f"--stop {a.prog}@...: program {a.prog} has two --stop")
        stopped.add(a.prog)
        if a.cycle <= start_of[a.prog].cycle:
            raise RunError(f"--stop {a.prog}@{a.cycle}: program {a.prog} starts at cycle "
                           f"{start_of[a.prog].cycle}; a stop must come at least one cycle "
                           "after it")
    acts += [start_of[p] for p in sorted(start_of)] + list(stops)
    return sorted(acts, key=Action.key)


def _run_end(events_by_prog_end: dict, started: set, pending, end: int, period: int) -> int:
    """Without --frames/--until-us: once every started program ended and no host action
    is pending, the run ends at the vsync edge after the last end."""
    if pending or not started or any(p not in events_by_prog_end for p in started):
        return end
    return min(end, ended_end_cycle(max(events_by_prog_end[p] for p in started), period))


# -- drivers ------------------------------------------------------------------------------
class RunResult:
    """What a driver returns: the trace events (global time < ``end_cycle``), program 1's
    final status (``statuses``: every program's, in run id order), where the run ended,
    whether Ctrl-C ended it, and the host actions (with the cycles they landed in)."""

    def __init__(self, events: list[dict], status: dict, end_cycle: int, interrupted: bool,
                 statuses: list[dict] | None = None, actions: list[Action] | None = None):
        self.events, self.status = events, status
        self.end_cycle, self.interrupted = end_cycle, interrupted
        self.statuses = statuses if statuses is not None else [status]
        self.actions = actions or []

    def __iter__(self):      # (events, status), as the drivers returned before
        return iter((self.events, self.status))


def _images(image) -> list:
    return list(image) if isinstance(image, (list, tuple)) else [image]


def run_virtual(engine: Engine, image, *, until_cycle: int | None, fences=(), actions=None,
                max_cycle: int | None = None, on_progress=None) -> RunResult:
    """Run ``image`` (or a list of images: programs 1, 2, ... in slots in that order) on
    an engine from global cycle 0, applying the host ``actions`` (default:
    every program starts at 0, plus ``fences`` as (cycle, name, value)) at their cycles.

    It ends at ``until_cycle``; with None, at the vsync edge after the last program
    ended (or at ``max_cycle``). Runs in steps of one vsync period (actions split them),
    so progress can be shown and Ctrl-C keeps every completed step.
    """
    images = _images(image)
    if engine.cycle != 0:
        raise RunError(f"the engine is at cycle {engine.cycle}, expected a fresh one at 0")
    if actions is None:
        actions = plan_actions(len(images), fences)
    slots = []
    for i, img in enumerate(images):
        try:
            slots.append(engine.load(img))
        except Exception as exc:
            if len(images) == 1 or not isinstance(exc, EngineError):
                raise
            raise RunError(f"program {i + 1} of {len(images)}: {exc}", "BUSY") from None
    prog_of = {slot: i + 1 for i, slot in enumerate(slots)}
    pending = collections.deque(sorted(actions, key=Action.key))
    end = until_cycle if until_cycle is not None else max_cycle
    period = engine.params.vsync_period
    events: list[dict] = []
    started: set[int] = set()
    start_at: dict[int, int] = {}
    ended_at: dict[int, int] = {}
    reached = 0              # the engine's cycle after the last completed step
    interrupted = False
    try:
        while True:
            while pending and pending[0].cycle <= engine.cycle:
                a = pending.popleft()
                if a.kind == "fence":
                    engine.set_fence(a.name, a.value)
                elif a.kind == "start":
                    engine.start(slots[a.prog - 1])
                    started.add(a.prog)
                    start_at[a.prog] = engine.cycle
                    ended_at.pop(a.prog, None)
                else:
                    engine.stop(slots[a.prog - 1])
            if until_cycle is None:
                end = _run_end(ended_at, started, pending, end, period)
            if engine.cycle >= end:
                break
            nxt = min(end, engine.cycle + period)
            if pending and pending[0].cycle < nxt:
                nxt = pending[0].cycle
            for e in engine.run_until(nxt):
                e = _prog_event(e, prog_of)
                events.append(e)
                p = e.get("prog")
                if (p is not None and e.get("event") == "state"
                        and e.get("state") in _ENDED):
                    ended_at[p] = start_at.get(p, 0) + e.get("cycle", 0)
            reached = engine.cycle
            if on_progress is not None:
                on_progress(reached, end)
    except KeyboardInterrupt:
        interrupted, end = True, reached
    statuses = []
    for i, slot in enumerate(slots):
        try:
            statuses.append(engine.status(slot))
        except Exception as exc:     # an engine stopped by Ctrl-C (its process got SIGINT too)
            if not interrupted:
                raise
            log.debug("status after Ctrl-C: %s", exc)
            statuses.append({"state": "running", "reason": "interrupted"})
    kept = [e for e in events if _global_cycle(e, start_at) < end]
    return RunResult(kept, statuses[0], end, interrupted, statuses, list(actions))


def _global_cycle(e: dict, start_at: dict) -> int:
    """The run-time cycle of an event (program events count from their program's start)."""
    p = e.get("prog")
    c = e.get("cycle", 0)
    return c if p is None else start_at.get(p, 0) + c


#: After the end is reached, how long a real-time run waits at most for events still on
#: their way (a board's events come over the line after its status says the cycle passed;
#: a busy daemon hands them over late): until one at or after the end arrives.
DRAIN_S = 0.25
DRAIN_REMOTE_S = 2.0


def _load_all(backend, images, surfaces=None) -> list[int]:
    """Load the programs in order (``surfaces``: each one's SurfaceSource, or None); a
    refusal names the program (e.g. more programs than the backend has contexts)."""
    ids = []
    for i, img in enumerate(images):
        try:
            ids.append(backend.load(img, surfaces[i] if surfaces else None))
        except BackendError as exc:
            if len(images) == 1:
                raise
            raise BackendError(exc.code, f"program {i + 1} of {len(images)}: {exc.message}") \
                from None
    return ids


def run_realtime(backend, image, *, until_cycle: int | None, fences=(), actions=None,
                 max_cycle: int, on_progress=None, surfaces=None) -> RunResult:
    """Run ``image`` (or a list: programs 1, 2, ...) on a real-time Backend; host actions
    are applied when their time comes on the wall clock (or the board's cycle count) and
    land when they land: each action's ``landed`` cycle says where (starts and stops
    exactly, from the backend's records; a fence's landing is not reported: None). A
    backend with ``schedule`` (soft, monotonic clock) takes every action at exactly its
    cycle instead. Ends like :func:`run_virtual`; Ctrl-C ends it where it is.
    ``surfaces``: each program's SurfaceSource (``Backend.load``)."""
    images = _images(image)
    if actions is None:
        actions = plan_actions(len(images), fences)
    todo = sorted(actions, key=Action.key)
    at_zero = [a for a in todo if a.kind == "start" and a.cycle == 0]
    todo = [a for a in todo if a not in at_zero]
    zero_fences = [a for a in todo if a.kind == "fence" and a.cycle == 0]
    todo = [a for a in todo if a not in zero_fences]
    got: list[dict] = []
    backend.set_event_sink(got.append)          # list.append: never blocks
    ids: list[int] = []
    timed: list = []

    def schedule_all() -> None:
        """A backend that takes host actions at exact cycles (soft, monotonic clock)
        gets them all now, ahead of time; the others get each when its time comes."""
        nonlocal todo, timed
        if todo:
            futs = [backend.schedule(a.cycle, a.kind, ids[a.prog - 1] if a.prog else None, a.name,
                          a.value) for a in todo]
            if all(f is not None for f in futs):
                timed, todo = list(zip(todo, futs)), []

    # Rule 1 of isa.EXECUTION_RULES: `copper run` starts its programs at global cycle 0,
    # so the vsync phase seen by them is the same as in a virtual run.
    if backend.starts_before_open:
        ids = _load_all(backend, images, surfaces)
        for a in zero_fences:
            backend.fence(a.name, a.value)
        for a in at_zero:
            backend.start(ids[a.prog - 1])
        schedule_all()
        backend.open()
    else:
        backend.open()
        ids = _load_all(backend, images, surfaces)
        for a in zero_fences:
            backend.fence(a.name, a.value)
        # (the first resets the board's time base; the others land a few core cycles
        # later, in one frame where the backend can: their `landed` cycles say which)
        backend.start_many([ids[a.prog - 1] for a in at_zero])
    run_id = {pid: i + 1 for i, pid in enumerate(ids)}
    start_at: dict[int, int] = {}                  # run id -> global start cycle
    base = None                                    # the backend's cycle of the run's 0
    for a in at_zero:
        c = backend.start_cycle(ids[a.prog - 1])
        if c is not None and base is None:
            base = c
        a.landed = None if c is None else c - base
        start_at[a.prog] = a.landed or 0
    interrupted = False
    hz = backend.clock_hz
    period = isa.vsync_period_cycles(hz, backend.vsync_hz)
    end_cycle = until_cycle if until_cycle is not None else max_cycle
    elapsed_cycle = 0
    def collect_timed() -> None:
        for a, f in list(timed):
            if not f.done():
                continue
            timed.remove((a, f))
            try:
                c = f.result()
            except Exception as exc:
                raise BackendError("BAD_ARG", f"{a.kind} at cycle {a.cycle}: {exc}") from None
            a.landed = c - (base or 0)
            if a.kind == "start":
                start_at[a.prog] = a.landed
                started.add(a.prog)

    try:
        t0 = time.monotonic()
        # A board counts its own cycles, and the virtual board runs slower than real time:
        # its programs' cycles, not the wall clock, say how far the run has got.
        board_time = backend.counts_own_cycles
        ended_by = None              # wall-clock deadline once every program has ended
        last_g, last_t = 0, time.monotonic()
        started = {a.prog for a in at_zero}

        def now_cycle() -> int:
            nonlocal last_g, last_t
            if not board_time:
                return int((time.monotonic() - t0) * hz)
            best = None
            # (one status read: of the first started program that has not ended)
            ended = ended_map()
            ref = next((rid for rid in sorted(start_at) if rid not in ended), None)
            if ref is not None:
                st = backend.status(ids[ref - 1])
                if st.state.value == "running":
                    best = start_at[ref] + st.cycle
            if best is None:         # nothing runs: the board's time goes on (wall clock)
                best = last_g + int((time.monotonic() - last_t) * hz)
            last_g, last_t = best, time.monotonic()
            return best

        ends: dict[int, int] = {}
        scanned = 0

        def ended_map() -> dict:
            nonlocal scanned
            n = len(got)
            for e in got[scanned:n]:
                if e.get("event") != "state":
                    continue
                rid = run_id.get(e.get("prog"))
                if rid is None:
                    continue
                if e.get("state") in _ENDED:
                    ends[rid] = start_at.get(rid, 0) + e.get("cycle", 0)
                elif e.get("state") == "running":
                    ends.pop(rid, None)
            scanned = n
            return ends

        try:
            while True:
                elapsed_cycle = now_cycle()
                collect_timed()
                while todo and todo[0].cycle <= elapsed_cycle:
                    a = todo.pop(0)
                    if a.kind == "fence":
                        backend.fence(a.name, a.value)
                        a.landed = None      # (the backend does not say when it landed)
                    elif a.kind == "start":
                        pid = ids[a.prog - 1]
                        backend.start(pid)
                        c = backend.start_cycle(pid)
                        a.landed = None if c is None or base is None else c - base
                        start_at[a.prog] = a.landed if a.landed is not None else elapsed_cycle
                        started.add(a.prog)
                    else:
                        backend.stop(ids[a.prog - 1])
                        a.landed = None      # (set from the stopped event below)
                if until_cycle is None and ended_by is None and not todo and not timed:
                    ends = ended_map()
                    if started and all(p in ends for p in started):
                        last = max(ends[p] for p in started)
                        end_cycle = min(end_cycle, ended_end_cycle(last, period))
                        ended_by = time.monotonic() + max(0, end_cycle - last) / hz
                if elapsed_cycle >= end_cycle or (ended_by and time.monotonic() >= ended_by):
                    break
                if on_progress is not None:
                    on_progress(int(elapsed_cycle), end_cycle)
                next_at = min([end_cycle] + [a.cycle for a in todo[:1]]
                              + [a.cycle for a, _ in timed[:1]])
                time.sleep(max(0.001, min(0.01, (next_at - elapsed_cycle) / hz)))
            if ended_by is None:
                _drain(got, end_cycle, backend, ids, start_at, run_id)
        except KeyboardInterrupt:
            interrupted, end_cycle = True, min(end_cycle, int(elapsed_cycle))
        statuses = []
        for pid in ids:
            st = backend.status(pid).to_json()
            ops = backend.program_ops(pid)
            if ops is not None:
                st["ops"] = ops
            statuses.append(st)
    finally:
        backend.close()
    events = []
    for e in got:
        e = _as_run_prog(e, run_id)
        if _global_cycle(e, start_at) < end_cycle:
            events.append(e)
    for a in actions:                  # a stop landed where its stopped event says
        if a.kind == "stop":
            for e in events:
                if (e.get("prog") == a.prog and e.get("event") == "state"
                        and e.get("reason") == "host"):
                    a.landed = start_at.get(a.prog, 0) + e["cycle"]
                    break
    return RunResult(events, statuses[0], int(end_cycle), interrupted, statuses, list(actions))


def _drain(got: list[dict], end_cycle: int, backend, ids, start_at, run_id) -> None:
    """Wait (at most DRAIN_S) for the events before ``end_cycle`` still on their way:
    until one of a program at or after it arrives."""
    remote = backend.counts_own_cycles
    deadline = time.monotonic() + (DRAIN_REMOTE_S if remote else DRAIN_S)
    while time.monotonic() < deadline:
        for e in got[-8:]:
            rid = run_id.get(e.get("prog"))
            if rid is not None and start_at.get(rid, 0) + e.get("cycle", 0) >= end_cycle:
                return
        if backend.delivers_when_asked:
            backend.status(ids[0])
        else:
            time.sleep(0.01)
