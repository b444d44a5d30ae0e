"""copper trace compare: alignment, statistics, tolerance, wall_us, bad files."""

import json
import random
from pathlib import Path

import pytest

from copperline.host.cli import main
from copperline.firmware.trace import TraceError
from copperline.firmware.trace import load_trace
from copperline.host.trace_compare import compare, format_table
from copperline.host.trace_stats import percentile

DATA = Path(__file__).parent / "data" / "traces"


def write_trace(path: Path, events: list[dict], **header) -> str:
    h = {"trace": 1, "backend": "soft", "clock_hz": 12_000_000, "vsync_hz": 60.0,
         "program": "ab" * 32, **header}
    path.write_text("\n".join(json.dumps(x) for x in [h, *events]) + "\n")
    return str(path)


def irqs(times, tag="tick", prog=1, **extra):
    return [{"event": "irq", "prog": prog, "tag": tag, "time_us": t, **extra} for t in times]


def test_known_deviations_exact(tmp_path):
    # 101 events 1 ms apart; B is i us late at event i (A early): |d| = 0..100 us, d <= 0.
    ta = [i * 1000.0 for i in range(101)]
    tb = [t + i for i, t in enumerate(ta)]
    a = load_trace(write_trace(tmp_path / "a.jsonl", irqs(ta)))
    b = load_trace(write_trace(tmp_path / "b.jsonl", irqs(tb)))
    j = compare(a, b).to_json()
    g = j["groups"][0]
    assert (g["prog"], g["kind"], g["key"]) == (1, "irq", "tick")
    assert g["matched"] == 101 and g["missing"] == 0 and g["extra"] == 0
    assert g["p50_us"] == 50.0
    assert g["p99_us"] == 99.0
    assert g["max_us"] == 100.0
    assert g["mean_us"] == -50.0         # d = t_A - t_B: A late is positive
    assert g["drift_ppm"] == -1000.0     # 1 us less per 1000 us
    assert j["overall"]["p99_us"] == 99.0


def test_signed_mean_and_constant_offset(tmp_path):
    ta = [0.0, 100.0, 200.0, 300.0]
    a = load_trace(write_trace(tmp_path / "a.jsonl", irqs(ta)))
    b = load_trace(write_trace(tmp_path / "b.jsonl", irqs([t - 2.5 for t in ta])))
    o = compare(a, b).to_json()["overall"]
    assert o["mean_us"] == 2.5           # B early: A late, positive
    assert o["p50_us"] == 2.5 and o["max_us"] == 2.5
    assert o["drift_ppm"] == 0.0


def test_drift_slope_ppm(tmp_path):
    # B's clock runs 50 ppm fast, plus a constant 7 us offset: the slope ignores the offset.
    ta = [i * 16_666.667 for i in range(60)]
    a = load_trace(write_trace(tmp_path / "a.jsonl", irqs(ta)))
    b = load_trace(write_trace(tmp_path / "b.jsonl", irqs([t * (1 + 50e-6) + 7 for t in ta])))
    o = compare(a, b).to_json()["overall"]
    assert o["drift_ppm"] == pytest.approx(-50.0, abs=0.01)


def test_percentile_matches_linear_interpolation():
    np = pytest.importorskip("numpy")
    rng = random.Random(3)
    for n in (1, 2, 7, 100, 333):
        xs = sorted(rng.uniform(-5, 50) for _ in range(n))
        for q in (0, 50, 90, 99, 100):
            assert percentile(xs, q) == pytest.approx(float(np.percentile(xs, q)))


