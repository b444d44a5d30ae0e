"""Vsync generator: edges at k * period (k >= 1) from the time-base reset; external input."""

from copperline.hdl.vsync import Vsync
from tests.support import simulate


def _edges(period, cycles, external=None):
    dut = Vsync(period)
    edges = []

    async def bench(ctx):
        ctx.set(dut.reset, 1)               # cycle 0 (one clock per core cycle here)
        if external is not None:
            ctx.set(dut.external, 1)
        for c in range(cycles):
            if c == 1:
                ctx.set(dut.reset, 0)
            ctx.set(dut.advance, 1)
            if external is not None:
                ctx.set(dut.vsync_in, int(c in external))
            if ctx.get(dut.edge):
                edges.append(c)
            await ctx.tick()

    simulate(dut, bench)
    return edges


def test_internal_edges():
    assert _edges(5, 23) == [5, 10, 15, 20]


def test_external_edges_have_constant_latency():
    # rising edges of vsync_in at 4 and 11 (held 2 cycles); 2-FF synchroniser + edge reg
    edges = _edges(1000, 20, external={4, 5, 11, 12})
    assert len(edges) == 2 and edges[1] - edges[0] == 7
    assert edges[0] - 4 == 3
