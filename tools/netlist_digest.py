"""Digests of the elaborated gateware: the core alone and each board's full top.

A refactoring that must not change the hardware (docs/architecture.md) prints the same
digests before and after: ``python tools/netlist_digest.py``. The digest is the SHA-256 of
the RTLIL Amaranth emits, so any change of a cell, wire or name changes it.
``tests/test_netlist_digest.py`` checks them against ``tools/netlist_digests.json``; after an
intended hardware change refresh that file: ``python tools/netlist_digest.py --json >
tools/netlist_digests.json``.
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
        yield f"{board.name}-top", LinkTop(clock_hz=board.clock_hz, core=config,
                                           link_tx_outreg=board.link_tx_outreg)


def digest(design) -> str:
    """SHA-256 of ``design``'s RTLIL, hex."""
    # no ``src`` attributes: they hold the absolute path and line of the Python source, so
    # a moved line or another checkout would change the digest of the same hardware
    return hashlib.sha256(rtlil.convert(design, emit_src=False).encode()).hexdigest()


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