def test_alignment_by_prog_kind_key_occurrence(tmp_path):
    ev_a = (irqs([0, 10, 20]) + irqs([5], tag="other") + irqs([0, 30], prog=2)
            + [{"event": "reg", "prog": 1, "reg": "layer[1].x", "value": 4, "time_us": 1.0},
               {"event": "state", "prog": 1, "state": "done", "time_us": 40.0},
               {"event": "bind", "prog": 1, "layer": 3, "surface": "s", "time_us": 2.0}])
    # B: events in another order, a different time per group.
    ev_b = (irqs([31], prog=2) + irqs([1, 11, 21]) + irqs([1], prog=2)
            + [{"event": "bind", "prog": 1, "layer": 3, "surface": "s", "time_us": 5.0},
               {"event": "state", "prog": 1, "state": "done", "time_us": 44.0},
               {"event": "reg", "prog": 1, "reg": "layer[1].x", "value": 4, "time_us": 3.0}]
            + irqs([8], tag="other"))
    a = load_trace(write_trace(tmp_path / "a.jsonl", ev_a))
    b = load_trace(write_trace(tmp_path / "b.jsonl", ev_b))
    j = compare(a, b).to_json()
    by = {(g["prog"], g["kind"], str(g["key"])): g for g in j["groups"]}
    assert by[(1, "irq", "tick")]["mean_us"] == -1.0
    assert by[(1, "irq", "other")]["mean_us"] == -3.0
    # prog 2: B lists the 31 first, but occurrence order is file order: (0,31), (30,1).
    assert by[(2, "irq", "tick")]["max_us"] == 31.0
    assert by[(1, "reg", "layer[1].x")]["mean_us"] == -2.0
    assert by[(1, "state", "done")]["mean_us"] == -4.0
    assert by[(1, "bind", "3")]["mean_us"] == -3.0
    assert j["overall"]["matched"] == 9


def test_missing_and_extra(tmp_path):
    a = load_trace(write_trace(tmp_path / "a.jsonl", irqs([0, 10, 20, 30, 40])))
    b = load_trace(write_trace(tmp_path / "b.jsonl", irqs([0, 10, 20]) + irqs([1, 2], tag="new")))
    c = compare(a, b)
    j = c.to_json()
    assert j["overall"]["missing"] == 2 and j["overall"]["extra"] == 2
    # missing: the 4th and 5th tick of A, on lines 5 and 6 of a.jsonl
    assert [(m["key"], m["occurrence"], m["a_line"]) for m in j["missing"]] == \
        [("tick", 3, 5), ("tick", 4, 6)]
    assert [(m["key"], m["b_line"]) for m in j["extra"]] == [("new", 5), ("new", 6)]
    text = format_table(c)
    assert "missing from B (2):" in text and f"{a.path}:5:" in text
    assert j["ok"] is True            # no tolerance: report only
    c2 = compare(a, b, tolerance_us=1000)
    assert not c2.ok and any("missing" in f for f in c2.failures)


def test_register_value_mismatch(tmp_path):
    reg = lambda v, t: {"event": "reg", "prog": 1, "reg": "layer[0].y", "value": v, "time_us": t}
    a = load_trace(write_trace(tmp_path / "a.jsonl", [reg(1, 0), reg(2, 5), reg(-3, 9)]))
    b = load_trace(write_trace(tmp_path / "b.jsonl", [reg(1, 0), reg(7, 5), reg(-3, 9)]))
    c = compare(a, b, tolerance_us=10)
    j = c.to_json()
    assert j["overall"]["value_mismatches"] == 1
    assert j["value_mismatches"] == [{"prog": 1, "kind": "reg", "key": "layer[0].y",
                                      "occurrence": 1, "a_line": 3, "b_line": 3, "a_us": 5,
                                      "b_us": 5, "deviation_us": 0.0, "a_value": 2, "b_value": 7}]
    assert not c.ok
    assert "A=2" in format_table(c) and "B=7" in format_table(c)


def test_cli_tolerance_exit_codes(tmp_path, capsys):
    ta = [0.0, 100.0, 200.0]
    a = write_trace(tmp_path / "a.jsonl", irqs(ta))
    b = write_trace(tmp_path / "b.jsonl", irqs([0.0, 110.0, 203.0]))    # max |d| = 10
    assert main(["trace", "compare", a, b]) == 0
    assert main(["trace", "compare", a, b, "--tolerance-us", "10"]) == 0
    out = capsys.readouterr().out
    assert "PASS" in out
    assert main(["trace", "compare", a, b, "--tolerance-us", "9.5"]) == 1
    out = capsys.readouterr().out
    assert "FAIL: 1 event(s) deviate by more than 9.5 us" in out
    assert "over tolerance 9.5 us (1):" in out
    short = write_trace(tmp_path / "short.jsonl", irqs([0.0, 100.0]))
    assert main(["trace", "compare", a, short]) == 0
    assert main(["trace", "compare", a, short, "--tolerance-us", "1000"]) == 1


