"""The fastest RTL engine: the Copper core verilated, as an :class:`~copperline.sim.engine.Engine`.

:class:`VerilatorMachine` is :class:`copperline.sim.cxxrtl.CxxrtlMachine` with another
simulator behind the same line protocol: the core in :class:`~copperline.sim.cxxrtl.SimTop`
(in a reset-less clock domain: registers start from their initial values, and the
engine's first hidden core cycle resets every context anyway) goes through Amaranth's
Verilog back end and :func:`copperline.sim.verilator_build.build_verilated` with the
driver ``verilator_core.cc``. The three memories the engine writes straight (program,
fences, register file) are marked ``public_flat_rw`` in the Verilog so the driver can
reach them; nothing else is public, so Verilator optimises the rest freely.

Waveforms: ``waves="run.fst"`` (FST, GTKWave's compact format: ``--trace-fst``) or
``waves="run.vcd"`` (``--trace``); each is a build of its own (tracing code slows the
model, so the plain build has none), cached like the plain one.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
from pathlib import Path

from amaranth import ClockDomain, ClockSignal, Elaboratable, Module

from copperline.hdl.core import Core
from copperline.sim.cxxrtl import CxxrtlMachine, SimTop
from copperline.sim.cxxrtl_build import NativeBuildError
from copperline.sim.engine import MachineParams
from copperline.sim.rtl import RtlEngineBase, core_for

log = logging.getLogger(__name__)

__all__ = ["VerilatorMachine", "build_core_verilator", "WAVE_FORMATS", "wave_format"]

DRIVER = Path(__file__).with_name("verilator_core.cc")

#: The memories the driver writes: its name -> (instance path below the top, the memory's
#: name in its module). Verilator names a public variable of an inlined module by its
#: hierarchy joined with ``__DOT__``.
MEMORIES = {"prog": (("top", "core", "prog_mem"), "mem"),
            "fence": (("top", "core"), "fence_mem"),
            "rf": (("top", "core", "regfile"), "exec_mem")}
#: Waveform file suffix -> Verilator option.
WAVE_FORMATS = {".fst": "--trace-fst", ".vcd": "--trace"}


def wave_format(path: str) -> str:
    """``.fst`` or ``.vcd`` from the file name, else a ValueError naming both."""
    suffix = Path(path).suffix.lower()
    if suffix not in WAVE_FORMATS:
        raise ValueError(f"waveform file {path!r}: the name must end in .fst (FST, GTKWave's "
                         "compact format) or .vcd")
    return suffix


class _FreeRunning(Elaboratable):
    """SimTop in a reset-less ``sync`` domain (no reset logic for Verilator to evaluate)."""

    def __init__(self, top: SimTop):
        self.top = top

    def elaborate(self, platform):
        m = Module()
        m.domains.sync = ClockDomain("sync", reset_less=True)
        m.submodules.top = self.top
        return m

    def ports(self):
        return [ClockSignal("sync"), *self.top.ports()]


def core_verilog(core: Core) -> str:
    """The core in SimTop as Verilog, its three memories marked public for the driver.
    Amaranth's Verilog goes through Yosys (~0.5 s more than the RTLIL): it is cached in
    the build cache keyed by the design's RTLIL."""
    import hashlib

    from amaranth.back import rtlil, verilog

    from copperline.cache import cache_dir
    design = _FreeRunning(SimTop(core))
    il = rtlil.convert(design, name="top", ports=design.ports())
    key = hashlib.sha256(il.encode()).hexdigest()[:32]
    cached = Path(cache_dir()) / "verilator-core" / "verilog" / f"{key}.v"
    try:
        text = cached.read_text()
    except OSError:
        text = None
    if text is None:
        # (what verilog.convert does after the RTLIL; a design elaborates only once)
        text = _mark_public(verilog._convert_rtlil_text(il))
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            tmp = cached.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(text)
            tmp.replace(cached)
        except OSError as exc:         # (a read-only cache only costs the conversion)
            log.debug("cannot cache the core's Verilog: %s", exc)
    return text


def _mark_public(text: str) -> str:
    for key, (_, name) in MEMORIES.items():
        text, n = re.subn(rf"^(\s*reg \[\d+:0\] {name} \[\d+:0\]);",
                          r"\1 /* verilator public_flat_rw */;", text, flags=re.M)
        if n != 1:
            raise NativeBuildError(f"the core's Verilog has {n} memories named {name!r} "
                                   f"(expected 1; the {key} memory of sim/verilator.py MEMORIES)")
    return text


_LZ4_H = """/* copperline: the two LZ4 functions Verilator's FST writer uses (liblz4's API),
   for a machine with the liblz4 library but not its development files. */
#pragma once
#ifdef __cplusplus
extern "C" {
#endif
int LZ4_compressBound(int inputSize);
int LZ4_compress_default(const char *src, char *dst, int srcSize, int dstCapacity);
#ifdef __cplusplus
}
#endif
"""


