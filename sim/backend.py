"""``copper run --backend sim``: the RTL engine as a virtual-time engine.

``host/run_cli.py`` calls :func:`create_engine` and drives the result exactly like the
VM (:class:`copperline.host.vm.Machine`). Two simulators of the same core:

* ``cxxrtl`` (the default): the core compiled with CXXRTL (:mod:`copperline.sim.cxxrtl`),
  ~10^5-10^6 core cycles per second; the first use of a design compiles it (cached
  in the build cache, copperline.cache).
* ``amaranth``: ``amaranth.sim`` (:mod:`copperline.sim.rtl`), ~10^3 core cycles per
  second, no compiler needed.

Choose with ``engine=`` or the environment variable ``COPPER_SIM_ENGINE``
(``cxxrtl`` | ``amaranth``); without either, CXXRTL is used and, if it cannot be built
(no C++ compiler), amaranth.sim with a warning. Waveforms: ``waves=FILE.vcd`` or
``COPPER_WAVES=FILE.vcd``; the file is complete when the engine is closed (at the latest
at interpreter exit).
"""

from __future__ import annotations

import atexit
import logging
import os

from copperline.firmware import isa
from copperline.sim.rtl import RtlEngineBase, RtlMachine

log = logging.getLogger(__name__)

__all__ = ["create_engine", "Machine", "ENGINES"]

#: Program words per context of the simulated core (the VM's default).
SIM_PROGRAM_WORDS = isa.DEFAULT_PROGRAM_WORDS
ENGINES = ("cxxrtl", "amaranth")


def create_engine(clock_hz: int, vsync_hz: float = isa.DEFAULT_VSYNC_HZ,
                  watchdog_ops: int = isa.DEFAULT_WATCHDOG_OPS, *, vsync_events: bool = False,
                  waves: str | None = None, engine: str | None = None, **kw) -> RtlEngineBase:
    """An RTL engine configured like the VM; see the module docstring for ``engine`` and
    ``waves``."""
    waves = waves or os.environ.get("COPPER_WAVES") or None
    explicit = engine or os.environ.get("COPPER_SIM_ENGINE") or None
    if explicit is not None and explicit not in ENGINES:
        raise ValueError(f"unknown sim engine {explicit!r} (COPPER_SIM_ENGINE / engine=): "
                         f"expected one of {', '.join(ENGINES)}")
    kw.setdefault("program_words", SIM_PROGRAM_WORDS)
    args = dict(vsync_events=vsync_events, waves=waves, **kw)
    chosen = explicit or "cxxrtl"
    if chosen == "cxxrtl":
        from copperline.sim.cxxrtl import CxxrtlError, CxxrtlMachine
        try:
            sim = CxxrtlMachine(clock_hz, vsync_hz, watchdog_ops, **args)
        except CxxrtlError as exc:
            if explicit:
                raise
            log.warning("the CXXRTL engine is not available (%s); using amaranth.sim, "
                        "~1000x slower", str(exc).splitlines()[0])
            chosen = "amaranth"
    if chosen == "amaranth":
        sim = RtlMachine(clock_hz, vsync_hz, watchdog_ops, **args)
    log.info("sim engine: %s", chosen)
    if waves:
        log.info("writing waveforms to %s", waves)
    atexit.register(sim.close)
    return sim


#: The Machine-API class, for drivers that look for ``Machine``.
Machine = RtlMachine
