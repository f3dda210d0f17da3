"""Mean, sample standard deviation and 95% t confidence intervals over runs, without scipy.

The 0.975 quantile of Student's t comes from a table for 1..30 degrees of freedom and from the
Cornish-Fisher expansion in 1/df beyond (its error there is below 1e-5, far under the rounding
of a table cell).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# t_{0.975, df} for df = 1..30
_T975 = (12.7062, 4.3027, 3.1824, 2.7764, 2.5706, 2.4469, 2.3646, 2.3060, 2.2622, 2.2281,
         2.2010, 2.1788, 2.1604, 2.1448, 2.1314, 2.1199, 2.1098, 2.1009, 2.0930, 2.0860,
         2.0796, 2.0739, 2.0687, 2.0639, 2.0595, 2.0555, 2.0518, 2.0484, 2.0452, 2.0423)
_Z975 = 1.959963984540054


def t975(df: int) -> float:
    """The 0.975 quantile of Student's t with ``df`` degrees of freedom (df >= 1)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if df <= len(_T975):
        return _T975[df - 1]
    z = _Z975
    return (z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)
            + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * df**3))


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
