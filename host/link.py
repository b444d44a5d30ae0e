"""The host driver of the board link: sequencing, retransmission, events (docs/link.md).

The wire format (frames, CRC, spaces, codes) is :mod:`copperline.firmware.board_interface`;
:class:`Link` speaks it over a serial port: requests that it retransmits after a timeout
(the board re-sends a stored response when it sees the same request, same seq and CRC,
again), one at a time or, for event reads, two in flight
(:meth:`Link.read_events_pipelined`), and event frames handed over as they arrive.

The driver opens its port with :func:`serial.serial_for_url`, so ``/dev/ttyUSB1``,
``socket://127.0.0.1:PORT`` and ``loop://`` all work.
"""

from __future__ import annotations

import logging
import queue
import random
import select
import struct
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

from copperline.firmware.board_interface import (
    BUSY_NOTICE, CTL_MASK_TIMEBASE, CTL_RESET_ADDR, CTL_START,
    CTL_START_MASK_ADDR, CTL_START_TB, CTL_STOP, DEFAULT_BAUD, DEFAULT_CHUNK_WORDS,
    EVENT_NONE_WORD, INFO_FIELDS, INFO_MAGIC, LINK_VERSION, MAX_READ_WORDS, RESP, SPACE_CTL, SPACE_EVENTS,
    SPACE_FENCE, SPACE_INFO, SPACE_NAMES, SPACE_PROG, SPACE_REGS, SPACE_STATUS, ST_OK,
    STATUS_NAMES, STATUS_WORDS, T_ECHO, T_READ, T_WRITE, Frame, FrameDecoder,
    encode_frame, read_body, write_body)
from copperline.host.retransmit import RetransmitPolicy

log = logging.getLogger(__name__)


class LinkError(Exception):
    """The link failed (no answer after retries, a board error status, a closed port)."""


class LinkTimeout(LinkError):
    """No valid response after every retransmission."""


class LinkBusy(LinkError):
    """The board serves another host: one host at a time (the message names the holder)."""


class LinkStatusError(LinkError):
    """The board answered with a non-OK status."""

    def __init__(self, status: int, what: str):
        self.status = status
        super().__init__(f"{what}: board says {STATUS_NAMES.get(status, f'status {status}')}")


# --- the host driver ----------------------------------------------------------------------

@dataclass
class LinkStats:
    requests: int = 0
    retransmits: int = 0
    duplicates: int = 0         # responses whose seq we no longer wait for
    crc_errors: int = 0
    framing_errors: int = 0

    def to_json(self) -> dict:
        return dict(self.__dict__)


@dataclass
class BoardInfo:
    """What the board says about itself (the INFO space)."""
    words: dict[str, int] = field(default_factory=dict)

    def __getattr__(self, name: str) -> int:
        try:
            return self.__dict__["words"][name]
        except KeyError:
            raise AttributeError(name) from None

    def to_json(self) -> dict:
        return dict(self.words)


#: How long the reader thread waits for bytes before it looks at ``closed`` again.
READ_POLL_S = 0.02


@dataclass(eq=False)
class _Pending:
    """A request on its way: its bytes, when its last attempt was sent, its answer."""
    ftype: int
    seq: int
    wire: bytes
    what: str
    line_s: float
    sent: float
    give_up: float
    attempt: int = 0
    first_sent: float = 0.0
    ahead: bool = False                 # sent while another answer was still coming
    waited: bool = False                # a read was to be sent once this answer began
    started: threading.Event = field(default_factory=threading.Event)
    answers: queue.Queue = field(default_factory=queue.Queue)


def open_port(url: str, baud: int, timeout: float = READ_POLL_S):
    """Open a serial port or pyserial URL (``socket://``, ``loop://``, ``/dev/tty...``)."""
    import serial
    try:
        # exclusive: a serial port (a tty) is locked, so a second host cannot take over
        # the board (URL transports ignore it; the virtual board refuses in words)
        return serial.serial_for_url(url, baudrate=baud, timeout=timeout, exclusive=True)
    except (serial.SerialException, ValueError, OSError) as exc:
        if "exclusively lock" in str(exc):
            raise LinkBusy(f"{url}: the board is busy, another program has its port open "
                           f"(`fuser -v {url}` names it): a board serves one host at a "
                           "time") from None
        raise LinkError(f"cannot open {url!r}: {exc}") from None


