"""Emit the Copper core as Verilog (``amaranth.back.verilog``, builtin Yosys)."""

from __future__ import annotations

import json
import os
import re

from amaranth.back import verilog

from copperline.hdl.core import Core

__all__ = ["write_core", "TOP"]

TOP = "copper_core"


def write_core(out_dir: str, **params) -> str:
    """Write ``copper_core.v`` (and ``copper_core.json`` with the parameters) into
    ``out_dir``; returns the Verilog path. ``params`` go to :class:`Core`."""
    os.makedirs(out_dir, exist_ok=True)
    core = Core(**params)
    path = os.path.join(out_dir, f"{TOP}.v")
    with open(path, "w") as f:
        f.write(wake_comb_blocks(verilog.convert(core, name=TOP)))
    meta = dict(params, phases=core.phases, slot_bits=core.slot_bits, pc_bits=core.pc_bits,
                vsync_period=core.vsync_period, fifo_reserve=core.fifo_reserve)
    with open(os.path.join(out_dir, f"{TOP}.json"), "w") as f:
        json.dump(meta, f)
    return path


_AUTO = re.compile(r"^(\s*)reg (\\\$auto\$verilog_backend\S*)\s+= 0;$", re.M)


def wake_comb_blocks(text: str) -> str:
    """Make every ``always @*`` block of Yosys' Verilog run once at the start.

    Yosys puts ``if (\\$auto$verilog_backend...) begin end`` in each combinational block and
    declares that reg as ``= 0`` so that the block runs at time 0. Icarus applies a
    declaration initialiser before any process waits, so no block wakes up: a block whose
    inputs do not change during reset (the phase counters and context states are held
    then) keeps X outputs, X reaches the context state through the fetch address, and
    the first test of a run sees no events. Toggling the reg at 1 time unit, before the
    first clock edge, runs every block once.
    """
    return _AUTO.sub(lambda m: f"{m.group(1)}reg {m.group(2)} = 0;\n"
                               f"{m.group(1)}initial #1 {m.group(2)} = 1'b1;", text)


if __name__ == "__main__":  # pragma: no cover
    import sys
    from copperline.cache import cache_dir
    from copperline.firmware.board_interface import DEFAULT_CLOCK_HZ
    print(write_core(sys.argv[1] if len(sys.argv) > 1 else str(cache_dir() / "verilog"),
                     clock_hz=DEFAULT_CLOCK_HZ))
