"""The layer compositor: the display model (:mod:`copperline.firmware.display`) in gateware.

It shows ``scale_up(render_frame(display, frame, ...))`` pixel for pixel, sampling the
Copper's registers at the model's cycles. See ``docs/display.md`` for the design, the
wiring to the core and the figures; in short:

* **Time.** Its counters run one core cycle behind the global core cycle (they are
  reloaded with 0 at the end of the core cycle a time-base reset marks, so they show
  cycle 0's positions during cycle 1): every position is known a whole core cycle
  ahead, and a time-base reset in any clock of its cycle still gives frame 0 from its
  first pixel. Outputs are registered three times more: a pixel is presented
  :attr:`Compositor.latency` (= ``contexts + 3``) fabric clocks after the first fabric
  clock of its position.
* **Register samples.** The sample of ``layer[n].field`` for canvas line ``l`` (core
  cycle ``s = line_fetch_cycle(l) + sample_offset(n, field)``) is read through the
  register file's display copy with its address in the first clock (phase 0) of cycle
  ``s``: the read-back timing ("a write in the address's clock is in it") gives the
  write of the last context of cycle ``s - 1`` (its E runs in phase 0 of ``s``) and no
  write of cycle ``s`` (context 0's E is in phase 1). What drawing needs is kept in a
  table of five 12-bit words per layer (8 rows a layer) in the unused rows of the
  line-buffer RAM: x, alpha, z's high 12 bits, (z's low bits, hit), and (has a surface,
  the surface row of the line); ``hit`` = visible, the line in ``y .. y+15`` (a surface:
  ``y .. y+height-1``, its descriptor read after the ``surface`` sample), and ``x`` in
  ``-15 .. canvas_w-1``.
* **Order and drawing.** A selection sort over the table: each pass reads every
  layer's z words and finds the smallest key ``(z, n)`` above the last drawn; that layer
  is drawn: 16 read-modify-writes of the back line buffer, clipped to the canvas, with
  the model's blend, of its palette colour or of its surface's pixels (read from the
  surface memory a clock before each line-buffer read; a transparent one is not
  written). A pass that finds nothing ends the line.
* **Surface memory** (``display.surface_words`` > 0): the two SPRAMs on an iCE40UP (one
  access a clock), else a block RAM; a host write (``surf_*``) waits in a register for a
  clock without a read.
* **Line buffers.** One ``1024 x 12`` RAM on the boards (3 iCE40 block RAMs): canvas
  line ``l`` in half ``l % 2``, the table above canvas_w in half 0. One read and one
  write per clock (the read registered once more): the display reads a canvas pixel in
  the first clock of its first output pixel and, on the second output line of a canvas
  line, writes ``BACKGROUND`` back two clocks later (so the buffer is clean for its next
  use; the display runs on blanking lines too, which cleans both buffers before a
  frame's first line after any reset); the composer reads and writes in the odd
  clocks, which the display never takes.
"""

from __future__ import annotations

from amaranth import Array, Cat, Const, Module, Mux, Signal
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out

from copperline.firmware import isa, surface_memory
from copperline.firmware.display import (BACKGROUND, FIELD_ORDER, LAYER_SIZE, PALETTE,
                                         Display)
from copperline.hdl.lut import below
from copperline.hdl.progmem import ProgramMemory

__all__ = ["Compositor", "composer_budget"]

#: Bits of a line-buffer word: an RGB444 pixel.
PIXEL_BITS = 12
#: Table words per layer (8 rows a layer, three unused): x, alpha, z high, (z low, hit),
#: (surface row, has surface).
_W_X, _W_ALPHA, _W_ZHI, _W_ZLO, _W_ROW = range(5)
_W_BITS = 3
# (the composer's read address builds these as (in DA, 0, in DR) and (not zsel, 1, 0))
assert (_W_X, _W_ALPHA, _W_ZHI, _W_ZLO, _W_ROW) == (0b000, 0b001, 0b010, 0b011, 0b100)

# op kinds in the memory pipeline
(_OP_NONE, _OP_DISP, _OP_DISP_CLR, _OP_Z1, _OP_Z0, _OP_XR, _OP_AR, _OP_PIX,
 _OP_RR) = range(9)
# composer states
(_S_IDLE, _S_SORT, _S_SWAIT, _S_SWAIT2, _S_SWAIT3, _S_SDEC, _S_DR, _S_DX, _S_DA,
 _S_DP) = range(10)

#: Descriptor numbers: a ``surface`` value of DESCRIPTORS or more names no surface (the
#: layer shows nothing); words per surface row. (The layout is surface_memory's; the
#: bit positions the gateware takes it apart at are checked against it here.)
_DESCRIPTORS, _ROW_WORDS = surface_memory.DESCRIPTORS, surface_memory.ROW_WORDS
assert _DESCRIPTORS == 16 and surface_memory.OPAQUE == 1 << 15
assert surface_memory.descriptor_word(1, 2) == 1 | 2 << 16
assert surface_memory.pixel_half((1, 2, 3)) == 1 << 15 | 0x321


def _field(name):
    return isa.layer_field(isa.register_index(0, name))


