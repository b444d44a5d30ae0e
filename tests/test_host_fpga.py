"""The fpga backend's parts that need no compiled board: the clear errors when there is
no usable board, the drop counts. (The record decoder and converter:
tests/test_firmware_core_events.py; end to end against the virtual board:
tests/test_e2e_virtual_board.py.)"""

from __future__ import annotations

import socket

import pytest

from copperline.firmware.compiler import compile_program
from copperline.host.backend import BackendError
from copperline.host.fpga import FpgaBackend

def test_no_board_attached_is_a_clear_error(monkeypatch):
    import copperline.boards.discover as discover
    monkeypatch.setattr(discover, "find_ports", lambda board: [])
    be = FpgaBackend()
    with pytest.raises(BackendError) as err:
        be.open()
    assert err.value.code == "NO_BOARD"
    assert "no copperline board found" in err.value.message and "--port" in err.value.message


def test_nothing_listening_is_a_clear_error():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    be = FpgaBackend(port=f"socket://127.0.0.1:{port}")
    with pytest.raises(BackendError) as err:
        be.open()
    assert err.value.code == "NO_BOARD" and str(port) in err.value.message


def test_loopback_port_without_a_board_times_out_clearly():
    be = FpgaBackend(port="loop://", timeout=0.05, retries=1)
    with pytest.raises(BackendError) as err:
        be.open()
    assert err.value.code == "NO_BOARD" and "no answer" in err.value.message


def test_bitstream_without_the_core_is_refused():
    from copperline.boards.virtual import VirtualBoardServer
    server = VirtualBoardServer("127.0.0.1", 0, clock_hz=12_000_000, baud=1_000_000).start()
    try:
        be = FpgaBackend(port=server.url, timeout=2.0)
        with pytest.raises(BackendError) as err:
            be.open()
        assert err.value.code == "NO_BOARD" and "no Copper core" in err.value.message
    finally:
        server.close()


def test_fallback_soft_without_a_board_runs_on_the_vm():
    got = []
    from copperline.host.fallback import FallbackBackend
    be = FallbackBackend(FpgaBackend(port="loop://", timeout=0.05, retries=0, reconnect_s=60))
    be.set_event_sink(got.append)
    be.open()
    try:
        assert not be.board.online
        pid = be.load(compile_program({"version": 1, "program": [
            {"op": "IRQ", "tag": "x"}, {"op": "HALT"}]}))
        be.start(pid)
        import time
        for _ in range(200):
            if any(e.get("state") == "done" for e in got):
                break
            time.sleep(0.01)
        assert [e.get("tag") for e in got if e["event"] == "irq"] == ["x"]
        assert all(e["prog"] == pid for e in got)
    finally:
        be.close()


def _board_present() -> bool:
    from copperline.boards.discover import board_present
    return board_present()


@pytest.mark.hil
@pytest.mark.skipif(not _board_present(), reason="no copperline board attached")
def test_hil_fpga_backend_trace_equals_the_vm():
    """On a flashed board: a discovered board runs a program to its HALT with the VM's
    events and cycles."""
    from copperline.host.run import run_realtime, run_virtual
    from copperline.sim.engine import MachineParams
    from copperline.sim.vm import Machine
    image = compile_program({"version": 1, "program": [
        {"label": "l"}, {"op": "WAIT", "us": 250}, {"op": "IRQ", "tag": "t"},
        {"op": "LOOP", "count": 20, "label": "l"}, {"op": "HALT"}]})
    be = FpgaBackend()
    events, status = run_realtime(be, image, until_cycle=None, max_cycle=10**9)
    vm = Machine(MachineParams(clock_hz=be.clock_hz, vsync_hz=be.vsync_hz))
    want, _ = run_virtual(vm, image, until_cycle=None, max_cycle=10 * be.clock_hz)
    assert status["state"] == "done" and events == want


def test_dropped_counts_over_sixteen_bits_between_two_reads():
    # a flood refuses a record every core cycle (3 M/s at 3 MHz): between two reads of
    # the board's 32-bit counter far more than 65535 are dropped, and all are reported
    from copperline.host.fpga_events import EventPump
    from copperline.host.link import BoardInfo
    info = BoardInfo({"clock_hz": 3_000_000, "layers": 16, "contexts": 4, "event_bytes": 8})
    pump = EventPump(info, dropped=0xFFFF_FFF0)
    out = pump.board_dropped((0xFFFF_FFF0 + 200_000) & 0xFFFF_FFFF)
    assert out == [{"event": "dropped", "count": 200_000, "reason": "fifo"}]
    assert pump.board_dropped((0xFFFF_FFF0 + 200_000) & 0xFFFF_FFFF) == []


def test_the_event_fifo_counts_drops_in_32_bits():
    from copperline.hdl.event_fifo import EventFIFO, event_layout
    fifo = EventFIFO(event_layout(2), depth=4)
    fifo._MustUse__silence = True           # (only its port is looked at)
    assert len(fifo.dropped) == 32
