"""ULX3S: Lattice ECP5 (LFE5U-12F/25F/45F/85F, CABGA381), 25 MHz oscillator (the PLL makes
the 100 MHz fabric clock), FT231X UART (which is also the JTAG programmer)."""

from __future__ import annotations

from amaranth import Elaboratable

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


def _video_out(m, platform, video):
    """The compositor's output on the GPDI connector (:func:`gpdi_output`)."""
    gpdi_output(m, platform, video)


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
        video_out=_video_out,
        # surfaces in 8 DP16KD block RAMs: 4K x 32 bits, 510 surface lines of 16 pixels
        surface_words=4096,
    )


BOARDS = tuple(_board(v) for v in VARIANTS)


# --------------------------------------------------------------------------- GPDI --------
#: The video signals :func:`gpdi_output` takes (the compositor's output, fabric domain).
VIDEO_SIGNALS = ("r", "g", "b", "de", "hsync", "vsync", "pixel")


def gpdi_output(m, platform, video, *, domain: str = "sync", tmds_domain: str | None = None):
    """DVI on the ULX3S's GPDI connector from ``video``'s signals; returns the
    :class:`~copperline.hdl.dvi.DVITransmitter` (its ``running`` and ``underflows`` are
    status for LEDs or a register).

    ``video``: any object with the attributes :data:`VIDEO_SIGNALS`, all in ``domain``
    (the fabric clock, 100 MHz): ``r, g, b`` (RGB444), ``de``, ``hsync``, ``vsync`` (wire
    level, the mode's polarity applied) and ``pixel`` (high in the clock that presents a
    new pixel, one every 4 fabric clocks). ``tmds_domain`` (default
    :data:`copperline.boards.common.PLL_SECONDARY_DOMAIN`, "tmds") must be the 125 MHz
    clock from the same PLL VCO: ``copperline.boards.common.board_top(board, baud=...,
    video=lambda m, platform, top: gpdi_output(m, platform, <video signals>))`` makes it,
    as do ``_pll_clock(m, platform, board, secondary=True)`` and ``add_secondary_domain``
    in a top of one's own (:func:`gpdi_test_top`).

    The pins: amaranth-boards' ``hdmi`` resource, whose pairs are ``LVCMOS33D`` (the ECP5's
    emulated differential output: the pad drives the P pin, the tools add its complement on
    N): ``d`` A16/B16 (blue, TMDS 0), A14/C14 (green), A12/A13 (red), ``clk`` A17/B18. Each
    takes two bits per ``tmds`` clock through an ``ODDRX1F`` (``amaranth.lib.io.DDRBuffer``
    on the ECP5), i.e. 250 Mbit/s."""
    from amaranth.lib import io

    from copperline.boards.common import PLL_SECONDARY_DOMAIN
    from copperline.hdl.dvi import DVITransmitter

    tmds_domain = tmds_domain or PLL_SECONDARY_DOMAIN
    missing = [s for s in VIDEO_SIGNALS if not hasattr(video, s)]
    if missing:
        raise TypeError(f"gpdi_output: the video signals lack {', '.join(missing)}")
    m.submodules.dvi = dvi = DVITransmitter(domain=domain, tmds_domain=tmds_domain)
    m.d.comb += [getattr(dvi, s).eq(getattr(video, s)) for s in VIDEO_SIGNALS]
    pins = platform.request("hdmi", 0, dir="-")
    m.submodules.gpdi_d = ddr_d = io.DDRBuffer("o", pins.d, o_domain=tmds_domain)
    m.submodules.gpdi_clk = ddr_clk = io.DDRBuffer("o", pins.clk, o_domain=tmds_domain)
    m.d.comb += [ddr_d.o.eq(dvi.data), ddr_clk.o.eq(dvi.clock)]
    return dvi


