"""The layer register file: ``layers x REG_STRIDE`` 16-bit words in block RAM.

Widths and signedness come from ``isa.LAYER_FIELDS``: a register holds its value in
two's complement in its low ``width`` bits (the other bits are 0). The host turns a raw
word into a number with ``isa.layer_field(index).wrap(raw)``.
"""

from __future__ import annotations

from amaranth import Module, Array, Const, Mux, Signal
from amaranth.lib import wiring, memory
from amaranth.lib.wiring import In, Out

from copperline.firmware import isa

__all__ = ["RegFile", "REG_WORD_BITS", "field_mask"]

#: Storage width of one register (the widest field).
REG_WORD_BITS = max(f.width for f in isa.LAYER_FIELDS)


def field_mask(index_low_bits):
    """Mask of the register with this ``index % REG_STRIDE`` (0 for unused sub-indices)."""
    masks = [0] * isa.REG_STRIDE
    for f in isa.LAYER_FIELDS:
        masks[f.index] = (1 << f.width) - 1
    return Array(Const(v, REG_WORD_BITS) for v in masks)[index_low_bits]


class RegFile(wiring.Component):
    """Register file with an executor read/write pair and a host read-back port.

    Two block-RAM copies are written together: one serves the executor's read, the other
    the host, so read-back never steals an executor cycle. Both see the write of the same
    clock (so an op sees the write of the op one clock before it), forwarded from one
    register of the write data.

    Parameters
    ----------
    layers : int
        Layers implemented (``isa.DEFAULT_LAYERS``); depth is ``layers * REG_STRIDE``.
    ram_style : str or None
        Yosys ``ram_style`` of both copies (None: the tool's choice).
    sum_port : bool
        Add ``rd_add`` / ``rd_sum`` (the ECP5 build: E's slowest path was the select in
        front of its adder).
    display_port : bool
        Add a third copy, ``disp_mem``, read by the layer compositor
        (:mod:`copperline.hdl.compositor`) through ``display_addr`` / ``display_data``:
        written with the executor's writes like the others, forwarding the write of the
        address's clock like the read-back copy (one block RAM; always block RAM, its
        reader registers what it reads).

    Attributes
    ----------
    rd_addr, rd_data : executor read, data one clock after the address
    rd_add, rd_sum : with ``sum_port``: ``rd_sum = rd_data + rd_add`` (16 bits), the
        forwarding select after two adders instead of before one (the executor's ADD)
    wr_addr, wr_data, wr_en : executor write
    host_addr, host_data : host read-back, data one clock after the address (a write in
        the address's clock is in it)
    clear, clearing : a strobe on ``clear`` writes 0 to every register, one a clock
        (``clearing`` while it does: the executor must not write then)
    display_addr, display_data : with ``display_port``: the compositor's read, the same
        timing as the read-back port (so an address given in the first clock of a core
        cycle reads every write of the core cycles before it and none of its own: the
        last context's write lands in that clock, context 0's one clock later)
    """

    def __init__(self, layers: int = isa.DEFAULT_LAYERS, ram_style: str | None = None,
                 sum_port: bool = False, display_port: bool = False):
        if not 1 <= layers <= 1 << isa.LAYER_BITS:
            raise ValueError(f"layers must be 1..{1 << isa.LAYER_BITS} (got {layers})")
        self.layers = layers
        self.ram_style = ram_style
        self.depth = layers * isa.REG_STRIDE
        abits = (self.depth - 1).bit_length()
        self.sum_port = sum_port
        sums = {"rd_add": In(REG_WORD_BITS), "rd_sum": Out(REG_WORD_BITS)} if sum_port else {}
        self.display_port = display_port
        if display_port:
            sums |= {"display_addr": In(abits), "display_data": Out(REG_WORD_BITS)}
        super().__init__(sums | {
            "rd_addr": In(abits), "rd_data": Out(REG_WORD_BITS),
            "wr_addr": In(abits), "wr_data": In(REG_WORD_BITS), "wr_en": In(1),
            "host_addr": In(abits), "host_data": Out(REG_WORD_BITS),
            "clear": In(1), "clearing": Out(1),
        })
        # ``ram_style`` (a Yosys ``ram_style``, e.g. "distributed" on the ECP5, whose
        # block RAM clock-to-out without the output register is most of a fast clock)
        attrs = {"ram_style": ram_style} if ram_style else None
        self.exec_mem = memory.Memory(shape=REG_WORD_BITS, depth=self.depth, init=[], attrs=attrs)
        self.host_mem = memory.Memory(shape=REG_WORD_BITS, depth=self.depth, init=[], attrs=attrs)
        self.disp_mem = (memory.Memory(shape=REG_WORD_BITS, depth=self.depth, init=[],
                                       attrs={"ram_style": "block"})
                         if display_port else None)

    def elaborate(self, platform):
        m = Module()
        m.submodules.exec_mem = self.exec_mem
        m.submodules.host_mem = self.host_mem
        copies = [(self.exec_mem, self.rd_addr, self.rd_data, "exec"),
                  (self.host_mem, self.host_addr, self.host_data, "host")]
        if self.display_port:
            m.submodules.disp_mem = self.disp_mem
            copies.append((self.disp_mem, self.display_addr, self.display_data, "disp"))
        # ``fwd_data`` is the write data registered every clock, like the core's own copy
        # of E's result: Yosys merges the two, and the forwarding loop (this register ->
        # select -> adder -> this register) has no route to a second flip-flop (Yosys' own
        # transparency bypass registered the data apart). (no reset, as the core's copy:
        # read only with a hit)
        # the clear: a sweep over every row, in place of the executor's writes
        sweep = Signal(range(self.depth))
        with m.If(self.clear):
            m.d.sync += [self.clearing.eq(1), sweep.eq(0)]
        with m.Elif(self.clearing):
            m.d.sync += sweep.eq(sweep + 1)
            with m.If(sweep == self.depth - 1):
                m.d.sync += self.clearing.eq(0)
        wr_addr, wr_data, wr_en = Signal.like(self.wr_addr), Signal.like(self.wr_data), Signal()
        m.d.comb += [wr_addr.eq(Mux(self.clearing, sweep, self.wr_addr)),
                     wr_data.eq(Mux(self.clearing, 0, self.wr_data)),
                     wr_en.eq(self.clearing | self.wr_en)]
        fwd_data = Signal(REG_WORD_BITS, name="exec_fwd_data", reset_less=True)
        m.d.sync += fwd_data.eq(wr_data)
        for mem, raddr, rdata, name in copies:
            wp = mem.write_port()
            m.d.comb += [wp.addr.eq(wr_addr), wp.data.eq(wr_data), wp.en.eq(wr_en)]
            # A plain synchronous read (block RAM; or LUT RAM read in the clock of the
            # address, into flip-flops, so that E's adder starts from registers) and the
            # write of the same clock forwarded from ``fwd_data``. What the RAM reads from
            # a row being written is never used: the core lists both copies in
            # ``COLLISION_FREE_MEMORIES``, so Yosys adds no read-old-data logic. The
            # read-back copy forwards the same way (a write in the address's clock is in
            # the data, as a transparent read had it), sharing ``fwd_data``: Yosys'
            # transparency emulation registered the write data a second time (16
            # flip-flops that only copied E's result, an LC each on the UP5K).
            rp = mem.read_port()
            m.d.comb += rp.addr.eq(raddr)
            fwd_hit = Signal(name=f"{name}_fwd_hit")
            m.d.sync += fwd_hit.eq(wr_en & (wr_addr == raddr))
            m.d.comb += rdata.eq(Mux(fwd_hit, fwd_data, rp.data))
            if name != "exec":
                continue
            # the sum: both candidates added, then selected (the select joins the LUT
            # that follows the adder anyway: the RAM output and the forwarded value go
            # straight into their carry chains)
            if self.sum_port:
                m.d.comb += self.rd_sum.eq(Mux(fwd_hit, (fwd_data + self.rd_add)[:REG_WORD_BITS],
                                               (rp.data + self.rd_add)[:REG_WORD_BITS]))
        return m
