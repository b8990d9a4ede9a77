"""Trading-session windows in UTC, for the session-filtered built-in strategies (``gold``,
``eur_usd_5m_safe``).

Sessions are read from the bar's own timestamp, never from the wall clock, so that replay decides
exactly as the live loop did. They are fixed UTC hours: no daylight-saving shift, which keeps a year of
replay unambiguous (the London session moves by an hour against UTC twice a year; pick the hours to suit).

A bar belongs to a session by its open *and* close time. The bar length is not given by a ``Candle``, so
the window learns it as the smallest positive gap between consecutive bar timestamps (gaps in the data,
such as weekends, only make gaps larger and do not fool it).
"""

from __future__ import annotations

HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS


class SessionWindow:
    """A daily window ``[start_hour, end_hour)`` in UTC (start < end; no window across midnight)."""

    __slots__ = ("_prev_ts", "bar_ms", "end_ms", "start_ms")

    def __init__(self, start_hour: int, end_hour: int) -> None:
        if not 0 <= start_hour < end_hour <= 24:
            raise ValueError(f"session: need 0 <= start_hour < end_hour <= 24 (got {start_hour}, {end_hour})")
        self.start_ms = start_hour * HOUR_MS
        self.end_ms = end_hour * HOUR_MS
        self.bar_ms = 0
        self._prev_ts: int | None = None

    def observe(self, ts: int) -> None:
        """Learn the bar length from one more bar's open time; call once per bar, in order."""
        prev = self._prev_ts
        self._prev_ts = ts
        if prev is not None:
            gap = ts - prev
            if gap > 0 and (self.bar_ms == 0 or gap < self.bar_ms):
                self.bar_ms = gap

    def allows_entry(self, ts: int) -> bool:
        """True when the bar opened inside the window and the window is still open after it closes.

        An entry on the session's last bar would have to be closed on the same bar, so it is refused.
        """
        tod = ts % DAY_MS
        return self.start_ms <= tod and tod + self.bar_ms < self.end_ms

    def must_be_flat(self, ts: int) -> bool:
        """True when a position must be closed on this bar: it ends the session, or lies outside it."""
        tod = ts % DAY_MS
        return tod < self.start_ms or tod + self.bar_ms >= self.end_ms
