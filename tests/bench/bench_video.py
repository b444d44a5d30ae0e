"""The display's speed in simulation: frames per second of the virtual board with its
video output on (``copper board sim --video``), against the same board without a
display in the same run, and of ``copper render --exact``.

``python -m tests.bench video [--board NAME] [--seconds S]`` (``make bench BENCH=video``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

EXAMPLE = Path(__file__).parents[2] / "examples" / "layers.json"


def _board_speed(board, seconds: float, video_dir: str | None) -> dict:
    """Run examples/layers.json on a virtual ``board`` (with its display and a frame
    capture into ``video_dir``, or without a display) for ``seconds``, unpaced: simulated
    fabric cycles per wall second, and frames written per wall second."""
    from copperline.boards.virtual import VirtualBoardServer
    from copperline.firmware.board_interface import DEFAULT_BAUD
    from copperline.firmware.compiler import compile_program
    from copperline.host.fpga import FpgaBackend
    display = board.display() if video_dir else None
    srv = VirtualBoardServer("127.0.0.1", 0, clock_hz=board.clock_hz, baud=DEFAULT_BAUD,
                             core=board.core_config(), engine="verilator", display=display,
                             video_dir=video_dir, pace=False).start()
    be = FpgaBackend(port=srv.url)
    try:
        be.open()
        be.start(be.load(compile_program(json.loads(EXAMPLE.read_text()))))
        time.sleep(1.0)                                  # the first frames pass
        a, t0 = srv.link.request_stats(), time.perf_counter()
        f0 = srv.frames.written if srv.frames else 0
        time.sleep(seconds)
        b, t1 = srv.link.request_stats(), time.perf_counter()
        f1 = srv.frames.written if srv.frames else 0
    finally:
        be.close()
        srv.close()
    wall = t1 - t0
    return {"fabric_hz": (b.cycles - a.cycles) / wall, "frames_per_s": (f1 - f0) / wall,
            "clocks_per_s": (b.ticks - a.ticks + b.line_ticks - a.line_ticks) / wall}


def main(argv: list[str]) -> int:
    from copperline.boards.registry import get_board
    ap = argparse.ArgumentParser(prog="python -m tests.bench video")
    ap.add_argument("--board", default="icebreaker")
    ap.add_argument("--seconds", type=float, default=4.0)
    args = ap.parse_args(argv)
    board = get_board(args.board)
    display = board.display()
    if display is None:
        ap.error(f"--board {board.name}: no display")
    fabric_per_frame = display.frame_cycles * display.contexts
    print(f"board {board.name}: {display.mode.name}, pixel clock {display.pixel_hz / 1e6:g} "
          f"MHz, a frame is {display.frame_cycles} core cycles = {fabric_per_frame} fabric "
          f"clocks ({display.vsync_hz:.4f} Hz); program {EXAMPLE.name}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        video = _board_speed(board, args.seconds, tmp)
        written = len(list(Path(tmp).glob("frame-*.png")))
    plain = _board_speed(board, args.seconds, None)
    print(f"virtual board with video (every clock simulated, frames captured as PNG): "
          f"{video['frames_per_s']:.1f} frames/s, {video['fabric_hz'] / 1e6:.2f} M fabric "
          f"cycles/s = {video['fabric_hz'] / board.clock_hz:.3f}x real time "
          f"({written} frames written)")
    print(f"the same board without a display (unpaced; its warp skips idle core time), "
          f"same program: {plain['fabric_hz'] / 1e6:.2f} M fabric cycles/s = "
          f"{plain['fabric_hz'] / board.clock_hz:.2f}x real time; clocks evaluated: "
          f"{video['clocks_per_s'] / 1e6:.2f} M/s with video, {plain['clocks_per_s'] / 1e6:.2f} "
          f"M/s without (ratio {video['clocks_per_s'] / plain['clocks_per_s']:.2f}: the "
          "compositor and the capture's cost per clock)")
    from copperline.host.render import render_exact
    times = []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(3):
            t0 = time.perf_counter()
            render_exact(str(EXAMPLE), 30, tmp, board=board.name)
            times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    print(f"copper render --exact {EXAMPLE.name}, 30 frames (soft VM + model + PNG): median "
          f"{med:.2f} s of 3 = {30 / med:.0f} frames/s; the board's own rate is "
          f"{display.vsync_hz:.1f} frames/s, so rendering runs at {30 / med / display.vsync_hz:.1f}x "
          f"real time and the capture at {video['frames_per_s'] / display.vsync_hz:.2f}x")
    return 0
