"""Link benchmark: upload throughput as % of the line rate and command round-trip time.

1. Line level, from the gateware (amaranth.sim, byte level, iCEBreaker top with the core):
   for a full PROG write frame, a 4-word STATUS read and a 63-record EVENTS read, the
   board's turnaround (cycles from the request's last byte to the response's first) is
   measured; with the bytes both ways on the line (3 Mbaud by default) this gives the time
   per request, and the payload share of it. Shown without and with 1 ms per round trip
   for the FTDI latency timer; the EVENTS read as the host pipelines it (the next request
   travels while the answer goes out), so only the answer and the turnaround count.
2. Against the fast virtual board (Verilator, the UART pins simulated at the same rate): upload
   throughput as % of the line rate, in the board's simulated time and on the wall clock,
   and the median STATUS-read round trip, against the baseline of a bare TCP echo of the
   same bytes in the same run.
3. Pull-mode event throughput (records/s delivered, and their share of what the line
   carries) from a program making twice what the line carries.
4. The virtual board's speed (fabric cycles per second) while programs of several shapes
   run.

``python -m tests.bench link [--board NAME] [--baud N]`` (``make bench BENCH=link``): the
top runs at the board's fabric clock (``get_board(NAME).clock_hz``, NAME default
``icebreaker``) with the board's core, so the figures follow the board when its clock
changes; the line rate defaults to the one ``copper build --board NAME`` and ``copper
board sim`` build in (``DEFAULT_BAUD``, 3 Mbaud), checked against that clock as the build
checks it. The first line printed says which clock and baud were measured.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import statistics
import threading
import time
from pathlib import Path

from copperline.firmware import board_interface as proto
from copperline.host.link import Link

#: The board measured, its fabric clock and the line rate: main() sets them from
#: ``--board`` / ``--baud`` (:func:`configure`).
BOARD = "icebreaker"
CLOCK = 24_000_000
BAUD = proto.DEFAULT_BAUD
BYTE_S = 10 / BAUD


def _turnaround(request: bytes, core) -> tuple[int, int]:
    """(cycles from the last request byte to the first response byte, response bytes)."""
    from amaranth.sim import Simulator

    from copperline.hdl.top import LinkTop
    dut = LinkTop(clock_hz=CLOCK, byte_io=True, core=core)
    marks = {}
    out = bytearray()
    sim = Simulator(dut)
    sim.add_clock(1 / CLOCK)
    cycle = [0]

    async def collect(ctx):
        ctx.set(dut.tx.ready, 1)
        while True:
            if ctx.get(dut.tx.valid):
                marks.setdefault("first_out", cycle[0])
                out.append(ctx.get(dut.tx.payload))
            await ctx.tick()
            cycle[0] += 1

    async def feed(ctx):
        for i, b in enumerate(request):
            ctx.set(dut.rx.payload, b)
            ctx.set(dut.rx.valid, 1)
            await ctx.tick()
            ctx.set(dut.rx.valid, 0)
            if i == len(request) - 1:
                marks["last_in"] = cycle[0]
                break
            await ctx.tick().repeat(round(CLOCK * BYTE_S) - 1)     # a byte per byte time
        await ctx.tick().repeat(3000)

    sim.add_testbench(collect, background=True)
    sim.add_testbench(feed)
    sim.run()
    frames = proto.FrameDecoder().feed(bytes(out))
    resp = [f for f in frames if f.type & proto.RESP]
    assert resp and resp[0].body[0] == proto.ST_OK, resp
    return marks["first_out"] - marks["last_in"], len(proto.encode_frame(
        resp[0].type, resp[0].seq, resp[0].body))


def _line_figures(name, request, payload_bytes, core, pipelined: bool = False):
    """A request's figures on the line. ``pipelined``: the next request travels while
    this answer goes out (two in flight, as the host pulls events), so only the answer
    and the board's turnaround take line time."""
    turn, resp_len = _turnaround(request, core)
    t_line = (0 if pipelined else len(request)) * BYTE_S + resp_len * BYTE_S + turn / CLOCK
    out = {"request": name, "request_bytes": len(request), "response_bytes": resp_len,
           "turnaround_cycles": turn, "round_trip_us": round(t_line * 1e6, 1)}
    if payload_bytes:
        ideal = payload_bytes * BYTE_S
        out["line_efficiency_pct"] = round(100 * ideal / t_line, 1)
        if not pipelined:       # (two in flight hide a latency shorter than an answer)
            out["with_1ms_usb_pct"] = round(100 * ideal / (t_line + 1e-3), 1)
        out["kib_per_s"] = round(payload_bytes / t_line / 1024, 1)
    return out


