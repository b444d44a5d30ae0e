"""Surfaces from files: a BIND_LAYER ``surface`` string (or a passed file) to the
:class:`~copperline.firmware.display.Surface` the board shows.

A surface string is a path, optionally with the image's size: ``sprite.png`` (PNG, its
size read from the file) or ``sprite.rgba@16x24`` (raw RGBA8, rows top first, 16 pixels
wide and 24 lines: a raw file has no header, so its size must be given). A relative path
is taken from the directory of the program that names it. The conversion to the board's
pixel format is :meth:`Surface.from_rgba` (1-bit opacity, RGB444).
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import stat
from dataclasses import dataclass

from copperline.firmware.display import SURFACE_MAX_HEIGHT, SURFACE_WIDTH, Surface

__all__ = ["SurfaceError", "LoadedSurface", "MAX_SURFACE_FILE_BYTES", "split_spec",
           "surface_path", "read_surface_file", "surface_from_bytes", "read_bounded",
           "SurfaceSource"]

#: Largest surface file read (a 16 x 255 surface is 16 KiB of raw RGBA; a PNG is less).
MAX_SURFACE_FILE_BYTES = 256 * 1024
_PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
_SIZE = re.compile(r"@(\d+)x(\d+)$")


class SurfaceError(ValueError):
    """A surface that cannot be shown: the message names it and what is wrong."""


@dataclass(frozen=True)
class LoadedSurface:
    """A surface and the hash of its pixels (``key``: equal surfaces share board memory)."""
    surface: Surface
    key: str


def split_spec(spec: str) -> tuple[str, tuple[int, int] | None]:
    """``(path, (width, height) or None)`` of a surface string."""
    m = _SIZE.search(spec)
    if m is None:
        return spec, None
    return spec[:m.start()], (int(m.group(1)), int(m.group(2)))


def surface_from_bytes(data: bytes, name: str, size: tuple[int, int] | None = None) -> LoadedSurface:
    """The surface in ``data`` (PNG, or raw RGBA8 of ``size``); ``name`` is for messages."""
    try:
        if data[:8] == _PNG_MAGIC:
            surface = _from_png(data, name, size)
        elif size is None:
            raise SurfaceError(f"surface {name!r}: not a PNG, and raw RGBA needs its size: "
                               f"write it as '{name}@WIDTHxHEIGHT' (e.g. @16x16)")
        else:
            surface = Surface.from_rgba(size[0], size[1], data)
    except SurfaceError:
        raise
    except ValueError as exc:
        raise SurfaceError(f"surface {name!r}: {exc}") from None
    key = hashlib.sha256(repr(surface.rows).encode()).hexdigest()
    return LoadedSurface(surface, key)


def _from_png(data: bytes, name: str, size) -> Surface:
    from PIL import Image, UnidentifiedImageError
    try:
        img = Image.open(io.BytesIO(data))
    except (UnidentifiedImageError, OSError) as exc:
        raise SurfaceError(f"surface {name!r}: not a readable PNG ({exc})") from None
    w, h = img.size
    # (checked before the pixels are decoded: a PNG's header can claim any size)
    if not (1 <= w <= SURFACE_WIDTH and 1 <= h <= SURFACE_MAX_HEIGHT):
        raise SurfaceError(f"surface {name!r}: the image is {w}x{h}; a surface is at most "
                           f"{SURFACE_WIDTH} pixels wide and {SURFACE_MAX_HEIGHT} lines tall")
    if size is not None and size != (w, h):
        raise SurfaceError(f"surface {name!r}: the PNG is {w}x{h}, not the {size[0]}x{size[1]} "
                           "its name gives")
    try:
        rgba = img.convert("RGBA").tobytes()
    except OSError as exc:
        raise SurfaceError(f"surface {name!r}: the PNG cannot be decoded ({exc})") from None
    return Surface.from_rgba(w, h, rgba)


def surface_path(spec: str, base_dir: str | None = None) -> str:
    """The file a surface string names (a relative path from ``base_dir``, else the
    working directory)."""
    path = split_spec(spec)[0]
    return os.path.join(base_dir, path) if base_dir is not None else path


def read_surface_file(spec: str, base_dir: str | None = None) -> LoadedSurface:
    """The surface a surface string names, read from its file (:func:`surface_path`).
    Only a regular file of at most :data:`MAX_SURFACE_FILE_BYTES` is read."""
    path, size = surface_path(spec, base_dir), split_spec(spec)[1]
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        raise SurfaceError(f"surface {spec!r}: cannot open {path}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        return surface_from_bytes(read_bounded(f.fileno(), spec), spec, size)


def read_bounded(fd: int, name: str) -> bytes:
    """The bytes of an open regular file of at most :data:`MAX_SURFACE_FILE_BYTES` (a pipe,
    device or larger file is refused before anything is read)."""
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise SurfaceError(f"surface {name!r}: not a regular file")
    if st.st_size > MAX_SURFACE_FILE_BYTES:
        raise SurfaceError(f"surface {name!r}: {st.st_size} bytes; a surface file is at most "
                           f"{MAX_SURFACE_FILE_BYTES}")
    data = os.pread(fd, MAX_SURFACE_FILE_BYTES + 1, 0)
    if len(data) > MAX_SURFACE_FILE_BYTES:
        raise SurfaceError(f"surface {name!r}: grew past {MAX_SURFACE_FILE_BYTES} bytes")
    return data


class SurfaceSource:
    """Where a program's surfaces come from: ``given`` ones (name -> LoadedSurface, e.g.
    from descriptors a client passed), else, when ``paths``, the files their names give
    (relative to ``base_dir``: the program file's directory)."""

    def __init__(self, given=None, base_dir: str | None = None, paths: bool = True):
        self.given = dict(given or {})
        self.base_dir = base_dir
        self.paths = paths

    def get(self, name: str) -> LoadedSurface:
        """The surface ``name``; SurfaceError naming what is wrong."""
        if name in self.given:
            return self.given[name]
        if not self.paths:
            raise SurfaceError(f"surface {name!r} was not passed with the program (copperd "
                               "opens no path a client names: pass the file's descriptor in "
                               "load's 'surfaces'; portctl load does)")
        return read_surface_file(name, self.base_dir)
