"""The virtual board: the board top's RTL, simulated, its link on a TCP socket.

Engines:

* ``verilator`` (default) and ``cxxrtl``: the top *with its UART pins* compiled to a
  native simulator (:mod:`copperline.boards.native_board`); host bytes are shifted onto
  ``uart_rx`` at the board's bit period and ``uart_tx`` is decoded, so the line rate is
  the real one. Paced to never run ahead of the wall clock; idle time (no frame, nothing
  running) is skipped. Verilator is ~6x faster; when it cannot be used the board falls
  back to CXXRTL with a warning.
* ``amaranth``: the fallback in ``amaranth.sim`` at the byte level (the link's byte
  streams; the UART is proven by its own tests), about 20k fabric cycles per second. When
  the host is silent and the link idle the simulation pauses, so simulated time only
  advances while there is work (the idle timeout counts simulated cycles); once a program
  was started it runs continuously until a reset-all.

Hosts connect with ``socket://HOST:PORT`` (see ``copper board sim``).
"""

from __future__ import annotations

import errno
import logging
import queue
import socket
import threading
import time

from copperline.firmware.board_interface import BUSY_NOTICE

log = logging.getLogger(__name__)

#: Idle cycles between two received bytes (the link takes one byte per cycle; a gap
#: keeps the simulation close to a real UART's spacing without its cost).
BYTE_GAP = 2


class SimulatedLink:
    """Drives a top with ``byte_io=True`` from Python: ``write(bytes)``, ``read()``.

    The simulator runs in its own thread; ``write`` queues bytes for the board, and bytes
    the board sends are handed to ``on_output(bytes)`` (from the simulator thread).
    """

    def __init__(self, top, on_output, *, clock_hz: int):
        self.top = top
        self.clock_hz = clock_hz
        self.on_output = on_output
        self.cycles = 0
        self._in: queue.Queue[bytes | None] = queue.Queue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="virtual-board", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def write(self, data: bytes) -> None:
        self._in.put(bytes(data))

    def close(self) -> None:
        self._stop.set()
        self._in.put(None)
        self._thread.join(timeout=5)

    def _run(self) -> None:
        from amaranth.sim import Simulator

        top = self.top
        sim = Simulator(top)
        sim.add_clock(1 / self.clock_hz)
        out = bytearray()

        async def collect(ctx):
            ctx.set(top.tx.ready, 1)
            while True:
                if ctx.get(top.tx.valid):
                    out.append(ctx.get(top.tx.payload))
                await ctx.tick()
                self.cycles += 1

        async def feed(ctx):
            pending = bytearray()
            while not self._stop.is_set():
                if not pending:
                    if out:
                        self.on_output(bytes(out))
                        out.clear()
                    if ctx.get(top.busy):
                        await ctx.tick()
                        try:
                            chunk = self._in.get_nowait()
                        except queue.Empty:
                            continue
                    else:
                        chunk = self._in.get()     # idle: wait for the host
                    if chunk is None:
                        return
                    pending += chunk
                    continue
                ctx.set(top.rx.payload, pending.pop(0))
                ctx.set(top.rx.valid, 1)
                await ctx.tick()
                ctx.set(top.rx.valid, 0)
                await ctx.tick().repeat(BYTE_GAP)

        sim.add_testbench(collect, background=True)
        sim.add_testbench(feed)
        try:
            sim.run()
        except Exception:
            log.exception("virtual board simulation failed")
            raise


ENGINES = ("verilator", "cxxrtl", "amaranth")

#: How long a new connection waits for a holder that is hanging up before it is refused.
RELEASE_WAIT_S = 0.25
#: How long a refused connection is kept open for its client to read the busy line.
REFUSE_LINGER_S = 5.0

#: The largest warp of the native engines' core (docs/core.md, "Warp"): a core cycle in
#: which nothing but counting can happen stands for up to 1024 us more (halving down to
#: 1 us as the next event nears). Delays of 6 us and more, vsync waits and blocked fences
#: are skipped in such steps while no frame comes in (the line catches up with a response
#: going out, docs/boards.md).
WARP_US = 1024


def make_top(clock_hz: int, baud: int, core=None, *, byte_io: bool = True, display=None):
    """The board-independent top as the virtual board runs it (``core``: a
    ``CoreConfig``, or None for the link-only top; ``display``: a
    ``copperline.firmware.display.Display`` adds the compositor and its video output).
    ``byte_io=False`` keeps the UART pins (the native engines)."""
    from copperline.hdl.top import LinkTop
    if core is not None:
        # the SPRAM model instead of SB_SPRAM256KA; the native engines' harness warps,
        # except while a display runs (its every clock is simulated)
        core = core.simulation(warp_us=0 if byte_io or display is not None else WARP_US)
    return LinkTop(clock_hz=clock_hz, baud=baud, byte_io=byte_io, core=core,
                   gated_link=not byte_io, display=display)


