"""8N1 UART receiver and transmitter with byte streams (``amaranth.lib.stream``).

Both are parameterised by ``clock_hz`` and ``baud``; :func:`bit_timing` picks the bit
period. When a whole number of clocks per bit is within 2 % of the rate (a UART tolerates
roughly ±4 % between both ends in total) the bit lasts ``round(clock_hz / baud)`` clocks,
at least 4. Otherwise, with at least 8 clocks per bit, the period is fractional: bits last
``div`` or ``div + 1`` clocks so that they average ``clock_hz / baud`` (a Bresenham
accumulator; each edge is at most one clock off the ideal one). Anything else is refused
with the reason. The default link rate, 3 Mbaud, is 4 clocks per bit on the iCEBreaker
(12 MHz) and 8 1/3 on the ULX3S (25 MHz); the FT2232H (12 MHz / n) and FT231X (3 MHz / n)
generate it exactly.
"""

from __future__ import annotations

from fractions import Fraction
from typing import NamedTuple

from amaranth import *
from amaranth.lib import stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

from copperline.firmware.board_interface import DEFAULT_BAUD

__all__ = ["BitTiming", "bit_timing", "divisor", "UARTRx", "UARTTx"]


#: The fewest clocks per bit: the receiver samples mid-bit after a 2-flop synchroniser.
MIN_CLOCKS_PER_BIT = 4
#: The fewest clocks per bit for a fractional period (its edges jitter by one clock).
MIN_CLOCKS_PER_BIT_FRACTIONAL = 8
#: The most a rate may be off: a whole divisor's rounding, a fractional one's approximation.
MAX_ERROR = 0.02
MAX_ERROR_FRACTIONAL = 0.001


class BitTiming(NamedTuple):
    """A bit period of ``div + num / den`` clocks (``num == 0``: exactly ``div``)."""
    div: int
    num: int = 0
    den: int = 1

    @property
    def fractional(self) -> bool:
        return self.num != 0

    @property
    def longest(self) -> int:
        """The most clocks one bit lasts."""
        return self.div + (1 if self.num else 0)

    @property
    def clocks(self) -> float:
        return self.div + self.num / self.den


def bit_timing(clock_hz: int, baud: int) -> BitTiming:
    """The bit period for ``baud`` with a ``clock_hz`` clock; ValueError (saying why and
    what the clock allows) if the UART cannot make the rate."""
    if baud <= 0 or clock_hz <= 0:
        raise ValueError(f"clock_hz and baud must be positive (got {clock_hz}, {baud})")
    ratio = clock_hz / baud
    div = round(ratio)
    fastest = clock_hz // MIN_CLOCKS_PER_BIT
    if div < MIN_CLOCKS_PER_BIT:
        raise ValueError(f"baud {baud} is too fast for a {clock_hz / 1e6:g} MHz clock (needs >= "
                         f"{MIN_CLOCKS_PER_BIT} cycles/bit: at most {fastest} baud)")
    err = abs(clock_hz / div - baud) / baud
    if err <= MAX_ERROR:
        return BitTiming(div)
    if ratio < MIN_CLOCKS_PER_BIT_FRACTIONAL:
        raise ValueError(f"baud {baud} is {err:.1%} off with a {clock_hz / 1e6:g} MHz clock "
                         f"(divisor {div}), and {ratio:.2f} cycles/bit is too few for a "
                         f"fractional divisor (needs >= {MIN_CLOCKS_PER_BIT_FRACTIONAL}); pick a "
                         f"rate that divides the clock better (clock / n for n >= "
                         f"{MIN_CLOCKS_PER_BIT}) or at most {clock_hz // MIN_CLOCKS_PER_BIT_FRACTIONAL} baud")
    period = Fraction(clock_hz, baud).limit_denominator(255)
    if abs(float(period) - ratio) / ratio > MAX_ERROR_FRACTIONAL:   # pragma: no cover
        raise ValueError(f"baud {baud} cannot be approximated with a {clock_hz} Hz clock")
    whole, rest = divmod(period.numerator, period.denominator)
    return BitTiming(whole, rest, period.denominator)


def divisor(clock_hz: int, baud: int) -> int:
    """Whole clock cycles per bit (a fractional period's shorter bit); ValueError if the
    rate cannot be made (see :func:`bit_timing`)."""
    return bit_timing(clock_hz, baud).div


