"""Event-heavy equivalence: every event of the fpga path, compared with the VM at 0 us.

Programs that make a reg and an irq record every ``W`` microseconds (``tests.support.
stepper``) run on the virtual board (the iCEBreaker top, Verilator, paced to real time,
3 Mbaud by default) through the fpga backend, and their traces are compared with the VM's
at ``--tolerance-us 0``: every event present, or accounted for by the board's exact
dropped count. Rows from 1k records/s to 100k (a 3 Mbaud line carries 37.5k 8-byte
records/s), on a clean line and through 1e-3 and 1e-2 byte faults both ways. Prints per
row the events compared, the records delivered per second of board time as a share of
what the line carries (``line %``), the records the FIFO dropped, the link's
retransmissions and whether the comparison passed, then the longest run in which every
event arrived and the best event-stream share.

``python -m tests.bench events [--seconds S] [--baud N]`` (``make bench BENCH=events``);
each row runs about ``S`` seconds of board time (default 2).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from copperline.firmware.board_interface import DEFAULT_BAUD

CORE_HZ = 3_000_000
VSYNC_HZ = 60.0

# (records/s the program makes, byte-fault rate)
ROWS = [(1_000, 0.0), (4_000, 0.0), (10_000, 0.0), (20_000, 0.0), (30_000, 0.0),
        (60_000, 0.0), (100_000, 0.0), (2_000, 1e-3), (4_000, 1e-3), (500, 1e-2)]


def _run_row(url: str, rate: int, faults: float, seconds: float, tmp: Path) -> dict:
    from copperline.firmware.compiler import compile_program
    from copperline.host.fpga import FpgaBackend
    from copperline.host.run import run_realtime, run_virtual
    from copperline.firmware.trace import TraceWriter
    from copperline.firmware.trace import load_trace
    from copperline.host.trace_compare import compare
    from copperline.sim.engine import MachineParams
    from copperline.sim.vm import Machine
    from tests.support import FaultyProxy, stepper

    wait_us = 2_000_000 // rate            # two records per step
    steps = max(1, int(seconds * 1e6 / wait_us) // 100 * 100 or 1)
    image = compile_program(stepper(wait_us, steps))
    proxy = None
    if faults:
        host, port = url.removeprefix("socket://").rsplit(":", 1)
        proxy = FaultyProxy((host, int(port)), faults, seed=rate)
    be = FpgaBackend(port=proxy.url if proxy else url, retries=20, command_timeout=30.0)
    stats: dict = {}
    close = be.close

    def close_with_stats():
        stats.update(be.link_stats())
        close()
    be.close = close_with_stats
    try:
        hw, status = run_realtime(be, image, until_cycle=None, max_cycle=600 * CORE_HZ)
    finally:
        if proxy:
            proxy.close()
    vm, _ = run_virtual(Machine(MachineParams(clock_hz=CORE_HZ, vsync_hz=VSYNC_HZ)), image,
                        until_cycle=None, max_cycle=600 * CORE_HZ)
    paths = []
    for name, backend, events in (("hw", "fpga", hw), ("vm", "soft", vm)):
        path = str(tmp / f"{name}-{rate}-{faults}.jsonl")
        with TraceWriter(path, backend=backend, clock_hz=CORE_HZ, vsync_hz=VSYNC_HZ,
                         program=image.sha256()) as w:
            w.write_all(events)
        paths.append(path)
    c = compare(load_trace(paths[0]), load_trace(paths[1]), tolerance_us=0)
    dropped = sum(e["count"] for e in hw if e["event"] == "dropped")
    delivered = sum(1 for e in hw if e["event"] != "dropped")
    return {"rate": rate, "faults": faults, "seconds": steps * wait_us / 1e6,
            "delivered_per_s": delivered / (steps * wait_us / 1e6),
            "events": len(vm), "compared": c.overall.matched, "dropped": dropped,
            "accounted": c.accounted[0], "retransmits": stats.get("retransmits", 0),
            "frame_words": stats.get("frame_words"), "state": status["state"], "ok": c.ok,
            "failures": c.failures}


def main(argv: list[str]) -> int:
    from copperline.boards.registry import get_board
    from copperline.boards.virtual import VirtualBoardServer

    ap = argparse.ArgumentParser(prog="python -m tests.bench events")
    ap.add_argument("--seconds", type=float, default=2.0, help="board time per row")
    ap.add_argument("--baud", type=int, default=DEFAULT_BAUD, help="line rate")
    args = ap.parse_args(argv)
    line = args.baud / 10 / 8                   # 8-byte records/s the line carries at most
    core = get_board("icebreaker").core_config()
    server = VirtualBoardServer("127.0.0.1", 0, clock_hz=12_000_000, baud=args.baud,
                                core=core, engine="verilator").start()
    rows = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            print(f"{args.baud} baud: the line carries {line:.0f} records/s", flush=True)
            print(f"{'records/s':>9} {'faults':>6} {'board s':>7} {'events':>7} "
                  f"{'compared':>8} {'line %':>6} {'dropped':>7} {'retx':>5} {'frame':>5}  "
                  "result", flush=True)
            for rate, faults in ROWS:
                r = _run_row(server.url, rate, faults, args.seconds, Path(tmp))
                r["line_pct"] = 100 * r["delivered_per_s"] / line
                rows.append(r)
                print(f"{r['rate']:>9} {r['faults']:>6g} {r['seconds']:>7.2f} {r['events']:>7} "
                      f"{r['compared']:>8} {r['line_pct']:>6.1f} {r['dropped']:>7} "
                      f"{r['retransmits']:>5} "
                      f"{r['frame_words'] or '-':>5}  "
                      + ("PASS" if r["ok"] else "FAIL: " + "; ".join(r["failures"])),
                      flush=True)
    finally:
        server.close()
    clean = [r for r in rows if r["ok"] and not r["dropped"]]
    if clean:
        best = max(clean, key=lambda r: r["events"])
        print(f"longest clean run: {best['events']} events at {best['rate']} records/s "
              f"({best['seconds']:.1f} s of board time, byte faults {best['faults']:g}): "
              "every event present, 0 us off")
    full = [r for r in rows if r["ok"] and r["dropped"] and not r["faults"]]
    if full:
        best = max(full, key=lambda r: r["line_pct"])
        print(f"event stream: {best['delivered_per_s']:.0f} records/s delivered = "
              f"{best['line_pct']:.1f} % of the line ({args.baud} baud) with "
              f"{best['rate']} records/s made, the rest dropped by the FIFO and counted")
    total = sum(r["compared"] for r in rows)
    print(f"events compared: {total}; rows passing: {sum(r['ok'] for r in rows)} of {len(rows)}")
    return 0 if all(r["ok"] for r in rows) else 1
