"""``eur_usd_5m_safe``: a conservative EMA crossover on EUR/USDT, only in the London/New York overlap.

Registered by ``builtin/__init__.py``; run by the runner and replay through ``SafeStrategy``.

EUR/USD is most liquid, and its spreads tightest, while London and New York are both open. The strategy
trades only then and keeps every trade short and small. On each closed 5-minute bar:

* Enter long when flat, inside the overlap (default 12:00-16:00 UTC, not on its last bar), the fast
  EMA (default 9) crosses above the slow EMA (default 21) on this bar, and RSI(14) confirms the move
  without chasing it: ``rsi_min <= RSI <= rsi_max`` (default 50..70).
* Tight stop: ``close - stop_atr_mult * ATR(14)`` (default 1 ATR), fixed for the trade.
* Exit on the first of: a close below the stop; the fast EMA crossing back below the slow one;
  ``max_hold_bars`` bars in the trade (default 24, two hours of 5m bars); the overlap's last bar, so the
  position is flat when London closes.

Intended timeframe: 5m bars (the holding limit is counted in bars, so other timeframes scale it).
"""

from __future__ import annotations

from pydantic import Field

from tradewarden.api.market import HOLD, Action, Candle, Decision, Position
from tradewarden.strategies.base import Strategy, StrategyParams
from tradewarden.strategies.indicators import Atr, Ema, Rsi, spread
from tradewarden.strategies.registry import StrategyInfo
from tradewarden.strategies.sessions import SessionWindow


class EurUsd5mSafeParams(StrategyParams):
    fast: int = Field(9, ge=2, le=200, description="Period of the fast EMA, in bars.")
    slow: int = Field(21, ge=3, le=500, description="Period of the slow EMA, in bars; must exceed fast.")
    rsi_period: int = Field(14, ge=2, le=200, description="Period of the confirming RSI, in bars.")
    rsi_min: float = Field(50.0, ge=0.0, le=100.0, description="Lowest RSI that confirms an entry.")
    rsi_max: float = Field(70.0, ge=0.0, le=100.0, description="Highest RSI that confirms an entry.")
    atr_period: int = Field(14, ge=2, le=200, description="Period of the ATR used for the stop, in bars.")
    stop_atr_mult: float = Field(
        1.0, gt=0.0, le=5.0, description="Stop distance below the entry close, in ATRs (kept tight)."
    )
    max_hold_bars: int = Field(
        24, ge=1, le=1000, description="Close the position after this many bars in the trade."
    )
    session_start_hour: int = Field(
        12, ge=0, le=23, description="Start of the trading window, hour of day in UTC (inclusive)."
    )
    session_end_hour: int = Field(
        16, ge=1, le=24, description="End of the trading window, hour of day in UTC (exclusive)."
    )

    ordered = (("fast", "slow"), ("rsi_min", "rsi_max"), ("session_start_hour", "session_end_hour"))


class EurUsd5mSafeStrategy(Strategy[EurUsd5mSafeParams]):
    def __init__(self, params: EurUsd5mSafeParams, symbol: str) -> None:
        super().__init__(params, symbol)
        self._fast = Ema(params.fast)
        self._slow = Ema(params.slow)
        self._rsi = Rsi(params.rsi_period)
        self._atr = Atr(params.atr_period)
        self._session = SessionWindow(params.session_start_hour, params.session_end_hour)
        self._warmup = max(params.slow + 1, params.rsi_period + 1, params.atr_period)
        self._bars = 0
        self._prev_diff: float | None = None
        self._stop: float | None = None
        self._held = 0  # bars the current position has been held, this bar included
        self._pending_stop: float | None = None

    @property
    def warmup_bars(self) -> int:
        return self._warmup

    def on_candle(self, candle: Candle, position: Position) -> Decision:
        close = candle.close
        session = self._session
        session.observe(candle.ts)
        fast = self._fast.update(close)
        slow = self._slow.update(close)
        rsi = self._rsi.update(close)
        atr = self._atr.update(candle.high, candle.low, close)
        self._bars += 1
        prev_diff = self._prev_diff
        diff = spread(fast, slow, close)
        self._prev_diff = diff
        pending = self._pending_stop
        self._pending_stop = None
        if self._bars <= self._warmup or diff is None or prev_diff is None or rsi is None or atr is None:
            return HOLD

        params = self.params
        if position.qty > 0.0:
            stop = self._stop
            if stop is None:
                basis = position.entry_price if position.entry_price > 0.0 else close
                stop = pending if pending is not None else basis - params.stop_atr_mult * atr
                self._stop = stop
                self._held = 0
            self._held += 1
            if close < stop:
                return self._exit(f"close {close:g} below stop {stop:g}")
            if diff < 0.0 <= prev_diff:
                return self._exit(f"ema {params.fast} crossed below ema {params.slow}")
            if self._held >= params.max_hold_bars:
                return self._exit(f"held {self._held} bars")
            if session.must_be_flat(candle.ts):
                return self._exit("london/new york overlap over")
            return HOLD

        self._stop = None
        if (
            diff > 0.0 >= prev_diff
            and params.rsi_min <= rsi <= params.rsi_max
            and atr > 0.0
            and session.allows_entry(candle.ts)
        ):
            stop = close - params.stop_atr_mult * atr
            self._pending_stop = stop
            return Decision(
                Action.ENTER_LONG,
                f"ema {params.fast} crossed above ema {params.slow}, rsi {rsi:.1f}",
                stop,
            )
        return HOLD

    def _exit(self, reason: str) -> Decision:
        self._stop = None
        self._held = 0
        return Decision(Action.EXIT_LONG, reason)


INFO = StrategyInfo(
    key="eur_usd_5m_safe",
    name="EUR/USD 5m safe",
    description=(
        "Conservative EMA crossover confirmed by an RSI band, only in the London/New York overlap "
        "(12:00-16:00 UTC), with a tight ATR stop and a holding limit; flat at the overlap's end. "
        "Intended timeframe: 5m."
    ),
    instruments=("EUR/USDT",),
    params_model=EurUsd5mSafeParams,
    risk_level="low",
    session_preference="ny",
    version="1.0.0",
    strategy_class=EurUsd5mSafeStrategy,
)
