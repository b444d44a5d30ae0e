"""UART gateware: loopback, baud tolerance, framing errors, divisor choice."""

import pytest
from amaranth import Elaboratable, Module
from amaranth.sim import Simulator

from copperline.hdl.uart import BitTiming, UARTRx, UARTTx, bit_timing, divisor

CLOCK = 12_000_000


def test_divisor_exact_for_both_boards():
    assert divisor(12_000_000, 1_000_000) == 12
    assert divisor(25_000_000, 1_000_000) == 25
    assert divisor(12_000_000, 115_200) == 104


def test_bit_timing_3_mbaud_on_both_boards_and_12_mbaud_at_48_mhz():
    assert bit_timing(12_000_000, 3_000_000) == BitTiming(4)           # iCEBreaker: exact
    assert bit_timing(25_000_000, 3_000_000) == BitTiming(8, 1, 3)     # ULX3S: 8 1/3 clocks
    assert bit_timing(48_000_000, 12_000_000) == BitTiming(4)          # iCEBreaker PLL
    assert bit_timing(100_000_000, 3_000_000) == BitTiming(33)         # 1 % off: whole
    assert divisor(25_000_000, 3_000_000) == 8


@pytest.mark.parametrize("clock,baud,msg", [(12_000_000, 5_000_000, "too fast"),
                                            (12_000_000, 12_000_000,
                                             "needs >= 4 cycles/bit: at most 3000000 baud"),
                                            (12_000_000, 2_500_000, "off"),
                                            (12_000_000, 0, "positive")])
def test_divisor_refuses_bad_rates(clock, baud, msg):
    with pytest.raises(ValueError, match=msg):
        divisor(clock, baud)


def _bits(byte, stop=1):
    return [0] + [(byte >> i) & 1 for i in range(8)] + [stop]


def _drive_line(ctx, rx, bits, cycles_per_bit):
    """Yields (via async) the line levels, cycles_per_bit may be fractional."""
    async def run():
        t = 0.0
        for b in bits:
            ctx.set(rx, b)
            t += cycles_per_bit
            n = int(round(t)) - int(round(t - cycles_per_bit))
            await ctx.tick().repeat(n)
    return run()


def _receive(data_bits, cycles_per_bit, baud=1_000_000, clock=CLOCK):
    dut = UARTRx(clock_hz=clock, baud=baud)
    got, errors = [], []
    sim = Simulator(dut)
    sim.add_clock(1 / clock)

    async def monitor(ctx):
        ctx.set(dut.source.ready, 1)
        while True:
            await ctx.tick()
            if ctx.get(dut.source.valid):
                got.append(ctx.get(dut.source.payload))
            if ctx.get(dut.frame_error):
                errors.append(len(got))

    async def drive(ctx):
        ctx.set(dut.rx, 1)
        await ctx.tick().repeat(30)
        await _drive_line(ctx, dut.rx, data_bits, cycles_per_bit)
        ctx.set(dut.rx, 1)
        await ctx.tick().repeat(40)

    sim.add_testbench(monitor, background=True)
    sim.add_testbench(drive)
    sim.run()
    return got, errors


@pytest.mark.parametrize("skew", [0.97, 1.0, 1.03])
def test_rx_tolerates_baud_skew(skew):
    data = [0x55, 0x00, 0xFF, 0xC0, 0x3A]
    bits = [1, 1] + [b for byte in data for b in _bits(byte)]
    got, errors = _receive(bits, 12 * skew)
    assert got == data and errors == []


@pytest.mark.parametrize("skew", [0.98, 1.0, 1.02])
def test_rx_fractional_period_tolerates_baud_skew(skew):
    # 3 Mbaud on the ULX3S's 25 MHz: bits of 8 or 9 clocks, 8 1/3 on average
    data = [0x55, 0x00, 0xFF, 0xC0, 0x3A, 0x81, 0x7E]
    bits = [1, 1] + [b for byte in data for b in _bits(byte)]
    got, errors = _receive(bits, 25 / 3 * skew, baud=3_000_000, clock=25_000_000)
    assert got == data and errors == []


def test_rx_framing_error_then_recovers():
    bits = _bits(0xA5, stop=0) + [0] * 10 + [1, 1, 1] + _bits(0x5A)
    got, errors = _receive(bits, 12)
    assert errors == [0]          # the byte with a low stop bit is refused...
    assert got == [0x5A]          # ...and the next byte after the line idles is received


class _Loop(Elaboratable):
    def __init__(self, clock=CLOCK, baud=3_000_000):
        self.tx = UARTTx(clock_hz=clock, baud=baud)
        self.rx = UARTRx(clock_hz=clock, baud=baud)

    def elaborate(self, platform):
        m = Module()
        m.submodules.tx, m.submodules.rx = self.tx, self.rx
        m.d.comb += self.rx.rx.eq(self.tx.tx)
        return m


@pytest.mark.parametrize("clock,baud", [(CLOCK, 3_000_000), (CLOCK, 1_000_000),
                                        (25_000_000, 3_000_000)])
def test_tx_to_rx_loopback_back_to_back(clock, baud):
    dut = _Loop(clock, baud)
    data = list(range(0, 256, 7)) + [0xC0, 0xDB]
    got, at = [], []                        # the bytes received and when
    sim = Simulator(dut)
    sim.add_clock(1 / clock)

    async def send(ctx):
        for b in data:
            ctx.set(dut.tx.sink.payload, b)
            ctx.set(dut.tx.sink.valid, 1)
            await ctx.tick().until(dut.tx.sink.ready)
        ctx.set(dut.tx.sink.valid, 0)
        await ctx.tick().repeat(400)

    async def recv(ctx):
        ctx.set(dut.rx.source.ready, 1)
        t = 0
        while True:
            await ctx.tick()
            t += 1
            if ctx.get(dut.rx.source.valid):
                got.append(ctx.get(dut.rx.source.payload))
                at.append(t)

    sim.add_testbench(recv, background=True)
    sim.add_testbench(send)
    sim.run()
    assert got == data
    # back to back, the frames follow the rate: 10 bits of clock / baud each, on average
    span = (at[-1] - at[0]) / (len(at) - 1)
    assert abs(span - 10 * clock / baud) <= 2 / (len(at) - 1), span
