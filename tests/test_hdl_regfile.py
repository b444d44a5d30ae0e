"""Register file: transparent executor read, host read-back copy, field masks."""

import pytest
from amaranth import Module, Signal
from amaranth.sim import Simulator

from copperline.firmware import isa
from copperline.hdl.regfile import RegFile, field_mask
from tests.support import simulate


@pytest.mark.parametrize("style", [None, "distributed"])
def test_regfile_write_read_transparent_and_host(style):
    dut = RegFile(layers=4, ram_style=style, sum_port=True)

    async def bench(ctx):
        ctx.set(dut.wr_addr, 9)
        ctx.set(dut.wr_data, 0xBEEF)
        ctx.set(dut.wr_en, 1)
        ctx.set(dut.rd_addr, 9)          # read in the same clock as the write
        ctx.set(dut.host_addr, 9)
        await ctx.tick()
        ctx.set(dut.wr_en, 0)
        assert ctx.get(dut.rd_data) == 0xBEEF, "executor read must see the same-clock write"
        ctx.set(dut.rd_add, 0x4112)
        assert ctx.get(dut.rd_sum) == 0x0001, "rd_sum adds to the forwarded value (mod 2**16)"
        await ctx.tick()
        assert ctx.get(dut.host_data) == 0xBEEF
        assert ctx.get(dut.rd_sum) == 0x0001, "rd_sum adds to the RAM's value"
        ctx.set(dut.rd_addr, 10)
        await ctx.tick()
        assert ctx.get(dut.rd_data) == 0
        assert ctx.get(dut.rd_sum) == 0x4112

    simulate(dut, bench)


def test_field_masks_from_isa():
    m = Module()
    idx = Signal(3)
    out = Signal(16)
    m.d.comb += out.eq(field_mask(idx))

    async def bench(ctx):
        for sub in range(isa.REG_STRIDE):
            ctx.set(idx, sub)
            f = next((f for f in isa.LAYER_FIELDS if f.index == sub), None)
            assert ctx.get(out) == ((1 << f.width) - 1 if f else 0)

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()


@pytest.mark.parametrize("style", [None, "distributed"])
def test_clear_zeroes_every_copy_one_row_a_clock(style):
    dut = RegFile(layers=2, ram_style=style, display_port=True)

    async def bench(ctx):
        for i in range(dut.depth):
            ctx.set(dut.wr_addr, i)
            ctx.set(dut.wr_data, 0x100 + i)
            ctx.set(dut.wr_en, 1)
            await ctx.tick()
        ctx.set(dut.wr_en, 0)
        ctx.set(dut.clear, 1)
        await ctx.tick()
        ctx.set(dut.clear, 0)
        for _ in range(dut.depth):
            assert ctx.get(dut.clearing)
            await ctx.tick()
        assert not ctx.get(dut.clearing), "the clear takes one clock per row"
        for i in range(dut.depth):
            for addr, data in ((dut.rd_addr, dut.rd_data), (dut.host_addr, dut.host_data),
                               (dut.display_addr, dut.display_data)):
                ctx.set(addr, i)
            await ctx.tick()
            assert (ctx.get(dut.rd_data), ctx.get(dut.host_data), ctx.get(dut.display_data)) == (0, 0, 0), i

    simulate(dut, bench)
