"""cocotb + Icarus on the generated Verilog of the core (sim/tb_core.py): the iCEBreaker's
4 contexts with the single-port (SPRAM model) program memory, so that its write arbitration
runs in Verilog too, and the ULX3S's 5 contexts at 3 core cycles per microsecond."""

from __future__ import annotations

import os
import shutil

import pytest

from copperline.sim.verilog import TOP, write_core

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: The iCEBreaker's configuration (4 contexts) at 1 MHz, and the ULX3S's (5 contexts) at
#: 3 MHz, where a microsecond is three core cycles (the sub-microsecond delay counter).
CONFIGS = {
    "4ctx-1MHz": dict(clock_hz=1_000_000, vsync_hz=20_000.0, watchdog_ops=20, contexts=4,
                      program_words=64, fifo_depth=16, program_memory="spram"),
    "5ctx-3MHz": dict(clock_hz=3_000_000, vsync_hz=20_000.0, watchdog_ops=20, contexts=5,
                      program_words=64, fifo_depth=16, program_memory="bram"),
}


@pytest.mark.skipif(shutil.which("iverilog") is None, reason="Icarus Verilog (iverilog) not installed")
@pytest.mark.parametrize("config", list(CONFIGS))
def test_core_cocotb_icarus(tmp_path, config):
    from cocotb_tools.runner import get_runner
    build = tmp_path / "build"
    src = write_core(str(build), **CONFIGS[config])
    runner = get_runner("icarus")
    runner.build(sources=[src], hdl_toplevel=TOP, build_dir=str(build), timescale=("1ns", "1ps"))
    results = runner.test(hdl_toplevel=TOP, test_module="copperline.sim.tb_core", build_dir=str(build),
                          extra_env={"COPPER_TB_DIR": str(build)}, timescale=("1ns", "1ps"))
    # get_runner's test() returns the results file; parse it to fail on any failed test
    import xml.etree.ElementTree as ET
    tree = ET.parse(results)
    cases = tree.findall(".//testcase")
    failed = [c.get("name") for c in cases if c.find("failure") is not None or c.find("error") is not None]
    assert len(cases) == 5, f"expected 5 cocotb tests, found {len(cases)}"
    assert not failed, f"cocotb tests failed: {failed}"
