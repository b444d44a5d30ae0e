"""portctl: output and exit codes."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from copperline.host.ports.testing import DaemonProcess
from tests.support import TICK

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
PORTCTL = [sys.executable, "-m", "copperline.host.portctl"]


def portctl(*args, timeout=30):
    return subprocess.run([*PORTCTL, *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def daemon():
    with DaemonProcess() as d:
        yield d


def test_ping_prints_one_json_line_exit_0(daemon):
    r = portctl(daemon.path, '{"cmd":"ping"}')
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert len(lines) == 1 and json.loads(lines[0])["name"] == "copperd"


def test_error_response_exit_1(daemon):
    r = portctl(daemon.path, '{"cmd":"status","id":424242}')
    assert r.returncode == 1 and json.loads(r.stdout)["error"]["code"] == "NOT_FOUND"


@pytest.mark.parametrize("args", [("SOCK", "not json"), ("SOCK", "[1]"), ("SOCK",),
                                  ("SOCK", "{}", "--timeout", "0"), ("SOCK", "{}", "--fd", "/no/such")])
def test_usage_errors_exit_2(daemon, args):
    r = portctl(*[daemon.path if a == "SOCK" else a for a in args])
    assert r.returncode == 2 and r.stderr


def test_no_socket_exit_3(tmp_path):
    r = portctl(str(tmp_path / "none.sock"), '{"cmd":"ping"}')
    assert r.returncode == 3 and "is copperd running" in r.stderr
    r = portctl("@copperline-test/none", '{"cmd":"ping"}')
    assert r.returncode == 3


def _silent_server(path, close_immediately):
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(path)
    srv.listen(1)
    held = []

    def run():
        c, _ = srv.accept()
        c.recv(1000)
        if close_immediately:
            c.close()
        else:
            held.append(c)
    threading.Thread(target=run, daemon=True).start()
    return srv, held


def test_timeout_exit_4(tmp_path):
    path = str(tmp_path / "silent.sock")
    srv, _ = _silent_server(path, close_immediately=False)
    r = portctl(path, '{"cmd":"ping"}', "--timeout", "0.3")
    assert r.returncode == 4 and "no response within 0.3 s" in r.stderr
    srv.close()


def test_closed_without_response_exit_5(tmp_path):
    path = str(tmp_path / "rude.sock")
    srv, _ = _silent_server(path, close_immediately=True)
    r = portctl(path, '{"cmd":"ping"}')
    assert r.returncode == 5
    srv.close()


def test_stream_prints_events_until_timeout_exit_0(daemon):
    load = portctl(daemon.path, json.dumps({"cmd": "load", "program": TICK}))
    pid = json.loads(load.stdout)["id"]
    assert portctl(daemon.path, json.dumps({"cmd": "start", "id": pid})).returncode == 0
    # subscribe implies --stream
    r = portctl(daemon.path, json.dumps({"cmd": "subscribe", "events": ["irq"], "prog": pid}),
                "--timeout", "0.5")
    portctl(daemon.path, json.dumps({"cmd": "unload", "id": pid}))
    assert r.returncode == 0, r.stderr
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert lines[0]["ok"] is True
    assert len(lines) > 20 and all(x["event"] == "irq" and x["sub"] == lines[0]["sub"] for x in lines[1:])


@pytest.fixture
def running_tick(daemon):
    """A 1 kHz program running on the daemon (never idle: a stream never pauses)."""
    pid = json.loads(portctl(daemon.path, json.dumps({"cmd": "load", "program": TICK})).stdout)["id"]
    assert portctl(daemon.path, json.dumps({"cmd": "start", "id": pid})).returncode == 0
    yield pid
    portctl(daemon.path, json.dumps({"cmd": "unload", "id": pid}))


def test_count_ends_the_stream_after_n_events_exit_0(daemon, running_tick):
    r = portctl(daemon.path, json.dumps({"cmd": "subscribe", "events": ["irq"],
                                         "prog": running_tick}), "--count", "3")
    assert r.returncode == 0, r.stderr
    lines = [json.loads(x) for x in r.stdout.splitlines()]
    assert lines[0]["ok"] is True and len(lines) == 4
    assert [x["event"] for x in lines[1:]] == ["irq"] * 3


def test_count_not_reached_within_the_timeout_exit_4(daemon, running_tick):
    r = portctl(daemon.path, json.dumps({"cmd": "subscribe", "events": ["irq"], "tag": "never"}),
                "--count", "1", "--timeout", "0.3")
    assert r.returncode == 4 and "0 of 1 events within 0.3 s" in r.stderr
    assert len(r.stdout.splitlines()) == 1          # the response only


def test_stream_timeout_is_total_time_not_idle_time(daemon, running_tick):
    """A 1 kHz program is never idle for 0.4 s; the stream still ends after 0.4 s."""
    r = portctl(daemon.path, json.dumps({"cmd": "subscribe", "events": ["irq"],
                                         "prog": running_tick}), "--timeout", "0.4", timeout=10)
    assert r.returncode == 0, r.stderr
    irqs = [json.loads(x) for x in r.stdout.splitlines()[1:]]
    # about 400 events, and far from the thousands of a stream that does not end
    assert 50 < len(irqs) < 1500
    span_us = irqs[-1]["time_us"] - irqs[0]["time_us"]
    assert span_us < 1.5e6, span_us


@pytest.mark.parametrize("args", [("--count", "0"), ("--count", "2", "--no-stream")])
def test_count_usage_errors_exit_2(daemon, args):
    r = portctl(daemon.path, '{"cmd":"subscribe","events":["irq"]}', *args)
    assert r.returncode == 2 and "--count" in r.stderr


def test_pass_a_file_descriptor(daemon):
    r = portctl(daemon.path, '{"cmd":"load","args":{"fd_index":0}}', "--fd", str(EXAMPLES / "tick.json"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert isinstance(json.loads(r.stdout)["result"]["id"], int)


def test_help_documents_exit_codes():
    r = portctl("--help")
    assert r.returncode == 0
    for code in ("0", "1", "2", "3", "4", "5"):
        assert f"\n  {code} " in r.stdout
