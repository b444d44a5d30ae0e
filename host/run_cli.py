"""``copper run``: run one program without the daemon and write a timing trace.

Two drivers, chosen by the engine:

- **virtual time** (``--backend soft --clock virtual``, ``--backend sim``): an *engine*
  with the :class:`copperline.host.vm.Machine` API (``load``, ``start``, ``set_fence``,
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
from copperline.host.backend import BackendError

log = logging.getLogger(__name__)

DEFAULT_CLOCK_HZ = 12_000_000
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


def _ended_at(events: list[dict], prog) -> int | None:
    """The cycle of the program's ending state event (done/faulted/stopped), or None."""
    for e in reversed(events[-16:]):
        if e.get("event") == "state" and e.get("state") in _ENDED and e.get("prog") == prog:
            return e.get("cycle", 0)
    return None


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
        "run", help="run one program on a backend and write a timing trace",
        description="Run one Copper program (.json or .cop) without the daemon.")
    p.add_argument("program", metavar="PROG", help="program JSON or compiled .cop image")
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
    p.add_argument("--watchdog-ops", type=int, default=isa.DEFAULT_WATCHDOG_OPS)
    p.add_argument("--vsync-events", action="store_true", help="also record vsync events")
    p.add_argument("--port", help="fpga: the board's port URL (/dev/ttyUSB1, socket://H:P)")
    p.add_argument("--engine", choices=("cxxrtl", "amaranth"),
                   help="sim: the RTL simulator (default cxxrtl, compiled once and cached; "
                        "amaranth.sim is ~250x slower)")
    p.add_argument("--waves", metavar="FILE.vcd", help="sim: write the core's waveforms (VCD)")
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
    return int(us * cpu), name, value


def _load_image(path: str):
    from copperline.firmware.compiler import load_any
    from copperline.firmware.image import ImageError
    from copperline.firmware.program import ProgramError
    from copperline.host.trace import looks_like_trace
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


def _prog_event(e: dict, prog: int) -> dict:
    """A machine event (``slot``) as a trace event (``prog``), keeping the key order."""
    if "slot" not in e:
        return e
    return {("prog" if k == "slot" else k): (prog if k == "slot" else v) for k, v in e.items()}


def _as_program_1(e: dict, prog: int) -> dict:
    """A backend event of program ``prog`` as ``copper run`` records it: program 1 (the
    daemon's own ids differ; its state events also carry the seed's ``id``, and every
    event its subscription id ``sub``)."""
    if e.get("prog") != prog:
        return e
    return {k: (1 if k == "prog" else v) for k, v in e.items()
            if k != "sub" and not (k == "id" and v == prog)}


# -- engines ------------------------------------------------------------------------------
def make_virtual_engine(backend: str, clock_hz: int, vsync_hz: float, watchdog_ops: int,
                        vsync_events: bool = False, *, engine: str | None = None,
                        waves: str | None = None):
    """An engine with the Machine API for a virtual-time backend (the VM, or the RTL)."""
    kw = dict(clock_hz=clock_hz, vsync_hz=vsync_hz, watchdog_ops=watchdog_ops,
              vsync_events=vsync_events)
    if backend == "soft":
        from copperline.host.vm import Machine
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


# -- drivers ------------------------------------------------------------------------------
class RunResult:
    """What a driver returns: the trace events (cycle < ``end_cycle``), the program's final
    status, where the run ended and whether Ctrl-C ended it."""

    def __init__(self, events: list[dict], status: dict, end_cycle: int, interrupted: bool):
        self.events, self.status = events, status
        self.end_cycle, self.interrupted = end_cycle, interrupted

    def __iter__(self):      # (events, status), as the drivers returned before
        return iter((self.events, self.status))


