"""Frames as PNG files: the one place that writes and reads them.

A frame file is the display's output picture (:func:`copperline.firmware.display.scale_up`
of a canvas, 640x480 on the boards) as an 8-bit RGB PNG, each RGB444 pixel shown as
:func:`~copperline.firmware.display.to_rgb888` gives it: no overlay, no antialiasing.
``copper render --exact`` writes them (:func:`write_frame`), the virtual board's display
capture too (:func:`write_rgb444`, from the pixels its video output showed); a test reads
both back (:func:`load_frame`) and compares them pixel for pixel (:func:`compare_frames`).

The picture is built from bytes at canvas size and enlarged with nearest-neighbour
resampling (each canvas pixel becomes ``SCALE`` x ``SCALE`` output pixels), which is
``scale_up`` exactly (tests/test_host_render_exact.py checks it) and ~100x faster than
building 640x480 tuples in Python.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Sequence, Union

from copperline.firmware.display import SCALE, to_rgb888

Pixel = tuple[int, int, int]
Rows = list[list[Pixel]]
#: A frame to compare: a PNG path, or RGB888 rows as :func:`load_frame` returns them.
FrameLike = Union[str, "os.PathLike[str]", Sequence[Sequence[Pixel]]]

#: The file of frame ``k`` (0-based) in an output directory.
FRAME_NAME = "frame-{:05d}.png"


def frame_path(directory: str, k: int) -> str:
    """``DIRECTORY/frame-0000k.png``."""
    return os.path.join(directory, FRAME_NAME.format(k))


def canvas_bytes(canvas: Sequence[Sequence[Pixel]]) -> bytes:
    """A canvas of RGB444 pixels as packed RGB888 bytes, row by row."""
    cache: dict[Pixel, bytes] = {}
    out = []
    for row in canvas:
        for p in row:
            b = cache.get(p)
            if b is None:
                b = cache[p] = bytes(to_rgb888(p))
            out.append(b)
    return b"".join(out)


def frame_image(canvas: Sequence[Sequence[Pixel]], scale: int = SCALE):
    """The output picture of a canvas (RGB444 rows) as a Pillow RGB image, each canvas
    pixel ``scale`` x ``scale`` (``to_rgb888(scale_up(canvas))``)."""
    from PIL import Image
    h = len(canvas)
    w = len(canvas[0]) if h else 0
    if not w or any(len(row) != w for row in canvas):
        raise ValueError("a canvas is a non-empty list of rows of equal length")
    img = Image.frombytes("RGB", (w, h), canvas_bytes(canvas))
    if scale != 1:
        img = img.resize((w * scale, h * scale), Image.NEAREST)
    return img


def write_frame(path: str, canvas: Sequence[Sequence[Pixel]], *, compress_level: int = 1) -> None:
    """Write a canvas's output picture as an 8-bit RGB PNG (lossless at any
    ``compress_level``; 1 is ~5x faster to write than Pillow's default 6)."""
    frame_image(canvas).save(path, format="PNG", compress_level=compress_level)


def write_rgb444(path: str, width: int, height: int, words: bytes, *,
                 compress_level: int = 1) -> None:
    """Write an output picture given as ``width * height`` little-endian ``u16`` RGB444
    words (``r << 8 | g << 4 | b``, rows top first; the virtual board's capture) as an
    8-bit RGB PNG, each channel as ``to_rgb888`` shows it (``c * 17``)."""
    import numpy as np
    from PIL import Image
    w = np.frombuffer(words, dtype="<u2")
    if w.size != width * height:
        raise ValueError(f"{path}: {w.size} pixels are not {width}x{height}")
    rgb = np.stack([(w >> 8) & 0xF, (w >> 4) & 0xF, w & 0xF], axis=-1).astype(np.uint8) * 17
    Image.frombytes("RGB", (width, height), rgb.tobytes()).save(
        path, format="PNG", compress_level=compress_level)


def _image_rows(img) -> Rows:
    w, h = img.size
    data = img.tobytes()
    it = iter(data)
    flat = list(zip(it, it, it))
    return [flat[y * w:(y + 1) * w] for y in range(h)]


def load_frame(path: str | os.PathLike) -> Rows:
    """A PNG as rows of RGB888 tuples (``rows[y][x] == (r, g, b)``). Palette, grey or
    alpha images are converted to RGB (an alpha channel is dropped)."""
    from PIL import Image
    with Image.open(path) as img:
        rgb = img.convert("RGB") if img.mode != "RGB" else img.copy()
    return _image_rows(rgb)


@dataclass(frozen=True)
class FrameDiff:
    """How two frames differ: the first differing pixel in row order (``x``, ``y``,
    its colour in ``a`` and in ``b``) and how many pixels differ."""
    x: int
    y: int
    a: Pixel
    b: Pixel
    count: int

    def __str__(self) -> str:
        return (f"{self.count} pixel(s) differ; first at (x={self.x}, y={self.y}): "
                f"{self.a} != {self.b}")


def _rows_of(frame: FrameLike) -> Rows:
    if isinstance(frame, (str, os.PathLike)):
        return load_frame(frame)
    return [list(row) for row in frame]


def compare_frames(a: FrameLike, b: FrameLike) -> FrameDiff | None:
    """None when ``a`` and ``b`` (PNG paths, or RGB888 rows) are the same picture, pixel
    for pixel; else a :class:`FrameDiff`. Pictures of different sizes raise ValueError
    naming both sizes."""
    ra, rb = _rows_of(a), _rows_of(b)
    size_a = (len(ra[0]) if ra else 0, len(ra))
    size_b = (len(rb[0]) if rb else 0, len(rb))
    if size_a != size_b:
        raise ValueError(f"frames of different sizes: {size_a[0]}x{size_a[1]} and "
                         f"{size_b[0]}x{size_b[1]}")
    first = None
    count = 0
    for y, (row_a, row_b) in enumerate(zip(ra, rb)):
        if row_a == row_b:
            continue
        for x, (pa, pb) in enumerate(zip(row_a, row_b)):
            if pa != pb:
                count += 1
                if first is None:
                    first = (x, y, tuple(pa), tuple(pb))
    if first is None:
        return None
    return FrameDiff(*first, count)
