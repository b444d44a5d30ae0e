"""The fpga backend: Copper programs on a board's core, over the link (docs/link.md).

:class:`FpgaBackend` implements :class:`~copperline.host.backend.Backend` with the same
program ids, states and events as the soft backend. It talks to the board through
:class:`copperline.host.link.Link`, so ``/dev/ttyUSB1``, ``socket://127.0.0.1:PORT`` (the
virtual board, ``copper board sim``) and any pyserial URL work; without a port the board
is discovered by its USB id (``copperline.boards.discover``).

* **identify**: ``hello`` gives the core clock (the rate event stamps count), sizes and the
  ISA version; a bitstream without the core, or another ISA version, is refused.
* **reset**: opening the backend resets the board as a VM's machine reset: every slot
  stopped, the time base at 0, every register 0 (the gateware's reset-all keeps the
  register file, so a short program of ``MOVE reg, 0`` clears it) and stale event
  records dropped; a run on the board starts from what a run on the VM starts from.
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
* **events**: pulled by default (``events="pull"``): a reader thread READs the EVENTS
  space in batches of up to 63 records, so every record is carried by an acknowledged,
  retransmitted request and none is lost to line noise. ``events="push"`` takes the
  board's unsolicited event frames instead (lower latency, lost when the line corrupts
  them: reported as ``{"event": "dropped", "reason": "link"}``). The board's own FIFO
  drops are reported as ``{"event": "dropped", "reason": "fifo"}``.
* **board gone**: a failed port, a link timeout, or a board that lost its programs (reset,
  re-flashed) ends the board's programs with ``{"event": "state", "state": "faulted",
  "reason": "link-lost"}`` (or ``board-reset``); commands then fail with ``NO_BOARD``
  until the board is back (it is re-identified every ``reconnect_s``; programs are
  uploaded again, ready to start). With ``fallback="soft"`` the programs move to a
  real-time :class:`~copperline.host.soft.SoftBackend` instead (running ones restart from
  their first op there, announced by a ``state running`` event with reason
  ``fallback-soft``) and stay there until unloaded.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from copperline.firmware import isa
from copperline.firmware.image import Image, ImageError
from copperline.host import link as proto
from copperline.host.backend import Backend, BackendError, ProgramState, ProgramStatus
from copperline.host.core_events import (STATE_NAMES, CoreEventError, RecordConverter,
                                         TimestampUnwrapper, decode_record, record_bytes,
                                         slot_bits_for)

log = logging.getLogger(__name__)

__all__ = ["FpgaBackend", "FALLBACKS"]

FALLBACKS = (None, "soft")
#: Error code of commands that need the board while it is gone.
NO_BOARD = "NO_BOARD"
_MASK32 = 0xFFFFFFFF
_RUNNING_CODES = (1, 2, 3)
_STOPPED_CODE = 5


@dataclass
class _Prog:
    id: int
    image: Image
    sha: str
    slot: int | None = None            # board slot; None once on the soft fallback
    soft_id: int | None = None
    state: str = "loaded"
    reason: str | None = None
    pc: int = 0
    start_g: int | None = None         # global cycle of the last start (board)
    lost: str | None = None            # link-lost / board-reset: ended by losing the board
    waiter: threading.Event | None = field(default=None, repr=False)
    wait_for: str = ""                 # "start" or "stop": what the waiter waits for


def _clear_registers(link: proto.Link, info: proto.BoardInfo, timeout: float = 2.0) -> None:
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
                raise proto.LinkError("the board did not finish clearing its registers "
                                      f"within {timeout:g} s")
        link.reset()
    while True:                                        # its records, and stale ones
        n = link.frame_words // 2
        if len(link.read_events(n)) < n:
            break


class FpgaBackend(Backend):
    """Programs on a board's Copper core over the link.

    Parameters
    ----------
    port : str or None
        Serial port or pyserial URL; None discovers the board (``board`` narrows it).
    board : str or None
        Board name (``icebreaker``, ``ulx3s-25f``, ...): for discovery and messages.
    baud : int or None
        Link rate (default 1 Mbaud, what ``copper build`` uses).
    fallback : None or "soft"
        What runs the programs when the board is gone (see the module docstring).
    timeout, retries :
        Link retransmission (see :class:`~copperline.host.link.Link`).
    reconnect_s, poll_s :
        How often to look for a lost board, and to check a present one (status poll).
    events : "pull" or "push"
        How event records come back (see the module docstring).
    event_poll_s :
        Pull mode: pause between polls that found fewer than a full batch while a
        program runs (10x longer while none does).
    """

    name = "fpga"
    counts_own_cycles = True

    def __init__(self, port: str | None = None, board: str | None = None, *,
                 baud: int | None = None, fallback: str | None = None, timeout: float = 0.2,
                 retries: int = 5, reconnect_s: float = 1.0, poll_s: float = 1.0,
                 command_timeout: float = 5.0, events: str = "pull",
                 event_poll_s: float = 0.002):
        super().__init__()
        if fallback not in FALLBACKS:
            raise ValueError(f"fallback must be 'soft' or None (got {fallback!r})")
        if events not in ("pull", "push"):
            raise ValueError(f"events must be 'pull' or 'push' (got {events!r})")
        self.events_mode = events
        self.event_poll_s = event_poll_s
        self._poller: threading.Thread | None = None
        from copperline.hdl.uart import DEFAULT_BAUD
        self.port = port
        self.board = board
        self.baud = baud or DEFAULT_BAUD
        self.fallback = fallback
        self.timeout, self.retries = timeout, retries
        self.reconnect_s, self.poll_s = reconnect_s, poll_s
        self.command_timeout = command_timeout
        self.clock_hz = 0
        self.vsync_hz = isa.DEFAULT_VSYNC_HZ
        self.info: proto.BoardInfo | None = None
        self.url: str | None = None
        self.link: proto.Link | None = None
        self.lost_reason: str | None = None
        self._lock = threading.RLock()
        self._progs: dict[int, _Prog] = {}
        self._next_id = 1
        self._fences: dict[str, int] = {}
        self._conv: RecordConverter | None = None
        self._unwrap = TimestampUnwrapper()
        self._tb_slots: set[int] = set()      # started with a time-base reset, record pending
        self._ev_seq: int | None = None
        self._board_dropped: int | None = None
        self._soft = None
        self._soft_map: dict[int, int] = {}   # soft id -> prog id
        self._soft_mute: set[int] = set()     # soft ids whose start event we announced
        self._stop = threading.Event()
        self._monitor: threading.Thread | None = None
        self._opened = False

    # -- connection ---------------------------------------------------------------------
    @property
    def online(self) -> bool:
        return self.link is not None

    def _resolve(self) -> str:
        from copperline.boards.common import BoardError
        from copperline.boards.discover import find_ports, resolve_port
        from copperline.boards.registry import all_boards, get_board
        try:
            if self.port or self.board:
                board = get_board(self.board or "icebreaker")
                return resolve_port(board, self.port)
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

    def _connect(self) -> None:
        """Open the link, identify the board, reset it; BackendError NO_BOARD if that fails."""
        url = self._resolve()
        try:
            link = proto.Link(url, baud=self.baud, timeout=self.timeout, retries=self.retries,
                              on_event=self._on_event, on_lost=self._on_lost)
        except proto.LinkBusy as exc:             # (a tty another process holds)
            raise BackendError("BUSY", str(exc)) from None
        except proto.LinkError as exc:
            raise BackendError(NO_BOARD, str(exc)) from None
        try:
            info = link.hello()
            self._check_info(url, info)
            contexts = info.contexts
            link.reset()                                     # stop everything, time base 0
            link.event_mode(push=False)
            _clear_registers(link, info)                     # the VM's machine reset
            link.event_mode(push=self.events_mode == "push")
            dropped = link.status(0)[3] if contexts else 0
        except (proto.LinkError, BackendError) as exc:
            link.close()
            if isinstance(exc, BackendError):
                raise
            if isinstance(exc, proto.LinkBusy):   # another host holds the board
                raise BackendError("BUSY", str(exc)) from None
            raise BackendError(NO_BOARD, f"{url}: {exc}") from None
        with self._lock:
            self.info, self.url = info, url
            self.clock_hz = info.clock_hz
            self.vsync_hz = info.vsync_hz_x1000 / 1000
            self.contexts, self.program_words = info.contexts, info.program_words
            self.layers = info.layers
            self._slot_bits = slot_bits_for(info.contexts)
            self._conv = RecordConverter(info.clock_hz, info.layers)
            self._unwrap = TimestampUnwrapper()
            self._tb_slots.clear()
            self._ev_seq, self._board_dropped = None, dropped
            self.link, self.lost_reason = link, None
        if self.events_mode == "pull":
            self._poller = threading.Thread(target=self._events_loop, args=(link,),
                                            name="fpga-events", daemon=True)
            self._poller.start()
        log.info("fpga backend: board on %s: core clock %d Hz, %d contexts x %d words, "
                 "fabric %d Hz, %d baud", url, info.clock_hz, info.contexts,
                 info.program_words, info.fabric_hz, info.baud)

    def _check_info(self, url: str, info: proto.BoardInfo) -> None:
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

    def open(self) -> None:
        """Connect to the board (discovering it without a port) and start the monitor."""
        if self._opened:
            return
        try:
            self._connect()
        except BackendError:
            if self.fallback != "soft":
                raise
            log.warning("fpga backend: no board yet; running on the soft fallback until it "
                        "appears", exc_info=False)
            self.lost_reason = "no-board"
            self._ensure_soft()
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
                out: list[dict] = []
                with self._lock:
                    self._dropped(words[3], out)
                for ev in out:
                    self.emit(ev)
                link.reset()
            except proto.LinkError:
                pass
            self.link = None
            link.close()
        if self._soft is not None:
            self._soft.close()
            self._soft = None
        self._opened = False

    # -- events -------------------------------------------------------------------------
    def _events_loop(self, link: proto.Link) -> None:
        """Pull mode: read records while this link is the board's.

        The batch adapts: a read answers every word asked for, records or not, so an
        empty poll of the largest batch would hold the line for 5.1 ms at 1 Mbaud. A full
        batch doubles the next one (read again at once); a partial one asks for twice what
        it found next time (at least one record) after the poll pause."""
        batch = 1
        while not self._stop.is_set() and self.link is link:
            most = link.frame_words // 2          # (smaller while the line loses frames)
            batch = min(batch, most)
            try:
                records = link.read_events(batch)
            except proto.LinkError as exc:
                if self.link is link and not self._stop.is_set():
                    self._lost("link-lost", str(exc))
                return
            for raw in records:
                self._record(raw)
            if len(records) == batch:
                batch = min(2 * batch, most)
            else:
                batch = min(max(1, 2 * len(records)), most)
                busy = any(p.state == "running" or p.waiter is not None
                           for p in list(self._progs.values()))
                time.sleep(self.event_poll_s * (1 if busy else 10))

    def _dropped(self, dropped: int, out: list) -> None:
        if self._board_dropped is not None and dropped != self._board_dropped:
            out.append({"event": "dropped", "count": (dropped - self._board_dropped) & _MASK32,
                        "reason": "fifo"})
        self._board_dropped = dropped

    def _on_event(self, seq: int, dropped: int, body: bytes) -> None:
        """Push mode: an event frame (reader thread)."""
        out: list[dict] = []
        with self._lock:
            if self._conv is None:
                return
            if self._ev_seq is not None:
                gap = (seq - self._ev_seq - 1) & 0xFF
                if gap:
                    out.append({"event": "dropped", "count": gap, "reason": "link"})
            self._ev_seq = seq
            self._dropped(dropped, out)
        for ev in out:
            self.emit(ev)
        self._record(body[:self.info.event_bytes])

    def _record(self, raw: int | bytes) -> None:
        out: list[dict] = []
        with self._lock:
            if self._conv is None:
                return
            try:
                rec = decode_record(raw, self._slot_bits)
                if rec.started and rec.slot in self._tb_slots:
                    self._tb_slots.discard(rec.slot)
                    self._unwrap.rebase(rec.timestamp)     # the board's time base restarted
                g = self._unwrap.unwrap(rec.timestamp)
                events = self._conv.convert(rec, g)
            except CoreEventError as exc:
                log.error("fpga backend: bad event record %r: %s", raw, exc)
                return
            pid = next((p.id for p in self._progs.values() if p.slot == rec.slot), None)
            p = self._progs.get(pid) if pid is not None else None
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
        """The board is gone (or lost its programs): end or move every board program."""
        with self._lock:
            link, self.link = self.link, None
            if link is None and why == "link-lost":
                return
            self.lost_reason = f"{why}: {detail}"
            progs = [p for p in self._progs.values() if p.slot is not None]
        if link is not None:
            link.close()
        out = []
        if self.fallback == "soft":
            self._ensure_soft()
        for p in progs:
            with self._lock:
                was_running = p.state == "running"
                if self.fallback == "soft":
                    self._move_to_soft(p, was_running, out)
                else:
                    p.state, p.reason, p.lost = "faulted", why, why
                    out.append({"event": "state", "prog": p.id, "state": "faulted",
                                "reason": why, "pc": p.pc})
                if p.waiter is not None:
                    p.waiter.set()
        for ev in out:
            self.emit(ev)

    # -- soft fallback ------------------------------------------------------------------
    def _ensure_soft(self) -> None:
        with self._lock:
            if self._soft is not None:
                return
            from copperline.host.soft import SoftBackend
            soft = SoftBackend("monotonic", clock_hz=self.clock_hz or 12_000_000,
                               vsync_hz=self.vsync_hz, layers=getattr(self, "layers", 16))
            soft.set_event_sink(self._soft_event)
            soft.open()
            for name, value in self._fences.items():
                soft.fence(name, value)
            self._soft = soft

    def _move_to_soft(self, p: _Prog, running: bool, out: list) -> None:
        sid = self._soft.load(p.image)
        self._soft_map[sid] = p.id
        if self._conv is not None and p.slot is not None:
            self._conv.clear_slot(p.slot)
        p.slot, p.soft_id = None, sid
        if running:
            self._soft_mute.add(sid)
            # emitted before the soft start, so it precedes the program's first events
            self.emit({"event": "state", "prog": p.id, "state": "running",
                       "reason": "fallback-soft", "pc": 0, "cycle": 0, "time_us": 0.0})
            self._soft.start(sid)
            p.state, p.reason = "running", "fallback-soft"

    def _soft_event(self, ev: dict) -> None:
        sid = ev.get("prog")
        if sid is None:
            self.emit(ev)
            return
        if ev.get("reason") == "start" and sid in self._soft_mute:
            self._soft_mute.discard(sid)
            return
        pid = self._soft_map.get(sid)
        if pid is None:
            return
        ev = {k: (pid if k == "prog" else v) for k, v in ev.items()}
        p = self._progs.get(pid)
        if p is not None and ev.get("event") == "state":
            p.state, p.reason = ev["state"], ev.get("reason")
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
        except proto.LinkError as exc:
            if self.link is link:
                self._lost("link-lost", str(exc))
            return
        out: list[dict] = []
        with self._lock:
            if self.events_mode == "pull":
                self._dropped(words[3], out)
        for ev in out:
            self.emit(ev)
        with self._lock:
            reset = any(p.slot is not None and p.state == "running" and p.lost is None
                        and words[p.slot * proto.STATUS_WORDS] == 0
                        and p.slot not in self._tb_slots and p.start_g is not None
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
            back = [p.id for p in self._progs.values() if p.soft_id is None]
            log.warning("fpga backend: board back on %s; %s", self.url,
                        f"programs {', '.join(map(str, sorted(back)))} uploaded again, "
                        "ready to start" if back else "no programs to upload again")
            for p in sorted(self._progs.values(), key=lambda p: p.id):
                if p.soft_id is not None:
                    continue                    # stays on the fallback until unloaded
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

    def _need_link(self) -> proto.Link:
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
        except proto.LinkStatusError as exc:
            raise BackendError("INTERNAL", f"board refused: {exc}") from None
        except proto.LinkError as exc:
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
        if len(image.code) > self.program_words:
            raise BackendError("BAD_ARG", f"the program has {len(image.code)} words; the board "
                               f"({self.board or self.url}) holds {self.program_words} words per "
                               "program (program_words in its INFO)")
        regs = self.layers * isa.REG_STRIDE
        for addr, word in enumerate(image.code):
            ins = isa.decode(word)
            if ins.name in ("MOVE", "ADD") and (
                    ins.fields["reg"] >= regs or ins.fields["reg"] % isa.REG_STRIDE
                    >= len(isa.REGISTER_FIELDS)):
                raise BackendError("BAD_ARG", f"word {addr}: {ins.name} register index "
                                   f"{ins.fields['reg']} does not exist on the board's core "
                                   f"({self.layers} layers)")

    def _upload(self, p: _Prog) -> None:
        slot, image = p.slot, p.image
        fences = [self._fences.get(n, 0) for n in image.timelines]
        fences += [0] * (isa.FENCE_TIMELINES - len(fences))

        def do(link):
            link.upload(image.code, base=slot * self.program_words)
            link.write(proto.SPACE_CTL, slot, [proto.CTL_RESET_SLOT])
            link.write(proto.SPACE_FENCE, slot * isa.FENCE_TIMELINES, fences)
        self._board(do)
        self._conv.set_slot(slot, p.id, image)
        p.start_g = None

    def _wait(self, p: _Prog, what: str) -> bool:
        """Wait for ``p``'s ``what`` ("start", "stop") record. The board keeps room in
        its event FIFO for state records, so one comes once the records ahead of it are
        read; False after ``command_timeout`` (a push-mode frame lost on the line)."""
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

    # -- Backend ------------------------------------------------------------------------
    def load(self, image: Image) -> int:
        with self._lock:
            if self.link is None and self.fallback == "soft" and self._soft is not None:
                try:
                    sid = self._soft.load(image)
                except BackendError:
                    raise
                p = _Prog(self._next_id, image, image.sha256(), soft_id=sid)
                self._soft_map[sid] = p.id
            else:
                self._need_link()
                self._check_image(image)
                p = _Prog(self._next_id, image, image.sha256(), slot=self._free_slot())
                self._upload(p)
            self._next_id += 1
            self._progs[p.id] = p
            return p.id

    def start(self, prog_id: int) -> None:
        with self._lock:
            p = self._prog(prog_id)
            if p.soft_id is not None:
                self._soft.start(p.soft_id)
                return
            if p.state == "running":
                raise BackendError("BUSY", f"program {prog_id}: already running")
            self._need_link()
            if p.lost is not None:             # ended by a lost board: upload was redone
                p.lost = None
            alone = not any(q.state == "running" and q.slot is not None
                            for q in self._progs.values())
            if alone:
                self._tb_slots.add(p.slot)
            p.waiter, p.wait_for = threading.Event(), "start"
            slot = p.slot
        try:
            self._board(lambda link: link.start(slot, timebase=alone))
        except BackendError:
            p.waiter = None
            self._tb_slots.discard(slot)
            raise
        self._wait(p, "start")

    def stop(self, prog_id: int) -> None:
        with self._lock:
            p = self._prog(prog_id)
            if p.soft_id is not None:
                self._soft.stop(p.soft_id)
                return
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
                # The record was lost (a push-mode frame corrupted on the line): say it
                # anyway, from the board's status (its cycle is the time of this read).
                words = self._board(lambda link: link.status(slot))
                with self._lock:
                    c = (words[2] - p.start_g) & _MASK32 if p.start_g is not None else 0
                    p.state, p.reason, p.pc = "stopped", "host", words[1]
                    ev = {"event": "state", "prog": p.id, "state": "stopped", "reason": "host",
                          "pc": words[1], "cycle": c, "time_us": self._conv.time_us(c),
                          "inexact": True}
                self.emit(ev)
        else:
            p.waiter = None                   # it had ended by itself; its event follows

    def start_many(self, prog_ids) -> None:
        """Start several programs in the same core cycle: one CTL write of their slots'
        mask (``Link.start_slots``; the first cycle is global cycle 0 when nothing else
        runs). A bitstream without the mask address (an older build) refuses it; then
        their START words go out in one frame, back to back, and land a core cycle or
        two apart (``start_cycle`` says where). Programs on the soft fallback or
        already running are started one by one."""
        with self._lock:
            ps = [self._prog(i) for i in prog_ids]
            slots = [p.slot for p in ps]
            one_frame = (len(ps) > 1 and self.link is not None
                         and all(p.soft_id is None and p.state != "running" for p in ps)
                         and None not in slots)
            if one_frame:
                alone = not any(q.state == "running" and q.slot is not None
                                for q in self._progs.values())
                if alone:
                    self._tb_slots.add(slots[0])
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
            except proto.LinkStatusError:          # no mask address on this bitstream
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
            self._tb_slots.discard(slots[0])
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
        if self.link is not None or p.soft_id is not None:
            self.stop(prog_id)
        with self._lock:
            if p.soft_id is not None and self._soft is not None:
                self._soft.unload(p.soft_id)
                self._soft_map.pop(p.soft_id, None)
            if p.slot is not None and self._conv is not None:
                self._conv.clear_slot(p.slot)
            del self._progs[prog_id]

    def _status_of(self, p: _Prog, words: list[int] | None) -> ProgramStatus:
        if p.soft_id is not None:
            st = self._soft.status(p.soft_id)
            st.id = p.id
            return st
        bindings = dict(self._conv.bindings.get(p.slot, {})) if self._conv and p.slot is not None else {}
        if p.lost is not None or words is None or p.slot is None:
            return ProgramStatus(id=p.id, state=ProgramState(p.state), pc=p.pc,
                                 slot=p.slot if p.slot is not None else -1, reason=p.reason,
                                 bindings=bindings, program=p.sha)
        code, pc, cycle, _dropped = words[p.slot * 4:p.slot * 4 + 4]
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
            soft = self._soft
        if writes and self.link is not None:
            def do(link):
                for addr in writes:
                    link.fence(addr, value)
            self._board(do)
        if soft is not None:
            soft.fence(timeline, value)

    def regs(self) -> dict[str, int]:
        if self.link is None and self._soft is not None:
            return self._soft.regs()
        n = self.layers * isa.REG_STRIDE
        raw = self._board(lambda link: link.regs(0, n))
        return {isa.register_name(i): isa.register_field(i).wrap(raw[i]) for i in range(n)
                if i % isa.REG_STRIDE < len(isa.REGISTER_FIELDS)}

    # -- extras -------------------------------------------------------------------------
    def link_stats(self) -> dict:
        """The link's counters (requests, retransmits, events, losses)."""
        link = self.link
        return {**link.stats.to_json(), **link.policy.to_json()} if link is not None else {}
