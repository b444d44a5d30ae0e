"""The board side of the host link: SLIP framing, CRC-16 check, sequencing, dispatch.

:class:`Link` sits between the UART byte streams and a small register bus
(:data:`BusSignature`) that the board top decodes. The wire format and every constant come
from :mod:`copperline.firmware.board_interface`; docs/link.md is the spec.

Receive path: SLIP-decoded bytes go into a frame buffer (one block RAM) while a CRC-16
processor runs over them; at the closing 0xC0 a frame with a good CRC is handed to the
dispatcher. Anything else (bad CRC, bad escape, over-long, too short) is dropped and
counted, and an idle timeout drops a half-received frame. The receive buffer is free again
once the dispatcher has executed a request, while its response is still going out, so the
host may keep a second request in flight. The dispatcher executes the request, builds the
response in one of two response slots (by the parity of its sequence number) and hands it
to the transmitter. A request with the same sequence number *and* CRC as the last one of
its slot is a retransmission: the stored response is sent again without executing anything
twice, also when the host has sent the next request since (pipelined reads).

Transmit path: responses are framed with their CRC and SLIP-escaped. (The board sends
nothing unasked: the host pulls event records with READs of the EVENTS space.)
"""

from __future__ import annotations

from amaranth import *
from amaranth.lib import crc, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from copperline.firmware import board_interface as proto
from copperline.firmware import isa
from copperline.hdl.lut import all_of, below, is_ice40, lut, mux

__all__ = ["BusSignature", "Link", "addr_bits_for", "info_words"]

#: The register bus the link drives. ``err`` and ``rdata`` come from the top: ``err`` is a
#: function of ``space``/``addr``/``write``/``wdata`` (never of ``we``/``re``, which
#: depend on it) that may lag them by a clock (the top may decode it into a register):
#: the link samples it only once they have held for a whole clock. ``rdata`` is valid
#: the cycle after ``re``. ``write`` tells, for the whole request, whether it writes or reads.
#: ``space``/``addr``/``wdata`` hold through the clock after ``we``, so the top may apply
#: a write a clock late without copying the request.
BusSignature = wiring.Signature({
    "space": Out(4),
    "addr": Out(16),
    "write": Out(1),
    "wdata": Out(32),
    "we": Out(1),
    "re": Out(1),
    "rdata": In(32),
    "err": In(1),
})


def info_words(*, clock_hz: int, baud: int, buf_bytes: int = proto.DEFAULT_BUF_BYTES,
               event_bytes: int = 0, core_version: int = 0, program_words: int = 0,
               contexts: int = 0, layers: int = 0, fence_timelines: int = 0,
               vsync_hz: float = 0.0, fabric_hz: int | None = None,
               surface_words: int = 0) -> list[int]:
    """The constant INFO words (addresses 0..15) in :data:`proto.INFO_FIELDS` order."""
    words = [proto.INFO_MAGIC, proto.LINK_VERSION, clock_hz, baud, buf_bytes,
             proto.MAX_READ_WORDS, event_bytes, core_version, program_words, contexts,
             layers, fence_timelines, round(vsync_hz * 1000), fabric_hz or clock_hz,
             isa.vsync_period_cycles(clock_hz, vsync_hz) if vsync_hz else 0, surface_words]
    words += [0] * (proto.INFO_CONST_WORDS - len(words))
    return words


def addr_bits_for(*, contexts: int = 0, program_words: int = 0, layers: int = 0,
                  surface_words: int = 0) -> int:
    """The address bits a link keeps for a core of that size (:class:`Link`
    ``addr_bits``): enough for the largest address any space answers."""
    top = max(contexts * program_words, proto.CTL_START_MASK_ADDR + 1,
              contexts * isa.FENCE_TIMELINES, layers * isa.REG_STRIDE,
              contexts * proto.STATUS_WORDS, 2 * proto.MAX_READ_WORDS,
              len(proto.INFO_FIELDS), proto.SCRATCH_WORDS, surface_words)
    return max(9, (top - 1).bit_length())


def _one_hot(fsm):
    """Asks synthesis to re-encode ``fsm`` one-hot: each state is then one flip-flop and
    its next-state logic shallow. (Yosys leaves a state register with an initial value,
    which every Amaranth signal has, as it is unless the encoding is asked for.)"""
    fsm.state.attrs["fsm_encoding"] = "one-hot"


