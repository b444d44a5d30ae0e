"""Frames as PNG files: ``DIR/frame-NNNNN.png``, 8-bit RGB, written by the virtual board's
display capture and by ``copper render --exact``, read back to compare them.

The pixel rules are :mod:`copperline.firmware.display`'s; this module only moves pixels
between RGB444 words, 8-bit RGB bytes and PNG files (Pillow).
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["frame_path", "rgb444_to_rgb888", "save_rgb888", "load_rgb888"]


def frame_path(directory: str | os.PathLike, number: int) -> Path:
    """Where frame ``number`` (0-based) of a capture or a rendering goes."""
    return Path(directory) / f"frame-{number:05d}.png"


def rgb444_to_rgb888(words: bytes) -> bytes:
    """Little-endian ``u16`` RGB444 words (``r << 8 | g << 4 | b``) as 8-bit RGB bytes,
    each 4-bit channel ``c`` as ``c * 17`` (``display.to_rgb888``)."""
    import numpy as np
    w = np.frombuffer(words, dtype="<u2")
    rgb = np.stack([(w >> 8) & 0xF, (w >> 4) & 0xF, w & 0xF], axis=-1).astype(np.uint8)
    return (rgb * 17).tobytes()


def save_rgb888(path: str | os.PathLike, width: int, height: int, data: bytes) -> None:
    """Write ``width`` x ``height`` 8-bit RGB pixels (rows top first) as a PNG file."""
    from PIL import Image
    if len(data) != 3 * width * height:
        raise ValueError(f"{path}: {len(data)} bytes are not {width}x{height} RGB pixels")
    Image.frombytes("RGB", (width, height), data).save(path, format="PNG")


def load_rgb888(path: str | os.PathLike) -> tuple[int, int, bytes]:
    """``(width, height, 8-bit RGB bytes)`` of a PNG file."""
    from PIL import Image
    with Image.open(path) as im:
        return im.width, im.height, im.convert("RGB").tobytes()
