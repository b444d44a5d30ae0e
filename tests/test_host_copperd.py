"""copperd as a process: start-up, signals, socket ownership, systemd activation/notify."""

from __future__ import annotations

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time

import pytest

from copperline.host.ports.testing import DaemonProcess
from tests.support import TICK, Raw

COPPERD = [sys.executable, "-m", "copperline.host.copperd"]


def _wait_for(path, proc, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else proc.returncode
        try:
            s = socket.socket(socket.AF_UNIX)
            s.connect(path)
            s.close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("copperd did not come up")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_programs_removes_socket_exits_0(tmp_path, sig):
    path = str(tmp_path / "c.sock")
    proc = subprocess.Popen([*COPPERD, "--socket", path], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    _wait_for(path, proc)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o660
    c = Raw(path)
    pid = c.req({"cmd": "load", "program": TICK})["id"]
    c.req({"cmd": "start", "id": pid})
    c.req({"cmd": "subscribe", "events": ["state"]})
    proc.send_signal(sig)
    assert proc.wait(10) == 0
    ev = c.event()
    assert ev["event"] == "state" and ev["state"] == "stopped" and ev["prog"] == pid
    assert c.recv() is None                     # then the daemon hung up
    assert not os.path.exists(path) and not os.path.exists(path + ".lock")
    out = proc.stdout.read()
    assert path in out and f"portctl {path} '{{\"cmd\":\"ping\"}}'" in out
    assert "Traceback" not in proc.stderr.read()


def test_a_live_daemons_socket_is_never_stolen(tmp_path):
    with DaemonProcess() as d:
        r = subprocess.run([*COPPERD, "--socket", d.path], capture_output=True, text=True, timeout=30)
        assert r.returncode == 1 and "another copperd" in r.stderr
        c = Raw(d.path)
        assert c.req({"cmd": "ping"})["ok"]       # the first daemon still serves


def test_stale_socket_replaced_and_private_mode(tmp_path):
    path = str(tmp_path / "c.sock")
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(path)
    dead.close()
    with DaemonProcess("--private", path=path) as d:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        assert Raw(d.path).req({"cmd": "ping"})["ok"]
    assert d.returncode == 0 and not os.path.exists(path)


def test_socket_from_environment(tmp_path):
    path = str(tmp_path / "env.sock")
    proc = subprocess.Popen([*COPPERD, "-q"], env={**os.environ, "COPPERD_SOCKET": path},
                            stderr=subprocess.PIPE, text=True)
    try:
        _wait_for(path, proc)
    finally:
        proc.terminate()
        assert proc.wait(10) == 0, proc.stderr.read()


def test_a_stop_while_the_backend_opens_is_a_clean_exit(tmp_path, monkeypatch):
    # The socket is bound before the backend opens, so a supervisor (or a test) that sees
    # the socket may stop the daemon while open() still runs: that is exit 0, not an error.
    from copperline.host import copperd

    class OpensSlowly:
        name = "slow"

        def open(self):
            os.kill(os.getpid(), signal.SIGTERM)

    before = signal.getsignal(signal.SIGTERM)
    monkeypatch.setattr(copperd, "make_backend", lambda args: OpensSlowly())
    path = tmp_path / "slow.sock"
    assert copperd.main(["-q", "--socket", str(path)]) == copperd.EXIT_OK
    assert not path.exists()
    assert signal.getsignal(signal.SIGTERM) is before      # main() leaves no handler behind


def test_abstract_socket_daemon():
    name = f"@copperline-test/d{os.getpid()}"
    with DaemonProcess(path=name) as d:
        assert Raw(name).req({"cmd": "ping"})["ok"]
    assert d.returncode == 0


def test_fpga_backend_without_a_board_is_a_clear_error(tmp_path):
    # Port 1 on loopback: nothing listens there, so the link cannot open.
    r = subprocess.run([*COPPERD, "--backend", "fpga", "--port", "socket://127.0.0.1:1",
                        "--socket", str(tmp_path / "x.sock")],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "cannot open the fpga backend" in r.stderr
    assert "socket://127.0.0.1:1" in r.stderr
    assert not os.path.exists(tmp_path / "x.sock")


def test_bad_caps_file_is_a_usage_error(tmp_path):
    caps = tmp_path / "caps.json"
    caps.write_text(json.dumps({"t": {"commands": ["launch"]}}))
    r = subprocess.run([*COPPERD, "--caps", str(caps), "--socket", str(tmp_path / "x.sock")],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and "unknown command 'launch'" in r.stderr and str(caps) in r.stderr


@pytest.mark.parametrize("flag, value", [("--idle-timeout", "-1"), ("--stall-timeout", "-1"),
                                         ("--max-timelines", "0"), ("--gil-switch-us", "0")])
def test_bad_limits_are_usage_errors(tmp_path, flag, value):
    r = subprocess.run([*COPPERD, flag, value, "--socket", str(tmp_path / "x.sock")],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 2 and flag in r.stderr


def test_systemd_socket_activation_and_ready_notification(tmp_path):
    """A fake systemd: the listening socket on fd 3 with LISTEN_FDS/LISTEN_PID, and a
    datagram NOTIFY_SOCKET (abstract) that must receive READY=1."""
    path = str(tmp_path / "activated.sock")
    lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    lsock.bind(path)
    lsock.listen(8)
    notify_name = f"@copperline-test-notify/{os.getpid()}"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind("\0" + notify_name[1:])
    notify.settimeout(20)
    fd = lsock.fileno()

    def to_fd3():
        os.dup2(fd, 3)

    env = {**os.environ, "NOTIFY_SOCKET": notify_name}
    env.pop("COPPERD_SOCKET", None)
    # LISTEN_PID must be the daemon's own pid: the shell sets it and execs in place.
    cmd = ["/bin/sh", "-c", 'LISTEN_PID=$$ LISTEN_FDS=1 exec "$@"', "sh", *COPPERD, "-q"]
    # fd 3 is listed in pass_fds so that the close-fds step (after preexec_fn) keeps it.
    proc = subprocess.Popen(cmd, env=env, pass_fds=(fd, 3), preexec_fn=to_fd3,
                            stderr=subprocess.PIPE, text=True)
    try:
        msg = notify.recv(4096).decode()
        assert "READY=1" in msg.split("\n")
        lsock.close()                       # only the daemon holds the socket now
        assert Raw(path).req({"cmd": "ping"})["ok"]
    finally:
        proc.terminate()
        assert proc.wait(10) == 0, proc.stderr.read()
    assert os.path.exists(path)             # systemd's socket: not ours to remove
    notify.close()
