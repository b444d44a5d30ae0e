"""The Copper core: several program contexts on one barrel-scheduled executor.

See ``docs/core.md`` for the ports, the memory budget and the timing. In short:

* The core clock ``clk`` runs ``phases = max(contexts, 4)`` clocks per **core cycle**
  (the unit of ``isa`` timing; ``clock_hz`` is the core-cycle rate, so
  ``f_clk = clock_hz * phases``). Context ``k`` executes the op it issues in a core
  cycle in phase ``k + 1`` of it (the last context in phase 0 of the next), so every
  program issues up to one op per core cycle and the ops of one cycle take effect in
  ascending slot order (rule 8) for free.
* Each context goes through a four-stage pipeline: fetch (program memory address),
  read (decode, operand RAM addresses, tests on the context's counters), decide (every
  decision from registers and the operand RAMs, registered) and execute (a select
  between registered outcomes with the command bits; all state updates and the event).
  Stages of different contexts overlap, so there is no hazard: the next op of a context
  is fetched in the clock after its execute.
* Every cost in ``isa`` (WAIT, JUMP, LOOP, FENCE resume, vsync latency) is a
  per-context down-counter, so the RTL follows ``isa.EXECUTION_RULES`` exactly.
"""

from __future__ import annotations

from types import SimpleNamespace

from amaranth import (Module, Signal, Array, Mux, Cat, Const,
                      unsigned)
from amaranth.lib import wiring, data, stream, memory
from amaranth.lib.wiring import In, Out

from copperline.firmware import isa
from copperline.firmware.board_interface import (PAYLOAD_BITS, STATE_PC_BITS, TIMESTAMP_BITS,
                                                 CtxState, EventKind, Reason)
from copperline.hdl.decoder import Decoder
from copperline.hdl.event_fifo import EventFIFO, event_layout
from copperline.hdl.regfile import RegFile, REG_WORD_BITS, field_mask
from copperline.hdl.progmem import ProgramMemory, resolve_kind
from copperline.hdl.timer import (delay_layout, delay_const, delay_wait, delay_dec, delay_one,
                                  delay_is_zero_const)
from copperline.hdl.vsync import Vsync

__all__ = ["Core", "phases_for"]

#: A register index no field uses (its mask is 0: it always holds 0). MOVE reads it, so
#: that E computes MOVE as ``0 + value`` with no select before its adder.
ZERO_REG = next(i for i in range(isa.REG_STRIDE)
                if i not in {f.index for f in isa.LAYER_FIELDS})


def _borrow(a, b):
    """``a < b`` written as the borrow of a subtraction: a carry chain, which the mapper
    does not build for a comparison operator."""
    return (a.as_unsigned() - b.as_unsigned())[len(a)]


def fence_terms(stored, value):
    """The FENCE test's three terms on 12-bit halves (a 24-bit chain after the fence RAM
    was the slowest path): ``(stored high > value high, stored high != value high,
    stored low < value low)``, the two ordering tests one carry chain each, the
    inequality a LUT tree (a third chain took an LC per bit). X registers them;
    :func:`fence_blocked` finishes the test in E. ``tests/formal`` proves the pair
    equals ``stored < value``."""
    fh = isa.FENCE_VALUE_BITS // 2
    return (_borrow(value[fh:], stored[fh:]), stored[fh:] != value[fh:],
            _borrow(stored[:fh], value[:fh]))


def fence_blocked(gt_hi, ne_hi, lt_lo):
    """The FENCE is not met (``stored < value``) from the terms of :func:`fence_terms`."""
    return ~gt_hi & (ne_hi | lt_lo)


def fence_write_met(written, value):
    """A host write of ``written`` in the FENCE's own clock meets it (``>= value``)."""
    return ~_borrow(written, value)


# -- LOOP counters (a taken LOOP with count N > 0): the pieces X and E apply, named so
#    that ``tests/formal`` proves them: the body runs N times and the counter re-arms
def loop_falls_through(counting, counter, count):
    """The LOOP falls through: its counter (when counting, i.e. armed) or its count (when
    not: the first pass) is 1 (equality tests side by side, the select after them)."""
    return Mux(counting, counter == 1, count == 1)


def loop_counter_candidates(counter, count):
    """Both candidates for the counter's next value, registered in X: ``counter - 1``
    (counting) and ``count - 1`` (the first pass)."""
    return counter - 1, count - 1


def loop_counter_next(counting, counter_minus1, count_minus1):
    """E's select of the counter's next value."""
    return Mux(counting, counter_minus1, count_minus1)


def loop_armed_back(armed, onehot, act):
    """The armed bits after the LOOP jumps back (its own bit set; a context being
    started has no other bit)."""
    return Mux(act, armed | onehot, onehot)


def loop_armed_exit(armed, onehot):
    """The armed bits after the LOOP falls through: its own bit cleared (the re-arm: the
    next time the LOOP is reached it starts from its count again)."""
    return armed & ~onehot


def phases_for(contexts: int) -> int:
    """Clocks per core cycle for ``contexts`` contexts."""
    return max(contexts, 4)


def command_layout(contexts: int) -> data.StructLayout:
    """A host command: slot masks, all applied in the same core cycle."""
    return data.StructLayout({"start": unsigned(contexts), "stop": unsigned(contexts),
                              "reset": unsigned(contexts), "timebase": unsigned(1)})


def _active(st):
    """The state is one of the running ones (RUNNING, VSYNC, FENCE)."""
    return (st >= CtxState.RUNNING) & (st <= CtxState.FENCE)


def _kzero(k):
    """The ``dz`` bit (1: the delay is 0) of the delay constant ``k``."""
    return int(delay_is_zero_const(k))


