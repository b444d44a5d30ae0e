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
from typing import IO, Iterable

from copperline.firmware.image import MAGIC as IMAGE_MAGIC

TRACE_VERSION = 1


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
