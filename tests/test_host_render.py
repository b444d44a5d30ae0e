"""copper render: frames at vsync edges, drawn layers, GIF/PNG output."""

import json
from pathlib import Path

import pytest

from copperline.host.cli import main
from copperline.host.render import (BACKGROUND, PALETTE, RenderError, draw_frame,
                                    frames_from_events, frames_from_source)

PIL = pytest.importorskip("PIL")
from PIL import Image  # noqa: E402

DATA = Path(__file__).parent / "data" / "traces"
CLOCK = 1_000_000      # 1 MHz, 60 Hz: P = 16667 cycles
P = 16667


def reg(name, value, cycle, prog=1):
    return {"event": "reg", "prog": prog, "reg": name, "value": value, "cycle": cycle,
            "time_us": float(cycle)}


def write_trace(path: Path, events) -> str:
    h = {"trace": 1, "backend": "soft", "clock_hz": CLOCK, "vsync_hz": 60.0}
    path.write_text("\n".join(json.dumps(x) for x in [h, *events]) + "\n")
    return str(path)


def test_frame_k_holds_writes_before_edge_k():
    ev = [reg("layer[0].x", 1, 0), reg("layer[0].x", 2, P - 1), reg("layer[0].x", 3, P),
          reg("layer[0].x", 4, 2 * P + 1)]
    frames = frames_from_events(ev, CLOCK, 60.0, 3)
    assert [f.cycle for f in frames] == [P, 2 * P, 3 * P]
    assert [f.regs[0]["x"] for f in frames] == [2, 3, 4]   # a write in cycle P shows in frame 2
    assert frames[0].time_us == round(P * 1e6 / CLOCK, 3)


def test_unwritten_alpha_visible_default_to_shown_unless_reset_values():
    f = frames_from_events([reg("layer[3].x", 10, 0)], CLOCK, 60.0, 1)[0]
    [(layer, r)] = f.layers()
    assert layer == 3 and r["alpha"] == 255 and r["visible"] == 1 and r["y"] == 0
    assert f.layers(reset_values=True) == []      # registers reset to 0: hidden


def px(img, x, y):
    return img.getpixel((x, y))


def test_draw_z_order_alpha_and_visibility():
    ev = [reg("layer[1].x", 10, 0), reg("layer[1].y", 10, 0), reg("layer[1].z", 5, 0),
          reg("layer[2].x", 30, 0), reg("layer[2].y", 30, 0), reg("layer[2].z", 1, 0),
          reg("layer[4].x", 200, 0), reg("layer[4].y", 100, 0), reg("layer[4].alpha", 128, 0),
          reg("layer[5].x", 300, 0), reg("layer[5].visible", 0, 0)]
    f = frames_from_events(ev, CLOCK, 60.0, 1)[0]
    img = draw_frame(f, (400, 200), (40, 40))
    assert img.size == (400, 200)
    # layers 1 and 2 overlap at (40, 40): layer 1 has the higher z, so it is on top.
    assert px(img, 45, 45) == PALETTE[1]
    assert px(img, 65, 65) == PALETTE[2]           # only layer 2 there
    # layer 4 at alpha 128: half way between the background and its colour.
    r, g, b = px(img, 220, 120)
    for got, bg, fg in zip((r, g, b), BACKGROUND, PALETTE[4]):
        assert abs(got - (bg * 127 + fg * 128) / 255) <= 2
    # layer 5 is not visible: background there.
    assert px(img, 322, 150) == BACKGROUND


def test_render_trace_to_png_directory(tmp_path, capsys):
    # tests/data/traces/sprite_fpga.jsonl: layer 1 starts at x=16, y=100, alpha 200,
    # and moves 4 px right per frame; layer 2 sits still at (120, 80), alpha 128.
    out = tmp_path / "frames"
    assert main(["render", str(DATA / "sprite_fpga.jsonl"), "--frames", "12", "-o", str(out),
                 "--size", "320x240", "--layer-size", "32x32"]) == 0
    assert "12 frames" in capsys.readouterr().out
    files = sorted(out.iterdir())
    assert [f.name for f in files] == [f"frame_{k:04d}.png" for k in range(1, 13)]
    f1, f12 = Image.open(files[0]).convert("RGB"), Image.open(files[11]).convert("RGB")
    assert f1.size == (320, 240)
    # frame 1: x = 16 (the first ADD lands after edge 1); frame 12: x = 16 + 11*4 = 60.
    left_edge_strip = (20, 110)     # inside the sprite in frame 1 only
    right_strip = (85, 110)         # inside it in frame 12 only
    assert px(f1, *left_edge_strip) != px(f12, *left_edge_strip)
    assert px(f1, *right_strip) != px(f12, *right_strip)
    assert px(f12, *left_edge_strip) == BACKGROUND
    assert px(f1, *right_strip) == BACKGROUND
    # the still layer 2 is the same in both
    assert px(f1, 140, 100) == px(f12, 140, 100) != BACKGROUND
    # and every frame differs from the one before where the sprite moves
    prev = None
    for f in files:
        img = Image.open(f).convert("RGB").crop((0, 100, 320, 132))
        if prev is not None:
            assert img.tobytes() != prev.tobytes()
        prev = img


