"""Convert a trace to formats that existing viewers open: Perfetto and VCD.

* **perfetto** -- Chrome trace-event JSON (``{"traceEvents": [...]}``) that
  ui.perfetto.dev and chrome://tracing open. One process per program (``prog N``) with
  threads ``irq`` (instant events named by tag), ``state`` (a slice per program state)
  and ``bind``; one counter track per register; a ``backend`` process carries ``vsync``
  and ``dropped``. Timestamps are in µs. A trace with ``wall_us`` exported in model time
  also gets a ``lateness_us`` counter (``wall_us - time_us``) per program.
* **vcd** -- a Value Change Dump (via pyvcd) for GTKWave, timescale 1 ns. Registers are
  shared by all programs and sit under ``copperline.regs.layerN`` as ``integer`` vars of
  the register's width (signed ones in two's complement; the optional GTKWave save file
  shows them as signed decimal); each program has ``copperline.progN.state`` (a
  ``string`` var) and an ``event`` var per IRQ tag under ``copperline.progN.irq``.
"""

from __future__ import annotations

import json
import logging
import re

from copperline.firmware import isa
from copperline.firmware.trace import PROGRAM_KINDS, TIMED_KINDS, Trace, TraceError, time_field

log = logging.getLogger(__name__)

FORMATS = ("perfetto", "vcd")

#: Perfetto process id of the backend-wide tracks; program N is process PROG_PID_BASE + N.
BACKEND_PID = 1
PROG_PID_BASE = 100
_THREADS = {"irq": 1, "state": 2, "bind": 3}


def export(t: Trace, fmt: str, out: str, *, time: str = "model", gtkw: str | None = None) -> int:
    """Write ``t`` to ``out`` in ``fmt``; returns the number of trace events exported."""
    if fmt == "perfetto":
        doc = to_perfetto(t, time=time)
        with open(out, "w", encoding="utf-8") as f:
            json.dump(doc, f, separators=(",", ":"))
            f.write("\n")
    elif fmt == "vcd":
        with open(out, "w", encoding="ascii") as f:
            signals = write_vcd(t, f, time=time)
        if gtkw:
            write_gtkw(signals, out, gtkw)
    else:
        raise ValueError(f"unknown export format {fmt!r} (expected {' or '.join(FORMATS)})")
    return len(t.events)


def _timed(t: Trace, time: str):
    """Yield (event, line, µs) in trace order; untimed events (dropped) take the time
    of the event before them."""
    tf = time_field(t, time)
    last = 0.0
    for e, ln in zip(t.events, t.lines):
        if e["event"] in TIMED_KINDS:
            last = e.get(tf, e["time_us"])   # an event without wall_us falls back to time_us
        yield e, ln, last


# ---------------------------------------------------------------------------------
# Perfetto / Chrome trace-event JSON
# ---------------------------------------------------------------------------------

