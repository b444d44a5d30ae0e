"""Ports protocol benchmark: copperd against a raw Unix-socket echo server, same run.

    python -m tests.bench ports            # full run (~75 s: the RSS phase is 60 s)
    python -m tests.bench.bench_ports --short

Figures:
1. ping round trip p50/p99, copperd vs a blocking echo server in its own process (ratio);
2. pipelined requests/s on one connection (pings, one writer thread + one reader);
3. event deliveries/s to 4 subscribers, events injected through the backend event path by
   the ``debug.emit`` test hook (copperd --test-hooks: a daemon thread calls the backend
   event sink, exactly as a backend's timing thread does), paced at rising rates; the
   figure is the best delivery rate at which no subscriber lost an event;
4. daemon RSS growth with one subscriber that never reads, ~50k events/s for 60 s
   (``--short``: 8 s).
Targets: p50 <= 2x echo, >= 50k req/s, >= 100k deliveries/s, RSS growth <= 16 MiB.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from copperline.host.ports.testing import DaemonProcess

ECHO_SERVER = r"""
import socket, sys
srv = socket.socket(socket.AF_UNIX); srv.bind(sys.argv[1]); srv.listen(4)
print("ready", flush=True)
while True:
    c, _ = srv.accept()
    f = c.makefile("rb")
    for line in f:
        c.sendall(line)
    c.close()
