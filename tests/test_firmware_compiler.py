"""Compiler: encoding of every op, tables, loop slots, HALT, labels, determinism."""

import json

import pytest

from copperline.firmware import isa
from copperline.firmware.compiler import compile_file, compile_program, load_any
from copperline.firmware.image import Image, ImageError
from copperline.firmware.program import ProgramError


def prog(*entries, **top):
    return {"version": 1, **top, "program": list(entries)}


def test_sprite_example_encodes_to_known_words(examples_dir):
    image = compile_file(examples_dir / "sprite.json")
    # Hand-computed from the bit layouts in isa.py (opcode << 28 | fields).
    assert image.code == (
        0x9010_0000,  # BIND_LAYER layer=1 surface=0
        0x3090_0070,  # MOVE reg 9 (layer[1].y) = 112
        0x30A0_00FF,  # MOVE reg 10 (layer[1].alpha) = 255
        0x30C0_0001,  # MOVE reg 12 (layer[1].visible) = 1
        0x3080_FFF0,  # MOVE reg 8 (layer[1].x) = -16
        0x2800_0000,  # WAIT vsync
        0x4080_0004,  # ADD layer[1].x += 4
        0x5000_0000,  # IRQ tag 0
        0x7000_A054,  # LOOP slot 0, target 5, count 84
        0x6000_0004,  # JUMP 4
        0x0000_0000,  # HALT appended
    )
    assert image.regmap == ((8, "layer[1].x"), (9, "layer[1].y"), (10, "layer[1].alpha"),
                            (12, "layer[1].visible"))
    assert image.tags == ("tick",)
    assert image.surfaces == ("sprite.png",)
    assert image.timelines == ()
    assert image.labels == ((4, "again"), (5, "loop"))


@pytest.mark.parametrize("entry, word", [
    ({"op": "NOP"}, 0x1000_0000),
    ({"op": "HALT"}, 0x0000_0000),
    ({"op": "WAIT", "us": 1000}, 0x2000_03E8),
    ({"op": "WAIT", "us": isa.WAIT_US_MAX}, 0x27FF_FFFF),
    ({"op": "WAIT", "vsync": True}, 0x2800_0000),
    ({"op": "MOVE", "reg": "layer[0].x", "value": -1}, 0x3000_FFFF),
    ({"op": "MOVE", "reg": "layer[15].visible", "value": 1}, 0x37C0_0001),
    ({"op": "MOVE", "reg": "layer[2].alpha", "value": 255}, 0x3120_00FF),
    ({"op": "ADD", "reg": "layer[1].z", "delta": -2}, 0x40B0_FFFE),
    ({"op": "FENCE", "timeline": "vk", "value": 0xABCDEF}, 0x80AB_CDEF),
    ({"op": "BIND_LAYER", "id": 15, "surface": "s"}, 0x90F0_0000),
])
def test_single_op_encoding(entry, word):
    image = compile_program(prog(entry))
    assert image.code[0] == word
    assert isa.decode(word).name == entry["op"]


def test_halt_not_appended_when_program_ends_in_halt():
    assert compile_program(prog({"op": "NOP"}, {"op": "HALT"})).code == (0x1000_0000, 0)
    assert compile_program(prog({"op": "NOP"})).code == (0x1000_0000, 0)


def test_label_at_end_gets_a_real_halt_to_name():
    image = compile_program(prog({"op": "JUMP", "label": "end"}, {"op": "HALT"}, {"label": "end"}))
    assert image.code == (0x6000_0002, 0, 0)
    assert image.labels == ((2, "end"),)


