"""Event FIFO: order preserved, full means drop-and-count, the writer never waits."""

from amaranth.sim import Simulator

from copperline.hdl.event_fifo import EventFIFO, event_layout


def test_fifo_drops_and_counts_when_full():
    dut = EventFIFO(event_layout(2), depth=4)
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

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
