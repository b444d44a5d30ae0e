"""The fast virtual board: the board top compiled to a native simulator.

:func:`build_simulator` turns an Amaranth design into an executable with the harness
``board_harness.h``, through Verilator (``verilator_harness.cc``,
:func:`copperline.sim.verilator_build.build_verilated`; the default, ~6x faster) or CXXRTL
(``cxxrtl_harness.cc``, :func:`copperline.sim.cxxrtl_build.build_native`). Builds are
cached under ``<cache>/<engine>-board/<sha256>/`` (:mod:`copperline.cache`), so another test or another
``copper board sim`` costs only the elaboration.

:class:`NativeBoardLink` runs the binary and speaks bytes with it over pipes: the harness
shifts the host's bytes into the top's ``uart_rx`` pin as 8N1 frames at the board's bit
period and decodes ``uart_tx`` the same way, so the whole UART + link + core path is
simulated. It has the same interface as the ``amaranth.sim`` engine
(:class:`copperline.boards.virtual.SimulatedLink`): ``start``, ``write``, ``close`` and
an ``on_output`` callback.

Generic on purpose: any design with a ``uart_rx`` input and ``uart_tx``/``busy`` outputs
runs in the harness (:class:`FreeRunning` gives it the reset-less clock domain).
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

from amaranth import Cat, ClockDomain, ClockSignal, Elaboratable, Module, Signal

from copperline.sim.cxxrtl_build import NativeBuildError, build_native

log = logging.getLogger(__name__)

#: The native engines, fastest first.
NATIVE_ENGINES = ("verilator", "cxxrtl")
HARNESSES = {"verilator": Path(__file__).with_name("verilator_harness.cc"),
             "cxxrtl": Path(__file__).with_name("cxxrtl_harness.cc")}


class FreeRunning(Elaboratable):
    """``top`` in reset-less clock domains, with ports ``clk``, ``link_clk``, ``line_clk``,
    ``uart_rx``, ``uart_tx``, ``busy``, ``link_quiet``, ``line_quiet``,
    ``line_calm``/``line_skip``, the core's simulation-only ``warp``/``warped``, and the
    display's ``video_pixel``, ``video_de``, ``video_rgb`` (RGB444, ``r << 8 | g << 4 | b``),
    ``video_frame_start`` and ``run_start`` (a program's start with a time-base reset);
    unused stand-ins when the top has no gated link, no warp or no display.

    A virtual board never asserts reset (registers start from their initial values, as
    after configuration), so the reset input would only cost: without it Verilator drops
    the reset logic from every register's update and runs the board top 2.5x faster.

    ``link_clk`` clocks the top's ``link`` domain (``LinkTop(gated_link=True)``): the
    harness pulses it with ``clk`` except while ``link_quiet`` says no link register would
    change (docs/boards.md, "Gated link clock"). ``line_clk`` clocks its ``line`` domain
    (the UARTs): with every clock, and alone (with ``link_clk`` as before) for the fabric
    cycles a warp of the core skipped, until ``line_quiet``; an edge of it alone with
    ``line_skip = k`` (``k < line_calm``) stands for ``k`` more (docs/boards.md, "Warp").
    """

    def __init__(self, top):
        self.top = top
        self.has_warp = hasattr(top, "warp")
        self.warp = top.warp if self.has_warp else Signal(name="warp")
        self.warped = top.warped if self.has_warp else Signal(name="warped")
        self.gated = hasattr(top, "link_quiet")
        self.link_quiet = top.link_quiet if self.gated else Signal(name="link_quiet")
        self.line_quiet = top.line_quiet if self.gated else Signal(name="line_quiet")
        self.line_calm = top.line_calm if self.gated else Signal(name="line_calm")
        self.line_skip = top.line_skip if self.gated else Signal(name="line_skip")
        self.has_video = getattr(top, "video", None) is not None
        self.video_pixel = Signal(name="video_pixel")
        self.video_de = Signal(name="video_de")
        self.video_rgb = Signal(12, name="video_rgb")
        self.video_frame_start = Signal(name="video_frame_start")
        self.run_start = Signal(name="run_start")

    def elaborate(self, platform):
        m = Module()
        m.domains.sync = ClockDomain("sync", reset_less=True)
        m.domains.link = ClockDomain("link", reset_less=True)
        m.domains.line = ClockDomain("line", reset_less=True)
        m.submodules.top = self.top
        if not self.has_warp:
            m.d.comb += self.warped.eq(0)
        if not self.gated:
            m.d.comb += [self.link_quiet.eq(0), self.line_quiet.eq(1), self.line_calm.eq(0)]
        if self.has_video:
            v = self.top.video
            m.d.comb += [self.video_pixel.eq(v.pixel), self.video_de.eq(v.de),
                         self.video_rgb.eq(Cat(v.b, v.g, v.r)),
                         self.video_frame_start.eq(v.frame_start),
                         self.run_start.eq(self.top.run_start)]
        else:
            m.d.comb += [self.video_pixel.eq(0), self.video_de.eq(0), self.video_rgb.eq(0),
                         self.video_frame_start.eq(0), self.run_start.eq(0)]
        return m

    def ports(self) -> list:
        return [ClockSignal("sync"), ClockSignal("link"), ClockSignal("line"),
                self.top.uart_rx, self.top.uart_tx, self.top.busy, self.link_quiet,
                self.line_quiet, self.line_calm, self.line_skip, self.warp, self.warped,
                self.video_pixel, self.video_de, self.video_rgb, self.video_frame_start,
                self.run_start]


def build_simulator(top, *, engine: str = "verilator", build_dir: str | os.PathLike | None = None,
                    name: str = "top", progress=None) -> Path:
    """Compile the board ``top`` (an elaboratable with UART pins and ``busy``) to a native
    board simulator with ``engine`` (``verilator`` or ``cxxrtl``); returns the executable.
    Cached under ``<cache>/<engine>-board/<hash>/``."""
    design = FreeRunning(top)
    if engine == "verilator":
        from amaranth.back import verilog

        from copperline.sim.verilator_build import build_verilated
        return build_verilated(verilog.convert(design, name="top", ports=design.ports()),
                               HARNESSES[engine], build_dir=build_dir, kind="verilator-board",
                               exe_name="board", what=name, progress=progress)
    if engine == "cxxrtl":
        from amaranth.back import rtlil
        return build_native(rtlil.convert(design, name="top", ports=design.ports()),
                            HARNESSES[engine], build_dir=build_dir, kind="cxxrtl-board",
                            exe_name="board", what=name, progress=progress)
    raise ValueError(f"native board engine {engine!r}: expected one of {', '.join(NATIVE_ENGINES)}")


@dataclass
class SimStats:
    """The harness's counters: simulated fabric cycles (warps included), wall time, time
    spent simulating, clocks evaluated (``ticks``), warped core cycles, the clocks that
    also clocked the gated link domain (``link_ticks``) and the clocks of the line alone
    that caught up with a warp (``line_ticks``)."""
    cycles: int = 0
    wall_ns: int = 0
    sim_ns: int = 0
    busy_cycles: int = 0
    skipped: int = 0
    ticks: int = 0
    warped: int = 0
    link_ticks: int = 0
    line_ticks: int = 0

    @property
    def speed_hz(self) -> float:
        """Simulated cycles per second of simulating (pacing sleeps excluded; a warped
        core cycle counts the cycles it stands for)."""
        return self.cycles * 1e9 / self.sim_ns if self.sim_ns else 0.0

    @property
    def tick_hz(self) -> float:
        """Clocks evaluated per second of simulating (the simulator's raw speed)."""
        return self.ticks * 1e9 / self.sim_ns if self.sim_ns else 0.0


_STATS = re.compile(r"stats (.*)")


def parse_stats(line: str) -> SimStats | None:
    """The counters of one harness ``stats ...`` line (None for any other line)."""
    m = _STATS.match(line)
    if not m:
        return None
    kv = dict(p.split("=", 1) for p in m.group(1).split())
    return SimStats(**{k: int(v) for k, v in kv.items() if k in SimStats.__dataclass_fields__})


class NativeBoardLink:
    """Runs a :func:`build_simulator` binary; bytes in with :meth:`write`, bytes out to
    ``on_output(bytes)`` (called from a reader thread).

    ``pace=True`` keeps simulated time from running ahead of the wall clock;
    ``idle_skip=True`` stops the clock while the top is idle and the host silent;
    ``warp_phases``: fabric cycles per core cycle a warp skips (0: the top has no warp);
    ``warp_max``: the most fabric cycles one warp skips (0: unknown), which keeps warps
    from overtaking ``--replay`` input; ``video``: the display's receiver (called from a
    reader thread): ``video.reset()`` at each program start with a time-base reset, then
    ``video.frame(number, width, height, rgb444)`` for each whole frame after it
    (``rgb444``: row-major ``u16`` values ``r << 8 | g << 4 | b``); the board then never
    skips idle time nor warps (the display never idles), and ``video_size`` is the
    frame's (width, height).
    """

    def __init__(self, exe: str | os.PathLike, on_output, *, clock_hz: int, baud: int,
                 pace: bool = True, idle_skip: bool = True, warp_phases: int = 0,
                 warp_max: int = 0, video=None, video_size: tuple[int, int] = (0, 0)):
        from copperline.hdl.uart import bit_timing
        if video is not None:           # every clock of the display is simulated
            idle_skip, warp_phases, warp_max = False, 0, 0
        self.exe = str(exe)
        self.on_output = on_output
        self.clock_hz = clock_hz
        timing = bit_timing(clock_hz, baud)     # the line's bit period, as the top's UARTs
        self.args = [self.exe, f"--hz={clock_hz}", f"--div={timing.div}",
                     f"--frac={timing.num}/{timing.den}",
                     f"--warp={warp_phases}", f"--warp-max={warp_max}"]
        self.video = video
        self.video_size = video_size
        self._video_r = self._video_w = None
        if not pace:
            self.args.append("--no-pace")
        if not idle_skip:
            self.args.append("--no-idle-skip")
        self.stats = SimStats()
        self._stats_seen = threading.Condition()
        self._stats_count = 0
        self._proc: subprocess.Popen | None = None
        self._wlock = threading.Lock()
        self._threads: list[threading.Thread] = []

    @property
    def cycles(self) -> int:
        return self.stats.cycles

    def start(self) -> None:
        args, fds = list(self.args), ()
        if self.video is not None:
            self._video_r, self._video_w = os.pipe()
            args += [f"--video-fd={self._video_w}",
                     f"--video-size={self.video_size[0]}x{self.video_size[1]}"]
            fds = (self._video_w,)
        self._proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, bufsize=0, pass_fds=fds)
        readers = [(self._read_out, "board-sim-out"), (self._read_err, "board-sim-err")]
        if self.video is not None:
            os.close(self._video_w)             # (the simulator holds its end)
            readers.append((self._read_video, "board-sim-video"))
        for target, name in readers:
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def _read_out(self) -> None:
        fd = self._proc.stdout.fileno()
        while True:
            try:
                data = os.read(fd, 65536)
            except OSError:
                return
            if not data:
                return
            try:
                self.on_output(data)
            except Exception:   # a broken consumer must not stop the board
                log.exception("virtual board: output handler failed")

    def _read_video(self) -> None:
        """Frames from the harness (board_harness.h, ``--video-fd``) to ``video``."""
        import struct
        with os.fdopen(self._video_r, "rb") as pipe:
            while True:
                head = pipe.read(12)
                if len(head) < 12:
                    return
                magic, number, width, height = struct.unpack("<4sIHH", head)
                if magic == b"CPVR":
                    self._to_video(self.video.reset)
                    continue
                if magic != b"CPVF":
                    log.error("virtual board: bad video record %r; capture stopped", head)
                    return
                pixels = pipe.read(2 * width * height)
                if len(pixels) < 2 * width * height:
                    return
                self._to_video(self.video.frame, number, width, height, pixels)

    @staticmethod
    def _to_video(call, *args) -> None:
        try:
            call(*args)
        except Exception:       # a broken consumer must not stop the board
            log.exception("virtual board: display receiver failed")

    def _read_err(self) -> None:
        for raw in self._proc.stderr:
            line = raw.decode(errors="replace").strip()
            stats = parse_stats(line)
            if stats is not None:
                with self._stats_seen:
                    self.stats = stats
                    self._stats_count += 1
                    self._stats_seen.notify_all()
            elif line:
                log.warning("virtual board simulator: %s", line)

    def request_stats(self, timeout: float = 2.0) -> SimStats:
        """Fresh counters from the simulator (SIGUSR1 makes it print them at once)."""
        import signal
        with self._stats_seen:
            n = self._stats_count
            self._proc.send_signal(signal.SIGUSR1)
            if not self._stats_seen.wait_for(lambda: self._stats_count > n, timeout):
                raise NativeBuildError("the virtual board simulator did not report its counters")
            return self.stats

    def write(self, data: bytes) -> None:
        if self._proc is None or self._proc.poll() is not None:
            raise NativeBuildError("the virtual board simulator is not running")
        with self._wlock:
            try:
                self._proc.stdin.write(bytes(data))
            except (BrokenPipeError, ValueError) as exc:
                raise NativeBuildError(f"the virtual board simulator stopped: {exc}") from None

    def close(self) -> None:
        """Stop the simulator: end of input makes it finish the frame on the line and exit."""
        if self._proc is None:
            return
        try:
            self._proc.stdin.close()
        except OSError:
            pass
        try:
            self._proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        for t in self._threads:
            t.join(timeout=2)
        self._proc = None
