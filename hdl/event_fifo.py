"""The event record's layout and the event FIFO (drops and counts when full; never stalls).

The record's fields and codes are defined in :mod:`copperline.firmware.board_interface`.
"""

from __future__ import annotations

from amaranth import Module, Signal, Cat, Const, Mux, Instance, unsigned
from amaranth.lib import wiring, data, stream, memory
from amaranth.lib.wiring import In, Out

from copperline.firmware.board_interface import record_fields
from copperline.hdl.progmem import DP16KD_FIXED_PARAMS, dp16kd_tied_ports

__all__ = ["event_layout", "EventFIFO"]


def event_layout(slot_bits: int) -> data.StructLayout:
    """Layout of one event record.

    ``started`` set means: the program in ``slot`` started in cycle ``timestamp``
    (a ``state running`` event), and it comes *before* the event the other fields
    describe (if ``kind`` is not NONE).
    """
    return data.StructLayout({name: unsigned(width) for name, width in record_fields(slot_bits)})


class EventFIFO(wiring.Component):
    """Block-RAM FIFO between the executor and the host link.

    The executor offers at most one record per clock and never waits: a record that
    finds the FIFO full is dropped and ``dropped`` (wrapping 32-bit) counts it.

    The last ``reserve`` places are kept for *urgent* records (the core marks its state
    records urgent: a start, a stop, a halt, a watchdog or a fault): an ordinary record
    (irq, reg, bind) that finds ``depth - reserve`` records held is dropped and counted,
    so a flood of ordinary records can never crowd a state change out. The core reserves
    two places per context, which no host that waits for each command's state record
    can fill (docs/core.md, "Event records").

    It behaves as ``amaranth.lib.fifo.SyncFIFOBuffered(depth)`` clock for clock (a RAM
    of ``depth - 1`` records and an output register), but its flags ("full", "holds a
    record") are registers, so the writer's ``valid`` meets one LUT before the RAM's
    write enable and the counters' enables (the library FIFO compares its level there,
    in the same clock). The RAM has a power-of-two number of rows (the pointers wrap
    without a comparison) and holds at most ``depth - 1`` records: it only ever reads a
    row while it holds records, never the row being written (``Core`` lists it in
    ``COLLISION_FREE_MEMORIES`` as ``event_mem``).

    With ``outreg`` (the ECP5 build) the RAM is read through the block RAM's output
    register (data two clocks after the address: the ``DP16KD``'s clock-to-out without
    it is most of a 150 MHz clock), with the same behaviour towards writer and reader:
    see :meth:`_elaborate_outreg`.

    Parameters
    ----------
    layout : data.StructLayout
        The record layout (:func:`event_layout`).
    depth : int
        Records the FIFO holds (at least 2; at least 3 with ``outreg``).
    reserve : int
        Places only urgent records may take (``0 <= reserve < depth``).
    outreg : bool
        Read the RAM through its output register, with a prefetch stage.
    primitive : bool
        With ``outreg``: the RAM as ``DP16KD`` instances (ECP5, 512 x 36 each,
        ``REGMODE = "OUTREG"``) instead of an Amaranth model with the same latency.

    Attributes
    ----------
    sink : In(stream.Signature(layout, always_ready=True))
        Records from the executor (``ready`` is always 1: full means dropped).
    urgent : In(1)
        The record offered on ``sink`` may take the reserved places.
    source : Out(stream.Signature(layout))
        Records to the host.
    dropped : Out(32)
        Records dropped since reset, modulo 2**32 (a host that reads it within 2**32
        drops, over 20 minutes of a record refused every core cycle at 3 MHz, sees every
        one: 16 bits wrapped within a second of a flood).
    full : Signal
        A record offered now is dropped (a register).
    """

    #: Records the ``outreg`` FIFO's prefetch stage holds ahead of the output register:
    #: a record requested from the RAM reaches it three clocks later, so four keep a
    #: reader that takes one record per clock supplied (see :meth:`_elaborate_outreg`).
    PREFETCH = 4

    def __init__(self, layout: data.StructLayout, depth: int = 256, *, reserve: int = 0,
                 outreg: bool = False, primitive: bool = False):
        if depth < (3 if outreg else 2):
            raise ValueError(f"depth must be at least {3 if outreg else 2} (got {depth})")
        if not 0 <= reserve < depth:
            raise ValueError(f"reserve must be 0..{depth - 1} (got {reserve})")
        self.reserve = reserve
        if primitive and not outreg:
            raise ValueError("primitive needs outreg")
        self.layout = layout
        self.depth = depth
        self.outreg, self.primitive = outreg, primitive
        super().__init__({
            "sink": In(stream.Signature(layout, always_ready=True)),
            "urgent": In(1),
            "source": Out(stream.Signature(layout)),
            "dropped": Out(32),
        })
        self.full = Signal()

    def elaborate(self, platform):
        m = Module()
        if self.outreg:
            self._elaborate_outreg(m)
            return m
        inner = self.depth - 1                   # records in the RAM at most
        abits = max(1, (inner - 1).bit_length())
        m.submodules.event_mem = mem = memory.Memory(shape=self.layout.size, depth=1 << abits,
                                                     init=[])
        wp = mem.write_port()
        rp = mem.read_port()
        produce, consume = Signal(abits), Signal(abits)
        level = Signal(range(inner + 1))         # records in the RAM
        full, held = self.full, Signal()         # level == inner, level != 0
        # ordinary records fit: level < inner - reserve (a register, like ``full``)
        roomy = Signal(init=1)
        out_valid = Signal()                     # the output register holds a record

        do_write = Signal()
        do_read = Signal()
        accept = Mux(self.urgent, ~full, roomy) if self.reserve else ~full
        m.d.comb += [do_write.eq(self.sink.valid & accept),
                     do_read.eq(held & (~out_valid | self.source.ready))]
        m.d.comb += [wp.addr.eq(produce), wp.data.eq(self.sink.payload.as_value()),
                     wp.en.eq(do_write),
                     rp.addr.eq(consume), rp.en.eq(do_read)]
        with m.If(do_write):
            m.d.sync += produce.eq(produce + 1)
        with m.If(do_read):
            m.d.sync += consume.eq(consume + 1)
        # the level and its two flags, the flags from tests of the current level
        # (``roomy`` from itself and an equality: ``level + 1 < room`` is ``roomy`` and
        # ``level != room - 1``, ``level - 1 < room`` is ``roomy`` or ``level == room``;
        # a ``<`` with a constant is a carry chain whose cells take an LC each)
        room = inner - self.reserve
        # (one adder of +1 or -1: two adders and a select took twice the cells)
        with m.If(do_write ^ do_read):
            m.d.sync += level.eq(level + Mux(do_write, 1, (1 << len(level)) - 1))
        with m.If(do_write & ~do_read):
            m.d.sync += [full.eq(level == inner - 1), held.eq(1),
                         roomy.eq(roomy & (level != room - 1))]
        with m.If(do_read & ~do_write):
            m.d.sync += [full.eq(0), held.eq(level != 1),
                         roomy.eq(roomy | (level == room))]
        with m.If(do_read):
            m.d.sync += out_valid.eq(1)
        with m.Elif(self.source.ready):
            m.d.sync += out_valid.eq(0)
        m.d.comb += [self.source.valid.eq(out_valid),
                     self.source.payload.eq(rp.data)]
        with m.If(self.sink.valid & ~accept):
            m.d.sync += self.dropped.eq(self.dropped + 1)
        return m

    def _elaborate_outreg(self, m):
        """The FIFO with a two-clock RAM read, as the one-clock FIFO seen from outside.

        Seen from outside, the FIFO above (``depth >= 3``) holds up to ``depth`` records
        ("full" is a register: the count after the previous clock is ``depth``), and a
        record is in the output register from the second clock after the one that wrote
        it, if every older record has been taken by then (one record per clock). Here a
        record requested from the RAM reaches the output register only three clocks
        later, so the records next in line are prefetched into a small cache of
        ``PREFETCH`` registers ahead of it:

        * every record is written into the RAM; one that has no older record waiting in
          the RAM only (not yet requested) and finds room in the cache is also written
          into the cache in the same clock (so it can enter the output register in the
          next clock, as above);
        * any other record waits in the RAM only, and is requested as soon as the cache
          (with the requests under way) has room: the cache then holds, or is fetching,
          the next ``PREFETCH`` records after the output register, which a reader taking
          one per clock empties no sooner than a request refills it (three clocks);
        * the output register loads the cache entry of the next record once it is there.

        Cache entries are indexed by a record's sequence number modulo ``PREFETCH`` (as
        one-hot rings), so the RAM's answers and the writes that skip it never need
        reordering.
        ``tests/test_hdl_event_fifo.py`` compares this clock for clock with the library
        FIFO.
        """
        K = self.PREFETCH
        width = self.layout.size
        rows = 1 << max(2, (self.depth - 1).bit_length())       # >= depth
        abits = rows.bit_length() - 1
        produce = Signal(abits)          # RAM row of the next record written
        fetch = Signal(abits)            # RAM row of the next record to request
        pending = Signal(range(self.depth + 1))   # records in the RAM only (not requested)
        has_pending = Signal()           # pending != 0, a register
        count = Signal(range(self.depth + 1))     # records held
        full = self.full
        out_valid = Signal()
        out = Signal(width)
        cache = [Signal(width, name=f"cache{i}") for i in range(K)]
        # the entries as bit masks (one-hot rings: no decoders, no wide muxes of indices):
        # the next record to request or to write past the RAM (``fetch mod K``), the next
        # record for the output register, the entries holding their record, and the ones
        # whose record is one and two clocks into its RAM read
        f_oh = Signal(K, init=1)
        c_oh = Signal(K, init=1)
        cached = Signal(K)
        req1, req2 = Signal(K), Signal(K)

        do_write = Signal()
        free = Signal(K)                 # entries neither holding nor fetching a record
        room = Signal()                  # the entry ``f_oh`` is free (cache not full)
        bypass = Signal()                # the record written also enters the cache
        request = Signal()               # the RAM row ``fetch`` is read for the cache
        take = Signal()                  # the output register may load
        load = Signal()                  # ... and the next record is there
        pop = Signal()                   # the reader takes the output register
        # (the cache holds fewer than K records when it has room and none is pending,
        # so with depth - reserve > K the FIFO takes any record then: no term for
        # ``full`` in a bypass)
        roomy = Signal(init=1)           # count < depth - reserve (a register)
        accept = Mux(self.urgent, ~full, roomy) if self.reserve else ~full
        writer = (do_write if self.depth - self.reserve <= K else self.sink.valid) & ~has_pending
        m.d.comb += [
            do_write.eq(self.sink.valid & accept),
            free.eq(~(cached | req1 | req2)),
            room.eq((f_oh & free) != 0),
            bypass.eq(writer & room),
            request.eq(has_pending & room),
            take.eq(~out_valid | self.source.ready),
            load.eq(take & ((c_oh & cached) != 0)),
            pop.eq(out_valid & self.source.ready),
        ]

        # the RAM: written at ``produce`` always; read at ``fetch`` for a request, the
        # data two clocks later (address register, output register). A request never
        # reads the row being written (that record is not pending yet).
        rd_data = Signal(width)
        self._ram(m, rows, rd_addr=fetch, rd_data=rd_data, wr_addr=produce,
                  wr_data=self.sink.payload.as_value(), wr_en=do_write)
        m.d.sync += [req1.eq(Mux(request, f_oh, 0)), req2.eq(req1)]

        def rotate(v):
            return Cat(v[-1], v[:-1])
        with m.If(do_write):
            m.d.sync += produce.eq(produce + 1)
        # (``bypass`` and ``request`` exclude each other: no pending record, or some)
        with m.If(bypass | request):
            m.d.sync += [fetch.eq(fetch + 1), f_oh.eq(rotate(f_oh))]
        # the pending count and its "not zero" register
        up, down = do_write & ~bypass, request
        with m.If(up & ~down):
            m.d.sync += [pending.eq(pending + 1), has_pending.eq(1)]
        with m.If(down & ~up):
            m.d.sync += [pending.eq(pending - 1), has_pending.eq(pending != 1)]

        # the cache: the RAM's answer (its request's entry), or the record being written
        # into the free entry ``f_oh`` (whether it is a bypass or not: a free entry's data
        # is not used, so its enable needs no more than its own bits). Per entry, the
        # bits are written from the entry's own terms too: ``bypass & f_oh[i]`` is
        # ``writer & f_oh[i] & free[i]`` (``room`` is ``free`` at ``f_oh``).
        for i in range(K):
            with m.If(req2[i]):
                m.d.sync += cache[i].eq(rd_data)
            with m.Elif(f_oh[i] & free[i]):
                m.d.sync += cache[i].eq(self.sink.payload.as_value())
            m.d.sync += cached[i].eq((cached[i] & ~(take & c_oh[i])) | req2[i]
                                     | (writer & f_oh[i] & free[i]))

        head = Const(0, width)          # the next record's entry (an AND-OR)
        for i in range(K):
            head = head | Mux(c_oh[i], cache[i], 0)
        with m.If(load):
            m.d.sync += [out.eq(head), c_oh.eq(rotate(c_oh)), out_valid.eq(1)]
        with m.Elif(self.source.ready):
            m.d.sync += out_valid.eq(0)

        # the count and "full" (a register, as above)
        with m.If(do_write & ~pop):
            m.d.sync += [count.eq(count + 1), full.eq(count == self.depth - 1),
                         roomy.eq(count + 1 < self.depth - self.reserve)]
        with m.If(pop & ~do_write):
            m.d.sync += [count.eq(count - 1), full.eq(0),
                         roomy.eq(count - 1 < self.depth - self.reserve)]
        m.d.comb += [self.source.valid.eq(out_valid), self.source.payload.eq(out)]
        with m.If(self.sink.valid & ~accept):
            m.d.sync += self.dropped.eq(self.dropped + 1)

    def _ram(self, m, rows, *, rd_addr, rd_data, wr_addr, wr_data, wr_en):
        """``rows`` records; ``rd_data`` is the row at ``rd_addr`` of two clocks before."""
        width = self.layout.size
        if not self.primitive:
            m.submodules.event_mem = mem = memory.Memory(shape=width, depth=rows, init=[])
            wp, rp = mem.write_port(), mem.read_port()
            m.d.comb += [wp.addr.eq(wr_addr), wp.data.eq(wr_data), wp.en.eq(wr_en),
                         rp.addr.eq(rd_addr)]
            m.d.sync += rd_data.eq(rp.data)       # the model of the output register
            return
        # ECP5: DP16KD in its 512 x 36 mode (as Yosys maps a 36-bit memory: port A
        # writes, its address bits 0-3 the byte enables; port B reads; data bits 0-17 on
        # the A pins, 18-35 on the B pins), both outputs through the output register
        if rows > 512:
            raise ValueError("the DP16KD event FIFO holds at most 512 rows")
        abits = rows.bit_length() - 1
        for blk in range((width + 35) // 36):
            ports = {}
            for b in range(14):
                a = b - 5
                ports[f"i_ADA{b}"] = (wr_en if b < 4 else
                                      wr_addr[a] if 0 <= a < abits else Const(0, 1))
                ports[f"i_ADB{b}"] = rd_addr[a] if 0 <= a < abits else Const(0, 1)
            for b in range(36):
                i = 36 * blk + b
                pin = f"A{b}" if b < 18 else f"B{b - 18}"
                ports[f"i_DI{pin}"] = wr_data[i] if i < width else Const(0, 1)
                if i < width:
                    ports[f"o_DO{pin}"] = rd_data[i]
            ports.update(dp16kd_tied_ports())
            ports["i_WEA"] = Const(1, 1)
            ports["i_WEB"] = Const(0, 1)
            m.submodules[f"event_mem{blk}"] = Instance(
                "DP16KD", p_DATA_WIDTH_A=36, p_DATA_WIDTH_B=36, p_REGMODE_A="OUTREG",
                p_REGMODE_B="OUTREG", **DP16KD_FIXED_PARAMS, **ports)
