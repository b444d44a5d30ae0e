"""Draw what a Copper program does to the display: one picture per frame.

A *frame* is the register state at a vsync edge. Edges fall on cycles ``k * P``
(``k = 1, 2, ...``, ``P = round(clock_hz / vsync_hz)``, see ``isa.EXECUTION_RULES``);
frame ``k`` shows every register write with ``cycle < k * P``. A write issued after a
``WAIT vsync`` lands ``VSYNC_LATENCY`` cycles after the edge, so it shows in the next
frame, as it would on a display that latches its registers at vsync.

The state comes either from a trace (its ``reg`` and ``bind`` events replayed) or from a
program run on the soft VM (:class:`copperline.sim.vm.Machine`) in virtual time. Each
layer is drawn as a rectangle at (x, y) with its number, stacked by ``z`` (then by layer
number), filled with ``alpha / 255`` opacity, and left out while ``visible`` is 0.

Registers carry no size, so every layer is drawn with the same ``layer_size``. Registers
reset to 0, which would leave every layer of a program that only positions them
invisible (alpha 0, visible 0); so, unless ``reset_values`` is asked for, a layer's
``alpha`` and ``visible`` that no event ever wrote are drawn as 255 and 1. Only layers
that some event touched (a register write or a bind) are drawn.

**Exact frames** (``copper render --exact``, :func:`render_exact`) are another thing: the
pictures of the board's display model (:mod:`copperline.firmware.display`, which holds every
pixel rule), frame k = ``scale_up(render_frame(display, k, history.value))`` from the
register writes of a program run on the VM at the display's clock and frame rate, or of a
trace recorded at them; :mod:`copperline.firmware.frames` writes and reads the PNGs. The
display of a board is ``Board.display()`` (``--board``, default icebreaker).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import dataclass, field

from copperline.firmware import isa
from copperline.firmware.board_interface import DEFAULT_CLOCK_HZ
from copperline.firmware.trace import time_us

log = logging.getLogger(__name__)

FIELDS = tuple(f.name for f in isa.REGISTER_FIELDS)
#: Layer colours (matplotlib's tab10), by layer number modulo its length.
PALETTE = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
           (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207))
BACKGROUND = (24, 26, 32)
GRID = (44, 48, 58)
TEXT = (230, 230, 230)


class RenderError(Exception):
    """The source cannot be rendered (not a trace nor a program, no VM, bad output...)."""


class CannotWrite(RenderError):
    """An output file or directory cannot be written (the message names it)."""


@dataclass
class Frame:
    """The display state at one vsync edge."""
    index: int                 # 1-based frame number
    cycle: int                 # the vsync edge
    time_us: float
    regs: dict[int, dict[str, int]] = field(default_factory=dict)   # layer -> field -> value
    written: dict[int, set[str]] = field(default_factory=dict)       # fields some event wrote
    bindings: dict[int, str] = field(default_factory=dict)

    def layers(self, *, reset_values: bool = False) -> list[tuple[int, dict[str, int]]]:
        """Layers to draw as (layer, registers), bottom first; hidden ones left out."""
        out = []
        for layer in sorted(set(self.regs) | set(self.bindings)):
            r = {name: 0 for name in FIELDS}
            r.update(self.regs.get(layer, {}))
            if not reset_values:
                w = self.written.get(layer, set())
                if "alpha" not in w:
                    r["alpha"] = 255
                if "visible" not in w:
                    r["visible"] = 1
            if r["visible"]:
                out.append((layer, r))
        out.sort(key=lambda lr: (lr[1]["z"], lr[0]))
        return out


def frames_from_events(events, clock_hz: int, vsync_hz: float, n: int) -> list[Frame]:
    """Replay ``reg`` and ``bind`` events (program-relative cycles of a program started
    at global cycle 0, as in ``copper run``) into ``n`` frames."""
    period = isa.vsync_period_cycles(clock_hz, vsync_hz)
    timed = sorted((e for e in events if e.get("event") in ("reg", "bind")),
                   key=lambda e: _cycle(e, clock_hz))
    frames = []
    regs: dict[int, dict[str, int]] = {}
    written: dict[int, set[str]] = {}
    bindings: dict[int, str] = {}
    i = 0
    for k in range(1, n + 1):
        edge = k * period
        while i < len(timed) and _cycle(timed[i], clock_hz) < edge:
            e = timed[i]
            i += 1
            if e["event"] == "reg":
                layer, fname = _split_reg(e["reg"])
                regs.setdefault(layer, {})[fname] = e["value"]
                written.setdefault(layer, set()).add(fname)
            else:
                bindings[e["layer"]] = str(e.get("surface", ""))
        frames.append(Frame(k, edge, time_us(edge, clock_hz),
                            {l: dict(r) for l, r in regs.items()},
                            {l: set(w) for l, w in written.items()}, dict(bindings)))
    return frames


def _cycle(e: dict, clock_hz: int) -> int:
    if "cycle" in e:
        return e["cycle"]
    return round(e["time_us"] * clock_hz / 1_000_000)


def _split_reg(name: str) -> tuple[int, str]:
    idx = isa.parse_register(name, layers=1 << isa.LAYER_BITS)
    return idx // isa.REG_STRIDE, isa.register_field(idx).name


def frames_from_trace(path: str, n: int) -> list[Frame]:
    """Frames from a trace file (clock and vsync rate from its header)."""
    from copperline.firmware.trace import load_trace
    t = load_trace(path)
    progs = {e["prog"] for e in t.events if e["event"] in ("reg", "bind")}
    if len(progs) > 1:
        log.warning("%s: events of %d programs; their cycles are taken as one time base",
                    path, len(progs))
    frames = frames_from_events(t.events, t.clock_hz, t.vsync_hz, n)
    last = max((_cycle(e, t.clock_hz) for e in t.events if "time_us" in e), default=0)
    ended = any(e["event"] == "state" and e["state"] in ("done", "stopped", "faulted")
                for e in t.events)
    if frames and frames[-1].cycle > last and not ended:
        log.warning("%s: the trace ends at cycle %d; frames after it repeat its last state",
                    path, last)
    return frames


def frames_from_program(path: str, n: int, *, clock_hz: int | None = None,
                        vsync_hz: float | None = None) -> list[Frame]:
    """Frames from running a program (.json or .cop) on the soft VM in virtual time."""
    try:
        from copperline.sim.engine import MachineParams
        from copperline.sim.vm import Machine
    except ImportError as exc:
        raise RenderError(f"{path}: rendering a program needs the soft VM "
                          f"(copperline.sim.vm): {exc}") from None
    from copperline.firmware.compiler import load_any
    clock_hz = clock_hz or DEFAULT_CLOCK_HZ
    vsync_hz = vsync_hz or isa.DEFAULT_VSYNC_HZ
    image = load_any(path)
    m = Machine(MachineParams(clock_hz, vsync_hz))
    m.start(m.load(image))
    # Frame n needs every write before its edge n * P: run up to (not including) it.
    events = m.run_until(n * m.vsync_period)
    return frames_from_events(events, clock_hz, vsync_hz, n)


def is_trace(path: str) -> bool:
    """True when the file's first non-blank line is a trace header."""
    try:
        with open(path, "rb") as f:
            for raw in f:
                if raw.strip():
                    obj = json.loads(raw)
                    return isinstance(obj, dict) and "trace" in obj
    except (OSError, ValueError):
        return False
    return False