def test_cli_json(tmp_path, capsys):
    a = write_trace(tmp_path / "a.jsonl", irqs([0.0, 100.0]))
    b = write_trace(tmp_path / "b.jsonl", irqs([1.0, 104.0]))
    assert main(["trace", "compare", a, b, "--json", "--tolerance-us", "2"]) == 1
    j = json.loads(capsys.readouterr().out)
    assert j["ok"] is False and j["tolerance_us"] == 2.0
    assert j["overall"]["max_us"] == 4.0 and j["overall"]["over_tolerance"] == 1
    assert j["over_tolerance"][0]["deviation_us"] == -4.0
    assert j["a"]["time"] == "time_us" and j["a"]["clock_hz"] == 12_000_000


def test_wall_us_is_used_when_present(tmp_path, capsys):
    ta = [0.0, 1000.0, 2000.0]
    a = write_trace(tmp_path / "hw.jsonl", irqs(ta), backend="fpga")
    ev_b = [{**e, "wall_us": e["time_us"] + 30 + i}
            for i, e in enumerate(irqs(ta))]
    b = write_trace(tmp_path / "soft.jsonl", ev_b)
    c = compare(load_trace(a), load_trace(b))
    assert (c.time_a, c.time_b) == ("time_us", "wall_us")
    assert c.to_json()["overall"]["mean_us"] == -31.0     # B (soft) late: A early
    # --time model compares the cycle models: identical.
    assert compare(load_trace(a), load_trace(b), time="model").to_json()["overall"]["max_us"] == 0
    assert main(["trace", "compare", a, b]) == 0
    out = capsys.readouterr().out
    assert "time=time_us (cycle model)" in out and "time=wall_us (measured)" in out
    with pytest.raises(TraceError, match="no event in this trace has 'wall_us'"):
        compare(load_trace(a), load_trace(b), time="wall")


def test_wall_us_partial_falls_back_with_warning(tmp_path):
    a = write_trace(tmp_path / "a.jsonl", irqs([0.0, 10.0]))
    b = write_trace(tmp_path / "b.jsonl", irqs([0.0], wall_us=5.0) + irqs([10.0]))
    c = compare(load_trace(a), load_trace(b))
    assert c.to_json()["overall"]["max_us"] == 5.0
    assert any("1 event(s) of B have no wall_us" in w for w in c.warnings)


def test_different_clocks_compare_in_us():
    a = load_trace(str(DATA / "sprite_fpga.jsonl"))     # 12 MHz
    b = load_trace(str(DATA / "sprite_sim24.jsonl"))    # 24 MHz: same program
    j = compare(a, b, tolerance_us=0.5).to_json()
    assert j["a"]["clock_hz"] == 12_000_000 and j["b"]["clock_hz"] == 24_000_000
    assert j["overall"]["matched"] == 71 and j["overall"]["missing"] == 0
    # Same cycle offsets, half the cycle time: the largest is the MOVE in cycle 8,
    # 0.667 us at 12 MHz and 0.333 us at 24 MHz (time_us is rounded to the ns).
    assert j["overall"]["max_us"] == 0.334
    assert j["overall"]["mean_us"] > 0
    assert j["ok"]


def test_example_traces_soft_vs_fpga(capsys):
    a, b = str(DATA / "sprite_fpga.jsonl"), str(DATA / "sprite_soft.jsonl")
    assert main(["trace", "compare", a, b, "--json"]) == 0
    j = json.loads(capsys.readouterr().out)
    assert j["b"]["time"] == "wall_us"
    # make_traces.py: wall_us = time_us * (1 + 150e-6) + U(10, 40) us.
    assert 10 <= j["overall"]["p50_us"] <= 120
    assert -200 <= j["overall"]["drift_ppm"] <= -100
    assert j["overall"]["missing"] == 0 and j["overall"]["extra"] == 0  # vsync not aligned


def test_ignore_kind(tmp_path):
    a = write_trace(tmp_path / "a.jsonl", irqs([0.0]) + [
        {"event": "state", "prog": 1, "state": "running", "time_us": 0.0}])
    b = write_trace(tmp_path / "b.jsonl", irqs([0.0]))
    assert not compare(load_trace(a), load_trace(b), tolerance_us=1).ok
    assert compare(load_trace(a), load_trace(b), tolerance_us=1, ignore=["state"]).ok


def test_different_programs_warn(tmp_path):
    a = write_trace(tmp_path / "a.jsonl", irqs([0.0]), program="aa" * 32)
    b = write_trace(tmp_path / "b.jsonl", irqs([0.0]), program="bb" * 32)
    assert any("different programs" in w for w in compare(load_trace(a), load_trace(b)).warnings)


