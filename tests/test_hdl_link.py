"""Link gateware (amaranth.sim): framing, CRC, resync after garbage, idle timeout,
duplicate detection, status codes, event reads, and the full path through the UART pins."""

import random
import struct

import pytest
from amaranth.sim import Simulator

from copperline.hdl.link import info_words
from copperline.hdl.top import LinkTop
from copperline.firmware import board_interface as proto
from copperline.firmware.board_interface import DEFAULT_BAUD

CLOCK = 12_000_000
TIMEOUT_US = 20          # idle timeout of the simulated top: 240 cycles


def run_bytes(script, *, dut=None, gap=2, settle=1500):
    """Feed ``script`` (bytes to send, or ints = idle cycles) to a byte-level top;
    return the decoded frames it sent and the decoder (for its error counters)."""
    dut = dut or LinkTop(clock_hz=CLOCK, byte_io=True, idle_timeout_us=TIMEOUT_US)
    out = bytearray()
    sim = Simulator(dut)
    sim.add_clock(1 / CLOCK)

    async def collect(ctx):
        ctx.set(dut.tx.ready, 1)
        while True:
            if ctx.get(dut.tx.valid):
                out.append(ctx.get(dut.tx.payload))
            await ctx.tick()

    async def feed(ctx):
        for item in script:
            if isinstance(item, int):
                await ctx.tick().repeat(item)
                continue
            for b in item:
                ctx.set(dut.rx.payload, b)
                ctx.set(dut.rx.valid, 1)
                await ctx.tick()
                ctx.set(dut.rx.valid, 0)
                if gap:
                    await ctx.tick().repeat(gap)
        await ctx.tick().repeat(settle)

    sim.add_testbench(collect, background=True)
    sim.add_testbench(feed)
    sim.run()
    dec = proto.FrameDecoder()
    return dec.feed(bytes(out)), dec


def req(ftype, seq, body=b""):
    return proto.encode_frame(ftype, seq, body)


def read(space, addr, count, seq):
    return req(proto.T_READ | space, seq, struct.pack("<HB", addr, count))


def words(frame):
    assert frame.body[0] == proto.ST_OK, frame
    return list(struct.unpack(f"<{(len(frame.body) - 1) // 4}I", frame.body[1:]))


def test_echo_with_bytes_that_need_escaping():
    body = bytes([0xC0, 0xDB, 0xDC, 0xDD, 0x00, 0xFF]) * 5
    frames, dec = run_bytes([req(proto.T_ECHO, 7, body)])
    assert frames == [proto.Frame(proto.T_ECHO | proto.RESP, 7, b"\x00" + body)]
    assert dec.crc_errors == 0


def test_echo_and_identify_with_the_transmit_buffer_read_through_a_register():
    # (Link(tx_outreg=True), the ECP5 boards' link: a clock more per byte, the same frames)
    dut = LinkTop(clock_hz=CLOCK, byte_io=True, idle_timeout_us=TIMEOUT_US, link_tx_outreg=True)
    body = bytes([0xC0, 0xDB, 0x00, 0xFF]) * 3
    frames, dec = run_bytes([req(proto.T_ECHO, 7, body), 600, read(proto.SPACE_INFO, 0, 16, 8)],
                            dut=dut)
    assert frames[0] == proto.Frame(proto.T_ECHO | proto.RESP, 7, b"\x00" + body)
    assert words(frames[1]) == info_words(clock_hz=CLOCK, baud=DEFAULT_BAUD)
    assert dec.crc_errors == 0


def test_identify_reads_info_words():
    frames, _ = run_bytes([read(proto.SPACE_INFO, 0, 16, 1)])
    w = words(frames[0])
    assert w == info_words(clock_hz=CLOCK, baud=DEFAULT_BAUD)
    assert w[0] == proto.INFO_MAGIC and w[2] == CLOCK


def test_scratch_write_then_read_back():
    data = [0xDEADBEEF, 0x000000C0, 0x12345678]
    frames, _ = run_bytes([
        req(proto.T_WRITE | proto.SPACE_SCRATCH, 1, struct.pack("<H3I", 4, *data)), 300,
        read(proto.SPACE_SCRATCH, 3, 5, 2)])
    assert frames[0].body == b"\x00"
    assert words(frames[1]) == [0] + data + [0]


