"""End to end against the fast virtual board (Verilator): the iCEBreaker top with the core and
its UART, served on TCP; the fpga backend and `copper run` talk to it like to a board.

The traces of `copper run --backend fpga` must equal the VM's (`--backend soft --clock
virtual` at the board's core clock) event for event and cycle for cycle, also when a
seeded proxy corrupts and drops bytes on the line at a 1e-3 rate.

The simulator is compiled once (cached in the build cache, verilator-board/); the board is built with a
1 kHz vsync so that programs that wait for vsync finish quickly.
"""

from __future__ import annotations

import json
import time

import pytest

from copperline.firmware.compiler import compile_program
from copperline.host.backend import BackendError
from copperline.host.fpga import FpgaBackend
from copperline.host.run import run_realtime, run_virtual
from copperline.sim.engine import MachineParams
from copperline.sim.vm import Machine
from tests.support import (ENDING_PROGRAM, TICKER, VIRTUAL_CORE_HZ as CORE_HZ, opened_backend,
                           VIRTUAL_VSYNC_HZ as VSYNC_HZ, FaultyProxy, copper_run_on_board_equals_vm,
                           poll,
                           stepper as _stepper, virtual_board_server)

WORDS = 1024                    # program words per context (SPRAM)
FENCED = {"version": 1, "program": [
    {"op": "IRQ", "tag": "before"},
    {"op": "FENCE", "timeline": "vk", "value": 1},
    {"op": "IRQ", "tag": "after"},
    {"op": "HALT"}]}

@pytest.fixture(scope="module")
def board():
    server = virtual_board_server()
    yield server
    server.close()


def _run(url: str, image, **options):
    """(events, status) of ``image`` run to its end through an FpgaBackend on ``url``."""
    be = FpgaBackend(port=url, **options)
    return run_realtime(be, image, until_cycle=None, max_cycle=10 * CORE_HZ)


def _run_through_a_faulty_line(board, image, rate: float, seed: int, **options):
    """:func:`_run` through a FaultyProxy (``rate``, ``seed``) in front of ``board``:
    (events, status, the proxy)."""
    host, port = board.url.removeprefix("socket://").rsplit(":", 1)
    proxy = FaultyProxy((host, int(port)), rate, seed=seed)
    try:
        events, status = _run(proxy.url, image, **options)
    finally:
        proxy.close()
    return events, status, proxy


def _vm_trace(image):
    vm = Machine(MachineParams(clock_hz=CORE_HZ, vsync_hz=VSYNC_HZ))
    events, _ = run_virtual(vm, image, until_cycle=None, max_cycle=10 * CORE_HZ)
    return events


# ------------------------------------------------------------------- the backend ----------

def test_identify_load_start_events_status_regs(board):
    with opened_backend(board.url) as (be, got):
        assert (be.clock_hz, be.vsync_hz, be.contexts, be.program_words) == \
            (CORE_HZ, VSYNC_HZ, 4, WORDS)
        pid = be.load(compile_program(ENDING_PROGRAM))
        assert be.status(pid).state.value == "loaded"
        be.start(pid)
        assert poll(lambda: any(e.get("state") == "done" for e in got))
        st = be.status(pid)
        assert (st.state.value, st.reason, st.pc) == ("done", "halt", 9)
        assert st.bindings == {2: "s.rgba@2x1"}
        regs = be.regs()
        assert regs["layer[1].x"] == 5 + 5 * 3 and regs["layer[2].alpha"] == 200
        irqs = [e for e in got if e["event"] == "irq"]
        assert [e["tag"] for e in irqs] == ["t"] * 5 + ["v"]
        assert all(e["prog"] == pid for e in got)


def test_fence_by_timeline_name_reaches_the_program(board):
    with opened_backend(board.url) as (be, got):
        pid = be.load(compile_program(FENCED))
        be.start(pid)
        assert poll(lambda: any(e.get("tag") == "before" for e in got))
        time.sleep(0.1)
        assert not any(e.get("tag") == "after" for e in got)
        assert be.status(pid).state.value == "running"      # blocked on the FENCE
        be.fence("vk", 1)
        assert poll(lambda: any(e.get("state") == "done" for e in got))
        with pytest.raises(BackendError) as err:
            be.fence("vk", 0)
        assert err.value.code == "BAD_ARG"


