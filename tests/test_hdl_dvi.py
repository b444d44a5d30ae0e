"""DVI output (hdl/dvi.py): the TMDS encoder against a Python reference written from the
DVI 1.0 specification (section 3.2.3), and the whole chain (fabric domain -> AsyncFIFO ->
serialiser domain) in a two-clock simulation, decoded back from the serial bits."""

from __future__ import annotations

import collections
import random

import pytest
from amaranth.sim import Simulator

from copperline.hdl.dvi import (CLOCK_SYMBOL, CONTROL_SYMBOLS, ENCODER_LATENCY,
                                TMDS_CLOCKS_PER_PIXEL, DVITransmitter, TMDSEncoder)

# ---------------------------------------------------------------- the reference (spec) -----


def _ones(x: int) -> int:
    return bin(x).count("1")


class RefEncoder:
    """DVI 1.0, 3.2.3, figure 3-5, one channel. Symbols as integers, bit 0 = q_out[0]
    (the first bit on the wire). ``cnt`` is the spec's cnt(t-1)."""

    #: (C1, C0) -> q_out, section 3.3.3 (listed there as q_out[0:9])
    CTL = {(0, 0): "0010101011", (0, 1): "1101010100",
           (1, 0): "0010101010", (1, 1): "1101010101"}

    def __init__(self, cnt: int = 0, mutant: str | None = None):
        self.cnt = cnt
        self.mutant = mutant

    @staticmethod
    def control(c0: int, c1: int) -> int:
        bits = RefEncoder.CTL[(c1, c0)]
        return sum(int(b) << i for i, b in enumerate(bits))

    def encode(self, d: int, de: int = 1, c0: int = 0, c1: int = 0) -> int:
        if not de:
            self.cnt = 0
            return self.control(c0, c1)
        mut = self.mutant
        D = [(d >> i) & 1 for i in range(8)]
        n1d = sum(D)
        tie = 1 if mut == "tie_on_d0_one" else 0
        if n1d > 4 or (n1d == 4 and D[0] == tie):
            q = [D[0]]
            for i in range(1, 8):
                q.append(1 - (q[i - 1] ^ D[i]))
            q.append(0)
        else:
            q = [D[0]]
            for i in range(1, 8):
                q.append(q[i - 1] ^ D[i])
            q.append(1)
        n1 = sum(q[:8])
        n0 = 8 - n1
        cnt = self.cnt
        out = [0] * 10
        if (cnt == 0 and mut != "no_cnt_zero") or n1 == n0:
            out[9] = 1 - q[8]
            out[8] = q[8]
            out[:8] = q[:8] if q[8] else [1 - b for b in q[:8]]
            if mut == "balanced_cnt_sign":
                cnt = cnt + (n1 - n0) if q[8] == 0 else cnt + (n0 - n1)
            else:
                cnt = cnt + (n0 - n1) if q[8] == 0 else cnt + (n1 - n0)
        else:
            invert = (cnt > 0 and n1 > n0) or (cnt < 0 and n0 > n1)
            if mut == "invert_only_positive":
                invert = cnt > 0 and n1 > n0
            if invert:
                out[9] = 1
                out[8] = q[8]
                out[:8] = [1 - b for b in q[:8]]
                cnt = cnt + (0 if mut == "no_2qm8" else 2 * q[8]) + (n0 - n1)
            else:
                out[9] = 0
                out[8] = q[8]
                out[:8] = q[:8]
                cnt = cnt - 2 * (1 - q[8]) + (n1 - n0)
        if mut == "q9_swapped" and n1 == 7:
            out[9] ^= 1
        self.cnt = cnt
        return sum(b << i for i, b in enumerate(out))


def ref_decode(sym: int):
    """One 10-bit symbol -> ("data", byte) or ("ctl", (c0, c1)); the inverse of the
    encoder (DVI 1.0 3.3.3 decode)."""
    for (c1, c0) in RefEncoder.CTL:
        if sym == RefEncoder.control(c0, c1):
            return ("ctl", (c0, c1))
    q = [(sym >> i) & 1 for i in range(10)]
    if q[9]:
        q[:8] = [1 - b for b in q[:8]]
    d = [q[0]]
    for i in range(1, 8):
        x = q[i] ^ q[i - 1]
        d.append(x if q[8] else 1 - x)
    return ("data", sum(b << i for i, b in enumerate(d)))


