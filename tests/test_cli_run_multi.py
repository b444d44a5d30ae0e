"""``copper run A B C``: several programs run together, with host actions (--start,
--stop, --fence), give the same trace on soft (virtual and monotonic) and on every RTL
engine, at tolerance 0; errors name the program and the option."""

from __future__ import annotations

import json

import pytest

from copperline.firmware import isa
from copperline.firmware.compiler import compile_program
from copperline.host.cli import main
from copperline.host.run_cli import programs_digest
from copperline.firmware.trace import read_trace
from copperline.firmware.trace import load_trace
from copperline.host.trace_compare import compare
from tests.support import multi_programs

HZ = 1_000_000           # 1 cycle = 1 us: the scenario's times read as cycles
VSYNC_HZ = 2000.0        # a vsync edge every 500 cycles

#: program 1 (counter) counts on a register shared with program 3 (vsynced, started late),
#: then waits for timeline vk >= 2 (set mid-run, while it waits); program 2 (blocked) is
#: stopped by the host at its FENCE; program 4 (short) starts at 0 and ends by itself
PROGRAMS = multi_programs(counter_wait_us=100)
SCENARIO = ["--start", "3@250", "--fence", "vk=1@300", "--fence", "vk=2@650",
            "--stop", "2@700"]


def _write(tmp_path, name, program):
    path = tmp_path / name
    path.write_text(json.dumps({"version": 1, "program": program}))
    return str(path)


@pytest.fixture
def progs(tmp_path):
    return [_write(tmp_path, f"{n}.json", p) for n, p in PROGRAMS.items()]


def _run(tmp_path, capsys, progs, name, *extra):
    trace = tmp_path / f"{name}.jsonl"
    rc = main(["run", *progs, *SCENARIO, "--clock-hz", str(HZ), "--vsync-hz", str(VSYNC_HZ),
               "--trace", str(trace), "--json", *extra])
    out = capsys.readouterr().out
    assert rc == 0, out
    return str(trace), json.loads(out)


def test_several_programs_on_soft_virtual(tmp_path, capsys, progs):
    trace, summary = _run(tmp_path, capsys, progs, "vm")
    header, events = read_trace(trace)
    shas = [compile_program(json.load(open(p))).sha256() for p in progs]
    assert header["programs"] == [{"id": i + 1, "sha256": s, "file": f"{n}.json"} for i, (s, n)
                                  in enumerate(zip(shas, ("counter", "blocked", "vsynced", "short")))]
    assert header["program"] == programs_digest(shas) == summary["program"]
    assert header["actions"] == [
        {"cycle": 0, "kind": "start", "prog": 1}, {"cycle": 0, "kind": "start", "prog": 2},
        {"cycle": 0, "kind": "start", "prog": 4}, {"cycle": 250, "kind": "start", "prog": 3},
        {"cycle": 300, "kind": "fence", "timeline": "vk", "value": 1},
        {"cycle": 650, "kind": "fence", "timeline": "vk", "value": 2},
        {"cycle": 700, "kind": "stop", "prog": 2}]
    assert {e["prog"] for e in events if "prog" in e} == {1, 2, 3, 4}
    # every program's final state, reason and pc; program 2 stopped by the host while
    # blocked on its FENCE (pc 1) reports the op after it, as the VM and the RTL agree
    states = {p["id"]: (p["state"], p["reason"], p["pc"]) for p in summary["programs"]}
    assert states == {1: ("done", "halt", 7), 2: ("stopped", "host", 2),
                      3: ("done", "halt", 4), 4: ("done", "halt", 2)}
    assert (summary["state"], summary["pc"]) == ("done", 7)          # program 1, as before
    stop = [e for e in events if e["prog"] == 2 and e.get("reason") == "host"]
    assert len(stop) == 1 and stop[0]["cycle"] == 700 and stop[0]["pc"] == 2
    # program 1 reached its FENCE before vk became 2, and resumed after the fence was set
    after = [e for e in events if e.get("tag") == "after"]
    assert after[0]["cycle"] == 650 + isa.FENCE_RESUME_LATENCY
    # program 3 counts from its own start (cycle 250): its first vsync edge is at 500
    v = [e for e in events if e.get("tag") == "v"]
    assert v[0]["cycle"] == 500 - 250 + isa.VSYNC_LATENCY + 1
    # the shared register: program 3's ADDs land on program 1's count
    xs = [e["value"] for e in events if e.get("reg") == "layer[0].x"]
    assert xs[:5] == [5, 8, 11, 14, 17] and xs[-1] == 20


@pytest.mark.parametrize("engine", ["verilator", "cxxrtl"])
def test_sim_equals_soft_at_tolerance_0(tmp_path, capsys, progs, engine):
    vm, _ = _run(tmp_path, capsys, progs, "vm")
    rtl, summary = _run(tmp_path, capsys, progs, engine, "--backend", "sim", "--engine", engine)
    result = compare(load_trace(vm), load_trace(rtl), tolerance_us=0)
    assert not result.failures and not result.warnings, (result.failures, result.warnings)
    assert result.overall.matched == len(read_trace(vm)[1]) > 20
    assert read_trace(rtl)[1] == read_trace(vm)[1]
    assert [p["pc"] for p in summary["programs"]] == [7, 2, 4, 2]


