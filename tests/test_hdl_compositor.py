"""The layer compositor (hdl/compositor.py) against the display model (firmware/display.py):
pixel for pixel, register samples at the model's exact cycles (with a register-file model
and with the real Core), and the video timing of the mode; surfaces written through the
compositor's surface-memory port, drawn as ``render_frame`` draws them
(``surface_memory.read_surface``).

The modes here are small (a 24 x 4 canvas) with the horizontal blanking the composer
needs: a 640x480 frame is 800k fabric clocks, too many for amaranth.sim.
"""

import pytest
from amaranth import Elaboratable, Module
from amaranth.sim import Simulator

from copperline.firmware import isa
from copperline.firmware.display import (BACKGROUND, FIELD_ORDER, Display, RegisterHistory,
                                         VideoMode, render_frame, scale_up, sample_offset)
from copperline.hdl.compositor import Compositor, composer_budget

CONTEXTS = 4
RI = isa.register_index


def small_mode(canvas_w=24, canvas_h=4, fpp=1, layers=16, h_total=None, v_blank=(1, 1, 1),
               name="test", negative=True, surface_words=0):
    """A mode with a ``canvas_w`` x ``canvas_h`` canvas; ``h_total`` None: the smallest
    whole line (in core cycles) the compositor takes."""
    h_active = 2 * canvas_w

    def mode(ht):
        return VideoMode(name, h_active, 2, 4, ht - h_active - 6, 2 * canvas_h, *v_blank, fpp,
                         negative, negative)
    if h_total is None:
        h_total = h_active + 8
        while True:
            if ((h_total * fpp) % CONTEXTS == 0
                    and layers * len(FIELD_ORDER) <= 2 * h_total * fpp // CONTEXTS):
                b = composer_budget(Display(mode(h_total), CONTEXTS, 1_000_000, layers))
                if b["needed"] <= b["window"]:
                    break
            h_total += 1
    return Display(mode(h_total), CONTEXTS, 1_000_000, layers, surface_words)


def raw(index, value):
    """The register file's bits of ``value`` (two's complement in the field's width)."""
    return value & ((1 << isa.layer_field(index).width) - 1)


def layer_writes(cycle, n, **fields):
    return [(cycle, RI(n, f), raw(RI(n, f), v)) for f, v in fields.items()]


class Capture:
    """What the compositor presented: frames (rows of RGB444 tuples, from each
    ``frame_start``) and every pixel strobe's (clock, de, hsync, vsync, frame_start)."""

    def __init__(self):
        self.frames = []
        self.strobes = []


async def _sample(ctx, dut, t, t_reset, cap: Capture, timing: bool):
    if not ctx.get(dut.pixel):
        return
    fs, de = ctx.get(dut.frame_start), ctx.get(dut.de)
    if timing:
        cap.strobes.append((t, de, ctx.get(dut.hsync), ctx.get(dut.vsync), fs))
    if fs and t > t_reset:
        cap.frames.append([])
    if cap.frames and de:
        px = (ctx.get(dut.r), ctx.get(dut.g), ctx.get(dut.b))
        w = dut.display.mode.h_active
        f = cap.frames[-1]
        if not f or len(f[-1]) == w:
            f.append([])
        f[-1].append(px)


def run_model(display, value, frames=1, tb_phase=0, pre_cycles=37, timing=False, port=None,
              surface_memory="auto"):
    """The compositor with a register-file model: an address given in phase 0 of global
    cycle ``s`` reads ``value(index, s)`` one clock later (in a later phase: the value
    after cycle ``s``'s writes). The time-base reset comes in phase ``tb_phase`` of the
    core cycle ``pre_cycles`` after power-up, which becomes cycle 0. ``port(ctx, dut, t)``
    drives the surface memory's write port in clock ``t``."""
    dut = Compositor(display, surface_memory=surface_memory)
    C = display.contexts
    t0 = pre_cycles * C                   # first clock of global cycle 0
    t_reset = t0 + tb_phase
    end = t0 + frames * display.frame_cycles * C + dut.latency + 2
    cap = Capture()

    async def bench(ctx):
        addr_prev, t_prev = 0, -1
        for t in range(end):
            ph = t % C
            ctx.set(dut.advance, ph == C - 1)
            ctx.set(dut.tb_reset, t == t_reset)
            g_prev = (t_prev - t0) // C
            ctx.set(dut.reg_data, value(addr_prev, g_prev if t_prev % C == 0 else g_prev + 1)
                    if t_prev >= t0 else 0x5A5A)
            if port is not None:
                port(ctx, dut, t)
            await _sample(ctx, dut, t, t_reset, cap, timing)
            addr_prev, t_prev = ctx.get(dut.reg_addr), t
            await ctx.tick()

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    cap.t0, cap.latency, cap.dut = t0, dut.latency, dut
    return cap


def expected(display, frame, value, surface=lambda number: None):
    return scale_up(render_frame(display, frame, value, surface))


def diff(got, want):
    """Where two pictures differ (for the assertion message)."""
    if len(got) != len(want):
        return f"{len(got)} rows, expected {len(want)}"
    bad = [(y, x, g, w) for y, (gr, wr) in enumerate(zip(got, want))
           for x, (g, w) in enumerate(zip(gr, wr)) if g != w]
    return f"{len(bad)} pixels differ, first {bad[:4]}"


def check_frames(cap, display, value, frames, surface=lambda number: None):
    assert len(cap.frames) >= frames
    for k in range(frames):
        want = expected(display, k, value, surface)
        assert cap.frames[k] == want, f"frame {k}: {diff(cap.frames[k], want)}"


# a scene of 16 layers: overlaps, z ties, clipping on every edge, alpha 0/1/77/128/254/255
STATIC = {
    0: dict(x=0, y=0, alpha=255, z=0, visible=1),       # opaque base
    1: dict(x=4, y=-2, alpha=128, z=0, visible=1),      # z tie with 0: drawn after it
    2: dict(x=-5, y=1, alpha=77, z=-1, visible=1),      # below 0, left clip
    3: dict(x=20, y=-13, alpha=200, z=5, visible=1),    # right clip, lines 0..2
    4: dict(x=-15, y=0, alpha=255, z=100, visible=1),   # one pixel (x = 0)
    5: dict(x=-16, y=0, alpha=255, z=101, visible=1),   # just off the left edge
    6: dict(x=23, y=3, alpha=1, z=7, visible=1),        # one pixel, line 3, alpha 1
    7: dict(x=6, y=0, alpha=0, z=1000, visible=1),      # alpha 0: no change
    8: dict(x=8, y=1, alpha=254, z=-300, visible=0),    # hidden
    9: dict(x=2, y=2, alpha=128, z=16, visible=1),
    10: dict(x=3, y=2, alpha=128, z=17, visible=1),     # z differs from 9 in its low bits
    11: dict(x=10, y=-16, alpha=255, z=3, visible=1),   # just above the canvas
    12: dict(x=12, y=3, alpha=255, z=-32768, visible=1),
    13: dict(x=1, y=0, alpha=99, z=32767, visible=1),
    14: dict(x=7, y=1, alpha=128, z=16, visible=1),     # z tie with 9: drawn after it
    15: dict(x=-8, y=-8, alpha=180, z=5, visible=1),    # z tie with 3, every line
}


def static_history(layers=STATIC, cycle=0):
    writes = []
    for n, f in layers.items():
        writes += layer_writes(cycle, n, **f)
    return RegisterHistory(writes)


@pytest.mark.parametrize("tb_phase", [0, 1, 2])
def test_static_layers_pixel_exact(tb_phase):
    """Overlaps, ties in z broken by layer number, clipping, alpha, hidden layers; the
    time-base reset in any phase of its core cycle but the last gives frame 0 from its
    first pixel."""
    d = small_mode()
    hist = static_history()
    cap = run_model(d, hist.value, tb_phase=tb_phase)
    check_frames(cap, d, hist.value, 1)
    canvas = render_frame(d, 0, hist.value)
    assert sum(p != BACKGROUND for row in canvas for p in row) > len(canvas[0]) * 3


def test_clipping_on_a_canvas_whose_table_shares_the_addresses():
    """A 48-pixel canvas: a layer's pixels left of x = 0 would land on the table of the
    layers' samples (the top rows of the buffer half of even lines), far x values would
    wrap onto the canvas: clipped and refused, the picture is the model's."""
    d = small_mode(canvas_w=48, layers=8)     # (8 layers: a 64-row table, 7-bit halves)
    layers = {0: dict(x=-5, y=0, alpha=255, z=-100, visible=1),
              1: dict(x=-15, y=-3, alpha=200, z=-99, visible=1),
              2: dict(x=1028, y=0, alpha=255, z=0, visible=1),      # 1028 % 128 = 4
              3: dict(x=-1020, y=0, alpha=255, z=0, visible=1),
              4: dict(x=40, y=0, alpha=255, z=1, visible=1),
              5: dict(x=-16, y=0, alpha=255, z=2, visible=1)}
    layers |= {n: dict(x=6 * n - 40, y=n % 4 - 3, alpha=60 + 11 * n, z=n, visible=1)
               for n in range(6, 8)}
    hist = static_history(layers)
    cap = run_model(d, hist.value)
    assert cap.dut.half_bits == 7 and cap.dut.x_bits - 1 == 7    # (x's bits reach the table)
    check_frames(cap, d, hist.value, 1)


def test_tie_order_and_rounding_are_visible():
    """The scene's expected picture depends on the tie order and the blend's rounding:
    a compositor that drew ties by descending layer, or rounded, would differ."""
    d = small_mode()
    hist = static_history()
    good = render_frame(d, 0, hist.value)
    rev = dict(STATIC)
    rev[9], rev[14] = STATIC[14], STATIC[9]     # the same layers with their numbers swapped
    rev[9] = rev[9] | {"z": 16}
    rev[14] = rev[14] | {"z": 16}
    assert render_frame(d, 0, static_history(rev).value) != good


def test_worst_case_in_the_tightest_mode():
    """All 16 layers on every line, in reverse z order (every pass of the sort finds the
    next one), in the smallest line the compositor accepts: the composition still ends in
    time. One core cycle less a line is refused."""
    d = small_mode()
    layers = {n: dict(x=n % 9, y=-(n % 3), alpha=97 + 10 * n, z=300 - 17 * n, visible=1)
              for n in range(16)}
    hist = static_history(layers)
    cap = run_model(d, hist.value)
    check_frames(cap, d, hist.value, 1)
    m = d.mode
    shorter = VideoMode("short", m.h_active, m.h_front, m.h_sync, m.h_back - CONTEXTS,
                        m.v_active, m.v_front, m.v_sync, m.v_back, m.fabric_per_pixel)
    with pytest.raises(ValueError, match="composition needs"):
        Compositor(Display(shorter, CONTEXTS, 1_000_000))


def test_refused_modes():
    d = small_mode()
    m = d.mode
    few = VideoMode("few", m.h_active, m.h_front, m.h_sync, m.h_back, m.v_active, 1, 1, 0, 1)
    with pytest.raises(ValueError, match="blanking lines"):
        Compositor(Display(few, CONTEXTS, 1_000_000))
    with pytest.raises(ValueError, match="fabric clocks per core cycle"):
        Compositor(Display(m, 2, 1_000_000))


def sample_cycle(d, frame, line, n, field):
    return d.line_fetch_cycle(frame, line) + sample_offset(n, field)


def test_writes_around_the_sample_cycle():
    """A write in the cycle before a sample is seen by it, one in the sample's cycle or
    later is not (each register field, in two frames)."""
    d = small_mode()
    base = {0: dict(x=0, y=0, alpha=255, z=0, visible=1),
            1: dict(x=8, y=0, alpha=128, z=1, visible=0),
            2: dict(x=4, y=0, alpha=200, z=2, visible=1),
            3: dict(x=6, y=0, alpha=160, z=3, visible=1),
            4: dict(x=12, y=-16, alpha=255, z=4, visible=1)}
    writes = []
    for n, f in base.items():
        writes += layer_writes(0, n, **f)
    s = lambda frame, line, n, f: sample_cycle(d, frame, line, n, f)  # noqa: E731
    for fr in (0, 1):
        # x: one cycle before line 1's sample (seen there), at line 2's (not seen there),
        # one after line 3's sample (seen from the next frame's line 0)
        writes += [(s(fr, 1, 0, "x") - 1, RI(0, "x"), 3 + fr),
                   (s(fr, 2, 0, "x"), RI(0, "x"), 9),
                   (s(fr, 3, 0, "x") + 1, RI(0, "x"), raw(RI(0, "x"), -4))]
        # visible on at line 1's sample cycle (not seen before line 2), off one before 3's
        writes += [(s(fr, 1, 1, "visible"), RI(1, "visible"), 1),
                   (s(fr, 3, 1, "visible") - 1, RI(1, "visible"), 0)]
        # alpha at line 2's sample (line 3 sees it), z one before line 1's (reorders)
        writes += [(s(fr, 2, 2, "alpha"), RI(2, "alpha"), 33),
                   (s(fr, 1, 2, "z") - 1, RI(2, "z"), 10 - fr * 20)]
        # y one before line 2's sample and at line 1's; z of 3 at its own sample
        writes += [(s(fr, 1, 4, "y"), RI(4, "y"), 1),
                   (s(fr, 2, 4, "y") - 1, RI(4, "y"), 2),
                   (s(fr, 2, 3, "z"), RI(3, "z"), 1)]
        if fr == 0:
            writes += [(s(0, 3, 4, "y") + 1, RI(4, "y"), raw(RI(4, "y"), -16)),
                       (s(0, 3, 2, "alpha") + 1, RI(2, "alpha"), 200),
                       (s(0, 3, 3, "z") + 1, RI(3, "z"), 3)]
    hist = RegisterHistory(writes)
    cap = run_model(d, hist.value, frames=2)
    check_frames(cap, d, hist.value, 2)
    # a compositor that sampled one cycle late (or early) would show a different picture
    for shift in (-1, 1):
        moved = lambda i, c, k=shift: hist.value(i, c + k)  # noqa: E731
        assert any(render_frame(d, f, moved) != render_frame(d, f, hist.value) for f in (0, 1))


@pytest.mark.parametrize("fpp", [1, 2])
def test_video_timing(fpp):
    """de, hsync, vsync, the pixel strobe and frame_start against the mode: every output
    pixel is presented ``latency`` fabric clocks after its position's clock (the first
    clock of ``line_start_cycle`` for a line's first pixel), the syncs are active low."""
    d = small_mode(canvas_w=8, layers=4, fpp=fpp, v_blank=(2, 3, 1), negative=fpp == 1)
    m = d.mode
    C = d.contexts
    cap = run_model(d, static_history({0: dict(x=2, y=0, alpha=255, z=0, visible=1)}).value,
                    frames=2, timing=True, tb_phase=2)
    t0, lat = cap.t0, cap.latency
    assert lat == C + 3
    strobes = [s for s in cap.strobes if t0 + lat <= s[0] < t0 + lat + 2 * d.frame_cycles * C]
    assert [s[0] for s in strobes] == list(range(t0 + lat, strobes[-1][0] + 1, fpp))
    line_clocks = m.h_total * fpp
    for t, de, hs, vs, fs in strobes:
        pos = (t - t0 - lat) // fpp
        row, col = divmod(pos % (m.h_total * m.v_total), m.h_total)
        hsa = m.h_active + m.h_front <= col < m.h_active + m.h_front + m.h_sync
        vsa = m.v_front <= row < m.v_front + m.v_sync
        assert (de, hs, vs, fs) == (row >= m.v_blank and col < m.h_active,
                                    int(hsa != m.hsync_negative), int(vsa != m.vsync_negative),
                                    row == 0 and col == 0), (t, row, col)
    # the first pixel of every visible line, and every frame start, where the model says
    firsts = {t for t, de, _, _, _ in strobes
              if de and (t - t0 - lat) % line_clocks == 0}
    assert firsts == {d.line_start_cycle(f, line) * C + t0 + lat
                      for f in (0, 1) for line in range(m.v_active)}
    assert [t for t, *_, fs in strobes if fs] == [t0 + lat + k * d.frame_cycles * C
                                                  for k in (0, 1)]
    check_frames(cap, d, static_history({0: dict(x=2, y=0, alpha=255, z=0, visible=1)}).value, 2)


# -- the real Core driving the compositor ------------------------------------------------

class CoreAndCompositor(Elaboratable):
    """A Core with its display port and the compositor, wired as a board top does:
    ``advance`` in the core's last phase, the time-base reset with the core's accept of
    a time-base command (phase 0), the register read through ``display_addr/data``."""

    def __init__(self, display):
        from copperline.hdl.core import Core
        self.core = Core(display.clock_hz, display.vsync_hz, contexts=CONTEXTS,
                         program_words=32, watchdog_ops=1000, display_port=True)
        assert self.core.phases == display.contexts
        self.comp = Compositor(display)
        self.display = display

    def elaborate(self, platform):
        m = Module()
        m.submodules.core = core = self.core
        m.submodules.comp = comp = self.comp
        m.d.comb += [comp.advance.eq(core.phase == core.phases - 1),
                     comp.tb_reset.eq(core.cmd.valid & core.cmd.ready & core.cmd.payload.timebase),
                     core.display_addr.eq(comp.reg_addr), comp.reg_data.eq(core.display_data)]
        return m


def _vm_writes(display, programs, until):
    """The VM's events of ``programs`` (slot -> program JSON) started together at cycle 0,
    and the register writes ``(cycle, index, value)`` among them."""
    from copperline.firmware.compiler import compile_program
    from copperline.sim.engine import MachineParams
    from copperline.sim.vm import Machine
    vm = Machine(MachineParams(clock_hz=display.clock_hz, vsync_hz=display.vsync_hz,
                               contexts=CONTEXTS, program_words=32, watchdog_ops=1000))
    slots = {}
    for slot in sorted(programs):
        got = vm.load(compile_program(programs[slot]))
        assert got == slot
        slots[slot] = got
    for slot in slots:
        vm.start(slot)
    events = vm.run_until(until)
    return events, [(e["cycle"], isa.parse_register(e["reg"]), e["value"] & 0xFFFF)
                    for e in events if e["event"] == "reg"]


def _tuned(display, build, targets, until):
    """``build(waits)`` -> programs, with ``waits`` (one per target) tuned on the VM so
    that the write marked ``target`` k (slot, register name, value) issues in cycle
    ``targets[k][3]``."""
    waits = [1] * len(targets)
    for _ in range(4 * len(targets) + 4):
        events, _ = _vm_writes(display, build(waits), until)
        ok = True
        for k, (slot, reg, value, cycle) in enumerate(targets):
            got = [e["cycle"] for e in events if e["event"] == "reg" and e["slot"] == slot
                   and e["reg"] == reg and e["value"] == value]
            assert got, (slot, reg, value)
            if got[0] != cycle:
                waits[k] += cycle - got[0]
                ok = False
                break
        if ok:
            return build(waits)
    raise AssertionError("the waits did not settle")


def test_real_core_writes_at_the_sample_boundaries():
    """The Core's register writes, at the cycles the VM says, reach the compositor's
    samples as the model says: slot 3's write in the cycle before a sample (its execute
    is in the sample cycle's phase 0, the forwarded one) is seen, slot 0's write in the
    sample's cycle is not, two slots writing one register in one cycle leave the later
    slot's value; a write after ``WAIT vsync`` lands in the next frame's blanking."""
    d = small_mode(canvas_w=16, layers=8)
    s = lambda line, n, f: sample_cycle(d, 0, line, n, f)  # noqa: E731

    def mv(reg, value):
        return {"op": "MOVE", "reg": reg, "value": value}

    init = [mv("layer[0].visible", 1), mv("layer[0].alpha", 255), mv("layer[0].x", 2),
            mv("layer[1].visible", 1), mv("layer[1].alpha", 128), mv("layer[1].x", 6),
            mv("layer[1].z", 3), mv("layer[2].visible", 1), mv("layer[2].x", 9),
            mv("layer[2].y", 1), mv("layer[2].z", 2)]
    targets = [(0, "layer[0].x", 10, s(1, 0, "x")),            # not seen on line 1
               (0, "layer[1].z", 1, s(1, 1, "z")),             # not seen on line 1
               (0, "layer[1].x", 0, s(2, 1, "x") - 1),         # seen on line 2
               (3, "layer[1].z", -1, s(1, 1, "z") - 1),        # seen on line 1
               (1, "layer[2].alpha", 40, s(2, 2, "alpha") - 1),
               (2, "layer[2].alpha", 230, s(2, 2, "alpha") - 1)]   # slot 2's wins

    def build(w):
        def prog(ops):
            return {"version": 1, "program": ops + [{"op": "HALT"}]}
        wait = lambda k: {"op": "WAIT", "us": w[k]}  # noqa: E731
        return {
            0: prog(init + [wait(0), mv("layer[0].x", 10), wait(1), mv("layer[1].z", 1),
                            wait(2), mv("layer[1].x", 0), {"op": "WAIT", "vsync": True},
                            mv("layer[0].x", 5)]),
            1: prog([wait(4), mv("layer[2].alpha", 40)]),
            2: prog([wait(5), mv("layer[2].alpha", 230)]),
            3: prog([wait(3), mv("layer[1].z", -1)]),
        }
    frames = 2
    until = frames * d.frame_cycles
    programs = _tuned(d, build, targets, until)
    vm_events, writes = _vm_writes(d, programs, until)
    assert writes[-1] == (d.frame_cycles + isa.VSYNC_LATENCY, isa.register_index(0, "x"), 5)

    from copperline.firmware.compiler import compile_program
    from tests.support import event_record, write_programs
    top = CoreAndCompositor(d)
    core, comp = top.core, top.comp
    records, cap = [], Capture()

    async def bench(ctx):
        ctx.set(core.events.ready, 1)
        await write_programs(ctx, core, {k: compile_program(p).code for k, p in programs.items()})
        ctx.set(core.cmd.valid, 1)
        ctx.set(core.cmd.payload.start, 0b1111)
        ctx.set(core.cmd.payload.timebase, 1)
        while not ctx.get(core.cmd.ready):
            await ctx.tick()
        t = 0
        await _sample(ctx, comp, t, 0, cap, False)
        await ctx.tick()
        ctx.set(core.cmd.valid, 0)
        for t in range(1, until * core.phases + comp.latency + 2):
            if ctx.get(core.events.valid):
                records.append(event_record(ctx, core))
            await _sample(ctx, comp, t, 0, cap, False)
            await ctx.tick()

    sim = Simulator(top)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    from copperline.firmware.board_interface import EventKind
    core_writes = [(ts, p >> 16, p & 0xFFFF) for ts, _, _, kind, p in records
                   if kind == EventKind.REG]
    assert core_writes == writes, "the Core's writes are the VM's"
    hist = RegisterHistory(writes)
    check_frames(cap, d, hist.value, frames)
    # the boundaries matter: the picture with each write a cycle later/earlier differs
    for shift in (-1, 1):
        moved = RegisterHistory([(c + shift, i, v) for c, i, v in writes])
        assert render_frame(d, 0, moved.value) != render_frame(d, 0, hist.value)


# -- surfaces ------------------------------------------------------------------------------

SURF_WORDS = 512        # 64 rows of 16 pixels (two of descriptors)


def pattern(height, seed, holes=5):
    """A ``height``-line surface: every pixel's colour differs from its neighbours' (a
    swapped pair of halves shows), every ``holes``-th one transparent."""
    from copperline.firmware.display import Surface
    return Surface(tuple(
        tuple(None if (x + 3 * y + seed) % holes == 0 else
              ((x * 5 + y * 3 + seed) % 16, (x * 7 + seed * 3 + y) % 16, (x + 11 * y + seed) % 16)
              for x in range(16))
        for y in range(height)))


class SurfaceImage:
    """A surface memory image and the words that build it, as the host places surfaces."""

    def __init__(self, words=SURF_WORDS):
        from copperline.firmware.surface_memory import SurfaceMemory
        self.alloc = SurfaceMemory(words)
        self.words = [0] * words
        self.writes = []            # (address, word), in the host's order

    def place(self, key, surface):
        p, new = self.alloc.place(key, surface)
        assert new
        self.write(p.writes(surface))
        return p.number

    def write(self, blocks):
        for addr, ws in blocks:
            for i, w in enumerate(ws):
                self.words[addr + i] = w
                self.writes.append((addr + i, w))

    def surface(self, number):
        from copperline.firmware.surface_memory import read_surface
        return read_surface(self.words, number)


def port_writes(writes, start=0, gap=4):
    """A ``port`` for run_model: strobe ``writes`` (address, word) from clock ``start``,
    one every ``gap`` clocks."""
    def port(ctx, dut, t):
        i, r = divmod(t - start, gap)
        go = t >= start and r == 0 and i < len(writes)
        ctx.set(dut.surf_we, go)
        if go:
            ctx.set(dut.surf_addr, writes[i][0])
            ctx.set(dut.surf_data, writes[i][1])
    return port


def scene_image():
    """Surfaces C (1 line), B (5), A (20), in that order in memory (the row after C's and
    B's last is opaque: a layer drawn one line too tall shows it), descriptor 4 of height
    0."""
    img = SurfaceImage()
    c = img.place("C", pattern(1, 9))
    b = img.place("B", pattern(5, 4, holes=3))
    a = img.place("A", pattern(20, 1))
    z = img.place("D", pattern(3, 2, holes=99))     # (its rows never show: height 0)
    assert (c, b, a, z) == (1, 2, 3, 4)
    from copperline.firmware.surface_memory import descriptor_word
    img.write([(z, [descriptor_word(img.alloc.placement("D").first_row, 0)])])
    return img


# layers with surfaces, solid ones, clipping on every edge, alpha, z ties, transparency
SURFACE_SCENE = {
    0: dict(x=0, y=0, alpha=255, z=0, visible=1, surface=0),      # solid base
    1: dict(x=-6, y=-10, alpha=255, z=5, visible=1, surface=3),   # A: left and top clip
    2: dict(x=14, y=3, alpha=200, z=3, visible=1, surface=2),     # B: right, bottom clip
    3: dict(x=4, y=2, alpha=128, z=7, visible=1, surface=1),      # C: one line
    4: dict(x=0, y=0, alpha=255, z=50, visible=1, surface=4),     # height 0: nothing
    5: dict(x=0, y=0, alpha=255, z=51, visible=1, surface=17),    # no descriptor: nothing
    6: dict(x=8, y=1, alpha=100, z=4, visible=1, surface=0),      # solid over B, under A
    7: dict(x=10, y=-3, alpha=77, z=-2, visible=1, surface=3),    # A under the base
    8: dict(x=3, y=0, alpha=255, z=60, visible=0, surface=2),     # hidden
    9: dict(x=-20, y=0, alpha=255, z=61, visible=1, surface=2),   # off the left edge
    10: dict(x=6, y=2, alpha=255, z=7, visible=1, surface=1),     # z tie with 3: after it
    11: dict(x=2, y=5, alpha=255, z=10, visible=1, surface=3),    # A's first line, last line
    12: dict(x=17, y=-2, alpha=240, z=2, visible=1, surface=2),   # B's last line on line 2
    13: dict(x=-15, y=1, alpha=255, z=1, visible=1, surface=1),   # one pixel of C (x = 0)
}


def surface_display(**kw):
    return small_mode(canvas_h=6, surface_words=SURF_WORDS, **kw)


def loaded_run(d, hist, img, frames=1, **kw):
    """run_model with ``img`` written through the port before the time-base reset."""
    pre = len(img.writes) + 8
    return run_model(d, hist.value, frames=frames, pre_cycles=pre,
                     port=port_writes(img.writes), **kw)


@pytest.mark.parametrize("kind", ["bram", "spram"])
def test_surfaces_pixel_exact(kind):
    """Surfaces written through the port (as the host does) and drawn as the model draws
    them: transparent pixels, surfaces taller and shorter than 16 lines, clipping on every
    edge, alpha and z with solid layers, a descriptor of height 0 and a number without a
    descriptor; with block RAM and with the single-port SPRAM's model."""
    d = surface_display()
    img = scene_image()
    hist = static_history(SURFACE_SCENE)
    cap = loaded_run(d, hist, img, surface_memory=kind)
    check_frames(cap, d, hist.value, 1, img.surface)
    # the surfaces matter: drawn as rectangles, or each one line taller, or with the
    # halves of each word swapped, the picture differs
    want = render_frame(d, 0, hist.value, img.surface)
    assert render_frame(d, 0, hist.value) != want
    from copperline.firmware.display import Surface
    from copperline.firmware.surface_memory import read_surface

    def taller(n):
        s = img.surface(n)
        if s is None:
            return None
        base = img.alloc.placement({1: "C", 2: "B", 3: "A"}[n]).first_row
        words = list(img.words)
        words[n] = base | (s.height + 1) << 16
        return read_surface(words, n)

    def swapped(n):
        s = img.surface(n)
        return s and Surface(tuple(tuple(r[i ^ 1] for i in range(16)) for r in s.rows))
    for bad in (taller, swapped):
        assert render_frame(d, 0, hist.value, bad) != want, bad.__name__


def test_surface_bind_changes_between_lines():
    """The ``surface`` register is sampled first of a layer's six, at the model's cycle:
    a bind in the cycle before a line's sample shows on that line, one in the sample's
    cycle on the next; a layer goes from solid to a surface and back, and from one surface
    to another."""
    d = surface_display()
    img = scene_image()
    base = {0: dict(x=0, y=0, alpha=255, z=0, visible=1),
            1: dict(x=3, y=0, alpha=255, z=2, visible=1, surface=3),
            2: dict(x=9, y=-1, alpha=180, z=1, visible=1),
            3: dict(x=-4, y=1, alpha=255, z=3, visible=1, surface=2)}
    writes = []
    for n, f in base.items():
        writes += layer_writes(0, n, **f)
    s = lambda line, n, f: sample_cycle(d, 0, line, n, f)  # noqa: E731
    sf = lambda n: RI(n, "surface")  # noqa: E731
    writes += [(s(1, 1, "surface") - 1, sf(1), 2),     # A -> B, seen on line 1
               (s(3, 1, "surface"), sf(1), 0),         # -> solid, seen on line 4
               (s(5, 1, "surface") - 1, sf(1), 1),     # -> C on line 5
               (s(2, 2, "surface") - 1, sf(2), 3),     # solid -> A on line 2
               (s(4, 2, "surface"), sf(2), 0),         # back to solid on line 5
               (s(2, 3, "surface"), sf(3), 4),         # height 0 from line 3
               (s(4, 3, "surface") - 1, sf(3), 2)]     # B again on line 4
    hist = RegisterHistory(writes)
    cap = loaded_run(d, hist, img)
    check_frames(cap, d, hist.value, 1, img.surface)
    for shift in (-1, 1):
        moved = lambda i, c, k=shift: hist.value(i, c + k)  # noqa: E731
        assert render_frame(d, 0, moved, img.surface) != render_frame(d, 0, hist.value,
                                                                       img.surface)


def test_surface_writes_during_reads_are_not_lost():
    """Host writes strobed one clock before the compositor's surface reads (descriptor
    reads in the fetch, pixel reads in the draw) wait a clock and are all written: a
    surface written so during frame 0 (its descriptor last) shows whole in frame 1, on the
    single-port SPRAM's model."""
    d = surface_display()
    img = scene_image()
    later = SurfaceImage()
    later.alloc, later.words = img.alloc, img.words
    e = later.place("E", pattern(7, 12, holes=4))
    assert e == 5
    late = later.writes
    scene = dict(SURFACE_SCENE)
    writes = []
    for n, f in scene.items():
        writes += layer_writes(0, n, **f)
    # frame 1: layer 6 shows E (bound in frame 1's blanking), B's rows are rewritten
    writes += [(d.frame_cycles + 3, RI(6, "surface"), e)]
    hist = RegisterHistory(writes)
    C = d.contexts
    pre = len(img.writes) + 8
    t0 = pre * C
    load = port_writes(img.writes)
    state = dict(i=0, last_read=None, last_strobe=-99, deferred=0)
    frame1 = t0 + d.frame_cycles * C

    def port(ctx, dut, t):
        if t < t0:
            return load(ctx, dut, t)
        if ctx.get(dut.probe_surf["s_rd"]):
            state["last_read"] = t
            if ctx.get(dut.probe_surf["wpend"]):
                state["deferred"] += 1      # (a write waiting through a read)
        lr = state["last_read"]
        go = (state["i"] < len(late) and lr is not None and t - lr == 3
              and t - state["last_strobe"] >= 4 and t < frame1 - 100)
        ctx.set(dut.surf_we, go)
        if go:
            ctx.set(dut.surf_addr, late[state["i"]][0])
            ctx.set(dut.surf_data, late[state["i"]][1])
            state["i"] += 1
            state["last_strobe"] = t
    cap = run_model(d, hist.value, frames=2, pre_cycles=pre, port=port,
                    surface_memory="spram")
    assert state["i"] == len(late), "every write strobed in frame 0"
    assert state["deferred"] >= len(late) // 2, state
    check_frames(cap, d, hist.value, 2, later.surface)
    assert render_frame(d, 1, hist.value, later.surface) != render_frame(
        d, 1, hist.value, lambda n: None if n == e else later.surface(n))


def test_surface_memory_sizes():
    """The table's row word holds 2048 rows (16K words, the iCEBreaker's SPRAMs): more is
    refused, as is a size that is not a power of two."""
    m = small_mode().mode
    c = Compositor(Display(m, CONTEXTS, 1_000_000, 16, 16384))
    c._MustUse__silence = c.line_mem._MustUse__silence = True
    for bad in (32768, 3000):
        with pytest.raises(ValueError, match="surface words"):
            Compositor(Display(m, CONTEXTS, 1_000_000, 16, bad))


def test_surfaces_worst_case_in_the_tightest_mode():
    """All 16 layers bound to surfaces on every line, in reverse z order, in the smallest
    line the compositor accepts (surfaces take no clock more than rectangles)."""
    d = small_mode(surface_words=SURF_WORDS)
    img = scene_image()
    layers = {n: dict(x=n % 9, y=-(n % 3), alpha=97 + 10 * n, z=300 - 17 * n, visible=1,
                      surface=3 if n % 2 else 2)
              for n in range(16)}
    hist = static_history(layers)
    cap = loaded_run(d, hist, img)
    check_frames(cap, d, hist.value, 1, img.surface)
    assert all(BACKGROUND not in row[8:16] for row in render_frame(d, 0, hist.value,
                                                                   img.surface))
