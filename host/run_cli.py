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

A sim engine plugs in by providing ``copperline.sim.backend.create_engine(clock_hz=...,
vsync_hz=..., watchdog_ops=...)`` (or a ``Machine`` class with the VM's constructor).
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import re
import sys
import time

from copperline.firmware import isa
from copperline.host.backend import BackendError

log = logging.getLogger(__name__)

DEFAULT_CLOCK_HZ = 12_000_000
#: Without --frames / --until-us: run until the program ends, at most this long (model time).
DEFAULT_MAX_US = 10_000_000
_ENDED = ("done", "faulted", "stopped")


class RunError(Exception):
    """A problem with the command line or the program; exit code ``code``."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


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
    span.add_argument("--frames", type=int, help="run until global cycle N * vsync period")
    span.add_argument("--until-us", type=float, help="run until T microseconds")
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
    p.add_argument("--board", help="fpga: board name (found by its USB id); soft/sim: "
                                    "use that board's core clock")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
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
    try:
        return load_any(path)
    except FileNotFoundError:
        raise RunError(f"{path}: no such file") from None
    except (ProgramError, ImageError, OSError, ValueError) as exc:
        raise RunError(str(exc)) from None


def _prog_event(e: dict, prog: int) -> dict:
    """A machine event (``slot``) as a trace event (``prog``), keeping the key order."""
    if "slot" not in e:
        return e
    return {("prog" if k == "slot" else k): (prog if k == "slot" else v) for k, v in e.items()}


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
    """A Backend for a real-time run (soft monotonic, fpga)."""
    if args.backend == "soft":
        from copperline.host.soft import SoftBackend
        return SoftBackend("monotonic", clock_hz=args.clock_hz, vsync_hz=args.vsync_hz,
                           watchdog_ops=args.watchdog_ops, vsync_events=args.vsync_events)
    from copperline.host.fpga import FpgaBackend
    # Without --port the backend finds the board by its USB id (clear error when none).
    return FpgaBackend(port=args.port, board=args.board)


# -- drivers ------------------------------------------------------------------------------
def run_virtual(engine, image, *, until_cycle: int | None, fences=(),
                max_cycle: int | None = None) -> tuple[list[dict], dict]:
    """Run ``image`` as program 1 on a Machine-API engine from global cycle 0.

    With ``until_cycle`` None the run stops at the first vsync period boundary after the
    program ended (or at ``max_cycle``). Returns (trace events, final status).
    """
    if engine.cycle != 0:
        raise RunError(f"the engine is at cycle {engine.cycle}, expected a fresh one at 0")
    slot = engine.load(image)
    engine.start(slot)
    pending = collections.deque(sorted(fences, key=lambda f: f[0]))
    end = until_cycle if until_cycle is not None else max_cycle
    chunk = getattr(engine, "vsync_period", None) or isa.vsync_period_cycles(
        engine.clock_hz, engine.vsync_hz)
    events: list[dict] = []
    while True:
        while pending and pending[0][0] <= engine.cycle:
            _, name, value = pending.popleft()
            engine.set_fence(name, value)
        if engine.cycle >= end:
            break
        if until_cycle is None and engine.status(slot)["state"] in _ENDED:
            break
        nxt = end if until_cycle is not None else min(end, engine.cycle + chunk)
        if pending and pending[0][0] < nxt:
            nxt = pending[0][0]
        events.extend(_prog_event(e, 1) for e in engine.run_until(nxt))
    return events, engine.status(slot)


def run_realtime(backend, image, *, until_cycle: int | None, fences=(),
                 max_cycle: int) -> tuple[list[dict], dict]:
    """Run ``image`` on a real-time Backend; fences are applied on the wall clock."""
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
    try:
        hz = backend.clock_hz
        end_cycle = until_cycle if until_cycle is not None else max_cycle
        t0 = time.monotonic()
        todo = sorted(fences, key=lambda f: f[0])
        # A board counts its own cycles, and the virtual board runs slower than real time:
        # its program's cycle, not the wall clock, says how far the run has got.
        board_time = backend.name == "fpga"
        while True:
            if board_time:
                elapsed_cycle = backend.status(prog).cycle
            else:
                elapsed_cycle = (time.monotonic() - t0) * hz
            while todo and todo[0][0] <= elapsed_cycle:
                _, name, value = todo.pop(0)
                backend.fence(name, value)
            if elapsed_cycle >= end_cycle:
                break
            if until_cycle is None and any(e.get("prog") == prog and e.get("event") == "state"
                                           and e.get("state") in _ENDED for e in got[-8:]):
                break
            next_at = min([end_cycle] + [f[0] for f in todo[:1]])
            time.sleep(max(0.001, min(0.01, (next_at - elapsed_cycle) / hz)))
        status = backend.status(prog).to_json()
        if callable(getattr(backend, "program_ops", None)):
            status["ops"] = backend.program_ops(prog)
    finally:
        backend.close()
    events = [e for e in got if until_cycle is None or e.get("cycle", 0) < until_cycle]
    return events, status


def main(args) -> int:
    try:
        return _main(args)
    except RunError as exc:
        print(f"copper run: {exc}", file=sys.stderr)
        return exc.code
    except BackendError as exc:
        print(f"copper run: {args.backend} backend: {exc.message} ({exc.code})", file=sys.stderr)
        return 1


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
            raise RunError(f"--backend fpga: {exc.message}") from None
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
    until_cycle = (args.frames * period if args.frames is not None
                   else int(args.until_us * cpu) if args.until_us is not None else None)
    image = _load_image(args.program)

    realtime = args.backend == "fpga" or (args.backend == "soft" and args.clock == "monotonic")
    clock = "monotonic" if realtime else "virtual"
    t_wall = time.perf_counter()
    if realtime:
        backend = opened or make_realtime_backend(args)
        events, status = run_realtime(backend, image, until_cycle=until_cycle, fences=fences,
                                      max_cycle=DEFAULT_MAX_US * cpu)
        end_cycle = until_cycle if until_cycle is not None else max(
            [e.get("cycle", 0) for e in events] + [0]) + 1
        ops = status.get("ops")
    else:
        if args.backend == "soft" and (args.engine or args.waves):
            raise RunError("--engine and --waves apply to --backend sim")
        engine = make_virtual_engine(args.backend, args.clock_hz, args.vsync_hz,
                                     args.watchdog_ops, args.vsync_events,
                                     engine=args.engine, waves=args.waves)
        try:
            events, status = run_virtual(engine, image, until_cycle=until_cycle, fences=fences,
                                         max_cycle=DEFAULT_MAX_US * cpu)
        except (ValueError, RuntimeError) as exc:
            raise RunError(f"{args.program}: {exc}") from None
        finally:
            if callable(getattr(engine, "close", None)):
                engine.close()            # the RTL engines flush --waves here
        end_cycle = engine.cycle
        ops = status.get("ops")
    elapsed = time.perf_counter() - t_wall

    extra = {"clock": clock, "watchdog_ops": args.watchdog_ops, "until_cycle": end_cycle}
    if fences:
        extra["fences"] = [{"timeline": n, "value": v, "cycle": c} for c, n, v in fences]
    if args.trace:
        try:
            with TraceWriter(args.trace, backend=args.backend, clock_hz=args.clock_hz,
                             vsync_hz=args.vsync_hz, program=image.sha256(), **extra) as w:
                w.write_all(events)
        except OSError as exc:
            raise RunError(f"--trace {args.trace}: {exc}") from None

    counts = collections.Counter(e.get("event") for e in events)
    summary = {
        "backend": args.backend, "clock": clock, "clock_hz": args.clock_hz,
        "vsync_hz": args.vsync_hz, "program": image.sha256(), "until_cycle": end_cycle,
        "until_us": round(end_cycle * 1_000_000 / args.clock_hz, 3),
        "events": len(events), "by_event": dict(sorted(counts.items())), "ops": ops,
        "state": status.get("state"), "reason": status.get("reason"), "pc": status.get("pc"),
        "elapsed_s": round(elapsed, 6), "trace": args.trace,
    }
    if realtime:
        late = sorted(e["wall_us"] - e["time_us"] for e in events
                      if "wall_us" in e and e.get("event") != "vsync")
        if late:
            summary["lateness_us"] = {"p50": round(late[len(late) // 2], 3),
                                      "max": round(late[-1], 3)}
    if args.json:
        print(json.dumps(summary, sort_keys=False))
    else:
        kinds = ", ".join(f"{k} {n}" for k, n in sorted(counts.items())) or "none"
        print(f"{args.backend} ({clock}, {args.clock_hz} Hz): {len(events)} events ({kinds}) "
              f"in {summary['until_us'] / 1e6:.6f} s model time")
        print(f"program 1: {summary['state']}"
              + (f" ({summary['reason']})" if summary["reason"] else "")
              + f" at pc {summary['pc']}"
              # the board keeps no op count (its status has state, pc, cycle, dropped)
              + (f"; {ops} ops issued" if ops is not None else ""))
        if "lateness_us" in summary:
            print(f"lateness (wall_us - time_us): p50 {summary['lateness_us']['p50']} us, "
                  f"max {summary['lateness_us']['max']} us")
        print(f"elapsed {elapsed:.3f} s" + (f"; trace: {args.trace}" if args.trace else ""))
    return 0


if __name__ == "__main__":  # pragma: no cover
    parser = argparse.ArgumentParser(prog="copper")
    register(parser.add_subparsers())
    sys.exit(main(parser.parse_args()))