def test_soft_monotonic_equals_virtual_in_model_time(tmp_path, capsys, progs):
    vm, _ = _run(tmp_path, capsys, progs, "vm")
    rt, summary = _run(tmp_path, capsys, progs, "rt", "--clock", "monotonic")
    header, _ = read_trace(rt)
    # host actions taken at exactly their cycles on the timing thread
    assert all(a["landed"] == a["cycle"] for a in header["actions"]), header["actions"]
    result = compare(load_trace(vm), load_trace(rt), tolerance_us=0, time="model")
    assert not result.failures and not result.warnings, (result.failures, result.warnings)
    assert result.overall.matched == len(read_trace(vm)[1]) > 20


def test_actions_from_replays_a_trace(tmp_path, capsys, progs):
    vm, _ = _run(tmp_path, capsys, progs, "vm")
    out = tmp_path / "replay.jsonl"
    assert main(["run", *progs, "--clock-hz", str(HZ), "--vsync-hz", str(VSYNC_HZ),
                 "--actions-from", vm, "--trace", str(out)]) == 0
    assert read_trace(str(out))[1] == read_trace(vm)[1]
    # the programs must be the trace's
    capsys.readouterr()
    assert main(["run", *progs[:2], "--clock-hz", str(HZ), "--actions-from", vm]) == 1
    assert "the trace is of other programs" in capsys.readouterr().err


@pytest.mark.parametrize("args,message", [
    (["--start", "5@10"], "--start '5@10': no program 5 (programs are numbered 1..4"),
    (["--stop", "2@x"], "--stop '2@x': expected N@US"),
    (["--start", "3@10", "--start", "3@20"], "program 3 has two --start"),
    (["--start", "2@100", "--stop", "2@100"], "a stop must come at least one cycle after"),
    (["--stop", "1@10", "--stop", "1@20"], "program 1 has two --stop"),
])
def test_action_errors_name_the_option(tmp_path, capsys, progs, args, message):
    assert main(["run", *progs, "--clock-hz", str(HZ), *args]) == 1
    assert message in capsys.readouterr().err


def test_more_programs_than_contexts_names_the_program(tmp_path, capsys, progs):
    five = progs + [_write(tmp_path, "five.json", PROGRAMS["short"])]
    assert main(["run", *five, "--clock-hz", str(HZ)]) == 1
    err = capsys.readouterr().err
    assert "program 5 of 5" in err and str(isa.DEFAULT_CONTEXTS) in err


def test_one_program_trace_is_unchanged(tmp_path, capsys, progs):
    """One program without --start/--stop: the header has no programs/actions (the
    existing format), ``program`` is its sha256."""
    out = tmp_path / "one.jsonl"
    assert main(["run", progs[3], "--clock-hz", str(HZ), "--trace", str(out)]) == 0
    header, _ = read_trace(str(out))
    assert "programs" not in header and "actions" not in header
    assert header["program"] == compile_program({"version": 1, "program": PROGRAMS["short"]}).sha256()


def test_several_programs_via_a_daemon(tmp_path, capsys, progs):
    """--via: the daemon's ids become 1, 2, ... in the trace; each program's final state."""
    from tests.support import soft_copperd
    with soft_copperd(str(tmp_path / "copperd.sock"), "--clock-hz", str(HZ)) as sock:
        trace = tmp_path / "via.jsonl"
        assert main(["run", progs[3], progs[1], "--via", sock, "--clock-hz", str(HZ),
                     "--stop", "2@200000", "--trace", str(trace), "--json"]) == 0
        summary = json.loads(capsys.readouterr().out)
    header, events = read_trace(str(trace))
    assert [p["id"] for p in header["programs"]] == [1, 2]
    assert {e["prog"] for e in events if "prog" in e} == {1, 2}
    states = [(p["state"], p["reason"]) for p in summary["programs"]]
    assert states == [("done", "halt"), ("stopped", "host")]
    stop = [a for a in header["actions"] if a["kind"] == "stop"][0]
    assert stop["landed"] is not None and stop["landed"] >= 200000


def test_compare_warns_when_host_actions_landed_elsewhere(tmp_path, capsys, progs):
    vm, _ = _run(tmp_path, capsys, progs, "vm")
    late = tmp_path / "late.jsonl"
    assert main(["run", *progs, *SCENARIO[2:], "--start", "3@260", "--clock-hz", str(HZ),
                 "--vsync-hz", str(VSYNC_HZ), "--trace", str(late)]) == 0
    result = compare(load_trace(vm), load_trace(str(late)), tolerance_us=0)
    assert any("took effect at different cycles (start 3: A 250, B 260)" in w
               for w in result.warnings), result.warnings
    assert result.failures                 # program 3's events moved by 10 us
    fewer = tmp_path / "fewer.jsonl"
    assert main(["run", *progs[:2], "--clock-hz", str(HZ), "--trace", str(fewer)]) == 0
    result = compare(load_trace(vm), load_trace(str(fewer)))
    assert any("A ran 4 program(s), B 2" in w for w in result.warnings), result.warnings
