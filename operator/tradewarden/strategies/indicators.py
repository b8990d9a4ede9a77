"""Incremental technical indicators used by the built-in strategies (and free for plug-ins to use).

Each indicator is a small object with an ``update`` method that takes one new bar's values and returns
the indicator's value, or ``None`` while it has not seen enough bars. Every update is O(1) (amortised
O(1) for the rolling extremes): replay feeds a year of 1-minute bars through each strategy, so nothing
here may look back over the history. Objects use ``__slots__`` and plain floats because attribute access
and allocation dominate the cost of an update in pure Python.

Conventions follow the usual definitions: EMAs are seeded with the simple mean of their first ``period``
values; ATR, RSI and ADX use Wilder's smoothing (alpha = 1/period), seeded the same way.
"""

from __future__ import annotations

import math
from collections import deque

SPREAD_EPSILON = 1e-9
"""Relative size below which two averages count as equal, see ``spread``."""


def spread(fast: float | None, slow: float | None, scale: float) -> float | None:
    """``fast - slow``, or ``None`` while either is not ready; differences within 1e-9 of ``scale`` are 0.

    Over a run of identical closes (common on quiet 1-minute markets) two EMAs converge to the close only
    up to rounding, and a sign flip in the last bit must not read as a crossover. Snapping makes "equal" a
    state of its own, so a crossover is a move from <= 0 to a real difference above 0; a genuine move of
    one price tick is many orders of magnitude above the tolerance.
    """
    if fast is None or slow is None:
        return None
    diff = fast - slow
    tolerance = SPREAD_EPSILON * (scale if scale > 0.0 else -scale)
    return 0.0 if -tolerance <= diff <= tolerance else diff


class Ema:
    """Exponential moving average, alpha = 2 / (period + 1), seeded with an SMA of the first values."""

    __slots__ = ("_count", "_sum", "alpha", "period", "value")

    def __init__(self, period: int) -> None:
        if period < 1:
            raise ValueError(f"period: must be >= 1 (got {period})")
        self.period = period
        self.alpha = 2.0 / (period + 1)
        self.value: float | None = None
        self._count = 0
        self._sum = 0.0

    def update(self, x: float) -> float | None:
        value = self.value
        if value is not None:
            value += self.alpha * (x - value)
            self.value = value
            return value
        self._count += 1
        self._sum += x
        if self._count == self.period:
            self.value = self._sum / self.period
        return self.value


class Sma:
    """Simple moving average of the last ``period`` values (``None`` until ``period`` values were seen).

    A running sum in a ring buffer, recomputed exactly with ``math.fsum`` once per turn of the ring, for
    the reason given in ``RollingMeanStd``: a year of additions and subtractions must not drift.
    """

    __slots__ = ("_buf", "_count", "_pos", "_sum", "period", "value")

    def __init__(self, period: int) -> None:
        if period < 1:
            raise ValueError(f"period: must be >= 1 (got {period})")
        self.period = period
        self.value: float | None = None
        self._buf = [0.0] * period
        self._pos = 0
        self._count = 0
        self._sum = 0.0

    def update(self, x: float) -> float | None:
        buf = self._buf
        pos = self._pos
        old = buf[pos]
        buf[pos] = x
        pos += 1
        n = self.period
        if pos == n:
            pos = 0
        self._pos = pos
        if self._count < n:
            self._count += 1
            self._sum += x
            if self._count < n:
                return None
        elif pos == 0:
            # Once per full turn of the ring: exact recompute, see the class docstring.
            self._sum = math.fsum(buf)
        else:
            self._sum += x - old
        value = self._sum / n
        self.value = value
        return value


class Wilder:
    """Wilder's running average (alpha = 1/period), seeded with the mean of the first ``period`` values.

    The building block of ATR, RSI and ADX.
    """

    __slots__ = ("_count", "_sum", "period", "value")

    def __init__(self, period: int) -> None:
        if period < 1:
            raise ValueError(f"period: must be >= 1 (got {period})")
        self.period = period
        self.value: float | None = None
        self._count = 0
        self._sum = 0.0

    def update(self, x: float) -> float | None:
        value = self.value
        if value is not None:
            value += (x - value) / self.period
            self.value = value
            return value
        self._count += 1
        self._sum += x
        if self._count == self.period:
            self.value = self._sum / self.period
        return self.value