def _lz4_flags() -> list[str]:
    """Verilator's FST writer includes ``lz4.h`` and links ``-llz4``. Without the
    development package (liblz4-dev) but with the library (liblz4.so.1, which systemd
    needs, so nearly everywhere), a header with its two declarations and a link name
    next to it do."""
    import glob
    if any(os.path.exists(f"{d}/lz4.h") for d in ("/usr/include", "/usr/local/include")):
        return []
    libs = sorted(glob.glob("/lib/*/liblz4.so.1") + glob.glob("/usr/lib/*/liblz4.so.1")
                  + glob.glob("/usr/lib/liblz4.so.1") + glob.glob("/usr/lib64/liblz4.so.1"))
    if not libs:
        raise NativeBuildError("FST waveforms need LZ4 (Verilator's FST writer): install "
                               "liblz4-dev (apt-get install liblz4-dev), or write VCD "
                               "(--waves FILE.vcd)")
    from copperline.cache import cache_dir
    shim = Path(cache_dir()) / "lz4-shim"
    shim.mkdir(parents=True, exist_ok=True)
    header = shim / "lz4.h"
    if not header.exists() or header.read_text() != _LZ4_H:
        header.write_text(_LZ4_H)
    link = shim / "liblz4.so"
    if not link.exists():
        try:
            link.symlink_to(libs[0])
        except FileExistsError:
            pass
    return ["-CFLAGS", f"-I{shim}", "-LDFLAGS", f"-L{shim}"]


def build_core_verilator(core: Core, *, waves: str | None = None,
                         build_dir: str | os.PathLike | None = None, progress=None) -> Path:
    """Verilate ``core`` with its driver; returns the executable. ``waves``: a file name
    whose suffix (.fst/.vcd) picks the traced build. Cached under
    ``<cache>/verilator-core/<hash>/``."""
    from copperline.sim.verilator_build import build_verilated
    flags = []
    for key, (path, name) in MEMORIES.items():
        flags += ["-CFLAGS", f"-DMEM_{key.upper()}=" + "__DOT__".join(("top", *path, name))]
    if waves:
        flags.append(WAVE_FORMATS[wave_format(waves)])
        if wave_format(waves) == ".fst":
            flags += _lz4_flags()
    return build_verilated(core_verilog(core), DRIVER, build_dir=build_dir,
                           kind="verilator-core", exe_name="core-sim", what="core",
                           progress=progress, extra_flags=tuple(flags))


class VerilatorMachine(CxxrtlMachine):
    """Cycle-exact RTL simulation of the Copper core, verilated. ``params``: the machine
    to simulate; ``waves``: an FST or VCD file (by suffix) of the whole run, one time unit
    per clock edge, complete after :meth:`close`; ``build_dir``: where to build instead of
    the cache."""

    def __init__(self, params: MachineParams, *, waves: str | None = None,
                 build_dir: str | None = None):
        if waves:
            wave_format(waves)
        core = core_for(params, program_memory="bram")
        RtlEngineBase.__init__(self, core, params)
        self.waves = waves
        self._closed = True          # (until the process runs: close() has nothing to end)
        exe = build_core_verilator(core, waves=waves, build_dir=build_dir)
        args = [str(exe), f"--phases={core.phases}"]
        if waves:
            args.append(f"--waves={os.path.abspath(waves)}")
        self._proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      text=True, bufsize=1)
        self._closed = False
        names = {}
        for line in self._cmd_lines("names"):
            _, name, _, width, depth = line.split()
            names[name] = (int(width), int(depth))
        self._mem = {key: key for key in MEMORIES}
        if names.get("rf", (0, 0))[1] < len(self._reg_names):
            raise NativeBuildError(f"the verilated core's register file has {names.get('rf')} "
                                   f"rows, fewer than its {len(self._reg_names)} registers")

    def _hw_run(self, n: int, cmd_val: int, writes: dict, collect: bool):
        # (the driver replies with one line of records and one of vsync edges)
        core = self.core
        fw = []
        for ph in range(core.phases):
            w = writes.get(ph)
            fw.append("-" if w is None else
                      f"{ph | w[0] << core.slot_bits | w[1] << (core.slot_bits + 2):x}")
        rec_line, edge_line, tail_line = self._cmd_lines(
            f"run {n} {cmd_val:x} {' '.join(fw)} {int(self.vsync_events)}")
        records = [int(v, 16) for v in rec_line.split()[1:]] if collect else []
        vsync_cycles = [int(v, 16) for v in edge_line.split()[1:]]
        val = tail_line.split()[1]
        tail = None if val == "-" else int(val, 16)
        if collect and tail is not None:
            records.append(tail)
        return records, vsync_cycles, tail