def to_perfetto(t: Trace, *, time: str = "model") -> dict:
    """The Chrome trace-event JSON object for ``t``."""
    h = t.header
    tf = time_field(t, time)
    events: list[dict] = []
    meta: list[dict] = [
        {"name": "process_name", "ph": "M", "pid": BACKEND_PID,
         "args": {"name": f"copperline {h['backend']} @ {h['clock_hz'] / 1e6:g} MHz"}},
        {"name": "process_sort_index", "ph": "M", "pid": BACKEND_PID, "args": {"sort_index": 0}},
        {"name": "thread_name", "ph": "M", "pid": BACKEND_PID, "tid": 1, "args": {"name": "vsync"}},
        {"name": "thread_name", "ph": "M", "pid": BACKEND_PID, "tid": 2, "args": {"name": "dropped"}},
    ]
    progs: set[int] = set()
    open_state: dict[int, tuple[str, float, dict]] = {}
    end_us = 0.0
    for e, ln, ts in _timed(t, time):
        end_us = max(end_us, ts)
        kind = e["event"]
        args = {k: v for k, v in e.items() if k not in ("event", "prog")}
        if kind in PROGRAM_KINDS:
            prog = e["prog"]
            pid = PROG_PID_BASE + prog
            if prog not in progs:
                progs.add(prog)
                meta.append({"name": "process_name", "ph": "M", "pid": pid,
                             "args": {"name": f"prog {prog}"}})
                meta.append({"name": "process_sort_index", "ph": "M", "pid": pid,
                             "args": {"sort_index": prog + 1}})
                for name, tid in _THREADS.items():
                    meta.append({"name": "thread_name", "ph": "M", "pid": pid, "tid": tid,
                                 "args": {"name": name}})
            if kind == "irq":
                events.append({"name": e["tag"], "cat": "irq", "ph": "i", "s": "t", "ts": ts,
                               "pid": pid, "tid": _THREADS["irq"], "args": args})
            elif kind == "reg":
                events.append({"name": e["reg"], "cat": "reg", "ph": "C", "ts": ts, "pid": pid,
                               "args": {"value": e["value"]}})
            elif kind == "bind":
                events.append({"name": f"bind layer {e['layer']}", "cat": "bind", "ph": "i",
                               "s": "t", "ts": ts, "pid": pid, "tid": _THREADS["bind"],
                               "args": args})
            elif kind == "state":
                # A state lasts until the program's next state event: a complete slice.
                if prog in open_state:
                    name, start, sargs = open_state.pop(prog)
                    events.append(_state_slice(pid, name, start, ts, sargs))
                open_state[prog] = (e["state"], ts, args)
            if tf == "time_us" and "wall_us" in e:
                events.append({"name": "lateness_us", "cat": "lateness", "ph": "C", "ts": ts,
                               "pid": pid, "args": {"value": round(e["wall_us"] - e["time_us"], 3)}})
        elif kind == "vsync":
            events.append({"name": "vsync", "cat": "vsync", "ph": "i", "s": "p", "ts": ts,
                           "pid": BACKEND_PID, "tid": 1, "args": args})
        elif kind == "dropped":
            events.append({"name": "dropped", "cat": "dropped", "ph": "i", "s": "p", "ts": ts,
                           "pid": BACKEND_PID, "tid": 2, "args": args})
        else:
            log.info("%s:%d: %s event not exported", t.path, ln, kind)
    for prog, (name, start, sargs) in sorted(open_state.items()):
        pid = PROG_PID_BASE + prog
        if name in ("running", "loaded"):
            # Still running when the trace ends: the slice reaches the last event.
            events.append(_state_slice(pid, name, start, end_us, sargs))
        else:
            # A final state (done, stopped, faulted) is a point in time.
            events.append({"name": name, "cat": "state", "ph": "i", "s": "t", "ts": start,
                           "pid": pid, "tid": _THREADS["state"], "args": sargs})
    return {"traceEvents": meta + events, "displayTimeUnit": "ns",
            "otherData": {"copperline_trace": json.dumps(h, separators=(",", ":")),
                          "timestamps": tf}}


def _state_slice(pid: int, name: str, start: float, end: float, args: dict) -> dict:
    return {"name": name, "cat": "state", "ph": "X", "ts": start, "dur": round(end - start, 3),
            "pid": pid, "tid": _THREADS["state"], "args": args}


# ---------------------------------------------------------------------------------
# VCD
# ---------------------------------------------------------------------------------

def _ident(text: str) -> str:
    """A VCD-safe identifier: viewers split names on spaces and read [..] as bit ranges."""
    s = re.sub(r"[^A-Za-z0-9_]", "_", text)
    return s if s and not s[0].isdigit() else "_" + s


