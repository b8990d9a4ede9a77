"""Performance metrics of a replayed equity curve: PnL, maximum drawdown and an annualised Sharpe ratio.

Called by :func:`tradewarden.replay.engine.replay` on the curve :mod:`~tradewarden.replay.simulation`
marked after every bar. Sums use ``math.fsum`` (correctly rounded, independent of summation order), and
every metric is rounded to ``METRIC_DECIMALS`` before it is reported or hashed, so the report is
bit-identical for identical inputs on any IEEE-754 machine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import pairwise

METRIC_DECIMALS = 10
#: Crypto venues trade around the clock: a year is 365 days of bars, whatever the timeframe.
SECONDS_PER_YEAR = 365 * 24 * 3600


@dataclass(frozen=True, slots=True)
class Metrics:
    pnl: float
    max_drawdown_pct: float
    sharpe: float


def bars_per_year(timeframe_seconds: int) -> float:
    """How many bars of this length a (24/7) year holds: 525,600 for 1m bars."""
    return SECONDS_PER_YEAR / timeframe_seconds


def rounded(value: float) -> float:
    """``value`` rounded for reporting and hashing; -0.0 becomes 0.0 so that it prints the same way."""
    return round(value, METRIC_DECIMALS) + 0.0


def compute_metrics(equity: list[float], timeframe_seconds: int) -> Metrics:
    """PnL (last - first point), max drawdown in % of the running peak, Sharpe of per-bar returns."""
    if not equity:
        return Metrics(0.0, 0.0, 0.0)
    return Metrics(
        pnl=rounded(equity[-1] - equity[0]),
        max_drawdown_pct=rounded(max_drawdown_pct(equity)),
        sharpe=rounded(sharpe(equity, bars_per_year(timeframe_seconds))),
    )


def max_drawdown_pct(equity: list[float]) -> float:
    """Largest fall from a running peak, in percent of that peak (0 for a curve that never falls)."""
    peak = equity[0]
    worst = 0.0
    for value in equity:
        if value > peak:
            peak = value
        elif peak > 0.0:
            drop = (peak - value) / peak
            if drop > worst:
                worst = drop
    return worst * 100.0


def sharpe(equity: list[float], periods_per_year: float) -> float:
    """mean / sample stdev of the per-bar returns, times sqrt(periods per year); 0 when undefined.

    Undefined means fewer than two returns, a non-positive equity point (a return of it means nothing),
    or returns without any spread: a curve that never moves has no risk to reward.
    """
    if len(equity) < 3 or min(equity) <= 0.0:
        return 0.0
    returns = [b / a - 1.0 for a, b in pairwise(equity)]
    n = len(returns)
    mean = math.fsum(returns) / n
    variance = math.fsum((r - mean) * (r - mean) for r in returns) / (n - 1)
    # Identical returns can leave a variance of a few ulps from rounding the mean; that is no spread.
    if variance <= (abs(mean) * 1e-12) ** 2:
        return 0.0
    return mean / math.sqrt(variance) * math.sqrt(periods_per_year)
