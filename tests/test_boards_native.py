"""The compiled virtual boards' harness (both engines): the gated link clock and the
core's warp (with the line catching up) change nothing but speed.

Unpaced and without the idle skip, the board is a deterministic function of the bytes it
is fed (they go onto the line back to back), so the same input must give byte-identical
output with the link clock gated (the default) and with ``--no-gate``, and warped or not.
The output carries
cycle stamps (status reads, event frames), so a single clock of difference shows; and each output byte comes with the cycle it
left the board in (``--stamp``).
"""

from __future__ import annotations

import random
import struct
import subprocess

import pytest

from copperline.firmware.compiler import compile_program
from copperline.firmware import board_interface as proto

FABRIC_HZ = 12_000_000
BAUD = 1_000_000

PROGRAM = {"version": 1, "program": [
    {"label": "top"},
    {"op": "WAIT", "us": 700},        # slower than an event frame: the link idles
    {"op": "IRQ", "tag": "tick"},
    {"op": "MOVE", "reg": "layer[2].x", "value": 7},
    {"op": "JUMP", "label": "top"}]}


@pytest.fixture(scope="module", params=["verilator", "cxxrtl"])
def board_exe(request):
    from copperline.boards.native_board import build_simulator
    from copperline.boards.registry import get_board
    from copperline.boards.virtual import make_top, warp_params
    top = make_top(FABRIC_HZ, BAUD, get_board("icebreaker").core_config(), byte_io=False)
    return build_simulator(top, engine=request.param), warp_params(top)


def _frames():
    """A frame builder with its own sequence numbers: ``(write, read)``."""
    seq = iter(range(1, 256))

    def frame(ftype, body=b""):
        return proto.encode_frame(ftype, next(seq), body)

    def write(space, addr, words):
        return frame(proto.T_WRITE | space, proto.write_body(addr, words))

    def read(space, addr, count):
        return frame(proto.T_READ | space, proto.read_body(addr, count))
    return write, read


def _script(gaps, bursts, tail: int) -> bytes:
    out = [struct.pack("<II", gap, len(b)) + b for gap, b in zip(gaps, bursts)]
    out.append(struct.pack("<II", tail, 0))              # let the last answers out
    return b"".join(out)


def _session() -> bytes:
    """A ``--replay`` script touching every link path, with idle gaps of varied length
    between the requests: identify, upload, start, noise, a bad CRC, a retransmission,
    status reads while the program runs, a frame cut off and a bad escape both ended by
    the idle timeout, then event and register reads."""
    rng = random.Random(5)
    write, read = _frames()
    code = list(compile_program(PROGRAM).code)
    bad = bytearray(read(proto.SPACE_STATUS, 0, 4))
    bad[3] ^= 0x40                                          # a CRC error
    again = read(proto.SPACE_STATUS, 0, 4)
    bursts = [read(proto.SPACE_INFO, 0, 16), write(proto.SPACE_PROG, 0, code),
              write(proto.SPACE_CTL, 0, [proto.CTL_START_TB]), b"\x00\xff\xc0\x12\xdb\x33\xc0",
              bytes(bad), again, again]
    bursts += [read(proto.SPACE_STATUS, 0, 4) for _ in range(30)]
    cut = len(bursts)
    bursts += [read(proto.SPACE_STATUS, 0, 4)[:6],          # cut off ...
               b"\xc0\xdb\x33"]                           # ... a bad escape before any byte
    for _ in range(15):
        bursts += [read(proto.SPACE_EVENTS, 0, 8), read(proto.SPACE_REGS, 10, 1)]
    bursts.append(read(proto.SPACE_INFO, 16, 4))   # the link's counters: ok, bad, timeouts, dropped
    gaps = [rng.choice((0, 1, 7, 500, 3000, 6000, 20000)) for _ in bursts]
    gaps[cut + 1] = gaps[cut + 2] = 130_000                 # > the 10 ms idle timeout
    gaps[-1] = 20_000                                       # the counters, answered
    return _script(gaps, bursts, 50_000)


def _run(exe, warp: tuple[int, int], *extra: str, session: bytes | None = None
         ) -> tuple[bytes, dict]:
    from copperline.boards.native_board import NativeBoardLink, parse_stats
    args = NativeBoardLink(exe, None, clock_hz=FABRIC_HZ, baud=BAUD, pace=False,
                           idle_skip=False, warp_phases=warp[0], warp_max=warp[1]).args
    r = subprocess.run([*args, "--replay", "--stamp", *extra],
                       input=_session() if session is None else session,
                       capture_output=True, timeout=120)
    assert r.returncode == 0, r.stderr.decode()
    stats = [parse_stats(line) for line in r.stderr.decode().splitlines()]
    return r.stdout, [s for s in stats if s is not None][-1]


