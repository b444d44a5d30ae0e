"""The board's surface memory: how the host stores surfaces and the compositor reads them.

The memory is ``Display.surface_words`` 32-bit words, written by the host through the
link's SURFACE space (one word per address) and read by the compositor
(:mod:`copperline.hdl.compositor`):

* **Descriptors.** Word ``d`` (``1 <= d < DESCRIPTORS``) describes surface ``d``: its
  first row in bits 15:0 and its height in lines in bits 23:16 (0: the surface shows
  nothing). A layer's ``surface`` register holds a descriptor number; 0 is no surface, so
  word 0 is never read.
* **Rows.** Row ``r`` is words ``r * ROW_WORDS .. r * ROW_WORDS + ROW_WORDS - 1``: one
  line of ``SURFACE_WIDTH`` pixels, pixel ``2i`` in the low half of word ``i`` and pixel
  ``2i + 1`` in its high half. Rows below ``FIRST_ROW`` hold the descriptors.
* **A pixel** (16 bits): bit 15 set = opaque, then bits 11:0 are its RGB444 colour as
  ``r | g << 4 | b << 8`` (the compositor's line-buffer word); 0 is transparent.

:class:`SurfaceMemory` is the host's allocation of it (descriptors and rows).
"""

from __future__ import annotations

from dataclasses import dataclass

from copperline.firmware.display import SURFACE_MAX_HEIGHT, SURFACE_WIDTH, Pixel, Surface

__all__ = ["DESCRIPTORS", "ROW_WORDS", "FIRST_ROW", "OPAQUE", "pixel_half", "row_words",
           "descriptor_word", "capacity_rows", "surface_words_of", "read_surface",
           "SurfaceMemory", "Placement", "SurfaceMemoryFull"]

#: Descriptor words (descriptor 0 is "no surface"): at most DESCRIPTORS - 1 surfaces.
DESCRIPTORS = 16
#: 32-bit words per surface row (two pixels a word).
ROW_WORDS = SURFACE_WIDTH // 2
#: The first row that holds pixels (the rows before hold the descriptors).
FIRST_ROW = -(-DESCRIPTORS // ROW_WORDS)
#: The opaque bit of a pixel.
OPAQUE = 1 << 15
_BASE_BITS = 16
_HEIGHT_SHIFT = 16


def pixel_half(pixel: Pixel | None) -> int:
    """The 16-bit memory form of a pixel (None: transparent)."""
    if pixel is None:
        return 0
    r, g, b = pixel
    return OPAQUE | r | g << 4 | b << 8


def row_words(row) -> list[int]:
    """The ``ROW_WORDS`` words of one surface line."""
    halves = [pixel_half(p) for p in row]
    return [halves[2 * i] | halves[2 * i + 1] << 16 for i in range(ROW_WORDS)]


def descriptor_word(first_row: int, height: int) -> int:
    """The word of a descriptor: first row, height."""
    if not 0 <= first_row < 1 << _BASE_BITS or not 0 <= height <= SURFACE_MAX_HEIGHT:
        raise ValueError(f"descriptor: row {first_row} / height {height} out of range")
    return first_row | height << _HEIGHT_SHIFT


def capacity_rows(surface_words: int) -> int:
    """Surface lines a memory of ``surface_words`` words holds (all surfaces together)."""
    return max(0, surface_words // ROW_WORDS - FIRST_ROW)


def surface_words_of(surface: Surface) -> list[int]:
    """The words of a surface's rows, top first."""
    return [w for row in surface.rows for w in row_words(row)]


def read_surface(words, number: int) -> Surface | None:
    """Surface ``number`` of a memory image ``words`` as the compositor reads it (None:
    number 0, or a descriptor of height 0); what :func:`render_frame` takes from a board's
    memory."""
    if not 0 < number < DESCRIPTORS:
        return None
    d = words[number]
    first, height = d & ((1 << _BASE_BITS) - 1), d >> _HEIGHT_SHIFT & 0xFF
    if not height:
        return None

    def pixel(half):
        return (half & 0xF, half >> 4 & 0xF, half >> 8 & 0xF) if half & OPAQUE else None
    rows = []
    for r in range(first, first + height):
        ws = words[r * ROW_WORDS:(r + 1) * ROW_WORDS]
        rows.append(tuple(pixel(w >> (16 * h) & 0xFFFF) for w in ws for h in (0, 1)))
    return Surface(tuple(rows))


class SurfaceMemoryFull(ValueError):
    """A surface does not fit the board's surface memory (what it needs, what is free)."""


@dataclass(frozen=True)
class Placement:
    """Where a surface went: its descriptor number and first row."""
    number: int
    first_row: int
    height: int

    def writes(self, surface: Surface) -> list[tuple[int, list[int]]]:
        """``(word address, words)`` to write: the rows, then the descriptor (last, so a
        descriptor never points at rows not written yet)."""
        return [(self.first_row * ROW_WORDS, surface_words_of(surface)),
                (self.number, [descriptor_word(self.first_row, self.height)])]


class SurfaceMemory:
    """The host's allocation of a board's surface memory: descriptor numbers and rows,
    shared by every program that binds the same surface (counted)."""

    def __init__(self, surface_words: int):
        self.surface_words = surface_words
        self.rows = capacity_rows(surface_words)
        self._placed: dict[object, Placement] = {}
        self._users: dict[object, int] = {}
        # (descriptor numbers are handed out in turn: a layer still bound to a freed
        # surface meets a new one under its number as late as possible)
        self._next = 1

    def __contains__(self, key) -> bool:
        return key in self._placed

    def placement(self, key) -> Placement:
        return self._placed[key]

    def free_rows(self) -> int:
        return self.rows - sum(p.height for p in self._placed.values())

    def place(self, key, surface: Surface) -> tuple[Placement, bool]:
        """A placement for ``surface`` (``key`` names its content): ``(placement, new)``,
        ``new`` when its words must still be written. Raises SurfaceMemoryFull."""
        if key in self._placed:
            self._users[key] += 1
            return self._placed[key], False
        if not self.surface_words:
            raise SurfaceMemoryFull("this board has no surface memory (no display)")
        used = {p.number for p in self._placed.values()}
        turn = [(self._next - 1 + i) % (DESCRIPTORS - 1) + 1 for i in range(DESCRIPTORS - 1)]
        number = next((d for d in turn if d not in used), None)
        if number is None:
            raise SurfaceMemoryFull(f"all {DESCRIPTORS - 1} surface descriptors are in use "
                                    "(unload a program that binds other surfaces)")
        first = self._first_fit(surface.height)
        if first is None:
            raise SurfaceMemoryFull(
                f"needs {surface.height} lines of surface memory; {self.free_rows()} of "
                f"{self.rows} are free" + (" (not in one piece)"
                                           if self.free_rows() >= surface.height else ""))
        p = Placement(number, first, surface.height)
        self._placed[key], self._users[key] = p, 1
        self._next = number % (DESCRIPTORS - 1) + 1
        return p, True

    def release(self, key) -> int | None:
        """One user fewer of ``key``; its rows and descriptor are free with the last
        (whose descriptor number is returned: the host then writes it empty, so that a
        layer still bound to it shows nothing)."""
        self._users[key] -= 1
        if self._users[key]:
            return None
        del self._users[key]
        return self._placed.pop(key).number

    def _first_fit(self, height: int) -> int | None:
        at = FIRST_ROW
        for p in sorted(self._placed.values(), key=lambda p: p.first_row):
            if p.first_row - at >= height:
                return at
            at = max(at, p.first_row + p.height)
        return at if FIRST_ROW + self.rows - at >= height else None
