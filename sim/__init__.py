"""Simulation: cocotb testbenches and drivers, the RTL-simulation backend, the virtual board."""
