"""One module per supported FPGA board: platform, clocks, pins, build and flash."""
