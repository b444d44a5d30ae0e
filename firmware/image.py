"""The binary program image (``.cop``): container format, writer and checked loader.

Layout (all integers little-endian)::

    offset  size  field
    0       4     magic  b"COPR"
    4       2     format version (FORMAT_VERSION)
    6       2     ISA version (isa.ISA_VERSION)
    8       4     total length of the image in bytes, CRC included
    12      2     number of sections (always len(SECTION_ORDER))
    14      2     reserved, 0
    16      ...   sections, in SECTION_ORDER; each: u16 kind, u16 reserved 0,
                  u32 payload length, payload
    end-4   4     CRC32 (zlib) of every byte before it

Section payloads:

    CODE       u32 word count, then the 32-bit instruction words
    REGMAP     u16 count, then (u16 register index, string name): registers the code uses
    TAGS       string table of IRQ tags (IRQ's tag field indexes it)
    SURFACES   string table of BIND_LAYER surfaces
    TIMELINES  string table of FENCE timeline names
    LABELS     u16 count, then (u16 address, string name), sorted by (address, name)

A string table is a u16 count followed by strings; a string is a u16 byte length and
UTF-8 bytes. Every field is written in one canonical way, so the same program always
gives the same bytes.
"""

from __future__ import annotations

import hashlib
import struct
import zlib
from dataclasses import dataclass

from . import isa

MAGIC = b"COPR"
FORMAT_VERSION = 1

SECTION_CODE = 1
SECTION_REGMAP = 2
SECTION_TAGS = 3
SECTION_SURFACES = 4
SECTION_TIMELINES = 5
SECTION_LABELS = 6
SECTION_ORDER = (SECTION_CODE, SECTION_REGMAP, SECTION_TAGS, SECTION_SURFACES,
                 SECTION_TIMELINES, SECTION_LABELS)
SECTION_NAMES = {SECTION_CODE: "CODE", SECTION_REGMAP: "REGMAP", SECTION_TAGS: "TAGS",
                 SECTION_SURFACES: "SURFACES", SECTION_TIMELINES: "TIMELINES",
                 SECTION_LABELS: "LABELS"}

_HEADER = struct.Struct("<4sHHIHH")
_SECTION = struct.Struct("<HHI")


class ImageError(ValueError):
    """An image that cannot be loaded; the message names the source and what is wrong."""


