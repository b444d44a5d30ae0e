"""Helpers shared by the tests and the benchmarks: polling, test programs (fixed, random,
generated), the core on amaranth.sim, the virtual board and a faulty line, copperd."""

from __future__ import annotations

import array
import contextlib
import json
import os
import random
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from amaranth.sim import Simulator
from hypothesis import strategies as st

from copperline.firmware import isa
from copperline.firmware.board_interface import CtxState, EventKind

#: the console scripts of this environment
COPPER = str(Path(sys.executable).with_name("copper"))
COPPERD = str(Path(sys.executable).with_name("copperd"))


def poll(fn, timeout: float = 20.0, every: float = 0.01):
    """``fn()`` until it is truthy (returned) or ``timeout`` seconds pass (then its last
    value): wait for a condition instead of sleeping a fixed time."""
    deadline = time.monotonic() + timeout
    while True:
        v = fn()
        if v or time.monotonic() > deadline:
            return v
        time.sleep(every)


# -- fixed programs ---------------------------------------------------------------------------

#: ticks every millisecond, forever
TICK = {"version": 1, "program": [{"label": "tick"}, {"op": "WAIT", "us": 1000},
                                  {"op": "IRQ", "tag": "tick"}, {"op": "JUMP", "label": "tick"}]}
#: moves layer[2].x, waits 2 ms, raises ``end`` and ends
SHORT = {"version": 1, "program": [{"op": "MOVE", "reg": "layer[2].x", "value": 7},
                                   {"op": "WAIT", "us": 2000}, {"op": "IRQ", "tag": "end"}]}
#: ticks every 500 us, forever
TICKER = {"version": 1, "program": [
    {"label": "top"},
    {"op": "WAIT", "us": 500},
    {"op": "IRQ", "tag": "tick"},
    {"op": "JUMP", "label": "top"}]}
#: five timed steps, a vsync wait, a bind, then HALT (every event kind; it ends)
ENDING_PROGRAM = {"version": 1, "program": [
    {"op": "MOVE", "reg": "layer[1].x", "value": 5},
    {"label": "l"},
    {"op": "WAIT", "us": 200},
    {"op": "ADD", "reg": "layer[1].x", "delta": 3},
    {"op": "IRQ", "tag": "t"},
    {"op": "LOOP", "count": 5, "label": "l"},
    {"op": "WAIT", "vsync": True},
    {"op": "BIND_LAYER", "id": 2, "surface": "s.rgba@2x1"},
    {"op": "MOVE", "reg": "layer[2].alpha", "value": 200},
    {"op": "IRQ", "tag": "v"},
    {"op": "HALT"}]}


def write_ending_surface(directory) -> None:
    """The surface ENDING_PROGRAM binds, next to it (a board with a display reads it)."""
    (Path(directory) / "s.rgba").write_bytes(bytes((255, 0, 0, 255, 0, 0, 0, 0)))


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


def multi_programs(counter_wait_us: int) -> dict[str, list]:
    """The bodies of the multi-program scenarios (``copper run A B C D``), by name.

    ``counter`` counts on layer[0].x every ``counter_wait_us``, four times, then waits for
    timeline vk >= 2 and raises ``after``; ``blocked`` waits for ever on a FENCE (nobody
    sets "never": the host stops it there); ``vsynced`` adds to the counter's register
    on three vsync edges; ``short`` ends by itself.
    """
    return {
        "counter": [
            {"op": "MOVE", "reg": "layer[0].x", "value": 5},
            {"label": "l"},
            {"op": "WAIT", "us": counter_wait_us},
            {"op": "ADD", "reg": "layer[0].x", "delta": 3},
            {"op": "IRQ", "tag": "a"},
            {"op": "LOOP", "count": 4, "label": "l"},
            {"op": "FENCE", "timeline": "vk", "value": 2},
            {"op": "IRQ", "tag": "after"},
            {"op": "HALT"}],
        "blocked": [
            {"op": "IRQ", "tag": "b0"},
            {"op": "FENCE", "timeline": "never", "value": 1},
            {"op": "IRQ", "tag": "never"},
            {"op": "HALT"}],
        "vsynced": [
            {"label": "t"},
            {"op": "WAIT", "vsync": True},
            {"op": "ADD", "reg": "layer[0].x", "delta": 1},
            {"op": "IRQ", "tag": "v"},
            {"op": "LOOP", "count": 3, "label": "t"},
            {"op": "HALT"}],
        "short": [{"op": "WAIT", "us": 7}, {"op": "IRQ", "tag": "s"}, {"op": "HALT"}],
    }