def frames_from_source(path: str, n: int, *, clock_hz: int | None = None,
                       vsync_hz: float | None = None) -> list[Frame]:
    """Frames from a trace (recognised by its header line) or a program (.json/.cop)."""
    if not os.path.exists(path):
        raise RenderError(f"{path}: no such file")
    if n < 1:
        raise ValueError(f"frames must be >= 1 (got {n})")
    if is_trace(path):
        if clock_hz or vsync_hz:
            raise ValueError("--clock-hz/--vsync-hz apply to programs; a trace's come from "
                             "its header")
        return frames_from_trace(path, n)
    if not path.lower().endswith((".json", ".cop")):
        raise RenderError(f"{path}: neither a trace (first line is no trace header) nor a "
                          "program (.json or .cop)")
    return frames_from_program(path, n, clock_hz=clock_hz, vsync_hz=vsync_hz)


# ---------------------------------------------------------------------------------
# Drawing
# ---------------------------------------------------------------------------------

def draw_frame(frame: Frame, size: tuple[int, int] = (640, 480),
               layer_size: tuple[int, int] = (48, 48), *, reset_values: bool = False):
    """The frame as a Pillow RGB image: display coordinates, origin top left, y down."""
    from PIL import Image, ImageDraw, ImageFont

    w, h = size
    lw, lh = layer_size
    try:
        font = ImageFont.load_default(size=13)   # needs FreeType
    except (ImportError, TypeError, OSError):
        font = ImageFont.load_default()
    img = Image.new("RGBA", size, BACKGROUND + (255,))
    d = ImageDraw.Draw(img)
    for gx in range(0, w, 64):
        d.line([(gx, 0), (gx, h)], fill=GRID + (255,))
    for gy in range(0, h, 64):
        d.line([(0, gy), (w, gy)], fill=GRID + (255,))
    for layer, r in frame.layers(reset_values=reset_values):
        a = r["alpha"]
        colour = PALETTE[layer % len(PALETTE)]
        # Each layer is composited on its own so that alpha blends with what is below.
        over = Image.new("RGBA", size, (0, 0, 0, 0))
        od = ImageDraw.Draw(over)
        x0, y0 = r["x"], r["y"]
        od.rectangle([x0, y0, x0 + lw - 1, y0 + lh - 1], fill=colour + (a,),
                     outline=(255, 255, 255, a), width=1)
        od.text((x0 + 4, y0 + 3), str(layer), fill=(255, 255, 255, a), font=font)
        img = Image.alpha_composite(img, over)
    d = ImageDraw.Draw(img)
    d.text((6, 4), f"frame {frame.index}  t={frame.time_us / 1000:.3f} ms  cycle {frame.cycle}",
           fill=TEXT + (255,), font=font)
    return img.convert("RGB")


