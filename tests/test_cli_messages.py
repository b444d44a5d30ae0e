"""Messages that say what is wrong (issue 19, item 7): a program given as a trace and a
trace given as a program, a misspelt board, copperd's banner telling the socket's real
mode."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest

from copperline.host.cli import main

REPO = Path(__file__).resolve().parent.parent
SPRITE = REPO / "examples" / "sprite.json"


def test_trace_compare_given_a_program_says_it_is_a_program(capsys, trace, tmp_path):
    assert main(["trace", "compare", str(SPRITE), str(trace)]) == 2
    err = capsys.readouterr().err
    assert f"{SPRITE}: a Copper program, not a trace" in err and "not JSON" not in err
    cop = tmp_path / "s.cop"
    assert main(["compile", str(SPRITE), "-o", str(cop)]) == 0
    capsys.readouterr()
    assert main(["trace", "export", str(cop), "--format", "vcd", "-o", str(tmp_path / "x")]) == 2
    assert f"{cop}: a compiled Copper image (.cop), not a trace" in capsys.readouterr().err


def test_run_given_a_trace_says_it_is_a_trace(capsys, trace):
    assert main(["run", str(trace)]) == 1
    err = capsys.readouterr().err
    assert f"{trace}: a trace (recorded by copper run), not a program" in err
    assert "magic" not in err


@pytest.mark.parametrize("argv", [["build", "--board", "icebraker"],
                                  ["run", str(SPRITE), "--board", "icebraker"],
                                  ["flash", "--board", "ulx3s-85"]])
def test_a_misspelt_board_gets_a_suggestion(capsys, argv):
    assert main(argv) != 0
    err = capsys.readouterr().err
    assert "did you mean 'icebreaker'?" in err or "did you mean 'ulx3s-85f'?" in err


def test_copperd_banner_tells_the_sockets_real_mode(tmp_path):
    from copperline.host.copperd import socket_mode
    path = tmp_path / "activated.sock"
    s = socket.socket(socket.AF_UNIX)
    s.bind(str(path))
    try:
        os.chmod(path, 0o644)           # as systemd may create it: srw-r--r--
        assert socket_mode(str(path)) == "mode 0644 srw-r--r--"
        os.chmod(path, 0o660)
        assert socket_mode(str(path)) == "mode 0660 srw-rw----"
    finally:
        s.close()
    assert socket_mode("@copperline") == "abstract socket"
