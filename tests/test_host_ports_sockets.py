"""Socket paths, stale/live socket handling, modes, abstract sockets, sd_notify."""

import os
import socket
import stat

import pytest

from copperline.host.ports import sockets
from copperline.host.ports.sockets import SocketError, bind_listener, server_socket_path


def test_path_precedence(tmp_path, monkeypatch):
    env = {"COPPERD_SOCKET": "/x/env.sock", "XDG_RUNTIME_DIR": str(tmp_path)}
    assert server_socket_path("/x/cli.sock", env) == "/x/cli.sock"
    assert server_socket_path(None, env) == "/x/env.sock"
    # /run/copperline not usable -> $XDG_RUNTIME_DIR/copperline
    monkeypatch.setattr(sockets, "SYSTEM_DIR", str(tmp_path / "ro" / "deeper" / "run"))
    del env["COPPERD_SOCKET"]
    assert server_socket_path(None, env) == str(tmp_path / "copperline" / "copperd.sock")
    # neither -> a private per-user directory under $TMPDIR
    env = {"TMPDIR": str(tmp_path)}
    assert server_socket_path(None, env) == str(tmp_path / f"copperline-{os.getuid()}" / "copperd.sock")


def test_system_dir_preferred_when_writable(tmp_path, monkeypatch):
    monkeypatch.setattr(sockets, "SYSTEM_DIR", str(tmp_path / "copperline"))
    assert server_socket_path(None, {"XDG_RUNTIME_DIR": "/nonexistent"}) == \
        str(tmp_path / "copperline" / "copperd.sock")


@pytest.mark.parametrize("mode", [0o660, 0o600])
def test_socket_mode_and_cleanup(tmp_path, mode):
    path = str(tmp_path / "sub" / "d.sock")
    lst = bind_listener(path, mode=mode)
    assert stat.S_IMODE(os.stat(path).st_mode) == mode and stat.S_ISSOCK(os.stat(path).st_mode)
    lst.close()
    assert not os.path.exists(path) and not os.path.exists(path + ".lock")


def test_stale_socket_is_replaced(tmp_path):
    path = str(tmp_path / "d.sock")
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(path)          # bound, never listening: what a crashed daemon leaves
    dead.close()
    lst = bind_listener(path)
    c = socket.socket(socket.AF_UNIX)
    c.connect(path)          # ours now
    c.close()
    lst.close()


def test_live_socket_is_never_stolen(tmp_path):
    path = str(tmp_path / "d.sock")
    live = socket.socket(socket.AF_UNIX)
    live.bind(path)
    live.listen(1)
    ino = os.stat(path).st_ino
    with pytest.raises(SocketError, match="live daemon"):
        bind_listener(path)
    assert os.stat(path).st_ino == ino
    live.close()


def test_second_daemon_is_refused_by_the_lock(tmp_path):
    path = str(tmp_path / "d.sock")
    first = bind_listener(path)
    with pytest.raises(SocketError, match="another copperd"):
        bind_listener(path)
    first.close()


def test_non_socket_file_is_not_replaced(tmp_path):
    path = tmp_path / "d.sock"
    path.write_text("precious")
    with pytest.raises(SocketError, match="not a socket"):
        bind_listener(str(path))
    assert path.read_text() == "precious"


def test_abstract_socket(tmp_path):
    name = f"@copperline-test/{os.getpid()}"
    lst = bind_listener(name)
    c = socket.socket(socket.AF_UNIX)
    c.connect(sockets.to_address(name))
    c.close()
    with pytest.raises(SocketError, match="already in use"):
        bind_listener(name)
    lst.close()


@pytest.mark.parametrize("abstract", [False, True])
def test_sd_notify(tmp_path, abstract):
    addr = f"@copperline-notify-{os.getpid()}" if abstract else str(tmp_path / "notify")
    rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.bind(sockets.to_address(addr))
    rx.settimeout(2)
    assert sockets.sd_notify("READY=1", {"NOTIFY_SOCKET": addr}) is True
    assert rx.recv(100) == b"READY=1"
    rx.close()
    assert sockets.sd_notify("READY=1", {}) is False


def test_listen_fds_ignores_another_pids_fds():
    env = {"LISTEN_PID": str(os.getpid() + 1), "LISTEN_FDS": "1"}
    assert sockets.listen_fds(env) == []
    assert "LISTEN_FDS" not in env          # unset so children do not inherit it
