"""The generated decoder against isa.encode/isa.decode for every op and field."""

import random

from amaranth.sim import Simulator

from copperline.firmware import isa
from copperline.hdl.decoder import Decoder


def test_decoder_matches_isa():
    dut = Decoder()
    rng = random.Random(1)
    words = []
    for op in isa.OPS:
        for _ in range(20):
            fields = {}
            for b in op.bits:
                lo = -(1 << (b.width - 1)) if b.signed else 0
                hi = (1 << (b.width - 1)) - 1 if b.signed else (1 << b.width) - 1
                fields[b.name] = rng.choice([lo, hi, rng.randint(lo, hi)])
            words.append(isa.encode(op.name, **fields))
    words += [0xF000_0000, isa.encode("NOP") | 1, isa.encode("HALT") | 0x0800_0000]

    async def bench(ctx):
        for w in words:
            ctx.set(dut.word, w)
            try:
                ins = isa.decode(w)
            except ValueError:
                assert ctx.get(dut.valid) == 0, hex(w)
                continue
            assert ctx.get(dut.valid) == 1, hex(w)
            assert ctx.get(dut.opcode) == int(ins.op.opcode)
            for op in isa.OPS:
                assert ctx.get(dut.flag(op.name)) == (op is ins.op)
            for name, value in ins.fields.items():
                assert ctx.get(dut.field(ins.name, name)) == value, (ins.name, name, hex(w))

    sim = Simulator(dut)
    sim.add_testbench(bench)
    sim.run()
