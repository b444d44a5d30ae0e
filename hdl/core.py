"""The Copper core: several program contexts on one barrel-scheduled executor.

See ``docs/core.md`` for the ports, the memory budget and the timing. In short:

* The core clock ``clk`` runs ``phases = max(contexts, 3)`` clocks per **core cycle**
  (the unit of ``isa`` timing; ``clock_hz`` is the core-cycle rate, so
  ``f_clk = clock_hz * phases``). In phase ``k`` context ``k`` executes the op it
  issues in this core cycle, so every program issues up to one op per core cycle and
  the ops of one cycle take effect in ascending slot order (rule 8) for free.
* Each context goes through a three-stage pipeline: fetch (program memory address),
  read (register file / loop counter / fence value addresses from the fetched word),
  execute (one clock; all state updates and the event). Stages of different contexts
  overlap, so there is no hazard: the next op of a context is fetched after its
  previous execute.
* Every cost in ``isa`` (WAIT, JUMP, LOOP, FENCE resume, vsync latency) is a
  per-context down-counter, so the RTL follows ``isa.EXECUTION_RULES`` exactly.
"""

from __future__ import annotations

import enum

from amaranth import Module, Signal, Array, Mux, Cat, Const, unsigned
from amaranth.lib import wiring, data, stream, memory
from amaranth.lib.wiring import In, Out

from copperline.firmware import isa
from copperline.hdl.decoder import Decoder
from copperline.hdl.event_fifo import EventFIFO, EventKind, event_layout, PAYLOAD_BITS, TIMESTAMP_BITS
from copperline.hdl.regfile import RegFile, REG_WORD_BITS, field_mask
from copperline.hdl.progmem import ProgramMemory, resolve_kind
from copperline.hdl.timer import delay_layout, delay_const, delay_wait, delay_dec, delay_zero
from copperline.hdl.vsync import Vsync

__all__ = ["Core", "CtxState", "Reason", "phases_for"]


class CtxState(enum.IntEnum):
    """Context state as ``status_state`` and ``state`` events report it."""
    LOADED = 0    # never started since reset (or slot reset)
    RUNNING = 1   # issuing ops / waiting on a WAIT us, JUMP or LOOP cost
    VSYNC = 2     # running, waiting for a vsync edge
    FENCE = 3     # running, blocked on a FENCE
    DONE = 4      # HALT
    STOPPED = 5   # host stop
    FAULTED = 6   # watchdog or illegal op

    @property
    def host_name(self) -> str:
        """The state name of the backend interface (``running`` covers 1..3)."""
        return {0: "loaded", 1: "running", 2: "running", 3: "running", 4: "done",
                5: "stopped", 6: "faulted"}[int(self)]


class Reason(enum.IntEnum):
    """``reason`` field of ``state`` events."""
    NONE = 0
    HALT = 1
    HOST = 2
    WATCHDOG = 3
    ILLEGAL = 4


#: pc field width in ``state`` event payloads.
STATE_PC_BITS = isa.ADDR_BITS


def phases_for(contexts: int) -> int:
    """Clocks per core cycle for ``contexts`` contexts."""
    return max(contexts, 3)


def command_layout(contexts: int) -> data.StructLayout:
    """A host command: slot masks, all applied in the same core cycle."""
    return data.StructLayout({"start": unsigned(contexts), "stop": unsigned(contexts),
                              "reset": unsigned(contexts), "timebase": unsigned(1)})


