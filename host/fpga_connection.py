"""Reaching a board: find its port, open the link, identify the board and reset it.

What the fpga backend does before any program goes on a board, in one place:

* **find**: without a port the board is discovered by its USB id
  (``copperline.boards.discover``); a name narrows it.
* **tune the port**: a USB serial adapter holds what it received until its buffer fills,
  its *latency timer* runs out (16 ms by default on FTDI chips) or the *event character*
  arrives; :func:`tune_port` sets the timer to 1 ms and the event character to the
  frame end (0xC0) where the system allows, and warns once when it cannot.
* **identify**: ``hello`` gives the core clock (the rate event stamps count), sizes and the
  ISA version; a bitstream without the core, or another ISA version, is refused.
* **reset**: a VM's machine reset: every slot stopped, the time base at 0, every register
  0 (the gateware's reset-all keeps the register file, so a short program of
  ``MOVE reg, 0`` clears it) and stale event records dropped; a run on the board starts
  from what a run on the VM starts from.

Every failure is a :class:`~copperline.host.backend.BackendError` with code ``NO_BOARD``
(``BUSY`` when another host holds the board).
"""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass
from typing import Callable

from copperline.firmware import board_interface as proto
from copperline.firmware import isa
from copperline.firmware.board_interface import STATE_NAMES, record_bytes, slot_bits_for
from copperline.host.backend import BackendError
from copperline.host.link import BoardInfo, Link, LinkBusy, LinkError

log = logging.getLogger(__name__)

#: Error code of commands that need the board while it is gone.
NO_BOARD = "NO_BOARD"

#: The FTDI latency timer the host sets (ms; the chips' default is 16).
LATENCY_MS = 1
#: FTDI vendor request SIO_SET_EVENT_CHAR (libftdi's ``ftdi_set_event_char``).
_FTDI_VID, _SIO_SET_EVENT_CHAR = 0x0403, 0x06
_warned: set[str] = set()


def tune_port(url: str, *, sysfs: str = "/sys") -> list[str]:
    """Make a USB serial adapter hand over every frame at once: its latency timer to
    1 ms (Linux sysfs ``/sys/bus/usb-serial/devices/ttyUSBn/latency_timer``) and its event
    character to the frame end 0xC0 (an FTDI vendor request through pyusb, when the
    device is reachable). Returns what could not be done; says it once per port, as one
    log warning. URLs (``socket://`` of the virtual board, ``loop://``) are skipped
    silently: no adapter is involved."""
    if "://" in url:
        return []
    problems: list[str] = []
    name = os.path.basename(os.path.realpath(url))
    node = os.path.join(sysfs, "bus", "usb-serial", "devices", name)
    if not sys.platform.startswith("linux"):
        problems.append(f"the latency timer and event character are only set on Linux "
                        f"(set the adapter's latency timer to {LATENCY_MS} ms by hand)")
    elif not os.path.isdir(node):
        problems.append(f"{url} is not a USB serial adapter port (no {node})")
    else:
        timer = os.path.join(node, "latency_timer")
        try:
            with open(timer) as f:
                now = int(f.read().strip() or 0)
            if now != LATENCY_MS:
                with open(timer, "w") as f:
                    f.write(str(LATENCY_MS))
        except OSError as exc:
            problems.append(f"cannot set the latency timer ({exc.strerror or exc}: as root "
                            f"`echo {LATENCY_MS} > {timer}`, or a udev rule ATTR{{latency_timer}}"
                            f"=\"{LATENCY_MS}\")")
        problems += _set_event_char(node)
    if problems and url not in _warned:
        _warned.add(url)
        log.warning("%s: %s; every answer may then wait for the USB adapter's timer (up to "
                    "16 ms) and the link runs slower than its line", url, "; ".join(problems))
    return problems


def _set_event_char(node: str) -> list[str]:
    """The FTDI event character = 0xC0 for the adapter port at sysfs ``node``."""
    iface = os.path.realpath(os.path.join(node, ".."))      # .../1-2:1.0 (the interface)
    dev = os.path.dirname(iface)                            # .../1-2 (the device)

    def attr(path, name, base=10):
        with open(os.path.join(path, name)) as f:
            return int(f.read().strip(), base)
    try:
        vid, bus, addr = attr(dev, "idVendor", 16), attr(dev, "busnum"), attr(dev, "devnum")
        number = attr(iface, "bInterfaceNumber", 16)
    except (OSError, ValueError):
        return ["cannot find its USB device in sysfs to set the event character"]
    if vid != _FTDI_VID:
        return []                       # not an FTDI chip: no such setting
    try:
        import usb.core
    except ImportError:
        return ["the event character needs pyusb (pip install pyusb)"]
    try:
        device = usb.core.find(bus=bus, address=addr)
        if device is None:
            return [f"USB device {bus}:{addr} not found by pyusb"]
        # wValue: the character, bit 8 enables it; wIndex: the port (interface + 1)
        device.ctrl_transfer(0x40, _SIO_SET_EVENT_CHAR, proto.SLIP_END | 0x100, number + 1)
    except Exception as exc:            # no permission (usb.core.USBError), no backend
        return [f"cannot set the event character through pyusb ({exc}; needs access to "
                f"the USB device, e.g. a udev rule for {vid:04x})"]
    return []