def _records_read(frames) -> int:
    """The event records carried by the EVENTS answers among ``frames``."""
    words = [w for f in frames if f.type == proto.T_READ | proto.SPACE_EVENTS | proto.RESP
             for w in struct.unpack(f"<{(len(f.body) - 1) // 4}I", f.body[1:])]
    return sum(lo != proto.EVENT_NONE_WORD for lo in words[::2])


def test_gated_link_clock_gives_the_same_bytes(board_exe):
    exe, warp = board_exe
    gated, g = _run(exe, warp)
    plain, p = _run(exe, warp, "--no-gate")
    assert gated == plain
    assert g.cycles == p.cycles
    # the session was real: answers and event records came back ...
    frames = proto.FrameDecoder().feed(gated[8::9])
    assert len(frames) > 40             # (requests sent back to back are partly dropped)
    assert _records_read(frames) >= 3
    # ... and the gate did its job: the link was clocked only part of the time
    assert p.link_ticks == p.ticks + p.line_ticks
    assert g.link_ticks < p.ticks


def _busy_line_session() -> bytes:
    """The program waiting while long responses go out: 126-word register reads (5 ms on
    the line each), status and event reads; the gaps leave the line busy sending for much
    of the time."""
    write, read = _frames()
    code = list(compile_program(PROGRAM).code)
    bursts = [write(proto.SPACE_PROG, 0, code), write(proto.SPACE_CTL, 0, [proto.CTL_START_TB])]
    gaps = [0, 0]
    for i in range(6):
        bursts += [read(proto.SPACE_REGS, 0, proto.MAX_READ_WORDS), read(proto.SPACE_STATUS, 0, 4),
                   read(proto.SPACE_EVENTS, 0, 2)]
        gaps += [20_000 + 9_000 * i, 35_000, 35_000]
    for i in range(8):
        bursts += [read(proto.SPACE_EVENTS, 0, 8), read(proto.SPACE_REGS, 0, proto.MAX_READ_WORDS)]
        gaps += [3_000 + 17_000 * i, 60_000]
    return _script(gaps, bursts, 200_000)


def test_warp_with_the_line_catching_up_gives_the_same_bytes(board_exe):
    """Warped while responses go out (the line and the link clocked
    alone to catch up), the board sends the same bytes at the same cycles as unwarped."""
    exe, warp = board_exe
    session = _busy_line_session()
    warped, w = _run(exe, warp, session=session)
    plain, p = _run(exe, (0, 0), session=session)
    assert warped == plain         # each byte with its cycle stamp
    frames = proto.FrameDecoder().feed(warped[8::9])
    assert len(frames) == 2 + 6 * 3 + 8 * 2                   # every request answered
    assert _records_read(frames) >= 10
    # the warp did its work, also while bytes went out: the line caught up alone
    assert p.warped == 0 and w.warped > 0
    assert w.line_ticks > 0
    assert w.ticks < 0.75 * p.ticks


@pytest.mark.parametrize("clock_hz, baud", [(48_000_000, 12_000_000), (25_000_000, 3_000_000)],
                         ids=["12M-at-48MHz", "3M-at-25MHz-fractional"])
def test_the_line_at_the_fastest_rates_a_fabric_clock_allows(clock_hz, baud):
    """The link-only top through the Verilator harness at 4 clocks per bit (12 Mbaud on
    the iCEBreaker's 48 MHz PLL clock) and at a fractional period (3 Mbaud on the ULX3S's
    25 MHz: 8 1/3 clocks per bit): every byte through both ways."""
    from copperline.boards.virtual import VirtualBoardServer
    from copperline.host.link import Link
    srv = VirtualBoardServer("127.0.0.1", 0, clock_hz=clock_hz, baud=baud,
                             engine="verilator").start()
    try:
        with Link(srv.url, baud=baud, timeout=2.0) as link:
            info = link.hello()
            assert (info.baud, info.fabric_hz) == (baud, clock_hz)
            data = bytes(range(256)) + bytes([0xC0, 0xDB]) * 100
            assert link.echo(data) == data
            link.write(proto.SPACE_SCRATCH, 0, [0xC0DBC0DB, *range(15)])
            assert link.read(proto.SPACE_SCRATCH, 0, 16) == [0xC0DBC0DB, *range(15)]
            # every byte back intact (a simulator slowed down by a busy machine may make
            # the host retransmit, and the board drop the bytes of that: not the line)
            assert link.stats.crc_errors == link.stats.framing_errors == 0
    finally:
        srv.close()
