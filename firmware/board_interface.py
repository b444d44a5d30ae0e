"""The board's host interface: the one definition of everything a host and the gateware
must agree on (docs/link.md, docs/core.md "Event records").

The gateware (:mod:`copperline.hdl.link`, :mod:`copperline.hdl.top`,
:mod:`copperline.hdl.event_fifo`, :mod:`copperline.hdl.core`) builds its constants and
layouts from this module, and every host-side reader (the link driver, the fpga backend,
the RTL engines, the cocotb driver) decodes with it. Pure Python: no Amaranth.

Link frames in brief: a frame is ``type, seq, body..., crc_hi, crc_lo`` (CRC-16/CCITT-FALSE
over type+seq+body, big-endian), SLIP-escaped and sent between 0xC0 delimiters. Requests
are answered by a response of ``type | RESP`` with the same ``seq`` and a status byte.
The board sends nothing unasked: the host pulls event records by reading the EVENTS space.

An event record is ``kind`` (3 bits), ``started`` (1), ``slot`` (``slot_bits``),
``payload`` (24), ``timestamp`` (32, the global core cycle), packed LSB first in that
order; on the link it travels as :func:`record_bytes` little-endian bytes.
"""

from __future__ import annotations

import binascii
import enum
import struct
from dataclasses import dataclass
from typing import NamedTuple

from copperline.firmware import isa

# --- defaults of a board ------------------------------------------------------------------
#: Line rate of the UART link when a board or command names none.
DEFAULT_BAUD = 3_000_000
#: Core clock when no board says one (the iCEBreaker's 12 MHz).
DEFAULT_CLOCK_HZ = 12_000_000

# --- link frames --------------------------------------------------------------------------
#: 2: no event frames (records are only pulled), no event-mode CTL address. 3: the
#: SURFACE space, INFO ``surface_words``, BIND records in REG's payload layout.
LINK_VERSION = 3
SLIP_END = 0xC0
SLIP_ESC = 0xDB
SLIP_ESC_END = 0xDC
SLIP_ESC_ESC = 0xDD

T_ECHO = 0x02          # body echoed back (link test, throughput)
T_WRITE = 0x10         # | space: body = addr u16, then u32 words
T_READ = 0x20          # | space: body = addr u16, count u8 -> u32 words
RESP = 0x80            # response type = request type | RESP; body = status u8, data

#: Address spaces of WRITE/READ. INFO is served by the link itself; the rest by the top.
SPACE_INFO = 0         # read-only identify words + link counters
SPACE_PROG = 1         # program memory, one u32 instruction word per address
SPACE_CTL = 2          # per-slot control (start/stop/reset)
SPACE_FENCE = 3        # fence timeline values
SPACE_REGS = 4         # register file read-back
SPACE_STATUS = 5       # per-slot status words
SPACE_EVENTS = 6       # event records pulled by READs (2 words each)
SPACE_SURFACE = 7      # surface memory (write-only; copperline.firmware.surface_memory)
SPACE_SCRATCH = 15     # SCRATCH_WORDS words of RAM: link loopback tests without a core
#: Words of RAM in the SCRATCH space (the link-only top's loopback memory).
SCRATCH_WORDS = 16
SPACE_NAMES = {SPACE_INFO: "info", SPACE_PROG: "prog", SPACE_CTL: "ctl", SPACE_FENCE: "fence",
               SPACE_REGS: "regs", SPACE_STATUS: "status", SPACE_EVENTS: "events",
               SPACE_SURFACE: "surface", SPACE_SCRATCH: "scratch"}

ST_OK = 0
ST_BAD_TYPE = 1
ST_BAD_LEN = 2
ST_BAD_ADDR = 3
STATUS_NAMES = {ST_OK: "ok", ST_BAD_TYPE: "unknown message type", ST_BAD_LEN: "bad length",
                ST_BAD_ADDR: "bad address (no such space/address, or not writable)"}

INFO_MAGIC = 0x4B4C5043    # b"CPLK" little-endian
#: Names of the INFO words, in address order (words 0..15 are constants, 16.. counters).
INFO_FIELDS = ("magic", "link_version", "clock_hz", "baud", "buf_bytes", "max_read_words",
               "event_bytes", "core_version", "program_words", "contexts", "layers",
               "fence_timelines", "vsync_hz_x1000", "fabric_hz", "vsync_period", "surface_words",
               "frames_ok", "frames_bad", "rx_timeouts", "rx_dropped")
INFO_CONST_WORDS = 16

DEFAULT_BUF_BYTES = 512
#: Largest READ count: a response (type, seq, status, 4 x 126 bytes) fits the board's
#: 512-byte buffer. A board says its own in INFO ``max_read_words``.
MAX_READ_WORDS = 126
#: Words per WRITE frame a host sends (frame = 2+2+4*126+2 = 510 bytes; a board whose
#: INFO ``buf_bytes`` is smaller takes smaller frames).
DEFAULT_CHUNK_WORDS = 126

#: The one line of text (not a frame) a board that already serves a host sends to another
#: one before it hangs up: ``copperline board busy: held by HOST:PORT since ...`` (the
#: virtual board; a serial port is opened by one process only).
BUSY_NOTICE = b"copperline board busy: "

