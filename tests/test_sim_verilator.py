"""The Verilator engine (the default of ``--backend sim``): VM-equal over a long run, FST
and VCD waveforms by file suffix, bad input, and ``copper run --engine``."""

from __future__ import annotations

import json

import pytest

from copperline.host.cli import main
from copperline.sim.engine import MachineParams
from copperline.sim.verilator import VerilatorMachine, wave_format
from tests.support import (ENGINE_CFG, VSYNC_ADDER, check_closed_engine, check_vcd,
                           run_beside_the_vm)

@pytest.mark.parametrize("suffix", [".fst", ".vcd"])
def test_long_run_equals_vm_and_writes_waves(tmp_path, suffix):
    waves = tmp_path / f"core{suffix}"
    out = run_beside_the_vm(VerilatorMachine, waves=str(waves))
    assert out[0] == out[1]
    assert [e["cycle"] for e in out[0][0] if e["event"] == "irq"] == \
        [50 + 2 + 50 * k for k in range(9)]
    data = waves.read_bytes()
    if suffix == ".vcd":
        check_vcd(data.decode(), 500)
    else:
        # FST: a binary block file (GTKWave's format), much smaller than the VCD would be
        assert data[:1] == b"\x00" and b"tapv" not in data[:64] and len(data) > 200


def test_bad_wave_suffix_and_closed_engine(tmp_path):
    with pytest.raises(ValueError, match=r"must end in \.fst .* or \.vcd"):
        VerilatorMachine(MachineParams(**ENGINE_CFG, program_words=64), waves=str(tmp_path / "w.ghw"))
    assert wave_format("A.FST") == ".fst"
    check_closed_engine(VerilatorMachine(MachineParams(**ENGINE_CFG, program_words=64)))


def test_copper_run_engines_give_the_same_trace(tmp_path, capsys):
    prog = tmp_path / "p.json"
    prog.write_text(json.dumps(VSYNC_ADDER))
    traces = {}
    for engine in ("verilator", "cxxrtl"):
        trace = tmp_path / f"{engine}.jsonl"
        waves = tmp_path / f"{engine}.{'fst' if engine == 'verilator' else 'vcd'}"
        assert main(["run", str(prog), "--backend", "sim", "--engine", engine, "--clock-hz",
                     "1000000", "--vsync-hz", "20000", "--until-us", "400", "--trace",
                     str(trace), "--waves", str(waves), "--json"]) == 0
        summary = json.loads(capsys.readouterr().out)
        assert {"path": str(waves), "what": "waveforms"}.items() <= \
            {k: v for f in summary["files"] if f["what"] == "waveforms" for k, v in f.items()}.items()
        traces[engine] = trace.read_text()
    assert traces["verilator"] == traces["cxxrtl"]
    assert main(["run", str(prog), "--backend", "sim", "--engine", "amaranth",
                 "--waves", str(tmp_path / "x.fst")]) == 1
    assert "VCD only" in capsys.readouterr().err
