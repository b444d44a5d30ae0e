"""Small logic helpers for area: hand-mapped iCE40 LUTs and constant compares as bit tests.

Yosys's iCE40 flow maps for delay (``synth_ice40 -device u``): where a path has slack to
spare it may still spend several LUTs to make it shallower. :func:`lut` writes a function
of up to four one-bit inputs as one ``SB_LUT4`` instance on the iCE40 (elsewhere, and in
simulation, as the plain expression), so a structure mapped by hand stays as it is.
:func:`below` writes ``x < k`` for a constant ``k`` as bit tests: a ``<`` becomes a carry
chain, whose cells take a logic cell each on the iCE40 with the LUTs beside them unused.
"""

from __future__ import annotations

from amaranth import *
from amaranth.vendor import SiliconBluePlatform

__all__ = ["is_ice40", "mux", "lut", "all_of", "below"]


def is_ice40(platform) -> bool:
    """True when elaborating for an iCE40 board (``SB_LUT4`` instances are then usable)."""
    return isinstance(platform, SiliconBluePlatform)


def mux(s, a, b):
    """``a`` if ``s`` else ``b``, of Amaranth values or of 0/1 (a LUT's truth table)."""
    return Mux(s, a, b) if isinstance(s, Value) else (a if s else b)


def lut(m: Module, ice40: bool, fn, *ins):
    """``fn`` of up to four one-bit inputs, written with :func:`mux`, ``&``, ``|`` and
    ``^`` (not ``~``: ``fn`` also runs on the ints 0 and 1 to make the truth table): an
    ``SB_LUT4`` on the iCE40, else the expression itself."""
    if not ice40:
        return fn(*ins)
    init = 0
    for k in range(1 << len(ins)):
        if fn(*(k >> j & 1 for j in range(len(ins)))):
            init |= 1 << k
    o = Signal()
    pins = list(ins) + [C(0, 1)] * (4 - len(ins))
    m.submodules += Instance("SB_LUT4", p_LUT_INIT=C(init, 16), i_I0=pins[0], i_I1=pins[1],
                             i_I2=pins[2], i_I3=pins[3], o_O=o)
    return o


def below(x: Value, k: int) -> Value:
    """``x < k`` for a constant ``k`` as bit tests (``x`` is below ``k`` at the highest bit
    where they differ)."""
    if k >= 1 << len(x):
        return C(1)
    terms = [~x[i] & (x[i + 1:] == k >> (i + 1)) for i in range(len(x)) if k >> i & 1]
    return Cat(*terms).any() if terms else C(0)


def all_of(m: Module, ice40: bool, bits) -> Value:
    """The AND of ``bits`` as a tree of four-input LUTs (:func:`lut`)."""
    bits = list(bits)
    while len(bits) > 1:
        bits = [lut(m, ice40, lambda *x: x[0] & x[1] & (x[2] if len(x) > 2 else 1) &
                    (x[3] if len(x) > 3 else 1), *bits[i:i + 4])
                for i in range(0, len(bits), 4)]
    return bits[0]