@dataclass(frozen=True)
class Image:
    """A compiled Copper program: code words plus the tables that give them names."""
    code: tuple[int, ...]
    regmap: tuple[tuple[int, str], ...] = ()
    tags: tuple[str, ...] = ()
    surfaces: tuple[str, ...] = ()
    timelines: tuple[str, ...] = ()
    labels: tuple[tuple[int, str], ...] = ()

    # -- writing ------------------------------------------------------------------
    def to_bytes(self) -> bytes:
        """The canonical byte form of this image."""
        sections = {
            SECTION_CODE: struct.pack(f"<I{len(self.code)}I", len(self.code), *self.code),
            SECTION_REGMAP: _pack_pairs(self.regmap),
            SECTION_TAGS: _pack_strings(self.tags),
            SECTION_SURFACES: _pack_strings(self.surfaces),
            SECTION_TIMELINES: _pack_strings(self.timelines),
            SECTION_LABELS: _pack_pairs(self.labels),
        }
        body = b"".join(_SECTION.pack(kind, 0, len(sections[kind])) + sections[kind]
                        for kind in SECTION_ORDER)
        total = _HEADER.size + len(body) + 4
        head = _HEADER.pack(MAGIC, FORMAT_VERSION, isa.ISA_VERSION, total, len(SECTION_ORDER), 0)
        data = head + body
        return data + struct.pack("<I", zlib.crc32(data))

    def sha256(self) -> str:
        """Hex SHA-256 of the image bytes: the program identity used in trace headers."""
        return hashlib.sha256(self.to_bytes()).hexdigest()

    def table(self, kind: str) -> tuple[str, ...]:
        """The string table a field of arg kind ``kind`` (:data:`isa.TABLE_KINDS`) indexes."""
        return {"tag": self.tags, "surface": self.surfaces, "timeline": self.timelines}[kind]

    def decoded(self) -> list[isa.Instruction]:
        """The code, decoded (raises ValueError on an invalid word)."""
        return [isa.decode(w) for w in self.code]

    # -- reading ------------------------------------------------------------------
    @classmethod
    def from_bytes(cls, data: bytes, source: str = "<image>") -> "Image":
        """Parse and check an image; raises :class:`ImageError` naming ``source``."""
        def fail(msg: str) -> ImageError:
            return ImageError(f"{source}: {msg}")

        if data[:4] != MAGIC[:len(data[:4])] or len(data) >= 4 and data[:4] != MAGIC:
            raise fail(f"not a Copper image (magic {data[:4]!r}, expected {MAGIC!r})")
        if len(data) < _HEADER.size + 4:
            raise fail(f"truncated: {len(data)} bytes is shorter than the header")
        magic, fmt, isa_ver, total, nsect, reserved = _HEADER.unpack_from(data)
        if fmt != FORMAT_VERSION:
            raise fail(f"image format version {fmt} is not supported (this copperline reads {FORMAT_VERSION})")
        if isa_ver != isa.ISA_VERSION:
            raise fail(f"ISA version {isa_ver} is not supported (this copperline implements {isa.ISA_VERSION})")
        if len(data) < total:
            raise fail(f"truncated: header says {total} bytes, file has {len(data)}")
        if len(data) > total:
            raise fail(f"the header's length field says {total} bytes but the file has {len(data)}: "
                       "corrupted header or trailing garbage")
        (crc,) = struct.unpack_from("<I", data, total - 4)
        if zlib.crc32(data[:total - 4]) != crc:
            raise fail(f"CRC mismatch (stored {crc:#010x}, computed {zlib.crc32(data[:total - 4]):#010x}): "
                       "the image is corrupted")
        if reserved:
            raise fail(f"header reserved field (offset 14) is {reserved}, must be 0")
        if nsect != len(SECTION_ORDER):
            raise fail(f"expected {len(SECTION_ORDER)} sections, header says {nsect}")

        payloads = {}
        off = _HEADER.size
        for expected in SECTION_ORDER:
            if off + _SECTION.size > total - 4:
                raise fail(f"section {SECTION_NAMES[expected]} missing at offset {off}")
            kind, sect_reserved, length = _SECTION.unpack_from(data, off)
            if kind != expected:
                raise fail(f"offset {off}: expected section {SECTION_NAMES[expected]}, found kind {kind}")
            if sect_reserved:
                raise fail(f"offset {off + 2}: section {SECTION_NAMES[kind]} reserved field is "
                           f"{sect_reserved}, must be 0")
            off += _SECTION.size
            if off + length > total - 4:
                raise fail(f"section {SECTION_NAMES[kind]} runs past the end of the image")
            payloads[kind] = (data[off:off + length], off)
            off += length
        if off != total - 4:
            raise fail(f"{total - 4 - off} stray bytes before the CRC")

        try:
            code_payload, code_off = payloads[SECTION_CODE]
            (n,) = struct.unpack_from("<I", code_payload)
            if len(code_payload) != 4 + 4 * n:
                raise ValueError(f"CODE section holds {len(code_payload)} bytes for {n} words")
            code = struct.unpack_from(f"<{n}I", code_payload, 4)
            image = cls(
                code=tuple(code),
                regmap=_unpack_pairs(payloads[SECTION_REGMAP][0]),
                tags=_unpack_strings(payloads[SECTION_TAGS][0]),
                surfaces=_unpack_strings(payloads[SECTION_SURFACES][0]),
                timelines=_unpack_strings(payloads[SECTION_TIMELINES][0]),
                labels=_unpack_pairs(payloads[SECTION_LABELS][0]),
            )
        except (struct.error, UnicodeDecodeError, ValueError) as exc:
            raise fail(f"malformed section: {exc}") from None
        image.check(source)
        return image

    def check_fits(self, program_words: int, layers: int) -> None:
        """Check the image (:meth:`check`) and that it fits a machine with
        ``program_words`` words per context and ``layers`` layers; raises
        :class:`ImageError`."""
        self.check()
        if len(self.code) > program_words:
            raise ImageError(f"the image holds {len(self.code)} words; a context holds "
                             f"{program_words}")
        names = isa.register_names(layers)
        for addr, word in enumerate(self.code):
            ins = isa.decode(word)
            for arg in ins.op.args:
                r = ins.fields[arg.field]
                if arg.kind == "reg" and (r >= len(names) or names[r] is None):
                    raise ImageError(f"word {addr}: {ins.name} register index {r} does not "
                                     f"exist on a machine with {layers} layers")

    def check(self, source: str = "<image>") -> None:
        """Check the code against the ISA and the tables; raises :class:`ImageError`."""
        if not self.code:
            raise ImageError(f"{source}: the image holds no code")
        for addr, word in enumerate(self.code):
            try:
                ins = isa.decode(word)
            except ValueError as exc:
                raise ImageError(f"{source}: word {addr}: {exc}") from None
            for arg in ins.op.form(ins.fields):
                raw = ins.fields[arg.field]
                if arg.kind in isa.TABLE_KINDS and raw >= len(self.table(arg.kind)):
                    raise ImageError(f"{source}: word {addr}: {ins.name} {arg.field} index "
                                     f"{raw} is outside the table "
                                     f"({len(self.table(arg.kind))} entries)")
                if arg.kind == "label" and raw >= len(self.code):
                    raise ImageError(f"{source}: word {addr}: {ins.name} {arg.field} {raw} "
                                     f"is outside the code ({len(self.code)} words)")
            problem = isa.field_problem(ins)
            if problem:
                raise ImageError(f"{source}: word {addr}: {ins.name}: {problem}")
        for address, name in self.labels:
            if address >= len(self.code):
                raise ImageError(f"{source}: label {name!r} at address {address} is outside "
                                 f"the code ({len(self.code)} words)")
        for index, name in self.regmap:
            try:
                expected = isa.register_name(index)
            except ValueError:
                expected = None
            if expected != name:
                raise ImageError(f"{source}: register map entry {index} -> {name!r} does not "
                                 f"match the ISA register map ({expected or 'no such register'})")
        if self.code[-1] >> isa.OPCODE_SHIFT != isa.Opcode.HALT:
            raise ImageError(f"{source}: the code does not end in HALT")


