"""The client examples in examples/clients/ run against a live copperd."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from copperline.host.ports.testing import DaemonProcess

CLIENTS = Path(__file__).resolve().parent.parent / "examples" / "clients"


@pytest.fixture(scope="module")
def daemon():
    with DaemonProcess() as d:
        yield d


def test_python_client_example(daemon):
    r = subprocess.run([sys.executable, str(CLIENTS / "copper_client.py"), "--socket", daemon.path,
                        "--events", "3"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "connected to copperd" in r.stdout and r.stdout.count("irq   tick") == 3


def test_python_client_example_without_daemon(tmp_path):
    r = subprocess.run([sys.executable, str(CLIENTS / "copper_client.py"), "--socket",
                        str(tmp_path / "none.sock")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 3 and "is copperd running" in r.stderr


@pytest.mark.skipif(not (shutil.which("socat") and shutil.which("jq")), reason="needs socat and jq")
def test_socat_jq_example(daemon):
    r = subprocess.run(["sh", str(CLIENTS / "copper_socat.sh"), daemon.path], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("connected to copperd")
    assert sum('"tag":"tick"' in ln for ln in lines) == 3
    assert '"ok":true' in lines[-1]