def test_cycle_only_events_get_time(tmp_path):
    p = write_trace(tmp_path / "a.jsonl", [{"event": "irq", "prog": 1, "tag": "t", "cycle": 24}])
    assert load_trace(p).events[0]["time_us"] == 2.0


@pytest.mark.parametrize("lines, message", [
    (['{"event":"irq","prog":1,"tag":"t","time_us":1}', "{nope"], r"bad\.jsonl:3: not JSON"),
    (['{"event":"irq","prog":1,"time_us":1}'], r"bad\.jsonl:2: irq event lacks 'tag'"),
    (['', '{"event":"reg","prog":1,"reg":"layer[1].q","value":1,"time_us":1}'],
     r"bad\.jsonl:3: 'layer\[1\]\.q': unknown register field"),
    (['{"event":"reg","prog":1,"reg":"layer[1].alpha","value":256,"time_us":1}'],
     r"bad\.jsonl:2: value 256 out of range for layer\[1\]\.alpha \(0\.\.255\)"),
    (['{"event":"irq","prog":1,"tag":"t"}'], r"bad\.jsonl:2: irq event has neither 'cycle' nor 'time_us'"),
    (['{"event":"irq","prog":"1","tag":"t","time_us":0}'], r"bad\.jsonl:2: .*'prog' must be an integer"),
    (['{"prog":1}'], r"bad\.jsonl:2: line has no \"event\" field"),
    (['[1,2]'], r"bad\.jsonl:2: expected a JSON object"),
])
def test_bad_trace_errors_name_file_and_line(tmp_path, lines, message):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"trace":1,"backend":"soft","clock_hz":12000000}\n' + "\n".join(lines) + "\n")
    with pytest.raises(TraceError, match=message):
        load_trace(str(p))


@pytest.mark.parametrize("header, message", [
    ("", r"empty file"),
    ('{"backend":"soft"}', r":1: not a copperline trace header"),
    ('{"trace":1,"clock_hz":1}', r":1: trace header lacks 'backend'"),
    ('{"trace":1,"backend":"soft","clock_hz":0}', r":1: header clock_hz must be a positive integer"),
])
def test_bad_headers(tmp_path, header, message):
    p = tmp_path / "h.jsonl"
    p.write_text(header)
    with pytest.raises(TraceError, match=message):
        load_trace(str(p))