def write_frames(frames: list[Frame], out: str, *, size=(640, 480), layer_size=(48, 48),
                 reset_values: bool = False) -> str:
    """Write an animated GIF (``out`` ends in .gif), one PNG (``.png``, one frame), or a
    directory of ``frame_0001.png`` ...; returns what was written."""
    images = [draw_frame(f, size, layer_size, reset_values=reset_values) for f in frames]
    low = out.lower()
    if low.endswith(".gif"):
        # One vsync period per frame. GIF delays are in 10 ms steps (and viewers slow
        # down anything under 20 ms): 60 Hz plays at 50 fps, close enough to look right.
        period_ms = (frames[0].time_us / frames[0].index) / 1000
        images[0].save(out, save_all=True, append_images=images[1:], loop=0,
                       duration=max(20, round(period_ms)), optimize=False)
        return out
    if low.endswith(".png"):
        if len(images) != 1:
            raise RenderError(f"{out}: a .png holds one frame; give a directory for "
                              f"{len(images)} frames (or --frames 1)")
        images[0].save(out)
        return out
    if os.path.exists(out) and not os.path.isdir(out):
        raise RenderError(f"{out}: exists and is not a directory (output is a .gif, a .png "
                          "or a directory)")
    os.makedirs(out, exist_ok=True)
    for f, img in zip(frames, images):
        img.save(os.path.join(out, f"frame_{f.index:04d}.png"))
    return out


# ---------------------------------------------------------------------------------
# Exact frames: the display model's pictures (copper render --exact)
# ---------------------------------------------------------------------------------

#: The board ``copper render --exact`` shows when none is named.
DEFAULT_BOARD = "icebreaker"
#: About how long one exact frame takes (render_frame + PNG), for the progress estimate:
#: a render that takes longer than a couple of seconds says so.
EXACT_S_PER_FRAME = 0.03


def display_for_board(name: str | None = None) -> "Display":
    """The display of the board called ``name`` (default :data:`DEFAULT_BOARD`)."""
    from copperline.boards.common import BoardError
    from copperline.boards.registry import get_board
    try:
        board = get_board(name or DEFAULT_BOARD)
    except BoardError as exc:
        raise RenderError(f"--board: {exc}") from None
    display = board.display()
    if display is None:
        raise RenderError(f"--board {board.name}: {board.title} has no display output")
    return display


@dataclass
class Writes:
    """Register writes ``(global issue cycle, register index, value)`` and where from."""
    source: str
    kind: str                      # "program" or "trace"
    writes: list[tuple[int, int, int]]
    #: Cycles covered: writes issued in cycles < ``until`` are all there (None: the
    #: trace's programs ended, nothing comes after).
    until: int | None = None
    #: The surfaces bound, in order of first bind: a ``surface`` register write of ``k``
    #: is ``surfaces[k - 1]`` (the model's numbers; a board uses its descriptors').
    surfaces: list[str] = field(default_factory=list)