def _reload(m: Module, timing: BitTiming, timer: Signal, acc: Signal | None, extra: int = 0):
    """Load ``timer`` for the next bit: ``div - 1`` (+1 when the fraction carries)."""
    if acc is None:
        m.d.sync += timer.eq(timing.div - 1 + extra)
        return
    nxt = acc + timing.num
    with m.If(nxt >= timing.den):
        m.d.sync += [acc.eq(nxt - timing.den), timer.eq(timing.div + extra)]
    with m.Else():
        m.d.sync += [acc.eq(nxt), timer.eq(timing.div - 1 + extra)]


class UARTRx(wiring.Component):
    """Receives 8N1 bytes from ``rx`` and offers them on ``source``.

    The line is sampled in the middle of each bit. There is no flow control: the byte on
    ``source`` is the receiver's shift register itself (no copy: area), which stays put
    until the next byte's first data bit, one and a half bit times after its start bit at
    the earliest; a consumer takes it at once (the link always does). A byte not taken
    before the next one completes is lost and counted in ``overruns``.
    A missing stop bit pulses ``frame_error`` and waits for the line to go idle (high).

    ``sim_ports=True`` (simulation only) adds ``idle``: nothing in progress (no byte being
    received or waiting on ``source``, no error pulse, the line high, and high through
    the synchroniser when it has been for two clocks), so nothing changes at the next
    edge while the line stays high.
    """

    def __init__(self, *, clock_hz: int, baud: int = DEFAULT_BAUD, sim_ports: bool = False):
        self.clock_hz = clock_hz
        self.baud = baud
        self.timing = bit_timing(clock_hz, baud)
        self.div = self.timing.div
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

        timer = Signal(range(self.timing.longest + 1))
        acc = Signal(range(self.timing.den)) if self.timing.fractional else None
        bit = Signal(range(8))
        shreg = Signal(8)

        m.d.comb += self.source.payload.eq(shreg)
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
                    m.d.sync += bit.eq(0)
                    _reload(m, self.timing, timer, acc)
                    m.next = "DATA"
            with m.State("DATA"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Else():
                    m.d.sync += [shreg.eq(Cat(shreg[1:], rx)), bit.eq(bit + 1)]
                    _reload(m, self.timing, timer, acc)
                    with m.If(bit == 7):
                        m.next = "STOP"
            with m.State("STOP"):
                with m.If(timer != 0):
                    m.d.sync += timer.eq(timer - 1)
                with m.Elif(rx):
                    with m.If(self.source.valid & ~self.source.ready):
                        m.d.sync += self.overruns.eq(self.overruns + 1)
                    m.d.sync += self.source.valid.eq(1)
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
        self.timing = bit_timing(clock_hz, baud)
        self.div = self.timing.div
        members = {
            "tx": Out(1, init=1),
            "sink": In(stream.Signature(8)),
            "busy": Out(1),
        }
        if sim_ports:
            span = self.timing.longest
            members |= {"calm": Out(range(span)), "skip": In(range(span))}
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        timer = Signal(range(self.timing.longest))
        acc = Signal(range(self.timing.den)) if self.timing.fractional else None
        bits = Signal(range(11))
        shreg = Signal(10, init=0x3FF)

        m.d.comb += self.tx.eq(shreg[0])
        m.d.comb += self.busy.eq(bits != 0)
        # the stop bit's last clock takes the next byte: frames back to back are exactly
        # 10 bit periods apart (not one clock more, 2.5 % of the line at 4 clocks/bit)
        last = (bits == 1) & (timer == 0)
        with m.If((bits == 0) | last):
            m.d.comb += self.sink.ready.eq(1)
            with m.If(self.sink.valid):
                # start bit 0, data LSB first, stop bit 1
                m.d.sync += [shreg.eq(Cat(C(0, 1), self.sink.payload, C(1, 1))),
                             bits.eq(10)]
                _reload(m, self.timing, timer, acc)
            with m.Elif(last):
                m.d.sync += [shreg.eq(Cat(shreg[1:], C(1, 1))), bits.eq(0)]
        with m.Elif(timer != 0):
            if hasattr(self, "skip"):
                m.d.sync += timer.eq(timer - 1 - self.skip)
            else:       # (the hardware's netlist, untouched by the simulation's ports)
                m.d.sync += timer.eq(timer - 1)
        with m.Else():
            m.d.sync += [shreg.eq(Cat(shreg[1:], C(1, 1))), bits.eq(bits - 1)]
            _reload(m, self.timing, timer, acc)
        if hasattr(self, "calm"):
            m.d.comb += self.calm.eq(Mux(bits != 0, timer, 0))
        return m