@dataclass
class BoardSession:
    """An open, identified and reset board."""
    link: Link
    info: BoardInfo
    url: str
    #: the board's dropped-record counter when the session began
    dropped: int


def find_board_url(port: str | None, board: str | None) -> str:
    """The port URL of the board: ``port`` checked against ``board``, or the one board
    found by its USB id."""
    from copperline.boards.common import BoardError
    from copperline.boards.discover import find_ports, resolve_port
    from copperline.boards.registry import all_boards, get_board
    try:
        if port or board:
            return resolve_port(get_board(board or "icebreaker"), port)
        found = [p for b in all_boards() for p in find_ports(b)]
    except BoardError as exc:
        raise BackendError(NO_BOARD, str(exc)) from None
    if not found:
        raise BackendError(NO_BOARD, "no copperline board found (looked for the USB UARTs "
                           "of: " + ", ".join(b.name for b in all_boards()) + "). Plug one "
                           "in, or pass --port (e.g. /dev/ttyUSB1, or "
                           "socket://127.0.0.1:7654 for `copper board sim`)")
    if len(found) > 1:
        raise BackendError(NO_BOARD, f"{len(found)} boards found ("
                           + ", ".join(f"{p.board} on {p.device}" for p in found)
                           + "): pass --port or --board")
    return resolve_port(get_board(found[0].board), found[0].device)


def check_info(url: str, info: BoardInfo) -> None:
    """Refuse a bitstream this host cannot drive (no core, another ISA, another record size)."""
    if info.core_version == 0:
        raise BackendError(NO_BOARD, f"{url}: the board answers but its bitstream has no "
                           "Copper core (built with --no-core?): run `copper build` and "
                           "`copper flash` for it")
    if info.core_version != isa.ISA_VERSION:
        raise BackendError(NO_BOARD, f"{url}: the board's core speaks ISA version "
                           f"{info.core_version}, this host {isa.ISA_VERSION}: rebuild "
                           "and flash the bitstream")
    want = record_bytes(slot_bits_for(info.contexts))
    if info.event_bytes != want:
        raise BackendError(NO_BOARD, f"{url}: event records of {info.event_bytes} bytes, "
                           f"expected {want} for {info.contexts} contexts")


def clear_registers(link: Link, info: BoardInfo, timeout: float = 2.0) -> None:
    """Zero every register of the board's core, as a VM's machine reset does.

    The gateware's reset-all stops the slots and resets the time base but keeps the
    register file (rule 7 of isa.EXECUTION_RULES: registers start at 0 on machine
    reset), so the host runs a program of ``MOVE reg, 0`` ops in slot 0, waits for its
    HALT, resets the board again and drops the records it made (pull mode)."""
    from copperline.firmware.compiler import compile_program
    names = [n for n in isa.register_names(info.layers) if n]
    per_run = max(1, info.program_words - 1)
    for first in range(0, len(names), per_run):
        image = compile_program({"version": 1, "program": [
            *({"op": "MOVE", "reg": n, "value": 0} for n in names[first:first + per_run]),
            {"op": "HALT"}]}, "<register clear>", layers=info.layers,
            program_words=info.program_words)
        link.upload(image.code, base=0)
        link.write(proto.SPACE_CTL, 0, [proto.CTL_RESET_SLOT])
        link.start(0)
        deadline = time.monotonic() + timeout
        while STATE_NAMES.get(link.status(0)[0]) != "done":
            if time.monotonic() > deadline:
                raise LinkError("the board did not finish clearing its registers "
                                f"within {timeout:g} s")
        link.reset()
    while True:                                        # its records, and stale ones
        n = link.frame_words // 2
        if len(link.read_events(n)) < n:
            break


def connect(url: str, *, baud: int, timeout: float, retries: int,
            on_lost: Callable[[str], None]) -> BoardSession:
    """Open the link to ``url``, identify the board and reset it (see the module doc);
    event records then wait in the board's FIFO to be pulled."""
    try:
        link = Link(url, baud=baud, timeout=timeout, retries=retries,
                    on_lost=on_lost)
    except LinkBusy as exc:                   # (a tty another process holds)
        raise BackendError("BUSY", str(exc)) from None
    except LinkError as exc:
        raise BackendError(NO_BOARD, str(exc)) from None
    tune_port(url)
    try:
        info = link.hello()
        check_info(url, info)
        link.reset()                                     # stop everything, time base 0
        clear_registers(link, info)                      # the VM's machine reset
        dropped = link.status(0)[3] if info.contexts else 0
    except BackendError:
        link.close()
        raise
    except LinkBusy as exc:                              # another host holds the board
        link.close()
        raise BackendError("BUSY", str(exc)) from None
    except LinkError as exc:
        link.close()
        raise BackendError(NO_BOARD, f"{url}: {exc}") from None
    return BoardSession(link, info, url, dropped)