def run_virtual(engine, image, *, until_cycle: int | None, fences=(),
                max_cycle: int | None = None, on_progress=None) -> RunResult:
    """Run ``image`` as program 1 on a Machine-API engine from global cycle 0.

    It ends at ``until_cycle``; with None, at the vsync edge after the program ended
    (or at ``max_cycle``). Runs in steps of one vsync period (fences split them), so
    progress can be shown and Ctrl-C keeps every completed step.
    """
    if engine.cycle != 0:
        raise RunError(f"the engine is at cycle {engine.cycle}, expected a fresh one at 0")
    slot = engine.load(image)
    engine.start(slot)
    pending = collections.deque(sorted(fences, key=lambda f: f[0]))
    end = until_cycle if until_cycle is not None else max_cycle
    period = getattr(engine, "vsync_period", None) or isa.vsync_period_cycles(
        engine.clock_hz, engine.vsync_hz)
    events: list[dict] = []
    reached = 0              # the engine's cycle after the last completed step
    interrupted = False
    try:
        while True:
            while pending and pending[0][0] <= engine.cycle:
                _, name, value = pending.popleft()
                engine.set_fence(name, value)
            if until_cycle is None:
                ended = _ended_at(events, 1)
                if ended is not None:
                    end = min(end, ended_end_cycle(ended, period))
            if engine.cycle >= end:
                break
            nxt = min(end, engine.cycle + period)
            if pending and pending[0][0] < nxt:
                nxt = pending[0][0]
            events.extend(_prog_event(e, 1) for e in engine.run_until(nxt))
            reached = engine.cycle
            if on_progress is not None:
                on_progress(reached, end)
    except KeyboardInterrupt:
        interrupted, end = True, reached
    try:
        status = engine.status(slot)
    except Exception as exc:     # an engine stopped by Ctrl-C (its process got SIGINT too)
        if not interrupted:
            raise
        log.debug("status after Ctrl-C: %s", exc)
        status = {"state": "running", "reason": "interrupted"}
    return RunResult([e for e in events if e.get("cycle", 0) < end], status, end, interrupted)


#: After the end is reached, how long a real-time run waits at most for events still on
#: their way (a board's events come over the line after its status says the cycle passed;
#: a busy daemon hands them over late): until one at or after the end arrives.
DRAIN_S = 0.25
DRAIN_REMOTE_S = 2.0


def run_realtime(backend, image, *, until_cycle: int | None, fences=(),
                 max_cycle: int, on_progress=None) -> RunResult:
    """Run ``image`` on a real-time Backend; fences are applied on the wall clock (or
    the board's cycle count). Ends like :func:`run_virtual`; Ctrl-C ends it where it is."""
    got: list[dict] = []
    backend.set_event_sink(got.append)          # list.append: never blocks
    if getattr(backend, "starts_before_open", False):
        # Rule 1 of isa.EXECUTION_RULES: `copper run` starts its program at global cycle 0,
        # so the vsync phase seen by the program is the same as in a virtual run.
        prog = backend.load(image)
        backend.start(prog)
        backend.open()
    else:
        backend.open()
        prog = backend.load(image)
        backend.start(prog)
    interrupted = False
    try:
        hz = backend.clock_hz
        period = isa.vsync_period_cycles(hz, backend.vsync_hz)
        end_cycle = until_cycle if until_cycle is not None else max_cycle
        t0 = time.monotonic()
        todo = sorted(fences, key=lambda f: f[0])
        # A board counts its own cycles, and the virtual board runs slower than real time:
        # its program's cycle, not the wall clock, says how far the run has got.
        board_time = getattr(backend, "counts_own_cycles", backend.name == "fpga")
        elapsed_cycle = 0
        ended_by = None              # wall-clock deadline once the program has ended
        try:
            while True:
                if board_time:
                    elapsed_cycle = backend.status(prog).cycle
                else:
                    elapsed_cycle = (time.monotonic() - t0) * hz
                while todo and todo[0][0] <= elapsed_cycle:
                    _, name, value = todo.pop(0)
                    backend.fence(name, value)
                if until_cycle is None and ended_by is None:
                    ended = _ended_at(got, prog)
                    if ended is not None:
                        # (a board's program cycle stops when it ends: wait on the wall clock)
                        end_cycle = min(end_cycle, ended_end_cycle(ended, period))
                        ended_by = time.monotonic() + max(0, end_cycle - ended) / hz
                if elapsed_cycle >= end_cycle or (ended_by and time.monotonic() >= ended_by):
                    break
                if on_progress is not None:
                    on_progress(int(elapsed_cycle), end_cycle)
                next_at = min([end_cycle] + [f[0] for f in todo[:1]])
                time.sleep(max(0.001, min(0.01, (next_at - elapsed_cycle) / hz)))
            if ended_by is None:
                _drain(got, end_cycle, backend, prog)
        except KeyboardInterrupt:
            interrupted, end_cycle = True, min(end_cycle, int(elapsed_cycle))
        status = backend.status(prog).to_json()
        if callable(getattr(backend, "program_ops", None)):
            status["ops"] = backend.program_ops(prog)
    finally:
        backend.close()
    events = [_as_program_1(e, prog) for e in got if e.get("cycle", 0) < end_cycle]
    return RunResult(events, status, int(end_cycle), interrupted)