def test_stop_emits_stopped_and_unload_frees_the_slot(board):
    with opened_backend(board.url) as (be, got):
        ids = [be.load(compile_program(TICKER)) for _ in range(4)]
        with pytest.raises(BackendError) as err:
            be.load(compile_program(TICKER))
        assert err.value.code == "BUSY"
        be.start(ids[0])
        assert poll(lambda: any(e.get("tag") == "tick" for e in got))
        be.stop(ids[0])
        stopped = [e for e in got if e.get("state") == "stopped"]
        assert stopped and stopped[0]["reason"] == "host" and stopped[0]["prog"] == ids[0]
        be.unload(ids[0])
        assert be.load(compile_program(TICKER)) == 5
        with pytest.raises(BackendError) as err:
            be.status(ids[0])
        assert err.value.code == "NOT_FOUND"


def test_stop_of_a_program_that_overflows_the_fifo_is_prompt(board):
    # a register change every 4 us: far more records than the line carries, so the FIFO
    # overflows and the stop's own record is dropped; the stop is then reported from the
    # board's status as soon as the FIFO has drained, not after the command timeout
    flood = {"version": 1, "program": [{"label": "l"}, {"op": "WAIT", "us": 4},
                                       {"op": "ADD", "reg": "layer[1].x", "delta": 1},
                                       {"op": "JUMP", "label": "l"}]}
    with opened_backend(board.url, command_timeout=30.0) as (be, got):
        pid = be.load(compile_program(flood))
        be.start(pid)
        assert poll(lambda: any(e.get("event") == "dropped" for e in got))
        t0 = time.monotonic()
        be.stop(pid)
        took = time.monotonic() - t0
        stopped = [e for e in got if e.get("state") == "stopped" and e.get("prog") == pid]
        assert stopped and stopped[0]["reason"] == "host"
        assert be.status(pid).state == "stopped"
        assert took < 10.0, f"stop took {took:.1f} s"


def test_program_too_big_for_the_board_is_bad_arg(board):
    big = {"version": 1, "program": [{"op": "NOP"}] * WORDS + [{"op": "HALT"}]}
    with opened_backend(board.url) as (be, _):
        with pytest.raises(BackendError) as err:
            be.load(compile_program(big, program_words=2 * WORDS))
        assert err.value.code == "BAD_ARG"
        assert f"{WORDS + 1} words" in err.value.message and str(WORDS) in err.value.message


# ------------------------------------------------------------------- traces ---------------

def test_copper_run_fpga_trace_equals_the_vm_trace(board, tmp_path):
    prog = tmp_path / "prog.json"
    prog.write_text(json.dumps(ENDING_PROGRAM))
    common = ["--clock-hz", str(CORE_HZ), "--vsync-hz", str(VSYNC_HZ)]
    _, events = copper_run_on_board_equals_vm(prog, board.url, common, tmp_path)
    assert len(events) == 16