# -- random programs --------------------------------------------------------------------------

def random_move(rng: random.Random, regs: list[str]) -> dict:
    """A MOVE to one of ``regs`` of a value at either end of its field's range or inside."""
    reg = rng.choice(regs)
    f = isa.register_field(isa.parse_register(reg))
    return {"op": "MOVE", "reg": reg, "value": rng.choice([f.min, f.max, rng.randint(f.min, f.max)])}


def random_add(rng: random.Random, regs: list[str]) -> dict:
    """An ADD to one of ``regs`` of a delta at either end of its range, of 1 or -1, or small."""
    return {"op": "ADD", "reg": rng.choice(regs),
            "delta": rng.choice([-32768, 32767, -1, 1, rng.randint(-300, 300)])}


#: the registers gen_program writes: layers 0-3
_GEN_REGS = [f"layer[{l}].{f}" for l in range(4) for f in ("x", "y", "alpha", "z", "visible")]


def gen_program(rng: random.Random) -> dict:
    """A random valid program: nested finite loops, forward jumps, waits, fences, and now
    and then a forever loop (which may trip the watchdog)."""
    ops: list[dict] = []
    n_labels = [0]
    finite_loops = [0]

    def label() -> str:
        n_labels[0] += 1
        return f"L{n_labels[0]}"

    def simple():
        r = rng.random()
        if r < 0.22:
            ops.append(random_move(rng, _GEN_REGS))
        elif r < 0.44:
            ops.append(random_add(rng, _GEN_REGS))
        elif r < 0.56:
            ops.append({"op": "IRQ", "tag": rng.choice("abc")})
        elif r < 0.68:
            ops.append({"op": "WAIT", "us": rng.randint(1, 30)})
        elif r < 0.73:
            ops.append({"op": "WAIT", "vsync": True})
        elif r < 0.80:
            ops.append({"op": "FENCE", "timeline": rng.choice(["t0", "t1"]), "value": rng.randint(0, 3)})
        elif r < 0.86:
            ops.append({"op": "BIND_LAYER", "id": rng.randint(0, 15), "surface": rng.choice(["s1", "s2"])})
        elif r < 0.92:
            ops.append({"op": "NOP"})
        else:
            lab = label()
            ops.append({"op": "JUMP", "label": lab})
            for _ in range(rng.randint(0, 2)):
                ops.append({"op": "IRQ", "tag": "skipped"})
            ops.append({"label": lab})

    def block(depth: int, n: int):
        for _ in range(n):
            if depth < 2 and finite_loops[0] < 6 and rng.random() < 0.2:
                lab = label()
                ops.append({"label": lab})
                block(depth + 1, rng.randint(1, 3))
                finite_loops[0] += 1
                ops.append({"op": "LOOP", "count": rng.choice([1, 2, 3, 5]), "label": lab})
            else:
                simple()

    block(0, rng.randint(2, 10))
    if rng.random() < 0.15:
        lab = label()
        ops.append({"label": lab})
        block(1, rng.randint(1, 3))
        ops.append({"op": "LOOP", "count": -1, "label": lab})
    elif rng.random() < 0.3:
        ops.append({"op": "HALT"})
    return {"version": 1, "program": ops}


# -- valid programs for hypothesis ----------------------------------------------------------

LABELS = ["a", "b", "loop", "L0", "end-of-frame"]
TAGS = ["tick", "frame", "x", "long-tag-" + "t" * 40]
SURFACES = ["/tmp/sprite.rgba", "bg", "fb0"]
TIMELINES = ["vk", "gl", "cam", "audio"]


@st.composite
def _registers(draw):
    layer = draw(st.integers(0, isa.DEFAULT_LAYERS - 1))
    f = draw(st.sampled_from(isa.REGISTER_FIELDS))
    return f"layer[{layer}].{f.name}", f


