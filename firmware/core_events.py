"""The Copper core's event records, turned into trace-format events.

One converter serves every reader of records: the fpga backend (records from event
frames), the RTL engines (records from the simulated core) and the cocotb driver. The
record layout and its decoder are in :mod:`copperline.firmware.board_interface`; this
module keeps the per-program state a record needs (its start cycle, its bindings) and
makes the events (``state running`` for ``started``, then ``reg``/``irq``/``bind``/
``state``) with ``cycle``/``time_us`` counted from the program's start, exactly as the VM
writes them.
"""

from __future__ import annotations

from copperline.firmware import isa
from copperline.firmware.board_interface import (REASON_NAMES, STATE_NAMES, EventKind, Record,
                                                 state_fields)
from copperline.firmware.trace import time_us

__all__ = ["CoreEventError", "SlotEvents", "RecordConverter"]

# (plain ints: the RTL engines convert every record of a busy run here)
_REG, _IRQ, _BIND, _STATE = (int(k) for k in (EventKind.REG, EventKind.IRQ, EventKind.BIND,
                                              EventKind.STATE))


class CoreEventError(ValueError):
    """A record that cannot be decoded (unknown kind, index outside the image's tables)."""


class SlotEvents:
    """What converting the records of one program needs and learns: its image, whether
    and in which global cycle it started, its layer bindings, its last state and reason.

    ``surfaces``: the surface named by each number a BIND record can carry: the image's
    surface table, unless the host gave the board other numbers (the fpga backend
    loads BIND_LAYER with the surfaces' descriptor numbers)."""

    def __init__(self, slot: int, image, surfaces=None):
        self.slot = slot
        self.image = image
        self.surfaces = image.surfaces if surfaces is None else surfaces
        self.started = False
        self.start = 0
        self.bindings: dict[int, str] = {}
        self.state = "loaded"
        self.reason: str | None = None


class RecordConverter:
    """Turns records into trace events.

    ``key`` names the program field (``"prog"`` for backends, ``"slot"`` for machines).
    Register the program of a slot with :meth:`set_slot`; :meth:`convert` ignores records
    of an empty slot. The caller unwraps the stamp and passes the global cycle.
    :meth:`started` and :meth:`event` convert the two halves of a record for a caller
    that keeps its own :class:`SlotEvents` (the RTL engines).
    """

    def __init__(self, clock_hz: int, layers: int = isa.DEFAULT_LAYERS, key: str = "prog"):
        self.clock_hz = clock_hz
        self.key = key
        self.reg_names = isa.register_names(layers)
        self._wraps = [isa.register_field(i).wrap if name else None
                       for i, name in enumerate(self.reg_names)]
        self._slots: dict[int, tuple[int, SlotEvents]] = {}

    def time_us(self, cycle: int) -> float:
        return time_us(cycle, self.clock_hz)

    def set_slot(self, slot: int, prog_id: int, image, surfaces=None) -> None:
        self._slots[slot] = (prog_id, SlotEvents(slot, image, surfaces))

    def clear_slot(self, slot: int) -> None:
        self._slots.pop(slot, None)

    def bindings(self, slot: int) -> dict[int, str]:
        """The layer bindings the program in ``slot`` made since its start."""
        prog = self._slots.get(slot)
        return dict(prog[1].bindings) if prog else {}

    def convert(self, rec: Record, g: int) -> list[dict]:
        """The events of one record at global cycle ``g`` (0, 1 or 2 events)."""
        prog = self._slots.get(rec.slot)
        if prog is None:
            return []
        pid, s = prog
        out = [self.started(pid, s, g)] if rec.started else []
        if rec.kind != EventKind.NONE:
            out.append(self.event(pid, s, rec.kind, rec.payload, g))
        return out

    def started(self, pid: int, s: SlotEvents, g: int) -> dict:
        """The ``state running`` event of a record's ``started`` flag at global cycle ``g``."""
        s.started, s.start, s.bindings = True, g, {}
        return {"event": "state", self.key: pid, "state": "running", "reason": "start",
                "pc": 0, "cycle": 0, "time_us": 0.0}

    def event(self, pid: int, s: SlotEvents, kind: int, payload: int, g: int) -> dict:
        """The event of a record of ``kind`` (not NONE) at global cycle ``g``."""
        c = g - s.start if s.started else 0
        t = time_us(c, self.clock_hz)
        p = payload
        if kind == _IRQ:
            tags = s.image.tags
            if p & 0xFF >= len(tags):
                raise _not_in_table(s, "tag", p & 0xFF, tags)
            return {"event": "irq", self.key: pid, "tag": tags[p & 0xFF], "cycle": c,
                    "time_us": t}
        if kind == _REG:
            idx = p >> 16
            wrap = self._wraps[idx] if idx < len(self._wraps) else None
            if wrap is None:
                raise CoreEventError(f"slot {s.slot}: REG record for register index {idx}, "
                                     "which does not exist")
            return {"event": "reg", self.key: pid, "reg": self.reg_names[idx],
                    "value": wrap(p & 0xFFFF), "cycle": c, "time_us": t}
        if kind == _BIND:
            layer, sub = divmod(p >> 16, isa.REG_STRIDE)
            if sub != isa.SURFACE_FIELD.index:
                raise CoreEventError(f"slot {s.slot}: BIND record for register index "
                                     f"{p >> 16}, which is no surface register")
            surfaces = s.surfaces
            if p & 0xFFFF >= len(surfaces) or surfaces[p & 0xFFFF] is None:
                raise _not_in_table(s, "surface", p & 0xFFFF, surfaces)
            surface = s.bindings[layer] = surfaces[p & 0xFFFF]
            return {"event": "bind", self.key: pid, "layer": layer, "surface": surface,
                    "cycle": c, "time_us": t}
        if kind == _STATE:
            state, reason, pc = state_fields(p)
            s.state, s.reason = STATE_NAMES.get(state, "faulted"), REASON_NAMES.get(reason)
            return {"event": "state", self.key: pid, "state": s.state, "reason": s.reason,
                    "pc": pc, "cycle": c, "time_us": t}
        raise CoreEventError(f"slot {s.slot}: unknown event kind {kind}")


def _not_in_table(s: SlotEvents, what: str, index: int, table) -> CoreEventError:
    return CoreEventError(f"slot {s.slot}: {what} index {index} is not in the image's "
                          f"{what} table ({len(table)} entries)")