def _with_binds(writes: list, binds) -> list[str]:
    """Add the ``surface`` register writes of ``binds`` (global cycle, layer, surface
    name) to ``writes``; returns the names by number."""
    names: list[str] = []
    for cycle, layer, name in binds:
        if name not in names:
            if len(names) == isa.SURFACE_FIELD.max:
                raise RenderError(f"more than {isa.SURFACE_FIELD.max} different surfaces")
            names.append(name)
        writes.append((cycle, isa.register_index(layer, "surface"), names.index(name) + 1))
    return names


def writes_from_program(path: str, display, n: int) -> Writes:
    """Run a program (.json or .cop) on the soft VM in virtual time at the display's core
    clock and frame rate for ``n`` frames (cycles ``0 .. n * frame_cycles - 1``) and
    collect its register writes."""
    try:
        from copperline.sim.engine import EngineError, MachineParams
        from copperline.sim.vm import Machine
    except ImportError as exc:
        raise RenderError(f"{path}: rendering a program needs the soft VM "
                          f"(copperline.sim.vm): {exc}") from None
    from copperline.firmware.compiler import load_any
    image = load_any(path)
    params = MachineParams(display.clock_hz, display.vsync_hz, layers=display.layers)
    if params.vsync_period != display.frame_cycles:
        raise RenderError(f"the VM's vsync period {params.vsync_period} is not the "
                          f"display's frame of {display.frame_cycles} cycles")
    m = Machine(params)
    try:
        m.start(m.load(image))
        events = m.run_until(n * display.frame_cycles)
    except EngineError as exc:
        raise RenderError(f"{path}: {exc}") from None
    start = m.slot_start(0)
    writes = [(start + e["cycle"], isa.parse_register(e["reg"], layers=display.layers),
               e["value"]) for e in events if e["event"] == "reg"]
    names = _with_binds(writes, [(start + e["cycle"], e["layer"], e["surface"])
                                 for e in events if e["event"] == "bind"])
    return Writes(path, "program", writes, n * display.frame_cycles, names)


def writes_from_trace(path: str, display, board: str = DEFAULT_BOARD) -> Writes:
    """The ``reg`` events of a trace as global writes. The trace must have been recorded
    at the display's core clock and frame period and be complete (no ``dropped``
    event). Program cycles count from each program's start: global cycle 0 (``copper
    run``), or the start action the header records."""
    from copperline.firmware.trace import load_trace
    t = load_trace(path)
    period = isa.vsync_period_cycles(t.clock_hz, t.vsync_hz)
    if t.clock_hz != display.clock_hz or period != display.frame_cycles:
        raise RenderError(
            f"{path}: recorded at clock_hz {t.clock_hz} with a vsync period of {period} "
            f"cycles (vsync_hz {t.vsync_hz:g}), but the {board} display shows a frame "
            f"every {display.frame_cycles} cycles of a {display.clock_hz} Hz core; give "
            f"the board the trace was recorded for (--board NAME), or record the trace "
            f"for this one: copper run PROG --board {board} --trace OUT.jsonl")
    dropped = [e for e in t.events if e["event"] == "dropped"]
    if dropped:
        raise RenderError(f"{path}: {sum(e['count'] for e in dropped)} event(s) were "
                          "dropped while recording ('dropped' events): register writes are "
                          "missing, so its frames cannot be exact; record it again")
    start_at = _start_cycles(t)
    writes, binds = [], []
    for e in t.events:
        if e["event"] not in ("reg", "bind"):
            continue
        cycle = _cycle(e, t.clock_hz) + start_at.get(e["prog"], 0)
        if e["event"] == "bind":
            binds.append((cycle, e["layer"], str(e["surface"])))
        else:
            writes.append((cycle, isa.parse_register(e["reg"], layers=1 << isa.LAYER_BITS),
                           e["value"]))
    names = _with_binds(writes, binds)
    ended = {e["prog"] for e in t.events
             if e["event"] == "state" and e["state"] in ("done", "stopped", "faulted")}
    progs = {e["prog"] for e in t.events if "prog" in e}
    until = None
    if not progs or not progs <= ended:
        until = t.header.get("until_cycle")
        if until is None:
            until = 1 + max((_cycle(e, t.clock_hz) + start_at.get(e.get("prog"), 0)
                             for e in t.events if "time_us" in e or "cycle" in e), default=0)
    return Writes(path, "trace", writes, until, names)


