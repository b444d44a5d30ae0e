"""copperd's ports server against a live daemon: commands, errors, limits, backpressure,
capabilities, SCM_RIGHTS and clean disconnects."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest

from copperline.host.ports.testing import DaemonProcess
from tests.support import SHORT, TICK, Raw, poll, served

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
@pytest.fixture(scope="module")
def daemon():
    d = DaemonProcess("--test-hooks").start()
    yield d
    assert d.stop() == 0
    assert "Traceback" not in d.stderr, d.stderr


@pytest.fixture
def conn(daemon):
    c = Raw(daemon.path)
    yield c
    c.close()


def test_ping_matches_the_seed_shape(conn):
    r = conn.req({"cmd": "ping"})
    assert r["ok"] is True and r["name"] == "copperd" and r["protocol"] == 0
    assert isinstance(r["version"], str) and r["result"]["name"] == "copperd"


def test_request_ids_are_echoed_string_or_int(conn):
    assert conn.req({"id": "abc", "cmd": "ping"})["id"] == "abc"
    assert conn.req({"id": 17, "cmd": "ping", "args": {}})["id"] == 17


def test_program_lifecycle_flat_and_args_forms(conn):
    r = conn.req({"cmd": "load", "program": TICK})
    pid = r["id"]
    assert r["ok"] and isinstance(pid, int) and r["result"]["id"] == pid
    r = conn.req({"id": "L2", "cmd": "load", "args": {"program": TICK}})
    assert r["id"] == "L2" and r["result"]["id"] == pid + 1
    assert conn.req({"cmd": "start", "id": pid}) == {"ok": True, "id": pid, "result": {"id": pid}}
    st = conn.req({"cmd": "status", "id": pid})
    assert st["state"] == "running" and isinstance(st["pc"], int) and st["result"]["id"] == pid
    st = conn.req({"id": "s1", "cmd": "status", "args": {"id": pid}})
    assert st["id"] == "s1" and st["result"]["id"] == pid and st["state"] == "running"
    progs = conn.req({"cmd": "list"})["programs"]
    assert {"id": pid, "state": "running"}.items() <= next(p for p in progs if p["id"] == pid).items()
    assert conn.req({"cmd": "stop", "id": pid, "req": "x"})["id"] == "x"
    assert conn.req({"cmd": "status", "id": pid})["state"] == "stopped"
    assert conn.req({"cmd": "unload", "id": pid})["ok"]
    assert conn.req({"cmd": "unload", "id": pid + 1})["ok"]
    r = conn.req({"cmd": "status", "id": pid})
    assert r["ok"] is False and r["error"]["code"] == "NOT_FOUND"


@pytest.mark.parametrize("line, code, field", [
    (b"this is not json", "BAD_CMD", None),
    (b"\xc3\x28", "BAD_CMD", None),
    (b'{"cmd":"fly"}', "BAD_CMD", "cmd"),
    (b'{"cmd":"start"}', "BAD_ARG", "id"),
    (b'{"cmd":"start","id":"x"}', "BAD_ARG", "id"),
    (b'{"cmd":"status","args":{"id":-1}}', "BAD_ARG", "id"),
    (b'{"cmd":"load"}', "BAD_ARG", "program"),
    (b'{"cmd":"load","image":"***"}', "BAD_ARG", "image"),
    (b'{"cmd":"load","image":"Q09QUg=="}', "BAD_FORMAT", "image"),
    (b'{"cmd":"load","program":{"version":1,"program":[{"op":"JUMP","label":"nowhere"}]}}',
     "BAD_FORMAT", "program"),
    (b'{"cmd":"ping","extra":1}', "BAD_ARG", "extra"),
    (b'{"cmd":"subscribe","events":["pageflip"]}', "BAD_ARG", "events"),
    (b'{"cmd":"fence","timeline":"vk"}', "BAD_ARG", "value"),
    (b'{"cmd":"start","id":999}', "NOT_FOUND", None),
    (b'{"cmd":"unsubscribe","sub":999}', "NOT_FOUND", "sub"),
])
def test_errors_keep_the_connection_usable(conn, line, code, field):
    conn.send(line)
    r = conn.recv()
    assert r["ok"] is False and r["error"]["code"] == code, r
    assert r["error"].get("field") == field and r["error"]["message"]
    assert conn.req({"cmd": "ping"})["ok"]        # still usable


def test_malformed_json_answers_with_null_id(conn):
    conn.send(b'{"id":"r1", oops}')
    assert conn.recv()["id"] is None


def test_invalid_program_reports_the_validator_message(conn):
    r = conn.req({"id": 1, "cmd": "load", "args": {"program": {
        "version": 1, "program": [{"op": "MOVE", "reg": "layer[1].q", "value": 1}]}}})
    assert r["error"]["code"] == "BAD_FORMAT" and "layer[1].q" in r["error"]["message"]


def test_load_compiled_image_base64(conn):
    import base64
    from copperline.firmware.compiler import compile_program
    img = compile_program(SHORT, source="short")
    r = conn.req({"cmd": "load", "image": base64.b64encode(img.to_bytes()).decode()})
    assert r["ok"] and r["result"]["program"] == img.sha256()
    conn.req({"cmd": "unload", "id": r["id"]})


def test_load_by_file_descriptor(conn, tmp_path):
    from copperline.firmware.compiler import compile_program
    cop = tmp_path / "short.cop"
    cop.write_bytes(compile_program(SHORT).to_bytes())
    for path in (EXAMPLES / "tick.json", cop):
        fd = os.open(path, os.O_RDONLY)
        try:
            r = conn.req({"id": "f", "cmd": "load", "args": {"fd_index": 0}}, fds=[fd])
        finally:
            os.close(fd)
        assert r["ok"], r
        conn.req({"cmd": "unload", "id": r["result"]["id"]})
    # a memfd works too; a missing fd is BAD_ARG
    mfd = os.memfd_create("prog")
    os.write(mfd, json.dumps(SHORT).encode())
    r = conn.req({"cmd": "load", "args": {"fd_index": 0}}, fds=[mfd])
    os.close(mfd)
    assert r["ok"], r
    r = conn.req({"cmd": "load", "args": {"fd_index": 1}}, fds=[os.open(EXAMPLES / "tick.json", os.O_RDONLY)])
    assert r["error"]["code"] == "BAD_ARG" and r["error"]["field"] == "fd_index"
    r = conn.req({"cmd": "load", "args": {"fd_index": 0}})
    assert r["error"]["code"] == "BAD_ARG"


def test_load_takes_a_programs_surfaces_as_passed_files(conn, tmp_path):
    """``surfaces`` maps a surface the program binds to a passed fd (PNG, or raw RGBA of
    the size its name gives); what is wrong is named, and nothing is loaded then."""
    sprite = EXAMPLES / "sprite.json"
    raw = tmp_path / "f.rgba"
    raw.write_bytes(bytes(4 * 4 * 3))
    fds = [os.open(p, os.O_RDONLY) for p in (sprite, EXAMPLES / "sprite.png", raw)]
    try:
        r = conn.req({"cmd": "load", "args": {"fd_index": 0, "surfaces": {"sprite.png": 1}}},
                     fds=fds[:2])
        assert r["ok"], r
        conn.req({"cmd": "unload", "id": r["result"]["id"]})
        before = len(conn.req({"cmd": "list"})["programs"])
        prog = {"version": 1, "program": [{"op": "BIND_LAYER", "id": 0, "surface": "f.rgba@4x3"}]}
        for surfaces, passed, code, text in [
                ({"other.png": 1}, fds[:2], "BAD_ARG", "the program binds no surface 'other.png'"),
                ({"sprite.png": 5}, fds[:2], "BAD_ARG", "fd_index 5: the request carried 2"),
                ({"sprite.png": "1"}, fds[:2], "BAD_ARG", "must map surface names to fd indices"),
                ({"sprite.png": 0}, fds[:1], "BAD_FORMAT", "surface 'sprite.png': not a PNG"),
                ({"sprite.png": 2}, fds, "BAD_FORMAT", "not a PNG, and raw RGBA needs its size")]:
            r = conn.req({"cmd": "load", "args": {"fd_index": 0, "surfaces": surfaces}}, fds=passed)
            assert r["error"]["code"] == code and r["error"]["field"] == "surfaces", r
            assert text in r["error"]["message"], r
        r = conn.req({"cmd": "load", "args": {"program": prog, "surfaces": {"f.rgba@4x3": 0}}},
                     fds=[fds[2]])
        assert r["ok"], r
        conn.req({"cmd": "unload", "id": r["result"]["id"]})
        r = conn.req({"cmd": "load", "args": {"program": prog, "surfaces": {"f.rgba@4x3": 0}}},
                     fds=[fds[1]])                       # a PNG where raw 4x3 was said
        assert r["error"]["code"] == "BAD_FORMAT" and "the PNG is 16x16, not the 4x3" in r["error"]["message"]
        assert len(conn.req({"cmd": "list"})["programs"]) == before
    finally:
        for fd in fds:
            os.close(fd)


def test_subscribe_filters_and_sub_field(conn, daemon):
    pid = conn.req({"cmd": "load", "program": TICK})["id"]
    other = conn.req({"cmd": "load", "program": TICK})["id"]
    sub = conn.req({"id": "s", "cmd": "subscribe", "args": {"events": ["irq", "state"], "prog": pid}})
    assert sub["ok"] and sub["result"]["events"] == ["irq", "state"]
    sid = sub["sub"]
    conn.req({"cmd": "start", "id": pid})
    conn.req({"cmd": "start", "id": other})
    seen = [conn.event() for _ in range(4)]
    conn.req({"cmd": "stop", "id": pid})
    conn.req({"cmd": "stop", "id": other})
    assert all(e["sub"] == sid and e["prog"] == pid for e in seen), seen
    assert seen[0]["event"] == "state" and seen[0]["state"] == "running" and seen[0]["id"] == pid
    assert {e["event"] for e in seen[1:]} == {"irq"} and seen[1]["tag"] == "tick"
    assert "time_us" in seen[1]
    assert conn.req({"cmd": "unsubscribe", "sub": sid})["ok"]
    for p in (pid, other):
        conn.req({"cmd": "unload", "id": p})


def test_subscribe_tag_filter_and_seed_flat_form(conn):
    r = conn.req({"cmd": "subscribe", "events": ["irq"], "tag": "nope"})
    # the positive control: the same subscription for the tag the program raises
    control = conn.req({"cmd": "subscribe", "events": ["irq"], "tag": "tick"})["sub"]
    pid = conn.req({"cmd": "load", "program": TICK})["id"]
    conn.req({"cmd": "start", "id": pid})
    ticks = [conn.event() for _ in range(3)]
    conn.req({"cmd": "stop", "id": pid})
    conn.send({"cmd": "ping", "id": "last"})
    while (m := conn.recv()).get("id") != "last":
        ticks.append(m)
    ticks += conn.events
    assert all(e["sub"] == control and e["tag"] == "tick" for e in ticks), ticks
    for sub in (r["sub"], control):
        conn.req({"cmd": "unsubscribe", "sub": sub})
    conn.req({"cmd": "unload", "id": pid})


def test_regs_fence_and_wait(conn):
    pid = conn.req({"cmd": "load", "program": SHORT})["id"]
    conn.req({"cmd": "start", "id": pid})
    r = conn.req({"id": "w", "cmd": "wait", "args": {"id": pid, "timeout": 5}})
    assert r["ok"] and r["state"] == "done" and r["id"] == "w"
    regs = conn.req({"cmd": "regs"})["regs"]
    assert regs["layer[2].x"] == 7 and len(regs) > 10
    assert conn.req({"cmd": "regs", "regs": ["layer[2].x"]})["regs"] == {"layer[2].x": 7}
    assert conn.req({"cmd": "regs", "regs": ["layer[99].x"]})["error"]["code"] == "BAD_ARG"
    assert conn.req({"cmd": "fence", "args": {"timeline": "vk", "value": 5}})["result"] == {
        "timeline": "vk", "value": 5}
    r = conn.req({"cmd": "fence", "args": {"timeline": "vk", "value": 3}})
    assert r["error"]["code"] == "BAD_ARG"
    conn.req({"cmd": "unload", "id": pid})


def test_wait_timeout_and_cancel(conn):
    pid = conn.req({"cmd": "load", "program": TICK})["id"]
    conn.req({"cmd": "start", "id": pid})
    r = conn.req({"id": "t", "cmd": "wait", "args": {"id": pid, "timeout": 0.1}})
    assert r["error"]["code"] == "TIMEOUT"
    conn.send({"id": "w1", "cmd": "wait", "args": {"id": pid}})
    conn.send({"id": "c1", "cmd": "cancel", "args": {"id": "w1"}})
    got = {m["id"]: m for m in (conn.recv(), conn.recv())}
    assert got["w1"]["error"]["code"] == "CANCELLED"
    assert got["c1"]["result"] == {"cancelled": True, "target": "w1"}
    # idempotent: nothing pending any more
    assert conn.req({"cmd": "cancel", "id": "w1"})["result"]["cancelled"] is False
    # a wait is answered when the program stops, while other requests go on
    conn.send({"id": "w2", "cmd": "wait", "args": {"id": pid, "state": "stopped"}})
    assert conn.req({"id": "p", "cmd": "ping"})["id"] == "p"
    conn.send({"cmd": "stop", "id": pid, "req": "s"})
    got = {m["id"]: m for m in (conn.recv(), conn.recv())}
    assert got["w2"]["state"] == "stopped" and got["s"]["ok"]
    conn.req({"cmd": "unload", "id": pid})


def test_overlong_line_is_refused_and_the_connection_closed(daemon):
    c = Raw(daemon.path)
    c.sock.sendall(b'{"cmd":"ping","pad":"' + b"x" * 70000)
    r = c.recv()
    assert r["ok"] is False and r["error"]["code"] == "BAD_CMD" and "65536" in r["error"]["message"]
    assert c.recv() is None                       # closed
    c.close()
    c = Raw(daemon.path)
    assert c.req({"cmd": "ping"})["ok"]
    c.close()


def test_a_line_of_exactly_the_limit_is_accepted(conn):
    line = b'{"cmd":"ping","id":"' + b"y" * 10 + b'","pad":"'
    line += b"z" * (65536 - len(line) - 2) + b'"}'
    assert len(line) == 65536
    r = conn.req(line)
    assert r["error"]["code"] == "BAD_ARG" and r["error"]["field"] == "pad"


def test_disconnects_mid_request_leave_no_trace(daemon):
    ctl = Raw(daemon.path)

    pid = ctl.req({"cmd": "load", "program": TICK})["id"]      # loaded: a wait on it waits

    def held():
        h = ctl.req({"cmd": "debug.stats"})["result"]
        return h["clients"], h["subscriptions"], h["waits"], h["waiters"]
    before = held()
    assert before == (1, 0, 0, 0)
    # each payload, and what the daemon holds for it once it has read it
    for payload, holding in (
            (b'{"cmd":"pi', (2, 0, 0, 0)),
            (b'{"id":"w","cmd":"wait","args":{"id":%d,"timeout":30}}\n' % pid, (2, 0, 1, 1)),
            (b'{"cmd":"subscribe","events":["all"]}\n{"cmd":"ping"}\n', (2, 1, 0, 0))):
        c = Raw(daemon.path)
        c.sock.sendall(payload)
        assert poll(lambda: held() == holding, 5), (payload, held())
        c.close()
        assert poll(lambda: held() == before, 5), (payload, held())
    ctl.req({"cmd": "unload", "id": pid})
    ctl.close()


def test_slow_subscriber_gets_one_coalesced_dropped_event_and_others_are_unaffected(tmp_path):
    total = 20000
    with DaemonProcess("--test-hooks", "--queue-events", "64", "--queue-bytes", "16384") as d:
        slow, fast, ctl = Raw(d.path), Raw(d.path), Raw(d.path)
        slow.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        for c in (slow, fast):
            assert c.req({"cmd": "subscribe", "events": ["irq"]})["ok"]
        assert ctl.req({"cmd": "debug.emit", "args": {
            "event": {"event": "irq", "tag": "bench", "prog": 0}, "count": total, "rate": 40000}})["ok"]
        got_fast = []
        while len(got_fast) < total:
            m = fast.recv(timeout=10)
            assert m is not None and m["event"] == "irq", m
            got_fast.append(m["seq"])
        assert got_fast == list(range(total))           # the fast client lost nothing
        stats = ctl.req({"cmd": "debug.stats"})["result"]
        assert stats["queued_bytes"] <= 2 * 16384 + 4096
        received, dropped, notices = 0, 0, 0
        while True:
            m = slow.recv(timeout=1.0)
            if m["event"] == "dropped":
                assert m["reason"] == "backpressure" and m["count"] > 0
                dropped += m["count"]
                notices += 1
            else:
                received += 1
            if received + dropped == total:
                break
        assert notices == 1 and dropped > 0 and received > 0
        assert ctl.req({"cmd": "ping"})["ok"]


def test_too_many_clients_get_busy():
    with DaemonProcess("--max-clients", "2") as d:
        a = served(d.path)
        b = poll(lambda: served(d.path), 5)       # once the start-up probe connection is gone
        assert a and b
        c = Raw(d.path)
        r = c.recv()
        assert r["ok"] is False and r["error"]["code"] == "BUSY" and r["id"] is None
        assert c.recv() is None
        a.close()
        assert poll(lambda: served(d.path), 5)


def test_capabilities(tmp_path):
    caps = tmp_path / "caps.json"
    caps.write_text(json.dumps({
        "viewer": {"commands": ["list", "status", "regs", "subscribe"], "regs": ["layer[1].*"]},
        "operator": {"commands": ["*"], "regs": ["layer[1].*"]},
        "": {"commands": ["list"]},
    }))
    with DaemonProcess("--caps", str(caps), "--cap", "root=*") as d:
        c = Raw(d.path)
        assert c.req({"cmd": "ping"})["ok"]                          # always allowed
        assert c.req({"cmd": "list"})["ok"]                          # anonymous entry
        r = c.req({"cmd": "load", "program": TICK})
        assert r["error"]["code"] == "DENIED" and r["error"]["field"] == "cmd"
        r = c.req({"cmd": "list", "caps": "bogus"})
        assert r["error"]["code"] == "DENIED" and r["error"]["field"] == "caps"
        r = c.req({"cmd": "load", "program": SHORT, "caps": "operator"})     # writes layer[2].x
        assert r["error"]["code"] == "DENIED" and "layer[2].x" in r["error"]["message"]
        pid = c.req({"cmd": "load", "program": SHORT, "caps": "root"})["id"]
        assert c.req({"cmd": "start", "id": pid, "caps": "viewer"})["error"]["code"] == "DENIED"
        r = c.req({"cmd": "regs", "caps": "viewer"})
        assert r["ok"] and r["regs"] and all(k.startswith("layer[1].") for k in r["regs"])
        r = c.req({"cmd": "regs", "regs": ["layer[2].x"], "caps": "viewer"})
        assert r["error"]["code"] == "DENIED" and r["error"]["field"] == "regs"
        r = c.req({"id": 1, "cmd": "subscribe", "args": {"events": ["reg"], "reg": "layer[2].x"},
                   "caps": "viewer"})
        assert r["error"]["code"] == "DENIED"
        c.close()


def test_half_close_keeps_subscriptions_flowing(daemon):
    c = Raw(daemon.path)
    pid = c.req({"cmd": "load", "program": TICK})["id"]
    c.send({"cmd": "subscribe", "events": ["irq"], "prog": pid})
    c.send({"cmd": "start", "id": pid})
    c.sock.shutdown(socket.SHUT_WR)          # like `printf ... | socat -t 2 - UNIX:...`
    assert c.recv()["ok"] and c.recv()["ok"]
    assert c.event()["event"] == "irq"       # still delivered after our EOF
    c.close()
    ctl = Raw(daemon.path)
    ctl.req({"cmd": "unload", "id": pid})
    # without subscriptions, EOF ends the connection once the responses are out
    p = Raw(daemon.path)
    p.send({"cmd": "ping"})
    p.sock.shutdown(socket.SHUT_WR)
    assert p.recv()["ok"] and p.recv() is None
