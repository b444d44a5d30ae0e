"""The display model: what the board's layer compositor shows, defined once.

Everything that decides a pixel lives here; the gateware compositor
(:mod:`copperline.hdl.compositor`) builds its timing and arithmetic from these
definitions, and ``copper render --exact`` computes frames with :func:`render_frame`, so a
frame captured from the simulated board equals the rendered one pixel for pixel.

**Output.** A :class:`VideoMode` (640x480 at about 60 Hz on both boards; see
:data:`MODES`) shows a **320x240 canvas**, each canvas pixel as 2x2 output pixels
(``SCALE``): the canvas's pair of line buffers fits the iCE40UP5K's free block RAM.
Smaller modes exist for tests (a whole frame of 640x480 is 800k fabric clocks).

**Frames and the Copper's vsync.** A frame lasts ``frame_cycles`` core cycles, so the
board's vsync rate is ``clock_hz / frame_cycles`` and the Copper's vsync edges (global
cycles ``k * P``, ``isa.EXECUTION_RULES`` rule 1) are the frames' starts: frame ``k``
(``k >= 0``; frame 0 begins at the time-base reset, when ``copper run`` starts its program)
runs from cycle ``k * P``. Each frame begins with its vertical blanking (front porch, sync,
back porch), then its ``v_active`` visible lines; each output line begins with its
``h_active`` visible pixels, then the horizontal front porch, sync and back porch. So a
program that does ``WAIT vsync`` changes registers in the blanking, before the frame's
first visible line.

**When a register write takes effect: per canvas line.** Canvas line ``l`` is composed
while the two output lines before its own are shown; its first core cycle is
``line_fetch_cycle(l)``, and the compositor samples ``layer[n].<field>`` at cycle
``line_fetch_cycle(l) + sample_offset(n, field)``: the value after every write issued in an
earlier core cycle (a write in the sampling cycle itself is not seen). A write thus shows
from the next canvas line whose sample of that register follows it: the classic raster
effects (a register changed mid-frame splits the picture) work at canvas-line resolution.

**A layer** (``layer[n]``, ``n`` in ``0..layers-1``) is shown while ``visible`` is 1, with
its top-left pixel at (``x``, ``y``) (the registers are signed, so a layer may hang over
any edge). Without a surface (its ``surface`` register, which BIND_LAYER sets, is 0) it
is a ``LAYER_SIZE`` x ``LAYER_SIZE`` canvas-pixel rectangle in the colour
``PALETTE[n % 16]``. With one it shows the :class:`Surface`: ``SURFACE_WIDTH`` pixels
across and the surface's ``height`` lines down, its transparent pixels not drawn. Pixels
off the canvas are clipped. Layers are drawn bottom first in ascending ``(z, n)`` (ties by
layer number), each pixel blended over what is below with :func:`blend` at the layer's
``alpha``; the canvas starts as ``BACKGROUND`` each line.

**Surfaces** are ``SURFACE_WIDTH`` (16) pixels wide, like the Amiga's hardware sprites:
the compositor's worst case (every layer on one line) must fit a canvas line's time, and
16 pixels a layer is what its blender does in that time. A surface pixel is an RGB444
colour or transparent (1-bit opacity; a layer's ``alpha`` fades the whole layer). How
the board holds them is :mod:`copperline.firmware.surface_memory`.

**Pixels** are RGB444 (:class:`Pixel`: 4 bits per channel, what the iCEBreaker's 12-bit
DVI Pmod takes); an 8-bit image shows channel ``c`` as ``c * 17``.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

from copperline.firmware import isa

__all__ = [
    "VideoMode", "MODES", "SCALE", "LAYER_SIZE", "PALETTE", "BACKGROUND", "FIELD_ORDER",
    "Display", "sample_offset", "blend", "alpha_weight", "to_rgb888", "render_frame",
    "scale_up", "RegisterHistory", "Surface", "SURFACE_WIDTH", "SURFACE_MAX_HEIGHT",
]

#: Output pixels per canvas pixel, across and down: the boards' 640x480 modes show a
#: 320x240 canvas.
SCALE = 2
#: Width and height of a layer without a surface, in canvas pixels.
LAYER_SIZE = 16
#: Width of every surface in canvas pixels (a narrower image is padded with transparent
#: pixels on its right).
SURFACE_WIDTH = LAYER_SIZE
#: Most lines a surface may have (its descriptor holds the height in 8 bits).
SURFACE_MAX_HEIGHT = 255

#: RGB444 colour of layer n (n % 16): the order of matplotlib's tab10, then six more.
PALETTE: tuple[tuple[int, int, int], ...] = (
    (0x2, 0x7, 0xB), (0xF, 0x8, 0x1), (0x3, 0xA, 0x3), (0xD, 0x2, 0x3),
    (0x9, 0x6, 0xC), (0x8, 0x5, 0x4), (0xE, 0x7, 0xC), (0x8, 0x8, 0x8),
    (0xB, 0xB, 0x2), (0x1, 0xB, 0xD), (0xF, 0xF, 0xF), (0xF, 0xD, 0x0),
    (0x0, 0xF, 0x9), (0x6, 0x0, 0xF), (0xF, 0x0, 0x8), (0x5, 0x9, 0x0),
)
#: RGB444 colour of the canvas where no layer is drawn.
BACKGROUND = (0x1, 0x1, 0x2)

#: The order the compositor samples a layer's registers in (one per core cycle): the
#: surface first (the compositor then reads its descriptor, whose height the ``y`` test
#: needs), then the program registers in index order.
FIELD_ORDER: tuple[str, ...] = (isa.SURFACE_FIELD.name,) + tuple(
    f.name for f in sorted(isa.REGISTER_FIELDS, key=lambda f: f.index))

Pixel = tuple[int, int, int]


@dataclass(frozen=True)
class Surface:
    """A layer's image as the board shows it: ``rows`` (top first) of ``SURFACE_WIDTH``
    pixels, each an RGB444 :data:`Pixel` or None (transparent)."""
    rows: tuple[tuple[Pixel | None, ...], ...]

    def __post_init__(self):
        if not 1 <= len(self.rows) <= SURFACE_MAX_HEIGHT:
            raise ValueError(f"a surface has 1..{SURFACE_MAX_HEIGHT} lines, not {len(self.rows)}")
        for i, row in enumerate(self.rows):
            if len(row) != SURFACE_WIDTH:
                raise ValueError(f"surface line {i}: {len(row)} pixels, not {SURFACE_WIDTH}")

    @property
    def height(self) -> int:
        return len(self.rows)

    @classmethod
    def from_rgba(cls, width: int, height: int, data: bytes) -> "Surface":
        """The surface of an RGBA8 image (``width`` x ``height``, rows top first): a pixel
        is opaque when its alpha is at least 128, and each channel ``c`` becomes
        ``(c * 15 + 127) // 255``. ValueError when it is wider than ``SURFACE_WIDTH``,
        taller than ``SURFACE_MAX_HEIGHT``, or ``data`` is not that size."""
        if not 1 <= width <= SURFACE_WIDTH:
            raise ValueError(f"{width} pixels wide: a surface is 1..{SURFACE_WIDTH} pixels wide")
        if not 1 <= height <= SURFACE_MAX_HEIGHT:
            raise ValueError(f"{height} lines tall: a surface is 1..{SURFACE_MAX_HEIGHT} lines")
        if len(data) != width * height * 4:
            raise ValueError(f"{len(data)} bytes of RGBA, not {width} x {height} x 4 = "
                             f"{width * height * 4}")
        def pixel(i):
            r, g, b, a = data[i:i + 4]
            return tuple((c * 15 + 127) // 255 for c in (r, g, b)) if a >= 128 else None
        pad = (None,) * (SURFACE_WIDTH - width)
        return cls(tuple(tuple(pixel(4 * (y * width + x)) for x in range(width)) + pad
                         for y in range(height)))


@dataclass(frozen=True)
class VideoMode:
    """An output mode: pixel counts per line and lines per frame, and how many fabric
    clocks one output pixel takes (the pixel clock is ``fabric_hz / fabric_per_pixel``)."""
    name: str
    h_active: int
    h_front: int
    h_sync: int
    h_back: int
    v_active: int
    v_front: int
    v_sync: int
    v_back: int
    fabric_per_pixel: int
    hsync_negative: bool = True
    vsync_negative: bool = True

    @property
    def h_total(self) -> int:
        return self.h_active + self.h_front + self.h_sync + self.h_back

    @property
    def v_total(self) -> int:
        return self.v_active + self.v_front + self.v_sync + self.v_back

    @property
    def v_blank(self) -> int:
        return self.v_front + self.v_sync + self.v_back


#: The modes of the boards (``Board.video``). Both are 640x480 with VESA's vertical timing
#: (31.5 kHz lines, 525 per frame, negative syncs), which DVI monitors take as 640x480@60.
MODES: dict[str, VideoMode] = {
    # 48 MHz fabric / 2 = 24 MHz pixels (the iCE40 has one PLL, and it makes the 48 MHz
    # fabric clock): 762 pixels a line keep the 31.5 kHz line rate; 59.99 Hz.
    "640x480@60-24MHz": VideoMode("640x480@60-24MHz", 640, 16, 64, 42, 480, 10, 2, 33, 2),
    # 100 MHz fabric / 4 = 25 MHz pixels, VESA's 800 x 525 (59.52 Hz), as most FPGA
    # designs drive 640x480.
    "640x480@60-25MHz": VideoMode("640x480@60-25MHz", 640, 16, 96, 48, 480, 10, 2, 33, 4),
}


@dataclass(frozen=True)
class Display:
    """The display of one board: its mode and its core's timing.

    ``contexts``: fabric clocks per core cycle; ``clock_hz``: the core cycle rate;
    ``surface_words``: 32-bit words of surface memory
    (:mod:`copperline.firmware.surface_memory`; 0: none, every layer is a rectangle)."""
    mode: VideoMode
    contexts: int
    clock_hz: int
    layers: int = isa.DEFAULT_LAYERS
    surface_words: int = 0

    def __post_init__(self):
        m = self.mode
        if m.h_active % SCALE or m.v_active % SCALE:
            raise ValueError(f"{m.name}: {m.h_active}x{m.v_active} is not a whole canvas "
                             f"at scale {SCALE}")
        if (m.h_total * m.fabric_per_pixel) % self.contexts:
            raise ValueError(f"{m.name}: a line of {m.h_total} x {m.fabric_per_pixel} fabric "
                             f"clocks is not a whole number of {self.contexts}-clock core "
                             "cycles")
        if self.layers * len(FIELD_ORDER) > 2 * self.line_cycles:
            raise ValueError(f"{self.layers} layers: their registers cannot be sampled "
                             "within a canvas line")

    @property
    def canvas_w(self) -> int:
        return self.mode.h_active // SCALE

    @property
    def canvas_h(self) -> int:
        return self.mode.v_active // SCALE

    @property
    def line_cycles(self) -> int:
        """Core cycles per output line."""
        return self.mode.h_total * self.mode.fabric_per_pixel // self.contexts

    @property
    def frame_cycles(self) -> int:
        """Core cycles per frame: the Copper's vsync period ``P``."""
        return self.mode.v_total * self.line_cycles

    @property
    def vsync_hz(self) -> float:
        """The frame rate, as the core's ``vsync_hz`` (``round(clock_hz / vsync_hz)``
        gives back :attr:`frame_cycles`)."""
        return self.clock_hz / self.frame_cycles

    @property
    def pixel_hz(self) -> float:
        return self.clock_hz * self.contexts / self.mode.fabric_per_pixel

    def line_start_cycle(self, frame: int, line: int) -> int:
        """First core cycle of output line ``line`` (0 = the first visible one; negative:
        the blanking lines before it) of ``frame``."""
        return frame * self.frame_cycles + (self.mode.v_blank + line) * self.line_cycles

    def line_fetch_cycle(self, frame: int, canvas_line: int) -> int:
        """First core cycle of the composition of ``canvas_line`` of ``frame``: the start
        of the output line two before its first."""
        return self.line_start_cycle(frame, SCALE * canvas_line - 2)