def _start_cycles(t) -> dict[int, int]:
    """Each program's start (global cycle) from the trace header's recorded actions (a
    one-program trace without them: started at 0)."""
    out = {}
    for a in t.header.get("actions") or ():
        if a.get("kind") == "start" and a.get("prog") is not None:
            cycle = a.get("landed", a.get("cycle"))
            if cycle is None:
                raise RenderError(f"{t.path}: the cycle program {a['prog']} started in is "
                                  "not known (a real-time run), so its frames cannot be exact")
            out[a["prog"]] = cycle
    return out


def _read_surfaces(w: Writes, source: str, surface_dir: str | None):
    """``surface(number)`` for render_frame: the bound surfaces, read from their files."""
    from copperline.host.surfaces import SurfaceError, SurfaceSource
    if surface_dir is None and w.kind == "program":
        surface_dir = os.path.dirname(os.path.abspath(source))
    files = SurfaceSource(base_dir=surface_dir)
    try:
        loaded = [files.get(name).surface for name in w.surfaces]
    except SurfaceError as exc:
        hint = ("" if w.kind == "program" else
                "; give --surfaces DIR, the directory the program's surface paths start from")
        raise RenderError(f"{source}: {exc}{hint}") from None
    return lambda number: loaded[number - 1] if 0 < number <= len(loaded) else None


@dataclass
class ExactRender:
    """What :func:`render_exact` wrote."""
    display: "Display"
    board: str
    source: Writes
    frames: int
    paths: list[str]
    elapsed_s: float

    @property
    def frames_per_s(self) -> float:
        return self.frames / self.elapsed_s if self.elapsed_s > 0 else float("inf")


def render_exact(source: str, n: int, out: str, *, board: str | None = None,
                 surface_dir: str | None = None) -> ExactRender:
    """Write ``OUT/frame-00000.png`` ... for frames ``0 .. n-1`` of ``source`` (a program
    run on the VM, or a trace) as the display of ``board`` shows them: frame k is
    ``scale_up(render_frame(display, k, history.value, surface))`` in RGB888. Surfaces
    with relative paths are read from ``surface_dir`` (default: a program's directory,
    or the working directory for a trace)."""
    import time

    from copperline import progress
    from copperline.firmware.display import RegisterHistory, render_frame
    from copperline.firmware import frames as ff

    if not isinstance(n, int) or n < 1:
        raise ValueError(f"--frames must be >= 1 (got {n})")
    if not os.path.exists(source):
        raise RenderError(f"{source}: no such file")
    if out.lower().endswith((".gif", ".png")):
        raise RenderError(f"{out}: --exact writes a directory of frame-NNNNN.png files; "
                          "give a directory")
    if os.path.exists(out) and not os.path.isdir(out):
        raise RenderError(f"{out}: exists and is not a directory (--exact writes a "
                          "directory of PNGs)")
    name = board or DEFAULT_BOARD
    display = display_for_board(name)
    t0 = time.monotonic()
    if is_trace(source):
        w = writes_from_trace(source, display, name)
        if w.until is not None and w.until < n * display.frame_cycles:
            log.warning("%s: the trace ends at cycle %d (frame %d) and its programs were "
                        "still running; later frames show its last register values",
                        source, w.until, w.until // display.frame_cycles)
    elif source.lower().endswith((".json", ".cop")):
        w = writes_from_program(source, display, n)
    else:
        raise RenderError(f"{source}: neither a trace (first line is no trace header) nor "
                          "a program (.json or .cop)")
    history = RegisterHistory(w.writes)
    surfaces = _read_surfaces(w, source, surface_dir)
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as exc:
        raise CannotWrite(f"{out}: cannot write: {exc.strerror or exc}") from None
    paths = []
    estimate = n * EXACT_S_PER_FRAME
    step = (progress.step(f"rendering {n} exact frames", f"~{progress.fmt_s(estimate)}")
            if estimate > 2 else contextlib.nullcontext())
    with step:
        for k in range(n):
            path = ff.frame_path(out, k)
            canvas = render_frame(display, k, history.value, surfaces)
            try:
                ff.write_frame(path, canvas)
            except OSError as exc:
                raise CannotWrite(f"{path}: cannot write: {exc.strerror or exc}") from None
            paths.append(path)
    return ExactRender(display, name, w, n, paths, time.monotonic() - t0)

