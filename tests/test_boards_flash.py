"""Flashing: clear errors without a bitstream, a programmer program or a board; the
programmer command line when everything is there (with a stand-in programmer)."""

import os
import stat
import subprocess
import sys

import pytest

from copperline.boards.common import BoardError, find_programmer, flash
from copperline.boards.registry import get_board


def _copper(*args, env=None):
    return subprocess.run([sys.executable, "-m", "copperline.host.cli", *args],
                          capture_output=True, text=True, env=env, timeout=60)


def _no_programmer_env(tmp_path):
    env = dict(os.environ, PATH=str(tmp_path), COPPER_ICEPROG="", ICEPROG="",
               COPPER_OPENFPGALOADER="", OPENFPGALOADER="")
    return env


def test_flash_without_bitstream_says_build_first(tmp_path):
    proc = _copper("flash", "--board", "icebreaker", "--build-dir", str(tmp_path))
    assert proc.returncode == 1
    assert "run `copper build --board icebreaker` first" in proc.stderr


def test_flash_without_programmer_is_a_clear_error(tmp_path):
    bit = tmp_path / "copper.bin"
    bit.write_bytes(b"\x00" * 16)
    proc = _copper("flash", "--board", "icebreaker", "--bitstream", str(bit),
                   env=_no_programmer_env(tmp_path))
    assert proc.returncode == 1
    assert "no programmer program found for iCEBreaker" in proc.stderr
    assert "iceprog" in proc.stderr and "openFPGALoader" in proc.stderr


def _fake_programmer(tmp_path, name):
    path = tmp_path / name
    log = tmp_path / "calls.txt"
    path.write_text(f"#!/bin/sh\necho \"$@\" >> {log}\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return path, log


def test_flash_without_board_is_a_clear_error(tmp_path, monkeypatch):
    prog, log = _fake_programmer(tmp_path, "iceprog")
    monkeypatch.setenv("COPPER_ICEPROG", str(prog))
    bit = tmp_path / "copper.bin"
    bit.write_bytes(b"\x00")
    monkeypatch.setattr("copperline.boards.discover.find_devices", lambda board: [])
    with pytest.raises(BoardError, match=r"no iCEBreaker found: no USB device 0403:6010"):
        flash(get_board("icebreaker"), bitstream=bit)
    assert not log.exists()        # the programmer was never started


@pytest.mark.parametrize("board,sram,expected", [
    ("icebreaker", False, "{bit}"),
    ("icebreaker", True, "-S {bit}"),
])
def test_flash_runs_iceprog(tmp_path, monkeypatch, board, sram, expected):
    prog, log = _fake_programmer(tmp_path, "iceprog")
    monkeypatch.setenv("COPPER_ICEPROG", str(prog))
    bit = tmp_path / "copper.bin"
    bit.write_bytes(b"\x00")
    monkeypatch.setattr("copperline.boards.discover.find_devices", lambda b: ["1:5"])
    flash(get_board(board), bitstream=bit, sram=sram)
    assert log.read_text().strip() == expected.format(bit=bit)


def test_flash_ulx3s_uses_openfpgaloader(tmp_path, monkeypatch):
    prog, log = _fake_programmer(tmp_path, "openFPGALoader")
    monkeypatch.setenv("COPPER_OPENFPGALOADER", str(prog))
    bit = tmp_path / "copper.bit"
    bit.write_bytes(b"\x00")
    flash(get_board("ulx3s-25f"), bitstream=bit, check_board=False)
    assert log.read_text().strip() == f"-b ulx3s -f {bit}"


def test_programmer_preference_falls_back(tmp_path, monkeypatch):
    prog, _ = _fake_programmer(tmp_path, "openFPGALoader")
    monkeypatch.setenv("PATH", str(tmp_path))
    for var in ("COPPER_ICEPROG", "ICEPROG", "COPPER_OPENFPGALOADER", "OPENFPGALOADER"):
        monkeypatch.delenv(var, raising=False)
    assert find_programmer(get_board("icebreaker")) == ("openfpgaloader", str(prog))
