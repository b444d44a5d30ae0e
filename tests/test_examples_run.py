"""Every example is run by the tests: programs on the soft VM here (and on the RTL in
test_sim_equivalence.py); every other example file must be run by a test_examples_* file."""

from __future__ import annotations

from pathlib import Path

import pytest

from copperline.host.cli import main
from copperline.firmware.trace import read_trace

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
PROGRAMS = sorted(EXAMPLES.glob("*.json"))


@pytest.mark.parametrize("path", PROGRAMS, ids=lambda p: p.name)
def test_example_program_runs_on_the_vm(path, tmp_path):
    trace = tmp_path / "t.jsonl"
    assert main(["run", str(path), "--frames", "5", "--fence", "vk=1@20000",
                 "--trace", str(trace)]) == 0
    header, events = read_trace(str(trace))
    assert header["backend"] == "soft"
    kinds = {e["event"] for e in events}
    assert "state" in kinds and kinds & {"irq", "reg"}, f"{path.name} produced only {kinds}"


def test_every_other_example_file_is_run_by_a_test():
    tests = "".join(p.read_text() for p in Path(__file__).parent.glob("test_examples_*.py"))
    others = [p for p in EXAMPLES.rglob("*") if p.is_file() and p.suffix != ".json"
              and "__pycache__" not in p.parts]
    assert others, "expected client examples under examples/"
    unrun = [str(p.relative_to(EXAMPLES)) for p in others if p.name not in tests]
    assert not unrun, f"examples no test runs: {unrun}"
