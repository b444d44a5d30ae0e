"""The Copper core's event records, decoded into trace-format events.

The core (docs/core.md, "Event records") emits one record per event: ``kind`` (3 bits),
``started`` (1), ``slot`` (``slot_bits``), ``payload`` (24), ``timestamp`` (32, the global
core cycle), packed LSB first in that order. On the board each record travels in an event
frame (docs/link.md) as ``event_bytes`` little-endian bytes.

This module is shared by every host that reads records (the fpga backend over the link,
and the RTL engine): :func:`decode_record` unpacks one, :class:`TimestampUnwrapper`
turns 32-bit stamps into a monotonic global cycle, and :class:`RecordConverter` keeps the
per-slot start cycle and makes the events (``state running`` for ``started``, then
``reg``/``irq``/``bind``/``state``) with ``cycle``/``time_us`` counted from the program's
start, exactly as the VM writes them.
"""

from __future__ import annotations

from dataclasses import dataclass

from copperline.firmware import isa

__all__ = ["KIND_NONE", "KIND_REG", "KIND_IRQ", "KIND_BIND", "KIND_STATE", "PAYLOAD_BITS",
           "TIMESTAMP_BITS", "STATE_NAMES", "REASON_NAMES", "Record", "decode_record",
           "record_bytes", "slot_bits_for", "TimestampUnwrapper", "RecordConverter",
           "CoreEventError"]

KIND_NONE, KIND_REG, KIND_IRQ, KIND_BIND, KIND_STATE = range(5)
PAYLOAD_BITS = 24
TIMESTAMP_BITS = 32
_TS_MASK = (1 << TIMESTAMP_BITS) - 1

#: Core state codes (``status_state`` and STATE payloads) -> backend state names.
STATE_NAMES = {0: "loaded", 1: "running", 2: "running", 3: "running", 4: "done",
               5: "stopped", 6: "faulted"}
#: STATE payload reason codes -> ``reason`` strings (0: none).
REASON_NAMES = {1: "halt", 2: "host", 3: "watchdog", 4: "illegal"}


class CoreEventError(ValueError):
    """A record that cannot be decoded (unknown kind, index outside the image's tables)."""


def slot_bits_for(contexts: int) -> int:
    """Width of the ``slot`` field for a core with ``contexts`` contexts."""
    return max(1, (contexts - 1).bit_length())


def record_bytes(slot_bits: int) -> int:
    """Bytes of one record on the link (``event_bytes`` in INFO)."""
    return (4 + slot_bits + PAYLOAD_BITS + TIMESTAMP_BITS + 7) // 8


@dataclass(frozen=True)
class Record:
    kind: int
    started: bool
    slot: int
    payload: int
    timestamp: int


def decode_record(raw: int | bytes, slot_bits: int) -> Record:
    """Unpack one record, given as an int or as the link's little-endian bytes."""
    if isinstance(raw, (bytes, bytearray)):
        raw = int.from_bytes(raw, "little")
    sb = slot_bits
    return Record(kind=raw & 7, started=bool(raw >> 3 & 1), slot=raw >> 4 & ((1 << sb) - 1),
                  payload=raw >> (4 + sb) & ((1 << PAYLOAD_BITS) - 1),
                  timestamp=raw >> (4 + sb + PAYLOAD_BITS) & _TS_MASK)


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


class RecordConverter:
    """Turns records into trace events for the programs in the core's slots.

    ``key`` names the program field (``"prog"`` for backends, ``"slot"`` for machines).
    Register the program of a slot with :meth:`set_slot` (its id and image); records of
    an empty slot are ignored. The caller unwraps the stamp and passes the global cycle.
    """

    def __init__(self, clock_hz: int, layers: int = isa.DEFAULT_LAYERS, key: str = "prog"):
        self.clock_hz = clock_hz
        self.key = key
        self.reg_names = isa.register_names(layers)
        self._slots: dict[int, tuple[int, object]] = {}
        self.start: dict[int, int] = {}          # slot -> global cycle of its start
        self.bindings: dict[int, dict[int, str]] = {}

    def time_us(self, cycle: int) -> float:
        return round(cycle * 1_000_000 / self.clock_hz, 3)

    def set_slot(self, slot: int, prog_id: int, image) -> None:
        self._slots[slot] = (prog_id, image)
        self.start.pop(slot, None)
        self.bindings[slot] = {}

    def clear_slot(self, slot: int) -> None:
        self._slots.pop(slot, None)
        self.start.pop(slot, None)
        self.bindings.pop(slot, None)

    def convert(self, rec: Record, g: int) -> list[dict]:
        """The events of one record at global cycle ``g`` (0, 1 or 2 events)."""
        prog = self._slots.get(rec.slot)
        if prog is None:
            return []
        pid, image = prog
        out = []
        if rec.started:
            self.start[rec.slot] = g
            self.bindings[rec.slot] = {}
            out.append({"event": "state", self.key: pid, "state": "running", "reason": "start",
                        "pc": 0, "cycle": 0, "time_us": 0.0})
        if rec.kind == KIND_NONE:
            return out
        c = g - self.start.get(rec.slot, g)
        t = self.time_us(c)
        p = rec.payload
        if rec.kind == KIND_REG:
            idx = p >> 16
            name = self.reg_names[idx] if idx < len(self.reg_names) else None
            if name is None:
                raise CoreEventError(f"slot {rec.slot}: REG record for register index {idx}, "
                                     "which does not exist")
            out.append({"event": "reg", self.key: pid, "reg": name,
                        "value": isa.register_field(idx).wrap(p & 0xFFFF), "cycle": c,
                        "time_us": t})
        elif rec.kind == KIND_IRQ:
            out.append({"event": "irq", self.key: pid, "tag": _table(image.tags, p & 0xFF, "tag", rec),
                        "cycle": c, "time_us": t})
        elif rec.kind == KIND_BIND:
            layer = p >> 8 & 0xFF
            surface = _table(image.surfaces, p & 0xFF, "surface", rec)
            self.bindings.setdefault(rec.slot, {})[layer] = surface
            out.append({"event": "bind", self.key: pid, "layer": layer, "surface": surface,
                        "cycle": c, "time_us": t})
        elif rec.kind == KIND_STATE:
            out.append({"event": "state", self.key: pid, "state": STATE_NAMES.get(p & 7, "faulted"),
                        "reason": REASON_NAMES.get(p >> 3 & 7),
                        "pc": p >> 6 & ((1 << isa.ADDR_BITS) - 1), "cycle": c, "time_us": t})
        else:
            raise CoreEventError(f"slot {rec.slot}: unknown event kind {rec.kind}")
        return out


def _table(table, index: int, what: str, rec: Record) -> str:
    try:
        return table[index]
    except IndexError:
        raise CoreEventError(f"slot {rec.slot}: {what} index {index} is not in the image's "
                             f"{what} table ({len(table)} entries)") from None