def _transitions(t: dict, cnt: int, v: int):
    if (cnt, v) not in t:
        e = RefEncoder(cnt)
        sym = e.encode(v)
        t[(cnt, v)] = (sym, e.cnt)
    return t[(cnt, v)]


def reachable_states() -> list[int]:
    t: dict = {}
    seen, todo = {0}, [0]
    while todo:
        c = todo.pop()
        for v in range(256):
            n = _transitions(t, c, v)[1]
            if n not in seen:
                seen.add(n)
                todo.append(n)
    return sorted(seen)


def coverage_stream(seed: int = 1):
    """Inputs ``(data, de, c0, c1)`` that present every 8-bit value from every reachable
    disparity state (each pair steered to by the shortest path of data values), with the
    four control symbols in between."""
    states = reachable_states()
    t: dict = {}

    def path(a, b):
        prev = {a: None}
        frontier = [a]
        while b not in prev:
            nxt = []
            for c in frontier:
                for v in range(256):
                    n = _transitions(t, c, v)[1]
                    if n not in prev:
                        prev[n] = (c, v)
                        nxt.append(n)
            frontier = nxt
        vals = []
        while prev[b] is not None:
            b, v = prev[b]
            vals.append(v)
        return vals[::-1]

    rng = random.Random(seed)
    pairs = [(s, v) for s in states for v in range(256)]
    rng.shuffle(pairs)
    stream, cnt = [], 0
    for i, (s, v) in enumerate(pairs):
        if i % 97 == 0:
            c0, c1 = (i // 97) & 1, (i // 194) & 1
            stream.append((0, 0, c0, c1))
            cnt = 0
        stream += [(x, 1, 0, 0) for x in path(cnt, s)] + [(v, 1, 0, 0)]
        cnt = _transitions(t, s, v)[1]
    return stream


def ref_run(stream, mutant=None):
    e = RefEncoder(mutant=mutant)
    out = []
    for d, de, c0, c1 in stream:
        before = e.cnt
        out.append((e.encode(d, de, c0, c1), e.cnt, before))
    return out


# ---------------------------------------------------------------- the reference's own checks


def test_reference_control_symbols_and_known_values():
    # the control symbols as DVI 1.0 lists them, and the encoder module's table
    assert [RefEncoder.control(c & 1, c >> 1) for c in range(4)] == list(CONTROL_SYMBOLS)
    assert len(set(CONTROL_SYMBOLS)) == 4
    # black from a balanced line: XOR-coded zeros, q_out = 01 00000000 (bit 9 first)
    e = RefEncoder()
    assert e.encode(0x00) == 0b0100000000 and e.cnt == -8
    # then inverted (cnt < 0, more zeros): 11 11111111, cnt += 2 + 8
    assert e.encode(0x00) == 0b1111111111 and e.cnt == 2
    # white: XNOR-coded (N1 = 8 > 4), q_m = 0 01010101 ... (checked by decoding)
    assert ref_decode(RefEncoder().encode(0xFF)) == ("data", 0xFF)


def test_reference_round_trip_and_dc_balance():
    states = reachable_states()
    # cnt stays even and within -8..8 (the encoder's signed 5-bit register holds it)
    assert states == list(range(-8, 9, 2))
    for cnt in states:
        for v in range(256):
            e = RefEncoder(cnt)
            sym = e.encode(v)
            assert ref_decode(sym) == ("data", v), (cnt, v)
            assert sym not in CONTROL_SYMBOLS
    # the running disparity of the line stays bounded over a random stream
    rng = random.Random(5)
    e, line = RefEncoder(), 0
    for _ in range(20000):
        sym = e.encode(rng.randrange(256))
        line += 2 * _ones(sym) - 10
        assert abs(line) <= 20


@pytest.mark.parametrize("mutant", ["tie_on_d0_one", "no_cnt_zero", "invert_only_positive",
                                    "no_2qm8", "q9_swapped", "balanced_cnt_sign"])
def test_coverage_stream_tells_a_wrong_algorithm_apart(mutant):
    # the stream the gateware is checked with catches a wrong branch, condition or count
    stream = coverage_stream()
    assert [s for s, _, _ in ref_run(stream, mutant)] != [s for s, _, _ in ref_run(stream)]


# ---------------------------------------------------------------- the encoder ---------------


def _simulate(dut, *benches, clocks=(("sync", 10e-9, None),)):
    sim = Simulator(dut)
    for domain, period, phase in clocks:
        sim.add_clock(period, domain=domain, phase=phase)
    for b in benches:
        sim.add_testbench(b)
    sim.run()


def _encoder_run(stream, gap=0):
    dut = TMDSEncoder()
    got = []

    async def bench(ctx):
        pending = list(stream)
        idle = 0
        while pending or idle < ENCODER_LATENCY + 2:
            if pending:
                d, de, c0, c1 = pending.pop(0)
                ctx.set(dut.data, d)
                ctx.set(dut.de, de)
                ctx.set(dut.c0, c0)
                ctx.set(dut.c1, c1)
                ctx.set(dut.en, 1)
            else:
                ctx.set(dut.en, 0)
                idle += 1
            await ctx.tick()
            if ctx.get(dut.valid):
                got.append((ctx.get(dut.symbol), ctx.get(dut.disparity)))
            for _ in range(gap):
                ctx.set(dut.en, 0)
                ctx.set(dut.data, 0x5A)        # what changes while en is low is ignored
                await ctx.tick()
                if ctx.get(dut.valid):
                    got.append((ctx.get(dut.symbol), ctx.get(dut.disparity)))

    _simulate(dut, bench)
    return got


def test_encoder_every_value_from_every_disparity_state():
    stream = coverage_stream()
    ref = ref_run(stream)
    # every (disparity state, value) pair is in the stream
    seen = {(before, d) for (d, de, _, _), (_, _, before) in zip(stream, ref) if de}
    assert seen >= {(s, v) for s in reachable_states() for v in range(256)}
    assert {(c0, c1) for d, de, c0, c1 in stream if not de} == {(0, 0), (0, 1), (1, 0), (1, 1)}
    got = _encoder_run(stream)
    assert len(got) == len(ref)
    for i, ((sym, cnt), (rsym, rcnt, _)) in enumerate(zip(got, ref)):
        assert (sym, cnt) == (rsym, rcnt), (i, stream[i], hex(sym), hex(rsym), cnt, rcnt)
    # and the symbols decode back to the inputs
    for (d, de, c0, c1), (sym, _) in zip(stream, got):
        assert ref_decode(sym) == (("data", d) if de else ("ctl", (c0, c1)))


def test_encoder_holds_between_pixels():
    # one pixel every 4 clocks, as the compositor presents them
    rng = random.Random(3)
    stream = [(rng.randrange(256), int(rng.random() > 0.2), rng.randrange(2), rng.randrange(2))
              for _ in range(300)]
    got = _encoder_run(stream, gap=3)
    assert [s for s, _ in got] == [s for s, _, _ in ref_run(stream)]


# ---------------------------------------------------------------- the whole chain -----------

Pixel = collections.namedtuple("Pixel", "r g b de hsync vsync")


def chain_pattern(n_active=24):
    """A short line: active pixels of every level per channel, then blanking with each
    (hsync, vsync) combination (both polarities of both syncs), then more active pixels."""
    px = []
    for i in range(n_active):
        px.append(Pixel(i % 16, (i * 7 + 3) % 16, (15 - i) % 16, 1, 0, 0))
    for hs, vs, n in ((0, 0, 3), (1, 0, 4), (1, 1, 3), (0, 1, 4), (0, 0, 2), (1, 1, 2)):
        px += [Pixel(0, 0, 0, 0, hs, vs)] * n
    for i in range(n_active):
        px.append(Pixel((i * 5) % 16, i % 16, (i * 11) % 16, 1, 1, 1))
    return px


def _decode_stream(samples):
    """Per-clock (data, clock) samples (two bits per channel, bit 0 first) -> the symbols
    of each channel, framed by the clock channel's 0 -> 1 edge."""
    bits = {ch: [] for ch in range(4)}
    for data, clk in samples:
        for k in range(2):
            for ch in range(3):
                bits[ch].append((data[k] >> ch) & 1)
            bits[3].append(clk[k] & 1)
    clock = bits[3]
    starts = [i for i in range(1, len(clock)) if clock[i] and not clock[i - 1]]
    assert starts, "no clock edge in the clock channel"
    first = starts[0]
    symbols = []
    for s in range(first, len(clock) - 9, 10):
        word = [sum(bits[ch][s + i] << i for i in range(10)) for ch in range(4)]
        assert word[3] == CLOCK_SYMBOL, f"clock channel out of step at bit {s}"
        symbols.append(tuple(word[:3]))
    return symbols


def decode_pixels(symbols):
    """(blue, green, red) symbols -> pixels, as a DVI receiver sees them: during active
    video (data symbols) hsync and vsync hold their last control values."""
    syncs = (0, 0)
    out = []
    for sym in symbols:
        b, g, r = (ref_decode(s) for s in sym)
        if b[0] == "ctl":
            assert g == r == ("ctl", (0, 0)), (b, g, r)
            syncs = b[1]
            out.append(Pixel(0, 0, 0, 0, *syncs))
            continue
        assert b[0] == g[0] == r[0] == "data"
        for kind, v in (b, g, r):
            assert v % 17 == 0, f"a channel value {v:#x} is not c * 17"
        out.append(Pixel(r[1] // 17, g[1] // 17, b[1] // 17, 1, *syncs))
    return out


@pytest.mark.parametrize("tmds_phase", [0.0, 3e-9, 6.5e-9])
def test_chain_every_pixel_arrives_in_order_once(tmds_phase):
    pattern = chain_pattern()
    tail = Pixel(0, 0, 0, 0, 1, 0)          # after the pattern: blanking, hsync only
    dut = DVITransmitter()
    samples = []
    n_pixels = len(pattern) + 40

    async def feed(ctx):                     # 100 MHz: a pixel every 4 clocks
        for i in range(n_pixels):
            p = pattern[i] if i < len(pattern) else tail
            for f, v in zip(Pixel._fields, p):
                ctx.set(getattr(dut, f), v)
            ctx.set(dut.pixel, 1)
            await ctx.tick("sync")
            ctx.set(dut.pixel, 0)
            await ctx.tick("sync").repeat(3)

    async def watch(ctx):                    # 125 MHz: sample the DDR pairs
        for _ in range(n_pixels * TMDS_CLOCKS_PER_PIXEL):
            await ctx.tick("tmds")
            samples.append((ctx.get(dut.data), ctx.get(dut.clock)))
        assert ctx.get(dut.underflows) == 0

    _simulate(dut, feed, watch, clocks=(("sync", 10e-9, None), ("tmds", 8e-9, tmds_phase)))
    pixels = decode_pixels(_decode_stream(samples))
    # idle (control 0, 0) until the FIFO starts, then the pattern, then the tail
    start = pixels.index(pattern[0])
    assert all(p == Pixel(0, 0, 0, 0, 0, 0) for p in pixels[:start])
    assert pixels[start:start + len(pattern)] == pattern
    rest = pixels[start + len(pattern):]
    assert rest and all(p == tail for p in rest)


def _tiny_mode():
    from copperline.firmware.display import VideoMode
    # 6 active + 2 front + 3 sync + 1 back pixels a line, 3 + 1 + 1 + 1 lines, 4 clocks each
    return VideoMode("tiny", 6, 2, 3, 1, 3, 1, 1, 1, 4, hsync_negative=True,
                     vsync_negative=False)


def test_test_picture_through_the_chain_decodes_to_the_mode():
    """copperline.boards.ulx3s.VideoTiming (the bring-up top's picture) -> DVITransmitter:
    the decoded lines have the mode's active / front / sync / back pixels, with the sync
    levels of its polarity (negative hsync: low during sync; positive vsync)."""
    from amaranth import Module
    from copperline.boards.ulx3s import VideoTiming
    mode = _tiny_mode()
    m = Module()
    m.submodules.timing = timing = VideoTiming(mode)
    m.submodules.dvi = dvi = DVITransmitter()
    m.d.comb += [getattr(dvi, s).eq(getattr(timing, s)) for s in Pixel._fields + ("pixel",)]
    samples = []
    frames = 3
    n = frames * mode.h_total * mode.v_total + 20

    async def watch(ctx):
        for _ in range(n * TMDS_CLOCKS_PER_PIXEL):
            await ctx.tick("tmds")
            samples.append((ctx.get(dvi.data), ctx.get(dvi.clock)))

    _simulate(m, watch, clocks=(("sync", 10e-9, None), ("tmds", 8e-9, 1e-9)))
    pixels = decode_pixels(_decode_stream(samples))
    # the expected frame, pixel by pixel (x, y from 0 at the first active pixel)
    expect = []
    for y in range(mode.v_total):
        for x in range(mode.h_total):
            hs = mode.h_active + mode.h_front <= x < mode.h_active + mode.h_front + mode.h_sync
            vs = mode.v_active + mode.v_front <= y < mode.v_active + mode.v_front + mode.v_sync
            de = x < mode.h_active and y < mode.v_active
            expect.append((int(de), int(hs) ^ 1, int(vs)))
    got = [(p.de, p.hsync, p.vsync) for p in pixels]
    start = next(i for i in range(len(got)) if got[i:i + len(expect)] == expect)
    assert start < 2 * len(expect) and got[start + len(expect):start + 2 * len(expect)] == expect
    # the border is white, the frame's active pixels are c * 17 colours (decoded above)
    assert pixels[start][:3] == (15, 15, 15)


def test_clocks_make_exactly_the_pixel_rate():
    from copperline.boards.common import PLL_SECONDARY_DOMAIN, PLL_SETTINGS, pll_secondary_hz
    from copperline.boards.registry import get_board
    from copperline.firmware.display import MODES
    from copperline.hdl.dvi import TMDS_DOMAIN
    assert PLL_SECONDARY_DOMAIN == TMDS_DOMAIN
    for name in ("ulx3s-12f", "ulx3s-85f"):
        b = get_board(name)
        p = PLL_SETTINGS[(b.family, b.osc_hz, b.clock_hz)]
        vco = b.osc_hz * p["CLKFB_DIV"] // p["CLKI_DIV"] * p["CLKOP_DIV"]
        assert 400e6 <= vco <= 800e6 and vco == 500_000_000
        tmds = pll_secondary_hz(b)
        assert tmds == vco // p["CLKOS_DIV"] == 125_000_000
        mode = MODES[b.video]
        # 4 fabric clocks and 5 tmds clocks per pixel: the same 25 MHz, exactly
        assert b.clock_hz * TMDS_CLOCKS_PER_PIXEL == tmds * mode.fabric_per_pixel
        assert b.display().pixel_hz == tmds / TMDS_CLOCKS_PER_PIXEL
        assert p["CLKOS_CPHASE"] == p["CLKOP_CPHASE"] == (p["CLKOP_DIV"] - 1) // 2
    assert pll_secondary_hz(get_board("icebreaker")) is None


def test_board_tops_bind_the_gpdi_pins_and_the_tmds_clock(tmp_path):
    from copperline.boards.common import board_top, flow_overrides
    from copperline.boards.registry import get_board
    from copperline.boards.ulx3s import gpdi_test_top
    b = get_board("ulx3s-85f")
    b.platform().prepare(gpdi_test_top(b), name="copper",
                         **flow_overrides("ecp5")).extract(str(tmp_path / "t"))
    il = (tmp_path / "t" / "copper.il").read_text()
    lpf = (tmp_path / "t" / "copper.lpf").read_text()
    assert il.count("cell \\ODDRX1F ") == 4 and "CLKOS_DIV" in il
    for pin in ("A16", "A14", "A12", "A17"):
        assert f'SITE "{pin}"' in lpf
    assert lpf.count("IO_TYPE=LVCMOS33D") == 4
    assert 'FREQUENCY NET "pll_clk_tmds" 125000000.0 HZ' in lpf
    # the board's own top: the compositor on the GPDI pins, CLKOS driving the tmds clock
    b.platform().prepare(board_top(b, baud=1_000_000), name="copper",
                         **flow_overrides("ecp5")).extract(str(tmp_path / "b"))
    il = (tmp_path / "b" / "copper.il").read_text()
    pll = il.split("cell \\EHXPLLL", 1)[1].split("\n  end", 1)[0]
    assert "CLKOP_DIV 5" in pll and "connect \\CLKOS " in pll
    assert il.count("cell \\ODDRX1F ") == 4 and "compositor" in il
    # without the core there is no display: CLKOS unconnected, no tmds clock
    b.platform().prepare(board_top(b, baud=1_000_000, with_core=False), name="copper",
                         **flow_overrides("ecp5")).extract(str(tmp_path / "n"))
    il = (tmp_path / "n" / "copper.il").read_text()
    pll = il.split("cell \\EHXPLLL", 1)[1].split("\n  end", 1)[0]
    assert "CLKOS" not in pll and "tmds" not in il
    # the iCEBreaker's: one clock (its DVI Pmod takes the pixels at the fabric clock)
    ice = get_board("icebreaker")
    ice.platform().prepare(board_top(ice, baud=1_000_000), name="copper").extract(
        str(tmp_path / "i"))
    assert "tmds" not in (tmp_path / "i" / "copper.il").read_text()


def test_gpdi_output_refuses_missing_video_signals():
    from copperline.boards.ulx3s import gpdi_output

    class Half:
        r = g = b = de = None

    with pytest.raises(TypeError, match="hsync, vsync, pixel"):
        gpdi_output(None, None, Half())        # (refused before it touches the module)


def test_board_top_with_a_video_output_makes_the_tmds_clock(tmp_path):
    """board_top(..., video=...): the link/core top plus the display output, the PLL's
    CLKOS then driving the tmds domain (what the compositor's integration will pass)."""
    from copperline.boards.common import board_top, flow_overrides
    from copperline.boards.registry import get_board
    from copperline.boards.ulx3s import pattern_video
    b = get_board("ulx3s-85f")
    b.platform().prepare(board_top(b, baud=1_000_000, video=pattern_video(b)), name="copper",
                         **flow_overrides("ecp5")).extract(str(tmp_path))
    il = (tmp_path / "copper.il").read_text()
    lpf = (tmp_path / "copper.lpf").read_text()
    pll = il.split("cell \\EHXPLLL", 1)[1].split("\n  end", 1)[0]
    assert "CLKOS_DIV 4" in pll and "connect \\CLKOS " in pll
    assert il.count("cell \\ODDRX1F ") == 4 and "cell \\copper.top " in il
    assert 'FREQUENCY NET "pll_clk_tmds" 125000000.0 HZ' in lpf
    assert 'SITE "A17"' in lpf and 'SITE "M1"' in lpf        # GPDI clock, UART rx
    with pytest.raises(ValueError, match="second clock"):
        board_top(get_board("icebreaker"), baud=1_000_000, video=lambda m, p, t: None)


def test_chain_recovers_from_a_stall():
    """Pixels stop for a while (the fabric side stalls): the output sends blanking, counts
    the underflow, starts again once the FIFO holds START_LEVEL words, and every pixel of
    both runs arrives in order, once."""
    from copperline.hdl.dvi import START_LEVEL
    first = chain_pattern(12)
    # (syncs as the idle blanking before them leaves them: DVI sends none in active video)
    second = [Pixel(i % 16, 15 - i % 16, (3 * i) % 16, 1, 0, 0) for i in range(30)]
    dut = DVITransmitter()
    samples = []
    stall = 25                                   # pixel times without a pixel
    n = len(first) + stall + len(second) + START_LEVEL + 10

    tail = [Pixel(0, 0, 0, 0, 1, 1)] * 20     # (keeps the FIFO fed to the end)

    async def feed(ctx):
        for i, p in enumerate(first + [None] * stall + second + tail):
            if p is not None:
                for f, v in zip(Pixel._fields, p):
                    ctx.set(getattr(dut, f), v)
            ctx.set(dut.pixel, p is not None)
            await ctx.tick("sync")
            ctx.set(dut.pixel, 0)
            await ctx.tick("sync").repeat(3)

    async def watch(ctx):
        for _ in range(n * TMDS_CLOCKS_PER_PIXEL):
            await ctx.tick("tmds")
            samples.append((ctx.get(dut.data), ctx.get(dut.clock)))
        assert ctx.get(dut.underflows) == 1 and ctx.get(dut.running)

    _simulate(dut, feed, watch, clocks=(("sync", 10e-9, None), ("tmds", 8e-9, 2e-9)))
    pixels = decode_pixels(_decode_stream(samples))
    a = pixels.index(first[0])
    assert pixels[a:a + len(first)] == first
    gap = pixels[a + len(first):]
    b = gap.index(second[0])
    # between the runs only blanking (control symbols (0, 0): idle, syncs as last sent)
    assert b > 0 and all(p.de == 0 and p[:3] == (0, 0, 0) for p in gap[:b])
    assert gap[b:b + len(second)] == second
