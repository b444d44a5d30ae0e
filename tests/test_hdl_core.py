"""The core through its real ports (prog_wr, cmd, fence_wr, events, reg read-back,
status): cycle numbers of every op class, then watchdog and multi-context slot order."""

import pytest

from copperline.firmware.board_interface import CtxState, EventKind, Reason
from copperline.firmware import isa
from copperline.hdl.core import Core
from tests.support import event_record, run_core, simulate, write_programs

E = isa.encode
X0 = isa.register_index(0, "x")


@pytest.mark.parametrize("memory", ["bram", "spram"])
def test_timing_of_every_op_class(memory):
    """Same cycles with the dual-port (bram) and the single-port (SPRAM model) program
    memory: the latter's writes wait for their slot's fetch turn and never disturb timing."""
    core = Core(1_000_000, 20_000.0, watchdog_ops=1000, program_words=16,   # vsync every 50
                program_memory=memory)
    prog = [
        E("MOVE", reg=X0, value=5),            # 0  cycle 0
        E("ADD", reg=X0, delta=3),             # 1  cycle 1
        E("IRQ", tag=1),                       # 2  cycle 2
        E("JUMP", target=4),                   # 3  cycle 3, +CYCLES_BRANCH
        E("WAIT", us=3),                       # 4  cycle 5, +3 us
        E("IRQ", tag=2),                       # 5  cycle 8
        E("FENCE", timeline=0, value=1),       # 6  cycle 9, blocked; fence seen at 20
        E("IRQ", tag=3),                       # 7  cycle 20 + FENCE_RESUME_LATENCY
        E("WAIT", vsync=1),                    # 8  next edge 50
        E("HALT"),                             # 9  cycle 50 + VSYNC_LATENCY
    ]
    recs, regs = run_core(core, {0: prog}, cycles=60, fences=[(20, 0, 0, 1)])
    t_fence = 20 + isa.FENCE_RESUME_LATENCY
    t_halt = 50 + isa.VSYNC_LATENCY
    assert [(r[0], r[3]) for r in recs] == [
        (0, EventKind.REG), (1, EventKind.REG), (2, EventKind.IRQ),
        (3 + isa.CYCLES_BRANCH + 3, EventKind.IRQ), (t_fence, EventKind.IRQ),
        (t_halt, EventKind.STATE)]
    assert recs[0][2] == 1 and all(r[2] == 0 for r in recs[1:]), "started flag on the first record"
    assert recs[0][4] == (X0 << 16 | 5) and recs[1][4] == (X0 << 16 | 8)
    state = recs[-1][4]
    assert (state & 7, state >> 3 & 7, state >> 6) == (CtxState.DONE, Reason.HALT, 9)
    assert regs[X0] == 8
    assert regs[("status", 0)] == (CtxState.DONE, 9)
    assert regs["dropped"] == 0


def test_loops_counter_wrap_and_watchdog():
    core = Core(1_000_000, 1000.0, watchdog_ops=10, program_words=16)
    prog = [
        E("ADD", reg=X0, delta=-32768),            # 0: body
        E("LOOP", slot=0, target=0, count=3),      # 1: body runs 3 times
        E("IRQ", tag=0),                           # 2
        E("JUMP", target=2),                       # 3: forever without idling -> watchdog
    ]
    recs, regs = run_core(core, {0: prog}, cycles=40)
    adds = [r for r in recs if r[3] == EventKind.REG]
    assert [r[0] for r in adds] == [0, 3, 6]       # LOOP taken costs CYCLES_BRANCH
    assert [r[4] & 0xFFFF for r in adds] == [0x8000, 0, 0x8000]   # 16-bit wrap
    fault = recs[-1]
    assert fault[3] == EventKind.STATE and fault[4] & 7 == CtxState.FAULTED
    assert fault[4] >> 3 & 7 == Reason.WATCHDOG
    # ops before the fault: 3 ADD + 3 LOOP, then IRQ/JUMP pairs until 10 ops issued
    irqs = [r[0] for r in recs if r[3] == EventKind.IRQ]
    assert irqs == [8, 11]
    assert fault[0] == 14


def test_slots_in_order_and_adds_in_one_cycle_both_count():
    core = Core(1_000_000, 1000.0, watchdog_ops=1000, contexts=4, program_words=8)
    progs = {s: [E("ADD", reg=X0, delta=s + 1), E("HALT")] for s in range(4)}
    recs, regs = run_core(core, progs, cycles=4)
    adds = [r for r in recs if r[3] == EventKind.REG]
    assert [(r[0], r[1], r[4] & 0xFFFF) for r in adds] == [(0, 0, 1), (0, 1, 3), (0, 2, 6), (0, 3, 10)]
    assert regs[X0] == 10


