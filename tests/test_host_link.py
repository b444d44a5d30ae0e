"""Host link driver: CRC, framing, resync, retransmission, sequence wrap, events.

Against a Python model of the board (over TCP) for the failure cases it can stage, and
against the real gateware (the virtual board) for the end-to-end proof.
"""

import socket
import struct
import threading
import time

import pytest
from hypothesis import given, settings, strategies as st

from copperline.firmware import board_interface as proto
from copperline.firmware.board_interface import FrameDecoder
from copperline.host.link import Link, LinkError, LinkStatusError, LinkTimeout, open_port


# ------------------------------------------------------------------ framing ---------------

def test_crc16_ccitt_false_check_value():
    assert proto.crc16(b"123456789") == 0x29B1          # the catalogue's check value


@given(st.integers(0, 255), st.integers(0, 255), st.binary(max_size=300))
@settings(max_examples=200, deadline=None)
def test_frame_round_trip(ftype, seq, body):
    wire = proto.encode_frame(ftype, seq, body)
    assert wire[0] == wire[-1] == proto.SLIP_END
    assert proto.SLIP_END not in wire[1:-1]
    assert FrameDecoder().feed(wire) == [proto.Frame(ftype, seq, body)]


@given(st.binary(max_size=200), st.binary(max_size=60))
@settings(max_examples=200, deadline=None)
def test_resync_after_any_garbage(garbage, body):
    dec = FrameDecoder()
    frames = dec.feed(garbage + proto.encode_frame(proto.T_ECHO, 1, body))
    assert frames[-1] == proto.Frame(proto.T_ECHO, 1, body)


def test_corrupted_frame_is_counted_not_delivered():
    wire = bytearray(proto.encode_frame(proto.T_ECHO, 3, b"hello"))
    wire[4] ^= 0x10
    dec = FrameDecoder()
    assert dec.feed(bytes(wire)) == [] and dec.crc_errors == 1


def test_byte_by_byte_feed_and_bad_escape():
    dec = FrameDecoder()
    out = []
    for b in b"\xc0\x01\xdb\x99\x02\xc0" + proto.encode_frame(5, 6, b"\xc0\xdb"):
        out += dec.feed(bytes([b]))
    assert out == [proto.Frame(5, 6, b"\xc0\xdb")] and dec.framing_errors == 1


def test_encode_frame_rejects_out_of_range():
    with pytest.raises(ValueError, match="seq 256"):
        proto.encode_frame(1, 256)


# ------------------------------------------------------------------ a board model ---------