class Atr:
    """Average true range with Wilder's smoothing.

    The first bar's true range is its high - low, since it has no previous close.
    """

    __slots__ = ("_avg", "_prev_close", "value")

    def __init__(self, period: int) -> None:
        self._avg = Wilder(period)
        self._prev_close: float | None = None
        self.value: float | None = None

    def update(self, high: float, low: float, close: float) -> float | None:
        prev = self._prev_close
        # max(high, prev) - min(low, prev) is the classic three-way max, without three subtractions.
        tr = high - low if prev is None else (high if high > prev else prev) - (low if low < prev else prev)
        self._prev_close = close
        self.value = self._avg.update(tr)
        return self.value


class Rsi:
    """Relative strength index (0..100) with Wilder's smoothing of gains and losses.

    Needs ``period`` price changes, that is ``period + 1`` closes. A window without losses reads 100,
    one without any change reads 50.
    """

    __slots__ = ("_gain", "_loss", "_prev", "value")

    def __init__(self, period: int) -> None:
        self._gain = Wilder(period)
        self._loss = Wilder(period)
        self._prev: float | None = None
        self.value: float | None = None

    def update(self, close: float) -> float | None:
        prev = self._prev
        self._prev = close
        if prev is None:
            return None
        change = close - prev
        if change > 0.0:
            gain = self._gain.update(change)
            loss = self._loss.update(0.0)
        else:
            gain = self._gain.update(0.0)
            loss = self._loss.update(-change)
        if gain is None or loss is None:
            return None
        value = (100.0 if gain > 0.0 else 50.0) if loss == 0.0 else 100.0 - 100.0 / (1.0 + gain / loss)
        self.value = value
        return value


class Adx:
    """Wilder's average directional index (0..100): how strongly price trends, whatever the direction.

    Ready after about ``2 * period`` bars: ``period`` to smooth the directional movement, ``period`` more
    to smooth DX into ADX.
    """

    __slots__ = ("_dx", "_minus", "_plus", "_prev_close", "_prev_high", "_prev_low", "_tr", "value")

    def __init__(self, period: int) -> None:
        self._tr = Wilder(period)
        self._plus = Wilder(period)
        self._minus = Wilder(period)
        self._dx = Wilder(period)
        self._prev_high: float | None = None
        self._prev_low = 0.0
        self._prev_close = 0.0
        self.value: float | None = None

    def update(self, high: float, low: float, close: float) -> float | None:
        prev_high = self._prev_high
        prev_low = self._prev_low
        prev_close = self._prev_close
        self._prev_high = high
        self._prev_low = low
        self._prev_close = close
        if prev_high is None:
            return None
        up = high - prev_high
        down = prev_low - low
        plus_dm = up if up > down and up > 0.0 else 0.0
        minus_dm = down if down > up and down > 0.0 else 0.0
        tr = (high if high > prev_close else prev_close) - (low if low < prev_close else prev_close)
        tr_avg = self._tr.update(tr)
        plus_avg = self._plus.update(plus_dm)
        minus_avg = self._minus.update(minus_dm)
        if tr_avg is None or plus_avg is None or minus_avg is None:
            return None
        if tr_avg <= 0.0:
            dx = 0.0
        else:
            plus_di = plus_avg / tr_avg
            minus_di = minus_avg / tr_avg
            total = plus_di + minus_di
            dx = 0.0 if total <= 0.0 else 100.0 * abs(plus_di - minus_di) / total
        self.value = self._dx.update(dx)
        return self.value


class RollingMax:
    """Maximum of the last ``window`` values, amortised O(1) with a monotonic deque.

    ``value`` is the maximum of the values pushed so far (at most ``window`` of them); read it *before*
    ``update`` to get the extreme of the previous bars only, as a Donchian breakout needs.
    """

    __slots__ = ("_count", "_dq", "window")

    def __init__(self, window: int) -> None:
        if window < 1:
            raise ValueError(f"window: must be >= 1 (got {window})")
        self.window = window
        # (index, value) pairs with strictly decreasing values: the front is the current maximum.
        self._dq: deque[tuple[int, float]] = deque()
        self._count = 0

    @property
    def ready(self) -> bool:
        return self._count >= self.window

    @property
    def value(self) -> float | None:
        return self._dq[0][1] if self._dq else None

    def update(self, x: float) -> float:
        dq = self._dq
        i = self._count
        while dq and dq[-1][1] <= x:
            dq.pop()
        dq.append((i, x))
        if dq[0][0] <= i - self.window:
            dq.popleft()
        self._count = i + 1
        return dq[0][1]