# --- the core's spaces --------------------------------------------------------------------
#: CTL space: write ``CTL_START``/``CTL_STOP``/``CTL_RESET_SLOT``/``CTL_START_TB`` at
#: address = slot. START_TB starts the slot *and* resets the time base in the same core
#: cycle, so the program starts at global cycle 0 with the vsync phase a fresh VM has.
CTL_START = 1
CTL_STOP = 2
CTL_RESET_SLOT = 3
CTL_START_TB = 4
#: CTL address where 1 resets every slot and the time base.
CTL_RESET_ADDR = 0x100
#: CTL address that starts several slots in one core cycle: the word is a slot mask
#: (bit i = slot i), plus CTL_MASK_TIMEBASE to reset the time base in that cycle too.
CTL_START_MASK_ADDR = 0x102
CTL_MASK_TIMEBASE = 1 << 31
#: EVENTS space: a record is two words (low, high); both this value = no record (FIFO empty).
EVENT_NONE_WORD = 0xFFFFFFFF
#: STATUS space: STATUS_WORDS words per slot at ``slot * STATUS_WORDS``, in this order.
STATUS_STATE, STATUS_PC, STATUS_CYCLE, STATUS_DROPPED = range(4)
STATUS_WORDS = 4


# --- frames: CRC, SLIP, bodies --------------------------------------------------------------

def crc16(data: bytes, crc: int = 0xFFFF) -> int:
    """CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF, no reflection, no final xor): the
    standard library's ``binascii.crc_hqx`` with that initial value."""
    return binascii.crc_hqx(data, crc)


def slip_escape(data: bytes) -> bytes:
    """``data`` with the SLIP delimiter and escape bytes escaped."""
    return data.replace(b"\xdb", b"\xdb\xdd").replace(b"\xc0", b"\xdb\xdc")


def write_body(addr: int, words) -> bytes:
    """The body of a WRITE request: u16 address, then the u32 words (little-endian)."""
    return struct.pack(f"<H{len(words)}I", addr, *(w & 0xFFFFFFFF for w in words))


def read_body(addr: int, count: int) -> bytes:
    """The body of a READ request: u16 address, u8 word count."""
    return struct.pack("<HB", addr, count)


def encode_frame(ftype: int, seq: int, body: bytes = b"") -> bytes:
    """The bytes on the wire for one frame, delimiters included."""
    if not (0 <= ftype <= 255 and 0 <= seq <= 255):
        raise ValueError(f"frame type {ftype} / seq {seq} must be 0..255")
    payload = bytes((ftype, seq)) + body
    payload += struct.pack(">H", crc16(payload))
    return bytes((SLIP_END,)) + slip_escape(payload) + bytes((SLIP_END,))


@dataclass(frozen=True)
class Frame:
    """One good frame: its type, sequence number and body (CRC removed)."""
    type: int
    seq: int
    body: bytes


class FrameDecoder:
    """Incremental SLIP + CRC decoder: ``feed(bytes)`` returns the complete good frames.

    Garbage, bad escapes, short frames and CRC failures are dropped and counted; the next
    0xC0 resynchronises. ``max_bytes`` bounds a frame (an over-long one is dropped).
    """

    def __init__(self, max_bytes: int = 4096):
        self.max_bytes = max_bytes
        self._buf = bytearray()
        self._esc = False
        self._bad = False
        self.crc_errors = 0
        self.framing_errors = 0

    def reset(self) -> None:
        self._buf.clear()
        self._esc = self._bad = False

    def feed(self, data: bytes) -> list[Frame]:
        out = []
        for b in data:
            if b == SLIP_END:
                if self._buf or self._bad:
                    frame = self._finish()
                    if frame is not None:
                        out.append(frame)
                self.reset()
                continue
            if self._esc:
                self._esc = False
                if b == SLIP_ESC_END:
                    b = SLIP_END
                elif b == SLIP_ESC_ESC:
                    b = SLIP_ESC
                else:
                    self._bad = True
                    continue
            elif b == SLIP_ESC:
                self._esc = True
                continue
            if len(self._buf) >= self.max_bytes:
                self._bad = True
            else:
                self._buf.append(b)
        return out

    def header(self) -> tuple[int, int] | None:
        """``(type, seq)`` of the frame being received, once both arrived (None before,
        or when it is already known to be bad): a response has *begun* (its CRC is yet
        to come), which is all a pipelining host needs to know to send the next request."""
        if self._bad or len(self._buf) < 2:
            return None
        return self._buf[0], self._buf[1]

    def _finish(self) -> Frame | None:
        if self._bad or len(self._buf) < 4:
            self.framing_errors += 1
            return None
        if crc16(bytes(self._buf)) != 0:   # CRC over payload + its own CRC leaves residue 0
            self.crc_errors += 1
            return None
        return Frame(self._buf[0], self._buf[1], bytes(self._buf[2:-2]))


# --- state and reason codes -----------------------------------------------------------------

