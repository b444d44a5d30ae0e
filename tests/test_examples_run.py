"""Every file in examples/ runs here, from one explicit list: the programs on the soft VM
(and on the RTL in test_sim_equivalence.py), the broken program through ``copper check``,
the client scripts against a live copperd. A file in examples/ that is not listed, or a
listed one that is missing, fails."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from copperline.firmware.trace import read_trace
from copperline.host.cli import main
from copperline.host.ports.testing import DaemonProcess
from tests.conftest import REPO_ROOT

EXAMPLES = REPO_ROOT / "examples"
#: Copper programs: each runs on the VM.
PROGRAMS = ["fence.json", "layers.json", "nested_loops.json", "sprite.json", "tick.json"]
#: The surfaces the programs bind (sprite.json, fence.json): each is read and shown by
#: tests/test_boards_video.py and tests/test_host_render_exact.py.
SURFACES = ["sprite.png", "frame.rgba"]
#: A program with mistakes, for the tutorial's ``copper check``: each is refused.
BROKEN = ["broken/broken.json"]
#: Client scripts: each runs against a copperd.
CLIENT_PY = "clients/copper_client.py"
CLIENT_SH = "clients/copper_socat.sh"


def test_every_file_in_examples_is_listed():
    on_disk = {str(p.relative_to(EXAMPLES)) for p in EXAMPLES.rglob("*")
               if p.is_file() and "__pycache__" not in p.parts}
    listed = {*PROGRAMS, *SURFACES, *BROKEN, CLIENT_PY, CLIENT_SH}
    assert sorted(on_disk - listed) == [], "examples this file does not run: list them"
    assert sorted(listed - on_disk) == [], "listed examples that are missing"


@pytest.mark.parametrize("name", PROGRAMS)
def test_example_program_runs_on_the_vm(name, tmp_path):
    trace = tmp_path / "t.jsonl"
    assert main(["run", str(EXAMPLES / name), "--frames", "5", "--fence", "vk=1@20000",
                 "--trace", str(trace)]) == 0
    header, events = read_trace(str(trace))
    assert header["backend"] == "soft"
    kinds = {e["event"] for e in events}
    assert "state" in kinds and kinds & {"irq", "reg"}, f"{name} produced only {kinds}"


@pytest.mark.parametrize("name", BROKEN)
def test_broken_example_is_refused_with_its_mistakes(name, capsys):
    assert main(["check", str(EXAMPLES / name)]) == 1
    err = capsys.readouterr().err
    assert "field 'delta': 40000 does not fit" in err and "missing label 'top'" in err


@pytest.fixture(scope="module")
def daemon():
    with DaemonProcess() as d:
        yield d


def test_python_client_example(daemon):
    r = subprocess.run([sys.executable, str(EXAMPLES / CLIENT_PY), "--socket", daemon.path,
                        "--events", "3"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "connected to copperd" in r.stdout and r.stdout.count("irq   tick") == 3


def test_python_client_example_without_daemon(tmp_path):
    r = subprocess.run([sys.executable, str(EXAMPLES / CLIENT_PY), "--socket",
                        str(tmp_path / "none.sock")], capture_output=True, text=True, timeout=60)
    assert r.returncode == 3 and "is copperd running" in r.stderr


@pytest.mark.skipif(not (shutil.which("socat") and shutil.which("jq")), reason="needs socat and jq")
def test_socat_jq_example(daemon):
    r = subprocess.run(["sh", str(EXAMPLES / CLIENT_SH), daemon.path], capture_output=True,
                       text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0].startswith("connected to copperd")
    assert sum('"tag":"tick"' in ln for ln in lines) == 3
    assert '"ok":true' in lines[-1]


@pytest.mark.parametrize("name", SURFACES)
def test_example_surfaces_are_read(name):
    from copperline.firmware.compiler import compile_file
    from copperline.host.surfaces import SurfaceSource
    bound = {s for p in PROGRAMS for s in compile_file(EXAMPLES / p).surfaces}
    spec = next(s for s in bound if s.split("@")[0] == name)
    surface = SurfaceSource(base_dir=str(EXAMPLES)).get(spec).surface
    assert surface.height == 16 and any(p is None for row in surface.rows for p in row)