def load_image(path: str) -> Image:
    """Read and check a ``.cop`` file."""
    with open(path, "rb") as f:
        return Image.from_bytes(f.read(), source=str(path))


def _pack_string(s: str) -> bytes:
    raw = s.encode("utf-8")
    return struct.pack("<H", len(raw)) + raw


def _pack_strings(items) -> bytes:
    return struct.pack("<H", len(items)) + b"".join(_pack_string(s) for s in items)


def _pack_pairs(items) -> bytes:
    return struct.pack("<H", len(items)) + b"".join(
        struct.pack("<H", num) + _pack_string(name) for num, name in items)


def _read_string(buf: bytes, off: int) -> tuple[str, int]:
    (n,) = struct.unpack_from("<H", buf, off)
    if off + 2 + n > len(buf):
        raise ValueError("string runs past its section")
    return buf[off + 2:off + 2 + n].decode("utf-8"), off + 2 + n


def _unpack_strings(buf: bytes) -> tuple[str, ...]:
    (count,) = struct.unpack_from("<H", buf)
    off, out = 2, []
    for _ in range(count):
        s, off = _read_string(buf, off)
        out.append(s)
    if off != len(buf):
        raise ValueError("string table has trailing bytes")
    return tuple(out)


def _unpack_pairs(buf: bytes) -> tuple[tuple[int, str], ...]:
    (count,) = struct.unpack_from("<H", buf)
    off, out = 2, []
    for _ in range(count):
        (num,) = struct.unpack_from("<H", buf, off)
        s, off = _read_string(buf, off + 2)
        out.append((num, s))
    if off != len(buf):
        raise ValueError("table has trailing bytes")
    return tuple(out)
