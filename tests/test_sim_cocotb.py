"""cocotb + Icarus on the generated Verilog of the core (sim/tb_core.py), with the
single-port (SPRAM model) program memory so that its write arbitration runs in Verilog too."""

from __future__ import annotations

import os
import shutil

import pytest

from copperline.sim.verilog import TOP, write_core

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PARAMS = dict(clock_hz=1_000_000, vsync_hz=20_000.0, watchdog_ops=20, contexts=4,
              program_words=32, fifo_depth=16, program_memory="spram")


@pytest.mark.skipif(shutil.which("iverilog") is None, reason="Icarus Verilog (iverilog) not installed")
def test_core_cocotb_icarus(tmp_path):
    from cocotb_tools.runner import get_runner
    build = tmp_path / "build"
    src = write_core(str(build), **PARAMS)
    runner = get_runner("icarus")
    runner.build(sources=[src], hdl_toplevel=TOP, build_dir=str(build), timescale=("1ns", "1ps"))
    results = runner.test(hdl_toplevel=TOP, test_module="copperline.sim.tb_core", build_dir=str(build),
                          extra_env={"COPPER_TB_DIR": str(build)}, timescale=("1ns", "1ps"))
    # get_runner's test() returns the results file; parse it to fail on any failed test
    import xml.etree.ElementTree as ET
    tree = ET.parse(results)
    cases = tree.findall(".//testcase")
    failed = [c.get("name") for c in cases if c.find("failure") is not None or c.find("error") is not None]
    assert len(cases) == 4, f"expected 4 cocotb tests, found {len(cases)}"
    assert not failed, f"cocotb tests failed: {failed}"
