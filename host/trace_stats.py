"""Statistics of timing deviations: percentiles, drift lines and per-group figures."""

from __future__ import annotations

import math
from dataclasses import dataclass, field


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


def rounded(v: float | None, nd: int = 3) -> float | None:
    """``v`` rounded for reports (None stays None; never "-0.0")."""
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
            "p50_us": rounded(percentile(absd, 50)) if have else None,
            "p99_us": rounded(percentile(absd, 99)) if have else None,
            "max_us": rounded(absd[-1]) if have else None,
            "mean_us": rounded(sum(self.deviations) / len(self.deviations)) if have else None,
            "drift_ppm": rounded(sl * 1e6) if sl is not None else None,
        }
