"""Simulate what we flash (copperline.boards.bitstream_sim): the iCEBreaker's built
bitstream turned back into a netlist, and the ULX3S's post-synthesis netlist, behind the
virtual board's socket; the fpga backend and `copper run` talk to them like to a board:
load / start / events / fence / stop, and a trace equal to the VM's at --tolerance-us 0.
This also checks that the synthesis flow's choices (e.g. the memories' collision
handling) keep the design the RTL is.

The ULX3S is the 12F: its top elaborates to the same RTLIL, synthesis script and pins as
the 85F's (checked below), and yosys's synth_ecp5 does not depend on the device, so its
netlist is the 85F's; its place and route is faster.

Each board is built with `copper build` into its own directory of the build cache
(``<cache>/bitstream-sim-test/``), rebuilt only when the sources elaborate to another
design (iCEBreaker ~1-2 min, ULX3S-12F ~2 min); the simulators are compiled once per
design (~80 s each), cached.
"""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from copperline.firmware.compiler import compile_program
from tests.support import (COPPER, ENDING_PROGRAM, TICKER, copper_run_on_board_equals_vm,
                           write_ending_surface,
                           opened_backend, poll)

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


BUILT_FILE = {"icebreaker": "copper.asc", "ulx3s-12f": "copper.json"}


@pytest.fixture(scope="module", params=sorted(BUILT_FILE))
def flashed(request):
    """A started server running the flashed design of the board (param)."""
    from copperline.boards import bitstream_sim
    board, root = built(request.param, BUILT_FILE[request.param])
    t0 = time.monotonic()
    server = bitstream_sim.serve(board, "127.0.0.1", 0, build_dir=root).start()
    server.setup_s = time.monotonic() - t0
    server.board = board
    yield server
    server.close()


def test_the_ulx3s_12f_synthesises_the_85f_design():
    from copperline.boards.common import board_top
    from copperline.boards.registry import get_board
    from copperline.firmware.board_interface import DEFAULT_BAUD
    files = []
    for name in ("ulx3s-12f", "ulx3s-85f"):
        board = get_board(name)
        plan = board.platform().prepare(board_top(board, baud=DEFAULT_BAUD), name="copper")
        files.append({k: plan.files[k] for k in ("copper.il", "copper.ys", "copper.lpf")})
    assert files[0] == files[1]


def _opened(url: str):
    # the simulated netlist runs 30-100x slower than the board: a 2 s wait per attempt
    # (copper run keeps the link's own, and retransmits more)
    return opened_backend(url, timeout=2.0, command_timeout=60.0)


def test_the_netlist_has_the_memories_the_tools_leave_out(flashed):
    design = flashed.design
    assert design.source.endswith(BUILT_FILE[flashed.board.name])
    if flashed.board.family == "ice40":
        # icebox_vlog writes no SB_SPRAM256KA; the iCEBreaker keeps its programs in two
        # and its display's surfaces in the other two
        assert design.verilog.count("SB_SPRAM256KA spram_") == 4
        assert "4 SPRAM added from icebox.spram_db" in design.notes
    else:
        # yosys's DP16KD model is a declaration without behaviour
        assert any(n.endswith("DP16KD modelled by boards/dp16kd_sim.vh") for n in design.notes)


def test_load_start_events_fence_stop_on_the_flashed_design(flashed):
    from copperline.hdl.core import phases_for
    board = flashed
    contexts = board.board.core["contexts"]
    with _opened(board.url) as (be, got):
        # the hello comes from the flashed design: its clock and sizes
        assert be.contexts == contexts and be.program_words == 1024
        assert be.clock_hz * phases_for(contexts) == board.design.fabric_hz
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


def test_copper_run_on_the_flashed_design_equals_the_vm_trace(flashed, tmp_path):
    prog = tmp_path / "prog.json"
    prog.write_text(json.dumps(ENDING_PROGRAM))
    write_ending_surface(tmp_path)
    with _opened(flashed.url) as (be, _):
        clock = ["--clock-hz", str(be.clock_hz), "--vsync-hz", f"{be.vsync_hz:g}"]
    took, events = copper_run_on_board_equals_vm(prog, flashed.url, clock, tmp_path,
                                                 timeout=300)
    assert len(events) == 16
    print(f"{flashed.board.name} {flashed.design.source}: setup {flashed.setup_s:.1f} s, copper run {took:.1f} s, "
          f"{flashed.link.request_stats().speed_hz / 1e6:.2f} M fabric cycles/s")


# ------------------------------------------------------------ the netlist rewrites ----

PLL_VLOG = """module chip (input clk12_0__io, output uart_0__tx__io);
wire n1;
SB_PLL40_PAD #(
  .FEEDBACK_PATH("SIMPLE"),
  .DELAY_ADJUSTMENT_MODE_FEEDBACK("FIXED"),
  .DELAY_ADJUSTMENT_MODE_RELATIVE("FIXED"),
  .PLLOUT_SELECT("GENCLK"),
  .SHIFTREG_DIV_MODE(2'b00),
  .FDA_FEEDBACK(4'b0000),
  .FDA_RELATIVE(4'b0000),
  .DIVR(4'b0000),
  .DIVF(7'b0111111),
  .DIVQ(3'b100),
  .FILTER_RANGE(3'b001),
  .ENABLE_ICEGATE(1'b0),
  .TEST_MODE(1'b0)
) PLL_12_31 (
  .PACKAGEPIN(clk12_0__io),
  .EXTFEEDBACK(1'b0),
  .DYNAMICDELAY({1'b0, 1'b0, 1'b0, 1'b0, 1'b0, 1'b0, 1'b0, 1'b0}),
  .LOCK(n7),
  .BYPASS(1'b0),
  .RESETB(n9),
  .LATCHINPUTVALUE(1'b0),
  .SDO(n8),
  .SDI(1'b0),
  .SCLK(1'b0)
);
endmodule
"""