def test_tables_in_order_of_first_use():
    image = compile_program(prog(
        {"op": "IRQ", "tag": "b"}, {"op": "IRQ", "tag": "a"}, {"op": "IRQ", "tag": "b"},
        {"op": "FENCE", "timeline": "gpu", "value": 1}, {"op": "FENCE", "timeline": "vk", "value": 1},
        {"op": "BIND_LAYER", "id": 0, "surface": "z.rgba"}, {"op": "BIND_LAYER", "id": 1, "surface": "a.rgba"}))
    assert image.tags == ("b", "a")
    assert image.timelines == ("gpu", "vk")
    assert image.surfaces == ("z.rgba", "a.rgba")
    f = [ins.fields for ins in image.decoded()]
    assert [f[0]["tag"], f[1]["tag"], f[2]["tag"]] == [0, 1, 0]
    assert [f[3]["timeline"], f[4]["timeline"]] == [0, 1]
    assert [f[5]["surface"], f[6]["surface"]] == [0, 1]


def test_finite_loops_get_slots_in_program_order():
    image = compile_program(prog(
        {"label": "outer"}, {"label": "inner"}, {"op": "NOP"},
        {"op": "LOOP", "count": 3, "label": "inner"},
        {"op": "LOOP", "count": -1, "label": "outer"},
        {"op": "LOOP", "count": 2, "label": "outer"},
        {"op": "LOOP", "count": isa.LOOP_COUNT_MAX, "label": "inner"}))
    loops = [ins.fields for ins in image.decoded() if ins.name == "LOOP"]
    assert [(l["slot"], l["count"], l["target"]) for l in loops] == [
        (0, 3, 0), (0, 0, 0), (1, 2, 0), (2, isa.LOOP_COUNT_MAX, 0)]


def test_regmap_sorted_canonical_names():
    image = compile_program(prog(
        {"op": "MOVE", "reg": "layer[3].y", "value": 1},
        {"op": "ADD", "reg": "layer[01].x", "delta": 1},
        {"op": "MOVE", "reg": "layer[3].y", "value": 2}))
    assert image.regmap == ((8, "layer[1].x"), (25, "layer[3].y"))


def test_labels_sorted_by_address_then_name():
    image = compile_program(prog(
        {"label": "zeta"}, {"label": "alpha"}, {"op": "NOP"}, {"label": "mid"}, {"op": "NOP"},
        labels={"beta": 0, "alpha": 1}))
    assert image.labels == ((0, "alpha"), (0, "beta"), (0, "zeta"), (1, "mid"))


def test_labels_dict_index_names_next_op():
    # labels index 1 is a marker -> the op after it; index 3 == len(program) -> the end.
    image = compile_program(prog({"op": "NOP"}, {"label": "m"}, {"op": "NOP"},
                                 labels={"a": 1, "e": 3}))
    assert dict((n, a) for a, n in image.labels) == {"a": 1, "m": 1, "e": 2}


def test_deterministic_and_independent_of_key_order():
    a = prog({"op": "MOVE", "reg": "layer[1].x", "value": 5}, {"op": "IRQ", "tag": "t"},
             labels={"x": 0, "y": 1})
    b = json.loads(json.dumps(a))
    b["labels"] = {"y": 1, "x": 0}
    b["program"][0] = {"value": 5, "reg": "layer[1].x", "op": "MOVE"}
    assert compile_program(a).to_bytes() == compile_program(a).to_bytes() == compile_program(b).to_bytes()


def test_compile_validates_first():
    with pytest.raises(ProgramError, match=r"p\.json: program\[0\] \(MOVE\): field 'value'"):
        compile_program(prog({"op": "MOVE", "reg": "layer[1].alpha", "value": 999}), "p.json")


def test_output_passes_the_image_loader(examples_dir):
    for path in sorted(examples_dir.glob("*.json")):
        image = compile_file(path)
        assert Image.from_bytes(image.to_bytes()) == image


def test_load_any_compiles_json_and_loads_images(tmp_path, examples_dir):
    image = load_any(examples_dir / "tick.json")
    cop = tmp_path / "tick.cop"
    cop.write_bytes(image.to_bytes())
    assert load_any(cop) == image
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"not an image at all")
    with pytest.raises(ImageError, match="not a Copper image"):
        load_any(junk)
    with pytest.raises(ProgramError, match="cannot read"):
        load_any(tmp_path / "missing.json")
