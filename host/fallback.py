"""A board first, the soft VM when the board is gone (``copperd --fallback soft``).

:class:`FallbackBackend` puts programs on a primary backend (the board) while it is
online. When the board is lost, its programs move to a real-time
:class:`~copperline.host.soft.SoftBackend`: a running one restarts from its first op
there, announced by a ``state running`` event with reason ``fallback-soft``, instead of
the board's ``faulted`` event. They stay on the VM until unloaded; programs loaded while
the board is back go to the board. Program ids are this backend's own, whichever backend
runs the program.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

from copperline.firmware import isa
from copperline.firmware.board_interface import DEFAULT_CLOCK_HZ
from copperline.firmware.image import Image
from copperline.host.backend import Backend, BackendError, ProgramStatus
from copperline.host.fpga import FpgaBackend
from copperline.host.fpga_connection import NO_BOARD

log = logging.getLogger(__name__)

#: The board's ``faulted`` reasons that mean "the board is gone", not "the program failed".
_LOST_REASONS = ("link-lost", "board-reset")


@dataclass
class _Placed:
    """Where one program runs: its image, which backend and its id there."""
    image: Image
    on_soft: bool
    inner: int
    state: str = "loaded"


class FallbackBackend(Backend):
    """``board`` while it answers, a soft VM (made on first need) when it does not."""

    counts_own_cycles = True          # (the board's, as FpgaBackend)

    def __init__(self, board: FpgaBackend):
        super().__init__()
        self.board = board
        self.name = board.name
        self._soft = None
        self._lock = threading.RLock()
        self._progs: dict[int, _Placed] = {}
        self._next_id = 1
        self._fences: dict[str, int] = {}
        self._mute_start: set[int] = set()    # soft ids whose start we announced already
        board.set_event_sink(self._board_event)

    @property
    def clock_hz(self) -> int:
        return self.board.clock_hz or DEFAULT_CLOCK_HZ

    @property
    def vsync_hz(self) -> float:
        return self.board.vsync_hz

    def link_stats(self) -> dict:
        """The board link's counters (empty while the board is gone)."""
        return self.board.link_stats()

    # -- the two backends' events -----------------------------------------------------
    def _pid(self, on_soft: bool, inner: int) -> int | None:
        return next((pid for pid, p in self._progs.items()
                     if p.on_soft == on_soft and p.inner == inner), None)

    def _relay(self, ev: dict, on_soft: bool) -> None:
        inner = ev.get("prog")
        if inner is None:
            self.emit(ev)
            return
        with self._lock:
            pid = self._pid(on_soft, inner)
            if pid is None:
                return
            if ev.get("event") == "state":
                self._progs[pid].state = ev["state"]
        self.emit({**ev, "prog": pid})

    def _board_event(self, ev: dict) -> None:
        if ev.get("event") == "state" and ev.get("state") == "faulted" \
                and ev.get("reason") in _LOST_REASONS:
            with self._lock:
                pid = self._pid(False, ev["prog"])
                if pid is not None:
                    self._move_to_soft(pid)
                    return
        self._relay(ev, on_soft=False)

    def _soft_event(self, ev: dict) -> None:
        if ev.get("reason") == "start" and ev.get("prog") in self._mute_start:
            self._mute_start.discard(ev["prog"])
            return
        self._relay(ev, on_soft=True)

    # -- the soft VM ----------------------------------------------------------------------
    def _ensure_soft(self):
        with self._lock:
            if self._soft is None:
                from copperline.host.soft import SoftBackend
                soft = SoftBackend("monotonic", clock_hz=self.clock_hz,
                                   vsync_hz=self.board.vsync_hz, layers=self.board.layers)
                soft.set_event_sink(self._soft_event)
                soft.open()
                for name, value in self._fences.items():
                    soft.fence(name, value)
                self._soft = soft
            return self._soft

    def _move_to_soft(self, pid: int) -> None:
        """The board lost program ``pid``: load it on the VM (and start it if it ran)."""
        p = self._progs[pid]
        running = p.state == "running"
        soft = self._ensure_soft()
        self.board.unload(p.inner)
        p.on_soft, p.inner = True, soft.load(p.image)
        if running:
            self._mute_start.add(p.inner)
            # emitted before the soft start, so it precedes the program's first events
            self.emit({"event": "state", "prog": pid, "state": "running",
                       "reason": "fallback-soft", "pc": 0, "cycle": 0, "time_us": 0.0})
            soft.start(p.inner)
        log.warning("fallback: program %d moved to the soft VM (%s)", pid,
                    "restarted from its first op" if running else "loaded")

    def _where(self, prog_id) -> tuple[Backend, _Placed]:
        try:
            p = self._progs[prog_id]
        except (KeyError, TypeError):
            raise BackendError("NOT_FOUND", f"no program with id {prog_id!r}") from None
        return (self._soft if p.on_soft else self.board), p

    # -- Backend ----------------------------------------------------------------------------
    def open(self) -> None:
        self.board.open(wait=True)
        if not self.board.online:
            self._ensure_soft()

    def close(self) -> None:
        self.board.close()
        if self._soft is not None:
            self._soft.close()
            self._soft = None

    def load(self, image: Image, surfaces=None) -> int:
        with self._lock:
            placed = None
            if self.board.online:
                try:
                    placed = _Placed(image, False, self.board.load(image, surfaces))
                except BackendError as exc:
                    if exc.code != NO_BOARD:
                        raise
            if placed is None:
                placed = _Placed(image, True, self._ensure_soft().load(image))
            pid, self._next_id = self._next_id, self._next_id + 1
            self._progs[pid] = placed
            return pid

    def start(self, prog_id: int) -> None:
        backend, p = self._where(prog_id)
        backend.start(p.inner)

    def stop(self, prog_id: int) -> None:
        backend, p = self._where(prog_id)
        backend.stop(p.inner)

    def start_many(self, prog_ids) -> None:
        placed = [self._where(i) for i in prog_ids]
        if placed and all(b is self.board for b, _ in placed):
            self.board.start_many([p.inner for _, p in placed])
        else:
            for backend, p in placed:
                backend.start(p.inner)

    def start_cycle(self, prog_id: int) -> int | None:
        backend, p = self._where(prog_id)
        return backend.start_cycle(p.inner)

    def unload(self, prog_id: int) -> None:
        backend, p = self._where(prog_id)
        backend.unload(p.inner)
        with self._lock:
            del self._progs[prog_id]

    def status(self, prog_id: int) -> ProgramStatus:
        backend, p = self._where(prog_id)
        st = backend.status(p.inner)
        st.id = prog_id
        return st

    def programs(self) -> list[ProgramStatus]:
        return [self.status(pid) for pid in sorted(self._progs)]

    def fence(self, timeline: str, value: int) -> None:
        self.board.fence(timeline, value)
        with self._lock:
            self._fences[timeline] = value
            soft = self._soft
        if soft is not None:
            soft.fence(timeline, value)

    def regs(self) -> dict[str, int]:
        if not self.board.online and self._soft is not None:
            return self._soft.regs()
        return self.board.regs()
