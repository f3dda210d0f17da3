"""Mean, sample standard deviation and 95% Student-t confidence intervals over runs; the t
quantile is scipy's (``scipy.stats.t``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats


def t975(df: int) -> float:
    """The 0.975 quantile of Student's t with ``df`` degrees of freedom (df >= 1)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    return float(stats.t.ppf(0.975, df))


@dataclass(frozen=True)
class Summary:
    """Statistics of one metric over n runs; std and ci95 (half-width) are NaN for n < 2."""

    mean: float
    std: float
    ci95: float
    n: int


def summarize(values) -> Summary:
    """Summary of the finite values (missing metrics are left out, not counted as zero)."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    n = len(x)
    if n == 0:
        return Summary(math.nan, math.nan, math.nan, 0)
    if n == 1:
        return Summary(float(x[0]), math.nan, math.nan, 1)
    std = float(x.std(ddof=1))
    return Summary(float(x.mean()), std, t975(n - 1) * std / math.sqrt(n), n)
