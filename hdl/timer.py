"""Microsecond timing: ``WAIT us N`` lasts exactly ``N * clock_hz / 1e6`` core cycles.

A context's remaining delay is kept in two fields so that no multiplier is needed:
``hi`` whole microseconds **plus one** and ``lo`` cycles (``0 .. cycles_per_us - 1``); the
remaining cycles are ``(hi - 1) * cycles_per_us + lo``. ``WAIT us N`` loads ``N * cpu - 1``
as ``hi = N, lo = cpu - 1`` (the ``+ 1`` spares a 27-bit subtractor on the word's field);
a constant cost ``d`` loads ``divmod(d, cpu)`` with 1 added to ``hi``.
"""

from __future__ import annotations

from amaranth import Mux, Const, unsigned
from amaranth.lib import data
from amaranth.utils import bits_for

from copperline.firmware import isa

__all__ = ["delay_layout", "delay_const", "delay_wait", "delay_dec", "delay_zero", "delay_one",
           "delay_is_zero_const"]


def delay_layout(clock_hz: int) -> data.StructLayout:
    """``hi`` (microseconds) and ``lo`` (cycles below one microsecond)."""
    cpu = isa.cycles_per_us(clock_hz)
    return data.StructLayout({"hi": unsigned(isa.WAIT_US_BITS), "lo": unsigned(bits_for(cpu - 1))})


def delay_const(clock_hz: int, cycles: int):
    """The delay value of a constant ``cycles``."""
    cpu = isa.cycles_per_us(clock_hz)
    hi, lo = divmod(cycles, cpu)
    lay = delay_layout(clock_hz)
    return Const(hi + 1, isa.WAIT_US_BITS), Const(lo, lay.members["lo"])


def delay_wait(us, clock_hz: int):
    """(hi, lo) for ``WAIT us``: ``us * cpu - 1`` cycles (``us`` >= 1)."""
    cpu = isa.cycles_per_us(clock_hz)
    lay = delay_layout(clock_hz)
    return us[:isa.WAIT_US_BITS], Const(cpu - 1, lay.members["lo"])


def delay_dec(hi, lo, clock_hz: int):
    """(hi, lo) one cycle later (the value must not be zero)."""
    cpu = isa.cycles_per_us(clock_hz)
    if cpu == 1:
        return (hi - 1)[:len(hi)], lo
    return (Mux(lo == 0, hi - 1, hi)[:len(hi)], Mux(lo == 0, cpu - 1, lo - 1)[:len(lo)])


def delay_zero(hi, lo):
    """The delay is 0."""
    return (hi == 1) & (lo == 0)


def delay_one(hi, lo, clock_hz: int):
    """The delay is 1 (0 after one count down)."""
    if isa.cycles_per_us(clock_hz) == 1:
        return hi == 2
    return (hi == 1) & (lo == 1)


def delay_is_zero_const(k) -> bool:
    """``k`` (a :func:`delay_const` pair) is a zero delay."""
    return k[0].value == 1 and k[1].value == 0
