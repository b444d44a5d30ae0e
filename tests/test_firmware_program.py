"""Program JSON validation: every broken program gives one precise error."""

import json
from pathlib import Path

import pytest

from copperline.firmware import isa
from copperline.firmware.program import (ProgramError, Problem, load_program, parse_program,
                                         validate)

BROKEN = Path(__file__).parent / "broken"

#: tests/broken/<name>.json -> the one error it must give (after "<file>: ").
EXPECTED = {
    "bad_register_name": "program[0] (MOVE): field 'reg': 'sprite.x' is not a register name (expected layer[N].x|y|alpha|z|visible)",
    "bind_layer_out_of_range": "program[0] (BIND_LAYER): field 'id': layer 16 out of range (0..15)",
    "bool_is_not_int": "program[0] (ADD): field 'delta': expected an integer, got boolean true",
    "delta_too_wide": "program[0] (ADD): field 'delta': 40000 does not fit in signed 16 bits (-32768..32767)",
    "duplicate_key": "program[0] (MOVE): field 'value': key given more than once",
    "duplicate_label_disagree": "labels: duplicate label 'a': labels['a'] = 0 names op 0, but the marker at program[1] names op 1",
    "duplicate_label_markers": "program[2]: field 'label': duplicate label 'a' (already defined by the marker at program[0])",
    "empty_program": "program: the program is empty (it needs at least one op)",
    "extra_field": "program[0] (IRQ): field 'colour': unknown field (IRQ takes tag)",
    "fence_value_too_wide": "program[0] (FENCE): field 'value': 16777216 does not fit in 24 bits (0..16777215)",
    "float_is_not_int": "program[0] (WAIT): field 'us': expected an integer, got number 10.5",
    "halt_with_field": "program[0] (HALT): field 'code': unknown field (HALT takes no fields)",
    "label_index_outside": "labels: label 'a': index 5 is outside the program (0..1)",
    "label_not_string": "program[0]: field 'label': a label name must be a string, got integer 3",
    "layer_out_of_range": "program[0] (MOVE): field 'reg': 'layer[16].x': layer 16 out of range (0..15)",
    "loop_count_minus_two": "program[2] (LOOP): field 'count': bad loop count -2: the body runs count times in total, so count is 1..8191, or -1 for forever",
    "loop_count_too_big": "program[2] (LOOP): field 'count': bad loop count 8192: the body runs count times in total, so count is 1..8191, or -1 for forever",
    "loop_count_zero": "program[2] (LOOP): field 'count': bad loop count 0: the body runs count times in total, so count is 1..8191, or -1 for forever",
    "marker_with_extra": "program[0]: field 'note': unknown field in a label marker (a marker is just {\"label\": NAME}; an op needs 'op')",
    "missing_field": "program[0] (MOVE): field 'value': missing field",
    "missing_label": "program[1] (JUMP): field 'label': missing label 'tpo': no marker or labels entry defines it (did you mean 'top'?)",
    "move_value_below_signed": "program[0] (MOVE): field 'value': -32769 is out of range for layer[0].x (16-bit signed: -32768..32767)",
    "move_value_negative_unsigned": "program[0] (MOVE): field 'value': -1 is out of range for layer[0].visible (1-bit unsigned: 0..1)",
    "move_value_too_wide": "program[0] (MOVE): field 'value': 256 is out of range for layer[2].alpha (8-bit unsigned: 0..255)",
    "non_object_entry": "program[1]: expected an object (an op or a label marker), got string \"NOP\"",
    "not_an_object": "a program must be a JSON object, got array",
    "only_markers": "program: the program is empty (it needs at least one op)",
    "op_lowercase": "program[0]: field 'op': unknown op 'halt' (did you mean HALT? ops: HALT, NOP, WAIT, MOVE, ADD, IRQ, JUMP, LOOP, FENCE, BIND_LAYER)",
    "program_not_array": "program: expected an array of ops, got object",
    "string_is_not_int": "program[0] (MOVE): field 'value': expected an integer, got string \"100\"",
    "tag_empty": "program[0] (IRQ): field 'tag': tag must be 1..64 characters (got 0)",
    "tag_not_string": "program[0] (IRQ): field 'tag': expected a tag name (string), got integer 7",
    "tag_too_long": "program[0] (IRQ): field 'tag': tag must be 1..64 characters (got 65)",
    "timeline_empty": "program[0] (FENCE): field 'timeline': timeline must be 1..64 characters (got 0)",
    "too_many_loops": "program[10] (LOOP): field 'count': too many finite LOOPs: this is finite LOOP number 9, a program may have 8 (one hardware loop counter each)",
    "too_many_timelines": "program[4] (FENCE): field 'timeline': too many timelines: 't4' is distinct timeline number 5, a program may use 4",
    "unknown_op": "program[1]: field 'op': unknown op 'MOOV' (did you mean MOVE? ops: HALT, NOP, WAIT, MOVE, ADD, IRQ, JUMP, LOOP, FENCE, BIND_LAYER)",
    "unknown_register": "program[0] (MOVE): field 'reg': 'layer[1].w': unknown register field 'w' (expected one of x, y, alpha, z, visible)",
    "unknown_top_key": "name: unknown top-level key (expected version, labels, program)",
    "version_missing": "version: missing (expected 1)",
    "version_wrong": "version: unsupported program version 2 (expected 1)",
    "wait_both_forms": "program[0] (WAIT): WAIT takes one of 'us' or 'vsync', not both",
    "wait_negative": "program[0] (WAIT): field 'us': wait must be positive: -5 us (1..134217727)",
    "wait_no_form": "program[0] (WAIT): missing field: WAIT needs 'us' or 'vsync'",
    "wait_too_long": "program[0] (WAIT): field 'us': 134217728 does not fit in 27 bits (1..134217727)",
    "wait_vsync_false": "program[0] (WAIT): field 'vsync': must be true, got false",
    "wait_zero": "program[0] (WAIT): field 'us': wait must be positive: 0 us (1..134217727)",
}


