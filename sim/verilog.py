"""Emit the Copper core as Verilog (``amaranth.back.verilog``, builtin Yosys)."""

from __future__ import annotations

import json
import os

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
        f.write(verilog.convert(core, name=TOP))
    meta = dict(params, phases=core.phases, slot_bits=core.slot_bits, pc_bits=core.pc_bits,
                vsync_period=core.vsync_period)
    with open(os.path.join(out_dir, f"{TOP}.json"), "w") as f:
        json.dump(meta, f)
    return path


if __name__ == "__main__":  # pragma: no cover
    import sys
    print(write_core(sys.argv[1] if len(sys.argv) > 1 else "build/verilog", clock_hz=12_000_000))