class CtxState(enum.IntEnum):
    """Context state as the STATUS space and ``state`` records report it."""
    LOADED = 0    # never started since reset (or slot reset)
    RUNNING = 1   # issuing ops / waiting on a WAIT us, JUMP or LOOP cost
    VSYNC = 2     # running, waiting for a vsync edge
    FENCE = 3     # running, blocked on a FENCE
    DONE = 4      # HALT
    STOPPED = 5   # host stop
    FAULTED = 6   # watchdog or illegal op


class Reason(enum.IntEnum):
    """``reason`` field of ``state`` records."""
    NONE = 0
    HALT = 1
    HOST = 2
    WATCHDOG = 3
    ILLEGAL = 4


#: Core state codes -> the backends' state names (``running`` covers RUNNING..FENCE).
STATE_NAMES = {CtxState.LOADED: "loaded", CtxState.RUNNING: "running",
               CtxState.VSYNC: "running", CtxState.FENCE: "running", CtxState.DONE: "done",
               CtxState.STOPPED: "stopped", CtxState.FAULTED: "faulted"}
#: Reason codes -> the ``reason`` strings of ``state`` events (NONE has none).
REASON_NAMES = {Reason.HALT: "halt", Reason.HOST: "host", Reason.WATCHDOG: "watchdog",
                Reason.ILLEGAL: "illegal"}


# --- event records --------------------------------------------------------------------------

class EventKind(enum.IntEnum):
    """``kind`` field of an event record."""
    NONE = 0    # only the ``started`` flag is meaningful
    REG = 1     # payload: value[15:0], reg index[23:16]
    IRQ = 2     # payload: tag index[7:0]
    BIND = 3    # payload as REG's: the surface register's new value, its index
    STATE = 4   # payload: state[2:0], reason[5:3], pc[17:6]


KIND_BITS = 3
PAYLOAD_BITS = 24
TIMESTAMP_BITS = 32
_KIND_MASK = (1 << KIND_BITS) - 1
_PAYLOAD_MASK = (1 << PAYLOAD_BITS) - 1
_TS_MASK = (1 << TIMESTAMP_BITS) - 1
#: A STATE payload: the state code, the reason code, the pc, LSB first.
STATE_CODE_BITS = 3
REASON_BITS = 3
STATE_PC_BITS = isa.ADDR_BITS


def slot_bits_for(contexts: int) -> int:
    """Width of the ``slot`` field for a core with ``contexts`` contexts."""
    return max(1, (contexts - 1).bit_length())


def record_fields(slot_bits: int) -> tuple[tuple[str, int], ...]:
    """``(name, width)`` of a record's fields, LSB first (the gateware's layout)."""
    return (("kind", KIND_BITS), ("started", 1), ("slot", slot_bits),
            ("payload", PAYLOAD_BITS), ("timestamp", TIMESTAMP_BITS))


def record_bytes(slot_bits: int) -> int:
    """Bytes of one record on the link (``event_bytes`` in INFO)."""
    return (sum(w for _, w in record_fields(slot_bits)) + 7) // 8


class Record(NamedTuple):
    """One decoded event record."""
    kind: int
    started: bool
    slot: int
    payload: int
    timestamp: int


def iter_records(raws, slot_bits: int):
    """Unpack records given as ints: ``(kind, started, slot, payload, timestamp)`` each,
    plain tuples (the RTL engines unpack every record of a busy run)."""
    slot_mask = (1 << slot_bits) - 1
    payload_shift = KIND_BITS + 1 + slot_bits
    stamp_shift = payload_shift + PAYLOAD_BITS
    for raw in raws:
        yield (raw & _KIND_MASK, raw >> KIND_BITS & 1, raw >> (KIND_BITS + 1) & slot_mask,
               raw >> payload_shift & _PAYLOAD_MASK, raw >> stamp_shift & _TS_MASK)


def decode_record(raw: int | bytes, slot_bits: int) -> Record:
    """Unpack one record, given as an int or as the link's little-endian bytes."""
    if isinstance(raw, (bytes, bytearray)):
        raw = int.from_bytes(raw, "little")
    kind, started, slot, payload, timestamp = next(iter_records((raw,), slot_bits))
    return Record(kind, bool(started), slot, payload, timestamp)


def state_fields(payload: int) -> tuple[int, int, int]:
    """``(state, reason, pc)`` codes of a STATE record's payload."""
    return (payload & ((1 << STATE_CODE_BITS) - 1),
            payload >> STATE_CODE_BITS & ((1 << REASON_BITS) - 1),
            payload >> (STATE_CODE_BITS + REASON_BITS) & ((1 << STATE_PC_BITS) - 1))


class TimestampUnwrapper:
    """32-bit core cycle stamps -> a monotonic global cycle.

    Records arrive in cycle order, so each stamp is taken as the first cycle at or after
    the previous one with those low 32 bits (the host must read them within 2**32 core
    cycles). :meth:`rebase` restarts the count (the board's time base was reset).
    """

    def __init__(self, base: int = 0):
        self.last = base

    def rebase(self, cycle: int = 0) -> None:
        self.last = cycle

    def unwrap(self, ts: int) -> int:
        self.last += (ts - self.last) & _TS_MASK
        return self.last
