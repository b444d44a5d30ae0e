"""The board-independent top: UART + link + bus decode + the Copper core.

:class:`LinkTop` is what every board builds: the UART pins go through
:class:`~copperline.hdl.uart.UARTRx`/``UARTTx`` into :class:`~copperline.hdl.link.Link`,
whose register bus is decoded here (:class:`CoreBus`) onto the core's host ports (the
host pulls the core's event records through the EVENTS space). Without the core (``core=None``) only
the INFO space (served by the link) and a 16-word SCRATCH space answer; the core's spaces
(PROG, CTL, FENCE, REGS, STATUS) answer ``bad address``, so a host sees at once that the
bitstream has no core. With the core, SCRATCH answers ``bad address`` (its RAM is only
in the link-only top).

The core runs ``phases`` fabric clocks per core cycle (docs/core.md), so its cycle rate
is ``clock_hz / phases``; that is the ``clock_hz`` INFO reports (timestamps count it) and
``fabric_hz`` is the board clock.

LEDs: ``led_link`` lights for 50-200 ms after each good request, ``led_error`` for
150-400 ms after a bad frame or an idle timeout.
"""

from __future__ import annotations

import dataclasses

from amaranth import *
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from copperline.firmware import board_interface as proto
from copperline.firmware import isa
from copperline.firmware.board_interface import DEFAULT_BAUD
from copperline.hdl.compositor import Compositor
from copperline.hdl.core import Core, phases_for
from copperline.hdl.link import BusSignature, Link, addr_bits_for, info_words
from copperline.hdl.lut import below, is_ice40, lut, mux
from copperline.hdl.uart import UARTRx, UARTTx, bit_timing

__all__ = ["Scratch", "CoreBus", "CoreConfig", "LinkTop", "VIDEO_SIGNATURE"]

#: The top's video output: the compositor's (:class:`~copperline.hdl.compositor.Compositor`).
VIDEO_SIGNATURE = wiring.Signature({
    "r": Out(4), "g": Out(4), "b": Out(4), "de": Out(1), "hsync": Out(1), "vsync": Out(1),
    "pixel": Out(1), "frame_start": Out(1)})


