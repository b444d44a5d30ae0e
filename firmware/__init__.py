"""What the Copper executes and the contracts around it: the ISA, program JSON and its
validator, the compiler, the image container, the disassembler, the trace format and the
board's host interface. Pure Python: no Amaranth."""
