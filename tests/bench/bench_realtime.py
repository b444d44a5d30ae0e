"""Real-time accuracy of the soft backend's timing thread (clock="monotonic").

A ``WAIT us 1000; IRQ; JUMP`` loop runs for >= 10,000 events at 1 kHz; lateness is
``wall_us - time_us`` of each IRQ event. drift = mean lateness of the last 1,000 events
minus that of the first 1,000. Targets: p50 <= 5 us, p99 <= 100 us, |drift| <= 2 us.
Baseline, measured in the same run: a plain ``time.sleep`` loop at 1 kHz with absolute
deadlines (the obvious way to do it without a spinning thread).
"""

from __future__ import annotations

import statistics
import threading
import time

from copperline.firmware import isa
from copperline.firmware.image import Image
from copperline.host.soft import SoftBackend

EVENTS = 10_000
BASELINE_TICKS = 2_000
TARGETS = {"p50": 5.0, "p99": 100.0, "drift": 2.0}


def pct(sorted_values, q):
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def figures(late):
    s = sorted(late)
    return {"n": len(s), "p50": pct(s, 0.5), "p99": pct(s, 0.99), "p99.9": pct(s, 0.999),
            "max": s[-1], "drift": statistics.fmean(late[-1000:]) - statistics.fmean(late[:1000])}


def soft_run():
    image = Image(code=(isa.encode("WAIT", us=1000), isa.encode("IRQ", tag=0),
                        isa.encode("JUMP", target=0), isa.encode("HALT")), tags=("tick",))
    b = SoftBackend("monotonic", watchdog_ops=10**9)
    irqs = []
    done = threading.Event()

    def sink(e):                      # runs on the timing thread: append only
        if e["event"] == "irq":
            irqs.append(e)
            if len(irqs) >= EVENTS:
                done.set()
    b.set_event_sink(sink)
    b.open()
    try:
        b.start(b.load(image))
        done.wait(EVENTS / 1000 * 3 + 10)
    finally:
        b.close()
    return [e["wall_us"] - e["time_us"] for e in irqs[:EVENTS]]


def sleep_baseline():
    late = []
    t0 = time.perf_counter_ns()
    for i in range(1, BASELINE_TICKS + 1):
        deadline = t0 + i * 1_000_000
        now = time.perf_counter_ns()
        if deadline > now:
            time.sleep((deadline - now) / 1e9)
        late.append((time.perf_counter_ns() - deadline) / 1000)
    return late


def show(name, f):
    print(f"{name}: n={f['n']} lateness us p50 {f['p50']:.2f}, p99 {f['p99']:.2f}, "
          f"p99.9 {f['p99.9']:.2f}, max {f['max']:.2f}; drift {f['drift']:+.3f} us")


def main(argv) -> int:
    soft = figures(soft_run())
    base = figures(sleep_baseline())
    show("soft backend, timing thread (1 kHz IRQ)", soft)
    show("baseline, time.sleep loop (1 kHz)", base)
    print(f"ratio p50 baseline / soft: {base['p50'] / max(soft['p50'], 1e-3):.1f}x; "
          f"p99: {base['p99'] / max(soft['p99'], 1e-3):.1f}x")
    ok = {"p50": soft["p50"] <= TARGETS["p50"], "p99": soft["p99"] <= TARGETS["p99"],
          "drift": abs(soft["drift"]) <= TARGETS["drift"]}
    print("targets: " + ", ".join(f"{k} {'PASS' if v else 'MISS'}" for k, v in ok.items())
          + " (p50 <= 5 us, p99 <= 100 us, |drift| <= 2 us)")
    return 0