class VideoTiming(Elaboratable):
    """A test picture in a video mode's timing, in the fabric domain, with the video
    signals :func:`gpdi_output` takes (the compositor's stand-in): one pixel every
    ``mode.fabric_per_pixel`` clocks; colour bars over the active area (``r`` from x,
    ``g`` from y, ``b`` moving with the frame), a white border."""

    def __init__(self, mode):
        from amaranth import Signal
        self.mode = mode
        self.r, self.g, self.b = Signal(4), Signal(4), Signal(4)
        self.de, self.hsync, self.vsync, self.pixel = Signal(), Signal(), Signal(), Signal()

    def elaborate(self, platform):
        from amaranth import Module, Signal
        mode = self.mode
        m = Module()
        sub = Signal(range(mode.fabric_per_pixel))
        x, y = Signal(range(mode.h_total)), Signal(range(mode.v_total))
        frame = Signal(8)
        last = sub == mode.fabric_per_pixel - 1
        m.d.sync += [sub.eq(0 if mode.fabric_per_pixel == 1 else sub + 1),
                     self.pixel.eq(sub == 0)]
        with m.If(last):
            m.d.sync += sub.eq(0)
            with m.If(x == mode.h_total - 1):
                m.d.sync += x.eq(0)
                with m.If(y == mode.v_total - 1):
                    m.d.sync += [y.eq(0), frame.eq(frame + 1)]
                with m.Else():
                    m.d.sync += y.eq(y + 1)
            with m.Else():
                m.d.sync += x.eq(x + 1)
        with m.If(sub == 0):        # the signals change with the pixel strobe, hold 4 clocks
            hs = (x >= mode.h_active + mode.h_front) & (x < mode.h_active + mode.h_front
                                                          + mode.h_sync)
            vs = (y >= mode.v_active + mode.v_front) & (y < mode.v_active + mode.v_front
                                                          + mode.v_sync)
            de = (x < mode.h_active) & (y < mode.v_active)
            border = (x == 0) | (x == mode.h_active - 1) | (y == 0) | (y == mode.v_active - 1)
            m.d.sync += [self.de.eq(de), self.hsync.eq(hs ^ mode.hsync_negative),
                         self.vsync.eq(vs ^ mode.vsync_negative)]
            with m.If(de & border):
                m.d.sync += [self.r.eq(15), self.g.eq(15), self.b.eq(15)]
            with m.Elif(de):
                m.d.sync += [self.r.eq(x[5:9]), self.g.eq(y[5:9]), self.b.eq((x + frame)[6:10])]
            with m.Else():
                m.d.sync += [self.r.eq(0), self.g.eq(0), self.b.eq(0)]
        return m


def gpdi_test_top(board: Board):
    """A bring-up top: the board's PLL (fabric + 125 MHz), :class:`VideoTiming`'s test
    picture in the board's video mode through :func:`gpdi_output`; LED 0 lit while pixels
    flow, LED 1 once the FIFO ever ran dry. No link, no core."""
    from amaranth import Elaboratable, Module, Signal
    from amaranth.lib import io
    from amaranth.lib.cdc import FFSynchronizer

    from copperline.boards.common import _pll_clock, add_secondary_domain
    from copperline.firmware.display import MODES

    class GpdiTestTop(Elaboratable):
        COLLISION_FREE_MEMORIES = ()         # (the synthesis flow's RTLIL pass: none here)

        def elaborate(self, platform):
            from amaranth import ClockDomain
            from amaranth.lib.cdc import ResetSynchronizer
            m = Module()
            clk, lock, clkos = _pll_clock(m, platform, board, secondary=True)
            m.domains.sync = cd_sync = ClockDomain("sync")
            m.d.comb += cd_sync.clk.eq(clk)
            m.submodules.reset_sync = ResetSynchronizer(~lock, domain="sync")
            platform.add_clock_constraint(clk, board.clock_hz)
            add_secondary_domain(m, platform, board, clkos, lock)
            m.submodules.timing = timing = VideoTiming(MODES[board.video])
            dvi = gpdi_output(m, platform, timing)
            running, dry = Signal(), Signal()
            m.submodules.running_sync = FFSynchronizer(dvi.running, running)
            m.submodules.dry_sync = FFSynchronizer(dvi.underflows != 0, dry)
            for n, s in ((0, running), (1, dry)):
                m.submodules[f"led{n}"] = led = io.Buffer(
                    "o", platform.request("led", n, dir="-"))
                m.d.comb += led.o.eq(s)
            return m

    return GpdiTestTop()