def test_spram_write_waits_for_its_slot_and_holds_a_start():
    """A program write to the SPRAM takes the fetch turn of its own slot; a write that took
    the fetch of slot 0 or 1 (fetched a cycle ahead) holds the next command one cycle."""
    core = Core(1_000_000, 1000.0, contexts=4, program_words=8, program_memory="spram")
    seen = {}

    async def bench(ctx):
        for _ in range(2 * core.phases):
            await ctx.tick()
        ctx.set(core.prog_wr.valid, 1)
        ctx.set(core.prog_wr.payload.addr, 0 * core.program_words + 3)
        ctx.set(core.prog_wr.payload.data, E("NOP"))
        await ctx.tick()
        ctx.set(core.prog_wr.valid, 0)
        waited = 0
        while not ctx.get(core.prog_wr.ready):
            waited += 1
            await ctx.tick()
        seen["waited"] = waited
        held = 0
        for _ in range(3 * core.phases):
            if ctx.get(core.phase) == 0 and not ctx.get(core.cmd.ready):
                held += 1
            await ctx.tick()
        seen["held"] = held

    simulate(core, bench)
    assert 1 <= seen["waited"] <= core.phases
    assert seen["held"] == 1


def test_illegal_word_faults_where_it_issues():
    """A word with reserved bits set faults (reason illegal) in the cycle it would issue,
    with the pc of that word; nothing after it runs."""
    core = Core(1_000_000, 1000.0, watchdog_ops=1000, program_words=8)
    bad = E("IRQ", tag=1) | 1 << 20                 # IRQ with a reserved bit
    prog = [E("MOVE", reg=X0, value=7), E("NOP"), bad, E("IRQ", tag=2), E("HALT")]
    recs, regs = run_core(core, {0: prog}, cycles=10)
    assert [(r[0], r[3]) for r in recs] == [(0, EventKind.REG), (2, EventKind.STATE)]
    st = recs[-1][4]
    assert (st & 7, st >> 3 & 7, st >> 6) == (CtxState.FAULTED, Reason.ILLEGAL, 2)
    assert regs[("status", 0)] == (CtxState.FAULTED, 2)


def test_spram_writes_at_link_rate_ignoring_ready():
    """A client that writes one word every phases + 1 clocks and ignores ``ready`` (like the
    link) loses no word: the program then runs as written."""
    core = Core(1_000_000, 1000.0, watchdog_ops=1000, contexts=4, program_words=16,
                program_memory="spram")
    words = {s: [E("ADD", reg=X0, delta=s + 1)] * 3 + [E("IRQ", tag=s), E("HALT")] for s in range(4)}
    seen = []

    async def bench(ctx):
        ctx.set(core.events.ready, 1)
        for _ in range(2 * core.phases):
            await ctx.tick()
        for slot, ws in words.items():
            for i, w in enumerate(ws):
                ctx.set(core.prog_wr.valid, 1)
                ctx.set(core.prog_wr.payload.addr, slot * core.program_words + i)
                ctx.set(core.prog_wr.payload.data, w)
                await ctx.tick()
                ctx.set(core.prog_wr.valid, 0)
                for _ in range(core.phases):
                    await ctx.tick()
        ctx.set(core.cmd.valid, 1)
        ctx.set(core.cmd.payload.start, 0b1111)
        while not ctx.get(core.cmd.ready):
            await ctx.tick()
        await ctx.tick()
        ctx.set(core.cmd.valid, 0)
        for _ in range(12 * core.phases):
            if ctx.get(core.events.valid):
                seen.append((ctx.get(core.events.payload.slot), EventKind(ctx.get(core.events.payload.kind))))
            await ctx.tick()

    simulate(core, bench)
    for s in range(4):
        assert [k for slot, k in seen if slot == s] == [EventKind.REG] * 3 + [EventKind.IRQ, EventKind.STATE]


@pytest.mark.parametrize("options", [{"fifo_outreg": True},
                                     {"lut_ram": True, "prog_outreg": True, "fifo_outreg": True}],
                         ids=["fifo_outreg", "ecp5"])