def _echo_server():
    srv = socket.create_server(("127.0.0.1", 0))

    def run():
        conn, _ = srv.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        while data := conn.recv(4096):
            conn.sendall(data)
    threading.Thread(target=run, daemon=True).start()
    return srv


def _fast_board(core, pace: bool = True):
    from copperline.boards.virtual import VirtualBoardServer
    return VirtualBoardServer("127.0.0.1", 0, clock_hz=CLOCK, baud=BAUD, core=core,
                              engine="verilator", pace=pace).start()


def _virtual_board_figures(core, n: int) -> None:
    """Upload throughput and round trips against the Verilator board (UART pins simulated at
    the line rate), in the board's simulated time and on the wall clock."""
    srv = _fast_board(core)
    sim = srv.link
    words = list(range(1024))                 # one slot's program memory: 4 KiB
    payload = 4 * len(words)
    reps = 3
    with Link(srv.url, timeout=5.0) as link:
        link.hello()
        s0, t0 = sim.request_stats(), time.perf_counter()
        for _ in range(reps):
            link.upload(words)
        s1, t1 = sim.request_stats(), time.perf_counter()
        sim_s = (s1.cycles - s0.cycles) / CLOCK
        wall_s = t1 - t0
        ideal = reps * payload * BYTE_S
        print(f"upload {reps} x {payload} bytes to the Verilator virtual board ({BAUD} baud):")
        print(f"  board time {sim_s * 1e3:.1f} ms -> {100 * ideal / sim_s:.1f} % of the line rate "
              f"({reps * payload / sim_s / 1024:.1f} KiB/s; host think time is idle time the "
              "board skips)")
        print(f"  wall time  {wall_s * 1e3:.1f} ms -> {100 * ideal / wall_s:.1f} % of the line "
              f"rate (simulator at {s1.speed_hz / 1e6:.2f} M fabric cycles/s = "
              f"{s1.speed_hz / CLOCK:.2f}x real time)")
        rt, cyc = [], []
        for _ in range(n):
            a, t = sim.request_stats(), time.perf_counter()
            link.read(proto.SPACE_STATUS, 0, 4)
            rt.append(time.perf_counter() - t)
            cyc.append(sim.request_stats().cycles - a.cycles)
    srv.close()
    med = statistics.median(rt)
    print(f"status read round trip (n={n}): board time median "
          f"{statistics.median(cyc) / CLOCK * 1e6:.0f} us (line + turnaround; line alone {(9 + 23) * BYTE_S * 1e6:.0f} us); wall "
          f"median {med * 1e3:.2f} ms")
    return med


def _every(us: int, *ops: dict) -> list[dict]:
    """A loop: wait ``us`` microseconds, then ``ops``."""
    return [{"label": "l"}, {"op": "WAIT", "us": us}, *ops, {"op": "JUMP", "label": "l"}]


MOVE = {"op": "MOVE", "reg": "layer[1].x", "value": 5}

SPEED_PROGRAMS = {
    # mostly waiting, like a raster program: the core's warp skips the waits
    "WAIT 1000 us / IRQ loop": _every(1000, {"op": "IRQ", "tag": "t"}),
    # examples/sprite.json: a vsync-paced loop, the shape of a raster program
    "examples/sprite.json (vsync loop)": Path(__file__).parents[2] / "examples" / "sprite.json",
    # a register change every 250 us: its event records fill about a third of the line
    # (8 bytes each, pulled in batches); the warp goes on while they go out, the line
    # catching up alone
    "WAIT 250 us / MOVE loop": _every(250, MOVE),
    # scanline rate (15.6 kHz): more records than the line carries (the FIFO overflows
    # and counts what it drops, as on hardware), so the line never rests
    "WAIT 64 us / MOVE loop": _every(64, MOVE),
    # raster rate: a register change every 30 us, each one an event record to pull
    "WAIT 30 us / MOVE / ADD loop": _every(30, MOVE,
                                           {"op": "ADD", "reg": "layer[1].y", "delta": 1}),
    # never idle for long: every clock is simulated (the simulator's raw speed)
    "WAIT 2 us / NOP loop": _every(2, {"op": "NOP"}),
}