def composer_budget(display: Display) -> dict:
    """The composer's worst case against its window, in fabric clocks (all layers hit):
    ``window`` (two output lines minus the register fetch), ``needed`` (the sort's
    passes and the draws; the display's clocks are not the composer's). Raises
    nothing."""
    L, C = display.layers, display.contexts
    fetch = L * len(FIELD_ORDER) * C
    window = 2 * display.line_cycles * C - fetch
    # (the composer reads in odd clocks: two clocks a read; a pass reads two words a
    # layer, then waits four clocks (and one to an odd clock); a draw reads three words
    # (surface row, x, alpha), then 17 beats of 4 clocks and one; the surface memory is
    # read within the beats, one clock ahead of the line buffer)
    sort = (L + 1) * (4 * L + 5)
    draw = L * (3 * 2 + 2 + 4 * (LAYER_SIZE + 1))
    needed = sort + draw + 4
    return {"window": window, "needed": needed, "fetch": fetch, "sort": sort,
            "draw": draw}


class Compositor(wiring.Component):
    """The layer compositor of ``display`` (fabric clock domain ``sync``).

    Attributes
    ----------
    advance : In(1)
        Strobe in the last fabric clock of every core cycle (as the core's Vsync).
    tb_reset : In(1)
        Time-base reset, in any clock but the last of the core cycle that becomes global
        cycle 0 (the core's accept of a time-base command, in phase 0, or its Vsync
        ``reset``, in phase 1).
    reg_addr : Out(range of the register file)
        Register address (``Core.display_addr``); held through each core cycle.
    reg_data : In(16)
        ``Core.display_data``: the raw register one clock after the address.
    r, g, b : Out(4)
        The pixel (0 outside active video).
    de, hsync, vsync : Out(1)
        Active video; the syncs at the wire level (active low when the mode's
        ``hsync_negative`` / ``vsync_negative``).
    pixel : Out(1)
        High in the clock in which the outputs present a new output pixel (they hold it
        for ``fabric_per_pixel`` clocks).
    frame_start : Out(1)
        With the first pixel of every frame (the first pixel of its vertical blanking).
    surf_addr, surf_data, surf_we : In
        Only with ``display.surface_words``: a write of one 32-bit word of the surface
        memory, ``surf_we`` a one-clock strobe at least 4 clocks after the last; never
        lost (held until a clock in which the compositor does not read the memory).

    ``surface_memory``: ``auto`` (the SPRAMs on an iCE40UP platform, else block RAM),
    ``spram`` (the SPRAMs; their single-port model without a platform unless
    ``spram_primitive``) or ``bram``.

    Every output shows a position :attr:`latency` fabric clocks after the position's
    clock (the first fabric clock of a line is that of ``display.line_start_cycle``).
    """

    #: The line buffer's read and write never meet on a row (the display reads half
    #: ``l % 2`` while the composer works in the other, the table is written only while
    #: the composer is idle, and a row is written two clocks after its read, when the
    #: read is of another row): synthesis drops the read-old-data bypass.
    #: An instance with surface memory adds ``surf_mem`` (block RAM off the iCE40UP: it
    #: is never read and written in one clock, a write waits for a clock without a read).
    COLLISION_FREE_MEMORIES = ("line_mem",)

    def __init__(self, display: Display, surface_memory: str = "auto",
                 spram_primitive: bool = False):
        self._MustUse__silence = True       # (a refused display: no "never used" warning)
        m = display.mode
        self.display = display
        L, C = display.layers, display.contexts
        if C < 4:
            raise ValueError(f"{C} fabric clocks per core cycle: the compositor needs 4 "
                             "(a sample's address, its data, and two clocks to store it)")
        if m.v_blank < 3:
            raise ValueError(f"{m.name}: {m.v_blank} blanking lines; the compositor needs 3 "
                             "(canvas line 0 is fetched two lines before the first visible "
                             "one, into a buffer cleaned the line before)")
        if m.h_total < m.h_active + 2:
            raise ValueError(f"{m.name}: the compositor needs 2 blanking pixels a line")
        if isa.REG_STRIDE & (isa.REG_STRIDE - 1):
            raise ValueError("REG_STRIDE must be a power of two")
        zf = _field("z")
        self.zlo_bits = zf.width - PIXEL_BITS
        if self.zlo_bits < 0 or self.zlo_bits + 1 > PIXEL_BITS or _field("alpha").width > PIXEL_BITS:
            raise ValueError("the table's words do not hold z and alpha")
        self.n_bits = max(1, (L - 1).bit_length())
        self.key_bits = zf.width + self.n_bits
        cw = display.canvas_w
        #: signed bits of a layer's x as drawn (-15 .. canvas_w + 14)
        self.x_bits = max((cw + LAYER_SIZE).bit_length(), LAYER_SIZE.bit_length()) + 1
        if self.x_bits > PIXEL_BITS:
            raise ValueError(f"a {cw}-pixel canvas is too wide for the table's x word")
        sw = display.surface_words
        if sw and (sw & (sw - 1) or sw < _DESCRIPTORS):
            raise ValueError(f"{sw} surface words: a power of two, at least {_DESCRIPTORS}")
        #: bits of a surface row number (0: no surface memory)
        self.row_bits = max(1, (sw // _ROW_WORDS - 1).bit_length()) if sw else 0
        if self.row_bits + 1 > PIXEL_BITS:
            raise ValueError(f"{sw} surface words: the table's row word holds "
                             f"{1 << (PIXEL_BITS - 1)} rows of {_ROW_WORDS} words at most")
        if surface_memory not in ("auto", "bram", "spram"):
            raise ValueError(f"surface_memory: 'auto', 'bram' or 'spram', not {surface_memory!r}")
        self.surface_memory = surface_memory
        if sw:
            self.COLLISION_FREE_MEMORIES = type(self).COLLISION_FREE_MEMORIES + ("surf_mem",)
        self.spram_primitive = spram_primitive
        table_rows = (1 << _W_BITS) << self.n_bits
        #: address bits of a half (a canvas line, and the table above it in half 0)
        self.half_bits = (cw + table_rows - 1).bit_length()
        self.depth = 2 << self.half_bits
        b = composer_budget(display)
        if b["needed"] > b["window"]:
            raise ValueError(f"{m.name}: a canvas line's composition needs up to "
                             f"{b['needed']} fabric clocks after the fetch of "
                             f"{L} x {len(FIELD_ORDER)} registers, but two lines leave "
                             f"{b['window']}")
        #: fabric clocks from a position's clock to the outputs showing it
        self.latency = C + 3
        self.budget = b
        self.reg_bits = (L * isa.REG_STRIDE - 1).bit_length()
        super().__init__({
            "advance": In(1), "tb_reset": In(1),
            "reg_addr": Out(self.reg_bits), "reg_data": In(16),
            "r": Out(4), "g": Out(4), "b": Out(4),
            "de": Out(1), "hsync": Out(1), "vsync": Out(1),
            "pixel": Out(1), "frame_start": Out(1),
        } | ({"surf_addr": In(range(sw)), "surf_data": In(32), "surf_we": In(1)}
             if sw else {}))
        self.line_mem = memory.Memory(shape=PIXEL_BITS, depth=self.depth, init=[],
                                      attrs={"ram_style": "block"})
        self._MustUse__silence = False

    def elaborate(self, platform):
        d, mo = self.display, self.display.mode
        L, C, LC = d.layers, d.contexts, d.line_cycles
        cw = d.canvas_w
        fpp = mo.fabric_per_pixel
        nb, hb, xb = self.n_bits, self.half_bits, self.x_bits
        m = Module()
        m.submodules.line_mem = mem = self.line_mem
        rp, wp = mem.read_port(), mem.write_port()

        # -- the time base (one core cycle behind the global one) ------------------------
        first = Signal()           # phase 0
        second = Signal()          # phase 1
        third = Signal()           # phase 2
        armed = Signal()           # a time-base reset seen in this core cycle
        # ``cyc_end``: the last clock of a core cycle, from a phase counter of its own that
        # ``advance`` keeps in step (the inputs reach registers only, through one LUT)
        ph = Signal(range(C))
        cyc_end = Signal()
        m.d.sync += [ph.eq(Mux(self.advance | (ph == C - 1), 0, ph + 1)),
                     cyc_end.eq(~self.advance & (ph == C - 2)),
                     first.eq(cyc_end), second.eq(first), third.eq(second)]
        resync = Signal()
        m.d.comb += resync.eq(cyc_end & armed)
        m.d.sync += armed.eq(Mux(cyc_end, 0, armed | self.tb_reset))
        hcyc = Signal(range(LC))
        px = Signal(range(mo.h_total))
        pdiv = Signal(range(fpp)) if fpp > 1 else None
        row = Signal(range(mo.v_total))
        line_end = Signal()
        # (the tests on the counters are registers, one step ahead: one LUT to the ends)
        hcyc_last, row_last = Signal(), Signal()
        m.d.comb += line_end.eq(cyc_end & hcyc_last)
        with m.If(cyc_end):
            m.d.sync += hcyc_last.eq(hcyc == LC - 2)
        with m.If(line_end):
            m.d.sync += row_last.eq(row == mo.v_total - 2)
        new_px = (pdiv == 0) if pdiv is not None else Const(1)
        if pdiv is not None:
            m.d.sync += pdiv.eq(Mux(pdiv == fpp - 1, 0, pdiv + 1))
        with m.If(new_px if pdiv is None else (pdiv == fpp - 1)):
            m.d.sync += px.eq(px + 1)
        with m.If(cyc_end):
            m.d.sync += hcyc.eq(hcyc + 1)
        # display buffer of this row and "clear it" (its second line): j = row - v_blank,
        # buffer (j >> 1) & 1, clear when j is odd; on every row, blanking ones too
        j0 = -mo.v_blank
        dbuf0, dclr0 = (j0 >> 1) & 1, j0 & 1
        dbuf, dclr = Signal(init=dbuf0), Signal(init=dclr0)
        frame_end = Signal()
        m.d.comb += frame_end.eq(line_end & row_last)
        with m.If(line_end):
            m.d.sync += [hcyc.eq(0), px.eq(0), row.eq(row + 1), dclr.eq(~dclr),
                         dbuf.eq(dbuf ^ dclr)]
            if pdiv is not None:
                m.d.sync += pdiv.eq(0)
        with m.If(frame_end | resync):
            m.d.sync += [row.eq(0), dbuf.eq(dbuf0), dclr.eq(dclr0)]
        with m.If(resync):
            m.d.sync += [hcyc.eq(0), px.eq(0), hcyc_last.eq(0), row_last.eq(0)]
            if pdiv is not None:
                m.d.sync += pdiv.eq(0)

        # -- register fetch ---------------------------------------------------------------
        # starts in phase 0 of the last core cycle (as counted here) of the line before
        # the composition's first line: that is phase 0 of line_fetch_cycle(l) itself
        vb = mo.v_blank
        trig_row = (~below(row, vb - 3) & below(row, vb + mo.v_active - 4)
                    & (row[0] == ((vb - 3) & 1)))
        trig = Signal()
        m.d.comb += trig.eq(first & hcyc_last & trig_row)
        fetching = Signal()
        fn = Signal(nb)                       # layer
        ff = Signal(range(len(FIELD_ORDER)))  # field step (FIELD_ORDER)
        lc = Signal(range(d.canvas_h + 1))    # the canvas line being fetched
        cbuf = Signal()                       # its buffer
        field_idx = Array(Const(_field(f).index, range(isa.REG_STRIDE)) for f in FIELD_ORDER)
        sb = (isa.REG_STRIDE - 1).bit_length()
        m.d.comb += self.reg_addr.eq(Cat(field_idx[ff][:sb], fn))
        fetch_done = Signal()
        fetch_last = Signal()      # the fetch's last core cycle (a register, one step ahead)
        m.d.comb += fetch_done.eq(cyc_end & fetch_last)
        with m.If(trig):
            m.d.sync += fetching.eq(1)
        with m.If(cyc_end & fetching):
            m.d.sync += [ff.eq(Mux(ff == len(FIELD_ORDER) - 1, 0, ff + 1)),
                         fetch_last.eq((fn == L - 1) & (ff == len(FIELD_ORDER) - 2))]
            with m.If(ff == len(FIELD_ORDER) - 1):
                m.d.sync += fn.eq(fn + 1)
        with m.If(fetch_done):
            m.d.sync += [fetching.eq(0), fn.eq(0), ff.eq(0), lc.eq(lc + 1), cbuf.eq(lc[0]),
                         fetch_last.eq(0)]
        with m.If(frame_end | resync):
            m.d.sync += lc.eq(0)
        with m.If(resync):
            m.d.sync += [fetching.eq(0), fn.eq(0), ff.eq(0), fetch_last.eq(0)]

        # the sample: registered in phase 1 (the register file's forwarding select after
        # its block RAM is a path of its own), what the table keeps worked out in phase 2
        # and written in the next odd clock (phase 3 or later: before the address moves)
        rd = Signal(16)
        m.d.sync += rd.eq(self.reg_data)
        xf, yf = _field("x"), _field("y")
        xs = rd[:xf.width]
        # -15 <= x <= canvas_w - 1, as bit tests on the raw word
        neg = xs[xf.width - 1]
        x_hit = Mux(neg, ~below(xs, (1 << xf.width) - (LAYER_SIZE - 1)), below(xs, cw))
        dy = Signal(yf.width + 1)
        m.d.comb += dy.eq(lc - rd[:yf.width].as_signed())
        ls_bits = (LAYER_SIZE - 1).bit_length()
        assert LAYER_SIZE == 1 << ls_bits
        # (the y test in three steps: ``dy`` registered in phase 2, its low 8 bits compared
        # with the height in phase 3 while "0 <= dy < 256" is registered from its high
        # bits, which join the hit in the alpha sample's clock)
        dy_lo = Signal(8)
        dy_hi = Signal(len(dy) - 8)
        dy_in = Signal()
        xy_hit = Signal()
        zlo = Signal(max(self.zlo_bits, 1))
        tword = Signal(PIXEL_BITS)
        twidx = Signal(_W_BITS)
        tpend = Signal()
        fi = {f: FIELD_ORDER.index(f) for f in FIELD_ORDER}
        # (the y test finishes in the alpha sample's clock, before visible's uses it)
        assert fi["surface"] < fi["y"] < fi["alpha"] < fi["visible"]
        zf = _field("z")
        # the surface: the sampled number (phase 2 of its cycle), its descriptor read in
        # phase 3 and taken in the next phase 0 (the x cycle's)
        sw, rb = d.surface_words, self.row_bits
        has_surf = Signal()         # the fetched layer's surface number is not 0
        no_desc = Signal()          # ... and names no descriptor (16 or more)
        desc_row = Signal(max(rb, 1))
        desc_h = Signal(8)
        s_rd = Signal()             # the surface memory's read (a register: its address
        s_raddr = Signal(max(rb, 1) + 3)   # and enable go straight to the memory)
        s_rdata = Signal(32)
        m.d.sync += s_rd.eq(0)
        # (which sample this clock is, decoded a clock ahead: ``smp[f]`` is phase 2 of
        # field f's cycle, ``y3`` phase 3 of y's, ``dcap`` phase 0 of the cycle after the
        # surface's; flip-flops, not LUTs after the field counter)
        smp = Signal(len(FIELD_ORDER))
        y3, s3, dcap = Signal(), Signal(), Signal()
        one = Const(1, len(FIELD_ORDER))
        m.d.sync += [smp.eq(Mux(second & fetching, one << ff, 0)),
                     y3.eq(smp[fi["y"]]), s3.eq(smp[fi["surface"]]), dcap.eq(s3)]
        if sw:
            with m.If(smp[fi["surface"]]):
                sv = rd[:_field("surface").width]
                m.d.sync += [has_surf.eq(sv != 0), no_desc.eq(sv[4:] != 0),
                             s_raddr.eq(sv[:4]), s_rd.eq(1)]
        with m.If(smp[fi["x"]]):
            m.d.sync += [xy_hit.eq(x_hit), tword.eq(rd[:PIXEL_BITS]), twidx.eq(_W_X),
                         tpend.eq(1)]
        with m.If(smp[fi["y"]]):
            m.d.sync += [dy_lo.eq(dy[:8]), dy_hi.eq(dy[8:])]
        with m.If(smp[fi["alpha"]]):
            m.d.sync += [tword.eq(rd[:_field("alpha").width]), twidx.eq(_W_ALPHA),
                         tpend.eq(1), xy_hit.eq(xy_hit & dy_in)]
        with m.If(smp[fi["z"]]):
            # z's high bits with the sign flipped (unsigned order = signed order)
            zhi = rd[self.zlo_bits:zf.width] ^ (1 << (PIXEL_BITS - 1))
            m.d.sync += [tword.eq(zhi), twidx.eq(_W_ZHI), tpend.eq(1)]
            if self.zlo_bits:
                m.d.sync += zlo.eq(rd[:self.zlo_bits])
        with m.If(smp[fi["visible"]]):
            m.d.sync += [tword.eq(Cat(xy_hit & rd[0], zlo[:self.zlo_bits])),
                         twidx.eq(_W_ZLO), tpend.eq(1)]
        tb = hb - _W_BITS - nb
        table_hi = Const((1 << tb) - 1, tb) if tb > 0 else Cat()

        def table_addr(n, widx):
            return Cat(Const(widx, _W_BITS) if isinstance(widx, int) else widx, n, table_hi,
                       Const(0, 1))

        # -- the memory pipeline -----------------------------------------------------------
        # The RAM's output is registered (``data``, two clocks after the address: the ECP5's
        # block RAM output register; on the iCE40 12 flip-flops). The display reads a
        # canvas pixel in an even clock of the line (its first output pixel's first clock)
        # and writes BACKGROUND back two clocks later (even): the composer reads and
        # writes in odd clocks only, and never waits for the display.
        slot = Signal()        # the display's read
        m.d.comb += slot.eq(new_px & ~px[0] & below(px, mo.h_active))
        odd = Signal()
        m.d.sync += odd.eq(~odd)
        with m.If(line_end | resync):
            m.d.sync += odd.eq(0)
        op1, op2 = Signal(4), Signal(4)
        addr1, addr2 = Signal(hb + 1), Signal(hb + 1)
        c_op = Signal(4)       # the composer's read this clock (odd clocks)
        c_addr = Signal(hb + 1)
        cx = Signal(hb)
        m.d.comb += cx.eq(px >> 1)
        m.d.comb += rp.addr.eq(Mux(slot, Cat(cx, dbuf), c_addr))
        m.d.sync += [op1.eq(Mux(slot, Mux(dclr, _OP_DISP_CLR, _OP_DISP), c_op)),
                     addr1.eq(rp.addr), op2.eq(op1), addr2.eq(addr1)]
        data = Signal(PIXEL_BITS)
        m.d.sync += data.eq(rp.data)

        # composer state
        key_bits = self.key_bits
        best, last = Signal(key_bits), Signal(key_bits)
        bvalid, lvalid = Signal(), Signal()
        cdata = Signal(PIXEL_BITS)
        xpos = Signal(xb)
        w = Signal(9)           # the blend weight (alpha_weight) and 256 - w
        wb = Signal(9)
        src = Signal(PIXEL_BITS)    # the drawn layer's colour
        j = Signal(nb)
        zsel = Signal()
        k = Signal(range(LAYER_SIZE + 1))
        # ``k == LAYER_SIZE`` and ``k == LAYER_SIZE - 1`` as registers, set with ``k``
        # (the draw's end decides the state's enable: one LUT from a flip-flop there)
        k_end, k_end1 = Signal(), Signal()
        st = Signal(2)          # clock in a pixel's beat (0: its read, an odd clock)
        go = odd

        # stage 3: the data of the composer's reads
        z0hit = Signal()        # a Z0 read of a layer that hits (its Z1 word is in cdata)
        m.d.sync += z0hit.eq((op1 == _OP_Z0) & cdata[0])
        take = Signal()         # the key read in the clock before is the best so far
        key_n, key_hi = Signal(nb), Signal(PIXEL_BITS)
        m.d.sync += [take.eq(0), key_n.eq(addr2[_W_BITS:_W_BITS + nb]), key_hi.eq(data)]
        srow = Signal(max(rb, 1))   # the drawn layer's surface row, and "it has one"
        dsurf = Signal()
        s_half = Signal(16)         # the surface pixel of the beat
        with m.Switch(op2):
            with m.Case(_OP_Z1):
                m.d.sync += cdata.eq(data)
            with m.Case(_OP_Z0):
                # (the orderings as the borrows of subtractions, one carry chain each, with
                # "no last" / "no best yet" as their top bits; registered as ``take``, and
                # the key with it: ``best`` takes it in the next clock)
                key = Cat(addr2[_W_BITS:_W_BITS + nb], cdata[1:1 + self.zlo_bits], data)
                above = (Cat(last, lvalid).as_unsigned() - Cat(key, 1).as_unsigned())[key_bits + 1]
                below_best = (Cat(key, 0).as_unsigned()
                              - Cat(best, ~bvalid).as_unsigned())[key_bits + 1]
                m.d.sync += take.eq(z0hit & above & below_best)
            with m.Case(_OP_XR):
                m.d.sync += xpos.eq(data[:xb])
            with m.Case(_OP_RR):
                if sw:
                    m.d.sync += [srow.eq(data[:rb]), dsurf.eq(data[PIXEL_BITS - 1])]
            with m.Case(_OP_AR):
                alpha = data[:_field("alpha").width]
                m.d.sync += [w.eq(alpha + (alpha >> 7)), wb.eq(256 - alpha - (alpha >> 7))]
        with m.If(take):
            m.d.sync += [best.eq(Cat(key_n, cdata[1:1 + self.zlo_bits], key_hi)), bvalid.eq(1)]

        # The blend, bit-serial over the 4 bits of the source and the destination channel,
        # most significant first, 4 clocks a pixel: ``acc = 2 * acc + s_i * w + d_i * (256
        # - w)`` makes ``acc = s * w + d * (256 - w)``, and ``acc >> 8`` is display.blend.
        # ``s_i * w + d_i * (256 - w)`` is one LUT a bit (0, w, 256 - w or 256), then one
        # adder. Step 1 (st 2) takes the destination's top bit from ``data``, the others
        # from ``dsh`` (the rest, shifted); the sum is written in the next st 2. The
        # source's bits come from ``ssh`` the same way: the colour of the pixel whose
        # blend begins, loaded in st 1 (what ``src`` holds from st 2), then shifted; and
        # "st is 2" is a register set with ``st`` (flip-flops, not decodes of ``st``, in
        # front of the adders: the timing of the UP5K's fuller fabric)
        first_step = Signal()
        s_bit = Signal(3)
        d_bit = Signal(3)
        dsh = Signal(PIXEL_BITS)
        ssh = Signal(PIXEL_BITS)
        src_next = Signal(PIXEL_BITS)     # ``src`` from the next clock on (set below)
        with m.If(st == 1):
            m.d.sync += ssh.eq(src_next)
        with m.Else():
            m.d.sync += ssh.eq(ssh << 1)
        accs = []
        for c in range(3):
            m.d.comb += [s_bit[c].eq(ssh[4 * c + 3]),
                         d_bit[c].eq(Mux(first_step, data[4 * c + 3], dsh[4 * c + 3]))]
            acc = Signal(PIXEL_BITS, name=f"acc{c}")
            term = Signal(9, name=f"term{c}")
            m.d.comb += term.eq(Mux(s_bit[c], Mux(d_bit[c], 256, w), Mux(d_bit[c], wb, 0)))
            m.d.sync += acc.eq(Mux(first_step, 0, acc << 1)[:PIXEL_BITS] + term)
            accs.append(acc)
        with m.If(first_step):
            m.d.sync += dsh.eq(data << 1)
        with m.Else():
            m.d.sync += dsh.eq(dsh << 1)
        blended = Cat(*(a[8:12] for a in accs))
        wa = Signal(hb + 1)      # the address of the pixel being blended, and "write it"
        wv = Signal()
        c_we = Signal()          # the composer's write (st 2 of the next pixel's beat)

        bgw = BACKGROUND[0] | BACKGROUND[1] << 4 | BACKGROUND[2] << 8
        # (even clocks: the display's BACKGROUND; odd clocks: the composer's pixel, or a
        # table word of the fetch, while the composer is idle)
        in_dp = Signal()
        m.d.comb += [wp.addr.eq(Mux(odd, Mux(in_dp, wa, table_addr(fn, twidx)), addr2)),
                     wp.data.eq(Mux(odd, Mux(in_dp, blended, tword), bgw)),
                     wp.en.eq(Mux(odd, c_we | tpend, op2 == _OP_DISP_CLR))]
        with m.If(odd & (smp == 0)):            # (phase 2 sets it)
            m.d.sync += tpend.eq(0)
        if sw:
            with m.If(dcap):
                m.d.sync += [desc_row.eq(s_rdata[:rb]), desc_h.eq(s_rdata[16:24])]
        # phase 3 of the y cycle: the y test (a surface: 0 <= dy < height; none:
        # 0 <= dy < LAYER_SIZE) and the row word, written in the next odd clock (phase 1)
        y_hit = Mux(has_surf, ~no_desc & (dy_lo < desc_h), dy_lo[ls_bits:] == 0)
        with m.If(y3):
            m.d.sync += [xy_hit.eq(xy_hit & y_hit), dy_in.eq(dy_hi == 0), twidx.eq(_W_ROW),
                         tpend.eq(1)]
            if sw:
                m.d.sync += tword.eq(Cat((desc_row + dy_lo)[:rb],
                                         Const(0, PIXEL_BITS - 1 - rb), has_surf))
            else:
                m.d.sync += tword.eq(0)

        # the composer: passes of the selection sort, each followed by a draw
        in_canvas = ~xpos[xb - 1] & below(xpos[:xb - 1], cw)
        xcol = Signal(hb)
        m.d.comb += xcol.eq(xpos[:xb - 1])
        m.d.comb += c_op.eq(_OP_NONE)
        in_sort = Signal()
        in_da = Signal()
        in_dr = Signal()
        m.d.comb += c_addr.eq(Mux(in_dp, Cat(xcol, cbuf),
                                  table_addr(Mux(in_sort, j, last[:nb]),
                                             Mux(in_sort, Cat(~zsel, 1, 0),
                                                 Cat(in_da, 0, in_dr)))))
        palette = Array(Const(r | g << 4 | bl << 8, PIXEL_BITS) for r, g, bl in
                        [PALETTE[i % len(PALETTE)] for i in range(1 << nb)])
        # (one-hot in synthesis: its decodes are then single flip-flops; see link._one_hot)
        state = Signal(range(_S_DP + 1), attrs={"fsm_encoding": "one-hot"})
        m.d.comb += src_next.eq(src)
        with m.Switch(state):
            with m.Case(_S_IDLE):
                with m.If(fetch_done):
                    m.d.sync += [lvalid.eq(0), bvalid.eq(0), j.eq(0), zsel.eq(0),
                                 state.eq(_S_SORT)]
            with m.Case(_S_SORT):
                m.d.comb += in_sort.eq(1)
                with m.If(go):
                    m.d.comb += c_op.eq(Mux(zsel, _OP_Z0, _OP_Z1))
                    m.d.sync += zsel.eq(~zsel)
                    with m.If(zsel):
                        m.d.sync += j.eq(j + 1)
                        with m.If(j == L - 1):
                            m.d.sync += state.eq(_S_SWAIT)
            with m.Case(_S_SWAIT):
                m.d.sync += state.eq(_S_SWAIT2)
            with m.Case(_S_SWAIT2):
                m.d.sync += state.eq(_S_SWAIT3)
            with m.Case(_S_SWAIT3):
                m.d.sync += state.eq(_S_SDEC)
            with m.Case(_S_SDEC):
                m.d.sync += [bvalid.eq(0), j.eq(0), zsel.eq(0)]
                with m.If(bvalid):
                    m.d.sync += [last.eq(best), lvalid.eq(1), src.eq(palette[best[:nb]]),
                                 state.eq(_S_DR)]
                with m.Else():
                    m.d.sync += state.eq(_S_IDLE)
            with m.Case(_S_DR):
                m.d.comb += in_dr.eq(1)
                with m.If(go):
                    m.d.comb += c_op.eq(_OP_RR)
                    m.d.sync += state.eq(_S_DX)
            with m.Case(_S_DX):
                with m.If(go):
                    m.d.comb += c_op.eq(_OP_XR)
                    m.d.sync += state.eq(_S_DA)
            with m.Case(_S_DA):
                m.d.comb += in_da.eq(1)
                with m.If(go):
                    m.d.comb += c_op.eq(_OP_AR)
                    m.d.sync += [k.eq(0), k_end.eq(0), k_end1.eq(LAYER_SIZE == 1), st.eq(3),
                                 first_step.eq(0), wv.eq(0), state.eq(_S_DP)]
                    if sw:      # (the surface memory's read of pixel 0, in the next st 3)
                        m.d.sync += [s_raddr.eq(Cat(Const(0, 3), srow)), s_rd.eq(dsurf)]
            with m.Case(_S_DP):
                # beats of 4 clocks: st 0 reads pixel k (odd clock), st 2 writes pixel k-1
                # and takes pixel k's address, moving on; beat 16 only writes. A surface
                # pixel: its word is read in the st 3 before (``s_raddr``, set in st 2),
                # its half taken in st 0 (``s_half``), its colour in st 1 (``src`` holds
                # pixel k-1's last bit until then) and its opacity in st 2 (a transparent
                # pixel is not written)
                m.d.comb += in_dp.eq(1)
                m.d.sync += [st.eq(st + 1), first_step.eq(st == 1)]
                with m.If((st == 0) & ~k_end):
                    m.d.comb += c_op.eq(Mux(in_canvas, _OP_PIX, _OP_NONE))
                if sw:
                    with m.If(st == 0):
                        m.d.sync += s_half.eq(Mux(k[0], s_rdata[16:], s_rdata[:16]))
                    with m.If((st == 1) & dsurf):
                        m.d.sync += src.eq(s_half[:PIXEL_BITS])
                    m.d.comb += src_next.eq(Mux(dsurf, s_half[:PIXEL_BITS], src))
                with m.If(st == 2):
                    m.d.comb += c_we.eq(wv)
                    opaque = (~dsurf | s_half[15]) if sw else Const(1)
                    m.d.sync += [wa.eq(Cat(xcol, cbuf)),
                                 wv.eq(in_canvas & ~k_end & opaque),
                                 xpos.eq(xpos + 1), k.eq(k + 1), k_end.eq(k_end1),
                                 k_end1.eq(k == LAYER_SIZE - 2)]
                    if sw:
                        k1 = (k + 1)[:ls_bits]
                        m.d.sync += [s_raddr.eq(Cat(k1[1:], srow)),
                                     s_rd.eq(dsurf & ~k_end1 & ~k_end)]
                    with m.If(k_end):
                        m.d.sync += state.eq(_S_SORT)
        with m.If(resync):
            m.d.sync += state.eq(_S_IDLE)

        # -- the outputs: three registers after the counters (the RAM's two, rgb) ---------
        h_sync0 = mo.h_active + mo.h_front
        de0 = ~below(row, mo.v_blank) & below(px, mo.h_active)
        hs0 = ~below(px, h_sync0) & below(px, h_sync0 + mo.h_sync)
        vs0 = ~below(row, mo.v_front) & below(row, mo.v_front + mo.v_sync)
        fs0 = (row == 0) & (px == 0) & new_px
        de1, hs1, vs1, new1, fs1 = (Signal(name=n) for n in ("de1", "hs1", "vs1", "new1", "fs1"))
        de2, hs2, vs2, new2, fs2 = (Signal(name=n) for n in ("de2", "hs2", "vs2", "new2", "fs2"))
        m.d.sync += [de1.eq(de0), hs1.eq(hs0), vs1.eq(vs0), new1.eq(new_px), fs1.eq(fs0),
                     de2.eq(de1), hs2.eq(hs1), vs2.eq(vs1), new2.eq(new1), fs2.eq(fs1)]
        rgb = Signal(PIXEL_BITS)
        m.d.sync += [self.de.eq(de2), self.hsync.eq(hs2 ^ int(mo.hsync_negative)),
                     self.vsync.eq(vs2 ^ int(mo.vsync_negative)), self.pixel.eq(new2),
                     self.frame_start.eq(fs2)]
        with m.If((op2 == _OP_DISP) | (op2 == _OP_DISP_CLR)):
            m.d.sync += rgb.eq(Mux(de2, data, 0))
        with m.Elif(new2 & ~de2):
            m.d.sync += rgb.eq(0)
        m.d.comb += [self.r.eq(rgb[0:4]), self.g.eq(rgb[4:8]), self.b.eq(rgb[8:12])]

        # -- the surface memory: one access a clock; a host write waits for a clock
        # without a read (reads are at least two clocks apart, strobes four) ------------
        if sw:
            wpend = Signal()
            waddr = Signal(range(sw))
            wdata = Signal(32)
            s_we = Signal()
            m.d.comb += s_we.eq(wpend & ~s_rd)
            with m.If(self.surf_we):
                m.d.sync += [wpend.eq(1), waddr.eq(self.surf_addr), wdata.eq(self.surf_data)]
            with m.Elif(s_we):
                m.d.sync += wpend.eq(0)
            kind = self.surface_memory
            if kind == "auto":
                kind = "spram" if (getattr(platform, "device", "") or "").upper().startswith(
                    "ICE40UP") else "bram"
            if kind == "spram":
                m.submodules.surf_mem = sm = ProgramMemory(
                    sw, "spram", primitive=self.spram_primitive or platform is not None)
                m.d.comb += [sm.rd_addr.eq(s_raddr), sm.wr_addr.eq(waddr),
                             sm.wr_data.eq(wdata), sm.wr_en.eq(s_we), s_rdata.eq(sm.rd_data)]
            else:
                m.submodules.surf_mem = sm = memory.Memory(shape=32, depth=sw, init=[],
                                                           attrs={"ram_style": "block"})
                srp, swp = sm.read_port(), sm.write_port()
                m.d.comb += [srp.addr.eq(s_raddr), swp.addr.eq(waddr), swp.data.eq(wdata),
                             swp.en.eq(s_we), s_rdata.eq(srp.data)]
            self.probe_surf = dict(wpend=wpend, s_we=s_we, s_rd=s_rd)
        #: internal signals, for tests
        self.probe = dict(state=state, fetching=fetching, row=row, hcyc=hcyc, lc=lc,
                          best=best, last=last, bvalid=bvalid, xpos=xpos, w=w, op1=op1,
                          tpend=tpend, trig=trig)
        return m
