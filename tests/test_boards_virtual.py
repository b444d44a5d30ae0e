"""One owner per board: a second host is refused with a busy error that names the holder
(virtual board: its TCP client; a tty: locked), the holder is not disturbed, and the
virtual board logs the refusal. Also: `copper board sim` on a port in use."""

from __future__ import annotations

import logging
import time

import pytest

from copperline.boards.virtual import VirtualBoardServer
from copperline.host.cli import main
from copperline.host.link import Link, LinkBusy


@pytest.fixture
def server():
    # the link-only top in amaranth.sim: starts at once; the owner rule is the server's
    s = VirtualBoardServer("127.0.0.1", 0, clock_hz=12_000_000, baud=1_000_000).start()
    yield s
    s.close()


def _local_port(link: Link) -> int:
    return link._port._socket.getsockname()[1]


def test_second_host_is_refused_naming_the_holder_and_the_holder_carries_on(server, caplog):
    caplog.set_level(logging.WARNING, logger="copperline.boards.virtual")
    with Link(server.url, timeout=2.0) as holder:
        assert holder.hello().magic
        holder_at = f"127.0.0.1:{_local_port(holder)}"
        t0 = time.monotonic()
        with Link(server.url, timeout=2.0) as second:
            with pytest.raises(LinkBusy) as err:
                second.hello()
        assert time.monotonic() - t0 < 2.0            # told at once, not after the retries
        assert f"held by {holder_at} since " in str(err.value)
        assert server.url in str(err.value) and "one host at a time" in str(err.value)
        # the holder did not notice: same link, no retransmission, answers as before
        assert holder.echo(b"still mine") == b"still mine"
        assert not holder.closed and holder.stats.retransmits == 0
        refused = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
        assert len(refused) == 1 and f"held by {holder_at}" in refused[0]
    # once the holder has gone, the next host gets the board
    with Link(server.url, timeout=2.0) as next_host:
        assert next_host.hello().magic


def test_copper_board_info_on_a_held_board_exits_non_zero(server, capsys):
    with Link(server.url, timeout=2.0) as holder:
        holder.hello()
        rc = main(["board", "info", "--port", server.url])
    assert rc != 0
    assert "busy" in capsys.readouterr().err


def test_a_serial_port_held_by_one_host_is_busy_for_another():
    """Physical boards: the host locks its tty, so a second host gets the busy error."""
    import os
    master, slave = os.openpty()
    path = os.ttyname(slave)
    try:
        with Link(path, timeout=0.05, retries=0):
            with pytest.raises(LinkBusy, match="busy, another program has its port open"):
                Link(path)
    finally:
        os.close(master)
        os.close(slave)


def test_copper_run_on_a_held_board_fails_naming_the_holder(server, capsys, examples_dir):
    with Link(server.url, timeout=2.0) as holder:
        holder.hello()
        held = f"held by 127.0.0.1:{_local_port(holder)}"
        rc = main(["run", str(examples_dir / "tick.json"), "--backend", "fpga",
                   "--port", server.url, "--frames", "2"])
        assert holder.echo(b"mine") == b"mine"
    err = capsys.readouterr().err
    assert rc != 0 and "busy" in err and held in err, err


def test_a_port_in_use_is_a_clear_error(server, capsys):
    host, port = server.address
    rc = main(["board", "sim", "--board", "icebreaker", "--engine", "amaranth", "--no-core",
               "--listen", f"tcp:{host}:{port}"])
    err = capsys.readouterr().err
    assert rc != 0 and f"{host}:{port} is already in use" in err and "Errno" not in err, err


def test_the_fpga_backend_holding_a_board_keeps_running_while_another_is_refused():
    """The issue's case: a copperd-like fpga backend runs a program on the (Verilator)
    board; a second backend on the same port is refused and the program never notices."""
    from copperline.firmware.compiler import compile_program
    from copperline.host.backend import BackendError
    from copperline.host.fpga import FpgaBackend
    from tests.support import TICKER, poll, virtual_board_server

    server = virtual_board_server()
    got: list[dict] = []
    holder = FpgaBackend(port=server.url)
    holder.set_event_sink(got.append)
    holder.open()
    try:
        pid = holder.load(compile_program(TICKER))
        holder.start(pid)

        def ticks():
            return sum(e.get("tag") == "tick" for e in got)
        assert poll(lambda: ticks() >= 3)
        with pytest.raises(BackendError) as err:
            FpgaBackend(port=server.url, timeout=0.5, retries=1).open()
        assert err.value.code == "BUSY"
        assert err.value.message.startswith(f"{server.url}: the board is busy, held by 127.0.0.1:")
        n = ticks()
        assert poll(lambda: ticks() >= n + 5)
        assert holder.status(pid).state.value == "running"
        assert not [e for e in got if e.get("event") == "state" and e["state"] != "running"]
    finally:
        holder.close()
        server.close()
