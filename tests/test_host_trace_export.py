"""copper trace export: Perfetto (Chrome trace JSON) and VCD, read back independently."""

import json
import re
from pathlib import Path

import pytest

from copperline.firmware import isa
from copperline.host.cli import main
from copperline.firmware.trace import load_trace
from copperline.host.trace_export import PROG_PID_BASE, to_perfetto

DATA = Path(__file__).parent / "data" / "traces"

EVENTS = [
    {"event": "state", "prog": 1, "state": "running", "cycle": 0, "time_us": 0.0},
    {"event": "reg", "prog": 1, "reg": "layer[2].x", "value": -5, "cycle": 12, "time_us": 1.0},
    {"event": "bind", "prog": 1, "layer": 2, "surface": "/tmp/a b.rgba", "cycle": 24, "time_us": 2.0},
    {"event": "vsync", "frame": 1, "cycle": 200000, "time_us": 16666.667},
    {"event": "reg", "prog": 1, "reg": "layer[2].x", "value": 32767, "cycle": 200001,
     "time_us": 16666.75},
    {"event": "irq", "prog": 1, "tag": "tick", "cycle": 200002, "time_us": 16666.833},
    {"event": "irq", "prog": 2, "tag": "frame done", "cycle": 200002, "time_us": 16666.833},
    {"event": "reg", "prog": 1, "reg": "layer[2].alpha", "value": 200, "cycle": 200003,
     "time_us": 16666.917},
    {"event": "dropped", "count": 3, "reason": "fifo"},
    {"event": "irq", "prog": 1, "tag": "tick", "cycle": 400002, "time_us": 33333.5},
    {"event": "state", "prog": 1, "state": "done", "reason": "halt", "cycle": 400010,
     "time_us": 33334.167},
]


@pytest.fixture
def trace_path(tmp_path) -> str:
    p = tmp_path / "t.jsonl"
    h = {"trace": 1, "backend": "fpga", "clock_hz": 12_000_000, "vsync_hz": 60.0, "program": "00" * 32}
    p.write_text("\n".join(json.dumps(x) for x in [h, *EVENTS]) + "\n")
    return str(p)


# ---------------------------------------------------------------------------------
# Perfetto
# ---------------------------------------------------------------------------------

def test_perfetto_cli_writes_valid_trace_event_json(trace_path, tmp_path, capsys):
    out = tmp_path / "t.json"
    assert main(["trace", "export", trace_path, "--format", "perfetto", "-o", str(out)]) == 0
    assert "wrote" in capsys.readouterr().out
    doc = json.loads(out.read_text())
    evs = doc["traceEvents"]
    for e in evs:   # every event has the fields the trace-event format requires
        assert e["ph"] in ("M", "i", "C", "X") and isinstance(e["pid"], int) and e["name"]
        if e["ph"] != "M":
            assert isinstance(e["ts"], (int, float))
    names = {(e["pid"], e["args"]["name"]) for e in evs if e["name"] == "process_name"}
    assert (PROG_PID_BASE + 1, "prog 1") in names and (PROG_PID_BASE + 2, "prog 2") in names
    threads = {(e["pid"], e["tid"], e["args"]["name"]) for e in evs if e["name"] == "thread_name"}
    assert (PROG_PID_BASE + 1, 1, "irq") in threads

    irq = [e for e in evs if e.get("cat") == "irq"]
    assert [(e["pid"], e["name"], e["ts"]) for e in irq] == [
        (101, "tick", 16666.833), (102, "frame done", 16666.833), (101, "tick", 33333.5)]
    assert all(e["ph"] == "i" and e["s"] == "t" for e in irq)
    assert irq[0]["args"]["cycle"] == 200002

    counters = [(e["name"], e["ts"], e["args"]["value"]) for e in evs if e["ph"] == "C"]
    assert counters == [("layer[2].x", 1.0, -5), ("layer[2].x", 16666.75, 32767),
                        ("layer[2].alpha", 16666.917, 200)]

    state = [e for e in evs if e.get("cat") == "state"]
    running = [e for e in state if e["name"] == "running"]
    assert running[0]["ph"] == "X" and running[0]["ts"] == 0.0 and running[0]["dur"] == 33334.167
    done = [e for e in state if e["name"] == "done"]
    assert done[0]["ph"] == "i" and done[0]["args"]["reason"] == "halt"

    vs = [e for e in evs if e.get("cat") == "vsync"]
    assert len(vs) == 1 and vs[0]["args"]["frame"] == 1
    dropped = [e for e in evs if e.get("cat") == "dropped"]
    assert dropped[0]["args"]["count"] == 3 and dropped[0]["ts"] == 16666.917   # previous time
    assert json.loads(doc["otherData"]["copperline_trace"])["backend"] == "fpga"