def write_vcd(t: Trace, f, *, time: str = "model") -> list[tuple[str, str]]:
    """Write ``t`` as VCD to the text stream ``f``; returns (signal path, gtkwave datafmt)
    for every signal, in display order."""
    from vcd import VCDWriter

    timed = sorted(_timed(t, time), key=lambda x: x[2])   # stable: same-time order kept
    regs: dict[str, isa.RegisterField] = {}
    tags: dict[int, dict[str, str]] = {}
    progs: set[int] = set()
    binds: set[int] = set()
    has_vsync = has_dropped = False
    for e, _, _ in timed:
        kind = e["event"]
        if kind == "reg":
            regs[e["reg"]] = isa.register_field(isa.parse_register(e["reg"], 1 << isa.LAYER_BITS))
        if kind in PROGRAM_KINDS:
            progs.add(e["prog"])
        if kind == "irq":
            names = tags.setdefault(e["prog"], {})
            if e["tag"] not in names:
                base = name = _ident(e["tag"])
                n = 1
                while name in names.values():   # two tags that sanitise alike stay apart
                    n += 1
                    name = f"{base}_{n}"
                names[e["tag"]] = name
        has_vsync |= kind == "vsync"
        has_dropped |= kind == "dropped"
        if kind == "bind":
            binds.add(e["layer"])

    def reg_order(name: str) -> int:
        return isa.parse_register(name, 1 << isa.LAYER_BITS)

    h = t.header
    signals: list[tuple[str, str]] = []
    with VCDWriter(f, timescale="1 ns", date="",
                   comment=f"copperline trace {t.name}: backend {h['backend']}, "
                           f"clock_hz {h['clock_hz']}, times from {time_field(t, time)}",
                   version="copperline trace export") as w:
        var_reg = {}
        for name in sorted(regs, key=reg_order):
            layer, fname = re.fullmatch(r"layer\[(\d+)\]\.(\w+)", name).groups()
            rf = regs[name]
            # Registers start at 0 on machine reset (isa EXECUTION_RULES 7).
            var_reg[name] = w.register_var(("copperline", "regs", f"layer{layer}"), fname,
                                           "integer", size=rf.width, init=0)
            signals.append((f"copperline.regs.layer{layer}.{fname}",
                            "signed" if rf.signed else "dec"))
        var_surface = {}
        for layer in sorted(binds):
            var_surface[layer] = w.register_var(("copperline", "regs", f"layer{layer}"),
                                                "surface", "string", init="")
            signals.append((f"copperline.regs.layer{layer}.surface", "ascii"))
        var_state, var_irq = {}, {}
        for prog in sorted(progs):
            var_state[prog] = w.register_var(("copperline", f"prog{prog}"), "state", "string",
                                             init="")
            signals.append((f"copperline.prog{prog}.state", "ascii"))
            for tag, ident in tags.get(prog, {}).items():
                var_irq[(prog, tag)] = w.register_var(("copperline", f"prog{prog}", "irq"),
                                                      ident, "event")
                signals.append((f"copperline.prog{prog}.irq.{ident}", "dec"))
        var_vsync = w.register_var("copperline", "vsync", "event") if has_vsync else None
        if var_vsync is not None:
            signals.append(("copperline.vsync", "dec"))
        var_dropped = (w.register_var("copperline", "dropped", "integer", size=32, init=0)
                       if has_dropped else None)
        if var_dropped is not None:
            signals.append(("copperline.dropped", "dec"))
        dropped = 0
        for e, _, us in timed:
            ts = round(us * 1000)
            kind = e["event"]
            if kind == "reg":
                w.change(var_reg[e["reg"]], ts, e["value"])
            elif kind == "irq":
                w.change(var_irq[(e["prog"], e["tag"])], ts, True)
            elif kind == "state":
                w.change(var_state[e["prog"]], ts, e["state"])
            elif kind == "bind":
                w.change(var_surface[e["layer"]], ts, str(e.get("surface", "")))
            elif kind == "vsync":
                w.change(var_vsync, ts, True)
            elif kind == "dropped":
                dropped += e["count"]
                w.change(var_dropped, ts, dropped & 0xFFFF_FFFF)
    return signals


def write_gtkw(signals: list[tuple[str, str]], vcd_path: str, out: str) -> None:
    """A GTKWave save file that opens ``vcd_path`` with every signal shown, signed
    registers as signed decimal."""
    from vcd.gtkw import GTKWSave
    with open(out, "w", encoding="utf-8") as f:
        g = GTKWSave(f)
        g.dumpfile(vcd_path)
        for name, fmt in signals:
            g.trace(name, datafmt=fmt)