def test_status_codes():
    frames, _ = run_bytes([
        req(0x33, 1), 200,                                                     # unknown type
        req(proto.T_WRITE | proto.SPACE_SCRATCH, 2, b"\x00\x00\x01"), 200,    # not whole words
        read(proto.SPACE_SCRATCH, 0, 0, 3), 200,                               # count 0
        read(proto.SPACE_SCRATCH, 0, proto.MAX_READ_WORDS + 1, 4), 200,       # count too big
        read(proto.SPACE_PROG, 0, 1, 5), 200,                                  # no core: no PROG
        read(proto.SPACE_SCRATCH, 15, 2, 6), 200,                              # runs off the end
        req(proto.T_WRITE | proto.SPACE_INFO, 7, struct.pack("<HI", 0, 1)),   # INFO is read-only
    ])
    assert [(f.seq, f.body[0]) for f in frames] == [
        (1, proto.ST_BAD_TYPE), (2, proto.ST_BAD_LEN), (3, proto.ST_BAD_LEN),
        (4, proto.ST_BAD_LEN), (5, proto.ST_BAD_ADDR), (6, proto.ST_BAD_ADDR),
        (7, proto.ST_BAD_ADDR)]


def test_bad_crc_is_dropped_and_counted_then_next_frame_works():
    good = req(proto.T_ECHO, 9, b"abc")
    bad = bytearray(good)
    bad[3] ^= 0x01
    frames, _ = run_bytes([bytes(bad), 200, good, 400, read(proto.SPACE_INFO, 16, 2, 10)])
    assert frames[0] == proto.Frame(proto.T_ECHO | proto.RESP, 9, b"\x00abc")
    frames_ok, frames_bad = words(frames[1])
    assert (frames_ok, frames_bad) == (2, 1)
    assert len(frames) == 2


def test_resynchronises_after_garbage():
    rng = random.Random(1)
    garbage = bytes(rng.randrange(256) for _ in range(300)) + b"\xdb\xdb\xc0\xdb"
    frames, _ = run_bytes([garbage, req(proto.T_ECHO, 3, b"hi")])
    assert frames[-1] == proto.Frame(proto.T_ECHO | proto.RESP, 3, b"\x00hi")


def test_bad_escape_and_short_frames_are_dropped():
    frames, _ = run_bytes([b"\xc0\x02\xdb\x41\x02\x03\x04\xc0", b"\xc0\x02\x01\xc0", 200,
                           read(proto.SPACE_INFO, 17, 1, 4)])
    assert len(frames) == 1 and words(frames[0]) == [2]


def test_idle_timeout_clears_a_half_received_frame():
    first = req(proto.T_ECHO, 1, b"first frame, cut short")
    second = req(proto.T_ECHO, 2, b"second")[1:]       # no leading delimiter
    # Without the timeout the cut frame and the second one would merge into one bad frame.
    frames, _ = run_bytes([first[:12], 12 * TIMEOUT_US + 50, second, 400,
                           read(proto.SPACE_INFO, 16, 3, 3)])
    assert frames[0] == proto.Frame(proto.T_ECHO | proto.RESP, 2, b"\x00second")
    assert words(frames[1]) == [2, 0, 1]     # frames_ok, frames_bad, rx_timeouts


def test_no_timeout_between_bytes_that_keep_coming():
    frame = req(proto.T_ECHO, 5, b"slow but steady")
    frames, _ = run_bytes([frame], gap=12 * TIMEOUT_US - 30)
    assert frames == [proto.Frame(proto.T_ECHO | proto.RESP, 5, b"\x00slow but steady")]


def test_duplicate_request_resends_response_without_executing_again():
    write = req(proto.T_WRITE | proto.SPACE_SCRATCH, 200, struct.pack("<HI", 0, 0xC0FFEE))
    frames, _ = run_bytes([write, 300, write, 300, read(proto.SPACE_INFO, 16, 1, 201)])
    assert frames[0] == frames[1] == proto.Frame(0x9F, 200, b"\x00")
    assert words(frames[2]) == [2]            # the write counted once, then the read


def test_pipelined_request_is_taken_while_a_response_goes_out_and_both_stay_resendable():
    """Request b arrives while a's response is still being sent (the receive buffer is
    free once a was executed); a's retransmission after b was executed gets a's stored
    response (the other response slot), b's gets b's, and nothing runs twice."""
    # a: ~160 cycles to execute (registered bus decode), then ~175 cycles of response on the
    # byte stream; b comes 200 cycles after a, while that response goes out
    a = read(proto.SPACE_INFO, 0, 20, 10)
    b = req(proto.T_WRITE | proto.SPACE_SCRATCH, 11, struct.pack("<HI", 0, 0xC0FFEE))
    frames, _ = run_bytes([a, 200, b, 600, a, 600, b, 600, read(proto.SPACE_INFO, 16, 4, 12)],
                          gap=0)
    assert [f.seq for f in frames] == [10, 11, 10, 11, 12]
    assert frames[2] == frames[0] and frames[3] == frames[1]
    assert words(frames[4]) == [3, 0, 0, 0]    # frames_ok: a, b, the read; nothing dropped


def test_same_seq_with_other_content_is_a_new_request():
    frames, _ = run_bytes([req(proto.T_ECHO, 8, b"a"), 200, req(proto.T_ECHO, 8, b"b")])
    assert [f.body for f in frames] == [b"\x00a", b"\x00b"]