def test_perfetto_wall_time_and_lateness():
    t = load_trace(str(DATA / "sprite_soft.jsonl"))
    model = to_perfetto(t, time="model")
    late = [e for e in model["traceEvents"] if e["name"] == "lateness_us"]
    assert len(late) == sum(1 for e in t.events if "wall_us" in e and "prog" in e)
    first = next(e for e in t.events if "prog" in e)
    assert late[0]["args"]["value"] == pytest.approx(first["wall_us"] - first["time_us"], abs=1e-3)
    wall = to_perfetto(t, time="wall")
    assert wall["otherData"]["timestamps"] == "wall_us"
    irq_ts = [e["ts"] for e in wall["traceEvents"] if e.get("cat") == "irq"]
    assert irq_ts == [e["wall_us"] for e in t.events if e["event"] == "irq"]
    assert not any(e["name"] == "lateness_us" for e in wall["traceEvents"])


def test_export_wall_without_wall_us_is_an_error(trace_path, tmp_path, capsys):
    assert main(["trace", "export", trace_path, "--format", "perfetto", "--time", "wall",
                 "-o", str(tmp_path / "x.json")]) == 2
    assert "no event in this trace has 'wall_us'" in capsys.readouterr().err


def test_export_bad_trace_exit_2(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"trace":1,"backend":"soft","clock_hz":1000000}\n'
                   '{"event":"reg","prog":1,"reg":"layer[0].x","time_us":0}\n')
    assert main(["trace", "export", str(bad), "--format", "vcd", "-o", str(tmp_path / "o.vcd")]) == 2
    assert f"{bad}:2: reg event lacks 'value'" in capsys.readouterr().err


# ---------------------------------------------------------------------------------
# VCD, parsed here without pyvcd
# ---------------------------------------------------------------------------------

def parse_vcd(text: str):
    """A minimal VCD reader: (timescale, vars {id: (path, type, size)}, changes [(t, id, value)])."""
    header, _, body = text.partition("$enddefinitions $end")
    timescale = re.search(r"\$timescale\s+(.*?)\s*\$end", header).group(1)
    scope: list[str] = []
    vars_ = {}
    for tok in re.finditer(r"\$(scope|upscope|var)\b(.*?)\$end", header, re.S):
        kind, rest = tok.group(1), tok.group(2).split()
        if kind == "scope":
            scope.append(rest[1])
        elif kind == "upscope":
            scope.pop()
        else:
            vtype, size, ident, name = rest[0], int(rest[1]), rest[2], rest[3]
            vars_[ident] = (".".join(scope + [name]), vtype, size)
    changes = []
    t = 0
    for line in body.split("\n"):
        line = line.strip()
        if not line or line.startswith("$"):
            continue
        if line.startswith("#"):
            t = int(line[1:])
        elif line[0] in "bB":
            bits, ident = line[1:].split()
            changes.append((t, ident, bits))
        elif line[0] in "sS":
            val, _, ident = line[1:].rpartition(" ")   # an empty string is "s <id>"
            changes.append((t, ident, val))
        else:
            changes.append((t, line[1:], line[0]))
    return timescale, vars_, changes


def as_int(bits: str, size: int, signed: bool) -> int:
    v = int(bits, 2)
    if signed and len(bits) == size and bits[0] == "1":
        v -= 1 << size
    return v