@dataclasses.dataclass
class CoreConfig:
    """Core parameters for a board: ``contexts`` decides the phases per core cycle, and
    ``fabric_hz / phases`` must be a whole number of MHz."""

    contexts: int = 4
    program_words: int = 256
    layers: int = isa.DEFAULT_LAYERS
    vsync_hz: float = isa.DEFAULT_VSYNC_HZ
    fifo_depth: int = 256
    #: ``bram`` or ``spram`` (iCE40UP); with ``spram_primitive`` False the SPRAM's
    #: Amaranth model stands in (simulation: the virtual board).
    program_memory: str = "bram"
    spram_primitive: bool = False
    #: The core's ECP5 options (``Core`` and ``copperline.hdl.synth.ECP5_CORE_OPTIONS``):
    #: LUT RAM for the small memories, block RAMs read through their output registers
    #: (``prog_outreg`` needs 4 contexts), as ``DP16KD`` primitives with ``bram_primitive``
    #: (the Amaranth models stand in in simulation).
    lut_ram: bool = False
    prog_outreg: bool = False
    bram_primitive: bool = False
    fifo_outreg: bool = False
    #: Simulation only: the core's warp (``Core(warp_us=...)``), 0 = none.
    warp_us: int = 0

    def simulation(self, warp_us: int = 0) -> "CoreConfig":
        """The same core with simulation models instead of FPGA primitives (and the
        simulation-only warp of ``warp_us`` microseconds, 0 = none)."""
        return dataclasses.replace(self, spram_primitive=False, bram_primitive=False,
                                   warp_us=warp_us)

    def core_hz(self, fabric_hz: int) -> int:
        phases = phases_for(self.contexts)
        if fabric_hz % phases or (fabric_hz // phases) % 1_000_000:
            raise ValueError(f"a {fabric_hz / 1e6:g} MHz clock over {phases} phases "
                             f"({self.contexts} contexts) is not a whole number of MHz")
        return fabric_hz // phases


class Scratch(wiring.Component):
    """16 words of RAM on the link bus (space SCRATCH); every other space errs."""

    def __init__(self):
        super().__init__({"bus": In(BusSignature)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.mem = mem = Memory(shape=32, depth=proto.SCRATCH_WORDS, init=[])
        w = mem.write_port()
        r = mem.read_port()
        hit = (self.bus.space == proto.SPACE_SCRATCH) & (self.bus.addr < proto.SCRATCH_WORDS)
        m.d.comb += [
            self.bus.err.eq(~hit),
            w.addr.eq(self.bus.addr), w.data.eq(self.bus.wdata), w.en.eq(self.bus.we & hit),
            r.addr.eq(self.bus.addr), r.en.eq(self.bus.re),
            self.bus.rdata.eq(r.data),
        ]
        return m


class CoreBus(wiring.Component):
    """Decodes the link bus onto the Copper core's host ports (see docs/link.md spaces).

    PROG ``slot * program_words + word``; CTL ``slot`` (1 start, 2 stop, 3 reset, 4 start
    and reset the time base) or
    ``0x100`` (reset all + time base) or
    ``0x102`` (start the slots of a mask in one core cycle; bit 31: and reset the time
    base), every other CTL address errs (also ``0x101``, once the event mode: events
    are only pulled); FENCE
    ``slot * FENCE_TIMELINES + timeline``; REGS ``register index`` (raw bits); STATUS
    ``slot * 4 + (state, pc, cycle, dropped)``; EVENTS ``2 * i`` low and
    ``2 * i + 1`` high word of the FIFO's head record, popped by the high word's read
    (both words ``0xFFFFFFFF``: empty). SCRATCH is only in the link-only top: here it
    errs like any unknown space.

    Registered decode (timing; ``BusSignature``): ``err`` is one flip-flop, decided from
    the bus's space/addr/write/wdata a clock after them (as the link allows), with the
    compares against constants as bit tests (no carry chains). A write (``we``) reaches
    the core's ports, and an EVENTS read its pop, one clock after the bus cycle (the link
    holds the bus's request through that clock); a CTL write that reaches ``we`` passed
    the error decode, so a few address and value bits tell its command. A read loads one
    register at ``re`` from every source (the register file's read-back, a RAM read every
    clock, already holds the address's word then: the address has held since the error
    decode); each bit of it is a chain of LUTs two sources each (``SB_LUT4`` instances on
    the iCE40, whose delay-driven mapping would spend more on a shallower path), steered
    by selects registered the clock before ``re``.
    """

    def __init__(self, core, *, quiet: bool = False, surface_words: int = 0):
        self.core = core
        self.surface_words = surface_words
        members = {"bus": In(BusSignature),
                   "active": Out(1),            # a start since the last reset-all
                   "ev_pop": Out(1)}            # the FIFO's head record was read
        if surface_words:
            # SURFACE writes, to the compositor's surface memory (a clock's strobe)
            members |= {"surf_addr": Out(range(surface_words)), "surf_data": Out(32),
                        "surf_we": Out(1)}
        if quiet:
            members["quiet"] = Out(1)    # simulation only: no bus cycle, no command waiting
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        core, bus = self.core, self.bus
        C = core.contexts
        sb, pb = core.slot_bits, core.pc_bits
        sp, a, w = bus.space, bus.addr, bus.wdata
        regs_n = core.layers * isa.REG_STRIDE
        # (the CTL decode below tells the commands apart by a few bits, given the request
        # passed the error decode)
        assert (proto.CTL_RESET_ADDR, proto.CTL_START_MASK_ADDR) == (0x100, 0x102) and C <= 0x100
        assert (proto.CTL_START, proto.CTL_STOP, proto.CTL_RESET_SLOT,
                proto.CTL_START_TB) == (1, 2, 3, 4)
        assert proto.STATUS_WORDS == 4 and proto.TIMESTAMP_BITS == 32

        # --- errors: what the request says, decoded into one registered flag (the link
        # allows ``err`` to lag a clock); compares with constants as bit tests (a
        # ``<`` would be a carry chain)
        wr_ok, rd_ok = bus.write, ~bus.write
        w_hi0 = w[C:31] == 0
        ok = Signal()
        with m.Switch(sp):
            with m.Case(proto.SPACE_PROG):
                m.d.comb += ok.eq(wr_ok & below(a[pb:], C))
            with m.Case(proto.SPACE_CTL):
                w_cmd = (w[3:] == 0) & (w[:3] != 0) & (~w[2] | (w[:2] == 0))      # 1..4
                m.d.comb += ok.eq(wr_ok & (
                    (below(a, C) & w_cmd) |
                    (a == proto.CTL_RESET_ADDR) & (w == 1) |
                    (a == proto.CTL_START_MASK_ADDR) & (w[:C] != 0) & w_hi0))
            with m.Case(proto.SPACE_FENCE):
                m.d.comb += ok.eq(wr_ok & below(a[2:], C) & (w[isa.FENCE_VALUE_BITS:] == 0))
            with m.Case(proto.SPACE_REGS):
                m.d.comb += ok.eq(rd_ok & below(a, regs_n))
            with m.Case(proto.SPACE_STATUS):
                m.d.comb += ok.eq(rd_ok & below(a[2:], C))
            with m.Case(proto.SPACE_EVENTS):
                m.d.comb += ok.eq(rd_ok & below(a, 2 * proto.MAX_READ_WORDS))
            if self.surface_words:
                with m.Case(proto.SPACE_SURFACE):
                    m.d.comb += ok.eq(wr_ok & below(a, self.surface_words))
            with m.Default():
                m.d.comb += ok.eq(0)
        m.d.sync += bus.err.eq(~ok)

        # --- writes reach the core's ports one clock after the bus's ``we`` (timing): the
        # link holds space/addr/wdata through that clock (``BusSignature``)
        wr = Signal()
        m.d.sync += wr.eq(bus.we)

        # --- PROG and FENCE writes: the core always accepts them
        m.d.comb += [core.prog_wr.payload.addr.eq(a), core.prog_wr.payload.data.eq(w),
                     core.prog_wr.valid.eq(wr & (sp == proto.SPACE_PROG)),
                     core.fence_wr.payload.slot.eq(a >> 2),
                     core.fence_wr.payload.timeline.eq(a[:2]),
                     core.fence_wr.payload.value.eq(w),
                     core.fence_wr.valid.eq(wr & (sp == proto.SPACE_FENCE))]
        if self.surface_words:
            m.d.comb += [self.surf_addr.eq(a), self.surf_data.eq(w),
                         self.surf_we.eq(wr & (sp == proto.SPACE_SURFACE))]

        # --- CTL: commands are accepted in the first clock of a core cycle; until then
        # they wait here, and later writes merge into the same command.
        p_start, p_stop, p_reset = Signal(C), Signal(C), Signal(C)
        p_tb = Signal()
        # (a write that reaches here passed the error decode: address bit 8 tells a slot
        # from 0x100/0x102, bit 1 those two apart, and the value's bits the command: 1
        # START and 4 START_TB have bit 1 clear, 2 STOP and 3 RESET_SLOT set, bit 0 tells
        # those two apart and bit 2 is START_TB's time base reset)
        ctl = Signal()
        m.d.comb += ctl.eq(wr & (sp == proto.SPACE_CTL))
        reset_all = ctl & a[8] & ~a[1]
        mask = ctl & a[8] & a[1]
        slot_cmd = ctl & ~a[8]
        bit = Signal(C)
        m.d.comb += bit.eq(1 << a[:sb])
        n_start = Mux(slot_cmd & ~w[1], bit, 0) | Mux(mask, w[:C], 0)
        n_stop = Mux(slot_cmd & w[1] & ~w[0], bit, 0)
        n_reset = Mux(slot_cmd & w[1] & w[0], bit, 0) | Mux(reset_all, (1 << C) - 1, 0)
        n_tb = reset_all | (mask & w[31]) | (slot_cmd & w[2])
        with m.If((slot_cmd & ~w[1]) | mask):
            m.d.sync += self.active.eq(1)
        with m.Elif(reset_all):
            m.d.sync += self.active.eq(0)
        cmd = core.cmd
        # (``valid`` is a flip-flop of its own, set with the command: the core's time base
        # reset hangs off it, timing)
        p_any = Signal()
        m.d.comb += [cmd.valid.eq(p_any),
                     cmd.payload.start.eq(p_start), cmd.payload.stop.eq(p_stop),
                     cmd.payload.reset.eq(p_reset), cmd.payload.timebase.eq(p_tb)]
        if hasattr(self, "quiet"):
            m.d.comb += self.quiet.eq(~cmd.valid & ~bus.we & ~bus.re & ~wr & ~self.ev_pop)
        taken = cmd.valid & cmd.ready
        # (every CTL write that passed the error decode is a command of its own)
        m.d.sync += [p.eq(n | Mux(taken, 0, p)) for p, n in ((p_start, n_start), (p_stop, n_stop),
                                                            (p_reset, n_reset), (p_tb, n_tb))]
        m.d.sync += p_any.eq(ctl | (p_any & ~taken))

        # --- reads: one read register, loaded at ``re`` from the space's source; the
        # register file's read-back (a RAM read every clock) already holds the address's
        # word then: the address has held since the error decode (the link decides on
        # ``err`` before ``re``)
        m.d.comb += [core.reg_addr.eq(a), core.status_slot.eq(a >> 2)]
        rd = Signal(32, reset_less=True)
        m.d.comb += bus.rdata.eq(rd)
        # EVENTS: the low word's read latches whether there is a record, so the high word
        # (and the pop) belong to the same record even if one arrives in between.
        ev = core.events
        ev_bits = ev.payload.as_value()
        have = Signal()
        is_ev = sp == proto.SPACE_EVENTS
        # Which source the read takes (one-hot), and each bit of the read register as a
        # chain of LUTs: the first picks one of two sources, 0 or 1 by two selects, each
        # further one passes its input on or, by its select, picks one of two sources
        # by its input (then a 0 or 1 set up by the first): two sources per LUT.
        is_st = sp == proto.SPACE_STATUS
        pick = {"cycle": is_st & (a[:2] == proto.STATUS_CYCLE),
                "dropped": is_st & (a[:2] == proto.STATUS_DROPPED),
                "lo": is_ev & ~a[0] & ev.valid,
                "hi": is_ev & a[0] & have,
                "none": is_ev & Mux(a[0], ~have, ~ev.valid),
                "regs": sp == proto.SPACE_REGS,
                "pc": is_st & (a[:2] == proto.STATUS_PC),
                "state": is_st & (a[:2] == proto.STATUS_STATE)}
        src = {"cycle": core.cycle, "dropped": core.dropped,
               "lo": ev_bits[:32], "hi": ev_bits[32:64], "regs": core.reg_data,
               "pc": core.status_pc, "state": core.status_state}
        order = ["cycle", "dropped", "lo", "hi", "regs", "pc", "state"]  # later: arrive late
        # (on the iCE40 each LUT of the chain is an ``SB_LUT4`` of its own: left to it,
        # the delay-driven mapping spends LUTs on a shallower read path than it needs)
        ice40 = is_ice40(platform)
        # (the selects are registered, from the clock before ``re``: the request has held
        # since the error decode, and a record at the FIFO's head stays until popped here)
        sels = {}

        def sel(e):
            key = repr(e)
            if key not in sels:
                sels[key] = Signal(name=f"rd_sel{len(sels)}", reset_less=True)
                m.d.sync += sels[key].eq(e)
            return sels[key]

        lo_q = sel(pick["lo"])
        with m.If(bus.re & is_ev):
            m.d.sync += have.eq(lo_q)
        word = []
        for i in range(32):
            here = [n for n in order if i < len(src[n])]
            first, rest = here[:2], [here[k:k + 2] for k in range(2, len(here), 2)]
            later_b = [g[1] for g in rest if len(g) == 2]
            x = sel(Cat(*(pick[n] for n in pick if n not in first)).any())
            y = sel(Cat(*(pick[n] for n in [first[1], "none"] + later_b)).any())
            v = lut(m, ice40, lambda x, y, d0, d1: mux(x, y, mux(y, d1, d0)),
                     x, y, src[first[0]][i], src[first[1]][i])
            for g in rest:
                t = sel(Cat(*(pick[n] for n in g)).any())
                if len(g) == 2:
                    v = lut(m, ice40, lambda t, v, d0, d1: mux(t, mux(v, d1, d0), v),
                             t, v, src[g[0]][i], src[g[1]][i])
                else:
                    v = lut(m, ice40, lambda t, v, d0: mux(t, d0, v), t, v, src[g[0]][i])
            word.append(v)
        with m.If(bus.re):
            m.d.sync += rd.eq(Cat(*word))
        # (the pop, registered: the record leaves the FIFO one clock after its high word
        # was read, long before the link's next read)
        m.d.sync += self.ev_pop.eq(bus.re & (sp == proto.SPACE_EVENTS) & a[0] & have)
        return m



class LinkTop(wiring.Component):
    """UART pins <-> link <-> bus. ``byte_io=True`` exposes the link's byte streams
    instead of the UART pins (fast simulation: the virtual board, benchmarks).
    ``display`` (a ``copperline.firmware.display.Display`` of this core's timing and
    vsync): the layer compositor reads the core's registers and drives ``video``
    (:data:`VIDEO_SIGNATURE`), and the SURFACE space writes its surface memory;
    ``run_start`` marks a program's start with a time-base
    reset, whose frame is frame 0."""

    def __init__(self, *, clock_hz: int, baud: int = DEFAULT_BAUD, idle_timeout_us: int = 10_000,
                 byte_io: bool = False, core: CoreConfig | None = None,
                 gated_link: bool = False, link_tx_outreg: bool = False, display=None):
        self.display = display
        #: words of the compositor's surface memory (the SURFACE space; 0: none)
        self.surface_words = display.surface_words if display is not None else 0
        self.clock_hz = clock_hz
        self.core_config = core
        self.core_hz = core.core_hz(clock_hz) if core else clock_hz
        self.baud = baud
        self.byte_io = byte_io
        self.gated_link = gated_link
        self.link_tx_outreg = link_tx_outreg     # Link(tx_outreg=...): the ECP5's builds
        self.idle_timeout = max(16, clock_hz // 1_000_000 * idle_timeout_us)
        members = {"led_link": Out(1), "led_error": Out(1), "busy": Out(1)}
        if display is not None:
            problem = self._display_problem(display, core)
            if problem:
                self._MustUse__silence = True       # (refused: no "never used" warning)
                raise ValueError(problem)
            # the compositor's video output, and a program's start with a time-base reset
            # (its frame is frame 0: a simulator numbers the frames it captures from it)
            members |= {"video": Out(VIDEO_SIGNATURE), "run_start": Out(1)}
        if byte_io:
            members |= {"rx": In(stream.Signature(8)), "tx": Out(stream.Signature(8))}
        else:
            members |= {"uart_rx": In(1, init=1), "uart_tx": Out(1, init=1)}
        if gated_link and byte_io:
            raise ValueError("gated_link needs the UART pins (byte_io=False)")
        if gated_link:
            # simulation only: the link and the bus decode run in the ``link`` domain,
            # whose clock a simulator may hold while ``link_quiet``; the UARTs in the
            # ``line`` domain, which may be clocked without ``sync`` to catch up with a
            # warp, and need not be once ``line_quiet``; ``line_calm``/``line_skip``: the
            # transmitter's (UARTTx) while nothing else there moves (docs/boards.md)
            div = bit_timing(clock_hz, baud).longest
            members |= {"link_quiet": Out(1), "line_quiet": Out(1),
                        "line_calm": Out(range(div)), "line_skip": In(range(div))}
        if core is not None and core.warp_us:
            if not gated_link or byte_io:
                raise ValueError("the core's warp needs gated_link=True and the UART pins "
                                 "(the simulator catches the line up after a warp)")
            # simulation only: the core's warp, allowed after a start while the link is
            # detached from the core (a frame being received or executed, a command
            # waiting hold it off; a response going out does not);
            # ``warped``: the core cycles skipped at the end of this clock, which the
            # simulator then clocks the ``line`` and ``link`` domains alone for
            most = core.warp_us * isa.cycles_per_us(self.core_hz)
            members |= {"warp": In(1), "warped": Out(range(most + 1))}
        super().__init__(members)

    def _display_problem(self, display, core) -> str | None:
        """Why this top cannot drive ``display``, or None."""
        if core is None:
            return "a display needs the core (its registers)"
        if core.warp_us:
            return "a display needs every core cycle: no warp (warp_us=0)"
        if (display.clock_hz, display.contexts) != (self.core_hz, phases_for(core.contexts)):
            return (f"the display's core timing ({display.clock_hz} Hz, {display.contexts} "
                    "clocks a cycle) is not the core's")
        if isa.vsync_period_cycles(self.core_hz, core.vsync_hz) != display.frame_cycles:
            return (f"the core's vsync ({core.vsync_hz} Hz) is not the display's frame "
                    f"({display.frame_cycles} cycles)")
        return None

    def info(self) -> list[int]:
        c = self.core_config
        if c is None:
            return info_words(clock_hz=self.clock_hz, baud=self.baud, fabric_hz=self.clock_hz)
        return info_words(clock_hz=self.core_hz, fabric_hz=self.clock_hz, baud=self.baud,
                          event_bytes=self.event_bytes(), core_version=isa.ISA_VERSION,
                          program_words=c.program_words, contexts=c.contexts,
                          layers=c.layers, fence_timelines=isa.FENCE_TIMELINES,
                          vsync_hz=c.vsync_hz, surface_words=self.surface_words)

    def _idle_tick(self, per: int) -> int:
        """The link's idle-timeout tick in clocks (``Link(idle_tick=...)``): a power of two
        of ``per`` (the clocks one count of the tick's counter lasts) near an eighth of
        the timeout, or 0 (count clocks) for a timeout too short for that."""
        eighth = self.idle_timeout // 8
        return 0 if eighth < 2 * per else (2 << self._tick_bit(eighth, per)) * per

    @staticmethod
    def _tick_bit(clocks: int, per: int) -> int:
        """The counter bit whose falling edges come every ``clocks`` clocks or sooner (a
        power of two of ``per``)."""
        return max(0, (clocks // per).bit_length() - 2)

    def make_core(self):
        c = self.core_config
        return Core(self.core_hz, c.vsync_hz, layers=c.layers, contexts=c.contexts,
                    program_words=c.program_words, fifo_depth=c.fifo_depth,
                    program_memory=c.program_memory, spram_primitive=c.spram_primitive,
                    lut_ram=c.lut_ram, prog_outreg=c.prog_outreg,
                    bram_primitive=c.bram_primitive, fifo_outreg=c.fifo_outreg,
                    warp_us=c.warp_us, display_port=self.display is not None)

    def event_bytes(self) -> int:
        return proto.record_bytes(proto.slot_bits_for(self.core_config.contexts))

    def elaborate(self, platform):
        m = Module()
        def side(domain):
            """Puts a part in its own ``domain`` in simulation (gated_link), else ``sync``."""
            return (lambda e: DomainRenamer(domain)(e)) if self.gated_link else (lambda e: e)

        # The link and the bus decode: in the gated ``link`` domain in simulation.
        link_side = side("link")
        bus_quiet = None    # with gated_link: the bus decode holds still
        if self.core_config is None:
            link = Link(info=self.info(), idle_timeout=self.idle_timeout,
                        idle_tick=self._idle_tick(1), quiet=self.gated_link,
                        tx_outreg=self.link_tx_outreg)
            scratch = Scratch()
            m.submodules.link = link_side(link)
            m.submodules.scratch = link_side(scratch)
            wiring.connect(m, link.bus, scratch.bus)
            m.d.comb += self.busy.eq(link.busy)
            bus_quiet = ~link.bus.we        # the scratch RAM writes only then
        else:
            c = self.core_config
            link = Link(info=self.info(), idle_timeout=self.idle_timeout,
                        idle_tick=self._idle_tick(phases_for(c.contexts)),
                        addr_bits=addr_bits_for(contexts=c.contexts,
                                                program_words=c.program_words, layers=c.layers,
                                                surface_words=self.surface_words),
                        quiet=self.gated_link, tx_outreg=self.link_tx_outreg)
            m.submodules.link = link_side(link)
            m.submodules.core = core = self.make_core()
            corebus = CoreBus(core, quiet=self.gated_link, surface_words=self.surface_words)
            m.submodules.corebus = link_side(corebus)
            wiring.connect(m, link.bus, corebus.bus)
            if self.gated_link:
                bus_quiet = corebus.quiet
            m.d.comb += self.busy.eq(link.busy | corebus.active | core.events.valid)
            if self.core_config.warp_us:
                # (and only once a program was started: before, nothing would use the
                # time, and a host's requests would see the board's time jump after each)
                m.d.comb += [core.warp.eq(self.warp & link.detached & corebus.quiet &
                                          corebus.active),
                             self.warped.eq(core.warped)]
            ev = core.events
            m.d.comb += ev.ready.eq(corebus.ev_pop)
            if self.display is not None:
                m.submodules.compositor = comp = Compositor(self.display)
                # the time-base reset registered (timing): the core takes a command in
                # the first clock of a core cycle, so this is still that cycle's, as the
                # compositor asks
                cmd = core.cmd
                taken_tb = cmd.valid & cmd.ready & cmd.payload.timebase
                tb_reset, run_start = Signal(), Signal()
                m.d.sync += [tb_reset.eq(taken_tb),
                             run_start.eq(taken_tb & (cmd.payload.start != 0))]
                m.d.comb += [comp.advance.eq(core.phase == core.phases - 1),
                             comp.tb_reset.eq(tb_reset), self.run_start.eq(run_start),
                             core.display_addr.eq(comp.reg_addr),
                             comp.reg_data.eq(core.display_data)]
                if self.surface_words:
                    m.d.comb += [comp.surf_addr.eq(corebus.surf_addr),
                                 comp.surf_data.eq(corebus.surf_data),
                                 comp.surf_we.eq(corebus.surf_we)]
                m.d.comb += [getattr(self.video, name).eq(getattr(comp, name))
                             for name in VIDEO_SIGNATURE.members]

        if self.byte_io:
            wiring.connect(m, wiring.flipped(self.rx), link.rx)
            wiring.connect(m, link.tx, wiring.flipped(self.tx))
        else:
            # the UARTs count bit times on every clock (``line``: the same clock, held
            # apart in simulation so that the line can catch up with a warped core)
            line_side = side("line")
            urx = UARTRx(clock_hz=self.clock_hz, baud=self.baud, sim_ports=self.gated_link)
            utx = UARTTx(clock_hz=self.clock_hz, baud=self.baud, sim_ports=self.gated_link)
            m.submodules.uart_rx = line_side(urx)
            m.submodules.uart_tx = line_side(utx)
            m.d.comb += [urx.rx.eq(self.uart_rx), self.uart_tx.eq(utx.tx)]
            wiring.connect(m, urx.source, link.rx)
            wiring.connect(m, link.tx, utx.sink)
        if self.gated_link:
            still = link.quiet & bus_quiet & urx.idle     # given uart_rx stays high
            m.d.comb += [self.link_quiet.eq(link.quiet & bus_quiet),
                         self.line_quiet.eq(still & ~link.busy & ~utx.busy),
                         self.line_calm.eq(Mux(still, utx.calm, 0)),
                         utx.skip.eq(self.line_skip)]

        # Ticks: the falling edges of a bit of a counter the top has anyway, the core's
        # cycle count (a prescaler of its own without the core): the link's idle timeout
        # and the LED stretchers count them, so that their counters are a few bits and no
        # wide one sits on the critical path.
        if self.core_config is not None:
            count, per = core.cycle, phases_for(self.core_config.contexts)
        else:
            width = max((self.clock_hz // 10).bit_length() - 1,
                        self._tick_bit(link.idle_tick, 1) + 1)
            count, per = Signal(width), 1
            m.d.sync += count.eq(count + 1)

        def tick_every(bit: int):
            """A one-clock pulse every ``2 ** (bit + 1) * per`` clocks."""
            was, pulse = Signal(), Signal()
            m.d.sync += was.eq(count[bit])
            m.d.comb += pulse.eq(was & ~count[bit])
            return pulse
        if link.idle_tick:
            m.d.comb += link.tick.eq(tick_every(self._tick_bit(link.idle_tick, per)))
        # LED pulse stretchers (visible on a board; harmless in simulation): ticks of
        # 50-100 ms; the link LED stays lit for 1-2 of them after a good request, the
        # error LED for 3-4 after a bad frame or a timeout
        led_bit = min(len(count) - 1, max(0, (self.clock_hz // 10 // per).bit_length() - 2))
        tick = tick_every(led_bit)
        link_t, err_t = Signal(2), Signal(3)
        activity, error = Signal(), Signal()     # the link's pulses, registered (timing)
        m.d.sync += [activity.eq(link.activity), error.eq(link.error)]
        with m.If(activity):
            m.d.sync += link_t.eq(2)
        with m.Elif(tick & (link_t != 0)):
            m.d.sync += link_t.eq(link_t - 1)
        with m.If(error):
            m.d.sync += err_t.eq(4)
        with m.Elif(tick & (err_t != 0)):
            m.d.sync += err_t.eq(err_t - 1)
        m.d.comb += [self.led_link.eq(link_t != 0), self.led_error.eq(err_t != 0)]
        return m