@st.composite
def _ops(draw, labels):
    kind = draw(st.sampled_from([s.name for s in isa.OPS]))
    if kind in ("HALT", "NOP"):
        return {"op": kind}
    if kind == "WAIT":
        if draw(st.booleans()):
            return {"op": "WAIT", "vsync": True}
        return {"op": "WAIT", "us": draw(st.one_of(st.integers(1, 100_000), st.just(isa.WAIT_US_MAX)))}
    if kind == "MOVE":
        name, f = draw(_registers())
        return {"op": "MOVE", "reg": name, "value": draw(st.integers(f.min, f.max))}
    if kind == "ADD":
        name, _ = draw(_registers())
        return {"op": "ADD", "reg": name, "delta": draw(st.integers(-32768, 32767))}
    if kind == "IRQ":
        return {"op": "IRQ", "tag": draw(st.sampled_from(TAGS))}
    if kind == "JUMP":
        return {"op": "JUMP", "label": draw(st.sampled_from(labels))}
    if kind == "LOOP":
        count = draw(st.one_of(st.just(-1), st.integers(1, isa.LOOP_COUNT_MAX)))
        return {"op": "LOOP", "count": count, "label": draw(st.sampled_from(labels))}
    if kind == "FENCE":
        return {"op": "FENCE", "timeline": draw(st.sampled_from(TIMELINES)),
                "value": draw(st.integers(0, isa.FENCE_VALUE_MAX))}
    if kind == "BIND_LAYER":
        return {"op": "BIND_LAYER", "id": draw(st.integers(0, isa.DEFAULT_LAYERS - 1)),
                "surface": draw(st.sampled_from(SURFACES))}
    raise AssertionError(kind)


@st.composite
def valid_programs(draw):
    """Valid programs using every op, label markers, the labels dict, loops, fences, binds."""
    labels = draw(st.lists(st.sampled_from(LABELS), min_size=1, max_size=4, unique=True))
    body = draw(st.lists(_ops(labels), min_size=1, max_size=40))
    # At most LOOP_SLOTS finite loops: turn the extra ones into forever loops.
    finite = 0
    for op in body:
        if op["op"] == "LOOP" and op["count"] != -1:
            finite += 1
            if finite > isa.LOOP_SLOTS:
                op["count"] = -1
    entries = list(body)
    table = {}
    for name in labels:
        pos = draw(st.integers(0, len(entries)))
        how = draw(st.sampled_from(["marker", "dict", "both"]))
        if how in ("marker", "both"):
            entries.insert(pos, {"label": name})
        if how in ("dict", "both"):
            # An index at the marker itself, or of the op after it: both name the same op.
            table[name] = pos
    doc = {"version": 1, "program": entries}
    if table:
        # Indices were taken before later inserts shifted entries: recompute from markers.
        doc["labels"] = {}
        for name, pos in table.items():
            marker = next((i for i, e in enumerate(entries) if e == {"label": name}), None)
            doc["labels"][name] = marker if marker is not None else _index_of_nth_slot(entries, pos)
    return doc


def _index_of_nth_slot(entries, pos):
    """Index in ``entries`` of the op that was at op position ``pos`` (or the end)."""
    seen = 0
    for i, e in enumerate(entries):
        if "op" in e:
            if seen == pos:
                return i
            seen += 1
    return len(entries)


# -- the core on amaranth.sim -----------------------------------------------------------------

def simulate(dut, bench) -> None:
    """Run the async testbench ``bench`` on ``dut`` under a 1 MHz clock."""
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()


async def write_programs(ctx, core, programs):
    """Write ``programs`` (slot -> words) through prog_wr, waiting for ``ready``."""
    for slot, words in programs.items():
        for i, w in enumerate(words):
            ctx.set(core.prog_wr.valid, 1)
            ctx.set(core.prog_wr.payload.addr, slot * core.program_words + i)
            ctx.set(core.prog_wr.payload.data, w)
            while not ctx.get(core.prog_wr.ready):     # single-port program memory
                await ctx.tick()
            await ctx.tick()
    ctx.set(core.prog_wr.valid, 0)


def event_record(ctx, core):
    """The record at the FIFO's output: (timestamp, slot, started, kind, payload)."""
    p = core.events.payload
    return (ctx.get(p.timestamp), ctx.get(p.slot), ctx.get(p.started),
            EventKind(ctx.get(p.kind)), ctx.get(p.payload))


