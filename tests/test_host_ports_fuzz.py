"""Fuzzing harness (hypothesis): the request parser, the program validator/compiler, the
image loader, the link's frame decoder, and a live copperd fed generated request lines.

Each may only ever fail the documented way (PortsError / ProgramError / ImageError /
dropped frames; over the socket: an error response other than INTERNAL); nothing may
raise anything else, and copperd must still answer ``ping`` afterwards.

``make test`` runs a short pass (COPPER_FUZZ_EXAMPLES, default 150 examples per target).
A longer run, with hypothesis's statistics (example counts per target)::

    COPPER_FUZZ_EXAMPLES=20000 .venv/bin/python -m pytest tests/test_host_ports_fuzz.py -q \\
        -p no:cacheprovider --hypothesis-show-statistics
"""

from __future__ import annotations

import json
import os
import socket
import struct
import zlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from copperline.firmware import isa
from copperline.firmware.board_interface import FrameDecoder, encode_frame
from copperline.firmware.compiler import compile_program
from copperline.firmware.image import Image, ImageError
from copperline.firmware.program import ProgramError
from copperline.host.ports import protocol as P
from copperline.host.ports.testing import DaemonProcess

EXAMPLES = int(os.environ.get("COPPER_FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])

# Any code point, lone surrogates included (hypothesis leaves them out by default).
any_text = st.text(st.characters(blacklist_categories=()), max_size=12)
json_scalar = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70),
                        st.floats(allow_nan=False), any_text)
json_value = st.recursive(json_scalar, lambda kids: st.one_of(
    st.lists(kids, max_size=4), st.dictionaries(any_text, kids, max_size=4)), max_leaves=20)

OPS = ("WAIT", "MOVE", "ADD", "IRQ", "JUMP", "LOOP", "FENCE", "BIND_LAYER", "HALT", "NOP")
FIELDS = ("us", "vsync", "reg", "value", "delta", "tag", "label", "count", "timeline",
          "layer", "surface")
op_value = st.one_of(st.integers(-2**40, 2**40), any_text, st.booleans(), st.none(),
                     st.sampled_from(["layer[1].x", "layer[2].alpha", "layer[9].z", "t", "L"]))
program_op = st.one_of(
    st.fixed_dictionaries({"op": st.sampled_from(OPS)},
                          optional={f: op_value for f in FIELDS}),
    st.fixed_dictionaries({"label": st.sampled_from(["t", "L", ""])}),
    json_value)
program_doc = st.one_of(
    st.fixed_dictionaries({"version": st.sampled_from([1, 2, "1", None]),
                           "program": st.lists(program_op, max_size=8)}),
    json_value)


def _line(obj) -> bytes:
    # ensure_ascii: lone surrogates travel as \\udxxx escapes, as a hostile client sends them
    return json.dumps(obj, ensure_ascii=True).encode()


request_obj = st.one_of(
    st.fixed_dictionaries({"cmd": st.sampled_from(P.COMMANDS + ("nope", ""))},
                          optional={"id": json_scalar, "args": json_value, "caps": json_scalar,
                                    "req": json_scalar, "program": program_doc,
                                    "events": json_value, "limit": json_scalar,
                                    "timeline": json_scalar, "value": json_scalar}),
    json_value)


# -- the request parser ----------------------------------------------------------------------

@FUZZ
@given(st.one_of(st.binary(max_size=200), request_obj.map(_line)))
def test_fuzz_request_parser(line):
    try:
        req = P.parse_request(line)
    except P.PortsError as err:
        assert err.code == "BAD_CMD" and err.message
        P.encode(P.error_response(err.req_id, err))
        return
    # whatever parsed can be echoed back
    P.encode(P.ok_response(req.req_id, {"args": req.args, "cmd": req.cmd}))


# -- the program validator and compiler ------------------------------------------------------

@FUZZ
@given(program_doc)
def test_fuzz_program_validator(doc):
    try:
        image = compile_program(doc)
    except ProgramError as exc:
        assert str(exc)
        return
    assert Image.from_bytes(image.to_bytes()) == image


