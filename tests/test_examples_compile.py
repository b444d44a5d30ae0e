"""Every Copper program in examples/ checks, compiles and round-trips."""

import pytest

from copperline.firmware import isa
from copperline.firmware.compiler import compile_file, compile_program
from copperline.firmware.disasm import to_program
from copperline.firmware.program import load_program

from tests.conftest import REPO_ROOT

EXAMPLES = sorted((REPO_ROOT / "examples").glob("*.json"))


def test_the_required_examples_exist():
    names = {p.name for p in EXAMPLES}
    assert {"sprite.json", "tick.json", "nested_loops.json", "fence.json"} <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_compiles_and_round_trips(path):
    image = compile_file(path)
    assert image.code[-1] == isa.encode("HALT")
    assert compile_program(to_program(image)).to_bytes() == image.to_bytes()


def test_sprite_is_the_seed_demo_with_a_real_sprite():
    # the seed's demo (bind layer 1, then each vsync move it 4 pixels and IRQ "tick"), with
    # a sprite image next to it, shown on the canvas, and crossing it again and again
    doc = load_program(REPO_ROOT / "examples" / "sprite.json")
    assert [e.get("op") for e in doc["program"]] == [
        "BIND_LAYER", "MOVE", "MOVE", "MOVE", None, "MOVE", None, "WAIT", "ADD", "IRQ",
        "LOOP", "JUMP"]
    assert doc["program"][0]["surface"] == "sprite.png"
    assert (REPO_ROOT / "examples" / "sprite.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_examples_use_what_they_claim():
    ops = lambda name: [i.name for i in compile_file(REPO_ROOT / "examples" / name).decoded()]
    tick = compile_file(REPO_ROOT / "examples" / "tick.json").decoded()
    assert tick[0].name == "WAIT" and tick[0].fields == {"vsync": 0, "us": 1000}
    assert [i.name for i in tick[1:3]] == ["IRQ", "JUMP"]
    nested = compile_file(REPO_ROOT / "examples" / "nested_loops.json").decoded()
    loops = [i.fields for i in nested if i.name == "LOOP"]
    assert len(loops) == 2 and all(l["count"] > 0 for l in loops)       # finite: it HALTs
    assert loops[0]["target"] > loops[1]["target"]                     # inner inside outer
    assert {"MOVE", "ADD", "IRQ", "WAIT"} <= set(ops("nested_loops.json"))
    fence = ops("fence.json")
    assert fence[fence.index("FENCE") + 1] == "MOVE"              # waits, then moves
