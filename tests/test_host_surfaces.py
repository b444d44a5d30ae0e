"""Surfaces from files (copperline.host.surfaces): PNG and raw RGBA, sizes, limits, and
the refusals a daemon relies on (no pipes, no huge files, no decompression bombs)."""

from __future__ import annotations

import os
import struct
import zlib

import pytest
from PIL import Image

from copperline.firmware.display import Surface
from copperline.host.surfaces import (MAX_SURFACE_FILE_BYTES, SurfaceError, SurfaceSource,
                                      read_surface_file, split_spec, surface_from_bytes)

RGBA = bytes((255, 0, 0, 255, 0, 0, 0, 0, 0, 255, 0, 200, 0, 0, 255, 255))   # 2 x 2


def test_spec_sizes():
    assert split_spec("a/b.rgba@16x24") == ("a/b.rgba", (16, 24))
    assert split_spec("b.png") == ("b.png", None)
    assert split_spec("odd@name.png") == ("odd@name.png", None)


def test_png_and_raw_give_the_same_surface(tmp_path):
    Image.frombytes("RGBA", (2, 2), RGBA).save(tmp_path / "s.png")
    (tmp_path / "s.rgba").write_bytes(RGBA)
    png = read_surface_file("s.png", str(tmp_path))
    raw = read_surface_file("s.rgba@2x2", str(tmp_path))
    assert png.surface == raw.surface == Surface.from_rgba(2, 2, RGBA)
    assert png.key == raw.key                                   # the same pixels: one key
    assert png.surface.rows[0][:2] == ((15, 0, 0), None) and png.surface.height == 2
    other = read_surface_file(str(tmp_path / "s.rgba@1x4"))     # absolute path
    assert other.key != raw.key


@pytest.mark.parametrize("name, data, message", [
    ("s.rgba", RGBA, "not a PNG, and raw RGBA needs its size: write it as 's.rgba@WIDTHxHEIGHT'"),
    ("s.rgba@3x2", RGBA, "16 bytes of RGBA, not 3 x 2 x 4 = 24"),
    ("s.rgba@17x1", bytes(68), "17 pixels wide: a surface is 1..16 pixels wide"),
    ("s.png", b"\x89PNG\r\n\x1a\nnonsense", "not a readable PNG"),
])
def test_bad_surfaces_say_what_is_wrong(name, data, message):
    with pytest.raises(SurfaceError, match=r"surface '" + name.replace(".", r"\.") + "'"):
        surface_from_bytes(data, name, split_spec(name)[1])
    with pytest.raises(SurfaceError) as exc:
        surface_from_bytes(data, name, split_spec(name)[1])
    assert message in str(exc.value)


def test_a_png_too_big_is_refused_before_its_pixels_are_decoded(tmp_path):
    # a PNG header that claims 16 x 100000 over a few bytes of data (a decompression
    # bomb would claim more): refused from the header
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 16, 100_000, 8, 6, 0, 0, 0))
           + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))
    with pytest.raises(SurfaceError, match="the image is 16x100000; a surface is at most 16 pixels wide and 255 lines tall"):
        surface_from_bytes(png, "bomb.png")
    Image.new("RGBA", (4, 3)).save(tmp_path / "x.png")
    with pytest.raises(SurfaceError, match="the PNG is 4x3, not the 4x4 its name gives"):
        read_surface_file("x.png@4x4", str(tmp_path))


def test_only_bounded_regular_files_are_read(tmp_path):
    with pytest.raises(SurfaceError, match="surface 'missing.png': cannot open .*missing.png: No such file"):
        read_surface_file("missing.png", str(tmp_path))
    os.mkfifo(tmp_path / "fifo")            # a pipe nobody writes: must not block
    with pytest.raises(SurfaceError, match="not a regular file"):
        read_surface_file("fifo@1x1", str(tmp_path))
    (tmp_path / "big.rgba").write_bytes(bytes(MAX_SURFACE_FILE_BYTES + 4))
    with pytest.raises(SurfaceError, match=f"bytes; a surface file is at most {MAX_SURFACE_FILE_BYTES}"):
        read_surface_file("big.rgba@16x16", str(tmp_path))


def test_a_source_without_paths_opens_nothing(tmp_path):
    (tmp_path / "s.rgba").write_bytes(RGBA)
    given = read_surface_file("s.rgba@2x2", str(tmp_path))
    src = SurfaceSource({"given": given}, paths=False)
    assert src.get("given") is given
    with pytest.raises(SurfaceError, match="was not passed with the program"):
        src.get(str(tmp_path / "s.rgba@2x2"))
