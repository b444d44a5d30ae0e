"""The fpga backend: Copper programs on a board's core, over the link (docs/link.md).

:class:`FpgaBackend` implements :class:`~copperline.host.backend.Backend` with the same
program ids, states and events as the soft backend. It talks to the board through
:class:`copperline.host.link.Link`, so ``/dev/ttyUSB1``, ``socket://127.0.0.1:PORT`` (the
virtual board, ``copper board sim``) and any pyserial URL work; without a port the board
is discovered by its USB id (``copperline.boards.discover``).

* **open**: find, identify and reset the board (:mod:`copperline.host.fpga_connection`):
  a run on the board starts from what a run on the VM starts from.
* **programs**: one per core context (slot). ``load`` checks the image fits
  ``program_words`` (BAD_ARG otherwise), uploads it, resets the slot and writes the slot's
  fence entries with the current values of the image's timelines.
* **time**: event records carry the 32-bit global core cycle; ``cycle`` is counted from the
  program's ``started`` record (docs/core.md). Hardware cycle stamps *are* real time, so
  there is no ``wall_us``. A ``start`` when no other program runs on the board also resets
  the board's time base (CTL START_TB): the program starts at global cycle 0 with the vsync
  phase a fresh VM has, which is what makes fpga and VM traces equal cycle for cycle.
* **fences**: a timeline *name* maps to each loaded program's local index; every slot that
  uses it is written.
* **events**: pulled: a reader thread READs the EVENTS space in batches of up to 63
  records, so every record is carried by an acknowledged, retransmitted request and none
  is lost to line noise. The board's own FIFO drops are reported as ``{"event": "dropped", "reason": "fifo"}``
  (:mod:`copperline.host.fpga_events`).
* **board gone**: a failed port, a link timeout, or a board that lost its programs (reset,
  re-flashed) ends the board's programs with ``{"event": "state", "state": "faulted",
  "reason": "link-lost"}`` (or ``board-reset``); commands then fail with ``NO_BOARD``
  until the board is back (it is re-identified every ``reconnect_s``; programs are
  uploaded again, ready to start). :class:`~copperline.host.fallback.FallbackBackend`
  moves them to the soft VM instead (``copperd --fallback soft``).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

from copperline.firmware import board_interface as proto
from copperline.firmware import isa
from copperline.firmware.board_interface import DEFAULT_BAUD, STATE_NAMES
from copperline.firmware.image import Image, ImageError
from copperline.firmware.surface_memory import ROW_WORDS, SurfaceMemory, SurfaceMemoryFull
from copperline.host.backend import Backend, BackendError, ProgramState, ProgramStatus
from copperline.host.link import BoardInfo, Link, LinkError, LinkStatusError
from copperline.host.fpga_connection import NO_BOARD, connect, find_board_url
from copperline.host.fpga_events import EventPump, pull_events

log = logging.getLogger(__name__)

__all__ = ["FpgaBackend"]

_MASK32 = 0xFFFFFFFF
_RUNNING_CODES = (1, 2, 3)
_STOPPED_CODE = 5


@dataclass
class _Prog:
    id: int
    image: Image
    sha: str
    slot: int | None = None            # board slot; None when none was free at a reconnect
    state: str = "loaded"
    reason: str | None = None
    pc: int = 0
    start_g: int | None = None         # global cycle of the last start (board)
    lost: str | None = None            # link-lost / board-reset: ended by losing the board
    waiter: threading.Event | None = field(default=None, repr=False)
    wait_for: str = ""                 # "start" or "stop": what the waiter waits for
    #: the image's surfaces (name -> LoadedSurface), when the board shows surfaces
    surfaces: dict = field(default_factory=dict, repr=False)


class FpgaBackend(Backend):
    """Programs on a board's Copper core over the link.

    Parameters
    ----------
    port : str or None
        Serial port or pyserial URL; None discovers the board (``board`` narrows it).
    board : str or None
        Board name (``icebreaker``, ``ulx3s-25f``, ...): for discovery and messages.
    baud : int or None
        Link rate (default 3 Mbaud, ``DEFAULT_BAUD``, what ``copper build`` uses).
    timeout, retries :
        Link retransmission (see :class:`~copperline.host.link.Link`).
    reconnect_s, poll_s :
        How often to look for a lost board, and to check a present one (status poll).
    event_poll_s :
        Pause between polls that found fewer than a full batch while a
        program runs (10x longer while none does).

    A board with a display (INFO ``surface_words``) shows BIND_LAYER's surfaces: a load
    converts them (``copperline.host.surfaces``), places them in the board's surface
    memory (``copperline.firmware.surface_memory``; shared by every program that binds
    the same pixels, freed with the last) and loads the program with its BIND_LAYER ops
    naming the surfaces' descriptors.
    """

    name = "fpga"
    counts_own_cycles = True

    def __init__(self, port: str | None = None, board: str | None = None, *,
                 baud: int | None = None, timeout: float = 0.2,
                 retries: int = 5, reconnect_s: float = 1.0, poll_s: float = 1.0,
                 command_timeout: float = 5.0, event_poll_s: float = 0.002):
        super().__init__()
        self._surface_memory: SurfaceMemory | None = None
        self.event_poll_s = event_poll_s
        self._poller: threading.Thread | None = None
        self.port = port
        self.board = board
        self.baud = baud or DEFAULT_BAUD
        self.timeout, self.retries = timeout, retries
        self.reconnect_s, self.poll_s = reconnect_s, poll_s
        self.command_timeout = command_timeout
        self.clock_hz = 0
        self.vsync_hz = isa.DEFAULT_VSYNC_HZ
        self.layers = isa.DEFAULT_LAYERS
        self.info: BoardInfo | None = None
        self.url: str | None = None
        self.link: Link | None = None
        self.lost_reason: str | None = None
        self._lock = threading.RLock()
        self._progs: dict[int, _Prog] = {}
        self._next_id = 1
        self._fences: dict[str, int] = {}
        self._pump: EventPump | None = None
        self._stop = threading.Event()
        self._monitor: threading.Thread | None = None
        self._opened = False

    # -- connection ---------------------------------------------------------------------
    @property
    def online(self) -> bool:
        return self.link is not None

    def _connect(self) -> None:
        """Open the link, identify the board, reset it; BackendError NO_BOARD if that fails."""
        session = connect(find_board_url(self.port, self.board), baud=self.baud,
                          timeout=self.timeout, retries=self.retries,
                          on_lost=self._on_lost)
        info, link = session.info, session.link
        with self._lock:
            self.info, self.url = info, session.url
            self.clock_hz = info.clock_hz
            # the exact period (a display's frame rate is no whole number of mHz);
            # a board without the word (0) gives its rate in mHz
            period = info.words.get("vsync_period", 0)
            self.vsync_hz = (info.clock_hz / period if period
                             else info.vsync_hz_x1000 / 1000)
            self.contexts, self.program_words = info.contexts, info.program_words
            self.layers = info.layers
            # (a board that connects afresh holds no surfaces: every program's go back
            # with its upload)
            self._surface_memory = SurfaceMemory(info.words.get("surface_words", 0))
            self._pump = EventPump(info, session.dropped)
            self.link, self.lost_reason = link, None
        self._poller = threading.Thread(target=self._pull, args=(link,),
                                        name="fpga-events", daemon=True)
        self._poller.start()
        log.info("fpga backend: board on %s: core clock %d Hz, %d contexts x %d words, "
                 "fabric %d Hz, %d baud", session.url, info.clock_hz, info.contexts,
                 info.program_words, info.fabric_hz, info.baud)

    def open(self, *, wait: bool = False) -> None:
        """Connect to the board (discovering it without a port) and start the monitor.

        Without a board this raises NO_BOARD, unless ``wait``: then the backend opens
        offline (commands fail with NO_BOARD) and connects when the board appears."""
        if self._opened:
            return
        try:
            self._connect()
        except BackendError as exc:
            if not wait:
                raise
            log.warning("fpga backend: no board yet (%s); looking for it every %g s",
                        exc.message, self.reconnect_s)
            self.lost_reason = "no-board"
        self._stop.clear()
        self._monitor = threading.Thread(target=self._monitor_loop, name="fpga-monitor",
                                         daemon=True)
        self._monitor.start()
        self._opened = True

    def close(self) -> None:
        """Stop every program (``stopped`` events), reset the board, release everything."""
        with self._lock:
            running = [p.id for p in self._progs.values() if p.state == "running"]
        for pid in running:                     # the event reader still runs: events arrive
            try:
                self.stop(pid)
            except BackendError as exc:
                log.info("fpga backend: stopping program %d at close: %s", pid, exc.message)
        self._stop.set()
        if self._monitor is not None:
            self._monitor.join(timeout=5)
            self._monitor = None
        link = self.link
        if link is not None:
            try:
                # the last drops: a run's trace ends with its exact dropped count
                words = link.status(0)
                with self._lock:
                    out = self._pump.board_dropped(words[3])
                for ev in out:
                    self.emit(ev)
                link.reset()
            except LinkError:
                pass
            self.link = None
            link.close()
        self._opened = False

    # -- events -------------------------------------------------------------------------
    def _pull(self, link: Link) -> None:
        """Pull mode: read records while this link is the board's."""
        def lost(exc: LinkError) -> None:
            if self.link is link and not self._stop.is_set():
                self._lost("link-lost", str(exc))
        pull_events(link, keep_going=lambda: not self._stop.is_set() and self.link is link,
                    busy=lambda: any(p.state == "running" or p.waiter is not None
                                     for p in list(self._progs.values())),
                    on_record=self._record, on_error=lost, poll_s=self.event_poll_s)

    def _record(self, raw: int | bytes) -> None:
        out: list[dict] = []
        with self._lock:
            got = self._pump.record(raw) if self._pump is not None else None
            if got is None:
                return
            rec, g, events = got
            p = next((p for p in self._progs.values() if p.slot == rec.slot), None)
            for ev in events:
                if p is not None and ev["event"] == "state":
                    p.state, p.reason, p.pc = ev["state"], ev["reason"], ev["pc"]
                    if ev["reason"] == "start":
                        p.start_g = g
                    if p.waiter is not None and (
                            (p.wait_for == "start" and ev["reason"] == "start") or
                            (p.wait_for == "stop" and ev["state"] != "running")):
                        p.waiter.set()
                out.append(ev)
        for ev in out:
            self.emit(ev)

    def _on_lost(self, reason: str) -> None:
        # Reader thread: the port failed. The monitor does the rest (it may block).
        log.warning("fpga backend: link to %s lost: %s", self.url, reason)
        threading.Thread(target=self._lost, args=("link-lost", reason), daemon=True).start()

    def _lost(self, why: str, detail: str) -> None:
        """The board is gone (or lost its programs): end every board program."""
        with self._lock:
            link, self.link = self.link, None
            if link is None and why == "link-lost":
                return
            self.lost_reason = f"{why}: {detail}"
            out = []
            for p in self._progs.values():
                if p.slot is None:
                    continue
                p.state, p.reason, p.lost = "faulted", why, why
                out.append({"event": "state", "prog": p.id, "state": "faulted",
                            "reason": why, "pc": p.pc})
                if p.waiter is not None:
                    p.waiter.set()
        if link is not None:
            link.close()
        for ev in out:
            self.emit(ev)

    # -- the monitor thread -------------------------------------------------------------
    def _monitor_loop(self) -> None:
        while not self._stop.wait(self.poll_s if self.online else self.reconnect_s):
            if self.online:
                self._poll()
            else:
                self._reconnect()

    def _poll(self) -> None:
        """Read every slot's state: detects a board that stopped answering or was reset."""
        link = self.link
        if link is None:
            return
        try:
            words = link.read(proto.SPACE_STATUS, 0, self.contexts * proto.STATUS_WORDS)
        except LinkError as exc:
            if self.link is link:
                self._lost("link-lost", str(exc))
            return
        out: list[dict] = []
        with self._lock:
            out = self._pump.board_dropped(words[3])
        for ev in out:
            self.emit(ev)
        with self._lock:
            reset = any(p.slot is not None and p.state == "running" and p.lost is None
                        and words[p.slot * proto.STATUS_WORDS] == 0
                        and not self._pump.timebase_pending(p.slot) and p.start_g is not None
                        for p in self._progs.values())
        if reset:
            log.warning("fpga backend: the board on %s lost its running programs (reset or "
                        "re-flashed)", self.url)
            self._lost("board-reset", "running programs found in state loaded")

    def _reconnect(self) -> None:
        # Under the lock from connect to the last re-upload: a command (say start) must
        # not reach the freshly reset board before its programs are back on it.
        with self._lock:
            try:
                self._connect()
            except BackendError as exc:
                log.debug("fpga backend: board not back yet: %s", exc.message)
                return
            # (warning, like the loss: whoever saw the board go must see it come back)
            back = sorted(self._progs)
            log.warning("fpga backend: board back on %s; %s", self.url,
                        f"programs {', '.join(map(str, back))} uploaded again, "
                        "ready to start" if back else "no programs to upload again")
            for p in sorted(self._progs.values(), key=lambda p: p.id):
                try:
                    p.slot = self._free_slot()
                    self._upload(p)
                except BackendError as exc:
                    log.error("fpga backend: program %d cannot go back on the board: %s",
                              p.id, exc.message)
                    p.slot = None

    # -- helpers ------------------------------------------------------------------------
    def _prog(self, prog_id) -> _Prog:
        try:
            return self._progs[prog_id]
        except (KeyError, TypeError):
            raise BackendError("NOT_FOUND", f"no program with id {prog_id!r}") from None

    def _need_link(self) -> Link:
        link = self.link
        if link is None:
            raise BackendError(NO_BOARD, f"the board is gone ({self.lost_reason or 'not open'}); "
                               f"waiting for it to come back on {self.url or self.port or 'its port'}")
        return link

    def _board(self, fn):
        """Run ``fn(link)``; a link failure ends the board's programs and raises NO_BOARD."""
        link = self._need_link()
        try:
            return fn(link)
        except LinkStatusError as exc:
            raise BackendError("INTERNAL", f"board refused: {exc}") from None
        except LinkError as exc:
            self._lost("link-lost", str(exc))
            raise BackendError(NO_BOARD, f"the board stopped answering: {exc}") from None

    def _free_slot(self) -> int:
        used = {p.slot for p in self._progs.values() if p.slot is not None}
        for slot in range(self.contexts):
            if slot not in used:
                return slot
        raise BackendError("BUSY", f"all {self.contexts} program contexts of the board are in use")

    def _check_image(self, image: Image) -> None:
        if not isinstance(image, Image):
            raise BackendError("BAD_FORMAT", f"load() needs an Image, got {type(image).__name__}")
        try:
            image.check()
        except ImageError as exc:
            raise BackendError("BAD_FORMAT", str(exc)) from None
        try:
            image.check_fits(self.program_words, self.layers)
        except ImageError as exc:
            raise BackendError("BAD_ARG", f"{exc}: the board ({self.board or self.url}) has "
                               f"{self.program_words} words per program and {self.layers} "
                               "layers (its INFO)") from None

    def _surfaces_of(self, image: Image, source) -> dict:
        """The image's surfaces (name -> LoadedSurface) for a board that shows them, from
        ``source`` (a SurfaceSource; None: files from the working directory); {} for a
        board without surface memory."""
        from copperline.host.surfaces import SurfaceError, SurfaceSource
        if not image.surfaces or not self._surface_memory.surface_words:
            return {}
        source = source or SurfaceSource()
        try:
            return {name: source.get(name) for name in image.surfaces}
        except SurfaceError as exc:
            raise BackendError("BAD_ARG", str(exc)) from None

    def _place_surfaces(self, p: _Prog) -> tuple[tuple[int, ...], list | None, list]:
        """Place ``p``'s surfaces in the board's memory: the code to load (BIND_LAYER ops
        naming descriptors), the names by descriptor number (None: the image's table),
        and the writes still to make. Places all or none (SurfaceMemoryFull)."""
        if not p.surfaces:
            return p.image.code, None, []
        mem, placed, writes = self._surface_memory, [], []
        try:
            for name, loaded in p.surfaces.items():
                where, new = mem.place(loaded.key, loaded.surface)
                placed.append(loaded.key)
                if new:
                    writes += where.writes(loaded.surface)
        except SurfaceMemoryFull as exc:
            for key in placed:
                mem.release(key)
            raise BackendError("BUSY", f"surface {name!r} does not fit the board's surface "
                               f"memory ({mem.rows} lines of {2 * ROW_WORDS} pixels): {exc}") \
                from None
        numbers = [mem.placement(p.surfaces[n].key).number for n in p.image.surfaces]
        names: list = [None] * (max(numbers) + 1)
        for name, number in zip(p.image.surfaces, numbers):
            names[number] = name
        field = isa.OP_BY_NAME["BIND_LAYER"].bit("surface")
        mask = ((1 << field.width) - 1) << field.lsb
        code = tuple((w & ~mask) | numbers[(w & mask) >> field.lsb] << field.lsb
                     if isa.decode(w).op.name == "BIND_LAYER" else w for w in p.image.code)
        return code, names, writes

    def _release_surfaces(self, p: _Prog) -> list[int]:
        """Free what only ``p`` used; the descriptor numbers freed."""
        return [n for n in (self._surface_memory.release(loaded.key)
                            for loaded in p.surfaces.values()
                            if loaded.key in self._surface_memory) if n is not None]

    def _upload(self, p: _Prog) -> None:
        slot, image = p.slot, p.image
        fences = [self._fences.get(n, 0) for n in image.timelines]
        fences += [0] * (isa.FENCE_TIMELINES - len(fences))
        code, names, writes = self._place_surfaces(p)

        def do(link):
            for addr, words in writes:
                link.upload(words, base=addr, space=proto.SPACE_SURFACE)
            link.upload(code, base=slot * self.program_words)
            link.write(proto.SPACE_CTL, slot, [proto.CTL_RESET_SLOT])
            link.write(proto.SPACE_FENCE, slot * isa.FENCE_TIMELINES, fences)
        try:
            self._board(do)
        except BackendError:
            self._release_surfaces(p)
            raise
        self._pump.converter.set_slot(slot, p.id, image, names)
        p.start_g = None

    def _wait(self, p: _Prog, what: str) -> bool:
        """Wait for ``p``'s ``what`` ("start", "stop") record. The board keeps room in
        its event FIFO for state records, so one comes once the records ahead of it are
        read; False after ``command_timeout`` (the host fell that far behind)."""
        ev = p.waiter
        if ev is None:
            return True
        ev.wait(self.command_timeout)
        p.waiter = None
        if ev.is_set():
            return True
        log.warning("fpga backend: program %d: no %s event from the board within %.1f s",
                    p.id, what, self.command_timeout)
        return False

    def _alone(self) -> bool:
        """No board program runs: a start now also resets the board's time base."""
        return not any(q.state == "running" and q.slot is not None for q in self._progs.values())

    # -- Backend ------------------------------------------------------------------------
    def load(self, image: Image, surfaces=None) -> int:
        with self._lock:
            self._need_link()
            self._check_image(image)
            p = _Prog(self._next_id, image, image.sha256(), slot=self._free_slot(),
                      surfaces=self._surfaces_of(image, surfaces))
            self._upload(p)
            self._next_id += 1
            self._progs[p.id] = p
            return p.id

    def start(self, prog_id: int) -> None:
        with self._lock:
            p = self._prog(prog_id)
            if p.state == "running":
                raise BackendError("BUSY", f"program {prog_id}: already running")
            self._need_link()
            if p.slot is None:
                raise BackendError("BUSY", f"program {prog_id}: no free context on the board "
                                   "since it came back; unload another program")
            p.lost = None                      # (ended by a lost board: the upload was redone)
            alone = self._alone()
            if alone:
                self._pump.expect_timebase_reset(p.slot)
            p.waiter, p.wait_for = threading.Event(), "start"
            slot = p.slot
        try:
            self._board(lambda link: link.start(slot, timebase=alone))
        except BackendError:
            p.waiter = None
            if self._pump is not None:
                self._pump.cancel_timebase_reset(slot)
            raise
        self._wait(p, "start")

    def stop(self, prog_id: int) -> None:
        with self._lock:
            p = self._prog(prog_id)
            if p.state != "running":
                return
            p.waiter, p.wait_for = threading.Event(), "stop"
            slot = p.slot

        def do(link):
            link.stop(slot)
            return link.status(slot)[0]
        code = self._board(do)
        if code == _STOPPED_CODE or code in _RUNNING_CODES:
            if not self._wait(p, "stop") and p.state == "running":
                # The record did not come in time (the host is behind the board): say it
                # anyway, from the board's status (its cycle is the time of this read).
                words = self._board(lambda link: link.status(slot))
                with self._lock:
                    c = (words[2] - p.start_g) & _MASK32 if p.start_g is not None else 0
                    p.state, p.reason, p.pc = "stopped", "host", words[1]
                    ev = {"event": "state", "prog": p.id, "state": "stopped", "reason": "host",
                          "pc": words[1], "cycle": c,
                          "time_us": self._pump.converter.time_us(c), "inexact": True}
                self.emit(ev)
        else:
            p.waiter = None                   # it had ended by itself; its event follows

    def start_many(self, prog_ids) -> None:
        """Start several programs in the same core cycle: one CTL write of their slots'
        mask (``Link.start_slots``; the first cycle is global cycle 0 when nothing else
        runs). A bitstream without the mask address (an older build) refuses it; then
        their START words go out in one frame, back to back, and land a core cycle or
        two apart (``start_cycle`` says where). Programs already running are started
        one by one (which refuses them)."""
        with self._lock:
            ps = [self._prog(i) for i in prog_ids]
            slots = [p.slot for p in ps]
            one_frame = (len(ps) > 1 and self.link is not None
                         and all(p.state != "running" for p in ps) and None not in slots)
            if one_frame:
                alone = self._alone()
                if alone:
                    self._pump.expect_timebase_reset(slots[0])
                for p in ps:
                    p.lost = None
                    p.waiter, p.wait_for = threading.Event(), "start"
        if not one_frame:
            for i in prog_ids:
                self.start(i)
            return
        words = [proto.CTL_START_TB if alone else proto.CTL_START] + \
            [proto.CTL_START] * (len(ps) - 1)
        consecutive = slots == list(range(slots[0], slots[0] + len(slots)))

        def do(link):
            try:
                link.start_slots(slots, timebase=alone)
            except LinkStatusError:                # no mask address on this bitstream
                if not consecutive:
                    for slot, word in zip(slots, words):
                        link.write(proto.SPACE_CTL, slot, [word])
                else:
                    link.write(proto.SPACE_CTL, slots[0], words)
        try:
            self._board(do)
        except BackendError:
            for p in ps:
                p.waiter = None
            if self._pump is not None:
                self._pump.cancel_timebase_reset(slots[0])
            raise
        for p in ps:
            self._wait(p, "start")

    def start_cycle(self, prog_id: int) -> int | None:
        """The board cycle (this backend's unwrapped count) in which the program last
        started, from its started record; None before that (``copper run`` takes the
        offsets between programs' starts from it)."""
        with self._lock:
            return self._prog(prog_id).start_g

    def unload(self, prog_id: int) -> None:
        p = self._prog(prog_id)
        if self.link is not None:
            self.stop(prog_id)
        with self._lock:
            if p.slot is not None and self._pump is not None:
                self._pump.converter.clear_slot(p.slot)
            freed = (self._release_surfaces(p) if p.slot is not None
                     and self._surface_memory is not None else [])
            del self._progs[prog_id]
        if freed and self.link is not None:
            # a layer the program left bound to them shows nothing, not the surface
            # that takes the number next (height 0)
            try:
                self._board(lambda link: [link.write(proto.SPACE_SURFACE, n, [0]) for n in freed])
            except BackendError as exc:
                log.warning("fpga backend: program %d: its freed surfaces stay described on "
                            "the board: %s", prog_id, exc.message)

    def _status_of(self, p: _Prog, words: list[int] | None) -> ProgramStatus:
        conv = self._pump.converter if self._pump is not None else None
        bindings = conv.bindings(p.slot) if conv and p.slot is not None else {}
        if p.lost is not None or words is None or p.slot is None:
            return ProgramStatus(id=p.id, state=ProgramState(p.state), pc=p.pc,
                                 slot=p.slot if p.slot is not None else -1, reason=p.reason,
                                 bindings=bindings, program=p.sha)
        code, pc, cycle, _dropped = words[p.slot * proto.STATUS_WORDS:
                                          (p.slot + 1) * proto.STATUS_WORDS]
        state = STATE_NAMES.get(code, "faulted")
        if p.state == "loaded" and state != "running":
            state = "loaded"          # a fresh upload, or the START still on its way
        reason = p.reason if state == p.state else None
        if state == "stopped" and reason is None:
            reason = "host"
        c = (cycle - p.start_g) & _MASK32 if p.start_g is not None else 0
        return ProgramStatus(id=p.id, state=ProgramState(state), pc=pc, slot=p.slot, cycle=c,
                             reason=reason, bindings=bindings, program=p.sha)

    def _read_status(self) -> list[int] | None:
        if self.link is None:
            return None
        return self._board(lambda link: link.read(proto.SPACE_STATUS, 0,
                                                  self.contexts * proto.STATUS_WORDS))

    def status(self, prog_id: int) -> ProgramStatus:
        p = self._prog(prog_id)
        words = self._read_status() if p.slot is not None and p.lost is None else None
        with self._lock:
            return self._status_of(p, words)

    def programs(self) -> list[ProgramStatus]:
        words = self._read_status() if any(p.slot is not None for p in self._progs.values()) else None
        with self._lock:
            return [self._status_of(p, words) for p in sorted(self._progs.values(),
                                                              key=lambda p: p.id)]

    def fence(self, timeline: str, value: int) -> None:
        with self._lock:
            problem = isa.fence_update_problem(timeline, value, self._fences.get(timeline, 0))
            if problem:
                raise BackendError("BAD_ARG", problem)
            self._fences[timeline] = value
            writes = [(p.slot * isa.FENCE_TIMELINES + p.image.timelines.index(timeline))
                      for p in self._progs.values()
                      if p.slot is not None and timeline in p.image.timelines]
        if writes and self.link is not None:
            def do(link):
                for addr in writes:
                    link.fence(addr, value)
            self._board(do)

    def regs(self) -> dict[str, int]:
        n = self.layers * isa.REG_STRIDE
        raw = self._board(lambda link: link.regs(0, n))
        return {isa.register_name(i): isa.register_field(i).wrap(raw[i]) for i in range(n)
                if i % isa.REG_STRIDE < len(isa.REGISTER_FIELDS)}

    # -- extras -------------------------------------------------------------------------
    def link_stats(self) -> dict:
        """The link's counters (requests, retransmits, events, losses)."""
        link = self.link
        return {**link.stats.to_json(), **link.policy.to_json()} if link is not None else {}