def warp_params(top) -> tuple[int, int]:
    """The harness's warp settings for ``top``: (fabric cycles per core cycle a warp
    skips, i.e. the core's phases; the most fabric cycles one warp skips), or (0, 0) when
    its core has no warp."""
    c = getattr(top, "core_config", None)
    if c is None or not c.warp_us:
        return 0, 0
    from copperline.hdl.core import phases_for
    return phases_for(c.contexts), c.warp_us * top.clock_hz // 1_000_000


def make_engine(engine: str, on_output, *, clock_hz: int, baud: int, core=None, top=None,
                build_dir: str | None = None, pace: bool = True, progress=None,
                display=None, video=None):
    """The simulated link of a virtual board: a :class:`SimulatedLink` (amaranth) or a
    :class:`~copperline.boards.native_board.NativeBoardLink` (verilator, cxxrtl: compiled
    and cached; a Verilator that cannot build falls back to CXXRTL with a warning).
    ``display`` with ``video`` (a :class:`FrameWriter` or the like): the top drives a
    display, whose frames go to ``video`` (native engines only)."""
    if display is not None and engine == "amaranth":
        raise ValueError("the display output needs a native engine (verilator or cxxrtl)")
    if engine == "amaranth":
        top = top if top is not None else make_top(clock_hz, baud, core)
        return SimulatedLink(top, on_output, clock_hz=clock_hz)
    if engine in ("verilator", "cxxrtl"):
        from copperline.boards.native_board import NativeBoardLink, build_simulator
        from copperline.sim.cxxrtl_build import NativeBuildError

        def build(engine):
            # a fresh top per build: an elaboratable is elaborated once
            design = top if top is not None else make_top(clock_hz, baud, core, byte_io=False,
                                                          display=display)
            return build_simulator(design, engine=engine, build_dir=build_dir,
                                   name="virtual board", progress=progress), warp_params(design)
        try:
            exe, warp = build(engine)
        except NativeBuildError as exc:
            if engine != "verilator" or top is not None:
                raise
            log.warning("virtual board: Verilator failed, using CXXRTL (~6x slower): %s", exc)
            exe, warp = build("cxxrtl")
        video = {} if display is None else {
            "video": video, "video_size": (display.mode.h_active, display.mode.v_active)}
        return NativeBoardLink(exe, on_output, clock_hz=clock_hz, baud=baud, pace=pace,
                               warp_phases=warp[0], warp_max=warp[1], **video)
    raise ValueError(f"virtual board engine {engine!r}: expected one of {', '.join(ENGINES)}")


class FrameWriter:
    """Writes the virtual board's display frames as ``DIR/frame-NNNNN.png``, numbered from
    the frame that began with the last program start (with a time-base reset), as ``copper
    render --exact`` numbers its frames: the first ``limit`` of each run (all when None);
    a later reset starts again at 0 and overwrites them. :attr:`runs` counts the resets,
    :attr:`written` the files."""

    def __init__(self, directory: str, limit: int | None = None):
        from pathlib import Path
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.limit = limit
        self.runs = 0
        self.written = 0
        self.last = -1                  # the last frame written in this run
        self._changed = threading.Condition()

    def reset(self) -> None:
        """A program start with a time-base reset: the frames that follow are a new run's,
        from 0."""
        with self._changed:
            self.runs += 1
            self.last = -1
            self._changed.notify_all()

    def frame(self, number: int, width: int, height: int, rgb444: bytes) -> None:
        """Frame ``number`` of this run (RGB444 words, see ``board_harness.h``)."""
        from copperline.firmware.frames import frame_path, write_rgb444
        if self.limit is not None and number >= self.limit:
            return
        write_rgb444(frame_path(self.directory, number), width, height, rgb444)
        with self._changed:
            self.written += 1
            self.last = number
            self._changed.notify_all()

    def wait_for(self, number: int, timeout: float, run: int | None = None) -> bool:
        """Wait until frame ``number`` of the current run (of run ``run``, counting
        resets from 1, when given) is written: True, or False after ``timeout`` s."""
        with self._changed:
            return self._changed.wait_for(
                lambda: (run is None or self.runs == run) and self.last >= number, timeout)


