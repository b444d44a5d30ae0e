"""``copper build``, ``copper flash`` and ``copper board list|info|sim``."""

from __future__ import annotations

import json
import logging
import sys

log = logging.getLogger(__name__)


def register(subparsers) -> None:
    from copperline.boards.registry import board_names
    names = ", ".join(board_names())

    p = subparsers.add_parser("build", help="build the bitstream for a board (YoWASP toolchain)")
    p.add_argument("--board", required=True, help=f"one of: {names}")
    p.add_argument("--build-dir", default="build", help="output root (default: build/)")
    p.add_argument("--baud", type=int, default=None, help="link baud rate (default 1000000)")
    p.add_argument("--no-core", action="store_true",
                   help="build the link-only top (UART, link, scratch RAM) without the core")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(func=cmd_build)

    p = subparsers.add_parser("flash", help="program a board with its built bitstream")
    p.add_argument("--board", required=True, help=f"one of: {names}")
    p.add_argument("--build-dir", default="build")
    p.add_argument("--bitstream", help="bitstream file (default: build/<board>/copper.bin|bit)")
    p.add_argument("--sram", action="store_true",
                   help="load into SRAM only (lost at power-off) instead of the SPI flash")
    p.add_argument("--no-detect", action="store_true",
                   help="skip the USB check for the board before calling the programmer")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_flash)

    p = subparsers.add_parser("board", help="attached boards, identify, the virtual board")
    sub = p.add_subparsers(dest="board_command", metavar="ACTION", required=True)
    q = sub.add_parser("list", help="supported boards and the ones attached")
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_list)
    q = sub.add_parser("info", help="identify a board over the link (hello)")
    q.add_argument("--board", default="icebreaker", help=f"one of: {names}")
    q.add_argument("--port", help="serial port or URL (default: discover the board)")
    q.add_argument("--baud", type=int, default=None)
    q.add_argument("--json", action="store_true")
    q.set_defaults(func=cmd_info)
    q = sub.add_parser("sim", help="the virtual board: the board's RTL simulated, on TCP")
    q.add_argument("--board", default="icebreaker", help=f"one of: {names}")
    q.add_argument("--listen", default="tcp:127.0.0.1:7654", help="tcp:HOST:PORT")
    q.add_argument("--baud", type=int, default=None)
    q.add_argument("--no-core", action="store_true", help="the link-only top")
    q.add_argument("--engine", choices=("verilator", "cxxrtl", "amaranth"), default="verilator",
                   help="verilator (default) or cxxrtl: the top with its UART compiled to a "
                        "native simulator (cached under --build-dir; Verilator is ~6x "
                        "faster); amaranth: amaranth.sim, slow")
    q.add_argument("--no-pace", action="store_true",
                   help="native engines: let simulated time run ahead of the wall clock")
    q.add_argument("--build-dir", default="build")
    q.set_defaults(func=cmd_sim)


def _fail(exc: Exception) -> int:
    print(f"copper: {exc}", file=sys.stderr)
    return 1


def cmd_build(args) -> int:
    from copperline.boards.common import BoardError, build, format_report
    from copperline.boards.registry import get_board
    try:
        board = get_board(args.board)
        quiet = args.json
        report = build(board, build_dir=args.build_dir, baud=args.baud,
                       with_core=not args.no_core,
                       progress=lambda m: None if quiet else print(f"[build] {m}", flush=True))
    except (BoardError, ValueError) as exc:
        return _fail(exc)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(format_report(report))
        print(f"report saved to {args.build_dir}/{board.name}/report.json")
    return 0 if report["timing_met"] is not False else 3


def cmd_flash(args) -> int:
    from pathlib import Path

    from copperline.boards.common import BoardError, flash
    from copperline.boards.registry import get_board
    try:
        board = get_board(args.board)
        bitstream = args.bitstream or Path(args.build_dir) / board.name / board.bitstream
        flash(board, bitstream=bitstream, sram=args.sram, check_board=not args.no_detect,
              progress=lambda m: None if args.json else print(f"[flash] {m}", flush=True))
    except BoardError as exc:
        return _fail(exc)
    if args.json:
        print(json.dumps({"ok": True, "board": board.name, "bitstream": str(bitstream)}))
    return 0


def cmd_list(args) -> int:
    from copperline.boards.discover import find_ports
    from copperline.boards.registry import all_boards
    rows = []
    for b in all_boards():
        ports = find_ports(b)
        rows.append({"board": b.name, "title": b.title, "clock_hz": b.clock_hz,
                     "usb": [str(u) for u in b.usb], "attached": [p.to_json() for p in ports]})
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        where = ", ".join(p["device"] for p in r["attached"]) or "not attached"
        print(f"{r['board']:12} {r['title']:14} {r['clock_hz'] / 1e6:4g} MHz  "
              f"usb {', '.join(r['usb']):28} {where}")
    return 0


def cmd_info(args) -> int:
    from copperline.boards.common import BoardError
    from copperline.boards.discover import resolve_port
    from copperline.boards.registry import get_board
    from copperline.host.link import Link, LinkError
    from copperline.hdl.uart import DEFAULT_BAUD
    try:
        board = get_board(args.board)
        port = resolve_port(board, args.port)
        with Link(port, baud=args.baud or DEFAULT_BAUD) as link:
            info = link.hello().to_json()
    except (BoardError, LinkError) as exc:
        return _fail(exc)
    info["port"] = port
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        for k, v in info.items():
            if not k.startswith("reserved"):
                print(f"{k:16} {v}")
    return 0


def _parse_listen(spec: str) -> tuple[str, int]:
    parts = spec.split(":")
    if len(parts) != 3 or parts[0] != "tcp" or not parts[2].isdigit():
        raise ValueError(f"--listen {spec!r}: expected tcp:HOST:PORT (e.g. tcp:127.0.0.1:7654)")
    return parts[1], int(parts[2])


def cmd_sim(args) -> int:
    import threading

    from copperline.boards.common import BoardError
    from copperline.boards.registry import get_board
    from copperline.boards.virtual import VirtualBoardServer
    from copperline.sim.cxxrtl_build import NativeBuildError
    from copperline.hdl.uart import DEFAULT_BAUD
    try:
        board = get_board(args.board)
        host, port = _parse_listen(args.listen)
        baud = args.baud or DEFAULT_BAUD
        server = VirtualBoardServer(
            host, port, clock_hz=board.clock_hz, baud=baud,
            core=None if args.no_core else board.core_config(), engine=args.engine,
            build_dir=args.build_dir, pace=not args.no_pace,
            progress=lambda m: print(f"[sim] {m}", file=sys.stderr, flush=True))
    except (BoardError, NativeBuildError, ValueError, OSError) as exc:
        return _fail(exc)
    server.start()
    print(f"virtual {board.title} ({board.clock_hz / 1e6:g} MHz, {args.engine}) "
          f"listening on {server.url}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()
    return 0