def run_core(core, programs, *, cycles, fences=(), starts=None, read_regs=()):
    """Write ``programs`` (slot -> words) through prog_wr, start them all at global cycle 0,
    write ``fences`` (cycle, slot, timeline, value) and collect event records; then read
    layer[0].x and the register-file words ``read_regs`` back."""
    records = []
    regs = {}

    async def bench(ctx):
        ctx.set(core.events.ready, 1)
        await write_programs(ctx, core, programs)
        mask = sum(1 << s for s in (starts or programs))
        ctx.set(core.cmd.valid, 1)
        ctx.set(core.cmd.payload.start, mask)
        ctx.set(core.cmd.payload.timebase, 1)
        while not ctx.get(core.cmd.ready):
            await ctx.tick()
        pending = sorted(fences)
        for _ in range(cycles * core.phases + 8):
            if pending and ctx.get(core.cycle) == pending[0][0] and ctx.get(core.phase) == pending[0][1]:
                _, slot, tl, value = pending.pop(0)
                ctx.set(core.fence_wr.valid, 1)
                ctx.set(core.fence_wr.payload.slot, slot)
                ctx.set(core.fence_wr.payload.timeline, tl)
                ctx.set(core.fence_wr.payload.value, value)
            if ctx.get(core.events.valid):
                records.append(event_record(ctx, core))
            await ctx.tick()
            ctx.set(core.cmd.valid, 0)
            ctx.set(core.fence_wr.valid, 0)
        for index in (isa.register_index(0, "x"), *read_regs):
            ctx.set(core.reg_addr, index)
            await ctx.tick()
            regs[index] = ctx.get(core.reg_data)
        for slot in programs:
            ctx.set(core.status_slot, slot)
            regs[("status", slot)] = (CtxState(ctx.get(core.status_state)), ctx.get(core.status_pc))
        regs["dropped"] = ctx.get(core.dropped)

    simulate(core, bench)
    return records, regs


# -- the native RTL engines ------------------------------------------------------------------

#: a small core: a vsync edge every 50 cycles
ENGINE_CFG = dict(clock_hz=1_000_000, vsync_hz=20_000.0, watchdog_ops=40)
#: on every vsync edge: an ADD to layer[0].x and an IRQ, forever
VSYNC_ADDER = {"version": 1, "program": [
    {"label": "top"},
    {"op": "WAIT", "vsync": True},
    {"op": "ADD", "reg": "layer[0].x", "delta": 3},
    {"op": "IRQ", "tag": "f"},
    {"op": "JUMP", "label": "top"}]}


def run_beside_the_vm(engine_cls, **engine_kw) -> list:
    """VSYNC_ADDER for 500 cycles (10 frames) on the VM and on ``engine_cls`` with the same
    parameters (and ``engine_kw``): (events, layer[0].x, pc) of each."""
    from copperline.firmware.compiler import compile_program
    from copperline.sim.engine import MachineParams
    from copperline.sim.vm import Machine
    image = compile_program(VSYNC_ADDER)
    params = MachineParams(**ENGINE_CFG, program_words=64)
    vm = Machine(params)
    rtl = engine_cls(params, **engine_kw)
    try:
        out = []
        for m in (vm, rtl):
            m.start(m.load(image))
            ev = m.run_until(500)
            out.append((ev, m.regs["layer[0].x"], m.status(0)["pc"]))
    finally:
        rtl.close()
    return out


def check_vcd(text: str, cycles: int) -> None:
    """``text`` is a VCD of the core over ``cycles`` core cycles, sampled on every edge."""
    assert "$enddefinitions" in text and "tapv" in text
    assert text.count("\n#") >= 2 * 4 * cycles            # a sample per clock edge


def check_closed_engine(engine) -> None:
    """``engine`` refuses an out-of-range memory write, then closes and refuses to run."""
    from copperline.sim.cxxrtl import CxxrtlError
    with pytest.raises(CxxrtlError, match="row out of range"):
        engine._write_mem("prog", 4 * 64, [1])
    engine.close()
    with pytest.raises(Exception, match="closed"):
        engine.run_until(10)


@contextlib.contextmanager
def opened_backend(url: str, **options):
    """An open :class:`~copperline.host.fpga.FpgaBackend` on ``url`` (``options`` to its
    constructor) and the list its events go to; closed afterwards."""
    from copperline.host.fpga import FpgaBackend
    got: list[dict] = []
    be = FpgaBackend(port=url, **options)
    be.set_event_sink(got.append)
    be.open()
    try:
        yield be, got
    finally:
        be.close()


# -- the virtual board ------------------------------------------------------------------------

#: The virtual board's fabric clock in tests: ``COPPER_TEST_CLOCK_HZ`` (e.g. the board's own
#: 48 MHz, with ``COPPER_TEST_BAUD``, to run the e2e tests at the line's fastest rate) or
#: 12 MHz, which the simulator runs four times as fast as the board's clock.
VIRTUAL_CLOCK_HZ = int(os.environ.get("COPPER_TEST_CLOCK_HZ") or 12_000_000)
VIRTUAL_CORE_HZ = VIRTUAL_CLOCK_HZ // 4  # the iCEBreaker core: 4 contexts -> 4 phases
VIRTUAL_VSYNC_HZ = 1000.0


