"""The fast virtual board: the board top compiled to a native simulator with CXXRTL.

:func:`build_simulator` turns an Amaranth design into an executable with the harness
``cxxrtl_harness.cc`` (:func:`copperline.sim.cxxrtl_build.build_native`: cached under
``build/cxxrtl/<sha256>/``, so another test or another ``copper board sim`` costs only
the elaboration).

:class:`CxxrtlLink` runs the binary and speaks bytes with it over pipes: the harness
shifts the host's bytes into the top's ``uart_rx`` pin as 8N1 frames at the board's bit
period and decodes ``uart_tx`` the same way, so the whole UART + link + core path is
simulated. It has the same interface as the ``amaranth.sim`` engine
(:class:`copperline.boards.virtual.SimulatedLink`): ``start``, ``write``, ``close`` and
an ``on_output`` callback.

Generic on purpose: any design whose top has ``clk``/``rst``, a ``uart_rx`` input and
``uart_tx``/``busy`` outputs runs in the harness.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import threading
from dataclasses import dataclass
from pathlib import Path

from copperline.sim.cxxrtl_build import CxxrtlError, build_native

log = logging.getLogger(__name__)

HARNESS = Path(__file__).with_name("cxxrtl_harness.cc")


def build_simulator(design, *, build_dir: str | os.PathLike = "build",
                    name: str = "top", progress=None) -> Path:
    """Compile ``design`` (an Amaranth elaboratable) to a CXXRTL board simulator; returns
    the executable. Cached under ``build_dir/cxxrtl/<hash>/``."""
    from amaranth.back import rtlil
    return build_native(rtlil.convert(design, name="top"), HARNESS, build_dir=build_dir,
                        kind="cxxrtl", exe_name="board", what=name, progress=progress)


@dataclass
class SimStats:
    """The harness's counters: simulated fabric cycles, wall time, time spent simulating."""
    cycles: int = 0
    wall_ns: int = 0
    sim_ns: int = 0
    busy_cycles: int = 0
    skipped: int = 0

    @property
    def speed_hz(self) -> float:
        """Simulated cycles per second of simulating (pacing sleeps excluded)."""
        return self.cycles * 1e9 / self.sim_ns if self.sim_ns else 0.0


_STATS = re.compile(r"stats (.*)")


class CxxrtlLink:
    """Runs a :func:`build_simulator` binary; bytes in with :meth:`write`, bytes out to
    ``on_output(bytes)`` (called from a reader thread).

    ``pace=True`` keeps simulated time from running ahead of the wall clock;
    ``idle_skip=True`` stops the clock while the top is idle and the host silent.
    """

    def __init__(self, exe: str | os.PathLike, on_output, *, clock_hz: int, baud: int,
                 pace: bool = True, idle_skip: bool = True):
        from copperline.hdl.uart import divisor
        self.exe = str(exe)
        self.on_output = on_output
        self.clock_hz = clock_hz
        self.args = [self.exe, f"--hz={clock_hz}", f"--div={divisor(clock_hz, baud)}"]
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
        self._proc = subprocess.Popen(self.args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, bufsize=0)
        for target, name in ((self._read_out, "cxxrtl-out"), (self._read_err, "cxxrtl-err")):
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

    def _read_err(self) -> None:
        for raw in self._proc.stderr:
            line = raw.decode(errors="replace").strip()
            m = _STATS.match(line)
            if m:
                kv = dict(p.split("=", 1) for p in m.group(1).split())
                with self._stats_seen:
                    self.stats = SimStats(**{k: int(v) for k, v in kv.items()
                                             if k in SimStats.__dataclass_fields__})
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
                raise CxxrtlError("the virtual board simulator did not report its counters")
            return self.stats

    def write(self, data: bytes) -> None:
        if self._proc is None or self._proc.poll() is not None:
            raise CxxrtlError("the virtual board simulator is not running")
        with self._wlock:
            try:
                self._proc.stdin.write(bytes(data))
            except (BrokenPipeError, ValueError) as exc:
                raise CxxrtlError(f"the virtual board simulator stopped: {exc}") from None

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
