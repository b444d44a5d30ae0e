"""copperd's start-up banner states the socket's real mode (also under socket activation,
where systemd's unit, not ``--private``, chose it)."""

from __future__ import annotations

import os
import socket
import types

from copperline.host.copperd import _banner


def test_banner_states_the_sockets_real_mode(tmp_path):
    path = str(tmp_path / "activated.sock")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    try:
        os.chmod(path, 0o644)            # srw-r--r--, as a unit with SocketMode=0644 makes it
        backend = types.SimpleNamespace(name="soft", clock_hz=12_000_000)
        first = _banner(path, types.SimpleNamespace(private=False), backend).splitlines()[0]
        assert first.endswith(f"listening on {path} (mode 0644 srw-r--r--)"), first
        os.chmod(path, 0o600)
        assert "(mode 0600 srw-------)" in _banner(path, types.SimpleNamespace(private=False), backend)
    finally:
        s.close()


def test_banner_for_an_abstract_socket():
    backend = types.SimpleNamespace(name="soft", clock_hz=None)
    assert "(abstract socket)" in _banner("@copperline/x", types.SimpleNamespace(private=True),
                                          backend)
