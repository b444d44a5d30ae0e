"""iCEBreaker: Lattice iCE40UP5K-SG48, 12 MHz oscillator (the PLL makes the 48 MHz fabric
clock), FT2232H (interface A: SPI flash programming, interface B: the UART the link uses)."""

from __future__ import annotations

from copperline.boards.common import Board, UsbId


def _platform():
    from amaranth_boards.icebreaker import ICEBreakerPlatform
    platform = ICEBreakerPlatform()
    platform.add_resources(DVI_PMOD)
    return platform


def _dvi_pmod():
    """The 12-bit DVI Pmod (1BitSquared; a TFP410 taking RGB444 and syncs) on PMOD1A
    (red, green) and PMOD1B (blue, clock, syncs, data enable): connector pin numbers."""
    from amaranth.build import Attrs, Pins, Resource, Subsignal

    def pins(names, conn):
        return Pins(names, dir="o", conn=("pmod", conn))
    return Resource(
        "dvi", 0,
        Subsignal("r", pins("8 2 7 1", 0)),        # r[0] .. r[3]
        Subsignal("g", pins("10 4 9 3", 0)),
        Subsignal("b", pins("3 8 7 1", 1)),
        Subsignal("clk", pins("2", 1)),
        Subsignal("hsync", pins("4", 1)),
        Subsignal("vsync", pins("10", 1)),
        Subsignal("de", pins("9", 1)),
        Attrs(IO_STANDARD="SB_LVCMOS"))


DVI_PMOD = [_dvi_pmod()]


def _video_out(m, platform, video):
    """The compositor's output on the DVI Pmod: every pin through its SB_IO's output
    flip-flop (so they change together), the pixel clock a clock later, rising in the
    middle of each 2-clock pixel (the TFP410 samples on its rising edge)."""
    from amaranth import Signal
    from amaranth.lib import io
    dvi = platform.request("dvi", 0, dir="-")
    clk = Signal()
    m.d.sync += clk.eq(video.pixel)         # high in a pixel's second fabric clock
    for name, value in (("r", video.r), ("g", video.g), ("b", video.b), ("de", video.de),
                        ("hsync", video.hsync), ("vsync", video.vsync), ("clk", clk)):
        m.submodules[f"dvi_{name}"] = buf = io.FFBuffer("o", getattr(dvi, name))
        m.d.comb += buf.o.eq(value)


def _flash_commands(programmer: str, bitstream: str, sram: bool) -> list[list[str]]:
    if programmer == "iceprog":
        return [["iceprog"] + (["-S"] if sram else []) + [bitstream]]
    # openFPGALoader: SRAM by default, -f for the SPI flash.
    return [["openFPGALoader", "-b", "ice40_generic"] + ([] if sram else ["-f"]) + [bitstream]]


BOARD = Board(
    name="icebreaker",
    title="iCEBreaker",
    family="ice40",
    platform=_platform,
    # The fabric clock from the iCE40 PLL (SB_PLL40_PAD on the 12 MHz oscillator's pin;
    # settings in boards/common.py PLL_SETTINGS).
    clock_hz=48_000_000,
    osc_hz=12_000_000,
    led_link=("led_g", 0),
    led_error=("led_r", 0),
    # FT2232H; interface 1 (B) is the UART, interface 0 (A) is the flash programmer.
    usb=(UsbId(0x0403, 0x6010, interface=1, description="FT2232H"),),
    bitstream="copper.bin",
    flash_commands=_flash_commands,
    programmers=("iceprog", "openfpgaloader"),
    # 4 contexts -> 4 phases -> a 12 MHz core cycle. Program memory in the two SPRAMs
    # (SB_SPRAM256KA): 4 x 1024 words, the VM's size, and no block RAM for programs.
    core={"contexts": 4, "program_words": 1024, "program_memory": "spram",
          "spram_primitive": True},
    # 640x480 from the 48 MHz fabric clock (24 MHz pixels) on the 12-bit DVI Pmod
    video="640x480@60-24MHz",
    video_out=_video_out,
    # surfaces in the other two SPRAMs: 16K x 32 bits, 2046 surface lines of 16 pixels
    surface_words=16384,
)
