"""``copper run``: run programs without the daemon and write a timing trace.

Several programs run together as copperd would: program ids 1, 2, ... in the order
given, slots in that order, each started at cycle 0 unless ``--start N@US``; host
actions (``--start``, ``--stop N@US``, ``--fence NAME=VALUE@US``) are :class:`Action` objects
applied at their cycles (docs/traces.md, "Several programs").

Two drivers, chosen by the engine:

- **virtual time** (``--backend soft --clock virtual``, ``--backend sim``): an *engine*
  with the :class:`copperline.sim.vm.Machine` API (``load``, ``start``, ``set_fence``,
  ``run_until``, ``cycle``, ``status``). The driver loads the program, starts it at global
  cycle 0, applies the scheduled fences at their cycles and runs to the end. The trace is
  byte-for-byte deterministic.
- **real time** (``--backend soft --clock monotonic``, ``--backend fpga``): a
  :class:`copperline.host.backend.Backend`; the driver starts the program, applies the
  fences when their time comes on the wall clock, waits, and records the events the
  backend streams (with ``wall_us``).

- **via a daemon** (``--via SOCKET``): the running copperd's backend
  (:class:`copperline.host.daemon_backend.DaemonBackend`), driven like a real-time one.

A sim engine plugs in by providing ``copperline.sim.backend.create_engine(clock_hz=...,
vsync_hz=..., watchdog_ops=...)`` (or a ``Machine`` class with the VM's constructor).

**Where a run ends** is the same on every backend (docs/traces.md, "Where a run ends"):
``--frames N`` covers vsync edges 1..N and ends just before edge N+1, cycle
``(N + 1) * P``; ``--until-us T`` at cycle ``T * clock_hz / 1e6``; without either, at
the vsync edge after the program ended, at most :data:`DEFAULT_MAX_US`. Events at or
after the end are not recorded. Ctrl-C ends the run where it is and still writes the
trace, marked ``"partial": true``.
"""

from __future__ import annotations

import argparse
import collections
import logging
import os
import re
import sys
import time

from copperline import progress
from copperline.cli_output import CliError, done, wrote, written
from copperline.firmware import isa
from copperline.firmware.board_interface import DEFAULT_CLOCK_HZ
from copperline.firmware.trace import time_us
from copperline.host.backend import BackendError

log = logging.getLogger(__name__)

#: Without --frames / --until-us: run until the program ends, at most this long (model time).
DEFAULT_MAX_US = 10_000_000
_ENDED = ("done", "faulted", "stopped")


#: Exit status after Ctrl-C (128 + SIGINT), also when the partial trace was written.
EXIT_INTERRUPTED = 130
#: Seconds of a run before its progress is first shown (then every PROGRESS_EVERY_S).
PROGRESS_AFTER_S = 2.0
PROGRESS_EVERY_S = 5.0


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


