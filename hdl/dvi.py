"""DVI output: TMDS encoding (DVI 1.0, section 3.2.3) and the 10:1 serialiser's word side.

The video signals come from the fabric clock domain (``sync``), one pixel every few fabric
clocks (``pixel`` high in the clock that presents it): ``r, g, b`` (RGB444, 4 bits each),
``de``, ``hsync``, ``vsync`` (wire level, the mode's polarity already applied).

- :class:`TMDSEncoder`: one channel's 8b/10b encoder with its running disparity, and the
  four control symbols during blanking (``de`` low).
- :class:`DVITransmitter`: three encoders in the fabric domain (blue carries (hsync,
  vsync) as (C0, C1), green and red (0, 0)); each RGB444 channel ``c`` is sent as the
  8-bit ``c * 17`` (what :func:`copperline.firmware.display.to_rgb888` gives), so a
  monitor shows the display model's colours exactly. The three 10-bit symbols of a pixel
  cross into the serialiser's domain (``tmds``, :data:`TMDS_CLOCKS_PER_PIXEL` of its
  clocks per pixel) through an :class:`~amaranth.lib.fifo.AsyncFIFO` of 30-bit words, and
  leave as two bits per ``tmds`` clock per channel (:attr:`DVITransmitter.data`,
  :attr:`DVITransmitter.clock`, bit 0 of a symbol first), for double data rate output
  registers (``ODDRX1F`` on the ECP5: ``amaranth.lib.io.DDRBuffer``; the board binding is
  ``copperline.boards.ulx3s.gpdi_output``). The clock channel sends
  :data:`CLOCK_SYMBOL` once per pixel, aligned with the data symbols.

The two domains must run at exactly the same pixel rate (the ULX3S makes both clocks
from one PLL VCO): the FIFO absorbs their phase, not a frequency difference. Reading
starts when the FIFO holds :data:`START_LEVEL` words; should it ever run dry (a clock
lost lock), the output sends blanking (control symbols (0, 0)) and starts again at that
level.
"""

from amaranth import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.data import ArrayLayout
from amaranth.lib.fifo import AsyncFIFO
from amaranth.lib.wiring import In, Out

#: The control symbols (DVI 1.0 section 3.3.3), indexed by ``C1 << 1 | C0``; an integer's
#: bit 0 is the symbol's first bit on the wire (q_out[0]).
CONTROL_SYMBOLS = (0b1101010100, 0b0010101011, 0b0101010100, 0b1010101011)
#: What the TMDS clock channel sends per pixel: five ones then five zeros (bit 0 first),
#: the pixel clock at the symbol boundary.
CLOCK_SYMBOL = 0b0000011111
#: Serialiser clocks per pixel: 10 bits per symbol, 2 per clock (DDR output registers).
TMDS_CLOCKS_PER_PIXEL = 5
#: Fabric clocks from ``en`` to ``valid`` in :class:`TMDSEncoder`.
ENCODER_LATENCY = 3
#: The clock domain of the serialiser side (5 x the pixel rate).
TMDS_DOMAIN = "tmds"
#: AsyncFIFO depth (30-bit words) and the fill level at which reading (re)starts.
FIFO_DEPTH = 16
START_LEVEL = 8


def _popcount(bits):
    return sum((bits[i] for i in range(len(bits))), start=Const(0, 4))