def test_sequence_wraps():
    script = []
    for seq in (254, 255, 0, 1):
        script += [req(proto.T_ECHO, seq, bytes([seq])), 200]
    frames, _ = run_bytes(script)
    assert [f.seq for f in frames] == [254, 255, 0, 1]


@pytest.mark.parametrize("gap", [11, 15])
def test_bytes_arriving_while_busy_are_counted(gap):
    # (bytes 12 clocks apart: the counters are exact down to there, Link._counters; a
    # UART delivers a byte every ten bit times, 40 clocks at least)
    big = read(proto.SPACE_INFO, 0, 16, 1)
    frames, _ = run_bytes([big + b"\x55" * 7, 1500, read(proto.SPACE_INFO, 16, 4, 2)],
                          gap=gap)
    assert words(frames[1]) == [2, 0, 0, 7]     # frames_ok (the read too), frames_bad, rx_timeouts, rx_dropped


def test_full_path_through_uart_pins():
    """Bit-level: UART rx pin -> link -> UART tx pin, at the default rate (3 Mbaud on a
    12 MHz clock: 4 clocks per bit)."""
    dut = LinkTop(clock_hz=CLOCK)
    frame = req(proto.T_ECHO, 42, b"\xc0pins\xdb")
    div = CLOCK // DEFAULT_BAUD
    line_out = []
    sim = Simulator(dut)
    sim.add_clock(1 / CLOCK)

    async def drive(ctx):
        ctx.set(dut.uart_rx, 1)
        await ctx.tick().repeat(50)
        for b in frame:
            for bit in [0] + [(b >> i) & 1 for i in range(8)] + [1]:
                ctx.set(dut.uart_rx, bit)
                await ctx.tick().repeat(div)
        await ctx.tick().repeat(div * 10 * 30)

    async def sample(ctx):
        while True:
            await ctx.tick()
            line_out.append(ctx.get(dut.uart_tx))

    sim.add_testbench(sample, background=True)
    sim.add_testbench(drive)
    sim.run()
    # Decode the tx line: find start bits, sample mid-bit.
    out, i = bytearray(), 0
    while i < len(line_out):
        if line_out[i] == 0:
            bits = [line_out[i + div // 2 + div * k] for k in range(10)]
            assert bits[9] == 1, "stop bit"
            out.append(sum(b << k for k, b in enumerate(bits[1:9])))
            i += div * 10 - div // 2
        else:
            i += 1
    assert proto.FrameDecoder().feed(bytes(out)) == [
        proto.Frame(proto.T_ECHO | proto.RESP, 42, b"\x00\xc0pins\xdb")]


# ------------------------------------------------------------------ with the core ---------

def test_core_behind_the_link_runs_an_uploaded_program():
    """Upload over the link, start slot 1, read status and registers, get the IRQ event
    with a cycle stamp exactly WAIT us after the start (3 MHz core cycle: 4 phases)."""
    from copperline.firmware.compiler import compile_program
    from copperline.firmware import isa
    from copperline.hdl.top import CoreConfig
    img = compile_program({"version": 1, "program": [
        {"op": "MOVE", "reg": "layer[1].x", "value": 104},
        {"op": "WAIT", "us": 10},
        {"op": "IRQ", "tag": "t"},
        {"op": "HALT"}]})
    dut = LinkTop(clock_hz=CLOCK, byte_io=True, idle_timeout_us=TIMEOUT_US,
                  core=CoreConfig(contexts=4, program_words=256))
    base = 1 * 256
    words_le = struct.pack(f"<H{len(img.code)}I", base, *img.code)
    reg = isa.register_index(1, "x")
    frames, _ = run_bytes([
        read(proto.SPACE_INFO, 0, 16, 1), 300,
        req(proto.T_WRITE | proto.SPACE_PROG, 2, words_le), 300,
        req(proto.T_WRITE | proto.SPACE_CTL, 3, struct.pack("<HI", 1, 1)), 1500,
        read(proto.SPACE_STATUS, 4, 4, 4), 300,
        read(proto.SPACE_REGS, reg, 1, 5), 300,
        req(proto.T_WRITE | proto.SPACE_CTL, 6, struct.pack("<HI", 1, 9)), 300,   # bad value
        req(proto.T_WRITE | proto.SPACE_PROG, 7, struct.pack("<HI", 4 * 256, 0)), 300,  # no slot 4
        read(proto.SPACE_EVENTS, 0, 8, 8), 600,
        req(proto.T_WRITE | proto.SPACE_CTL, 9, struct.pack("<HI", 0x101, 1)),   # no such address
    ], dut=dut, settle=3000)
    resp = frames
    info = dict(zip(proto.INFO_FIELDS, words(resp[0])))
    assert (info["clock_hz"], info["fabric_hz"], info["contexts"], info["core_version"]) == \
        (3_000_000, CLOCK, 4, isa.ISA_VERSION)
    assert [f.body for f in resp[1:3]] == [b"\x00", b"\x00"]
    state, pc, _cycle, dropped = words(resp[3])
    assert (state, pc, dropped) == (4, 3, 0)          # DONE at the HALT
    assert words(resp[4]) == [104]
    assert [f.body[0] for f in resp[5:7]] == [proto.ST_BAD_ADDR, proto.ST_BAD_ADDR]
    # (the board sends nothing unasked: the records wait to be read)
    assert [f.type for f in frames] == [t | proto.RESP for t in (
        proto.T_READ, proto.T_WRITE | proto.SPACE_PROG, proto.T_WRITE | proto.SPACE_CTL,
        proto.T_READ | proto.SPACE_STATUS, proto.T_READ | proto.SPACE_REGS,
        proto.T_WRITE | proto.SPACE_CTL, proto.T_WRITE | proto.SPACE_PROG,
        proto.T_READ | proto.SPACE_EVENTS, proto.T_WRITE | proto.SPACE_CTL)]
    w = words(resp[7])
    evs = [hi << 32 | lo for lo, hi in zip(w[::2], w[1::2]) if lo != proto.EVENT_NONE_WORD]
    assert resp[8].body[0] == proto.ST_BAD_ADDR        # 0x101 (link version 1's event mode)
    kinds = [e & 7 for e in evs]
    stamps = [e >> 30 & 0xFFFFFFFF for e in evs]      # kind 3, started 1, slot 2, payload 24
    assert evs[0] >> 3 & 1 and (evs[0] >> 4 & 3) == 1  # started, slot 1
    assert 2 in kinds                                  # the IRQ
    irq_at = stamps[kinds.index(2)]
    assert irq_at - stamps[0] == 1 + 10 * 3            # MOVE (1 cycle), then WAIT 10 us


def test_events_are_read_and_a_retransmission_pops_nothing():
    """READ EVENTS returns the records two words each, then the empty marker; the same READ again (a retransmission) gets the stored answer
    and pops nothing more; START_TB (CTL 4) makes the start global cycle 0."""
    from copperline.firmware.compiler import compile_program
    from copperline.hdl.top import CoreConfig
    from copperline.firmware.board_interface import decode_record
    from copperline.firmware.core_events import RecordConverter
    img = compile_program({"version": 1, "program": [
        {"op": "IRQ", "tag": "a"}, {"op": "WAIT", "us": 2}, {"op": "IRQ", "tag": "b"},
        {"op": "HALT"}]})
    dut = LinkTop(clock_hz=CLOCK, byte_io=True, idle_timeout_us=TIMEOUT_US,
                  core=CoreConfig(contexts=4, program_words=256))
    ev_read = read(proto.SPACE_EVENTS, 0, 8, 5)
    frames, _ = run_bytes([
        req(proto.T_WRITE | proto.SPACE_PROG, 2, struct.pack(f"<H{len(img.code)}I", 0, *img.code)),
        300,
        req(proto.T_WRITE | proto.SPACE_CTL, 3, struct.pack("<HI", 0, proto.CTL_START_TB)), 600,
        ev_read, 600,
        ev_read, 600,                        # retransmission: same seq and CRC
        read(proto.SPACE_EVENTS, 0, 2, 6), 300,
        req(proto.T_WRITE | proto.SPACE_EVENTS, 7, struct.pack("<HI", 0, 0)),
    ], dut=dut, settle=600)
    resp = [f for f in frames if f.type & proto.RESP]
    assert len(resp) == len(frames)
    assert [f.body[0] for f in resp[:2]] == [proto.ST_OK] * 2
    w = words(resp[2])
    assert words(resp[3]) == w                              # stored response, same records
    recs = [hi << 32 | lo for lo, hi in zip(w[::2], w[1::2]) if lo != proto.EVENT_NONE_WORD]
    assert len(recs) == 3 and w[6:] == [proto.EVENT_NONE_WORD] * 2
    conv = RecordConverter(3_000_000)
    conv.set_slot(0, 1, img)
    evs = [e for r in recs for e in conv.convert(decode_record(r, 2), decode_record(r, 2).timestamp)]
    assert [(e.get("tag") or e["state"], e["cycle"]) for e in evs] == \
        [("running", 0), ("a", 0), ("b", 1 + 2 * 3), ("done", 2 + 2 * 3)]
    assert decode_record(recs[0], 2).timestamp == 0          # START_TB: global cycle 0
    assert words(resp[4]) == [proto.EVENT_NONE_WORD] * 2     # nothing popped twice
    assert resp[5].body[0] == proto.ST_BAD_ADDR              # EVENTS is read-only
