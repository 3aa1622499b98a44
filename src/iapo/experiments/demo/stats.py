"""Statistics of the demo's report: mean ± std over seeds and paired differences with a t confidence interval.

Pure functions on lists of floats. `paired_difference(a, b)` is the report's comparison of two methods run with the
same seeds: the per-seed differences a − b, their mean and a two-sided confidence interval from Student's t
distribution with n − 1 degrees of freedom (`t_quantile`, computed here by integrating the t density: no SciPy).

    paired_difference([0.61, 0.58, 0.66], [0.55, 0.57, 0.60])   # {"mean": 0.0433, "low": ..., "high": ..., ...}
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence


def t_density(x: float, df: int) -> float:
    """The density of Student's t distribution with `df` degrees of freedom at `x`."""
    log_norm = math.lgamma((df + 1) / 2) - math.lgamma(df / 2) - 0.5 * math.log(df * math.pi)
    return math.exp(log_norm - (df + 1) / 2 * math.log1p(x * x / df))


def t_cdf(x: float, df: int, intervals: int = 4000) -> float:
    """P(T <= x) for T ~ t(df): 1/2 plus the density's integral from 0 to |x| (Simpson's rule), by symmetry."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    a = abs(x)
    h = a / intervals
    inner = sum((4 if k % 2 else 2) * t_density(k * h, df) for k in range(1, intervals))
    area = h / 3 * (t_density(0.0, df) + inner + t_density(a, df))
    return 0.5 + math.copysign(area, x)


def t_quantile(p: float, df: int) -> float:
    """The `p` quantile of t(df), 0.5 <= p < 1, by bisection on `t_cdf` (to 1e-6; t(4) at 0.975 is 2.776)."""
    if not 0.5 <= p < 1:
        raise ValueError(f"p must be in [0.5, 1), got {p}")
    low, high = 0.0, 1.0
    while t_cdf(high, df) < p:
        high *= 2
    while high - low > 1e-6:
        middle = (low + high) / 2
        low, high = (middle, high) if t_cdf(middle, df) < p else (low, middle)
    return (low + high) / 2


def paired_difference(first: Sequence[float], second: Sequence[float], confidence: float = 0.95) -> dict:
    """Per-pair differences `first − second` (same seeds, same order), their mean, standard deviation and the
    two-sided `confidence` interval of the mean from the t distribution; `low` / `high` are nan for one pair."""
    if len(first) != len(second) or not first:
        raise ValueError(f"paired values need equal, non-zero lengths, got {len(first)} and {len(second)}")
    differences = [a - b for a, b in zip(first, second, strict=True)]
    n = len(differences)
    mean = statistics.fmean(differences)
    if n == 1:
        return {"differences": differences, "mean": mean, "std": math.nan, "low": math.nan, "high": math.nan, "n": 1}
    std = statistics.stdev(differences)
    half = t_quantile(0.5 + confidence / 2, n - 1) * std / math.sqrt(n)
    return {"differences": differences, "mean": mean, "std": std, "low": mean - half, "high": mean + half, "n": n}


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """(mean, sample standard deviation) of `values`; the deviation is nan for a single value."""
    if not values:
        raise ValueError("no values")
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else math.nan
