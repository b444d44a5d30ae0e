"""The board's surface memory layout and the host's allocation of it
(copperline.firmware.surface_memory), and Surface.from_rgba (the pixel format)."""

from __future__ import annotations

import pytest

from copperline.firmware.display import SURFACE_MAX_HEIGHT, SURFACE_WIDTH, Surface
from copperline.firmware import surface_memory as sm


def solid(height: int, pixel=(1, 2, 3)) -> Surface:
    return Surface(((pixel,) * SURFACE_WIDTH,) * height)


def memory_image(mem_words: int, placed) -> list[int]:
    words = [0] * mem_words
    for placement, surface in placed:
        for addr, ws in placement.writes(surface):
            words[addr:addr + len(ws)] = ws
    return words


def test_pixel_and_row_layout():
    assert sm.pixel_half(None) == 0
    assert sm.pixel_half((0x1, 0x2, 0x3)) == 0x8000 | 0x321
    row = tuple((i, 15 - i, i // 2) if i % 3 else None for i in range(SURFACE_WIDTH))
    words = sm.row_words(row)
    assert len(words) == sm.ROW_WORDS == SURFACE_WIDTH // 2
    # pixel 2i in the low half of word i, 2i + 1 in the high half
    assert words[0] == sm.pixel_half(row[0]) | sm.pixel_half(row[1]) << 16
    assert words[1] == sm.pixel_half(row[2]) | sm.pixel_half(row[3]) << 16
    assert sm.descriptor_word(5, 200) == 5 | 200 << 16
    with pytest.raises(ValueError):
        sm.descriptor_word(0, SURFACE_MAX_HEIGHT + 1)


def test_placements_round_trip_through_a_memory_image():
    mem = sm.SurfaceMemory(1024)
    a = Surface(tuple(tuple((y % 16, x, 3) if (x + y) % 4 else None for x in range(16))
                      for y in range(7)))
    b = solid(20, (15, 0, 0))
    (pa, new_a), (pb, new_b) = mem.place("a", a), mem.place("b", b)
    assert new_a and new_b and (pa.number, pb.number) == (1, 2)
    assert pa.first_row == sm.FIRST_ROW and pb.first_row == sm.FIRST_ROW + 7
    words = memory_image(1024, [(pa, a), (pb, b)])
    assert sm.read_surface(words, 1) == a and sm.read_surface(words, 2) == b
    assert sm.read_surface(words, 0) is None and sm.read_surface(words, 3) is None
    # the descriptor is written after the rows it points at
    assert pa.writes(a)[-1] == (1, [sm.descriptor_word(pa.first_row, 7)])


def test_the_same_pixels_are_placed_once_and_freed_with_the_last_user():
    mem = sm.SurfaceMemory(1024)
    p1, new1 = mem.place("k", solid(4))
    p2, new2 = mem.place("k", solid(4))
    assert p1 == p2 and new1 and not new2
    mem.release("k")
    assert "k" in mem
    mem.release("k")
    assert "k" not in mem and mem.free_rows() == mem.rows


def test_full_memory_and_descriptors_are_clear_errors():
    mem = sm.SurfaceMemory(sm.ROW_WORDS * (sm.FIRST_ROW + 30))     # 30 lines
    assert mem.rows == 30
    mem.place("a", solid(10))
    mem.place("b", solid(10))
    with pytest.raises(sm.SurfaceMemoryFull, match="needs 11 lines of surface memory; 10 of 30 are free"):
        mem.place("c", solid(11))
    mem.release("a")                             # 10 free at the start, 10 at the end
    with pytest.raises(sm.SurfaceMemoryFull, match=r"20 of 30 are free \(not in one piece\)"):
        mem.place("c", solid(11))
    p, _ = mem.place("c", solid(10))             # first fit: the hole "a" left
    assert p.first_row == sm.FIRST_ROW
    big = sm.SurfaceMemory(16384)
    for i in range(sm.DESCRIPTORS - 1):
        big.place(i, solid(1))
    with pytest.raises(sm.SurfaceMemoryFull, match="all 15 surface descriptors are in use"):
        big.place("one more", solid(1))
    with pytest.raises(sm.SurfaceMemoryFull, match="no surface memory"):
        sm.SurfaceMemory(0).place("x", solid(1))


def test_rgba_conversion_rounds_channels_and_cuts_alpha_at_128():
    px = lambda *rgba: bytes(rgba)
    s = Surface.from_rgba(3, 1, px(255, 0, 136, 128) + px(8, 9, 247, 127) + px(17, 34, 51, 255))
    assert s.rows[0][:3] == ((15, 0, 8), None, (1, 2, 3))
    assert s.rows[0][3:] == (None,) * (SURFACE_WIDTH - 3)          # padded, transparent
    # every 4-bit channel survives the trip through its 8-bit form (c * 17)
    assert all((c * 17 * 15 + 127) // 255 == c for c in range(16))
    with pytest.raises(ValueError, match="17 pixels wide: a surface is 1..16 pixels wide"):
        Surface.from_rgba(17, 1, bytes(17 * 4))
    with pytest.raises(ValueError, match="256 lines tall"):
        Surface.from_rgba(1, 256, bytes(256 * 4))
    with pytest.raises(ValueError, match="7 bytes of RGBA, not 1 x 2 x 4 = 8"):
        Surface.from_rgba(1, 2, bytes(7))


def test_descriptor_numbers_go_in_turn_and_a_release_names_the_freed_one():
    mem = sm.SurfaceMemory(16384)
    assert mem.place("a", solid(1))[0].number == 1
    assert mem.place("b", solid(1))[0].number == 2
    assert mem.release("a") == 1
    # the next surface does not take number 1 back at once: a layer still bound to the
    # freed surface meets a new one under its number as late as possible
    assert mem.place("c", solid(1))[0].number == 3
    mem.place("b", solid(1))
    assert mem.release("b") is None and mem.release("b") == 2
    numbers = [mem.place(i, solid(1))[0].number for i in range(13)]
    assert numbers == [4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 1]