def sample_offset(layer: int, field: str) -> int:
    """Core cycles from a canvas line's fetch cycle to the sample of ``layer[n].field``."""
    return layer * len(FIELD_ORDER) + FIELD_ORDER.index(field)


def alpha_weight(alpha: int) -> int:
    """The blend weight of an 8-bit alpha, 0..256 (255 is fully opaque)."""
    return alpha + (alpha >> 7)


def blend(src: int, dst: int, alpha: int) -> int:
    """One 4-bit channel of ``src`` over ``dst`` at ``alpha``:
    ``(src * w + dst * (256 - w)) >> 8`` with ``w = alpha_weight(alpha)``, which is
    ``dst + (((src - dst) * w) >> 8)`` (an arithmetic shift): one multiply in gateware."""
    w = alpha_weight(alpha)
    return (src * w + dst * (256 - w)) >> 8


def to_rgb888(pixel: tuple[int, int, int]) -> tuple[int, int, int]:
    """An RGB444 pixel as 8-bit channels (``c * 17``: 0xF -> 0xFF)."""
    return tuple(c * 17 for c in pixel)


class RegisterHistory:
    """Register values over core cycles, from writes ``(cycle, index, value)``: what a
    compositor sample at a cycle reads (writes of earlier cycles; reset value 0)."""

    def __init__(self, writes: Iterable[tuple[int, int, int]] = ()):
        self._cycles: dict[int, list[int]] = {}
        self._values: dict[int, list[int]] = {}
        for cycle, index, value in sorted(writes, key=lambda w: w[0]):
            self._cycles.setdefault(index, []).append(cycle)
            self._values.setdefault(index, []).append(value)

    def value(self, index: int, cycle: int) -> int:
        """Register ``index`` as a sample in core cycle ``cycle`` reads it."""
        cycles = self._cycles.get(index)
        if not cycles:
            return 0
        i = bisect.bisect_left(cycles, cycle)      # writes with write_cycle < cycle
        return self._values[index][i - 1] if i else 0