def test_vcd_reads_back(trace_path, tmp_path):
    out = tmp_path / "t.vcd"
    gtkw = tmp_path / "t.gtkw"
    assert main(["trace", "export", trace_path, "--format", "vcd", "-o", str(out),
                 "--gtkw", str(gtkw)]) == 0
    timescale, vars_, changes = parse_vcd(out.read_text())
    assert timescale == "1 ns"
    by_path = {p: (ident, vtype, size) for ident, (p, vtype, size) in vars_.items()}
    assert by_path["copperline.regs.layer2.x"][1:] == ("integer", 16)
    assert by_path["copperline.regs.layer2.alpha"][1:] == ("integer", 8)
    assert by_path["copperline.prog1.state"][1] == "string"
    assert by_path["copperline.prog1.irq.tick"][1] == "event"
    assert by_path["copperline.prog2.irq.frame_done"][1] == "event"   # sanitised name
    assert by_path["copperline.vsync"][1] == "event"
    assert by_path["copperline.regs.layer2.surface"][1] == "string"

    def values(path):
        ident, _, size = by_path[path]
        return [(t, v) for t, i, v in changes if i == ident]

    x = values("copperline.regs.layer2.x")
    fx = isa.REGISTER_FIELD_BY_NAME["x"]
    # init 0 at time 0, then -5 at 1 us (two's complement), 32767 at 16666.75 us
    assert [(t, as_int(v, 16, fx.signed)) for t, v in x] == [(0, 0), (1000, -5), (16666750, 32767)]
    assert x[1][1] == "1111111111111011"
    alpha = values("copperline.regs.layer2.alpha")
    assert [(t, as_int(v, 8, False)) for t, v in alpha] == [(0, 0), (16666917, 200)]
    ticks = values("copperline.prog1.irq.tick")
    assert [t for t, _ in ticks] == [16666833, 33333500]
    assert [t for t, _ in values("copperline.prog2.irq.frame_done")] == [16666833]
    assert values("copperline.prog1.state") == [(0, "running"), (33334167, "done")]
    assert values("copperline.regs.layer2.surface")[-1] == (2000, r"/tmp/a\x20b.rgba")
    dropped = values("copperline.dropped")
    assert (16666917, "11") in dropped
    # timestamps never go backwards
    ts = [t for t, _, _ in changes]
    assert ts == sorted(ts)
    g = gtkw.read_text()
    assert "[dumpfile]" in g and "copperline.regs.layer2.x" in g


def test_vcd_of_example_trace_has_every_reg_change():
    import io

    from copperline.host.trace_export import write_vcd
    t = load_trace(str(DATA / "sprite_fpga.jsonl"))
    buf = io.StringIO()
    write_vcd(t, buf)
    _, vars_, changes = parse_vcd(buf.getvalue())
    ident = next(i for i, (p, _, _) in vars_.items() if p == "copperline.regs.layer1.x")
    xs = [int(v, 2) for _, i, v in changes if i == ident]
    expected = [e["value"] for e in t.events if e["event"] == "reg" and e["reg"] == "layer[1].x"]
    # The change at time 0 replaces the init value in $dumpvars.
    assert xs == expected


def test_gtkw_needs_vcd(trace_path, tmp_path, capsys):
    assert main(["trace", "export", trace_path, "--format", "perfetto", "-o",
                 str(tmp_path / "a.json"), "--gtkw", str(tmp_path / "a.gtkw")]) == 2
    assert "--gtkw goes with --format vcd" in capsys.readouterr().err


def test_vcd_opens_in_gtkwave_tools(trace_path, tmp_path):
    """GTKWave's own VCD reader (vcd2fst) accepts the file and keeps its values."""
    import shutil
    import subprocess
    if not (shutil.which("vcd2fst") and shutil.which("fst2vcd")):
        pytest.skip("GTKWave tools (vcd2fst, fst2vcd) not installed")
    out, fst = tmp_path / "t.vcd", tmp_path / "t.fst"
    assert main(["trace", "export", trace_path, "--format", "vcd", "-o", str(out)]) == 0
    subprocess.run(["vcd2fst", str(out), str(fst)], check=True, capture_output=True, timeout=60)
    back = subprocess.run(["fst2vcd", str(fst)], check=True, capture_output=True, text=True,
                          timeout=60).stdout
    _, vars_, changes = parse_vcd(back)
    ident = next(i for i, (p, _, _) in vars_.items() if p.endswith("layer2.x"))
    assert [as_int(v, 16, True) for _, i, v in changes if i == ident][-2:] == [-5, 32767]
    assert "sdone" in back