@contextlib.contextmanager
def _running(core, prog, *, pace: bool, sink=None):
    """A fast virtual board running ``prog`` (ops, or a program file) under the fpga
    backend; yields (server, backend, program id); everything closed afterwards."""
    from copperline.firmware.compiler import compile_program
    from copperline.host.fpga import FpgaBackend
    srv = _fast_board(core, pace=pace)
    be = FpgaBackend(port=srv.url)
    if sink is not None:
        be.set_event_sink(sink)
    be.open()
    try:
        doc = (json.loads(prog.read_text()) if isinstance(prog, Path)
               else {"version": 1, "program": prog})
        pid = be.load(compile_program(doc))
        be.start(pid)
        yield srv, be, pid
    finally:
        be.close()
        srv.close()


def _speed(core, seconds: float = 2.0) -> None:
    """Simulator speed while a program runs (unpaced): simulated fabric cycles per second
    (warped core cycles count what they stand for) and clocks evaluated per second."""
    for name, prog in SPEED_PROGRAMS.items():
        with _running(core, prog, pace=False) as (srv, _, _):
            a = srv.link.request_stats()
            time.sleep(seconds)
            b = srv.link.request_stats()
        ns = b.sim_ns - a.sim_ns
        hz = (b.cycles - a.cycles) * 1e9 / ns
        ticks = b.ticks - a.ticks
        line = b.line_ticks - a.line_ticks
        print(f"virtual board speed, {name} (events pulled every 2 ms): "
              f"{hz / 1e6:.2f} M fabric cycles/s = {hz / CLOCK:.2f}x real time at "
              f"{CLOCK / 1e6:g} MHz (target 1x); {(ticks + line) * 1e3 / ns:.2f} M clocks "
              f"evaluated/s, {100 * line / max(1, ticks + line):.0f} % of them the line "
              f"alone catching up with {b.warped - a.warped} warped core cycles, link "
              f"clocked in {100 * (b.link_ticks - a.link_ticks) / max(1, ticks + line):.0f} "
              "% of the clocks")
    print("  (amaranth.sim engine ~0.02 M/s; CXXRTL engine ~1 M clocks/s)")


def _event_stream(core, seconds: float = 3.0) -> None:
    """Pull-mode event throughput: a paced board runs a program making twice the records
    per second of board time that the line carries; the fpga backend delivers what its
    pipelined reads carry and reports the rest as dropped by the FIFO."""
    got: list[dict] = []
    line = BAUD / 10 / 8                  # records/s if the line carried nothing else
    wait_us = max(1, round(1e6 / (2 * line)))
    made = 1e6 / wait_us
    with _running(core, _every(wait_us, MOVE), pace=True, sink=got.append) as (srv, be, pid):
        time.sleep(0.5)                              # the FIFO's first overflow passes
        a, n0, t0 = srv.link.request_stats(), len(got), time.perf_counter()
        time.sleep(seconds)
        b, window, t1 = srv.link.request_stats(), got[n0:], time.perf_counter()
        stats = be.link_stats()
        be.stop(pid)
    board_s = (b.cycles - a.cycles) / CLOCK
    regs = sum(1 for e in window if e.get("event") == "reg")
    dropped = sum(e["count"] for e in window if e.get("event") == "dropped")
    print(f"event stream, pull mode ({BAUD} baud, paced board, {made / 1e3:.0f}k records/s "
          f"made): {regs / board_s:.0f} records/s delivered = {100 * regs / board_s / line:.1f} "
          f"% of the line's {line:.0f}/s (pipelined reads of up to "
          f"{proto.MAX_READ_WORDS // 2} records, two in flight; "
          f"{dropped / board_s:.0f}/s dropped by the full FIFO, reported; the simulator ran "
          f"at {board_s / (t1 - t0):.2f}x real time); link since it opened: "
          f"{stats['requests']} requests, {stats['retransmits']} retransmitted, "
          f"{stats['duplicates']} duplicate answers")


