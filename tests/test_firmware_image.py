"""The .cop image loader rejects damaged or foreign images with a clear ImageError."""

import struct
import zlib

import pytest

from copperline.firmware import isa
from copperline.firmware.compiler import compile_file
from copperline.firmware.image import FORMAT_VERSION, Image, ImageError, load_image


@pytest.fixture(scope="module")
def sprite(examples_dir) -> Image:
    return compile_file(examples_dir / "sprite.json")


def recrc(data: bytes) -> bytes:
    """Fix the trailing CRC so a deliberate edit is seen by the check after the CRC."""
    return data[:-4] + struct.pack("<I", zlib.crc32(data[:-4]))


def patch(data: bytes, offset: int, fmt: str, value) -> bytes:
    buf = bytearray(data)
    struct.pack_into(fmt, buf, offset, value)
    return recrc(bytes(buf))


def rejects(data: bytes, pattern: str) -> None:
    with pytest.raises(ImageError, match=pattern):
        Image.from_bytes(data, "x.cop")


def test_round_trip_through_bytes_and_file(sprite, tmp_path):
    data = sprite.to_bytes()
    assert Image.from_bytes(data) == sprite
    assert Image.from_bytes(data).to_bytes() == data
    path = tmp_path / "s.cop"
    path.write_bytes(data)
    assert load_image(path) == sprite
    assert sprite.sha256() == Image.from_bytes(data).sha256()


@pytest.mark.parametrize("cut", [0, 2, 4, 18, 19])
def test_truncated_header(sprite, cut):
    rejects(sprite.to_bytes()[:cut], r"^x\.cop: truncated: \d+ bytes is shorter than the header")


def test_truncated_body(sprite):
    data = sprite.to_bytes()
    rejects(data[:-5], rf"x\.cop: truncated: header says {len(data)} bytes, file has {len(data) - 5}")


def test_trailing_bytes(sprite):
    rejects(sprite.to_bytes() + b"\0", "length field says .* but the file has")


@pytest.mark.parametrize("offset", [20, 40, 100, -5])
def test_corrupted_byte_fails_crc(sprite, offset):
    data = bytearray(sprite.to_bytes())
    data[offset] ^= 0x10
    rejects(bytes(data), "CRC mismatch .*the image is corrupted")


def test_wrong_magic(sprite):
    rejects(b"ELF\x7f" + sprite.to_bytes()[4:], r"not a Copper image \(magic b'ELF\\x7f', expected b'COPR'\)")


def test_wrong_format_version(sprite):
    rejects(patch(sprite.to_bytes(), 4, "<H", FORMAT_VERSION + 1),
            f"image format version {FORMAT_VERSION + 1} is not supported")


def test_wrong_isa_version(sprite):
    rejects(patch(sprite.to_bytes(), 6, "<H", isa.ISA_VERSION + 1),
            f"ISA version {isa.ISA_VERSION + 1} is not supported")


def test_wrong_section_count(sprite):
    rejects(patch(sprite.to_bytes(), 12, "<H", 5), "expected 6 sections, header says 5")


def test_wrong_section_kind(sprite):
    rejects(patch(sprite.to_bytes(), 16, "<H", 2), "offset 16: expected section CODE, found kind 2")


def test_code_count_disagrees_with_section_length(sprite):
    rejects(patch(sprite.to_bytes(), 24, "<I", 100), "malformed section: CODE section holds")


def image_bytes(*code, **tables) -> bytes:
    # to_bytes() does not check, so it can build images the compiler never would.
    return Image(code=tuple(code), **tables).to_bytes()


def test_reserved_bits_set():
    rejects(image_bytes(isa.encode("MOVE", reg=8, value=1) | 1 << 16, 0),
            r"word 0: MOVE word 0x30810001 has reserved bits set \(0x00010000\)")


def test_unknown_opcode():
    rejects(image_bytes(0xF000_0000, 0), "word 0: unknown opcode 15")


@pytest.mark.parametrize("word, tables, what", [
    (isa.encode("IRQ", tag=3), {"tags": ("a",)}, r"IRQ tag index 3 is outside the table \(1 entries\)"),
    (isa.encode("BIND_LAYER", layer=0, surface=1), {"surfaces": ("s",)}, "BIND_LAYER surface index 1"),
    (isa.encode("FENCE", timeline=0, value=1), {}, "FENCE timeline index 0 is outside the table"),
])
def test_bad_table_index(word, tables, what):
    rejects(image_bytes(word, 0, **tables), f"word 0: {what}")


def test_target_outside_code():
    rejects(image_bytes(isa.encode("JUMP", target=5), 0), r"word 0: JUMP target 5 is outside the code \(2 words\)")


def test_zero_wait_no_code_no_halt():
    rejects(image_bytes(isa.encode("WAIT", us=0), 0), "WAIT: wait of 0 us")
    rejects(image_bytes(), "the image holds no code")
    rejects(image_bytes(isa.encode("NOP")), "the code does not end in HALT")


def test_missing_file_is_an_os_error(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_image(tmp_path / "missing.cop")


# Checks beyond bit widths: reserved fields, register indices and ranges, label addresses.

def test_header_reserved_field_must_be_zero(sprite):
    rejects(patch(sprite.to_bytes(), 14, "<H", 1), "reserved")


def test_move_to_a_register_that_does_not_exist():
    rejects(image_bytes(isa.encode("MOVE", reg=7, value=1), 0), "register")


def test_move_value_wider_than_register():
    rejects(image_bytes(isa.encode("MOVE", reg=2, value=0x1FF), 0), "alpha")


def test_label_outside_code():
    rejects(image_bytes(0, labels=((9, "x"),)), "label")
