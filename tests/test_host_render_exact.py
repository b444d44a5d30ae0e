"""copper render --exact: the display model's frames as PNGs (host/render.py, firmware/frames.py).

Each frame file must be ``to_rgb888(scale_up(render_frame(display, k, history.value)))``
of ``firmware/display.py``; the expected pictures here are computed from register writes
written down by hand (the cycles follow from the ISA's cycle rules), not from the VM."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from copperline.firmware import isa
from copperline.firmware.display import (BACKGROUND, MODES, PALETTE, Display, RegisterHistory,
                                         sample_offset,
                                         render_frame, scale_up, to_rgb888)
from copperline.host import render
from copperline.host.cli import main
from copperline.firmware.frames import (FrameDiff, compare_frames, frame_image, frame_path,
                                    load_frame, write_frame)

PIL = pytest.importorskip("PIL")

REPO = Path(__file__).resolve().parent.parent
TRACES = REPO / "tests" / "data" / "traces"
ICE = Display(MODES["640x480@60-24MHz"], 4, 12_000_000, surface_words=16384)
P = ICE.frame_cycles                  # 525 lines x 381 core cycles = 200025

#: The move of layer 0's x, mid frame 0: WAIT us 8166 issued in cycle 9 -> the MOVE
#: issues in 9 + 8166 * 12 = 98001, between canvas line 107's sample of layer[0].x
#: (its fetch, (45 + 2*107 - 2) * 381 = 97917, plus 1) and line 108's (98679 + 1).
SPLIT_CYCLE = 98_001
SPLIT_LINE = 108

PROGRAM = {"version": 1, "program": [
    {"op": "MOVE", "reg": "layer[0].visible", "value": 1},     # cycle 0
    {"op": "MOVE", "reg": "layer[0].alpha", "value": 255},     # 1
    {"op": "MOVE", "reg": "layer[0].x", "value": 10},          # 2
    {"op": "MOVE", "reg": "layer[0].y", "value": 100},         # 3
    {"op": "MOVE", "reg": "layer[2].visible", "value": 1},     # 4
    {"op": "MOVE", "reg": "layer[2].alpha", "value": 128},     # 5
    {"op": "MOVE", "reg": "layer[2].x", "value": 14},          # 6
    {"op": "MOVE", "reg": "layer[2].y", "value": 104},         # 7
    {"op": "MOVE", "reg": "layer[2].z", "value": 1},           # 8
    {"op": "WAIT", "us": 8166},                                # 9
    {"op": "MOVE", "reg": "layer[0].x", "value": 50},          # 98001: mid frame 0
    {"op": "WAIT", "vsync": True},                             # 98002
    {"op": "ADD", "reg": "layer[0].y", "delta": 20},           # P + 1: frame 1's blanking
    {"op": "ADD", "reg": "layer[2].x", "delta": -20},          # P + 2: x = -6, clipped
    {"op": "HALT"},
]}


def r(name: str) -> int:
    return isa.parse_register(name)


#: The program's writes, by hand: (global issue cycle, register, value).
WRITES = [(0, r("layer[0].visible"), 1), (1, r("layer[0].alpha"), 255),
          (2, r("layer[0].x"), 10), (3, r("layer[0].y"), 100),
          (4, r("layer[2].visible"), 1), (5, r("layer[2].alpha"), 128),
          (6, r("layer[2].x"), 14), (7, r("layer[2].y"), 104), (8, r("layer[2].z"), 1),
          (SPLIT_CYCLE, r("layer[0].x"), 50),
          (P + 1, r("layer[0].y"), 120), (P + 2, r("layer[2].x"), -6)]


def expected(k: int, writes=WRITES, display=ICE) -> list[list[tuple[int, int, int]]]:
    canvas = render_frame(display, k, RegisterHistory(writes).value)
    return [[to_rgb888(p) for p in row] for row in scale_up(canvas)]


@pytest.fixture
def prog(tmp_path) -> Path:
    path = tmp_path / "raster.json"
    path.write_text(json.dumps(PROGRAM))
    return path


def colour(n: int) -> tuple[int, int, int]:
    return to_rgb888(PALETTE[n])


# -- the display of a board ------------------------------------------------------------

def test_display_of_each_board():
    ice = render.display_for_board("icebreaker")
    assert ice == ICE and render.display_for_board() == ICE           # the default
    assert ice.pixel_hz == 24_000_000 and P == 200_025
    assert isa.vsync_period_cycles(ice.clock_hz, ice.vsync_hz) == ice.frame_cycles
    for name in ("ulx3s-12f", "ulx3s-85f", "ulx3s"):
        d = render.display_for_board(name)
        assert d.mode.name == "640x480@60-25MHz" and d.pixel_hz == 25_000_000
        assert isa.vsync_period_cycles(d.clock_hz, d.vsync_hz) == d.frame_cycles
    with pytest.raises(render.RenderError, match="unknown board 'icebraker'"):
        render.display_for_board("icebraker")


# -- PNG I/O -----------------------------------------------------------------------------

def test_frame_image_is_scale_up_exactly(tmp_path):
    rnd = random.Random(7)
    canvas = [[(rnd.randrange(16), rnd.randrange(16), rnd.randrange(16)) for _ in range(320)]
              for _ in range(240)]
    want = [[to_rgb888(p) for p in row] for row in scale_up(canvas)]
    img = frame_image(canvas)
    assert img.size == (640, 480) and img.mode == "RGB"
    assert img.tobytes() == bytes(c for row in want for p in row for c in p)
    path = tmp_path / "f.png"
    write_frame(str(path), canvas)
    assert load_frame(path) == want                     # the PNG round trip
    from PIL import Image
    with Image.open(path) as im:
        assert im.format == "PNG" and im.mode == "RGB" and im.size == (640, 480)


def test_compare_frames(tmp_path):
    canvas = render_frame(ICE, 0, RegisterHistory(WRITES).value)
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    write_frame(str(a), canvas)
    write_frame(str(b), canvas)
    assert compare_frames(a, b) is None
    rows = load_frame(a)
    assert compare_frames(a, rows) is None              # a path and rows
    rows[300][7] = (1, 2, 3)
    rows[200][600] = (4, 5, 6)
    rows[200][601] = (4, 5, 6)
    d = compare_frames(a, rows)
    bg = to_rgb888(BACKGROUND)
    assert d == FrameDiff(x=600, y=200, a=bg, b=(4, 5, 6), count=3)
    assert "3 pixel(s) differ; first at (x=600, y=200)" in str(d)
    changed = [list(row) for row in canvas]
    changed[0][0] = (0xF, 0, 0)                          # one canvas pixel: 2x2 output pixels
    write_frame(str(b), changed)
    assert compare_frames(a, b) == FrameDiff(0, 0, bg, (255, 0, 0), 4)
    with pytest.raises(ValueError, match="640x480 and 320x240"):
        compare_frames(a, [[bg] * 320] * 240)


# -- from a program ----------------------------------------------------------------------

def test_program_frames_are_the_display_models(prog, tmp_path):
    out = tmp_path / "frames"
    res = render.render_exact(str(prog), 3, str(out))
    assert res.paths == [str(out / f"frame-{k:05d}.png") for k in range(3)]
    assert sorted(p.name for p in out.iterdir()) == ["frame-00000.png", "frame-00001.png",
                                                     "frame-00002.png"]
    assert sorted(res.source.writes) == sorted(WRITES)
    for k in range(3):
        assert compare_frames(out / f"frame-{k:05d}.png", expected(k)) is None, k
    f0, f1, f2 = (load_frame(frame_path(str(out), k)) for k in range(3))
    # Frame 0 is split at canvas line 108 (output rows 216, 217): layer 0 at x = 10 above,
    # at x = 50 from there on.
    last_before, first_after = 2 * SPLIT_LINE - 1, 2 * SPLIT_LINE
    assert f0[last_before][2 * 10] == colour(0) and f0[last_before][2 * 50] == to_rgb888(BACKGROUND)
    assert f0[first_after][2 * 10] == to_rgb888(BACKGROUND) and f0[first_after][2 * 50] == colour(0)
    assert f0[2 * 100][2 * 10] == colour(0)              # the layer's top line, before the move
    # layer 2 (alpha 128, z 1) over layer 0 where they overlap, above the split
    over = f0[2 * 105][2 * 20]
    assert over not in (colour(0), colour(2), to_rgb888(BACKGROUND))
    # Frame 1: the ADDs landed in its blanking, so the whole frame has y = 120, x = 50;
    # layer 2 hangs over the left edge (x = -6: canvas columns 0..9).
    assert f1[2 * 119][2 * 50] == to_rgb888(BACKGROUND) and f1[2 * 120][2 * 50] == colour(0)
    assert f1[2 * 135][2 * 50] == colour(0) and f1[2 * 136][2 * 50] == to_rgb888(BACKGROUND)
    assert f1[2 * 110][2 * 9] != to_rgb888(BACKGROUND) == f1[2 * 110][2 * 10]
    assert f2 == f1 != f0                                # nothing written after frame 1


def test_a_write_on_a_sample_cycle_shows_from_the_next_line():
    # (the rule render_exact inherits: a write in the sampling cycle itself is not seen)
    sample = ICE.line_fetch_cycle(0, SPLIT_LINE) + sample_offset(0, "x")
    for cycle, line in ((sample - 1, SPLIT_LINE), (sample, SPLIT_LINE + 1)):
        w = [x for x in WRITES if x[0] != SPLIT_CYCLE] + [(cycle, r("layer[0].x"), 50)]
        canvas = render_frame(ICE, 0, RegisterHistory(w).value)
        assert canvas[line - 1][10] == PALETTE[0] and canvas[line][10] == BACKGROUND


def test_cli_exact_json(prog, tmp_path, capsys):
    out = tmp_path / "o"
    assert main(["render", "--exact", str(prog), "--frames", "2", "-o", str(out), "--json"]) == 0
    obj = json.loads(capsys.readouterr().out)
    assert obj["ok"] is True and obj["exact"] is True
    assert obj["frames"] == 2 and obj["board"] == "icebreaker"
    assert obj["mode"] == "640x480@60-24MHz" and obj["size"] == [640, 480]
    assert obj["canvas"] == [320, 240] and obj["pixel_hz"] == 24_000_000
    assert obj["clock_hz"] == 12_000_000 and obj["frame_cycles"] == P
    assert obj["source_kind"] == "program" and obj["writes"] == len(WRITES)
    assert [f["path"] for f in obj["files"]] == [str(out / "frame-00000.png"),
                                                 str(out / "frame-00001.png")]
    assert obj["files"][1]["bytes"] == (out / "frame-00001.png").stat().st_size
    assert compare_frames(out / "frame-00001.png", expected(1)) is None


def test_cli_exact_human_and_cop_image(prog, tmp_path, capsys):
    cop = tmp_path / "raster.cop"
    assert main(["compile", str(prog), "-o", str(cop)]) == 0
    capsys.readouterr()
    out = tmp_path / "o"
    assert main(["render", str(cop), "--exact", "--frames", "1", "-o", str(out)]) == 0
    assert capsys.readouterr().out == (
        f"wrote 1 PNGs to {out}/ (frames 0..0, 640x480, exact: icebreaker's "
        "640x480@60-24MHz display, 12 MHz core)\n")
    assert compare_frames(out / "frame-00000.png", expected(0)) is None


def test_progress_for_long_renders(prog, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(render, "EXACT_S_PER_FRAME", 1.0)
    assert main(["render", "--exact", str(prog), "--frames", "3", "-o", str(tmp_path / "o")]) == 0
    err = capsys.readouterr().err
    assert "[render] rendering 3 exact frames ... (~3 s)" in err and "done in" in err


def test_ulx3s_display(prog, tmp_path):
    d = render.display_for_board("ulx3s")
    out = tmp_path / "u"
    res = render.render_exact(str(prog), 2, str(out), board="ulx3s")
    assert res.display == d
    # the same program at the ULX3S's core clock: WAIT us 8166 lasts 8166 * 25 cycles
    split = 9 + 8166 * d.clock_hz // 1_000_000
    w = [x for x in WRITES if x[0] < SPLIT_CYCLE] + [(split, r("layer[0].x"), 50),
                                                    (d.frame_cycles + 1, r("layer[0].y"), 120),
                                                    (d.frame_cycles + 2, r("layer[2].x"), -6)]
    for k in range(2):
        assert compare_frames(out / f"frame-{k:05d}.png", expected(k, w, d)) is None


# -- from a trace ------------------------------------------------------------------------

def test_trace_frames_equal_the_programs(prog, tmp_path, capsys):
    trace = tmp_path / "t.jsonl"
    # (--board: the board's core clock and frame rate, its display's)
    assert main(["run", str(prog), "--backend", "soft", "--board", "icebreaker",
                 "--frames", "3", "--trace", str(trace)]) == 0
    capsys.readouterr()
    out = tmp_path / "from-trace"
    res = render.render_exact(str(trace), 3, str(out))
    assert res.source.kind == "trace" and sorted(res.source.writes) == sorted(WRITES)
    for k in range(3):
        assert compare_frames(out / f"frame-{k:05d}.png", expected(k)) is None, k


def _trace(path: Path, events, clock_hz=12_000_000, vsync_hz=None, **header) -> Path:
    h = {"trace": 1, "backend": "soft", "clock_hz": clock_hz,
         "vsync_hz": vsync_hz or clock_hz / P, "program": "0" * 64, **header}
    path.write_text("\n".join(json.dumps(x) for x in [h, *events]) + "\n")
    return path


def _reg(name, value, cycle, prog=1):
    return {"event": "reg", "prog": prog, "reg": name, "value": value, "cycle": cycle}


def test_trace_program_cycles_count_from_the_recorded_start(tmp_path):
    # program 2 started in global cycle 1000: its cycle 97001 is global 98001
    events = [_reg(x, v, c) for c, x, v in (
        (0, "layer[0].visible", 1), (1, "layer[0].alpha", 255), (2, "layer[0].x", 10),
        (3, "layer[0].y", 100))] + [_reg("layer[0].x", 50, SPLIT_CYCLE - 1000, prog=2)]
    t = _trace(tmp_path / "t.jsonl", events, actions=[
        {"cycle": 0, "kind": "start", "prog": 1}, {"cycle": 1000, "kind": "start", "prog": 2}])
    res = render.render_exact(str(t), 1, str(tmp_path / "o"))
    assert (SPLIT_CYCLE, r("layer[0].x"), 50) in res.source.writes
    f0 = load_frame(tmp_path / "o" / "frame-00000.png")
    assert f0[2 * SPLIT_LINE - 1][2 * 10] == colour(0) == f0[2 * SPLIT_LINE][2 * 50]


def test_trace_at_another_clock_or_rate_is_refused(tmp_path, capsys):
    # the checked-in traces ran at 12 MHz and 60 Hz: a 200000-cycle vsync period
    t = str(TRACES / "sprite_fpga.jsonl")
    with pytest.raises(render.RenderError) as exc:
        render.render_exact(t, 2, str(tmp_path / "o"))
    msg = str(exc.value)
    assert "200000" in msg and "200025" in msg and "--board" in msg
    assert "copper run PROG --board icebreaker --trace" in msg
    assert not (tmp_path / "o").exists()
    fast = _trace(tmp_path / "fast.jsonl", [_reg("layer[0].x", 1, 0)], clock_hz=25_000_000,
                  vsync_hz=25_000_000 / 420_000)
    assert main(["render", "--exact", str(fast), "--frames", "1", "-o", str(tmp_path / "o"),
                 "--json"]) == 2
    obj = json.loads(capsys.readouterr().out)
    assert obj["error"]["code"] == "BAD_INPUT"
    assert "25000000" in obj["error"]["message"] and "12000000" in obj["error"]["message"]
    # the board it was recorded for renders it
    assert main(["render", "--exact", str(fast), "--frames", "1", "--board", "ulx3s-85f",
                 "-o", str(tmp_path / "o")]) == 0


def test_trace_with_dropped_events_is_refused(tmp_path):
    t = _trace(tmp_path / "d.jsonl", [_reg("layer[0].x", 1, 0),
                                      {"event": "dropped", "count": 3, "cycle": 50}])
    with pytest.raises(render.RenderError, match=r"3 event\(s\) were dropped.*cannot be exact"):
        render.render_exact(str(t), 1, str(tmp_path / "o"))
    ok = _trace(tmp_path / "ok.jsonl", [_reg("layer[0].x", 1, 0)])
    render.render_exact(str(ok), 1, str(tmp_path / "o"))          # without it: fine


# -- errors through the CLI --------------------------------------------------------------

def test_cli_errors(prog, tmp_path, capsys):
    def err(*argv) -> str:
        assert main([str(a) for a in argv]) == 2
        return capsys.readouterr().err

    o = tmp_path / "o"
    assert "--frames must be >= 1 (got 0)" in err("render", "--exact", prog, "--frames", "0", "-o", o)
    assert "--frames must be >= 1 (got -2)" in err("render", "--exact", prog, "--frames", "-2", "-o", o)
    assert "--size: not with --exact" in err("render", "--exact", prog, "--frames", "1",
                                             "--size", "320x240", "-o", o)
    assert "--clock-hz, --vsync-hz: not with --exact" in err(
        "render", "--exact", prog, "--frames", "1", "--clock-hz", "1000000", "--vsync-hz", "60",
        "-o", o)
    assert "--board goes with --exact" in err("render", prog, "--frames", "1", "--board",
                                              "icebreaker", "-o", tmp_path / "x.gif")
    assert "unknown board 'nope'" in err("render", "--exact", prog, "--frames", "1", "--board",
                                         "nope", "-o", o)
    assert "give a directory" in err("render", "--exact", prog, "--frames", "1", "-o",
                                     tmp_path / "x.gif")
    assert "no such file" in err("render", "--exact", tmp_path / "nope.json", "--frames", "1",
                                 "-o", o)
    notes = tmp_path / "notes.txt"
    notes.write_text("hello\n")
    assert "neither a trace" in err("render", "--exact", notes, "--frames", "1", "-o", o)
    assert "exists and is not a directory" in err("render", "--exact", prog, "--frames", "1",
                                                  "-o", notes)
    assert not o.exists()
    # unwritable: a directory under a regular file
    assert main(["render", "--exact", str(prog), "--frames", "1", "-o", str(notes / "sub"),
                 "--json"]) == 2
    obj = json.loads(capsys.readouterr().out)
    assert obj["error"]["code"] == "CANNOT_WRITE" and str(notes / "sub") in obj["error"]["message"]


def test_frames_after_a_running_traces_end_are_flagged(tmp_path, caplog):
    # the trace stops at cycle 5000 with its program still running: frames past it could
    # miss writes, so render says so (and draws the last values)
    t = _trace(tmp_path / "short.jsonl", [
        {"event": "state", "prog": 1, "state": "running", "cycle": 0},
        _reg("layer[0].visible", 1, 0), _reg("layer[0].alpha", 255, 1)], until_cycle=5000)
    with caplog.at_level("WARNING"):
        render.render_exact(str(t), 2, str(tmp_path / "o"))
    assert "ends at cycle 5000 (frame 0)" in caplog.text
    caplog.clear()
    done = _trace(tmp_path / "done.jsonl", [
        _reg("layer[0].visible", 1, 0), {"event": "state", "prog": 1, "state": "done",
                                         "cycle": 2}], until_cycle=5000)
    with caplog.at_level("WARNING"):
        render.render_exact(str(done), 2, str(tmp_path / "o"))
    assert "ends at cycle" not in caplog.text          # an ended program writes no more


def test_cli_zero_values_of_drawing_options_are_refused_too(prog, tmp_path, capsys):
    assert main(["render", "--exact", str(prog), "--frames", "1", "--clock-hz", "0",
                 "-o", str(tmp_path / "o")]) == 2
    assert "--clock-hz: not with --exact" in capsys.readouterr().err


def test_a_frame_that_cannot_be_written(prog, tmp_path, capsys):
    out = tmp_path / "o"
    (out / "frame-00001.png").mkdir(parents=True)        # frame 1's file is a directory
    assert main(["render", "--exact", str(prog), "--frames", "2", "-o", str(out), "--json"]) == 2
    obj = json.loads(capsys.readouterr().out)
    assert obj["error"]["code"] == "CANNOT_WRITE"
    assert str(out / "frame-00001.png") in obj["error"]["message"]


def test_the_sprite_demo_shows_its_image(tmp_path):
    """examples/sprite.json binds examples/sprite.png to layer 1: frame k shows it at
    x = -16 + 4k, y = 112, its transparent pixels showing the background."""
    from copperline.host.surfaces import read_surface_file
    example = Path(render.__file__).parents[1] / "examples" / "sprite.json"
    sprite = read_surface_file(str(example.parent / "sprite.png")).surface
    res = render.render_exact(str(example), 12, str(tmp_path / "o"))
    assert res.source.surfaces == ["sprite.png"]
    frame = load_frame(frame_path(str(tmp_path / "o"), 11))
    x0, y0 = -16 + 4 * 11, 112
    for y in range(-1, 17):
        for x in range(-1, 17):
            want = (sprite.rows[y][x] if 0 <= y < 16 and 0 <= x < 16 else None) or BACKGROUND
            assert frame[2 * (y0 + y)][2 * (x0 + x)] == to_rgb888(want), (x, y)
    assert sum(p is None for row in sprite.rows for p in row) > 20      # it has a shape


def test_the_tutorials_sprite_picture_is_current(tmp_path):
    # docs/tutorial.md shows frame 20 of the sprite demo: the command it gives makes it
    repo = Path(render.__file__).parents[1]
    render.render_exact(str(repo / "examples" / "sprite.json"), 21, str(tmp_path / "o"))
    assert compare_frames(repo / "docs" / "images" / "sprite-exact.png",
                          frame_path(str(tmp_path / "o"), 20)) is None
