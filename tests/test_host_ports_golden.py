"""Golden protocol cases (tests/golden/*.jsonl) replayed against a live copperd, and every
message checked against the published JSON Schemas (docs/schemas/)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest

from copperline.host.ports.testing import DaemonProcess
from tests.support import Raw

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = sorted((ROOT / "tests" / "golden").glob("*.jsonl"))
SCHEMAS = {n: json.loads((ROOT / "docs" / "schemas" / f"{n}.schema.json").read_text())
           for n in ("request", "response", "event")}


def _match(expected, actual, where="$"):
    """Compare with masks; returns a list of mismatch descriptions."""
    if expected == "<any>":
        return []
    if expected == "<int>":
        return [] if isinstance(actual, int) and not isinstance(actual, bool) else [f"{where}: {actual!r} is not an int"]
    if expected == "<number>":
        return [] if isinstance(actual, (int, float)) and not isinstance(actual, bool) else [f"{where}: not a number"]
    if expected == "<str>":
        return [] if isinstance(actual, str) and actual else [f"{where}: {actual!r} is not a string"]
    if expected == "<sha256>":
        return [] if isinstance(actual, str) and re.fullmatch(r"[0-9a-f]{64}", actual) else [f"{where}: not a sha256"]
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return [f"{where}: expected an object, got {actual!r}"]
        out = []
        if set(expected) != set(actual):
            out.append(f"{where}: keys {sorted(actual)} != expected {sorted(expected)}")
        for k in expected.keys() & actual.keys():
            out += _match(expected[k], actual[k], f"{where}.{k}")
        return out
    if isinstance(expected, list):
        if not isinstance(actual, list) or len(actual) != len(expected):
            return [f"{where}: expected {len(expected)} items, got {actual!r}"]
        return [e for i, (x, y) in enumerate(zip(expected, actual)) for e in _match(x, y, f"{where}[{i}]")]
    return [] if expected == actual and type(expected) is type(actual) else [f"{where}: {actual!r} != {expected!r}"]


def test_the_golden_files_are_wellformed():
    assert GOLDEN, "no golden cases"
    for path in GOLDEN:
        for n, line in enumerate(path.read_text().splitlines(), 1):
            case = json.loads(line)
            assert ("send" in case) != ("send_hex" in case) and "expect" in case, f"{path.name}:{n}"


def test_masks_catch_differences():
    assert _match({"a": "<int>"}, {"a": "1"}) and _match({"a": 1}, {"a": 1, "b": 2})
    assert not _match({"a": ["<str>"]}, {"a": ["x"]})


@pytest.mark.parametrize("path", GOLDEN, ids=[p.name for p in GOLDEN])
def test_golden_session(path):
    resp_v = jsonschema.Draft202012Validator(SCHEMAS["response"])
    event_v = jsonschema.Draft202012Validator(SCHEMAS["event"])
    req_v = jsonschema.Draft202012Validator(SCHEMAS["request"])
    with DaemonProcess("--no-vsync-events") as d:
        c = Raw(d.path)
        for n, line in enumerate(path.read_text().splitlines(), 1):
            case = json.loads(line)
            where = f"{path.name}:{n} ({case.get('note', '')})"
            raw = bytes.fromhex(case["send_hex"]) if "send_hex" in case else case["send"].encode()
            resp = c.req(raw)
            assert resp is not None, f"{where}: connection closed"
            problems = _match(case["expect"], resp)
            assert not problems, f"{where}: {problems}\n got {json.dumps(resp)}"
            assert not list(resp_v.iter_errors(resp)), f"{where}: response violates the schema"
            if resp["ok"]:
                assert not list(req_v.iter_errors(json.loads(raw))), f"{where}: accepted request violates the schema"
            events, c.events = c.events, []
            if "expect_events" in case:
                problems = _match(case["expect_events"], events)
                assert not problems, f"{where}: events {problems}\n got {events}"
            for ev in events:
                assert not list(event_v.iter_errors(ev)), f"{where}: event violates the schema: {ev}"
        c.close()
