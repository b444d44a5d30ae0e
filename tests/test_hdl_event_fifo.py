"""Event FIFO: order preserved, full means drop-and-count, the writer never waits."""

import pytest

from copperline.hdl.event_fifo import EventFIFO, event_layout
from tests.support import simulate


@pytest.mark.parametrize("outreg", [False, True], ids=["plain", "outreg"])
def test_fifo_drops_and_counts_when_full(outreg):
    dut = EventFIFO(event_layout(2), depth=4, outreg=outreg)
    got = []

    async def bench(ctx):
        ctx.set(dut.source.ready, 0)
        for i in range(10):                       # 10 records into a 4-deep FIFO
            ctx.set(dut.sink.valid, 1)
            ctx.set(dut.sink.payload.timestamp, i)
            ctx.set(dut.sink.payload.kind, 2)
            await ctx.tick()
        ctx.set(dut.sink.valid, 0)
        await ctx.tick()
        assert ctx.get(dut.dropped) == 6
        ctx.set(dut.source.ready, 1)
        for _ in range(10):
            if ctx.get(dut.source.valid):
                got.append(ctx.get(dut.source.payload.timestamp))
            await ctx.tick()
        assert got == [0, 1, 2, 3]

    simulate(dut, bench)


@pytest.mark.parametrize("outreg", [False, True], ids=["plain", "outreg"])
def test_fifo_matches_the_library_fifo_clock_for_clock(outreg):
    # the same capacity and output timing as amaranth.lib.fifo.SyncFIFOBuffered (the
    # FIFO the core used before), under random writes and reads; with ``outreg`` (the
    # RAM read through its output register) too
    import random
    from amaranth import Module
    from amaranth.lib.fifo import SyncFIFOBuffered
    for depth in ((3, 4, 5, 9, 16) if outreg else (2, 4, 5, 9)):
        m = Module()
        m.submodules.dut = dut = EventFIFO(event_layout(2), depth=depth, outreg=outreg)
        m.submodules.ref = ref = SyncFIFOBuffered(width=dut.layout.size, depth=depth)
        m.d.comb += [ref.w_data.eq(dut.sink.payload.as_value()), ref.w_en.eq(dut.sink.valid),
                     ref.r_en.eq(dut.source.ready)]
        rng = random.Random(depth)

        async def bench(ctx):
            for i in range(6000):
                # (phases of mostly writing, mostly reading, and both at full rate)
                p_w, p_r = [(0.8, 0.3), (0.3, 0.8), (1.0, 1.0), (0.9, 0.95),
                            (1.0, 0.0), (0.0, 1.0)][(i // (50 + 7 * depth)) % 6]
                ctx.set(dut.sink.valid, rng.random() < p_w)
                ctx.set(dut.sink.payload.timestamp, i)
                ctx.set(dut.source.ready, rng.random() < p_r)
                assert ctx.get(dut.source.valid) == ctx.get(ref.r_rdy)
                if ctx.get(ref.r_rdy):
                    assert ctx.get(dut.source.payload.as_value()) == ctx.get(ref.r_data)
                assert ctx.get(ref.w_rdy) == 1 - ctx.get(dut.full)
                await ctx.tick()

        simulate(m, bench)


@pytest.mark.parametrize("outreg", [False, True], ids=["plain", "outreg"])
def test_reserved_places_take_only_urgent_records(outreg):
    # a flood of ordinary records stops at depth - reserve; state records (urgent) still
    # get in, and come out after the flood, in order; every refused record is counted
    depth, reserve = 8, 3
    dut = EventFIFO(event_layout(2), depth=depth, reserve=reserve, outreg=outreg)
    got = []

    async def bench(ctx):
        ctx.set(dut.source.ready, 0)
        for i in range(12):                       # 12 ordinary records (irq)
            ctx.set(dut.sink.valid, 1)
            ctx.set(dut.urgent, 0)
            ctx.set(dut.sink.payload.timestamp, i)
            ctx.set(dut.sink.payload.kind, 2)
            await ctx.tick()
        for i in range(100, 104):                 # 4 urgent records (state)
            ctx.set(dut.urgent, 1)
            ctx.set(dut.sink.payload.timestamp, i)
            ctx.set(dut.sink.payload.kind, 4)
            await ctx.tick()
        ctx.set(dut.sink.valid, 0)
        await ctx.tick()
        assert ctx.get(dut.dropped) == (12 - (depth - reserve)) + (4 - reserve)
        ctx.set(dut.source.ready, 1)
        for _ in range(20):
            if ctx.get(dut.source.valid):
                got.append(ctx.get(dut.source.payload.timestamp))
            await ctx.tick()
        assert got == list(range(depth - reserve)) + [100, 101, 102]

    simulate(dut, bench)


def test_outreg_fifo_with_a_reserve_matches_the_plain_one_clock_for_clock():
    # the two FIFOs the boards build (plain on the iCE40, outreg on the ECP5) drop the
    # same records under random writes, urgent flags and reads
    import random
    from amaranth import Module
    for depth, reserve in ((5, 2), (9, 4), (16, 8), (16, 1)):
        m = Module()
        m.submodules.a = a = EventFIFO(event_layout(2), depth=depth, reserve=reserve)
        m.submodules.b = b = EventFIFO(event_layout(2), depth=depth, reserve=reserve,
                                       outreg=True)
        for x in (b,):
            m.d.comb += [x.sink.valid.eq(a.sink.valid), x.sink.payload.eq(a.sink.payload),
                         x.urgent.eq(a.urgent), x.source.ready.eq(a.source.ready)]
        rng = random.Random(depth * 100 + reserve)

        async def bench(ctx):
            for i in range(6000):
                p_w, p_r = [(0.8, 0.3), (0.3, 0.8), (1.0, 1.0), (0.9, 0.95),
                            (1.0, 0.0), (0.0, 1.0)][(i // (50 + 7 * depth)) % 6]
                ctx.set(a.sink.valid, rng.random() < p_w)
                ctx.set(a.urgent, rng.random() < 0.2)
                ctx.set(a.sink.payload.timestamp, i)
                ctx.set(a.source.ready, rng.random() < p_r)
                assert ctx.get(a.source.valid) == ctx.get(b.source.valid), i
                if ctx.get(a.source.valid):
                    assert ctx.get(a.source.payload.as_value()) == \
                        ctx.get(b.source.payload.as_value()), i
                assert ctx.get(a.dropped) == ctx.get(b.dropped), i
                await ctx.tick()

        simulate(m, bench)