class RunProgress:
    """Progress of a long run on stderr (human mode): how far, and the time left at the
    pace so far. Silent for runs shorter than PROGRESS_AFTER_S."""

    def __init__(self, end_cycle: int, clock_hz: int, what: str):
        self.end, self.hz, self.what = end_cycle, clock_hz, what
        self.t0 = time.monotonic()
        self.next = self.t0 + PROGRESS_AFTER_S

    def update(self, cycle: int, end_cycle: int | None = None) -> None:
        if end_cycle is not None:
            self.end = end_cycle
        now = time.monotonic()
        if now < self.next or not progress.enabled():
            return
        self.next = now + PROGRESS_EVERY_S
        done_s, end_s = cycle / self.hz, self.end / self.hz
        rate = cycle / (now - self.t0) if cycle else 0
        left = f", about {progress.fmt_s((self.end - cycle) / rate)} left" if rate else ""
        progress.say(f"{self.what}: {done_s:.2f} s of {end_s:g} s model time{left} "
                     "(Ctrl-C ends the run and keeps the trace so far)")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "run", help="run programs on a backend and write a timing trace",
        description="Run Copper programs (.json or .cop) without the daemon. Several "
                    "programs run together as copperd would run them: program ids 1, 2, "
                    "... in the order given, in slots in that order; each starts at 0 "
                    "unless --start says otherwise.")
    p.add_argument("programs", metavar="PROG", nargs="+",
                   help="program JSON or compiled .cop image (several: run together)")
    p.add_argument("--backend", choices=("soft", "sim", "fpga"), default="soft")
    p.add_argument("--clock", choices=("virtual", "monotonic"), default="virtual",
                   help="soft backend: virtual time (fast, deterministic) or real time")
    p.add_argument("--clock-hz", type=int, default=None,
                   help=f"core clock, whole MHz (default {DEFAULT_CLOCK_HZ}: iCEBreaker; "
                        "fpga: the board's, as it reports it)")
    p.add_argument("--vsync-hz", type=float, default=None,
                   help=f"vsync rate (default {isa.DEFAULT_VSYNC_HZ:g}; fpga: the board's)")
    span = p.add_mutually_exclusive_group()
    span.add_argument("--frames", type=int, metavar="N",
                      help="run N vsync frames: vsync edges 1..N and what follows each, "
                           "ending just before edge N+1 (as copper render --frames N)")
    span.add_argument("--until-us", type=float, metavar="T",
                      help="run until T microseconds (events before T)")
    p.add_argument("--trace", metavar="FILE", help="write the trace (JSON Lines) here")
    p.add_argument("--fence", action="append", default=[], metavar="NAME=VALUE@US",
                   help="set timeline NAME to VALUE at US microseconds (repeatable)")
    p.add_argument("--start", action="append", default=[], metavar="N@US",
                   help="start program N (1 = the first PROG) at US microseconds instead of "
                        "0 (repeatable)")
    p.add_argument("--stop", action="append", default=[], metavar="N@US",
                   help="the host stops program N at US microseconds (repeatable)")
    p.add_argument("--actions-from", metavar="TRACE",
                   help="take the host actions (starts, stops, fences) from TRACE's header, "
                        "at the cycles they landed in there: replays a real-time run (e.g. "
                        "on the board) on the VM or the RTL cycle for cycle")
    p.add_argument("--watchdog-ops", type=int, default=isa.DEFAULT_WATCHDOG_OPS)
    p.add_argument("--vsync-events", action="store_true", help="also record vsync events")
    p.add_argument("--port", help="fpga: the board's port URL (/dev/ttyUSB1, socket://H:P)")
    p.add_argument("--engine", choices=("verilator", "cxxrtl", "amaranth"),
                   help="sim: the RTL simulator (default verilator; cxxrtl ~10x slower; both "
                        "compiled once and cached; amaranth.sim needs no compiler, ~2000x "
                        "slower)")
    p.add_argument("--waves", metavar="FILE.fst|FILE.vcd",
                   help="sim: write the core's waveforms, FST (GTKWave's compact format; "
                        "verilator engine) or VCD, by the file's suffix")
    p.add_argument("--via", metavar="SOCKET",
                   help="run through the copperd listening on SOCKET (its backend; use "
                        "while the daemon owns the board)")
    p.add_argument("--board", help="fpga: board name (found by its USB id); soft/sim: "
                                    "use that board's core clock")
    p.add_argument("--json", action="store_true",
                   help="print the summary as one JSON object (docs/cli.md)")
    p.set_defaults(func=main)


def parse_fence(spec: str, cpu: int) -> tuple[int, str, int]:
    """``NAME=VALUE@US`` -> (cycle, name, value)."""
    m = re.fullmatch(r"([^=@\s]+)=(\d+)@(\d+(?:\.\d+)?)", spec)
    if not m:
        raise RunError(f"--fence {spec!r}: expected NAME=VALUE@US, e.g. vk=5@1000")
    name, value, us = m.group(1), int(m.group(2)), float(m.group(3))
    if value > isa.FENCE_VALUE_MAX:
        raise RunError(f"--fence {spec!r}: value {value} exceeds {isa.FENCE_VALUE_MAX}")
    return _us_cycle(us, cpu), name, value