def test_cli_bad_input_exit_2(tmp_path, capsys):
    good = write_trace(tmp_path / "a.jsonl", irqs([0.0]))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"trace":1,"backend":"soft","clock_hz":12000000}\n{"event":"irq"\n')
    assert main(["trace", "compare", good, str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"{bad}:2: not JSON" in err
    assert main(["trace", "compare", good, str(tmp_path / "nope.jsonl")]) == 2
    assert "cannot open trace" in capsys.readouterr().err
    assert main(["trace", "compare", good, good, "--tolerance-us", "-1"]) == 2


def test_late_is_positive_in_the_readme_order(tmp_path):
    """`copper trace compare hw.jsonl soft.jsonl`: hardware 5 us behind the model gives +5."""
    soft = write_trace(tmp_path / "soft.jsonl", irqs([0.0, 1000.0, 2000.0]))
    hw = write_trace(tmp_path / "hw.jsonl", irqs([5.0, 1005.0, 2005.0]), backend="fpga")
    c = compare(load_trace(hw), load_trace(soft))
    assert [p.deviation for p in c.pairs] == [5.0, 5.0, 5.0]
    assert c.to_json()["overall"]["mean_us"] == 5.0
    assert "A late is positive" in format_table(c)


def test_plot_limits_ignore_an_outlier():
    from copperline.host.trace_plot import plot_limits
    devs = [float(i % 7) for i in range(200)] + [1500.0]
    lo, hi = plot_limits(devs)
    assert lo < 0 < 6 < hi < 20          # the 0..6 us cloud fills the axis; 1500 is clipped


def test_plot_png(tmp_path, capsys):
    out = tmp_path / "cmp.png"
    assert main(["trace", "compare", str(DATA / "sprite_fpga.jsonl"),
                 str(DATA / "sprite_soft.jsonl"), "--plot", str(out), "--tolerance-us", "200"]) == 0
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    from PIL import Image
    assert Image.open(out).size == (1200, 480)


def test_real_soft_runs_compare_identical(tmp_path, examples_dir, capsys):
    """Two virtual-time runs of the same program through ``copper run`` are identical."""
    pytest.importorskip("copperline.host.run_cli")
    prog = examples_dir / "sprite.json"
    if not prog.exists():
        pytest.skip("examples/sprite.json not present")
    a, b = str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl")
    for out in (a, b):
        assert main(["run", str(prog), "--backend", "soft", "--clock", "virtual",
                     "--frames", "5", "--trace", out]) == 0
    capsys.readouterr()
    assert main(["trace", "compare", a, b, "--tolerance-us", "0", "--json"]) == 0
    j = json.loads(capsys.readouterr().out)
    assert j["overall"]["matched"] > 5 and j["overall"]["max_us"] == 0.0
    assert {g["kind"] for g in j["groups"]} >= {"irq", "reg", "state"}


# ------------------------------------------------------------- dropped records --------------

def _run_events(n=20, ended=True):
    """A VM-like run: per step an ADD (reg) and an IRQ at cycles 100*i, 100*i+1."""
    ev = [{"event": "state", "prog": 1, "state": "running", "reason": "start", "pc": 0,
           "cycle": 0}]
    for i in range(1, n + 1):
        ev.append({"event": "reg", "prog": 1, "reg": "layer[1].x", "value": i, "cycle": 100 * i})
        ev.append({"event": "irq", "prog": 1, "tag": "t", "cycle": 100 * i + 1})
    if ended:
        ev.append({"event": "state", "prog": 1, "state": "done", "reason": "halt", "pc": 4,
                   "cycle": 100 * n + 2})
    return ev


def _with_drops(events, drop_cycles, count=None, ended=True):
    kept = [e for e in events if e.get("cycle") not in drop_cycles or e["event"] == "state"]
    n = len(events) - len(kept) if count is None else count
    return kept + [{"event": "dropped", "count": n, "reason": "fifo"}]


def _cmp(tmp_path, a_events, b_events):
    a = load_trace(write_trace(tmp_path / "a.jsonl", a_events))
    b = load_trace(write_trace(tmp_path / "b.jsonl", b_events))
    return compare(a, b, tolerance_us=0)


def test_dropped_events_are_aligned_by_cycle_and_accounted_for_exactly(tmp_path):
    vm = _run_events()
    # the board dropped an early reg+irq pair and a later irq: by occurrence every later
    # event would pair with its successor (and deviate); by cycle they all match
    hw = _with_drops(vm, {300, 301, 1501})
    c = _cmp(tmp_path, vm, hw)
    assert c.ok, c.failures
    assert c.accounted == (0, 3) and c.overall.missing == 3
    assert c.overall.over_tolerance == 0 and c.overall.value_mismatches == 0
    assert "3 accounted for by B's dropped count" in format_table(c)
    j = c.to_json()
    assert j["dropped"] == {"a": 0, "b": 3, "accounted_a": 0, "accounted_b": 3}
    # the same traces the other way round: B's extras are A's drops
    c = _cmp(tmp_path, hw, vm)
    assert c.ok and c.accounted == (3, 0)


def test_more_missing_than_dropped_fails(tmp_path):
    vm = _run_events()
    c = _cmp(tmp_path, vm, _with_drops(vm, {300, 301, 1501}, count=2))
    assert not c.ok
    assert c.failures == ["1 event(s) of A missing from B (besides 2 that B's dropped "
                          "count accounts for)"]


def test_a_dropped_count_larger_than_what_is_missing_fails_when_the_run_ended(tmp_path):
    vm = _run_events()
    c = _cmp(tmp_path, vm, _with_drops(vm, {300, 301}, count=3))
    assert c.failures == ["B reports 3 dropped event(s) but lacks only 2 that the other "
                          "trace has"]
    # a run cut off by a window may have dropped records after its end: fewer is fine
    vm = _run_events(ended=False)
    c = _cmp(tmp_path, vm, _with_drops(vm, {300, 301}, count=3))
    assert c.ok, c.failures
    assert any("after the end of the run" in w for w in c.warnings)


def test_a_missing_state_event_is_never_accounted_for_by_drops(tmp_path):
    vm = _run_events()
    hw = [e for e in vm if e.get("state") != "done"] + [
        {"event": "dropped", "count": 1, "reason": "fifo"}]
    c = _cmp(tmp_path, vm, hw)
    assert not c.ok
    assert "1 event(s) of A missing from B" in c.failures[0]