class Link:
    """A synchronous request/response API over one serial port, with a reader thread.

    Requests are stop-and-wait (event reads may be pipelined, two in flight:
    :meth:`read_events_pipelined`): one outstanding request, retransmitted when its answer
    is late, with a timeout and a frame size adapted to the line
    (:class:`~copperline.host.retransmit.RetransmitPolicy`: at most ``timeout`` per
    attempt, backing off); a request fails (:class:`LinkTimeout`) once
    ``(retries + 1) * timeout`` seconds passed without a valid answer. The board sends
    nothing unasked: event records are pulled (:meth:`read_events`). ``on_lost(reason)`` is called (from the reader thread) when the port fails.
    """

    def __init__(self, url: str, *, baud: int = DEFAULT_BAUD, timeout: float = 0.2,
                 retries: int = 5, port=None,
                 on_lost: Callable[[str], None] | None = None):
        self.url = url
        self.timeout = timeout
        self.retries = retries
        self.stats = LinkStats()
        self.policy = RetransmitPolicy(baud, max_s=timeout, max_words=MAX_READ_WORDS)
        self._port = port if port is not None else open_port(url, baud)
        try:
            self._fd = self._port.fileno()
        except Exception:   # no descriptor: AttributeError, or pyserial's "not supported"
            self._fd = None
        if self._fd is not None:
            self._port.timeout = 0          # only the reader reads: it waits with select
        self._decoder = FrameDecoder()
        self._seq = random.randrange(256)   # a fresh start never matches a stale request
        #: The largest READ and WRITE counts this board takes (set by :meth:`hello`).
        self.max_read_words, self.chunk_words = MAX_READ_WORDS, DEFAULT_CHUNK_WORDS
        self._lock = threading.Lock()         # one caller's requests at a time
        self._wanted = 0                      # callers waiting for the lock (see request)
        self._wanted_lock = threading.Lock()
        self._waiting: dict[int, _Pending] = {}   # outstanding requests by seq
        self._on_lost = on_lost
        self._closed = threading.Event()
        self._greeting = bytearray()          # the first bytes received (a busy notice?)
        #: The request whose answer is coming in now (or None), and when bytes last came.
        self._arriving: tuple[_Pending | None, float] = (None, 0.0)
        self._reader = threading.Thread(target=self._read_loop, name=f"link-reader {url}",
                                        daemon=True)
        self._reader.start()

    # -- plumbing --------------------------------------------------------------------------
    def close(self) -> None:
        self._closed.set()
        self._reader.join(timeout=1.0)
        try:
            self._port.close()
        except Exception:   # closing twice or a vanished device: nothing left to do
            pass

    @property
    def closed(self) -> bool:
        """True once the link was closed or its port failed (unplugged, socket closed)."""
        return self._closed.is_set()

    def __enter__(self) -> "Link":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _read_available(self) -> bytes:
        """The bytes that have arrived, waiting up to ``READ_POLL_S`` for the first.

        pyserial's ``read(n)`` returns only after n bytes or the port's timeout, so a
        plain ``read(4096)`` would hold every response for the whole timeout. A port with
        a file descriptor (a tty, ``socket://``) is waited on with ``select`` and then read
        without blocking; another (``loop://``, wrappers) is asked for what it says is
        waiting (at least one byte)."""
        if self._fd is None:
            return self._port.read(max(1, getattr(self._port, "in_waiting", 0)))
        ready, _, _ = select.select([self._fd], [], [], READ_POLL_S)
        return self._port.read(65536) if ready else b""

    def _read_loop(self) -> None:
        while not self._closed.is_set():
            try:
                data = self._read_available()
            except Exception as exc:   # port vanished: wake any waiter, then stop
                lost = not self._closed.is_set()
                if lost:
                    log.error("link %s: read failed: %s", self.url, exc)
                self._closed.set()
                if lost and self._on_lost is not None:
                    self._on_lost(f"read failed: {exc}")
                return
            if not data:
                continue
            if len(self._greeting) < 256:
                self._greeting += data[:256 - len(self._greeting)]
                if self._greeting.startswith(BUSY_NOTICE) and b"\n" in self._greeting:
                    self._closed.set()          # refused in words: stop waiting for frames
                    return
            for frame in self._decoder.feed(data):
                self._dispatch(frame)
            head = self._decoder.header()
            arriving = None
            if head is not None:                # a response has begun: its request ran
                pending = self._waiting.get(head[1])
                if pending is not None and head[0] == pending.ftype | RESP:
                    pending.started.set()
                    arriving = pending
            self._arriving = (arriving, time.monotonic())
            self.stats.crc_errors = self._decoder.crc_errors
            self.stats.framing_errors = self._decoder.framing_errors

    def _dispatch(self, frame: Frame) -> None:
        if frame.type & RESP:
            pending = self._waiting.get(frame.seq)
            if pending is not None:
                pending.started.set()
                pending.answers.put(frame)
            else:
                self.stats.duplicates += 1
        else:
            log.debug("link %s: ignoring frame type %#04x", self.url, frame.type)

    def request(self, ftype: int, body: bytes = b"", what: str = "",
                answer_bytes: int = 0, attempts: int | None = None) -> bytes:
        """Send one request and return the response body after the status byte.
        ``answer_bytes``: the response's data bytes expected (its time on the line
        counts into the timeout). ``attempts``: give up (:class:`LinkTimeout`) after that
        many, before the time budget, so that a caller may try a smaller request (only
        for requests that may be executed twice: reads of memory, writes of data)."""
        with self._wanted_lock:
            self._wanted += 1                 # (a pipelined read sends no more meanwhile)
        try:
            self._lock.acquire()
        finally:
            with self._wanted_lock:
                self._wanted -= 1
        try:
            pending = self._send(ftype, body, what, answer_bytes)
            try:
                return self._await(pending, attempts)
            finally:
                self._waiting.pop(pending.seq, None)
        finally:
            self._lock.release()

    def _send(self, ftype: int, body: bytes, what: str, answer_bytes: int,
              ahead: bool = False) -> _Pending:
        """Send a new request (the caller holds the lock) and register it for its answer."""
        if self._closed.is_set():
            raise LinkError(f"link {self.url} is closed")
        self._seq = (self._seq + 1) & 0xFF
        wire = encode_frame(ftype, self._seq, body)
        now = time.monotonic()
        # (type, seq, status, CRC, delimiters: 7 bytes besides the data)
        pending = _Pending(ftype, self._seq, wire, what or f"request {ftype:#04x}",
                           self.policy.line_s(len(wire) + 7 + answer_bytes), now,
                           now + (self.retries + 1) * self.timeout, first_sent=now,
                           ahead=ahead)
        self._waiting[pending.seq] = pending
        self.stats.requests += 1
        self._port.write(wire)
        return pending

    def _damaged(self) -> int:
        return self._decoder.crc_errors + self._decoder.framing_errors

    def _await(self, p: _Pending, attempts: int | None = None) -> bytes:
        """The answer to ``p`` (the body after the status byte), retransmitting ``p``
        while it is late; :class:`LinkTimeout` once its time budget (or ``attempts``)
        is spent."""
        damaged = self._damaged()
        while True:
            deadline = min(p.give_up, p.sent + self.policy.timeout(p.line_s))
            while True:
                left = deadline - time.monotonic()
                try:        # (an answer that came while the caller was busy counts)
                    frame = p.answers.get(timeout=min(left, 0.05)) if left > 0 else \
                        p.answers.get_nowait()
                except queue.Empty:
                    if self._closed.is_set():
                        break
                    if left <= 0:
                        if not self._still_arriving(p):
                            break
                        deadline = time.monotonic() + self.policy.timeout(0.0)
                    continue
                if frame.type != (p.ftype | RESP) or not frame.body:
                    raise LinkError(f"{p.what}: board answered type {frame.type:#04x} "
                                    f"to seq {p.seq} (expected {p.ftype | RESP:#04x})")
                now = time.monotonic()
                if p.attempt and now - p.sent < self.policy.line_s(len(p.wire)):
                    # sooner than the board could have read the retransmission: the
                    # answer to the first attempt, which was slow, not lost (a virtual
                    # board slower than real time): an RTT sample from there, no reset
                    # of the backoff
                    self.policy.answered(now - p.first_sent, p.line_s, 0)
                else:
                    # (a request sent ahead waited for the answer before it: no sample)
                    self.policy.answered(now - p.sent, p.line_s, max(p.attempt, int(p.ahead)))
                if frame.body[0] != ST_OK:
                    raise LinkStatusError(frame.body[0], p.what)
                return frame.body[1:]
            if self._closed.is_set():
                raise LinkError(f"{p.what}: link {self.url} closed")
            self.policy.timed_out(p.line_s, corrupted=damaged != self._damaged())
            p.attempt += 1
            if time.monotonic() >= p.give_up or p.attempt == attempts:
                break
            self.stats.retransmits += 1
            log.info("link %s: %s seq %d: no answer, retransmit %d",
                     self.url, p.what, p.seq, p.attempt)
            damaged = self._damaged()
            p.sent = time.monotonic()
            self._port.write(p.wire)
        raise LinkTimeout(f"{p.what}: no answer from {self.url} after {p.attempt} "
                          f"attempt(s) in {(self.retries + 1) * self.timeout * 1000:.0f} ms "
                          "(is the board connected, flashed with copperline, and at the "
                          "same baud?)")

    def _still_arriving(self, p: _Pending) -> bool:
        """True while ``p``'s answer is coming in: its first bytes are here and more came
        within a turnaround. Such an answer is not late, only longer on a slower line (a
        virtual board below real time) than the baud rate says; retransmitting then would
        only make the board send it again."""
        pending, at = self._arriving
        return (pending is p and time.monotonic() - at < self.policy.timeout(0.0)
                and time.monotonic() < p.give_up)

    @property
    def frame_words(self) -> int:
        """Words per READ/WRITE frame now: the board's limit, smaller while the line
        loses frames (see :class:`~copperline.host.retransmit.RetransmitPolicy`)."""
        return max(2, min(self.max_read_words, self.chunk_words, self.policy.words))

    # -- the API ---------------------------------------------------------------------------
    def echo(self, data: bytes) -> bytes:
        return self.request(T_ECHO, data, "echo", answer_bytes=len(data))

    def write(self, space: int, addr: int, words: list[int] | tuple[int, ...],
              attempts: int | None = None) -> None:
        """Write u32 ``words`` at ``addr`` of ``space`` (one frame; see :meth:`upload`)."""
        if not words:
            raise ValueError("write: no words")
        if not 0 <= addr <= 0xFFFF:
            raise ValueError(f"write: address {addr} outside 0..65535")
        self.request(T_WRITE | space, write_body(addr, words),
                     f"write {SPACE_NAMES.get(space, space)}[{addr}]", attempts=attempts)

    def read(self, space: int, addr: int, count: int = 1,
             attempts: int | None = None) -> list[int]:
        """Read ``count`` u32 words from ``addr`` of ``space``."""
        if not 1 <= count <= self.max_read_words:
            raise ValueError(f"read: count {count} outside 1..{self.max_read_words}")
        data = self.request(T_READ | space, read_body(addr, count),
                            f"read {SPACE_NAMES.get(space, space)}[{addr}:+{count}]",
                            answer_bytes=4 * count, attempts=attempts)
        if len(data) != 4 * count:
            raise LinkError(f"read: asked for {count} words, got {len(data)} bytes")
        return list(struct.unpack(f"<{count}I", data))

    def _in_frames(self, count: int, step, chunk: int | None = None) -> None:
        """Call ``step(offset, n)`` for frames covering ``count`` words. A frame that
        gets no answer in a few attempts is sent again as two halves (the line is
        noisier than the frame size was chosen for), down to a few words; the time
        budget of one request still bounds the whole."""
        give_up = time.monotonic() + (self.retries + 1) * self.timeout
        off, cap = 0, chunk or self.max_read_words
        while off < count:
            n = min(cap, count - off, chunk or self.frame_words)
            small = n <= self.policy.min_words * 2
            try:
                step(off, n, None if small else 3)
            except LinkTimeout:
                if small or time.monotonic() >= give_up:
                    raise
                cap = max(self.policy.min_words, n // 2)
                continue
            off += n

    def read_many(self, space: int, addr: int, count: int) -> list[int]:
        """Read ``count`` words (any number), in frames (see :meth:`_in_frames`)."""
        out: list[int] = []
        self._in_frames(count, lambda off, n, attempts: out.extend(
            self.read(space, addr + off, n, attempts=attempts)))
        return out

    def upload(self, words, base: int = 0, chunk: int | None = None,
               space: int = SPACE_PROG) -> None:
        """Write a program (or any word array) in frames of ``chunk`` words (default: as
        many as a frame to this board holds now; see :meth:`_in_frames`)."""
        words = list(words)
        self._in_frames(len(words), lambda off, n, attempts: self.write(
            space, base + off, words[off:off + n], attempts=attempts), chunk)

    def hello(self) -> BoardInfo:
        """Identify the board: core version, clock, baud, sizes (the INFO space).
        :class:`LinkBusy` when the board serves another host."""
        try:
            words = self.read(SPACE_INFO, 0, len(INFO_FIELDS))
        except (LinkError, OSError) as exc:  # OSError: the port failing under the write
            if isinstance(exc, LinkError) and not self._closed.is_set():
                raise                       # no answer, but no hang-up either
            self._reader.join(timeout=0.5)  # a notice is read before the port fails
            text = bytes(self._greeting)
            if not text.startswith(BUSY_NOTICE):
                raise
            held = text[len(BUSY_NOTICE):].split(b"\n")[0].decode("utf-8", "replace")
            raise LinkBusy(f"{self.url}: the board is busy, {held}: a board serves one host "
                           "at a time (stop that host, or send programs through the copperd "
                           "that holds the board)") from None
        if words[0] != INFO_MAGIC:
            raise LinkError(f"{self.url}: not a copperline board (magic {words[0]:#010x})")
        info = BoardInfo(dict(zip(INFO_FIELDS, words)))
        if info.link_version != LINK_VERSION:
            raise LinkError(f"{self.url}: the board speaks link version {info.link_version}, "
                            f"this host {LINK_VERSION}: rebuild and flash its bitstream "
                            "(`copper build` and `copper flash`)")
        # a board built with other sizes (an older bitstream: 64-word reads) sets the limits
        self.max_read_words = max(2, min(MAX_READ_WORDS, info.max_read_words))
        # (a WRITE frame's 6 other bytes: type, seq, addr u16, CRC u16)
        self.chunk_words = max(1, min(DEFAULT_CHUNK_WORDS, (info.buf_bytes - 6) // 4))
        return info

    # Core commands. Their meaning is carried out by the board top (hdl/top.py), which maps
    # the CTL/FENCE/REGS/STATUS spaces onto the Copper core's host interface.
    def start_slots(self, slots, timebase: bool = False) -> None:
        """Start every slot of ``slots`` in the same core cycle; ``timebase=True`` also
        makes that cycle global cycle 0."""
        mask = sum(1 << s for s in slots)
        self.write(SPACE_CTL, CTL_START_MASK_ADDR, [mask | (CTL_MASK_TIMEBASE if timebase else 0)])

    def start(self, slot: int, timebase: bool = False) -> None:
        """Start ``slot``; ``timebase=True`` also makes its first cycle global cycle 0."""
        self.write(SPACE_CTL, slot, [CTL_START_TB if timebase else CTL_START])

    def stop(self, slot: int) -> None:
        self.write(SPACE_CTL, slot, [CTL_STOP])

    def reset(self) -> None:
        """Stop every slot and reset the core's time base."""
        self.write(SPACE_CTL, CTL_RESET_ADDR, [1])

    def fence(self, timeline: int, value: int) -> None:
        self.write(SPACE_FENCE, timeline, [value])

    def regs(self, first: int = 0, count: int = 1) -> list[int]:
        return self.read_many(SPACE_REGS, first, count)

    def status(self, slot: int) -> list[int]:
        return self.read(SPACE_STATUS, slot * STATUS_WORDS, STATUS_WORDS)

    def read_events(self, max_records: int | None = None) -> list[int]:
        """Pull up to ``max_records`` event records (pull mode; default: as many as a
        frame carries now, see :attr:`frame_words`). Reliable: a lost response is retransmitted by the board from its
        stored copy, never popped twice.

        The board answers every pair asked for: a pair is the FIFO's head record (popped)
        or, when the FIFO was empty at that moment, two ``EVENT_NONE_WORD``. A record that
        arrives while the response is being built fills a *later* pair, so every pair is
        looked at: an empty one does not end the records."""
        most = self.max_read_words // 2
        max_records = self.frame_words // 2 if max_records is None else max_records
        if not 1 <= max_records <= most:
            raise ValueError(f"read_events: max_records {max_records} outside 1..{most}")
        return _records(self.read(SPACE_EVENTS, 0, 2 * max_records))

    def read_events_pipelined(self, max_records: int, reads: int,
                              on_read: Callable[[list[int]], None] | None = None
                              ) -> list[list[int]]:
        """Up to ``reads`` pulls of ``max_records`` records each, with two in flight:
        the next READ is sent as soon as the board has *begun* answering the one before
        (so it is executed after it, and it arrives while that answer is on the line,
        when the board's receive buffer is free), which keeps the line busy instead of
        idle for a round trip per read. No more are sent after a read that was not full.
        Returns the records of each read, in order; ``on_read(records)`` is also called
        for each read as it arrives, while the next one is on the line (so the host's
        work on them does not leave the line idle).

        Reliable as :meth:`read_events`: the board keeps the answers of the last two
        requests (one slot per seq parity), and a third is only sent once the first of
        them was answered, so a lost answer is always retransmitted from its stored
        copy. The calling thread holds the link meanwhile; when another thread asks for
        it, no more reads are sent (it waits for the ones in flight, at most two)."""
        most = self.max_read_words // 2
        if not 1 <= max_records <= most:
            raise ValueError(f"read_events: max_records {max_records} outside 1..{most}")
        body = read_body(0, 2 * max_records)
        what = f"read EVENTS[0:+{2 * max_records}]"
        out: list[list[int]] = []
        give_way = time.monotonic() + self.timeout
        while self._wanted and time.monotonic() < give_way:
            time.sleep(0.0002)                # another caller first (locks are not fair)
        with self._lock:
            inflight: deque[_Pending] = deque()
            more = reads
            try:
                while True:
                    if not inflight:
                        if more <= 0:
                            break
                        inflight.append(self._send(T_READ | SPACE_EVENTS, body, what,
                                                   8 * max_records))
                        more -= 1
                    head = inflight[0]
                    if len(inflight) == 1 and more > 0:
                        more -= self._send_ahead(inflight, body, what, max_records)
                    data = self._await(head)
                    inflight.popleft()
                    self._waiting.pop(head.seq, None)
                    if len(data) != 8 * max_records:
                        raise LinkError(f"read: asked for {2 * max_records} words, got "
                                        f"{len(data)} bytes")
                    records = _records(struct.unpack(f"<{2 * max_records}I", data))
                    out.append(records)
                    if len(records) < max_records:
                        more = 0
                    if inflight:                # queued behind the answer just received
                        nxt = inflight[0]
                        nxt.sent = max(nxt.sent, time.monotonic())
                        if not nxt.attempt:
                            nxt.first_sent = nxt.sent
                        if more > 0:            # the line first, then the host's work
                            more -= self._send_ahead(inflight, body, what, max_records)
                    if on_read is not None:
                        on_read(records)
            finally:
                for p in inflight:
                    self._waiting.pop(p.seq, None)
        return out

    def _send_ahead(self, inflight: deque, body: bytes, what: str, max_records: int) -> int:
        """Once the board has begun answering the one read in flight, send the next
        (1), unless another caller waits for the link or no answer begins in time (0)."""
        head = inflight[0]
        if head.waited:                 # (once per read: a late answer is not waited twice)
            return 0
        head.waited = True
        if self._wanted or not head.started.wait(max(0.0, min(
                head.give_up, head.sent + self.policy.timeout(head.line_s)) - time.monotonic())):
            return 0
        inflight.append(self._send(T_READ | SPACE_EVENTS, body, what, 8 * max_records,
                                   ahead=True))
        return 1


def _records(words) -> list[int]:
    """The records of an EVENTS read: every pair that is not the empty marker."""
    return [hi << 32 | lo for lo, hi in zip(words[::2], words[1::2])
            if not (lo == EVENT_NONE_WORD and hi == EVENT_NONE_WORD)]

