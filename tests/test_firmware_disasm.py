"""Disassembler: listing, to_program, and the compile -> disasm -> compile round trip."""

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from copperline.firmware import isa
from copperline.firmware.compiler import compile_file, compile_program
from copperline.firmware.disasm import (DisasmError, format_program, listing,
                                        recompiles_identically, to_program)
from copperline.firmware.image import Image
from copperline.firmware.program import ProgramError, validate
from tests.support import valid_programs


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(valid_programs())
def test_compile_disasm_compile_is_identical(doc):
    validate(doc)  # the generator only makes valid programs
    image = compile_program(doc)
    back = to_program(image)
    again = compile_program(back)
    assert again.to_bytes() == image.to_bytes()
    assert to_program(again) == back          # a fixed point
    assert recompiles_identically(image)
    # ... and through the on-disk bytes.
    assert Image.from_bytes(image.to_bytes()) == image
    # The one-entry-per-line text form parses to the same program.
    assert json.loads(format_program(back)) == back


@settings(max_examples=200, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
                    lambda children: st.lists(children, max_size=4)
                    | st.dictionaries(st.sampled_from(["op", "label", "reg", "value", "us", "vsync",
                                                       "program", "version", "labels", "tag", "count"]),
                                      children, max_size=4),
                    max_leaves=20))
def test_validator_never_crashes_on_junk(doc):
    try:
        validate(doc)
    except ProgramError as exc:
        assert exc.problems and all(str(p) for p in exc.problems)


# -- fixed cases -----------------------------------------------------------------------

def test_listing_of_sprite(examples_dir):
    text = listing(compile_file(examples_dir / "sprite.json"))
    lines = text.splitlines()
    assert lines[0].startswith("; Copper image: 11 words, ISA 1, sha256 ")
    assert "; tags: 0=\"tick\"" in lines
    assert "loop:" in lines
    assert lines[lines.index("loop:") + 1].split() == ["0005", "28000000", "WAIT", "vsync"]
    assert "  0008  7000a054  LOOP       count=84 target=0005 (loop) slot=0" in lines
    assert "  0007  50000000  IRQ        tag=0 (\"tick\")" in lines
    assert lines[-1].split() == ["0010", "00000000", "HALT"]


def test_to_program_uses_regmap_names_and_signedness():
    image = compile_program({"version": 1, "program": [
        {"op": "MOVE", "reg": "layer[3].x", "value": -100},
        {"op": "MOVE", "reg": "layer[3].alpha", "value": 200},
        {"op": "ADD", "reg": "layer[3].z", "delta": -7}]})
    assert to_program(image)["program"] == [
        {"op": "MOVE", "reg": "layer[3].x", "value": -100},
        {"op": "MOVE", "reg": "layer[3].alpha", "value": 200},
        {"op": "ADD", "reg": "layer[3].z", "delta": -7},
        {"op": "HALT"}]


def test_unnamed_jump_target_gets_an_invented_label():
    code = (isa.encode("NOP"), isa.encode("JUMP", target=0), isa.encode("HALT"))
    image = Image(code=code, labels=((0, "L0"),))
    back = to_program(Image(code=code))
    assert back["program"][0] == {"label": "L0"}
    assert compile_program(back) == image


def test_non_canonical_table_order_is_detected():
    code = (isa.encode("IRQ", tag=1), isa.encode("IRQ", tag=0), isa.encode("HALT"))
    image = Image(code=code, tags=("second", "first"))
    assert [e.get("tag") for e in to_program(image)["program"]] == ["first", "second", None]
    assert not recompiles_identically(image)


def test_label_outside_code_cannot_be_a_program():
    image = Image(code=(isa.encode("HALT"),), labels=((5, "far"),))
    with pytest.raises(DisasmError, match="label 'far' names address 5, outside the code"):
        to_program(image)
    assert "; labels outside the code at 5: far" in listing(image)
