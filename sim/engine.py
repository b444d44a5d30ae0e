"""The engine interface: what runs a program in virtual time, and the machine it models.

Four engines execute Copper programs cycle for cycle: the reference VM
(:class:`copperline.sim.vm.Machine`) and the RTL engines (:mod:`copperline.sim.rtl`,
:mod:`copperline.sim.cxxrtl`, :mod:`copperline.sim.verilator`). Each takes a
:class:`MachineParams` and satisfies :class:`Engine`, so the run loop
(:mod:`copperline.host.run`), the soft backend and the real-time executor drive any of
them the same way, and the equivalence tests compare them event for event.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from copperline.firmware import isa
from copperline.firmware.image import Image

__all__ = ["MachineParams", "Engine", "EngineError"]


@dataclass(frozen=True)
class MachineParams:
    """The machine an engine models. Checked at construction (ValueError).

    Parameters
    ----------
    clock_hz:
        Core clock; a whole number of MHz (``WAIT us N`` = N * clock_hz / 1e6 cycles).
    vsync_hz:
        Vsync rate; edges fall on global cycles ``k * round(clock_hz / vsync_hz)``, k >= 1.
    watchdog_ops:
        Ops a program may issue without idling before it faults (rule 9).
    layers:
        Layers of the register file (registers of other layers are refused at load).
    contexts:
        Program slots (``load`` raises :class:`EngineError` when all are taken).
    program_words:
        Largest program a context holds.
    vsync_events:
        Also emit ``{"event": "vsync", "frame": k, ...}`` at every vsync edge.
    """

    clock_hz: int
    vsync_hz: float = isa.DEFAULT_VSYNC_HZ
    watchdog_ops: int = isa.DEFAULT_WATCHDOG_OPS
    layers: int = isa.DEFAULT_LAYERS
    contexts: int = isa.DEFAULT_CONTEXTS
    program_words: int = isa.DEFAULT_PROGRAM_WORDS
    vsync_events: bool = False

    def __post_init__(self):
        # (each raises ValueError for a value no engine can have)
        isa.cycles_per_us(self.clock_hz)
        isa.vsync_period_cycles(self.clock_hz, self.vsync_hz)
        isa.check_machine(watchdog_ops=self.watchdog_ops, layers=self.layers,
                          contexts=self.contexts)

    @property
    def cycles_per_us(self) -> int:
        """Core cycles per microsecond."""
        return isa.cycles_per_us(self.clock_hz)

    @property
    def vsync_period(self) -> int:
        """Core cycles between vsync edges."""
        return isa.vsync_period_cycles(self.clock_hz, self.vsync_hz)


class EngineError(Exception):
    """A request an engine refuses: unknown or busy slot, every context in use, a host
    action the engine cannot take in this cycle."""


@runtime_checkable
class Engine(Protocol):
    """A cycle-exact Copper core in virtual time: programs in slots, shared registers and
    fences, and :meth:`run_until` to advance time and collect the events of the span.

    Events are trace events with ``slot`` instead of ``prog`` (docs/traces.md); host
    actions take effect at the beginning of the current cycle, so their ``state`` events
    come before the program events of that cycle.
    """

    #: The machine this engine models.
    params: MachineParams
    #: The global cycle the engine is at (the next one :meth:`run_until` executes).
    cycle: int

    def reset(self) -> None:
        """Machine reset: cycle 0, registers 0, fences 0, every slot freed."""

    def load(self, image: Image) -> int:
        """Load ``image`` into the lowest free slot and return the slot."""

    def unload(self, slot: int) -> None:
        """Free a slot; a running program is stopped first (``stopped`` event)."""

    def start(self, slot: int) -> None:
        """Start the program in ``slot``: its first op issues in the current cycle."""

    def stop(self, slot: int) -> None:
        """Stop a running program in the current cycle; no-op otherwise."""

    def set_fence(self, name: str, value: int) -> None:
        """Set timeline ``name`` to ``value`` in the current cycle (ValueError if lower)."""

    def fence(self, name: str) -> int:
        """Current value of timeline ``name``."""

    @property
    def regs(self) -> dict[str, int]:
        """Every register by name."""

    def status(self, slot: int) -> dict:
        """``slot``, ``state``, ``pc``, ``reason``, ``bindings``, ``ops`` (None when the
        engine does not count them) and ``cycle`` (since the program's start)."""

    def slots(self) -> list[int]:
        """Slots that hold a program."""

    def slot_start(self, slot: int) -> int:
        """Global cycle the program in ``slot`` (last) started in."""

    def next_event_cycle(self) -> int | None:
        """A global cycle >= :attr:`cycle` before which nothing happens (an engine that
        cannot look ahead answers :attr:`cycle` while anything may happen); None when
        nothing will happen until the host acts."""

    def run_until(self, cycle: int) -> list[dict]:
        """Execute every cycle up to (not including) ``cycle``; return their events in
        order (global cycle, then host actions, then vsync, then slot)."""

    def close(self) -> None:
        """Release what the engine holds (a simulator process, a waveform file)."""
