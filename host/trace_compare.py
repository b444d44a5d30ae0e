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

Traces are read with :func:`copperline.firmware.trace.load_trace`; the figures come from
:mod:`copperline.host.trace_stats` and the plot from :mod:`copperline.host.trace_plot`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

from copperline.firmware import isa
from copperline.firmware.trace import (DROPPABLE_KINDS, ENDED_STATES, PROGRAM_KINDS, Trace,
                                       time_field)
from copperline.host.trace_stats import Stats, rounded

#: How many individual missing/extra/mismatch/over-tolerance items a report lists.
REPORT_LIMIT = 20


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
                   "a_us": p.ta, "b_us": p.tb, "deviation_us": rounded(p.deviation)}
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
    return list(PROGRAM_KINDS).index(kind)


def _key_sort(key) -> tuple:
    # Registers sort by layer then field order; other keys as (type, value).
    if isinstance(key, str):
        try:
            return (0, isa.parse_register(key, layers=1 << isa.LAYER_BITS), "")
        except ValueError:
            return (1, 0, key)
    return (0, key, "")


def _occurrences(t: Trace, ignore: Iterable[str]) -> dict[tuple, list[tuple[dict, int]]]:
    out: dict[tuple, list[tuple[dict, int]]] = {}
    for e, ln in zip(t.events, t.lines):
        kind = e["event"]
        if kind not in PROGRAM_KINDS or kind in ignore:
            continue
        out.setdefault((e["prog"], kind, e[PROGRAM_KINDS[kind]]), []).append((e, ln))
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
        if k not in PROGRAM_KINDS:
            raise ValueError(f"cannot ignore {k!r}: aligned kinds are {', '.join(PROGRAM_KINDS)}")
    if tolerance_us is not None and not tolerance_us >= 0:
        raise ValueError(f"tolerance must be >= 0 us (got {tolerance_us})")
    time_a, time_b = time_field(a, time), time_field(b, time)
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
    progs = {e["prog"] for e in t.events if e.get("event") in PROGRAM_KINDS}
    ended = {e["prog"] for e in t.events
             if e.get("event") == "state" and e.get("state") in ENDED_STATES}
    return bool(progs) and progs <= ended


# ---------------------------------------------------------------------------------
# Output
# ---------------------------------------------------------------------------------

_TIME_DOC = {"wall_us": "wall_us (measured)", "time_us": "time_us (cycle model)"}


def fmt(v, nd: int = 3) -> str:
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
                     str(j["extra"]), fmt(j["p50_us"]), fmt(j["p99_us"]), fmt(j["max_us"]),
                     fmt(j["mean_us"]), fmt(j["drift_ppm"]),
                     str(j["value_mismatches"]) if g[1] == "reg" else "-"))
    j = c.overall.to_json()
    total = ("all", "", "", str(j["matched"]), str(j["missing"]), str(j["extra"]),
             fmt(j["p50_us"]), fmt(j["p99_us"]), fmt(j["max_us"]), fmt(j["mean_us"]),
             fmt(j["drift_ppm"]), str(j["value_mismatches"]))
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
    for title, items, other, accounted, path in (
            ("missing from B", c.missing, "B", c.accounted[1], c.a.path),
            ("extra in B", c.extra, "A", c.accounted[0], c.b.path)):
        if items:
            out.append("")
            out.append(f"{title} ({len(items)}"
                       + (f"; {accounted} accounted for by {other}'s dropped count"
                          if accounted else "") + "):")
            for g, ln in items[:REPORT_LIMIT]:
                out.append(f"  {path}:{ln}: prog {g[0]} {g[1]} {g[2]} #{g[3]}")
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