class VirtualBoardServer:
    """Serves one simulated board link to TCP clients, one client at a time.

    Like a board on its USB UART, it has one owner: while a client holds it, another
    connection gets one line of text (``copperline board busy: held by HOST:PORT since
    ...``, :data:`copperline.firmware.board_interface.BUSY_NOTICE`; :meth:`Link.hello`
    turns it into :class:`~copperline.host.link.LinkBusy`) and is closed; the holder never
    notices. The refusal is logged.

    ``engine``: ``"verilator"``/``"cxxrtl"`` (fast, UART pins; what ``copper board sim``
    uses) or ``"amaranth"`` (the default here; a given ``top`` must then have
    ``byte_io=True``).
    ``core``: a ``CoreConfig`` or None (link only), used when no ``top`` is given.
    ``link_factory``: instead of an engine, ``link_factory(on_output)`` makes the link (the
    flashed design's simulator, :mod:`copperline.boards.bitstream_sim`).
    ``display`` and ``video_dir``: the top drives that display, and the frames it shows
    after each program start (with a time-base reset) are written to ``video_dir`` (:class:`FrameWriter`; the
    first ``video_frames`` of them, all when None).
    """

    def __init__(self, host: str, port: int, *, clock_hz: int, baud: int, top=None,
                 core=None, engine: str = "amaranth", build_dir: str | None = None,
                 pace: bool = True, progress=None, link_factory=None, display=None,
                 video_dir: str | None = None, video_frames: int | None = None):
        self.clock_hz = clock_hz
        self.frames = (FrameWriter(video_dir, video_frames) if video_dir is not None
                       else None)
        self.engine = engine
        self._client: socket.socket | None = None
        self._holder = ""           # "HOST:PORT since HH:MM:SS UTC" of the client
        self._lock = threading.Lock()
        self._released = threading.Condition(self._lock)
        # the port first: a busy one is known before a simulator is compiled; it listens
        # once the simulator is there (a host that connects earlier is refused, not
        # left without an answer)
        try:
            self._sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._sock.bind((host, port))
        except OSError as exc:
            self._sock.close()
            if exc.errno == errno.EADDRINUSE:
                raise OSError(f"tcp:{host}:{port} is already in use (another `copper board "
                              "sim`?): pick another port with --listen") from None
            raise OSError(f"cannot listen on tcp:{host}:{port}: {exc.strerror}") from None
        self.address = self._sock.getsockname()[:2]
        try:
            if link_factory is not None:
                self.link = link_factory(self._send)
            else:
                self.link = make_engine(engine, self._send, clock_hz=clock_hz, baud=baud,
                                        core=core, top=top, build_dir=build_dir, pace=pace,
                                        progress=progress, display=display,
                                        video=self.frames)
        except BaseException:
            self._sock.close()
            raise
        self._sock.listen()
        self._stop = threading.Event()

    @property
    def url(self) -> str:
        return f"socket://{self.address[0]}:{self.address[1]}"

    def _send(self, data: bytes) -> None:
        with self._lock:
            client = self._client
        if client is None:
            return          # nobody listening: a board's UART output is lost the same way
        try:
            client.sendall(data)
        except OSError:
            pass

    def start(self) -> "VirtualBoardServer":
        self.link.start()
        threading.Thread(target=self.serve_forever, name="virtual-board-accept",
                         daemon=True).start()
        return self

    def serve_forever(self) -> None:
        while not self._stop.is_set():
            try:
                client, peer = self._sock.accept()
            except OSError:
                return
            who = f"{peer[0]}:{peer[1]}"
            with self._lock:
                # a holder that just hung up is still being let go: give it a moment
                free = self._released.wait_for(lambda: self._client is None, RELEASE_WAIT_S)
                if free:
                    self._client = client
                    self._holder = f"{who} since {time.strftime('%H:%M:%S UTC', time.gmtime())}"
                holder = self._holder
            if not free:
                log.warning("virtual board: refused %s: busy, held by %s", who, holder)
                threading.Thread(target=self._refuse, args=(client, holder), daemon=True,
                                 name="virtual-board-refuse").start()
                continue
            log.info("virtual board: client %s connected", who)
            client.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self._pump, args=(client,), daemon=True).start()

    @staticmethod
    def _refuse(client: socket.socket, holder: str) -> None:
        """Tell a second client who holds the board, then hang up once it has read that.

        The board cannot answer in link frames (its link serves the holder), so the
        refusal is one line of text. Closing at once could reset the connection before the
        text is read, so the line goes out, then whatever the client sends is discarded
        until it hangs up (or ``REFUSE_LINGER_S`` passes)."""
        try:
            client.sendall(BUSY_NOTICE + f"held by {holder}\n".encode())
            client.settimeout(REFUSE_LINGER_S)
            end = time.monotonic() + REFUSE_LINGER_S
            while time.monotonic() < end and client.recv(4096):
                pass
        except OSError:
            pass
        finally:
            client.close()

    def _pump(self, client: socket.socket) -> None:
        while True:
            try:
                data = client.recv(4096)
            except OSError:
                data = b""
            if not data or self._stop.is_set():
                break
            try:
                self.link.write(data)
            except Exception as exc:    # the simulator ended (server closing)
                log.info("virtual board: input dropped: %s", exc)
                break
        with self._lock:
            if self._client is client:
                self._client = None
                log.info("virtual board: client %s left", self._holder)
                self._released.notify_all()
        client.close()

    def close(self) -> None:
        self._stop.set()
        try:
            self._sock.close()
        except OSError:
            pass
        with self._lock:
            if self._client is not None:
                try:
                    self._client.shutdown(socket.SHUT_RDWR)   # the host sees the board go
                except OSError:
                    pass
                self._client.close()
                self._client = None
        self.link.close()
