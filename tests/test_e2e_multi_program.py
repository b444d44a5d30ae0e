"""One multi-program scenario on the virtual board (Verilator), the VM and the RTL:
``copper run A B C D --backend fpga`` with programs started together and late, a fence
set mid-run and a host stop at a FENCE; the VM and the RTL, given the cycles the
board's host actions landed in (``--actions-from``), give the same trace at tolerance 0.

The board fixture is the one of tests/test_e2e_virtual_board.py (iCEBreaker top, 3 MHz
core, 1 kHz vsync, cached Verilator build).
"""

from __future__ import annotations

import json
import subprocess

import pytest

from copperline.firmware.trace import read_trace
from copperline.firmware.trace import load_trace
from copperline.host.trace_compare import compare
from tests.support import (COPPER, VIRTUAL_CORE_HZ as CORE_HZ, VIRTUAL_VSYNC_HZ as VSYNC_HZ,
                           multi_programs, virtual_board_server)

#: the counter waits long enough that the fence (due at 30 ms) lands before it reaches its
#: FENCE (after 80 ms) although the board takes a host action a few ms after it is due
PROGRAMS = multi_programs(counter_wait_us=20000)
#: programs 1-3 start at 0 (consecutive slots: one CTL frame), program 4 at 20 ms
SCENARIO = ["--start", "4@20000", "--fence", "vk=1@25000", "--fence", "vk=2@30000",
            "--stop", "2@50000"]
COMMON = ["--clock-hz", str(CORE_HZ), "--vsync-hz", str(VSYNC_HZ)]


@pytest.fixture(scope="module")
def board():
    server = virtual_board_server()
    yield server
    server.close()


def _copper(*args):
    r = subprocess.run([COPPER, *args], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    return r


def test_board_trace_equals_vm_and_rtl_given_the_landed_actions(board, tmp_path):
    progs = []
    for name in ("counter", "blocked", "short", "vsynced"):
        prog = PROGRAMS[name]
        path = tmp_path / f"{name}.json"
        path.write_text(json.dumps({"version": 1, "program": prog}))
        progs.append(str(path))
    hw = str(tmp_path / "hw.jsonl")
    _copper("run", *progs, *SCENARIO, "--backend", "fpga", "--port", board.url,
            "--trace", hw, *COMMON)
    header, events = read_trace(hw)
    landed = {(a["kind"], a.get("prog", a.get("timeline"))): a["landed"]
              for a in header["actions"]}
    # programs 1-3 start at 0 together: one CTL write of their slot mask, one core cycle
    assert landed[("start", 1)] == landed[("start", 2)] == landed[("start", 3)] == 0
    # the late start and the stop landed at or after they were due, exactly known
    assert landed[("start", 4)] >= 20000 * 3 and landed[("stop", 2)] >= 50000 * 3
    stop = [e for e in events if e["prog"] == 2 and e["event"] == "state"
            and e["reason"] == "host"]
    assert stop and stop[0]["pc"] == 2            # stopped at its FENCE: the op after it
    assert [e["tag"] for e in events if e.get("prog") == 1 and e["event"] == "irq"] == \
        ["a"] * 4 + ["after"]
    assert sum(1 for e in events if e.get("tag") == "v") == 3

    # the starts at 0 landed at 0: a soft run of the same command line (no replay)
    # differs from the board's at most where the late start and the stop landed
    vm0 = str(tmp_path / "vm0.jsonl")
    _copper("run", *progs, *SCENARIO, "--backend", "soft", "--trace", vm0, *COMMON)
    def before_late_start(evs):       # (within a cycle the two order start events apart)
        return sorted((json.dumps(e, sort_keys=True) for e in evs     # programs 1-3
                       if e.get("prog") in (1, 2, 3) and e.get("cycle", 0) < 20000 * 3))
    assert before_late_start(read_trace(vm0)[1]) == before_late_start(events)

    for name, extra in (("vm", ["--backend", "soft"]),
                        ("rtl", ["--backend", "sim", "--engine", "verilator"])):
        out = str(tmp_path / f"{name}.jsonl")
        _copper("run", *progs, "--actions-from", hw, "--trace", out, *extra, *COMMON)
        result = compare(load_trace(hw), load_trace(out), tolerance_us=0)
        assert not result.failures and not result.warnings, (name, result.failures,
                                                              result.warnings)
        assert result.overall.matched == len(events) > 25
        # the same events; within a cycle in which several programs start, the VM lists
        # the starts first, the board each program's start with its first op
        key = lambda e: json.dumps(e, sort_keys=True)     # noqa: E731
        assert sorted(map(key, read_trace(out)[1])) == sorted(map(key, events))
