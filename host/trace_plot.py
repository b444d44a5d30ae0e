"""The deviation plot of ``copper trace compare --plot``: deviation over time and its
histogram, one colour per event kind."""

from __future__ import annotations

from copperline.firmware.trace import PROGRAM_KINDS
from copperline.host.trace_compare import Comparison, fmt
from copperline.host.trace_stats import percentile, robust_line


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
    for kind in PROGRAM_KINDS:
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
    ax_h.set_title(f"|d| p50 {fmt(j['p50_us'])} us, p99 {fmt(j['p99_us'])} us\n"
                   f"max {fmt(j['max_us'])} us, mean d {fmt(j['mean_us'])} us",
                   fontsize="medium")
    ax_h.set_ylabel("d (us)")
    ax_h.set_xlabel("events")
    ax_h.grid(True, alpha=0.3)
    fig.savefig(out, dpi=100)
    plt.close(fig)
