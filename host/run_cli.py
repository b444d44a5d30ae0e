"""``copper run``: run programs without the daemon and write a timing trace.

The command line and the output; the run itself is :mod:`copperline.host.run`. Several
programs run together as copperd would: program ids 1, 2, ... in the order given, slots
in that order, each started at cycle 0 unless ``--start N@US``; host actions
(``--start``, ``--stop N@US``, ``--fence NAME=VALUE@US``) are
:class:`~copperline.host.run.Action` objects applied at their cycles (docs/traces.md,
"Several programs").

The backend picks the driver: a virtual-time engine (``--backend soft --clock
virtual``: the VM; ``--backend sim``: an RTL engine from
:func:`copperline.sim.backend.create_engine`) runs under
:func:`~copperline.host.run.run_virtual`; a real-time backend (``--backend soft --clock
monotonic``, ``--backend fpga``, or the running copperd's with ``--via SOCKET``) under
:func:`~copperline.host.run.run_realtime`.

Without ``--frames``/``--until-us`` a run ends at the vsync edge after the programs
ended, at most :data:`DEFAULT_MAX_US` (docs/traces.md, "Where a run ends"). Ctrl-C ends
the run where it is and still writes the trace, marked ``"partial": true``.
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
from copperline.host.run import (Action, RunError, actions_from_trace, frames_end_cycle,
                                 plan_actions, run_realtime, run_virtual)
from copperline.sim.engine import EngineError, MachineParams

log = logging.getLogger(__name__)

#: Without --frames / --until-us: run until the program ends, at most this long (model time).
DEFAULT_MAX_US = 10_000_000


#: Exit status after Ctrl-C (128 + SIGINT), also when the partial trace was written.
EXIT_INTERRUPTED = 130
#: Seconds of a run before its progress is first shown (then every PROGRESS_EVERY_S).
PROGRESS_AFTER_S = 2.0
PROGRESS_EVERY_S = 5.0


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


# -- engines ------------------------------------------------------------------------------
def make_virtual_engine(backend: str, params: MachineParams, *, engine: str | None = None,
                        waves: str | None = None):
    """The engine of a virtual-time backend: the VM (soft), or an RTL engine (sim)."""
    if backend == "soft":
        from copperline.sim.vm import Machine
        return Machine(params)
    from copperline.sim.backend import create_engine
    return create_engine(params, engine=engine, waves=waves)


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


def _us_cycle(us: float, cpu: int) -> int:
    # (round, not int: a time printed from a cycle, c / cpu, comes back as c)
    return int(round(us * cpu, 6))


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
            # (a vsync rate is the same when it gives the board's period in cycles: a
            # display's frame rate has more digits than anyone types)
            same = (given is None or given == value or
                    (name == "vsync_hz" and given > 0 and
                     isa.vsync_period_cycles(backend.clock_hz, given)
                     == isa.vsync_period_cycles(backend.clock_hz, value)))
            if not same:
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
        from copperline.host.surfaces import SurfaceSource
        # (a program's surfaces are files next to it)
        sources = [SurfaceSource(base_dir=os.path.dirname(os.path.abspath(p))) for p in paths]
        result = run_realtime(backend, image, until_cycle=until_cycle, actions=actions,
                              max_cycle=max_cycle, on_progress=meter.update, surfaces=sources)
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
            params = MachineParams(args.clock_hz, args.vsync_hz, args.watchdog_ops,
                                   vsync_events=args.vsync_events)
            engine = make_virtual_engine(args.backend, params, engine=args.engine,
                                         waves=args.waves)
        except ValueError as exc:          # (an engine or waveform file it cannot do)
            raise RunError(f"--engine/--waves: {exc}") from None
        meter = RunProgress(horizon, args.clock_hz, what)     # (after the simulator build)
        try:
            result = run_virtual(engine, image, until_cycle=until_cycle, actions=actions,
                                 max_cycle=max_cycle, on_progress=meter.update)
        except RunError:
            raise
        except Exception as exc:
            if not isinstance(exc, (ValueError, RuntimeError, EngineError)):
                raise
            raise RunError(f"{', '.join(paths)}: {exc}", "FAILED") from None
        finally:
            engine.close()                # the RTL engines flush --waves here
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