def test_events_port_clock_for_clock_with_the_ecp5_options(options):
    # the ECP5 build's options (the event FIFO read through the RAM's output register,
    # the program memory too) leave the ``events`` stream and ``dropped`` as they were,
    # clock for clock, under a reader that stalls at random and a FIFO that overflows
    import random

    def trace(core):
        out = []

        async def bench(ctx):
            rng = random.Random(5)
            progs = {s: [E("MOVE", reg=X0, value=s), E("ADD", reg=X0, delta=1),
                         E("IRQ", tag=s), E("JUMP", target=1 + s % 2)] for s in range(4)}
            await write_programs(ctx, core, progs)
            ctx.set(core.cmd.valid, 1)
            ctx.set(core.cmd.payload.start, 0b1111)
            while not ctx.get(core.cmd.ready):
                await ctx.tick()
            for i in range(1500):
                ctx.set(core.events.ready, rng.random() < [0.9, 0.2, 1.0][i // 200 % 3])
                out.append((ctx.get(core.events.valid), ctx.get(core.dropped),
                            event_record(ctx, core) if ctx.get(core.events.valid) else None))
                await ctx.tick()
                ctx.set(core.cmd.valid, 0)

        simulate(core, bench)
        return out

    kw = dict(watchdog_ops=1000, contexts=4, program_words=8, fifo_depth=12)
    plain = trace(Core(1_000_000, 1000.0, **kw))
    assert plain[-1][1] > 0 and sum(v for v, _, _ in plain) > 300   # drops and records
    assert trace(Core(1_000_000, 1000.0, **kw, **options)) == plain


@pytest.mark.parametrize("options", [{}, {"lut_ram": True, "prog_outreg": True}],
                         ids=["ice40", "ecp5"])
def test_bind_layer_writes_the_layers_surface_register(options):
    """BIND_LAYER is a write of its layer's surface register (what the compositor reads):
    a BIND record with a REG record's payload, and the register holds the number; a later
    bind of another layer leaves it alone."""
    core = Core(1_000_000, 1000.0, watchdog_ops=100, program_words=16, **options)
    s3, s4 = isa.register_index(3, "surface"), isa.register_index(4, "surface")
    prog = [E("MOVE", reg=X0, value=0xFFFE), E("BIND_LAYER", layer=3, surface=7),
            E("BIND_LAYER", layer=4, surface=255), E("HALT")]
    recs, regs = run_core(core, {0: prog}, cycles=10, read_regs=(s3, s4))
    binds = [r for r in recs if r[3] == EventKind.BIND]
    assert [(r[0], r[4]) for r in binds] == [(1, s3 << 16 | 7), (2, s4 << 16 | 255)]
    assert (regs[s3], regs[s4], regs[X0]) == (7, 255, 0xFFFE)


def test_reset_all_clears_the_registers_and_holds_commands_meanwhile():
    """The host's reset-all (every slot and the time base) zeroes the register file, the
    layers' surface registers too: the next program starts from the reset values, as on a
    fresh VM. Commands wait until the clear is done."""
    from tests.support import simulate
    core = Core(1_000_000, 1000.0, watchdog_ops=100, program_words=16)
    s3 = isa.register_index(3, "surface")
    prog = [E("MOVE", reg=X0, value=77), E("BIND_LAYER", layer=3, surface=9), E("HALT")]
    seen = {}

    async def bench(ctx):
        ctx.set(core.events.ready, 1)
        await write_programs(ctx, core, {0: prog})

        async def command(**payload):
            ctx.set(core.cmd.valid, 1)
            for k in ("start", "stop", "reset", "timebase"):
                ctx.set(getattr(core.cmd.payload, k), payload.get(k, 0))
            waited = 0
            while not ctx.get(core.cmd.ready):
                await ctx.tick()
                waited += 1
            await ctx.tick()
            ctx.set(core.cmd.valid, 0)
            return waited

        async def reg(index):
            ctx.set(core.reg_addr, index)
            await ctx.tick()
            return ctx.get(core.reg_data)
        await command(start=1, timebase=1)
        for _ in range(20 * core.phases):
            await ctx.tick()
        seen["before"] = (await reg(X0), await reg(s3))
        await command(reset=(1 << core.contexts) - 1, timebase=1)
        seen["held"] = await command(start=1, timebase=1)       # right after: waits
        for _ in range(20 * core.phases):
            await ctx.tick()
        seen["again"] = (await reg(X0), await reg(s3))
        await command(reset=(1 << core.contexts) - 1, timebase=1)
        for _ in range(3):                     # (the clear begins two clocks after)
            await ctx.tick()
        while ctx.get(core.regfile.clearing):
            await ctx.tick()
        seen["after"] = (await reg(X0), await reg(s3))

    simulate(core, bench)
    assert seen["before"] == (77, 9)
    assert seen["held"] >= core.regfile.depth - core.phases      # the clear's clocks
    assert seen["after"] == (0, 0) and seen["again"] == (77, 9)