def render_frame(display: Display, frame: int, value: Callable[[int, int], int],
                 surface: Callable[[int], Surface | None] = lambda number: None,
                 ) -> list[list[tuple[int, int, int]]]:
    """The canvas (``canvas_h`` rows of ``canvas_w`` RGB444 pixels) of ``frame`` (0-based,
    frame 0 starts at the time-base reset); ``value(register_index, cycle)`` gives a
    register as sampled in a core cycle (e.g. :meth:`RegisterHistory.value`), and
    ``surface(number)`` the surface a nonzero ``surface`` register names (None: no such
    surface; the layer then shows nothing, as a board shows a descriptor of height 0).
    A display without surface memory draws every layer as its rectangle."""
    rows = []
    width = display.canvas_w
    for line in range(display.canvas_h):
        fetch = display.line_fetch_cycle(frame, line)
        layers = []
        for n in range(display.layers):
            regs = {f: isa.layer_field(isa.register_index(n, f)).wrap(
                        value(isa.register_index(n, f), fetch + sample_offset(n, f)))
                    for f in FIELD_ORDER}
            if not regs["visible"]:
                continue
            if regs["surface"] and display.surface_words:
                s = surface(regs["surface"])
                pixels = s.rows[line - regs["y"]] if s and 0 <= line - regs["y"] < s.height else None
            else:
                solid = PALETTE[n % len(PALETTE)]
                pixels = (solid,) * LAYER_SIZE if 0 <= line - regs["y"] < LAYER_SIZE else None
            if pixels is not None:
                layers.append((regs["z"], n, regs, pixels))
        row = [BACKGROUND] * width
        for _, n, regs, pixels in sorted(layers, key=lambda t: (t[0], t[1])):
            x0 = regs["x"]
            for x in range(max(0, x0), min(width, x0 + len(pixels))):
                colour = pixels[x - x0]
                if colour is not None:
                    row[x] = tuple(blend(s, c, regs["alpha"]) for s, c in zip(colour, row[x]))
        rows.append(row)
    return rows


def scale_up(canvas: Sequence[Sequence[tuple[int, int, int]]]) -> list[list[tuple[int, int, int]]]:
    """The output picture of a canvas: each pixel as ``SCALE`` x ``SCALE``."""
    out = []
    for row in canvas:
        wide = [p for p in row for _ in range(SCALE)]
        out.extend(list(wide) for _ in range(SCALE))
    return out