class Link(wiring.Component):
    """Link endpoint: ``rx``/``tx`` byte streams (to the UART), ``bus`` to the top.

    Parameters
    ----------
    info : list of int
        The 16 constant INFO words (see :func:`info_words`).
    idle_timeout : int
        Clock cycles without a received byte after which a half-received frame is dropped.
    idle_tick : int
        0: the idle timeout counts clocks. Else it counts pulses on the ``tick`` input,
        which come every ``idle_tick`` clocks (a counter the top has anyway): the frame
        is then dropped between ``idle_timeout`` and ``idle_timeout + 3 * idle_tick``
        clocks after its last byte (a pulse may come early once, e.g. when the counter
        is reset), with a counter of a few bits instead of ~20.
    addr_bits : int
        Bits of a request's address the link keeps (9..16; :func:`addr_bits_for`): a
        higher address only sets a flag, which the bus shows as all of bits
        ``addr_bits``..15 set, so it is still refused.
    buf_bytes : int
        Size of the receive and response buffers (largest frame without its CRC + 2).
    tx_outreg : bool
        Read the transmit buffer through a register of its own (a clock more per byte),
        and pass the bytes to the UART through a one-byte buffer: the ECP5's block RAM
        clock-to-out (~6 ns) leaves no room at 100 MHz for the token's escape test
        behind it, nor the UART's ready for the framer. The iCE40 needs neither (and its
        placement is better without).
    quiet : bool
        Simulation only: add the ``quiet`` output (no observable state change at the next
        clock edge, e.g. while the UART is busy sending a byte), for a simulator that
        gates the link's clock.
    """

    #: Memories whose read port never meets a write of the same address in one clock
    #: (``copperline.hdl.synth.collision_dont_care``): ``rx_mem`` is written only while
    #: no frame waits and read only while one does; ``tx_mem`` is written by the
    #: dispatcher only while no response is pending or being sent, and read only then;
    #: ``info_mem`` is written by the counter updater only while nothing else reads it;
    #: ``slot_mem``'s CRCs are read in TYPE and written in DECIDE, its lengths written in
    #: FINISH and read once the transmitter starts, a clock later at the earliest.
    COLLISION_FREE_MEMORIES = ("rx_mem", "tx_mem", "info_mem", "slot_mem")

    def __init__(self, *, info: list[int], idle_timeout: int, idle_tick: int = 0,
                 addr_bits: int = 16,
                 buf_bytes: int = proto.DEFAULT_BUF_BYTES, tx_outreg: bool = False,
                 quiet: bool = False):
        if len(info) != proto.INFO_CONST_WORDS:
            raise ValueError(f"info must hold {proto.INFO_CONST_WORDS} words, got {len(info)}")
        if buf_bytes < 3 + 4 * proto.MAX_READ_WORDS:
            raise ValueError(f"buf_bytes {buf_bytes} cannot hold a {proto.MAX_READ_WORDS}-word read")
        self.info = info
        self.idle_timeout = idle_timeout
        self.idle_tick = idle_tick
        if not 9 <= addr_bits <= 16:
            raise ValueError(f"addr_bits {addr_bits} outside 9..16")
        self.addr_bits = addr_bits
        self.buf_bytes = buf_bytes
        self.tx_outreg = tx_outreg
        members = {
            "rx": In(stream.Signature(8)),
            "tx": Out(stream.Signature(8)),
            "bus": Out(BusSignature),
            "activity": Out(1),     # one-cycle pulse per good request (LEDs)
            "error": Out(1),        # one-cycle pulse per dropped frame or timeout (LEDs)
            "busy": Out(1),         # a frame is being received, executed or sent
        }
        if idle_tick:
            members["tick"] = In(1)     # a pulse every ``idle_tick`` clocks
        if quiet:
            # simulation only: no state change at the next clock edge that anyone can
            # observe (the virtual board's gated link clock, docs/boards.md); and
            # ``detached``: the link does not touch the bus before another frame arrives
            # (at most it finishes sending a response)
            members["quiet"] = Out(1)
            members["detached"] = Out(1)
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        buf = self.buf_bytes
        crc_params = crc.catalog.CRC16_CCITT_FALSE(8)

        m.submodules.rx_mem = rx_mem = Memory(shape=8, depth=buf, init=[])
        # two response slots (seq parity), each buf bytes: slot s at s << abits
        abits = (buf - 1).bit_length()
        m.submodules.tx_mem = tx_mem = Memory(shape=8, depth=2 << abits, init=[])
        rx_w = rx_mem.write_port()
        rx_r = rx_mem.read_port()
        tx_w = tx_mem.write_port()
        tx_r = tx_mem.read_port()
        # INFO: the 16 constant words, then the link's four counters (16 bits, wrapping),
        # in one block RAM. The counters count there too (``_counters``): a flag per
        # counter, then a read and a write of its word, instead of four adders and a
        # multiplexer in logic.
        m.submodules.info_mem = info_mem = Memory(
            shape=32, depth=2 * proto.INFO_CONST_WORDS,
            init=list(self.info) + [0] * proto.INFO_CONST_WORDS)
        info_r = info_mem.read_port()
        info_w = info_mem.write_port()
        count = {name: Signal(name=f"count_{name}") for name in proto.INFO_FIELDS[16:]}
        m.submodules.rx_crc = rx_crc = crc.Processor(crc_params)
        m.submodules.tx_crc = tx_crc = crc.Processor(crc_params)

        # ---------------------------------------------------------------- receive ------
        frame_ready = Signal()                  # a checked frame waits in rx_mem
        rx_len = Signal(range(buf + 1))         # (a waiting frame's length, until executed)
        # rx_len's tests, kept as flags beside it (timing): != 0, < buf, >= 4
        rx_any, rx_room, rx_min = Signal(), Signal(init=1), Signal()
        rx_bad = Signal()
        rx_esc = Signal()
        # the last two bytes: the frame's CRC (no byte is decoded while a frame waits, so
        # the dispatcher reads it here)
        last2 = Signal(16)
        # The idle timeout counts down from ``idle_load`` and fires when it wraps below 0
        # (its top bit: no comparator): ``idle_timeout + 1`` clocks after the last byte,
        # or ``idle_load + 1`` ticks (one may come early, the first at once).
        if self.idle_tick:
            idle_load = -(-self.idle_timeout // self.idle_tick) + 1
            idle_step = self.tick
        else:
            idle_load, idle_step = self.idle_timeout - 1, C(1)
        idle = Signal(idle_load.bit_length() + 1, init=idle_load)

        tok_data = Signal(8)
        tok_byte = Signal()
        tok_end = Signal()
        tok_err = Signal()

        # (``tq_*``: the decoded tokens registered, below; ``tq_end & tq_open``: a
        # delimiter that ends a non-empty frame is on its way, so a byte right behind it is
        # dropped like one that finds the frame waiting, whether the frame then passes
        # its check or not; over a UART bytes are never that close)
        end_q, end_good = Signal(), Signal()     # (below: a frame's verdict)
        tq_data = Signal(8)
        tq_byte, tq_end, tq_err, tq_esc, tq_open = Signal(), Signal(), Signal(), Signal(), Signal()
        m.d.comb += self.rx.ready.eq(1)         # never stall the UART; drops are counted
        with m.If(self.rx.valid):
            with m.If(frame_ready | (tq_end & tq_open) | end_q):
                m.d.comb += count["rx_dropped"].eq(1)
            with m.Elif(self.rx.payload == proto.SLIP_END):
                # A delimiter always ends the frame, even right after an escape (then bad).
                m.d.comb += tok_end.eq(1)
                m.d.sync += rx_esc.eq(0)
            with m.Elif(rx_esc):
                m.d.sync += rx_esc.eq(0)
                with m.If(self.rx.payload == proto.SLIP_ESC_END):
                    m.d.comb += [tok_data.eq(proto.SLIP_END), tok_byte.eq(1)]
                with m.Elif(self.rx.payload == proto.SLIP_ESC_ESC):
                    m.d.comb += [tok_data.eq(proto.SLIP_ESC), tok_byte.eq(1)]
                with m.Else():
                    m.d.comb += tok_err.eq(1)
            with m.Elif(self.rx.payload == proto.SLIP_ESC):
                m.d.sync += rx_esc.eq(1)
            with m.Else():
                m.d.comb += [tok_data.eq(self.rx.payload), tok_byte.eq(1)]

        # The decoded tokens, registered (timing): the frame logic sees each one a clock
        # after its byte (``tok_esc``: an escape was pending at the delimiter).
        m.d.sync += [tq_data.eq(tok_data), tq_byte.eq(tok_byte), tq_end.eq(tok_end),
                     tq_err.eq(tok_err), tq_esc.eq(tok_end & rx_esc),
                     tq_open.eq(rx_any | rx_bad | rx_esc | tq_byte | tq_err)]

        m.d.comb += [rx_w.addr.eq(rx_len), rx_w.data.eq(tq_data),
                     rx_crc.data.eq(tq_data), rx_crc.start.eq(~rx_any)]
        with m.If(tq_byte):
            with m.If(rx_room):
                m.d.comb += [rx_w.en.eq(1), rx_crc.valid.eq(1)]
                m.d.sync += [rx_len.eq(rx_len + 1), last2.eq(Cat(tq_data, last2[:8])),
                             rx_any.eq(1), rx_room.eq(rx_len != buf - 1),
                             rx_min.eq(rx_min | (rx_len == 3))]
            with m.Else():
                m.d.sync += rx_bad.eq(1)
        with m.If(tq_err):
            m.d.sync += rx_bad.eq(1)
        # The verdict on a frame that ended, registered (timing): it is taken a clock
        # after its delimiter (``end_q``), from a check made at the delimiter.
        m.d.sync += [end_q.eq(tq_end & (rx_any | rx_bad | tq_esc)),
                     end_good.eq(~rx_bad & ~tq_esc & rx_min & rx_crc.match_detected)]
        # (a good frame's length stays in rx_len until its request is executed, FINISH or
        # RESEND: no byte is decoded while a frame waits)
        with m.If(end_q):
            with m.If(end_good):
                m.d.sync += frame_ready.eq(1)
            with m.Else():
                m.d.sync += rx_len.eq(0)
                m.d.comb += [count["frames_bad"].eq(1), self.error.eq(1)]
            m.d.sync += [rx_any.eq(0), rx_room.eq(1), rx_min.eq(0), rx_bad.eq(0)]

        # Idle timeout: a frame that stops arriving half-way is dropped, so a host that
        # restarts mid-frame is understood at once (no 0xC0 needed first).
        with m.If(self.rx.valid | (~rx_any & ~rx_bad & ~rx_esc)):
            m.d.sync += idle.eq(idle_load)
        with m.Elif(idle[-1]):
            m.d.sync += [rx_len.eq(0), rx_any.eq(0), rx_room.eq(1), rx_min.eq(0),
                         rx_bad.eq(0), rx_esc.eq(0), idle.eq(idle_load)]
            m.d.comb += [count["rx_timeouts"].eq(1), self.error.eq(1)]
        with m.Elif(idle_step):
            m.d.sync += idle.eq(idle - 1)

        # --------------------------------------------------------------- dispatch ------
        # Every decision below is taken on registered values (a flag computed a state
        # earlier): the line gives the dispatcher ~100 clocks per byte, so a state more
        # costs nothing, and the fabric clock is set by the longest path.
        resp_pending = Signal()                 # tx_mem holds a response to send
        resp_sending = Signal()

        typ = Signal(8)
        slot = Signal()                         # response slot of the request (seq[0])
        last_seq = Array(Signal(8, name=f"last_seq{i}") for i in range(2))
        # Per response slot, in a block RAM on the iCE40 (52 flip-flops that only held
        # copies, an LC each): the CRC of its last request at address ``slot`` (read in
        # TYPE, the slot being the sequence number's bit 0, which the frame buffer's read
        # port shows then; written in DECIDE) and its response's length at ``2 + slot``
        # (written in FINISH, read by the transmitter while the response goes out)
        slot_mem = Memory(shape=16, depth=4, init=[],
                          attrs={"ram_style": "block"} if is_ice40(platform) else None)
        m.submodules.slot_mem = slot_mem
        slot_r = slot_mem.read_port()
        slot_w = slot_mem.write_port()
        last_valid = Array(Signal(name=f"last_valid{i}") for i in range(2))
        # rx_mem is read through a register (``rxb``; the block RAM's clock-to-out is a
        # large part of a clock at 100 MHz on the ECP5): both advance on ``adv``, so
        # rxb == mem[rp - 2] once two reads are primed
        rp = Signal(range(buf + 1))
        rxb = Signal(8)
        adv = Signal()
        wp = Signal(range(buf + 1))             # tx_mem write pointer
        n = Signal(range(proto.MAX_READ_WORDS + 1))   # words a READ has left
        status = Signal(range(max(proto.STATUS_NAMES) + 1))
        space = typ[:4]                         # (the request type's low nibble)
        # The request's address: its low ``addr_bits`` bits, and whether any higher one is
        # set (``high``, kept through the increments): the bus sees all 16 bits, the high
        # ones as that flag, so every space still answers ``bad address`` up there.
        held = Signal(self.addr_bits)
        high = Signal()
        addr = Cat(held, high.replicate(16 - self.addr_bits))[:16]
        addr_inc = held + 1
        next_addr = [held.eq(addr_inc), high.eq(high | addr_inc[-1])]   # (a word on)
        addr_next = Signal()                    # addr moves on at the next word's first byte
        word = Signal(32)
        bi = Signal(2)
        is_info = Signal()

        # (the request's class and length checks, registered before HEADER: timing)
        is_echo, is_write, is_read = Signal(), Signal(), Signal()
        w_len_bad, r_len_bad, count_bad = Signal(), Signal(), Signal()
        # (WRITE and ECHO end with the frame, whose body's last byte is mem[rx_len - 3]
        # (rxb is mem[rp - 2]); a READ counts its words in n)
        last_word = Signal()                    # the word is the last, registered before use
        end_next = Signal()                     # rxb, once advanced, is past the body
        m.d.comb += end_next.eq(rp + 1 == rx_len)
        echo_more = Signal()                    # rxb is a body byte in ECHO, likewise
        repeat = Signal()                       # seq and CRC are those of its slot's last request
        req_bad = Signal()                      # the bus said err (or INFO is written)
        m.d.comb += [rx_r.addr.eq(rp), rx_r.en.eq(adv),
                     is_info.eq(space == proto.SPACE_INFO)]
        with m.If(adv):
            m.d.sync += [rp.eq(rp + 1), rxb.eq(rx_r.data)]

        # INFO space: words 0..19 of ``info_mem``, read like the bus (data a clock after
        # ``re``), but not while the counter updater uses the memory
        info_err = (addr[5:] != 0) | (addr[4] & (addr[2:4] != 0))
        assert len(proto.INFO_FIELDS) == 20     # (the bit test above)
        counting = self._counters(m, info_r, info_w, count)
        bus = self.bus
        m.d.comb += [bus.space.eq(space), bus.addr.eq(addr), bus.wdata.eq(word),
                     bus.write.eq(is_write)]
        with m.If(~counting):
            m.d.comb += [info_r.addr.eq(addr), info_r.en.eq(bus.re & is_info)]

        def finish(st):
            m.d.sync += status.eq(st)
            if st != proto.ST_OK:
                m.d.sync += wp.eq(3)            # (the response: type, seq, status)
            m.next = "FINISH"

        with m.FSM(name="dispatch") as dispatch_fsm:
            with m.State("IDLE"):
                with m.If(frame_ready & ~resp_pending & ~resp_sending):
                    m.d.sync += rp.eq(0)
                    m.next = "PRIME0"
            with m.State("PRIME0"):
                m.d.comb += adv.eq(1)
                m.next = "PRIME1"
            with m.State("PRIME1"):
                m.d.comb += adv.eq(1)
                m.next = "TYPE"
            with m.State("TYPE"):
                m.d.comb += [adv.eq(1), slot_r.addr.eq(rx_r.data[0]),
                             slot_r.en.eq(1)]
                m.d.sync += typ.eq(rxb)
                m.next = "SEQ"
            with m.State("SEQ"):
                body = rx_len - 4               # (bytes after type and seq, before the CRC)
                # The response's seq, and the slot's last one, written at once: a
                # retransmission writes what is there already (the transmitter is idle).
                m.d.comb += [adv.eq(1), tx_w.addr.eq(Cat(C(1, abits), rxb[0])),
                             tx_w.data.eq(rxb), tx_w.en.eq(1)]
                m.d.sync += [last_seq[rxb[0]].eq(rxb), last_valid[rxb[0]].eq(1)]
                m.d.sync += [slot.eq(rxb[0]),
                             repeat.eq(self._repeat_test(m, platform, rxb, last2, last_seq,
                                                         slot_r.data, last_valid)),
                             is_echo.eq(typ == proto.T_ECHO),
                             is_write.eq(typ[4:] == proto.T_WRITE >> 4),
                             is_read.eq(typ[4:] == proto.T_READ >> 4),
                             # (the frame, rx_len bytes, is type, seq, body, CRC: a
                             # WRITE's body is addr u16 and one word at least, rx_len =
                             # 4k + 2 with k >= 2, told by bit tests, not a `<` carry
                             # chain; a READ's is 3 bytes)
                             w_len_bad.eq((rx_len[:2] != 2) | (rx_len[3:] == 0)),
                             r_len_bad.eq(rx_len != 7),
                             echo_more.eq(body != 0)]
                m.next = "DECIDE"
            with m.State("DECIDE"):             # a retransmission, or a new request
                with m.If(repeat):
                    m.next = "RESEND"
                with m.Else():
                    m.d.comb += [slot_w.addr.eq(slot), slot_w.data.eq(last2), slot_w.en.eq(1)]
                    m.d.comb += count["frames_ok"].eq(1)
                    m.d.comb += [tx_w.addr.eq(Cat(C(0, abits), slot)),
                                 tx_w.data.eq(typ | proto.RESP), tx_w.en.eq(1)]
                    m.next = "HEADER"
            with m.State("HEADER"):
                m.d.comb += self.activity.eq(1)
                m.d.sync += [wp.eq(3),
                             addr_next.eq(0)]
                with m.If(is_echo):
                    m.next = "ECHO"
                with m.Elif(is_write):
                    with m.If(w_len_bad):
                        finish(proto.ST_BAD_LEN)
                    with m.Else():
                        m.next = "ADDR0"
                with m.Elif(is_read):
                    with m.If(r_len_bad):
                        finish(proto.ST_BAD_LEN)
                    with m.Else():
                        m.next = "ADDR0"
                with m.Else():
                    finish(proto.ST_BAD_TYPE)

            with m.State("ECHO"):
                with m.If(echo_more):
                    m.d.comb += [tx_w.addr.eq(Cat(wp[:abits], slot)), tx_w.data.eq(rxb),
                                 tx_w.en.eq(1), adv.eq(1)]
                    m.d.sync += [wp.eq(wp + 1), echo_more.eq(~end_next)]
                with m.Else():
                    finish(proto.ST_OK)

            # WRITE and READ: addr u16, ...
            with m.State("ADDR0"):
                m.d.comb += adv.eq(1)
                m.d.sync += held[:8].eq(rxb)
                m.next = "ADDR1"
            with m.State("ADDR1"):
                m.d.comb += adv.eq(1)
                m.d.sync += [held[8:].eq(rxb), high.eq(rxb[self.addr_bits - 8:] != 0), bi.eq(0)]
                with m.If(is_write):
                    m.next = "W_BYTE"
                with m.Else():
                    m.next = "R_COUNT"
            # Before each word's bus cycle, the bus's err for its address (and data)
            # lags a clock (CHECK), and is registered (BUS_DECIDE: timing).
            with m.State("CHECK"):
                m.next = "BUS_DECIDE"
            with m.State("BUS_DECIDE"):
                m.d.sync += req_bad.eq(Mux(is_info, is_write | info_err, bus.err))
                with m.If(is_write):
                    m.next = "W_COMMIT"
                with m.Else():
                    m.next = "R_REQ"

            # ... WRITE: then the words; each word goes out on the bus as it completes.
            # The bus's space/addr/wdata hold through the clock after ``we`` (the top
            # applies the write then): addr moves on with the next word's first byte, and
            # wdata shifts only then.
            with m.State("W_BYTE"):
                m.d.comb += adv.eq(1)
                m.d.sync += [word.eq(Cat(word[8:], rxb)), bi.eq(bi + 1), addr_next.eq(0)]
                with m.If(addr_next):
                    m.d.sync += next_addr
                with m.If(bi == 3):
                    m.d.sync += last_word.eq(end_next)
                    m.next = "CHECK"
            with m.State("W_COMMIT"):
                with m.If(req_bad):
                    finish(proto.ST_BAD_ADDR)
                with m.Else():
                    m.d.comb += bus.we.eq(1)
                    m.d.sync += addr_next.eq(1)
                    with m.If(last_word):
                        finish(proto.ST_OK)
                    with m.Else():
                        m.next = "W_BYTE"

            # ... READ: then count u8; each word read from the bus into the response.
            with m.State("R_COUNT"):
                m.d.sync += [n.eq(rxb),
                             count_bad.eq((rxb == 0) | ~below(rxb, proto.MAX_READ_WORDS + 1))]
                m.next = "R_CHECK"
            with m.State("R_CHECK"):
                with m.If(count_bad):
                    finish(proto.ST_BAD_LEN)
                with m.Else():
                    m.next = "CHECK"
            with m.State("R_REQ"):
                with m.If(req_bad):
                    finish(proto.ST_BAD_ADDR)
                with m.Elif(is_info & counting):
                    pass                        # (info_mem is busy: next clock)
                with m.Else():
                    m.d.comb += bus.re.eq(1)
                    m.next = "R_DATA"
            with m.State("R_DATA"):
                m.d.sync += [word.eq(Mux(is_info, info_r.data, bus.rdata)), bi.eq(0),
                             last_word.eq(n == 1)]
                m.next = "R_BYTE"
            with m.State("R_BYTE"):
                m.d.comb += [tx_w.addr.eq(Cat(wp[:abits], slot)), tx_w.data.eq(word[:8]),
                             tx_w.en.eq(1)]
                m.d.sync += [word.eq(word >> 8), wp.eq(wp + 1), bi.eq(bi + 1)]
                with m.If(bi == 3):
                    m.d.sync += [*next_addr, n.eq(n - 1)]
                    with m.If(last_word):
                        finish(proto.ST_OK)
                    with m.Else():
                        m.next = "CHECK"

            with m.State("FINISH"):
                m.d.comb += [tx_w.addr.eq(Cat(C(2, abits), slot)), tx_w.data.eq(status),
                             tx_w.en.eq(1)]
                # (the frame buffer is free: its length goes back to 0)
                m.d.sync += [resp_pending.eq(1), frame_ready.eq(0), rx_len.eq(0)]
                m.d.comb += [slot_w.addr.eq(2 + slot), slot_w.data.eq(wp), slot_w.en.eq(1)]
                m.next = "IDLE"
            with m.State("RESEND"):
                m.d.sync += [resp_pending.eq(1), frame_ready.eq(0), rx_len.eq(0)]
                m.next = "IDLE"
        _one_hot(dispatch_fsm)

        # --------------------------------------------------------------- transmit ------
        # Framer tokens -> SLIP encoder (``enc``) -> self.tx, through a one-byte buffer
        # with ``tx_outreg`` (it keeps the UART's ready off the framer's paths: the ECP5's
        # timing. A byte lasts >= 40 clocks on the line, so the buffer refills long before
        # the UART takes the next.)
        enc = stream.Signature(8).create()
        if self.tx_outreg:
            tx_full = Signal()
            m.d.comb += [self.tx.valid.eq(tx_full), enc.ready.eq(~tx_full)]
            with m.If(enc.valid & ~tx_full):
                m.d.sync += [tx_full.eq(1), self.tx.payload.eq(enc.payload)]
            with m.Elif(self.tx.ready):
                m.d.sync += tx_full.eq(0)
        else:
            tx_full = C(0)
            m.d.comb += [self.tx.valid.eq(enc.valid), self.tx.payload.eq(enc.payload),
                         enc.ready.eq(self.tx.ready)]
        # The token (a byte of the frame) is always a register, ``tok``, loaded a state
        # before it goes out with whether SLIP must escape it (timing).
        tok = Signal(8)
        tok_special = Signal()

        def load_tok(value):
            m.d.sync += [tok.eq(value),
                         tok_special.eq((value == proto.SLIP_END) | (value == proto.SLIP_ESC))]
        tok_is_end = Signal()
        tok_valid = Signal()
        tok_ready = Signal()
        esc_pending = Signal()
        esc_byte = Signal(8)
        with m.If(esc_pending):
            m.d.comb += [enc.valid.eq(1), enc.payload.eq(esc_byte)]
            with m.If(enc.ready):
                m.d.sync += esc_pending.eq(0)
        with m.Else():
            m.d.comb += [enc.valid.eq(tok_valid), tok_ready.eq(enc.ready)]
            with m.If(tok_is_end):
                m.d.comb += enc.payload.eq(proto.SLIP_END)
            with m.Elif(tok_special):
                m.d.comb += enc.payload.eq(proto.SLIP_ESC)
                with m.If(tok_valid & enc.ready):
                    m.d.sync += [esc_pending.eq(1),
                                 # (0xC0 and 0xDB differ in bit 0)
                                 esc_byte.eq(Mux(tok[0], proto.SLIP_ESC_ESC,
                                                 proto.SLIP_ESC_END))]
            with m.Else():
                m.d.comb += enc.payload.eq(tok)

        ti = Signal(range(buf + 1))
        past_end = Signal()                     # every byte is out (FETCH)
        tx_slot = Signal()
        # (the response's length: slot_mem read all along while it goes out)
        with m.If(resp_sending):
            m.d.comb += [slot_r.addr.eq(2 + tx_slot), slot_r.en.eq(1)]
        if self.tx_outreg:
            txb = Signal(8)
            m.d.sync += txb.eq(tx_r.data)
        else:
            txb = tx_r.data
        m.d.comb += [tx_r.addr.eq(Cat(ti[:abits], tx_slot)), tx_crc.data.eq(tok),
                     tx_crc.start.eq(ti == 0)]

        with m.FSM(name="transmit") as tx_fsm:
            with m.State("IDLE"):
                m.d.sync += ti.eq(0)
                with m.If(resp_pending):
                    m.d.sync += [resp_pending.eq(0), resp_sending.eq(1), tx_slot.eq(slot)]
                    m.next = "SOF"
            with m.State("SOF"):
                m.d.comb += [tok_is_end.eq(1), tok_valid.eq(1)]
                with m.If(tok_ready):
                    m.next = "FETCH"
            with m.State("FETCH"):              # tx_mem read latency
                m.d.sync += past_end.eq(ti == slot_r.data[:len(ti)])
                m.next = "FETCH2" if self.tx_outreg else "LOAD"
            if self.tx_outreg:
                with m.State("FETCH2"):         # ... and its data registered (``txb``)
                    m.next = "LOAD"
            with m.State("LOAD"):               # the token, registered (timing)
                with m.If(past_end):            # (then the CRC: the last byte is in it)
                    load_tok(tx_crc.crc[8:])
                    m.next = "CRC_HI"
                with m.Else():
                    load_tok(txb)
                    m.next = "DATA"
            with m.State("DATA"):
                m.d.comb += tok_valid.eq(1)
                with m.If(tok_ready):
                    m.d.comb += tx_crc.valid.eq(1)
                    m.d.sync += ti.eq(ti + 1)
                    m.next = "FETCH"
            with m.State("CRC_HI"):
                m.d.comb += tok_valid.eq(1)
                with m.If(tok_ready):
                    load_tok(tx_crc.crc[:8])
                    m.next = "CRC_LO"
            with m.State("CRC_LO"):
                m.d.comb += tok_valid.eq(1)
                with m.If(tok_ready):
                    m.next = "EOF"
            with m.State("EOF"):
                m.d.comb += [tok_is_end.eq(1), tok_valid.eq(1)]
                with m.If(tok_ready):
                    m.d.sync += resp_sending.eq(0)
                    m.next = "IDLE"
        _one_hot(tx_fsm)
        m.d.comb += self.busy.eq(frame_ready | resp_pending | resp_sending | rx_any |
                                 tq_byte | tq_end | end_q |
                                 rx_esc | ~tx_fsm.ongoing("IDLE") | esc_pending | tx_full)
        if hasattr(self, "quiet"):
            # Quiet: no register changes at the next edge, for each part of the link:
            # (the counters: nothing to count, no update under way)
            count_still = ~counting & ~Cat(*count.values()).any() & ~self._count_pending.any()
            crc_init = crc_params.compute(b"")       # what .crc shows after a start
            # receive: no byte, no frame begun, the timeout counter at rest, CRC at start
            # (``end_good`` may change, but it is only read with ``end_q``)
            rx_still = (~self.rx.valid & ~tq_byte & ~tq_end & ~end_q & ~tq_err &
                        ~rx_any & ~rx_bad & ~rx_esc & (idle == idle_load) &
                        (rx_crc.crc == crc_init))
            # dispatch: idle and staying so (no frame, or its answer must wait)
            dispatch_still = (dispatch_fsm.ongoing("IDLE") &
                              ~(frame_ready & ~resp_pending & ~resp_sending))
            # transmit: a byte offered to a busy UART (most clocks of a frame going out),
            # or idle with nothing to send; the CRC holds in both (ti == 0: at its start)
            # (or a byte in the buffer that the busy UART does not take, with the
            # encoder waiting behind it or nothing to send)
            tx_idle = tx_fsm.ongoing("IDLE") & ~esc_pending & (ti == 0) & ~resp_pending
            if self.tx_outreg:
                tx_still = ((tx_full & ~self.tx.ready & (enc.valid | tx_idle)) |
                            (~tx_full & tx_idle))
            else:       # (a byte offered to the busy UART, or nothing to send)
                tx_still = (enc.valid & ~self.tx.ready) | tx_idle
            tx_crc_still = (ti != 0) | (tx_crc.crc == crc_init)
            # The memories' read data (and ``txb``) may still change, but nobody looks at
            # it before a fresh read (PRIME, FETCH).
            m.d.comb += self.quiet.eq(rx_still & dispatch_still & tx_still & tx_crc_still &
                                      count_still)
            # Detached: no frame begun or waiting (the bus is only driven by the dispatch
            # of a complete frame, which takes five more bytes at least).
            m.d.comb += self.detached.eq(~rx_any & ~rx_bad & ~rx_esc & ~frame_ready &
                                         ~tq_byte & ~tq_end & ~end_q & ~tq_err &
                                         dispatch_fsm.ongoing("IDLE"))
        return m

    @staticmethod
    def _repeat_test(m, platform, seq, crc, last_seq, slot_crc, last_valid) -> Value:
        """Whether a frame with ``seq`` and ``crc`` repeats the last request of its own
        response slot (``seq[0]``; ``slot_crc`` is that slot's last CRC): one LUT per two
        bits of the CRC, one per bit of the sequence number selecting the slot's copy,
        then a tree of ANDs (hand-mapped: the delay-driven mapping spent half as much
        again). Bit 0 of the sequence numbers is the slot itself."""
        ice40 = is_ice40(platform)
        s = seq[0]

        def same(x, a, b):
            return lut(m, ice40, lambda s, x, a, b: x ^ mux(s, b, a) ^ 1, s, x, a, b)
        bits = [lut(m, ice40, lambda x0, y0, x1, y1: (x0 ^ y0 ^ 1) & (x1 ^ y1 ^ 1),
                    crc[k], slot_crc[k], crc[k + 1], slot_crc[k + 1])
                for k in range(0, len(crc), 2)]
        bits += [same(seq[k], last_seq[0][k], last_seq[1][k]) for k in range(1, len(seq))]
        bits.append(lut(m, ice40, lambda s, a, b: mux(s, b, a), s, last_valid[0],
                        last_valid[1]))
        return all_of(m, ice40, bits)

    def _counters(self, m, info_r, info_w, count) -> Value:
        """The INFO counters, kept in ``info_mem`` (words 16..19): each ``count`` pulse
        sets a flag; one flag at a time, the updater reads the counter's word and writes
        it back plus one (three clocks, so twelve for all four: a count is lost only if
        a counter's events come closer than that, and a UART delivers a byte every ten
        bit times, 40 clocks at least, in the fastest case). Returns ``counting``, a register: the updater has the
        memory's ports this clock (the dispatcher then waits with its INFO read)."""
        pending = self._count_pending = Signal(len(count))
        which = Signal(range(len(count)))
        reading, writing = Signal(), Signal()
        done = Signal(len(count))
        m.d.sync += pending.eq((pending & ~done) | Cat(*count.values()))
        with m.If(reading):
            m.d.sync += [reading.eq(0), writing.eq(1)]
            m.d.comb += [done.eq(1 << which), info_r.en.eq(1),
                         info_r.addr.eq(proto.INFO_CONST_WORDS + which)]
        with m.Elif(writing):
            m.d.sync += writing.eq(0)
            m.d.comb += [info_w.en.eq(1), info_w.addr.eq(proto.INFO_CONST_WORDS + which),
                         info_w.data.eq((info_r.data + 1)[:16])]
        with m.Elif(pending.any()):
            m.d.sync += reading.eq(1)
            for i in reversed(range(len(count))):
                with m.If(pending[i]):
                    m.d.sync += which.eq(i)
        return reading | writing
