"""``copper run``: traces, determinism, fences, summary, errors."""

from __future__ import annotations

import json
import os

import pytest

from copperline.firmware import isa
from copperline.firmware.image import Image
from copperline.host.cli import main
from copperline.firmware.trace import read_trace

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPRITE = os.path.join(ROOT, "examples", "sprite.json")


def write_program(tmp_path, program, name="p.json"):
    path = tmp_path / name
    path.write_text(json.dumps({"version": 1, "program": program}))
    return str(path)


def test_trace_is_deterministic_and_header_complete(tmp_path, capsys):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    assert main(["run", SPRITE, "--frames", "10", "--trace", str(a)]) == 0
    assert main(["run", SPRITE, "--frames", "10", "--trace", str(b)]) == 0
    assert a.read_bytes() == b.read_bytes()
    header, events = read_trace(str(a))
    from copperline.firmware.compiler import compile_file
    assert header == {"trace": 1, "backend": "soft", "clock_hz": 12_000_000, "vsync_hz": 60.0,
                      "program": compile_file(SPRITE).sha256(), "clock": "virtual",
                      "watchdog_ops": isa.DEFAULT_WATCHDOG_OPS, "until_cycle": 11 * 200_000,
                      "frames": 10}
    irqs = [e for e in events if e["event"] == "irq"]
    assert len(irqs) == 10                     # edges 1..10, each followed by its IRQ
    assert irqs[0] == {"event": "irq", "prog": 1, "tag": "tick", "cycle": 200_002,
                       "time_us": 16666.833}
    out = capsys.readouterr().out
    assert "events" in out and "ops issued" in out


