"""The board-independent top: UART + link + bus decode (+ the Copper core once it exists).

:class:`LinkTop` is what every board builds: the UART pins go through
:class:`~copperline.hdl.uart.UARTRx`/``UARTTx`` into :class:`~copperline.hdl.link.Link`,
whose register bus is decoded here. Without the core (``core=None``) only the INFO space
(served by the link) and a 16-word SCRATCH space answer; the core's spaces (PROG, CTL,
FENCE, REGS, STATUS) answer ``bad address``, so a host sees at once that the bitstream has
no core, and the whole path (pins, UART, framing, CRC, retransmission) can be proven.

LEDs: ``led_link`` stretches each good request to ~50 ms; ``led_error`` lights for ~200 ms
after a bad frame or an idle timeout.
"""

from __future__ import annotations

from amaranth import *
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from copperline.hdl.link import BusSignature, Link, info_words
from copperline.hdl.uart import DEFAULT_BAUD, UARTRx, UARTTx
from copperline.host import link as proto

__all__ = ["Scratch", "LinkTop"]


class Scratch(wiring.Component):
    """16 words of RAM on the link bus (space SCRATCH); every other space errs."""

    def __init__(self):
        super().__init__({"bus": In(BusSignature)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.mem = mem = Memory(shape=32, depth=16, init=[])
        w = mem.write_port()
        r = mem.read_port()
        hit = (self.bus.space == proto.SPACE_SCRATCH) & (self.bus.addr < 16)
        m.d.comb += [
            self.bus.err.eq(~hit),
            w.addr.eq(self.bus.addr), w.data.eq(self.bus.wdata), w.en.eq(self.bus.we & hit),
            r.addr.eq(self.bus.addr), r.en.eq(self.bus.re),
            self.bus.rdata.eq(r.data),
        ]
        return m


class LinkTop(wiring.Component):
    """UART pins <-> link <-> bus. ``byte_io=True`` exposes the link's byte streams
    instead of the UART pins (fast simulation: the virtual board, benchmarks)."""

    def __init__(self, *, clock_hz: int, baud: int = DEFAULT_BAUD, idle_timeout_us: int = 10_000,
                 byte_io: bool = False):
        self.clock_hz = clock_hz
        self.baud = baud
        self.byte_io = byte_io
        self.idle_timeout = max(16, clock_hz // 1_000_000 * idle_timeout_us)
        members = {"led_link": Out(1), "led_error": Out(1), "busy": Out(1)}
        if byte_io:
            members |= {"rx": In(stream.Signature(8)), "tx": Out(stream.Signature(8))}
        else:
            members |= {"uart_rx": In(1, init=1), "uart_tx": Out(1, init=1)}
        super().__init__(members)

    def info(self) -> list[int]:
        return info_words(clock_hz=self.clock_hz, baud=self.baud)

    def elaborate(self, platform):
        m = Module()
        m.submodules.link = link = Link(info=self.info(), idle_timeout=self.idle_timeout)
        m.submodules.scratch = scratch = Scratch()
        wiring.connect(m, link.bus, scratch.bus)
        m.d.comb += self.busy.eq(link.busy)

        if self.byte_io:
            wiring.connect(m, wiring.flipped(self.rx), link.rx)
            wiring.connect(m, link.tx, wiring.flipped(self.tx))
        else:
            m.submodules.uart_rx = urx = UARTRx(clock_hz=self.clock_hz, baud=self.baud)
            m.submodules.uart_tx = utx = UARTTx(clock_hz=self.clock_hz, baud=self.baud)
            m.d.comb += [urx.rx.eq(self.uart_rx), self.uart_tx.eq(utx.tx)]
            wiring.connect(m, urx.source, link.rx)
            wiring.connect(m, link.tx, utx.sink)

        # LED pulse stretchers (visible on a board; harmless in simulation).
        link_t = Signal(range(self.clock_hz // 20 + 1))
        err_t = Signal(range(self.clock_hz // 5 + 1))
        with m.If(link.activity):
            m.d.sync += link_t.eq(self.clock_hz // 20)
        with m.Elif(link_t != 0):
            m.d.sync += link_t.eq(link_t - 1)
        with m.If(link.error):
            m.d.sync += err_t.eq(self.clock_hz // 5)
        with m.Elif(err_t != 0):
            m.d.sync += err_t.eq(err_t - 1)
        m.d.comb += [self.led_link.eq(link_t != 0), self.led_error.eq(err_t != 0)]
        return m