class _Stages(SimpleNamespace):
    """What the stages of :meth:`Core.elaborate` hand on to the later ones: one instance per
    elaboration, holding the Module ``m``, the submodules, the signals a stage makes for a
    later one, and ``e``, the X -> E registers by name."""

    def raw(self, op_name, field_name):
        """A field of R's word (the program memory output), as bits."""
        b = isa.OP_BY_NAME[op_name].bit(field_name)
        return self.word[b.lsb:b.lsb + b.width]

    def fld(self, op_name, field_name):
        """A field of X's word (registered), signed if the field is."""
        b = isa.OP_BY_NAME[op_name].bit(field_name)
        v = self.word_x[b.lsb:b.lsb + b.width]
        return v.as_signed() if b.signed else v

    def reg_e(self, name, value, shape=None, reset_less=False):
        """Register ``value`` from X for E as ``e[name]`` (the signal ``e_<name>``)."""
        s = Signal(shape if shape is not None else len(value), name=f"e_{name}",
                   reset_less=reset_less)
        self.m.d.sync += s.eq(value)
        self.e[name] = s
        return s



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
        Event FIFO depth (records); ``2 * contexts`` of them are kept for state records.
    lut_ram : bool
        Keep the executor's register-file copy in LUT RAM (``ram_style = "distributed"``;
        for the ECP5, whose block RAM clock-to-out leaves no time for the ADD after it),
        and the small memories (counters, loop counters, fence values) too.
    prog_outreg : bool
        ``bram`` program memory read through an output register (data two clocks after
        the address); the fetch address then comes from E, one clock before F. Needs
        ``phases == 4``.
    bram_primitive : bool
        With ``prog_outreg``: the program memory as ``DP16KD`` instances (ECP5,
        ``REGMODE_A = "OUTREG"``) instead of the Amaranth model; with ``fifo_outreg``
        the event FIFO's RAM too.
    fifo_outreg : bool
        The event FIFO reads its RAM through the block RAM's output register, with a
        prefetch stage that keeps the ``events`` stream's timing (``EventFIFO(outreg=True)``).
    warp_us : int
        Simulation only (0, the default, builds nothing): adds the ports ``warp`` and
        ``warped``. While ``warp`` is high, a core cycle in which nothing but counting can
        happen counts as ``n * cycles_per_us + 1`` cycles, ``n`` the largest of
        ``warp_us``, ``warp_us // 2``, ... 1 that is safe (see "Warp" in docs/core.md):
        the virtual board skips idle core time.
    display_port : bool
        Add ``display_addr`` / ``display_data``: a third register-file copy for the layer
        compositor (:class:`~copperline.hdl.compositor.Compositor`; one more block RAM).

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
    display_addr, display_data : with ``display_port``: the compositor's register read,
        the read-back port's timing on a copy of its own (``RegFile.display_addr``): an
        address given in phase 0 of a core cycle reads the value after every write of
        the cycles before it and no write of its own cycle
    status_slot, status_state, status_pc : per-slot status (combinational)
    events : Out(stream.Signature(event_layout))
        The event stream (see :mod:`copperline.hdl.event_fifo`).
    dropped : Out(32)
        Events dropped because the FIFO was full (wrapping).
    cycle : Out(32)
        Global core cycle (since the last time-base reset).
    phase : Out(range(phases))
        Phase of the current clock; 0 is the first clock of a core cycle.
    vsync_in, vsync_external, vsync_edge : vsync input, its select, and the edge flag
    """

    #: Memories whose read and write ports never address the same row in one clock:
    #: ``ctx_mem`` is read for F's context and written for E's, ``loop_mem`` read for R's
    #: and written for E's (two and three phases apart, ``phases >= 4``). The synthesis
    #: flow (:func:`copperline.hdl.synth.collision_dont_care`) drops the read-old-data
    #: bypass Yosys would add for them.
    #: ``exec_mem`` and ``host_mem`` (the register file's executor and read-back copies)
    #: forward the write of the same clock themselves, from one register of the write
    #: data (:class:`~copperline.hdl.regfile.RegFile`); the event FIFO's
    #: ``event_mem`` reads a row only while it holds records, never the row being
    #: written (:class:`~copperline.hdl.event_fifo.EventFIFO`). ``stamp_mem`` is written
    #: in phase 0 and read in phase 1; ``imm_mem`` written for R's context and read for
    #: X's. ``wbuf_mem`` (the SPRAM's
    #: write buffer) is written only in a clock whose read the buffer does not use.
    #: ``disp_mem`` (the compositor's copy, with ``display_port``) forwards like
    #: ``host_mem``.
    COLLISION_FREE_MEMORIES = ("ctx_mem", "loop_mem", "stamp_mem", "imm_mem", "exec_mem", "host_mem",
                               "event_mem", "wbuf_mem", "disp_mem")

    def __init__(self, clock_hz: int, vsync_hz: float = isa.DEFAULT_VSYNC_HZ, *,
                 watchdog_ops: int = isa.DEFAULT_WATCHDOG_OPS, layers: int = isa.DEFAULT_LAYERS,
                 contexts: int = isa.DEFAULT_CONTEXTS,
                 program_words: int = isa.DEFAULT_PROGRAM_WORDS, fifo_depth: int = 256,
                 program_memory: str = "auto", spram_primitive: bool = False,
                 lut_ram: bool = False, prog_outreg: bool = False, bram_primitive: bool = False,
                 fifo_outreg: bool = False, warp_us: int = 0, display_port: bool = False):
        self.cycles_per_us = isa.cycles_per_us(clock_hz)
        self.vsync_period = isa.vsync_period_cycles(clock_hz, vsync_hz)
        isa.check_machine(watchdog_ops=watchdog_ops, layers=layers, contexts=contexts)
        if program_words < 2 or program_words & (program_words - 1) or program_words > 1 << isa.ADDR_BITS:
            raise ValueError(f"program_words must be a power of two in 2..{1 << isa.ADDR_BITS} "
                             f"(got {program_words})")
        if isa.OP_BY_NAME["MOVE"].bit("reg") != isa.OP_BY_NAME["ADD"].bit("reg"):
            raise ValueError("the core reads the register file from one field: MOVE.reg and "
                             "ADD.reg must sit at the same bits")
        mv, dl = isa.OP_BY_NAME["MOVE"].bit("value"), isa.OP_BY_NAME["ADD"].bit("delta")
        if (mv.lsb, mv.width) != (dl.lsb, dl.width) or mv.width != REG_WORD_BITS:
            raise ValueError("the core keeps one immediate: MOVE.value and ADD.delta must sit "
                             "at the same bits, as wide as a register")
        self.clock_hz = clock_hz
        self.vsync_hz = vsync_hz
        self.watchdog_ops = watchdog_ops
        self.layers = layers
        self.contexts = contexts
        self.program_words = program_words
        self.fifo_depth = fifo_depth
        #: FIFO places only state records may take: two per context (its end and its
        #: next start), which a host that waits for each command's record never exceeds
        self.fifo_reserve = min(2 * contexts, fifo_depth - 1)
        self.phases = phases_for(contexts)
        self.slot_bits = max(1, (contexts - 1).bit_length())
        self.pc_bits = (program_words - 1).bit_length()
        self.event_layout = event_layout(self.slot_bits)
        self.command_layout = command_layout(contexts)
        self.lut_ram = lut_ram
        if warp_us < 0 or warp_us >= 1 << (isa.WAIT_US_BITS - 1):
            raise ValueError(f"warp_us must be 0 (off) or 1..{(1 << (isa.WAIT_US_BITS - 1)) - 1} "
                             f"(got {warp_us})")
        self.warp_us = warp_us
        #: The warp sizes in microseconds, ascending (``warp_us`` halved down to 1).
        self.warp_levels_us = tuple(sorted({warp_us >> k for k in range(warp_us.bit_length())}))
        #: Core cycles the largest warp skips (a warped core cycle counts as its skip + 1).
        self.warp_cycles = warp_us * self.cycles_per_us
        self.display_port = display_port
        self.regfile = RegFile(layers, ram_style="distributed" if lut_ram else None,
                               sum_port=lut_ram, display_port=display_port)
        resolve_kind(program_memory, None)      # validates the name
        self.program_memory = program_memory
        self.spram_primitive = spram_primitive
        #: The program memory as elaborated without a platform (``auto`` = ``bram``).
        kind = resolve_kind(program_memory, None)
        if prog_outreg and (kind != "bram" or self.phases != 4):
            raise ValueError("prog_outreg needs program_memory 'bram' and at most 4 contexts")
        self.prog_outreg = prog_outreg
        self.fifo_outreg = fifo_outreg
        self.fifo_primitive = fifo_outreg and bram_primitive
        self.prog = ProgramMemory((1 << self.slot_bits) * program_words, kind,
                                  primitive=spram_primitive if kind == "spram" else bram_primitive,
                                  outreg=prog_outreg)
        #: Its storage (None for the SPRAM primitive): engines write programs into it.
        self.prog_mem = self.prog.mem
        #: LOOP counters, ``slot * LOOP_SLOTS + loop slot``.
        small = {"ram_style": "distributed"} if lut_ram else None
        self.loop_mem = memory.Memory(shape=isa.LOOP_COUNT_BITS,
                                      depth=(1 << self.slot_bits) * isa.LOOP_SLOTS, init=[],
                                      attrs=small)
        #: Fence values, ``slot * FENCE_TIMELINES + local timeline``.
        self.fence_mem = memory.Memory(shape=isa.FENCE_VALUE_BITS,
                                       depth=(1 << self.slot_bits) * isa.FENCE_TIMELINES, init=[],
                                       attrs=small)
        # ``warped``: core cycles skipped at the end of this clock (0: none)
        warp_ports = {"warp": In(1), "warped": Out(range(self.warp_cycles + 1))} if warp_us else {}
        if display_port:
            warp_ports |= {"display_addr": In(isa.REG_STRIDE.bit_length() - 1 + isa.LAYER_BITS),
                           "display_data": Out(REG_WORD_BITS)}
        super().__init__(warp_ports | {
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
            "dropped": Out(32),
            "cycle": Out(TIMESTAMP_BITS),
            "phase": Out(range(self.phases)),
            "vsync_in": In(1),
            "vsync_external": In(1),
            "vsync_edge": Out(1),
        })
        # The executor's record stream into the FIFO (before any drop): simulation
        # engines observe it to get events with no FIFO latency.
        self.tap = stream.Signature(self.event_layout, always_ready=True).create(path=("tap",))
        # E's result (state, reported pc) of this clock, for engines that read the status of the
        # context in E (the last one, in phase 0) before the clock that stores it
        self.sim_next_state = Signal(3, name="sim_next_state")
        self.sim_next_pc = Signal(self.pc_bits, name="sim_next_pc")

    def elaborate(self, platform):
        """The core as the stages below, in pipeline order; each adds its logic to ``m``
        and hands its signals on through one :class:`_Stages`."""
        m = Module()
        m.submodules.regfile = rf = self.regfile
        prog = self.prog
        if platform is not None and resolve_kind(self.program_memory, platform) == "spram":
            # The platform-less memory stays unused on this platform: say so, so that
            # Amaranth does not warn about it.
            self.prog._MustUse__silence = True
            prog = ProgramMemory(prog.depth, "spram", primitive=True)
        m.submodules.prog_mem = prog
        m.submodules.vsync = vs = Vsync(self.vsync_period, warp_levels=tuple(
            n * self.cycles_per_us for n in self.warp_levels_us))
        m.submodules.fifo = evq = EventFIFO(self.event_layout, self.fifo_depth,
                                            reserve=self.fifo_reserve,
                                            outreg=self.fifo_outreg,
                                            primitive=self.fifo_primitive)
        m.submodules.dec = dec = Decoder()
        loop_mem, fence_mem = self.loop_mem, self.fence_mem
        m.submodules.loop_mem = loop_mem
        m.submodules.fence_mem = fence_mem
        p = _Stages(m=m, e={}, rf=rf, prog=prog, vs=vs, evq=evq, dec=dec, loop_mem=loop_mem,
                    fence_mem=fence_mem)

        self._phases(m, p)
        self._host_commands(m, p)
        self._time_base(m, p)
        self._context_state(m, p)
        self._fetch(m, p)
        self._read(m, p)
        self._decide(m, p)
        self._register_for_e(m, p)
        self._execute(m, p)
        if self.warp_cycles:
            self._warp(m, p)
        self._event_path(m, p)
        self._status_port(m, p)
        return m

    def _phases(self, m, p):
        """The phase counters, one per stage, and the first/last-phase flags.

        In phase p of a core cycle X holds context p, R context p+1, F context p+2 and E
        context p-1 (E of the last context runs in phase 0 of the next core cycle).
        """
        P = self.phases
        # one counter per stage (no adders on the stage slot numbers)
        ph = Signal(range(P))
        ph_f = Signal(range(P), init=2 % P)
        ph_r = Signal(range(P), init=1 % P)
        ph_e = Signal(range(P), init=P - 1)
        for s in (ph, ph_f, ph_r, ph_e):
            m.d.sync += s.eq(Mux(s == P - 1, 0, s + 1))
        # phase 0 / phase P-1 flags as registers (one LUT level less on the command paths)
        first = Signal(init=1)
        last = Signal(init=P == 1)
        m.d.sync += [first.eq(ph == P - 1), last.eq(ph == P - 2 if P > 1 else 1)]
        m.d.comb += self.phase.eq(ph)
        vars(p).update(last=last, ph=ph, ph_f=ph_f, ph_r=ph_r, ph_e=ph_e, first=first)

    def _host_commands(self, m, p):
        """The host command port: accepted in phase 0, its slot masks shifted along so that
        X registers each context's bits for E, which applies them in that core cycle."""
        C = self.contexts
        first, last = p.first, p.last
        # The first core cycle after reset has no fetch for contexts 0 and 1 (their fetch
        # would have been in the cycle before): accept commands from cycle 1 on.
        # spram: a program write took the fetch of context 0 or 1 (fetched in the previous
        # cycle); a start in this cycle would issue a stale word, so hold commands a cycle.
        stale = Signal()
        # ``cmd_ok`` is a register, decided in the last clock of the previous cycle (0 after
        # reset: that is the first cycle's hold)
        cmd_ok = Signal()
        cmd_ok_d = Signal()
        cmd_ok_sched = Signal()    # the next cycle takes commands, as the fetch allows
        # X's own copy (not merged with ``cmd_ok``: it has no reset, and needs none, as
        # its input is 0 in reset): X's decisions for context 0 take the command input
        # through it, not through ``accept`` and its fanout
        cmd_ok_x = Signal(reset_less=True)
        m.d.sync += [cmd_ok.eq(cmd_ok_d), cmd_ok_x.eq(cmd_ok_d)]
        # (a warped core cycle takes no command: its start would lose the skipped cycles)
        # (without a warp none of its terms is built: the hardware netlist stays as it was)
        # (both hold the warp in microseconds, 0 = none)
        warp_c = Signal(range(self.warp_us + 1))   # this core cycle's (phases 0 .. P-1)
        warp_r = Signal(range(self.warp_us + 1))   # R's for it (phase P-1 before .. P-2)
        # core cycles it skips, at its end (in its last clock)
        warp_skip = Mux(last, warp_c * self.cycles_per_us, 0)
        cmd_open = cmd_ok & ~warp_c.any() if self.warp_cycles else cmd_ok
        accept = cmd_open & self.cmd.valid
        m.d.comb += self.cmd.ready.eq(cmd_open)
        # (a reset of every slot and the time base, the host's "reset all", clears the
        # register file too: every program then starts from the registers' reset values,
        # as on a fresh VM, and no layer stays bound to a surface the host has freed. No
        # command is taken while it clears (``cmd_ok`` is decided after the clear began):
        # a program started then would lose writes)
        rf = self.regfile
        clear = Signal()
        m.d.sync += clear.eq(accept & self.cmd.payload.timebase
                             & (self.cmd.payload.reset == (1 << C) - 1))
        m.d.comb += [rf.clear.eq(clear), cmd_ok_d.eq(cmd_ok_sched & ~clear & ~rf.clearing)]
        acc_cmd = Signal(self.command_layout)
        m.d.comb += acc_cmd.eq(Mux(accept, self.cmd.payload.as_value(), 0))
        # The command's slot masks as shift registers: bit 1 is always X's context (X
        # registers the bits of its context for E; context 0's come from the input in
        # phase 0). Loaded at the end of phase 0, shifted after every other phase.
        cmd_start, cmd_stop, cmd_reset = (Signal(C, name=f"cmd_{n}") for n in ("start", "stop", "reset"))
        with m.If(first):
            m.d.sync += [cmd_start.eq(acc_cmd.start), cmd_stop.eq(acc_cmd.stop),
                         cmd_reset.eq(acc_cmd.reset)]
        with m.Else():
            m.d.sync += [r.eq(r >> 1) for r in (cmd_start, cmd_stop, cmd_reset)]
        # this cycle's start mask (for the SPRAM write arbitration)
        cmd_start_held = Signal(C)
        with m.If(first):
            m.d.sync += cmd_start_held.eq(acc_cmd.start)
        tb_reset = accept & self.cmd.payload.timebase
        vars(p).update(stale=stale, cmd_ok_sched=cmd_ok_sched, cmd_ok_x=cmd_ok_x, warp_c=warp_c,
                       warp_r=warp_r, warp_skip=warp_skip, acc_cmd=acc_cmd, cmd_reset=cmd_reset,
                       cmd_start=cmd_start, cmd_stop=cmd_stop, cmd_start_held=cmd_start_held,
                       tb_reset=tb_reset)

    def _time_base(self, m, p):
        """The time base: the core-cycle counter ``g`` (the ``cycle`` port and the event
        timestamps), its reset by a host command, and the vsync generator's inputs."""
        first, last, tb_reset, vs, warp_skip = p.first, p.last, p.tb_reset, p.vs, p.warp_skip
        g = Signal(TIMESTAMP_BITS)
        # The time-base reset (accepted in phase 0) reaches the vsync generator one clock
        # later, from a register (``tb_r``, phase 1): it does not count in phases 0 and 1
        # (it advances in the last phase, P >= 4), so only its edge output needs the reset
        # ORed in, in phase 0 (the command input then reaches none of its reset nets).
        tb_r = Signal()
        m.d.sync += tb_r.eq(tb_reset)
        # (``g + last``, not an enable: the reset would otherwise join the enable of 32
        # flip-flops, a high-fanout net from the command input)
        if self.warp_cycles:
            m.d.sync += g.eq(g + last + warp_skip)
        else:
            # two 16-bit carry chains (one of 32 was a slowest path): the high half adds
            # the carry of the low half, which is all ones; that test is a register (the
            # counter changes only in the last phase, P >= 4, so it has settled by then)
            gh = TIMESTAMP_BITS // 2
            lo_ones = Signal()
            m.d.sync += [lo_ones.eq(g[:gh] == (1 << gh) - 1),
                         g.eq(Cat((g[:gh] + last)[:gh],
                                  (g[gh:] + (last & lo_ones))[:TIMESTAMP_BITS - gh]))]
        with m.If(tb_reset):
            m.d.sync += g.eq(0)
        # the core cycle of the record entering the FIFO (one clock after E): ``g`` as it
        # is in phase 1, from phase 2 on, so it is the previous cycle in phase 1 (E of the
        # last context ran in phase 0) and this cycle in the others. ``tap`` (E's clock)
        # takes ``g`` itself in phase 1 (E of context 0). It is held in a block RAM read
        # in phase 1 (its output holds until the next read), not in 32 flip-flops that
        # only copy ``g``: ``g`` is written in phase 0, and a time-base reset accepted in
        # phase 0 reads the row that is never written (0) instead.
        second = Signal()
        m.d.sync += second.eq(first)
        g_e = Signal(TIMESTAMP_BITS)
        m.submodules.stamp_mem = stamp_mem = memory.Memory(
            shape=TIMESTAMP_BITS, depth=2, init=[0, 0],
            attrs={"ram_style": "distributed" if self.lut_ram else "block"})
        stamp_wp, stamp_rp = stamp_mem.write_port(), stamp_mem.read_port()
        m.d.comb += [stamp_wp.addr.eq(0), stamp_wp.data.eq(g), stamp_wp.en.eq(first),
                     stamp_rp.addr.eq(tb_r), stamp_rp.en.eq(second),
                     g_e.eq(stamp_rp.data)]
        if self.warp_cycles:
            m.d.comb += [vs.skip.eq(warp_skip), self.warped.eq(warp_skip)]
        # (``vs.edge`` is 0 in phase 1 after a reset; phase 0 masks it here)
        # (the ``cycle`` port is ``g``: in the clock that accepts a time-base reset it
        # still shows the cycle before it, so no path leads from the command input to it)
        m.d.comb += [self.cycle.eq(g), vs.advance.eq(last), vs.reset.eq(tb_r),
                     vs.vsync_in.eq(self.vsync_in), vs.external.eq(self.vsync_external),
                     self.vsync_edge.eq(vs.edge & ~tb_reset)]
        vars(p).update(g=g, second=second, g_e=g_e)

    def _context_state(self, m, p):
        """Per-context state: the ring of (state, pc, reported pc) registers that moves with
        the pipeline, and the counter RAM (delays, idle count, armed LOOPs) read in F and
        written in E."""
        P, pb, chz = self.phases, self.pc_bits, self.clock_hz
        ph_e, ph_f = p.ph_e, p.ph_f
        # ring[0] is F's context, ring[1] R's, ring[2] X's, ring[3] E's; E's result enters
        # the ring where the context's next fetch picks it up. No per-context muxes.
        ring_st = [Signal(3, name=f"ring_st{i}") for i in range(P)]
        ring_pc = [Signal(pb, name=f"ring_pc{i}") for i in range(P)]
        # ring_rep: the pc the status port reports (the op after a blocked FENCE, as the
        # VM does), so that no adder sits between the ring and the port
        ring_rep = [Signal(pb, name=f"ring_rep{i}") for i in range(P)]
        n_st, n_pc, n_rep = Signal(3), Signal(pb), Signal(pb)
        # (``prog_outreg``: E's fetch address, ``_active(n_st) ? n_pc : 0``)
        n_fetch = Signal(pb)
        back = 4 % P
        for i in range(P):
            if i == back:
                m.d.sync += [ring_st[i].eq(n_st), ring_pc[i].eq(n_pc), ring_rep[i].eq(n_rep)]
            else:
                m.d.sync += [ring_st[i].eq(ring_st[i - 1]), ring_pc[i].eq(ring_pc[i - 1]),
                             ring_rep[i].eq(ring_rep[i - 1])]

        # per-context counters in a P-deep block RAM: read in F, written in E
        dlay = delay_layout(chz)
        wdshape = unsigned(self.watchdog_ops.bit_length())
        ctx_layout = data.StructLayout({"hi": dlay.members["hi"], "lo": dlay.members["lo"],
                                        "idle": wdshape, "armed": unsigned(isa.LOOP_SLOTS),
                                        # "the delay is 0" and "idle == watchdog_ops" of the
                                        # values stored, precomputed (R's issue decision
                                        # reads two bits instead of two wide tests)
                                        "dz": unsigned(1), "wh": unsigned(1),
                                        # "idle reads as 0": a FENCE that has to wait
                                        # resets the idle count with this bit (R applies
                                        # it in the LUTs after its adder), not with an
                                        # AND per bit in front of the RAM in E
                                        "iz": unsigned(1)})
        # ram_style: a block RAM, not P x 57 flip-flops plus a 57-bit read mux
        # (with ``lut_ram``, LUT RAM like the other small memories: a block RAM's
        # clock-to-out is most of a fast clock)
        ctx_mem = memory.Memory(shape=ctx_layout, depth=P, init=[],
                                attrs={"ram_style": "distributed" if self.lut_ram else "block"})
        m.submodules.ctx_mem = ctx_mem
        ctx_rp = ctx_mem.read_port()
        ctx_wp = ctx_mem.write_port()
        m.d.comb += [ctx_rp.addr.eq(ph_f), ctx_wp.addr.eq(ph_e)]
        vars(p).update(ring_st=ring_st, ring_pc=ring_pc, ring_rep=ring_rep, n_pc=n_pc,
                       n_rep=n_rep, n_st=n_st, n_fetch=n_fetch, wdshape=wdshape, ctx_rp=ctx_rp,
                       ctx_wp=ctx_wp)

    def _fetch(self, m, p):
        """F: the program memory address of F's context (or a pending program write)."""
        sb = self.slot_bits
        cmd_ok_sched, last, n_fetch, ph_e, ph_f = p.cmd_ok_sched, p.last, p.n_fetch, p.ph_e, p.ph_f
        prog, ring_pc, ring_st = p.prog, p.ring_pc, p.ring_st
        f_st, f_pc = ring_st[0], ring_pc[0]
        fetch_addr = Cat(Mux(_active(f_st), f_pc, 0), ph_f[:sb])
        wr = self.prog_wr
        if prog.single_port:
            self._spram_write_arbitration(m, p, fetch_addr)
        elif prog.outreg:
            # The word passes the RAM's output register: the address goes in one clock
            # before F, in E of the same context (P == 4), straight from E's result (the
            # ring entry F takes in the next clock).
            m.d.comb += [prog.rd_addr.eq(Cat(n_fetch, ph_e[:sb])),
                         prog.wr_addr.eq(wr.payload.addr),
                         prog.wr_data.eq(wr.payload.data), prog.wr_en.eq(wr.valid), wr.ready.eq(1)]
            m.d.comb += cmd_ok_sched.eq(last)
        else:
            m.d.comb += [prog.rd_addr.eq(fetch_addr), prog.wr_addr.eq(wr.payload.addr),
                         prog.wr_data.eq(wr.payload.data), prog.wr_en.eq(wr.valid), wr.ready.eq(1)]
            m.d.comb += cmd_ok_sched.eq(last)

    def _spram_write_arbitration(self, m, p, fetch_addr):
        """F with a single-port program memory (SPRAM): one access per clock.

        A program write waits in a buffer for the F stage of its own slot (which is not
        running, so it needs no fetch) and takes that access. The decision is made one
        clock ahead (``commit`` is a register). A fetch of slot 0 or 1 serves the next core
        cycle: its commands are held a cycle (``stale``); a fetch in phase 0 serves this
        cycle: its commands wait a cycle; a later one is taken only if this cycle's command
        does not start that slot.
        """
        C, P, sb, pb = self.contexts, self.phases, self.slot_bits, self.pc_bits
        acc_cmd, cmd_ok_sched, cmd_start_held = p.acc_cmd, p.cmd_ok_sched, p.cmd_start_held
        first, last, ph_f, prog, stale = p.first, p.last, p.ph_f, p.prog, p.stale
        wr = self.prog_wr
        # The buffer's word and word address are kept in a block RAM row (``wbuf_mem``),
        # not in 42 flip-flops of their own (each an LC: their inputs are the port's
        # bits); the slot stays in a register for the arbitration. A write is taken
        # while the buffer is empty or commits, and the row it writes is read from the
        # next clock on, so it commits two clocks after it came at the earliest.
        wb_valid = Signal()
        wb_slot = Signal(sb)
        commit = Signal()
        take = Signal()
        m.d.comb += [wr.ready.eq(~wb_valid | commit), take.eq(wr.valid & wr.ready)]
        m.submodules.wbuf_mem = wbuf = memory.Memory(shape=isa.WORD_BITS + pb, depth=2, init=[],
                                                     attrs={"ram_style": "block"})
        wbuf_wp, wbuf_rp = wbuf.write_port(), wbuf.read_port()
        m.d.comb += [wbuf_wp.addr.eq(0), wbuf_rp.addr.eq(0), wbuf_wp.en.eq(take),
                     wbuf_wp.data.eq(Cat(wr.payload.data, wr.payload.addr[:pb]))]
        wb_data, wb_word = wbuf_rp.data[:isa.WORD_BITS], wbuf_rp.data[isa.WORD_BITS:]
        with m.If(take):
            m.d.sync += wb_slot.eq(wr.payload.addr[pb:])
        f_next = Signal(range(P))          # F's context in the next clock
        m.d.comb += f_next.eq(Mux(ph_f == P - 1, 0, ph_f + 1))
        start_mask = Mux(first, acc_cmd.start, cmd_start_held)
        # the buffer holds a word in the next clock that may commit then: one it holds now
        # and does not commit now (a word written now is read from the RAM a clock later)
        nb_valid = Signal()
        m.d.comb += nb_valid.eq(wb_valid & ~commit)
        nb_slot = wb_slot
        commit_d = Signal()
        m.d.comb += commit_d.eq(nb_valid & (nb_slot == f_next[:sb]) & (f_next < C)
                                & ((f_next <= 2) | ~start_mask.bit_select(f_next, 1)))
        m.d.sync += commit.eq(commit_d)
        with m.If(take):
            m.d.sync += wb_valid.eq(1)
        with m.Elif(commit):
            m.d.sync += wb_valid.eq(0)
        m.d.comb += [prog.rd_addr.eq(fetch_addr), prog.wr_addr.eq(Cat(wb_word, wb_slot)),
                     prog.wr_data.eq(wb_data), prog.wr_en.eq(commit)]
        stale_set = commit & (ph_f < 2)
        with m.If(stale_set):
            m.d.sync += stale.eq(1)
        with m.Elif(first):
            m.d.sync += stale.eq(0)
        # phase 0 of the next cycle: not stale, and no write commits in it
        # (in the last clock F's next context is 2, which is never held by a start:
        # ``commit_d`` reduces to a slot test, off the command input)
        commit_last = nb_valid & (nb_slot == 2) & (2 < C)
        m.d.comb += cmd_ok_sched.eq(last & ~stale & ~stale_set & ~commit_last)

    def _read(self, m, p):
        """R: decode, the operand RAM addresses, the tests on the context's counters; the host's
        fence writes."""
        sb, chz = self.slot_bits, self.clock_hz
        ctx_rp, dec, fence_mem, loop_mem = p.ctx_rp, p.dec, p.fence_mem, p.loop_mem
        ph_r, prog, raw, warp_r, wdshape = p.ph_r, p.prog, p.raw, p.warp_r, p.wdshape
        p.word = word = prog.rd_data
        m.d.comb += dec.word.eq(word)

        p.word_x = word_x = Signal(isa.WORD_BITS)
        flags = {op.name: Signal(name=f"x_is_{op.name.lower()}") for op in isa.OPS}
        m.d.sync += word_x.eq(word)
        m.d.sync += [flags[n].eq(dec.flag(n)) for n in flags]

        loop_rp = loop_mem.read_port()
        loop_wp = loop_mem.write_port()
        fw = self.fence_wr.payload
        # (read transparently: a host write in R's clock is in X's value. Yosys emulates
        # that with one register of the write data and a mux after the RAM, its old-data
        # emulation took two registers; the falling-edge write that would save both needs
        # NegClk bits on which nextpnr and icebox_vlog disagree for the UP5K, so the
        # simulation of the bitstream could not check it)
        fence_wp = fence_mem.write_port()
        fence_rp = fence_mem.read_port(transparent_for=(fence_wp,))
        m.d.comb += [
            loop_rp.addr.eq(Cat(raw("LOOP", "slot"), ph_r[:sb])),
            fence_rp.addr.eq(Cat(raw("FENCE", "timeline"), ph_r[:sb])),
        ]
        m.d.comb += [fence_wp.addr.eq(Cat(fw.timeline, fw.slot)), fence_wp.data.eq(fw.value),
                     fence_wp.en.eq(self.fence_wr.valid), self.fence_wr.ready.eq(1)]

        cx = ctx_rp.data
        hi_x, lo_x = Signal.like(cx.hi), Signal.like(cx.lo)
        lv_x = Signal(isa.LOOP_SLOTS)
        # the decremented delay, precomputed here (a 27-bit subtractor out of X)
        dhi_x, dlo_x = Signal.like(cx.hi), Signal.like(cx.lo)
        r_dhi, r_dlo = delay_dec(cx.hi, cx.lo, chz)
        if self.warp_cycles:      # a warped cycle counts its warp's microseconds more
            r_dhi = (r_dhi - warp_r)[:len(cx.hi)]
        m.d.sync += [dhi_x.eq(r_dhi), dlo_x.eq(r_dlo)]
        # the idle count after this cycle for an active context: ``idle + 1`` if it issues
        # (X's ``issue``, decided here), else ``idle``; X only zeroes it for a WAIT or
        # takes 0/1 for a context that is not active. One register (a copy of ``idle``
        # and ``idle + 1`` side by side took an LC per bit more); the issue bit joins in
        # the LUT after the adder, not as its carry-in (it is late: the chain would
        # start after it).
        r_st = p.ring_st[1]
        r_issue = ~_active(r_st) | ((r_st == CtxState.RUNNING) & cx.dz & ~cx.wh)
        wdn_x = Signal(wdshape)
        m.d.sync += wdn_x.eq(Mux(cx.iz, r_issue, Mux(r_issue, cx.idle + 1, cx.idle)))
        # the tests of the next values: the delay after one count down is 0 (it is 1 now),
        # the idle count after one more op hits the watchdog
        d1_x, wh1_x = Signal(), Signal()
        r_d1 = delay_one(cx.hi, cx.lo, chz)
        wd = self.watchdog_ops
        if wd & (wd - 1) == 0 and wd > 1:
            # (``idle == 2**k - 1``: the carry into bit k of ``idle + 1``, the adder
            # above, with bit k clear; no equality tree beside it)
            k = wd.bit_length() - 1
            r_wh1 = (cx.idle + 1)[k] & ~cx.idle[k]
        else:
            r_wh1 = cx.idle == wd - 1
        m.d.sync += [d1_x.eq(r_d1), wh1_x.eq(Mux(cx.iz, wd == 1, r_wh1))]
        cx_wh_x = Signal()
        m.d.sync += cx_wh_x.eq(cx.wh)
        # op classes, registered; validity (no reserved bit set) is finished in X from
        # registered per-segment tests (the SPRAM's output is late in the clock): per
        # group of bits that the same ops reserve, "zero, or the op does not reserve
        # them" (the op set is a function of the opcode's bits: one LUT beside the zero
        # test), and "a known opcode". X ANDs them: two LUT levels to ``x_ill``.
        segs = {}           # bits with the same set of ops reserving them -> one test
        for bit in range(isa.OPCODE_SHIFT):
            key = tuple(op.name for op in isa.OPS if op.reserved_mask >> bit & 1)
            if key:
                segs.setdefault(key, []).append(bit)
        seg_ok = []
        for key, bits in segs.items():
            z = Signal(name=f"x_segok_{bits[0]}")
            need = Const(0, 1)
            for n in key:
                need = need | dec.flag(n)
            m.d.sync += z.eq((Cat(*(word[b] for b in bits)) == 0) | ~need)
            seg_ok.append(z)
        known_x = Signal()
        known = Const(0, 1)
        for op_ in isa.OPS:
            known = known | dec.flag(op_.name)
        m.d.sync += known_x.eq(known)
        ok = Const(1, 1)
        cls_r = {
            "illegal": ~ok, "halt": ok & dec.flag("HALT"), "nop": ok & dec.flag("NOP"),
            "wait_us": ok & dec.flag("WAIT") & ~raw("WAIT", "vsync"),
            "wait_vs": ok & dec.flag("WAIT") & raw("WAIT", "vsync"),
            # (either WAIT, one register: the idle count's zeroing is one LUT from it)
            "wait": ok & dec.flag("WAIT"),
            "reg": ok & (dec.flag("MOVE") | dec.flag("ADD")), "irq": ok & dec.flag("IRQ"),
            "bind": ok & dec.flag("BIND_LAYER"), "jump": ok & dec.flag("JUMP"),
            "loop_any": ok & dec.flag("LOOP"),
            "fence": ok & dec.flag("FENCE"),
        }
        del cls_r["illegal"]
        cls_x = {k: Signal(name=f"x_op_{k}") for k in cls_r}
        m.d.sync += [cls_x[k].eq(v) for k, v in cls_r.items()]
        # a LOOP's count == 0 (forever) registered on its own: the wide zero test and the
        # opcode decode side by side after the (late) program memory output
        cnt0_x = Signal()
        m.d.sync += cnt0_x.eq(raw("LOOP", "count") == 0)
        cls_x["loop_inf"] = cls_x["loop_any"] & cnt0_x
        cls_x["loop"] = cls_x["loop_any"] & ~cnt0_x
        del cls_x["loop_any"]
        # X: the word is valid (known opcode, no reserved bit set); the outcome below
        # assumes it is, and E applies ``e_ill``
        valid_xx = Signal()
        vv = known_x
        for z in seg_ok:
            vv = vv & z
        m.d.comb += valid_xx.eq(vv)
        m.d.sync += lv_x.eq(cx.armed)
        vars(p).update(flags=flags, loop_rp=loop_rp, loop_wp=loop_wp,
                       fence_rp=fence_rp, fw=fw, cx=cx, hi_x=hi_x, lo_x=lo_x, lv_x=lv_x,
                       wdn_x=wdn_x, dhi_x=dhi_x, dlo_x=dlo_x, d1_x=d1_x, wh1_x=wh1_x,
                       cx_wh_x=cx_wh_x, cls_x=cls_x, valid_xx=valid_xx)

    def _decide(self, m, p):
        """X: every decision, from registers and the operand RAMs, as the outcome of the
        context's op (its next state, pc, counters and event), and the register file read."""
        sb, pb, chz = self.slot_bits, self.pc_bits, self.clock_hz
        cls_x, cx, cx_wh_x, d1_x, dec, dhi_x = p.cls_x, p.cx, p.cx_wh_x, p.d1_x, p.dec, p.dhi_x
        dlo_x, fence_rp, flags, fld, fw = p.dlo_x, p.fence_rp, p.flags, p.fld, p.fw
        hi_x, lo_x, loop_rp, lv_x, ph, raw = p.hi_x, p.lo_x, p.loop_rp, p.lv_x, p.ph, p.raw
        rf, ring_pc, ring_st, vs, wdn_x = p.rf, p.ring_pc, p.ring_st, p.vs, p.wdn_x
        wh1_x = p.wh1_x
        st_x, pc_x = ring_st[2], ring_pc[2]
        # precomputed in R: active, the next op's pc (``pc + 1``, 1 for a start: the
        # only user of ``pc + 1`` alone, the stop of a FENCE, is of an active context),
        # the state tests
        act_x = Signal()
        pc1_x = Signal(pb)
        st_run_x, st_vs_x, st_fe_x = Signal(), Signal(), Signal()
        p.pc_inc_r = pc_inc_r = Signal(pb)
        m.d.comb += pc_inc_r.eq(Mux(_active(ring_st[1]), ring_pc[1] + 1, 1))
        m.d.sync += [act_x.eq(_active(ring_st[1])), pc1_x.eq(pc_inc_r),
                     st_run_x.eq(ring_st[1] == CtxState.RUNNING),
                     st_vs_x.eq(ring_st[1] == CtxState.VSYNC),
                     st_fe_x.eq(ring_st[1] == CtxState.FENCE)]
        # An inactive context proceeds in E only if it is started there: X computes the
        # outcome of issuing word 0 from a clean state for it (the start outcome), and the
        # outcome of the current state for an active one. E only selects.
        eff_pc = Signal(pb)
        eff_lv = Signal(isa.LOOP_SLOTS)
        m.d.comb += [eff_pc.eq(Mux(act_x, pc_x, 0)), eff_lv.eq(Mux(act_x, lv_x, 0))]
        pc_inc = pc1_x

        # fence test of this context's timeline; a write in this very clock (the host
        # writes slot s in phase s, X's phase) counts too. Values only grow, so "the new
        # value is >= V" is (RAM value >= V) | (this write's value >= V): two comparisons
        # side by side instead of a forwarding mux in front of one. The result is
        # registered and E applies it (``o_fdep``): the outcome below assumes it is met.
        fwd = Signal()
        m.d.comb += fwd.eq(self.fence_wr.valid & (fw.slot == ph[:sb])
                           & (fw.timeline == fld("FENCE", "timeline")))
        # The RAM comparison is split into 12-bit halves (a 24-bit carry chain after the
        # RAM was the slowest path): X registers "high half >", "high half !=" and "low
        # half <" separately, the ordering tests straight from their carry chains (no
        # LUT and no route after them); the write's test clears the FENCE's "depends"
        # bit instead (``fdep``, after a chain from registers); E finishes "not met" in
        # one LUT (``fblk``).
        fv = fld("FENCE", "value")
        # (met = high > | ~(high !=) & ~(low <): each chain registered as its own carry
        # out, with no inverter that would keep the flip-flop out of the chain's last
        # logic cell; E finishes it, ``fence_blocked``)
        f_gt_hi, f_ne_hi, f_lt_lo = fence_terms(fence_rp.data, fv)
        w_ok = fwd & fence_write_met(fw.value, fv)

        # LOOP: the counter after this issue is 0 (falls through) when it was counting
        # and 1, or when it was idle and the count is 1: equality tests, no subtractor
        # in the decision path.
        loop_slot = fld("LOOP", "slot")
        # the LOOP's counter as a one-hot mask and its armed bit (from registers: the
        # program memory's output is late in R)
        onehot_x = Signal(isa.LOOP_SLOTS)
        armed_x = Signal()
        m.d.comb += [onehot_x.eq(Const(1, isa.LOOP_SLOTS) << loop_slot),
                     armed_x.eq(lv_x.bit_select(loop_slot, 1))]
        loop_count = fld("LOOP", "count")
        # (a counter that falls through has its armed bit cleared by E, so "counting" is
        # the armed bit alone: no zero test on the RAM value)
        counting = Signal()
        m.d.comb += counting.eq(act_x & armed_x)
        # (both tests side by side, the select after them; E subtracts 1 from the
        # selected value: no select in front of a carry chain here)
        loop_exit = loop_falls_through(counting, loop_rp.data, loop_count)

        # What happens, as one-hot conditions (flat AND-OR logic, no priority chains):
        # the context issues its op, counts its delay down, trips the watchdog, resumes
        # after a vsync edge or a FENCE (assumed met, see above), or nothing changes.
        issue, cnt_dn, wdog, vres, fres = (Signal(name=n) for n in ("x_issue", "x_dec", "x_wdog",
                                                                      "x_vres", "x_fres"))
        # issue / count down / watchdog are decided in R (from the counter RAM and the
        # ring) and registered: X's outcome logic starts two LUT levels later otherwise
        r_act, r_run = _active(ring_st[1]), ring_st[1] == CtxState.RUNNING
        r_dz, r_wh = cx.dz, cx.wh
        m.d.sync += [issue.eq(~r_act | (r_run & r_dz & ~r_wh)),
                     cnt_dn.eq(r_act & r_run & ~r_dz),
                     wdog.eq(r_act & r_run & r_dz & r_wh)]
        m.d.comb += [
                     # the edge register without this clock's time-base reset (a reset in
                     # phase 0 cancels the edge: E undoes the resume of context 0, o_vdep)
                     # (``vs.edge`` masks the edge in phase 1 after a time-base reset,
                     # which reaches the generator then)
                     vres.eq(act_x & st_vs_x & vs.edge),
                     fres.eq(act_x & st_fe_x)]
        op = {k: issue & v for k, v in cls_x.items()}     # op classes of the issued op

        o_st, o_pc = Signal(3), Signal(pb)
        o_hi, o_lo = Signal.like(hi_x), Signal.like(lo_x)
        o_wd, o_lv = Signal.like(wdn_x), Signal.like(lv_x)
        o_kind = Signal(3)
        o_payload = Signal(PAYLOAD_BITS)
        o_rf_we, o_loop_we, o_fdep, o_ldep, o_vdep = (Signal() for _ in range(5))

        def any_of(*names):
            v = Const(0, 1)
            for n in names:
                v = v | op[n]
            return v

        def pick(default, *pairs):
            """AND-OR of one-hot (condition, value) pairs; ``default`` when none holds."""
            none = Const(1, 1)
            v = Const(0, 1)
            for cond, val in pairs:
                v = v | Mux(cond, val, 0)
                none = none & ~cond
            return v | Mux(none, default, 0)

        branch = any_of("jump", "loop_inf", "loop")
        to_fault = wdog

        # delay: only a RUNNING context counts it; every other case loads a constant
        k_simple = delay_const(chz, isa.CYCLES_SIMPLE - 1)
        k_branch = delay_const(chz, isa.CYCLES_BRANCH - 1)
        k_vs = delay_const(chz, isa.VSYNC_LATENCY - 1)
        k_fr = delay_const(chz, isa.FENCE_RESUME_LATENCY - 1)
        w_hi, w_lo = delay_wait(fld("WAIT", "us"), chz)
        o_dz, o_wh = Signal(), Signal()
        cpu1 = self.cycles_per_us == 1
        m.d.comb += [
            o_dz.eq(pick(Mux(branch, _kzero(k_branch), Mux(vres, _kzero(k_vs), Mux(fres, _kzero(k_fr),
                                                                              _kzero(k_simple)))),
                         (cnt_dn, d1_x),
                         (op["wait_us"], (fld("WAIT", "us") == 1) if cpu1 else 0))),
            o_wh.eq(pick(Mux(act_x, cx_wh_x, 0),
                         (op["wait"], 0),
                         (issue & ~cls_x["wait"],
                          Mux(act_x, wh1_x, int(self.watchdog_ops == 1))))),
        ]
        for i, (o, dv, wv) in enumerate(((o_hi, dhi_x, w_hi), (o_lo, dlo_x, w_lo))):
            k = Mux(branch, k_branch[i], Mux(vres, k_vs[i], Mux(fres, k_fr[i], k_simple[i])))
            m.d.comb += o.eq(pick(k, (cnt_dn, dv), (op["wait_us"], wv)))
        sel_inc = Signal()
        m.d.comb += sel_inc.eq(fres | any_of("reg", "irq", "bind", "wait_us", "wait_vs", "nop",
                                             "fence"))
        m.d.comb += [
            # (as selects, not an AND-OR: three LUTs per bit, each with one select)
            o_pc.eq(Mux(sel_inc | op["jump"], Mux(sel_inc, pc_inc, fld("JUMP", "target")),
                        Mux(op["loop_inf"] | op["loop"], fld("LOOP", "target"), eff_pc))),
            o_st.eq(pick(Mux(issue | vres | fres, CtxState.RUNNING, st_x),
                         (to_fault, CtxState.FAULTED), (op["halt"], CtxState.DONE),
                         (op["wait_vs"], CtxState.VSYNC))),
            # (idle + 1 after an issued op, 0 after a WAIT, unchanged otherwise; a context
            # being started: 1, or 0 for a WAIT)
            o_wd.eq(Mux(op["wait"], 0, Mux(act_x, wdn_x, issue))),
            o_lv.eq(Mux(op["loop"], loop_armed_back(lv_x, onehot_x, act_x), eff_lv)),
            o_kind.eq(pick(EventKind.NONE, (to_fault | op["halt"], EventKind.STATE),
                           (op["reg"], EventKind.REG), (op["irq"], EventKind.IRQ),
                           (op["bind"], EventKind.BIND))),
            o_payload.eq(pick(0,
                              (to_fault | op["halt"],
                               Cat(Mux(op["halt"], CtxState.DONE, CtxState.FAULTED)[:3],
                                   Mux(op["halt"], Reason.HALT, Reason.WATCHDOG)[:3],
                                   eff_pc.as_unsigned()[:STATE_PC_BITS])),
                              (op["irq"], fld("IRQ", "tag")))),
            # (BIND_LAYER writes its layer's surface register: a MOVE of the surface
            # number, whose record is a BIND with a REG record's payload)
            o_rf_we.eq(op["reg"] | op["bind"]),
            o_loop_we.eq(op["loop"]), o_ldep.eq(op["loop"]),
            o_fdep.eq(fres | op["fence"]),
            o_vdep.eq(vres),
        ]

        # register values: the register file is read in X (it forwards E's write of the
        # same clock: the previous context's write is seen) and E adds ADD's delta to the
        # value
        # the register E writes: MOVE's and ADD's ``reg``, BIND_LAYER's layer's surface
        # register (its value field is where MOVE's is: the immediate is the number)
        assert isa.OP_BY_NAME["BIND_LAYER"].bit("surface").lsb == isa.OP_BY_NAME["MOVE"].bit("value").lsb
        reg_idx_x = Signal(isa.OP_BY_NAME["MOVE"].bit("reg").width)
        m.d.comb += reg_idx_x.eq(Mux(flags["BIND_LAYER"],
                                     Cat(Const(isa.SURFACE_FIELD.index, (isa.REG_STRIDE - 1).bit_length()),
                                         fld("BIND_LAYER", "layer")[:isa.LAYER_BITS]),
                                     fld("MOVE", "reg")))
        # MOVE and BIND_LAYER read a register that is always 0 (an unused index of layer
        # 0: its mask is 0, so every write stores 0), so E's adder needs no select in
        # front of it
        if self.lut_ram:
            # (the address from a register, decided in R: the LUT RAM's read, its read
            # mux and the register after them fill X's clock)
            rf_addr_x = Signal(len(rf.rd_addr))
            m.d.sync += rf_addr_x.eq(Mux(dec.flag("MOVE") | dec.flag("BIND_LAYER"), ZERO_REG,
                                         raw("MOVE", "reg")))
            m.d.comb += rf.rd_addr.eq(rf_addr_x)
        else:
            m.d.comb += rf.rd_addr.eq(Mux(flags["MOVE"] | flags["BIND_LAYER"], ZERO_REG,
                                          fld("MOVE", "reg")))
        e_reg_new = Signal(REG_WORD_BITS)
        vars(p).update(pc_x=pc_x, st_x=st_x, act_x=act_x, pc1_x=pc1_x, st_fe_x=st_fe_x,
                       eff_lv=eff_lv, pc_inc=pc_inc, o_fdep=o_fdep, f_gt_hi=f_gt_hi,
                       f_ne_hi=f_ne_hi, f_lt_lo=f_lt_lo, w_ok=w_ok, counting=counting,
                       issue=issue, loop_slot=loop_slot, onehot_x=onehot_x,
                       loop_count=loop_count, loop_exit=loop_exit, o_vdep=o_vdep, o_pc=o_pc,
                       o_st=o_st, o_hi=o_hi, o_lo=o_lo, o_lv=o_lv, o_wd=o_wd, o_kind=o_kind,
                       o_payload=o_payload, o_ldep=o_ldep, o_loop_we=o_loop_we, o_rf_we=o_rf_we,
                       o_dz=o_dz, o_wh=o_wh, reg_idx_x=reg_idx_x, e_reg_new=e_reg_new,
                       k_branch=k_branch)

    def _register_for_e(self, m, p):
        """X -> E registers: the outcome, this context's command bits and the values E takes on
        a command or a fault, registered so that E only selects."""
        C, sb, pb = self.contexts, self.slot_bits, self.pc_bits
        act_x, cmd_ok_x, cmd_reset, cmd_start = p.act_x, p.cmd_ok_x, p.cmd_reset, p.cmd_start
        cmd_stop, counting, eff_lv, f_gt_hi = p.cmd_stop, p.counting, p.eff_lv, p.f_gt_hi
        f_ne_hi, f_lt_lo, fld, issue = p.f_ne_hi, p.f_lt_lo, p.fld, p.issue
        loop_count, loop_exit, loop_rp = p.loop_count, p.loop_exit, p.loop_rp
        loop_slot, o_dz, o_fdep, o_hi, o_kind = p.loop_slot, p.o_dz, p.o_fdep, p.o_hi, p.o_kind
        o_ldep, o_lo, o_loop_we, o_lv = p.o_ldep, p.o_lo, p.o_loop_we, p.o_lv
        o_payload, o_pc, o_rf_we, o_st = p.o_payload, p.o_pc, p.o_rf_we, p.o_st
        o_vdep, o_wd, o_wh, onehot_x, pc1_x = p.o_vdep, p.o_wd, p.o_wh, p.onehot_x, p.pc1_x
        pc_inc, pc_x, ph, prog, reg_e = p.pc_inc, p.pc_x, p.ph, p.prog, p.reg_e
        reg_idx_x, st_fe_x, st_x = p.reg_idx_x, p.st_fe_x, p.st_x
        tb_reset, valid_xx, w_ok, warp_c = p.tb_reset, p.valid_xx, p.w_ok, p.warp_c
        x_valid = ph < C        # a phase without a context (contexts < 4) writes nothing
        # an illegal word faults (the outcome assumes a valid word). The validity test is
        # deep, so it only enters E's ``kill`` (the command's "keep", or an illegal word)
        x_ill = Signal()
        m.d.comb += x_ill.eq(issue & ~valid_xx)
        g_run = x_valid
        # a vsync resume of context 0 in a cycle whose phase 0 resets the time base is
        # undone (that cycle is not an edge): one AND with the time-base reset (only ever
        # set in phase 0, X's phase of context 0) into ``kill``, registered for E
        x_vcancel = o_vdep & tb_reset

        # E's result without the command, the illegal word and the two late overrides (a
        # FENCE that is not met, a LOOP that falls through)
        g_st, g_pc = o_st, o_pc
        reg_e("act", act_x, 1)
        # the command bits of this context, registered for E: the command of this cycle
        # is in the shift registers (bit 1 is X's context) except in phase 0, where it is
        # being accepted (context 0). ``accept`` is only ever set in phase 0, and in phase
        # 0 the shift registers hold ``mask >> (P - 1)``, whose bit 1 is 0: an OR.
        open_x = cmd_ok_x & ~warp_c.any() if self.warp_cycles else cmd_ok_x

        def cmd_x(sh, bits):
            return (open_x & self.cmd.valid & bits[0]) | (sh[1] if C > 1 else 0)
        cp = self.cmd.payload
        x_start, x_stop, x_reset = (cmd_x(cmd_start, cp.start), cmd_x(cmd_stop, cp.stop),
                                    cmd_x(cmd_reset, cp.reset))
        x_stop_act = x_stop & act_x & ~x_reset
        # reset, host stop, or a context that neither runs nor starts
        x_keep = x_reset | x_stop_act | ~(act_x | x_start)
        reg_e("stop_act", x_stop_act, 1)
        reg_e("keep", x_keep, 1)
        reg_e("started", x_start & ~act_x & ~x_reset, 1)
        reg_e("ill", x_ill, 1)
        # ``kill``: E takes the command's (or the fault's) values below instead of the
        # outcome: keep, an illegal word, or a cancelled vsync resume. The illegal word
        # joins in E (one OR there): the command bits and the validity test, each two or
        # three LUT levels deep, do not meet here.
        reg_e("kill_cmd", x_keep | x_vcancel, 1)
        # the values E takes on ``kill`` (state, pc, reported pc), decided here, each
        # written so that the command bits enter as late and as few as possible (context
        # 0's come from the command input, accepted in this clock):
        # * pc and reported pc are equal on ``kill``: 0 after a reset or for a context
        #   being started (an illegal word 0), else ``pc`` (a context that does not run
        #   reports its pc; a running one that is stopped reports the op it was at, or
        #   the op after a FENCE it was blocked on, which its stop event reports too; one
        #   that issues an illegal word or has its vsync resume cancelled is RUNNING or
        #   VSYNC, whose reported pc is its pc). The same value is the pc a FENCE that is
        #   not met holds (``fblk``, never with ``kill``): ``pc``, 0 for a start.
        # * state: LOADED after a reset, STOPPED after a stop, FAULTED for an illegal
        #   word, VSYNC for a cancelled resume, else (a context that neither runs nor
        #   starts) its state. FAULTED differs from VSYNC in bit 2 alone, which E sets
        #   for an illegal word (the validity test is three LUT levels deep: it stays
        #   out of the command's logic here).
        k_st = Signal(3)
        m.d.comb += [
            k_st.eq(Mux(x_reset, CtxState.LOADED,
                        Mux(x_stop & act_x, CtxState.STOPPED,
                            Mux(act_x | x_start, CtxState.VSYNC, st_x)))),
        ]
        # (E reads these only on ``kill`` or ``fblk``, both 0 in its first clock after a
        # reset: they need no reset, so none joins the command's terms; the pc's zero
        # test is a bit of its own, which E applies, not a reset of ten flip-flops)
        reg_e("k_st", k_st, reset_less=True)
        # (a host stop of a context blocked on a FENCE leaves it at the FENCE's successor,
        # its reported pc: the stop event's pc and the status agree, as on the VM)
        reg_e("alt_pc", Mux(x_stop & st_fe_x, pc1_x, pc_x), pb, reset_less=True)
        reg_e("alt_zero", x_reset | (x_start & ~act_x), 1, reset_less=True)
        # the event payload of ``kill``: a host stop's or an illegal word's state event
        # (none for the other cases). Its pc is the reported pc of a running context (for
        # a stop: pc + 1 while blocked on a FENCE; a context that issues an illegal word
        # is RUNNING, whose reported pc is its pc) and 0 for a start, so only the state
        # and reason depend on the command. (The pc is E's: the ring's entry of E's
        # context, ``ring_rep[3]``, is X's ``ring_rep[2]`` one clock on, and the status
        # port keeps it anyway; a copy here was ten flip-flops of their own.)
        reg_e("kill_st", Cat(Mux(x_stop_act, CtxState.STOPPED, CtxState.FAULTED)[:3],
                             Mux(x_stop_act, Reason.HOST, Reason.ILLEGAL)[:3]), 6,
              reset_less=True)
        reg_e("g_st", g_st)
        reg_e("g_pc", g_pc)
        if prog.outreg:
            # the outcome's fetch address (0 for a context that stops running), so that
            # E's fetch address is one select like its pc, not a test of its state
            reg_e("g_fetch", Mux(_active(g_st), g_pc, 0), pb)
        # (E's ``pc_inc`` comes from the immediate's RAM row, below)
        # the event (none depends on the late overrides); a REG event's value comes in E
        reg_e("kind", o_kind, 3)
        # (a REG event's payload: the register index here, its value joins after E)
        # (a REG event's payload: the register index here, its value joins after E. An
        # OR, not a select over the other payloads: the op classes exclude each other,
        # and a select would add its condition to every payload bit's LUT)
        reg_e("payload", o_payload | Mux(g_run & o_rf_we, Cat(Const(0, REG_WORD_BITS),
                                                               reg_idx_x), 0),
              PAYLOAD_BITS)
        reg_e("is_reg", g_run & o_rf_we, 1)
        reg_e("valid", x_valid, 1)
        reg_e("o_hi", o_hi)
        reg_e("o_lo", o_lo)
        reg_e("o_wd", o_wd)
        reg_e("o_dz", o_dz, 1)
        reg_e("o_wh", o_wh, 1)
        reg_e("o_lv", o_lv)
        # the armed bits after a LOOP that falls through (its own bit cleared)
        # (E clears the LOOP's own bit from ``o_lv`` when it falls through: a LOOP's
        # ``o_lv`` has that bit set and the others as they were, so one register of the
        # LOOP's bit, not a second copy of the armed bits)
        reg_e("onehot", onehot_x, isa.LOOP_SLOTS)
        reg_e("loop_we", g_run & o_loop_we, 1)
        # (E's ``loop_slot`` comes from the immediate's RAM row, below)
        # the counter's next value: both candidates minus 1 (from the RAM, from the
        # word), E selects (``counting`` is three LUT levels deep: no select and no carry
        # chain after it here)
        reg_e("counting", counting, 1)
        loop_ram1, loop_cnt1 = loop_counter_candidates(loop_rp.data, loop_count)
        reg_e("loop_ram1", loop_ram1, isa.LOOP_COUNT_BITS)
        reg_e("loop_cnt1", loop_cnt1, isa.LOOP_COUNT_BITS)
        # the late overrides: a LOOP that falls through (next op, CYCLES_LOOP_EXIT); a
        # FENCE that is not met (state FENCE, pc held, idle 0), finished in E
        reg_e("lx", g_run & o_ldep & loop_exit, 1)
        reg_e("fdep", g_run & o_fdep & ~w_ok, 1)
        reg_e("fgt", f_gt_hi, 1)
        reg_e("fne_hi", f_ne_hi, 1)
        reg_e("flt_lo", f_lt_lo, 1)

        # (the register index E writes is the REG event's payload[23:16], ``e_payload``:
        # E writes the register file only for a REG op, whose payload holds the index)
        # MOVE's value and ADD's delta share their bits (checked in __init__). E's copy
        # comes from a block RAM row per context, written with R's word (the program
        # memory's output) and read in X: flip-flops copying ``word_x`` took an LC each.
        # The row also holds E's ``pc_inc`` (R's ``pc_inc_r``, which X registers as
        # ``pc1_x``) and the LOOP's slot (R's word), copies of X's registers otherwise.
        # Read every clock (the read data is used only the clock after its read).
        mv = isa.OP_BY_NAME["MOVE"].bit("value")
        pb = self.pc_bits
        slot_w = isa.OP_BY_NAME["LOOP"].bit("slot").width
        imm_mem = memory.Memory(shape=REG_WORD_BITS + pb + slot_w, depth=self.phases, init=[],
                                attrs={"ram_style": "distributed" if self.lut_ram else "block"})
        m.submodules.imm_mem = imm_mem
        imm_wp, imm_rp = imm_mem.write_port(), imm_mem.read_port()
        m.d.comb += [imm_wp.addr.eq(p.ph_r),
                     imm_wp.data.eq(Cat(p.word[mv.lsb:mv.lsb + mv.width], p.pc_inc_r,
                                        p.raw("LOOP", "slot"))),
                     imm_wp.en.eq(1), imm_rp.addr.eq(ph)]
        p.e["imm"] = imm_rp.data[:REG_WORD_BITS]
        p.e["pc_inc"] = imm_rp.data[REG_WORD_BITS:REG_WORD_BITS + pb]
        p.e["loop_slot"] = imm_rp.data[REG_WORD_BITS + pb:]
        # the register's mask, registered (E's value is then one LUT after the adder)
        reg_e("mask", field_mask(reg_idx_x[:(isa.REG_STRIDE - 1).bit_length()]), REG_WORD_BITS)
        vars(p).update(g_run=g_run)

    def _execute(self, m, p):
        """E: select between the precomputed outcomes (registers only), apply the command,
        write the register file, the LOOP counter, the counter RAM and the ring."""
        chz = self.clock_hz
        ctx_wp, e, e_reg_new, g_run, loop_wp = p.ctx_wp, p.e, p.e_reg_new, p.g_run, p.loop_wp
        n_fetch, n_pc, n_rep, n_st, o_rf_we = p.n_fetch, p.n_pc, p.n_rep, p.n_st, p.o_rf_we
        prog, reg_e, rf, valid_xx = p.prog, p.reg_e, p.rf, p.valid_xx
        # the command is applied here (X only registers its bits: the command input of
        # phase 0 never reaches X's outcome logic)
        valid_ctx = e["valid"]
        stop_act, keep = e["stop_act"], e["keep"]
        kill = Signal()
        m.d.comb += kill.eq(e["kill_cmd"] | e["ill"])
        lx = e["lx"]
        fblk = Signal()     # a FENCE that is not met blocks
        m.d.comb += fblk.eq(e["fdep"] & fence_blocked(e["fgt"], e["fne_hi"], e["flt_lo"]))
        # (every LOOP word is valid, so a falling-through LOOP never faults)
        assert isa.OP_BY_NAME["LOOP"].reserved_mask & ((1 << isa.OPCODE_SHIFT) - 1) == 0
        rf_we = Signal()
        if self.lut_ram:
            # (the LUT RAM's write enables, decoded per 16 rows, are E's slowest path on
            # the ECP5: a REG op with a valid word registered in X (an illegal word is no
            # REG op then), so only the command's ``kill_cmd`` joins here)
            reg_e("is_reg_ok", g_run & o_rf_we & valid_xx, 1)
            m.d.comb += rf_we.eq(e["is_reg_ok"] & ~e["kill_cmd"])
        else:
            m.d.comb += rf_we.eq(e["is_reg"] & ~kill)     # (a vsync resume is no REG op)
        # (MOVE = 0 + value, its read is of ``ZERO_REG``: the RAM output goes straight
        # into the carry chain, and the only LUT after it is the sum bit with the mask.
        # With ``lut_ram`` (the ECP5) the forwarded value has a carry chain of its own
        # too (``RegFile.rd_sum``), and the forwarding select joins that LUT: 16 more
        # adder cells, which the UP5K's budget and timing do not gain from)
        if self.lut_ram:
            m.d.comb += [rf.rd_add.eq(e["imm"]), e_reg_new.eq(rf.rd_sum & e["mask"])]
        else:
            m.d.comb += e_reg_new.eq((rf.rd_data + e["imm"])[:REG_WORD_BITS] & e["mask"])
        m.d.comb += [rf.wr_addr.eq(e["payload"][REG_WORD_BITS:]), rf.wr_data.eq(e_reg_new),
                     rf.wr_en.eq(rf_we)]
        m.d.comb += [loop_wp.addr.eq(Cat(e["loop_slot"], p.ph_e[:self.slot_bits])),
                     loop_wp.data.eq(loop_counter_next(e["counting"], e["loop_ram1"], e["loop_cnt1"])),
                     loop_wp.en.eq(e["loop_we"] & ~kill)]

        ev_kind = Signal(3)
        ev_payload = Signal(PAYLOAD_BITS)
        ev_pl_base = Signal(PAYLOAD_BITS)
        ev_started = Signal()
        m.d.comb += [
            ev_started.eq(e["started"]),
            # (a cancelled vsync resume has no event either way: ``keep | ill``, not
            # ``kill``)
            ev_kind.eq(Mux(keep | e["ill"], Mux((~keep & e["ill"]) | stop_act, EventKind.STATE,
                                                 EventKind.NONE),
                           e["kind"])),
            # (the payload without a REG event's value, which the FIFO path adds after
            # its register)
            ev_pl_base.eq(Mux(kill, Cat(e["kill_st"], Mux(e["act"], p.ring_rep[3], 0)),
                              e["payload"])),
            ev_payload.eq(ev_pl_base | Mux(rf_we, e_reg_new, 0))]
        # the ring's next entry: the base result, or a late override; the reported pc
        # (n_rep) is the next op. Two LUT levels each: ``fblk`` (or ``lx``'s mux), then
        # a 4-input select. A FENCE (issued or resuming) has ``g_pc = pc + 1``, so a
        # FENCE that blocks reports ``g_pc`` (its successor) with no term for ``fblk``.
        alt_pc_e = Mux(e["alt_zero"], 0, e["alt_pc"])
        assert CtxState.FAULTED == CtxState.VSYNC | 4
        k_st_e = e["k_st"] | Cat(Const(0, 2), e["ill"] & ~keep)
        m.d.comb += [n_st.eq(Mux(kill, k_st_e, Mux(fblk, CtxState.FENCE, e["g_st"]))),
                     n_pc.eq(Mux(kill | fblk, alt_pc_e, Mux(lx, e["pc_inc"], e["g_pc"]))),
                     n_rep.eq(Mux(kill, alt_pc_e, Mux(lx, e["pc_inc"], e["g_pc"])))]
        if prog.outreg:
            # ``_active(n_st) ? n_pc : 0`` without the state test: after ``kill`` only a
            # cancelled vsync resume runs on (neither ``keep`` nor an illegal word); a
            # FENCE that blocks and a LOOP that falls through run on
            m.d.comb += n_fetch.eq(Mux(kill, Mux(~keep & ~e["ill"], alt_pc_e, 0),
                                       Mux(fblk, alt_pc_e, Mux(lx, e["pc_inc"], e["g_fetch"]))))
        # counters: only a running context reads them (a start ignores them), so E writes
        # the outcome's values whatever it decided; a FENCE that has to wait resets idle
        # (``lx`` is a LOOP that issued, whose outcome is the branch's delay: only the bits
        # in which the exit's constant differs from the branch's need a select, at 12 MHz
        # the low ones; at 1 MHz, where ``hi`` counts cycles, a few more)
        k_exit, k_branch = delay_const(chz, isa.CYCLES_LOOP_EXIT - 1), p.k_branch

        def on_exit(i, value):
            kx, kb = k_exit[i].value, k_branch[i].value
            return Cat(Mux(lx, kx >> b & 1, value[b]) if (kx ^ kb) >> b & 1 else value[b]
                       for b in range(len(value)))
        m.d.comb += [ctx_wp.en.eq(valid_ctx), ctx_wp.data.hi.eq(on_exit(0, e["o_hi"])),
                     ctx_wp.data.lo.eq(on_exit(1, e["o_lo"])),
                     ctx_wp.data.idle.eq(e["o_wd"]), ctx_wp.data.iz.eq(fblk),
                     ctx_wp.data.dz.eq(Mux(lx, _kzero(k_exit), e["o_dz"])),
                     ctx_wp.data.wh.eq(Mux(fblk, 0, e["o_wh"])),
                     ctx_wp.data.armed.eq(Mux(lx, loop_armed_exit(e["o_lv"], e["onehot"]),
                                              e["o_lv"]))]
        vars(p).update(valid_ctx=valid_ctx, rf_we=rf_we, ev_kind=ev_kind, ev_payload=ev_payload,
                       ev_pl_base=ev_pl_base, ev_started=ev_started)

    def _event_path(self, m, p):
        """The event path: E's record (``tap``), registered into the event FIFO, whose output
        is the ``events`` port."""
        sb = self.slot_bits
        e_reg_new, ev_kind, ev_payload = p.e_reg_new, p.ev_kind, p.ev_payload
        ev_pl_base, ev_started, evq, g, g_e = p.ev_pl_base, p.ev_started, p.evq, p.g, p.g_e
        ph_e, rf_we, second, valid_ctx = p.ph_e, p.rf_we, p.second, p.valid_ctx
        # ``tap`` is the record of this clock (simulation engines observe it); the FIFO
        # gets it one clock later from a register, so nothing of E reaches the FIFO's
        # control logic in the same clock.
        tap = self.tap
        m.d.comb += [
            tap.valid.eq(valid_ctx & ((ev_kind != EventKind.NONE) | ev_started)),
            tap.payload.kind.eq(ev_kind), tap.payload.started.eq(ev_started),
            tap.payload.slot.eq(ph_e[:sb]), tap.payload.payload.eq(ev_payload),
            tap.payload.timestamp.eq(Mux(second, g, g_e)),
        ]
        rec_valid = Signal()
        rec = Signal(self.event_layout)
        # a REG event's value (after the register file read and the adder) is registered
        # apart and joins the payload after the register (one LUT before the FIFO's RAM)
        rec_isreg = Signal()
        # (no reset: read only with ``rec_isreg``; so it is the same flip-flops as the
        # write data the read-back copy's old-data read registers, and Yosys merges them)
        rec_val = Signal(REG_WORD_BITS, reset_less=True)
        # state records (a start, or a STATE event) may take the FIFO's reserved places
        rec_urgent = Signal()
        m.d.sync += [rec_valid.eq(tap.valid),
                     rec_urgent.eq(ev_started | (ev_kind == EventKind.STATE)),
                     rec.kind.eq(tap.payload.kind), rec.started.eq(tap.payload.started),
                     rec.slot.eq(tap.payload.slot),
                     rec.payload.eq(ev_pl_base),
                     rec_isreg.eq(rf_we), rec_val.eq(e_reg_new)]
        m.d.comb += rec.timestamp.eq(g_e)       # (no register: g_e is already the right one)
        sink = Signal(self.event_layout)
        m.d.comb += [sink.eq(rec), sink.payload[:REG_WORD_BITS].eq(
            Mux(rec_isreg, rec_val, rec.payload[:REG_WORD_BITS]))]
        m.d.comb += [evq.sink.valid.eq(rec_valid), evq.sink.payload.eq(sink),
                     evq.urgent.eq(rec_urgent)]
        wiring.connect(m, evq.source, wiring.flipped(self.events))
        m.d.comb += self.dropped.eq(evq.dropped)

    def _status_port(self, m, p):
        """The host's read-back: register values, and the status port's per-slot state and
        reported pc."""
        P = self.phases
        n_rep, n_st, ph_f, rf = p.n_rep, p.n_st, p.ph_f, p.rf
        m.d.comb += [rf.host_addr.eq(self.reg_addr), self.reg_data.eq(rf.host_data)]
        if self.display_port:
            m.d.comb += [rf.display_addr.eq(self.display_addr),
                         self.display_data.eq(rf.display_data)]
        # the status port reads the ring: every context's entry is in it at all times
        # (``ring[i]`` holds context ``ph_f - i`` mod P, the result of its last E), so the
        # port is the entry ``ph_f - status_slot`` (per-slot copies of the entries, a mux
        # of registers indexed by ``status_slot`` alone, cost 13 flip-flops per context,
        # each an LC of its own). For the context in E this is its state before E;
        # engines read ``sim_next`` for it.
        m.d.comb += [self.sim_next_state.eq(n_st), self.sim_next_pc.eq(n_rep)]
        idx = Signal(range(P))
        if P & (P - 1) == 0:
            m.d.comb += idx.eq((ph_f - self.status_slot)[:(P - 1).bit_length()])
        else:
            m.d.comb += idx.eq(Mux(ph_f >= self.status_slot, ph_f - self.status_slot,
                                   ph_f + P - self.status_slot))
        m.d.comb += [self.status_state.eq(Array(p.ring_st)[idx]),
                     self.status_pc.eq(Array(p.ring_rep)[idx])]

    def _warp(self, m, p):
        """Decide warped core cycles (simulation only; docs/core.md, "Warp").

        A cycle ``c`` may be warped by ``n`` microseconds (``n`` one of
        ``warp_levels_us``) when, seen in phase P-2 of cycle ``c - 1`` (from E's results
        of cycle ``c - 2`` at the oldest, and ``c - 1`` may be warped too): every context
        either counts down a delay of at least ``2 * n + 3`` microseconds, or waits (vsync,
        fence) or does not run; the next vsync edge is more than ``2 * n * cycles_per_us
        + 6`` cycles away and internal; the host inputs were idle for three core cycles;
        and ``c - 1`` was warped by ``n`` or less (a warp that shrinks passes through one
        plain cycle). Then nothing but counting happens from ``c`` to ``c + n`` us: the
        counting contexts' R subtracts ``n`` more (``warp_r``), and the cycle counter and
        the vsync generator add ``n * cycles_per_us`` at the end of ``c`` (``warp_c``).
        The largest such ``n`` is taken.
        """
        ph, last, ph_e, warp_r, warp_c = p.ph, p.last, p.ph_e, p.warp_r, p.warp_c
        vs, valid_ctx, n_st, n_hi = p.vs, p.valid_ctx, p.n_st, p.ctx_wp.data.hi
        C, P = self.contexts, self.phases
        levels = self.warp_levels_us
        K = len(levels)
        # per context, from E's result, one bit per warp size: nothing happens in the next
        # two cycles warped by that much (hi is microseconds + 1)
        safe = Signal(C * K, init=(1 << (C * K)) - 1)
        idle = n_st != CtxState.RUNNING
        safe_now = Cat(idle | (n_hi >= 2 * n + 4) for n in levels)
        with m.If(valid_ctx):
            m.d.sync += safe.word_select(ph_e[:self.slot_bits], K).eq(safe_now)
        quiet = Signal(range(3 * P + 1))
        host_in = self.cmd.valid | self.fence_wr.valid | self.prog_wr.valid
        m.d.sync += quiet.eq(Mux(host_in, 0, Mux(quiet == 3 * P, quiet, quiet + 1)))
        allowed = vs.far
        for c in range(C):
            allowed = allowed & safe.word_select(c, K)
        # the largest allowed size (the bits are monotone: a size is safe if a larger one is)
        size = Const(0, range(self.warp_us + 1))
        for k, n in enumerate(levels):
            size = Mux(allowed[k], n, size)
        # decided in phase P-2, when E has written every context's bits for the cycle
        # before (context 0's for this one): R of the warped cycle starts in phase P-1
        with m.If(ph == P - 2):
            m.d.sync += warp_r.eq(Mux(self.warp & (quiet == 3 * P) & (size >= warp_c), size, 0))
        with m.If(last):
            m.d.sync += warp_c.eq(warp_r)
