"""Board discovery: the right FTDI interface, clear errors without a board, and the
hardware-in-the-loop test that runs only with a board attached."""

import pytest

from copperline.boards import discover
from copperline.boards.common import BoardError
from copperline.boards.registry import get_board


class _Port:
    def __init__(self, device, vid, pid, location, serial="FT123"):
        self.device, self.vid, self.pid, self.location = device, vid, pid, location
        self.serial_number = serial


def _ports(monkeypatch, ports):
    monkeypatch.setattr("serial.tools.list_ports.comports", lambda: ports)


def test_icebreaker_uart_is_interface_b(monkeypatch):
    _ports(monkeypatch, [_Port("/dev/ttyUSB0", 0x0403, 0x6010, "1-1.2:1.0"),
                         _Port("/dev/ttyUSB1", 0x0403, 0x6010, "1-1.2:1.1"),
                         _Port("/dev/ttyACM0", 0x1209, 0x0001, "1-3:1.0")])
    monkeypatch.setattr(discover, "set_low_latency", lambda dev: True)
    found = discover.find_ports(get_board("icebreaker"))
    assert [f.device for f in found] == ["/dev/ttyUSB1"]
    assert discover.resolve_port(get_board("icebreaker"), None) == "/dev/ttyUSB1"


def test_ulx3s_has_one_uart(monkeypatch):
    _ports(monkeypatch, [_Port("/dev/ttyUSB3", 0x0403, 0x6015, "1-4:1.0")])
    assert [f.device for f in discover.find_ports(get_board("ulx3s-85f"))] == ["/dev/ttyUSB3"]
    assert discover.find_ports(get_board("icebreaker")) == []


def test_no_board_is_a_clear_error(monkeypatch):
    _ports(monkeypatch, [])
    with pytest.raises(BoardError, match=r"no iCEBreaker found: no serial port with USB id "
                                         r"0403:6010 interface 1.*pass --port"):
        discover.resolve_port(get_board("icebreaker"), None)
    assert discover.board_present() is False


def test_two_boards_need_a_port(monkeypatch):
    _ports(monkeypatch, [_Port("/dev/ttyUSB1", 0x0403, 0x6010, "1-1:1.1"),
                         _Port("/dev/ttyUSB3", 0x0403, 0x6010, "1-2:1.1")])
    with pytest.raises(BoardError, match="2 iCEBreaker boards found"):
        discover.resolve_port(get_board("icebreaker"), None)


def test_explicit_port_wins():
    assert discover.resolve_port(get_board("icebreaker"), "socket://127.0.0.1:9") == \
        "socket://127.0.0.1:9"


def test_latency_timer_unavailable_is_not_fatal():
    assert discover.set_low_latency("/dev/does-not-exist") is False


def test_board_info_without_board_exits_nonzero(monkeypatch, capsys):
    from copperline.host.cli import main
    _ports(monkeypatch, [])
    assert main(["board", "info", "--board", "icebreaker"]) == 1
    assert "no iCEBreaker found" in capsys.readouterr().err


@pytest.mark.hil
@pytest.mark.skipif(not discover.board_present(), reason="no copperline board attached")
def test_hil_attached_board_says_hello():
    from copperline.boards.registry import all_boards
    from copperline.host.link import Link
    board = next(b for b in all_boards() if discover.find_ports(b))
    with Link(discover.resolve_port(board, None)) as link:
        info = link.hello()
    assert info.clock_hz == board.clock_hz
    from copperline.firmware.board_interface import DEFAULT_BAUD
    assert info.baud == DEFAULT_BAUD
