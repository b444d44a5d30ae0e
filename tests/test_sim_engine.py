"""The engine interface (copperline.sim.engine): every engine satisfies the Engine
protocol with the same signatures, takes one MachineParams, and refuses with EngineError."""

from __future__ import annotations

import dataclasses
import inspect

import pytest

from copperline.firmware import isa
from copperline.firmware.image import Image
from copperline.host.run import RunError, run_virtual
from copperline.sim.cxxrtl import CxxrtlMachine
from copperline.sim.engine import Engine, EngineError, MachineParams
from copperline.sim.rtl import RtlMachine
from copperline.sim.verilator import VerilatorMachine
from copperline.sim.vm import Machine

ENGINES = {"vm": Machine, "amaranth": RtlMachine, "cxxrtl": CxxrtlMachine,
           "verilator": VerilatorMachine}
PARAMS = MachineParams(clock_hz=1_000_000, vsync_hz=20_000.0, watchdog_ops=40,
                       program_words=64)
HALT = Image(code=(isa.encode("HALT"),))


def protocol_members() -> dict[str, object]:
    """Every member Engine declares: name -> its declaration (None for a data member)."""
    members = {name: None for name in Engine.__annotations__}
    members.update({name: value for name, value in vars(Engine).items()
                    if not name.startswith("_")})
    return members


def signature_problems(cls) -> list[str]:
    """How ``cls``'s methods differ from Engine's: missing, or other parameters."""
    problems = []
    for name, decl in protocol_members().items():
        if decl is None:
            continue
        impl = inspect.getattr_static(cls, name, None)
        if impl is None:
            problems.append(f"{name}: missing")
        elif isinstance(decl, property):
            if not isinstance(impl, property):
                problems.append(f"{name}: not a property")
        else:
            want = list(inspect.signature(decl).parameters.values())
            have = list(inspect.signature(impl).parameters.values())
            if [(p.name, p.kind) for p in want] != [(p.name, p.kind) for p in have]:
                problems.append(f"{name}{inspect.signature(impl)}, the protocol has "
                                f"{name}{inspect.signature(decl)}")
    return problems


def test_protocol_declares_the_run_loop_api():
    assert {"params", "cycle", "load", "start", "stop", "set_fence", "run_until", "status",
            "regs", "slots", "slot_start", "next_event_cycle", "close"} <= set(protocol_members())


@pytest.mark.parametrize("name", ENGINES)
def test_engine_class_has_the_protocol_signatures(name):
    assert signature_problems(ENGINES[name]) == []


@pytest.mark.parametrize("name", ENGINES)
def test_engine_instance_satisfies_the_protocol(name):
    engine = ENGINES[name](PARAMS)
    try:
        assert isinstance(engine, Engine)
        assert engine.params is PARAMS and engine.cycle == 0
        assert engine.params.vsync_period == 50
    finally:
        engine.close()


@pytest.mark.parametrize("missing", sorted(protocol_members()))
def test_protocol_check_fails_without_any_member(missing):
    # (a positive control first: every member present satisfies it)
    full = {name: (decl if decl is not None else 0) for name, decl in protocol_members().items()}
    assert isinstance(type("Full", (), full)(), Engine)
    partial = {k: v for k, v in full.items() if k != missing}
    assert not isinstance(type("Partial", (), partial)(), Engine)


def test_signature_check_fails_on_other_parameters():
    class Other(Machine):
        def run_until(self, cycles: int) -> list[dict]:
            return []

        def status(self, slot: int, verbose: bool = False) -> dict:
            return {}
    problems = signature_problems(Other)
    assert [p.split("(")[0] for p in problems] == ["status", "run_until"]


@pytest.mark.parametrize("name", ENGINES)
def test_full_engine_refuses_with_engine_error(name):
    engine = ENGINES[name](PARAMS)
    try:
        for _ in range(PARAMS.contexts):
            engine.load(HALT)
        with pytest.raises(EngineError, match="in use"):
            engine.load(HALT)
        with pytest.raises(EngineError, match="no program in slot 9"):
            engine.start(9)
    finally:
        engine.close()


def test_run_virtual_names_the_program_an_engine_refuses():
    engine = Machine(dataclasses.replace(PARAMS, contexts=1))
    with pytest.raises(RunError, match="program 2 of 2: ") as info:
        run_virtual(engine, [HALT, HALT], until_cycle=10)
    assert info.value.code == "BUSY"


def test_rtl_next_event_cycle_is_conservative():
    engine = RtlMachine(PARAMS)
    try:
        slot = engine.load(Image(code=(isa.encode("WAIT", us=5), isa.encode("HALT"))))
        engine.run_until(1)
        assert engine.next_event_cycle() is None          # nothing runs
        engine.start(slot)
        assert engine.next_event_cycle() == 1             # (it cannot look ahead)
        events = engine.run_until(20)
        assert [e["state"] for e in events if e["event"] == "state"] == ["running", "done"]
        assert engine.next_event_cycle() is None
    finally:
        engine.close()


def test_machine_params_are_frozen_and_checked():
    with pytest.raises(dataclasses.FrozenInstanceError):
        PARAMS.clock_hz = 2_000_000
    assert PARAMS == MachineParams(1_000_000, 20_000.0, 40, program_words=64)
    assert PARAMS.cycles_per_us == 1
    for bad, match in (({"clock_hz": 12_500_000}, "whole number of MHz"),
                       ({"vsync_hz": 0}, "vsync_hz must be > 0"),
                       ({"watchdog_ops": 0}, "watchdog_ops must be >= 1"),
                       ({"layers": 0}, "layers must be"),
                       ({"contexts": 0}, "contexts must be >= 1")):
        with pytest.raises(ValueError, match=match):
            dataclasses.replace(PARAMS, **bad)
