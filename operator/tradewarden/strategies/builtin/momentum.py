"""``momentum``: EMA crossover trend following with an ATR trailing stop.

Registered by ``builtin/__init__.py``; run by the runner and replay through ``SafeStrategy``.

Rules, evaluated on each closed bar:

* Enter long when flat and the fast EMA (default 12) crosses above the slow EMA (default 26): on the
  previous bar fast <= slow, on this one fast > slow. The entry stop is ``close - atr_mult * ATR``
  (ATR(14) with Wilder's smoothing, default multiple 2).
* While long, the stop trails: after each bar it rises to ``close - atr_mult * ATR`` when that is higher,
  and never falls.
* Exit when the fast EMA crosses back below the slow EMA, or when a bar closes below the trailing stop.

No entry is taken while ATR is zero: with no volatility there is no meaningful stop to size against.
A position the strategy did not open (a restart, a manual order) is managed the same way, starting from
``entry_price - atr_mult * ATR``.

Intended timeframe: 5m to 1h bars on liquid pairs; on 1m bars the default EMAs react to noise.
"""

from __future__ import annotations

from pydantic import Field

from tradewarden.api.market import HOLD, Action, Candle, Decision, Position
from tradewarden.strategies.base import Strategy, StrategyParams
from tradewarden.strategies.indicators import Atr, Ema, spread
from tradewarden.strategies.registry import StrategyInfo


class MomentumParams(StrategyParams):
    fast: int = Field(12, ge=2, le=500, description="Period of the fast EMA, in bars.")
    slow: int = Field(26, ge=3, le=1000, description="Period of the slow EMA, in bars; must exceed fast.")
    atr_period: int = Field(14, ge=2, le=500, description="Period of the ATR used for the stop, in bars.")
    atr_mult: float = Field(
        2.0, gt=0.0, le=20.0, description="Stop distance below the close, in multiples of ATR."
    )

    ordered = (("fast", "slow"),)


class MomentumStrategy(Strategy[MomentumParams]):
    def __init__(self, params: MomentumParams, symbol: str) -> None:
        super().__init__(params, symbol)
        self._fast = Ema(params.fast)
        self._slow = Ema(params.slow)
        self._atr = Atr(params.atr_period)
        self._mult = params.atr_mult
        # One more bar than the slow EMA needs, so that a crossover compares two real values.
        self._warmup = max(params.slow, params.atr_period) + 1
        self._bars = 0
        self._prev_diff: float | None = None
        self._stop: float | None = None  # trailing stop of the open position
        self._pending_stop: float | None = None  # stop of the entry asked for on the previous bar

    @property
    def warmup_bars(self) -> int:
        return self._warmup

    def on_candle(self, candle: Candle, position: Position) -> Decision:
        close = candle.close
        fast = self._fast.update(close)
        slow = self._slow.update(close)
        atr = self._atr.update(candle.high, candle.low, close)
        self._bars += 1
        prev_diff = self._prev_diff
        diff = spread(fast, slow, close)
        self._prev_diff = diff
        pending = self._pending_stop
        self._pending_stop = None

        if self._bars <= self._warmup or diff is None or prev_diff is None or atr is None:
            return HOLD

        if position.qty > 0.0:
            stop = self._stop
            if stop is None:
                # Just filled (use the stop we asked for), or a position we did not open.
                basis = position.entry_price if position.entry_price > 0.0 else close
                stop = pending if pending is not None else basis - self._mult * atr
            if diff < 0.0 <= prev_diff:
                self._stop = None
                return Decision(
                    Action.EXIT_LONG, f"ema {self.params.fast} crossed below ema {self.params.slow}"
                )
            if close < stop:
                self._stop = None
                return Decision(Action.EXIT_LONG, f"close {close:g} below trailing stop {stop:g}")
            trail = close - self._mult * atr
            self._stop = trail if trail > stop else stop
            return HOLD

        self._stop = None
        if diff > 0.0 >= prev_diff and atr > 0.0:
            stop = close - self._mult * atr
            self._pending_stop = stop
            return Decision(
                Action.ENTER_LONG, f"ema {self.params.fast} crossed above ema {self.params.slow}", stop
            )
        return HOLD


INFO = StrategyInfo(
    key="momentum",
    name="Momentum (EMA crossover)",
    description=(
        "Trend following: enter long when EMA(fast) crosses above EMA(slow), stop at close - k*ATR, "
        "trail the stop, exit on the cross back down or a close below the stop. "
        "Intended timeframe: 5m to 1h."
    ),
    instruments=("BTC/USDT", "ETH/USDT"),
    params_model=MomentumParams,
    risk_level="medium",
    session_preference="any",
    version="1.0.0",
    strategy_class=MomentumStrategy,
)
