"""Digests of the elaborated gateware: the core alone and each board's full top.

A refactoring that must not change the hardware (docs/architecture.md) prints the same
digests before and after: ``python tools/netlist_digest.py``. The digest is the SHA-256 of
the RTLIL Amaranth emits, so any change of a cell, wire or name changes it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys

from amaranth.back import rtlil

from copperline.boards.registry import all_boards
from copperline.hdl.core import Core
from copperline.hdl.top import LinkTop


def designs():
    """(name, elaboratable) pairs: the core with its defaults, then each board's top."""
    yield "core", Core(clock_hz=12_000_000)
    for board in all_boards():
        config = board.core_config()
        yield f"{board.name}-top", LinkTop(clock_hz=board.clock_hz, core=config)


def digest(design) -> str:
    return hashlib.sha256(rtlil.convert(design).encode()).hexdigest()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)
    out = {name: digest(d) for name, d in designs()}
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        for name, h in out.items():
            print(f"{h[:16]}  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
