"""The one trace format (JSON Lines), shared by every backend and every trace tool.

A trace is a header line, then one event per line::

    {"trace":1,"backend":"soft","clock_hz":12000000,"vsync_hz":60.0,"program":"<sha256>",...}
    {"event":"irq","prog":1,"tag":"tick","cycle":123456,"time_us":10288.0}

``time_us`` is the time the cycle model assigns (cycle / clock_hz); real-time backends
add ``wall_us``, the measured time since program start. Lines are written compactly with
a fixed key order so that a deterministic run gives a byte-identical file.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass
from typing import IO, Iterable

from copperline.firmware import isa
from copperline.firmware.image import MAGIC as IMAGE_MAGIC

log = logging.getLogger(__name__)

TRACE_VERSION = 1

#: Event kinds that belong to a program, with the field that tells two of a program's
#: events of that kind apart (trace compare aligns by it).
PROGRAM_KINDS = {"irq": "tag", "reg": "reg", "state": "state", "bind": "layer"}
#: Every event kind the trace format defines.
KNOWN_KINDS = ("irq", "state", "reg", "vsync", "bind", "dropped")
#: Kinds a board may drop (and count) when its event FIFO is full.
DROPPABLE_KINDS = ("irq", "reg", "bind")
#: Program states after which a program makes no more events.
ENDED_STATES = ("done", "stopped", "faulted")
#: Kinds that carry a time (``cycle`` and/or ``time_us``).
TIMED_KINDS = ("irq", "reg", "bind", "state", "vsync")


class TraceError(ValueError):
    """A trace file that cannot be read; the message names the file and line."""


def time_us(cycle: int, clock_hz: int) -> float:
    """The model time of ``cycle`` in microseconds (rounded to the nanosecond)."""
    return round(cycle * 1_000_000 / clock_hz, 3)


def dumps(obj: dict) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


class TraceWriter:
    """Writes a header and then events to a text stream or a path."""

    def __init__(self, out: IO[str] | str, *, backend: str, clock_hz: int, vsync_hz: float,
                 program: str, **extra) -> None:
        self._own = isinstance(out, str)
        self._out = open(out, "w", encoding="utf-8") if self._own else out
        header = {"trace": TRACE_VERSION, "backend": backend, "clock_hz": clock_hz,
                  "vsync_hz": vsync_hz, "program": program, **extra}
        self._out.write(dumps(header) + "\n")
        self.events = 0

    def write(self, event: dict) -> None:
        self._out.write(dumps(event) + "\n")
        self.events += 1

    def write_all(self, events: Iterable[dict]) -> None:
        for e in events:
            self.write(e)

    def close(self) -> None:
        if self._own:
            self._out.close()
        else:
            self._out.flush()

    def __enter__(self) -> "TraceWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_trace(path: str) -> tuple[dict, list[dict]]:
    """Read a whole trace: (header, events). Raises :class:`TraceError`."""
    header, numbered = read_numbered_trace(path)
    return header, [e for _, e in numbered]


def read_numbered_trace(path: str) -> tuple[dict, list[tuple[int, dict]]]:
    """Read a trace as (header, [(line number, event), ...]), checking the header and
    that every line is a JSON object with an ``event``; errors name ``file:line``."""
    path = str(path)
    try:
        f = open(path, encoding="utf-8")
    except OSError as exc:
        raise TraceError(f"{path}: cannot open trace: {exc.strerror}") from None
    header = None
    events: list[tuple[int, dict]] = []
    with f:
        try:
            for n, line in enumerate(f, start=1):
                line = line.strip()
                if not line:
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    if header is None:
                        _not_a_program(path)
                    raise TraceError(f"{path}:{n}: not JSON: {exc.msg} (column {exc.colno})") from None
                if not isinstance(obj, dict):
                    raise TraceError(f"{path}:{n}: expected a JSON object")
                if header is None:
                    if obj.get("trace") != TRACE_VERSION:
                        _not_a_program(path)
                    _check_header(path, n, obj)
                    header = obj
                elif "event" not in obj:
                    raise TraceError(f"{path}:{n}: line has no \"event\" field")
                else:
                    events.append((n, obj))
        except UnicodeDecodeError:
            _not_a_program(path)
            raise TraceError(f"{path}: not UTF-8 text") from None
    if header is None:
        raise TraceError(f"{path}: empty file, expected a trace header line")
    return header, events


def looks_like_trace(path: str) -> bool:
    """True when the file's first non-blank line is a trace header (``"trace": 1``)."""
    try:
        with open(path, "rb") as f:
            for raw in f:
                if raw.strip():
                    obj = json.loads(raw)
                    return isinstance(obj, dict) and obj.get("trace") == TRACE_VERSION
    except (OSError, ValueError):
        return False
    return False


def _not_a_program(path: str) -> None:
    """Raise a TraceError that says what the file is when it is a Copper program or a
    compiled image, not a trace (else return: the caller reports the line)."""
    try:
        with open(path, "rb") as f:
            data = f.read(1 << 20)
    except OSError:
        return
    if data.startswith(IMAGE_MAGIC):
        raise TraceError(f"{path}: a compiled Copper image (.cop), not a trace; record a "
                         f"trace with `copper run {path} --trace OUT.jsonl`")
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return
    if isinstance(doc, dict) and "program" in doc:
        raise TraceError(f"{path}: a Copper program, not a trace; record a trace with "
                         f"`copper run {path} --trace OUT.jsonl`")