def test_cop_image_and_json_summary(tmp_path, capsys):
    image = Image(code=(isa.encode("IRQ", tag=0), isa.encode("WAIT", us=10),
                        isa.encode("HALT")), tags=("t",))
    cop = tmp_path / "p.cop"
    cop.write_bytes(image.to_bytes())
    assert main(["run", str(cop), "--until-us", "100", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["state"] == "done" and summary["reason"] == "halt"
    assert summary["until_cycle"] == 1200 and summary["ops"] == 3
    assert summary["by_event"] == {"irq": 1, "state": 2}


def test_default_span_runs_until_the_program_ends(tmp_path, capsys):
    prog = write_program(tmp_path, [{"op": "WAIT", "us": 20000}, {"op": "IRQ", "tag": "x"}])
    assert main(["run", prog, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["state"] == "done"
    assert summary["until_cycle"] == 2 * 200_000      # the frame boundary after the end


def test_fences_and_clock_options(tmp_path, capsys):
    prog = write_program(tmp_path, [{"op": "FENCE", "timeline": "vk", "value": 2},
                                    {"op": "IRQ", "tag": "go"}])
    trace = tmp_path / "t.jsonl"
    assert main(["run", prog, "--clock-hz", "24000000", "--vsync-hz", "100", "--until-us", "5000",
                 "--fence", "vk=1@100", "--fence", "vk=2@1000.5", "--trace", str(trace)]) == 0
    header, events = read_trace(str(trace))
    assert header["clock_hz"] == 24_000_000 and header["vsync_hz"] == 100.0
    assert header["fences"] == [{"timeline": "vk", "value": 1, "cycle": 2400},
                                {"timeline": "vk", "value": 2, "cycle": 24012}]
    irq = [e for e in events if e["event"] == "irq"]
    assert irq[0]["cycle"] == 24012 + isa.FENCE_RESUME_LATENCY


def test_watchdog_option_faults_a_spinning_program(tmp_path, capsys):
    prog = write_program(tmp_path, [{"label": "top"}, {"op": "JUMP", "label": "top"}])
    assert main(["run", prog, "--watchdog-ops", "100", "--until-us", "1000", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["state"] == "faulted" and summary["reason"] == "watchdog"
    assert summary["ops"] == 100


def test_monotonic_clock_smoke(tmp_path, capsys):
    trace = tmp_path / "rt.jsonl"
    assert main(["run", SPRITE, "--clock", "monotonic", "--frames", "4",
                 "--trace", str(trace)]) == 0
    header, events = read_trace(str(trace))
    assert header["clock"] == "monotonic"
    irqs = [e for e in events if e["event"] == "irq"]
    assert len(irqs) == 4           # --frames 4: vsync edges 1..4, one tick after each
    assert all(e["wall_us"] >= e["time_us"] - 1 for e in irqs)
    assert "lateness" in capsys.readouterr().out


@pytest.mark.parametrize("argv,message", [
    (["--fence", "vk5"], "expected NAME=VALUE@US"),
    (["--clock-hz", "12500000"], "whole number of MHz"),
    (["--frames", "0"], "--frames must be >= 1"),
    (["--watchdog-ops", "0"], "--watchdog-ops must be >= 1"),
])
def test_bad_options(argv, message, capsys):
    assert main(["run", SPRITE, *argv]) == 1
    assert message in capsys.readouterr().err


def test_bad_program_names_the_file(tmp_path, capsys):
    bad = write_program(tmp_path, [{"op": "MOVE", "reg": "layer[1].q", "value": 1}])
    assert main(["run", bad]) == 1
    assert "p.json" in capsys.readouterr().err
    assert main(["run", str(tmp_path / "missing.json")]) == 1
    assert "no such file" in capsys.readouterr().err.lower()


def test_realtime_run_starts_at_cycle_zero_like_a_virtual_run(tmp_path):
    """Rule 1: `copper run` starts its program at global cycle 0 in real time too, so the
    model times (cycles) of a monotonic run equal those of a virtual run."""
    def run(clock):
        out = tmp_path / f"{clock}.jsonl"
        assert main(["run", SPRITE, "--clock", clock, "--clock-hz", "1000000",
                     "--vsync-hz", "200", "--frames", "6", "--trace", str(out)]) == 0
        _, events = read_trace(str(out))
        return [(e["event"], e.get("tag"), e.get("reg"), e.get("value"), e["cycle"])
                for e in events], events

    virtual, _ = run("virtual")
    real, raw = run("monotonic")
    assert real == virtual
    assert all("wall_us" in e for e in raw if e["event"] == "irq")


def test_board_option_models_that_boards_core_clock(tmp_path, capsys):
    from copperline.boards.registry import get_board
    board = get_board("icebreaker")
    hz = board.core_config().core_hz(board.clock_hz)
    out = tmp_path / "t.jsonl"
    assert main(["run", SPRITE, "--board", "icebreaker", "--frames", "1", "--trace", str(out)]) == 0
    header, _ = read_trace(str(out))
    assert header["clock_hz"] == hz
    assert main(["run", SPRITE, "--board", "no-such-board", "--frames", "1"]) == 1
    assert "unknown board 'no-such-board'" in capsys.readouterr().err


@pytest.mark.parametrize("engine", ["cxxrtl", "amaranth"])
def test_sim_backend_engines_and_waves_match_the_vm(engine, tmp_path):
    common = ["--clock-hz", "1000000", "--vsync-hz", "2000", "--until-us", "1500"]
    soft, sim, waves = tmp_path / "soft.jsonl", tmp_path / "sim.jsonl", tmp_path / "w.vcd"
    assert main(["run", SPRITE, *common, "--trace", str(soft)]) == 0
    assert main(["run", SPRITE, "--backend", "sim", "--engine", engine, "--waves", str(waves),
                 *common, "--trace", str(sim)]) == 0
    assert read_trace(str(sim))[1] == read_trace(str(soft))[1]
    assert waves.read_text()[:200].lstrip().startswith(("$date", "$version", "$timescale", "$comment"))


def test_engine_option_is_for_the_sim_backend(capsys):
    assert main(["run", SPRITE, "--engine", "amaranth", "--frames", "1"]) == 1
    assert "--backend sim" in capsys.readouterr().err
