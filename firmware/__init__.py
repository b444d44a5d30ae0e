"""What the Copper executes: the ISA, program JSON and its validator, the compiler,
the image container and the disassembler."""
