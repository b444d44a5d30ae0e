"""``copper run --backend sim``: the RTL engine as a virtual-time engine.

``copper run`` calls :func:`create_engine` and drives the result through the engine
interface (:class:`copperline.sim.engine.Engine`), exactly like the VM. Three simulators
of the same core:

* ``verilator`` (the default): the core verilated (:mod:`copperline.sim.verilator`),
  ~3.5 x 10^6 core cycles per second in the simulator (4 contexts all issuing; the
  Python side's event conversion costs more than that when every cycle has events:
  ``python -m tests.bench sim``); the first use of a design builds it (~20 s, cached in
  the build cache, copperline.cache).
* ``cxxrtl``: the core compiled with CXXRTL (:mod:`copperline.sim.cxxrtl`), ~10^5-10^6
  core cycles per second, built and cached the same way.
* ``amaranth``: ``amaranth.sim`` (:mod:`copperline.sim.rtl`), ~10^3 core cycles per
  second, no compiler needed.

Choose with ``engine=`` or the environment variable ``COPPER_SIM_ENGINE``
(``verilator`` | ``cxxrtl`` | ``amaranth``); without either, Verilator is used and, if it
cannot be built, CXXRTL, then amaranth.sim, with a warning. Waveforms: ``waves=FILE.fst``
(FST, GTKWave's compact format; Verilator only) or ``waves=FILE.vcd`` (every engine), or
``COPPER_WAVES=FILE``; the file is complete when the engine is closed (at the latest at
interpreter exit).
"""

from __future__ import annotations

import atexit
import logging
import os

from copperline.sim.engine import MachineParams
from copperline.sim.rtl import RtlEngineBase, RtlMachine

log = logging.getLogger(__name__)

__all__ = ["create_engine", "ENGINES"]

ENGINES = ("verilator", "cxxrtl", "amaranth")


def create_engine(params: MachineParams, *, waves: str | None = None,
                  engine: str | None = None) -> RtlEngineBase:
    """An RTL engine of the machine ``params`` describes; see the module docstring for
    ``engine`` and ``waves``."""
    waves = waves or os.environ.get("COPPER_WAVES") or None
    explicit = engine or os.environ.get("COPPER_SIM_ENGINE") or None
    if explicit is not None and explicit not in ENGINES:
        raise ValueError(f"unknown sim engine {explicit!r} (COPPER_SIM_ENGINE / engine=): "
                         f"expected one of {', '.join(ENGINES)}")
    if waves and explicit in ("cxxrtl", "amaranth") and not waves.lower().endswith(".vcd"):
        raise ValueError(f"waveform file {waves!r}: the {explicit} engine writes VCD only "
                         "(name it .vcd, or use the verilator engine for .fst)")
    chosen = explicit or "verilator"
    sim = None
    if chosen == "verilator":
        from copperline.sim.cxxrtl_build import NativeBuildError
        from copperline.sim.verilator import VerilatorMachine, wave_format
        if waves:
            wave_format(waves)           # a bad suffix is the user's error, not a fallback
        try:
            sim = VerilatorMachine(params, waves=waves)
        except NativeBuildError as exc:
            if explicit:
                raise
            if waves and not waves.lower().endswith(".vcd"):
                raise NativeBuildError(f"{waves}: FST needs the verilator engine, which "
                                       f"cannot be built: {exc}") from None
            log.warning("the Verilator engine is not available (%s); using CXXRTL, "
                        "~10x slower", str(exc).splitlines()[0])
            chosen = "cxxrtl"
    if chosen == "cxxrtl":
        from copperline.sim.cxxrtl import CxxrtlError, CxxrtlMachine
        try:
            sim = CxxrtlMachine(params, waves=waves)
        except CxxrtlError as exc:
            if explicit:
                raise
            log.warning("the CXXRTL engine is not available (%s); using amaranth.sim, "
                        "~1000x slower", str(exc).splitlines()[0])
            chosen = "amaranth"
    if chosen == "amaranth":
        sim = RtlMachine(params, waves=waves)
    log.info("sim engine: %s", chosen)
    if waves:
        log.info("writing waveforms to %s", waves)
    atexit.register(sim.close)
    return sim
