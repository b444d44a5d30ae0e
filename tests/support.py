"""Helpers shared by the tests and the benchmarks: a faulty line, event-making programs."""

from __future__ import annotations

import contextlib
import random
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path


def virtual_board_server(port: int = 0, *, vsync_hz: float = 1000.0):
    """A started virtual iCEBreaker (Verilator, paced, 1 Mbaud) on 127.0.0.1:``port``,
    its core with a fast vsync so that programs that wait for vsync finish quickly."""
    from copperline.boards.registry import get_board
    from copperline.boards.virtual import VirtualBoardServer
    core = get_board("icebreaker").core_config()      # the board's core (SPRAM model) ...
    core.vsync_hz = vsync_hz                           # ... with a fast vsync
    return VirtualBoardServer("127.0.0.1", port, clock_hz=12_000_000, baud=1_000_000,
                              core=core, engine="verilator").start()


def stepper(wait_us: int, steps: int) -> dict:
    """A program making a reg and an irq record every ``wait_us`` microseconds, ``steps``
    times, then HALT (``2 * steps + 3`` events with its start and end). Over the largest
    LOOP count, an outer LOOP repeats the inner one (``steps`` must then factor)."""
    most = 8191
    inner = steps if steps <= most else next(
        (d for d in range(most, 0, -1) if steps % d == 0 and steps // d <= most), None)
    if inner is None:
        raise ValueError(f"{steps} steps do not factor into two LOOP counts <= {most}")
    loops = [{"op": "LOOP", "count": inner, "label": "l"}]
    if inner != steps:
        loops.append({"op": "LOOP", "count": steps // inner, "label": "l"})
    return {"version": 1, "program": [
        {"op": "MOVE", "reg": "layer[1].x", "value": 5},
        {"label": "l"},
        {"op": "WAIT", "us": wait_us},
        {"op": "ADD", "reg": "layer[1].x", "delta": 3},
        {"op": "IRQ", "tag": "t"},
        *loops,
        {"op": "HALT"}]}


class FaultyProxy:
    """A TCP proxy that corrupts (flips a bit of) or drops each byte with probability
    ``rate``, in both directions, from one seeded generator per direction."""

    def __init__(self, target: tuple[str, int], rate: float, seed: int):
        self.target, self.rate = target, rate
        self.rngs = {"up": random.Random(seed), "down": random.Random(seed + 1)}
        self.faults = {"up": 0, "down": 0}
        self.bytes = {"up": 0, "down": 0}
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.url = "socket://127.0.0.1:%d" % self._sock.getsockname()[1]
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self._stop:
            try:
                client, _ = self._sock.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target)
            for s in (client, upstream):       # a byte goes on at once, like on a UART
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            for a, b, d in ((client, upstream, "up"), (upstream, client, "down")):
                threading.Thread(target=self._pump, args=(a, b, d), daemon=True).start()

    def _mangle(self, data: bytes, d: str) -> bytes:
        rng, out = self.rngs[d], bytearray()
        for b in data:
            x = rng.random()
            if x < self.rate / 2:
                self.faults[d] += 1                               # dropped
            elif x < self.rate:
                self.faults[d] += 1
                out.append(b ^ (1 << rng.randrange(8)))           # corrupted
            else:
                out.append(b)
        self.bytes[d] += len(data)
        return bytes(out)

    def _pump(self, src, dst, d):
        try:
            while True:
                data = src.recv(4096)
                if not data:
                    break
                dst.sendall(self._mangle(data, d))
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self):
        self._stop = True
        self._sock.close()


@contextlib.contextmanager
def soft_copperd(sock: str, *extra: str):
    """A ``copperd --backend soft`` on ``sock`` (with ``extra`` options), once it answers
    a ping; terminated afterwards."""
    from copperline.host.client import PortsClient
    copperd = str(Path(sys.executable).with_name("copperd"))
    proc = subprocess.Popen([copperd, "--backend", "soft", "--socket", sock, "--quiet", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:                         # ready when it answers a ping
            try:
                with PortsClient(sock, timeout=2) as c:
                    c.ping()
                break
            except OSError:
                assert proc.poll() is None, proc.communicate()
                assert time.monotonic() < deadline, "copperd did not come up"
                time.sleep(0.05)
        yield sock
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
