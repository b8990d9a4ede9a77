"""The risk manager: every limit of ``TradingBot.spec.risk``, checked before an order exists.

Called by the engine for each order it is about to place (``check`` then ``record``) and for each
equity observation (``observe_equity``). Pure logic with an injected clock: no I/O, so each limit is
unit-tested directly. A rejection names its reason; the engine counts it in
``tradewarden_runner_risk_rejections_total{reason}``.
"""

from __future__ import annotations

import enum
import math
from collections import deque
from dataclasses import dataclass

from tradewarden.api.tradingbot import RiskLimits


class OrderKind(enum.StrEnum):
    ENTRY = "entry"
    EXIT = "exit"
    CANCEL = "cancel"


class RejectReason(enum.StrEnum):
    DRAWDOWN = "drawdown"
    ENTRY_RATE = "entry_rate"
    ENTRY_RATE_SYMBOL = "entry_rate_symbol"
    EXIT_RATE = "exit_rate"
    CANCEL_RATE = "cancel_rate"
    NOTIONAL_WINDOW = "notional_window"
    ORDER_GAP = "order_gap"
    MAX_POSITIONS = "max_positions"
    RISK_PER_TRADE = "risk_per_trade"
    NO_STOP = "no_stop"
    CAPITAL = "capital"


@dataclass(frozen=True, slots=True)
class Rejection:
    reason: RejectReason
    message: str


_MINUTE = 60.0


class _Window:
    """Timestamps of events inside a sliding window (seconds)."""

    __slots__ = ("events", "span")

    def __init__(self, span: float) -> None:
        self.span = span
        self.events: deque[tuple[float, float]] = deque()

    def prune(self, now: float) -> None:
        while self.events and self.events[0][0] <= now - self.span:
            self.events.popleft()

    def count(self, now: float) -> int:
        self.prune(now)
        return len(self.events)

    def total(self, now: float) -> float:
        self.prune(now)
        return sum(v for _, v in self.events)

    def add(self, now: float, value: float = 1.0) -> None:
        self.events.append((now, value))