def _check_header(path: str, n: int, header: dict) -> None:
    if header.get("trace") != TRACE_VERSION:
        raise TraceError(f"{path}:{n}: not a copperline trace header "
                         f"(expected \"trace\": {TRACE_VERSION}): {dumps(header)[:120]}")
    for key in ("backend", "clock_hz"):
        if key not in header:
            raise TraceError(f"{path}:{n}: trace header lacks {key!r}")
    hz = header["clock_hz"]
    if not isinstance(hz, int) or isinstance(hz, bool) or hz <= 0:
        raise TraceError(f"{path}:{n}: header clock_hz must be a positive integer (got {hz!r})")
    vs = header.get("vsync_hz")
    if vs is not None and (not isinstance(vs, (int, float)) or isinstance(vs, bool) or not vs > 0
                           or vs == float("inf")):
        raise TraceError(f"{path}:{n}: header vsync_hz must be a positive number (got {vs!r})")


# --- the checked reader every trace tool uses ------------------------------------------

@dataclass
class Trace:
    """A checked trace: header, events (dicts, ``time_us`` filled in), their line numbers."""
    path: str
    header: dict
    events: list[dict]
    lines: list[int]

    @property
    def clock_hz(self) -> int:
        return self.header["clock_hz"]

    @property
    def vsync_hz(self) -> float:
        return float(self.header.get("vsync_hz") or isa.DEFAULT_VSYNC_HZ)

    @property
    def name(self) -> str:
        return os.path.basename(self.path)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def load_trace(path: str) -> Trace:
    """Read and check a trace file. Raises :class:`TraceError` naming ``file:line``.

    Besides the header checks of :func:`read_trace`, every event
    is checked for the fields its kind needs; an event with ``cycle`` but no ``time_us``
    gets ``time_us = cycle / clock_hz``. Unknown event kinds are kept (and logged) so
    newer traces still load.
    """
    path = str(path)
    header, numbered = read_numbered_trace(path)
    events: list[dict] = []
    lines: list[int] = []
    for n, obj in numbered:
        _check_event(path, n, obj, header["clock_hz"])
        events.append(obj)
        lines.append(n)
    return Trace(path, header, events, lines)


def _check_event(path: str, n: int, e: dict, clock_hz: int) -> None:
    where = f"{path}:{n}"
    kind = e.get("event")
    if kind is None:
        raise TraceError(f"{where}: line has no \"event\" field")
    if not isinstance(kind, str):
        raise TraceError(f"{where}: \"event\" must be a string (got {kind!r})")
    if kind not in KNOWN_KINDS:
        log.info("%s: unknown event kind %r, ignored", where, kind)
        return

    def need(key: str, ok, what: str) -> None:
        if key not in e:
            raise TraceError(f"{where}: {kind} event lacks {key!r}")
        if not ok(e[key]):
            raise TraceError(f"{where}: {kind} event field {key!r} must be {what} (got {e[key]!r})")

    if kind in PROGRAM_KINDS:
        need("prog", _is_int, "an integer program id")
    if kind == "irq":
        need("tag", lambda v: isinstance(v, str), "a string")
    elif kind == "reg":
        need("reg", lambda v: isinstance(v, str), "a register name")
        need("value", _is_int, "an integer")
        try:
            idx = isa.parse_register(e["reg"], layers=1 << isa.LAYER_BITS)
        except ValueError as exc:
            raise TraceError(f"{where}: {exc}") from None
        f = isa.register_field(idx)
        if not f.min <= e["value"] <= f.max:
            raise TraceError(f"{where}: value {e['value']} out of range for {e['reg']} "
                             f"({f.min}..{f.max})")
    elif kind == "bind":
        need("layer", _is_int, "an integer layer")
    elif kind == "state":
        need("state", lambda v: isinstance(v, str), "a string")
    elif kind == "dropped":
        need("count", _is_int, "an integer")
    if kind in TIMED_KINDS:
        if "cycle" in e and not (_is_int(e["cycle"]) and e["cycle"] >= 0):
            raise TraceError(f"{where}: field 'cycle' must be a non-negative integer "
                             f"(got {e['cycle']!r})")
        if "time_us" in e:
            if not _is_num(e["time_us"]):
                raise TraceError(f"{where}: field 'time_us' must be a number (got {e['time_us']!r})")
        elif "cycle" in e:
            e["time_us"] = time_us(e["cycle"], clock_hz)
        else:
            raise TraceError(f"{where}: {kind} event has neither 'cycle' nor 'time_us'")
        if "wall_us" in e and not _is_num(e["wall_us"]):
            raise TraceError(f"{where}: field 'wall_us' must be a number (got {e['wall_us']!r})")


def time_field(t: Trace, mode: str) -> str:
    """Which time field the trace tools read from ``t``: ``wall_us`` or ``time_us``.

    ``mode`` is ``auto`` (wall_us if any program event has it), ``model`` (always
    time_us) or ``wall`` (wall_us, an error if the trace has none).
    """
    if mode == "model":
        return "time_us"
    has_wall = any("wall_us" in e for e in t.events if e.get("event") in PROGRAM_KINDS)
    if mode == "wall" and not has_wall:
        raise TraceError(f"{t.path}: --time wall, but no event in this trace has 'wall_us'")
    if mode not in ("auto", "wall"):
        raise ValueError(f"unknown time mode {mode!r} (expected auto, model or wall)")
    return "wall_us" if has_wall else "time_us"