class RollingMin(RollingMax):
    """Minimum of the last ``window`` values: a ``RollingMax`` over the negated values."""

    __slots__ = ()

    @property
    def value(self) -> float | None:
        top = super().value
        return None if top is None else -top

    def update(self, x: float) -> float:
        return -super().update(-x)


class RollingMeanStd:
    """Mean and population standard deviation of the last ``window`` values (Bollinger bands).

    Keeps running sums in a ring buffer. Adding and subtracting floats for a year of bars lets rounding
    error creep in, so the sums are recomputed exactly from the buffer once per ``window`` updates: still
    amortised O(1), and the drift stays bounded by one window's worth of rounding.
    """

    __slots__ = ("_buf", "_count", "_pos", "_sum", "_sumsq", "mean", "std", "window")

    def __init__(self, window: int) -> None:
        if window < 2:
            raise ValueError(f"window: must be >= 2 (got {window})")
        self.window = window
        self._buf = [0.0] * window
        self._pos = 0
        self._count = 0
        self._sum = 0.0
        self._sumsq = 0.0
        self.mean: float | None = None
        self.std: float | None = None

    def update(self, x: float) -> float | None:
        """Push one value; return the mean (``None`` until ``window`` values were seen)."""
        buf = self._buf
        pos = self._pos
        old = buf[pos]
        buf[pos] = x
        pos += 1
        if pos == self.window:
            pos = 0
        self._pos = pos
        n = self.window
        if self._count < n:
            self._count += 1
            self._sum += x
            self._sumsq += x * x
            if self._count < n:
                return None
        elif pos == 0:
            # Once per full turn of the ring: exact recompute, see the class docstring.
            self._sum = math.fsum(buf)
            self._sumsq = math.fsum(v * v for v in buf)
        else:
            self._sum += x - old
            self._sumsq += x * x - old * old
        mean = self._sum / n
        var = self._sumsq / n - mean * mean
        self.mean = mean
        # Rounding can make a flat window's variance a tiny negative number.
        self.std = math.sqrt(var) if var > 0.0 else 0.0
        return mean


class EfficiencyRatio:
    """Kaufman's efficiency ratio over ``n`` bars: ``|close - close n bars ago| / sum of |bar-to-bar moves|``.

    1 means price went straight from A to B (a clean trend); near 0 means it went back and forth and
    got nowhere (a range, or noise). The sum of moves is kept in a ring buffer with the same periodic exact
    recompute as ``RollingMeanStd``, for the same reason.
    """

    __slots__ = ("_closes", "_count", "_moves", "_pos", "_prev", "_sum", "n", "value")

    def __init__(self, n: int) -> None:
        if n < 1:
            raise ValueError(f"n: must be >= 1 (got {n})")
        self.n = n
        self._closes = Lag(n)
        self._moves = [0.0] * n
        self._pos = 0
        self._count = 0
        self._sum = 0.0
        self._prev: float | None = None
        self.value: float | None = None

    def update(self, close: float) -> float | None:
        then = self._closes.update(close)
        prev = self._prev
        self._prev = close
        if prev is None:
            return None
        move = close - prev if close >= prev else prev - close
        moves = self._moves
        pos = self._pos
        old = moves[pos]
        moves[pos] = move
        pos += 1
        if pos == self.n:
            pos = 0
        self._pos = pos
        if self._count < self.n:
            self._count += 1
            self._sum += move
        elif pos == 0:
            self._sum = math.fsum(moves)
        else:
            self._sum += move - old
        if then is None:
            return None
        total = self._sum
        net = close - then if close >= then else then - close
        # A window without any move is no trend at all.
        value = net / total if total > 0.0 else 0.0
        # Rounding in the running sum must not push a straight line above 1.
        self.value = value if value < 1.0 else 1.0
        return self.value


class Lag:
    """The value pushed ``n`` updates ago (``None`` until there is one): a slope over ``n`` bars."""

    __slots__ = ("_buf", "_count", "_pos", "n")

    def __init__(self, n: int) -> None:
        if n < 1:
            raise ValueError(f"n: must be >= 1 (got {n})")
        self.n = n
        self._buf = [0.0] * n
        self._pos = 0
        self._count = 0

    def update(self, x: float) -> float | None:
        buf = self._buf
        pos = self._pos
        old = buf[pos]
        buf[pos] = x
        pos += 1
        self._pos = 0 if pos == self.n else pos
        if self._count < self.n:
            self._count += 1
            return None
        return old