"""


def _connect(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    return s


def _rtt(path: str, n: int, line: bytes) -> list[float]:
    s = _connect(path)
    f = s.makefile("rb")
    out = []
    for i in range(n + 50):
        t0 = time.perf_counter_ns()
        s.sendall(line)
        f.readline()
        if i >= 50:            # warm-up
            out.append((time.perf_counter_ns() - t0) / 1000)
    s.close()
    return out


def _pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(len(xs) * p / 100))]


def bench_rtt(daemon_path: str, tmp: str, n: int) -> dict:
    echo_path = os.path.join(tmp, "echo.sock")
    echo = subprocess.Popen([sys.executable, "-c", ECHO_SERVER, echo_path], stdout=subprocess.PIPE, text=True)
    echo.stdout.readline()
    try:
        line = b'{"cmd":"ping"}\n'
        e = _rtt(echo_path, n, line)
        d = _rtt(daemon_path, n, line)
    finally:
        echo.kill()
        echo.wait()
    r = {"echo_p50_us": statistics.median(e), "echo_p99_us": _pct(e, 99),
         "copperd_p50_us": statistics.median(d), "copperd_p99_us": _pct(d, 99)}
    r["ratio_p50"] = r["copperd_p50_us"] / r["echo_p50_us"]
    return r


def bench_pipelined(path: str, n: int) -> dict:
    s = _connect(path)
    reqs = b"".join(b'{"id":%d,"cmd":"ping"}\n' % i for i in range(n))

    def writer():
        s.sendall(reqs)
    t0 = time.perf_counter()
    w = threading.Thread(target=writer)
    w.start()
    got, last = 0, b""
    while got < n:
        chunk = s.recv(1 << 20)
        if not chunk:
            raise RuntimeError("daemon closed the connection")
        got += chunk.count(b"\n")
        last = chunk
    dt = time.perf_counter() - t0
    w.join()
    s.close()
    assert b'"ok":true' in last
    return {"requests": n, "seconds": dt, "req_per_s": n / dt}


class _Counter(threading.Thread):
    """Reads a subscriber connection, counting events and reported drops."""

    def __init__(self, path: str, expect: int, read: bool = True):
        super().__init__(daemon=True)
        self.sock = _connect(path)
        self.sock.settimeout(30)
        self.sock.sendall(b'{"id":"s","cmd":"subscribe","args":{"events":["irq"]}}\n')
        buf = b""
        while b"\n" not in buf:
            buf += self.sock.recv(4096)
        assert b'"ok":true' in buf, buf
        self.expect = expect
        self.events = 0
        self.dropped = 0
        self.done = threading.Event()

    def run(self):
        partial = b""
        while self.events + self.dropped < self.expect:
            try:
                chunk = self.sock.recv(1 << 20)
            except socket.timeout:
                break
            if not chunk:
                break
            n = chunk.count(b"\n")
            if b'"dropped"' in chunk:
                data = partial + chunk
                for ln in data.split(b"\n")[:-1]:
                    if b'"dropped"' in ln:
                        self.dropped += json.loads(ln)["count"]
                        n -= 1
            partial = chunk[chunk.rfind(b"\n") + 1:]
            self.events += n
        self.done.set()


def _fanout_once(path: str, ctl: socket.socket, count: int, rate: int, subscribers: int) -> dict:
    readers = [_Counter(path, count) for _ in range(subscribers)]
    for r in readers:
        r.start()
    t0 = time.perf_counter()
    _req(ctl, {"cmd": "debug.emit", "args": {"event": {"event": "irq", "tag": "bench", "prog": 1,
                                                        "cycle": 0, "time_us": 0.0},
                                              "count": count, "rate": rate}})
    for r in readers:
        r.done.wait(120)
    dt = time.perf_counter() - t0
    delivered = sum(r.events for r in readers)
    dropped = sum(r.dropped for r in readers)
    for r in readers:
        r.sock.close()
    return {"rate": rate, "events": count, "seconds": dt, "delivered": delivered,
            "dropped": dropped, "deliveries_per_s": delivered / dt}


def bench_fanout(path: str, ctl: socket.socket, seconds: float, subscribers: int = 4) -> dict:
    """Step the event rate up; the figure is the best delivery rate with nothing dropped."""
    runs = []
    for rate in (25_000, 50_000, 100_000, 150_000, 200_000):
        run = _fanout_once(path, ctl, int(rate * seconds), rate, subscribers)
        runs.append(run)
        print(f"  fan-out at {rate:,} events/s x {subscribers}: {run['deliveries_per_s']:,.0f} "
              f"deliveries/s, {run['dropped']} dropped", flush=True)
        if run["dropped"]:
            break
        time.sleep(0.2)
    clean = [r for r in runs if not r["dropped"]]
    best = max(clean, key=lambda r: r["deliveries_per_s"]) if clean else runs[0]
    return {"subscribers": subscribers, "runs": runs, "deliveries_per_s": best["deliveries_per_s"],
            "best_rate": best["rate"], "best_dropped": best["dropped"],
            "delivered": best["delivered"]}


def _req(s: socket.socket, msg: dict) -> dict:
    s.sendall(json.dumps(msg).encode() + b"\n")
    buf = b""
    while True:
        buf += s.recv(65536)
        for ln in buf.split(b"\n")[:-1]:
            m = json.loads(ln)
            if "event" not in m:
                return m


def bench_rss(d: DaemonProcess, ctl: socket.socket, seconds: float, rate: int = 50_000) -> dict:
    stuck = _connect(d.path)
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.sendall(b'{"cmd":"subscribe","events":["all"]}\n')
    time.sleep(0.2)
    base = d.rss_kib()
    count = int(seconds * rate)
    _req(ctl, {"cmd": "debug.emit", "args": {"event": {"event": "irq", "tag": "flood", "prog": 1,
                                                        "cycle": 0, "time_us": 0.0},
                                              "count": count, "rate": rate}})
    samples, worst_ping = [], 0.0
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < seconds + 0.5:
        time.sleep(0.5)
        samples.append(d.rss_kib())
        p0 = time.perf_counter()
        assert _req(ctl, {"cmd": "ping"})["ok"]
        worst_ping = max(worst_ping, time.perf_counter() - p0)
    stats = _req(ctl, {"cmd": "debug.stats"})["result"]
    stuck.close()
    return {"seconds": seconds, "rate": rate, "rss_start_kib": base, "rss_max_kib": max(samples),
            "rss_end_kib": samples[-1], "growth_mib": (max(samples) - base) / 1024,
            "worst_ping_ms": worst_ping * 1000, "queued_bytes_at_end": stats["queued_bytes"]}


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="bench_ports")
    ap.add_argument("--short", action="store_true", help="quick run (smaller counts, 8 s RSS phase)")
    ap.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    args = ap.parse_args(argv)
    short = args.short
    results = {}
    with tempfile.TemporaryDirectory(prefix="bench-ports-") as tmp, \
            DaemonProcess("--test-hooks", path=os.path.join(tmp, "d.sock")) as d:
        ctl = _connect(d.path)
        results["rtt"] = bench_rtt(d.path, tmp, 2000 if short else 10000)
        results["pipelined"] = bench_pipelined(d.path, 50_000 if short else 200_000)
        results["fanout"] = bench_fanout(d.path, ctl, 1.0 if short else 2.0)
        results["rss"] = bench_rss(d, ctl, 8.0 if short else 60.0)
        ctl.close()
    if args.json:
        print(json.dumps(results, indent=2))
    r, p, f, m = results["rtt"], results["pipelined"], results["fanout"], results["rss"]
    ok = lambda c: "ok " if c else "MISS"  # noqa: E731
    print(f"ping RTT        copperd p50 {r['copperd_p50_us']:.1f} us  p99 {r['copperd_p99_us']:.1f} us | "
          f"raw echo p50 {r['echo_p50_us']:.1f} us  p99 {r['echo_p99_us']:.1f} us | "
          f"ratio p50 {r['ratio_p50']:.2f}x  [{ok(r['ratio_p50'] <= 2)} target <= 2x]")
    print(f"pipelined       {p['req_per_s']:,.0f} req/s ({p['requests']} pings, one connection)  "
          f"[{ok(p['req_per_s'] >= 50_000)} target >= 50,000]")
    print(f"fan-out         {f['deliveries_per_s']:,.0f} deliveries/s to {f['subscribers']} subscribers "
          f"(best rate with no drops: {f['best_rate']:,} events/s; debug.emit hook)  "
          f"[{ok(f['deliveries_per_s'] >= 100_000)} target >= 100,000]")
    print(f"RSS, stuck sub  +{m['growth_mib']:.2f} MiB over {m['seconds']:.0f} s at {m['rate']:,} events/s "
          f"(start {m['rss_start_kib'] / 1024:.1f} MiB, max {m['rss_max_kib'] / 1024:.1f} MiB; "
          f"worst ping meanwhile {m['worst_ping_ms']:.1f} ms)  [{ok(m['growth_mib'] <= 16)} target <= 16 MiB]")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