def test_a_pll_becomes_an_ideal_clock_at_its_frequency():
    from copperline.boards.bitstream_sim import ideal_plls, non_ansi_header
    vlog, hz, notes = ideal_plls(non_ansi_header(PLL_VLOG), 12_000_000)
    assert hz == 48_000_000                         # 12 MHz x 64 / 16
    assert "SB_PLL40_PAD #(" not in vlog and "assign n7 = 1'b1;" in vlog
    assert vlog.startswith("module chip (sim_pll_clk, clk12_0__io , uart_0__tx__io );\n"
                           "input sim_pll_clk;\ninput clk12_0__io ;\noutput uart_0__tx__io ;\n")
    with pytest.raises(NotImplementedError, match="FEEDBACK_PATH"):
        ideal_plls(PLL_VLOG.replace('"SIMPLE"', '"DELAY"'), 12_000_000)


def test_block_rams_beyond_the_model_are_refused():
    from copperline.boards.bitstream_sim import check_dp16kd
    ram = """  DP16KD #(
    .DATA_WIDTH_A(32'd9),
    .DATA_WIDTH_B(32'd18),
    .REGMODE_A("NOREG")
  ) \\ram  (
    .RSTA(1'h0)
  );"""
    with pytest.raises(NotImplementedError, match=r"ram: DATA_WIDTH 9/18"):
        check_dp16kd(ram)
    assert check_dp16kd(ram.replace("32'd18", "32'd9")) == 1
    assert check_dp16kd(ram.replace("32'd18", "32'd9").replace('"NOREG"', '"OUTREG"')) == 1
    with pytest.raises(NotImplementedError, match="REGMODE_A"):
        check_dp16kd(ram.replace("32'd18", "32'd9").replace('"NOREG"', '"RESETREG"'))


def test_ecp5_pads_become_wires():
    from copperline.boards.bitstream_sim import ecp5_io_as_wires
    vlog = """  TRELLIS_IO #(
    .DIR("INPUT")
  ) \\clk_buf  (
    .B(clk25_0__io),
    .O(\\clk )
  );
  TRELLIS_IO #(
    .DIR("OUTPUT")
  ) \\tx_buf  (
    .B(uart_0__tx__io),
    .I(\\tx ),
    .T(1'h0)
  );"""
    out = ecp5_io_as_wires(vlog)
    assert "assign \\clk  = clk25_0__io;" in out and "assign uart_0__tx__io = \\tx ;" in out
    # an output whose enable is a register (a DDR output's): taken as driven
    assert "assign uart_0__tx__io = \\tx ;" in ecp5_io_as_wires(
        vlog.replace(".T(1'h0)", ".T(\\oe )"))
    with pytest.raises(NotImplementedError):
        ecp5_io_as_wires(vlog.replace('"OUTPUT"', '"BIDIR"'))


def test_the_cli_names_the_flag_for_the_family_and_a_missing_build(tmp_path):
    r = subprocess.run([COPPER, "board", "sim", "--board", "icebreaker", "--from-netlist",
                        "--listen", "tcp:127.0.0.1:0", "--json"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "use --from-bitstream" in r.stdout + r.stderr
    r = subprocess.run([COPPER, "board", "sim", "--board", "ulx3s-12f", "--from-netlist",
                        "--listen", "tcp:127.0.0.1:0", "--build-dir", str(tmp_path)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1
    assert "run `copper build --board ulx3s-12f` first" in r.stderr


ECP5_PLL_VLOG = r"""module top(a);
  EHXPLLL #(
    .CLKFB_DIV(32'd12),
    .CLKI_DIV(32'd5),
    .CLKOP_DIV(32'd10),
    .FEEDBK_PATH("CLKOP")
  ) \top.pll  (
    .CLKFB(\top.clk ),
    .CLKI(\top.osc ),
    .CLKOP(\top.clk ),
    .CLKOS(),
    .LOCK(\top.lock )
  );
endmodule
"""


def test_an_ecp5_pll_becomes_an_ideal_clock_at_its_frequency():
    from copperline.boards.bitstream_sim import ideal_ecp5_pll
    vlog, out_hz, notes = ideal_ecp5_pll(ECP5_PLL_VLOG)
    assert "EHXPLLL" not in vlog.replace("// \\top.pll: EHXPLLL", "")
    assert "assign \\top.clk = \\top.osc ;" in vlog and "assign \\top.lock = 1'b1;" in vlog
    assert out_hz(25_000_000) == 60_000_000
    with pytest.raises(NotImplementedError, match="FEEDBK_PATH"):
        ideal_ecp5_pll(ECP5_PLL_VLOG.replace('"CLKOP"', '"INT_OP"'))
    # a second output (the GPDI's serialiser clock) is held still: one clock is simulated
    vlog, _, notes = ideal_ecp5_pll(ECP5_PLL_VLOG.replace(".CLKOS()", ".CLKOS(\\top.x )"))
    assert "assign \\top.x = 1'b0;" in vlog and any("CLKOS held still" in n for n in notes)
    assert ideal_ecp5_pll("module top(a);\nendmodule\n")[1] is None
