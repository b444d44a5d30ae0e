"""Microsecond timing: ``WAIT us N`` lasts exactly ``N * clock_hz / 1e6`` core cycles."""

from __future__ import annotations

from amaranth import Value, unsigned
from amaranth.utils import bits_for

from copperline.firmware import isa

__all__ = ["wait_counter_shape", "us_to_cycles"]


def wait_counter_shape(clock_hz: int):
    """Shape of a down-counter that holds the longest WAIT (``WAIT_US_MAX`` µs) in cycles."""
    return unsigned(bits_for(isa.WAIT_US_MAX * isa.cycles_per_us(clock_hz)))


def us_to_cycles(us: Value, clock_hz: int) -> Value:
    """Cycles of a ``WAIT us`` as an expression: a multiply by the constant
    ``isa.cycles_per_us(clock_hz)`` (Yosys turns it into shifts and adds)."""
    cpu = isa.cycles_per_us(clock_hz)
    return (us * cpu)[:wait_counter_shape(clock_hz).width]
