"""The one backend interface: copperd and ``copper run`` talk to this, whatever executes.

The soft VM (``copperline.host.soft``), the RTL simulation (``copperline.sim``) and the
board link (``copperline.host.fpga``) implement it. Program ids, states and events look
the same whichever backend runs them.

Events are plain dicts in the trace format of DESIGN.md ("One trace format"), e.g.::

    {"event": "irq", "prog": 1, "tag": "tick", "cycle": 123456, "time_us": 10288.0}
    {"event": "reg", "prog": 1, "reg": "layer[1].x", "value": 104, "cycle": ..., "time_us": ...}
    {"event": "bind", "prog": 1, "layer": 1, "surface": "/tmp/sprite.rgba", "cycle": ..., "time_us": ...}
    {"event": "state", "prog": 1, "state": "done", "reason": "halt", "cycle": ..., "time_us": ...}
    {"event": "vsync", "frame": 42, "cycle": ..., "time_us": ...}
    {"event": "dropped", "count": N, "reason": "fifo"}

``cycle`` and ``time_us`` count from the start of the event's program (``vsync`` events:
from the backend's time-base reset). Real-time backends add ``wall_us``.
"""

from __future__ import annotations

import abc
import enum
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Callable

from copperline.firmware import isa
from copperline.firmware.image import Image

EventSink = Callable[[dict], None]


class ProgramState(str, enum.Enum):
    LOADED = "loaded"     # loaded, never started
    RUNNING = "running"
    STOPPED = "stopped"   # stopped by the host
    DONE = "done"         # reached HALT
    FAULTED = "faulted"   # stopped by the core (watchdog, ...): see ``reason``


@dataclass
class ProgramStatus:
    """What ``status`` and ``list`` report for one program."""
    id: int
    state: ProgramState
    pc: int = 0
    slot: int = 0
    cycle: int = 0
    reason: str | None = None
    bindings: dict[int, str] = field(default_factory=dict)
    program: str = ""   # sha256 of the image

    def to_json(self) -> dict:
        out = {"id": self.id, "state": self.state.value, "pc": self.pc, "slot": self.slot,
               "cycle": self.cycle, "program": self.program,
               "bindings": {str(k): v for k, v in sorted(self.bindings.items())}}
        if self.reason:
            out["reason"] = self.reason
        return out


class BackendError(Exception):
    """A request the backend refuses; ``code`` is a ports-protocol error code."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code
        self.message = message


class Backend(abc.ABC):
    """Loads, starts and stops programs and streams their events to one sink."""

    #: "soft", "sim" or "fpga"
    name: str = ""
    clock_hz: int
    vsync_hz: float

    def __init__(self) -> None:
        self._sink: EventSink | None = None
        #: how full the consumer's event queue is, 0..1 (set by copperd; a backend that
        #: can pace its event production, such as soft when behind real time, reads it)
        self.event_backlog: Callable[[], float] = lambda: 0.0

    def set_event_sink(self, sink: EventSink | None) -> None:
        """Deliver every event to ``sink``. It may be called from a backend thread;
        it must not block (copperd hands events to its loop with call_soon_threadsafe)."""
        self._sink = sink

    def emit(self, event: dict) -> None:
        if self._sink is not None:
            self._sink(event)

    @abc.abstractmethod
    def open(self) -> None:
        """Acquire the engine (start threads, connect to the board)."""

    @abc.abstractmethod
    def close(self) -> None:
        """Stop every program and release the engine."""

    @abc.abstractmethod
    def load(self, image: Image, surfaces=None) -> int:
        """Load an image; returns the new program id (BackendError BUSY when full).
        ``surfaces``: where its BIND_LAYER surfaces come from
        (``copperline.host.surfaces.SurfaceSource``; None: files from the working
        directory), for a backend that shows them."""

    @abc.abstractmethod
    def start(self, prog_id: int) -> None: ...

    @abc.abstractmethod
    def stop(self, prog_id: int) -> None: ...

    @abc.abstractmethod
    def unload(self, prog_id: int) -> None: ...

    @abc.abstractmethod
    def status(self, prog_id: int) -> ProgramStatus:
        """Raises BackendError NOT_FOUND for an unknown id."""

    @abc.abstractmethod
    def programs(self) -> list[ProgramStatus]: ...

    @abc.abstractmethod
    def fence(self, timeline: str, value: int) -> None:
        """Set a timeline's value (monotonic: a lower value is BAD_ARG)."""

    @abc.abstractmethod
    def regs(self) -> dict[str, int]:
        """Current value of every register, by name."""

    # -- optional capabilities (these defaults: the backend does not have them) ------------
    #: load() and start() may be called before open(): the program then starts at global
    #: cycle 0 of the time base that open() resets.
    starts_before_open: bool = False
    #: The programs' own cycle counts, not the wall clock, say how far a run has got (a
    #: board, slower or faster than the host's clock; a daemon's backend).
    counts_own_cycles: bool = False
    #: Events arrive only while the backend is asked something (a daemon's, over the
    #: ports protocol): a caller waiting for events asks for a status meanwhile.
    delivers_when_asked: bool = False

    def start_many(self, prog_ids) -> None:
        """Start several programs as close together as the backend can (here: in turn)."""
        for prog_id in prog_ids:
            self.start(prog_id)

    def start_cycle(self, prog_id: int) -> int | None:
        """The backend's cycle in which the program last started; None: not known."""
        return None

    def schedule(self, cycle: int, kind: str, prog_id: int | None = None,
                 timeline: str | None = None, value: int | None = None) -> Future | None:
        """Take a host action exactly at ``cycle``; returns a Future of the cycle it took
        effect in, or None: the caller takes it itself when its time comes."""
        return None

    def program_ops(self, prog_id: int) -> int | None:
        """Ops the program has issued since it (last) started; None: not counted."""
        return None
