"""The ``copper`` output contract (docs/cli.md): with ``--json`` every subcommand prints
exactly one JSON object, ``{"ok": true, ...}`` on success and
``{"ok": false, "error": {"code", "message"}, ...}`` on failure (usage errors too), with a
non-zero exit; in human mode every written file is confirmed."""

from __future__ import annotations

import json
import signal
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from copperline.firmware.compiler import compile_file
from copperline.host.cli import main

REPO = Path(__file__).resolve().parent.parent
SPRITE = REPO / "examples" / "sprite.json"
TICK = REPO / "examples" / "tick.json"
TRACES = REPO / "tests" / "data" / "traces"


def run_json(capsys, *argv) -> tuple[int, dict]:
    """Run ``copper ARGV`` in-process; stdout must be exactly one JSON object."""
    try:
        rc = main([str(a) for a in argv])
    except SystemExit as exc:        # argparse usage errors exit
        rc = exc.code
    out = capsys.readouterr().out
    obj = json.loads(out)            # one object, nothing before or after it
    assert isinstance(obj, dict)
    return rc, obj


def assert_ok(rc: int, obj: dict) -> None:
    assert rc == 0 and obj["ok"] is True and "error" not in obj, obj


def assert_error(rc: int, obj: dict, code: str) -> None:
    assert rc != 0 and obj["ok"] is False, obj
    err = obj["error"]
    assert set(err) == {"code", "message"}
    assert err["code"] == code and isinstance(err["message"], str) and err["message"]


@pytest.fixture
def fake_iceprog(tmp_path, monkeypatch) -> Path:
    prog = tmp_path / "iceprog"
    prog.write_text("#!/bin/sh\nexit 0\n")
    prog.chmod(prog.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("COPPER_ICEPROG", str(prog))
    return prog


# -- success: one object with ok --------------------------------------------------------

def test_success_shapes(capsys, tmp_path, trace, fake_iceprog):
    cop = tmp_path / "s.cop"
    bit = tmp_path / "copper.bin"
    bit.write_bytes(b"\0" * 8)
    cases = {
        "check": ["check", SPRITE, "--json"],
        "compile": ["compile", SPRITE, "-o", cop, "--json"],
        "disasm": ["disasm", SPRITE, "--json"],
        "run": ["run", SPRITE, "--frames", "2", "--json"],
        "flash": ["flash", "--board", "icebreaker", "--bitstream", bit, "--no-detect", "--json"],
        "board list": ["board", "list", "--json"],
        "trace compare": ["trace", "compare", trace, trace, "--json"],
        "trace export": ["trace", "export", trace, "--format", "vcd", "-o", tmp_path / "t.vcd",
                         "--gtkw", tmp_path / "t.gtkw", "--json"],
        "render": ["render", trace, "--frames", "2", "-o", tmp_path / "r.gif", "--json"],
    }
    got = {name: run_json(capsys, *argv) for name, argv in cases.items()}
    for name, (rc, obj) in got.items():
        assert_ok(rc, obj)
    assert got["check"][1]["ops"] == 10
    assert got["compile"][1]["output"] == str(cop)
    assert got["disasm"][1]["program"]["version"] == 1
    assert got["run"][1]["by_event"]["irq"] == 2
    assert got["flash"][1]["bitstream"] == str(bit)
    assert got["board list"][1]["boards"][0]["board"] == "icebreaker"
    assert got["trace compare"][1]["overall"]["max_us"] == 0.0
    assert [f["path"] for f in got["trace export"][1]["files"]] == [
        str(tmp_path / "t.vcd"), str(tmp_path / "t.gtkw")]
    assert got["render"][1]["files"][0]["bytes"] == (tmp_path / "r.gif").stat().st_size


# -- failure: the same error object -----------------------------------------------------

def test_error_shapes(capsys, tmp_path, trace):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"version": 1, "program": [{"op": "JUMP", "label": "nope"}]}))
    corrupt = tmp_path / "bad.cop"
    data = bytearray(compile_file(SPRITE).to_bytes())
    data[30] ^= 1
    corrupt.write_bytes(bytes(data))
    cases = [
        (["check", bad, "--json"], "BAD_PROGRAM"),
        (["compile", tmp_path / "missing.json", "--json"], "BAD_PROGRAM"),
        (["disasm", corrupt, "--json"], "BAD_FORMAT"),
        (["run", trace, "--json"], "BAD_FORMAT"),
        (["run", SPRITE, "--frames", "0", "--json"], "BAD_ARG"),
        (["build", "--board", "icebraker", "--json"], "BAD_ARG"),
        (["build", "--board", "icebreaker", "--baud", "7000000", "--build-dir", tmp_path,
          "--json"], "BAD_ARG"),
        (["flash", "--board", "icebreaker", "--build-dir", tmp_path, "--json"], "FLASH_FAILED"),
        (["board", "info", "--port", "socket://127.0.0.1:1", "--json"], "NO_BOARD"),
        (["board", "sim", "--listen", "udp:x", "--json"], "BAD_ARG"),
        (["trace", "compare", SPRITE, trace, "--json"], "BAD_INPUT"),
        (["trace", "export", SPRITE, "--format", "vcd", "-o", tmp_path / "x.vcd", "--json"],
         "BAD_INPUT"),
        (["render", trace, "--frames", "2", "-o", tmp_path / "x.png", "--json"], "BAD_INPUT"),
    ]
    for argv, code in cases:
        rc, obj = run_json(capsys, *argv)
        assert_error(rc, obj, code)
    # check keeps every problem, with index and field
    rc, obj = run_json(capsys, "check", bad, "--json")
    assert obj["errors"][0]["field"] == "label"


