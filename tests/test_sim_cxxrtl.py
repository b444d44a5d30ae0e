"""The CXXRTL engine: engine selection, waveforms, bad input, and a long run that the
amaranth.sim engine could not do in test time (VM-equal events over 10 vsync frames)."""

from __future__ import annotations

import pytest

from copperline.firmware.compiler import compile_program
from copperline.sim.engine import MachineParams
from copperline.sim.vm import Machine
from copperline.sim.backend import create_engine
from copperline.sim.cxxrtl import CxxrtlError, CxxrtlMachine
from copperline.sim.rtl import RtlMachine

CFG = dict(clock_hz=1_000_000, vsync_hz=20_000.0, watchdog_ops=40)
PROG = {"version": 1, "program": [
    {"label": "top"},
    {"op": "WAIT", "vsync": True},
    {"op": "ADD", "reg": "layer[0].x", "delta": 3},
    {"op": "IRQ", "tag": "f"},
    {"op": "JUMP", "label": "top"}]}


def test_engine_choice(monkeypatch):
    from copperline.sim.verilator import VerilatorMachine
    monkeypatch.delenv("COPPER_SIM_ENGINE", raising=False)
    eng = create_engine(MachineParams(**CFG, program_words=64))
    try:
        assert isinstance(eng, VerilatorMachine)          # the default
    finally:
        eng.close()
    monkeypatch.setenv("COPPER_SIM_ENGINE", "cxxrtl")
    eng = create_engine(MachineParams(**CFG, program_words=64))
    try:
        assert isinstance(eng, CxxrtlMachine) and not isinstance(eng, VerilatorMachine)
    finally:
        eng.close()
    monkeypatch.setenv("COPPER_SIM_ENGINE", "amaranth")
    eng = create_engine(MachineParams(**CFG, program_words=64))
    try:
        assert isinstance(eng, RtlMachine)
    finally:
        eng.close()
    with pytest.raises(ValueError, match="verilator, cxxrtl, amaranth"):
        create_engine(MachineParams(**CFG), engine="icarus")
    with pytest.raises(ValueError, match="VCD only"):
        create_engine(MachineParams(**CFG), engine="cxxrtl", waves="x.fst")


def test_long_run_equals_vm_and_writes_waves(tmp_path):
    image = compile_program(PROG)
    waves = tmp_path / "core.vcd"
    vm = Machine(MachineParams(**CFG, program_words=64))
    rtl = CxxrtlMachine(MachineParams(**CFG, program_words=64), waves=str(waves))
    try:
        out = []
        for m in (vm, rtl):
            m.start(m.load(image))
            ev = m.run_until(500)                  # 10 frames of 50 cycles
            out.append((ev, m.regs["layer[0].x"], m.status(0)["pc"]))
    finally:
        rtl.close()
    assert out[0] == out[1]
    assert [e["cycle"] for e in out[0][0] if e["event"] == "irq"] == [50 + 2 + 50 * k for k in range(9)]
    text = waves.read_text()
    assert "$enddefinitions" in text and "tapv" in text
    assert text.count("\n#") >= 2 * 4 * 500            # a sample per clock edge


def test_closed_engine_and_bad_memory_write():
    rtl = CxxrtlMachine(MachineParams(**CFG, program_words=64))
    with pytest.raises(CxxrtlError, match="row out of range"):
        rtl._write_mem("prog", 4 * 64, [1])
    rtl.close()
    with pytest.raises(Exception, match="closed"):
        rtl.run_until(10)
