"""A running copperd as a :class:`~copperline.host.backend.Backend`: ``copper run --via``.

While a daemon owns a board (one host per board), ``copper run PROG --via SOCKET`` runs
the program through the daemon instead: load, subscribe to the program's events, start,
fence, status, stop and unload over the ports protocol (:class:`PortsClient`). Events
reach the sink when the driver asks for a status (the driver polls it anyway), with the
daemon's program id as ``prog``.
"""

from __future__ import annotations

import base64
import io
import os
import time

from copperline.firmware import isa
from copperline.firmware.display import to_rgb888
from copperline.firmware.image import Image
from copperline.host.backend import Backend, BackendError, ProgramState, ProgramStatus

#: How long one status call drains events before it asks (s).
DRAIN_S = 0.02


class DaemonBackend(Backend):
    """The backend of the copperd listening on ``socket``. ``clock_hz``/``vsync_hz``: what
    the daemon's backend runs at (the ports protocol does not report it; events tell the
    clock, see :meth:`clock_from_events`)."""

    #: The program's own cycle count, not the wall clock, says how far a run has got.
    counts_own_cycles = True
    delivers_when_asked = True

    def __init__(self, socket: str, *, clock_hz: int, vsync_hz: float = isa.DEFAULT_VSYNC_HZ):
        super().__init__()
        self.socket = socket
        self.clock_hz = clock_hz
        self.vsync_hz = vsync_hz
        self.name = "soft"
        self.daemon: dict = {}
        self._client = None
        self._loaded: list[int] = []

    # -- plumbing -----------------------------------------------------------------------
    def _call(self, cmd: str, fds=(), **args) -> dict:
        from copperline.host.client import PortsConnectionError, PortsError
        if self._client is None:
            raise BackendError("INTERNAL", "not connected (open() first)")
        try:
            return self._client.request(cmd, fds=fds, **args)
        except PortsError as exc:
            raise BackendError(exc.code, f"{cmd}: {exc.message}") from None
        except (PortsConnectionError, TimeoutError, OSError) as exc:
            raise BackendError("INTERNAL", f"{cmd}: {exc}") from None
        finally:
            self._deliver(0)

    def _deliver(self, budget_s: float) -> None:
        """Hand the events that arrived to the sink, waiting up to ``budget_s`` for more."""
        if self._client is None:
            return
        end = time.monotonic() + budget_s
        try:
            for ev in self._client.events(timeout=budget_s):
                self.emit(ev)
                if time.monotonic() >= end:
                    break
        except (OSError, ValueError):
            pass

    # -- Backend ------------------------------------------------------------------------
    def open(self) -> None:
        from copperline.host.client import PortsClient, PortsConnectionError
        if self._client is not None:
            return
        try:
            self._client = PortsClient(self.socket, timeout=10.0)
        except (PortsConnectionError, OSError) as exc:
            raise BackendError("NOT_FOUND", f"none is listening: {exc}") from None
        self.daemon = self._call("ping")
        self.name = self.daemon.get("backend", "soft")

    def close(self) -> None:
        if self._client is None:
            return
        for prog in self._loaded:
            for cmd in ("stop", "unload"):
                try:
                    self._call(cmd, id=prog)
                except BackendError:
                    pass        # already ended, or gone
        self._client.close()
        self._client = None

    def load(self, image: Image, surfaces=None) -> int:
        # the surfaces go as files (a PNG each, in a memfd): the daemon opens no path
        fds, names = [], {}
        try:
            for name, loaded in _readable(image.surfaces, surfaces):
                fds.append(_surface_memfd(name, loaded.surface))
                names[name] = len(fds) - 1
            extra = {"surfaces": names} if names else {}
            prog = self._call("load", fds=fds, image=base64.b64encode(image.to_bytes()).decode(),
                              source="copper run --via", **extra)["id"]
        finally:
            for fd in fds:
                os.close(fd)
        self._loaded.append(prog)
        # the program's own events (and drops): a direct run records no vsync markers
        self._call("subscribe", events=["irq", "reg", "bind", "state", "dropped"], prog=[prog])
        return prog

    def start(self, prog_id: int) -> None:
        self._call("start", id=prog_id)

    def stop(self, prog_id: int) -> None:
        self._call("stop", id=prog_id)

    def unload(self, prog_id: int) -> None:
        self._call("unload", id=prog_id)
        self._loaded.remove(prog_id)

    def status(self, prog_id: int) -> ProgramStatus:
        self._deliver(DRAIN_S)
        st = self._call("status", id=prog_id)
        return ProgramStatus(st["id"], ProgramState(st["state"]), st.get("pc", 0),
                             st.get("slot", 0), st.get("cycle", 0), st.get("reason"),
                             {int(k): v for k, v in st.get("bindings", {}).items()},
                             st.get("program", ""))

    def programs(self) -> list[ProgramStatus]:
        return [self.status(p["id"]) for p in self._call("list")["programs"]]

    def fence(self, timeline: str, value: int) -> None:
        self._call("fence", timeline=timeline, value=value)

    def regs(self) -> dict[str, int]:
        return self._call("regs")["regs"]

    @staticmethod
    def clock_from_events(events: list[dict]) -> int | None:
        """The core clock the daemon's events imply (``cycle / time_us``, whole MHz), from
        the latest event far enough from 0 to tell; None when none is."""
        for e in reversed(events):
            c, t = e.get("cycle"), e.get("time_us")
            if isinstance(c, int) and isinstance(t, (int, float)) and c >= 10_000 and t > 0:
                return round(c / t) * 1_000_000
        return None


def _readable(names, source):
    """``(name, LoadedSurface)`` of the surfaces ``source`` can give (the daemon says what
    a backend that shows surfaces misses)."""
    from copperline.host.surfaces import SurfaceError, SurfaceSource
    source = source or SurfaceSource()
    for name in names:
        try:
            yield name, source.get(name)
        except SurfaceError:
            continue


def _surface_memfd(name: str, surface) -> int:
    """A memfd holding ``surface`` as the daemon reads ``name``: raw RGBA of the size the
    name gives, else a PNG (exact both ways: RGB444 as c * 17, transparent as alpha 0)."""
    from copperline.host.surfaces import split_spec
    size = split_spec(name)[1]
    width = size[0] if size else len(surface.rows[0])
    pixels = [(*to_rgb888(p), 255) if p is not None else (0, 0, 0, 0)
              for row in surface.rows for p in row[:width]]
    if size:
        data = bytes(c for px in pixels for c in px)
    else:
        from PIL import Image as PilImage
        img = PilImage.new("RGBA", (width, surface.height))
        img.putdata(pixels)
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        data = buf.getvalue()
    fd = os.memfd_create("copper-surface", os.MFD_CLOEXEC)
    os.write(fd, data)
    return fd