def test_tolerance_failure_is_an_error_object_with_the_report(capsys, tmp_path):
    a, b = TRACES / "sprite_soft.jsonl", TRACES / "sprite_fpga.jsonl"
    rc, obj = run_json(capsys, "trace", "compare", a, b, "--tolerance-us", "100", "--json")
    assert rc == 1
    assert_error(rc, obj, "TOLERANCE")
    assert "deviate by more than 100 us" in obj["error"]["message"]
    assert obj["overall"]["over_tolerance"] == 4


@pytest.mark.parametrize("argv", [
    ["run", "--json"],                                   # PROG missing
    ["trace", "compare", "only-one.jsonl", "--json"],
    ["board", "sim", "--json", "--no-such-option"],
    ["render", "x.jsonl", "--json", "--frames", "many", "-o", "x.gif"],
    ["--json", "no-such-command"],
])
def test_usage_errors_with_json_are_error_objects(capsys, argv):
    rc, obj = run_json(capsys, *argv)
    assert rc == 2
    assert_error(rc, obj, "USAGE")
    assert obj["usage"].startswith("usage: copper")


def test_usage_errors_without_json_stay_argparse_text(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["run"])
    assert exc.value.code == 2
    out, err = capsys.readouterr()
    assert out == "" and "the following arguments are required: PROG" in err


# -- human mode: every written file confirmed -------------------------------------------

def test_human_mode_confirms_written_files(capsys, tmp_path, trace):
    def out_of(*argv) -> str:
        assert main([str(a) for a in argv]) == 0
        return capsys.readouterr().out

    size = lambda p: Path(p).stat().st_size
    t = tmp_path / "t.jsonl"
    assert f"wrote {t} (trace, " in out_of("run", SPRITE, "--frames", "1", "--trace", t)
    assert f"wrote {t} (trace, {size(t)} bytes)" in out_of("run", SPRITE, "--frames", "1",
                                                            "--trace", t)
    vcd, gtkw = tmp_path / "t.vcd", tmp_path / "t.gtkw"
    out = out_of("trace", "export", trace, "--format", "vcd", "-o", vcd, "--gtkw", gtkw)
    assert f"wrote {vcd} (vcd, " in out and f"wrote {gtkw} (GTKWave save file, {size(gtkw)} bytes)" in out
    png = tmp_path / "cmp.png"
    out = out_of("trace", "compare", trace, trace, "--plot", png)
    assert f"wrote {png} (plot, {size(png)} bytes)" in out
    gif = tmp_path / "r.gif"
    out = out_of("render", trace, "--frames", "2", "-o", gif)
    assert f"wrote {gif} (2 frames, 640x480, {size(gif)} bytes)" in out
    frames = tmp_path / "frames"
    assert f"wrote 2 PNGs to {frames}/" in out_of("render", trace, "--frames", "2", "-o", frames)


def test_run_waves_is_confirmed(capsys, tmp_path):
    waves = tmp_path / "w.vcd"
    assert main(["run", str(SPRITE), "--backend", "sim", "--engine", "amaranth",
                 "--clock-hz", "1000000", "--vsync-hz", "2000", "--until-us", "300",
                 "--waves", str(waves)]) == 0
    assert f"wrote {waves} (waveforms, {waves.stat().st_size} bytes)" in capsys.readouterr().out


def test_flash_says_what_it_did(capsys, tmp_path, fake_iceprog):
    bit = tmp_path / "copper.bin"
    bit.write_bytes(b"\0" * 8)
    assert main(["flash", "--board", "icebreaker", "--bitstream", str(bit), "--no-detect"]) == 0
    captured = capsys.readouterr()
    assert captured.out == f"flashed {bit} into the iCEBreaker's SPI flash\n"
    assert "[flash] programming with" in captured.err          # progress on stderr


# -- the virtual board: one object once listening; a busy port named ------------------

def _copper(*argv, **kw):
    return subprocess.Popen([sys.executable, "-m", "copperline.host.cli", *map(str, argv)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def test_board_sim_json_then_serves_until_ctrl_c():
    proc = _copper("board", "sim", "--engine", "amaranth", "--no-core",
                   "--listen", "tcp:127.0.0.1:0", "--json")
    try:
        obj = json.loads(proc.stdout.readline())
        assert obj["ok"] is True and obj["url"].startswith("socket://127.0.0.1:")
        assert obj["board"] == "icebreaker" and obj["engine"] == "amaranth"
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0 and out == ""


@pytest.mark.parametrize("as_json", [False, True])
def test_board_sim_on_a_busy_port_says_so(as_json):
    holder = socket.create_server(("127.0.0.1", 0))
    port = holder.getsockname()[1]
    try:
        proc = _copper("board", "sim", "--listen", f"tcp:127.0.0.1:{port}",
                       *(["--json"] if as_json else []))
        out, err = proc.communicate(timeout=60)
    finally:
        holder.close()
    assert proc.returncode == 1
    if as_json:
        obj = json.loads(out)
        assert obj["error"]["code"] == "BUSY"
        message = obj["error"]["message"]
    else:
        message = err
    assert f"127.0.0.1:{port} is already in use" in message
    assert "Errno" not in message and "Traceback" not in err