def _load_image(path: str):
    from copperline.firmware.compiler import load_any
    from copperline.firmware.image import ImageError
    from copperline.firmware.program import ProgramError
    from copperline.firmware.trace import looks_like_trace
    if looks_like_trace(path):
        raise RunError(f"{path}: a trace (recorded by copper run), not a program: give the "
                       "program's .json or .cop (copper trace compare/export and copper "
                       "render read traces)", "BAD_FORMAT")
    try:
        return load_any(path)
    except FileNotFoundError:
        raise RunError(f"{path}: no such file", "NOT_FOUND") from None
    except ProgramError as exc:
        raise RunError(str(exc), "BAD_PROGRAM") from None
    except (ImageError, OSError, ValueError) as exc:
        raise RunError(str(exc), "BAD_FORMAT") from None


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


# -- engines ------------------------------------------------------------------------------
def make_virtual_engine(backend: str, clock_hz: int, vsync_hz: float, watchdog_ops: int,
                        vsync_events: bool = False, *, engine: str | None = None,
                        waves: str | None = None):
    """An engine with the Machine API for a virtual-time backend (the VM, or the RTL)."""
    kw = dict(clock_hz=clock_hz, vsync_hz=vsync_hz, watchdog_ops=watchdog_ops,
              vsync_events=vsync_events)
    if backend == "soft":
        from copperline.sim.vm import Machine
        return Machine(**kw)
    from copperline.sim.backend import create_engine
    return create_engine(**kw, engine=engine, waves=waves)


def make_realtime_backend(args):
    """A Backend for a real-time run (soft monotonic, fpga, a daemon with --via)."""
    if getattr(args, "via", None):
        from copperline.host.daemon_backend import DaemonBackend
        return DaemonBackend(args.via, clock_hz=args.clock_hz or DEFAULT_CLOCK_HZ,
                             vsync_hz=args.vsync_hz or isa.DEFAULT_VSYNC_HZ)
    if args.backend == "soft":
        from copperline.host.soft import SoftBackend
        return SoftBackend("monotonic", clock_hz=args.clock_hz, vsync_hz=args.vsync_hz,
                           watchdog_ops=args.watchdog_ops, vsync_events=args.vsync_events)
    from copperline.host.fpga import FpgaBackend
    # Without --port the backend finds the board by its USB id (clear error when none).
    return FpgaBackend(port=args.port, board=args.board)


# -- scenarios ----------------------------------------------------------------------------
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


def parse_prog_action(kind: str, spec: str, cpu: int, nprogs: int) -> Action:
    """``--start N@US`` / ``--stop N@US`` -> an Action (program id N of 1..nprogs)."""
    m = re.fullmatch(r"(\d+)@(\d+(?:\.\d+)?)", spec)
    if not m:
        raise RunError(f"--{kind} {spec!r}: expected N@US (program id N, time in "
                       "microseconds), e.g. 2@1000")
    prog, us = int(m.group(1)), float(m.group(2))
    if not 1 <= prog <= nprogs:
        raise RunError(f"--{kind} {spec!r}: no program {prog} (programs are numbered 1.."
                       f"{nprogs} in the order given)")
    return Action(kind, _us_cycle(us, cpu), prog=prog)


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


def _us_cycle(us: float, cpu: int) -> int:
    # (round, not int: a time printed from a cycle, c / cpu, comes back as c)
    return int(round(us * cpu, 6))


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