def _drain(got: list[dict], end_cycle: int, backend, prog) -> None:
    """Wait (at most DRAIN_S) for the events before ``end_cycle`` still on their way:
    until one at or after it arrives."""
    remote = getattr(backend, "counts_own_cycles", backend.name == "fpga")
    deadline = time.monotonic() + (DRAIN_REMOTE_S if remote else DRAIN_S)
    while time.monotonic() < deadline:
        if any(e.get("cycle", 0) >= end_cycle for e in got[-8:] if e.get("prog") == prog):
            return
        if getattr(backend, "counts_own_cycles", False):
            backend.status(prog)            # a daemon delivers events while asked
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
    from copperline.host.trace import TraceWriter
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
    image = _load_image(args.program)

    realtime = bool(args.via) or args.backend == "fpga" or (
        args.backend == "soft" and args.clock == "monotonic")
    clock = "monotonic" if realtime else "virtual"
    backend_name = args.backend
    horizon = until_cycle if until_cycle is not None else max_cycle
    what = f"{'copperd' if args.via else args.backend} run"
    if horizon / args.clock_hz > PROGRESS_AFTER_S and until_cycle is None and not args.json:
        progress.say(f"{what}: until the program ends, at most {DEFAULT_MAX_US / 1e6:g} s of "
                     "model time (--frames N or --until-us T to choose)")
    t_wall = time.perf_counter()
    if realtime:
        meter = RunProgress(horizon, args.clock_hz, what)
        backend = opened or make_realtime_backend(args)
        result = run_realtime(backend, image, until_cycle=until_cycle, fences=fences,
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
        engine = make_virtual_engine(args.backend, args.clock_hz, args.vsync_hz,
                                     args.watchdog_ops, args.vsync_events,
                                     engine=args.engine, waves=args.waves)
        meter = RunProgress(horizon, args.clock_hz, what)     # (after the simulator build)
        try:
            result = run_virtual(engine, image, until_cycle=until_cycle, fences=fences,
                                 max_cycle=max_cycle, on_progress=meter.update)
        except (ValueError, RuntimeError) as exc:
            raise RunError(f"{args.program}: {exc}", "FAILED") from None
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
    if args.via:
        extra["via"] = args.via
    if result.interrupted:
        extra["partial"] = True          # Ctrl-C: the trace is complete up to until_cycle
    files = []
    if args.trace:
        try:
            with TraceWriter(args.trace, backend=backend_name, clock_hz=args.clock_hz,
                             vsync_hz=args.vsync_hz, program=image.sha256(), **extra) as w:
                w.write_all(events)
        except OSError as exc:
            raise RunError(f"--trace {args.trace}: {exc.strerror or exc}", "CANNOT_WRITE") from None
        files.append(written(args.trace, "trace"))
    if args.waves and os.path.exists(args.waves):
        files.append(written(args.waves, "waveforms"))

    counts = collections.Counter(e.get("event") for e in events)
    summary = {
        "backend": backend_name, "clock": clock, "clock_hz": args.clock_hz,
        "vsync_hz": args.vsync_hz, "program": image.sha256(), "until_cycle": end_cycle,
        "until_us": round(end_cycle * 1_000_000 / args.clock_hz, 3),
        "frames": args.frames,
        "events": len(events), "by_event": dict(sorted(counts.items())), "ops": ops,
        "state": status.get("state"), "reason": status.get("reason"), "pc": status.get("pc"),
        "elapsed_s": round(elapsed, 6), "trace": args.trace, "partial": result.interrupted,
        "files": files,
    }
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
    print(f"program 1: {summary['state']}"
          + (f" ({summary['reason']})" if summary["reason"] else "")
          + (f" at pc {summary['pc']}" if summary["pc"] is not None else "")
          # the board keeps no op count (its status has state, pc, cycle, dropped)
          + (f"; {ops} ops issued" if ops is not None else ""))
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
