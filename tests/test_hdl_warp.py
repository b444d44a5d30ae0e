"""The core's simulation-only warp (``Core(warp_us=...)``, docs/core.md "Warp"): with
``warp`` held high the core skips idle core cycles, and every event still comes at the
cycle it comes at without warp (which the equivalence tests tie to the VM)."""

import gc
import random
import warnings
from dataclasses import dataclass

import pytest

from copperline.firmware.board_interface import EventKind
from copperline.firmware import isa
from copperline.firmware.compiler import compile_program
from copperline.hdl.core import Core
from tests.support import event_record, gen_program, simulate, write_programs

E = isa.encode
X0 = isa.register_index(0, "x")
CLOCK_HZ = 2_000_000          # 2 cycles per microsecond: the hi/lo delay split matters
WARP_US = 16                  # a warped core cycle counts up to 16 us = 32 cycles more
WORDS = 64


@dataclass
class Run:
    records: list     # event records before ``until``
    warps: list       # the warps' sizes in core cycles, in order
    cycles: int       # core cycles simulated (clocks / phases, rounded up)
    end: int          # the core cycle counter when the run stopped (``until`` or past it)


def run(programs, *, until, warp: bool, fences=()) -> Run:
    """Start ``programs`` (slot -> words) at cycle 0, run until core cycle ``until`` with
    ``warp`` held high or low."""
    core = Core(CLOCK_HZ, 10_000.0, watchdog_ops=100, program_words=WORDS,  # vsync every 200
                warp_us=WARP_US)
    records, warps = [], []
    clocks = end = 0

    async def bench(ctx):
        nonlocal clocks, end
        ctx.set(core.events.ready, 1)
        await write_programs(ctx, core, programs)
        ctx.set(core.cmd.valid, 1)
        ctx.set(core.cmd.payload.start, sum(1 << s for s in programs))
        ctx.set(core.cmd.payload.timebase, 1)
        while not ctx.get(core.cmd.ready):
            await ctx.tick()
        await ctx.tick()
        ctx.set(core.cmd.valid, 0)
        ctx.set(core.warp, warp)
        pending = sorted(fences)
        while ctx.get(core.cycle) < until:
            if pending and ctx.get(core.cycle) >= pending[0][0] - 40:
                # the host drops warp before it writes (as the virtual board's top does):
                # the write lands in the same cycle with and without warp
                ctx.set(core.warp, 0)
                if ctx.get(core.cycle) == pending[0][0] and ctx.get(core.phase) == 0:
                    while pending and pending[0][0] == ctx.get(core.cycle):
                        _, slot, timeline, value = pending.pop(0)
                        ctx.set(core.fence_wr.valid, 1)
                        ctx.set(core.fence_wr.payload.slot, slot)
                        ctx.set(core.fence_wr.payload.timeline, timeline)
                        ctx.set(core.fence_wr.payload.value, value)
                        await ctx.tick()
                        clocks += 1
                    ctx.set(core.fence_wr.valid, 0)
                    ctx.set(core.warp, warp)
            if ctx.get(core.events.valid):
                records.append(event_record(ctx, core))
            if ctx.get(core.warped):
                warps.append(ctx.get(core.warped))
            await ctx.tick()
            clocks += 1
        end = ctx.get(core.cycle)

    simulate(core, bench)
    return Run([r for r in records if r[0] < until], warps, -(-clocks // core.phases), end)


def same_with_and_without_warp(programs, until, fences=()):
    """Run ``programs`` with and without warp: the same records; without warp every core
    cycle up to ``until`` is simulated, with warp all but the skipped ones, and some are
    skipped. (The records, the warps' sizes.)"""
    plain = run(programs, until=until, warp=False, fences=fences)
    warped = run(programs, until=until, warp=True, fences=fences)
    assert plain.warps == []
    assert (plain.cycles, plain.end) == (until, until)
    assert warped.records == plain.records
    assert warped.warps, "the warp never fired"
    assert warped.cycles == warped.end - sum(warped.warps)
    return plain.records, warped.warps


def test_long_waits_are_skipped_and_events_keep_their_cycles():
    prog = [E("MOVE", reg=X0, value=1),
            E("WAIT", us=77),                        # 1: 154 cycles
            E("ADD", reg=X0, delta=1),
            E("IRQ", tag=1),
            E("LOOP", slot=0, target=1, count=4),
            E("WAIT", us=4),                         # too short to warp: counted
            E("HALT")]
    recs, warps = same_with_and_without_warp({0: prog}, until=1000)
    assert [r[3] for r in recs].count(EventKind.IRQ) == 4
    assert recs[-1][3] == EventKind.STATE           # HALT reached
    # every size, from 16 us down to 1 us, skips part of each wait: most of the time
    # (4 x 154 cycles of waiting) is skipped
    assert sorted(set(warps)) == [2, 4, 8, 16, 32]
    assert sum(warps) > 4 * 154 * 3 // 4


def test_a_shrinking_warp_passes_through_a_plain_cycle():
    # a context that waits long next to one that wakes often: the warp must shrink as the
    # short waits end, each time seen late (E's results of two cycles before)
    progs = {0: [E("WAIT", us=300), E("IRQ", tag=1), E("HALT")],
             1: [E("WAIT", us=9), E("IRQ", tag=2), E("WAIT", us=41), E("IRQ", tag=3),
                 E("JUMP", target=0)]}
    recs, warps = same_with_and_without_warp(progs, until=900)
    assert [r[4] for r in recs if r[3] == EventKind.IRQ].count(2) >= 8
    assert any(a > b for a, b in zip(warps, warps[1:]))     # sizes went down, too


def test_vsync_fence_and_idle_contexts_together():
    progs = {
        0: [E("WAIT", vsync=1), E("IRQ", tag=1), E("JUMP", target=0)],
        1: [E("WAIT", us=23), E("ADD", reg=X0, delta=1), E("JUMP", target=0)],
        2: [E("IRQ", tag=2), E("FENCE", timeline=0, value=1), E("IRQ", tag=3), E("HALT")],
        3: [E("HALT")],
    }
    recs, warps = same_with_and_without_warp(progs, until=1000, fences=[(517, 2, 0, 1)])
    assert [r[0] for r in recs if r[1] == 0 and r[3] == EventKind.IRQ] == \
        [200 * k + isa.VSYNC_LATENCY for k in range(1, 5)]
    assert any(r[1] == 2 and r[4] == 3 for r in recs if r[3] == EventKind.IRQ)
    assert sum(warps) > 300


@pytest.mark.parametrize("seed", range(6))
def test_generated_programs_four_at_a_time(seed):
    rng = random.Random(seed)
    progs = {}
    while len(progs) < 4:
        code = compile_program(gen_program(rng)).code
        if len(code) <= WORDS:
            progs[len(progs)] = list(code)
    fences = [(t, slot, tl, v) for v, t in enumerate((300, 700, 1100), 1)
              for slot in range(4) for tl in range(2)]
    _, warps = same_with_and_without_warp(progs, until=1500, fences=fences)
    # the random waits are short (1..30 us) and warp is dropped 40 cycles before each
    # of the 3 fence writes: each seed skips 134 to 252 of the 1500 cycles
    assert sum(warps) >= 100, f"{len(warps)} warps, {sum(warps)} core cycles skipped"


@pytest.mark.parametrize("seed", range(4))
def test_random_waits_in_four_contexts(seed):
    # waits of every length around the sizes' thresholds, in all four contexts at once,
    # with vsync waits between: the sizes rise and fall all the time
    rng = random.Random(1000 + seed)
    progs = {}
    for slot in range(4):
        ops = []
        for _ in range(6):
            ops.append(E("WAIT", vsync=1) if rng.random() < 0.15 else
                       E("WAIT", us=rng.choice((1, 2, 3, 5, 6, 7, 9, 11, 13, 19, 35, 37, 70))))
            ops.append(E("IRQ", tag=slot * 16 + len(ops) // 2))
        progs[slot] = ops + [E("JUMP", target=0)]
    recs, warps = same_with_and_without_warp(progs, until=2500)
    assert len(recs) > 100 and len(set(warps)) >= 3


def test_no_warp_port_by_default():
    # (cores only inspected, never elaborated: collected here, their warnings dropped)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        core = Core(CLOCK_HZ)
        assert "warp" not in core.signature.members
        with pytest.raises(ValueError, match="warp_us"):
            Core(CLOCK_HZ, warp_us=-1)
        del core
        gc.collect()
