"""The display, pixel for pixel: the virtual board's video output against the model.

The virtual iCEBreaker (Verilator, the board's RTL with the compositor and its display
mode) runs programs through ``copper run --backend fpga`` while ``VirtualBoardServer(
video_dir=...)`` captures its frames (``copper board sim --video DIR``); each captured
frame must equal ``copper render --exact``'s, from the program (soft VM) and from the
board's own trace, pixel for pixel. Programs: every example, and generated ones that
write the layer registers at random times (mid-frame writes split frames at canvas-line
resolution), with overlaps, z ties, clipping and alpha.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from copperline.boards.discover import board_present
from copperline.firmware import isa
from copperline.firmware.display import BACKGROUND, LAYER_SIZE, to_rgb888
from copperline.firmware.frames import compare_frames, frame_path, load_frame
from copperline.host.cli import main

EXAMPLES = sorted((Path(__file__).parents[1] / "examples").glob("*.json"))
#: Frames compared per program (each is 800k fabric clocks of simulation).
FRAMES = 3


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    from copperline.boards.registry import get_board
    from copperline.boards.virtual import VirtualBoardServer
    from copperline.firmware.board_interface import DEFAULT_BAUD
    icebreaker = get_board("icebreaker")
    video = tmp_path_factory.mktemp("video")
    server = VirtualBoardServer("127.0.0.1", 0, clock_hz=icebreaker.clock_hz,
                                baud=DEFAULT_BAUD, core=icebreaker.core_config(),
                                engine="verilator", display=icebreaker.display(),
                                video_dir=str(video), video_frames=FRAMES).start()
    yield server
    server.close()


def random_surfaces(rng: random.Random, directory: Path, count: int) -> list[str]:
    """``count`` surface files of random sizes (1..16 x 1..40) and pixels (a third of them
    transparent), as PNGs and as raw RGBA; their names, relative to ``directory``."""
    from PIL import Image
    names = []
    for i in range(count):
        w, h = rng.randint(1, 16), rng.randint(1, 40)
        data = bytes(b for _ in range(w * h) for b in
                     ((rng.randrange(256), rng.randrange(256), rng.randrange(256), 255)
                      if rng.random() > 0.33 else (rng.randrange(256),) * 3 + (rng.randrange(128),)))
        if i % 2:
            names.append(f"s{i}.rgba@{w}x{h}")
            (directory / f"s{i}.rgba").write_bytes(data)
        else:
            names.append(f"s{i}.png")
            Image.frombytes("RGBA", (w, h), data).save(directory / names[-1])
    return names


def generated(seed: int, directory: Path | None = None) -> dict:
    """A program that shows a few layers and then changes their registers at random
    times: WAITs of 5 us .. 4 ms between MOVEs and ADDs (so writes land anywhere in a
    frame, between and inside the compositor's register samples). With a ``directory``,
    two layers show random surfaces written there, and binds change mid-frame."""
    rng = random.Random(seed)
    layers = rng.sample(range(isa.DEFAULT_LAYERS), 5)
    surfaces = random_surfaces(rng, directory, 3) if directory is not None else []
    ops = [{"op": "BIND_LAYER", "id": n, "surface": s} for n, s in zip(layers, surfaces[:2])]
    for n in layers:
        for field, value in (("visible", 1), ("alpha", rng.choice((255, 255, 128, 40))),
                             ("x", rng.randrange(-12, 320)), ("y", rng.randrange(-12, 240)),
                             ("z", rng.choice((0, 0, 1, -3)))):
            ops.append({"op": "MOVE", "reg": f"layer[{n}].{field}", "value": value})
    ops.append({"label": "loop"})
    for _ in range(12):
        ops.append({"op": "WAIT", "us": rng.choice((5, 37, 250, 1200, 4000))})
        n, field = rng.choice(layers), rng.choice(("x", "y", "x", "y", "alpha", "z",
                                                   "visible", "bind"))
        if field == "bind":
            if surfaces:
                ops.append({"op": "BIND_LAYER", "id": n, "surface": rng.choice(surfaces)})
        elif field in ("x", "y"):
            ops.append({"op": "ADD", "reg": f"layer[{n}].{field}",
                        "delta": rng.randrange(-40, 41)})
        else:
            value = {"alpha": rng.randrange(256), "z": rng.randrange(-2, 3),
                     "visible": rng.randrange(2)}[field]
            ops.append({"op": "MOVE", "reg": f"layer[{n}].{field}", "value": value})
    ops.append({"op": "JUMP", "label": "loop"})
    return {"version": 1, "program": ops}


def _run_and_compare(board, program: Path, tmp_path: Path) -> None:
    writer = board.frames
    run = writer.runs + 1
    trace = tmp_path / "board.jsonl"
    # (one frame more: the last compared frame is whole before the run ends)
    assert main(["run", str(program), "--backend", "fpga", "--port", board.url,
                 "--frames", str(FRAMES + 1), "--trace", str(trace)]) == 0
    assert writer.wait_for(FRAMES - 1, timeout=120, run=run), \
        f"{program.name}: the board showed {writer.last + 1} of {FRAMES} frames"
    for source, out in ((program, tmp_path / "from-program"), (trace, tmp_path / "from-trace")):
        assert main(["render", "--exact", str(source), "--frames", str(FRAMES),
                     "-o", str(out), "--surfaces", str(program.parent)]) == 0
        for k in range(FRAMES):
            diff = compare_frames(frame_path(writer.directory, k), frame_path(out, k))
            assert diff is None, f"{program.name}, frame {k} vs {source.name}: {diff}"


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_examples_on_the_board_show_the_rendered_frames(board, example, tmp_path, capsys):
    _run_and_compare(board, example, tmp_path)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_generated_programs_show_the_rendered_frames(board, seed, tmp_path, capsys):
    program = tmp_path / f"generated-{seed}.json"
    program.write_text(json.dumps(generated(seed, tmp_path)))
    _run_and_compare(board, program, tmp_path)
    # (the frames show layers, not only the background)
    background = to_rgb888(BACKGROUND)
    for k in range(FRAMES):
        rows = load_frame(frame_path(board.frames.directory, k))
        assert sum(p != background for row in rows for p in row) > 4 * LAYER_SIZE ** 2


def test_the_capture_would_see_a_wrong_pixel(board, tmp_path, capsys):
    """The comparison is not vacuous: a render of another program differs from the
    board's frames of this one."""
    program = tmp_path / "one.json"
    program.write_text(json.dumps(generated(4)))
    _run_and_compare(board, program, tmp_path)
    other = tmp_path / "other.json"
    other.write_text(json.dumps(generated(5)))
    assert main(["render", "--exact", str(other), "--frames", "1", "-o",
                 str(tmp_path / "other")]) == 0
    assert compare_frames(frame_path(board.frames.directory, 0),
                          frame_path(tmp_path / "other", 0)) is not None


VSYNC_TICKS = {"version": 1, "program": [
    {"label": "l"}, {"op": "WAIT", "vsync": True}, {"op": "IRQ", "tag": "frame"},
    {"op": "JUMP", "label": "l"}]}


def _frame_irqs(url: str | None, frames: int):
    """(the vsync period, the cycles of the ``frame`` IRQs) of VSYNC_TICKS run for ``frames``
    frames on the board at ``url`` (None: the one discovered)."""
    from copperline.firmware.compiler import compile_program
    from copperline.host.fpga import FpgaBackend
    from copperline.host.run import run_realtime
    be = FpgaBackend(port=url)
    be.open()
    period = isa.vsync_period_cycles(be.clock_hz, be.vsync_hz)
    be.close()
    result = run_realtime(FpgaBackend(port=url), compile_program(VSYNC_TICKS),
                          until_cycle=frames * period, max_cycle=2 * frames * period)
    return period, [e["cycle"] for e in result.events if e.get("event") == "irq"]


def test_the_coppers_vsync_is_the_displays_frame(board):
    """WAIT vsync wakes once per displayed frame: the IRQs fall a whole frame of the
    display apart (its frame_cycles, which the board reports in INFO), and the board
    showed as many frames as there were vsyncs."""
    from copperline.boards.registry import get_board
    display = get_board("icebreaker").display()
    run = board.frames.runs + 1
    period, cycles = _frame_irqs(board.url, FRAMES)
    assert period == display.frame_cycles
    # (vsync edge k ends frame k - 1; the run ends before edge FRAMES)
    assert cycles == [k * period + isa.VSYNC_LATENCY for k in range(1, FRAMES)]
    assert board.frames.wait_for(FRAMES - 1, timeout=120, run=run)


@pytest.mark.hil
@pytest.mark.skipif(not board_present(), reason="no copperline board attached")
def test_hil_the_boards_frames_are_the_hosts_vsync_count():
    """On a flashed board with a monitor: in 5 s of board time the Copper sees one vsync
    per frame of the display (the frame the board reports, a whole number of core
    cycles), none missed or doubled."""
    from copperline.boards.registry import board_names, get_board
    period, cycles = _frame_irqs(None, 300)
    frames = {get_board(n).display().frame_cycles for n in board_names()
              if get_board(n).display() is not None}
    assert period in frames
    assert len(cycles) >= 298
    assert all(b - a == period for a, b in zip(cycles, cycles[1:]))


@pytest.mark.parametrize("argv, says", [
    (["--video", "V", "--no-core"], "has no display output without its core"),
    (["--video", "V", "--engine", "amaranth"], "--video needs a native engine"),
    (["--video", "V", "--from-bitstream"], "is not implemented"),
    (["--video-frames", "3"], "--video-frames needs --video DIR"),
    (["--video", "V", "--video-frames", "0"], "--video-frames must be >= 1"),
])
def test_board_sim_video_options_are_checked(argv, says, tmp_path, capsys):
    rc = main(["board", "sim", "--board", "icebreaker", "--listen", "tcp:127.0.0.1:0",
               *[str(tmp_path / a) if a == "V" else a for a in argv], "--json"])
    obj = json.loads(capsys.readouterr().out)
    assert rc == 2 and obj["ok"] is False and says in obj["error"]["message"]
    assert not (tmp_path / "V").exists()          # nothing written, nothing built


def test_a_top_with_a_display_refuses_what_would_break_its_frames():
    from copperline.boards.registry import get_board
    from copperline.hdl.top import LinkTop
    board = get_board("icebreaker")
    core, display = board.core_config(), board.display()
    with pytest.raises(ValueError, match="no warp"):          # a warp skips frames' cycles
        LinkTop(clock_hz=board.clock_hz, core=core.simulation(warp_us=64), display=display,
                gated_link=True)
    with pytest.raises(ValueError, match="needs the core"):
        LinkTop(clock_hz=board.clock_hz, display=display)
    core.vsync_hz = 60.0                                       # not the display's frame
    with pytest.raises(ValueError, match="not the display's frame"):
        LinkTop(clock_hz=board.clock_hz, core=core, display=display)


def test_surfaces_that_do_not_fit_are_refused_whole(board, tmp_path):
    """The board's surface memory (2046 lines on the iCEBreaker) and its 15 descriptors
    are bounded: a program whose surfaces do not fit is refused naming the surface and
    what is free, and leaves nothing placed; unloading frees what a program used."""
    from PIL import Image as Pil
    from copperline.firmware.compiler import compile_program
    from copperline.host.backend import BackendError
    from copperline.host.fpga import FpgaBackend
    from copperline.host.surfaces import SurfaceSource
    for i in range(16):
        Pil.new("RGBA", (16, 255), (17 * i, 0, 0, 255)).save(tmp_path / f"tall{i}.png")

    def binds(names):
        return compile_program({"version": 1, "program": [
            {"op": "BIND_LAYER", "id": i % 16, "surface": n} for i, n in enumerate(names)]})
    source = SurfaceSource(base_dir=str(tmp_path))
    backend = FpgaBackend(port=board.url)
    backend.open()
    try:
        with pytest.raises(BackendError, match=r"surface 'tall8.png' does not fit the board's "
                           r"surface memory \(2046 lines of 16 pixels\): needs 255 lines of "
                           r"surface memory; 6 of 2046 are free") as exc:
            backend.load(binds([f"tall{i}.png" for i in range(9)]), source)
        assert exc.value.code == "BUSY"
        first = backend.load(binds([f"tall{i}.png" for i in range(8)]), source)   # all fit
        with pytest.raises(BackendError, match="needs 255 lines"):
            backend.load(binds(["tall8.png"]), source)
        backend.unload(first)
        again = backend.load(binds(["tall8.png", "tall0.png"]), source)
        backend.unload(again)
        small = [f"s{i}.rgba@1x1" for i in range(16)]
        for i in range(16):
            (tmp_path / f"s{i}.rgba").write_bytes(bytes((17 * i, 0, 0, 255)))
        with pytest.raises(BackendError, match="all 15 surface descriptors are in use"):
            backend.load(binds(small), source)
        with pytest.raises(BackendError, match=r"surface 'missing.png': cannot open"):
            backend.load(binds(["missing.png"]), source)
        # as copperd loads: only the surfaces a client passed, no path opened
        passed = SurfaceSource({"tall1.png": source.get("tall1.png")}, paths=False)
        backend.unload(backend.load(binds(["tall1.png"]), passed))
        with pytest.raises(BackendError, match="surface 'tall2.png' was not passed"):
            backend.load(binds(["tall1.png", "tall2.png"]), passed)
    finally:
        backend.close()
