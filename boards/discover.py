"""Finding attached boards: USB VID:PID via pyserial's port list (and pyusb when there is
no serial port, e.g. while a programmer has detached the kernel driver)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from copperline.boards.common import Board, BoardError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FoundPort:
    device: str          # /dev/ttyUSB1
    board: str
    usb: str             # "0403:6010 interface 1"
    serial_number: str | None
    location: str | None

    def to_json(self) -> dict:
        return dict(self.__dict__)


def _interface_of(location: str | None) -> int | None:
    # Linux locations look like "1-1.2:1.1": configuration 1, interface 1.
    if location and ":" in location:
        try:
            return int(location.rsplit(".", 1)[1])
        except (ValueError, IndexError):
            return None
    return None


def find_ports(board: Board) -> list[FoundPort]:
    """The serial ports that are ``board``'s link UART."""
    from serial.tools import list_ports
    found = []
    for p in list_ports.comports():
        for u in board.usb:
            if p.vid != u.vid or p.pid != u.pid:
                continue
            if u.interface is not None and _interface_of(p.location) != u.interface:
                continue
            found.append(FoundPort(p.device, board.name, str(u), p.serial_number, p.location))
    return sorted(found, key=lambda f: f.device)


def find_devices(board: Board) -> list[str]:
    """USB devices that look like ``board`` ("bus:address" or port names)."""
    names = []
    try:
        import usb.core
        for u in board.usb:
            for dev in usb.core.find(find_all=True, idVendor=u.vid, idProduct=u.pid) or ():
                names.append(f"{dev.bus}:{dev.address}")
    except Exception as exc:   # no libusb backend: fall back to the serial port list
        log.debug("pyusb unavailable (%s); using the serial port list", exc)
    if not names:
        names = [p.device for p in find_ports(board)]
    return names


def board_present(board_name: str | None = None) -> bool:
    """True when a supported board (or the named one) is attached: for hil test skips."""
    from copperline.boards.registry import all_boards, get_board
    boards = [get_board(board_name)] if board_name else all_boards()
    return any(find_ports(b) for b in boards)


def set_low_latency(device: str) -> bool:
    """Set the FTDI latency timer to 1 ms (default 16 ms) through sysfs, where allowed."""
    name = os.path.basename(os.path.realpath(device))
    path = f"/sys/bus/usb-serial/devices/{name}/latency_timer"
    try:
        with open(path) as f:
            if f.read().strip() == "1":
                return True
        with open(path, "w") as f:
            f.write("1")
        return True
    except OSError as exc:
        log.info("cannot set the latency timer of %s to 1 ms (%s); responses may take "
                 "up to 16 ms longer", device, exc)
        return False


def resolve_port(board: Board, port: str | None) -> str:
    """``port`` if given, else the one attached ``board``'s UART; BoardError if none/many."""
    if port:
        if port.startswith("/dev/"):
            set_low_latency(port)
        return port
    found = find_ports(board)
    if not found:
        raise BoardError(
            f"no {board.title} found: no serial port with USB id "
            f"{' or '.join(str(u) for u in board.usb)}. Plug the board in, or pass --port "
            "(e.g. /dev/ttyUSB1 or socket://127.0.0.1:PORT for `copper board sim`)")
    if len(found) > 1:
        raise BoardError(f"{len(found)} {board.title} boards found "
                         f"({', '.join(f.device for f in found)}): pass --port")
    set_low_latency(found[0].device)
    return found[0].device
