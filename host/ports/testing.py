"""Test and benchmark helpers: run copperd as a subprocess on a private socket.

Used by the test suite, the golden cases and ``tests/bench/bench_ports.py``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time


class DaemonProcess:
    """``copperd`` (``python -m copperline.host.copperd``) on a fresh socket.

    ``with DaemonProcess("--test-hooks") as d: d.path`` — waits until the socket accepts
    connections; on exit sends SIGTERM and checks nothing is left behind.
    """

    def __init__(self, *extra_args: str, path: str | None = None, env: dict | None = None,
                 startup_timeout: float = 20.0) -> None:
        self._tmp = None
        if path is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="copperd-test-")
            path = os.path.join(self._tmp.name, "copperd.sock")
        self.path = path
        self.args = [sys.executable, "-m", "copperline.host.copperd", "--socket", path, "-q",
                     *extra_args]
        self.env = dict(os.environ if env is None else env)
        self.env.pop("NOTIFY_SOCKET", None)
        self.startup_timeout = startup_timeout
        self.proc: subprocess.Popen | None = None
        self.returncode: int | None = None
        self.stderr = ""

    def start(self) -> "DaemonProcess":
        self.proc = subprocess.Popen(self.args, env=self.env, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + self.startup_timeout
        addr = "\0" + self.path[1:] if self.path.startswith("@") else self.path
        while True:
            if self.proc.poll() is not None:
                err = self.proc.stderr.read()
                raise RuntimeError(f"copperd exited with {self.proc.returncode} at start-up:\n{err}")
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                s.connect(addr)
                return self
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"copperd did not listen on {self.path} within "
                                       f"{self.startup_timeout} s") from None
                time.sleep(0.05)
            finally:
                s.close()

    def rss_kib(self) -> int:
        """Resident set size of the daemon (Linux /proc)."""
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        if self.proc is None:
            return -1
        if self.returncode is not None:
            return self.returncode
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.returncode = self.proc.returncode
        self.stderr = self.proc.stderr.read() if self.proc.stderr else ""
        if self.proc.stderr:
            self.proc.stderr.close()
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
        return self.returncode

    def __enter__(self) -> "DaemonProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
