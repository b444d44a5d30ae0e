"""Vsync: the internal generator (period from ``isa.vsync_period_cycles``) and the
external input, both reduced to one ``edge`` flag per core cycle."""


from amaranth import Cat, Module, Signal, Mux
from amaranth.lib import wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out


__all__ = ["Vsync"]


class Vsync(wiring.Component):
    """Vsync edge source.

    Edges of the internal generator fall on core cycles ``k * period`` (``k >= 1``)
    counted from the last time-base reset, as ``isa.EXECUTION_RULES`` rule 1 says.
    With ``external`` set, a rising edge of ``vsync_in`` (synchronised, sampled once per
    core cycle) makes the *next* core cycle an edge instead.

    Parameters
    ----------
    period : int
        Core cycles between internal edges (``isa.vsync_period_cycles``).
    warp_levels : tuple of int
        Simulation only (the core's warp sizes in cycles, ascending; empty = off): adds
        ``skip`` (with ``advance``: this core cycle counts as ``skip + 1``) and ``far``
        (bit ``k``: this cycle is no edge, and the internal generator's next edge is more
        than ``2 * warp_levels[k] + 6`` cycles away, so this cycle and the next may both
        be skipped by up to ``warp_levels[k]``).

    Attributes
    ----------
    advance : In(1)
        Strobe in the last clock of every core cycle.
    reset : In(1)
        Time-base reset: the current core cycle becomes cycle 0 (never an edge).
    external : In(1)
        Use ``vsync_in`` instead of the internal generator.
    vsync_in : In(1)
        External vsync (asynchronous; a 2-flop synchroniser is inside).
    edge : Out(1)
        1 during every clock of a core cycle that is a vsync edge.
    edge_reg : Out(1)
        ``edge`` without the same-clock ``reset`` term (a register): differs from
        ``edge`` only in a clock with ``reset``.
    """

    def __init__(self, period: int, warp_levels: tuple[int, ...] = ()):
        if period < 2:
            raise ValueError(f"vsync period must be >= 2 cycles (got {period})")
        self.period = period
        self.warp_levels = tuple(warp_levels)
        warp = ({"skip": In(range(max(warp_levels) + 1)), "far": Out(len(warp_levels))}
                if warp_levels else {})
        super().__init__(warp | {"advance": In(1), "reset": In(1), "external": In(1),
                                 "vsync_in": In(1), "edge": Out(1), "edge_reg": Out(1)})

    def elaborate(self, platform):
        m = Module()
        # Cycles since the last internal edge (0 in cycle 0): ``period - done`` is the
        # number of cycles left until the next one (the generator counted those down
        # before; counting up, every reload is a load of 0, the flip-flops' own
        # synchronous reset, and each bit is one LUT beside its carry)
        w = len(Signal(range(self.period + 1)))
        done = Signal(w)
        left = (self.period - done)[:w]            # (the warp's test only)
        edge_r = Signal()
        sync_in = Signal()
        prev_in = Signal()
        m.submodules.sync = FFSynchronizer(self.vsync_in, sync_in)
        m.d.comb += [self.edge.eq(edge_r & ~self.reset), self.edge_reg.eq(edge_r)]
        # ``one``: one cycle left, kept as a register (the wide test only feeds it, one
        # step ahead: two left before a count)
        one = Signal()
        # ``done`` has no enable (an addition of ``advance``): the reset would otherwise
        # join the enable of all its flip-flops
        step = self.advance
        if self.warp_levels:
            step = step + self.skip
            calm = ~self.external & ~edge_r
            m.d.comb += self.far.eq(Cat(calm & (left > 2 * n + 6) for n in self.warp_levels))
        # a reload at the end of a period, or the time-base reset (the reset cycle is
        # cycle 0; if it also ends in this clock, cycle 1 follows)
        load = Signal()
        m.d.comb += load.eq(self.reset | (self.advance & one))
        m.d.sync += done.eq(Mux(load, self.reset & self.advance, done + step))
        with m.If(self.reset):
            m.d.sync += [edge_r.eq(0), one.eq(Mux(self.advance, self.period == 2, 0))]
        with m.Elif(self.advance):
            m.d.sync += prev_in.eq(sync_in)
            m.d.sync += [edge_r.eq(Mux(self.external, sync_in & ~prev_in, one)),
                         one.eq(~one & (done == self.period - 2))]
        return m