def test_render_gif_has_n_frames(tmp_path):
    out = tmp_path / "s.gif"
    assert main(["render", str(DATA / "sprite_soft.jsonl"), "--frames", "8", "-o", str(out),
                 "--size", "160x160"]) == 0
    im = Image.open(out)
    assert im.n_frames == 8 and im.size == (160, 160)
    assert im.info["duration"] == 20 and im.info["loop"] == 0


def test_render_program_on_the_soft_vm(tmp_path, examples_dir):
    pytest.importorskip("copperline.sim.vm")
    prog = examples_dir / "sprite.json"
    if not prog.exists():
        pytest.skip("examples/sprite.json not present")
    frames = frames_from_source(str(prog), 5)
    xs = [f.regs[1]["x"] for f in frames]
    # the sprite moves by the same step every frame
    steps = {b - a for a, b in zip(xs, xs[1:])}
    assert len(steps) == 1 and steps != {0}
    out = tmp_path / "p"
    assert main(["render", str(prog), "--frames", "3", "-o", str(out)]) == 0
    imgs = [Image.open(out / f"frame_{k:04d}.png").convert("RGB") for k in (1, 2, 3)]
    assert imgs[0].tobytes() != imgs[1].tobytes() != imgs[2].tobytes()


def test_render_errors(tmp_path, capsys):
    assert main(["render", str(tmp_path / "nope.jsonl"), "--frames", "2", "-o",
                 str(tmp_path / "o")]) == 2
    assert "no such file" in capsys.readouterr().err
    txt = tmp_path / "notes.txt"
    txt.write_text("hello\n")
    assert main(["render", str(txt), "--frames", "2", "-o", str(tmp_path / "o")]) == 2
    assert "neither a trace" in capsys.readouterr().err
    tr = write_trace(tmp_path / "t.jsonl", [reg("layer[0].x", 1, 0)])
    assert main(["render", tr, "--frames", "2", "-o", str(tmp_path / "one.png")]) == 2
    assert "a .png holds one frame" in capsys.readouterr().err
    assert main(["render", tr, "--frames", "1", "-o", str(tmp_path / "one.png")]) == 0
    assert (tmp_path / "one.png").exists()
    assert main(["render", tr, "--frames", "0", "-o", str(tmp_path / "o")]) == 2
    assert main(["render", tr, "--frames", "1", "--size", "640by480", "-o", str(tmp_path / "o")]) == 2
    assert "--size must look like WxH" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"trace":1,"backend":"soft","clock_hz":1000000}\n{"event":"reg","prog":1}\n')
    assert main(["render", str(bad), "--frames", "1", "-o", str(tmp_path / "o")]) == 2
    assert f"{bad}:2: reg event lacks 'reg'" in capsys.readouterr().err


def test_render_error_type():
    with pytest.raises(RenderError):
        frames_from_source("/nonexistent/file.json", 1)


def test_render_of_run_trace_equals_render_of_program(tmp_path, examples_dir, capsys):
    """A trace written by ``copper run`` replays to the same frames as running the program."""
    pytest.importorskip("copperline.host.run_cli")
    pytest.importorskip("copperline.sim.vm")
    prog = examples_dir / "sprite.json"
    if not prog.exists():
        pytest.skip("examples/sprite.json not present")
    trace = tmp_path / "run.jsonl"
    assert main(["run", str(prog), "--backend", "soft", "--clock", "virtual", "--frames", "6",
                 "--trace", str(trace)]) == 0
    from_trace = frames_from_source(str(trace), 6)
    from_prog = frames_from_source(str(prog), 6)
    assert [(f.cycle, f.regs, f.bindings) for f in from_trace] == \
        [(f.cycle, f.regs, f.bindings) for f in from_prog]
    assert draw_frame(from_trace[5]).tobytes() == draw_frame(from_prog[5]).tobytes()
