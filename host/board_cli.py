"""``copper build``, ``copper flash`` and ``copper board list|info|sim``.

Output as every ``copper`` subcommand (docs/cli.md): ``--json`` prints one object with
``ok``; errors raise :class:`~copperline.cli_output.CliError`.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import socket
import threading
from pathlib import Path

from copperline.cli_output import CliError, done, wrote, written
from copperline.firmware.board_interface import DEFAULT_BAUD

log = logging.getLogger(__name__)

#: Exit status of a build whose timing failed (the bitstream is still written).
EXIT_TIMING = 3


def register(subparsers) -> None:
    from copperline.boards.registry import board_names
    names = ", ".join(board_names())

    p = subparsers.add_parser("build", help="build the bitstream for a board (YoWASP toolchain)")
    p.add_argument("--board", required=True, help=f"one of: {names}")
    p.add_argument("--build-dir", default=None, metavar="DIR",
                   help="output root (default: the build cache, $COPPER_BUILD_DIR or "
                        "~/.cache/copperline; the board's files go to DIR/<board>/)")
    p.add_argument("--baud", type=int, default=None, help=f"link baud rate (default {DEFAULT_BAUD})")
    p.add_argument("--no-core", action="store_true",
                   help="build the link-only top (UART, link, scratch RAM) without the core")
    p.add_argument("--seeds", type=seed_arg, nargs="+", default=[1], metavar="N",
                   help="nextpnr seeds to place and route with (whole numbers >= 1, default "
                        "1): the bitstream is the first's, each further seed places and "
                        "routes the same netlist again; the report gives LC / FF / RAM / "
                        "Fmax per seed and the median Fmax, and timing is met only when "
                        "every seed meets it")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=cmd_build)

    p = subparsers.add_parser("flash", help="program a board with its built bitstream")
    p.add_argument("--board", required=True, help=f"one of: {names}")
    p.add_argument("--build-dir", default=None, metavar="DIR",
                   help="where `copper build` put it (default: the build cache)")
    p.add_argument("--bitstream", help="bitstream file (default: <build dir>/<board>/copper.bin|bit)")
    p.add_argument("--sram", action="store_true",
                   help="load into SRAM only (lost at power-off) instead of the SPI flash")
    p.add_argument("--no-detect", action="store_true",
                   help="skip the USB check for the board before calling the programmer")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_flash)

    p = subparsers.add_parser("board", help="attached boards, identify, the virtual board")
    sub = p.add_subparsers(dest="board_command", metavar="ACTION", required=True)
    q = sub.add_parser("list", help="supported boards and the ones attached")
    q.add_argument("--json", action="store_true", help="print the boards as JSON")
    q.set_defaults(func=cmd_list)
    q = sub.add_parser("info", help="identify a board over the link (hello)")
    q.add_argument("--board", default="icebreaker", help=f"one of: {names}")
    q.add_argument("--port", help="serial port or URL (default: discover the board)")
    q.add_argument("--baud", type=int, default=None)
    q.add_argument("--json", action="store_true", help="print the identity as JSON")
    q.set_defaults(func=cmd_info)
    q = sub.add_parser("sim", help="the virtual board: the board's RTL simulated, on TCP")
    q.add_argument("--board", default="icebreaker", help=f"one of: {names}")
    q.add_argument("--listen", default="tcp:127.0.0.1:7654", help="tcp:HOST:PORT")
    q.add_argument("--baud", type=int, default=None)
    q.add_argument("--no-core", action="store_true", help="the link-only top")
    q.add_argument("--engine", choices=("verilator", "cxxrtl", "amaranth"), default="verilator",
                   help="verilator (default) or cxxrtl: the top with its UART compiled to a "
                        "native simulator (cached in the build cache; Verilator is ~6x "
                        "faster); amaranth: amaranth.sim, slow")
    q.add_argument("--no-pace", action="store_true",
                   help="native engines: let simulated time run ahead of the wall clock")
    src = q.add_mutually_exclusive_group()
    src.add_argument("--from-bitstream", action="store_true",
                     help="iCE40: simulate the built bitstream itself (copper build's .asc "
                          "turned back into a netlist by icebox_vlog), not the RTL")
    src.add_argument("--from-netlist", action="store_true",
                     help="ECP5: simulate the built post-synthesis netlist with the vendor "
                          "cell models, not the RTL")
    q.add_argument("--build-dir", default=None, metavar="DIR",
                   help="where the simulator is compiled (default: the build cache); with "
                        "--from-bitstream/--from-netlist also where `copper build` put the "
                        "board's build")
    q.add_argument("--video", metavar="DIR", default=None,
                   help="simulate the board's display too and write every frame it shows "
                        "after a program's start (a time-base reset) as DIR/frame-NNNNN.png, "
                        "numbered as `copper render --exact` numbers them; every clock is "
                        "then simulated (no idle skip, no warp)")
    q.add_argument("--video-frames", type=int, default=None, metavar="N",
                   help="with --video: write only the first N frames of each run")
    q.add_argument("--json", action="store_true",
                   help="print one JSON object once listening (then serve until Ctrl-C)")
    q.set_defaults(func=cmd_sim)


def seed_arg(text: str) -> int:
    """``--seeds`` values: whole numbers >= 1 (argparse turns the error into a usage
    message naming the option)."""
    try:
        seed = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a seed: seeds are whole numbers >= 1 (e.g. --seeds 1 2 3)") from None
    if seed < 1:
        raise argparse.ArgumentTypeError(
            f"{seed} is not a seed: seeds are whole numbers >= 1 (e.g. --seeds 1 2 3)")
    return seed


def _board(name: str):
    from copperline.boards.common import BoardError
    from copperline.boards.registry import get_board
    try:
        return get_board(name)
    except BoardError as exc:
        raise CliError(f"--board: {exc}", "BAD_ARG", 2) from None


def cmd_build(args) -> int:
    from copperline.boards.common import BoardError, build, format_report, timing_failures
    board = _board(args.board)
    seeds = list(getattr(args, "seeds", None) or [1])
    twice = sorted({s for s in seeds if seeds.count(s) > 1})
    if twice:
        raise CliError(f"--seeds {' '.join(map(str, seeds))}: seed "
                       f"{', '.join(map(str, twice))} given twice (each seed places and "
                       "routes once)", "BAD_ARG", 2)
    try:
        report = build(board, build_dir=args.build_dir, baud=args.baud,
                       with_core=not args.no_core, seeds=seeds)
    except BoardError as exc:
        raise CliError(str(exc), "BUILD_FAILED") from None
    except ValueError as exc:
        raise CliError(str(exc), "BAD_ARG", 2) from None
    report_path = str(Path(report["bitstream"]).with_name("report.json"))
    files = [written(report["bitstream"], "bitstream"), written(report_path, "report")]
    if report["timing_met"] is False and args.json:
        raise CliError(f"timing not met: {'; '.join(timing_failures(report))}",
                       "TIMING_FAILED", EXIT_TIMING, report=report, files=files)
    done(args, {**report, "files": files}, [
        format_report(report), wrote(report["bitstream"], "bitstream"),
        wrote(report_path, "report")])
    return 0 if report["timing_met"] is not False else EXIT_TIMING


def cmd_flash(args) -> int:
    from copperline.boards.common import BoardError, build_dir_for, flash
    board = _board(args.board)
    bitstream = args.bitstream or build_dir_for(board, args.build_dir) / board.bitstream
    try:
        flash(board, bitstream=bitstream, sram=args.sram, check_board=not args.no_detect)
    except BoardError as exc:
        raise CliError(str(exc), "FLASH_FAILED") from None
    where = "SRAM (lost at power-off)" if args.sram else "SPI flash"
    return done(args, {"board": board.name, "bitstream": str(bitstream),
                       "target": "sram" if args.sram else "flash"},
                f"flashed {bitstream} into the {board.title}'s {where}")


def cmd_list(args) -> int:
    from copperline.boards.discover import find_ports
    from copperline.boards.registry import all_boards
    rows = []
    for b in all_boards():
        ports = find_ports(b)
        rows.append({"board": b.name, "title": b.title, "clock_hz": b.clock_hz,
                     "usb": [str(u) for u in b.usb], "attached": [p.to_json() for p in ports]})

    def human() -> None:
        for r in rows:
            where = ", ".join(p["device"] for p in r["attached"]) or "not attached"
            print(f"{r['board']:12} {r['title']:14} {r['clock_hz'] / 1e6:4g} MHz  "
                  f"usb {', '.join(r['usb']):28} {where}")
    return done(args, {"boards": rows}, human)


def cmd_info(args) -> int:
    from copperline.boards.common import BoardError
    from copperline.boards.discover import resolve_port
    from copperline.host.link import Link, LinkError
    board = _board(args.board)
    try:
        port = resolve_port(board, args.port)
        with Link(port, baud=args.baud or DEFAULT_BAUD) as link:
            info = link.hello().to_json()
    except (BoardError, LinkError) as exc:
        raise CliError(str(exc), "NO_BOARD") from None
    info["port"] = port
    return done(args, info, [f"{k:16} {v}" for k, v in info.items()
                             if not k.startswith("reserved")])


def _parse_listen(spec: str) -> tuple[str, int]:
    parts = spec.split(":")
    if len(parts) != 3 or parts[0] != "tcp" or not parts[2].isdigit():
        raise CliError(f"--listen {spec!r}: expected tcp:HOST:PORT (e.g. tcp:127.0.0.1:7654)",
                       "BAD_ARG", 2)
    return parts[1], int(parts[2])


def port_in_use(host: str, port: int, spec: str) -> CliError:
    """The message for a listening address that is taken (instead of ``[Errno 98]``)."""
    return CliError(f"--listen {spec}: {host}:{port} is already in use, most likely by "
                    "another `copper board sim` (a board serves one host at a time: connect "
                    f"to it with --port socket://{host}:{port}, stop it, or listen elsewhere "
                    "with --listen tcp:HOST:PORT)", "BUSY")


def _check_free(host: str, port: int, spec: str) -> None:
    """Fail before the (slow) simulator build when the address is taken."""
    try:
        probe = socket.create_server((host, port))
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise port_in_use(host, port, spec) from None
        raise CliError(f"--listen {spec}: {exc.strerror or exc}", "BAD_ARG", 2) from None
    probe.close()


def cmd_sim(args) -> int:
    from copperline.boards.common import BoardError
    from copperline.boards.virtual import VirtualBoardServer
    from copperline.sim.cxxrtl_build import NativeBuildError
    board = _board(args.board)
    host, port = _parse_listen(args.listen)
    _check_free(host, port, args.listen)
    display = _video_display(args, board)
    if args.from_bitstream or args.from_netlist:
        return _serve_built(args, board, host, port)
    baud = args.baud or DEFAULT_BAUD
    try:
        server = VirtualBoardServer(
            host, port, clock_hz=board.clock_hz, baud=baud,
            core=None if args.no_core else board.core_config(), engine=args.engine,
            build_dir=args.build_dir, pace=not args.no_pace, display=display,
            video_dir=args.video, video_frames=args.video_frames)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise port_in_use(host, port, args.listen) from None
        raise CliError(f"virtual board: {exc.strerror or exc}") from None
    except (BoardError, NativeBuildError, ValueError) as exc:
        raise CliError(f"virtual board: {exc}", "BUILD_FAILED") from None
    facts = {"board": board.name, "engine": args.engine, "clock_hz": board.clock_hz,
             "baud": baud}
    what = f"{board.clock_hz / 1e6:g} MHz, {args.engine}"
    if display is not None:
        facts |= {"video": args.video, "video_frames": args.video_frames,
                  "mode": display.mode.name}
        what += f", display {display.mode.name} into {args.video}/"
    return _serve_until_interrupted(server, args.json, facts, f"virtual {board.title} ({what})")


def _video_display(args, board):
    """The display ``copper board sim --video`` simulates, or None; a usage error names
    why it cannot."""
    if args.video is None:
        if args.video_frames is not None:
            raise CliError("--video-frames needs --video DIR", "BAD_ARG", 2)
        return None
    if args.video_frames is not None and args.video_frames < 1:
        raise CliError(f"--video-frames must be >= 1 (got {args.video_frames})", "BAD_ARG", 2)
    display = board.display()
    if display is None or args.no_core:
        raise CliError(f"--video: {board.title} has no display output"
                       + (" without its core (--no-core)" if args.no_core else ""),
                       "BAD_ARG", 2)
    if args.engine == "amaranth":
        raise CliError("--video needs a native engine: --engine verilator (the default) or "
                       "cxxrtl", "BAD_ARG", 2)
    if args.from_bitstream or args.from_netlist:
        raise CliError("--video with --from-bitstream/--from-netlist is not implemented: "
                       "the display is captured from the RTL only", "NOT_IMPLEMENTED", 2)
    return display


def _serve_until_interrupted(server, as_json: bool, facts: dict, title: str) -> int:
    """Start ``server``, say where it listens (one JSON object with ``facts``, or
    ``title`` in words) and serve until Ctrl-C, which is how a server stops: exit 0."""
    try:
        server.start()
        if as_json:
            print(json.dumps({"ok": True, **facts, "url": server.url}), flush=True)
        else:
            print(f"{title} listening on {server.url}", flush=True)
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    return 0


def _serve_built(args, board, host: str, port: int) -> int:
    """``copper board sim --from-bitstream|--from-netlist``: the flashed design itself
    (copperline.boards.bitstream_sim), its clock and baud those of the build."""
    from copperline import progress as prog
    from copperline.boards import bitstream_sim
    from copperline.sim.cxxrtl_build import NativeBuildError
    source = "bitstream" if args.from_bitstream else "netlist"
    wanted = "ice40" if args.from_bitstream else "ecp5"
    if board.family != wanted:
        other = "--from-netlist" if args.from_bitstream else "--from-bitstream"
        raise CliError(f"--from-{source} is for {wanted} boards; {board.name} is {board.family}"
                       f" (use {other})", "BAD_ARG", 2)
    if args.no_core or args.engine != "verilator":
        raise CliError(f"--from-{source} runs the build as it is (its core or not) with "
                       "Verilator: drop --no-core/--engine", "BAD_ARG", 2)
    try:
        server = bitstream_sim.serve(board, host, port, build_dir=args.build_dir,
                                     sim_build_dir=args.build_dir, pace=not args.no_pace,
                                     progress=None if args.json else prog.say)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise port_in_use(host, port, args.listen) from None
        raise CliError(f"{source} board: {exc.strerror or exc}") from None
    except (bitstream_sim.BitstreamSimError, NativeBuildError) as exc:
        raise CliError(f"{source} board: {exc}", "BUILD_FAILED") from None
    design = server.design
    if args.baud and args.baud != design.baud:
        server.close()
        raise CliError(f"--baud {args.baud}: the build runs its link at {design.baud} baud "
                       "(rebuild with copper build --baud)", "BAD_ARG", 2)
    return _serve_until_interrupted(
        server, args.json, {"board": board.name, "engine": "verilator", "source": source,
                            "file": design.source, "clock_hz": design.fabric_hz,
                            "baud": design.baud},
        f"{board.title} {source} {design.source} ({design.fabric_hz / 1e6:g} MHz, "
        f"{design.baud} baud, Verilator)")
