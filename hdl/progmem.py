"""Program memory of the Copper core: block RAM (dual port) or the iCE40UP SPRAM.

The barrel-scheduled executor reads one program word per clock (the fetch of the context
whose F stage it is), so one read port serves every context. Two implementations:

* ``bram``: :class:`amaranth.lib.memory.Memory` with a read and a separate write port
  (block RAM on iCE40/ECP5, and the simulation default). Writes never disturb a fetch.
* ``spram``: two ``SB_SPRAM256KA`` (16K x 16 each, side by side = 16K x 32) on the
  iCE40UP5K. They are single-port: a write takes the clock's access, so the read data of
  that clock is meaningless; the core only lets a write take the fetch of a context that
  does not need it (see ``Core``). With ``primitive=False`` an Amaranth model with the same
  single-port behaviour (read data holds during a write) stands in, so simulation covers
  the core's arbitration logic.
"""

from __future__ import annotations

from amaranth import Module, Signal, Instance, Const, ClockSignal, Mux
from amaranth.lib import wiring, memory
from amaranth.lib.wiring import In, Out

from copperline.firmware import isa

__all__ = ["ProgramMemory", "SPRAM_WORDS", "resolve_kind"]

#: Words of 32 bits two SB_SPRAM256KA hold side by side.
SPRAM_WORDS = 16384


#: The ECP5 DP16KD parameters every hand-instantiated one here shares.
DP16KD_FIXED_PARAMS = dict(p_RESETMODE="SYNC", p_ASYNC_RESET_RELEASE="SYNC",
                           p_CSDECODE_A="0b000", p_CSDECODE_B="0b000",
                           p_WRITEMODE_A="NORMAL", p_WRITEMODE_B="NORMAL", p_GSR="AUTO")


def dp16kd_tied_ports() -> dict:
    """The DP16KD pins tied off the same way on both ports: chip selects 0, the domain's
    clock, clock and output-register enables 1, no reset."""
    ports = {}
    for pn in ("A", "B"):
        for c in range(3):
            ports[f"i_CS{pn}{c}"] = Const(0, 1)
        ports[f"i_CLK{pn}"] = ClockSignal()
        ports[f"i_CE{pn}"] = Const(1, 1)
        ports[f"i_OCE{pn}"] = Const(1, 1)
        ports[f"i_RST{pn}"] = Const(0, 1)
    return ports


def resolve_kind(kind: str, platform) -> str:
    """``auto`` -> ``spram`` on an iCE40UP platform, else ``bram``."""
    if kind not in ("auto", "bram", "spram"):
        raise ValueError(f"program_memory must be 'auto', 'bram' or 'spram' (got {kind!r})")
    if kind != "auto":
        return kind
    device = getattr(platform, "device", "") or ""
    return "spram" if device.upper().startswith("ICE40UP") else "bram"