def virtual_board_baud() -> int:
    """The virtual board's line rate in tests: ``COPPER_TEST_BAUD`` (e.g. to find the
    fastest line the e2e tests pass at) or the boards' default."""
    from copperline.firmware.board_interface import DEFAULT_BAUD
    return int(os.environ.get("COPPER_TEST_BAUD") or DEFAULT_BAUD)


def virtual_board_server(port: int = 0, *, vsync_hz: float = VIRTUAL_VSYNC_HZ,
                         clock_hz: int = VIRTUAL_CLOCK_HZ, baud: int | None = None):
    """A started virtual iCEBreaker (Verilator, paced, at ``clock_hz`` and ``baud``, by
    default :data:`VIRTUAL_CLOCK_HZ` and :func:`virtual_board_baud`) on
    127.0.0.1:``port``, its core with a fast vsync so that programs that wait for vsync
    finish quickly."""
    from copperline.boards.registry import get_board
    from copperline.boards.virtual import VirtualBoardServer
    core = get_board("icebreaker").core_config()      # the board's core (SPRAM model) ...
    core.vsync_hz = vsync_hz                           # ... with a fast vsync
    return VirtualBoardServer("127.0.0.1", port, clock_hz=clock_hz,
                              baud=baud or virtual_board_baud(), core=core,
                              engine="verilator").start()


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


# -- copperd ----------------------------------------------------------------------------------

class Raw:
    """A bare NDJSON connection: send lines, read messages."""

    def __init__(self, path: str):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(5)
        self.sock.connect("\0" + path[1:] if path.startswith("@") else path)
        self.buf = b""
        self.events = []          # events skipped over by req()

    def send(self, line, fds=()):
        data = (line if isinstance(line, bytes) else json.dumps(line).encode()) + b"\n"
        if fds:
            self.sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
        else:
            self.sock.sendall(data)

    def recv(self, timeout=5.0):
        """The next message, or None at EOF."""
        self.sock.settimeout(timeout)
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                return None
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def req(self, msg, fds=()):
        """Send, then return the next response (events met on the way go to .events)."""
        self.send(msg, fds)
        while True:
            m = self.recv()
            if m is None or "event" not in m:
                return m
            self.events.append(m)

    def event(self, timeout=5.0):
        """The next event (those skipped by req() first)."""
        if self.events:
            return self.events.pop(0)
        m = self.recv(timeout)
        assert m is None or "event" in m, m
        return m

    def close(self):
        self.sock.close()


def served(path: str) -> Raw | None:
    """A connection to the daemon on ``path`` if it serves one (answers a ping rather than
    BUSY), else None."""
    c = Raw(path)
    if c.req({"cmd": "ping"})["ok"]:
        return c
    c.close()
    return None


@contextlib.contextmanager
def soft_copperd(sock: str, *extra: str):
    """A ``copperd --backend soft`` on ``sock`` (with ``extra`` options), once it answers
    a ping; terminated afterwards."""
    from copperline.host.client import PortsClient
    proc = subprocess.Popen([COPPERD, "--backend", "soft", "--socket", sock, "--quiet", *extra],
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


def copper_run_on_board_equals_vm(prog, url: str, clock_args: list[str], tmp_path,
                                  timeout: float = 60) -> tuple[float, list[dict]]:
    """``copper run PROG --backend fpga --port URL`` and ``--backend soft`` (virtual
    clock) with the same clock; asserts ``copper trace compare --tolerance-us 0`` passes
    and the events are equal. Returns (seconds the board run took, its events)."""
    hw, vm = tmp_path / "hw.jsonl", tmp_path / "vm.jsonl"
    t0 = time.monotonic()
    r = subprocess.run([COPPER, "run", str(prog), "--backend", "fpga", "--port", url,
                        "--trace", str(hw)] + clock_args, capture_output=True, text=True,
                       timeout=timeout)
    took = time.monotonic() - t0
    assert r.returncode == 0, r.stderr
    r = subprocess.run([COPPER, "run", str(prog), "--backend", "soft", "--clock", "virtual",
                        "--trace", str(vm)] + clock_args, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([COPPER, "trace", "compare", str(hw), str(vm), "--tolerance-us", "0"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "PASS" in r.stdout
    hw_events = [json.loads(line) for line in hw.read_text().splitlines()[1:]]
    vm_events = [json.loads(line) for line in vm.read_text().splitlines()[1:]]
    assert hw_events == vm_events
    return took, hw_events