class Core(wiring.Component):
    """The Copper core.

    Parameters
    ----------
    clock_hz : int
        Core-cycle rate (whole MHz). ``WAIT us N`` lasts ``N * clock_hz / 1e6`` cycles.
    vsync_hz : float
        Internal vsync rate; period ``isa.vsync_period_cycles(clock_hz, vsync_hz)``.
    watchdog_ops : int
        Rule 9 limit.
    layers : int
        Register-file layers.
    contexts : int
        Programs that can run at once (slots ``0 .. contexts-1``).
    program_words : int
        Program memory words per context (a power of two).
    fifo_depth : int
        Event FIFO depth (records).

    Attributes
    ----------
    prog_wr : In(stream.Signature({addr, data}))
        Program memory write, ``addr = slot * program_words + word``; always ready.
    cmd : In(stream.Signature(command_layout))
        Start/stop/reset slot masks and time-base reset; accepted in the first clock of
        a core cycle and applied in that cycle.
    fence_wr : In(stream.Signature({slot, timeline, value}))
        Fence value of ``slot``'s local ``timeline``; always ready.
    reg_addr, reg_data : register read-back (data one clock later, raw bits)
    status_slot, status_state, status_pc : per-slot status (combinational)
    events : Out(stream.Signature(event_layout))
        The event stream (see :mod:`copperline.hdl.event_fifo`).
    dropped : Out(16)
        Events dropped because the FIFO was full (wrapping).
    cycle : Out(32)
        Global core cycle (since the last time-base reset).
    phase : Out(range(phases))
        Phase of the current clock; 0 is the first clock of a core cycle.
    vsync_in, vsync_external, vsync_edge : vsync input, its select, and the edge flag
    """

    def __init__(self, clock_hz: int, vsync_hz: float = isa.DEFAULT_VSYNC_HZ, *,
                 watchdog_ops: int = isa.DEFAULT_WATCHDOG_OPS, layers: int = isa.DEFAULT_LAYERS,
                 contexts: int = isa.DEFAULT_CONTEXTS,
                 program_words: int = isa.DEFAULT_PROGRAM_WORDS, fifo_depth: int = 256,
                 program_memory: str = "auto", spram_primitive: bool = False):
        self.cycles_per_us = isa.cycles_per_us(clock_hz)
        self.vsync_period = isa.vsync_period_cycles(clock_hz, vsync_hz)
        if watchdog_ops < 1:
            raise ValueError(f"watchdog_ops must be >= 1 (got {watchdog_ops})")
        if contexts < 1:
            raise ValueError(f"contexts must be >= 1 (got {contexts})")
        if program_words < 2 or program_words & (program_words - 1) or program_words > 1 << isa.ADDR_BITS:
            raise ValueError(f"program_words must be a power of two in 2..{1 << isa.ADDR_BITS} "
                             f"(got {program_words})")
        if isa.OP_BY_NAME["MOVE"].bit("reg") != isa.OP_BY_NAME["ADD"].bit("reg"):
            raise ValueError("the core reads the register file from one field: MOVE.reg and "
                             "ADD.reg must sit at the same bits")
        self.clock_hz = clock_hz
        self.vsync_hz = vsync_hz
        self.watchdog_ops = watchdog_ops
        self.layers = layers
        self.contexts = contexts
        self.program_words = program_words
        self.fifo_depth = fifo_depth
        self.phases = phases_for(contexts)
        self.slot_bits = max(1, (contexts - 1).bit_length())
        self.pc_bits = (program_words - 1).bit_length()
        self.event_layout = event_layout(self.slot_bits)
        self.command_layout = command_layout(contexts)
        self.regfile = RegFile(layers)
        resolve_kind(program_memory, None)      # validates the name
        self.program_memory = program_memory
        self.spram_primitive = spram_primitive
        #: The program memory as elaborated without a platform (``auto`` = ``bram``).
        self.prog = ProgramMemory((1 << self.slot_bits) * program_words,
                                  resolve_kind(program_memory, None), primitive=spram_primitive)
        #: Its storage (None for the SPRAM primitive): engines write programs into it.
        self.prog_mem = self.prog.mem
        #: LOOP counters, ``slot * LOOP_SLOTS + loop slot``.
        self.loop_mem = memory.Memory(shape=isa.LOOP_COUNT_BITS,
                                      depth=(1 << self.slot_bits) * isa.LOOP_SLOTS, init=[])
        #: Fence values, ``slot * FENCE_TIMELINES + local timeline``.
        self.fence_mem = memory.Memory(shape=isa.FENCE_VALUE_BITS,
                                       depth=(1 << self.slot_bits) * isa.FENCE_TIMELINES, init=[])
        super().__init__({
            "prog_wr": In(stream.Signature(data.StructLayout({
                "addr": unsigned(self.slot_bits + self.pc_bits), "data": unsigned(isa.WORD_BITS)}))),
            "cmd": In(stream.Signature(self.command_layout)),
            "fence_wr": In(stream.Signature(data.StructLayout({
                "slot": unsigned(self.slot_bits),
                "timeline": unsigned((isa.FENCE_TIMELINES - 1).bit_length()),
                "value": unsigned(isa.FENCE_VALUE_BITS)}))),
            "reg_addr": In(isa.REG_STRIDE.bit_length() - 1 + isa.LAYER_BITS),
            "reg_data": Out(REG_WORD_BITS),
            "status_slot": In(self.slot_bits),
            "status_state": Out(3),
            "status_pc": Out(self.pc_bits),
            "events": Out(stream.Signature(self.event_layout)),
            "dropped": Out(16),
            "cycle": Out(TIMESTAMP_BITS),
            "phase": Out(range(self.phases)),
            "vsync_in": In(1),
            "vsync_external": In(1),
            "vsync_edge": Out(1),
        })
        # The executor's record stream into the FIFO (before any drop): simulation
        # engines observe it to get events with no FIFO latency.
        self.tap = stream.Signature(self.event_layout, always_ready=True).create(path=("tap",))

    def elaborate(self, platform):
        m = Module()
        C, P = self.contexts, self.phases
        sb, pb = self.slot_bits, self.pc_bits
        chz = self.clock_hz

        m.submodules.regfile = rf = self.regfile
        prog = self.prog
        if platform is not None and resolve_kind(self.program_memory, platform) == "spram":
            prog = ProgramMemory(prog.depth, "spram", primitive=True)
        m.submodules.prog_mem = prog
        m.submodules.vsync = vs = Vsync(self.vsync_period)
        m.submodules.fifo = evq = EventFIFO(self.event_layout, self.fifo_depth)
        m.submodules.dec = dec = Decoder()
        loop_mem, fence_mem = self.loop_mem, self.fence_mem
        m.submodules.loop_mem = loop_mem
        m.submodules.fence_mem = fence_mem

        # -- phases: E = context executing, R = next, F = the one after -----------------
        ph_e = Signal(range(P))
        ph_r = Signal(range(P), init=1 % P)
        ph_f = Signal(range(P), init=2 % P)
        for s in (ph_e, ph_r, ph_f):
            m.d.sync += s.eq(Mux(s == P - 1, 0, s + 1))
        first = Signal()
        last = Signal()
        m.d.comb += [first.eq(ph_e == 0), last.eq(ph_e == P - 1)]
        m.d.comb += self.phase.eq(ph_e)

        # -- host commands: accepted in the first clock of a cycle -------------------
        cmd_now = Signal(self.command_layout)
        cmd_held = Signal(self.command_layout)
        # The first core cycle after reset has no fetch for contexts 0 and 1 (their
        # fetch would have been in the cycle before): accept commands from cycle 1 on.
        primed = Signal()
        # spram: a program write took the fetch of context 0 or 1 (fetched in the previous
        # cycle); a start in this cycle would issue a stale word, so hold commands a cycle.
        stale = Signal()
        with m.If(last):
            m.d.sync += primed.eq(1)
        cmd_ok = Signal()
        m.d.comb += cmd_ok.eq(first & primed & ~stale)
        accept = cmd_ok & self.cmd.valid
        m.d.comb += self.cmd.ready.eq(cmd_ok)
        with m.If(first):
            m.d.comb += cmd_now.eq(Mux(accept, self.cmd.payload.as_value(), 0))
            m.d.sync += cmd_held.eq(cmd_now)
        with m.Else():
            m.d.comb += cmd_now.eq(cmd_held)
        tb_reset = accept & self.cmd.payload.timebase

        # -- time base ---------------------------------------------------------------
        g = Signal(TIMESTAMP_BITS)
        now = Signal(TIMESTAMP_BITS)
        m.d.comb += now.eq(Mux(tb_reset, 0, g))
        with m.If(tb_reset):
            m.d.sync += g.eq(0)
        with m.Elif(last):
            m.d.sync += g.eq(g + 1)
        m.d.comb += [self.cycle.eq(now), vs.advance.eq(last), vs.reset.eq(tb_reset),
                     vs.vsync_in.eq(self.vsync_in), vs.external.eq(self.vsync_external),
                     self.vsync_edge.eq(vs.edge)]

        # -- per-context state ---------------------------------------------------------
        # state and pc in flip-flops (the status port reads them); the wide counters in
        # a small RAM read in F and written in E (the R stage precomputes on them).
        st_a = Array(Signal(3, name=f"state{i}") for i in range(C))
        pc_a = Array(Signal(pb, name=f"pc{i}") for i in range(C))
        dlay = delay_layout(chz)
        wdshape = unsigned(self.watchdog_ops.bit_length())
        ctx_layout = data.StructLayout({"hi": dlay.members["hi"], "lo": dlay.members["lo"],
                                        "idle": wdshape, "armed": unsigned(isa.LOOP_SLOTS)})
        # ram_style: a block RAM, not P x 57 flip-flops plus a 57-bit read mux
        ctx_mem = memory.Memory(shape=ctx_layout, depth=P, init=[], attrs={"ram_style": "block"})
        m.submodules.ctx_mem = ctx_mem
        ctx_rp = ctx_mem.read_port()
        ctx_wp = ctx_mem.write_port()
        m.d.comb += [ctx_rp.addr.eq(ph_f), ctx_wp.addr.eq(ph_e)]

        def active(st):
            return (st >= CtxState.RUNNING) & (st <= CtxState.FENCE)

        # -- F: program memory address (or a pending program write) ----------------------
        f_st = st_a[ph_f]
        fetch_addr = Cat(Mux(active(f_st), pc_a[ph_f], 0), ph_f[:sb])
        wr = self.prog_wr
        if prog.single_port:
            # One access per clock: a write waits in a buffer for the F stage of its own
            # slot (which is not running, so it needs no fetch) and takes that access;
            # never while that slot is being started in this cycle.
            wb_valid = Signal()
            wb_addr = Signal.like(wr.payload.addr)
            wb_data = Signal(isa.WORD_BITS)
            m.d.comb += wr.ready.eq(~wb_valid)
            with m.If(wr.valid & ~wb_valid):
                m.d.sync += [wb_valid.eq(1), wb_addr.eq(wr.payload.addr), wb_data.eq(wr.payload.data)]
            wb_slot = wb_addr[pb:]
            commit = Signal()
            m.d.comb += commit.eq(wb_valid & (wb_slot == ph_f[:sb]) & (ph_f < C)
                                  & ~cmd_now.start.bit_select(ph_f, 1))
            with m.If(commit):
                m.d.sync += wb_valid.eq(0)
            m.d.comb += [prog.rd_addr.eq(fetch_addr), prog.wr_addr.eq(wb_addr),
                         prog.wr_data.eq(wb_data), prog.wr_en.eq(commit)]
            # contexts whose F is in the previous core cycle: k - 2 < 0
            with m.If(commit & (ph_f < 2)):
                m.d.sync += stale.eq(1)
            with m.Elif(first):
                m.d.sync += stale.eq(0)
        else:
            m.d.comb += [prog.rd_addr.eq(fetch_addr), prog.wr_addr.eq(wr.payload.addr),
                         prog.wr_data.eq(wr.payload.data), prog.wr_en.eq(wr.valid), wr.ready.eq(1)]

        # -- R: decode, operand addresses, precompute on the context's counters --------
        word = prog.rd_data
        m.d.comb += dec.word.eq(word)

        def raw(op_name, field_name):
            b = isa.OP_BY_NAME[op_name].bit(field_name)
            return word[b.lsb:b.lsb + b.width]

        word_e = Signal(isa.WORD_BITS)
        flags = {op.name: Signal(name=f"e_is_{op.name.lower()}") for op in isa.OPS}
        valid_e = Signal()
        m.d.sync += [word_e.eq(word), valid_e.eq(dec.valid)]
        m.d.sync += [flags[n].eq(dec.flag(n)) for n in flags]

        def fld(op_name, field_name):
            b = isa.OP_BY_NAME[op_name].bit(field_name)
            v = word_e[b.lsb:b.lsb + b.width]
            return v.as_signed() if b.signed else v

        loop_rp = loop_mem.read_port()
        loop_wp = loop_mem.write_port()
        fence_wp = fence_mem.write_port()
        fence_rp = fence_mem.read_port(transparent_for=(fence_wp,))
        m.d.comb += [
            rf.rd_addr.eq(raw("MOVE", "reg")),
            loop_rp.addr.eq(Cat(raw("LOOP", "slot"), ph_r[:sb])),
            fence_rp.addr.eq(Cat(raw("FENCE", "timeline"), ph_r[:sb])),
        ]
        fw = self.fence_wr.payload
        m.d.comb += [fence_wp.addr.eq(Cat(fw.timeline, fw.slot)), fence_wp.data.eq(fw.value),
                     fence_wp.en.eq(self.fence_wr.valid), self.fence_wr.ready.eq(1)]

        cx = ctx_rp.data
        st_r, pc_r = Signal(3), Signal(pb)
        hi_r, lo_r = Signal.like(cx.hi), Signal.like(cx.lo)
        wd_r, lv_r = Signal(wdshape), Signal(isa.LOOP_SLOTS)
        dz_r, wdhit_r = Signal(), Signal()
        m.d.sync += [st_r.eq(st_a[ph_r]), pc_r.eq(pc_a[ph_r]), hi_r.eq(cx.hi), lo_r.eq(cx.lo),
                     wd_r.eq(cx.idle), lv_r.eq(cx.armed), dz_r.eq(delay_zero(cx.hi, cx.lo)),
                     wdhit_r.eq(cx.idle == self.watchdog_ops)]

        # -- E: execute (every input is a register or a RAM output) --------------------
        k = ph_e
        valid_ctx = k < C
        start_now = cmd_now.start.bit_select(k, 1) & valid_ctx
        stop_now = cmd_now.stop.bit_select(k, 1) & valid_ctx
        reset_now = cmd_now.reset.bit_select(k, 1) & valid_ctx
        start_ok = Signal()
        m.d.comb += start_ok.eq(start_now & ~active(st_r))

        # the state after a start (a start clears the counters: delay 0, idle 0, no loop
        # armed); the watchdog limit is >= 1, so a start never trips it
        eff_st = Signal(3)
        eff_pc = Signal(pb)
        eff_lv = Signal(isa.LOOP_SLOTS)
        can_issue = Signal()
        m.d.comb += [eff_st.eq(Mux(start_ok, CtxState.RUNNING, st_r)),
                     eff_pc.eq(Mux(start_ok, 0, pc_r)), eff_lv.eq(Mux(start_ok, 0, lv_r)),
                     can_issue.eq(start_ok | (dz_r & ~wdhit_r))]
        pc_inc = (eff_pc + 1)[:pb]
        wd_inc = Mux(start_ok, 1, (wd_r + 1)[:len(wd_r)])
        dec_hi, dec_lo = delay_dec(hi_r, lo_r, chz)

        n_st, n_pc = Signal(3), Signal(pb)
        n_hi, n_lo = Signal.like(hi_r), Signal.like(lo_r)
        n_wd, n_lv = Signal.like(wd_r), Signal.like(lv_r)
        m.d.comb += [n_st.eq(eff_st), n_pc.eq(eff_pc), n_hi.eq(Mux(start_ok, 0, hi_r)),
                     n_lo.eq(Mux(start_ok, 0, lo_r)), n_wd.eq(Mux(start_ok, 0, wd_r)),
                     n_lv.eq(eff_lv)]

        def load_delay(cycles):
            hi, lo = delay_const(chz, cycles)
            return [n_hi.eq(hi), n_lo.eq(lo)]

        ev_kind = Signal(3)
        ev_started = Signal()
        ev_payload = Signal(PAYLOAD_BITS)
        m.d.comb += ev_started.eq(start_ok)

        def state_event(state, reason, pc):
            return [ev_kind.eq(EventKind.STATE),
                    ev_payload.eq(Cat(Const(state, 3), Const(reason, 3), pc.as_unsigned()[:STATE_PC_BITS]))]

        # fence value of this context's timeline: a write in this very clock wins
        fence_val = Signal(isa.FENCE_VALUE_BITS)
        fwd = (self.fence_wr.valid & (fw.slot == k[:sb]) & (fw.timeline == fld("FENCE", "timeline")))
        m.d.comb += fence_val.eq(Mux(fwd, fw.value, fence_rp.data))
        fence_ok = Signal()
        m.d.comb += fence_ok.eq(fence_val >= fld("FENCE", "value"))

        issue = Signal()
        with m.If(reset_now):
            m.d.comb += [n_st.eq(CtxState.LOADED), n_pc.eq(0), n_hi.eq(0), n_lo.eq(0), n_wd.eq(0),
                         n_lv.eq(0), ev_started.eq(0)]
        with m.Elif(stop_now & active(st_r)):
            m.d.comb += n_st.eq(CtxState.STOPPED)
            m.d.comb += state_event(CtxState.STOPPED, Reason.HOST,
                                    Mux(st_r == CtxState.FENCE, pc_r + 1, pc_r))
        with m.Else():
            with m.Switch(eff_st):
                with m.Case(CtxState.RUNNING):
                    with m.If(can_issue):
                        m.d.comb += issue.eq(1)
                    with m.Elif(~dz_r):
                        m.d.comb += [n_hi.eq(dec_hi), n_lo.eq(dec_lo)]
                    with m.Else():
                        m.d.comb += n_st.eq(CtxState.FAULTED)
                        m.d.comb += state_event(CtxState.FAULTED, Reason.WATCHDOG, eff_pc)
                with m.Case(CtxState.VSYNC):
                    with m.If(vs.edge):
                        m.d.comb += [n_st.eq(CtxState.RUNNING)] + load_delay(isa.VSYNC_LATENCY - 1)
                with m.Case(CtxState.FENCE):
                    with m.If(fence_ok):
                        m.d.comb += [n_st.eq(CtxState.RUNNING), n_pc.eq(pc_inc)]
                        m.d.comb += load_delay(isa.FENCE_RESUME_LATENCY - 1)

        # register writes
        reg_idx = fld("MOVE", "reg")
        mask = field_mask(reg_idx[:(isa.REG_STRIDE - 1).bit_length()])
        move_val = fld("MOVE", "value") & mask
        add_val = (rf.rd_data + fld("ADD", "delta"))[:REG_WORD_BITS] & mask
        reg_new = Signal(REG_WORD_BITS)
        m.d.comb += [reg_new.eq(Mux(flags["MOVE"], move_val, add_val)),
                     rf.wr_addr.eq(reg_idx), rf.wr_data.eq(reg_new)]

        # LOOP: the counter after this issue is 0 (falls through) when it was counting
        # and 1, or when it was idle and the count is 1: equality tests, no subtractor
        # in the decision path.
        loop_slot = fld("LOOP", "slot")
        loop_count = fld("LOOP", "count")
        # (a counter that fell through reads 0 though its armed bit is set: idle too)
        counting = Signal()
        m.d.comb += counting.eq(eff_lv.bit_select(loop_slot, 1) & (loop_rp.data != 0))
        loop_exit = Mux(counting, loop_rp.data == 1, loop_count == 1)
        m.d.comb += [loop_wp.addr.eq(Cat(loop_slot, k[:sb])),
                     loop_wp.data.eq(Mux(counting, loop_rp.data - 1, loop_count - 1))]

        with m.If(issue):
            m.d.comb += [n_wd.eq(wd_inc), n_pc.eq(pc_inc)] + load_delay(isa.CYCLES_SIMPLE - 1)
            with m.If(~valid_e):
                m.d.comb += [n_st.eq(CtxState.FAULTED), n_pc.eq(eff_pc)]
                m.d.comb += state_event(CtxState.FAULTED, Reason.ILLEGAL, eff_pc)
            with m.Elif(flags["HALT"]):
                m.d.comb += [n_st.eq(CtxState.DONE), n_pc.eq(eff_pc)]
                m.d.comb += state_event(CtxState.DONE, Reason.HALT, eff_pc)
            with m.Elif(flags["WAIT"]):
                m.d.comb += n_wd.eq(0)
                with m.If(fld("WAIT", "vsync")):
                    m.d.comb += n_st.eq(CtxState.VSYNC)
                with m.Else():
                    hi, lo = delay_wait(fld("WAIT", "us"), chz)
                    m.d.comb += [n_hi.eq(hi), n_lo.eq(lo)]
            with m.Elif(flags["MOVE"] | flags["ADD"]):
                m.d.comb += [rf.wr_en.eq(1), ev_kind.eq(EventKind.REG),
                             ev_payload.eq(Cat(reg_new, reg_idx))]
            with m.Elif(flags["IRQ"]):
                m.d.comb += [ev_kind.eq(EventKind.IRQ), ev_payload.eq(fld("IRQ", "tag"))]
            with m.Elif(flags["BIND_LAYER"]):
                m.d.comb += [ev_kind.eq(EventKind.BIND),
                             ev_payload.eq(Cat(fld("BIND_LAYER", "surface"),
                                               fld("BIND_LAYER", "layer")))]
            with m.Elif(flags["JUMP"]):
                m.d.comb += n_pc.eq(fld("JUMP", "target"))
                m.d.comb += load_delay(isa.CYCLES_BRANCH - 1)
            with m.Elif(flags["LOOP"]):
                with m.If(loop_count == 0):
                    m.d.comb += n_pc.eq(fld("LOOP", "target"))
                    m.d.comb += load_delay(isa.CYCLES_BRANCH - 1)
                with m.Else():
                    m.d.comb += [loop_wp.en.eq(1), n_lv.eq(eff_lv | (1 << loop_slot))]
                    with m.If(~loop_exit):
                        m.d.comb += n_pc.eq(fld("LOOP", "target"))
                        m.d.comb += load_delay(isa.CYCLES_BRANCH - 1)
                    with m.Else():
                        m.d.comb += load_delay(isa.CYCLES_LOOP_EXIT - 1)
            with m.Elif(flags["FENCE"]):
                with m.If(~fence_ok):
                    m.d.comb += [n_st.eq(CtxState.FENCE), n_pc.eq(eff_pc), n_wd.eq(0)]
            # NOP: the defaults

        with m.If(valid_ctx):
            m.d.sync += [st_a[k].eq(n_st), pc_a[k].eq(n_pc)]
        m.d.comb += [ctx_wp.en.eq(valid_ctx), ctx_wp.data.hi.eq(n_hi), ctx_wp.data.lo.eq(n_lo),
                     ctx_wp.data.idle.eq(n_wd), ctx_wp.data.armed.eq(n_lv)]

        # -- events ---------------------------------------------------------------------
        # ``tap`` is the record of this clock (simulation engines observe it); the FIFO
        # gets it one clock later from a register, so nothing of E reaches the FIFO's
        # control logic in the same clock.
        tap = self.tap
        m.d.comb += [
            tap.valid.eq(valid_ctx & ((ev_kind != EventKind.NONE) | ev_started)),
            tap.payload.kind.eq(ev_kind), tap.payload.started.eq(ev_started),
            tap.payload.slot.eq(k[:sb]), tap.payload.payload.eq(ev_payload),
            tap.payload.timestamp.eq(now),
        ]
        rec_valid = Signal()
        rec = Signal(self.event_layout)
        m.d.sync += [rec_valid.eq(tap.valid), rec.eq(tap.payload)]
        m.d.comb += [evq.sink.valid.eq(rec_valid), evq.sink.payload.eq(rec)]
        wiring.connect(m, evq.source, wiring.flipped(self.events))
        m.d.comb += self.dropped.eq(evq.dropped)

        # -- host read-back -------------------------------------------------------------
        m.d.comb += [rf.host_addr.eq(self.reg_addr), self.reg_data.eq(rf.host_data)]
        s_st = st_a[self.status_slot]
        m.d.comb += [self.status_state.eq(s_st),
                     self.status_pc.eq(Mux(s_st == CtxState.FENCE, pc_a[self.status_slot] + 1,
                                           pc_a[self.status_slot]))]
        return m
