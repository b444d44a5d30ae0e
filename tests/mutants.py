"""Mutation testing of the gateware (issue 14, item 6): ``python -m tests.mutants``.

Each mutant is one deliberate fault: a text patch of one ``hdl/`` module. The patch is
never written to the tree: the test run gets ``COPPERLINE_MUTANT=<name>`` and the pytest
plugin :mod:`tests.mutant_hook`, which compiles the patched source in place of the
module's when it is imported. For each mutant a targeted subset of the suite (the tests
most likely to catch it, fastest first) runs with ``-x``; the mutant is *killed* by the
first test that fails, and *SURVIVED* if all pass. A final table lists them.

    python -m tests.mutants            # every mutant (a few minutes)
    python -m tests.mutants --list     # the mutants and their tests
    python -m tests.mutants NAME ...   # some of them
    python -m tests.mutants --baseline # first check the targeted tests pass unmutated
    python -m tests.mutants --every    # every targeted test that kills each mutant
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import re
import subprocess
import sys
import time
from pathlib import Path

log = logging.getLogger("tests.mutants")

ROOT = Path(__file__).resolve().parent.parent


@dataclasses.dataclass(frozen=True)
class Mutant:
    name: str
    module: str                  # dotted module name (copperline.hdl.x)
    old: str
    new: str
    what: str
    tests: tuple[str, ...]       # pytest node ids, tried in this order
    occurrence: int = 0          # which occurrence of ``old`` (0: it must be unique)

    @property
    def path(self) -> Path:
        return ROOT / "hdl" / (self.module.rsplit(".", 1)[1] + ".py")

    def apply(self, source: str) -> str:
        n = source.count(self.old)
        if (self.occurrence == 0 and n != 1) or n < self.occurrence:
            raise ValueError(f"mutant {self.name}: {self.old!r} occurs {n} times in "
                             f"{self.path.name} (the source changed: update the mutant)")
        i = -1
        for _ in range(max(1, self.occurrence)):
            i = source.index(self.old, i + 1)
        return source[:i] + self.new + source[i + len(self.old):]


F = "tests/test_hdl_formal.py::test_formal_proof"
CORE = "tests/test_hdl_core.py"
FIFO = "tests/test_hdl_event_fifo.py"
LINK = "tests/test_hdl_link.py"
COMP = "tests/test_hdl_compositor.py"
EQ = "tests/test_sim_equivalence.py"

MUTANTS = {m.name: m for m in [
    Mutant("fence_high_half_off", "copperline.hdl.core",
           "return (_borrow(value[fh:], stored[fh:]), stored[fh:] != value[fh:],",
           "return (Const(0, 1), Const(0, 1),",
           "FENCE compares the low 12 bits only (high half disabled)",
           (f"{F}[fence_compare]", "tests/test_hdl_core_fence.py")),
    Mutant("fence_write_forward_inverted", "copperline.hdl.core",
           "return ~_borrow(written, value)", "return ~_borrow(written, value + 1)",
           "a same-clock fence write meets the FENCE only if > value",
           (f"{F}[fence_compare]", "tests/test_hdl_core_fence.py")),
    Mutant("subus_decrement_wrong", "copperline.hdl.timer",
           "Mux(lo == 0, cpu - 1, lo - 1)", "Mux(lo == 0, cpu - 2, lo - 1)",
           "the sub-microsecond counter reloads cpu - 2 (a microsecond one cycle short)",
           (f"{F}[timer_3mhz]", f"{F}[timer_12mhz]", "tests/test_hdl_core_wait.py")),
    Mutant("delay_one_wrong", "copperline.hdl.timer",
           "return (hi == 1) & (lo == 1)", "return (hi == 1) & (lo == 2)",
           "the 'delay is 1' test (the precomputed zero flag) off by one below 1 µs",
           (f"{F}[timer_3mhz]", f"{F}[timer_12mhz]", "tests/test_hdl_core_wait.py")),
    Mutant("vsync_latency_plus_one", "copperline.hdl.core",
           "k_vs = delay_const(chz, isa.VSYNC_LATENCY - 1)",
           "k_vs = delay_const(chz, isa.VSYNC_LATENCY)",
           "WAIT vsync resumes one cycle late",
           (f"{CORE}::test_timing_of_every_op_class[bram]",)),
    Mutant("branch_cost_plus_one", "copperline.hdl.core",
           "k_branch = delay_const(chz, isa.CYCLES_BRANCH - 1)",
           "k_branch = delay_const(chz, isa.CYCLES_BRANCH)",
           "JUMP / taken LOOP cost one cycle more",
           (f"{CORE}::test_timing_of_every_op_class[bram]",)),
    Mutant("fence_resume_plus_one", "copperline.hdl.core",
           "k_fr = delay_const(chz, isa.FENCE_RESUME_LATENCY - 1)",
           "k_fr = delay_const(chz, isa.FENCE_RESUME_LATENCY)",
           "a satisfied FENCE resumes one cycle late",
           (f"{CORE}::test_timing_of_every_op_class[bram]",)),
    Mutant("loop_not_rearmed", "copperline.hdl.core",
           "return armed & ~onehot", "return armed",
           "a LOOP that falls through keeps its counter armed (no re-arm)",
           (f"{F}[loop_rearm]", f"{CORE}::test_loops_counter_wrap_and_watchdog",
            "tests/test_hdl_core_loops.py")),
    Mutant("loop_exit_test_wrong", "copperline.hdl.core",
           "return Mux(counting, counter == 1, count == 1)",
           "return Mux(counting, counter == 0, count == 1)",
           "a counting LOOP falls through one pass late",
           (f"{F}[loop_rearm]", f"{CORE}::test_loops_counter_wrap_and_watchdog",
            "tests/test_hdl_core_loops.py")),
    Mutant("stop_reports_fence_pc", "copperline.hdl.core",
           'reg_e("alt_pc", Mux(x_stop & st_fe_x, pc1_x, pc_x), pb, reset_less=True)',
           'reg_e("alt_pc", pc_x, pb, reset_less=True)',
           "a host stop at a blocked FENCE reports the FENCE's pc (issue 14's bug)",
           (f"{EQ}::test_host_stop_reports_the_same_pc[fence-amaranth]",)),
    Mutant("fifo_reserve_ignored", "copperline.hdl.event_fifo",
           "accept = Mux(self.urgent, ~full, roomy) if self.reserve else ~full",
           "accept = ~full",
           "plain FIFO: ordinary records take the reserved places", 
           (f"{F}[fifo_plain_d4_r1]", f"{FIFO}::test_reserved_places_take_only_urgent_records[plain]"),
           occurrence=1),
    Mutant("fifo_outreg_reserve_ignored", "copperline.hdl.event_fifo",
           "accept = Mux(self.urgent, ~full, roomy) if self.reserve else ~full",
           "accept = ~full",
           "outreg FIFO: ordinary records take the reserved places",
           (f"{F}[fifo_outreg_d6_r1]", f"{FIFO}::test_reserved_places_take_only_urgent_records[outreg]"),
           occurrence=2),
    Mutant("fifo_dropped_off_by_one", "copperline.hdl.event_fifo",
           "m.d.sync += self.dropped.eq(self.dropped + 1)",
           "m.d.sync += self.dropped.eq(self.dropped + 1 + (self.dropped == 1))",
           "plain FIFO: the drop count skips a value after the first drop",
           (f"{F}[fifo_plain_d4_r1]", f"{FIFO}::test_fifo_drops_and_counts_when_full[plain]"),
           occurrence=1),
    Mutant("link_crc_skipped", "copperline.hdl.link",
           "rx_min & rx_crc.match_detected)]", "rx_min)]",
           "the link executes frames without checking their CRC",
           (f"{F}[link_first_frame]", f"{LINK}::test_bad_crc_is_dropped_and_counted_then_next_frame_works")),
    Mutant("link_repeat_check_skipped", "copperline.hdl.link",
           "with m.If(repeat):",
           "with m.If(0):",
           "the link executes a retransmitted request again",
           (f"{F}[link_second_frame]",
            f"{LINK}::test_duplicate_request_resends_response_without_executing_again")),
    Mutant("compositor_alpha_unrounded", "copperline.hdl.compositor",
           "w.eq(alpha + (alpha >> 7))", "w.eq(alpha)",
           "the compositor blends with alpha itself, not display.alpha_weight (255 is not opaque)",
           (f"{COMP}::test_static_layers_pixel_exact",)),
    Mutant("compositor_ties_reversed", "copperline.hdl.compositor",
           "key = Cat(addr2[_W_BITS:_W_BITS + nb],", "key = Cat(~addr2[_W_BITS:_W_BITS + nb],",
           "layers of equal z are drawn in falling layer order",
           (f"{COMP}::test_static_layers_pixel_exact",)),
    Mutant("compositor_half_height", "copperline.hdl.compositor",
           "dy_lo[ls_bits:] == 0)", "dy_lo[ls_bits - 1:] == 0)",
           "layers are drawn on half their lines",
           (f"{COMP}::test_static_layers_pixel_exact",
            f"{COMP}::test_clipping_on_a_canvas_whose_table_shares_the_addresses")),
    Mutant("compositor_surface_halves_swapped", "copperline.hdl.compositor",
           "Mux(k[0], s_rdata[16:], s_rdata[:16])", "Mux(k[0], s_rdata[:16], s_rdata[16:])",
           "a surface word's two pixels are drawn in the wrong order",
           (f"{COMP}::test_surfaces_pixel_exact",)),
    Mutant("compositor_surface_one_line_taller", "copperline.hdl.compositor",
           "(dy_lo < desc_h)", "(dy_lo <= desc_h)",
           "a surface is drawn one line taller than its descriptor's height",
           (f"{COMP}::test_surfaces_pixel_exact",)),
    Mutant("compositor_surface_write_in_read", "copperline.hdl.compositor",
           "s_we.eq(wpend & ~s_rd)", "s_we.eq(wpend)",
           "a host write takes the single-port surface memory's clock from a read",
           (f"{COMP}::test_surface_writes_during_reads_are_not_lost",)),
    Mutant("bind_writes_no_register", "copperline.hdl.core",
           'o_rf_we.eq(op["reg"] | op["bind"]),', 'o_rf_we.eq(op["reg"]),',
           "BIND_LAYER emits its event but leaves the layer's surface register alone",
           (f"{CORE}::test_bind_layer_writes_the_layers_surface_register",)),
    Mutant("reset_all_keeps_registers", "copperline.hdl.core",
           "m.d.comb += [rf.clear.eq(clear),", "m.d.comb += [rf.clear.eq(0),",
           "a reset-all leaves the registers (and the layers' bindings) as they were",
           (f"{CORE}::test_reset_all_clears_the_registers_and_holds_commands_meanwhile",)),
]}


def _run(mutant: Mutant | None, tests, timeout: float,
         every: bool = False) -> tuple[str | None, float, str]:
    """Run ``tests`` (with ``mutant``); the first failing node id (``every``: all of
    them, comma-separated), or None."""
    env = dict(os.environ)
    env.pop("COPPERLINE_MUTANT", None)
    if mutant is not None:
        env["COPPERLINE_MUTANT"] = mutant.name
    cmd = [sys.executable, "-m", "pytest", *([] if every else ["-x"]), "-q", "-p", "tests.mutant_hook",
           "-p", "no:cacheprovider", *tests]
    t0 = time.monotonic()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, timeout=timeout)
        out = proc.stdout
        rc = proc.returncode
    except subprocess.TimeoutExpired as e:
        return "TIMEOUT", time.monotonic() - t0, str(e.stdout or "")
    dt = time.monotonic() - t0
    if rc == 0:
        return None, dt, out
    found = re.findall(r"^(?:FAILED|ERROR) (\S+)", out, re.M)
    killer = ", ".join(found) if found else f"pytest rc={rc}"
    # a fault must fail an assertion, not break the import or the elaboration
    if not re.search(r"^E\s+(AssertionError|assert )", out, re.M):
        err = re.search(r"^E\s+(.*)$", out, re.M)
        killer = f"{killer} (NOT an assertion: {err.group(1)[:80] if err else 'no message'})"
    return killer, dt, out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tests.mutants", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("names", nargs="*")
    ap.add_argument("--list", action="store_true")
    ap.add_argument("--baseline", action="store_true",
                    help="first run every targeted test unmutated (they must pass)")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per mutant")
    ap.add_argument("--every", action="store_true",
                    help="run all of a mutant's targeted tests (not only up to the first "
                         "failure) and list every test that kills it")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    names = args.names or list(MUTANTS)
    unknown = [n for n in names if n not in MUTANTS]
    if unknown:
        print(f"unknown mutant(s): {', '.join(unknown)}; --list shows them", file=sys.stderr)
        return 2
    if args.list:
        for n in names:
            mu = MUTANTS[n]
            print(f"{n:30} {mu.module:28} {mu.what}\n{'':30} tests: {', '.join(mu.tests)}")
        return 0
    # every patch must apply (a stale mutant is an error, not a kill)
    for n in names:
        MUTANTS[n].apply(MUTANTS[n].path.read_text())
    if args.baseline:
        tests = sorted({t for n in names for t in MUTANTS[n].tests})
        log.info("baseline: %d targeted tests, unmutated", len(tests))
        failed, dt, out = _run(None, tests, args.timeout * 2)
        if failed:
            print(f"baseline FAILED ({failed}): fix the suite first\n{out[-3000:]}")
            return 1
        log.info("baseline passed in %.0f s", dt)
    rows = []
    t_all = time.monotonic()
    for i, n in enumerate(names, 1):
        mu = MUTANTS[n]
        log.info("[%d/%d] %s: %s", i, len(names), n, mu.what)
        killer, dt, out = _run(mu, mu.tests, args.timeout, args.every)
        rows.append((n, killer, dt))
        log.info("    %s in %.0f s", f"killed by {killer}" if killer else "SURVIVED", dt)
    killed = sum(1 for _, k, _ in rows if k and "NOT an assertion" not in k)
    print(f"\n{'mutant':30} {'result':8} {'time':>6}  killed by")
    for n, k, dt in rows:
        res = "SURVIVED" if not k else "killed" if "NOT an assertion" not in k else "ERROR"
        print(f"{n:30} {res:8} {dt:5.0f}s  {k or '-'}")
    print(f"\n{killed}/{len(rows)} mutants killed in {time.monotonic() - t_all:.0f} s")
    return 0 if killed == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
