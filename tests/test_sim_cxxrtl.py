"""The CXXRTL engine: engine selection, waveforms, bad input, and a long run that the
amaranth.sim engine could not do in test time (VM-equal events over 10 vsync frames)."""

from __future__ import annotations

import pytest

from copperline.sim.engine import MachineParams
from copperline.sim.backend import create_engine
from copperline.sim.cxxrtl import CxxrtlMachine
from copperline.sim.rtl import RtlMachine
from tests.support import ENGINE_CFG, check_closed_engine, check_vcd, run_beside_the_vm

def test_engine_choice(monkeypatch):
    from copperline.sim.verilator import VerilatorMachine
    monkeypatch.delenv("COPPER_SIM_ENGINE", raising=False)
    eng = create_engine(MachineParams(**ENGINE_CFG, program_words=64))
    try:
        assert isinstance(eng, VerilatorMachine)          # the default
    finally:
        eng.close()
    monkeypatch.setenv("COPPER_SIM_ENGINE", "cxxrtl")
    eng = create_engine(MachineParams(**ENGINE_CFG, program_words=64))
    try:
        assert isinstance(eng, CxxrtlMachine) and not isinstance(eng, VerilatorMachine)
    finally:
        eng.close()
    monkeypatch.setenv("COPPER_SIM_ENGINE", "amaranth")
    eng = create_engine(MachineParams(**ENGINE_CFG, program_words=64))
    try:
        assert isinstance(eng, RtlMachine)
    finally:
        eng.close()
    with pytest.raises(ValueError, match="verilator, cxxrtl, amaranth"):
        create_engine(MachineParams(**ENGINE_CFG), engine="icarus")
    with pytest.raises(ValueError, match="VCD only"):
        create_engine(MachineParams(**ENGINE_CFG), engine="cxxrtl", waves="x.fst")


def test_long_run_equals_vm_and_writes_waves(tmp_path):
    waves = tmp_path / "core.vcd"
    out = run_beside_the_vm(CxxrtlMachine, waves=str(waves))
    assert out[0] == out[1]
    assert [e["cycle"] for e in out[0][0] if e["event"] == "irq"] == [50 + 2 + 50 * k for k in range(9)]
    check_vcd(waves.read_text(), 500)


def test_closed_engine_and_bad_memory_write():
    check_closed_engine(CxxrtlMachine(MachineParams(**ENGINE_CFG, program_words=64)))