def problems_of(path: Path) -> list[Problem]:
    with pytest.raises(ProgramError) as info:
        validate(load_program(path), str(path))
    return info.value.problems


def test_every_broken_file_has_an_expectation():
    names = {p.stem for p in BROKEN.glob("*.json")} - {"syntax_error"}
    assert names == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_broken_program_gives_one_precise_error(name):
    path = BROKEN / f"{name}.json"
    problems = problems_of(path)
    assert [str(p) for p in problems] == [f"{path}: {EXPECTED[name]}"]


def test_problem_fields_name_index_op_and_field():
    (p,) = problems_of(BROKEN / "delta_too_wide.json")
    assert (p.index, p.op, p.field) == (0, "ADD", "delta")
    d = p.to_dict()
    assert d["index"] == 0 and d["field"] == "delta" and d["text"] == str(p)


def test_message_format_matches_spec():
    p = Problem("sprite.json", 6, "ADD", "delta",
                "40000 does not fit in signed 16 bits (-32768..32767)")
    assert str(p) == ("sprite.json: program[6] (ADD): field 'delta': "
                      "40000 does not fit in signed 16 bits (-32768..32767)")


def test_syntax_error_reports_file_line_col():
    path = BROKEN / "syntax_error.json"
    with pytest.raises(ProgramError) as info:
        load_program(path)
    (p,) = info.value.problems
    assert (p.line, p.col) == (4, 2)
    assert str(p).startswith(f"{path}:4:2: invalid JSON")


def test_unreadable_file_is_a_clear_error(tmp_path):
    with pytest.raises(ProgramError, match="nope.json: cannot read: No such file"):
        load_program(tmp_path / "nope.json")
    bad = tmp_path / "latin1.json"
    bad.write_bytes(b'{"version": 1, "program": [{"op": "IRQ", "tag": "\xe9"}]}')
    with pytest.raises(ProgramError, match="not UTF-8"):
        load_program(bad)


def test_all_problems_are_collected_in_order():
    doc = {"version": 1, "program": [
        {"op": "ADD", "reg": "layer[1].x", "delta": 40000},
        {"op": "MOOV"},
        {"op": "JUMP", "label": "nowhere"},
        {"op": "MOVE", "reg": "layer[99].x", "value": True},
    ]}
    with pytest.raises(ProgramError) as info:
        validate(doc, "p.json")
    got = [(p.index, p.field) for p in info.value.problems]
    assert got == [(0, "delta"), (1, "op"), (2, "label"), (3, "reg"), (3, "value")]
    # The exception text is every problem, one per line.
    assert str(info.value).count("\n") == 4


def nops(n, last="NOP"):
    return {"version": 1, "program": [{"op": "NOP"}] * (n - 1) + [{"op": last}]}


def test_program_size_counts_the_appended_halt():
    words = isa.DEFAULT_PROGRAM_WORDS
    validate(nops(words - 1))                 # + HALT = exactly full
    validate(nops(words, last="HALT"))        # ends in HALT: nothing appended
    with pytest.raises(ProgramError) as info:
        validate(nops(words), "big.json")
    (p,) = info.value.problems
    assert str(p) == (f"big.json: program: the program needs {words + 1} words ({words} ops + "
                      f"the HALT the compiler appends) but program memory holds {words}")


