"""``copper check`` / ``compile`` / ``disasm``: via subprocess and in-process."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from copperline.firmware.compiler import compile_file
from copperline.firmware.image import Image
from copperline.host.cli import main

COPPER = Path(sys.executable).parent / "copper"
REPO = Path(__file__).resolve().parent.parent
SPRITE = REPO / "examples" / "sprite.json"
BROKEN = REPO / "tests" / "broken"


def copper(*args, cwd=None):
    return subprocess.run([str(COPPER), *map(str, args)], capture_output=True, text=True,
                          cwd=cwd, timeout=60)


# -- subprocess: the installed entry point ---------------------------------------------

def test_check_ok_subprocess():
    r = copper("check", SPRITE)
    assert r.returncode == 0, r.stderr
    assert r.stdout == f"ok: {SPRITE}: 10 ops (11 words), 4 registers, 1 tag, 2 labels\n"
    assert r.stderr == ""


def test_check_errors_one_per_line_on_stderr(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"version": 1, "program": [
        {"op": "ADD", "reg": "layer[1].x", "delta": 40000}, {"op": "JUMP", "label": "nope"}]}))
    r = copper("check", bad)
    assert r.returncode == 1
    assert r.stdout == ""
    assert r.stderr.splitlines() == [
        f"error: {bad}: program[0] (ADD): field 'delta': 40000 does not fit in signed 16 bits (-32768..32767)",
        f"error: {bad}: program[1] (JUMP): field 'label': missing label 'nope': no marker or labels entry defines it",
    ]


def test_compile_then_disasm_json_recompiles_to_same_bytes(tmp_path):
    cop = tmp_path / "sprite.cop"
    r = copper("compile", SPRITE, "-o", cop)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f"wrote {cop} ({cop.stat().st_size} bytes): 11 words, ")
    assert cop.read_bytes() == compile_file(SPRITE).to_bytes()

    r = copper("disasm", cop, "--program")
    assert r.returncode == 0 and r.stderr == ""
    back = tmp_path / "back.json"
    back.write_text(r.stdout)
    cop2 = tmp_path / "back.cop"
    assert copper("compile", back, "-o", cop2).returncode == 0
    assert cop2.read_bytes() == cop.read_bytes()


def test_disasm_listing_subprocess(tmp_path):
    cop = tmp_path / "s.cop"
    cop.write_bytes(compile_file(SPRITE).to_bytes())
    r = copper("disasm", cop)
    assert r.returncode == 0
    assert "  0005  28000000  WAIT       vsync" in r.stdout.splitlines()


def test_usage_error_exits_2():
    r = copper("check")
    assert r.returncode == 2
    assert "PROG.json" in r.stderr


# -- in-process: copperline.host.cli.main ---------------------------------------------

def run(capsys, *args):
    rc = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return rc, out, err


def test_check_json_ok(capsys):
    rc, out, err = run(capsys, "check", SPRITE, "--json")
    assert rc == 0
    result = json.loads(out)
    assert result["ok"] is True and result["ops"] == 10 and result["words"] == 11
    assert result["tags"] == ["tick"] and result["labels"] == {"again": 4, "loop": 5}
    assert result["registers"] == ["layer[1].x", "layer[1].y", "layer[1].alpha", "layer[1].visible"]


def test_check_json_errors(capsys):
    path = BROKEN / "delta_too_wide.json"
    rc, out, err = run(capsys, "check", path, "--json")
    assert rc == 1
    (e,) = json.loads(out)["errors"]
    assert (e["index"], e["op"], e["field"]) == (0, "ADD", "delta")
    assert err.startswith(f"error: {path}: program[0] (ADD)")


@pytest.mark.parametrize("cmd", ["check", "compile", "disasm"])
def test_missing_file_is_a_clear_error(capsys, tmp_path, cmd):
    missing = tmp_path / ("nope.cop" if cmd == "disasm" else "nope.json")
    rc, out, err = run(capsys, cmd, missing)
    assert rc == 1
    assert err == f"error: {missing}: cannot read: No such file or directory\n"


def test_syntax_error_names_line_and_column(capsys):
    path = BROKEN / "syntax_error.json"
    rc, _, err = run(capsys, "check", path)
    assert rc == 1 and err.startswith(f"error: {path}:4:2: invalid JSON")


def test_compile_default_output_and_json(capsys, tmp_path):
    prog = tmp_path / "tick.json"
    prog.write_text((REPO / "examples" / "tick.json").read_text())
    rc, out, _ = run(capsys, "compile", prog, "--json")
    assert rc == 0
    result = json.loads(out)
    assert result["output"] == str(tmp_path / "tick.cop")
    image = Image.from_bytes((tmp_path / "tick.cop").read_bytes())
    assert result["sha256"] == image.sha256() and result["words"] == len(image.code) == 4


def test_compile_error_writes_nothing(capsys, tmp_path):
    out_path = tmp_path / "x.cop"
    rc, _, err = run(capsys, "compile", BROKEN / "wait_zero.json", "-o", out_path)
    assert rc == 1 and "wait must be positive" in err
    assert not out_path.exists()


def test_compile_unwritable_output(capsys, tmp_path):
    rc, _, err = run(capsys, "compile", SPRITE, "-o", tmp_path / "no" / "such" / "dir.cop")
    assert rc == 1 and "cannot write" in err


def test_program_words_option(capsys):
    rc, _, err = run(capsys, "check", SPRITE, "--program-words", "8")
    assert rc == 1 and "needs 11 words (10 ops + the HALT the compiler appends) but program memory holds 8" in err
    rc, _, err = run(capsys, "check", SPRITE, "--program-words", "9999")
    assert rc == 1 and "program_words must be 1..4096" in err


def test_disasm_corrupted_image(capsys, tmp_path):
    data = bytearray(compile_file(SPRITE).to_bytes())
    data[30] ^= 1
    bad = tmp_path / "bad.cop"
    bad.write_bytes(bytes(data))
    rc, out, err = run(capsys, "disasm", bad)
    assert rc == 1 and out == ""
    assert err.startswith(f"error: {bad}: CRC mismatch")


def test_disasm_accepts_a_json_program(capsys):
    rc, out, _ = run(capsys, "disasm", SPRITE, "--json")
    assert rc == 0
    result = json.loads(out)
    assert result["ok"] is True and result["canonical"] is True
    assert result["program"]["program"][6] == {"label": "loop"}
    assert "  0005  28000000  WAIT       vsync" in result["listing"]


def test_disasm_output_writes_program_json_and_says_so(capsys, tmp_path):
    out_path = tmp_path / "back.json"
    rc, out, _ = run(capsys, "disasm", SPRITE, "-o", out_path)
    assert rc == 0
    assert out == f"wrote {out_path} (program JSON, {out_path.stat().st_size} bytes)\n"
    assert compile_file(out_path).to_bytes() == compile_file(SPRITE).to_bytes()


def test_disasm_json_warns_on_non_canonical_image(capsys, tmp_path):
    from copperline.firmware import isa
    image = Image(code=(isa.encode("IRQ", tag=1), isa.encode("IRQ", tag=0), 0), tags=("b", "a"))
    path = tmp_path / "odd.cop"
    path.write_bytes(image.to_bytes())
    rc, out, err = run(capsys, "disasm", path, "--json")
    assert rc == 0 and "not in the compiler's canonical form" in err
    result = json.loads(out)
    assert result["canonical"] is False
    assert [e.get("tag") for e in result["program"]["program"]] == ["a", "b", None]
