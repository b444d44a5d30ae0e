"""Compare two timing traces: align their events and measure how far apart they are.

Events are aligned by ``(prog, kind, key, occurrence)``: the n-th ``irq`` with tag
``tick`` of program 1 in trace A is paired with the n-th one in trace B. The key is the
tag for ``irq``, the register for ``reg``, the state for ``state`` and the layer for
``bind``. ``vsync`` (a backend time-base marker, not a program event) and ``dropped``
are not aligned.

A trace with ``dropped`` events (a board's full event FIFO refused records) lacks some
``irq``/``reg``/``bind`` events, so counting occurrences would pair the wrong ones:
there, those kinds are aligned by ``cycle`` instead, and the events the other trace has
and this one lacks are *accounted for* by its dropped count. They must match it exactly
when every program of that trace ended inside it (nothing was dropped after its last
event); a run cut off by a window may have dropped records past its end, so there the
missing events may only be fewer. State events are never dropped (the board reserves
room for them), so a missing one is always a failure.

The deviation of a pair is ``d = t_A - t_B`` in microseconds: how late A's event is
relative to B's, **late is positive** (``copper trace compare hw.jsonl soft.jsonl``: the
hardware against the model). Each side's time is its ``wall_us`` (measured, soft
real-time) when the trace has it and ``time_us`` (the cycle model) otherwise. Comparing
in µs makes traces taken at different clock rates comparable.

This module also holds :func:`load_trace`, the checked reader every trace tool uses: it
keeps the line number of each event so that errors and reports can point at the file.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from typing import Iterable

from copperline.firmware import isa
from copperline.firmware.trace import TraceError, read_numbered_trace

log = logging.getLogger(__name__)

#: Event kinds that belong to a program and are aligned, with the field that keys them.
ALIGNED_KINDS = {"irq": "tag", "reg": "reg", "state": "state", "bind": "layer"}
#: Every event kind the trace format defines.
KNOWN_KINDS = ("irq", "reg", "bind", "state", "vsync", "dropped")
#: Kinds a board may drop (and count) when its event FIFO is full.
DROPPABLE_KINDS = ("irq", "reg", "bind")
#: Program states after which a program makes no more events.
ENDED_STATES = ("done", "stopped", "faulted")
#: Kinds that carry a time (``cycle`` and/or ``time_us``).
TIMED_KINDS = ("irq", "reg", "bind", "state", "vsync")
#: How many individual missing/extra/mismatch/over-tolerance items a report lists.
REPORT_LIMIT = 20


# ---------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------

@dataclass
class Trace:
    """A checked trace: header, events (dicts, ``time_us`` filled in), their line numbers."""
    path: str
    header: dict
    events: list[dict]
    lines: list[int]

    @property
    def clock_hz(self) -> int:
        return self.header["clock_hz"]

    @property
    def vsync_hz(self) -> float:
        return float(self.header.get("vsync_hz") or isa.DEFAULT_VSYNC_HZ)

    @property
    def name(self) -> str:
        return os.path.basename(self.path)


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def load_trace(path: str) -> Trace:
    """Read and check a trace file. Raises :class:`TraceError` naming ``file:line``.

    Besides the header checks of :func:`copperline.firmware.trace.read_trace`, every event
    is checked for the fields its kind needs; an event with ``cycle`` but no ``time_us``
    gets ``time_us = cycle / clock_hz``. Unknown event kinds are kept (and logged) so
    newer traces still load.
    """
    path = str(path)
    header, numbered = read_numbered_trace(path)
    events: list[dict] = []
    lines: list[int] = []
    for n, obj in numbered:
        _check_event(path, n, obj, header["clock_hz"])
        events.append(obj)
        lines.append(n)
    return Trace(path, header, events, lines)


def _check_event(path: str, n: int, e: dict, clock_hz: int) -> None:
    where = f"{path}:{n}"
    kind = e.get("event")
    if kind is None:
        raise TraceError(f"{where}: line has no \"event\" field")
    if not isinstance(kind, str):
        raise TraceError(f"{where}: \"event\" must be a string (got {kind!r})")
    if kind not in KNOWN_KINDS:
        log.info("%s: unknown event kind %r, ignored", where, kind)
        return

    def need(key: str, ok, what: str) -> None:
        if key not in e:
            raise TraceError(f"{where}: {kind} event lacks {key!r}")
        if not ok(e[key]):
            raise TraceError(f"{where}: {kind} event field {key!r} must be {what} (got {e[key]!r})")

    if kind in ALIGNED_KINDS:
        need("prog", _is_int, "an integer program id")
    if kind == "irq":
        need("tag", lambda v: isinstance(v, str), "a string")
    elif kind == "reg":
        need("reg", lambda v: isinstance(v, str), "a register name")
        need("value", _is_int, "an integer")
        try:
            idx = isa.parse_register(e["reg"], layers=1 << isa.LAYER_BITS)
        except ValueError as exc:
            raise TraceError(f"{where}: {exc}") from None
        f = isa.register_field(idx)
        if not f.min <= e["value"] <= f.max:
            raise TraceError(f"{where}: value {e['value']} out of range for {e['reg']} "
                             f"({f.min}..{f.max})")
    elif kind == "bind":
        need("layer", _is_int, "an integer layer")
    elif kind == "state":
        need("state", lambda v: isinstance(v, str), "a string")
    elif kind == "dropped":
        need("count", _is_int, "an integer")
    if kind in TIMED_KINDS:
        if "cycle" in e and not (_is_int(e["cycle"]) and e["cycle"] >= 0):
            raise TraceError(f"{where}: field 'cycle' must be a non-negative integer "
                             f"(got {e['cycle']!r})")
        if "time_us" in e:
            if not _is_num(e["time_us"]):
                raise TraceError(f"{where}: field 'time_us' must be a number (got {e['time_us']!r})")
        elif "cycle" in e:
            e["time_us"] = round(e["cycle"] * 1_000_000 / clock_hz, 3)
        else:
            raise TraceError(f"{where}: {kind} event has neither 'cycle' nor 'time_us'")
        if "wall_us" in e and not _is_num(e["wall_us"]):
            raise TraceError(f"{where}: field 'wall_us' must be a number (got {e['wall_us']!r})")


# ---------------------------------------------------------------------------------
# Statistics
# ---------------------------------------------------------------------------------

def percentile(sorted_values: list[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between closest ranks
    (numpy's default): position ``q/100 * (n-1)`` in the sorted values."""
    if not sorted_values:
        raise ValueError("percentile of no values")
    pos = q / 100 * (len(sorted_values) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def slope(xs: list[float], ys: list[float]) -> float | None:
    """Least-squares slope of ys over xs; None with fewer than two distinct xs."""
    n = len(xs)
    if n < 2:
        return None
    mx = sum(xs) / n
    my = sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return None
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx


def robust_line(xs: list[float], ys: list[float], max_points: int = 400):
    """Theil-Sen line ``(slope, intercept)`` of ys over xs (median of the pairwise slopes;
    intercept the median of ``y - slope * x``): a few outliers do not tilt it. At most
    ``max_points`` evenly spaced points are used. None with fewer than two distinct xs."""
    if len(xs) > max_points:
        step = len(xs) / max_points
        idx = [int(i * step) for i in range(max_points)]
        xs, ys = [xs[i] for i in idx], [ys[i] for i in idx]
    slopes = sorted((ys[j] - ys[i]) / (xs[j] - xs[i])
                    for i in range(len(xs)) for j in range(i + 1, len(xs)) if xs[j] != xs[i])
    if not slopes:
        return None
    m = percentile(slopes, 50)
    return m, percentile(sorted(y - m * x for x, y in zip(xs, ys)), 50)


def _r(v: float | None, nd: int = 3) -> float | None:
    return None if v is None else round(v, nd) + 0.0   # + 0.0: no "-0.0" in reports


@dataclass
class Stats:
    """Figures for one group of aligned events (or all of them)."""
    matched: int = 0
    missing: int = 0          # in A, not in B
    extra: int = 0            # in B, not in A
    value_mismatches: int = 0
    over_tolerance: int = 0
    deviations: list[float] = field(default_factory=list)   # t_A - t_B, µs (late > 0)
    times: list[float] = field(default_factory=list)        # t_A, µs

    def to_json(self) -> dict:
        absd = sorted(abs(d) for d in self.deviations)
        have = bool(absd)
        sl = slope(self.times, self.deviations)
        return {
            "matched": self.matched, "missing": self.missing, "extra": self.extra,
            "value_mismatches": self.value_mismatches, "over_tolerance": self.over_tolerance,
            "p50_us": _r(percentile(absd, 50)) if have else None,
            "p99_us": _r(percentile(absd, 99)) if have else None,
            "max_us": _r(absd[-1]) if have else None,
            "mean_us": _r(sum(self.deviations) / len(self.deviations)) if have else None,
            "drift_ppm": _r(sl * 1e6) if sl is not None else None,
        }


# ---------------------------------------------------------------------------------
# Comparison
# ---------------------------------------------------------------------------------

@dataclass
class Pair:
    """One aligned event: where it is on each side and how far apart."""
    group: tuple
    a: dict
    b: dict
    a_line: int
    b_line: int
    ta: float
    tb: float

    @property
    def deviation(self) -> float:
        """``t_A - t_B``: how late A is, µs."""
        return self.ta - self.tb


@dataclass
class Comparison:
    """Everything ``copper trace compare`` reports; :meth:`to_json` is the ``--json`` form."""
    a: Trace
    b: Trace
    time_a: str
    time_b: str
    tolerance_us: float | None
    pairs: list[Pair]
    groups: dict[tuple, Stats]
    overall: Stats
    missing: list[tuple[tuple, int]]     # (group, line in A)
    extra: list[tuple[tuple, int]]       # (group, line in B)
    mismatches: list[Pair]
    dropped: tuple[int, int]
    warnings: list[str]
    ignored: tuple[str, ...] = ()
    #: events missing from A and from B that A's and B's dropped counts account for
    accounted: tuple[int, int] = (0, 0)
    #: A and B ended all their programs: their dropped counts must be accounted exactly
    exact_drops: tuple[bool, bool] = (False, False)

    @property
    def failures(self) -> list[str]:
        """Why the comparison fails its tolerance; empty without a tolerance."""
        if self.tolerance_us is None:
            return []
        o = self.overall
        out = []
        if o.over_tolerance:
            out.append(f"{o.over_tolerance} event(s) deviate by more than {self.tolerance_us:g} us")
        acc_a, acc_b = self.accounted
        if o.missing > acc_b:
            out.append(f"{o.missing - acc_b} event(s) of A missing from B"
                       + (f" (besides {acc_b} that B's dropped count accounts for)"
                          if acc_b else ""))
        if o.extra > acc_a:
            out.append(f"{o.extra - acc_a} extra event(s) in B"
                       + (f" (besides {acc_a} that A's dropped count accounts for)"
                          if acc_a else ""))
        for side, n, acc, exact in zip("AB", self.dropped, self.accounted, self.exact_drops):
            if exact and acc < n:
                out.append(f"{side} reports {n} dropped event(s) but lacks only {acc} "
                           "that the other trace has")
        if o.value_mismatches:
            out.append(f"{o.value_mismatches} register value mismatch(es)")
        return out

    @property
    def ok(self) -> bool:
        return not self.failures

    def over_tolerance_pairs(self) -> list[Pair]:
        if self.tolerance_us is None:
            return []
        return [p for p in self.pairs if abs(p.deviation) > self.tolerance_us]

    def to_json(self) -> dict:
        def side(t: Trace, tf: str) -> dict:
            h = t.header
            return {"path": t.path, "backend": h.get("backend"), "clock_hz": h.get("clock_hz"),
                    "vsync_hz": h.get("vsync_hz"), "program": h.get("program"), "time": tf,
                    "events": len(t.events)}

        def pair_json(p: Pair) -> dict:
            out = {**_group_json(p.group), "a_line": p.a_line, "b_line": p.b_line,
                   "a_us": p.ta, "b_us": p.tb, "deviation_us": _r(p.deviation)}
            if p.group[1] == "reg":
                out["a_value"], out["b_value"] = p.a["value"], p.b["value"]
            return out

        return {
            "a": side(self.a, self.time_a), "b": side(self.b, self.time_b),
            "deviation": "a - b, microseconds (A late is positive)",
            "tolerance_us": self.tolerance_us,
            "ignored_kinds": list(self.ignored),
            "groups": [{**_group_json(g), **s.to_json()} for g, s in self.groups.items()],
            "overall": self.overall.to_json(),
            "dropped": {"a": self.dropped[0], "b": self.dropped[1],
                        "accounted_a": self.accounted[0], "accounted_b": self.accounted[1]},
            "missing": [{**_group_json(g), "a_line": ln} for g, ln in self.missing[:REPORT_LIMIT]],
            "extra": [{**_group_json(g), "b_line": ln} for g, ln in self.extra[:REPORT_LIMIT]],
            "value_mismatches": [pair_json(p) for p in self.mismatches[:REPORT_LIMIT]],
            "over_tolerance": [pair_json(p) for p in self.over_tolerance_pairs()[:REPORT_LIMIT]],
            "warnings": self.warnings,
            "failures": self.failures,
            "ok": self.ok,
        }


def _group_json(g: tuple) -> dict:
    prog, kind, key, *occ = g
    out = {"prog": prog, "kind": kind, "key": key}
    if occ:
        out["occurrence"] = occ[0]
    return out


def _kind_order(kind: str) -> int:
    return list(ALIGNED_KINDS).index(kind)


def _key_sort(key) -> tuple:
    # Registers sort by layer then field order; other keys as (type, value).
    if isinstance(key, str):
        try:
            return (0, isa.parse_register(key, layers=1 << isa.LAYER_BITS), "")
        except ValueError:
            return (1, 0, key)
    return (0, key, "")


def choose_time(t: Trace, mode: str) -> str:
    """Which time a side is compared by: ``wall_us`` or ``time_us`` (see module doc).

    ``mode`` is ``auto`` (wall_us if any program event has it), ``model`` (always
    time_us) or ``wall`` (wall_us, an error if the trace has none).
    """
    if mode == "model":
        return "time_us"
    has_wall = any("wall_us" in e for e in t.events if e.get("event") in ALIGNED_KINDS)
    if mode == "wall" and not has_wall:
        raise TraceError(f"{t.path}: --time wall, but no event in this trace has 'wall_us'")
    if mode not in ("auto", "wall"):
        raise ValueError(f"unknown time mode {mode!r} (expected auto, model or wall)")
    return "wall_us" if has_wall else "time_us"


def _occurrences(t: Trace, ignore: Iterable[str]) -> dict[tuple, list[tuple[dict, int]]]:
    out: dict[tuple, list[tuple[dict, int]]] = {}
    for e, ln in zip(t.events, t.lines):
        kind = e["event"]
        if kind not in ALIGNED_KINDS or kind in ignore:
            continue
        out.setdefault((e["prog"], kind, e[ALIGNED_KINDS[kind]]), []).append((e, ln))
    return out


def _landed_actions(header: dict) -> list[tuple]:
    """A header's host actions as (kind, prog or timeline, cycle it took effect in), in
    the order of what they act on (two headers may list them in other orders: a replay
    lists them by the cycle they landed in)."""
    out = []
    for a in header.get("actions") or []:
        cycle = a.get("landed", a.get("cycle"))
        out.append((a.get("kind"), a.get("prog", a.get("timeline")), cycle))
    return sorted(out, key=lambda x: (str(x[0]), str(x[1]), -1 if x[2] is None else x[2]))


def _scenario_warnings(ha: dict, hb: dict) -> list[str]:
    """Traces of several programs (``copper run A B ...``): say when the programs or the
    cycles the host actions took effect in differ, since every program event after such
    an action may then differ too (docs/traces.md, "Several programs")."""
    out = []
    na, nb = len(ha.get("programs") or []) or 1, len(hb.get("programs") or []) or 1
    if na != nb:
        out.append(f"A ran {na} program(s), B {nb}: programs are paired by id")
    la, lb = _landed_actions(ha), _landed_actions(hb)
    if la and lb and len(la) != len(lb):
        out.append(f"A has {len(la)} host actions, B {len(lb)}")
    elif la and lb:
        # (a landing a real-time backend could not see, None, is no difference)
        diff = [f"{x[0]} {x[1]}: A {x[2]}, B {y[2]}" for x, y in zip(la, lb)
                if x != y and None not in (x[2], y[2])]
        if diff:
            out.append("the host actions took effect at different cycles ("
                       + "; ".join(diff[:4]) + (", ..." if len(diff) > 4 else "")
                       + "); replay one run's with copper run --actions-from")
    return out


def compare(a: Trace, b: Trace, *, tolerance_us: float | None = None, time: str = "auto",
            ignore: Iterable[str] = ()) -> Comparison:
    """Align the program events of ``a`` and ``b`` and compute the statistics."""
    ignore = tuple(ignore)
    for k in ignore:
        if k not in ALIGNED_KINDS:
            raise ValueError(f"cannot ignore {k!r}: aligned kinds are {', '.join(ALIGNED_KINDS)}")
    if tolerance_us is not None and not tolerance_us >= 0:
        raise ValueError(f"tolerance must be >= 0 us (got {tolerance_us})")
    time_a, time_b = choose_time(a, time), choose_time(b, time)
    warnings = []
    pa, pb = a.header.get("program"), b.header.get("program")
    if pa and pb and pa != pb:
        warnings.append(f"the traces are of different programs (A {pa[:12]}, B {pb[:12]})")
    warnings += _scenario_warnings(a.header, b.header)
    fallbacks = {}
    occ_a, occ_b = _occurrences(a, ignore), _occurrences(b, ignore)
    groups: dict[tuple, Stats] = {}
    overall = Stats()
    pairs: list[Pair] = []
    missing: list[tuple[tuple, int]] = []
    extra: list[tuple[tuple, int]] = []
    mismatches: list[Pair] = []

    def t_of(e: dict, tf: str, side: str) -> float:
        if tf == "wall_us" and "wall_us" not in e:
            fallbacks[side] = fallbacks.get(side, 0) + 1
            return e["time_us"]
        return e[tf]

    # Registers sort by layer and field, binds by layer, tags and states by first appearance.
    first: dict[tuple, int] = {}
    for g in [*occ_a, *occ_b]:       # dicts keep file order: A's first, then B's
        first.setdefault(g, len(first))
    keys = sorted(set(occ_a) | set(occ_b),
                  key=lambda g: (g[0], _kind_order(g[1]),
                                 _key_sort(g[2]) if g[1] in ("reg", "bind") else (2, first[g], "")))
    dropped = tuple(sum(e["count"] for e in t.events if e.get("event") == "dropped")
                    for t in (a, b))
    droppable_missing = [0, 0]          # events of droppable kinds missing from A, from B
    for g in keys:
        s = groups[g] = Stats()
        ea, eb = occ_a.get(g, []), occ_b.get(g, [])
        if any(dropped) and g[1] in DROPPABLE_KINDS:
            matched, only_a, only_b = _align_by_cycle(ea, eb)
        else:
            matched = list(zip(ea, eb))
            only_a = list(enumerate(ea))[len(eb):]
            only_b = list(enumerate(eb))[len(ea):]
        if g[1] in DROPPABLE_KINDS:
            droppable_missing[0] += len(only_b)
            droppable_missing[1] += len(only_a)
        for i, ((x, xl), (y, yl)) in enumerate(matched):
            p = Pair(g + (i,), x, y, xl, yl, t_of(x, time_a, "A"), t_of(y, time_b, "B"))
            pairs.append(p)
            for st in (s, overall):
                st.matched += 1
                st.deviations.append(p.deviation)
                st.times.append(p.ta)
            if g[1] == "reg" and x["value"] != y["value"]:
                s.value_mismatches += 1
                overall.value_mismatches += 1
                mismatches.append(p)
            if tolerance_us is not None and abs(p.deviation) > tolerance_us:
                s.over_tolerance += 1
                overall.over_tolerance += 1
        for i, (_, ln) in only_a:
            missing.append((g + (i,), ln))
        for i, (_, ln) in only_b:
            extra.append((g + (i,), ln))
        s.missing = len(only_a)
        s.extra = len(only_b)
        overall.missing += s.missing
        overall.extra += s.extra
    for side, n in sorted(fallbacks.items()):
        warnings.append(f"{n} event(s) of {side} have no wall_us; their time_us was used")
    accounted = tuple(min(n, m) for n, m in zip(dropped, droppable_missing))
    exact = tuple(_all_ended(t) for t in (a, b))
    for side, n, acc, ex in zip("AB", dropped, accounted, exact):
        if n:
            warnings.append(f"{side} reports {n} dropped event(s) (a full event FIFO); "
                            f"{acc} event(s) the other trace has are missing from {side}"
                            + ("" if ex or acc == n else
                               "; the rest may have been dropped after the end of the run"))
    return Comparison(a, b, time_a, time_b, tolerance_us, pairs, groups, overall, missing,
                      extra, mismatches, dropped, warnings, ignore, accounted, exact)


def _align_by_cycle(ea: list, eb: list) -> tuple[list, list, list]:
    """Pair the events of one group that have the same ``cycle`` (each side in cycle
    order): (pairs, A's unpaired with their index, B's unpaired with their index)."""
    matched, only_a, only_b = [], [], []
    i = j = 0
    while i < len(ea) and j < len(eb):
        ca, cb = ea[i][0].get("cycle"), eb[j][0].get("cycle")
        if ca == cb:
            matched.append((ea[i], eb[j]))
            i, j = i + 1, j + 1
        elif cb is None or (ca is not None and ca < cb):
            only_a.append((i, ea[i]))
            i += 1
        else:
            only_b.append((j, eb[j]))
            j += 1
    only_a += [(k, ea[k]) for k in range(i, len(ea))]
    only_b += [(k, eb[k]) for k in range(j, len(eb))]
    return matched, only_a, only_b


def _all_ended(t: Trace) -> bool:
    """Every program of the trace ended in it (so it has no events after its last)."""
    progs = {e["prog"] for e in t.events if e.get("event") in ALIGNED_KINDS}
    ended = {e["prog"] for e in t.events
             if e.get("event") == "state" and e.get("state") in ENDED_STATES}
    return bool(progs) and progs <= ended


# ---------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------

_TIME_DOC = {"wall_us": "wall_us (measured)", "time_us": "time_us (cycle model)"}


def _fmt(v, nd: int = 3) -> str:
    return "-" if v is None else f"{v:.{nd}f}"


def format_table(c: Comparison) -> str:
    """The human-readable report."""
    out = []
    for label, t, tf in (("A", c.a, c.time_a), ("B", c.b, c.time_b)):
        h = t.header
        out.append(f"{label}: {t.path}  backend={h.get('backend')} clock_hz={h.get('clock_hz')} "
                   f"events={len(t.events)}  time={_TIME_DOC[tf]}")
    out.append("deviation d = t_A - t_B in us (A late is positive); p50/p99/max of |d|; "
               "mean d signed; drift = slope of d over t_A")
    out.append("")
    cols = ("prog", "kind", "key", "matched", "missing", "extra", "p50|d|", "p99|d|",
            "max|d|", "mean d", "drift ppm", "value!=")
    rows = []
    for g, s in c.groups.items():
        j = s.to_json()
        rows.append((str(g[0]), g[1], str(g[2]), str(j["matched"]), str(j["missing"]),
                     str(j["extra"]), _fmt(j["p50_us"]), _fmt(j["p99_us"]), _fmt(j["max_us"]),
                     _fmt(j["mean_us"]), _fmt(j["drift_ppm"]),
                     str(j["value_mismatches"]) if g[1] == "reg" else "-"))
    j = c.overall.to_json()
    total = ("all", "", "", str(j["matched"]), str(j["missing"]), str(j["extra"]),
             _fmt(j["p50_us"]), _fmt(j["p99_us"]), _fmt(j["max_us"]), _fmt(j["mean_us"]),
             _fmt(j["drift_ppm"]), str(j["value_mismatches"]))
    widths = [max(len(r[i]) for r in (cols, total, *rows)) for i in range(len(cols))]
    left = 3   # prog, kind, key are left-aligned; numbers right-aligned

    def line(r) -> str:
        return "  ".join(v.ljust(w) if i < left else v.rjust(w)
                         for i, (v, w) in enumerate(zip(r, widths))).rstrip()

    out.append(line(cols))
    out.extend(line(r) for r in rows)
    out.append("-" * len(line(cols)))
    out.append(line(total))
    if c.ignored:
        out.append(f"ignored kinds: {', '.join(c.ignored)}")
    if c.missing:
        out.append("")
        out.append(f"missing from B ({len(c.missing)}"
                   + (f"; {c.accounted[1]} accounted for by B's dropped count"
                      if c.accounted[1] else "") + "):")
        for g, ln in c.missing[:REPORT_LIMIT]:
            out.append(f"  {c.a.path}:{ln}: prog {g[0]} {g[1]} {g[2]} #{g[3]}")
    if c.extra:
        out.append("")
        out.append(f"extra in B ({len(c.extra)}"
                   + (f"; {c.accounted[0]} accounted for by A's dropped count"
                      if c.accounted[0] else "") + "):")
        for g, ln in c.extra[:REPORT_LIMIT]:
            out.append(f"  {c.b.path}:{ln}: prog {g[0]} {g[1]} {g[2]} #{g[3]}")
    if c.mismatches:
        out.append("")
        out.append(f"register value mismatches ({len(c.mismatches)}):")
        for p in c.mismatches[:REPORT_LIMIT]:
            out.append(f"  {p.group[2]} #{p.group[3]}: A={p.a['value']} ({c.a.path}:{p.a_line})"
                       f"  B={p.b['value']} ({c.b.path}:{p.b_line})")
    over = c.over_tolerance_pairs()
    if over:
        out.append("")
        out.append(f"over tolerance {c.tolerance_us:g} us ({len(over)}):")
        for p in over[:REPORT_LIMIT]:
            out.append(f"  prog {p.group[0]} {p.group[1]} {p.group[2]} #{p.group[3]}: "
                       f"d={p.deviation:+.3f} us ({c.a.path}:{p.a_line}, {c.b.path}:{p.b_line})")
    for w in c.warnings:
        out.append(f"warning: {w}")
    if c.tolerance_us is not None:
        out.append("")
        if c.ok:
            out.append(f"PASS: every event matched within {c.tolerance_us:g} us")
        else:
            out.append("FAIL: " + "; ".join(c.failures))
    return "\n".join(out) + "\n"


#: The deviation axis of the plot spans these percentiles of d (padded); points outside
#: are drawn clipped at its edge, so one outlier cannot flatten every other point.
PLOT_PERCENTILES = (1.0, 99.0)


def plot_limits(devs: list[float], tolerance_us: float | None = None) -> tuple[float, float]:
    """The deviation axis: the 1st..99th percentile of ``devs`` with 15 % padding,
    always including 0 (and ±tolerance when that is near the data)."""
    if not devs:
        return -1.0, 1.0
    xs = sorted(devs)
    lo, hi = (percentile(xs, q) for q in PLOT_PERCENTILES)
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    if tolerance_us is not None and tolerance_us <= 3 * max(hi - lo, 1e-9):
        lo, hi = min(lo, -tolerance_us), max(hi, tolerance_us)
    pad = max((hi - lo) * 0.15, 0.05)
    return lo - pad, hi + pad


def plot(c: Comparison, out: str) -> None:
    """Write a PNG: the deviation of every pair over A's time (one colour per kind, each
    kind's drift fit over its own time span, outliers clipped to the edge and counted)
    and a histogram over the same range."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_t, ax_h) = plt.subplots(
        1, 2, figsize=(12, 4.8), gridspec_kw={"width_ratios": [2.2, 1]}, constrained_layout=True)
    fig.suptitle(f"{c.a.name} ({c.a.header.get('backend')}, {c.time_a}) relative to "
                 f"{c.b.name} ({c.b.header.get('backend')}, {c.time_b}):  "
                 "d = t_A - t_B, late is positive")
    colours = {"irq": "tab:red", "reg": "tab:blue", "state": "tab:green", "bind": "tab:purple"}
    markers = {"irq": "o", "reg": "x", "state": "s", "bind": "^"}
    devs = c.overall.deviations
    lo, hi = plot_limits(devs, c.tolerance_us)
    # Long traces: seconds instead of ms, and small translucent markers so density shows.
    span = max((p.ta for p in c.pairs), default=0.0)
    scale, unit = (1e6, "s") if span > 10e6 else (1e3, "ms")
    dense = len(c.pairs) > 2000
    for kind in ALIGNED_KINDS:
        ps = [p for p in c.pairs if p.group[1] == kind]
        if not ps:
            continue
        inside = [p for p in ps if lo <= p.deviation <= hi]
        ax_t.scatter([p.ta / scale for p in inside], [p.deviation for p in inside],
                     s=4 if dense else 16, c=colours[kind], marker=markers[kind],
                     label=f"{kind} ({len(ps)})", alpha=0.3 if dense else 0.8,
                     linewidths=1 if kind == "reg" else 0)
        # the kind's own drift line, robust (a least-squares line is tilted off the
        # points by a few stragglers), drawn over the time its events span
        xs, ys = [p.ta for p in ps], [p.deviation for p in ps]
        line = robust_line(xs, ys)
        if line is not None:
            sl, b0 = line
            ends = [min(xs), max(xs)]
            ax_t.plot([x / scale for x in ends], [b0 + sl * x for x in ends],
                      color=colours[kind], linewidth=1.2, linestyle="-",
                      label=f"{kind} drift {round(sl * 1e6, 1) + 0.0:+.1f} ppm (Theil-Sen)")
    high = [p for p in c.pairs if p.deviation > hi]
    low = [p for p in c.pairs if p.deviation < lo]
    inset = 0.04 * (hi - lo)
    for group, edge, mark in ((high, hi - inset, "^"), (low, lo + inset, "v")):
        if group:
            ax_t.scatter([p.ta / scale for p in group], [edge] * len(group), marker=mark,
                         s=40, facecolors="none", edgecolors="black", linewidths=1,
                         label=f"{len(group)} beyond the axis (clipped)")
            worst = max(group, key=lambda p: abs(p.deviation))
            ax_t.annotate(f"{worst.deviation:+.1f} us", (worst.ta / scale, edge),
                          textcoords="offset points", xytext=(7, -4), fontsize="small")
    if c.tolerance_us is not None:
        for y in (c.tolerance_us, -c.tolerance_us):
            if lo <= y <= hi:
                ax_t.axhline(y, color="grey", linestyle="--", linewidth=1)
    ax_t.axhline(0, color="black", linewidth=0.6)
    ax_t.set_ylim(lo, hi)
    ax_t.set_xlabel(f"A time ({unit}, {c.time_a})")
    ax_t.set_ylabel("d = t_A - t_B (us), late > 0")
    ax_t.grid(True, alpha=0.3)
    if c.pairs:
        # below the axes: never over the points
        leg = ax_t.legend(loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=4,
                          fontsize="small", markerscale=3 if dense else 1, frameon=False)
        for h in leg.legend_handles:
            h.set_alpha(1)
    if devs:
        inside = [d for d in devs if lo <= d <= hi]
        ax_h.hist(inside, bins=40, range=(lo, hi), orientation="horizontal",
                  color="tab:blue", alpha=0.8)
        ax_h.set_ylim(lo, hi)
        if len(inside) < len(devs):
            ax_h.text(0.98, 0.02, f"{len(devs) - len(inside)} outside the axis",
                      transform=ax_h.transAxes, ha="right", va="bottom", fontsize="small")
    j = c.overall.to_json()
    ax_h.set_title(f"|d| p50 {_fmt(j['p50_us'])} us, p99 {_fmt(j['p99_us'])} us\n"
                   f"max {_fmt(j['max_us'])} us, mean d {_fmt(j['mean_us'])} us",
                   fontsize="medium")
    ax_h.set_ylabel("d (us)")
    ax_h.set_xlabel("events")
    ax_h.grid(True, alpha=0.3)
    fig.savefig(out, dpi=100)
    plt.close(fig)
