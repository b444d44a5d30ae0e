"""ULX3S: Lattice ECP5 (LFE5U-12F/25F/45F/85F, CABGA381), 25 MHz oscillator (the PLL makes
the 100 MHz fabric clock), FT231X UART (which is also the JTAG programmer)."""

from __future__ import annotations

from copperline.boards.common import Board, UsbId
from copperline.hdl.synth import ECP5_CORE_OPTIONS

VARIANTS = ("12F", "25F", "45F", "85F")


def _platform_factory(variant: str):
    def make():
        from amaranth_boards import ulx3s
        return getattr(ulx3s, f"ULX3S_{variant}_Platform")()
    return make


def _flash_commands(programmer: str, bitstream: str, sram: bool) -> list[list[str]]:
    # openFPGALoader writes SRAM by default; -f writes the SPI flash.
    return [["openFPGALoader", "-b", "ulx3s"] + ([] if sram else ["-f"]) + [bitstream]]


def _board(variant: str) -> Board:
    return Board(
        name=f"ulx3s-{variant.lower()}",
        title=f"ULX3S {variant}",
        family="ecp5",
        platform=_platform_factory(variant),
        # The fabric clock from the ECP5 PLL (EHXPLLL on the 25 MHz oscillator; settings
        # in boards/common.py PLL_SETTINGS).
        clock_hz=100_000_000,
        osc_hz=25_000_000,
        led_link=("led", 0),
        led_error=("led", 1),
        usb=(UsbId(0x0403, 0x6015, description="FT231X"),),
        bitstream="copper.bit",
        flash_commands=_flash_commands,
        programmers=("openfpgaloader",),
        aliases=("ulx3s",) if variant == "85F" else (),
        # 4 contexts -> 4 phases -> a 25 MHz core cycle, with the core's ECP5 options
        # (the configuration of its published ECP5 figures, copperline.hdl.synth)
        core={"contexts": 4, "program_words": 1024, **ECP5_CORE_OPTIONS},
        # 640x480 (25 MHz pixels, VESA's 800 x 525) on the GPDI connector
        video="640x480@60-25MHz",
    )


BOARDS = tuple(_board(v) for v in VARIANTS)