class ProgramMemory(wiring.Component):
    """``depth`` 32-bit words; synchronous read (data one clock after ``rd_addr``).

    Parameters
    ----------
    depth : int
        Words (a power of two).
    kind : str
        ``bram`` or ``spram`` (already resolved, see :func:`resolve_kind`).
    primitive : bool
        Instantiate the primitive (``SB_SPRAM256KA`` for ``spram``, ``DP16KD`` for ``bram``
        with ``outreg``) (True) or the Amaranth model (False).
    outreg : bool
        ``bram`` only: read data two clocks after the address (block RAM output register).

    Attributes
    ----------
    rd_addr : In  -- read address (ignored in a clock with ``wr_en`` for ``spram``)
    rd_data : Out -- word at the ``rd_addr`` of ``latency`` clocks before
    wr_addr, wr_data, wr_en : In -- write
    """

    def __init__(self, depth: int, kind: str = "bram", primitive: bool = False,
                 outreg: bool = False):
        if kind not in ("bram", "spram"):
            raise ValueError(f"kind must be 'bram' or 'spram' (got {kind!r})")
        if outreg and kind != "bram":
            raise ValueError("outreg needs kind 'bram'")
        #: ``bram`` only: the read data passes an output register (two clocks after the
        #: address): the ECP5's ``DP16KD`` with ``REGMODE = "OUTREG"`` when ``primitive``.
        self.outreg = outreg
        if kind == "spram" and depth > SPRAM_WORDS:
            raise ValueError(f"the SPRAM holds {SPRAM_WORDS} words; {depth} requested")
        self.depth, self.kind, self.primitive = depth, kind, primitive
        abits = max(1, (depth - 1).bit_length())
        super().__init__({"rd_addr": In(abits), "rd_data": Out(isa.WORD_BITS),
                          "wr_addr": In(abits), "wr_data": In(isa.WORD_BITS), "wr_en": In(1)})
        #: The storage (simulation engines write programs straight into it); None for the
        #: primitive.
        self.mem = None if (primitive and (kind == "spram" or outreg)) else memory.Memory(
            shape=isa.WORD_BITS, depth=depth, init=[])

    @property
    def latency(self) -> int:
        """Clocks from ``rd_addr`` to ``rd_data``."""
        return 2 if self.outreg else 1

    @property
    def single_port(self) -> bool:
        return self.kind == "spram"

    def elaborate(self, platform):
        m = Module()
        if self.kind == "bram" and self.outreg and self.primitive:
            # ECP5: 4-bit wide DP16KD (4096 x 4 each, address on AD[13:2]) side by side;
            # port A reads through the output register, port B writes
            abits = max(1, (self.depth - 1).bit_length())
            if abits > 12:
                raise ValueError("the DP16KD program memory holds at most 4096 words")
            for i in range(isa.WORD_BITS // 4):
                ports = {}
                for b in range(14):
                    a = b - 2
                    ports[f"i_ADA{b}"] = self.rd_addr[a] if 0 <= a < abits else Const(0, 1)
                    ports[f"i_ADB{b}"] = self.wr_addr[a] if 0 <= a < abits else Const(0, 1)
                for b in range(18):
                    ports[f"i_DIA{b}"] = Const(0, 1)
                    ports[f"i_DIB{b}"] = self.wr_data[4 * i + b] if b < 4 else Const(0, 1)
                for b in range(4):
                    ports[f"o_DOA{b}"] = self.rd_data[4 * i + b]
                ports.update(dp16kd_tied_ports())
                ports["i_WEA"] = Const(0, 1)
                ports["i_WEB"] = self.wr_en
                m.submodules[f"dp16kd{i}"] = Instance(
                    "DP16KD", p_DATA_WIDTH_A=4, p_DATA_WIDTH_B=4, p_REGMODE_A="OUTREG",
                    p_REGMODE_B="NOREG", **DP16KD_FIXED_PARAMS, **ports)
            return m
        if self.kind == "bram":
            m.submodules.mem = self.mem
            rp, wp = self.mem.read_port(), self.mem.write_port()
            m.d.comb += [rp.addr.eq(self.rd_addr),
                         wp.addr.eq(self.wr_addr), wp.data.eq(self.wr_data), wp.en.eq(self.wr_en)]
            if self.outreg:     # model of the DP16KD output register
                m.d.sync += self.rd_data.eq(rp.data)
            else:
                m.d.comb += self.rd_data.eq(rp.data)
            return m
        addr = Signal(14)
        m.d.comb += addr.eq(Mux(self.wr_en, self.wr_addr, self.rd_addr))
        if self.primitive:
            for i in range(2):
                m.submodules[f"spram{i}"] = Instance(
                    "SB_SPRAM256KA",
                    i_ADDRESS=addr, i_DATAIN=self.wr_data[16 * i:16 * i + 16],
                    i_MASKWREN=Const(0xF, 4), i_WREN=self.wr_en, i_CHIPSELECT=Const(1, 1),
                    i_CLOCK=ClockSignal(), i_STANDBY=Const(0, 1), i_SLEEP=Const(0, 1),
                    i_POWEROFF=Const(1, 1), o_DATAOUT=self.rd_data[16 * i:16 * i + 16])
        else:
            # Model: one access per clock; the output holds during a write.
            m.submodules.mem = self.mem
            rp, wp = self.mem.read_port(), self.mem.write_port()
            m.d.comb += [rp.addr.eq(addr), rp.en.eq(~self.wr_en), self.rd_data.eq(rp.data),
                         wp.addr.eq(addr), wp.data.eq(self.wr_data), wp.en.eq(self.wr_en)]
        return m

