"""Progress of slow steps, for people: a line on stderr when a step starts, a tick every
few seconds while it runs (elapsed against an estimate), a line when it ends.

Library code (builds, simulator compiles, long runs) reports through :func:`step` and
:func:`say`; nothing reaches the terminal until a command line enables it with
:func:`enable` (``copper`` does in human mode, never with ``--json``). Disabled, the
messages go to ``logging`` at info level.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
import time
from typing import Callable, Iterator

log = logging.getLogger(__name__)

#: Where messages go when enabled (None: logging only).
_sink: Callable[[str], None] | None = None
#: Seconds between two ticks of a running step.
TICK_S = 5.0


def enable(prefix: str = "copper", stream=None) -> None:
    """Print progress as ``[prefix] message`` lines on ``stream`` (default stderr)."""
    global _sink

    def write(msg: str) -> None:
        out = stream or sys.stderr
        print(f"[{prefix}] {msg}", file=out, flush=True)
    _sink = write


def disable() -> None:
    """Back to logging only."""
    global _sink
    _sink = None


def enabled() -> bool:
    return _sink is not None


def say(msg: str) -> None:
    """One progress line (or a log record when progress is off)."""
    if _sink is not None:
        _sink(msg)
    else:
        log.info("%s", msg)


def fmt_s(seconds: float) -> str:
    """``7 s``, ``1 min 20 s``."""
    s = round(seconds)
    return f"{s} s" if s < 60 else f"{s // 60} min {s % 60:02d} s"


@contextlib.contextmanager
def step(label: str, estimate: str | None = None, *, done: bool = True,
         tick_s: float = TICK_S) -> Iterator[None]:
    """Report ``label`` starting (with ``estimate``, e.g. ``"usually ~20 s"``), a tick
    every ``tick_s`` while it runs, and how long it took."""
    say(f"{label} ..." + (f" ({estimate})" if estimate else ""))
    t0 = time.monotonic()
    stop = threading.Event()
    ticker = None
    if _sink is not None:
        def tick() -> None:
            while not stop.wait(tick_s):
                say(f"{label}: {fmt_s(time.monotonic() - t0)} so far"
                    + (f" ({estimate})" if estimate else ""))
        ticker = threading.Thread(target=tick, name="progress", daemon=True)
        ticker.start()
    try:
        yield
    finally:
        stop.set()
        if ticker is not None:
            ticker.join()
    if done:
        say(f"{label} done in {time.monotonic() - t0:.1f} s")