def run_virtual(engine, image, *, until_cycle: int | None, fences=(), actions=None,
                max_cycle: int | None = None, on_progress=None) -> RunResult:
    """Run ``image`` (or a list of images: programs 1, 2, ... in slots in that order) on
    a Machine-API engine from global cycle 0, applying the host ``actions`` (default:
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
            if len(images) == 1 or type(exc).__name__ not in ("MachineError", "RtlError"):
                raise
            raise RunError(f"program {i + 1} of {len(images)}: {exc}", "BUSY") from None
    prog_of = {slot: i + 1 for i, slot in enumerate(slots)}
    pending = collections.deque(sorted(actions, key=Action.key))
    end = until_cycle if until_cycle is not None else max_cycle
    period = getattr(engine, "vsync_period", None) or isa.vsync_period_cycles(
        engine.clock_hz, engine.vsync_hz)
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


def _load_all(backend, images) -> list[int]:
    """Load the programs in order; a refusal names the program (e.g. more programs than
    the backend has contexts)."""
    ids = []
    for i, img in enumerate(images):
        try:
            ids.append(backend.load(img))
        except BackendError as exc:
            if len(images) == 1:
                raise
            raise BackendError(exc.code, f"program {i + 1} of {len(images)}: {exc.message}") \
                from None
    return ids


def _start_cycle(backend, pid: int) -> int | None:
    """The backend's cycle in which a program started on a real-time backend, when the
    backend says (``start_cycle``: fpga from its started record, soft from its machine;
    a daemon does not: None)."""
    fn = getattr(backend, "start_cycle", None)
    return fn(pid) if callable(fn) else None


def run_realtime(backend, image, *, until_cycle: int | None, fences=(), actions=None,
                 max_cycle: int, on_progress=None) -> RunResult:
    """Run ``image`` (or a list: programs 1, 2, ...) on a real-time Backend; host actions
    are applied when their time comes on the wall clock (or the board's cycle count) and
    land when they land: each action's ``landed`` cycle says where (starts and stops
    exactly, from the backend's records; a fence's landing is not reported: None). A
    backend with ``schedule`` (soft, monotonic clock) takes every action at exactly its
    cycle instead. Ends like :func:`run_virtual`; Ctrl-C ends it where it is."""
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
        sched = getattr(backend, "schedule", None)
        if callable(sched) and todo:
            futs = [sched(a.cycle, a.kind, ids[a.prog - 1] if a.prog else None, a.name,
                          a.value) for a in todo]
            if all(f is not None for f in futs):
                timed, todo = list(zip(todo, futs)), []

    # Rule 1 of isa.EXECUTION_RULES: `copper run` starts its programs at global cycle 0,
    # so the vsync phase seen by them is the same as in a virtual run.
    if getattr(backend, "starts_before_open", False):
        ids = _load_all(backend, images)
        for a in zero_fences:
            backend.fence(a.name, a.value)
        for a in at_zero:
            backend.start(ids[a.prog - 1])
        schedule_all()
        backend.open()
    else:
        backend.open()
        ids = _load_all(backend, images)
        for a in zero_fences:
            backend.fence(a.name, a.value)
        # (the first resets the board's time base; the others land a few core cycles
        # later, in one frame where the backend can: their `landed` cycles say which)
        if callable(getattr(backend, "start_many", None)):
            backend.start_many([ids[a.prog - 1] for a in at_zero])
        else:
            for a in at_zero:
                backend.start(ids[a.prog - 1])
    run_id = {pid: i + 1 for i, pid in enumerate(ids)}
    start_at: dict[int, int] = {}                  # run id -> global start cycle
    base = None                                    # the backend's cycle of the run's 0
    for a in at_zero:
        c = _start_cycle(backend, ids[a.prog - 1])
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
        board_time = getattr(backend, "counts_own_cycles", backend.name == "fpga")
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
                        c = _start_cycle(backend, pid)
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
            if callable(getattr(backend, "program_ops", None)):
                st["ops"] = backend.program_ops(pid)
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
    remote = getattr(backend, "counts_own_cycles", backend.name == "fpga")
    deadline = time.monotonic() + (DRAIN_REMOTE_S if remote else DRAIN_S)
    while time.monotonic() < deadline:
        for e in got[-8:]:
            rid = run_id.get(e.get("prog"))
            if rid is not None and start_at.get(rid, 0) + e.get("cycle", 0) >= end_cycle:
                return
        if getattr(backend, "counts_own_cycles", False):
            backend.status(ids[0])          # a daemon delivers events while asked
        else:
            time.sleep(0.01)


def main(args) -> int:
    try:
        return _main(args)
    except BackendError as exc:
        where = f"copperd on {args.via}" if getattr(args, "via", None) else f"{args.backend} backend"
        raise CliError(f"{where}: {exc.message} ({exc.code})", exc.code) from None


def _resolve_clock(args):
    """Fill in --clock-hz/--vsync-hz. A board runs at its own clock: the fpga backend is
    opened here to ask it, and a --clock-hz that disagrees is an error. Returns the opened
    fpga backend, or None."""
    backend = None
    if args.backend == "fpga":
        backend = make_realtime_backend(args)
        try:
            backend.open()
        except BackendError as exc:
            raise RunError(f"--backend fpga: {exc.message}", exc.code) from None
        for name, value in (("clock_hz", backend.clock_hz), ("vsync_hz", backend.vsync_hz)):
            given = getattr(args, name)
            if given is not None and given != value:
                backend.close()
                raise RunError(f"--{name.replace('_', '-')} {given:g}: the board runs at "
                               f"{value:g} (leave the option out to use the board's)")
            setattr(args, name, value)
    elif args.board and args.clock_hz is None:
        # Model the named board's core clock, so a soft or sim trace lines up with a
        # trace recorded on that board.
        from copperline.boards.common import BoardError
        from copperline.boards.registry import get_board
        try:
            board = get_board(args.board)
        except BoardError as exc:
            raise RunError(f"--board: {exc}") from None
        config = board.core_config()
        if config is not None:
            args.clock_hz = config.core_hz(board.clock_hz)
            args.vsync_hz = args.vsync_hz or config.vsync_hz
    if args.clock_hz is None:
        args.clock_hz = DEFAULT_CLOCK_HZ
    if args.vsync_hz is None:
        args.vsync_hz = isa.DEFAULT_VSYNC_HZ
    return backend


def _main(args) -> int:
    if args.via and (args.backend != "soft" or args.port or args.engine or args.waves):
        raise RunError("--via runs on the daemon's backend: leave out --backend, --port, "
                       "--engine and --waves")
    opened = _resolve_clock(args)
    try:
        return _run(args, opened)
    finally:
        if opened is not None:
            opened.close()


def _run(args, opened) -> int:
    from copperline.firmware.trace import TraceWriter
    try:
        cpu = isa.cycles_per_us(args.clock_hz)
        period = isa.vsync_period_cycles(args.clock_hz, args.vsync_hz)
    except ValueError as exc:
        raise RunError(f"--clock-hz/--vsync-hz: {exc}") from None
    if args.watchdog_ops < 1:
        raise RunError(f"--watchdog-ops must be >= 1 (got {args.watchdog_ops})")
    if args.frames is not None and args.frames < 1:
        raise RunError(f"--frames must be >= 1 (got {args.frames})")
    if args.until_us is not None and args.until_us <= 0:
        raise RunError(f"--until-us must be > 0 (got {args.until_us})")
    if args.backend != "soft" and args.clock == "monotonic":
        log.info("--clock applies to the soft backend only; ignored for %s", args.backend)
    fences = [parse_fence(s, cpu) for s in args.fence]
    until_cycle = (frames_end_cycle(args.frames, period) if args.frames is not None
                   else int(args.until_us * cpu) if args.until_us is not None else None)
    max_cycle = DEFAULT_MAX_US * cpu
    paths = list(args.programs)
    images = [_load_image(path) for path in paths]
    actions = plan_actions(len(images), fences,
                           [parse_prog_action("start", s, cpu, len(images)) for s in args.start],
                           [parse_prog_action("stop", s, cpu, len(images)) for s in args.stop])
    if args.actions_from:
        if args.start or args.stop or args.fence:
            raise RunError("--actions-from takes every host action from the trace: leave out "
                           "--start, --stop and --fence")
        actions = actions_from_trace(args.actions_from, images, args.clock_hz)
        fences = [(a.cycle, a.name, a.value) for a in actions if a.kind == "fence"]
    multi = len(images) > 1 or bool(args.start or args.stop or args.actions_from)
    image = images[0] if len(images) == 1 else images

    realtime = bool(args.via) or args.backend == "fpga" or (
        args.backend == "soft" and args.clock == "monotonic")
    clock = "monotonic" if realtime else "virtual"
    backend_name = args.backend
    horizon = until_cycle if until_cycle is not None else max_cycle
    what = f"{'copperd' if args.via else args.backend} run"
    if horizon / args.clock_hz > PROGRESS_AFTER_S and until_cycle is None and not args.json:
        ends = "the programs end" if len(images) > 1 else "the program ends"
        progress.say(f"{what}: until {ends}, at most {DEFAULT_MAX_US / 1e6:g} s of "
                     "model time (--frames N or --until-us T to choose)")
    t_wall = time.perf_counter()
    if realtime:
        meter = RunProgress(horizon, args.clock_hz, what)
        backend = opened or make_realtime_backend(args)
        result = run_realtime(backend, image, until_cycle=until_cycle, actions=actions,
                              max_cycle=max_cycle, on_progress=meter.update)
        if args.via:
            backend_name = backend.name
            hz = backend.clock_from_events(result.events)
            if hz is not None and hz != args.clock_hz:
                # (the ports protocol does not report the clock: the run's end was
                # computed for the wrong one)
                raise RunError(f"--via {args.via}: the daemon's backend runs at {hz} Hz, "
                               f"not {args.clock_hz}: give --clock-hz {hz} (or --board NAME)")
    else:
        if args.backend == "soft" and (args.engine or args.waves):
            raise RunError("--engine and --waves apply to --backend sim")
        try:
            engine = make_virtual_engine(args.backend, args.clock_hz, args.vsync_hz,
                                         args.watchdog_ops, args.vsync_events,
                                         engine=args.engine, waves=args.waves)
        except ValueError as exc:          # (an engine or waveform file it cannot do)
            raise RunError(f"--engine/--waves: {exc}") from None
        meter = RunProgress(horizon, args.clock_hz, what)     # (after the simulator build)
        try:
            result = run_virtual(engine, image, until_cycle=until_cycle, actions=actions,
                                 max_cycle=max_cycle, on_progress=meter.update)
        except RunError:
            raise
        except Exception as exc:
            if not isinstance(exc, (ValueError, RuntimeError)) and \
                    type(exc).__name__ not in ("MachineError", "RtlError"):
                raise
            raise RunError(f"{', '.join(paths)}: {exc}", "FAILED") from None
        finally:
            if callable(getattr(engine, "close", None)):
                engine.close()            # the RTL engines flush --waves here
    elapsed = time.perf_counter() - t_wall
    events, status, end_cycle = result.events, result.status, result.end_cycle
    ops = status.get("ops")

    extra = {"clock": clock, "watchdog_ops": args.watchdog_ops, "until_cycle": end_cycle}
    if args.frames is not None:
        extra["frames"] = args.frames
    if fences:
        extra["fences"] = [{"timeline": n, "value": v, "cycle": c} for c, n, v in fences]
    shas = [img.sha256() for img in images]
    if multi:
        extra["programs"] = [{"id": i + 1, "sha256": sha, "file": os.path.basename(path)}
                             for i, (sha, path) in enumerate(zip(shas, paths))]
        extra["actions"] = [a.to_json(realtime) for a in result.actions]
    if args.via:
        extra["via"] = args.via
    if result.interrupted:
        extra["partial"] = True          # Ctrl-C: the trace is complete up to until_cycle
    program_sha = shas[0] if len(shas) == 1 else programs_digest(shas)
    files = []
    if args.trace:
        try:
            with TraceWriter(args.trace, backend=backend_name, clock_hz=args.clock_hz,
                             vsync_hz=args.vsync_hz, program=program_sha, **extra) as w:
                w.write_all(events)
        except OSError as exc:
            raise RunError(f"--trace {args.trace}: {exc.strerror or exc}", "CANNOT_WRITE") from None
        files.append(written(args.trace, "trace"))
    if args.waves and os.path.exists(args.waves):
        files.append(written(args.waves, "waveforms"))

    counts = collections.Counter(e.get("event") for e in events)
    summary = {
        "backend": backend_name, "clock": clock, "clock_hz": args.clock_hz,
        "vsync_hz": args.vsync_hz, "program": program_sha, "until_cycle": end_cycle,
        "until_us": time_us(end_cycle, args.clock_hz),
        "frames": args.frames,
        "events": len(events), "by_event": dict(sorted(counts.items())), "ops": ops,
        "state": status.get("state"), "reason": status.get("reason"), "pc": status.get("pc"),
        "elapsed_s": round(elapsed, 6), "trace": args.trace, "partial": result.interrupted,
        "files": files,
    }
    summary["programs"] = [
        {"id": i + 1, "file": path, "program": sha, "state": st.get("state"),
         "reason": st.get("reason"), "pc": st.get("pc"), "ops": st.get("ops")}
        for i, (path, sha, st) in enumerate(zip(paths, shas, result.statuses))]
    if multi:
        summary["actions"] = [a.to_json(realtime) for a in result.actions]
    if args.via:
        summary["via"] = args.via
    if realtime:
        late = sorted(e["wall_us"] - e["time_us"] for e in events
                      if "wall_us" in e and e.get("event") != "vsync")
        if late:
            summary["lateness_us"] = {"p50": round(late[len(late) // 2], 3),
                                      "max": round(late[-1], 3)}
    if result.interrupted:
        # Ctrl-C: report what was kept, then exit 130 as an interrupted command does
        if args.json:
            from copperline.cli_output import emit_json, error_object
            emit_json(error_object("INTERRUPTED", _interrupted_text(args, end_cycle), **summary))
        else:
            _print_summary(args, summary, counts, clock, ops, elapsed)
            print(f"copper run: interrupted: {_interrupted_text(args, end_cycle)}",
                  file=sys.stderr)
        return EXIT_INTERRUPTED
    return done(args, summary, lambda: _print_summary(args, summary, counts, clock, ops, elapsed))


def programs_digest(shas: list[str]) -> str:
    """The header's ``program`` of a run of several programs: the sha256 of their images'
    sha256s (hex), joined with commas in program id order (docs/traces.md)."""
    import hashlib
    return hashlib.sha256(",".join(shas).encode()).hexdigest()


def _interrupted_text(args, end_cycle: int) -> str:
    kept = (f"the trace {args.trace} holds the run up to cycle {end_cycle} "
            f"({end_cycle / args.clock_hz:.6f} s), marked \"partial\": true"
            if args.trace else "no --trace given, nothing written")
    return f"Ctrl-C; {kept}"


def _print_summary(args, summary: dict, counts, clock: str, ops, elapsed: float) -> None:
    kinds = ", ".join(f"{k} {n}" for k, n in sorted(counts.items())) or "none"
    span = (f"{args.frames} frames, " if args.frames is not None else "")
    print(f"{summary['backend']} ({clock}, {args.clock_hz} Hz): {summary['events']} events "
          f"({kinds}) in {span}{summary['until_us'] / 1e6:.6f} s model time")
    for p in summary["programs"]:
        print(f"program {p['id']}"
              + (f" ({os.path.basename(p['file'])})" if len(summary["programs"]) > 1 else "")
              + f": {p['state']}"
              + (f" ({p['reason']})" if p["reason"] else "")
              + (f" at pc {p['pc']}" if p["pc"] is not None else "")
              # the board keeps no op count (its status has state, pc, cycle, dropped)
              + (f"; {p['ops']} ops issued" if p["ops"] is not None else ""))
    for a in summary.get("actions", []):
        if "landed" in a and a["landed"] != a["cycle"] and a["kind"] != "fence":
            print(f"{a['kind']} of program {a['prog']}: due at cycle {a['cycle']}, landed "
                  f"at {'an unknown cycle' if a['landed'] is None else a['landed']}")
    if "lateness_us" in summary:
        print(f"lateness (wall_us - time_us): p50 {summary['lateness_us']['p50']} us, "
              f"max {summary['lateness_us']['max']} us")
    print(f"elapsed {elapsed:.3f} s")
    for f in summary["files"]:
        print(wrote(f["path"], f.get("what", "")))


if __name__ == "__main__":  # pragma: no cover
    parser = argparse.ArgumentParser(prog="copper")
    register(parser.add_subparsers())
    sys.exit(main(parser.parse_args()))
