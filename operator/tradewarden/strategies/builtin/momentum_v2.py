"""``momentum_v2``: ``momentum`` with filters that keep it out of weak and wild markets.

Registered by ``builtin/__init__.py``; run by the runner and replay through ``SafeStrategy``.

Plain EMA crossovers lose money in sideways markets (every wiggle is a cross) and in crashes (a dead-cat
bounce is a cross too). Version 2 enters only when all of these hold on the same closed bar:

* the fast EMA (default 12) crossed above the slow EMA (default 26) within the last ``confirm_bars``
  bars (default 3) and is still above it;
* cross strength: ``(fast - slow) / ATR >= min_cross_strength`` (default 0.05), so a cross by a hair
  does not count — this is why a few bars of confirmation are allowed;
* trend filter: the close is above the long EMA (default 100);
* trend strength: ADX(14) >= ``min_adx`` (default 20);
* volatility band: ``ATR / close`` (in percent) within ``[min_atr_pct, max_atr_pct]``
  (default 0.02 % .. 5 %): too quiet means fees eat the move, too wild means the stop is a coin toss.

One entry per cross: after an entry (or after the window passes) the next entry needs a new cross.
The stop is a chandelier stop: ``highest high since entry - atr_mult * ATR`` (default 2.5), only ever
raised. Exit on a cross back below the slow EMA or on a close below the stop.

Intended timeframe: 15m to 4h bars; the long EMA needs a few days of 15m bars to warm up.
"""

from __future__ import annotations

from pydantic import Field

from tradewarden.api.market import HOLD, Action, Candle, Decision, Position
from tradewarden.strategies.base import Strategy, StrategyParams
from tradewarden.strategies.indicators import Adx, Atr, Ema, spread
from tradewarden.strategies.registry import StrategyInfo


class MomentumV2Params(StrategyParams):
    fast: int = Field(12, ge=2, le=500, description="Period of the fast EMA, in bars.")
    slow: int = Field(26, ge=3, le=1000, description="Period of the slow EMA, in bars; must exceed fast.")
    trend: int = Field(
        100, ge=10, le=2000, description="Period of the long trend-filter EMA, in bars; must exceed slow."
    )
    atr_period: int = Field(14, ge=2, le=500, description="Period of the ATR, in bars.")
    atr_mult: float = Field(
        2.5, gt=0.0, le=20.0, description="Chandelier stop distance below the highest high, in ATRs."
    )
    adx_period: int = Field(14, ge=2, le=200, description="Period of the ADX trend-strength filter, in bars.")
    min_adx: float = Field(
        20.0, ge=0.0, le=100.0, description="Minimum ADX to enter; 0 turns the trend-strength filter off."
    )
    min_atr_pct: float = Field(
        0.02, ge=0.0, le=100.0, description="Minimum ATR as a percentage of the close to enter."
    )
    max_atr_pct: float = Field(
        5.0, gt=0.0, le=100.0, description="Maximum ATR as a percentage of the close to enter."
    )
    min_cross_strength: float = Field(
        0.05, ge=0.0, le=10.0, description="Minimum (fast EMA - slow EMA) / ATR to enter."
    )
    confirm_bars: int = Field(
        3, ge=1, le=50, description="How many bars after a cross an entry may still be taken."
    )

    ordered = (("fast", "slow"), ("slow", "trend"), ("min_atr_pct", "max_atr_pct"))


class MomentumV2Strategy(Strategy[MomentumV2Params]):
    def __init__(self, params: MomentumV2Params, symbol: str) -> None:
        super().__init__(params, symbol)
        self._fast = Ema(params.fast)
        self._slow = Ema(params.slow)
        self._trend = Ema(params.trend)
        self._atr = Atr(params.atr_period)
        self._adx = Adx(params.adx_period)
        self._mult = params.atr_mult
        # Fractions, so the hot path multiplies instead of converting percentages on every bar.
        self._min_atr_frac = params.min_atr_pct / 100.0
        self._max_atr_frac = params.max_atr_pct / 100.0
        self._warmup = max(params.trend, params.slow + 1, params.atr_period, 2 * params.adx_period + 1)
        self._bars = 0
        self._prev_diff: float | None = None
        # Bars since the last cross up while fast stayed above slow; None when there is no live cross.
        self._since_cross: int | None = None
        self._stop: float | None = None
        self._highest = 0.0
        self._pending_stop: float | None = None

    @property
    def warmup_bars(self) -> int:
        return self._warmup

    def on_candle(self, candle: Candle, position: Position) -> Decision:
        close = candle.close
        high = candle.high
        fast = self._fast.update(close)
        slow = self._slow.update(close)
        trend = self._trend.update(close)
        atr = self._atr.update(high, candle.low, close)
        adx = self._adx.update(high, candle.low, close)
        self._bars += 1
        prev_diff = self._prev_diff
        diff = spread(fast, slow, close)
        self._prev_diff = diff
        pending = self._pending_stop
        self._pending_stop = None

        # Track the cross window on every bar, warm or not, so it is right on the first live bar.
        since = self._since_cross
        if diff is None or diff <= 0.0:
            since = None
        elif prev_diff is not None and prev_diff <= 0.0:
            since = 0
        elif since is not None:
            since += 1
        self._since_cross = since

        if (
            self._bars <= self._warmup
            or diff is None
            or prev_diff is None
            or atr is None
            or adx is None
            or trend is None
        ):
            return HOLD

        params = self.params
        if position.qty > 0.0:
            stop = self._stop
            if stop is None:
                basis = position.entry_price if position.entry_price > 0.0 else close
                stop = pending if pending is not None else basis - self._mult * atr
                self._highest = high
            if diff < 0.0 <= prev_diff:
                self._stop = None
                return Decision(Action.EXIT_LONG, f"ema {params.fast} crossed below ema {params.slow}")
            if close < stop:
                self._stop = None
                return Decision(Action.EXIT_LONG, f"close {close:g} below chandelier stop {stop:g}")
            if high > self._highest:
                self._highest = high
            trail = self._highest - self._mult * atr
            self._stop = trail if trail > stop else stop
            return HOLD

        self._stop = None
        if (
            since is not None
            and since < params.confirm_bars
            and atr > 0.0
            and diff >= params.min_cross_strength * atr
            and close > trend
            and adx >= params.min_adx
            and self._min_atr_frac * close <= atr <= self._max_atr_frac * close
        ):
            # Consume the cross: a later bar of the same window must not enter again after an exit.
            self._since_cross = None
            stop = close - self._mult * atr
            self._pending_stop = stop
            return Decision(
                Action.ENTER_LONG,
                f"ema {params.fast} above ema {params.slow} by {diff / atr:.2f} atr, "
                f"close above ema {params.trend}, adx {adx:.1f}",
                stop,
            )
        return HOLD


INFO = StrategyInfo(
    key="momentum_v2",
    name="Momentum v2 (filtered EMA crossover)",
    description=(
        "EMA(fast)/EMA(slow) crossover taken only above the long trend EMA, with ADX and ATR% filters "
        "and a minimum cross strength; chandelier trailing stop. Intended timeframe: 15m to 4h."
    ),
    instruments=("BTC/USDT", "ETH/USDT"),
    params_model=MomentumV2Params,
    risk_level="medium",
    session_preference="any",
    version="1.0.0",
    strategy_class=MomentumV2Strategy,
)