class TMDSEncoder(wiring.Component):
    """One TMDS channel, DVI 1.0 section 3.2.3, in three pipeline stages.

    In the clock where ``en`` is high it takes ``data`` (8 bits), ``de`` and the control
    bits ``c0``, ``c1``; :data:`ENCODER_LATENCY` clocks later ``valid`` is high for one
    clock with that pixel's ``symbol`` (10 bits, bit 0 first on the wire), which holds
    until the next one. ``en`` may be high in consecutive clocks. The running disparity
    (``disparity``, the spec's cnt) advances with each data symbol and is 0 after a
    control symbol.

    Stage 1 (on ``en``): the transition-minimised 9-bit q_m. Stage 2: its N1 - N0.
    Stage 3: the DC balancing against the running disparity.
    """

    data: In(8)
    c0: In(1)
    c1: In(1)
    de: In(1)
    en: In(1)
    symbol: Out(10)
    valid: Out(1)
    disparity: Out(signed(5))

    def elaborate(self, platform):
        m = Module()

        # -- stage 1: q_m ----------------------------------------------------------------
        d = self.data
        n1_data = Signal(4)
        m.d.comb += n1_data.eq(_popcount(d))
        use_xnor = (n1_data > 4) | ((n1_data == 4) & ~d[0])
        # q_m[i] = q_m[i-1] XOR d[i] (XNOR: one inversion per step), i.e. the parity of
        # d[0..i], inverted at odd i when XNOR is used: no chain through the bits
        q = []
        for i in range(8):
            parity = d[0]
            for j in range(1, i + 1):
                parity = parity ^ d[j]
            q.append(parity ^ use_xnor if i % 2 else parity)
        qm = Signal(9)          # q_m[8] = 1: XOR was used
        de1, ctl1, en1 = Signal(), Signal(2), Signal()
        m.d.sync += en1.eq(self.en)
        with m.If(self.en):
            m.d.sync += [qm.eq(Cat(*q, ~use_xnor)), de1.eq(self.de),
                         ctl1.eq(Cat(self.c0, self.c1))]

        # -- stage 2: N1 - N0 of q_m[0:7] ------------------------------------------------
        ones = Signal(4)
        m.d.comb += ones.eq(_popcount(qm[:8]))
        qm2, diff, even2 = Signal(9), Signal(signed(5)), Signal()    # diff: -8..8
        de2, ctl2, en2 = Signal(), Signal(2), Signal()
        m.d.sync += en2.eq(en1)
        with m.If(en1):
            m.d.sync += [qm2.eq(qm), de2.eq(de1), ctl2.eq(ctl1), even2.eq(ones == 4),
                         diff.eq(ones * 2 - 8)]     # (modulo 2**5: two's complement)

        # -- stage 3: DC balance ---------------------------------------------------------
        # The spec's three branches as one: q_out[9] = invert, q_out[0:7] = q_m[0:7] ^
        # invert, q_out[8] = q_m[8], where invert is ~q_m[8] when cnt = 0 or N1 = N0 of
        # q_m[0:7], else whether cnt and N1 - N0 have the same sign; and cnt moves by
        # -(N1 - N0) if invert else (N1 - N0), plus 2 * q_m[8] (inverted, unbalanced) or
        # -2 * ~q_m[8] (kept, unbalanced).
        cnt = self.disparity
        qm = qm2
        balanced = (cnt == 0) | even2
        invert = Signal()
        m.d.comb += invert.eq(Mux(balanced, ~qm[8], cnt[4] == diff[4]))
        # -diff = ~diff + 1: the + 1 joins the correction k
        k = Signal(signed(3))
        with m.If(balanced):
            m.d.comb += k.eq(invert)
        with m.Elif(invert):
            m.d.comb += k.eq(Mux(qm[8], 3, 1))
        with m.Else():
            m.d.comb += k.eq(Mux(qm[8], 0, -2))
        sym, new_cnt = Signal(10), Signal(signed(5))
        ctl_table = Const.cast(Cat(*(Const(s, 10) for s in CONTROL_SYMBOLS)))
        with m.If(~de2):
            m.d.comb += [sym.eq(ctl_table.word_select(ctl2, 10)), new_cnt.eq(0)]
        with m.Else():
            m.d.comb += [sym.eq(Cat(qm[:8] ^ invert.replicate(8), qm[8], invert)),
                         new_cnt.eq(cnt + (diff ^ invert.replicate(5)).as_signed() + k)]
        m.d.sync += self.valid.eq(en2)
        with m.If(en2):
            m.d.sync += [self.symbol.eq(sym), cnt.eq(new_cnt)]
        return m