class ModelBoard:
    """The board side in Python: echo, read/write of a scratch dict, an EVENTS FIFO,
    duplicate detection (a stored response per seq parity, as the gateware), with knobs
    to lose requests or responses and to send events."""

    def __init__(self):
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = "socket://127.0.0.1:%d" % self.sock.getsockname()[1]
        self.mem = {}
        self.executed = 0
        self.lose_requests = 0
        self.lose_responses = 0
        self.silent = False
        self.answer_delays = []   # seconds to wait before answering the next requests
        self.max_body = None      # requests with a longer body never get through
        self.max_answer = None    # nor responses with a longer one
        self.trickle_s = 0.0      # seconds between the bytes of a response (a slow line)
        self.info = None          # INFO words (name -> value) to answer with, or none
        self.counts = []          # words carried by each READ and WRITE
        self.seqs = []
        self.fifo = None          # pull-mode event records (u64) popped by EVENTS reads
        #                           (None: EVENTS reads the scratch dict like the others)
        self.arrivals = 0         # requests handled (retransmissions too)
        self.lose_arrivals = set()    # the requests (by arrival number) not heard
        self.mute_arrivals = set()    # the requests whose response is lost
        self.conn = None
        self._last = {}
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        self.conn, _ = self.sock.accept()
        dec = FrameDecoder()
        while True:
            try:
                data = self.conn.recv(4096)
            except OSError:
                return
            if not data:
                return
            for f in dec.feed(data):
                self._handle(f)

    def _handle(self, f):
        if self.silent:
            return
        if self.lose_requests:
            self.lose_requests -= 1
            return
        self.arrivals += 1
        if self.arrivals in self.lose_arrivals:
            return
        if self.max_body is not None and len(f.body) > self.max_body:
            return
        self.seqs.append(f.seq)
        key = (f.seq, f.type, f.body)
        last = self._last.get(f.seq & 1)
        if last and last[0] == key:
            resp = last[1]
        else:
            self.executed += 1
            resp = proto.encode_frame(f.type | proto.RESP, f.seq, self._execute(f))
            self._last[f.seq & 1] = (key, resp)
        if self.arrivals in self.mute_arrivals:
            return
        if self.answer_delays:
            time.sleep(self.answer_delays.pop(0))
        if self.lose_responses:
            self.lose_responses -= 1
            return
        if self.max_answer is not None and len(resp) > self.max_answer:
            return
        if self.trickle_s:                    # (its header at once, as in one USB packet)
            self.conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self.conn.sendall(resp[:4])
            for b in resp[4:]:
                time.sleep(self.trickle_s)
                self.conn.sendall(bytes([b]))
            return
        self.conn.sendall(resp)

    def _execute(self, f):
        if f.type == proto.T_ECHO:
            return b"\x00" + f.body
        if f.type & 0xF0 == proto.T_WRITE:
            addr, = struct.unpack_from("<H", f.body)
            for i, w in enumerate(struct.unpack_from(f"<{(len(f.body) - 2) // 4}I", f.body, 2)):
                self.mem[addr + i] = w
            self.counts.append((len(f.body) - 2) // 4)
            return b"\x00"
        if f.type & 0xF0 == proto.T_READ:
            addr, n = struct.unpack("<HB", f.body)
            if f.type & 0xF == proto.SPACE_INFO:
                if self.info is None:
                    return bytes([proto.ST_BAD_ADDR])
                words = [self.info.get(k, 0) for k in proto.INFO_FIELDS][addr:addr + n]
                return b"\x00" + struct.pack(f"<{n}I", *words)
            if f.type & 0xF == proto.SPACE_EVENTS and self.fifo is not None:
                words = []
                for _ in range(n // 2):
                    r = self.fifo.pop(0) if self.fifo else None
                    words += ([proto.EVENT_NONE_WORD] * 2 if r is None else
                              [r & 0xFFFFFFFF, r >> 32])
                return b"\x00" + struct.pack(f"<{n}I", *words)
            self.counts.append(n)
            return b"\x00" + struct.pack(f"<{n}I", *(self.mem.get(addr + i, 0) for i in range(n)))
        return bytes([proto.ST_BAD_TYPE])

    def send_frame(self, ftype, seq, body):
        self.conn.sendall(proto.encode_frame(ftype, seq, body))

    def close(self):
        if self.conn:
            self.conn.close()
        self.sock.close()


@pytest.fixture
def model():
    board = ModelBoard()
    yield board
    board.close()


def test_request_response(model):
    with Link(model.url, timeout=0.5) as link:
        assert link.echo(b"\xc0\xdb hi") == b"\xc0\xdb hi"
        link.write(proto.SPACE_SCRATCH, 3, [1, 2, 0xFFFFFFFF])
        assert link.read(proto.SPACE_SCRATCH, 2, 4) == [0, 1, 2, 0xFFFFFFFF]
        assert link.stats.retransmits == 0


def test_retransmit_after_lost_request(model):
    model.lose_requests = 1
    with Link(model.url, timeout=0.1) as link:
        assert link.echo(b"again") == b"again"
        assert link.stats.retransmits == 1
    assert model.executed == 1


def test_retransmit_after_lost_response_executes_once(model):
    model.lose_responses = 1
    with Link(model.url, timeout=0.1) as link:
        link.write(proto.SPACE_SCRATCH, 0, [7])
        assert link.stats.retransmits == 1
    assert model.executed == 1 and model.seqs[0] == model.seqs[1]


def test_pipelined_event_reads_keep_the_order_and_stop_after_a_partial_one(model):
    model.fifo = list(range(1, 95))          # 94 records: 9 full reads of 10, then 4
    with Link(model.url, timeout=0.5) as link:
        reads = link.read_events_pipelined(10, reads=20)
    # (the read sent ahead while the partial one was answered comes back empty)
    assert [len(r) for r in reads] in ([10] * 9 + [4], [10] * 9 + [4, 0])
    assert [x for r in reads for x in r] == list(range(1, 95))
    assert model.executed == len(reads) and link.stats.retransmits == 0


def test_a_slow_consumer_of_pipelined_reads_causes_no_retransmission(model):
    """The answer to the read sent ahead arrives while the caller works on the records
    before it (longer than that read's timeout): it counts, nothing is sent again."""
    model.fifo = list(range(1, 101))
    with Link(model.url, timeout=0.5) as link:
        link.echo(b"x")                              # a round trip measured: short timeouts
        reads = link.read_events_pipelined(10, reads=10,
                                           on_read=lambda records: time.sleep(0.03))
        assert [x for r in reads for x in r] == list(range(1, 101))
        assert link.stats.retransmits == 0


def test_pipelined_event_reads_survive_lost_requests_and_answers(model):
    """A lost answer while the next read is already in flight is resent from the board's
    other slot (nothing popped twice); a lost request is simply sent again; the records
    come out in FIFO order, each once."""
    model.fifo = list(range(1, 201))
    model.mute_arrivals = {2, 5, 6}           # answers lost (two in a row: both slots)
    model.lose_arrivals = {9, 12}             # requests lost
    with Link(model.url, timeout=0.1, retries=20) as link:
        got = []
        while len(got) < 200:
            got += [x for r in link.read_events_pipelined(8, reads=6) for x in r]
    assert got == list(range(1, 201))
    assert link.stats.retransmits >= 5


def test_an_answer_sooner_than_the_retransmission_could_be_read_is_a_sample(model):
    """A slow board (a virtual board under load) answers the first attempt just after the
    host retransmitted: too soon for an answer to the retransmission (its bytes alone take
    longer on the line), so the first attempt was slow, not lost: its whole round trip is
    the sample (the turnaround learnt is the slow one), instead of every large frame
    being sent twice."""
    model.answer_delays = [0.07]
    with Link(model.url, baud=9600, timeout=0.2, retries=5) as link:
        link.policy.max_s = 0.05                        # (the first attempt times out)
        assert link.echo(b"x" * 20) == b"x" * 20       # 27 bytes: 28 ms at 9600 baud
        assert link.stats.retransmits == 1
        line = link.policy.line_s(27 + 7 + 20)
        assert link.policy.srtt >= 0.07 - line - 0.002     # from the first attempt
        link.policy.max_s = 0.2
        assert link.echo(b"y" * 20) == b"y" * 20
        assert link.stats.retransmits == 1
    assert model.executed == 2


def test_an_answer_still_coming_in_is_not_retransmitted(model):
    """A line slower than its baud rate (a virtual board below real time) delivers a
    long answer over several timeouts: as long as its bytes keep coming, the host waits
    for it instead of asking again (which would only make the board send it twice)."""
    with Link(model.url, timeout=0.5) as link:
        link.echo(b"x")                              # a round trip measured: short timeouts
        link.policy.max_s = 0.03
        model.trickle_s = 0.002                      # 47 bytes: about 0.1 s
        assert link.echo(b"y" * 40) == b"y" * 40
        assert link.stats.retransmits == 0 and link.stats.duplicates == 0
    assert model.executed == 2


def test_sequence_wraps(model):
    with Link(model.url, timeout=0.5) as link:
        link._seq = 253
        for i in range(5):
            assert link.echo(bytes([i])) == bytes([i])
    assert model.seqs == [254, 255, 0, 1, 2]


def test_timeout_names_the_port_and_attempts(model):
    model.silent = True
    with Link(model.url, timeout=0.05, retries=2) as link:
        with pytest.raises(LinkTimeout, match=r"no answer from socket://.* after 3 attempt"):
            link.echo(b"x")
        assert link.stats.retransmits == 2


def test_board_error_status_is_raised(model):
    with Link(model.url, timeout=0.5) as link:
        with pytest.raises(LinkStatusError, match="bad address"):
            link.read(proto.SPACE_INFO, 0, 1)


def test_an_unasked_frame_is_ignored_and_requests_go_on(model):
    # (a link-version-1 board sent event frames, type 0x40, unasked)
    with Link(model.url, timeout=0.5) as link:
        link.echo(b"")                      # the model has accepted the connection now
        model.send_frame(0x40, 0, b"\x09\x00\x00\x00record..")
        assert link.echo(b"after") == b"after"
        assert link.stats.duplicates == 0 and link.stats.crc_errors == 0


def test_hello_refuses_another_link_version(model):
    old = proto.LINK_VERSION - 1          # (a bitstream from before the surfaces)
    model.info = {"magic": proto.INFO_MAGIC, "link_version": old, "buf_bytes": 512,
                  "max_read_words": 126}
    with Link(model.url, timeout=0.5) as link:
        with pytest.raises(LinkError, match=rf"link version {old}, this host "
                           rf"{proto.LINK_VERSION}: rebuild and flash"):
            link.hello()
        model.info["link_version"] = proto.LINK_VERSION
        assert link.hello().link_version == proto.LINK_VERSION


def test_hello_takes_the_sizes_of_an_older_board(model):
    # a bitstream with 64-word reads and a 262-byte buffer: the driver's reads, event
    # pulls and upload frames shrink to fit it
    model.info = {"magic": proto.INFO_MAGIC, "link_version": proto.LINK_VERSION,
                  "buf_bytes": 262, "max_read_words": 64}
    with Link(model.url, timeout=0.5) as link:
        assert (link.max_read_words, link.chunk_words) == (126, 126)
        link.hello()
        assert (link.max_read_words, link.chunk_words) == (64, 64)
        model.counts.clear()
        link.upload(range(300), space=proto.SPACE_SCRATCH)
        assert link.read_many(proto.SPACE_SCRATCH, 0, 300) == list(range(300))
        assert len(link.read_events()) == 32     # (the model has one memory for all spaces)
        assert max(model.counts) == 64 and model.counts[-1] == 64
        with pytest.raises(ValueError, match="1..64"):
            link.read(proto.SPACE_SCRATCH, 0, 65)


def test_bad_url_is_a_clear_error():
    with pytest.raises(LinkError, match="cannot open 'nosuch://x'"):
        Link("nosuch://x")


def test_loop_url_opens_and_ignores_its_own_requests():
    # loop:// reads back what is written: requests come back as non-responses and are
    # ignored, so the request times out cleanly.
    with Link("loop://", timeout=0.05, retries=0) as link:
        with pytest.raises(LinkTimeout):
            link.echo(b"me")


# ------------------------------------------------------------------ the real gateware -----

class _LossyPort:
    """Wraps a pyserial port: loses the next board->host frame when asked."""

    def __init__(self, port):
        self.port = port
        self.lose_frames = 0
        self._ends = 0

    def write(self, data):
        return self.port.write(data)

    def read(self, n):
        data = self.port.read(n)
        if not self.lose_frames or not data:
            return data
        out = bytearray()
        for b in data:
            if self.lose_frames:
                if b == proto.SLIP_END:
                    self._ends += 1
                    if self._ends == 2:
                        self.lose_frames -= 1
                        self._ends = 0
                continue
            out.append(b)
        return bytes(out)

    def close(self):
        self.port.close()


@pytest.fixture(scope="module")
def virtual_board():
    from copperline.boards.virtual import VirtualBoardServer
    server = VirtualBoardServer("127.0.0.1", 0, clock_hz=12_000_000, baud=1_000_000).start()
    yield server
    server.close()


def test_virtual_board_end_to_end(virtual_board):
    with Link(virtual_board.url, timeout=2.0) as link:
        info = link.hello()
        assert info.clock_hz == 12_000_000 and info.baud == 1_000_000
        assert info.core_version == 0         # this top has no core yet
        payload = bytes(range(256))
        assert link.echo(payload) == payload
        link.upload(range(16), space=proto.SPACE_SCRATCH, chunk=5)
        assert link.read(proto.SPACE_SCRATCH, 0, 16) == list(range(16))
        with pytest.raises(LinkStatusError, match="bad address"):
            link.read(proto.SPACE_PROG, 0, 1)


def test_virtual_board_duplicate_after_lost_response(virtual_board):
    port = _LossyPort(open_port(virtual_board.url, 1_000_000))
    with Link(virtual_board.url, timeout=0.5, port=port) as link:
        before = link.read(proto.SPACE_INFO, 16, 1)[0]
        port.lose_frames = 1
        link.write(proto.SPACE_SCRATCH, 0, [0xABCD])
        assert link.stats.retransmits == 1
        after = link.read(proto.SPACE_INFO, 16, 1)[0]
        # frames_ok counts executed requests: the write once (its retransmission was a
        # duplicate, answered from the stored response), and the first read.
        assert after - before == 2


def test_read_events_keeps_records_after_an_empty_pair(model):
    # The board builds a READ of EVENTS pair by pair, popping as it goes: a pair found
    # empty can be followed by one holding a record that arrived meanwhile. That record
    # is off the board's FIFO, so the driver must keep it (stopping at the first empty
    # pair lost one reg+irq pair every few hundred ms in a real run).
    none = proto.EVENT_NONE_WORD
    first, second = 0x0000_0001_0000_0012, 0x0000_0002_0000_0022
    words = [first & 0xFFFFFFFF, first >> 32, none, none,
             second & 0xFFFFFFFF, second >> 32, none, none]
    with Link(model.url, timeout=0.5) as link:
        link.write(proto.SPACE_SCRATCH, 0, words)   # the model has one memory for all spaces
        assert link.read_events(4) == [first, second]


def test_frames_too_big_for_the_line_are_sent_again_in_halves(model):
    # a line on which no frame over ~130 bytes gets through: uploads and reads of many
    # words end up in frames that do, within the time budget of one request
    model.max_body = 130
    with Link(model.url, timeout=0.05, retries=40) as link:
        link.upload(range(300), space=proto.SPACE_SCRATCH)
        assert [model.mem[i] for i in range(300)] == list(range(300))
        assert max(model.counts) <= 32 and sum(model.counts) == 300
        model.counts.clear()
        model.max_body, model.max_answer = None, 130
        assert link.read_many(proto.SPACE_SCRATCH, 0, 300) == list(range(300))
        assert max(n for n in model.counts[-10:]) <= 31
        assert link.stats.retransmits > 0


# ------------------------------------------------------------ USB adapter tuning ----------

def _fake_sysfs(tmp_path, timer="16", vendor="0403", writable=True):
    """A sysfs tree with ttyUSB0 on interface 1 of an FTDI chip."""
    dev = tmp_path / "devices" / "usb1" / "1-2"
    iface = dev / "1-2:1.1"
    (iface / "ttyUSB0").mkdir(parents=True)
    for name, value in (("idVendor", vendor), ("busnum", "1"), ("devnum", "99")):
        (dev / name).write_text(value + "\n")
    (iface / "bInterfaceNumber").write_text("01\n")
    if writable:
        (iface / "ttyUSB0" / "latency_timer").write_text(timer + "\n")
    else:                           # (a directory: unwritable even for root)
        (iface / "ttyUSB0" / "latency_timer").mkdir()
    links = tmp_path / "bus" / "usb-serial" / "devices"
    links.mkdir(parents=True)
    (links / "ttyUSB0").symlink_to(iface / "ttyUSB0")
    return iface / "ttyUSB0" / "latency_timer"


def test_tune_port_sets_the_latency_timer_and_warns_once_about_the_rest(tmp_path, caplog,
                                                                         monkeypatch):
    from copperline.host import fpga_connection as fc
    monkeypatch.setattr(fc, "_warned", set())
    timer = _fake_sysfs(tmp_path)
    monkeypatch.setattr(fc, "_set_event_char", lambda node: [] if
                        (node.endswith("ttyUSB0")) else ["?"])
    assert fc.tune_port("/dev/ttyUSB0", sysfs=str(tmp_path)) == []
    assert timer.read_text() == "1"
    assert not caplog.records
    # the event character through pyusb: no such device here, said once
    monkeypatch.undo()
    monkeypatch.setattr(fc, "_warned", set())
    with caplog.at_level("WARNING"):
        problems = fc.tune_port("/dev/ttyUSB0", sysfs=str(tmp_path))
        assert fc.tune_port("/dev/ttyUSB0", sysfs=str(tmp_path)) == problems
    assert problems and "event character" in problems[0]
    assert len([r for r in caplog.records if r.levelname == "WARNING"]) == 1


def test_tune_port_names_what_to_do_when_the_timer_cannot_be_set(tmp_path, caplog, monkeypatch):
    from copperline.host import fpga_connection as fc
    monkeypatch.setattr(fc, "_warned", set())
    monkeypatch.setattr(fc, "_set_event_char", lambda node: [])
    _fake_sysfs(tmp_path, writable=False)
    timer = tmp_path / "bus" / "usb-serial" / "devices" / "ttyUSB0" / "latency_timer"
    with caplog.at_level("WARNING"):
        problems = fc.tune_port("/dev/ttyUSB0", sysfs=str(tmp_path))
    assert len(problems) == 1 and f"echo 1 > {timer}" in problems[0]
    assert "latency timer" in caplog.text


def test_tune_port_skips_urls_and_other_chips_silently(tmp_path, caplog, monkeypatch):
    from copperline.host import fpga_connection as fc
    monkeypatch.setattr(fc, "_warned", set())
    _fake_sysfs(tmp_path, timer="1", vendor="1a86")       # a CH340: timer only
    with caplog.at_level("WARNING"):
        assert fc.tune_port("socket://127.0.0.1:7654", sysfs=str(tmp_path)) == []
        assert fc.tune_port("loop://", sysfs=str(tmp_path)) == []
        assert fc.tune_port("/dev/ttyUSB0", sysfs=str(tmp_path)) == []
    assert not caplog.records
