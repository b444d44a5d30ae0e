"""``copper run --backend sim``: the RTL engine as a virtual-time engine.

``host/run_cli.py`` calls :func:`create_engine` and drives the result exactly like the
VM (:class:`copperline.host.vm.Machine`). Waveforms: pass ``waves=FILE.vcd`` or set
``COPPER_WAVES=FILE.vcd``; the file is complete when the engine is closed (at the latest
at interpreter exit).
"""

from __future__ import annotations

import atexit
import logging
import os

from copperline.firmware import isa
from copperline.sim.rtl import RtlMachine

log = logging.getLogger(__name__)

__all__ = ["create_engine", "Machine"]

#: Program words per context of the simulated core (the VM's default).
SIM_PROGRAM_WORDS = isa.DEFAULT_PROGRAM_WORDS


def create_engine(clock_hz: int, vsync_hz: float = isa.DEFAULT_VSYNC_HZ,
                  watchdog_ops: int = isa.DEFAULT_WATCHDOG_OPS, *, vsync_events: bool = False,
                  waves: str | None = None, **kw) -> RtlMachine:
    """A :class:`RtlMachine` configured like the VM; see the module docstring for waves."""
    waves = waves or os.environ.get("COPPER_WAVES") or None
    kw.setdefault("program_words", SIM_PROGRAM_WORDS)
    engine = RtlMachine(clock_hz, vsync_hz, watchdog_ops, vsync_events=vsync_events,
                        waves=waves, **kw)
    if waves:
        log.info("writing waveforms to %s", waves)
    atexit.register(engine.close)
    return engine


#: The Machine-API class, for drivers that look for ``Machine``.
Machine = RtlMachine