def configure(argv: list[str]):
    """Parse ``argv`` and set :data:`BOARD`, :data:`CLOCK`, :data:`BAUD`, :data:`BYTE_S`
    from the board definition; returns the board. A board or baud the build would refuse
    is a usage error (exit 2)."""
    global BOARD, CLOCK, BAUD, BYTE_S
    from copperline.boards.common import BoardError
    from copperline.boards.registry import board_names, get_board
    from copperline.hdl.uart import divisor

    ap = argparse.ArgumentParser(prog="python -m tests.bench link")
    ap.add_argument("--board", default="icebreaker",
                    help=f"the board whose top, fabric clock and core are measured (one of: "
                         f"{', '.join(board_names())}; default icebreaker)")
    ap.add_argument("--baud", type=int, default=None,
                    help=f"line rate (default: the board build's, {proto.DEFAULT_BAUD})")
    args = ap.parse_args(argv)
    try:
        board = get_board(args.board)
    except BoardError as exc:
        ap.error(f"--board: {exc}")
    if board.core_config() is None:
        ap.error(f"--board {board.name}: the board has no core to measure")
    baud = args.baud or proto.DEFAULT_BAUD        # what copper build / board sim build in
    try:
        divisor(board.clock_hz, baud)
    except ValueError as exc:
        ap.error(f"--baud {baud}: {exc}")
    BOARD, CLOCK, BAUD, BYTE_S = board.name, board.clock_hz, baud, 10 / baud
    return board


def main(argv: list[str]) -> int:
    board = configure(argv)
    core = board.core_config().simulation()       # memory models (SPRAM), the board's sizes
    print(f"board {board.name} ({board.title}): the top at its fabric clock "
          f"{CLOCK / 1e6:g} MHz (get_board({board.name!r}).clock_hz), link {BAUD} baud, core "
          f"{core.contexts} contexts x {core.program_words} words", flush=True)
    write = proto.encode_frame(proto.T_WRITE | proto.SPACE_PROG, 1,
                               proto.write_body(0, range(0xC0, 0xC0 + proto.DEFAULT_CHUNK_WORDS)))
    status = proto.encode_frame(proto.T_READ | proto.SPACE_STATUS, 2, proto.read_body(0, 4))
    events = proto.encode_frame(proto.T_READ | proto.SPACE_EVENTS, 3,
                                proto.read_body(0, proto.MAX_READ_WORDS))
    print(f"line level (gateware sim, {CLOCK / 1e6:g} MHz, {BAUD} baud):")
    for fig in (_line_figures(f"upload {proto.DEFAULT_CHUNK_WORDS} words", write,
                              4 * proto.DEFAULT_CHUNK_WORDS, core),
                _line_figures("status read", status, 0, core),
                _line_figures(f"event read {proto.MAX_READ_WORDS // 2} records, pipelined",
                              events, 4 * proto.MAX_READ_WORDS, core, pipelined=True)):
        print("  " + ", ".join(f"{k}={v}" for k, v in fig.items()))

    n = 30
    med = _virtual_board_figures(core, n)
    echo = _echo_server()
    s = socket.create_connection(echo.getsockname())
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    base = []
    msg = proto.encode_frame(proto.T_READ | proto.SPACE_STATUS, 1, proto.read_body(0, 4))
    for _ in range(n):
        t0 = time.perf_counter()
        s.sendall(msg)
        got = b""
        while len(got) < len(msg):
            got += s.recv(4096)
        base.append(time.perf_counter() - t0)
    s.close()
    echo.close()
    bmed = statistics.median(base)
    print(f"bare TCP echo baseline of the same request (n={n}): median {bmed * 1e3:.3f} ms; "
          f"virtual board round trip / baseline = {med / bmed:.0f}x")
    _event_stream(core)
    _speed(core)
    return 0