def test_program_size_limit_is_a_parameter():
    validate(nops(9), program_words=10)
    with pytest.raises(ProgramError, match="needs 11 words"):
        validate(nops(10), program_words=10)
    with pytest.raises(ValueError, match="program_words must be"):
        validate(nops(1), program_words=5000)


def test_layers_limit_is_a_parameter():
    doc = {"version": 1, "program": [{"op": "MOVE", "reg": "layer[20].x", "value": 1},
                                     {"op": "BIND_LAYER", "id": 20, "surface": "s"}]}
    validate(doc, layers=32)
    with pytest.raises(ProgramError) as info:
        validate(doc, layers=20)
    assert [p.field for p in info.value.problems] == ["reg", "id"]


def test_too_many_tags():
    prog = [{"op": "IRQ", "tag": f"t{i}"} for i in range(isa.MAX_TAGS)]
    validate({"version": 1, "program": prog + [{"op": "IRQ", "tag": "t0"}]})  # reuse is free
    with pytest.raises(ProgramError) as info:
        validate({"version": 1, "program": prog + [{"op": "IRQ", "tag": "one-more"}]}, "t.json")
    (p,) = info.value.problems
    assert p.index == isa.MAX_TAGS and p.field == "tag"
    assert "too many tags" in p.message and "257" in p.message


def test_too_many_surfaces():
    prog = [{"op": "BIND_LAYER", "id": 0, "surface": f"s{i}"} for i in range(isa.MAX_SURFACES + 1)]
    with pytest.raises(ProgramError) as info:
        validate({"version": 1, "program": prog})
    (p,) = info.value.problems
    assert p.index == isa.MAX_SURFACES and "too many surfaces" in p.message


def test_surface_too_long():
    doc = {"version": 1, "program": [{"op": "BIND_LAYER", "id": 0, "surface": "/" * 256}]}
    with pytest.raises(ProgramError, match=r"field 'surface': surface must be 1\.\.255 characters \(got 256\)"):
        validate(doc)


def test_forever_loops_do_not_use_slots():
    prog = [{"label": "l"}, {"op": "NOP"}] + [{"op": "LOOP", "count": 2, "label": "l"}] * 8
    prog += [{"op": "LOOP", "count": -1, "label": "l"}] * 3
    validate({"version": 1, "program": prog})


def test_agreeing_label_definitions_are_accepted():
    # The seed's sprite demo: "labels": {"loop": 5} and a marker at index 4, both naming op 4.
    doc = {"version": 1, "labels": {"loop": 2, "end": 3},
           "program": [{"op": "NOP"}, {"label": "loop"}, {"op": "NOP"},
                       {"op": "JUMP", "label": "loop"}]}
    checked = validate(doc)
    assert checked.labels == {"loop": 1, "end": 2}


def test_label_at_the_end_names_the_appended_halt():
    doc = {"version": 1, "program": [{"op": "JUMP", "label": "end"}, {"op": "HALT"}, {"label": "end"}]}
    assert validate(doc).labels == {"end": 2}


def test_missing_label_suggests_nothing_when_nothing_is_close():
    doc = {"version": 1, "program": [{"op": "JUMP", "label": "zzz"}]}
    with pytest.raises(ProgramError) as info:
        validate(doc)
    assert info.value.problems[0].message == "missing label 'zzz': no marker or labels entry defines it"


def test_parse_program_keeps_plain_dict_behaviour():
    doc = parse_program('{"version": 1, "program": [{"op": "NOP"}]}')
    assert doc == {"version": 1, "program": [{"op": "NOP"}]}
    assert json.loads(json.dumps(doc)) == doc


def test_docs_program_md_error_table_is_current(repo_root):
    """Every row of the error table in docs/program.md is what the validator says."""
    text = (repo_root / "docs" / "program.md").read_text()
    table = text.split("| tests/broken/ | error |", 1)[1]
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    documented = {}
    for row in rows:
        name, message = row[3:-3].split("` | `", 1)
        documented[name] = message.replace("\\|", "|")
    assert len(documented) >= 30
    for name, message in documented.items():
        assert EXPECTED[name] == message, name


def test_a_bad_label_definition_is_reported_once():
    doc = {"version": 1, "labels": {"a": 9}, "program": [{"op": "JUMP", "label": "a"}]}
    with pytest.raises(ProgramError) as info:
        validate(doc, "p.json")
    assert [str(p) for p in info.value.problems] == [
        "p.json: labels: label 'a': index 9 is outside the program (0..1)"]