def pattern_video(board: Board):
    """A ``video`` function for ``copperline.boards.common.board_top``: the
    :class:`VideoTiming` test picture in ``board``'s video mode on the GPDI connector
    (the compositor's stand-in)."""
    from copperline.firmware.display import MODES

    def video(m, platform, top):
        m.submodules.test_picture = timing = VideoTiming(MODES[board.video])
        gpdi_output(m, platform, timing)
    return video


def build_gpdi_test(board: Board, *, build_dir=None, seeds=(1,), with_link: bool = False
                    ) -> dict:
    """Synthesise, place and route (each of ``seeds``) and pack :func:`gpdi_test_top`
    (``with_link``: the board's whole top, link and core, with :func:`pattern_video`)
    with the board build's flow (``copperline.boards.common.flow_overrides``); the build
    lands in ``<cache>/<board>-gpdi-test/`` (``-gpdi-link/`` with the link). Returns ``{"dir", "bitstream", "seeds": {seed:
    {logic, ff, bram, fmax_mhz, timing_met}}, "constraints_mhz"}`` (nextpnr's figures)."""
    import json

    from copperline.boards import common
    from copperline.cache import cache_dir

    out = cache_dir(build_dir) / f"{board.name}-gpdi-{'link' if with_link else 'test'}"
    out.mkdir(parents=True, exist_ok=True)
    env = common.toolchain_env()
    if with_link:
        from copperline.firmware.board_interface import DEFAULT_BAUD
        top = common.board_top(board, baud=DEFAULT_BAUD, video=pattern_video(board))
    else:
        top = gpdi_test_top(board)
    plan = board.platform().prepare(top, name="copper", **common.flow_overrides(board.family))
    plan.extract(str(out))
    il = out / "copper.il"
    il.write_text(common.prepare_rtlil(il.read_text(), top))
    with open(out / "build_copper.json") as f:
        commands = json.load(f)["commands"]
    seeds = tuple(dict.fromkeys(seeds)) or (1,)
    figures, constraints, pnr = {}, {}, None
    for cmd in commands:
        if cmd[0].startswith("nextpnr"):
            pnr = cmd = cmd + ["--seed", str(seeds[0])]
        argv = [common._resolve(cmd[0], env)] + cmd[1:]
        common._run_stage(common.STAGE_NAMES.get(cmd[0], cmd[0]), argv, out, env,
                          out / f"{cmd[0]}.log", None)
    figures[seeds[0]] = common._seed_figures(board, out / "copper_report.json")
    raw = json.loads((out / "copper_report.json").read_text())
    constraints = {n: round(f["constraint"], 2) for n, f in raw.get("fmax", {}).items()}
    for seed in seeds[1:]:
        names = {"copper_report.json": f"copper_report_seed{seed}.json",
                 "copper.tim": f"copper_seed{seed}.tim",
                 "copper.config": f"copper_seed{seed}.config"}
        argv = ([common._resolve(pnr[0], env)] + [names.get(a, a) for a in pnr[1:-1]]
                + [str(seed)])
        common._run_stage(f"place & route, seed {seed}", argv, out, env,
                          out / f"{pnr[0]}_seed{seed}.log", None)
        figures[seed] = common._seed_figures(board, out / names["copper_report.json"])
    report = {"dir": str(out), "bitstream": str(out / board.bitstream),
              "constraints_mhz": constraints, "seeds": figures}
    (out / "gpdi_report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":   # python -m copperline.boards.ulx3s [--link] [85F] [seed ...]
    import json
    import sys
    args = sys.argv[1:]
    with_link = "--link" in args
    args = [a for a in args if a != "--link"]
    variant = args.pop(0) if args and args[0].upper() in VARIANTS else "85F"
    report = build_gpdi_test(_board(variant.upper()), with_link=with_link,
                             seeds=tuple(int(a) for a in args) or (1,))
    print(json.dumps(report, indent=2))
