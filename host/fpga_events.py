"""The board's event stream: records in, trace events out.

:class:`EventPump` turns what the board sends into trace events: it decodes each record,
unwraps its 32-bit cycle stamp into the backend's global cycle (restarting the count when
a start reset the board's time base), converts it for the program in its slot, and says
what was lost: records the board's full FIFO refused (``dropped``, reason ``fifo``).

:func:`pull_events` is the reader: records carried by acknowledged,
retransmitted READs of the EVENTS space, so none is lost to line noise.
"""

from __future__ import annotations

import logging
import time
from typing import Callable

from copperline.firmware.board_interface import (Record, TimestampUnwrapper, decode_record,
                                                 slot_bits_for)
from copperline.firmware.core_events import CoreEventError, RecordConverter
from copperline.host.link import BoardInfo, Link, LinkError

log = logging.getLogger(__name__)

_MASK32 = 0xFFFFFFFF


class EventPump:
    """Records of one board session -> trace events (not thread-safe: the backend locks)."""

    def __init__(self, info: BoardInfo, dropped: int):
        self.converter = RecordConverter(info.clock_hz, info.layers)
        self._slot_bits = slot_bits_for(info.contexts)
        self._unwrap = TimestampUnwrapper()
        self._timebase_slots: set[int] = set()   # started with a time-base reset, record pending
        self._board_dropped = dropped

    def expect_timebase_reset(self, slot: int) -> None:
        """A start of ``slot`` resets the board's time base: rebase at its started record."""
        self._timebase_slots.add(slot)

    def cancel_timebase_reset(self, slot: int) -> None:
        self._timebase_slots.discard(slot)

    def timebase_pending(self, slot: int) -> bool:
        return slot in self._timebase_slots

    def board_dropped(self, count: int) -> list[dict]:
        """The board's dropped-record counter read now: a ``dropped`` event for its growth."""
        out = []
        if count != self._board_dropped:
            out.append({"event": "dropped", "count": (count - self._board_dropped) & _MASK32,
                        "reason": "fifo"})
        self._board_dropped = count
        return out

    def record(self, raw: int | bytes) -> tuple[Record, int, list[dict]] | None:
        """One record: (the record, its global cycle, its trace events); None (logged)
        for a record that cannot be decoded."""
        try:
            rec = decode_record(raw, self._slot_bits)
            if rec.started and rec.slot in self._timebase_slots:
                self._timebase_slots.discard(rec.slot)
                self._unwrap.rebase(rec.timestamp)     # the board's time base restarted
            g = self._unwrap.unwrap(rec.timestamp)
            return rec, g, self.converter.convert(rec, g)
        except CoreEventError as exc:
            log.error("fpga backend: bad event record %r: %s", raw, exc)
            return None


#: The most reads of one pipelined burst (:meth:`Link.read_events_pipelined`; about
#: 1.7 ms each at 3 Mbaud): a burst also ends at the first partial read, and as soon as
#: another request (a command, a status read) waits for the link.
BURST_READS = 64


def pull_events(link: Link, *, keep_going: Callable[[], bool],
                busy: Callable[[], bool], on_record: Callable[[bytes], None],
                on_error: Callable[[LinkError], None], poll_s: float) -> None:
    """Read records while ``keep_going()``; each goes to ``on_record``.

    The batch adapts: a read answers every word asked for, records or not, so an empty
    poll of the largest batch would hold the line for 1.7 ms at 3 Mbaud. A full batch
    doubles the next one (read again at once); a partial one asks for twice what it found
    next time (at least one record) after a pause of ``poll_s`` (10x while not ``busy()``).
    Once full batches of the largest size come back, reads are pipelined in bursts of
    :data:`BURST_READS` at most (two in flight, see :meth:`Link.read_events_pipelined`), so the
    line is not idle for a round trip between them."""
    batch = 1
    while keep_going():
        most = link.frame_words // 2          # (smaller while the line loses frames)
        batch = min(batch, most)
        def deliver(records: list[int]) -> None:
            for raw in records:
                on_record(raw)
        try:
            if batch == most and most > 1:
                reads = link.read_events_pipelined(batch, BURST_READS, on_read=deliver)
            else:
                reads = [link.read_events(batch)]
                deliver(reads[0])
        except LinkError as exc:
            on_error(exc)
            return
        if len(reads[-1]) == batch:
            batch = min(2 * batch, most)
        else:       # (a read sent ahead of a partial one finds the FIFO empty: size by that)
            found = len(reads[-1]) or (len(reads[-2]) if len(reads) > 1 else 0)
            batch = min(max(1, 2 * found), most)
            time.sleep(poll_s * (1 if busy() else 10))
