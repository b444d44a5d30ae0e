"""Instruction decoder, generated from :mod:`copperline.firmware.isa`.

Nothing here retypes an opcode, a bit position or a width: the signature and the logic
are built by iterating over ``isa.OPS``. Change the ISA and the decoder follows.
"""

from __future__ import annotations

from amaranth import Module, Const, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from copperline.firmware import isa

__all__ = ["Decoder", "field_port", "op_port"]


def op_port(op: isa.OpSpec) -> str:
    """Name of the one-hot output that is 1 when the word holds ``op``."""
    return f"is_{op.name.lower()}"


def field_port(op: isa.OpSpec, bit: isa.BitField) -> str:
    """Name of the output that carries ``bit`` of ``op``."""
    return f"{op.name.lower()}_{bit.name}"


def _shape(bit: isa.BitField):
    return signed(bit.width) if bit.signed else unsigned(bit.width)


class Decoder(wiring.Component):
    """Combinational decoder of one Copper instruction word.

    Ports are generated: ``word`` in; ``opcode``; ``valid`` (a known opcode with no
    reserved bit set); one ``is_<op>`` flag per op in ``isa.OPS``; and one
    ``<op>_<field>`` output per bit field of that op (signed where the ISA says so).

    Attributes
    ----------
    word : In(isa.WORD_BITS)
        The instruction word.
    opcode : Out(isa.OPCODE_BITS)
        Bits ``[OPCODE_SHIFT + OPCODE_BITS - 1 : OPCODE_SHIFT]``.
    valid : Out(1)
        1 when the opcode is defined and no reserved bit is set.
    """

    def __init__(self):
        members = {"word": In(isa.WORD_BITS), "opcode": Out(isa.OPCODE_BITS), "valid": Out(1)}
        for op in isa.OPS:
            members[op_port(op)] = Out(1)
            for bit in op.bits:
                members[field_port(op, bit)] = Out(_shape(bit))
        super().__init__(members)

    def flag(self, name: str):
        """The ``is_<op>`` output of the op called ``name``."""
        return getattr(self, op_port(isa.OP_BY_NAME[name]))

    def field(self, op_name: str, field_name: str):
        """The output carrying field ``field_name`` of op ``op_name``."""
        op = isa.OP_BY_NAME[op_name]
        return getattr(self, field_port(op, op.bit(field_name)))

    def elaborate(self, platform):
        m = Module()
        word = self.word
        m.d.comb += self.opcode.eq(word[isa.OPCODE_SHIFT:isa.OPCODE_SHIFT + isa.OPCODE_BITS])
        valid = Const(0, 1)
        for op in isa.OPS:
            hit = self.opcode == int(op.opcode)
            m.d.comb += getattr(self, op_port(op)).eq(hit)
            reserved = word & Const(op.reserved_mask, isa.WORD_BITS)
            valid = valid | (hit & (reserved == 0))
            for bit in op.bits:
                raw = word[bit.lsb:bit.lsb + bit.width]
                port = getattr(self, field_port(op, bit))
                m.d.comb += port.eq(raw.as_signed() if bit.signed else raw)
        m.d.comb += self.valid.eq(valid)
        return m