# -- the image loader --------------------------------------------------------------------------

_BASE = compile_program({"version": 1, "program": [
    {"label": "t"}, {"op": "WAIT", "us": 5}, {"op": "MOVE", "reg": "layer[1].x", "value": 3},
    {"op": "IRQ", "tag": "a"}, {"op": "FENCE", "timeline": "vk", "value": 1},
    {"op": "LOOP", "count": 2, "label": "t"}]}).to_bytes()


def _fix_crc(data: bytes) -> bytes:
    if len(data) < 4:
        return data
    return data[:-4] + struct.pack("<I", zlib.crc32(data[:-4]))


@FUZZ
@given(st.lists(st.tuples(st.integers(0, len(_BASE) - 1), st.integers(0, 255)), max_size=6),
       st.integers(0, len(_BASE)), st.booleans(), st.binary(max_size=16))
def test_fuzz_image_loader(flips, cut, fix_crc, tail):
    data = bytearray(_BASE)
    for pos, byte in flips:
        data[pos] = byte
    data = bytes(data[:cut]) + tail
    if fix_crc:       # get past the CRC, into the section and code checks
        data = _fix_crc(data)
    try:
        image = Image.from_bytes(data, "<fuzz>")
    except ImageError as exc:
        assert str(exc).startswith("<fuzz>")
        return
    image.sha256()
    for word in image.code:      # what copperd's register check decodes
        ins = isa.decode(word)
        if ins.name in ("MOVE", "ADD"):
            isa.register_name(ins.fields["reg"])


# -- the link's frame decoder ------------------------------------------------------------------

@FUZZ
@given(st.binary(max_size=300), st.integers(0, 255), st.integers(0, 255), st.binary(max_size=64),
       st.binary(max_size=40))
def test_fuzz_frame_decoder(noise, ftype, seq, body, trailer):
    dec = FrameDecoder(max_bytes=512)
    frames = dec.feed(noise)
    assert all(0 <= f.type <= 255 for f in frames)
    # After any garbage a good frame still gets through (resynchronisation on 0xC0).
    got = dec.feed(encode_frame(ftype, seq, body) + trailer)
    assert any(f.type == ftype and f.seq == seq and f.body == body for f in got)


# -- a live daemon -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def daemon():
    d = DaemonProcess("--test-hooks", "--cap", "root=*", "--cap", "r1=*:layer[1].*",
                      "--cap", "=ping,list,status,load,start,stop,unload,subscribe,fence,regs,wait,"
                      "cancel,unsubscribe,stats")
    d.start()
    yield d
    assert d.stop() == 0
    assert "Traceback" not in d.stderr, d.stderr[-3000:]


class _Conn:
    def __init__(self, path):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(10)
        self.sock.connect(path)
        self.f = self.sock.makefile("rb")

    def ask(self, line: bytes) -> dict | None:
        self.sock.sendall(line.replace(b"\n", b" ") + b"\n")
        while True:
            raw = self.f.readline()
            if not raw:
                return None
            msg = json.loads(raw)
            if "event" not in msg:
                return msg


@FUZZ
@given(st.lists(st.one_of(request_obj.map(_line), st.binary(max_size=80)), min_size=1, max_size=5))
def test_fuzz_live_daemon_never_answers_internal(daemon, lines):
    c = _Conn(daemon.path)
    try:
        for line in lines:
            if not line.strip(b" \n"):
                continue
            r = c.ask(line)
            if r is None:        # a line over the limit closes; nothing here is that long
                pytest.fail(f"connection closed after {line[:200]!r}")
            if not r["ok"]:
                assert r["error"]["code"] != "INTERNAL", (line[:300], r)
        r = c.ask(b'{"cmd":"ping"}')
        assert r["ok"], r
        # leave no programs behind (slots are few): unload what is loaded
        progs = c.ask(b'{"cmd":"list"}')["programs"]
        for p in progs:
            c.ask(b'{"cmd":"unload","id":%d}' % p["id"])
    finally:
        c.sock.close()