@pytest.mark.parametrize("baud", [3_000_000, 12_000_000], ids=["3M", "12M"])
def test_at_the_boards_own_clock_the_trace_equals_the_vm_trace(tmp_path, baud):
    """The iCEBreaker's own fabric clock (48 MHz: a 12 MHz core) with its default line
    and its fastest (12 Mbaud: 4 clocks a bit): load, start, events, status, the trace
    at 0 us. (The other tests run a 12 MHz top, which the simulator runs faster.)"""
    from copperline.boards.registry import get_board
    clock_hz = get_board("icebreaker").clock_hz
    server = virtual_board_server(clock_hz=clock_hz, baud=baud)
    try:
        prog = tmp_path / "prog.json"
        prog.write_text(json.dumps(ENDING_PROGRAM))
        clock = ["--clock-hz", str(clock_hz // 4), "--vsync-hz", str(VSYNC_HZ)]
        _, events = copper_run_on_board_equals_vm(prog, server.url, clock, tmp_path)
        assert len(events) == 16
    finally:
        server.close()


def test_trace_is_identical_through_a_noisy_line(board):
    """1e-3 of the bytes corrupted or dropped, both ways: requests and event reads are
    retransmitted, nothing is lost or doubled, the trace still equals the VM's."""
    image = compile_program({"version": 1, "program": [
        {"label": "l"},
        {"op": "WAIT", "us": 300},
        {"op": "ADD", "reg": "layer[3].y", "delta": 7},
        {"op": "IRQ", "tag": "n"},
        {"op": "LOOP", "count": 60, "label": "l"},
        {"op": "HALT"}]})
    events, status, proxy = _run_through_a_faulty_line(board, image, 1e-3, 6, timeout=0.1,
                                                       retries=20)
    assert status["state"] == "done"
    assert events == _vm_trace(image)
    assert len(events) == 2 + 2 * 60
    assert proxy.faults["up"] + proxy.faults["down"] >= 2, (proxy.faults, proxy.bytes)


# ------------------------------------------------------------------- event-heavy ----------
# Programs that make records up to the line's capacity (a 3 Mbaud line carries 37.5k
# records/s; the host pulls ~32k/s with pipelined reads through the paced virtual board)
# and beyond it (the board's FIFO then drops and counts): the trace equals the VM's at
# 0 us, every event present or accounted for by an exact dropped count.

def _compare_with_vm(tmp_path, image, hw_events):
    from copperline.firmware.trace import TraceWriter
    from copperline.firmware.trace import load_trace
    from copperline.host.trace_compare import compare
    paths = []
    for name, backend, events in (("hw", "fpga", hw_events), ("vm", "soft", _vm_trace(image))):
        path = str(tmp_path / f"{name}.jsonl")
        with TraceWriter(path, backend=backend, clock_hz=CORE_HZ, vsync_hz=VSYNC_HZ,
                         program=image.sha256()) as w:
            w.write_all(events)
        paths.append(path)
    return compare(load_trace(paths[0]), load_trace(paths[1]), tolerance_us=0)


@pytest.mark.parametrize("wait_us, steps", [(1000, 1000), (500, 2000)],
                         ids=["2k-per-s", "4k-per-s"])
def test_every_event_arrives_well_within_the_line_capacity(board, tmp_path, wait_us, steps):
    image = compile_program(_stepper(wait_us, steps))
    events, status = _run(board.url, image, command_timeout=30.0)
    assert status["state"] == "done"
    assert not [e for e in events if e["event"] == "dropped"]
    c = _compare_with_vm(tmp_path, image, events)
    assert c.ok, c.failures
    assert c.overall.matched == len(events) == 2 * steps + 3


@pytest.mark.parametrize("wait_us, steps", [(250, 2000), (200, 2500), (67, 4000)],
                         ids=["8k-per-s", "10k-per-s", "30k-per-s"])
def test_near_the_line_capacity_every_event_arrives_or_is_counted(board, tmp_path, wait_us,
                                                                  steps):
    # ~32k records/s is what the host pulls at best (pipelined reads at 3 Mbaud): on a
    # busy machine its turnaround may let the FIFO overflow now and then; what is dropped
    # is counted exactly
    image = compile_program(_stepper(wait_us, steps))
    events, status = _run(board.url, image, command_timeout=30.0)
    assert status["state"] == "done"
    dropped = sum(e["count"] for e in events if e["event"] == "dropped")
    c = _compare_with_vm(tmp_path, image, events)
    assert c.ok, c.failures
    assert c.accounted == (dropped, 0)
    assert c.overall.matched + dropped == 2 * steps + 3


def test_beyond_the_line_capacity_drops_are_counted_exactly(board, tmp_path):
    # 100k records/s for 60 ms: the FIFO overflows; the trace lacks exactly the dropped
    # records, and every state record (start, done) still arrives
    image = compile_program(_stepper(20, 3000))
    events, status = _run(board.url, image, command_timeout=30.0)
    assert status["state"] == "done"
    dropped = sum(e["count"] for e in events if e["event"] == "dropped")
    assert 1000 < dropped < 6000
    c = _compare_with_vm(tmp_path, image, events)
    assert c.ok, c.failures
    assert c.accounted == (dropped, 0) and c.exact_drops[0]
    assert c.overall.matched + dropped == 2 * 3000 + 3
    states = [e["state"] for e in events if e["event"] == "state"]
    assert states == ["running", "done"]


@pytest.mark.parametrize("rate, wait_us, steps", [(1e-3, 1000, 600), (1e-2, 4000, 100)],
                         ids=["1e-3", "1e-2"])
def test_every_event_arrives_through_a_noisy_line(board, tmp_path, rate, wait_us, steps):
    # 2k records/s through 1e-3 byte faults, 500/s through 1e-2 (where a 510-byte frame
    # almost never gets through: the link's frames shrink, its timeouts follow the
    # measured round trip), both ways
    image = compile_program(_stepper(wait_us, steps))
    events, status, proxy = _run_through_a_faulty_line(board, image, rate, 13, retries=20,
                                                       command_timeout=30.0)
    assert status["state"] == "done"
    c = _compare_with_vm(tmp_path, image, events)
    assert c.ok, c.failures
    assert c.overall.matched == len(events) == 2 * steps + 3
    assert proxy.faults["up"] + proxy.faults["down"] >= 5, (proxy.faults, proxy.bytes)


def test_registers_start_from_reset_on_every_run(board):
    # the VM starts every run from registers at 0; so does the board, whatever the last
    # run left in them
    image = compile_program({"version": 1, "program": [
        {"op": "ADD", "reg": "layer[3].y", "delta": 7},
        {"op": "ADD", "reg": "layer[15].alpha", "delta": 9},
        {"op": "HALT"}]})
    for _ in range(2):
        be = FpgaBackend(port=board.url)
        events, status = run_realtime(be, image, until_cycle=None, max_cycle=CORE_HZ)
        assert status["state"] == "done"
        assert events == _vm_trace(image)
        assert [e["value"] for e in events if e["event"] == "reg"] == [7, 9]


def test_state_records_survive_a_flooded_fifo(board):
    # three programs flood the FIFO far beyond the line (dropped records counted); the
    # fourth is started and stopped again and again: every start and stop arrives as its
    # own record, exact (none is inferred from the board's status)
    flood = {"version": 1, "program": [{"label": "l"}, {"op": "WAIT", "us": 2},
                                       {"op": "ADD", "reg": "layer[1].x", "delta": 1},
                                       {"op": "JUMP", "label": "l"}]}
    with opened_backend(board.url, command_timeout=30.0) as (be, got):
        floods = [be.load(compile_program(flood)) for _ in range(3)]
        ticker = be.load(compile_program(TICKER))
        for pid in floods:
            be.start(pid)
        assert poll(lambda: any(e.get("event") == "dropped" for e in got))
        for _ in range(5):
            be.start(ticker)
            be.stop(ticker)
        for pid in floods:
            be.stop(pid)
        states = {pid: [(e["state"], e["reason"]) for e in got
                        if e.get("event") == "state" and e["prog"] == pid]
                  for pid in floods + [ticker]}
        assert states[ticker] == [("running", "start"), ("stopped", "host")] * 5
        for pid in floods:
            assert states[pid] == [("running", "start"), ("stopped", "host")]
        assert not [e for e in got if e.get("inexact")]
        assert sum(e["count"] for e in got if e.get("event") == "dropped") > 1000


# ------------------------------------------------------------------- board loss -----------

def _ticking(be, got) -> int:
    """Load and start TICKER on ``be``; its id, once its first tick has arrived."""
    pid = be.load(compile_program(TICKER))
    be.start(pid)
    assert poll(lambda: any(e.get("tag") == "tick" for e in got))
    return pid


def test_board_loss_ends_programs_then_reconnects(caplog):
    caplog.set_level("WARNING", logger="copperline.host.fpga")
    server = virtual_board_server()
    port = server.address[1]
    try:
        with opened_backend(server.url, reconnect_s=0.2, poll_s=0.2) as (be, got):
            pid = _ticking(be, got)
            server.close()                               # unplugged
            assert poll(lambda: any(e.get("reason") == "link-lost" for e in got), 10)
            lost = [e for e in got if e.get("reason") == "link-lost"][0]
            assert (lost["prog"], lost["state"]) == (pid, "faulted")
            assert be.status(pid).state.value == "faulted"
            with pytest.raises(BackendError) as err:
                be.load(compile_program(TICKER))
            assert err.value.code == "NO_BOARD" and "gone" in err.value.message
            server = virtual_board_server(port)          # plugged back in
            assert poll(lambda: be.online, 15)
            # the operator who saw the loss (a warning) sees the board come back
            assert poll(lambda: any(
                r.levelname == "WARNING" and f"board back on {server.url}; programs {pid} "
                "uploaded again, ready to start" in r.getMessage() for r in caplog.records))
            got.clear()
            be.start(pid)                                # uploaded again on reconnect
            assert poll(lambda: any(e.get("tag") == "tick" for e in got))
    finally:
        server.close()


def test_fallback_soft_keeps_the_program_running():
    from copperline.host.fallback import FallbackBackend
    server = virtual_board_server()
    got = []
    be = FallbackBackend(FpgaBackend(port=server.url, reconnect_s=5, poll_s=0.2))
    be.set_event_sink(got.append)
    be.open()
    try:
        pid = _ticking(be, got)
        server.close()
        assert poll(lambda: any(e.get("reason") == "fallback-soft" for e in got), 10)
        n = len(got)
        assert poll(lambda: sum(e.get("tag") == "tick" for e in got[n:]) >= 3, 5)
        assert all(e["prog"] == pid for e in got if "prog" in e)
        assert be.status(pid).state.value == "running"
        be.stop(pid)
        assert got[-1]["state"] == "stopped"
    finally:
        be.close()
        server.close()


def test_a_start_mask_starts_slots_in_one_core_cycle_and_bad_masks_are_refused(board):
    from copperline.firmware import board_interface as proto
    from copperline.host.link import LinkStatusError
    with opened_backend(board.url) as (be, got):
        ids = [be.load(compile_program(TICKER)) for _ in range(3)]
        be.start_many(ids)
        assert len({be.start_cycle(i) for i in ids}) == 1          # the same core cycle
        for word in (0, 1 << 4, (1 << 30) | 1):                     # no slot, no such slot
            with pytest.raises(LinkStatusError):
                be.link.write(proto.SPACE_CTL, proto.CTL_START_MASK_ADDR, [word])
