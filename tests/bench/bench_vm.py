"""VM speed: ops/s of the reference VM on a MOVE/ADD/JUMP loop, virtual time.

Baseline, measured in the same run: a bare Python loop with as many iterations as the
VM issues ops, each doing one masked add (the least an interpreter step could cost).
Target: >= 1,000,000 VM ops/s.

``--instructions`` also counts the machine instructions per VM op with valgrind's
callgrind (a count, not a time: the same on a busy machine as on an idle one, so two
versions of the VM compare exactly): the instructions of a run of N ops minus those of
a run of none, divided by N.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import time

from copperline.firmware import isa
from copperline.firmware.image import Image
from copperline.sim.engine import MachineParams
from copperline.sim.vm import Machine

TARGET_OPS = 1_000_000
OPS = 600_000          # per run; the loop is 3 ops in 4 cycles
RUNS = 5
CHUNK = 100_000        # cycles per run_until call (bounds the event list)


def vm_run(ops: int = OPS) -> tuple[float, int]:
    r = isa.register_index(1, "x")
    image = Image(code=(isa.encode("MOVE", reg=r, value=5), isa.encode("ADD", reg=r, delta=3),
                        isa.encode("JUMP", target=0), isa.encode("HALT")))
    m = Machine(MachineParams(12_000_000, watchdog_ops=10**9))
    m.start(m.load(image))
    end = ops // 3 * 4
    events = 0
    t0 = time.perf_counter()
    while m.cycle < end:
        events += len(m.run_until(min(end, m.cycle + CHUNK)))
    dt = time.perf_counter() - t0
    assert m.ops == ops, m.ops
    return dt, events


def baseline_run() -> float:
    v = 0
    t0 = time.perf_counter()
    for _ in range(OPS):
        v = (v + 3) & 0xFFFF
    return time.perf_counter() - t0


def instructions(ops: int) -> int:
    """Instructions callgrind counts for a process that runs the VM for ``ops`` ops."""
    code = f"import tests.bench.bench_vm as b; b.vm_run({ops})"
    out = subprocess.run(["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null",
                          sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={**os.environ, "PYTHONHASHSEED": "0"}).stderr
    return int(next(line for line in out.splitlines() if "Collected" in line).split()[-1])


def main(argv) -> int:
    if "--instructions" in argv:
        if shutil.which("valgrind") is None:
            print("--instructions needs valgrind (apt-get install valgrind)", file=sys.stderr)
            return 2
        n = OPS // 10
        per_op = (instructions(n) - instructions(0)) / n
        print(f"VM, MOVE/ADD/JUMP loop under callgrind: {per_op:,.0f} instructions per op "
              f"({n} ops)")
    vm = [vm_run() for _ in range(RUNS)]
    base = [baseline_run() for _ in range(RUNS)]
    vm_s = statistics.median(d for d, _ in vm)
    base_s = statistics.median(base)
    ops_s = OPS / vm_s
    print(f"VM, MOVE/ADD/JUMP loop: {OPS} ops, {vm[0][1]} events, median of {RUNS}: "
          f"{vm_s * 1e3:.1f} ms = {ops_s:,.0f} ops/s (target >= {TARGET_OPS:,})")
    print(f"baseline, bare Python loop, {OPS} iterations: {base_s * 1e3:.1f} ms "
          f"= {OPS / base_s:,.0f} iterations/s")
    print(f"ratio VM / bare loop time: {vm_s / base_s:.1f}x")
    print(f"verdict: {'PASS' if ops_s >= TARGET_OPS else 'BELOW TARGET'}")
    return 0
