"""Synthesis smoke: the core builds for the iCE40UP5K with YoWASP; prints LCs, block RAMs
and Fmax (figures, not pass/fail criteria: see docs/core.md)."""

import pytest

from copperline.hdl.core import Core
from copperline.hdl.synth import synthesize


@pytest.mark.slow
def test_core_synthesizes_for_up5k(capsys):
    r = synthesize(lambda: Core(12_000_000, 60.0, program_words=1024, program_memory="spram",
                                spram_primitive=True), "ice40")
    with capsys.disabled():
        print(f"\nUP5K core: {r.lcs} LUT4 (logic cells), {r.ffs} FF, {r.brams} SB_RAM40_4K, "
              f"{r.sprams} SB_SPRAM256KA, Fmax {r.fmax_mhz:.1f} MHz "
              f"(harness adds {r.harness_ffs} FFs)")
    # 4 x 1024 program words live in the two SPRAMs, not in block RAM
    assert r.sprams == 2 and r.brams <= 16 and r.lcs > 0 and r.fmax_mhz > 0
