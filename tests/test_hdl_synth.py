"""Synthesis smoke: the core builds for the iCE40UP5K with YoWASP; prints LCs, block RAMs
and Fmax (figures, not pass/fail criteria: see docs/core.md)."""

import pytest

from copperline.hdl.core import Core
from copperline.hdl.synth import synthesize


@pytest.mark.slow
def test_core_synthesizes_for_up5k(capsys):
    r = synthesize(lambda: Core(12_000_000, 60.0, program_words=1024, program_memory="spram",
                                spram_primitive=True), "ice40")
    with capsys.disabled():
        print(f"\nUP5K core: {r.lcs} LUT4 (logic cells), {r.ffs} FF, {r.brams} SB_RAM40_4K, "
              f"{r.sprams} SB_SPRAM256KA, Fmax {r.fmax_mhz:.1f} MHz "
              f"(harness adds {r.harness_ffs} FFs)")
    # 4 x 1024 program words live in the two SPRAMs, not in block RAM (the block RAMs
    # are small rows that replaced flip-flops: the iCEBreaker board has 30, the link
    # takes 6)
    assert r.sprams == 2 and r.brams <= 20 and r.lcs > 0 and r.fmax_mhz > 0


def test_collision_dont_care_marks_only_the_listed_memories():
    from amaranth.back import rtlil
    from copperline.hdl.synth import collision_dont_care
    core = Core(1_000_000, 20_000.0, program_words=16)
    il = collision_dont_care(rtlil.convert(core, name="copper_core"), core.COLLISION_FREE_MEMORIES)
    masks = {}
    cur = None
    for line in il.split("\n"):
        st = line.strip()
        if st.startswith("parameter \\MEMID"):
            cur = st.split('"')[1].lstrip("\\")
        elif st.startswith("parameter \\COLLISION_X_MASK") and cur:
            masks[cur] = st.split()[-1]
            cur = None
    assert masks["ctx_mem"] == "1'1" and masks["loop_mem"] == "1'1"
    # the register file's two copies forward E's write of the same clock themselves (the
    # read-back copy too, since it selects E's registered write data on an address hit:
    # what its RAM reads from a row being written is never used, so the host reading back
    # at any time still sees that write); the FIFO never reads the row it writes
    assert masks["exec_mem"] == "1'1" and masks["host_mem"] == "1'1"
    assert masks["event_mem"] == "1'1"
    # the host writes fences at any time, and the fence RAM's own transparent read is
    # what brings that write to X
    assert masks["fence_mem"] == "1'0"


def test_collision_dont_care_leaves_asynchronous_reads():
    # (Yosys rejects "collision gives X" on a read port without a clock, as LUT RAM has)
    from amaranth import Module, Elaboratable, Signal
    from amaranth.back import rtlil
    from amaranth.lib import memory
    from copperline.hdl.synth import collision_dont_care

    class Two(Elaboratable):
        def __init__(self):
            self.o_sync, self.o_comb = Signal(8), Signal(8)

        def elaborate(self, platform):
            m = Module()
            m.submodules.lut_mem = mem = memory.Memory(shape=8, depth=16, init=[])
            wp, rs, ra = mem.write_port(), mem.read_port(), mem.read_port(domain="comb")
            m.d.comb += [wp.addr.eq(1), wp.data.eq(2), wp.en.eq(1), rs.addr.eq(1), ra.addr.eq(1),
                         self.o_sync.eq(rs.data), self.o_comb.eq(ra.data)]
            return m

    two = Two()
    il = collision_dont_care(rtlil.convert(two, name="two", ports=[two.o_sync, two.o_comb]),
                             ("lut_mem",))
    ports = [c[:c.index("\n  end")] for c in il.split("cell $memrd_v2")[1:]]
    sync = [p for p in ports if "CLK_ENABLE 1" in p]
    comb = [p for p in ports if "CLK_ENABLE 0" in p]
    assert len(sync) == len(comb) == 1
    assert "COLLISION_X_MASK 1'1" in sync[0] and "COLLISION_X_MASK 1'1" not in comb[0]
