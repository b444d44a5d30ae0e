"""Simulate what we flash (copperline.boards.bitstream_sim): the iCEBreaker's built
bitstream, turned back into a netlist, behind the virtual board's socket; the fpga backend
and `copper run` talk to it like to a board: load / start / events / fence / stop, and a
trace equal to the VM's at --tolerance-us 0. This also checks that the synthesis flow's
choices (e.g. the memories' collision handling) keep the design the RTL is.

The board is built with `copper build` into its own directory of the build cache
(``<cache>/bitstream-sim-test/``), rebuilt only when the sources elaborate to another
design (~1-2 min); the simulator is compiled once per bitstream (~80 s), cached.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import time

import pytest

from copperline.firmware.compiler import compile_program
from copperline.host.fpga import FpgaBackend
from tests.support import COPPER, ENDING_PROGRAM, TICKER, poll

pytestmark = pytest.mark.slow

FENCED = {"version": 1, "program": [
    {"op": "IRQ", "tag": "before"},
    {"op": "FENCE", "timeline": "vk", "value": 1},
    {"op": "IRQ", "tag": "after"},
    {"op": "HALT"}]}


def built(board_name: str, family_file: str):
    """The build directory root holding a current ``copper build`` of ``board_name``:
    reused when its ``copper.il`` is what the sources elaborate to now, else rebuilt."""
    from copperline.boards.common import board_top
    from copperline.boards.registry import get_board
    from copperline.cache import cache_dir
    from copperline.firmware.board_interface import DEFAULT_BAUD
    board = get_board(board_name)
    root = cache_dir() / "bitstream-sim-test"
    out = root / board.name
    plan = board.platform().prepare(board_top(board, baud=DEFAULT_BAUD), name="copper")
    il = plan.files["copper.il"]
    il = il if isinstance(il, str) else il.decode()
    try:
        same = (out / "copper.il").read_text() == il and (out / family_file).is_file() \
            and (out / "report.json").is_file()
    except OSError:
        same = False
    if not same:
        r = subprocess.run([COPPER, "build", "--board", board.name, "--build-dir", str(root)],
                           capture_output=True, text=True, timeout=1800)
        assert r.returncode in (0, 3), r.stdout + r.stderr     # 3: built, timing not met
    return board, root


@pytest.fixture(scope="module")
def icebreaker():
    from copperline.boards import bitstream_sim
    board, root = built("icebreaker", "copper.asc")
    t0 = time.monotonic()
    server = bitstream_sim.serve(board, "127.0.0.1", 0, build_dir=root).start()
    server.setup_s = time.monotonic() - t0
    yield server
    server.close()


@contextlib.contextmanager
def _opened(url: str):
    got: list[dict] = []
    be = FpgaBackend(port=url, command_timeout=30.0)
    be.set_event_sink(got.append)
    be.open()
    try:
        yield be, got
    finally:
        be.close()


def test_the_netlist_has_the_program_memory_icebox_vlog_leaves_out(icebreaker):
    # icebox_vlog writes no SB_SPRAM256KA; the iCEBreaker keeps its programs in two
    design = icebreaker.design
    assert design.verilog.count("SB_SPRAM256KA spram_") == 2
    assert "2 SPRAM added from icebox.spram_db" in design.notes
    assert design.source.endswith("copper.asc")


def test_load_start_events_fence_stop_on_the_bitstream(icebreaker):
    board = icebreaker
    with _opened(board.url) as (be, got):
        # the hello comes from the bitstream: its clock and sizes
        assert be.contexts == 4 and be.program_words == 1024
        assert be.clock_hz * 4 == board.design.fabric_hz
        pid = be.load(compile_program(FENCED))
        be.start(pid)
        assert poll(lambda: any(e.get("tag") == "before" for e in got), timeout=60)
        assert be.status(pid).state.value == "running"      # blocked on the FENCE
        assert not any(e.get("tag") == "after" for e in got)
        be.fence("vk", 1)
        assert poll(lambda: any(e.get("state") == "done" for e in got), timeout=60)
        assert [e["tag"] for e in got if e["event"] == "irq"] == ["before", "after"]

        tick = be.load(compile_program(TICKER))
        be.start(tick)
        assert poll(lambda: sum(e.get("tag") == "tick" for e in got) >= 2, timeout=60)
        be.stop(tick)
        stopped = [e for e in got if e.get("state") == "stopped" and e["prog"] == tick]
        assert stopped and stopped[0]["reason"] == "host"
        regs = be.regs()
        assert isinstance(regs, dict) and regs


def test_copper_run_on_the_bitstream_equals_the_vm_trace(icebreaker, tmp_path):
    prog = tmp_path / "prog.json"
    prog.write_text(json.dumps(ENDING_PROGRAM))
    hw, vm = tmp_path / "hw.jsonl", tmp_path / "vm.jsonl"
    with _opened(icebreaker.url) as (be, _):
        clock = ["--clock-hz", str(be.clock_hz), "--vsync-hz", f"{be.vsync_hz:g}"]
    t0 = time.monotonic()
    r = subprocess.run([COPPER, "run", str(prog), "--backend", "fpga", "--port", icebreaker.url,
                        "--trace", str(hw)] + clock, capture_output=True, text=True, timeout=300)
    took = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    r = subprocess.run([COPPER, "run", str(prog), "--backend", "soft", "--clock", "virtual",
                        "--trace", str(vm)] + clock, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([COPPER, "trace", "compare", str(hw), str(vm), "--tolerance-us", "0"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "PASS" in r.stdout
    hw_events = [json.loads(line) for line in hw.read_text().splitlines()[1:]]
    vm_events = [json.loads(line) for line in vm.read_text().splitlines()[1:]]
    assert hw_events == vm_events and len(hw_events) == 16
    print(f"bitstream sim: setup {icebreaker.setup_s:.1f} s, copper run {took:.1f} s, "
          f"{icebreaker.link.request_stats().speed_hz / 1e6:.2f} M fabric cycles/s")
