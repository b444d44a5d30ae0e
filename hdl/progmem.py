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
        ``spram`` only: instantiate ``SB_SPRAM256KA`` (True) or the model (False).

    Attributes
    ----------
    rd_addr : In  -- read address (ignored in a clock with ``wr_en`` for ``spram``)
    rd_data : Out -- word at the ``rd_addr`` of the previous clock
    wr_addr, wr_data, wr_en : In -- write
    """

    def __init__(self, depth: int, kind: str = "bram", primitive: bool = False):
        if kind not in ("bram", "spram"):
            raise ValueError(f"kind must be 'bram' or 'spram' (got {kind!r})")
        if kind == "spram" and depth > SPRAM_WORDS:
            raise ValueError(f"the SPRAM holds {SPRAM_WORDS} words; {depth} requested")
        self.depth, self.kind, self.primitive = depth, kind, primitive
        abits = max(1, (depth - 1).bit_length())
        super().__init__({"rd_addr": In(abits), "rd_data": Out(isa.WORD_BITS),
                          "wr_addr": In(abits), "wr_data": In(isa.WORD_BITS), "wr_en": In(1)})
        #: The storage (simulation engines write programs straight into it); None for the
        #: primitive.
        self.mem = None if (kind == "spram" and primitive) else memory.Memory(
            shape=isa.WORD_BITS, depth=depth, init=[])

    @property
    def single_port(self) -> bool:
        return self.kind == "spram"

    def elaborate(self, platform):
        m = Module()
        if self.kind == "bram":
            m.submodules.mem = self.mem
            rp, wp = self.mem.read_port(), self.mem.write_port()
            m.d.comb += [rp.addr.eq(self.rd_addr), self.rd_data.eq(rp.data),
                         wp.addr.eq(self.wr_addr), wp.data.eq(self.wr_data), wp.en.eq(self.wr_en)]
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