class DVITransmitter(wiring.Component):
    """The video signals (fabric domain ``domain``) to two bits per ``tmds_domain`` clock
    per TMDS channel.

    Inputs (``domain``): ``r, g, b`` (RGB444), ``de``, ``hsync``, ``vsync``, ``pixel``
    (high in the clock that presents a new pixel; the others are read in that clock
    only). On average one pixel per :data:`TMDS_CLOCKS_PER_PIXEL` ``tmds_domain`` clocks:
    both domains must come from one clock source at exactly that ratio.

    Outputs (``tmds_domain``, registered): ``data`` (``ArrayLayout(3, 2)``: ``data[k]``
    is the k-th bit of this clock on channels 0 (blue), 1 (green), 2 (red)) and
    ``clock`` (``ArrayLayout(1, 2)``), the shapes of ``amaranth.lib.io.DDRBuffer``'s
    ``o`` for a 3-pin and a 1-pin port: ``o[0]`` leaves first. ``running``: the FIFO
    is being read (pixels are on the wire); ``underflows`` counts restarts (wraps).
    """

    r: In(4)
    g: In(4)
    b: In(4)
    de: In(1)
    hsync: In(1)
    vsync: In(1)
    pixel: In(1)
    data: Out(ArrayLayout(3, 2))
    clock: Out(ArrayLayout(1, 2))
    running: Out(1)
    underflows: Out(8)

    def __init__(self, *, domain: str = "sync", tmds_domain: str = TMDS_DOMAIN,
                 fifo_depth: int = FIFO_DEPTH, start_level: int = START_LEVEL):
        if not 0 < start_level <= fifo_depth:
            raise ValueError(f"start level {start_level} outside 1..{fifo_depth}")
        self._domain, self._tmds = domain, tmds_domain
        self._depth, self._start = fifo_depth, start_level
        super().__init__()

    def elaborate(self, platform):
        from amaranth import DomainRenamer
        m = Module()

        # -- fabric domain: encode, write the 30-bit word ------------------------------------
        enc = {}
        for name, value in (("b", self.b), ("g", self.g), ("r", self.r)):
            e = enc[name] = DomainRenamer(self._domain)(TMDSEncoder())
            m.submodules[f"enc_{name}"] = e
            m.d.comb += [e.data.eq(Cat(value, value)),       # c * 17
                         e.de.eq(self.de), e.en.eq(self.pixel)]
        m.d.comb += [enc["b"].c0.eq(self.hsync), enc["b"].c1.eq(self.vsync)]

        m.submodules.fifo = fifo = AsyncFIFO(width=30, depth=self._depth,
                                             w_domain=self._domain, r_domain=self._tmds)
        m.d.comb += [fifo.w_data.eq(Cat(enc["b"].symbol, enc["g"].symbol, enc["r"].symbol)),
                     fifo.w_en.eq(enc["b"].valid)]

        # -- serialiser domain: a word every TMDS_CLOCKS_PER_PIXEL clocks, 2 bits a clock ----
        tmds = m.d[self._tmds]
        # The word phase as a ring of TMDS_CLOCKS_PER_PIXEL flip-flops (bit 0: load a word).
        # The FIFO's read enable is one flip-flop (``load``: a load clock while running),
        # and the start condition is registered a clock ahead: the AsyncFIFO's own path
        # (r_rdy's compare, the read pointer's increment) is then all that is left between
        # flip-flops at 125 MHz.
        phase = Signal(TMDS_CLOCKS_PER_PIXEL, init=1)
        tmds += phase.eq(phase.rotate_left(1))
        load, level_ok = Signal(), Signal()
        tmds += [load.eq(phase[-1] & self.running & ~fifo.r_rst),
                 level_ok.eq(fifo.r_level >= self._start)]
        m.d.comb += fifo.r_en.eq(load)
        idle = Const(CONTROL_SYMBOLS[0] * (1 | 1 << 10 | 1 << 20), 30)
        shift = Signal(30, init=idle.value)
        clk_shift = Signal(10, init=CLOCK_SYMBOL)
        with m.If(phase[0]):
            tmds += clk_shift.eq(CLOCK_SYMBOL)
            with m.If(load & fifo.r_rdy):
                tmds += shift.eq(fifo.r_data)
            with m.Else():
                tmds += shift.eq(idle)
                with m.If(self.running):
                    tmds += [self.running.eq(0), self.underflows.eq(self.underflows + 1)]
                with m.Elif(level_ok & ~fifo.r_rst):
                    tmds += self.running.eq(1)
        with m.Else():
            channels = [Cat(shift[10 * k + 2:10 * k + 10], Const(0, 2)) for k in range(3)]
            tmds += [shift.eq(Cat(*channels)), clk_shift.eq(clk_shift[2:])]
        for k in range(2):
            m.d.comb += [self.data[k].eq(Cat(shift[10 * ch + k] for ch in range(3))),
                         self.clock[k].eq(clk_shift[k])]
        return m
