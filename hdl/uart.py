"""8N1 UART receiver and transmitter with byte streams (``amaranth.lib.stream``).

Both are parameterised by ``clock_hz`` and ``baud``; the bit period is
``round(clock_hz / baud)`` cycles and :func:`divisor` refuses a rate whose rounding error
exceeds 2 % (a UART tolerates roughly ±4 % between both ends in total). The default link
rate, 1 Mbaud, is exact for both boards: 12 cycles/bit on the iCEBreaker (12 MHz) and 25 on
the ULX3S (25 MHz); the FT2232H (12 MHz / n) and FT231X (3 MHz / n) generate it exactly too.
"""

from __future__ import annotations

from amaranth import *
from amaranth.lib import stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

from copperline.firmware.board_interface import DEFAULT_BAUD

__all__ = ["divisor", "UARTRx", "UARTTx"]


def divisor(clock_hz: int, baud: int) -> int:
    """Clock cycles per bit; ValueError if the rate cannot be made within 2 %."""
    if baud <= 0 or clock_hz <= 0:
        raise ValueError(f"clock_hz and baud must be positive (got {clock_hz}, {baud})")
    div = round(clock_hz / baud)
    if div < 4:
        raise ValueError(f"baud {baud} is too fast for a {clock_hz} Hz clock (needs >= 4 cycles/bit)")
    err = abs(clock_hz / div - baud) / baud
    if err > 0.02:
        raise ValueError(f"baud {baud} is {err:.1%} off with a {clock_hz} Hz clock "
                         f"(divisor {div}); pick a rate that divides the clock better")
    return div


class UARTRx(wiring.Component):
    """Receives 8N1 bytes from ``rx`` and offers them on ``source``.

    The line is sampled in the middle of each bit. There is no flow control: a byte the
    consumer does not take before the next one completes is lost and counted in ``overruns``.
    A missing stop bit pulses ``frame_error`` and waits for the line to go idle (high).

    ``sim_ports=True`` (simulation only) adds ``idle``: nothing in progress (no byte being
    received or waiting on ``source``, no error pulse, the line high, and high through
    the synchroniser when it has been for two clocks), so nothing changes at the next
    edge while the line stays high.
    """

    def __init__(self, *, clock_hz: int, baud: int = DEFAULT_BAUD, sim_ports: bool = False):
        self.clock_hz = clock_hz
        self.baud = baud
        self.div = divisor(clock_hz, baud)
        super().__init__({
            "rx": In(1, init=1),
            "source": Out(stream.Signature(8)),
            "frame_error": Out(1),
            "overruns": Out(16),
        } | ({"idle": Out(1)} if sim_ports else {}))

    def elaborate(self, platform):
        m = Module()
        rx = Signal(init=1)
        m.submodules.sync_rx = FFSynchronizer(self.rx, rx, init=1)

        timer = Signal(range(self.div + 1))
        bit = Signal(range(8))
        shreg = Signal(8)

        with m.If(self.source.valid & self.source.ready):
            m.d.sync += self.source.valid.eq(0)
        m.d.sync += self.frame_error.eq(0)

        with m.FSM() as fsm:
            with m.State("IDLE"):
                with m.If(~rx):
                    m.d.sync += timer.eq(self.div // 2 - 1)
                    m.next = "START"
            with m.State("START"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Elif(rx):        # a glitch, not a start bit
                    m.next = "IDLE"
                with m.Else():
                    m.d.sync += [timer.eq(self.div - 1), bit.eq(0)]
                    m.next = "DATA"
            with m.State("DATA"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Else():
                    m.d.sync += [shreg.eq(Cat(shreg[1:], rx)), timer.eq(self.div - 1),
                                 bit.eq(bit + 1)]
                    with m.If(bit == 7):
                        m.next = "STOP"
            with m.State("STOP"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Elif(rx):
                    with m.If(self.source.valid & ~self.source.ready):
                        m.d.sync += self.overruns.eq(self.overruns + 1)
                    m.d.sync += [self.source.payload.eq(shreg), self.source.valid.eq(1)]
                    m.next = "IDLE"
                with m.Else():
                    m.d.sync += self.frame_error.eq(1)
                    m.next = "BREAK"
            with m.State("BREAK"):
                with m.If(rx):
                    m.next = "IDLE"
        if hasattr(self, "idle"):
            m.d.comb += self.idle.eq(fsm.ongoing("IDLE") & rx & self.rx & ~self.source.valid &
                                     ~self.frame_error)
        return m


class UARTTx(wiring.Component):
    """Sends the bytes offered on ``sink`` as 8N1 on ``tx`` (idle high).

    ``sim_ports=True`` (simulation only) adds ``calm``, the clock edges from now on in
    which nothing but the bit timer counts (0: none), and ``skip``: an edge with
    ``skip = k`` (``k < calm``) also stands for the ``k`` edges after it.
    """

    def __init__(self, *, clock_hz: int, baud: int = DEFAULT_BAUD, sim_ports: bool = False):
        self.clock_hz = clock_hz
        self.baud = baud
        self.div = divisor(clock_hz, baud)
        members = {
            "tx": Out(1, init=1),
            "sink": In(stream.Signature(8)),
            "busy": Out(1),
        }
        if sim_ports:
            members |= {"calm": Out(range(self.div)), "skip": In(range(self.div))}
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        timer = Signal(range(self.div))
        bits = Signal(range(11))
        shreg = Signal(10, init=0x3FF)

        m.d.comb += self.tx.eq(shreg[0])
        m.d.comb += self.busy.eq(bits != 0)
        with m.If(bits == 0):
            m.d.comb += self.sink.ready.eq(1)
            with m.If(self.sink.valid):
                # start bit 0, data LSB first, stop bit 1
                m.d.sync += [shreg.eq(Cat(C(0, 1), self.sink.payload, C(1, 1))),
                             bits.eq(10), timer.eq(self.div - 1)]
        with m.Elif(timer != 0):
            if hasattr(self, "skip"):
                m.d.sync += timer.eq(timer - 1 - self.skip)
            else:       # (the hardware's netlist, untouched by the simulation's ports)
                m.d.sync += timer.eq(timer - 1)
        with m.Else():
            m.d.sync += [shreg.eq(Cat(shreg[1:], C(1, 1))), bits.eq(bits - 1),
                         timer.eq(self.div - 1)]
        if hasattr(self, "calm"):
            m.d.comb += self.calm.eq(Mux(bits != 0, timer, 0))
        return m
