"""Synthesis smoke: the core builds for the iCE40UP5K with YoWASP; prints LCs, block RAMs
and Fmax (figures, not pass/fail criteria: see docs/core.md)."""

import pytest

from copperline.hdl.core import Core
from copperline.hdl.synth import synthesize


@pytest.mark.slow
def test_core_synthesizes_for_up5k(capsys):
    r = synthesize(lambda: Core(12_000_000, 60.0, program_words=256), "ice40")
    with capsys.disabled():
        print(f"\nUP5K core: {r.lcs} LUT4 (logic cells), {r.brams} SB_RAM40_4K, "
              f"Fmax {r.fmax_mhz:.1f} MHz (harness adds {r.harness_ffs} FFs)")
    assert r.brams <= 30 and r.lcs > 0 and r.fmax_mhz > 0