class RiskManager:
    """Stateful limits over sliding windows, plus the equity peak for the drawdown trip."""

    def __init__(self, limits: RiskLimits, equity_peak: float = 0.0) -> None:
        self.limits = limits
        self.equity_peak = equity_peak
        self.drawdown_pct = 0.0
        self._entries = _Window(_MINUTE)
        self._entries_by_symbol: dict[str, _Window] = {}
        self._exits = _Window(_MINUTE)
        self._cancels = _Window(_MINUTE)
        self._notional = _Window(float(limits.notional_window_seconds))
        self._last_order_at: float | None = None

    def update_limits(self, limits: RiskLimits) -> None:
        """Apply new limits between ticks; the history of recent orders is kept, so rates stay honest."""
        self.limits = limits
        if self._notional.span != float(limits.notional_window_seconds):
            self._notional.span = float(limits.notional_window_seconds)

    # ---- drawdown -------------------------------------------------------------------------------

    def observe_equity(self, equity: float) -> bool:
        """Track the peak; True when the drawdown limit is breached (the caller trips a bot-scoped halt)."""
        if equity > self.equity_peak:
            self.equity_peak = equity
        # (peak - equity) * 100 / peak, not (1 - equity / peak) * 100: the latter reads a loss of exactly the
        # limit (90 of 100 against 10 %) as 9.999999999999998 % and would not trip.
        self.drawdown_pct = 0.0 if self.equity_peak <= 0 else max(
            0.0, (self.equity_peak - equity) * 100 / self.equity_peak)
        limit = self.limits.max_drawdown_pct
        return limit > 0 and self.drawdown_pct >= limit

    # ---- sizing ---------------------------------------------------------------------------------

    def size_entry(self, equity: float, price: float, stop: float | None) -> float | Rejection:
        """Base amount such that hitting ``stop`` loses at most maxRiskPerTradePct of equity."""
        if stop is None or not math.isfinite(stop) or stop >= price:
            return Rejection(RejectReason.NO_STOP, f"entry at {price:g} has no usable stop (got {stop}); "
                                                   "the risk per trade cannot be bounded")
        risk_budget = equity * self.limits.max_risk_per_trade_pct / 100.0
        if risk_budget <= 0:
            return Rejection(RejectReason.RISK_PER_TRADE,
                             "risk.maxRiskPerTradePct is 0: no entry can be sized")
        return risk_budget / (price - stop)

    # ---- order checks ---------------------------------------------------------------------------

    def check(self, kind: OrderKind, symbol: str, notional: float, now: float, *,
              open_positions: int = 0, opens_position: bool = False) -> Rejection | None:
        """The first limit this order would break, or None when it may go."""
        lim = self.limits
        if lim.min_order_gap_ms > 0 and self._last_order_at is not None:
            gap_ms = (now - self._last_order_at) * 1000.0
            if gap_ms < lim.min_order_gap_ms:
                return Rejection(RejectReason.ORDER_GAP,
                                 f"{gap_ms:.0f} ms since the last order; risk.minOrderGapMs is {lim.min_order_gap_ms}")
        if kind == OrderKind.CANCEL:
            if self._cancels.count(now) >= lim.cancels_per_minute:
                return Rejection(RejectReason.CANCEL_RATE,
                                 f"risk.cancelsPerMinute {lim.cancels_per_minute} reached")
            return None
        if kind == OrderKind.EXIT:
            if self._exits.count(now) >= lim.exit_orders_per_minute:
                return Rejection(RejectReason.EXIT_RATE,
                                 f"risk.exitOrdersPerMinute {lim.exit_orders_per_minute} reached")
            return None
        # Entries.
        if lim.max_drawdown_pct > 0 and self.drawdown_pct >= lim.max_drawdown_pct:
            return Rejection(RejectReason.DRAWDOWN,
                             f"drawdown {self.drawdown_pct:.2f} % >= risk.maxDrawdownPct {lim.max_drawdown_pct:g}")
        if self._entries.count(now) >= lim.entry_orders_per_minute:
            return Rejection(RejectReason.ENTRY_RATE,
                             f"risk.entryOrdersPerMinute {lim.entry_orders_per_minute} reached")
        per_symbol = self._entries_by_symbol.get(symbol)
        if per_symbol is not None and per_symbol.count(now) >= lim.entry_orders_per_minute_per_symbol:
            return Rejection(RejectReason.ENTRY_RATE_SYMBOL,
                             f"risk.entryOrdersPerMinutePerSymbol {lim.entry_orders_per_minute_per_symbol} "
                             f"reached for {symbol}")
        if lim.entry_orders_per_minute_per_symbol == 0:
            return Rejection(RejectReason.ENTRY_RATE_SYMBOL, "risk.entryOrdersPerMinutePerSymbol is 0")
        if opens_position and open_positions >= lim.max_open_positions:
            return Rejection(RejectReason.MAX_POSITIONS,
                             f"{open_positions} positions open; risk.maxOpenPositions is {lim.max_open_positions}")
        if lim.max_entry_notional_per_window > 0:
            used = self._notional.total(now)
            if used + notional > lim.max_entry_notional_per_window:
                return Rejection(RejectReason.NOTIONAL_WINDOW,
                                 f"entry notional {used + notional:.2f} would exceed "
                                 f"risk.maxEntryNotionalPerWindow {lim.max_entry_notional_per_window:g} "
                                 f"per {lim.notional_window_seconds} s")
        return None

    def gap_wait(self, now: float) -> float:
        """Seconds until ``risk.minOrderGapMs`` lets the next order go (0 when it may go now)."""
        if self.limits.min_order_gap_ms <= 0 or self._last_order_at is None:
            return 0.0
        return max(0.0, self._last_order_at + self.limits.min_order_gap_ms / 1000.0 - now)

    def record(self, kind: OrderKind, symbol: str, notional: float, now: float) -> None:
        """Count an order that was sent (after ``check`` let it through)."""
        self._last_order_at = now
        if kind == OrderKind.CANCEL:
            self._cancels.add(now)
        elif kind == OrderKind.EXIT:
            self._exits.add(now)
        else:
            self._entries.add(now)
            self._entries_by_symbol.setdefault(symbol, _Window(_MINUTE)).add(now)
            self._notional.add(now, notional)
