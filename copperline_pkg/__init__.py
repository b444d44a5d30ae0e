"""copperline: Copper timeline programs on a software VM, in RTL simulation and on FPGA boards."""

__version__ = "0.1.0"
